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
    message::Message,
    signals::{Interrupts, Stop},
};
use futures_lite::{StreamExt, future::poll_once};
use lapin::{
    BasicProperties, Channel, Confirmation, PublisherConfirm, options::BasicPublishOptions,
};
use std::{
    collections::VecDeque,
    convert::Infallible,
    fmt::Display,
    future::Future,
    pin::{Pin, pin},
    task::{Context as TaskContext, Poll, Waker},
    time::Duration,
};
use tokio::time::Instant;

/// Publishes kept in flight before waiting for the oldest confirm.
pub const CONFIRM_WINDOW: usize = 512;

/// Bytes of bodies kept in flight before waiting for the oldest confirm (one message at least):
/// with lines of megabytes, the memory of the window is bounded by this, not by their number.
const CONFIRM_WINDOW_BYTES: usize = 64 * 1024 * 1024;

/// The broker's answer to a message handed to lapin by [`send`]. As large as lapin's own
/// `Result<Confirmation>`, which it replaces.
#[allow(clippy::large_enum_variant)]
pub(super) enum Answer {
    /// Confirmed, nacked, or returned with its confirm.
    Came(Confirmation),
    /// Its frames were never written: the channel or the connection went first.
    NotSent(lapin::Error),
    /// Written, and the confirm did not come: the channel or the connection went.
    Lost(lapin::Error),
}

impl Answer {
    /// As lapin reports it: the confirmation, or the error that ended the wait for it.
    pub(super) fn into_result(self) -> lapin::Result<Confirmation> {
        match self {
            Answer::Came(confirmation) => Ok(confirmation),
            Answer::NotSent(source) | Answer::Lost(source) => Err(source),
        }
    }

    /// The confirmation, or the error about the message `what` names ("the reply to 'x'"):
    /// "cannot publish WHAT" when its frames were never written, "no confirm of WHAT" when
    /// they were and the channel or the connection went before the confirm.
    /// `what` is formatted only for an error: this is awaited once per message.
    pub(super) fn confirmation(self, what: impl Display) -> Result<Confirmation> {
        match self {
            Answer::Came(confirmation) => Ok(confirmation),
            Answer::NotSent(source) => Err(cannot_publish(what)(source)),
            Answer::Lost(source) => Err(Error::broker(format!("no confirm of {what}"))(source)),
        }
    }
}

/// The error of a publish, of the message `what` names (or of any, when it shows as empty),
/// that lapin refused or could not write: its channel or connection is gone.
pub(super) fn cannot_publish(what: impl Display) -> impl FnOnce(lapin::Error) -> Error {
    move |source| {
        let context = format!("cannot publish {what}");
        Error::broker(context.trim_end())(source)
    }
}

/// A publish refused at once (`error`: its channel is closed) when earlier ones are in flight:
/// the broker closes the channel over a message it refuses (too large, say), and the answers
/// to those in flight, awaited oldest first with `settle`, say which and why, where the later
/// ones only met the closed channel. Returns the first error `settle` makes, or else `error`.
pub(super) async fn refused_first<T>(
    error: Error,
    in_flight: impl IntoIterator<Item = T>,
    mut settle: impl AsyncFnMut(T) -> Result<()>,
) -> Error {
    for message in in_flight {
        if let Err(refused) = settle(message).await {
            return refused;
        }
    }
    error
}

/// The size of the message the broker closed the channel over as too large, from its reason
/// ("message size 2000000 is larger than configured max size 1048576"). A closed channel fails
/// every confirm in flight with that reason: the one refused is the one of that size.
pub(super) fn refused_size(source: &lapin::Error) -> Option<usize> {
    let reason = crate::error::amqp_error(source)?.get_message().as_str();
    let (_, after) = reason.split_once("message size ")?;
    let digits = after.split(|c: char| !c.is_ascii_digit()).next()?;
    match after[digits.len()..].starts_with(" is larger than") {
        true => digits.parse().ok(),
        false => None,
    }
}

/// A message on its way: resolves to the broker's answer.
pub(super) struct Sent(Stage);

