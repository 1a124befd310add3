//! The engine: connecting, declaring a [`topology::Topology`], publishing with confirms,
//! consuming with acks, and reconnecting. It reports what happened through
//! [`events::Observer`] and return values, and never prints: `commands/` decides what the user
//! sees.

pub mod consume;
pub mod events;
pub mod oneshot;
pub mod publish;
pub mod reconnect;
pub mod rpc;
pub mod stream;
pub mod topology;
pub mod transfer;

use crate::{
    context::Context,
    error::{Error, Result, amqp_error},
    signals,
    uri::BrokerUrl,
};
use events::{Event, Observer};
use lapin::tcp::{AsyncTcpStream, RustlsConnector};
use lapin::{
    Channel, Connection, ConnectionProperties,
    options::ConfirmSelectOptions,
    protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError},
};
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use topology::{Declared, Topology};

/// How long a clean close may take before rmqlab leaves anyway.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// RabbitMQ's default `frame_max`: the largest frame rmqlab asks for unless the URL says.
pub const DEFAULT_FRAME_MAX: u32 = 128 * 1024;

/// What a session is opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Publishes with confirms.
    Publisher,
    Consumer,
}

/// One connection with one channel, named after the command that opened it.
pub struct Session {
    connection: Connection,
    pub channel: Channel,
}

impl Session {
    /// Connects and opens a channel: to the first URL of `--url` that answers, from the one in
    /// use on (see [`crate::uri::BrokerUrls::attempt_order`]), each within `--connect-timeout`, saying why
    /// it skipped the others. `name` shows in the management UI and in `rabbitmqctl
    /// list_connections client_properties`.
    pub async fn connect(ctx: &Context, name: &str, observer: &dyn Observer) -> Result<Session> {
        let mut failures = Vec::new();
        for (index, url) in ctx.urls.attempt_order() {
            match Session::connect_to(ctx, url, name, observer).await {
                Ok(session) => {
                    ctx.urls.use_index(index);
                    if ctx.urls.count() > 1 {
                        observer.observe(Event::Connected { url });
                    }
                    return Ok(session);
                }
                Err(error @ Error::Interrupted(_)) => return Err(error),
                Err(error) if ctx.urls.count() > 1 => {
                    observer.observe(Event::Skipped { url, error: &error });
                    failures.push(error);
                }
                Err(error) => return Err(error),
            }
        }
        Err(Error::no_url_connected("broker URLs", failures))
    }

    /// Connects to `url` within `--connect-timeout` and opens a channel.
    async fn connect_to(
        ctx: &Context,
        url: &BrokerUrl,
        name: &str,
        observer: &dyn Observer,
    ) -> Result<Session> {
        observer.observe(Event::Connecting { url, name, how: "" });
        let properties = ConnectionProperties::default()
            .with_connection_name(name.into())
            .with_client_property("product".into(), "rmqlab".into())
            .with_client_property("version".into(), env!("CARGO_PKG_VERSION").into());
        let tcp_connected = Arc::new(AtomicBool::new(false));
        let attempt = tokio::time::timeout(
            ctx.connect_timeout,
            connect(ctx, url, properties, observer, tcp_connected.clone()),
        );
        // Nothing is done yet: Ctrl-C stops at once, not after --connect-timeout.
        let attempt = signals::unless_interrupted(attempt).await;
        let connection = match attempt.map_err(Error::Interrupted)? {
            Err(_elapsed) if tcp_connected.load(Ordering::SeqCst) && !url.is_tls() => {
                return Err(not_amqp(url, true));
            }
            Err(_elapsed) => {
                return Err(Error::ConnectTimeout {
                    url: url.to_string(),
                    after: ctx.connect_timeout,
                });
            }
            // Taken, then closed or answered with something else than AMQP.
            Ok(Err(Error::Unreachable { .. }))
                if tcp_connected.load(Ordering::SeqCst) && !url.is_tls() =>
            {
                return Err(not_amqp(url, false));
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
        })
    }

