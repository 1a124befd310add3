//! Tutorial 3, "Publish/Subscribe": a fanout exchange delivers every message to every listener,
//! each through an exclusive queue of its own.

use super::{Destination, Receive, Send, print_prefetch, receive, send};
use crate::{Exit, amqp::Context, cli::PubsubCommand, consume::Handling, error::Result};

pub async fn run(ctx: &Context, command: PubsubCommand) -> Result<Exit> {
    match command {
        PubsubCommand::Emit(args) => {
            let spec = Send {
                connection_name: "rmqlab pubsub emit",
                destination: Destination::Fanout {
                    exchange: &args.exchange,
                },
                persistent: false,
                default_message: "info: Hello World!",
            };
            send(ctx, spec, &args.message).await
        }
        PubsubCommand::Listen(args) => {
            let spec = Receive {
                connection_name: "rmqlab pubsub listen",
                source: Destination::Fanout {
                    exchange: &args.exchange,
                },
                prefetch: print_prefetch(&args.consume),
                handling: Handling::Print {
                    text_prefix: " [x] ",
                },
            };
            receive(ctx, spec, &args.consume).await
        }
    }
}
