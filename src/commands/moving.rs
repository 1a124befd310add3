//! `queues move`: every message of a queue to another queue or an exchange, each confirmed there
//! before it is acked, with a progress bar on a terminal and one summary line.

use super::print_text;
use crate::{
    amqp::{
        Session,
        transfer::{Destination, Router, Transfer, transfer},
    },
    cli::QueuesMoveArgs,
    context::Context,
    error::{Error, Result},
    exit::Exit,
    signals::{Interrupts, Stop},
};
use indicatif::ProgressBar;
use lapin::message::Delivery;

const CONNECTION_NAME: &str = "rmqlab queues move";

pub async fn run(ctx: &Context, args: QueuesMoveArgs) -> Result<Exit> {
    let mut interrupts = Interrupts::install().map_err(Error::Runtime)?;
    let source = args.source.as_str();
    if args.destination.as_deref() == Some(source) {
        return Err(Error::MoveRefused {
            reason: format!("queue '{source}' is both the source and the destination"),
        });
    }
    let ready = check(ctx, &args).await?;
    let total = args
        .count
        .map_or(ready.into(), |count| count.min(ready.into()));
    let mut router = Fixed {
        exchange: args.to_exchange.clone().unwrap_or_default(),
        routing_key: args.destination.clone().or(args.routing_key.clone()),
        bar: ctx.status.progress.counting(total, "moving"),
    };
    let plan = Transfer {
        connection_name: CONNECTION_NAME,
        source,
        limit: args.count,
        at_start: Some(ready.into()),
    };
    let moved = transfer(ctx, &ctx.status, &plan, &mut router, &mut interrupts).await;
    router.bar.finish_and_clear();
    let moved = moved?;
    let to = match (&args.destination, &args.to_exchange) {
        (Some(queue), _) => format!("queue '{queue}'"),
        (None, exchange) => format!("exchange '{}'", exchange.as_deref().unwrap_or_default()),
    };
    let mut line = format!(
        " [x] Moved {} message(s) from queue '{source}' to {to}",
        moved.moved
    );
    if moved.republished > 0 {
        line.push_str(&format!(
            "; {} of them published again after the connection was lost: {to} may hold them \
             twice",
            moved.republished
        ));
    }
    line.push('\n');
    print_text(line.as_bytes())?;
    if let Some(more) = moved.more {
        ctx.status.warn(format_args!(
            " [!] queue '{source}' holds {more} more message(s): they came in during the move \
             (from {to}, or a publisher), and a move takes no more than the {ready} message(s) \
             the queue held when it began; they are still there"
        ));
    }
    match moved.stopped {
        true => Ok(Exit::Stopped(interrupts.first().unwrap_or(Stop::Interrupt))),
        false => Ok(Exit::Success),
    }
}

/// Checks, before anything moves, that the source and the destination exist; returns the
/// messages ready in the source.
async fn check(ctx: &Context, args: &QueuesMoveArgs) -> Result<u32> {
    let session = Session::connect(ctx, CONNECTION_NAME, &ctx.status).await?;
    let checked = async {
        let (ready, _) = session.inspect_queue(&args.source).await?;
        match (&args.destination, &args.to_exchange) {
            (Some(queue), _) => session.inspect_queue(queue).await.map(drop)?,
            (None, Some(exchange)) => session.inspect_exchange(exchange).await?,
            (None, None) => unreachable!("clap requires a destination or --to-exchange"),
        }
        Ok(ready)
    }
    .await;
    session.close().await;
    checked
}

/// Every message to one place: a queue, or an exchange with a fixed routing key or the
/// message's own.
struct Fixed {
    exchange: String,
    routing_key: Option<String>,
    bar: ProgressBar,
}

impl Router for Fixed {
    fn route(&mut self, delivery: &Delivery) -> Option<Destination> {
        Some(Destination {
            exchange: self.exchange.clone(),
            routing_key: self
                .routing_key
                .clone()
                .unwrap_or_else(|| delivery.routing_key.to_string()),
        })
    }

    fn moved(&mut self, _: &Delivery, _: &Destination, _: u32) {
        self.bar.inc(1);
    }
}