enum Stage {
    /// Queued for lapin to write; this future holds the body's copy until then.
    Writing(Pin<Box<dyn Future<Output = lapin::Result<PublisherConfirm>>>>),
    /// Written: the broker's answer is to come.
    Written(PublisherConfirm),
    /// Never written: why (until taken).
    NotWritten(Option<lapin::Error>),
}

impl Sent {
    /// Moves on from [`Stage::Writing`] if the write is over, polled with `cx`.
    fn poll_write(&mut self, cx: &mut TaskContext<'_>) -> Poll<()> {
        let Stage::Writing(writing) = &mut self.0 else {
            return Poll::Ready(());
        };
        self.0 = match writing.as_mut().poll(cx) {
            Poll::Ready(Ok(confirm)) => Stage::Written(confirm),
            Poll::Ready(Err(source)) => Stage::NotWritten(Some(source)),
            Poll::Pending => return Poll::Pending,
        };
        Poll::Ready(())
    }

    /// Lets go of what only the write needed, if lapin has written it: for the many messages a
    /// large batch holds, that is most of their memory. Returns whether the write is over.
    pub(super) fn written(&mut self) -> bool {
        self.poll_write(&mut TaskContext::from_waker(Waker::noop()))
            .is_ready()
    }

    /// Waits until lapin has written it (or failed to).
    pub(super) async fn write(&mut self) {
        std::future::poll_fn(|cx| self.poll_write(cx)).await;
    }
}

impl Future for Sent {
    type Output = Answer;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Answer> {
        if self.poll_write(cx).is_pending() {
            return Poll::Pending;
        }
        match &mut self.0 {
            Stage::Written(confirm) => Pin::new(confirm).poll(cx).map(|answer| match answer {
                Ok(confirmation) => Answer::Came(confirmation),
                Err(source) => Answer::Lost(source),
            }),
            Stage::NotWritten(source) => Poll::Ready(Answer::NotSent(
                source.take().expect("a message's answer is taken once"),
            )),
            Stage::Writing(_) => unreachable!("the write is over"),
        }
    }
}

/// Bodies up to this size are queued without waiting for lapin to write them; a larger one is
/// written before `send` returns. Queued, a body is held twice until written (copied for the
/// wait, and in lapin's frames), for every message in flight; and writing a large body takes
/// far longer than the round trip between threads that the queueing saves.
pub(super) const QUEUED_BODY_MAX: usize = 64 * 1024;

/// Publishes `body` on `channel` (in confirm mode) and returns its answer to come. A body up to
/// [`QUEUED_BODY_MAX`] is not waited for: its frames are queued at once, in the order of the
/// calls, so that one wake-up of lapin's I/O thread writes many messages (waiting for each
/// write costs a round trip between threads per message), and it is copied until written. A
/// larger body is written first, uncopied. An error is a publish refused at once (a closed
/// channel), or a write that failed.
pub(super) async fn send(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    options: BasicPublishOptions,
    body: &[u8],
    properties: BasicProperties,
) -> lapin::Result<Sent> {
    if body.len() > QUEUED_BODY_MAX {
        let confirm = channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                options,
                body,
                properties,
            )
            .await?;
        return Ok(Sent(Stage::Written(confirm)));
    }
    let channel = channel.clone();
    let (exchange, routing_key) = (exchange.into(), routing_key.into());
    let body = body.to_vec();
    let writing = Box::pin(async move {
        channel
            .basic_publish(exchange, routing_key, options, &body, properties)
            .await
    });
    // The first poll queues the frames; whoever awaits the answer polls it again.
    let mut sent = Sent(Stage::Writing(writing));
    sent.written();
    match &mut sent.0 {
        Stage::NotWritten(source) => Err(source.take().expect("just failed")),
        _ => Ok(sent),
    }
}

/// Where and how messages are published.
#[derive(Debug, Clone)]
pub struct Publication<'a> {
    pub exchange: &'a str,
    pub routing_key: RoutingKey<'a>,
    /// Delivery mode 2: written to disk by a durable queue, kept across a broker restart.
    pub persistent: bool,
    /// What to do with a message no queue takes (the broker returns it: `mandatory`).
    pub unroutable: Unroutable,
}

