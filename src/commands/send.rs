//! The flow every publishing command shares: one message (the quick way first) or one per input
//! line, ` [x] Sent` for each one the broker confirmed, progress on a terminal, and what was
//! dropped or sent again.

use super::STDOUT_BUFFER;
use crate::{
    amqp::{
        events::{Event, Observer},
        oneshot::{self, Handover},
        publish::{
            Confirmations, Plan, Publication, Published, RoutingKey, Start, Wait, Watch,
            publish_all,
        },
        topology::{ExchangeKind, Topology},
    },
    cli::{InputFormat, MessageArgs, PropertyArgs},
    context::{Context, Status},
    error::{Error, Result, resume_hint},
    exit::Exit,
    input::Messages,
    message::{Message, MessageForm},
    output::write_sent,
    signals::{Interrupts, Stop},
    terminal::{self, AroundProgress, TerminalText},
};
use indicatif::ProgressBar;
use std::{
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

/// What a publishing command sends and how.
pub struct Send<'a> {
    pub connection_name: &'a str,
    pub topology: Topology,
    pub target: Publication<'a>,
    pub default_message: &'a str,
    /// ` [x] Sent KEY:MESSAGE` (tutorials 4 and 5) rather than ` [x] Sent 'MESSAGE'`.
    pub show_key: bool,
}

impl Send<'_> {
    /// The routing key shown in each ` [x] Sent` line, if any.
    fn key_shown(&self) -> Option<&str> {
        match self.target.routing_key {
            RoutingKey::Fixed(key) | RoutingKey::Given(key) if self.show_key => Some(key),
            _ => None,
        }
    }

    /// The routing key the ` [x] Sent` line of `message` shows, if any: its own, if it has one.
    fn shown_key_of<'m>(&'m self, message: &'m Message) -> Option<&'m str> {
        self.key_shown()
            .map(|key| message.routing_key.as_deref().unwrap_or(key))
    }

    /// Where the messages go, for the note when one is dropped.
    fn destination(&self) -> Destination {
        let exchange = self.target.exchange;
        let fanout = self
            .topology
            .exchanges
            .iter()
            .any(|declared| declared.name == exchange && declared.kind == ExchangeKind::Fanout);
        Destination::Exchange {
            name: exchange.to_string(),
            keyed: !fanout,
        }
    }
}