    /// Connects and declares `topology`; a publisher's channel is also put in confirm mode.
    pub async fn open(
        ctx: &Context,
        name: &str,
        topology: &Topology,
        role: Role,
        observer: &dyn Observer,
    ) -> Result<(Session, Declared)> {
        let mut session = Session::connect(ctx, name, observer).await?;
        let declared = match role {
            Role::Publisher => {
                // Both requests leave at once and the broker answers them in order: one round
                // trip instead of two. A refused declaration closes the channel, so confirm
                // mode fails with it; after an adoption it is asked again on the new channel.
                let channel = session.channel.clone();
                let (declared, confirms) = tokio::join!(
                    topology.declare(&mut session, observer),
                    enable_confirms(&channel)
                );
                let declared = declared?;
                match declared.adopted {
                    true => enable_confirms(&session.channel).await?,
                    false => confirms?,
                }
                declared
            }
            Role::Consumer => topology.declare(&mut session, observer).await?,
        };
        if let Some((queue, wanted, reason)) = &declared.type_unchecked {
            check_queue_type(ctx, queue, *wanted, reason).await?;
        }
        Ok((session, declared))
    }

    /// (ready messages, consumers) of an existing queue, as the broker counts them now.
    pub async fn inspect_queue(&self, queue: &str) -> Result<(u32, u32)> {
        let options = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let declared = self
            .channel
            .queue_declare(queue.into(), options, lapin::types::FieldTable::default())
            .await
            .map_err(Error::broker(format!("cannot inspect queue '{queue}'")))?;
        Ok((declared.message_count(), declared.consumer_count()))
    }

    /// Removes every ready message of an existing queue (`queue.purge`); returns how many.
    pub async fn purge_queue(&self, queue: &str) -> Result<u32> {
        self.channel
            .queue_purge(queue.into(), lapin::options::QueuePurgeOptions::default())
            .await
            .map_err(Error::broker(format!("cannot purge queue '{queue}'")))
    }

    /// Deletes a queue (`queue.delete`, unconditional: callers check `--if-empty` and
    /// `--if-unused` with [`Session::inspect_queue`] first).
    pub async fn delete_queue(&self, queue: &str) -> Result<u32> {
        self.channel
            .queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default())
            .await
            .map_err(Error::broker(format!("cannot delete queue '{queue}'")))
    }

    /// Checks that an exchange exists (a passive declaration).
    pub async fn inspect_exchange(&self, exchange: &str) -> Result<()> {
        let options = lapin::options::ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        self.channel
            .exchange_declare(
                exchange.into(),
                lapin::ExchangeKind::Direct,
                options,
                lapin::types::FieldTable::default(),
            )
            .await
            .map_err(Error::broker(format!(
                "cannot inspect exchange '{exchange}'"
            )))
    }

    /// Replaces a channel the broker closed (after a refused declaration) with a new one.
    pub async fn reopen_channel(&mut self) -> Result<()> {
        self.channel = self
            .connection
            .create_channel()
            .await
            .map_err(Error::broker("cannot open a channel"))?;
        Ok(())
    }

    /// Opens a second channel on this connection, in confirm mode: a consumer publishes on it
    /// (a task sent back for another try, or parked) without disturbing its deliveries.
    pub async fn open_confirm_channel(&self) -> Result<Channel> {
        let channel = self
            .connection
            .create_channel()
            .await
            .map_err(Error::broker("cannot open a channel"))?;
        enable_confirms(&channel).await?;
        Ok(channel)
    }

    /// The connection's events (blocked by the broker, unblocked...), from now on.
    pub fn events(&self) -> impl futures_lite::Stream<Item = lapin::Event> + use<'_> {
        self.connection.events_listener()
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

