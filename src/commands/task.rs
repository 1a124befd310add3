//! Tutorial 2, "Work Queues": persistent tasks in a durable queue, manual acks after the work,
//! fair dispatch with a prefetch of 1.

use super::{Destination, Receive, Send, receive, send};
use crate::{Exit, amqp::Context, cli::TaskCommand, consume::Handling, error::Result};

pub async fn run(ctx: &Context, command: TaskCommand) -> Result<Exit> {
    match command {
        TaskCommand::New(args) => {
            let spec = Send {
                connection_name: "rmqlab task new",
                destination: Destination::Queue {
                    name: &args.queue,
                    queue_type: args.queue_type.queue_type,
                },
                persistent: true,
                default_message: "Hello World!",
            };
            send(ctx, spec, &args.message).await
        }
        TaskCommand::Work(args) => {
            let spec = Receive {
                connection_name: "rmqlab task work",
                source: Destination::Queue {
                    name: &args.queue,
                    queue_type: args.queue_type.queue_type,
                },
                prefetch: args.prefetch,
                handling: Handling::Work {
                    dot_duration: args.dot_duration,
                    exec: args.exec,
                },
            };
            receive(ctx, spec, &args.consume).await
        }
    }
}
