//! Consuming with manual acks after the work (batched with `multiple` when the work is instant),
//! `--count`, `--idle-timeout`, a clean stop on Ctrl-C, and reconnection after a lost connection.
//! What is done with each delivery is the command's [`Handler`]; a handler may also have a
//! delivery published again (to its own queue or to a queue of failed tasks), confirmed, before
//! it is acked.

use super::{
    Role, Session,
    events::Observer,
    publish::{Sent, cannot_publish, refused_first, send},
    reconnect,
    rpc::{Reply, SentReply, send_reply},
    topology::{Declared, Topology},
};
use crate::{
    context::Context,
    error::{Error, Result},
    signals::Interrupts,
};
use futures_lite::{StreamExt, future::poll_once};
use lapin::{
    Channel,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions,
        BasicQosOptions, BasicRejectOptions,
    },
    types::FieldTable,
};
use std::{collections::VecDeque, future::Future, time::Duration};

/// When a consumer stops on its own.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub count: Option<u64>,
    pub idle_timeout: Option<Duration>,
}

/// How a consumer ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// `--count` reached or `--idle-timeout` passed.
    Finished,
    /// Ctrl-C or SIGTERM: stopped cleanly, nothing in progress was lost.
    Interrupted,
    /// The handler gave up ([`Outcome::GiveBack`]): the delivery is back in the queue, and the
    /// handler knows why.
    GaveUp,
}

/// What became of one delivery.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Done: ack it now (work took time; acking later would risk redoing it).
    AckNow,
    /// Done instantly: ack it with the next batch, once the handler flushed.
    AckLater,
    /// Done, with a reply to publish first: acked once the broker confirmed the reply. The
    /// next delivery is handled meanwhile (with a prefetch above 1), and the acks follow the
    /// confirms in order.
    Reply(Reply),
    /// The work failed: reject it, back to the queue or not (then to the queue's dead-letter
    /// exchange, if it has one).
    Reject { requeue: bool },
    /// Publish a copy (same body and properties, these `headers`) to the back of the delivery's
    /// own queue, wait for the broker's confirm, then ack the delivery.
    Republish { headers: FieldTable },
    /// Publish a copy with these `headers` to the source's parking queue
    /// ([`Source::parking`]), confirmed, then ack the delivery.
    Park { headers: FieldTable },
    /// The handler cannot go on: put the delivery back in the queue and stop consuming
    /// ([`Ending::GaveUp`]).
    GiveBack,
    /// A second interrupt aborted the work: leave it unacked for the broker to requeue.
    Aborted,
}

/// What a command does with what it consumes.
pub trait Handler {
    /// Consuming from `queue` starts; `resumed` after a reconnection.
    fn consuming(&mut self, queue: &str, resumed: bool);
    /// Handles one delivery; `interrupts` tells of Ctrl-C meanwhile.
    fn handle(
        &mut self,
        delivery: &Delivery,
        interrupts: &mut Interrupts,
    ) -> impl Future<Output = Result<Outcome>>;
    /// Makes everything handled so far final (flushes output): acks follow.
    fn flush(&mut self) -> Result<()>;
    /// The engine carried out `outcome` (a reject, a republish, a park, a give-back) for the
    /// delivery just handled.
    fn carried_out(&mut self, _outcome: &Outcome) {}
}

/// Where to consume from.
pub struct Source<'a> {
    pub connection_name: &'a str,
    /// Its queue is what is consumed: a named queue, or an exclusive one bound to exchanges.
    pub topology: &'a Topology,
    pub prefetch: u16,
    /// The handler may return [`Outcome::Republish`]: a second channel, in confirm mode, is
    /// opened to publish from.
    pub republishes: bool,
    /// Where [`Outcome::Park`] publishes: a named queue, declared with the source (and so
    /// adopted as it is when it exists). Implies a channel to publish from.
    pub parking: Option<&'a Topology>,
}

