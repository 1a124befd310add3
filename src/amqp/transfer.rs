//! Taking messages from a queue one at a time (`basic.get`) and holding them unsettled: to look
//! at them and put them all back in their order (`queues peek`, `queues dead-letters`), or to
//! publish each elsewhere, confirmed, and only then ack it (`queues move`, `--redrive`). A stream
//! is read by offset instead: reading it changes nothing.

use super::{
    Session,
    consume::{publish_unconfirmed, refusal},
    events::Observer,
    publish::{Answer, Sent, cannot_publish},
    reconnect,
};
use crate::{
    context::Context,
    error::{Error, Result, amqp_error},
    signals::Interrupts,
};
use futures_lite::StreamExt;
use lapin::{
    BasicProperties, Channel,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions,
        BasicNackOptions, BasicQosOptions,
    },
    types::{AMQPValue, FieldTable},
};
use std::{
    collections::{HashMap, VecDeque},
    hash::{DefaultHasher, Hash, Hasher},
    time::Duration,
};

/// The broker's reply to a method a queue type does not implement (`basic.get` on a stream).
const NOT_IMPLEMENTED: u16 = 540;

/// Messages published and not yet confirmed, at most, while moving.
pub const MOVE_WINDOW: usize = 256;

/// Takes one message from `queue` without acking it, with the number of messages left after it;
/// `None` when the queue is empty.
pub async fn take(channel: &Channel, queue: &str) -> Result<Option<(Delivery, u32)>> {
    let got = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await
        .map_err(|source| match amqp_error(&source) {
            // A stream: it keeps its messages, and is read by offset.
            Some(refused) if refused.get_id() == NOT_IMPLEMENTED => Error::MoveRefused {
                reason: format!(
                    "messages cannot be taken from queue '{queue}' one by one (the broker said: \
                     {})",
                    refused.get_message()
                ),
            },
            _ => Error::broker(format!("cannot take a message from queue '{queue}'"))(source),
        })?;
    Ok(got.map(|got| (got.delivery, got.message_count)))
}

/// Puts back every message taken on `channel` up to `last_tag` and not acked: the broker
/// requeues them (a classic queue in their places, marked redelivered).
pub async fn put_back(channel: &Channel, last_tag: u64) -> Result<()> {
    let options = BasicNackOptions {
        multiple: true,
        requeue: true,
    };
    channel
        .basic_nack(last_tag, options)
        .await
        .map_err(Error::broker("cannot put the messages back"))
}

/// Takes up to `count` messages from `queue` on `session`, shows each to `look`, then puts them
/// all back at once. Returns how many were taken. An error of `look` puts them back as well.
pub async fn peek(
    session: &Session,
    queue: &str,
    count: u64,
    mut look: impl FnMut(&Delivery, u32) -> Result<()>,
) -> Result<u64> {
    let mut taken = 0;
    let mut last_tag = None;
    let mut looked = Ok(());
    while taken < count {
        let Some((delivery, remaining)) = take(&session.channel, queue).await? else {
            break;
        };
        taken += 1;
        last_tag = Some(delivery.delivery_tag);
        looked = look(&delivery, remaining);
        if looked.is_err() {
            break;
        }
    }
    if let Some(last_tag) = last_tag {
        put_back(&session.channel, last_tag).await?;
    }
    looked.map(|()| taken)
}

/// How long reading a stream waits for its first message, and for each next one, once the
/// messages the broker counted are read: the count a stream reports lags a moment behind what
/// it holds.
const STREAM_FIRST: Duration = Duration::from_secs(1);
const STREAM_NEXT: Duration = Duration::from_millis(500);

