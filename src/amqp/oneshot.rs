//! One message over plain TCP in one pipelined exchange, on the calling thread.
//!
//! lapin runs a connection on a thread of its own and passes every reply through the caller's
//! runtime: each round trip costs three thread wake-ups, and the handshake, the channel, the
//! declaration, confirm mode and the publish each wait for the one before. A one-message
//! process (`hello send` in a shell loop) is nothing but those round trips. Here, after the two
//! handshake round trips that cannot be avoided, TuneOk, connection.open, channel.open, the
//! declaration, confirm.select and the message leave in one write; the broker answers them in
//! order up to the confirm; one more round trip closes. The broker processes a channel's frames
//! in order, and drops whatever follows a refused declaration on that channel.
//!
//! The way where everything succeeds ends here, and so do definite refusals (login, vhost, a
//! declaration the topology's rule does not adopt), reported from what the broker answered.
//! Anything else hands over to the lapin path ([`Handover`]) — an existing queue to adopt, an
//! unexpected answer — having sent nothing that could have been delivered, or carries on from a
//! lost connection as after any other.

use super::{
    CLOSE_TIMEOUT, DEFAULT_FRAME_MAX, connect_error,
    events::{Event, Observer},
    publish::Publication,
    topology::{Refusal, Topology},
};
use crate::{context::Context, error::Error, uri::BrokerUrl};
use amq_protocol::{
    frame::{AMQPContentHeader, AMQPFrame, ProtocolVersion, WriteContext, gen_frame, parse_frame},
    protocol::{AMQPClass, AMQPError, basic, channel, confirm, connection, exchange, queue},
    types::{AMQPValue, FieldTable},
    uri::SASLMechanism,
};
use std::time::Duration;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

/// Why the message was not (known to be) confirmed here.
#[derive(Debug)]
pub enum Handover {
    /// Nothing the broker could have delivered was sent; the reason is for `--verbose`.
    Untouched(String),
    /// The connection ended after the message left: it may have arrived.
    Lost(Error),
    /// A failure to report as it is (the lapin path would only meet it again).
    Failed(Error),
    /// Of several URLs, `url` failed (nothing was sent): the lapin path tries the others.
    Skipped { url: BrokerUrl, error: Error },
}

type Step<T> = std::result::Result<T, Handover>;

/// The frame header: type, channel, payload size.
const FRAME_HEADER: usize = 7;
/// The frame-end octet after each payload.
const FRAME_END: usize = 1;

/// The channel the message goes out on.
const CHANNEL: u16 = 1;

/// Connects, declares and publishes `message`, and returns once the broker confirmed it and the
/// connection is closed. No confirm within `confirm_timeout` fails ([`Error::ConfirmTimeout`]).
pub async fn publish(
    ctx: &Context,
    observer: &dyn Observer,
    connection_name: &str,
    topology: &Topology,
    target: &Publication<'_>,
    message: &crate::message::Message,
    confirm_timeout: Option<Duration>,
) -> Step<()> {
    let uri = ctx.url().amqp_uri();
    if uri
        .query
        .auth_mechanism
        .as_ref()
        .is_some_and(|mechanism| *mechanism != SASLMechanism::Plain)
    {
        return Err(Handover::Untouched(
            "an authentication other than PLAIN".into(),
        ));
    }
    let Some(declarations) = topology.methods() else {
        return Err(Handover::Untouched("a queue named by the broker".into()));
    };
    observer.observe(Event::Connecting {
        url: ctx.url(),
        name: connection_name,
        how: " (one message, pipelined)",
    });
    let tcp_connected = std::cell::Cell::new(false);
    let connected = async {
        let stream = TcpStream::connect((uri.authority.host.as_str(), uri.authority.port))
            .await
            .map_err(|error| match ctx.urls.count() {
                1 => Handover::Untouched(format!("cannot connect: {error}")),
                _ => to_others(ctx, connect_error(error.into(), ctx.url())),
            })?;
        tcp_connected.set(true);
        stream
            .set_nodelay(true)
            .map_err(|error| Handover::Untouched(format!("cannot set TCP_NODELAY: {error}")))?;
        handshake(Wire::new(stream), ctx, connection_name).await
    };
    // Nothing is sent yet: Ctrl-C stops at once, not after --connect-timeout.
    let connected = crate::signals::unless_interrupted(timeout(ctx.connect_timeout, connected))
        .await
        .map_err(|stop| Handover::Failed(Error::Interrupted(stop)))?;
    let (wire, tune) = connected.map_err(|_elapsed| {
        to_others(
            ctx,
            match tcp_connected.get() {
                // Taken, and no AMQP answer at all: a TLS listener waits for a ClientHello.
                true => super::not_amqp(ctx.url(), true),
                false => Error::ConnectTimeout {
                    url: ctx.url().to_string(),
                    after: ctx.connect_timeout,
                },
            },
        )
    })??;
    let message = OneMessage {
        target,
        message,
        confirm_timeout,
    };
    send_and_confirm(wire, tune, ctx, observer, topology, declarations, &message).await
}

