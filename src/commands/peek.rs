//! `queues peek`: show the first messages of a queue and leave them in it. A stream is read by
//! offset; a classic queue is taken from and put back in one go; a quorum queue only with
//! `--force`, since it counts every message put back as a delivery.

use super::receive::{Printer, stdout};
use crate::{
    amqp::{
        Session,
        transfer::{peek, read_stream},
    },
    cli::QueuesPeekArgs,
    context::{Context, Status},
    error::{Error, Result},
    exit::Exit,
    management::Api,
    output::{Received, TextLine, write_received},
};
use std::io::Write;

pub async fn run(ctx: &Context, api: &Api, args: QueuesPeekArgs) -> Result<Exit> {
    let queue = &args.queue;
    let kind = Readable::check(ctx, api, queue, args.force).await?;
    let mut printer = Printer {
        out: stdout(args.output),
        format: args.output,
        text: TextLine::Body(" [x] "),
        status: ctx.status,
        exchange: None,
    };
    let mut show = |delivery: &lapin::message::Delivery| {
        write_received(
            &mut printer.out,
            printer.format,
            printer.text,
            &Received::from(delivery),
        )
        .map_err(Error::Output)
    };
    let session = Session::connect(ctx, "rmqlab queues peek", &ctx.status).await?;
    let shown = match kind {
        Readable::Stream => read_stream(&session, queue, args.count, show).await,
        Readable::Classic | Readable::Quorum { .. } => {
            peek(&session, queue, args.count, |delivery, _| show(delivery)).await
        }
    };
    session.close().await;
    let flushed = printer.out.flush().map_err(Error::Output);
    let shown = shown?;
    kind.put_back(ctx.status, queue, shown);
    match flushed {
        Err(error) if error.is_broken_pipe() => Ok(Exit::Success),
        other => other.map(|()| Exit::Success),
    }
}

/// How a queue's messages can be read without taking them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readable {
    /// By offset: nothing changes.
    Stream,
    /// Taken and put back in their places, marked redelivered.
    Classic,
    /// Taken and put back with `--force`: each counts a delivery; RabbitMQ 3.x puts them at the
    /// back.
    Quorum { to_the_back: bool },
}

impl Readable {
    /// Asks the management API what `queue` is; a quorum queue is refused (65) without `force`.
    pub async fn check(ctx: &Context, api: &Api, queue: &str, force: bool) -> Result<Readable> {
        let facts = api.queue_facts(ctx.url().vhost(), queue).await?;
        match facts.queue_type.as_str() {
            "stream" => Ok(Readable::Stream),
            "quorum" if !force => Err(Error::PeekRefused {
                queue: queue.to_string(),
                queue_type: facts.queue_type,
                reason: "each message read and put back counts one delivery toward its delivery \
                         limit (20 by default on RabbitMQ 4.x, then it is dropped or \
                         dead-lettered), and RabbitMQ 3.x puts it back at the end of the queue"
                    .into(),
            }),
            "quorum" => {
                let version = api.rabbitmq_version().await?;
                Ok(Readable::Quorum {
                    to_the_back: version.starts_with("3."),
                })
            }
            _ => Ok(Readable::Classic),
        }
    }

    /// Says, once, what putting `count` messages back in `queue` changed.
    pub fn put_back(self, status: Status, queue: &str, count: u64) {
        if count == 0 {
            return;
        }
        match self {
            Readable::Stream => {}
            Readable::Classic => status.info(format_args!(
                " [*] {count} message(s) put back in their places in queue '{queue}': they are \
                 now marked redelivered"
            )),
            Readable::Quorum { to_the_back } => status.warn(format_args!(
                " [!] {count} message(s) put back in quorum queue '{queue}': each \
                 counted one more delivery (x-delivery-count) toward the queue's delivery \
                 limit{}",
                if to_the_back {
                    ", and they are now at the back of the queue (RabbitMQ 3.x)"
                } else {
                    ""
                }
            )),
        }
    }
}
