//! Publishing with confirms: many messages in flight, each reported once the broker confirmed
//! it, and every unconfirmed message sent again after a lost connection.

use super::{
    Role, Session,
    events::{Event, Observer},
    reconnect,
    topology::Topology,
};
use crate::{
    context::Context,
    error::{Error, Result},
    input::Messages,
};
use lapin::{BasicProperties, Confirmation, PublisherConfirm, options::BasicPublishOptions};
use std::collections::VecDeque;

/// Publishes kept in flight before waiting for the oldest confirm.
pub const CONFIRM_WINDOW: usize = 512;

/// Where and how messages are published.
#[derive(Debug, Clone)]
pub struct Publication<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    /// Delivery mode 2: written to disk by a durable queue, kept across a broker restart.
    pub persistent: bool,
    /// What to do with a message no queue takes (the broker returns it: `mandatory`).
    pub unroutable: Unroutable,
}

impl Publication<'_> {
    pub fn properties(&self) -> BasicProperties {
        let properties = BasicProperties::default();
        if self.persistent {
            properties.with_delivery_mode(2)
        } else {
            properties
        }
    }
}

/// What a message that no queue takes means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unroutable {
    /// An error: the queue the message was meant for is gone.
    Fails,
    /// Correct behaviour (fan-out with no listener): reported, and publishing goes on.
    IsDropped,
}

/// What a publish run achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    /// Messages the broker confirmed, counting from the first input line.
    pub confirmed: u64,
    /// Of those, messages no queue took.
    pub dropped: u64,
    /// Messages sent again after a lost connection (they may have arrived twice).
    pub republished: u64,
}

/// Told of each message's fate, in input order.
pub trait Confirmations {
    /// The broker confirmed message `number` (the first input message is 1).
    fn confirmed(&mut self, number: u64, body: &[u8]) -> Result<()>;
    /// The message about to be confirmed was taken by no queue ([`Unroutable::IsDropped`]).
    fn dropped(&mut self);
    /// Nothing more to report until more input comes: a moment to flush what was reported.
    fn flush(&mut self) -> Result<()>;
}

/// What to publish, where, over which connection.
pub struct Plan<'a> {
    pub connection_name: &'a str,
    pub topology: &'a Topology,
    pub target: &'a Publication<'a>,
}

/// How a publish run begins.
pub enum Start {
    /// Connect and declare first.
    Connect,
    /// The one-message path lost its connection after its message (still the first of the
    /// input) left: reconnect, and count that message as sent again.
    AfterLoss(Error),
}

/// Publishes every message of `messages` as `plan` says, keeping up to [`CONFIRM_WINDOW`] in
/// flight. A lost connection is opened again within `--reconnect-timeout`, and every message not
/// yet confirmed is sent again (at-least-once: some may arrive twice). On an error,
/// `confirmations` has been told of every confirmed message.
pub async fn publish_all<C: Confirmations>(
    ctx: &Context,
    observer: &dyn Observer,
    plan: &Plan<'_>,
    messages: &mut Messages,
    confirmations: &mut C,
    start: Start,
) -> Result<Published> {
    let mut window = ConfirmWindow::new(plan.target, confirmations);
    let mut opened = match start {
        Start::Connect => Ok(open(ctx, observer, plan).await?),
        Start::AfterLoss(lost) => {
            window.published.republished += 1;
            window.resend_pending = 1;
            Err(lost)
        }
    };
    loop {
        let lost = match opened {
            Ok(session) => match window.publish(&session, messages).await {
                Ok(()) => {
                    session.close().await;
                    return Ok(window.published);
                }
                Err(lost) if lost.is_connection_loss() => lost,
                Err(error) => return Err(error),
            },
            Err(lost) => lost,
        };
        let session = reconnect::reopen(ctx, observer, lost, None, |attempt| async move {
            open(&attempt, observer, plan).await
        })
        .await
        .map_err(|source| Error::PublishInterrupted {
            confirmed: window.published.confirmed,
            // The command knows its input.
            input: None,
            source: Box::new(source),
        })?;
        opened = Ok(session.expect("publishers are not interruptible"));
        let count = window.forget_sent() + std::mem::take(&mut window.resend_pending);
        observer.observe(Event::Resending { count });
    }
}

