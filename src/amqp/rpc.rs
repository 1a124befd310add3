//! Request/reply (tutorial 6): a server's reply to a request it consumed, and a client that
//! publishes requests with a correlation id and a reply address, then matches the replies.
//!
//! Replies go through the default exchange to the request's `reply_to`: Direct Reply-To
//! (`amq.rabbitmq.reply-to`, no queue at all) or an exclusive queue of the client's.

use super::{
    Role, Session,
    events::Observer,
    publish::{Answer, Sent, cannot_publish, refused_size, send},
    topology::{Queue, Topology},
};
use crate::{
    context::Context,
    error::{Error, Result},
    input::Messages,
};
use futures_lite::StreamExt;
use lapin::{
    BasicProperties, Channel,
    message::Delivery,
    options::{BasicConsumeOptions, BasicPublishOptions},
    types::{FieldTable, ShortString},
};
use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};
use tokio::time::Instant;

/// RabbitMQ's pseudo-queue for replies straight to the consuming channel.
pub const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// A reply a server publishes before acking the request.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    /// The request's `reply_to`: a queue, or a Direct Reply-To address.
    pub to: String,
    /// The request's, copied so that the client can match the reply.
    pub correlation_id: Option<ShortString>,
    pub headers: FieldTable,
    pub body: Vec<u8>,
}

/// Publishes `reply` on `channel` (in confirm mode) without waiting for the broker's answer,
/// which [`SentReply::confirmed`] awaits. Not `mandatory`: the broker returns every mandatory
/// publish to a Direct Reply-To address. So the confirm says that the broker took the reply,
/// not that the client was still there.
pub(super) async fn send_reply(channel: &Channel, reply: &Reply) -> Result<SentReply> {
    let mut properties = BasicProperties::default();
    if !reply.headers.inner().is_empty() {
        properties = properties.with_headers(reply.headers.clone());
    }
    if let Some(id) = &reply.correlation_id {
        properties = properties.with_correlation_id(id.clone());
    }
    let answer = send(
        channel,
        "",
        &reply.to,
        BasicPublishOptions::default(),
        &reply.body,
        properties,
    )
    .await
    .map_err(cannot_publish(format!("the reply to '{}'", reply.to)))?;
    Ok(SentReply {
        to: reply.to.clone(),
        size: reply.body.len(),
        answer,
    })
}

/// A reply on its way to the broker.
pub(super) struct SentReply {
    to: String,
    /// Of its body: the broker names the size of the message it refuses.
    size: usize,
    answer: Sent,
}

impl SentReply {
    /// Waits for the broker to confirm the reply: a nack, or a channel gone first, is an error.
    /// Awaited oldest first: a reply whose confirm the channel closed over another, larger one
    /// refused after it was taken, and delivered (the broker handles a channel's publishes in
    /// order, and refuses the first one too large).
    pub(super) async fn confirmed(&mut self) -> Result<()> {
        let what = format_args!("the reply to '{}'", self.to);
        let answer = (&mut self.answer).await;
        if let Answer::Lost(source) = &answer
            && refused_size(source).is_some_and(|size| size != self.size)
        {
            return Ok(());
        }
        match answer.confirmation(what)? {
            confirmation if confirmation.is_nack() => Err(Error::ReplyNacked {
                to: self.to.clone(),
            }),
            _ => Ok(()),
        }
    }
}

/// Where a client receives its replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyQueue {
    /// `amq.rabbitmq.reply-to`: no queue, replies straight to this channel.
    DirectReplyTo,
    /// An exclusive, server-named queue of this connection (the Python tutorial's way).
    Exclusive,
}

/// What requests to send, where, and how long to wait for each reply.
pub struct Call<'a> {
    pub connection_name: &'a str,
    /// The request queue, reached through the default exchange. The client does not declare
    /// it: the server does.
    pub queue: &'a str,
    pub reply_queue: ReplyQueue,
    /// How long a request waits for its reply; also its `expiration`, so that a server started
    /// later does not work on abandoned requests.
    pub timeout: Duration,
    /// Requests sent and not yet reported at once.
    pub concurrency: usize,
}

