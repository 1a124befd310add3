//! Talking to the broker: connecting, declaring, and publishing with confirms.

use crate::{
    cli::QueueType,
    error::{Declared, Error, Result, amqp_error, describe_mismatch},
    input::Messages,
    output::write_sent,
    terminal::{Progress, paint_marker},
    tls::TlsSettings,
    uri::BrokerUrl,
};
use indicatif::ProgressBar;
use lapin::tcp::{AsyncTcpStream, RustlsConnector};
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind, PublisherConfirm,
    options::{
        BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
        QueueDeclareOptions,
    },
    protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError},
    types::{AMQPValue, FieldTable},
};
use std::{collections::VecDeque, io::Write, sync::Arc, time::Duration};

/// How long a clean close may take before rmqlab leaves anyway.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// RabbitMQ's default `frame_max`: the largest frame rmqlab asks for unless the URL says.
pub const DEFAULT_FRAME_MAX: u32 = 128 * 1024;

/// Publishes kept in flight before waiting for the oldest confirm.
pub const CONFIRM_WINDOW: usize = 512;

/// Where to connect and how to report: the plain settings every command starts from.
#[derive(Debug, Clone)]
pub struct Context {
    pub url: BrokerUrl,
    /// How long to keep trying to reconnect after a lost connection (zero: never).
    pub reconnect_timeout: Duration,
    pub tls: TlsSettings,
    /// `--api-url`, parsed only by the commands that use the management API.
    pub api_url: Option<String>,
    pub connect_timeout: Duration,
    pub status: Status,
}

/// Status and diagnostic lines on stderr; stdout carries data only.
#[derive(Debug, Clone, Copy)]
pub struct Status {
    pub quiet: bool,
    pub verbose: bool,
    /// Colour the status markers.
    pub color: bool,
    pub progress: Progress,
}

impl Status {
    pub fn info(&self, line: impl std::fmt::Display) {
        if !self.quiet {
            self.warn(line);
        }
    }

    /// A warning: something the user should know even with `--quiet`.
    pub fn warn(&self, line: impl std::fmt::Display) {
        eprintln!("{}", paint_marker(&line.to_string(), self.color));
    }

    pub fn debug(&self, line: impl std::fmt::Display) {
        if self.verbose {
            eprintln!("rmqlab: {line}");
        }
    }
}

/// One connection with one channel, named after the command that opened it.
pub struct Session {
    connection: Connection,
    pub channel: Channel,
    vhost: String,
}

impl Session {
    /// Connects within `--connect-timeout` and opens a channel. `name` shows in the management
    /// UI and in `rabbitmqctl list_connections client_properties`.
    pub async fn open(ctx: &Context, name: &str) -> Result<Session> {
        ctx.status
            .debug(format_args!("connecting to {} as '{name}'", ctx.url));
        let properties = ConnectionProperties::default()
            .with_connection_name(name.into())
            .with_client_property("product".into(), "rmqlab".into())
            .with_client_property("version".into(), env!("CARGO_PKG_VERSION").into());
        let attempt = connect(ctx, properties);
        let connection = match tokio::time::timeout(ctx.connect_timeout, attempt).await {
            Err(_elapsed) => {
                return Err(Error::ConnectTimeout {
                    url: ctx.url.to_string(),
                    after: ctx.connect_timeout,
                });
            }
            Ok(Err(error)) => return Err(error),
            Ok(Ok(connection)) => connection,
        };
        let channel = connection
            .create_channel()
            .await
            .map_err(Error::broker("cannot open a channel"))?;
        Ok(Session {
            connection,
            channel,
            vhost: ctx.url.vhost().to_string(),
        })
    }

    /// Declares a durable queue (idempotent when it exists with the same properties).
    pub async fn declare_queue(&self, name: &str, queue_type: QueueType) -> Result<()> {
        let arguments = queue_arguments(queue_type);
        let options = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        self.channel
            .queue_declare(name.into(), options, arguments)
            .await
            .map_err(|source| self.declare_error(Declared::Queue, name, source))?;
        Ok(())
    }

