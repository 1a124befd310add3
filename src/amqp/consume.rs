//! Consuming with manual acks after the work (batched with `multiple` when the work is instant),
//! `--count`, `--idle-timeout`, a clean stop on Ctrl-C, and reconnection after a lost connection.
//! What is done with each delivery is the command's [`Handler`].

use super::{
    Role, Session, enable_confirms,
    events::Observer,
    reconnect,
    rpc::{Reply, publish_reply},
    topology::{Declared, Topology},
};
use crate::{
    context::Context,
    error::{Error, Result},
    signals::Interrupts,
};
use futures_lite::{StreamExt, future::poll_once};
use lapin::{
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions,
        BasicRejectOptions,
    },
    types::FieldTable,
};
use std::{future::Future, time::Duration};

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
}

/// What became of one delivery.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Done: ack it now (work took time; acking later would risk redoing it).
    AckNow,
    /// Done instantly: ack it with the next batch, once the handler flushed.
    AckLater,
    /// Done, with a reply to publish first: acked once the broker confirmed the reply.
    Reply(Reply),
    /// The work failed: reject it, back to the queue or not.
    Reject { requeue: bool },
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
}

/// Where to consume from.
pub struct Source<'a> {
    pub connection_name: &'a str,
    /// Its queue is what is consumed: a named queue, or an exclusive one bound to exchanges.
    pub topology: &'a Topology,
    pub prefetch: u16,
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
    let (mut session, mut declared) = open(ctx, observer, source).await?;
    let mut consumer = Consumer {
        prefetch: source.prefetch,
        limits,
        interrupts: &mut interrupts,
        done: 0,
    };
    let mut resumed = false;
    loop {
        let queue = declared
            .queue
            .clone()
            .expect("a consumer's topology has a queue");
        handler.consuming(&queue, resumed);
        match consumer.run(&session, &queue, handler).await {
            Ok(ending) => {
                session.close().await;
                return Ok(ending);
            }
            Err(lost) if lost.is_connection_loss() => {
                let reopened = reconnect::reopen(
                    ctx,
                    observer,
                    lost,
                    Some(consumer.interrupts),
                    |attempt| async move { open(&attempt, observer, source).await },
                )
                .await?;
                let Some(reopened) = reopened else {
                    return Ok(Ending::Interrupted);
                };
                (session, declared) = reopened;
                resumed = true;
            }
            Err(error) => return Err(error),
        }
    }
}

async fn open(
    ctx: &Context,
    observer: &dyn Observer,
    source: &Source<'_>,
) -> Result<(Session, Declared)> {
    Session::open(
        ctx,
        source.connection_name,
        source.topology,
        Role::Consumer,
        observer,
    )
    .await
}

struct Consumer<'a> {
    prefetch: u16,
    limits: Limits,
    interrupts: &'a mut Interrupts,
    /// Deliveries acked or rejected so far, across reconnections: what `--count` counts.
    done: u64,
}

/// Deliveries handled but not yet acked; acked together with `multiple` once output is flushed.
#[derive(Default)]
struct PendingAcks {
    last_tag: Option<u64>,
    count: u16,
}

impl Consumer<'_> {
    /// Consumes from `queue` on `session` until the limits or an interrupt end it. A lost
    /// connection is an error after which `run` may be called again on a new session: what was
    /// handled but not acked then comes again, and is not counted twice.
    async fn run<H: Handler>(
        &mut self,
        session: &Session,
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
        // Put in confirm mode at the first reply to publish.
        let mut confirming = false;
        let ending = loop {
            let handled = self.done + u64::from(pending.count);
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
                        () = self.interrupts.wait_for(1) => break Ending::Interrupted,
                        () = idle => break Ending::Finished,
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
            match handler.handle(&delivery, self.interrupts).await? {
                Outcome::AckNow => {
                    self.settle(session, &mut pending, handler).await?;
                    channel
                        .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
                        .await
                        .map_err(Error::broker("cannot acknowledge a message"))?;
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
                    if !confirming {
                        enable_confirms(channel).await?;
                        confirming = true;
                    }
                    publish_reply(channel, &reply).await?;
                    channel
                        .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
                        .await
                        .map_err(Error::broker("cannot acknowledge a message"))?;
                    self.done += 1;
                }
                Outcome::Reject { requeue } => {
                    self.settle(session, &mut pending, handler).await?;
                    channel
                        .basic_reject(delivery.delivery_tag, BasicRejectOptions { requeue })
                        .await
                        .map_err(Error::broker("cannot reject a message"))?;
                    self.done += 1;
                }
                Outcome::Aborted => break Ending::Interrupted,
            }
        };
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
