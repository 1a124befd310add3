//! Dispatch from the parsed command to one module per tutorial step, and the publish and
//! consume flows those steps share.

pub mod hello;
pub mod pubsub;
pub mod queues;
pub mod task;

use crate::{
    Exit,
    amqp::{Context, Publication, Session, Unroutable},
    cli::{Command, ConsumeArgs, GlobalArgs, MessageArgs, QueueType},
    consume::{Consumer, Ending, Handling, Limits},
    context,
    error::{Error, Result},
    generate,
    input::Messages,
    signals::Interrupts,
    terminal::AroundProgress,
};
use std::io::{self, BufWriter, Write};

const STDOUT_BUFFER: usize = 64 * 1024;

pub async fn run(global: &GlobalArgs, command: Command) -> Result<Exit> {
    match command {
        Command::Hello(command) => hello::run(&context(global)?, command).await,
        Command::Task(command) => task::run(&context(global)?, command).await,
        Command::Pubsub(command) => pubsub::run(&context(global)?, command).await,
        Command::Queues(command) => queues::run(&context(global)?, command).await,
        Command::Completions { shell } => {
            let mut out = io::stdout().lock();
            out.write_all(&generate::completion(shell))
                .and_then(|()| out.flush())
                .map_err(Error::Output)?;
            Ok(Exit::Success)
        }
    }
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
}

/// What a publishing command sends and how.
pub struct Send<'a> {
    pub connection_name: &'a str,
    pub destination: Destination<'a>,
    pub persistent: bool,
    pub default_message: &'a str,
}

/// Declares the destination, then publishes the command's message(s) to it, printing
/// ` [x] Sent` for each one the broker confirmed.
pub async fn send(ctx: &Context, send: Send<'_>, message: &MessageArgs) -> Result<Exit> {
    // Open the input before connecting: a missing file is reported without touching the broker.
    let mut messages = messages(message, send.default_message)?;
    let session = Session::open(ctx, send.connection_name).await?;
    send.destination.declare(ctx, &session).await?;
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
    let progress = ctx.status.progress.publishing(messages.size);
    let mut out = BufWriter::with_capacity(
        STDOUT_BUFFER,
        AroundProgress {
            bar: progress.clone(),
            inner: io::stdout(),
        },
    );
    let published = session
        .publish(&target, &mut messages, &mut out, ctx.status, &progress)
        .await?;
    ctx.status
        .debug(format_args!("{} message(s) confirmed", published.confirmed));
    session.close().await;
    Ok(Exit::Success)
}

/// The messages a publishing command sends: one per line of `--file`, else the words joined
/// with spaces, else the tutorial's default.
fn messages(args: &MessageArgs, default: &str) -> Result<Messages> {
    match &args.file {
        Some(path) => Messages::lines_of(path),
        None if args.words.is_empty() => Ok(Messages::single(default.as_bytes().to_vec())),
        None => Ok(Messages::single(args.words.join(" ").into_bytes())),
    }
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

/// Declares the source and consumes from it until `--count`, `--idle-timeout` or Ctrl-C.
pub async fn receive(ctx: &Context, receive: Receive<'_>, consume: &ConsumeArgs) -> Result<Exit> {
    // Catch Ctrl-C from the start: an interrupt while connecting is a clean stop as well.
    let interrupts = Interrupts::install().map_err(Error::Runtime)?;
    let session = Session::open(ctx, receive.connection_name).await?;
    receive.source.declare(ctx, &session).await?;
    let queue = match receive.source {
        Destination::Queue { name, .. } => name.to_string(),
        Destination::Fanout { exchange } => {
            let queue = session.declare_exclusive_queue_on(exchange).await?;
            ctx.status.debug(format_args!(
                "consuming through exclusive queue '{queue}' bound to '{exchange}'"
            ));
            queue
        }
    };
    let consumer = Consumer {
        session: &session,
        queue: &queue,
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
    };
    let ending = consumer.run().await?;
    session.close().await;
    Ok(match ending {
        Ending::Finished => Exit::Success,
        Ending::Interrupted => Exit::Interrupted,
    })
}