    /// Declares a fanout exchange, non-durable as in the tutorial, so that the tutorial's own
    /// programs can share it.
    pub async fn declare_fanout(&self, exchange: &str) -> Result<()> {
        self.channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|source| self.declare_error(Declared::Exchange, exchange, source))
    }

    /// Declares an exclusive queue with a server-chosen name, bound to `exchange`; the broker
    /// deletes it when this connection closes. Returns its name.
    pub async fn declare_exclusive_queue_on(&self, exchange: &str) -> Result<String> {
        let options = QueueDeclareOptions {
            exclusive: true,
            ..QueueDeclareOptions::default()
        };
        let queue = self
            .channel
            .queue_declare("".into(), options, FieldTable::default())
            .await
            .map_err(Error::broker("cannot declare an exclusive queue"))?;
        let name = queue.name().to_string();
        self.channel
            .queue_bind(
                name.as_str().into(),
                exchange.into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(Error::broker(format!(
                "cannot bind queue '{name}' to exchange '{exchange}'"
            )))?;
        Ok(name)
    }

    fn declare_error(&self, kind: Declared, name: &str, source: lapin::Error) -> Error {
        match amqp_error(&source) {
            Some(amqp)
                if *amqp.kind() == AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) =>
            {
                Error::Mismatch {
                    kind,
                    name: name.to_string(),
                    vhost: self.vhost.clone(),
                    difference: describe_mismatch(amqp.get_message().as_str()),
                    source: Box::new(source),
                }
            }
            _ => Error::Broker {
                context: format!("cannot declare {kind} '{name}'"),
                source: Box::new(source),
            },
        }
    }

    /// Puts the channel in confirm mode: the broker then confirms every publish.
    pub async fn enable_confirms(&self) -> Result<()> {
        self.channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(Error::broker("cannot enable publisher confirms"))
    }

    /// Publishes every message of `messages` on a channel in confirm mode
    /// ([`Session::enable_confirms`]), keeping up to
    /// [`CONFIRM_WINDOW`] in flight, each reported ` [x] Sent` once the broker confirmed it.
    /// Messages the window holds unconfirmed from an earlier, lost connection are sent again
    /// first. On error the window keeps every message not yet confirmed, for a retry.
    pub async fn publish<W: Write>(
        &self,
        messages: &mut Messages,
        window: &mut ConfirmWindow<'_, W>,
    ) -> Result<()> {
        let properties = window.target.properties();
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        loop {
            // Send what is queued, as far as the window allows.
            while window.sent < window.queue.len() && window.sent < CONFIRM_WINDOW {
                let entry = &mut window.queue[window.sent];
                let confirm = self
                    .channel
                    .basic_publish(
                        window.target.exchange.into(),
                        window.target.routing_key.into(),
                        options,
                        &entry.body,
                        properties.clone(),
                    )
                    .await
                    .map_err(Error::broker("cannot publish"))?;
                entry.confirm = Some(confirm);
                window.sent += 1;
            }
            if window.sent == CONFIRM_WINDOW {
                window.settle_oldest().await?;
                continue;
            }
            if window.input_ended {
                if window.sent == 0 {
                    break;
                }
                window.settle_oldest().await?;
                continue;
            }
            let batch = match messages.try_next() {
                Ok(Some(batch)) => Ok(batch),
                Ok(None) if window.sent == 0 => {
                    window.out.flush().map_err(Error::Output)?;
                    messages.next().await
                }
                // Input is not ready: settle confirms while waiting for it.
                Ok(None) => tokio::select! {
                    biased;
                    batch = messages.next() => batch,
                    settled = window.settle_oldest() => { settled?; continue; }
                },
                Err(error) => Err(error),
            }
            .map_err(|source| Error::Input {
                path: messages.name.clone(),
                source,
            })?;
            if batch.is_empty() {
                window.input_ended = true;
            }
            window.queue.extend(batch.into_iter().map(|body| Entry {
                body,
                confirm: None,
            }));
        }
        window.out.flush().map_err(Error::Output)?;
        Ok(())
    }

    /// Whether the connection still stands (false once the broker closed it or it broke).
    pub fn is_connected(&self) -> bool {
        self.connection.status().connected()
    }

    /// Closes the channel and the connection cleanly; unacked deliveries go back to the queue.
    pub async fn close(self) {
        // Closing the connection closes its channel too: one round trip, not two. A connection
        // the broker already closed has nothing left to close, and one that broke half-way may
        // never answer: do not wait for it long.
        let close = self.connection.close(200, "OK".into());
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
    }
}

