//! Tutorial 7, "Publisher Confirms": the same messages published three ways (a confirm awaited
//! per message, per batch, or handled as they come) and timed on the user's broker.

use crate::{
    amqp::{
        Role, Session,
        publish::{
            Confirmations, Publication, RoutingKey, Unroutable, Watch, publish_in_batches,
            publish_windowed,
        },
        topology::{Queue, Topology},
    },
    cli::{ConfirmStrategy, ConfirmsArgs},
    context::Context,
    error::{Error, Result},
    exit::Exit,
    input::Messages,
    message::Message,
    signals::{Interrupts, Stop},
};
use comfy_table::{CellAlignment, Table, presets};
use indicatif::ProgressBar;
use std::time::{Duration, Instant};

/// One strategy's run.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    pub strategy: ConfirmStrategy,
    /// What the queue held afterwards: every message confirmed.
    pub messages: u64,
    pub elapsed: Duration,
}

pub async fn run(ctx: &Context, args: ConfirmsArgs) -> Result<Exit> {
    let strategies = match args.strategy {
        ConfirmStrategy::All => vec![
            ConfirmStrategy::Individual,
            ConfirmStrategy::Batch,
            ConfirmStrategy::Async,
        ],
        one => vec![one],
    };
    let mut timings = Vec::new();
    for strategy in strategies {
        let Some(timing) = time(ctx, strategy, args.count, args.batch_size.into()).await? else {
            let first = Interrupts::install().map_err(Error::Runtime)?.first();
            return Ok(Exit::Stopped(first.unwrap_or(Stop::Interrupt)));
        };
        super::print(format!("{}\n", tutorial_line(&timing)).as_bytes())?;
        timings.push(timing);
    }
    super::print(render_table(&timings).as_bytes())?;
    Ok(Exit::Success)
}

/// Publishes `count` messages with `strategy` to an exclusive queue of a connection of its own,
/// and checks that the queue holds them all before the connection (and the queue) goes. `None`
/// when Ctrl-C or SIGTERM stopped it.
async fn time(
    ctx: &Context,
    strategy: ConfirmStrategy,
    count: u64,
    batch_size: usize,
) -> Result<Option<Timing>> {
    let topology = Topology {
        queue: Some(Queue::Exclusive),
        ..Topology::default()
    };
    let (session, declared) = Session::open(
        ctx,
        "rmqlab confirms",
        &topology,
        Role::Publisher,
        &ctx.status,
    )
    .await?;
    let queue = declared.queue.expect("an exclusive queue has a name");
    let target = Publication {
        exchange: "",
        routing_key: RoutingKey::Fixed(&queue),
        persistent: false,
        unroutable: Unroutable::Fails,
    };
    let mut messages = Messages::numbered(count)?;
    let mut progress = Progress(ctx.status.progress.counting(count, label(strategy)));
    let started = Instant::now();
    let published = match strategy {
        ConfirmStrategy::Individual => {
            publish_in_batches(&session, &target, &mut messages, 1, &mut progress).await
        }
        ConfirmStrategy::Batch => {
            publish_in_batches(&session, &target, &mut messages, batch_size, &mut progress).await
        }
        ConfirmStrategy::Async | ConfirmStrategy::All => {
            // Ctrl-C stops the strategy's publishing, as it stops `task new -f`.
            let mut interrupts = Interrupts::install().map_err(Error::Runtime)?;
            let mut watch = Watch::new(&mut interrupts, None);
            publish_windowed(&session, &target, &mut messages, &mut progress, &mut watch).await
        }
    };
    let elapsed = started.elapsed();
    progress.0.finish_and_clear();
    let published = published?;
    if published.stopped {
        // Ctrl-C: the run ends by the signal, with nothing to compare.
        session.close().await;
        return Ok(None);
    }
    let (ready, _) = session.inspect_queue(&queue).await?;
    session.close().await;
    let found = u64::from(ready);
    ctx.status.debug(format_args!(
        "{}: queue '{queue}' held {found} message(s), {} confirmed",
        label(strategy),
        published.confirmed
    ));
    if found != count || published.confirmed != count {
        return Err(Error::QueueDepth {
            queue,
            expected: published.confirmed,
            found,
        });
    }
    Ok(Some(Timing {
        strategy,
        messages: found,
        elapsed,
    }))
}

