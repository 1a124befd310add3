//! RabbitMQ streams over the stream protocol, with the RabbitMQ team's `rabbitmq-stream-client`:
//! connect (errors said plainly: no plugin, a broker too old), create a stream if absent,
//! publish with confirms, consume from an offset with server-side offset tracking. Like the rest
//! of the engine it never prints: confirms go to a [`Confirmations`], messages to a
//! [`StreamHandler`].
//!
//! Publishing uses the crate's `Producer`. Consuming uses its low-level `Client` (subscribe,
//! credit, store and query offsets): the crate's `Consumer` drops each chunk's timestamp, which
//! `stream recv -o json` shows. The timestamp is a private field of the protocol crate's
//! `DeliverCommand`, read through that type's public `Encoder` (see [`chunk_timestamp`]).

use super::{
    events::{Event, Observer},
    publish::{Confirmations, Published, Wait, Watch, interrupted, stopped_by},
    reconnect,
};
use crate::{
    context::Context,
    error::{Error, Result},
    input::Messages,
    signals::Interrupts,
    tls::TlsSettings,
    uri::StreamUrl,
};
use rabbitmq_stream_client::{
    Client, ClientOptions, Environment, NoDedup, OnClosed, Producer,
    error::{ClientError, ProducerCreateError, StreamCreateError},
    types::{
        ByteCapacity, Message, MessageResult, OffsetSpecification, ResponseCode, ResponseKind,
    },
};
use rabbitmq_stream_protocol::{codec::Encoder, commands::deliver::DeliverCommand};
use std::{
    collections::{BTreeSet, HashMap, VecDeque},
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
    /// The connection name the broker shows.
    name: String,
    connect_timeout: Duration,
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
        name: name.into(),
        connect_timeout: timeout,
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

    /// A producer on a connection of its own (to the stream's leader), within `timeout`; its
    /// answers and its connection's end go to `notes`, marked with `generation`.
    async fn producer(
        &self,
        stream: &str,
        timeout: Duration,
        generation: u64,
        notes: mpsc::UnboundedSender<Note>,
    ) -> Result<Producer<NoDedup>> {
        let build = self
            .env
            .producer()
            .client_provided_name(&self.name)
            .on_closed(Box::new(ClosedNote { generation, notes }))
            .build(stream);
        let built = match tokio::time::timeout(timeout, build).await {
            Err(_) => {
                return Err(Error::ConnectTimeout {
                    url: self.url.to_string(),
                    after: timeout,
                });
            }
            Ok(built) => built,
        };
        match built {
            Ok(producer) => Ok(producer),
            Err(ProducerCreateError::StreamDoesNotExist { .. })
            | Err(ProducerCreateError::Create {
                status: ResponseCode::StreamDoesNotExist,
                ..
            }) => Err(Error::NotAStream {
                name: stream.into(),
            }),
            // A stream whose leader is not elected yet (a node starting): try again.
            Err(ProducerCreateError::Create {
                status: ResponseCode::StreamNotAvailable,
                ..
            }) => Err(Error::StreamLost {
                context: format!("stream '{stream}' is not available yet ({})", self.url),
            }),
            Err(ProducerCreateError::Client(error)) => {
                Err(self.lost_or(error, "starting the producer"))
            }
            Err(error) => Err(client_error("cannot start the producer", error)),
        }
    }

    /// Publishes every message of `messages` to `stream`, telling `report` of each confirm in
    /// order, with up to [`WINDOW`] unconfirmed, as `task new` does: a lost connection is opened
    /// again within `--reconnect-timeout` and every message not confirmed is sent again
    /// (at-least-once: some may arrive twice); a signal (see [`Watch`]) stops the reading and
    /// leaves what is in flight its grace period.
    pub async fn publish(
        &self,
        ctx: &Context,
        observer: &dyn Observer,
        stream: &str,
        messages: &mut Messages,
        report: &mut impl Confirmations,
        watch: &mut Watch<'_>,
    ) -> Result<Published> {
        let (notes_sender, mut notes) = mpsc::unbounded_channel::<Note>();
        let mut window = InFlight::default();
        let mut published = Published::default();
        let mut generation = 0u64;
        let opening = self.producer(
            stream,
            self.connect_timeout,
            generation,
            notes_sender.clone(),
        );
        let Some(opened) = watch.wait(opening, Wait::Idle).await? else {
            return window.stopped(published, report, watch);
        };
        let mut producer = opened?;
        let mut reading = true;
        let mut input_error = None;
        loop {
            let mut lost = None;
            // Send what was read and is not sent on this connection (all of it after a
            // reconnection, but for what an earlier one had confirmed); nothing after a signal.
            while window.sent < window.pending.len() && !watch.stopping() {
                let number = window.confirmed + window.sent as u64 + 1;
                let index = window.sent;
                window.sent += 1;
                if window.ahead.contains(&number) {
                    continue;
                }
                let notes = notes_sender.clone();
                // The body only: a stream message carries no AMQP properties here.
                let message = Message::builder()
                    .body(window.pending[index].body.clone())
                    .build();
                let sent = producer
                    .send(message, move |status| {
                        let ok = status.is_ok_and(|status| status.confirmed());
                        let _ = notes.send(Note::Answer {
                            generation,
                            number,
                            ok,
                        });
                        async {}
                    })
                    .await;
                if let Err(error) = sent {
                    lost = Some(Error::StreamLost {
                        context: format!("publishing to stream '{stream}': {error}"),
                    });
                    break;
                }
            }
            if lost.is_none() {
                if watch.stopping() {
                    // Stop reading: what was read and not sent is not sent.
                    window.pending.truncate(window.sent);
                    reading = false;
                }
                if !reading && window.pending.is_empty() {
                    break;
                }
                let step = match window.next_step(reading, &mut notes, messages) {
                    Some(step) => step,
                    None => {
                        report.flush()?;
                        let waited = window
                            .wait(reading, &mut notes, messages, watch)
                            .await
                            .map_err(|error| interrupted(error, window.confirmed))?;
                        match waited {
                            Some(step) => step,
                            // A signal while idle: the top of the loop stops the reading.
                            None if window.pending.is_empty() => continue,
                            // The grace period ended, or a second signal.
                            None => return window.stopped(published, report, watch),
                        }
                    }
                };
                match step {
                    Step::Input(_) if watch.stopping() => {}
                    Step::Input(Ok(batch)) if batch.is_empty() => reading = false,
                    Step::Input(Ok(batch)) => window.pending.extend(batch),
                    Step::Input(Err(error)) => {
                        // Publish what came before it, then report it.
                        input_error = Some(messages.error(error));
                        reading = false;
                    }
                    Step::Note(Note::Answer {
                        generation: of,
                        number,
                        ok,
                    }) if of == generation => window.confirm(number, ok, report)?,
                    Step::Note(Note::Closed { generation: of }) if of == generation => {
                        lost = Some(Error::StreamLost {
                            context: format!(
                                "the broker closed the connection of the producer ({})",
                                self.url
                            ),
                        });
                    }
                    // From a connection already given up.
                    Step::Note(_) => {}
                }
            }
            let Some(lost) = lost else { continue };
            report.flush()?;
            if watch.stopping() {
                // Stopping: no reconnection, what was in flight stays in doubt.
                return window.stopped(published, report, watch);
            }
            let next = generation + 1;
            let reopened = reconnect::reopen(
                ctx,
                observer,
                Some(&self.url),
                lost,
                Some(watch.interrupts()),
                |attempt| {
                    let notes = notes_sender.clone();
                    async move {
                        self.producer(stream, attempt.connect_timeout, next, notes)
                            .await
                            .map_err(not_there_yet)
                    }
                },
            )
            .await
            .map_err(|source| stopped_by(source, window.confirmed))?;
            let Some(again) = reopened else {
                return window.stopped(published, report, watch);
            };
            // The old connection is gone: nothing to close.
            producer = again;
            generation = next;
            let count = window.unconfirmed_sent();
            window.sent = 0;
            published.republished += count;
            observer.observe(Event::Resending { count });
        }
        report.flush()?;
        let _ = tokio::time::timeout(CLOSE_WAIT, producer.close()).await;
        if let Some(error) = input_error {
            return Err(interrupted(error, window.confirmed));
        }
        window.stopped(published, report, watch)
    }

    /// The offset consumer `name` stored on `stream`, if any.
    pub async fn stored_offset(&self, stream: &str, name: &str) -> Result<Option<u64>> {
        let client = self.client(self.connect_timeout).await?;
        let stored = client.query_offset(name.to_string(), stream).await;
        let _ = tokio::time::timeout(CLOSE_WAIT, client.close()).await;
        match stored {
            Ok(offset) => Ok(Some(offset)),
            Err(ClientError::RequestError(ResponseCode::OffsetNotFound)) => Ok(None),
            Err(ClientError::RequestError(ResponseCode::StreamDoesNotExist)) => {
                Err(Error::NoStream {
                    name: stream.into(),
                })
            }
            Err(error) => Err(self.lost_or(error, "querying the stored offset")),
        }
    }

    /// A connection of its own (the crate's low-level client), within `timeout`.
    async fn client(&self, timeout: Duration) -> Result<Client> {
        let url = &self.url;
        let mut options = ClientOptions::builder()
            .host(&url.host)
            .port(url.port)
            .user(&url.user)
            .password(&url.password)
            .v_host(&url.vhost)
            .client_provided_name(self.name.clone());
        if url.tls {
            options = options.tls(tls_configuration(&self.tls)?);
        }
        match tokio::time::timeout(timeout, Client::connect(options.build())).await {
            Err(_) => Err(Error::ConnectTimeout {
                url: url.to_string(),
                after: timeout,
            }),
            Ok(connected) => connected.map_err(|error| connect_error(url, error)),
        }
    }

    /// Subscribes to `stream` from `offset` on a connection of its own. It reads from the node
    /// `--stream-url` names, which must hold a replica of the stream (every node of a cluster
    /// does by default).
    async fn subscribe(
        &self,
        stream: &str,
        offset: OffsetSpecification,
        timeout: Duration,
    ) -> Result<Subscription> {
        let client = self.client(timeout).await?;
        let (sender, pushed) = mpsc::channel(AHEAD);
        let credit = client.clone();
        client
            .set_handler(move |item: MessageResult| async move {
                if let Some(pushed) = Pushed::of(item) {
                    let chunk = matches!(pushed, Pushed::Chunk(_));
                    // Once the chunk is queued, the next one is asked for: it travels while
                    // this one waits to be handled.
                    if sender.send(pushed).await.is_ok() && chunk {
                        let _ = credit.credit(SUBSCRIPTION, 1).await;
                    }
                }
                Ok(())
            })
            .await;
        let subscription = Subscription { client, pushed };
        let response = subscription
            .client
            .subscribe(SUBSCRIPTION, stream, offset, CREDIT, HashMap::new())
            .await;
        let refused = match response {
            Ok(response) if response.is_ok() => return Ok(subscription),
            Ok(response) => match response.code() {
                ResponseCode::StreamDoesNotExist => Error::NoStream {
                    name: stream.into(),
                },
                // A stream whose leader is not elected yet (a node starting): try again.
                ResponseCode::StreamNotAvailable => Error::StreamLost {
                    context: format!("stream '{stream}' is not available yet ({})", self.url),
                },
                code => client_error("cannot start the consumer", format!("{code:?}")),
            },
            Err(error) => self.lost_or(error, "starting the consumer"),
        };
        subscription.close().await;
        Err(refused)
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
        let mut subscription = self
            .subscribe(stream, start.clone(), self.connect_timeout)
            .await?;
        handler.consuming();
        // The broker starts at a chunk boundary: nothing before an offset asked for is shown.
        let floor = match start {
            OffsetSpecification::Offset(offset) => offset,
            _ => 0,
        };
        let mut handled = 0u64;
        let mut last: Option<u64> = None;
        let mut stored: Option<u64> = None;
        let mut since_store = 0u64;
        let mut ending = Ending::Finished;
        let mut failure = None;
        'reading: loop {
            if limits.count.is_some_and(|count| handled >= count) {
                break;
            }
            // Nothing more at hand: make what was handled visible before waiting.
            let ready = futures_lite::future::poll_once(subscription.next()).await;
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
                    Some(idle) => tokio::time::timeout(idle, subscription.next()).await.ok(),
                    None => Some(subscription.next().await),
                }
            };
            let next = tokio::select! {
                next = wait => next,
                _ = interrupts.wait_for(1) => {
                    ending = Ending::Interrupted;
                    break;
                }
            };
            let chunk = match next {
                None => {
                    ending = Ending::Idle;
                    break;
                }
                Some(Pushed::Chunk(chunk)) => chunk,
                Some(Pushed::Lost(reason)) => {
                    // The connection went: a new subscription from after the last offset seen.
                    if let Err(error) = handler.flush() {
                        failure = Some(error);
                        break;
                    }
                    let resume =
                        last.map_or(start.clone(), |last| OffsetSpecification::Offset(last + 1));
                    handler.lost(&reason);
                    match self
                        .resubscribe(stream, resume, reconnect_timeout, interrupts)
                        .await
                    {
                        Ok(Some(again)) => {
                            subscription.close().await;
                            subscription = again;
                            handler.resumed(last.map(|last| last + 1));
                            continue;
                        }
                        Ok(None) => {
                            ending = Ending::Interrupted;
                            break;
                        }
                        Err(error) => {
                            failure = Some(match error.is_transient() {
                                true => Error::ReconnectFailed {
                                    after: reconnect_timeout,
                                    source: Box::new(error),
                                },
                                false => error,
                            });
                            break;
                        }
                    }
                }
            };
            for (offset, message) in (chunk.first..).zip(&chunk.messages) {
                // Never twice (a resubscription at a chunk boundary), never before the start.
                if offset < floor || last.is_some_and(|last| offset <= last) {
                    continue;
                }
                let message = StreamMessage {
                    offset,
                    timestamp: chunk.timestamp,
                    body: message.data().unwrap_or_default(),
                };
                if let Err(error) = handler.handle(&message) {
                    failure = Some(error);
                    break 'reading;
                }
                handled += 1;
                last = Some(offset);
                since_store += 1;
                if let Some(tracking) = &tracking
                    && since_store >= tracking.store_every
                {
                    if let Err(error) = handler.flush() {
                        failure = Some(error);
                        break 'reading;
                    }
                    subscription.store(tracking.name, stream, offset).await;
                    stored = Some(offset);
                    since_store = 0;
                }
                if limits.count.is_some_and(|count| handled >= count) {
                    break 'reading;
                }
                if interrupts.received() > 0 {
                    ending = Ending::Interrupted;
                    break 'reading;
                }
            }
        }
        let flushed = handler.flush();
        // Stored on every way out, once what was handled is flushed.
        if let Some(tracking) = &tracking
            && flushed.is_ok()
            && let Some(offset) = last
            && stored != Some(offset)
        {
            subscription.store(tracking.name, stream, offset).await;
        }
        subscription.close().await;
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
    /// came first. An error that trying again cannot get past (a refused login) ends it at
    /// once.
    async fn resubscribe(
        &self,
        stream: &str,
        offset: OffsetSpecification,
        timeout: Duration,
        interrupts: &mut Interrupts,
    ) -> Result<Option<Subscription>> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt = tokio::select! {
                attempt = self.subscribe(
                    stream,
                    offset.clone(),
                    self.connect_timeout.min(remaining.max(RETRY)),
                ) => attempt.map_err(not_there_yet),
                _ = interrupts.wait_for(1) => return Ok(None),
            };
            match attempt {
                Ok(subscription) => return Ok(Some(subscription)),
                Err(error) if !error.is_transient() || Instant::now() >= deadline => {
                    return Err(error);
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY) => {}
                _ = interrupts.wait_for(1) => return Ok(None),
            }
        }
    }
}

