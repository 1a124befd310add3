//! Tutorial 1, "Hello World!": one producer, one consumer, the default exchange.

use super::{Destination, Receive, Send, print_prefetch, receive, send};
use crate::{Exit, amqp::Context, cli::HelloCommand, consume::Handling, error::Result};

pub async fn run(ctx: &Context, command: HelloCommand) -> Result<Exit> {
    match command {
        HelloCommand::Send(args) => {
            let spec = Send {
                connection_name: "rmqlab hello send",
                destination: Destination::Queue {
                    name: &args.queue,
                    queue_type: args.queue_type.queue_type,
                },
                persistent: false,
                default_message: "Hello World!",
            };
            send(ctx, spec, &args.message).await
        }
        HelloCommand::Recv(args) => {
            let spec = Receive {
                connection_name: "rmqlab hello recv",
                source: Destination::Queue {
                    name: &args.queue,
                    queue_type: args.queue_type.queue_type,
                },
                prefetch: print_prefetch(&args.consume),
                handling: Handling::Print {
                    text_prefix: " [x] Received ",
                },
            };
            receive(ctx, spec, &args.consume).await
        }
    }
}