/// The message of [`publish`], and how long its confirm may take.
struct OneMessage<'a> {
    target: &'a Publication<'a>,
    message: &'a crate::message::Message,
    confirm_timeout: Option<Duration>,
}

/// The protocol header, connection.start/start-ok, up to the broker's tune.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    mut wire: Wire<S>,
    ctx: &Context,
    connection_name: &str,
) -> Step<(Wire<S>, connection::Tune)> {
    wire.send(&[AMQPFrame::ProtocolHeader(ProtocolVersion::amqp_0_9_1())])
        .await?;
    match wire.method().await? {
        (0, AMQPClass::Connection(connection::AMQPMethod::Start(start)))
            if start
                .mechanisms
                .to_string()
                .split(' ')
                .any(|m| m == "PLAIN") => {}
        other => return Err(unexpected(ctx, "connection.start with PLAIN", &other)),
    }
    let start_ok = connection::StartOk {
        client_properties: client_properties(connection_name),
        mechanism: "PLAIN".into(),
        response: format!("\0{}\0{}", ctx.url().user(), ctx.url().password()).into(),
        locale: "en_US".into(),
    };
    wire.send(&[method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(start_ok)),
    )])
    .await?;
    match wire.method().await? {
        (0, AMQPClass::Connection(connection::AMQPMethod::Tune(tune))) => Ok((wire, tune)),
        other => Err(unexpected(ctx, "connection.tune", &other)),
    }
}

/// Everything after the tune in one write, then the answers up to the confirm, then the close.
async fn send_and_confirm<S: AsyncRead + AsyncWrite + Unpin>(
    mut wire: Wire<S>,
    tune: connection::Tune,
    ctx: &Context,
    observer: &dyn Observer,
    topology: &Topology,
    declarations: Vec<AMQPClass>,
    message: &OneMessage<'_>,
) -> Step<()> {
    let (target, body) = (message.target, message.message.body.as_slice());
    let uri = ctx.url().amqp_uri();
    let ours = uri.query.frame_max.unwrap_or(DEFAULT_FRAME_MAX);
    let frame_max = match tune.frame_max {
        0 => ours,
        theirs => theirs.min(ours),
    };
    // The broker's heartbeat, unless the URL asks for another; sent while awaiting the confirm.
    let heartbeat = uri.query.heartbeat.unwrap_or(tune.heartbeat);
    let mut frames = vec![
        method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: tune.channel_max,
                frame_max,
                heartbeat,
            })),
        ),
        method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: ctx.url().vhost().into(),
            })),
        ),
        method(
            CHANNEL,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        ),
    ];
    frames.extend(declarations.into_iter().map(|class| method(CHANNEL, class)));
    frames.extend([
        method(
            CHANNEL,
            AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
                nowait: false,
            })),
        ),
        method(
            CHANNEL,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: target.exchange.into(),
                routing_key: target.routing_key_of(message.message).as_ref().into(),
                mandatory: true,
                immediate: false,
            })),
        ),
        AMQPFrame::Header(
            CHANNEL,
            AMQPContentHeader {
                class_id: 60,
                body_size: body.len() as u64,
                properties: target.properties_of(message.message),
            },
        ),
    ]);
    let chunk = (frame_max as usize)
        .saturating_sub(FRAME_HEADER + FRAME_END)
        .max(1);
    frames.extend(
        body.chunks(chunk)
            .map(|piece| AMQPFrame::Body(CHANNEL, piece.to_vec())),
    );
    // From here on the message may have been delivered: a lost connection is not "untouched".
    wire.send(&frames).await.map_err(to_lost)?;
    let silence = match heartbeat {
        0 => None,
        seconds => Some(Duration::from_secs(seconds.into())),
    };
    let confirmed = wire.await_confirm(silence, ctx, observer, topology);
    let outcome = match message.confirm_timeout {
        None => confirmed.await,
        Some(after) => timeout(after, confirmed)
            .await
            .unwrap_or(Err(Handover::Failed(Error::ConfirmTimeout { after }))),
    };
    // A broker that holds the message (a resource alarm) would not answer a close either.
    if !matches!(
        outcome,
        Err(Handover::Lost(_) | Handover::Failed(Error::ConfirmTimeout { .. }))
    ) {
        wire.close().await;
    }
    outcome
}