/// After a lost connection, a stream the broker does not list may be on its way back: a node
/// that restarts lists its streams only once it has recovered them. So trying again goes on
/// (within `--reconnect-timeout`) rather than end at once.
fn not_there_yet(error: Error) -> Error {
    match error {
        Error::NoStream { name } | Error::NotAStream { name } => Error::StreamLost {
            context: format!("stream '{name}' is not available (yet)"),
        },
        other => other,
    }
}

/// The one subscription of a consumer's connection.
const SUBSCRIPTION: u8 = 1;
/// Chunks the broker may send unasked. One, as the crate's own consumer: the next is asked for
/// as soon as one is queued (see [`AHEAD`]). With two, the broker's second chunk waited on the
/// delayed ACK of the first (Nagle's algorithm), about 40 ms a chunk: 5,000 msg/s instead of
/// 900,000.
const CREDIT: u16 = 1;
/// Chunks received and not yet handled, at most: the memory a slow reader of stdout holds.
const AHEAD: usize = 4;
/// The wait between two attempts to subscribe again.
const RETRY: Duration = Duration::from_millis(500);
/// How long closing waits for the broker (a lost connection does not answer).
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// A subscription to a stream over a connection of its own: the chunks the broker delivers.
struct Subscription {
    client: Client,
    pushed: mpsc::Receiver<Pushed>,
}

