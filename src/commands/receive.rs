//! The flow every consuming command shares: consume with the engine until `--count`,
//! `--idle-timeout` or a signal, and print what arrives (the tutorial's line, the body, or JSON).

use super::STDOUT_BUFFER;
use crate::{
    amqp::{
        consume::{Ending, Handler, Limits, Outcome, Source, consume_all},
        topology::Topology,
    },
    cli::{ConsumeArgs, OutputFormat},
    context::{Context, Status},
    error::{Error, Result},
    exit::Exit,
    output::{Received, TextLine, write_received},
    signals::{Interrupts, Stop},
    terminal::TerminalText,
};
use lapin::message::Delivery;
use std::io::{self, BufWriter, Stdout, Write};

pub const WAITING_LINE: &str = " [*] Waiting for messages. To exit press CTRL+C";

/// Deliveries a printing consumer may hold before acking; `--count` lowers it so that nothing
/// beyond the count is ever taken from the queue.
const PRINT_PREFETCH: u16 = 500;

/// The prefetch of a consumer that prints what it receives.
pub fn print_prefetch(consume: &ConsumeArgs) -> u16 {
    consume.count.map_or(PRINT_PREFETCH, |count| {
        count.min(PRINT_PREFETCH.into()) as u16
    })
}

/// What a consuming command receives from.
pub struct Receive<'a> {
    pub connection_name: &'a str,
    pub topology: Topology,
    pub prefetch: u16,
}

/// What a handler may publish from the consumer ([`Outcome::Republish`], [`Outcome::Park`]).
#[derive(Default)]
pub struct Republishing<'a> {
    /// Tasks go back to their queue for another try.
    pub retries: bool,
    /// The queue failed tasks are parked in.
    pub parking: Option<&'a Topology>,
}

/// Consumes as `receive` says, each delivery handled by `handler`, until `--count`,
/// `--idle-timeout` or Ctrl-C, reconnecting after a lost connection.
pub async fn receive<H: Handler>(
    ctx: &Context,
    receive: Receive<'_>,
    consume: &ConsumeArgs,
    handler: &mut H,
) -> Result<Exit> {
    receive_republishing(ctx, receive, consume, handler, Republishing::default()).await
}

/// [`receive`], with a handler that may publish what it consumed again.
pub async fn receive_republishing<H: Handler>(
    ctx: &Context,
    receive: Receive<'_>,
    consume: &ConsumeArgs,
    handler: &mut H,
    republishing: Republishing<'_>,
) -> Result<Exit> {
    // Nothing printed could be seen: take nothing from the queue (Rust's stdout would drop
    // every line silently).
    if super::stdout_was_closed() {
        return Err(Error::Output(super::closed_stdout()));
    }
    // Catch Ctrl-C from the start: an interrupt while connecting is a clean stop as well.
    let interrupts = Interrupts::install().map_err(Error::Runtime)?;
    let signals = interrupts.clone();
    let source = Source {
        connection_name: receive.connection_name,
        topology: &receive.topology,
        prefetch: receive.prefetch,
        republishes: republishing.retries,
        parking: republishing.parking,
    };
    let limits = Limits {
        count: consume.count,
        idle_timeout: consume.idle_timeout,
    };
    let ending = consume_all(ctx, &ctx.status, &source, limits, handler, interrupts).await?;
    Ok(match ending {
        // A handler that gave up knows why, and says it.
        Ending::Finished | Ending::GaveUp => Exit::Success,
        Ending::Interrupted => Exit::Stopped(signals.first().unwrap_or(Stop::Interrupt)),
    })
}

/// The stdout writer consumers print through.
pub type Out = TerminalText<BufWriter<Stdout>>;

/// Starts the stdout writer consumers print through: the text format shows control characters
/// escaped on a terminal; the others are exact.
pub fn stdout(format: OutputFormat) -> Out {
    let out = BufWriter::with_capacity(STDOUT_BUFFER, io::stdout());
    match format {
        OutputFormat::Text => TerminalText::new(out),
        OutputFormat::Body | OutputFormat::Json => TerminalText::exact(out),
    }
}

/// Prints each message, and has it acked once the output is flushed (tutorials 1, 3, 4, 5).
pub struct Printer {
    pub out: Out,
    pub format: OutputFormat,
    /// The tutorial's line in text mode.
    pub text: TextLine,
    pub status: Status,
    /// Listening to an exchange through an exclusive queue: what a reconnection loses.
    pub exchange: Option<String>,
}

impl Printer {
    pub fn new(
        ctx: &Context,
        consume: &ConsumeArgs,
        text: TextLine,
        exchange: Option<&str>,
    ) -> Printer {
        Printer {
            out: stdout(consume.output),
            format: consume.output,
            text,
            status: ctx.status,
            exchange: exchange.map(str::to_string),
        }
    }
}

/// Said when consuming starts, and again after a reconnection.
pub fn announce(status: Status, resumed: bool, exchange: Option<&str>) {
    if let (true, Some(exchange)) = (resumed, exchange) {
        status.warn(format_args!(
            " [!] Listening to '{exchange}' again through a new queue: messages emitted while \
             disconnected were not kept"
        ));
    }
    status.info(WAITING_LINE);
}

impl Handler for Printer {
    fn consuming(&mut self, _queue: &str, resumed: bool) {
        announce(self.status, resumed, self.exchange.as_deref());
    }

    async fn handle(&mut self, delivery: &Delivery, _: &mut Interrupts) -> Result<Outcome> {
        write_received(
            &mut self.out,
            self.format,
            self.text,
            &Received::from(delivery),
        )
        .map_err(Error::Output)?;
        Ok(Outcome::AckLater)
    }

    fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(Error::Output)
    }
}