/// A failure to read or write once the message may have left.
fn to_lost(handover: Handover) -> Handover {
    match handover {
        Handover::Untouched(reason) => lost(&reason),
        other => other,
    }
}

fn lost(context: &str) -> Handover {
    Handover::Lost(Error::ConnectionLost {
        context: context.to_string(),
    })
}

/// An answer out of place in the handshake; a connection.close there is the broker refusing
/// the login.
fn unexpected(ctx: &Context, expected: &str, got: &(u16, AMQPClass)) -> Handover {
    match got {
        (0, AMQPClass::Connection(connection::AMQPMethod::Close(close))) => {
            refused_connection(ctx, close)
        }
        (channel, other) => Handover::Untouched(format!(
            "expected {expected}, got {other:?} on channel {channel}"
        )),
    }
}

/// A broker's connection.close before the connection opened: reported as lapin's would be.
fn refused_connection(ctx: &Context, close: &connection::Close) -> Handover {
    match broker_error(close.reply_code, close.reply_text.as_str()) {
        Some(source) => to_others(ctx, connect_error(source, ctx.url())),
        None => Handover::Untouched(closed_connection(close)),
    }
}

/// A failure to connect to the first URL: final when it is the only one, else the general path
/// tries the others first, this one last.
fn to_others(ctx: &Context, error: Error) -> Handover {
    match ctx.urls.count() {
        1 => Handover::Failed(error),
        _ => {
            let url = ctx.url().clone();
            ctx.urls.move_past_in_use();
            Handover::Skipped { url, error }
        }
    }
}

/// A reply code and text as the lapin error they stand for.
fn broker_error(code: u16, text: &str) -> Option<lapin::Error> {
    AMQPError::from_id(code, text.into()).map(|amqp| lapin::ErrorKind::ProtocolError(amqp).into())
}

/// The reason a broker's connection.close gives.
fn closed_connection(close: &connection::Close) -> String {
    format!(
        "the broker closed the connection: {} {}",
        close.reply_code, close.reply_text
    )
}

fn method(channel: u16, class: AMQPClass) -> AMQPFrame {
    AMQPFrame::Method(channel, class)
}

/// What lapin tells the broker about rmqlab: the same name, product and capabilities.
fn client_properties(connection_name: &str) -> FieldTable {
    let mut capabilities = FieldTable::default();
    for capability in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
    ] {
        capabilities.insert(capability.into(), AMQPValue::Boolean(true));
    }
    let mut properties = FieldTable::default();
    for (key, value) in [
        ("connection_name", connection_name),
        ("product", "rmqlab"),
        ("version", env!("CARGO_PKG_VERSION")),
        ("platform", "rust"),
    ] {
        properties.insert(key.into(), AMQPValue::LongString(value.into()));
    }
    properties.insert("capabilities".into(), AMQPValue::FieldTable(capabilities));
    properties
}

/// Frames over one stream, read and written on this thread.
struct Wire<S> {
    stream: S,
    /// Bytes read and not yet parsed.
    input: Vec<u8>,
    /// Heartbeat intervals passed without a frame from the broker.
    idle: u32,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    fn new(stream: S) -> Wire<S> {
        Wire {
            stream,
            input: Vec::with_capacity(4096),
            idle: 0,
        }
    }