impl Subscription {
    /// The next chunk, or the end of the connection.
    async fn next(&mut self) -> Pushed {
        self.pushed
            .recv()
            .await
            .unwrap_or_else(|| Pushed::Lost("the stream connection closed".into()))
    }

    /// Stores `offset` as consumer `name`'s, and waits until the broker has it: it does not
    /// answer a store, but answers a query after it once the store is done. Without the wait, a
    /// consumer killed right after a store could lose it with the connection's unread data.
    async fn store(&self, name: &str, stream: &str, offset: u64) {
        if self.client.store_offset(name, stream, offset).await.is_ok() {
            let _ = tokio::time::timeout(
                CLOSE_WAIT,
                self.client.query_offset(name.to_string(), stream),
            )
            .await;
        }
    }

    async fn close(self) {
        let client = self.client;
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            let _ = client.unsubscribe(SUBSCRIPTION).await;
            let _ = client.close().await;
        })
        .await;
    }
}

/// What the broker pushes to a subscription.
enum Pushed {
    Chunk(Chunk),
    /// The connection went, or the stream changed (deleted, a new leader): subscribe again.
    Lost(String),
}

/// One chunk of a stream: consecutive messages from `first` on, written at once.
struct Chunk {
    first: u64,
    /// When the broker wrote the chunk, in milliseconds since the Unix epoch.
    timestamp: Option<u64>,
    messages: Vec<Message>,
}