/// Reads the first `count` messages of stream `stream` from its first offset, showing each to
/// `look`; a stream keeps what is read.
pub async fn read_stream(
    session: &Session,
    stream: &str,
    count: u64,
    mut look: impl FnMut(&Delivery) -> Result<()>,
) -> Result<u64> {
    let (counted, _) = session.inspect_queue(stream).await?;
    let wanted = count;
    let channel = &session.channel;
    // A stream consumer needs a prefetch; it gets no more than it will show.
    let prefetch = u16::try_from(wanted.min(1000)).unwrap_or(1000);
    channel
        .basic_qos(prefetch, BasicQosOptions { global: false })
        .await
        .map_err(Error::broker("cannot set the prefetch (basic.qos)"))?;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-stream-offset".into(),
        AMQPValue::LongString("first".into()),
    );
    let tag = format!("rmqlab.peek.{}", std::process::id());
    let mut deliveries = channel
        .basic_consume(
            stream.into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            arguments,
        )
        .await
        .map_err(Error::broker(format!("cannot read stream '{stream}'")))?;
    let mut read = 0;
    while read < wanted {
        let next = match read < counted.into() {
            true => Some(deliveries.next().await),
            false => {
                let wait = if read == 0 { STREAM_FIRST } else { STREAM_NEXT };
                tokio::time::timeout(wait, deliveries.next()).await.ok()
            }
        };
        // Nothing more came: the end of the stream.
        let Some(next) = next else {
            break;
        };
        let delivery = match next {
            Some(Ok(delivery)) => delivery,
            Some(Err(source)) => {
                return Err(Error::broker(format!("stopped reading stream '{stream}'"))(
                    source,
                ));
            }
            None => {
                return Err(Error::ConnectionLost {
                    context: format!("stopped reading stream '{stream}'"),
                });
            }
        };
        read += 1;
        look(&delivery)?;
        // Acks on a stream only give credit for more: nothing is removed.
        channel
            .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
            .await
            .map_err(Error::broker("cannot acknowledge a message"))?;
    }
    let _ = channel
        .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
        .await;
    Ok(read)
}

/// Where a moved message is published.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Destination {
    pub exchange: String,
    pub routing_key: String,
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.exchange.as_str() {
            "" => write!(f, "queue '{}'", self.routing_key),
            exchange => write!(
                f,
                "exchange '{exchange}' with routing key '{}'",
                self.routing_key
            ),
        }
    }
}

/// Decides where each message goes, and hears which were moved.
pub trait Router {
    /// Where this message goes; `None` leaves it in the source queue.
    fn route(&mut self, delivery: &Delivery) -> Option<Destination>;
    /// The message was confirmed at `to` and acked on the source; `remaining` messages were
    /// behind it in the source queue when it was taken.
    fn moved(&mut self, delivery: &Delivery, to: &Destination, remaining: u32);
}

/// What to move from.
pub struct Transfer<'a> {
    pub connection_name: &'a str,
    pub source: &'a str,
    /// Stop after this many messages moved (`--count`); then wait [`SETTLE`] so that a quorum
    /// queue has applied the acks before rmqlab ends.
    pub limit: Option<u64>,
    /// Take no more than this many messages: what the source held when the move began, so that
    /// a destination that routes back into the source does not make it endless. Reaching it,
    /// one more `basic.get` tells whether the source is empty (a message it returns goes back).
    pub at_start: Option<u64>,
}

/// How long a stopping move waits, in all, for the confirms still in flight.
const STOP_CONFIRM: Duration = Duration::from_secs(10);

/// How long a move stopped by its limit waits before it ends: a quorum queue applies acks
/// asynchronously, and one that is not emptied gives no `basic.get` barrier to wait for.
pub const SETTLE: Duration = Duration::from_millis(500);

/// What a transfer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transferred {
    /// Messages confirmed at their destination and acked on the source.
    pub moved: u64,
    /// Messages the router left in the source queue (put back in their order).
    pub left: u64,
    /// Of the moved ones, messages published again after a lost connection: they had been
    /// published (and perhaps confirmed) before it, so the destination may hold them twice.
    pub republished: u64,
    /// A signal stopped it before the source was empty.
    pub stopped: bool,
    /// Reaching [`Transfer::at_start`], the source still held this many messages (they came
    /// in during the move); `None` when it did not reach it, or the source was empty.
    pub more: Option<u64>,
}

/// A message published and not yet confirmed.
struct InFlight {
    delivery: Delivery,
    to: Destination,
    remaining: u32,
    confirm: Sent,
    /// It was acked, and counted as moved, before a lost connection took the ack with it: it
    /// is not counted again.
    counted: bool,
}

/// Moves messages from `transfer.source` as `router` says, until it is empty, the limit, or a
/// signal: each is published, confirmed, then acked (at-least-once), with up to
/// [`MOVE_WINDOW`] in flight. After a lost connection it reconnects within
/// `--reconnect-timeout`; what was published and not acked comes back to the source and is
/// moved again, and counted in [`Transferred::republished`].
pub async fn transfer(
    ctx: &Context,
    observer: &dyn Observer,
    transfer: &Transfer<'_>,
    router: &mut impl Router,
    interrupts: &mut Interrupts,
) -> Result<Transferred> {
    let mut mover = Mover {
        transfer,
        done: Transferred::default(),
        recent: VecDeque::with_capacity(2 * MOVE_WINDOW),
        in_doubt: HashMap::new(),
        last_tag: 0,
        closed_by: None,
    };
    let mut session = Session::connect(ctx, transfer.connection_name, observer).await?;
    loop {
        match mover.run(&session, router, interrupts).await {
            Ok(()) => {
                session.close().await;
                return Ok(mover.done);
            }
            Err(lost) if lost.is_connection_loss() => {
                mover.lost();
                let reopened = reconnect::reopen(
                    ctx,
                    observer,
                    None,
                    lost,
                    Some(&mut *interrupts),
                    |attempt| async move {
                        Session::connect(&attempt, transfer.connection_name, observer).await
                    },
                )
                .await?;
                let Some(reopened) = reopened else {
                    mover.done.stopped = true;
                    return Ok(mover.done);
                };
                session = reopened;
            }
            Err(error) => {
                // What was not acked goes back to the source with the connection.
                session.close().await;
                return Err(error);
            }
        }
    }
}