    /// Writes all the frames at once. A failed write means nothing was delivered only while
    /// the message is not among them; the caller decides.
    async fn send(&mut self, frames: &[AMQPFrame]) -> Step<()> {
        let mut bytes = Vec::with_capacity(512);
        for frame in frames {
            bytes = gen_frame(frame)(WriteContext::from(bytes))
                .map_err(|error| Handover::Untouched(format!("cannot encode a frame: {error}")))?
                .write;
        }
        self.stream
            .write_all(&bytes)
            .await
            .map_err(|error| Handover::Untouched(format!("cannot write: {error}")))
    }

    /// The next frame from the broker.
    async fn frame(&mut self) -> Step<AMQPFrame> {
        loop {
            if self.input.len() >= FRAME_HEADER {
                let size = u32::from_be_bytes(self.input[3..7].try_into().expect("4 bytes"));
                let length = FRAME_HEADER + size as usize + FRAME_END;
                if self.input.len() >= length {
                    let parsed = parse_frame(&self.input[..length])
                        .map(|(_, frame)| frame)
                        .map_err(|error| {
                            Handover::Untouched(format!("cannot parse a frame: {error}"))
                        });
                    self.input.drain(..length);
                    return parsed;
                }
            }
            let read = self
                .stream
                .read_buf(&mut self.input)
                .await
                .map_err(|error| Handover::Untouched(format!("cannot read: {error}")))?;
            if read == 0 {
                return Err(Handover::Untouched(
                    "the broker closed the connection".into(),
                ));
            }
        }
    }

    /// The next method frame, skipping heartbeats.
    async fn method(&mut self) -> Step<(u16, AMQPClass)> {
        loop {
            match self.frame().await? {
                AMQPFrame::Method(channel, class) => return Ok((channel, class)),
                AMQPFrame::Heartbeat => {}
                other => {
                    return Err(Handover::Untouched(format!("unexpected frame {other:?}")));
                }
            }
        }
    }

    /// Reads the answers to the pipelined requests, up to the message's confirm.
    async fn await_confirm(
        &mut self,
        silence: Option<Duration>,
        ctx: &Context,
        observer: &dyn Observer,
        topology: &Topology,
    ) -> Step<()> {
        let mut opened = false;
        let objects = topology.objects();
        // Declarations the broker answered so far: a refusal is about the next one.
        let mut declared = 0;
        loop {
            let frame = match silence {
                None => self.frame().await,
                Some(interval) => match timeout(interval, self.frame()).await {
                    Ok(frame) => frame,
                    Err(_elapsed) => {
                        // Quiet for a heartbeat interval: show we are alive; a broker gone
                        // quiet for two is gone.
                        self.idle += 1;
                        if self.idle >= 2 {
                            return Err(lost("no heartbeat from the broker"));
                        }
                        self.send(&[AMQPFrame::Heartbeat]).await.map_err(to_lost)?;
                        continue;
                    }
                },
            }
            .map_err(to_lost)?;
            self.idle = 0;
            match frame {
                AMQPFrame::Heartbeat => {}
                AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))) => {
                    opened = true;
                }
                AMQPFrame::Method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Close(close)),
                ) => {
                    // A refused connection.open (vhost, permissions) precedes everything else.
                    return Err(match opened {
                        false => refused_connection(ctx, &close),
                        true => lost(&closed_connection(&close)),
                    });
                }
                // Resource alarms and their end: the confirm comes once the broker goes on.
                AMQPFrame::Method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Blocked(blocked)),
                ) => observer.observe(Event::Blocked {
                    reason: blocked.reason.as_str(),
                }),
                AMQPFrame::Method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Unblocked(_)),
                ) => {
                    observer.observe(Event::Unblocked);
                }
                AMQPFrame::Method(0, AMQPClass::Connection(_)) => {}
                AMQPFrame::Method(
                    CHANNEL,
                    AMQPClass::Channel(channel::AMQPMethod::Close(close)),
                ) => {
                    // The broker dropped everything after what it refused: nothing was
                    // delivered.
                    let refused = objects
                        .get(declared)
                        .zip(broker_error(close.reply_code, close.reply_text.as_str()));
                    return Err(match refused {
                        Some((object, source)) => match object.refusal(source) {
                            Refusal::Fail(error) => Handover::Failed(error),
                            Refusal::Adopt { reason, .. } => Handover::Untouched(format!(
                                "an existing object to adopt: {reason}"
                            )),
                        },
                        None => Handover::Untouched(format!(
                            "the broker closed the channel: {} {}",
                            close.reply_code, close.reply_text
                        )),
                    });
                }
                AMQPFrame::Method(CHANNEL, AMQPClass::Basic(basic::AMQPMethod::Ack(_))) => {
                    return Ok(());
                }
                AMQPFrame::Method(CHANNEL, AMQPClass::Basic(basic::AMQPMethod::Nack(_))) => {
                    return Err(Handover::Untouched("the broker refused the message".into()));
                }
                AMQPFrame::Method(CHANNEL, AMQPClass::Basic(basic::AMQPMethod::Return(_))) => {
                    return Err(Handover::Untouched("no queue took the message".into()));
                }
                AMQPFrame::Method(
                    CHANNEL,
                    AMQPClass::Queue(
                        queue::AMQPMethod::DeclareOk(_) | queue::AMQPMethod::BindOk(_),
                    )
                    | AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(_)),
                ) => declared += 1,
                AMQPFrame::Method(
                    CHANNEL,
                    AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))
                    | AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_)),
                ) => {}
                other => return Err(lost(&format!("unexpected frame {other:?}"))),
            }
        }
    }

    /// Closes the connection, waiting a little for the broker's close-ok.
    async fn close(&mut self) {
        let close = method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                reply_code: 200,
                reply_text: "OK".into(),
                class_id: 0,
                method_id: 0,
            })),
        );
        let handshake = async {
            self.send(&[close]).await?;
            // Whatever comes before (a returned message's frames, say) is passed over.
            loop {
                if let AMQPFrame::Method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)),
                ) = self.frame().await?
                {
                    return Ok::<(), Handover>(());
                }
            }
        };
        let _ = timeout(CLOSE_TIMEOUT, handshake).await;
    }
}

