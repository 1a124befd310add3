//! Dispatch from the parsed command to one module per tutorial step, and the publish and
//! consume flows those steps share.

pub mod hello;
pub mod pubsub;
pub mod queues;
pub mod task;

use crate::{
    Exit,
    amqp::{ConfirmWindow, Context, Publication, Session, Unroutable, queue_arguments},
    cli::{Command, ConsumeArgs, GlobalArgs, MessageArgs, QueueType},
    consume::{Consumer, Ending, Handling, Limits},
    context,
    error::{Error, Result},
    generate,
    input::Messages,
    oneshot::{self, Declaration, Handover},
    output::write_sent,
    signals::Interrupts,
    terminal::AroundProgress,
};
use std::{
    io::{self, BufWriter, Write},
    time::Duration,
};
use tokio::time::Instant;

const STDOUT_BUFFER: usize = 64 * 1024;

pub async fn run(global: &GlobalArgs, command: Command) -> Result<Exit> {
    match command {
        Command::Hello(command) => hello::run(&context(global)?, command).await,
        Command::Task(command) => task::run(&context(global)?, command).await,
        Command::Pubsub(command) => pubsub::run(&context(global)?, command).await,
        Command::Queues(command) => queues::run(&context(global)?, command).await,
        Command::Completions { shell } => {
            print(&generate::completion(shell))?;
            Ok(Exit::Success)
        }
    }
}

/// Writes a whole piece of output to stdout at once, and flushes it.
pub fn print(bytes: &[u8]) -> Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(Error::Output)
}

/// Where messages go, declared before the first publish or consume.
#[derive(Debug, Clone, Copy)]
pub enum Destination<'a> {
    /// A durable queue, reached through the default exchange (tutorials 1 and 2).
    Queue {
        name: &'a str,
        queue_type: QueueType,
    },
    /// A fanout exchange (tutorial 3).
    Fanout { exchange: &'a str },
}

impl Destination<'_> {
    async fn declare(&self, ctx: &Context, session: &Session) -> Result<()> {
        match *self {
            Destination::Queue { name, queue_type } => {
                session.declare_queue(name, queue_type).await?;
                ctx.status
                    .debug(format_args!("declared durable queue '{name}'"));
            }
            Destination::Fanout { exchange } => {
                session.declare_fanout(exchange).await?;
                ctx.status
                    .debug(format_args!("declared fanout exchange '{exchange}'"));
            }
        }
        Ok(())
    }

    /// Connects and declares what this destination needs; a publisher's channel is also put
    /// in confirm mode.
    async fn open(&self, ctx: &Context, connection_name: &str, role: Role) -> Result<Session> {
        let session = Session::open(ctx, connection_name).await?;
        match role {
            Role::Publisher => {
                // Both requests leave at once and the broker answers them in order: one round
                // trip instead of two (a failed declaration closes the channel, and is the
                // error reported).
                let (declared, confirms) =
                    tokio::join!(self.declare(ctx, &session), session.enable_confirms());
                declared?;
                confirms?;
            }
            Role::Consumer => self.declare(ctx, &session).await?,
        }
        Ok(session)
    }

    /// After a lost connection: connects again, with backoff, for up to `--reconnect-timeout`,
    /// one status line per attempt. `None` when an interrupt came first.
    async fn reopen(
        &self,
        ctx: &Context,
        connection_name: &str,
        role: Role,
        lost: Error,
        mut interrupts: Option<&mut Interrupts>,
    ) -> Result<Option<Session>> {
        if ctx.reconnect_timeout.is_zero() {
            return Err(lost);
        }
        let deadline = Instant::now() + ctx.reconnect_timeout;
        let mut delay = Duration::from_millis(100);
        let mut last = lost;
        for attempt in 1.. {
            ctx.status.warn(format_args!(
                " [!] {}; reconnecting to {} (attempt {attempt})",
                last.one_line(),
                ctx.url
            ));
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt_ctx = Context {
                connect_timeout: ctx.connect_timeout.min(remaining),
                ..ctx.clone()
            };
            let interrupted = async {
                match interrupts.as_deref_mut() {
                    Some(interrupts) => interrupts.wait_for(1).await,
                    None => std::future::pending().await,
                }
            };
            let opened = tokio::select! {
                opened = self.open(&attempt_ctx, connection_name, role) => opened,
                () = interrupted => return Ok(None),
            };
            match opened {
                Ok(session) => {
                    ctx.status.info(" [*] Reconnected");
                    return Ok(Some(session));
                }
                Err(error) if error.is_transient() && Instant::now() < deadline => {
                    last = error;
                    // The last attempt comes at the deadline itself.
                    tokio::time::sleep_until(deadline.min(Instant::now() + delay)).await;
                    delay = (delay * 2).min(MAX_RECONNECT_DELAY);
                }
                Err(error) if error.is_transient() => {
                    return Err(Error::ReconnectFailed {
                        after: ctx.reconnect_timeout,
                        source: Box::new(error),
                    });
                }
                Err(error) => return Err(error),
            }
        }
        unreachable!("the attempts go on until one returns")
    }
}

