//! RabbitMQ streams over the stream protocol, with the RabbitMQ team's `rabbitmq-stream-client`:
//! connect (errors said plainly: no plugin, a broker too old), create a stream if absent,
//! publish with confirms, consume from an offset with server-side offset tracking. Like the rest
//! of the engine it never prints: confirms go to a [`Confirmations`], messages to a
//! [`StreamHandler`].

use super::publish::Confirmations;
use crate::{
    error::{Error, Result},
    input::Messages,
    signals::Interrupts,
    tls::TlsSettings,
    uri::StreamUrl,
};
use futures_lite::StreamExt;
use rabbitmq_stream_client::{
    Client, ClientOptions, Consumer, Environment,
    error::{ClientError, ConsumerCreateError, ProducerCreateError, StreamCreateError},
    types::{ByteCapacity, Message, OffsetSpecification, ResponseCode},
};
use std::{
    collections::{BTreeSet, VecDeque},
    io,
    time::{Duration, Instant},
};
use tokio::sync::mpsc;

/// Messages published and not yet confirmed, at most.
const WINDOW: usize = 10_000;

/// An open stream environment (the client connects per producer and consumer).
pub struct Streams {
    env: Environment,
    url: StreamUrl,
    tls: TlsSettings,
}

/// Connects to the stream port once, to say at once when it cannot be used.
pub async fn connect(
    url: &StreamUrl,
    tls: &TlsSettings,
    name: &str,
    timeout: Duration,
) -> Result<Streams> {
    let mut builder = Environment::builder()
        .host(&url.host)
        .port(url.port)
        .username(&url.user)
        .password(&url.password)
        .virtual_host(&url.vhost)
        .client_provided_name(name);
    if url.tls {
        builder = builder.tls(tls_configuration(tls)?);
    }
    let env = match tokio::time::timeout(timeout, builder.build()).await {
        Err(_) => {
            return Err(Error::ConnectTimeout {
                url: url.to_string(),
                after: timeout,
            });
        }
        Ok(result) => result.map_err(|error| connect_error(url, error))?,
    };
    Ok(Streams {
        env,
        url: url.clone(),
        tls: tls.clone(),
    })
}

/// The stream client's TLS: it verifies the server against the CA of `--tls-ca-file` only (not
/// the system's roots), so TLS needs that file, or `--tls-insecure` to verify nothing.
fn tls_configuration(tls: &TlsSettings) -> Result<rabbitmq_stream_client::TlsConfiguration> {
    let setup = |reason: &str| Error::Stream {
        context: "TLS setup for the stream protocol".into(),
        reason: reason.into(),
    };
    // The stream client takes rustls's process-wide provider: rmqlab's (ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = rabbitmq_stream_client::TlsConfiguration::builder().enable(true);
    match (&tls.ca_file, tls.insecure) {
        (Some(ca_file), _) => builder = builder.add_root_certificates(ca_file.clone()),
        (None, true) => {}
        (None, false) => {
            return Err(Error::InvalidUrl(crate::uri::InvalidUrl::new(
                "stream URL",
                "rabbitmq-stream+tls://",
                "rabbitmq-stream+tls:// needs --tls-ca-file (the stream client trusts that CA \
                 only, not the system's roots), or --tls-insecure",
            )));
        }
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        if tls.ca_file.is_none() {
            return Err(setup(
                "a client certificate over rabbitmq-stream+tls:// needs --tls-ca-file",
            ));
        }
        builder = builder.add_client_certificates_keys(cert.clone(), key.clone());
    }
    builder.build().map_err(setup)
}

/// What a failed connection means for the user.
fn connect_error(url: &StreamUrl, error: ClientError) -> Error {
    let url_text = url.to_string();
    match error {
        ClientError::Io(source)
            if matches!(
                source.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::AddrNotAvailable
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkUnreachable
                    | io::ErrorKind::NotFound
            ) =>
        {
            Error::StreamUnreachable {
                url: url_text,
                source,
            }
        }
        ClientError::RequestError(
            code @ (ResponseCode::AuthenticationFailure
            | ResponseCode::AuthenticationFailureLoopback
            | ResponseCode::SaslError
            | ResponseCode::SaslMechanismNotSupported
            | ResponseCode::VirtualHostAccessFailure
            | ResponseCode::AccessRefused),
        ) => Error::StreamRefused {
            url: url_text,
            reason: refusal(&code, url),
        },
        other => Error::StreamHandshake {
            url: url_text,
            reason: other.to_string(),
        },
    }
}

