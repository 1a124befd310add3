//! Tutorial 3, "Publish/Subscribe": a fanout exchange delivers every message to every listener,
//! each through an exclusive queue of its own.

use super::{
    receive::{Printer, Receive, print_prefetch, receive},
    send::{Send, send},
};
use crate::{
    amqp::{
        publish::{Publication, RoutingKey, Unroutable},
        topology::{Binding, Exchange, ExchangeKind, Queue, Topology},
    },
    cli::PubsubCommand,
    context::Context,
    error::Result,
    exit::Exit,
    output::TextLine,
};

fn fanout(name: &str) -> Exchange {
    Exchange::tutorial(name, ExchangeKind::Fanout)
}

pub async fn run(ctx: &Context, command: PubsubCommand) -> Result<Exit> {
    match command {
        PubsubCommand::Emit(args) => {
            let spec = Send {
                connection_name: "rmqlab pubsub emit",
                topology: Topology::exchange(fanout(&args.exchange)),
                target: Publication {
                    exchange: &args.exchange,
                    routing_key: RoutingKey::Given(""),
                    persistent: false,
                    unroutable: Unroutable::IsDropped,
                },
                default_message: "info: Hello World!",
                show_key: false,
            };
            send(ctx, spec, &args.message, &args.properties).await
        }
        PubsubCommand::Listen(args) => {
            let spec = Receive {
                connection_name: "rmqlab pubsub listen",
                topology: Topology {
                    exchanges: vec![fanout(&args.exchange)],
                    queue: Some(Queue::Exclusive),
                    bindings: vec![Binding {
                        exchange: args.exchange.clone(),
                        key: String::new(),
                    }],
                },
                prefetch: print_prefetch(&args.consume),
            };
            let mut printer = Printer::new(
                ctx,
                &args.consume,
                TextLine::Body(" [x] "),
                Some(&args.exchange),
            );
            receive(ctx, spec, &args.consume, &mut printer).await
        }
    }
}
