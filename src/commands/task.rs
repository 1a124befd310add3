//! Tutorial 2, "Work Queues": persistent tasks in a durable queue, manual acks after the work,
//! fair dispatch with a prefetch of 1.

use super::{QueueReceive, QueueSend, receive_from_queue, send_to_queue};
use crate::{Exit, amqp::Context, cli::TaskCommand, consume::Handling, error::Result};

pub async fn run(ctx: &Context, command: TaskCommand) -> Result<Exit> {
    match command {
        TaskCommand::New(args) => {
            let send = QueueSend {
                connection_name: "rmqlab task new",
                queue: &args.queue,
                queue_type: args.queue_type.queue_type,
                persistent: true,
                default_message: "Hello World!",
            };
            send_to_queue(ctx, send, &args.message).await
        }
        TaskCommand::Work(args) => {
            let receive = QueueReceive {
                connection_name: "rmqlab task work",
                queue: &args.queue,
                queue_type: args.queue_type.queue_type,
                prefetch: args.prefetch,
                handling: Handling::Work {
                    dot_duration: args.dot_duration,
                    exec: args.exec,
                },
            };
            receive_from_queue(ctx, receive, &args.consume).await
        }
    }
}