impl Pushed {
    fn of(item: MessageResult) -> Option<Pushed> {
        match item {
            Some(Ok(response)) => match response.kind() {
                ResponseKind::Deliver(mut deliver) => {
                    let messages = std::mem::take(&mut deliver.messages);
                    Some(Pushed::Chunk(Chunk {
                        first: deliver.chunk_first_offset,
                        timestamp: chunk_timestamp(&deliver),
                        messages,
                    }))
                }
                ResponseKind::MetadataUpdate(_) => Some(Pushed::Lost(
                    "the stream was deleted or its leader changed".into(),
                )),
                _ => None,
            },
            Some(Err(error)) => Some(Pushed::Lost(error.to_string())),
            None => Some(Pushed::Lost("the broker closed the connection".into())),
        }
    }
}

/// The chunk timestamp of a delivery, in milliseconds since the Unix epoch. The field is private
/// in rabbitmq-stream-protocol 0.11, but the type encodes itself as the broker sent it: with its
/// messages taken out only the header is encoded (about 50 bytes), and the timestamp follows
/// the subscription id (u8), magic version (i8), chunk type (u8), entry count (u16) and record
/// count (u32), as a big-endian u64 (see the Deliver frame of the stream protocol).
fn chunk_timestamp(deliver: &DeliverCommand) -> Option<u64> {
    const AT: usize = 1 + 1 + 1 + 2 + 4;
    let mut header = Vec::with_capacity(deliver.encoded_size() as usize);
    deliver.encode(&mut header).ok()?;
    let bytes = header.get(AT..AT + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// What a producer's callbacks tell the publishing loop.
enum Note {
    /// The broker's answer to message `number`, sent over connection `generation`.
    Answer {
        generation: u64,
        number: u64,
        ok: bool,
    },
    /// Connection `generation` closed.
    Closed { generation: u64 },
}

/// Tells the publishing loop that a producer's connection closed.
struct ClosedNote {
    generation: u64,
    notes: mpsc::UnboundedSender<Note>,
}

impl OnClosed for ClosedNote {
    // The trait is an `async_trait`: its method, written out.
    fn on_closed<'a, 'b>(
        &'a self,
        _unconfirmed: Vec<Message>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        let _ = self.notes.send(Note::Closed {
            generation: self.generation,
        });
        Box::pin(async {})
    }
}

/// What the publishing loop goes on with.
enum Step {
    Input(std::result::Result<crate::input::Batch, crate::input::ReadError>),
    Note(Note),
}

/// Messages read and not confirmed yet, reported in order as confirms come.
#[derive(Default)]
struct InFlight {
    /// Messages from number `confirmed + 1` on.
    pending: VecDeque<crate::message::Message>,
    /// How many of `pending`, from the front, were sent over the current connection (or
    /// confirmed over an earlier one).
    sent: usize,
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
            self.sent = self.sent.saturating_sub(1);
            self.confirmed += 1;
            report.confirmed(self.confirmed, &message)?;
        }
        Ok(())
    }

    /// Messages sent and not confirmed: after a lost connection, those to send again; after a
    /// stop, those in doubt.
    fn unconfirmed_sent(&self) -> u64 {
        let sent = self.confirmed + 1..=self.confirmed + self.sent as u64;
        sent.filter(|number| !self.ahead.contains(number)).count() as u64
    }

    /// What is at hand without waiting: an answer first, then input while the window has room.
    fn next_step(
        &self,
        reading: bool,
        notes: &mut mpsc::UnboundedReceiver<Note>,
        messages: &mut Messages,
    ) -> Option<Step> {
        if let Ok(note) = notes.try_recv() {
            return Some(Step::Note(note));
        }
        if !reading || self.pending.len() >= WINDOW {
            return None;
        }
        messages.try_next().transpose().map(Step::Input)
    }

    /// Waits for an answer or, while the window has room, input. `None`: a signal with nothing
    /// in flight, or the end of the grace period after one (see [`Watch`]).
    async fn wait(
        &self,
        reading: bool,
        notes: &mut mpsc::UnboundedReceiver<Note>,
        messages: &mut Messages,
        watch: &mut Watch<'_>,
    ) -> Result<Option<Step>> {
        if !reading || self.pending.len() >= WINDOW {
            let note = async { notes.recv().await.map(Step::Note) };
            return Ok(watch.wait(note, Wait::Confirm).await?.flatten());
        }
        if self.pending.is_empty() {
            let input = async { Step::Input(messages.next().await) };
            return watch.wait(input, Wait::Idle).await;
        }
        let either = async {
            tokio::select! {
                biased;
                Some(note) = notes.recv() => Step::Note(note),
                batch = messages.next() => Step::Input(batch),
            }
        };
        watch.wait(either, Wait::Confirm).await
    }

    /// The end of a run: the input's end, or a stop.
    fn stopped(
        &self,
        mut published: Published,
        report: &mut impl Confirmations,
        watch: &Watch<'_>,
    ) -> Result<Published> {
        report.flush()?;
        published.confirmed = self.confirmed;
        published.stopped = watch.stopping();
        published.in_doubt = self.unconfirmed_sent();
        Ok(published)
    }
}

