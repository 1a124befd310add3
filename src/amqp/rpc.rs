//! Request/reply (tutorial 6): a server's reply to a request it consumed, and a client that
//! publishes requests with a correlation id and a reply address, then matches the replies.
//!
//! Replies go through the default exchange to the request's `reply_to`: Direct Reply-To
//! (`amq.rabbitmq.reply-to`, no queue at all) or an exclusive queue of the client's.

use super::{
    Role, Session,
    events::Observer,
    publish::{Answer, Sent, cannot_publish, refused_first, send},
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
        answer,
    })
}

/// A reply on its way to the broker.
pub(super) struct SentReply {
    to: String,
    answer: Sent,
}

impl SentReply {
    /// Waits for the broker to confirm the reply: a nack, or a channel gone first, is an error.
    pub(super) async fn confirmed(&mut self) -> Result<()> {
        let what = format_args!("the reply to '{}'", self.to);
        match (&mut self.answer).await.confirmation(what)? {
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
    let (session, declared) = Session::open(
        ctx,
        call.connection_name,
        &topology,
        Role::Publisher,
        observer,
    )
    .await?;
    let reply_to = declared
        .queue
        .unwrap_or_else(|| DIRECT_REPLY_TO.to_string());
    let result = Caller {
        call,
        session: &session,
        reply_to: &reply_to,
    }
    .run(messages, replies)
    .await;
    session.close().await;
    result
}

struct Caller<'a> {
    call: &'a Call<'a>,
    session: &'a Session,
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
            while pending.len() < self.call.concurrency {
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
                let confirm =
                    match send(channel, "", self.call.queue, options, &body, properties).await {
                        Ok(confirm) => confirm,
                        Err(source) => {
                            let error = cannot_publish(format!("request {number}"))(source);
                            return Err(refused_first(error, &mut confirms, async |(n, c)| {
                                self.check_confirm(*n, c.await)
                            })
                            .await);
                        }
                    };
                waiting.insert(id, number);
                confirms.push_back((number, confirm));
                pending.push_back(Pending {
                    body,
                    sent: Instant::now(),
                    reply: None,
                });
            }
            if let (Some(front), false) = (pending.front(), announced) {
                replies.awaiting(first, &front.body)?;
                announced = true;
            }
            if input_ended && unsent.is_empty() && pending.is_empty() {
                break;
            }
            replies.flush()?;
            let wants_input = !input_ended && unsent.len() < self.call.concurrency;
            let deadline = pending.front().map(|p| p.sent + self.call.timeout);
            tokio::select! {
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
                    }
                    Some(Err(source)) => {
                        return Err(Error::broker("stopped receiving replies")(source));
                    }
                    None => {
                        return Err(Error::ConnectionLost {
                            context: "stopped receiving replies".into(),
                        });
                    }
                },
                confirmed = async { (&mut confirms.front_mut().expect("a confirm").1).await },
                    if !confirms.is_empty() =>
                {
                    let (number, _) = confirms.pop_front().expect("a confirm");
                    self.check_confirm(number, confirmed)?;
                }
                () = sleep_until(deadline), if deadline.is_some() => {
                    return Err(self.no_reply(first).await);
                }
                batch = messages.next(), if wants_input => {
                    let batch = match batch {
                        Ok(batch) => batch,
                        Err(error) => return Err(messages.error(error)),
                    };
                    input_ended = batch.is_empty();
                    unsent.extend(batch);
                }
            }
        }
        replies.flush()?;
        Ok(called)
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