async fn open(ctx: &Context, observer: &dyn Observer, plan: &Plan<'_>) -> Result<Session> {
    let (session, _) = Session::open(
        ctx,
        plan.connection_name,
        plan.topology,
        Role::Publisher,
        observer,
    )
    .await?;
    Ok(session)
}

/// A message read from the input and not yet confirmed by the broker.
struct Entry {
    body: Vec<u8>,
    /// Set once it is published on the current connection.
    confirm: Option<PublisherConfirm>,
}

/// The messages between the input and the broker's confirms; it outlives a lost connection.
struct ConfirmWindow<'a, C> {
    /// Unconfirmed messages in input order: the first `sent` are published and await a confirm.
    queue: VecDeque<Entry>,
    sent: usize,
    input_ended: bool,
    /// Messages sent before this window existed (by the one-message path), to count as sent
    /// again after the next reconnection.
    resend_pending: u64,
    published: Published,
    target: &'a Publication<'a>,
    confirmations: &'a mut C,
}

impl<'a, C: Confirmations> ConfirmWindow<'a, C> {
    fn new(target: &'a Publication<'a>, confirmations: &'a mut C) -> Self {
        ConfirmWindow {
            queue: VecDeque::with_capacity(CONFIRM_WINDOW),
            sent: 0,
            input_ended: false,
            resend_pending: 0,
            published: Published::default(),
            target,
            confirmations,
        }
    }

    /// Publishes on `session`, which is in confirm mode, until the input ends and everything is
    /// confirmed. Messages held unconfirmed from an earlier, lost connection are sent again
    /// first. On error the window keeps every message not yet confirmed, for a retry.
    async fn publish(&mut self, session: &Session, messages: &mut Messages) -> Result<()> {
        let properties = self.target.properties();
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        loop {
            // Send what is queued, as far as the window allows.
            while self.sent < self.queue.len() && self.sent < CONFIRM_WINDOW {
                let entry = &mut self.queue[self.sent];
                let confirm = session
                    .channel
                    .basic_publish(
                        self.target.exchange.into(),
                        self.target.routing_key.into(),
                        options,
                        &entry.body,
                        properties.clone(),
                    )
                    .await
                    .map_err(Error::broker("cannot publish"))?;
                entry.confirm = Some(confirm);
                self.sent += 1;
            }
            if self.sent == CONFIRM_WINDOW {
                self.settle_oldest().await?;
                continue;
            }
            if self.input_ended {
                if self.sent == 0 {
                    break;
                }
                self.settle_oldest().await?;
                continue;
            }
            let batch = match messages.try_next() {
                Ok(Some(batch)) => Ok(batch),
                Ok(None) if self.sent == 0 => {
                    self.confirmations.flush()?;
                    messages.next().await
                }
                // Input is not ready: settle confirms while waiting for it.
                Ok(None) => tokio::select! {
                    biased;
                    batch = messages.next() => batch,
                    settled = self.settle_oldest() => { settled?; continue; }
                },
                Err(error) => Err(error),
            }
            .map_err(|source| Error::Input {
                path: messages.name.clone(),
                source,
            })?;
            if batch.is_empty() {
                self.input_ended = true;
            }
            self.queue.extend(batch.into_iter().map(|body| Entry {
                body,
                confirm: None,
            }));
        }
        self.confirmations.flush()
    }

    /// After a lost connection: every published but unconfirmed message must be sent again.
    /// Returns how many.
    fn forget_sent(&mut self) -> u64 {
        let resent = self.sent;
        for entry in self.queue.iter_mut().take(resent) {
            entry.confirm = None;
        }
        self.sent = 0;
        self.published.republished += resent as u64;
        resent as u64
    }

