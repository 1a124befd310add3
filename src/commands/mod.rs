//! Dispatch from the parsed command to one module per tutorial step, and the publish and
//! consume flows those steps share.

pub mod hello;
pub mod task;

use crate::{
    Exit,
    amqp::{Context, Publication, Session},
    cli::{Command, ConsumeArgs, MessageArgs, QueueType},
    consume::{Consumer, Ending, Handling, Limits},
    error::{Error, Result},
    input::Messages,
    signals::Interrupts,
};
use std::io::{self, BufWriter};

const STDOUT_BUFFER: usize = 64 * 1024;

pub async fn run(ctx: &Context, command: Command) -> Result<Exit> {
    match command {
        Command::Hello(command) => hello::run(ctx, command).await,
        Command::Task(command) => task::run(ctx, command).await,
    }
}

/// Where a publishing command sends its messages and how.
pub struct QueueSend<'a> {
    pub connection_name: &'a str,
    pub queue: &'a str,
    pub queue_type: QueueType,
    pub persistent: bool,
    pub default_message: &'a str,
}

/// Declares the queue, then publishes the command's message(s) to it through the default
/// exchange, printing ` [x] Sent` for each one the broker confirmed.
pub async fn send_to_queue(
    ctx: &Context,
    send: QueueSend<'_>,
    message: &MessageArgs,
) -> Result<Exit> {
    // Open the input before connecting: a missing file is reported without touching the broker.
    let mut messages = messages(message, send.default_message)?;
    let session = Session::open(ctx, send.connection_name).await?;
    session.declare_queue(send.queue, send.queue_type).await?;
    ctx.status
        .debug(format_args!("declared durable queue '{}'", send.queue));
    let target = Publication {
        exchange: "",
        routing_key: send.queue,
        persistent: send.persistent,
        mandatory: true,
    };
    let mut out = BufWriter::with_capacity(STDOUT_BUFFER, io::stdout());
    let sent = session.publish(&target, &mut messages, &mut out).await?;
    ctx.status
        .debug(format_args!("{sent} message(s) confirmed"));
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

/// Where a consuming command takes its messages from and what it does with them.
pub struct QueueReceive<'a> {
    pub connection_name: &'a str,
    pub queue: &'a str,
    pub queue_type: QueueType,
    pub prefetch: u16,
    pub handling: Handling,
}

/// Declares the queue and consumes from it until `--count`, `--idle-timeout` or Ctrl-C.
pub async fn receive_from_queue(
    ctx: &Context,
    receive: QueueReceive<'_>,
    consume: &ConsumeArgs,
) -> Result<Exit> {
    // Catch Ctrl-C from the start: an interrupt while connecting is a clean stop as well.
    let interrupts = Interrupts::install().map_err(Error::Runtime)?;
    let session = Session::open(ctx, receive.connection_name).await?;
    session
        .declare_queue(receive.queue, receive.queue_type)
        .await?;
    ctx.status
        .debug(format_args!("declared durable queue '{}'", receive.queue));
    let consumer = Consumer {
        session: &session,
        queue: receive.queue,
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