/// Declares the source and consumes from it until `limits` or an interrupt end it, reconnecting
/// after a lost connection (an exclusive queue is then a new one).
pub async fn consume_all<H: Handler>(
    ctx: &Context,
    observer: &dyn Observer,
    source: &Source<'_>,
    limits: Limits,
    handler: &mut H,
    mut interrupts: Interrupts,
) -> Result<Ending> {
    let (mut session, mut declared, mut publisher) = open(ctx, observer, source).await?;
    let mut consumer = Consumer {
        prefetch: source.prefetch,
        limits,
        interrupts: &mut interrupts,
        done: 0,
    };
    let mut resumed = false;
    // Since when each new session has been lost before anything was handled on it (a broker
    // that fails the consume itself, say): such losses share one --reconnect-timeout.
    let mut fruitless_since: Option<tokio::time::Instant> = None;
    loop {
        let done_before = consumer.done;
        let queue = declared
            .queue
            .clone()
            .expect("a consumer's topology has a queue");
        handler.consuming(&queue, resumed);
        match consumer
            .run(&session, publisher.as_ref(), &queue, handler)
            .await
        {
            Ok(ending) => {
                session.close().await;
                return Ok(ending);
            }
            Err(lost) if lost.is_connection_loss() => {
                if consumer.done > done_before {
                    fruitless_since = None;
                }
                let since = *fruitless_since.get_or_insert_with(tokio::time::Instant::now);
                if resumed && since.elapsed() >= ctx.reconnect_timeout {
                    session.close().await;
                    return Err(Error::ReconnectFailed {
                        after: ctx.reconnect_timeout,
                        source: Box::new(lost),
                    });
                }
                let reopened = reconnect::reopen(
                    ctx,
                    observer,
                    None,
                    lost,
                    Some(consumer.interrupts),
                    |attempt| async move { open(&attempt, observer, source).await },
                )
                .await?;
                let Some(reopened) = reopened else {
                    return Ok(Ending::Interrupted);
                };
                (session, declared, publisher) = reopened;
                resumed = true;
            }
            Err(error) => {
                // Acks already sent reach the broker before the close; what was not acked goes
                // back to the queue.
                session.close().await;
                return Err(error);
            }
        }
    }
}

/// A channel in confirm mode beside the consumer's, and the parking queue's name.
struct Publisher {
    channel: Channel,
    parking_queue: Option<String>,
}

async fn open(
    ctx: &Context,
    observer: &dyn Observer,
    source: &Source<'_>,
) -> Result<(Session, Declared, Option<Publisher>)> {
    let (mut session, declared) = Session::open(
        ctx,
        source.connection_name,
        source.topology,
        Role::Consumer,
        observer,
    )
    .await?;
    let parking_queue = match source.parking {
        Some(parking) => parking.declare(&mut session, observer).await?.queue,
        None => None,
    };
    let publisher = match source.republishes || source.parking.is_some() {
        true => Some(Publisher {
            channel: session.open_confirm_channel().await?,
            parking_queue,
        }),
        false => None,
    };
    Ok((session, declared, publisher))
}

struct Consumer<'a> {
    prefetch: u16,
    limits: Limits,
    interrupts: &'a mut Interrupts,
    /// Deliveries acked or rejected so far, across reconnections: what `--count` counts.
    done: u64,
}

async fn ack(channel: &Channel, delivery: &Delivery) -> Result<()> {
    channel
        .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
        .await
        .map_err(Error::broker("cannot acknowledge a message"))
}

async fn reject(channel: &Channel, delivery: &Delivery, requeue: bool) -> Result<()> {
    channel
        .basic_reject(delivery.delivery_tag, BasicRejectOptions { requeue })
        .await
        .map_err(Error::broker("cannot reject a message"))
}