/// The arguments rmqlab declares a queue of this type with.
pub fn queue_arguments(queue_type: QueueType) -> FieldTable {
    let mut arguments = FieldTable::default();
    if queue_type == QueueType::Quorum {
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
    }
    arguments
}

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

/// What a message that no queue takes means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unroutable {
    /// An error: the queue the message was meant for is gone.
    Fails,
    /// Correct behaviour (fan-out with no listener): say so on stderr and go on.
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

/// A message read from the input and not yet confirmed by the broker.
struct Entry {
    body: Vec<u8>,
    /// Set once it is published on the current connection.
    confirm: Option<PublisherConfirm>,
}

/// The messages between the input and the broker's confirms; it outlives a lost connection.
pub struct ConfirmWindow<'a, W> {
    /// Unconfirmed messages in input order: the first `sent` are published and await a confirm.
    queue: VecDeque<Entry>,
    sent: usize,
    input_ended: bool,
    pub published: Published,
    target: &'a Publication<'a>,
    out: &'a mut W,
    status: Status,
    progress: &'a ProgressBar,
}

impl<'a, W: Write> ConfirmWindow<'a, W> {
    pub fn new(
        target: &'a Publication<'a>,
        out: &'a mut W,
        status: Status,
        progress: &'a ProgressBar,
    ) -> Self {
        ConfirmWindow {
            queue: VecDeque::with_capacity(CONFIRM_WINDOW),
            sent: 0,
            input_ended: false,
            published: Published::default(),
            target,
            out,
            status,
            progress,
        }
    }

    /// After a lost connection: every published but unconfirmed message must be sent again.
    /// Returns how many.
    pub fn forget_sent(&mut self) -> usize {
        let resent = self.sent;
        for entry in self.queue.iter_mut().take(resent) {
            entry.confirm = None;
        }
        self.sent = 0;
        self.published.republished += resent as u64;
        resent
    }

    /// The end of a publish run: clear the progress, report messages no queue took.
    pub fn finish(&mut self) -> Published {
        self.progress.finish_and_clear();
        let published = self.published;
        if published.dropped > 1 {
            self.status.warn(format_args!(
                " [!] {} of {} messages were dropped: no queue is bound to exchange '{}'",
                published.dropped, published.confirmed, self.target.exchange
            ));
        }
        published
    }

    /// Waits for the broker's answer to the oldest message in flight.
    async fn settle_oldest(&mut self) -> Result<()> {
        let Some(confirm) = self.queue.front_mut().and_then(|e| e.confirm.as_mut()) else {
            return Ok(());
        };
        let number = self.published.confirmed + 1;
        let confirmation = confirm.await.map_err(|source| Error::Broker {
            context: if source.is_amqp_soft_error() {
                format!("the broker refused message {number}")
            } else {
                format!("lost the broker's confirmation of message {number}")
            },
            source: Box::new(source),
        })?;
        let Entry { body, .. } = self
            .queue
            .pop_front()
            .expect("the front entry was just awaited");
        self.sent -= 1;
        if confirmation.is_nack() {
            return Err(Error::Nacked { number });
        }
        if let Some(returned) = confirmation.take_message() {
            match self.target.unroutable {
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
                    self.published.dropped += 1;
                    if self.published.dropped == 1 {
                        self.progress.suspend(|| {
                            self.status.warn(format_args!(
                                " [!] no queue is bound to exchange '{}': message dropped",
                                self.target.exchange
                            ))
                        });
                    }
                }
            }
        }
        self.published.confirmed = number;
        if self.progress.length().is_some() {
            // The bar measures the input's bytes: the line and its newline.
            self.progress.inc(body.len() as u64 + 1);
            if number.is_multiple_of(256) {
                self.progress.set_message(number.to_string());
            }
        } else {
            self.progress.inc(1);
        }
        write_sent(self.out, &body).map_err(Error::Output)
    }
}