struct Mover<'a> {
    transfer: &'a Transfer<'a>,
    done: Transferred,
    /// Fingerprints of the last messages acked: an ack lost with the connection brings them
    /// back.
    recent: VecDeque<u64>,
    /// After a lost connection, fingerprints of the messages that may already be at their
    /// destination, and how many of each: (not counted as moved, counted as moved).
    in_doubt: HashMap<u64, (u32, u32)>,
    /// The last delivery tag taken on this connection.
    last_tag: u64,
    /// Why the broker closed the publishing channel, as a confirm in flight heard it.
    closed_by: Option<String>,
}

impl Mover<'_> {
    /// Moves on `session` until the source is empty, the limit, or a signal.
    async fn run(
        &mut self,
        session: &Session,
        router: &mut impl Router,
        interrupts: &mut Interrupts,
    ) -> Result<()> {
        self.last_tag = 0;
        let publisher = session.open_confirm_channel().await?;
        let mut window = VecDeque::with_capacity(MOVE_WINDOW);
        let moved = self
            .move_all(session, &publisher, &mut window, router, interrupts)
            .await;
        moved.map_err(|error| self.with_window(error, &window))
    }

    async fn move_all(
        &mut self,
        session: &Session,
        publisher: &Channel,
        window: &mut VecDeque<InFlight>,
        router: &mut impl Router,
        interrupts: &mut Interrupts,
    ) -> Result<()> {
        let source = self.transfer.source;
        // Messages left in the source on this connection, to put back at the end.
        let mut left = 0;
        let mut taken = self.done.moved;
        loop {
            if interrupts.received() > 0 {
                self.done.stopped = true;
                break;
            }
            let started = self.done.moved + window.len() as u64;
            if self.transfer.limit.is_some_and(|limit| started >= limit) {
                self.settle_all(session, window, router).await?;
                if self.done.moved > 0 {
                    tokio::time::sleep(SETTLE).await;
                }
                break;
            }
            let capped = self.transfer.at_start.is_some_and(|cap| taken >= cap);
            if capped {
                // What the source held at the start is moved: after the last ack, one more
                // get tells whether it is empty now.
                self.settle_all(session, window, router).await?;
            }
            let Some((delivery, remaining)) = take(&session.channel, source).await? else {
                if window.is_empty() {
                    break;
                }
                // The source looks empty: settle what is in flight, then ask again, so that
                // the last get comes after the last ack (a quorum queue applies acks
                // asynchronously; the get is its barrier).
                self.settle_all(session, window, router).await?;
                continue;
            };
            self.last_tag = delivery.delivery_tag;
            if capped {
                left += 1;
                self.done.more = Some(u64::from(remaining) + 1);
                break;
            }
            let counted = match delivery.redelivered {
                true => self.was_in_doubt(&delivery),
                false => None,
            };
            // One counted as moved already (its ack was lost) was taken once before.
            if counted != Some(true) {
                taken += 1;
            }
            let Some(to) = router.route(&delivery) else {
                left += 1;
                continue;
            };
            if counted.is_some() {
                self.done.republished += 1;
            }
            let properties = without_delivery_count(delivery.properties.clone());
            let published = publish_unconfirmed(
                publisher,
                &to.exchange,
                &to.routing_key,
                &delivery.data,
                properties,
            )
            .await;
            let confirm = match published {
                Ok(confirm) => confirm,
                Err(source) => {
                    let error = cannot_publish(format!("a message to {to}"))(source);
                    if error.is_connection_loss() {
                        // Its frames may have been written before the connection went: in
                        // doubt, as the messages in flight are.
                        self.doubt(&delivery, counted == Some(true));
                    }
                    let to = to.to_string();
                    return Err(self
                        .channel_failed(session, window, router, to, error)
                        .await);
                }
            };
            window.push_back(InFlight {
                delivery,
                to,
                remaining,
                confirm,
                counted: counted == Some(true),
            });
            if window.len() >= MOVE_WINDOW {
                self.settle_oldest(session, window, router).await?;
            }
        }
        self.settle_all(session, window, router).await?;
        if left > 0 {
            put_back(&session.channel, self.last_tag).await?;
        }
        self.done.left = left;
        Ok(())
    }

    /// Settles every message in flight, oldest first.
    async fn settle_all(
        &mut self,
        session: &Session,
        window: &mut VecDeque<InFlight>,
        router: &mut impl Router,
    ) -> Result<()> {
        while !window.is_empty() {
            self.settle_oldest(session, window, router).await?;
        }
        Ok(())
    }

    /// Publishing failed with `error`. A lost connection stays one (what was not acked goes
    /// back with it, and in doubt); a publisher's channel the broker closed while the
    /// connection is up stops the move as a refusal does.
    async fn channel_failed(
        &mut self,
        session: &Session,
        window: &mut VecDeque<InFlight>,
        router: &mut impl Router,
        to: String,
        error: Error,
    ) -> Error {
        if error.is_connection_loss() && !session.is_connected() {
            return error;
        }
        let refused = Error::NotMoved {
            to: to.clone(),
            reason: String::new(),
            moved: 0,
            left: 0,
            source_queue: self.transfer.source.to_string(),
        };
        self.closed_by = None;
        let error = match self.stop(session, window, router, refused).await {
            // A publish after the broker closed the channel only hears that it is closed: why
            // is in the confirms still in flight, when there were any.
            Error::NotMoved {
                to,
                moved,
                left,
                source_queue,
                ..
            } => {
                let why = match self.closed_by.take() {
                    Some(why) => format!("the broker closed the channel: {why}"),
                    None => error.one_line(),
                };
                Error::NotMoved {
                    reason: format!(
                        "{why} (the channel closed before the broker confirmed the messages in \
                         flight: {to} may hold some of those left in the source as well)"
                    ),
                    to,
                    moved,
                    left,
                    source_queue,
                }
            }
            other => other,
        };
        match session.is_connected() {
            true => error.not_a_connection_loss(),
            false => error,
        }
    }

    /// The destination refused a message, or the publisher's channel closed: of the messages in
    /// flight, those the broker confirmed are acked on the source (they are at their
    /// destination), and the others, with every message taken and not acked on this
    /// connection, go back to the source. Returns the error to end the move with.
    async fn stop(
        &mut self,
        session: &Session,
        window: &mut VecDeque<InFlight>,
        router: &mut impl Router,
        error: Error,
    ) -> Error {
        let mut not_moved = 0;
        let deadline = tokio::time::Instant::now() + STOP_CONFIRM;
        while let Some(mut in_flight) = window.pop_front() {
            // A confirm that never comes leaves the message in the source, not a hang.
            let answer = tokio::time::timeout_at(deadline, &mut in_flight.confirm).await;
            let confirmed = match answer.map(Answer::into_result) {
                Ok(Ok(confirmation)) => refusal(confirmation).is_none(),
                Ok(Err(source)) => {
                    if let Some(refused) = amqp_error(&source)
                        && self.closed_by.is_none()
                    {
                        self.closed_by = Some(refused.to_string());
                    }
                    false
                }
                Err(_) => false,
            };
            if !confirmed {
                not_moved += 1;
                continue;
            }
            if let Err(error) = self.acked(session, in_flight, router).await {
                return error;
            }
        }
        if self.last_tag > 0
            && let Err(error) = put_back(&session.channel, self.last_tag).await
        {
            return error;
        }
        match error {
            Error::NotMoved {
                to,
                reason,
                source_queue,
                ..
            } => Error::NotMoved {
                to,
                reason,
                moved: self.done.moved,
                // The refused one was popped before: it is not in `not_moved`.
                left: not_moved,
                source_queue,
            },
            error => error,
        }
    }

    /// After an error: a lost connection leaves the messages in flight in doubt.
    fn with_window(&mut self, error: Error, window: &VecDeque<InFlight>) -> Error {
        if error.is_connection_loss() {
            for in_flight in window {
                self.doubt(&in_flight.delivery, in_flight.counted);
            }
        }
        error
    }

    /// `delivery` may be at its destination without its confirm: if it is taken again, it is
    /// published again (and it was `counted` as moved already, or not).
    fn doubt(&mut self, delivery: &Delivery, counted: bool) {
        let entry = self.in_doubt.entry(fingerprint(delivery)).or_default();
        match counted {
            true => entry.1 += 1,
            false => entry.0 += 1,
        }
    }

    /// The connection was lost: the messages acked last may not have been acked.
    fn lost(&mut self) {
        for print in self.recent.drain(..) {
            self.in_doubt.entry(print).or_default().1 += 1;
        }
    }

    /// Whether a message taken again was one of those in doubt (then it no longer is), and if
    /// so whether it was counted as moved already (its ack was lost with the connection).
    fn was_in_doubt(&mut self, delivery: &Delivery) -> Option<bool> {
        let print = fingerprint(delivery);
        let entry = self.in_doubt.get_mut(&print)?;
        let counted = match entry {
            (_, counted) if *counted > 0 => {
                *counted -= 1;
                true
            }
            (uncounted, _) => {
                *uncounted -= 1;
                false
            }
        };
        if *entry == (0, 0) {
            self.in_doubt.remove(&print);
        }
        Some(counted)
    }

    /// Waits for the confirm of the oldest message in flight, then acks it on the source.
    async fn settle_oldest(
        &mut self,
        session: &Session,
        window: &mut VecDeque<InFlight>,
        router: &mut impl Router,
    ) -> Result<()> {
        let Some(oldest) = window.front_mut() else {
            return Ok(());
        };
        let what = format_args!("a message to {}", oldest.to);
        let confirmation = match (&mut oldest.confirm).await.confirmation(what) {
            Ok(confirmation) => confirmation,
            Err(error) => {
                let to = oldest.to.to_string();
                // It is not at its destination, or not known to be: it stays in the source.
                let oldest = window.pop_front().expect("the oldest was just awaited");
                if error.is_connection_loss() {
                    // Written, and its confirm lost with the connection: in doubt, as the
                    // messages in flight behind it are.
                    self.doubt(&oldest.delivery, oldest.counted);
                }
                return Err(self
                    .channel_failed(session, window, router, to, error)
                    .await);
            }
        };
        if let Some(reason) = refusal(confirmation) {
            let refused = window.pop_front().expect("the oldest was just refused");
            let error = Error::NotMoved {
                to: refused.to.to_string(),
                reason,
                moved: 0,
                left: 0,
                source_queue: self.transfer.source.to_string(),
            };
            return Err(self.stop(session, window, router, error).await);
        }
        let oldest = window.pop_front().expect("the oldest was just confirmed");
        self.acked(session, oldest, router).await
    }

    /// Acks on the source a message confirmed at its destination.
    async fn acked(
        &mut self,
        session: &Session,
        in_flight: InFlight,
        router: &mut impl Router,
    ) -> Result<()> {
        let InFlight {
            delivery,
            to,
            remaining,
            counted,
            ..
        } = in_flight;
        session
            .channel
            .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
            .await
            .map_err(Error::broker("cannot acknowledge a message"))?;
        if self.recent.len() == 2 * MOVE_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(fingerprint(&delivery));
        if !counted {
            self.done.moved += 1;
            router.moved(&delivery, &to, remaining);
        }
        Ok(())
    }
}