/// Told of the replies, in the order of the requests.
pub trait Replies {
    /// Request `number` is now the oldest one without a reply (it has been sent).
    fn awaiting(&mut self, number: u64, request: &[u8]) -> Result<()>;
    /// The reply to request `number`, which took `round_trip` from publish to arrival.
    fn replied(
        &mut self,
        number: u64,
        request: &[u8],
        reply: &Delivery,
        round_trip: Duration,
    ) -> Result<()>;
    /// Nothing more to report until more replies come: a moment to flush.
    fn flush(&mut self) -> Result<()>;
}

/// What a run of requests achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Called {
    pub replied: u64,
    /// Replies whose correlation id matched no request waiting (late, or duplicates).
    pub ignored: u64,
}

/// A request sent and not yet reported.
struct Pending {
    body: Vec<u8>,
    sent: Instant,
    reply: Option<(Delivery, Duration)>,
}

/// Sends one request per message of `messages`, up to `call.concurrency` at once, each with a
/// fresh correlation id, and reports the replies to `replies` in request order. A request no
/// queue takes is an error at once (its confirm comes with a return); a request without a
/// reply within `call.timeout` is an error that says how many consumers the queue has.
pub async fn call_all<R: Replies>(
    ctx: &Context,
    observer: &dyn Observer,
    call: &Call<'_>,
    messages: &mut Messages,
    replies: &mut R,
) -> Result<Called> {
    let topology = match call.reply_queue {
        ReplyQueue::DirectReplyTo => Topology::default(),
        ReplyQueue::Exclusive => Topology {
            queue: Some(Queue::Exclusive),
            ..Topology::default()
        },
    };
    // Direct Reply-To delivers a reply only to the channel that published its request: the
    // requests go out on the channel that consumes the replies. An exclusive queue's replies
    // are consumed on a channel of their own, which a request the broker refuses (and closes
    // its channel over) does not take down.
    let role = match call.reply_queue {
        ReplyQueue::DirectReplyTo => Role::Publisher,
        ReplyQueue::Exclusive => Role::Consumer,
    };
    let (session, declared) =
        Session::open(ctx, call.connection_name, &topology, role, observer).await?;
    let requests = match call.reply_queue {
        ReplyQueue::DirectReplyTo => Ok(session.channel.clone()),
        ReplyQueue::Exclusive => session.open_confirm_channel().await,
    };
    let reply_to = declared
        .queue
        .unwrap_or_else(|| DIRECT_REPLY_TO.to_string());
    let result = match requests {
        Ok(requests) => {
            Caller {
                call,
                session: &session,
                requests: &requests,
                reply_to: &reply_to,
            }
            .run(messages, replies)
            .await
        }
        Err(error) => Err(error),
    };
    session.close().await;
    result
}

struct Caller<'a> {
    call: &'a Call<'a>,
    session: &'a Session,
    /// The channel the requests are published on (in confirm mode).
    requests: &'a Channel,
    reply_to: &'a str,
}