/// Publishes a copy of `delivery` (its body and properties, with `headers`) to `queue` through
/// the default exchange, and waits for the broker's confirm: only then may the delivery be acked.
async fn publish_copy(
    channel: &Channel,
    queue: &str,
    delivery: &Delivery,
    headers: FieldTable,
) -> Result<()> {
    let properties = delivery.properties.clone().with_headers(headers);
    let what = format!("a message to queue '{queue}'");
    let confirmation = publish_unconfirmed(channel, "", queue, &delivery.data, properties)
        .await
        .map_err(cannot_publish(&what))?
        .await
        .confirmation(&what)?;
    match refusal(confirmation) {
        Some(reason) => Err(Error::Forward {
            queue: queue.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Publishes `body` with `properties` on `channel` (in confirm mode), `mandatory` so that a
/// message no queue takes comes back: the broker's answer is awaited apart.
pub(super) async fn publish_unconfirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: lapin::BasicProperties,
) -> lapin::Result<Sent> {
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    send(channel, exchange, routing_key, options, body, properties).await
}

/// Why the broker did not take a message it answered: nacked, or returned unroutable; `None`
/// when it took it.
pub(super) fn refusal(confirmation: lapin::Confirmation) -> Option<String> {
    if confirmation.is_nack() {
        return Some("the broker nacked it".into());
    }
    confirmation
        .take_message()
        .map(|returned| format!("returned {} {}", returned.reply_code, returned.reply_text))
}

/// Deliveries handled but not yet acked; acked together with `multiple` once output is flushed.
#[derive(Default)]
struct PendingAcks {
    last_tag: Option<u64>,
    count: u16,
}

/// Replies published and not yet confirmed, oldest first, with the tags of the deliveries they
/// answer: each delivery is acked once the broker confirmed its reply. The replies go on a
/// channel of their own, so a reply the broker refuses (too large, say) closes that channel and
/// not the one the deliveries are acked on: what was answered before it is acked all the same.
#[derive(Default)]
struct Replies(VecDeque<(u64, SentReply)>);

impl Replies {
    /// Acks the deliveries whose replies are confirmed, oldest first: those already confirmed,
    /// or (`all`) every one, waiting for the broker. Returns how many were acked.
    async fn ack(&mut self, channel: &Channel, all: bool) -> Result<u64> {
        let mut acked = 0;
        while let Some((_, reply)) = self.0.front_mut() {
            let confirmed = match all {
                true => reply.confirmed().await,
                false => match poll_once(reply.confirmed()).await {
                    Some(confirmed) => confirmed,
                    None => break,
                },
            };
            let (tag, _) = self
                .0
                .pop_front()
                .expect("the front reply was just awaited");
            ack_answered(channel, tag, confirmed).await?;
            acked += 1;
        }
        Ok(acked)
    }

    /// A reply could not be sent (`error`: its channel is closed): the replies in flight are
    /// acked as far as the broker confirmed them, and the first it refused, which closed the
    /// channel, is the error; else `error`. Returns how many were acked, and the error.
    async fn refused(&mut self, channel: &Channel, error: Error) -> (u64, Error) {
        let mut acked = 0;
        let error = refused_first(error, self.0.drain(..), async |(tag, mut reply)| {
            ack_answered(channel, tag, reply.confirmed().await).await?;
            acked += 1;
            Ok(())
        })
        .await;
        (acked, error)
    }

    /// Waits for the oldest reply's confirm and takes it off: the tag of its delivery, to ack
    /// with [`ack_answered`]; never ends when there is none. Nothing is awaited after the take,
    /// so that a `select!` that drops it loses no reply.
    async fn oldest_answered(&mut self) -> (u64, Result<()>) {
        let Some((_, reply)) = self.0.front_mut() else {
            return std::future::pending().await;
        };
        let confirmed = reply.confirmed().await;
        let (tag, _) = self
            .0
            .pop_front()
            .expect("the front reply was just awaited");
        (tag, confirmed)
    }
}

/// Acks delivery `tag` once its reply is `confirmed`; a reply the broker did not take is the
/// error instead, and the delivery goes back to the queue with the channel.
async fn ack_answered(channel: &Channel, tag: u64, confirmed: Result<()>) -> Result<()> {
    confirmed?;
    channel
        .basic_ack(tag, BasicAckOptions::default())
        .await
        .map_err(Error::broker("cannot acknowledge a message"))
}

impl Consumer<'_> {
    /// Consumes from `queue` on `session` until the limits or an interrupt end it. A lost
    /// connection is an error after which `run` may be called again on a new session: what was
    /// handled but not acked then comes again, and is not counted twice.
    async fn run<H: Handler>(
        &mut self,
        session: &Session,
        publisher: Option<&Publisher>,
        queue: &str,
        handler: &mut H,
    ) -> Result<Ending> {
        let channel = &session.channel;
        channel
            .basic_qos(self.prefetch, BasicQosOptions { global: false })
            .await
            .map_err(Error::broker("cannot set the prefetch (basic.qos)"))?;
        let tag = format!("rmqlab.{}", std::process::id());
        let mut deliveries = channel
            .basic_consume(
                queue.into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(Error::broker(format!(
                "cannot consume from queue '{queue}'"
            )))?;

        let mut pending = PendingAcks::default();
        let mut replies = Replies::default();
        // Opened, in confirm mode, at the first reply to publish.
        let mut reply_channel: Option<Channel> = None;
        let ending = loop {
            self.done += replies.ack(channel, false).await?;
            let handled = self.done + u64::from(pending.count) + replies.0.len() as u64;
            if self.limits.count.is_some_and(|count| handled >= count) {
                break Ending::Finished;
            }
            if self.interrupts.received() > 0 {
                break Ending::Interrupted;
            }
            let next = match poll_once(deliveries.next()).await {
                Some(next) => next,
                None => {
                    // Nothing buffered: a good moment to flush output and settle acks.
                    self.settle(session, &mut pending, handler).await?;
                    let idle = async {
                        match self.limits.idle_timeout {
                            Some(timeout) => tokio::time::sleep(timeout).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        next = deliveries.next() => next,
                        (tag, confirmed) = replies.oldest_answered() => {
                            ack_answered(channel, tag, confirmed).await?;
                            self.done += 1;
                            continue;
                        }
                        () = self.interrupts.wait_for(1) => break Ending::Interrupted,
                        () = idle, if replies.0.is_empty() => break Ending::Finished,
                    }
                }
            };
            let delivery = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(source)) => {
                    return Err(Error::broker(format!(
                        "stopped receiving from queue '{queue}'"
                    ))(source));
                }
                None if !session.is_connected() => {
                    return Err(Error::ConnectionLost {
                        context: format!("stopped receiving from queue '{queue}'"),
                    });
                }
                None => {
                    return Err(Error::ConsumerCancelled {
                        queue: queue.to_string(),
                    });
                }
            };
            let outcome = match handler.handle(&delivery, self.interrupts).await {
                Ok(outcome) => outcome,
                Err(error) => {
                    // What was answered stays answered: only this delivery goes back.
                    if let Ok(acked) = replies.ack(channel, true).await {
                        self.done += acked;
                    }
                    return Err(error);
                }
            };
            if !matches!(outcome, Outcome::Reply(_)) {
                // Acks in delivery order; a multiple ack must not reach an unconfirmed reply.
                self.done += replies.ack(channel, true).await?;
            }
            match &outcome {
                Outcome::AckNow => {
                    self.settle(session, &mut pending, handler).await?;
                    ack(channel, &delivery).await?;
                    self.done += 1;
                }
                Outcome::AckLater => {
                    pending.last_tag = Some(delivery.delivery_tag);
                    pending.count += 1;
                    // Ack before the prefetch window is used up, so the broker keeps sending.
                    if pending.count >= self.prefetch.div_ceil(2) {
                        self.settle(session, &mut pending, handler).await?;
                    }
                }
                Outcome::Reply(reply) => {
                    self.settle(session, &mut pending, handler).await?;
                    let reply_channel = match &mut reply_channel {
                        Some(reply_channel) => reply_channel,
                        none => none.insert(session.open_confirm_channel().await?),
                    };
                    let sent = match send_reply(reply_channel, reply).await {
                        Ok(sent) => sent,
                        // The broker closes the channel over a reply it refuses (too large,
                        // say): the answers to the replies in flight say which and why.
                        Err(error) => {
                            let (acked, error) = replies.refused(channel, error).await;
                            self.done += acked;
                            return Err(error);
                        }
                    };
                    replies.0.push_back((delivery.delivery_tag, sent));
                }
                Outcome::Reject { requeue } => {
                    self.settle(session, &mut pending, handler).await?;
                    reject(channel, &delivery, *requeue).await?;
                    self.done += 1;
                }
                Outcome::Republish { headers } | Outcome::Park { headers } => {
                    self.settle(session, &mut pending, handler).await?;
                    let publisher = publisher.expect("a source that republishes has a publisher");
                    let to = match outcome {
                        Outcome::Park { .. } => publisher
                            .parking_queue
                            .as_deref()
                            .expect("a source that parks has a parking queue"),
                        _ => queue,
                    };
                    publish_copy(&publisher.channel, to, &delivery, headers.clone()).await?;
                    ack(channel, &delivery).await?;
                    self.done += 1;
                }
                Outcome::GiveBack => {
                    self.settle(session, &mut pending, handler).await?;
                    reject(channel, &delivery, true).await?;
                    handler.carried_out(&outcome);
                    break Ending::GaveUp;
                }
                Outcome::Aborted => break Ending::Interrupted,
            }
            if !matches!(outcome, Outcome::AckLater | Outcome::AckNow) {
                handler.carried_out(&outcome);
            }
        };
        self.done += replies.ack(channel, true).await?;
        self.settle(session, &mut pending, handler).await?;
        // Unprocessed deliveries still buffered go back to the queue when the channel closes.
        let _ = channel
            .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
            .await;
        Ok(ending)
    }

    /// Has the handler flush its output, then acks every delivery it shows.
    async fn settle<H: Handler>(
        &mut self,
        session: &Session,
        pending: &mut PendingAcks,
        handler: &mut H,
    ) -> Result<()> {
        handler.flush()?;
        if let Some(tag) = pending.last_tag.take() {
            let count = std::mem::take(&mut pending.count);
            session
                .channel
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await
                .map_err(Error::broker("cannot acknowledge messages"))?;
            self.done += u64::from(count);
        }
        Ok(())
    }
}