/// The header a quorum queue keeps on its deliveries: its count, not the message's; never
/// copied when a message is published again.
pub const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

/// A message's headers to publish it again with: its own, less [`DELIVERY_COUNT_HEADER`].
pub fn headers_to_copy(properties: &BasicProperties) -> FieldTable {
    let mut headers = properties
        .headers()
        .as_ref()
        .map(|headers| headers.inner().clone())
        .unwrap_or_default();
    headers.remove(DELIVERY_COUNT_HEADER);
    FieldTable::from(headers)
}

/// The properties to publish a moved message with: its own, headers as [`headers_to_copy`].
fn without_delivery_count(properties: BasicProperties) -> BasicProperties {
    match properties.headers() {
        Some(_) => {
            let headers = headers_to_copy(&properties);
            properties.with_headers(headers)
        }
        None => properties,
    }
}

/// What tells a message taken again after a lost connection from the others: its body and the
/// properties a publisher sets once (not the headers, where a quorum queue counts deliveries).
fn fingerprint(delivery: &Delivery) -> u64 {
    let mut hasher = DefaultHasher::new();
    delivery.data.hash(&mut hasher);
    let properties = &delivery.properties;
    properties
        .message_id()
        .as_ref()
        .map(|id| id.as_str())
        .hash(&mut hasher);
    properties
        .correlation_id()
        .as_ref()
        .map(|id| id.as_str())
        .hash(&mut hasher);
    properties.timestamp().hash(&mut hasher);
    hasher.finish()
}