#[cfg(test)]
mod tests {
    //! The wire against a scripted broker over an in-memory stream.

    use super::*;
    use crate::{
        amqp::{
            publish::{RoutingKey, Unroutable},
            topology::{Exchange, ExchangeKind, ObjectKind, Queue, QueueType},
        },
        context::Status,
        tls::TlsSettings,
        uri::BrokerUrl,
    };
    use tokio::io::{AsyncReadExt, DuplexStream};

    fn context() -> Context {
        let url = BrokerUrl::parse("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        Context {
            stream_url_given: None,
            urls: crate::uri::BrokerUrls::single(url),
            reconnect_timeout: Duration::from_secs(1),
            tls: TlsSettings::default(),
            api_url: None,
            connect_timeout: Duration::from_secs(5),
            api_timeout: Duration::from_secs(5),
            status: Status::silent(),
            default_vhost: None,
        }
    }

    fn queue(explicit_type: bool) -> Topology {
        Topology::queue(Queue::Named {
            name: "hello".into(),
            queue_type: QueueType::Quorum,
            explicit_type,
        })
    }

    const TARGET: Publication<'static> = Publication {
        exchange: "",
        routing_key: RoutingKey::Fixed("hello"),
        persistent: false,
        unroutable: Unroutable::Fails,
    };

    /// What the scripted broker does once the client's pipelined frames arrived.
    enum Script {
        /// connection.close right after start-ok (a refused login).
        RefuseLogin,
        /// Answers the pipelined requests with these frames.
        Answer(Vec<AMQPFrame>),
        /// Drops the connection once the message arrived.
        Drop,
    }

    fn channel(class: AMQPClass) -> AMQPFrame {
        method(CHANNEL, class)
    }

    fn connection_close(code: u16, text: &str) -> AMQPFrame {
        method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                reply_code: code,
                reply_text: text.into(),
                class_id: 0,
                method_id: 0,
            })),
        )
    }

    fn channel_close(code: u16, text: &str) -> AMQPFrame {
        channel(AMQPClass::Channel(channel::AMQPMethod::Close(
            channel::Close {
                reply_code: code,
                reply_text: text.into(),
                class_id: 50,
                method_id: 10,
            },
        )))
    }

    fn open_ok() -> Vec<AMQPFrame> {
        vec![
            method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {})),
            ),
            channel(AMQPClass::Channel(channel::AMQPMethod::OpenOk(
                channel::OpenOk {},
            ))),
        ]
    }

    fn queue_declare_ok() -> AMQPFrame {
        channel(AMQPClass::Queue(queue::AMQPMethod::DeclareOk(
            queue::DeclareOk {
                queue: "hello".into(),
                message_count: 0,
                consumer_count: 0,
            },
        )))
    }

    /// Plays the broker's side; returns the frames the client sent after the tune.
    async fn broker(stream: DuplexStream, script: Script) -> Vec<AMQPFrame> {
        let mut wire = Wire::new(stream);
        let mut header = [0u8; 8];
        wire.stream.read_exact(&mut header).await.unwrap();
        assert_eq!(&header, b"AMQP\x00\x00\x09\x01");
        let start = connection::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: FieldTable::default(),
            mechanisms: "AMQPLAIN PLAIN".into(),
            locales: "en_US".into(),
        };
        wire.send(&[method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Start(start)),
        )])
        .await
        .unwrap();
        let Ok((0, AMQPClass::Connection(connection::AMQPMethod::StartOk(start_ok)))) =
            wire.method().await
        else {
            panic!("expected start-ok");
        };
        assert_eq!(start_ok.response.as_bytes(), b"\0guest\0guest");
        if let Script::RefuseLogin = script {
            let refusal = connection_close(403, "ACCESS_REFUSED - Login was refused");
            wire.send(&[refusal]).await.unwrap();
            return Vec::new();
        }
        let tune = connection::Tune {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 60,
        };
        wire.send(&[method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Tune(tune)),
        )])
        .await
        .unwrap();
        let mut received = Vec::new();
        while !matches!(received.last(), Some(AMQPFrame::Body(..))) {
            received.push(wire.frame().await.unwrap());
        }
        match script {
            Script::RefuseLogin => unreachable!(),
            Script::Drop => return received,
            Script::Answer(frames) => wire.send(&frames).await.unwrap(),
        }
        // The client closes: answer close-ok.
        while let Ok(frame) = wire.frame().await {
            if let AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::Close(_))) =
                frame
            {
                let close_ok = connection::AMQPMethod::CloseOk(connection::CloseOk {});
                let _ = wire
                    .send(&[method(0, AMQPClass::Connection(close_ok))])
                    .await;
                break;
            }
        }
        received
    }

    /// Publishes `body` over a scripted broker: the client's outcome and what the broker got.
    async fn publish_to(topology: Topology, script: Script) -> (Step<()>, Vec<AMQPFrame>) {
        publish_observed(topology, script, &Status::silent()).await
    }

    /// [`publish_to`], telling `observer` what happens.
    async fn publish_observed(
        topology: Topology,
        script: Script,
        observer: &dyn Observer,
    ) -> (Step<()>, Vec<AMQPFrame>) {
        let (client, server) = tokio::io::duplex(1 << 20);
        let broker = tokio::spawn(broker(server, script));
        let ctx = context();
        let outcome = async {
            let (wire, tune) = handshake(Wire::new(client), &ctx, "rmqlab test").await?;
            let declarations = topology.methods().unwrap();
            let hi = crate::message::Message::from(b"hi".to_vec());
            let message = OneMessage {
                target: &TARGET,
                message: &hi,
                confirm_timeout: None,
            };
            send_and_confirm(
                wire,
                tune,
                &ctx,
                observer,
                &topology,
                declarations,
                &message,
            )
            .await
        }
        .await;
        (outcome, broker.await.unwrap())
    }

    fn ack() -> AMQPFrame {
        channel(AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: 1,
            multiple: false,
        })))
    }

    fn select_ok() -> AMQPFrame {
        channel(AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(
            confirm::SelectOk {},
        )))
    }

    const TYPE_DIFFERS: &str = "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue \
        'hello' in vhost '/': received the value 'quorum' of type 'longstr' but current is none";

    #[tokio::test]
    async fn everything_after_the_tune_leaves_in_one_write_and_the_confirm_ends_it() {
        let mut answers = open_ok();
        answers.extend([queue_declare_ok(), select_ok(), ack()]);
        let (outcome, received) = publish_to(queue(false), Script::Answer(answers)).await;
        assert!(outcome.is_ok(), "{outcome:?}");
        let declared = received.iter().find_map(|frame| match frame {
            AMQPFrame::Method(CHANNEL, AMQPClass::Queue(queue::AMQPMethod::Declare(d))) => Some(d),
            _ => None,
        });
        let declared = declared.expect("the queue was declared");
        assert!(declared.durable && !declared.passive);
        assert_eq!(
            declared.arguments.inner().get("x-queue-type"),
            Some(&AMQPValue::LongString("quorum".into()))
        );
        assert!(matches!(received.last(), Some(AMQPFrame::Body(CHANNEL, body)) if body == b"hi"));
    }

    /// Records the resource-alarm events.
    #[derive(Default)]
    struct Alarms(std::cell::RefCell<Vec<String>>);

    impl Observer for Alarms {
        fn observe(&self, event: Event<'_>) {
            match event {
                Event::Blocked { reason } => self.0.borrow_mut().push(format!("blocked: {reason}")),
                Event::Unblocked => self.0.borrow_mut().push("unblocked".into()),
                _ => {}
            }
        }
    }

    #[tokio::test]
    async fn a_blocked_connection_is_reported_and_so_is_its_end() {
        let mut answers = open_ok();
        answers.extend([
            queue_declare_ok(),
            select_ok(),
            method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Blocked(connection::Blocked {
                    reason: "low on disk".into(),
                })),
            ),
            method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Unblocked(connection::Unblocked {})),
            ),
            ack(),
        ]);
        let alarms = Alarms::default();
        let (outcome, _) = publish_observed(queue(false), Script::Answer(answers), &alarms).await;
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_eq!(*alarms.0.borrow(), ["blocked: low on disk", "unblocked"]);
    }

    #[tokio::test]
    async fn a_refused_login_is_reported_without_a_second_try() {
        let (outcome, _) = publish_to(queue(false), Script::RefuseLogin).await;
        assert!(
            matches!(outcome, Err(Handover::Failed(Error::LoginRefused { .. }))),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn a_refused_vhost_is_reported_without_a_second_try() {
        let refusal = connection_close(530, "NOT_ALLOWED - vhost nowhere not found");
        let (outcome, _) = publish_to(queue(false), Script::Answer(vec![refusal])).await;
        assert!(
            matches!(outcome, Err(Handover::Failed(Error::VhostNotFound { .. }))),
            "{outcome:?}"
        );
        let refusal = connection_close(
            530,
            "NOT_ALLOWED - access to vhost '/' refused for user 'guest'",
        );
        let (outcome, _) = publish_to(queue(false), Script::Answer(vec![refusal])).await;
        assert!(
            matches!(outcome, Err(Handover::Failed(Error::VhostRefused { .. }))),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn an_explicit_type_the_queue_does_not_have_is_a_mismatch() {
        let mut answers = open_ok();
        answers.push(channel_close(406, TYPE_DIFFERS));
        let (outcome, _) = publish_to(queue(true), Script::Answer(answers)).await;
        match outcome {
            Err(Handover::Failed(Error::Mismatch { kind, name, .. })) => {
                assert_eq!((kind, name.as_str()), (ObjectKind::Queue, "hello"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_existing_queue_of_another_type_is_handed_over_to_be_adopted() {
        let mut answers = open_ok();
        answers.push(channel_close(406, TYPE_DIFFERS));
        let (outcome, _) = publish_to(queue(false), Script::Answer(answers)).await;
        match outcome {
            Err(Handover::Untouched(reason)) => assert!(reason.contains("adopt"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_refusal_is_matched_to_the_object_it_is_about() {
        // An exchange declared fine, then the queue after it refused.
        let topology = Topology {
            exchanges: vec![Exchange::tutorial("logs", ExchangeKind::Fanout)],
            ..queue(true)
        };
        let mut answers = open_ok();
        answers.push(channel(AMQPClass::Exchange(
            exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {}),
        )));
        answers.push(channel_close(406, TYPE_DIFFERS));
        let (outcome, _) = publish_to(topology, Script::Answer(answers)).await;
        assert!(
            matches!(
                outcome,
                Err(Handover::Failed(Error::Mismatch {
                    kind: ObjectKind::Queue,
                    ..
                }))
            ),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn a_connection_lost_after_the_message_left_is_a_loss() {
        let (outcome, _) = publish_to(queue(false), Script::Drop).await;
        assert!(matches!(outcome, Err(Handover::Lost(_))), "{outcome:?}");
    }
}