impl Streams {
    /// The stream's metadata, if it is one.
    async fn metadata(
        &self,
        stream: &str,
    ) -> Result<Option<rabbitmq_stream_client::types::StreamMetadata>> {
        let client = self.client(self.connect_timeout).await?;
        let metadata = client
            .metadata(vec![stream.to_string()])
            .await
            .map_err(|error| self.lost_or(error, "asking for the stream's metadata"));
        let _ = tokio::time::timeout(CLOSE_WAIT, client.close()).await;
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
        let last = match first {
            Some(_) => self.peek(stream, OffsetSpecification::Last).await?,
            None => None,
        };
        let mut consumers = Vec::new();
        for name in names {
            consumers.push((name.clone(), self.stored_offset(stream, name).await?));
        }
        Ok(StreamInfo {
            leader: address(&metadata.leader),
            replicas: metadata.replicas.iter().map(address).collect(),
            first: first.map(|(first, _)| first),
            last: last.map(|(_, last)| last),
            consumers,
        })
    }

    /// The first and last offsets of the chunks that come at once from `offset`: the first
    /// chunk only from `First`, every chunk up to the end otherwise.
    async fn peek(&self, stream: &str, offset: OffsetSpecification) -> Result<Option<(u64, u64)>> {
        let only_one = offset == OffsetSpecification::First;
        let mut subscription = self.subscribe(stream, offset, self.connect_timeout).await?;
        let mut seen: Option<(u64, u64)> = None;
        // The first chunk may take a moment; any next one comes at once.
        let mut wait = PEEK_FIRST;
        while let Ok(Pushed::Chunk(chunk)) = tokio::time::timeout(wait, subscription.next()).await {
            if let Some(count) = (chunk.messages.len() as u64).checked_sub(1) {
                let first = seen.map_or(chunk.first, |(first, _)| first);
                seen = Some((first, chunk.first + count));
            }
            if only_one {
                break;
            }
            wait = PEEK_REST;
        }
        subscription.close().await;
        Ok(seen)
    }
}