/// The routing key each message is published with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutingKey<'a> {
    /// The same key for every message.
    Fixed(&'a str),
    /// This key, unless a message carries its own (`--input json`).
    Given(&'a str),
    /// Each message's body is its own routing key (to find out which keys a binding routes).
    Body,
}

impl Publication<'_> {
    /// The routing key of `message`.
    pub fn routing_key_of<'b>(&'b self, message: &'b Message) -> std::borrow::Cow<'b, str> {
        match (self.routing_key, &message.routing_key) {
            (RoutingKey::Fixed(key), _) | (RoutingKey::Given(key), None) => key.into(),
            (RoutingKey::Given(_), Some(own)) => own.as_str().into(),
            (RoutingKey::Body, _) => String::from_utf8_lossy(&message.body),
        }
    }

    /// The properties `message` is published with: its own, and delivery mode 2 when the
    /// publication is persistent and the message does not say.
    pub fn properties_of(&self, message: &Message) -> BasicProperties {
        let properties = message.properties.as_deref().cloned().unwrap_or_default();
        if self.persistent && properties.delivery_mode().is_none() {
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
    /// A signal stopped the run before the input's end.
    pub stopped: bool,
    /// Messages sent after the confirmed ones whose confirm did not come before the stop: they
    /// may or may not have arrived.
    pub in_doubt: u64,
}

/// Told of each message's fate, in input order.
pub trait Confirmations {
    /// The broker confirmed message `number` (the first input message is 1).
    fn confirmed(&mut self, number: u64, message: &Message) -> Result<()>;
    /// A message was taken by no queue ([`Unroutable::IsDropped`]); `routing_key` is the one it
    /// was returned with. It is reported before a confirm, but with several messages in flight
    /// not necessarily before its own: lapin pairs each returned message with the next confirm
    /// it handles. Every return has been reported once the last confirm is.
    fn dropped(&mut self, routing_key: &str);
    /// Nothing more to report until more input comes: a moment to flush what was reported.
    fn flush(&mut self) -> Result<()>;
}

/// What to publish, where, over which connection.
pub struct Plan<'a> {
    pub connection_name: &'a str,
    pub topology: &'a Topology,
    pub target: &'a Publication<'a>,
}

/// How long a publisher stopped by a signal waits for the confirms of the messages in flight,
/// unless `--confirm-timeout` says.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Watches a publisher's waits on the broker and its input: `--confirm-timeout`, and Ctrl-C or
/// SIGTERM. The first signal stops the reading and leaves the messages in flight a grace period
/// (`--confirm-timeout`, else [`STOP_GRACE`]) to be confirmed; the second stops at once.
pub struct Watch<'a> {
    interrupts: &'a mut Interrupts,
    confirm_timeout: Option<Duration>,
    /// Set by the first signal: when the wait for the confirms in flight ends.
    stop_by: Option<Instant>,
    /// Told once when, stopping, a wait for the broker starts ([`Event::Stopping`]).
    observer: Option<&'a dyn Observer>,
    announced: bool,
}

/// What a wait is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The broker's answer, bounded by `--confirm-timeout`; after the first signal, by the
    /// grace period.
    Confirm,
    /// The broker's answer, bounded elsewhere; after the first signal, by the grace period.
    Answer,
    /// Input or a connection, with nothing in flight: the first signal ends it.
    Idle,
}

impl<'a> Watch<'a> {
    pub fn new(interrupts: &'a mut Interrupts, confirm_timeout: Option<Duration>) -> Self {
        Watch {
            interrupts,
            confirm_timeout,
            stop_by: None,
            observer: None,
            announced: false,
        }
    }