fn refusal(code: &ResponseCode, url: &StreamUrl) -> String {
    match code {
        ResponseCode::VirtualHostAccessFailure => {
            format!("no access to virtual host '{}'", url.vhost)
        }
        ResponseCode::AuthenticationFailureLoopback => {
            format!("user '{}' may only log in from localhost", url.user)
        }
        _ => format!("login of user '{}' refused", url.user),
    }
}

/// A client error after connecting.
fn client_error(context: &str, error: impl std::fmt::Display) -> Error {
    Error::Stream {
        context: context.into(),
        reason: error.to_string(),
    }
}

/// How a stream is created when absent.
#[derive(Debug, Clone, Copy)]
pub struct StreamSpec {
    pub max_length_bytes: u64,
    pub max_age: Option<Duration>,
}

impl Streams {
    /// Creates stream `name` unless it exists; an existing stream is used as it is. Returns
    /// whether it was created.
    pub async fn ensure(&self, name: &str, spec: StreamSpec) -> Result<bool> {
        let mut creator = self
            .env
            .stream_creator()
            .max_length(ByteCapacity::B(spec.max_length_bytes));
        if let Some(age) = spec.max_age {
            creator = creator.max_age(age);
        }
        match creator.create(name).await {
            Ok(()) => Ok(true),
            Err(StreamCreateError::Create {
                status: ResponseCode::StreamAlreadyExists,
                ..
            }) => Ok(false),
            // An existing stream with other settings (retention) is used as it is, as rmqlab
            // adopts queues; a queue of another type by that name is refused.
            Err(StreamCreateError::Create {
                status: ResponseCode::PreconditionFailed,
                ..
            }) => match self.is_stream(name).await? {
                true => Ok(false),
                false => Err(Error::NotAStream { name: name.into() }),
            },
            Err(StreamCreateError::Client(error)) => {
                Err(self.lost_or(error, "creating the stream"))
            }
            Err(error) => Err(client_error(
                &format!("cannot create stream '{name}'"),
                error,
            )),
        }
    }

    fn lost_or(&self, error: ClientError, context: &str) -> Error {
        match error {
            ClientError::Io(_) | ClientError::ConnectionClosed | ClientError::AlreadyClosed => {
                Error::StreamLost {
                    context: format!("{context} ({}): {error}", self.url),
                }
            }
            other => client_error(context, other),
        }
    }

