//! Tutorial 1, "Hello World!": one producer, one consumer, the default exchange.

use super::{QueueReceive, QueueSend, receive_from_queue, send_to_queue};
use crate::{Exit, amqp::Context, cli::HelloCommand, consume::Handling, error::Result};

/// Deliveries `hello recv` may hold before acking; `--count` lowers it so that nothing beyond
/// the count is ever taken from the queue.
const RECV_PREFETCH: u16 = 500;

pub async fn run(ctx: &Context, command: HelloCommand) -> Result<Exit> {
    match command {
        HelloCommand::Send(args) => {
            let send = QueueSend {
                connection_name: "rmqlab hello send",
                queue: &args.queue,
                queue_type: args.queue_type.queue_type,
                persistent: false,
                default_message: "Hello World!",
            };
            send_to_queue(ctx, send, &args.message).await
        }
        HelloCommand::Recv(args) => {
            let prefetch = args.consume.count.map_or(RECV_PREFETCH, |count| {
                count.min(RECV_PREFETCH.into()) as u16
            });
            let receive = QueueReceive {
                connection_name: "rmqlab hello recv",
                queue: &args.queue,
                queue_type: args.queue_type.queue_type,
                prefetch,
                handling: Handling::Print {
                    text_prefix: " [x] Received ",
                },
            };
            receive_from_queue(ctx, receive, &args.consume).await
        }
    }
}