/// Declares what `send` describes, then publishes the command's message(s) with the properties
/// the command line sets, printing ` [x] Sent` for each one the broker confirmed. Ctrl-C or
/// SIGTERM stops the reading; the messages in flight are given a grace period to be confirmed,
/// what was confirmed is said, and rmqlab ends by the signal.
pub async fn send(
    ctx: &Context,
    send: Send<'_>,
    message: &MessageArgs,
    properties: &PropertyArgs,
) -> Result<Exit> {
    let form = form_for(ctx, properties);
    let input_format = form.input;
    let file = input_file(message.file.as_ref(), message.words.is_empty(), form.input);
    // Catch signals from the start: one while connecting is a clean stop as well.
    let mut interrupts = Interrupts::install().map_err(Error::Runtime)?;
    let observer = &ctx.status;
    let mut watch = Watch::new(&mut interrupts, message.confirm_timeout).told(observer);
    let mut start = Start::Connect;
    // `-f PATH`, to show how to resume; None for stdin and words.
    let input = named_input(file.as_deref());
    let mut messages = match &file {
        // Open the input before connecting: a missing file is reported without touching the
        // broker.
        Some(path) => Messages::read(path, message.max_message_size, form)?,
        None => {
            let body = one_message(&form, single_message(message, send.default_message))?;
            // One message over plain TCP: first the quick way, which hands anything but
            // success and definite refusals over.
            if !ctx.url().is_tls() {
                let quick = oneshot::publish(
                    ctx,
                    observer,
                    send.connection_name,
                    &send.topology,
                    &send.target,
                    &body,
                    message.confirm_timeout,
                );
                let Some(quick) = watch.wait(quick, Wait::Answer).await? else {
                    return Ok(stopped(
                        ctx,
                        watch.signal().unwrap_or(Stop::Interrupt),
                        0,
                        1,
                        None,
                    ));
                };
                match quick {
                    Ok(()) => {
                        let mut out = Vec::new();
                        write_sent(&mut out, send.shown_key_of(&body), &body.body)
                            .map_err(Error::Output)?;
                        // A closed stdout stops the report, not the publishing.
                        if let Err(Error::Output(source)) = super::print_text(&out)
                            && source.kind() != io::ErrorKind::BrokenPipe
                        {
                            return Err(Error::ReportLost {
                                confirmed: 1,
                                source,
                            });
                        }
                        ctx.status.debug("1 message(s) confirmed");
                        return Ok(match watch.stopping() {
                            true => {
                                stopped(ctx, watch.signal().unwrap_or(Stop::Interrupt), 1, 0, None)
                            }
                            false => Exit::Success,
                        });
                    }
                    Err(Handover::Untouched(_) | Handover::Skipped { .. }) if watch.stopping() => {
                        return Ok(stopped(
                            ctx,
                            watch.signal().unwrap_or(Stop::Interrupt),
                            0,
                            0,
                            None,
                        ));
                    }
                    Err(Handover::Lost(_)) if watch.stopping() => {
                        return Ok(stopped(
                            ctx,
                            watch.signal().unwrap_or(Stop::Interrupt),
                            0,
                            1,
                            None,
                        ));
                    }
                    Err(Handover::Untouched(reason)) => {
                        observer.observe(Event::HandedOver { reason: &reason });
                    }
                    Err(Handover::Skipped { url, error }) => {
                        observer.observe(Event::Skipped {
                            url: &url,
                            error: &error,
                        });
                    }
                    Err(Handover::Lost(lost)) => start = Start::AfterLoss(lost),
                    Err(Handover::Failed(error)) => return Err(error),
                }
            }
            Messages::single(body)
        }
    };
    // The bar measures the input's bytes by the bodies: not a JSON line's.
    let size = messages.size.filter(|_| input_format == InputFormat::Body);
    let mut lines = stdout_lines(ctx, size, send.destination());
    lines.key = send.key_shown();
    let plan = Plan {
        connection_name: send.connection_name,
        topology: &send.topology,
        target: &send.target,
    };
    let published = publish_all(
        ctx,
        observer,
        &plan,
        &mut messages,
        &mut lines,
        start,
        &mut watch,
    )
    .await;
    let failed = lines.finish();
    let published = published.map_err(|error| with_input(error, &input))?;
    if published.dropped > 1 {
        ctx.status.warn(format_args!(
            " [!] {} of {} messages were dropped: no queue is bound to {}",
            published.dropped,
            published.confirmed,
            lines.dropped_destination()
        ));
    }
    let lines_input = file.is_some().then_some(input.as_deref());
    finished(ctx, &published, watch.signal(), lines_input, failed)
}

/// The end of a publisher's run (`task new`, `stream send`...): what was sent again after a lost
/// connection, and how it ended: by a signal (with how to resume from `input`, see
/// [`stopped`]), with a report that could not be written (74), or successfully.
pub(super) fn finished(
    ctx: &Context,
    published: &Published,
    signal: Option<Stop>,
    input: Option<Option<&str>>,
    report_failed: Option<io::Error>,
) -> Result<Exit> {
    if published.republished > 0 {
        ctx.status.warn(format_args!(
            " [!] {} message(s) were sent again after a lost connection: some may have arrived twice",
            published.republished
        ));
    }
    ctx.status
        .debug(format_args!("{} message(s) confirmed", published.confirmed));
    if published.stopped {
        return Ok(stopped(
            ctx,
            signal.unwrap_or(Stop::Interrupt),
            published.confirmed,
            published.in_doubt,
            input,
        ));
    }
    match report_failed {
        Some(source) => Err(Error::ReportLost {
            confirmed: published.confirmed,
            source,
        }),
        None => Ok(Exit::Success),
    }
}