    /// Publishes every message of `messages` to `stream`, telling `report` of each confirm in
    /// order. A signal stops the reading: what is in flight is waited for, and the result says
    /// it stopped.
    pub async fn publish(
        &self,
        stream: &str,
        messages: &mut Messages,
        report: &mut impl Confirmations,
        interrupts: &mut Interrupts,
    ) -> Result<Published> {
        let producer = match self.env.producer().build(stream).await {
            Ok(producer) => producer,
            Err(ProducerCreateError::StreamDoesNotExist { .. })
            | Err(ProducerCreateError::Create {
                status: ResponseCode::StreamDoesNotExist,
                ..
            }) => {
                return Err(Error::NotAStream {
                    name: stream.into(),
                });
            }
            Err(ProducerCreateError::Client(error)) => {
                return Err(self.lost_or(error, "starting the producer"));
            }
            Err(error) => return Err(client_error("cannot start the producer", error)),
        };
        let (sender, mut receiver) = mpsc::unbounded_channel::<(u64, bool)>();
        let mut window = InFlight::default();
        let mut next = 1u64;
        let mut stopped = false;
        let mut failure: Option<Error> = None;
        let mut reading = true;
        while failure.is_none() && (reading || !window.pending.is_empty()) {
            if !reading || window.pending.len() >= WINDOW {
                let Some((number, ok)) = receiver.recv().await else {
                    break;
                };
                if let Err(error) = window.confirm(number, ok, report) {
                    failure = Some(error);
                }
                continue;
            }
            while let Ok((number, ok)) = receiver.try_recv() {
                if let Err(error) = window.confirm(number, ok, report) {
                    failure = Some(error);
                    break;
                }
            }
            let batch = tokio::select! {
                batch = messages.next() => batch,
                _ = interrupts.wait_for(1) => {
                    stopped = true;
                    reading = false;
                    continue;
                }
            };
            let batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    failure = Some(messages.error(error));
                    break;
                }
            };
            if batch.is_empty() {
                reading = false;
                continue;
            }
            for read in batch {
                let number = next;
                next += 1;
                let sender = sender.clone();
                let message = Message::builder().body(read.body.clone()).build();
                window.pending.push_back(read);
                let sent = producer
                    .send(message, move |status| {
                        let ok = status.is_ok_and(|status| status.confirmed());
                        let _ = sender.send((number, ok));
                        async {}
                    })
                    .await;
                if let Err(error) = sent {
                    failure = Some(Error::StreamLost {
                        context: format!("publishing to stream '{stream}': {error}"),
                    });
                    break;
                }
            }
            report.flush()?;
        }
        report.flush()?;
        let _ = producer.close().await;
        let confirmed = window.confirmed;
        match failure {
            Some(error) => Err(Error::PublishInterrupted {
                confirmed,
                input: None,
                source: Box::new(error),
            }),
            None => Ok(Published { confirmed, stopped }),
        }
    }

    /// The offset consumer `name` stored on `stream`, if any.
    pub async fn stored_offset(&self, stream: &str, name: &str) -> Result<Option<u64>> {
        let consumer = self
            .subscribe(stream, Some(name), OffsetSpecification::Next)
            .await?;
        let stored = consumer.query_offset().await;
        let _ = consumer.handle().close().await;
        match stored {
            Ok(offset) => Ok(Some(offset)),
            Err(rabbitmq_stream_client::error::ConsumerStoreOffsetError::Client(
                ClientError::RequestError(ResponseCode::OffsetNotFound),
            )) => Ok(None),
            Err(error) => Err(client_error("cannot query the stored offset", error)),
        }
    }

    async fn subscribe(
        &self,
        stream: &str,
        name: Option<&str>,
        offset: OffsetSpecification,
    ) -> Result<Consumer> {
        let builder = self
            .env
            .consumer()
            .name_optional(name.map(str::to_string))
            .offset(offset);
        match builder.build(stream).await {
            Ok(consumer) => Ok(consumer),
            Err(ConsumerCreateError::StreamDoesNotExist { .. })
            | Err(ConsumerCreateError::Create {
                status: ResponseCode::StreamDoesNotExist,
                ..
            }) => Err(Error::NoStream {
                name: stream.into(),
            }),
            Err(ConsumerCreateError::Client(error)) => {
                Err(self.lost_or(error, "starting the consumer"))
            }
            Err(error) => Err(client_error("cannot start the consumer", error)),
        }
    }

    /// Consumes `stream` from `start`, handing each message to `handler`, until the limits, a
    /// signal, or a lost connection not recovered within `reconnect_timeout` (consuming goes on
    /// after the last offset seen). With `tracking`, the offset of the last message handled
    /// (and flushed) is stored every `store_every` messages and at the end.
    pub async fn consume(
        &self,
        reading: Reading<'_>,
        handler: &mut impl StreamHandler,
        interrupts: &mut Interrupts,
    ) -> Result<Consumed> {
        let Reading {
            stream,
            start,
            tracking,
            limits,
            reconnect_timeout,
        } = reading;
        let name = tracking.as_ref().map(|tracking| tracking.name);
        let mut consumer = self.subscribe(stream, name, start.clone()).await?;
        handler.consuming();
        let mut handled = 0u64;
        let mut last: Option<u64> = None;
        let mut stored: Option<u64> = None;
        let mut since_store = 0u64;
        let mut ending = Ending::Finished;
        let mut failure = None;
        loop {
            if limits.count.is_some_and(|count| handled >= count) {
                break;
            }
            // Nothing more at hand: make what was handled visible before waiting.
            let ready = futures_lite::future::poll_once(consumer.next()).await;
            if ready.is_none()
                && let Err(error) = handler.flush()
            {
                failure = Some(error);
                break;
            }
            let wait = async {
                if let Some(ready) = ready {
                    return Some(ready);
                }
                match limits.idle_timeout {
                    Some(idle) => tokio::time::timeout(idle, consumer.next()).await.ok(),
                    None => Some(consumer.next().await),
                }
            };
            let next = tokio::select! {
                next = wait => next,
                _ = interrupts.wait_for(1) => {
                    ending = Ending::Interrupted;
                    break;
                }
            };
            let delivery = match next {
                None => {
                    ending = Ending::Idle;
                    break;
                }
                Some(Some(Ok(delivery))) => delivery,
                Some(other) => {
                    // The connection went: a new consumer from after the last offset seen.
                    let reason = match other {
                        Some(Err(error)) => error.to_string(),
                        _ => "the broker closed the connection".into(),
                    };
                    if let Err(error) = handler.flush() {
                        failure = Some(error);
                        break;
                    }
                    let resume =
                        last.map_or(start.clone(), |last| OffsetSpecification::Offset(last + 1));
                    handler.lost(&reason);
                    match self
                        .resubscribe(stream, name, resume, reconnect_timeout, interrupts)
                        .await
                    {
                        Ok(Some(again)) => {
                            consumer = again;
                            handler.resumed(last.map(|last| last + 1));
                            continue;
                        }
                        Ok(None) => {
                            ending = Ending::Interrupted;
                            break;
                        }
                        Err(error) => {
                            failure = Some(Error::ReconnectFailed {
                                after: reconnect_timeout,
                                source: Box::new(error),
                            });
                            break;
                        }
                    }
                }
            };
            let offset = delivery.offset();
            // Never twice (a resubscription at a chunk boundary), never before the start.
            if last.is_some_and(|last| offset <= last) {
                continue;
            }
            let body = delivery.message().data().unwrap_or_default();
            if let Err(error) = handler.handle(offset, body) {
                failure = Some(error);
                break;
            }
            handled += 1;
            last = Some(offset);
            since_store += 1;
            if let Some(tracking) = &tracking
                && since_store >= tracking.store_every
            {
                if let Err(error) = handler.flush() {
                    failure = Some(error);
                    break;
                }
                let _ = consumer.store_offset(offset).await;
                stored = Some(offset);
                since_store = 0;
            }
        }
        let flushed = handler.flush();
        // Stored on every way out, once what was handled is flushed.
        if tracking.is_some()
            && flushed.is_ok()
            && let Some(offset) = last
            && stored != Some(offset)
            && consumer.store_offset(offset).await.is_ok()
        {
            // A query after the store: the broker has it once the answer comes.
            let _ = consumer.query_offset().await;
        }
        let _ = consumer.handle().close().await;
        if let Some(error) = failure {
            return Err(error);
        }
        flushed?;
        Ok(Consumed {
            handled,
            last,
            ending,
        })
    }

    /// Subscribes again after a lost connection, trying until `timeout`; `None` if a signal
    /// came first.
    async fn resubscribe(
        &self,
        stream: &str,
        name: Option<&str>,
        offset: OffsetSpecification,
        timeout: Duration,
        interrupts: &mut Interrupts,
    ) -> Result<Option<Consumer>> {
        let deadline = Instant::now() + timeout;
        loop {
            let attempt = self.subscribe(stream, name, offset.clone()).await;
            match attempt {
                Ok(consumer) => return Ok(Some(consumer)),
                Err(error) if Instant::now() >= deadline => return Err(error),
                Err(_) => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = interrupts.wait_for(1) => return Ok(None),
            }
        }
    }
}