/// Connects in plain TCP, or (amqps://) through rmqlab's own TLS configuration.
async fn connect(ctx: &Context, properties: ConnectionProperties) -> Result<Connection> {
    let mut uri = ctx.url.amqp_uri().clone();
    // lapin sizes its two frame buffers (32 frames each) for the frame size it asks for, and
    // zero-fills them again when the broker's Tune grows that size: 8 MiB written at start-up,
    // 4 ms of a 10 ms `hello send`. Asking for the broker's default frame size up front gets
    // buffers the kernel zeroes lazily. The URL's own `?frame_max=` still wins.
    uri.query.frame_max.get_or_insert(DEFAULT_FRAME_MAX);
    let tls = match ctx.url.is_tls() {
        true => {
            if ctx.tls.insecure {
                ctx.status.warn(INSECURE_WARNING);
            }
            Some(Arc::new(RustlsConnector::from(ctx.tls.client_config()?)))
        }
        false => None,
    };
    let runtime = lapin::runtime::default_runtime()
        .map_err(Error::broker("no async runtime for the connection"))?;
    // rmqlab's own connector rather than lapin's: lapin resolves even an IP address on a
    // blocking thread, started for that alone; tokio answers an address without one.
    Connection::connector(
        uri,
        runtime,
        async move |uri, runtime| {
            let host = uri.authority.host.clone();
            let mut last = None;
            for address in tokio::net::lookup_host((host.as_str(), uri.authority.port)).await? {
                match AsyncTcpStream::connect(&runtime, address).await {
                    Ok(stream) => match &tls {
                        Some(connector) => return Ok(stream.into_rustls(connector, &host).await?),
                        None => return Ok(stream),
                    },
                    Err(error) => last = Some(error),
                }
            }
            Err(last
                .unwrap_or_else(|| std::io::Error::other(format!("no address for {host}")))
                .into())
        },
        properties,
    )
    .await
    .map_err(|source| connect_error(source, &ctx.url))
}

pub const INSECURE_WARNING: &str = " [!] --tls-insecure: the server's certificate is NOT verified; \
anyone on the network path can read and change this traffic";

/// Classifies a failed connection attempt.
fn connect_error(source: lapin::Error, url: &BrokerUrl) -> Error {
    let kind = amqp_error(&source).map(|amqp| {
        (
            amqp.kind().clone(),
            amqp.get_message().as_str().contains("vhost"),
        )
    });
    let source = Box::new(source);
    let url_shown = url.to_string();
    match kind {
        Some((
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)
            | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED),
            true,
        )) => Error::VhostRefused {
            url: url_shown,
            vhost: url.vhost().to_string(),
            source,
        },
        Some((AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED), _)) => Error::LoginRefused {
            url: url_shown,
            user: url.user().to_string(),
            guest_from_afar: url.user() == "guest" && !url.is_loopback(),
            source,
        },
        Some(_) => Error::Broker {
            context: format!("the broker at {url_shown} closed the connection"),
            source,
        },
        None if url.is_tls() && is_certificate_problem(&source) => Error::TlsRefused {
            url: url_shown,
            client_certificate: source.to_string().contains("alert"),
            source,
        },
        // A TLS server that drops the session after the handshake: it refused our certificate,
        // or the lack of one (TLS 1.3 may show that as a reset rather than an alert).
        None if url.is_tls() && is_reset(&source) => Error::TlsRefused {
            url: url_shown,
            client_certificate: true,
            source,
        },
        None => Error::Unreachable {
            url: url_shown,
            source,
        },
    }
}

/// A TLS handshake that failed over the server's certificate (untrusted, wrong host name...).
fn is_certificate_problem(source: &lapin::Error) -> bool {
    let text = source.to_string().to_lowercase();
    text.contains("certificate") || text.contains("invalidcertificate")
}

fn is_reset(source: &lapin::Error) -> bool {
    matches!(source.kind(), lapin::ErrorKind::IOError(e)
        if e.kind() == std::io::ErrorKind::ConnectionReset)
}