    /// Tells `observer` when a first signal leaves the broker a grace period to confirm.
    pub fn told(mut self, observer: &'a dyn Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Whether a signal asked to stop.
    pub fn stopping(&self) -> bool {
        self.stop_by.is_some()
    }

    /// The first signal received, if any.
    pub fn signal(&self) -> Option<Stop> {
        self.interrupts.first()
    }

    /// The signals it watches, for a wait of its own (reconnecting).
    pub fn interrupts(&mut self) -> &mut Interrupts {
        self.interrupts
    }

    /// Awaits `work`, unless a stop comes first (`None`): a second signal, the end of the grace
    /// period, or (for [`Wait::Idle`]) the first signal. `--confirm-timeout` passing first is
    /// an error.
    pub async fn wait<T>(&mut self, work: impl Future<Output = T>, how: Wait) -> Result<Option<T>> {
        let mut work = pin!(work);
        let started = Instant::now();
        loop {
            let received = self.interrupts.received();
            if received >= 1 && self.stop_by.is_none() {
                let grace = self.confirm_timeout.unwrap_or(STOP_GRACE);
                self.stop_by = Some(Instant::now() + grace);
            }
            if received >= 2 || (received >= 1 && how == Wait::Idle) {
                return Ok(None);
            }
            if let (Some(_), Some(observer), false) = (self.stop_by, self.observer, self.announced)
            {
                self.announced = true;
                observer.observe(Event::Stopping {
                    grace: self.confirm_timeout.unwrap_or(STOP_GRACE),
                });
            }
            let (limit, signals) = match (self.stop_by, how) {
                (Some(by), _) => (Some(by), 2),
                (None, Wait::Confirm) => (self.confirm_timeout.map(|after| started + after), 1),
                (None, _) => (None, 1),
            };
            let expired = async {
                match limit {
                    Some(limit) => tokio::time::sleep_until(limit).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                done = &mut work => return Ok(Some(done)),
                () = self.interrupts.wait_for(signals) => {}
                () = expired => match (self.stop_by, self.confirm_timeout) {
                    (Some(_), _) => return Ok(None),
                    (None, Some(after)) => return Err(Error::ConfirmTimeout { after }),
                    (None, None) => unreachable!("no limit, nothing expires"),
                },
            }
        }
    }
}

/// Tells `observer` when the broker blocks the connection's publishes and when it lets them go
/// again; never ends.
async fn report_blocking(session: &Session, observer: &dyn Observer) -> Infallible {
    let mut events = pin!(session.events());
    while let Some(event) = events.next().await {
        match event {
            lapin::Event::ConnectionBlocked(reason) => {
                observer.observe(Event::Blocked { reason: &reason });
            }
            lapin::Event::ConnectionUnblocked => observer.observe(Event::Unblocked),
            _ => {}
        }
    }
    std::future::pending().await
}

/// The wait before sending again what a queue refused while failing over: about what a quorum
/// queue takes to elect a new leader.
const NACK_PAUSE: Duration = Duration::from_secs(1);

/// How a publish run begins.
pub enum Start {
    /// Connect and declare first.
    Connect,
    /// The one-message path lost its connection after its message (still the first of the
    /// input) left: reconnect, and count that message as sent again.
    AfterLoss(Error),
}

/// Publishes every message of `messages` as `plan` says, keeping up to [`CONFIRM_WINDOW`] (and [`CONFIRM_WINDOW_BYTES`]) in
/// flight. A lost connection is opened again within `--reconnect-timeout`, and every message not
/// yet confirmed is sent again (at-least-once: some may arrive twice). A signal (see [`Watch`])
/// ends the run early, [`Published::stopped`]. On an error, `confirmations` has been told of
/// every confirmed message; an error that stops the input half-way (a line too long, an
/// unreadable input, `--confirm-timeout`) says how many were confirmed.
pub async fn publish_all<C: Confirmations>(
    ctx: &Context,
    observer: &dyn Observer,
    plan: &Plan<'_>,
    messages: &mut Messages,
    confirmations: &mut C,
    start: Start,
    watch: &mut Watch<'_>,
) -> Result<Published> {
    let mut window = ConfirmWindow::new(plan.target, confirmations);
    let mut opened = match start {
        Start::Connect => match watch.wait(open(ctx, observer, plan), Wait::Idle).await? {
            Some(session) => Ok(session?),
            None => return window.stopped(watch),
        },
        Start::AfterLoss(lost) => {
            window.published.republished += 1;
            window.resend_pending = 1;
            Err(lost)
        }
    };
    // Until when a nack counts as part of the failover that the last lost connection started
    // (`--reconnect-timeout` after it): a quorum queue whose leader was on the lost node refuses
    // what it is sent until it has elected another, and those messages are sent again, as
    // unconfirmed ones are, after a pause. A nack after that is final.
    let mut failing_over_until: Option<Instant> = None;
    loop {
        let mut nacked_while_failing_over = false;
        let lost = match opened {
            Ok(session) => {
                let outcome = tokio::select! {
                    outcome = window.publish(&session, messages, watch) => outcome,
                    never = report_blocking(&session, observer) => match never {},
                };
                match outcome {
                    Ok(()) => {
                        // A broker that holds the messages in flight would not answer a close
                        // either.
                        if window.in_doubt() == 0 {
                            session.close().await;
                        }
                        return window.stopped(watch);
                    }
                    // Stopping: no reconnection, what was in flight stays in doubt.
                    Err(lost) if lost.is_connection_loss() && watch.stopping() => {
                        return window.stopped(watch);
                    }
                    Err(lost) if lost.is_connection_loss() => lost,
                    Err(nacked @ Error::Nacked { .. })
                        if failing_over_until.is_some_and(|until| Instant::now() < until) =>
                    {
                        session.close().await;
                        nacked_while_failing_over = true;
                        nacked
                    }
                    Err(error) => return Err(window.interrupted(error)),
                }
            }
            Err(lost) => lost,
        };
        if nacked_while_failing_over {
            tokio::time::sleep(NACK_PAUSE).await;
        } else {
            failing_over_until = Some(Instant::now() + ctx.reconnect_timeout);
        }
        let reopened = reconnect::reopen(
            ctx,
            observer,
            None,
            lost,
            Some(&mut *watch.interrupts),
            |attempt| async move { open(&attempt, observer, plan).await },
        )
        .await
        .map_err(|source| window.stopped_by(source))?;
        let Some(session) = reopened else {
            return window.stopped(watch);
        };
        opened = Ok(session);
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
    message: Message,
    /// Set once it is published on the current connection.
    confirm: Option<Sent>,
}

/// The messages between the input and the broker's confirms; it outlives a lost connection.
struct ConfirmWindow<'a, C> {
    /// Unconfirmed messages in input order: the first `sent` are published and await a confirm.
    queue: VecDeque<Entry>,
    sent: usize,
    /// The bytes of the bodies of the first `sent`.
    sent_bytes: usize,
    input_ended: bool,
    /// Messages sent before this window existed (by the one-message path), to count as sent
    /// again after the next reconnection.
    resend_pending: u64,
    /// A large message's write left unfinished by a stop: it may have left.
    abandoned: bool,
    /// Why the input ended early, reported once what was read before it is confirmed.
    input_error: Option<Error>,
    published: Published,
    target: &'a Publication<'a>,
    confirmations: &'a mut C,
}

impl<'a, C: Confirmations> ConfirmWindow<'a, C> {
    fn new(target: &'a Publication<'a>, confirmations: &'a mut C) -> Self {
        ConfirmWindow {
            queue: VecDeque::with_capacity(CONFIRM_WINDOW),
            sent: 0,
            sent_bytes: 0,
            input_ended: false,
            resend_pending: 0,
            abandoned: false,
            input_error: None,
            published: Published::default(),
            target,
            confirmations,
        }
    }

    /// Publishes on `session`, which is in confirm mode, until the input ends and everything is
    /// confirmed, or a stop ends it. Messages held unconfirmed from an earlier, lost connection
    /// are sent again first. On error the window keeps every message not yet confirmed, for a
    /// retry.
    async fn publish(
        &mut self,
        session: &Session,
        messages: &mut Messages,
        watch: &mut Watch<'_>,
    ) -> Result<()> {
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        loop {
            // Send what is queued, as far as the window allows; nothing more after a signal.
            while self.sent < self.queue.len() && !self.full() && !watch.stopping() {
                // Only a large body is waited for (while it is written): a small one is sent
                // at the first poll, without the cost of a bounded wait.
                let sent = {
                    let entry = &self.queue[self.sent];
                    let routing_key = self.target.routing_key_of(&entry.message);
                    let mut sending = pin!(send(
                        &session.channel,
                        self.target.exchange,
                        &routing_key,
                        options,
                        &entry.message.body,
                        self.target.properties_of(&entry.message),
                    ));
                    match poll_once(&mut sending).await {
                        Some(sent) => sent,
                        None => match watch.wait(sending, Wait::Confirm).await? {
                            Some(sent) => sent,
                            None => {
                                self.abandoned = true;
                                return self.confirmations.flush();
                            }
                        },
                    }
                };
                let confirm = match sent {
                    Ok(confirm) => confirm,
                    Err(source) => {
                        let error = cannot_publish("")(source);
                        if !error.is_connection_loss() || !session.is_connected() {
                            return Err(error);
                        }
                        // Not a lost connection: the broker closed the channel over a message
                        // it refuses (a bad property, say); reconnecting would only send them
                        // all again. (A connection closing meanwhile stays a lost connection.)
                        let in_flight = 0..self.sent;
                        let error =
                            refused_first(error, in_flight, async |_| self.settle_oldest().await)
                                .await;
                        if self.sent == 0 && session.is_connected() {
                            return Err(error.not_a_connection_loss());
                        }
                        return Err(error);
                    }
                };
                self.queue[self.sent].confirm = Some(confirm);
                self.sent_bytes += self.queue[self.sent].message.body.len();
                self.sent += 1;
            }
            if watch.stopping() {
                // Stop reading: what was read and not sent is not sent.
                self.queue.truncate(self.sent);
                self.input_ended = true;
            }
            if self.full() || (self.input_ended && self.sent > 0) {
                match watch.wait(self.settle_oldest(), Wait::Confirm).await? {
                    Some(settled) => settled?,
                    None => return self.confirmations.flush(),
                }
                continue;
            }
            if self.input_ended {
                break;
            }
            let batch = match messages.try_next() {
                Ok(Some(batch)) => Ok(batch),
                Ok(None) if self.sent == 0 => {
                    self.confirmations.flush()?;
                    match watch.wait(messages.next(), Wait::Idle).await? {
                        Some(batch) => batch,
                        // A signal: the top of the loop stops the reading.
                        None => continue,
                    }
                }
                // Input is not ready: settle confirms while waiting for it.
                Ok(None) => {
                    let either = async {
                        tokio::select! {
                            biased;
                            batch = messages.next() => Ok(batch),
                            settled = self.settle_oldest() => Err(settled),
                        }
                    };
                    match watch.wait(either, Wait::Confirm).await? {
                        Some(Ok(batch)) => batch,
                        Some(Err(settled)) => {
                            settled?;
                            continue;
                        }
                        None => return self.confirmations.flush(),
                    }
                }
                Err(error) => Err(error),
            };
            match batch {
                Ok(batch) if batch.is_empty() => self.input_ended = true,
                Ok(batch) => self.queue.extend(batch.into_iter().map(|message| Entry {
                    message,
                    confirm: None,
                })),
                // Publish what came before it, then report it.
                Err(error) => {
                    self.input_error = Some(messages.error(error));
                    self.input_ended = true;
                }
            }
        }
        self.confirmations.flush()?;
        match self.input_error.take() {
            Some(error) if !watch.stopping() => Err(error),
            _ => Ok(()),
        }
    }

    /// Messages that may have left without their confirm having come.
    fn in_doubt(&self) -> u64 {
        self.sent as u64 + u64::from(self.abandoned) + self.resend_pending
    }

    /// The end of a run: the input's end, or a stop.
    fn stopped(mut self, watch: &Watch<'_>) -> Result<Published> {
        self.confirmations.flush()?;
        self.published.stopped = watch.stopping();
        self.published.in_doubt = self.in_doubt();
        Ok(self.published)
    }

    /// An error that ended the run half-way, with what was confirmed before it.
    fn interrupted(&self, error: Error) -> Error {
        interrupted(error, self.published.confirmed)
    }

    /// `error` with what was confirmed before it.
    fn stopped_by(&self, error: Error) -> Error {
        stopped_by(error, self.published.confirmed)
    }

    /// Whether no more may be sent before the oldest in flight is settled.
    fn full(&self) -> bool {
        self.sent == CONFIRM_WINDOW || self.sent_bytes >= CONFIRM_WINDOW_BYTES
    }

    /// After a lost connection: every published but unconfirmed message must be sent again.
    /// Returns how many.
    fn forget_sent(&mut self) -> u64 {
        let resent = self.sent;
        for entry in self.queue.iter_mut().take(resent) {
            entry.confirm = None;
        }
        self.sent = 0;
        self.sent_bytes = 0;
        self.published.republished += resent as u64;
        resent as u64
    }

    /// Waits for the broker's answer to the oldest message in flight.
    async fn settle_oldest(&mut self) -> Result<()> {
        let Some(confirm) = self.queue.front_mut().and_then(|e| e.confirm.as_mut()) else {
            return Ok(());
        };
        let number = self.published.confirmed + 1;
        // On a lost connection, or refused, the message stays in the window, to be sent again
        // if the caller retries.
        let last = number + self.sent as u64 - 1;
        let answer = confirm.await;
        let sizes = self.queue.iter().take(self.sent);
        let confirmation = answered(answer, number, last, sizes.map(|e| e.message.body.len()))?;
        if confirmation.is_nack() {
            return Err(Error::Nacked { number });
        }
        let Entry { message, .. } = self
            .queue
            .pop_front()
            .expect("the front entry was just awaited");
        self.sent -= 1;
        self.sent_bytes -= message.body.len();
        settle(
            confirmation,
            number,
            &message,
            self.target,
            &mut self.published,
            self.confirmations,
        )
    }
}

/// An error that ended a publisher's run half-way, with the `confirmed` messages before it
/// (to resume after them); errors that name the message they are about stay as they are.
pub fn interrupted(error: Error, confirmed: u64) -> Error {
    match error {
        Error::ConfirmTimeout { .. }
        | Error::LineTooLong { .. }
        | Error::NotAMessage { .. }
        | Error::Input { .. } => stopped_by(error, confirmed),
        other => other,
    }
}

/// `error` (a connection not recovered) with the `confirmed` messages before it.
pub fn stopped_by(error: Error, confirmed: u64) -> Error {
    Error::PublishInterrupted {
        confirmed,
        // The command knows its input.
        input: None,
        source: Box::new(error),
    }
}

/// The broker's answer to message `number` did not come: refused, or lost with the connection.
/// Messages up to `last` were in flight: a channel the broker closes fails every confirm, so
/// the one it refused may be any of them, and those before it may be stored. `refused` is the
/// one, when the broker's reason tells (by its size).
fn confirmation_lost(source: lapin::Error, number: u64, last: u64, refused: Option<u64>) -> Error {
    Error::Broker {
        context: match refused {
            _ if !source.is_amqp_soft_error() => {
                format!("lost the broker's confirmation of message {number}")
            }
            Some(refused) if refused > number => format!(
                "the broker refused message {refused}, and closed the channel before it \
                 confirmed messages {number} to {} (they may be stored)",
                refused - 1
            ),
            None if last > number => format!(
                "the broker refused one of messages {number} to {last}, unconfirmed when it \
                 closed the channel (those before the refused one may be stored)"
            ),
            _ => format!("the broker refused message {number}"),
        },
        source: Box::new(source),
    }
}

/// The confirmation of message `number` (of those up to `last` in flight, of the body sizes
/// `sizes` from `number` on), or why it did not come.
fn answered(
    answer: Answer,
    number: u64,
    last: u64,
    mut sizes: impl Iterator<Item = usize>,
) -> Result<Confirmation> {
    match answer {
        Answer::Lost(source) => {
            // The broker refuses the first message too large it receives, and takes nothing
            // after it: the first of that size in flight.
            let refused = refused_size(&source)
                .and_then(|size| sizes.position(|body| body == size))
                .map(|index| number + index as u64);
            Err(confirmation_lost(source, number, last, refused))
        }
        // Confirmed, or its channel or connection went before it was written (it is sent
        // again after a reconnection).
        answer => answer.confirmation(""),
    }
}

/// What the broker answered to message `number`: a confirm is reported to `confirmations`; a
/// nack, or a return that `target` does not accept, is an error.
fn settle<C: Confirmations>(
    confirmation: Confirmation,
    number: u64,
    message: &Message,
    target: &Publication<'_>,
    published: &mut Published,
    confirmations: &mut C,
) -> Result<()> {
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
                confirmations.dropped(returned.delivery.routing_key.as_str());
            }
        }
    }
    published.confirmed = number;
    confirmations.confirmed(number, message)
}

