//! The stream tutorials ("Hello World" and "Offset tracking" over the stream protocol):
//! `stream send` appends with confirms, `stream recv` reads from an offset, optionally tracking
//! it on the broker under a consumer name.

use super::{
    receive::{Out, WAITING_LINE, stdout},
    send::{Destination, finished, named_input, single_message, stdout_lines, with_input},
};
use crate::uri::StreamUrl;
use crate::{
    amqp::{
        publish::Watch,
        stream::{
            Ending, Reading, StreamHandler, StreamLimits, StreamMessage, StreamSpec, Streams,
            Tracking, connect,
        },
    },
    cli::{
        OutputFormat, StartAt, StreamCommand, StreamInfoArgs, StreamRecvArgs, StreamSendArgs,
        StreamTarget,
    },
    context::{Context, Status},
    error::{Error, Result},
    exit::Exit,
    input::Messages,
    output::{write_stream_info, write_stream_message},
    signals::{Interrupts, Stop, unless_interrupted},
};
use rabbitmq_stream_client::types::OffsetSpecification;
use std::io::Write;

pub async fn run(ctx: &Context, command: StreamCommand) -> Result<Exit> {
    match command {
        StreamCommand::Send(args) => send(ctx, &args).await,
        StreamCommand::Recv(args) => recv(ctx, &args).await,
        StreamCommand::Info(args) => info(ctx, &args).await,
    }
}

async fn info(ctx: &Context, args: &StreamInfoArgs) -> Result<Exit> {
    let streams = connect_streams(ctx, "rmqlab stream info").await?;
    let info = unless_interrupted(streams.info(&args.stream, &args.name))
        .await
        .map_err(Error::Interrupted)??;
    let mut out = Vec::new();
    write_stream_info(&mut out, &args.stream, &info).map_err(Error::Output)?;
    super::print_text(&out)?;
    Ok(Exit::Success)
}

/// Connects to the stream port of `--stream-url`, else to that beside the first `--url` (in
/// the order they are tried) whose stream port answers.
async fn connect_streams(ctx: &Context, connection_name: &str) -> Result<Streams> {
    let mut candidates: Vec<StreamUrl> = match &ctx.stream_url_given {
        Some(url) => vec![url.clone()],
        None => ctx
            .urls
            .attempt_order()
            .map(|(_, url)| StreamUrl::from_broker(url))
            .collect(),
    };
    // Nodes on one host share its stream port (the same user twice needs one try).
    let mut seen = Vec::new();
    candidates.retain(|url| {
        let key = (url.host.clone(), url.user.clone(), url.password.clone());
        let new = !seen.contains(&key);
        seen.push(key);
        new
    });
    let mut failures = Vec::new();
    for url in &candidates {
        ctx.status.debug(format_args!("connecting to {url}"));
        let connected =
            unless_interrupted(connect(url, &ctx.tls, connection_name, ctx.connect_timeout))
                .await
                .map_err(Error::Interrupted)?;
        match connected {
            Ok(streams) => return Ok(streams),
            Err(error) if candidates.len() > 1 => {
                ctx.status
                    .debug(format_args!("skipping {url}: {}", error.one_line()));
                failures.push(error);
            }
            Err(error) => return Err(error),
        }
    }
    Err(Error::no_url_connected("stream URLs", failures))
}

/// Connects and creates the stream if absent, as both tutorial programs do.
async fn open(ctx: &Context, connection_name: &str, target: &StreamTarget) -> Result<Streams> {
    let streams = connect_streams(ctx, connection_name).await?;
    let spec = StreamSpec {
        max_length_bytes: target.max_length_bytes,
        max_age: target.max_age,
    };
    let created = unless_interrupted(streams.ensure(&target.stream, spec))
        .await
        .map_err(Error::Interrupted)??;
    if created {
        ctx.status
            .debug(format_args!("created stream '{}'", target.stream));
    }
    Ok(streams)
}

