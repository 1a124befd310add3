//! Tutorial 4, "Routing": a direct exchange gives each message to the queues bound with exactly
//! its routing key. Tutorial 5 (`topics`) emits and listens the same way through a topic
//! exchange, with these functions.

use super::{
    named_queue,
    receive::{Printer, Receive, print_prefetch, receive},
    send::{Send, send},
};
use crate::{
    amqp::{
        publish::{Publication, RoutingKey, Unroutable},
        topology::{Binding, Exchange, ExchangeKind, Queue, Topology},
    },
    cli::{ConsumeArgs, ListenQueueArgs, MessageArgs, PropertyArgs, RoutingCommand},
    context::Context,
    error::Result,
    exit::Exit,
    output::TextLine,
};

pub async fn run(ctx: &Context, command: RoutingCommand) -> Result<Exit> {
    match command {
        RoutingCommand::Emit(args) => {
            let exchange = Routed {
                command: "rmqlab routing emit",
                exchange: &args.exchange,
                kind: ExchangeKind::Direct,
            };
            emit(
                ctx,
                &exchange,
                &args.severity,
                &args.message,
                &args.properties,
            )
            .await
        }
        RoutingCommand::Listen(args) => {
            let exchange = Routed {
                command: "rmqlab routing listen",
                exchange: &args.exchange,
                kind: ExchangeKind::Direct,
            };
            listen(ctx, &exchange, &args.severities, &args.queue, &args.consume).await
        }
    }
}

/// A tutorial exchange that routes by key, and the command that uses it (the connection's
/// name).
pub(super) struct Routed<'a> {
    pub command: &'a str,
    pub exchange: &'a str,
    pub kind: ExchangeKind,
}

/// Publishes the command's message(s) with routing key `key`, printing ` [x] Sent KEY:MESSAGE`
/// for each; a message no binding takes is dropped by the broker, and noted.
pub(super) async fn emit(
    ctx: &Context,
    routed: &Routed<'_>,
    key: &str,
    message: &MessageArgs,
    properties: &PropertyArgs,
) -> Result<Exit> {
    let spec = Send {
        connection_name: routed.command,
        topology: Topology::exchange(Exchange::tutorial(routed.exchange, routed.kind)),
        target: Publication {
            exchange: routed.exchange,
            routing_key: RoutingKey::Given(key),
            persistent: false,
            unroutable: Unroutable::IsDropped,
        },
        default_message: "Hello World!",
        show_key: true,
    };
    send(ctx, spec, message, properties).await
}

/// Binds a queue once per key (the listener's own exclusive queue, or `--queue NAME`) and
/// prints ` [x] KEY:MESSAGE` for each message.
pub(super) async fn listen(
    ctx: &Context,
    routed: &Routed<'_>,
    keys: &[String],
    queue: &ListenQueueArgs,
    consume: &ConsumeArgs,
) -> Result<Exit> {
    let spec = Receive {
        connection_name: routed.command,
        topology: Topology {
            exchanges: vec![Exchange::tutorial(routed.exchange, routed.kind)],
            queue: Some(match &queue.queue {
                Some(name) => named_queue(name, queue.queue_type),
                None => Queue::Exclusive,
            }),
            bindings: keys
                .iter()
                .map(|key| Binding {
                    exchange: routed.exchange.to_string(),
                    key: key.clone(),
                })
                .collect(),
        },
        prefetch: print_prefetch(consume),
    };
    // Only an exclusive queue loses what was emitted while reconnecting.
    let exclusive = queue.queue.is_none().then_some(routed.exchange);
    let mut printer = Printer::new(ctx, consume, TextLine::KeyAndBody, exclusive);
    receive(ctx, spec, consume, &mut printer).await
}