/// Publishes every message of `messages` on `session` (in confirm mode) with up to
/// [`CONFIRM_WINDOW`] in flight, as [`publish_all`] does, but on a session the caller opened and
/// without reconnecting: the caller measures or inspects what the session declared.
pub async fn publish_windowed<C: Confirmations>(
    session: &Session,
    target: &Publication<'_>,
    messages: &mut Messages,
    confirmations: &mut C,
    watch: &mut Watch<'_>,
) -> Result<Published> {
    let mut window = ConfirmWindow::new(target, confirmations);
    window
        .publish(session, messages, watch)
        .await
        .map_err(|error| window.interrupted(error))?;
    window.stopped(watch)
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
    let mut published = Published::default();
    let mut batch = Vec::with_capacity(batch_size);
    // The messages of `batch` before this one are written: they hold no copy of their body.
    let mut written = 0;
    let mut input_ended = false;
    while !input_ended {
        let read = match messages.next().await {
            Ok(read) => read,
            Err(error) => return Err(messages.error(error)),
        };
        input_ended = read.is_empty();
        for message in read {
            let confirm = send(
                &session.channel,
                target.exchange,
                &target.routing_key_of(&message),
                options,
                &message.body,
                target.properties_of(&message),
            )
            .await
            .map_err(cannot_publish(""))?;
            batch.push((message, confirm));
            // No more than a window's worth left to lapin to write: its queue of frames, and
            // the copies of their bodies, would grow with the batch.
            if batch.len() - written > CONFIRM_WINDOW {
                batch[written].1.write().await;
            }
            while written < batch.len() && batch[written].1.written() {
                written += 1;
            }
            if batch.len() == batch_size {
                settle_batch(&mut batch, target, &mut published, confirmations).await?;
                written = 0;
            }
        }
    }
    settle_batch(&mut batch, target, &mut published, confirmations).await?;
    confirmations.flush()?;
    Ok(published)
}