    /// Waits for the broker's answer to the oldest message in flight.
    async fn settle_oldest(&mut self) -> Result<()> {
        let Some(confirm) = self.queue.front_mut().and_then(|e| e.confirm.as_mut()) else {
            return Ok(());
        };
        let number = self.published.confirmed + 1;
        let confirmation = confirm.await;
        let Entry { body, .. } = self
            .queue
            .pop_front()
            .expect("the front entry was just awaited");
        self.sent -= 1;
        settle(
            confirmation,
            number,
            &body,
            self.target,
            &mut self.published,
            self.confirmations,
        )
    }
}

/// What the broker answered to message `number`: a confirm is reported to `confirmations`; a
/// nack, or a return that `target` does not accept, is an error.
fn settle<C: Confirmations>(
    confirmation: lapin::Result<Confirmation>,
    number: u64,
    body: &[u8],
    target: &Publication<'_>,
    published: &mut Published,
    confirmations: &mut C,
) -> Result<()> {
    let confirmation = confirmation.map_err(|source| Error::Broker {
        context: if source.is_amqp_soft_error() {
            format!("the broker refused message {number}")
        } else {
            format!("lost the broker's confirmation of message {number}")
        },
        source: Box::new(source),
    })?;
    if confirmation.is_nack() {
        return Err(Error::Nacked { number });
    }
    if let Some(returned) = confirmation.take_message() {
        match target.unroutable {
            Unroutable::Fails => {
                return Err(Error::Unroutable {
                    number,
                    reason: format!(
                        "{} {} (exchange '{}', routing key '{}')",
                        returned.reply_code,
                        returned.reply_text,
                        returned.delivery.exchange,
                        returned.delivery.routing_key
                    ),
                });
            }
            Unroutable::IsDropped => {
                published.dropped += 1;
                confirmations.dropped();
            }
        }
    }
    published.confirmed = number;
    confirmations.confirmed(number, body)
}

/// Publishes every message of `messages` on `session` (in confirm mode) with up to
/// [`CONFIRM_WINDOW`] in flight, as [`publish_all`] does, but on a session the caller opened and
/// without reconnecting: the caller measures or inspects what the session declared.
pub async fn publish_windowed<C: Confirmations>(
    session: &Session,
    target: &Publication<'_>,
    messages: &mut Messages,
    confirmations: &mut C,
) -> Result<Published> {
    let mut window = ConfirmWindow::new(target, confirmations);
    window.publish(session, messages).await?;
    Ok(window.published)
}

/// Publishes every message of `messages` on `session` (in confirm mode) `batch_size` at a time,
/// waiting for every confirm of a batch before sending the next one: a batch of 1 waits for
/// each message's confirm (tutorial 7's first two strategies).
pub async fn publish_in_batches<C: Confirmations>(
    session: &Session,
    target: &Publication<'_>,
    messages: &mut Messages,
    batch_size: usize,
    confirmations: &mut C,
) -> Result<Published> {
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let properties = target.properties();
    let mut published = Published::default();
    let mut batch = Vec::with_capacity(batch_size);
    let mut input_ended = false;
    while !input_ended {
        let bodies = messages.next().await.map_err(|source| Error::Input {
            path: messages.name.clone(),
            source,
        })?;
        input_ended = bodies.is_empty();
        for body in bodies {
            let confirm = session
                .channel
                .basic_publish(
                    target.exchange.into(),
                    target.routing_key.into(),
                    options,
                    &body,
                    properties.clone(),
                )
                .await
                .map_err(Error::broker("cannot publish"))?;
            batch.push((body, confirm));
            if batch.len() == batch_size {
                settle_batch(&mut batch, target, &mut published, confirmations).await?;
            }
        }
    }
    settle_batch(&mut batch, target, &mut published, confirmations).await?;
    confirmations.flush()?;
    Ok(published)
}

/// Waits for the confirm of every message of `batch`, in order, and empties it.
async fn settle_batch<C: Confirmations>(
    batch: &mut Vec<(Vec<u8>, PublisherConfirm)>,
    target: &Publication<'_>,
    published: &mut Published,
    confirmations: &mut C,
) -> Result<()> {
    for (body, confirm) in batch.drain(..) {
        let number = published.confirmed + 1;
        settle(
            confirm.await,
            number,
            &body,
            target,
            published,
            confirmations,
        )?;
    }
    Ok(())
}
