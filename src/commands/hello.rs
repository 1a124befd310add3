//! Tutorial 1, "Hello World!": one producer, one consumer, the default exchange.

use super::{
    named_queue,
    receive::{Printer, Receive, print_prefetch, receive},
    send::{Send, send},
};
use crate::{
    amqp::{
        publish::{Publication, RoutingKey, Unroutable},
        topology::Topology,
    },
    cli::HelloCommand,
    context::Context,
    error::Result,
    exit::Exit,
    output::TextLine,
};

pub async fn run(ctx: &Context, command: HelloCommand) -> Result<Exit> {
    match command {
        HelloCommand::Send(args) => {
            let spec = Send {
                connection_name: "rmqlab hello send",
                topology: Topology::queue(named_queue(&args.queue, args.queue_type.queue_type)),
                target: Publication {
                    exchange: "",
                    routing_key: RoutingKey::Fixed(&args.queue),
                    persistent: false,
                    unroutable: Unroutable::Fails,
                },
                default_message: "Hello World!",
                show_key: false,
            };
            send(ctx, spec, &args.message, &args.properties).await
        }
        HelloCommand::Recv(args) => {
            let spec = Receive {
                connection_name: "rmqlab hello recv",
                topology: Topology::queue(named_queue(&args.queue, args.queue_type.queue_type)),
                prefetch: print_prefetch(&args.consume),
            };
            let mut printer =
                Printer::new(ctx, &args.consume, TextLine::Body(" [x] Received "), None);
            receive(ctx, spec, &args.consume, &mut printer).await
        }
    }
}