/// How input becomes messages published as `ctx`'s user, with what `properties` set.
pub(super) fn form_for(ctx: &Context, properties: &PropertyArgs) -> crate::message::MessageForm {
    let user = ctx.url().user();
    crate::message::MessageForm {
        user: (!user.is_empty()).then(|| user.to_string()),
        ..properties.form()
    }
}

/// The `-f` input's name for a resume hint: a file's path; None for stdin and words.
pub(super) fn named_input(file: Option<&Path>) -> Option<String> {
    file.filter(|path| path.as_os_str() != "-")
        .map(|path| path.display().to_string())
}

/// The file whose lines are the messages: `-f PATH`, or stdin for `--input json` when the
/// command line gives no message; None for the one message of the command line.
pub(super) fn input_file(
    file: Option<&PathBuf>,
    no_message: bool,
    input: InputFormat,
) -> Option<PathBuf> {
    match (file, input) {
        (Some(path), _) => Some(path.clone()),
        (None, InputFormat::Json) if no_message => Some(PathBuf::from("-")),
        (None, _) => None,
    }
}

/// The message the command line gives, made by `form` (with `--input json`, the line is JSON).
pub(super) fn one_message(form: &MessageForm, line: Vec<u8>) -> Result<Message> {
    form.line(line).map_err(|reason| Error::NotAMessage {
        path: "the command line".into(),
        line: 1,
        reason,
    })
}

/// A publisher's interruption with the input it can be resumed from.
pub(super) fn with_input(error: Error, input: &Option<String>) -> Error {
    match error {
        Error::PublishInterrupted {
            confirmed, source, ..
        } => Error::PublishInterrupted {
            confirmed,
            input: input.clone(),
            source,
        },
        other => other,
    }
}

/// Says what a publisher stopped by `signal` had confirmed, and how to go on; rmqlab then ends
/// by that signal. `input` is `Some` for `-f` (with the path of a file), None for one message.
pub(super) fn stopped(
    ctx: &Context,
    signal: Stop,
    confirmed: u64,
    in_doubt: u64,
    input: Option<Option<&str>>,
) -> Exit {
    let name = match signal {
        Stop::Interrupt => "Ctrl-C",
        Stop::Terminate => "SIGTERM",
    };
    let said = match input {
        Some(input) => {
            let doubt = match in_doubt {
                0 => String::new(),
                count => format!(" ({count} more sent without a confirm may have arrived)"),
            };
            format!("{}{doubt}", resume_hint(confirmed, input))
        }
        None if confirmed > 0 => "the message was confirmed".into(),
        None if in_doubt > 0 => {
            "the message was sent but not confirmed: it may have arrived".into()
        }
        None => "the message was not sent".into(),
    };
    ctx.status
        .warn(format_args!(" [!] Stopped by {name}: {said}"));
    Exit::Stopped(signal)
}

/// The one message of a command without `--file`: the words joined with spaces, else the
/// tutorial's default.
pub(super) fn single_message(args: &MessageArgs, default: &str) -> Vec<u8> {
    match args.words.is_empty() {
        true => default.as_bytes().to_vec(),
        false => args.words.join(" ").into_bytes(),
    }
}

/// ` [x] Sent` lines on stdout and the progress on stderr, as confirms come. The lines are a
/// report, the messages are the work: a stdout that cannot be written ends the report, never
/// the publishing. A closed pipe (`| head`) is not a failure, as for `tee`; any other write
/// error is kept for the end (74).
pub(super) struct SentLines<'a, W: Write> {
    out: W,
    progress: ProgressBar,
    status: Status,
    /// The routing key the ` [x] Sent` lines show.
    key: Option<&'a str>,
    /// Where the messages go, for the note when one is dropped.
    destination: Destination,
    dropped: u64,
    /// The routing key the dropped messages were returned with, while it is the same for all.
    dropped_key: Option<String>,
    dropped_keys_differ: bool,
    /// The reader of stdout went away.
    closed: bool,
    /// Writing stdout failed otherwise.
    failed: Option<io::Error>,
    /// Confirmed so far: the progress's count.
    confirmed: u64,
}