/// Messages published and not confirmed yet, reported in order as confirms come.
#[derive(Default)]
struct InFlight {
    /// Messages from number `confirmed + 1` on.
    pending: VecDeque<crate::message::Message>,
    /// Confirmed numbers beyond the first pending one.
    ahead: BTreeSet<u64>,
    confirmed: u64,
}

impl InFlight {
    fn confirm(&mut self, number: u64, ok: bool, report: &mut impl Confirmations) -> Result<()> {
        if !ok {
            return Err(Error::Nacked { number });
        }
        self.ahead.insert(number);
        while self.ahead.remove(&(self.confirmed + 1)) {
            let message = self.pending.pop_front().unwrap_or_default();
            self.confirmed += 1;
            report.confirmed(self.confirmed, &message)?;
        }
        Ok(())
    }
}

impl Streams {
    /// The stream's metadata, if it is one.
    async fn metadata(
        &self,
        stream: &str,
    ) -> Result<Option<rabbitmq_stream_client::types::StreamMetadata>> {
        let url = &self.url;
        let mut options = ClientOptions::builder()
            .host(&url.host)
            .port(url.port)
            .user(&url.user)
            .password(&url.password)
            .v_host(&url.vhost)
            .client_provided_name("rmqlab stream info".into());
        if url.tls {
            options = options.tls(tls_configuration(&self.tls)?);
        }
        let client = Client::connect(options.build())
            .await
            .map_err(|error| connect_error(url, error))?;
        let metadata = client
            .metadata(vec![stream.to_string()])
            .await
            .map_err(|error| self.lost_or(error, "asking for the stream's metadata"));
        let _ = client.close().await;
        Ok(metadata?
            .remove(stream)
            .filter(|metadata| metadata.response_code == ResponseCode::Ok))
    }