/// The bar of one strategy, moved by each confirm.
struct Progress(ProgressBar);

impl Confirmations for Progress {
    fn confirmed(&mut self, _number: u64, _message: &Message) -> Result<()> {
        self.0.inc(1);
        Ok(())
    }

    fn dropped(&mut self, _routing_key: &str) {}

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

fn label(strategy: ConfirmStrategy) -> &'static str {
    match strategy {
        ConfirmStrategy::Individual => "individual",
        ConfirmStrategy::Batch => "batch",
        ConfirmStrategy::Async | ConfirmStrategy::All => "async",
    }
}

/// The line the tutorial's program prints for a strategy.
pub fn tutorial_line(timing: &Timing) -> String {
    let how = match timing.strategy {
        ConfirmStrategy::Individual => "messages individually",
        ConfirmStrategy::Batch => "messages in batch",
        ConfirmStrategy::Async | ConfirmStrategy::All => {
            "messages and handled confirms asynchronously"
        }
    };
    format!(
        "Published {} {how} in {} ms",
        thousands(timing.messages),
        thousands(timing.elapsed.as_millis() as u64)
    )
}

/// The timings side by side: messages, milliseconds, messages a second, and the speed-up over
/// the individual strategy when it ran.
pub fn render_table(timings: &[Timing]) -> String {
    let individual = timings
        .iter()
        .find(|t| t.strategy == ConfirmStrategy::Individual)
        .map(|t| t.elapsed.as_secs_f64());
    let mut table = Table::new();
    table.load_style(presets::UTF8_FULL_CONDENSED);
    table.set_header(["strategy", "messages", "ms", "msg/s", "speed-up"]);
    for timing in timings {
        let seconds = timing.elapsed.as_secs_f64().max(1e-6);
        table.add_row([
            label(timing.strategy).to_string(),
            thousands(timing.messages),
            thousands(timing.elapsed.as_millis() as u64),
            thousands((timing.messages as f64 / seconds).round() as u64),
            individual.map_or_else(String::new, |base| format!("{:.1}x", base / seconds)),
        ]);
    }
    for index in 1..5 {
        if let Some(column) = table.column_mut(index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    format!("{table}\n")
}

/// 50000 as `50,000`, as the tutorial prints numbers.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(strategy: ConfirmStrategy, millis: u64) -> Timing {
        Timing {
            strategy,
            messages: 50_000,
            elapsed: Duration::from_millis(millis),
        }
    }

    #[test]
    fn lines_are_the_tutorials() {
        assert_eq!(
            tutorial_line(&timing(ConfirmStrategy::Individual, 5549)),
            "Published 50,000 messages individually in 5,549 ms"
        );
        assert_eq!(
            tutorial_line(&timing(ConfirmStrategy::Batch, 812)),
            "Published 50,000 messages in batch in 812 ms"
        );
        assert_eq!(
            tutorial_line(&timing(ConfirmStrategy::Async, 1_234_567)),
            "Published 50,000 messages and handled confirms asynchronously in 1,234,567 ms"
        );
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(100), "100");
        assert_eq!(thousands(1000), "1,000");
    }

    #[test]
    fn the_table_compares_with_individual() {
        let table = render_table(&[
            timing(ConfirmStrategy::Individual, 5000),
            timing(ConfirmStrategy::Async, 500),
        ]);
        let async_row = table.lines().find(|l| l.contains("async")).unwrap();
        assert!(async_row.contains("100,000"), "{table}");
        assert!(async_row.contains("10.0x"), "{table}");
        let alone = render_table(&[timing(ConfirmStrategy::Batch, 1000)]);
        assert!(alone.contains("50,000"), "{alone}");
    }
}