/// Waits for the confirm of every message of `batch`, in order, and empties it.
async fn settle_batch<C: Confirmations>(
    batch: &mut Vec<(Message, Sent)>,
    target: &Publication<'_>,
    published: &mut Published,
    confirmations: &mut C,
) -> Result<()> {
    let last = published.confirmed + batch.len() as u64;
    let mut settled = Ok(());
    for index in 0..batch.len() {
        let number = published.confirmed + 1;
        let answer = (&mut batch[index].1).await;
        let sizes = batch[index..].iter().map(|(message, _)| message.body.len());
        settled = answered(answer, number, last, sizes).and_then(|confirmation| {
            let message = &batch[index].0;
            settle(
                confirmation,
                number,
                message,
                target,
                published,
                confirmations,
            )
        });
        if settled.is_err() {
            break;
        }
    }
    batch.clear();
    settled
}

#[cfg(test)]
mod tests {
    use super::refused_size;

    fn closed(code: u16, reason: &str) -> lapin::Error {
        let amqp = lapin::protocol::AMQPError::from_id(code, reason.into()).expect("a known code");
        lapin::Error::from(lapin::ErrorKind::ProtocolError(amqp))
    }

    #[test]
    fn the_size_of_the_message_refused_comes_from_the_reason_of_3_x_and_4_x() {
        let refused = |reason: &str| refused_size(&closed(406, reason));
        assert_eq!(
            refused(
                "PRECONDITION_FAILED - message size 2000000 is larger than configured max size \
                 1048576"
            ),
            Some(2_000_000)
        );
        assert_eq!(
            refused(
                "PRECONDITION_FAILED - message size 536870913 is larger than max size 536870912"
            ),
            Some(536_870_913)
        );
        assert_eq!(
            refused(
                "PRECONDITION_FAILED - user_id property set to 'x' but authenticated user was 'guest'"
            ),
            None
        );
        assert_eq!(refused("PRECONDITION_FAILED - message size unknown"), None);
        let io = lapin::Error::from(lapin::ErrorKind::IOError(std::sync::Arc::new(
            std::io::Error::other("message size 5 is larger than"),
        )));
        assert_eq!(refused_size(&io), None, "only the broker's reason");
    }
}