    /// Whether `name` is a stream (not a queue of another type, not absent).
    async fn is_stream(&self, name: &str) -> Result<bool> {
        Ok(self.metadata(name).await?.is_some())
    }

    /// What the stream protocol tells about `stream`: its leader and replicas, the offsets of
    /// its first and last messages, and the offset each consumer of `names` stored.
    pub async fn info(&self, stream: &str, names: &[String]) -> Result<StreamInfo> {
        let Some(metadata) = self.metadata(stream).await? else {
            return Err(Error::NoStream {
                name: stream.into(),
            });
        };
        let address = |broker: &rabbitmq_stream_client::types::Broker| {
            format!("{}:{}", broker.host, broker.port)
        };
        let first = self.peek(stream, OffsetSpecification::First).await?;
        let last = self.peek(stream, OffsetSpecification::Last).await?;
        let mut consumers = Vec::new();
        for name in names {
            consumers.push((name.clone(), self.stored_offset(stream, name).await?));
        }
        Ok(StreamInfo {
            leader: address(&metadata.leader),
            replicas: metadata.replicas.iter().map(address).collect(),
            first: first.first().copied(),
            last: last.last().copied(),
            consumers,
        })
    }

    /// The offsets of the messages that come at once from `offset` (the chunk there).
    async fn peek(&self, stream: &str, offset: OffsetSpecification) -> Result<Vec<u64>> {
        let mut consumer = self.subscribe(stream, None, offset).await?;
        let mut offsets = Vec::new();
        // The first delivery may take a moment; the rest of its chunk comes with it.
        let mut wait = PEEK_FIRST;
        while let Ok(Some(Ok(delivery))) = tokio::time::timeout(wait, consumer.next()).await {
            offsets.push(delivery.offset());
            wait = PEEK_REST;
        }
        let _ = consumer.handle().close().await;
        Ok(offsets)
    }
}

/// How long `info` waits for a stream's first delivery, and for each next one of its chunk.
const PEEK_FIRST: Duration = Duration::from_secs(1);
const PEEK_REST: Duration = Duration::from_millis(200);

/// What `info` found.
#[derive(Debug)]
pub struct StreamInfo {
    pub leader: String,
    pub replicas: Vec<String>,
    /// The first message's offset (None: the stream is empty).
    pub first: Option<u64>,
    /// The offset of the last message of the last chunk.
    pub last: Option<u64>,
    /// Each consumer name asked about, and the offset it stored, if any.
    pub consumers: Vec<(String, Option<u64>)>,
}

/// What `consume` reads, from where, and for how long.
pub struct Reading<'a> {
    pub stream: &'a str,
    pub start: OffsetSpecification,
    pub tracking: Option<Tracking<'a>>,
    pub limits: StreamLimits,
    /// How long to keep trying after a lost connection.
    pub reconnect_timeout: Duration,
}

/// Server-side offset tracking of a named consumer.
pub struct Tracking<'a> {
    pub name: &'a str,
    pub store_every: u64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct StreamLimits {
    pub count: Option<u64>,
    pub idle_timeout: Option<Duration>,
}

/// What a consumer does with each message.
pub trait StreamHandler {
    /// The consumer is subscribed: what is appended from now on will come.
    fn consuming(&mut self);
    fn handle(&mut self, offset: u64, body: &[u8]) -> Result<()>;
    /// Makes what was handled final (before an offset is stored).
    fn flush(&mut self) -> Result<()>;
    /// The connection went; consuming tries again.
    fn lost(&mut self, reason: &str);
    /// Consuming goes on, from this offset.
    fn resumed(&mut self, from: Option<u64>);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// `--count` reached.
    Finished,
    /// `--idle-timeout` passed with no message.
    Idle,
    Interrupted,
}

#[derive(Debug)]
pub struct Consumed {
    pub handled: u64,
    pub last: Option<u64>,
    pub ending: Ending,
}

#[derive(Debug)]
pub struct Published {
    pub confirmed: u64,
    pub stopped: bool,
}