/// What a session is opened for.
#[derive(Debug, Clone, Copy)]
enum Role {
    /// Publishes with confirms.
    Publisher,
    Consumer,
}

/// The longest wait between two reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// What a publishing command sends and how.
pub struct Send<'a> {
    pub connection_name: &'a str,
    pub destination: Destination<'a>,
    pub persistent: bool,
    pub default_message: &'a str,
}

/// Declares the destination, then publishes the command's message(s) to it, printing
/// ` [x] Sent` for each one the broker confirmed. A lost connection is reopened and every
/// message not yet confirmed is sent again (at-least-once: some may arrive twice).
pub async fn send(ctx: &Context, send: Send<'_>, message: &MessageArgs) -> Result<Exit> {
    let target = match send.destination {
        Destination::Queue { name, .. } => Publication {
            exchange: "",
            routing_key: name,
            persistent: send.persistent,
            unroutable: Unroutable::Fails,
        },
        Destination::Fanout { exchange } => Publication {
            exchange,
            routing_key: "",
            persistent: send.persistent,
            unroutable: Unroutable::IsDropped,
        },
    };
    // The first session to publish on, or the loss of the quick way's connection.
    let mut connection = None;
    // Messages the quick way sent on a connection lost before their confirm.
    let mut sent_before = 0;
    let mut messages = match &message.file {
        // Open the input before connecting: a missing file is reported without touching the
        // broker.
        Some(path) => Messages::lines_of(path)?,
        None => {
            let body = single_message(message, send.default_message);
            // One message over plain TCP: first the quick way, which hands anything but
            // success over.
            if !ctx.url.is_tls() {
                match quick_send(ctx, &send, &target, &body).await {
                    Ok(()) => {
                        let mut out = Vec::new();
                        write_sent(&mut out, &body).map_err(Error::Output)?;
                        print(&out)?;
                        ctx.status.debug("1 message(s) confirmed");
                        return Ok(Exit::Success);
                    }
                    Err(Handover::Untouched(reason)) => ctx
                        .status
                        .debug(format_args!("sending through lapin instead: {reason}")),
                    Err(Handover::Lost(lost)) => {
                        sent_before = 1;
                        connection = Some(Err(lost));
                    }
                    Err(Handover::Failed(error)) => return Err(error),
                }
            }
            Messages::single(body)
        }
    };
    let progress = ctx.status.progress.publishing(messages.size);
    let mut out = BufWriter::with_capacity(
        STDOUT_BUFFER,
        AroundProgress {
            bar: progress.clone(),
            inner: io::stdout(),
        },
    );
    let mut window = ConfirmWindow::new(&target, &mut out, ctx.status, &progress);
    let session = loop {
        // A session to publish on, or the loss of the last one.
        let opened = match connection.take() {
            Some(opened) => opened,
            None => Ok(send
                .destination
                .open(ctx, send.connection_name, Role::Publisher)
                .await?),
        };
        let lost = match opened {
            Ok(session) => match session.publish(&mut messages, &mut window).await {
                Ok(()) => break session,
                Err(lost) if lost.is_connection_loss() => lost,
                Err(error) => return Err(error),
            },
            Err(lost) => lost,
        };
        let reopened = send
            .destination
            .reopen(ctx, send.connection_name, Role::Publisher, lost, None)
            .await
            .map_err(|source| Error::PublishInterrupted {
                confirmed: window.published.confirmed,
                input: message
                    .file
                    .as_ref()
                    .filter(|path| path.as_os_str() != "-")
                    .map(|path| path.display().to_string()),
                source: Box::new(source),
            })?;
        connection = Some(Ok(reopened.expect("publishers are not interruptible")));
        // The quick way's message, if it was lost with its connection, is in the input still.
        let quick = std::mem::take(&mut sent_before);
        window.published.republished += quick;
        let resent = window.forget_sent() as u64 + quick;
        ctx.status.info(format_args!(
            " [*] Sending again the {resent} message(s) not confirmed before"
        ));
    };
    let published = window.finish();
    if published.republished > 0 {
        ctx.status.warn(format_args!(
            " [!] {} message(s) were sent again after a lost connection: some may have arrived twice",
            published.republished
        ));
    }
    ctx.status
        .debug(format_args!("{} message(s) confirmed", published.confirmed));
    session.close().await;
    Ok(Exit::Success)
}