/// An explicit `--queue-type` must be the existing queue's own. The broker's refusal named
/// another difference first (it names one), so the management API is asked for the type; when
/// it cannot tell, the queue is not used: it may be of another type.
async fn check_queue_type(
    ctx: &Context,
    queue: &str,
    wanted: topology::QueueType,
    reason: &str,
) -> Result<()> {
    // The engine prints nothing: the API client gets a silent reporter.
    let silent = Context {
        status: crate::context::Status::silent(),
        ..ctx.clone()
    };
    let actual = async {
        let api = crate::management::Api::new(&silent).await?;
        let facts = api.queue_facts(ctx.url().vhost(), queue).await?;
        Ok::<_, Error>(facts.queue_type)
    }
    .await;
    let difference = match actual {
        Ok(actual) if actual == wanted.as_str() => return Ok(()),
        Ok(actual) => format!(
            "'x-queue-type' is {actual} on the broker, rmqlab declares {}",
            wanted.as_str()
        ),
        Err(error) => format!(
            "{}, and the management API could not tell its type ({error})",
            crate::error::describe_mismatch(reason)
        ),
    };
    let refusal = lapin::protocol::AMQPError::from_id(406, reason.into())
        .map(|amqp| lapin::Error::from(lapin::ErrorKind::ProtocolError(amqp)))
        .unwrap_or_else(|| {
            lapin::Error::from(lapin::ErrorKind::InvalidChannelState(
                lapin::ChannelState::Closed,
                "declare",
            ))
        });
    Err(Error::Mismatch {
        kind: crate::error::ObjectKind::Queue,
        name: queue.to_string(),
        difference,
        source: Box::new(refusal),
    })
}

/// Puts a channel in confirm mode: the broker then confirms every publish.
async fn enable_confirms(channel: &Channel) -> Result<()> {
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(Error::broker("cannot enable publisher confirms"))
}

/// Connects in plain TCP, or (amqps://) through rmqlab's own TLS configuration.
async fn connect(
    ctx: &Context,
    url: &BrokerUrl,
    properties: ConnectionProperties,
    observer: &dyn Observer,
    tcp_connected: Arc<AtomicBool>,
) -> Result<Connection> {
    let mut uri = url.amqp_uri().clone();
    // lapin sizes its two frame buffers (32 frames each) for the frame size it asks for, and
    // zero-fills them again when the broker's Tune grows that size: 8 MiB written at start-up,
    // 4 ms of a 10 ms `hello send`. Asking for the broker's default frame size up front gets
    // buffers the kernel zeroes lazily. The URL's own `?frame_max=` still wins.
    uri.query.frame_max.get_or_insert(DEFAULT_FRAME_MAX);
    let tls = match url.is_tls() {
        true => {
            if ctx.tls.insecure {
                observer.observe(Event::TlsUnverified);
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
                    Ok(stream) => {
                        tcp_connected.store(true, Ordering::SeqCst);
                        match &tls {
                            Some(connector) => {
                                return Ok(stream.into_rustls(connector, &host).await?);
                            }
                            None => return Ok(stream),
                        }
                    }
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
    .map_err(|source| connect_error(source, url))
}

/// A plain connection the server took but did not answer as an AMQP broker does.
pub fn not_amqp(url: &BrokerUrl, timed_out: bool) -> Error {
    Error::NotAmqp {
        url: url.to_string(),
        port: url.amqp_uri().authority.port,
        timed_out,
    }
}

/// Classifies a failed connection attempt (also a refusal the one-message path received).
pub fn connect_error(source: lapin::Error, url: &BrokerUrl) -> Error {
    let kind = amqp_error(&source).map(|amqp| {
        (
            amqp.kind().clone(),
            amqp.get_message().as_str().contains("vhost"),
        )
    });
    // "NOT_ALLOWED - vhost nosuch not found" (no such vhost) vs. "access to vhost 'v' refused
    // for user 'u'" (no permission).
    let vhost_missing = amqp_error(&source).is_some_and(|amqp| {
        let text = amqp.get_message().as_str();
        text.contains("vhost") && text.ends_with("not found")
    });
    let source = Box::new(source);
    let url_shown = url.to_string();
    match kind {
        Some((AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED), true)) if vhost_missing => {
            Error::VhostNotFound {
                url: url_shown,
                vhost: url.vhost().to_string(),
                source,
            }
        }
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
        // A plain AMQP listener answers a TLS ClientHello with its protocol header: rustls reads
        // it as a corrupt record.
        None if url.is_tls() && is_plain_answer(&source) => Error::NotTls {
            url: url_shown,
            port: url.amqp_uri().authority.port,
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

/// The TLS layer received something that is not TLS.
fn is_plain_answer(source: &lapin::Error) -> bool {
    let text = source.to_string();
    text.contains("InvalidContentType") || text.contains("corrupt message")
}

fn is_reset(source: &lapin::Error) -> bool {
    matches!(source.kind(), lapin::ErrorKind::IOError(e)
        if e.kind() == std::io::ErrorKind::ConnectionReset)
}