async fn send(ctx: &Context, args: &StreamSendArgs) -> Result<Exit> {
    let mut interrupts = Interrupts::install().map_err(Error::Runtime)?;
    let message = &args.message;
    let mut watch = Watch::new(&mut interrupts, message.confirm_timeout).told(&ctx.status);
    let input = named_input(message.file.as_deref());
    let mut messages = match &message.file {
        Some(path) => Messages::lines_of(path, message.max_message_size)?,
        None => Messages::single(single_message(message, "Hello, World!").into()),
    };
    let streams = open(ctx, "rmqlab stream send", &args.target).await?;
    let mut lines = stdout_lines(
        ctx,
        messages.size,
        Destination::Stream(args.target.stream.clone()),
    );
    let published = streams
        .publish(
            ctx,
            &ctx.status,
            &args.target.stream,
            &mut messages,
            &mut lines,
            &mut watch,
        )
        .await;
    let failed = lines.finish();
    let published = published.map_err(|error| with_input(error, &input))?;
    let lines_input = message.file.is_some().then_some(input.as_deref());
    finished(ctx, &published, watch.signal(), lines_input, failed)
}

async fn recv(ctx: &Context, args: &StreamRecvArgs) -> Result<Exit> {
    if super::stdout_was_closed() {
        return Err(Error::Output(super::closed_stdout()));
    }
    let mut interrupts = Interrupts::install().map_err(Error::Runtime)?;
    let stream = &args.target.stream;
    let streams = open(ctx, "rmqlab stream recv", &args.target).await?;
    let mut start = match args.offset {
        StartAt::First => OffsetSpecification::First,
        StartAt::Last => OffsetSpecification::Last,
        StartAt::Next => OffsetSpecification::Next,
        StartAt::Offset(offset) => OffsetSpecification::Offset(offset),
        StartAt::Timestamp(millis) => OffsetSpecification::Timestamp(millis),
    };
    let tracking = args.name.as_deref().map(|name| Tracking {
        name,
        store_every: args.store_every,
    });
    if let Some(name) = args.name.as_deref() {
        let stored = unless_interrupted(streams.stored_offset(stream, name))
            .await
            .map_err(Error::Interrupted)??;
        if let Some(stored) = stored {
            // The stored offset wins: go on just after it.
            ctx.status.debug(format_args!(
                "consumer '{name}' stored offset {stored}: reading from {}",
                stored + 1
            ));
            start = OffsetSpecification::Offset(stored + 1);
        }
    }
    let mut printer = StreamPrinter {
        out: stdout(args.consume.output),
        format: args.consume.output,
        stream: stream.clone(),
        status: ctx.status,
    };
    let limits = StreamLimits {
        count: args.consume.count,
        idle_timeout: args.consume.idle_timeout,
    };
    let consumed = streams
        .consume(
            Reading {
                stream,
                start,
                tracking,
                limits,
                reconnect_timeout: ctx.reconnect_timeout,
            },
            &mut printer,
            &mut interrupts,
        )
        .await;
    let consumed = match consumed {
        Err(error) if error.is_broken_pipe() => return Ok(Exit::Success),
        other => other?,
    };
    if let Some(last) = consumed.last {
        ctx.status.debug(format_args!(
            "{} message(s), last offset {last}",
            consumed.handled
        ));
    }
    Ok(match consumed.ending {
        Ending::Finished | Ending::Idle => Exit::Success,
        Ending::Interrupted => Exit::Stopped(interrupts.first().unwrap_or(Stop::Interrupt)),
    })
}

/// Prints each message read from a stream.
struct StreamPrinter {
    out: Out,
    format: OutputFormat,
    stream: String,
    status: Status,
}

impl StreamHandler for StreamPrinter {
    fn consuming(&mut self) {
        self.status.info(WAITING_LINE);
    }

    fn handle(&mut self, message: &StreamMessage<'_>) -> Result<()> {
        write_stream_message(&mut self.out, self.format, &self.stream, message)
            .map_err(Error::Output)
    }

    fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(Error::Output)
    }

    fn lost(&mut self, reason: &str) {
        self.status.warn(format_args!(
            " [!] Lost the stream connection ({reason}): reconnecting"
        ));
    }

    fn resumed(&mut self, from: Option<u64>) {
        match from {
            Some(offset) => self.status.warn(format_args!(
                " [!] Reconnected: reading on from offset {offset}"
            )),
            None => self.status.warn(" [!] Reconnected"),
        }
    }
}