/// How long `info` waits for a stream's first chunk, and for each next one.
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

/// One message read from a stream.
#[derive(Debug, Clone, Copy)]
pub struct StreamMessage<'a> {
    pub offset: u64,
    /// When the broker wrote the message's chunk, in milliseconds since the Unix epoch (the
    /// same for every message of a chunk).
    pub timestamp: Option<u64>,
    pub body: &'a [u8],
}

/// What a consumer does with each message.
pub trait StreamHandler {
    /// The consumer is subscribed: what is appended from now on will come.
    fn consuming(&mut self);
    fn handle(&mut self, message: &StreamMessage<'_>) -> Result<()>;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The position [`chunk_timestamp`] reads is the timestamp's, whatever the fields around it.
    #[test]
    fn the_chunk_timestamp_is_read_from_its_place_in_the_header() {
        let timestamp = 1_795_800_000_123u64;
        for (subscription, entries, messages) in [(1u8, 3u16, 3usize), (255, 0, 0), (7, 1, 40)] {
            let messages = (0..messages)
                .map(|n| Message::builder().body(format!("m{n}")).build())
                .collect();
            let mut deliver = DeliverCommand::new(
                subscription,
                -1,
                0,
                entries,
                timestamp,
                u64::MAX,
                42,
                -7,
                u32::MAX,
                0,
                messages,
            );
            let taken = std::mem::take(&mut deliver.messages);
            assert_eq!(chunk_timestamp(&deliver), Some(timestamp));
            deliver.messages = taken;
            assert_eq!(
                chunk_timestamp(&deliver),
                Some(timestamp),
                "with messages too"
            );
        }
    }

    /// What the handler of a subscription turns a delivery into: the offsets come from the
    /// chunk's first one, the timestamp with them.
    #[test]
    fn a_delivery_becomes_a_chunk_with_its_timestamp() {
        let messages = vec![Message::builder().body("a").build()];
        let deliver = DeliverCommand::new(1, 0, 0, 1, 1_000, 0, 500, 0, 0, 0, messages);
        let response = rabbitmq_stream_client::types::Response::new(
            // The Deliver frame's key (the header is not looked at).
            rabbitmq_stream_protocol::types::Header::new(8, 1),
            ResponseKind::Deliver(deliver),
        );
        let Some(Pushed::Chunk(chunk)) = Pushed::of(Some(Ok(response))) else {
            panic!("a chunk");
        };
        assert_eq!((chunk.first, chunk.timestamp), (500, Some(1_000)));
        assert_eq!(chunk.messages[0].data(), Some(&b"a"[..]));
        assert!(matches!(Pushed::of(None), Some(Pushed::Lost(_))));
    }
}
