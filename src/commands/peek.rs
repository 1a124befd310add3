//! `queues peek`: show the first messages of a queue and leave them in it. A stream is read by
//! offset; a classic queue is taken from and put back in one go; a quorum queue only with
//! `--force`, since it counts every message put back as a delivery.

use super::receive::{Printer, stdout};
use crate::amqp::transfer::DELIVERY_COUNT_HEADER;
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
    let mut ending = 0;
    let shown = match kind {
        Readable::Stream => read_stream(&session, queue, args.count, show).await,
        Readable::Classic | Readable::Quorum { .. } => {
            peek(&session, queue, args.count, |delivery, _| {
                ending += u64::from(kind.ends_when_put_back(delivery));
                show(delivery)
            })
            .await
        }
    };
    session.close().await;
    let flushed = printer.out.flush().map_err(Error::Output);
    let shown = shown?;
    kind.put_back(ctx.status, queue, shown, ending);
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
    Quorum {
        to_the_back: bool,
        /// The deliveries it allows a message (20 by default on RabbitMQ 4.x); `None`: no limit.
        delivery_limit: Option<u64>,
    },
}

/// The delivery limit of a quorum queue that sets none, on RabbitMQ 4.x.
const DEFAULT_DELIVERY_LIMIT: u64 = 20;

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
                let three = version.starts_with("3.");
                let delivery_limit = match facts.delivery_limit {
                    Some(limit) => limit,
                    None if three => None,
                    None => Some(DEFAULT_DELIVERY_LIMIT),
                };
                Ok(Readable::Quorum {
                    to_the_back: three,
                    delivery_limit,
                })
            }
            _ => Ok(Readable::Classic),
        }
    }

    /// Whether putting this delivery back ends it: a quorum queue drops or dead-letters a
    /// message returned past its delivery limit (its `x-delivery-count` counts the deliveries
    /// before this one).
    pub fn ends_when_put_back(self, delivery: &lapin::message::Delivery) -> bool {
        let Readable::Quorum {
            delivery_limit: Some(limit),
            ..
        } = self
        else {
            return false;
        };
        let before = delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|headers| headers.inner().get(DELIVERY_COUNT_HEADER))
            .and_then(crate::message::header_int)
            .and_then(|count| u64::try_from(count).ok())
            .unwrap_or(0);
        before >= limit
    }

    /// Says, once, what putting `count` messages back in `queue` changed; `ending` of them
    /// had reached the queue's delivery limit, so put back they were dropped or dead-lettered.
    pub fn put_back(self, status: Status, queue: &str, count: u64, ending: u64) {
        if count == 0 {
            return;
        }
        match self {
            Readable::Stream => {}
            Readable::Classic => status.info(format_args!(
                " [*] {count} message(s) put back in their places in queue '{queue}': they are \
                 now marked redelivered"
            )),
            Readable::Quorum { to_the_back, .. } => status.warn(format_args!(
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
        if let (
            Readable::Quorum {
                delivery_limit: Some(limit),
                ..
            },
            1..,
        ) = (self, ending)
        {
            status.warn(format_args!(
                " [!] {ending} of the message(s) read in quorum queue '{queue}' had reached its \
                 delivery limit ({limit}): put back, they were dead-lettered or dropped by the \
                 queue, not kept"
            ));
        }
    }
}