/// The one message of a command without `--file`: the words joined with spaces, else the
/// tutorial's default.
fn single_message(args: &MessageArgs, default: &str) -> Vec<u8> {
    match args.words.is_empty() {
        true => default.as_bytes().to_vec(),
        false => args.words.join(" ").into_bytes(),
    }
}

/// Publishes one message through [`oneshot`], declaring what the lapin path would.
async fn quick_send(
    ctx: &Context,
    send: &Send<'_>,
    target: &Publication<'_>,
    body: &[u8],
) -> std::result::Result<(), Handover> {
    let declaration = match send.destination {
        Destination::Queue { name, queue_type } => Declaration::Queue {
            name,
            arguments: queue_arguments(queue_type),
        },
        Destination::Fanout { exchange } => Declaration::Fanout { exchange },
    };
    ctx.status.debug(format_args!(
        "connecting to {} as '{}' (one message, pipelined)",
        ctx.url, send.connection_name
    ));
    oneshot::publish(ctx, send.connection_name, &declaration, target, body).await
}

/// Deliveries a printing consumer may hold before acking; `--count` lowers it so that nothing
/// beyond the count is ever taken from the queue.
const PRINT_PREFETCH: u16 = 500;

/// The prefetch of a consumer that prints what it receives.
pub fn print_prefetch(consume: &ConsumeArgs) -> u16 {
    consume.count.map_or(PRINT_PREFETCH, |count| {
        count.min(PRINT_PREFETCH.into()) as u16
    })
}

/// What a consuming command receives from and does with each message.
pub struct Receive<'a> {
    pub connection_name: &'a str,
    /// A queue consumes from itself; an exchange through an exclusive queue bound to it.
    pub source: Destination<'a>,
    pub prefetch: u16,
    pub handling: Handling,
}

/// Declares the source and consumes from it until `--count`, `--idle-timeout` or Ctrl-C,
/// reconnecting after a lost connection.
pub async fn receive(ctx: &Context, receive: Receive<'_>, consume: &ConsumeArgs) -> Result<Exit> {
    // Catch Ctrl-C from the start: an interrupt while connecting is a clean stop as well.
    let interrupts = Interrupts::install().map_err(Error::Runtime)?;
    let mut session = receive
        .source
        .open(ctx, receive.connection_name, Role::Consumer)
        .await?;
    let mut consumer = Consumer {
        prefetch: receive.prefetch,
        limits: Limits {
            count: consume.count,
            idle_timeout: consume.idle_timeout,
        },
        format: consume.output,
        handling: receive.handling,
        status: ctx.status,
        interrupts,
        out: BufWriter::with_capacity(STDOUT_BUFFER, io::stdout()),
        done: 0,
    };
    loop {
        let queue = consumed_queue(ctx, &session, receive.source).await?;
        match consumer.run(&session, &queue).await {
            Ok(ending) => {
                session.close().await;
                return Ok(match ending {
                    Ending::Finished => Exit::Success,
                    Ending::Interrupted => Exit::Interrupted,
                });
            }
            Err(lost) if lost.is_connection_loss() => {
                let reopened = receive
                    .source
                    .reopen(
                        ctx,
                        receive.connection_name,
                        Role::Consumer,
                        lost,
                        Some(&mut consumer.interrupts),
                    )
                    .await?;
                let Some(reopened) = reopened else {
                    return Ok(Exit::Interrupted);
                };
                session = reopened;
                if let Destination::Fanout { exchange } = receive.source {
                    ctx.status.warn(format_args!(
                        " [!] Listening to '{exchange}' again through a new queue: messages \
                         emitted while disconnected were not kept"
                    ));
                }
            }
            Err(error) => return Err(error),
        }
    }
}

/// The queue to consume from: the destination queue, or a new exclusive queue bound to the
/// destination exchange.
async fn consumed_queue(
    ctx: &Context,
    session: &Session,
    source: Destination<'_>,
) -> Result<String> {
    match source {
        Destination::Queue { name, .. } => Ok(name.to_string()),
        Destination::Fanout { exchange } => {
            let queue = session.declare_exclusive_queue_on(exchange).await?;
            ctx.status.debug(format_args!(
                "consuming through exclusive queue '{queue}' bound to '{exchange}'"
            ));
            Ok(queue)
        }
    }
}
