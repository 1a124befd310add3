//! The flow every publishing command shares: one message (the quick way first) or one per input
//! line, ` [x] Sent` for each one the broker confirmed, progress on a terminal, and what was
//! dropped or sent again.

use super::STDOUT_BUFFER;
use crate::{
    amqp::{
        events::{Event, Observer},
        oneshot::{self, Handover},
        publish::{Confirmations, Plan, Publication, RoutingKey, Start, publish_all},
        topology::{ExchangeKind, Topology},
    },
    cli::MessageArgs,
    context::{Context, Status},
    error::{Error, Result},
    exit::Exit,
    input::Messages,
    output::write_sent,
    terminal::AroundProgress,
};
use indicatif::ProgressBar;
use std::io::{self, BufWriter, Write};

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
            RoutingKey::Fixed(key) if self.show_key => Some(key),
            _ => None,
        }
    }

    /// Where a message no queue took was going, for the note: the exchange, and the routing key
    /// unless the exchange is a fanout, which ignores keys.
    fn destination(&self) -> String {
        let exchange = self.target.exchange;
        let fanout = self
            .topology
            .exchanges
            .iter()
            .any(|declared| declared.name == exchange && declared.kind == ExchangeKind::Fanout);
        match self.target.routing_key {
            RoutingKey::Fixed(key) if !fanout => {
                format!("exchange '{exchange}' for routing key '{key}'")
            }
            _ => format!("exchange '{exchange}'"),
        }
    }
}

/// Declares what `send` describes, then publishes the command's message(s), printing
/// ` [x] Sent` for each one the broker confirmed.
pub async fn send(ctx: &Context, send: Send<'_>, message: &MessageArgs) -> Result<Exit> {
    let observer = &ctx.status;
    let mut start = Start::Connect;
    let mut messages = match &message.file {
        // Open the input before connecting: a missing file is reported without touching the
        // broker.
        Some(path) => Messages::lines_of(path)?,
        None => {
            let body = single_message(message, send.default_message);
            // One message over plain TCP: first the quick way, which hands anything but
            // success and definite refusals over.
            if !ctx.url.is_tls() {
                let quick = oneshot::publish(
                    ctx,
                    observer,
                    send.connection_name,
                    &send.topology,
                    &send.target,
                    &body,
                );
                match quick.await {
                    Ok(()) => {
                        let mut out = Vec::new();
                        write_sent(&mut out, send.key_shown(), &body).map_err(Error::Output)?;
                        super::print(&out)?;
                        ctx.status.debug("1 message(s) confirmed");
                        return Ok(Exit::Success);
                    }
                    Err(Handover::Untouched(reason)) => {
                        observer.observe(Event::HandedOver { reason: &reason });
                    }
                    Err(Handover::Lost(lost)) => start = Start::AfterLoss(lost),
                    Err(Handover::Failed(error)) => return Err(error),
                }
            }
            Messages::single(body)
        }
    };
    let progress = ctx.status.progress.publishing(messages.size);
    let mut lines = SentLines {
        out: BufWriter::with_capacity(
            STDOUT_BUFFER,
            AroundProgress {
                bar: progress.clone(),
                inner: io::stdout(),
            },
        ),
        progress,
        status: ctx.status,
        key: send.key_shown(),
        destination: send.destination(),
        dropped: 0,
    };
    let plan = Plan {
        connection_name: send.connection_name,
        topology: &send.topology,
        target: &send.target,
    };
    let published = publish_all(ctx, observer, &plan, &mut messages, &mut lines, start).await;
    lines.progress.finish_and_clear();
    let published = published.map_err(|error| match error {
        Error::PublishInterrupted {
            confirmed, source, ..
        } => Error::PublishInterrupted {
            confirmed,
            input: message
                .file
                .as_ref()
                .filter(|path| path.as_os_str() != "-")
                .map(|path| path.display().to_string()),
            source,
        },
        other => other,
    })?;
    if published.dropped > 1 {
        ctx.status.warn(format_args!(
            " [!] {} of {} messages were dropped: no queue is bound to {}",
            published.dropped,
            published.confirmed,
            send.destination()
        ));
    }
    if published.republished > 0 {
        ctx.status.warn(format_args!(
            " [!] {} message(s) were sent again after a lost connection: some may have arrived twice",
            published.republished
        ));
    }
    ctx.status
        .debug(format_args!("{} message(s) confirmed", published.confirmed));
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

/// ` [x] Sent` lines on stdout and the progress on stderr, as confirms come.
struct SentLines<'a, W: Write> {
    out: W,
    progress: ProgressBar,
    status: Status,
    /// The routing key the ` [x] Sent` lines show.
    key: Option<&'a str>,
    /// Where the messages go, for the note when one is dropped.
    destination: String,
    dropped: u64,
}

impl<W: Write> Confirmations for SentLines<'_, W> {
    fn confirmed(&mut self, number: u64, body: &[u8]) -> Result<()> {
        if self.progress.length().is_some() {
            // The bar measures the input's bytes: the line and its newline.
            self.progress.inc(body.len() as u64 + 1);
            if number.is_multiple_of(256) {
                self.progress.set_message(number.to_string());
            }
        } else {
            self.progress.inc(1);
        }
        write_sent(&mut self.out, self.key, body).map_err(Error::Output)
    }

    fn dropped(&mut self, _routing_key: &str) {
        self.dropped += 1;
        // Said once, at the first; the total comes at the end.
        if self.dropped == 1 {
            let (status, destination) = (self.status, &self.destination);
            self.progress.suspend(|| {
                status.warn(format_args!(
                    " [!] no queue is bound to {destination}: message dropped"
                ))
            });
        }
    }

    fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(Error::Output)
    }
}
