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
//! Only the way where everything succeeds ends here. Anything else hands over to the lapin path
//! ([`Handover`]), which reports it with the usual diagnostics, having been sent nothing that
//! could have been delivered, or carries on from a lost connection as after any other.

use crate::{
    amqp::{Context, DEFAULT_FRAME_MAX, Publication},
    error::Error,
};
use amq_protocol::{
    frame::{AMQPContentHeader, AMQPFrame, ProtocolVersion, WriteContext, gen_frame, parse_frame},
    protocol::{AMQPClass, basic, channel, confirm, connection, exchange, queue},
    types::{AMQPValue, FieldTable},
    uri::SASLMechanism,
};
use std::time::Duration;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

/// What to declare before publishing, as the lapin path does.
pub enum Declaration<'a> {
    Queue {
        name: &'a str,
        arguments: FieldTable,
    },
    Fanout {
        exchange: &'a str,
    },
}

/// Why the message was not (known to be) confirmed here.
#[derive(Debug)]
pub enum Handover {
    /// Nothing the broker could have delivered was sent; the reason is for `--verbose`.
    Untouched(String),
    /// The connection ended after the message left: it may have arrived.
    Lost(Error),
    /// A failure to report as it is (the lapin path would only meet it again).
    Failed(Error),
}

type Step<T> = std::result::Result<T, Handover>;

/// The frame header: type, channel, payload size.
const FRAME_HEADER: usize = 7;
/// The frame-end octet after each payload.
const FRAME_END: usize = 1;

/// The channel the message goes out on.
const CHANNEL: u16 = 1;

/// Connects, declares and publishes `body`, and returns once the broker confirmed it and the
/// connection is closed.
pub async fn publish(
    ctx: &Context,
    connection_name: &str,
    declaration: &Declaration<'_>,
    target: &Publication<'_>,
    body: &[u8],
) -> Step<()> {
    let uri = ctx.url.amqp_uri();
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
    let handshake = async {
        let stream = TcpStream::connect((uri.authority.host.as_str(), uri.authority.port))
            .await
            .map_err(|error| Handover::Untouched(format!("cannot connect: {error}")))?;
        stream
            .set_nodelay(true)
            .map_err(|error| Handover::Untouched(format!("cannot set TCP_NODELAY: {error}")))?;
        let mut wire = Wire::new(stream);
        wire.send(&[AMQPFrame::ProtocolHeader(ProtocolVersion::amqp_0_9_1())])
            .await?;
        match wire.method().await? {
            (0, AMQPClass::Connection(connection::AMQPMethod::Start(start)))
                if start
                    .mechanisms
                    .to_string()
                    .split(' ')
                    .any(|m| m == "PLAIN") => {}
            other => return Err(unexpected("connection.start with PLAIN", &other)),
        }
        let start_ok = connection::StartOk {
            client_properties: client_properties(connection_name),
            mechanism: "PLAIN".into(),
            response: format!("\0{}\0{}", ctx.url.user(), ctx.url.password()).into(),
            locale: "en_US".into(),
        };
        wire.send(&[method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(start_ok)),
        )])
        .await?;
        match wire.method().await? {
            (0, AMQPClass::Connection(connection::AMQPMethod::Tune(tune))) => Ok((wire, tune)),
            other => Err(unexpected("connection.tune", &other)),
        }
    };
    let (mut wire, tune) =
        timeout(ctx.connect_timeout, handshake)
            .await
            .map_err(|_elapsed| {
                Handover::Failed(Error::ConnectTimeout {
                    url: ctx.url.to_string(),
                    after: ctx.connect_timeout,
                })
            })??;

    let ours = uri.query.frame_max.unwrap_or(DEFAULT_FRAME_MAX);
    let frame_max = match tune.frame_max {
        0 => ours,
        theirs => theirs.min(ours),
    };
    // The broker's heartbeat, unless the URL asks for another; sent while awaiting the confirm.
    let heartbeat = uri.query.heartbeat.unwrap_or(tune.heartbeat);
    let properties = target.properties();
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
                virtual_host: ctx.url.vhost().into(),
            })),
        ),
        method(
            CHANNEL,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        ),
        declare(declaration),
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
                routing_key: target.routing_key.into(),
                mandatory: true,
                immediate: false,
            })),
        ),
        AMQPFrame::Header(
            CHANNEL,
            AMQPContentHeader {
                class_id: 60,
                body_size: body.len() as u64,
                properties,
            },
        ),
    ];
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
    let outcome = wire.await_confirm(silence).await;
    if !matches!(outcome, Err(Handover::Lost(_))) {
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

fn unexpected(expected: &str, got: &(u16, AMQPClass)) -> Handover {
    let (channel, class) = got;
    Handover::Untouched(match class {
        AMQPClass::Connection(connection::AMQPMethod::Close(close)) => closed_connection(close),
        other => format!("expected {expected}, got {other:?} on channel {channel}"),
    })
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

fn declare(declaration: &Declaration<'_>) -> AMQPFrame {
    method(
        CHANNEL,
        match declaration {
            Declaration::Queue { name, arguments } => {
                AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                    queue: (*name).into(),
                    passive: false,
                    durable: true,
                    exclusive: false,
                    auto_delete: false,
                    nowait: false,
                    arguments: arguments.clone(),
                }))
            }
            Declaration::Fanout { exchange } => {
                AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                    exchange: (*exchange).into(),
                    kind: "fanout".into(),
                    passive: false,
                    durable: false,
                    auto_delete: false,
                    internal: false,
                    nowait: false,
                    arguments: FieldTable::default(),
                }))
            }
        },
    )
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

/// Frames over one TCP stream, read and written on this thread.
struct Wire {
    stream: TcpStream,
    /// Bytes read and not yet parsed.
    input: Vec<u8>,
    /// Heartbeat intervals passed without a frame from the broker.
    idle: u32,
}

impl Wire {
    fn new(stream: TcpStream) -> Wire {
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
    async fn await_confirm(&mut self, silence: Option<Duration>) -> Step<()> {
        let mut opened = false;
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
                    let reason = closed_connection(&close);
                    // A refused connection.open (vhost, permissions) precedes everything else.
                    return Err(match opened {
                        false => Handover::Untouched(reason),
                        true => lost(&reason),
                    });
                }
                // Resource alarms and their end: the confirm comes once the broker goes on.
                AMQPFrame::Method(0, AMQPClass::Connection(_)) => {}
                AMQPFrame::Method(
                    CHANNEL,
                    AMQPClass::Channel(channel::AMQPMethod::Close(close)),
                ) => {
                    // A refused declaration: the broker dropped everything after it.
                    return Err(Handover::Untouched(format!(
                        "the broker closed the channel: {} {}",
                        close.reply_code, close.reply_text
                    )));
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
                    AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))
                    | AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))
                    | AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(_))
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
        let _ = timeout(crate::amqp::CLOSE_TIMEOUT, handshake).await;
    }
}