impl Caller<'_> {
    async fn run<R: Replies>(&self, messages: &mut Messages, replies: &mut R) -> Result<Called> {
        let channel = &self.session.channel;
        // The tutorial's client consumes its replies with auto-ack; Direct Reply-To requires it.
        let mut deliveries = channel
            .basic_consume(
                self.reply_to.into(),
                "rmqlab.rpc".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(Error::broker(format!(
                "cannot consume replies from '{}'",
                self.reply_to
            )))?;
        let expiration: ShortString = self.call.timeout.as_millis().to_string().into();
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let mut called = Called::default();
        // Requests in order; the first one's number is `first`.
        let mut pending: VecDeque<Pending> = VecDeque::new();
        let mut first = 1u64;
        let mut waiting: HashMap<ShortString, u64> = HashMap::new();
        let mut confirms: VecDeque<(u64, Sent)> = VecDeque::new();
        let mut unsent: VecDeque<crate::message::Message> = VecDeque::new();
        let mut input_ended = false;
        let mut announced = false;
        // A request the broker refused, and why: nothing more is sent, the replies to the
        // requests before it are still reported, and then it is the error.
        let mut refused: Option<(u64, Error)> = None;
        loop {
            // Report what came back in order; then the next request is the one awaited.
            while pending.front().is_some_and(|p| p.reply.is_some()) {
                let Pending { body, reply, .. } = pending.pop_front().expect("a front entry");
                let (delivery, round_trip) = reply.expect("a reply");
                replies.replied(first, &body, &delivery, round_trip)?;
                called.replied += 1;
                first += 1;
                announced = false;
            }
            // Send as far as the concurrency allows.
            while refused.is_none() && pending.len() < self.call.concurrency {
                let Some(request) = unsent.pop_front() else {
                    break;
                };
                let body = request.body;
                let number = first + pending.len() as u64;
                let id: ShortString = uuid::Uuid::new_v4().to_string().into();
                let properties = request
                    .properties
                    .map_or_else(BasicProperties::default, |properties| *properties)
                    .with_correlation_id(id.clone())
                    .with_reply_to(self.reply_to.into())
                    .with_expiration(expiration.clone());
                match send(
                    self.requests,
                    "",
                    self.call.queue,
                    options,
                    &body,
                    properties,
                )
                .await
                {
                    Ok(confirm) => {
                        waiting.insert(id, number);
                        confirms.push_back((number, confirm));
                        pending.push_back(Pending {
                            body,
                            sent: Instant::now(),
                            reply: None,
                        });
                    }
                    Err(source) => {
                        let error = cannot_publish(format_args!("request {number}"))(source);
                        let refusal = self
                            .refusal(number, error, None, &mut confirms, first, &pending)
                            .await;
                        refused = Some(refusal);
                    }
                }
            }
            if let Some((number, _)) = &refused
                && first >= *number
            {
                replies.flush()?;
                return Err(refused.take().expect("a refusal").1);
            }
            if let (Some(front), false) = (pending.front(), announced) {
                replies.awaiting(first, &front.body)?;
                announced = true;
            }
            if input_ended && unsent.is_empty() && pending.is_empty() {
                break;
            }
            replies.flush()?;
            let wants_input =
                refused.is_none() && !input_ended && unsent.len() < self.call.concurrency;
            let deadline = pending.front().map(|p| p.sent + self.call.timeout);
            let stopped = tokio::select! {
                next = deliveries.next() => match next {
                    Some(Ok(delivery)) => {
                        let number = delivery
                            .properties
                            .correlation_id()
                            .as_ref()
                            .and_then(|id| waiting.remove(id));
                        match number {
                            Some(number) => {
                                let entry = &mut pending[(number - first) as usize];
                                entry.reply = Some((delivery, entry.sent.elapsed()));
                            }
                            None => called.ignored += 1,
                        }
                        continue;
                    }
                    Some(Err(source)) => Error::broker("stopped receiving replies")(source),
                    None => Error::ConnectionLost {
                        context: "stopped receiving replies".into(),
                    },
                },
                confirmed = async { (&mut confirms.front_mut().expect("a confirm").1).await },
                    if !confirms.is_empty() =>
                {
                    let (number, _) = confirms.pop_front().expect("a confirm");
                    if let Answer::Came(confirmation) = confirmed {
                        self.check_confirm(number, Answer::Came(confirmation))?;
                        continue;
                    }
                    // The channel went: the first confirm failed is not always the refused one.
                    let error = Error::ConnectionLost {
                        context: "stopped receiving confirms".into(),
                    };
                    let answered = Some((number, confirmed));
                    let next = first + pending.len() as u64;
                    let refusal = self
                        .refusal(next, error, answered, &mut confirms, first, &pending)
                        .await;
                    refused = Some(refusal);
                    continue;
                }
                () = sleep_until(deadline), if deadline.is_some() => {
                    return Err(match refused {
                        Some((_, error)) => error,
                        None => self.no_reply(first).await,
                    });
                }
                batch = messages.next(), if wants_input => {
                    let batch = match batch {
                        Ok(batch) => batch,
                        Err(error) => return Err(messages.error(error)),
                    };
                    input_ended = batch.is_empty();
                    unsent.extend(batch);
                    continue;
                }
            };
            // The replies stopped: the broker closed the channel over a refused request (with
            // Direct Reply-To, the one the requests go out on), or the connection went.
            let next = first + pending.len() as u64;
            let connection = stopped.is_connection_loss();
            let (number, error, refused) = match (refused, connection) {
                (Some((number, error)), false) => (number, error, None),
                (Some((number, error)), true) => {
                    let refused = (!error.is_connection_loss()).then_some(number);
                    (number, stopped, refused)
                }
                (None, false) => {
                    let (number, error) = self
                        .refusal(next, stopped, None, &mut confirms, first, &pending)
                        .await;
                    (number, error, None)
                }
                (None, true) => (next, stopped, None),
            };
            let unanswered = pending
                .iter()
                .take(number.saturating_sub(first) as usize)
                .filter(|p| p.reply.is_none())
                .count();
            replies.flush()?;
            return Err(match unanswered {
                0 => error,
                unanswered => Error::RepliesLost {
                    number,
                    unanswered,
                    connection,
                    refused,
                    direct: self.reply_to == DIRECT_REPLY_TO,
                    source: Box::new(error),
                },
            });
        }
        replies.flush()?;
        Ok(called)
    }

    /// A request could not be sent, a confirm did not come, or the replies stopped (`error`: a
    /// channel is closed), while requests are in flight: the broker closes the channel over a
    /// request it refuses (too large, say), and the answers to those in flight, oldest first,
    /// say which and why. `answered` is an answer already taken off `confirms`. A closed
    /// channel fails every confirm in flight with the same reason: a request that got its reply,
    /// or whose size is not the one the broker refused, was taken. Returns the number of the
    /// request refused (`next`, the one to be sent, if none in flight was), and the error.
    async fn refusal(
        &self,
        next: u64,
        error: Error,
        mut answered: Option<(u64, Answer)>,
        confirms: &mut VecDeque<(u64, Sent)>,
        first: u64,
        pending: &VecDeque<Pending>,
    ) -> (u64, Error) {
        let mut taken = None;
        loop {
            let (number, answer) = match answered.take() {
                Some(answered) => answered,
                None => match confirms.pop_front() {
                    Some((number, confirm)) => (number, confirm.await),
                    None => break,
                },
            };
            let request = number
                .checked_sub(first)
                .and_then(|index| pending.get(index as usize));
            let another = match (&answer, request) {
                (Answer::Lost(_), Some(Pending { reply: Some(_), .. }) | None) => true,
                (Answer::Lost(source), Some(request)) => {
                    refused_size(source).is_some_and(|size| size != request.body.len())
                }
                _ => false,
            };
            match self.check_confirm(number, answer) {
                Ok(()) => {}
                Err(error) if another => {
                    taken.get_or_insert((number, error));
                }
                Err(error) => {
                    // Those behind it met the closed channel.
                    confirms.clear();
                    return (number, error);
                }
            }
        }
        taken.unwrap_or((next, error))
    }

    /// A request the broker refused or returned (no queue of that name) is an error.
    fn check_confirm(&self, number: u64, answer: Answer) -> Result<()> {
        let confirmation = answer.confirmation(format_args!("request {number}"))?;
        if confirmation.is_nack() {
            return Err(Error::Nacked { number });
        }
        if let Some(returned) = confirmation.take_message() {
            return Err(Error::NoRequestQueue {
                queue: self.call.queue.to_string(),
                reason: format!("{} {}", returned.reply_code, returned.reply_text),
            });
        }
        Ok(())
    }

    /// The error for request `number` left without a reply, with the request queue's consumers.
    async fn no_reply(&self, number: u64) -> Error {
        let consumers = self
            .session
            .inspect_queue(self.call.queue)
            .await
            .ok()
            .map(|(_, consumers)| consumers);
        Error::NoReply {
            number,
            queue: self.call.queue.to_string(),
            after: self.call.timeout,
            consumers,
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