/// ` [x] Sent` lines on stdout, with the progress of an input of `size` bytes, for a publisher
/// of its own (`stream send`).
pub(super) fn stdout_lines(
    ctx: &Context,
    size: Option<u64>,
    destination: Destination,
) -> SentLines<'static, impl Write> {
    let progress = ctx.status.progress.publishing(size);
    SentLines {
        out: TerminalText::new(BufWriter::with_capacity(
            STDOUT_BUFFER,
            AroundProgress {
                bar: progress.clone(),
                inner: io::stdout(),
            },
        )),
        progress,
        status: ctx.status,
        key: None,
        destination,
        dropped: 0,
        dropped_key: None,
        dropped_keys_differ: false,
        closed: false,
        // A stdout closed as rmqlab started takes no report: the messages are still published.
        failed: super::check_stdout().err(),
        confirmed: 0,
    }
}

/// Where a publisher's messages go, for the note when one is dropped.
pub(super) enum Destination {
    Stream(String),
    /// `keyed`: the exchange routes by key (not a fanout).
    Exchange {
        name: String,
        keyed: bool,
    },
}

impl Destination {
    /// The destination of a message returned with `key`.
    fn of(&self, key: Option<&str>) -> String {
        match (self, key) {
            (Destination::Stream(name), _) => format!("stream '{name}'"),
            (Destination::Exchange { name, keyed: true }, Some(key)) => {
                format!("exchange '{name}' for routing key '{key}'")
            }
            (Destination::Exchange { name, keyed: true }, None) => {
                format!("exchange '{name}' for their routing keys")
            }
            (Destination::Exchange { name, .. }, _) => format!("exchange '{name}'"),
        }
    }
}

impl<W: Write> SentLines<'_, W> {
    /// Where the dropped messages were going: with their routing key, when all had the same.
    fn dropped_destination(&self) -> String {
        let key = match self.dropped_keys_differ {
            true => None,
            false => self.dropped_key.as_deref(),
        };
        self.destination.of(key)
    }

    /// Ends the progress; returns the write error that ended the report, if any.
    pub(super) fn finish(&mut self) -> Option<io::Error> {
        terminal::finish_publishing(&self.progress, self.confirmed);
        self.failed.take()
    }

    /// Runs a write unless the report has ended, and ends it when the write fails.
    fn report(&mut self, write: impl FnOnce(&mut W) -> io::Result<()>) {
        if self.closed || self.failed.is_some() {
            return;
        }
        match write(&mut self.out) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::BrokenPipe => self.closed = true,
            Err(error) => self.failed = Some(error),
        }
    }
}

impl<W: Write> Confirmations for SentLines<'_, W> {
    fn confirmed(&mut self, number: u64, message: &Message) -> Result<()> {
        let body = &message.body;
        self.confirmed = number;
        if self.progress.length().is_some() {
            // The bar measures the input's bytes: the line and its newline.
            self.progress.inc(body.len() as u64 + 1);
        } else {
            self.progress.inc(1);
        }
        if number.is_multiple_of(256) {
            terminal::show_confirmed(&self.progress, number);
        }
        let key = self
            .key
            .map(|key| message.routing_key.as_deref().unwrap_or(key));
        self.report(|out| write_sent(out, key, body));
        Ok(())
    }

    fn dropped(&mut self, routing_key: &str) {
        self.dropped += 1;
        match &self.dropped_key {
            None if self.dropped == 1 => self.dropped_key = Some(routing_key.to_string()),
            Some(key) if key != routing_key => self.dropped_keys_differ = true,
            _ => {}
        }
        // Said once, at the first; the total comes at the end.
        if self.dropped == 1 {
            let (status, destination) = (self.status, self.destination.of(Some(routing_key)));
            self.progress.suspend(|| {
                status.warn(format_args!(
                    " [!] no queue is bound to {destination}: message dropped"
                ))
            });
        }
    }

    fn flush(&mut self) -> Result<()> {
        self.report(Write::flush);
        Ok(())
    }
}
