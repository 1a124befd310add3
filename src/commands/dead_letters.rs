//! `queues dead-letters`: what a dead-letter queue holds, grouped by how each message first died
//! (the `x-death` headers RabbitMQ adds, or the headers `task work` parks a task with), read
//! without taking anything; `--redrive` sends the selected ones back where they died.

use super::{
    peek::Readable,
    print, print_text,
    task::{FAILED_AT_HEADER, QUEUE_HEADER},
};
use crate::{
    amqp::{
        Session,
        transfer::{Destination, Router, Transfer, peek, read_stream, transfer},
    },
    cli::{DeathReason, QueuesDeadLettersArgs, TableFormat},
    context::Context,
    error::{Error, Result},
    exit::Exit,
    management::Api,
    output::tsv_escape,
    signals::{Interrupts, Stop},
    terminal::escape_controls,
};
use comfy_table::{CellAlignment, ContentArrangement, Table, presets};
use lapin::{
    message::Delivery,
    types::{AMQPValue, FieldTable},
};
use serde_json::json;
use std::{
    collections::BTreeMap,
    io::IsTerminal,
    time::{Duration, UNIX_EPOCH},
};

const CONNECTION_NAME: &str = "rmqlab queues dead-letters";

/// The reason of a task `task work --exec` parked.
const PARKED: &str = "parked";
/// The group of messages without death facts.
const UNKNOWN: &str = "(unknown)";

/// How a message first died: what its group is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Death {
    /// The queue it died in (`x-first-death-queue`).
    pub queue: String,
    /// rejected, expired, maxlen, delivery_limit, or parked.
    pub reason: String,
    /// The exchange it had been published to.
    pub exchange: String,
    /// The routing keys it had been published with (CC included).
    pub routing_keys: Vec<String>,
}

/// A message's death and when it happened (seconds since the epoch), when it says.
type Facts = (Death, Option<u64>);

/// The facts of a message's first death, from its headers: RabbitMQ's `x-first-death-*` and
/// the matching `x-death` entry, or the headers of a task `task work` parked.
pub fn death_of(headers: Option<&FieldTable>) -> Option<Facts> {
    let headers = headers?.inner();
    let field = |table: &BTreeMap<_, AMQPValue>, key: &str| table.get(key).and_then(text);
    if let Some(queue) = field(headers, QUEUE_HEADER) {
        let time = field(headers, FAILED_AT_HEADER)
            .and_then(|at| humantime::parse_rfc3339(&at).ok())
            .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
            .map(|since| since.as_secs());
        let death = Death {
            queue: queue.clone(),
            reason: PARKED.into(),
            exchange: String::new(),
            routing_keys: vec![queue],
        };
        return Some((death, time));
    }
    let deaths: Vec<&BTreeMap<_, AMQPValue>> = match headers.get("x-death") {
        Some(AMQPValue::FieldArray(array)) => array
            .as_slice()
            .iter()
            .filter_map(|entry| match entry {
                AMQPValue::FieldTable(table) => Some(table.inner()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let first_queue = field(headers, "x-first-death-queue");
    let first_reason = field(headers, "x-first-death-reason");
    // The entry of the first death; x-death lists the latest first.
    let entry = deaths
        .iter()
        .find(|entry| {
            field(entry, "queue") == first_queue && field(entry, "reason") == first_reason
        })
        .or(deaths.last())
        .copied();
    let queue = first_queue.or_else(|| entry.and_then(|entry| field(entry, "queue")))?;
    let reason = first_reason
        .or_else(|| entry.and_then(|entry| field(entry, "reason")))
        .unwrap_or_default();
    let exchange = field(headers, "x-first-death-exchange")
        .or_else(|| entry.and_then(|entry| field(entry, "exchange")))
        .unwrap_or_default();
    let routing_keys = match entry.and_then(|entry| entry.get("routing-keys")) {
        Some(AMQPValue::FieldArray(keys)) => keys.as_slice().iter().filter_map(text).collect(),
        _ => Vec::new(),
    };
    let time = match entry.and_then(|entry| entry.get("time")) {
        Some(AMQPValue::Timestamp(time)) => Some(*time),
        _ => None,
    };
    Some((
        Death {
            queue,
            reason,
            exchange,
            routing_keys,
        },
        time,
    ))
}

fn text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.to_string()),
        _ => None,
    }
}

/// The messages of one death.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Group {
    pub count: u64,
    pub oldest: Option<u64>,
    pub newest: Option<u64>,
}

impl Group {
    fn add(&mut self, time: Option<u64>) {
        self.count += 1;
        if let Some(time) = time {
            self.oldest = Some(self.oldest.map_or(time, |oldest| oldest.min(time)));
            self.newest = Some(self.newest.map_or(time, |newest| newest.max(time)));
        }
    }
}

/// Which messages `--reason` and `--from-queue` pick.
struct Selection<'a> {
    reason: Option<&'a str>,
    from_queue: Option<&'a str>,
}

impl Selection<'_> {
    fn any(&self) -> bool {
        self.reason.is_some() || self.from_queue.is_some()
    }

    fn picks(&self, death: &Death) -> bool {
        self.reason.is_none_or(|reason| death.reason == reason)
            && self.from_queue.is_none_or(|queue| death.queue == queue)
    }
}

impl DeathReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeathReason::Rejected => "rejected",
            DeathReason::Expired => "expired",
            DeathReason::Maxlen => "maxlen",
            DeathReason::DeliveryLimit => "delivery_limit",
            DeathReason::Parked => PARKED,
        }
    }
}

pub async fn run(ctx: &Context, api: &Api, args: QueuesDeadLettersArgs) -> Result<Exit> {
    let selection = Selection {
        reason: args.reason.map(DeathReason::as_str),
        from_queue: args.from_queue.as_deref(),
    };
    // A redrive of everything takes every message it can: nothing goes back but the unknown.
    let takes_all = args.redrive && !selection.any();
    let readable = Readable::check(ctx, api, &args.queue, args.force || takes_all).await?;
    match args.redrive {
        true => redrive(ctx, api, &args, &selection, readable).await,
        false => list(ctx, &args, &selection, readable).await,
    }
}

async fn list(
    ctx: &Context,
    args: &QueuesDeadLettersArgs,
    selection: &Selection<'_>,
    readable: Readable,
) -> Result<Exit> {
    let mut groups: BTreeMap<Death, Group> = BTreeMap::new();
    let mut ending = 0;
    let mut add = |delivery: &Delivery| {
        ending += u64::from(readable.ends_when_put_back(delivery));
        let (death, time) = death_of(delivery.properties.headers().as_ref()).unwrap_or_else(|| {
            let unknown = Death {
                queue: UNKNOWN.into(),
                reason: String::new(),
                exchange: String::new(),
                routing_keys: Vec::new(),
            };
            (unknown, None)
        });
        if death.queue == UNKNOWN && selection.any() || !selection.picks(&death) {
            return Ok(());
        }
        groups.entry(death).or_default().add(time);
        Ok(())
    };
    let spinner = ctx.status.progress.waiting("reading");
    let session = Session::connect(ctx, CONNECTION_NAME, &ctx.status).await?;
    let read = match readable {
        Readable::Stream => read_stream(&session, &args.queue, u64::MAX, add).await,
        _ => peek(&session, &args.queue, u64::MAX, |delivery, _| add(delivery)).await,
    };
    session.close().await;
    spinner.finish_and_clear();
    readable.put_back(ctx.status, &args.queue, read?, ending);
    let rows: Vec<(Death, Group)> = groups.into_iter().collect();
    let on_terminal = std::io::stdout().is_terminal();
    let width = on_terminal.then(crate::terminal::table_width).flatten();
    print(render(&rows, args.output, !args.no_headers, width, on_terminal).as_bytes())?;
    Ok(Exit::Success)
}

/// Renders the groups as a table, TSV or a JSON array. Times are RFC 3339, UTC.
/// The last second RFC 3339 can write (9999-12-31T23:59:59Z).
const LAST_RFC3339_SECOND: u64 = 253_402_300_799;

/// An `x-death` time, any 64-bit value a message may carry: RFC 3339 when it is one, else the
/// seconds as they are.
fn death_time(seconds: u64) -> String {
    match seconds <= LAST_RFC3339_SECOND {
        true => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds)).to_string()
        }
        false => format!("{seconds} (seconds since 1970)"),
    }
}

pub fn render(
    rows: &[(Death, Group)],
    format: TableFormat,
    headers: bool,
    width: Option<u16>,
    escape: bool,
) -> String {
    let time = |seconds: Option<u64>| seconds.map(death_time);
    // A table is for people even through a pipe (`| less -R`): message data in it is escaped.
    let escape = escape || format == TableFormat::Table;
    let header = [
        "queue",
        "reason",
        "exchange",
        "routing_keys",
        "count",
        "oldest",
        "newest",
    ];
    if format == TableFormat::Json {
        let rows: Vec<_> = rows
            .iter()
            .map(|(death, group)| {
                json!({
                    "queue": death.queue,
                    "reason": death.reason,
                    "exchange": death.exchange,
                    "routing_keys": death.routing_keys,
                    "count": group.count,
                    "oldest": time(group.oldest),
                    "newest": time(group.newest),
                })
            })
            .collect();
        let mut json = serde_json::to_string_pretty(&rows).expect("rows serialize");
        json.push('\n');
        return json;
    }
    let cells = |(death, group): &(Death, Group)| -> Vec<String> {
        let name = |text: &str| match escape {
            true => escape_controls(text, false).into_owned(),
            false => text.to_string(),
        };
        vec![
            name(&death.queue),
            name(&death.reason),
            match (format, death.exchange.as_str()) {
                (TableFormat::Table, "") if !death.reason.is_empty() => "(default)".into(),
                (_, exchange) => name(exchange),
            },
            name(&death.routing_keys.join(",")),
            group.count.to_string(),
            time(group.oldest).unwrap_or_default(),
            time(group.newest).unwrap_or_default(),
        ]
    };
    match format {
        TableFormat::Tsv => {
            let mut tsv = String::new();
            if headers && !rows.is_empty() {
                tsv.push_str(&header.join("\t"));
                tsv.push('\n');
            }
            for row in rows {
                let fields: Vec<String> = cells(row).iter().map(|c| tsv_escape(c)).collect();
                tsv.push_str(&fields.join("\t"));
                tsv.push('\n');
            }
            tsv
        }
        TableFormat::Table | TableFormat::Json => {
            let mut table = Table::new();
            table.load_style(presets::UTF8_FULL_CONDENSED);
            match width {
                Some(width) => table
                    .set_content_arrangement(ContentArrangement::Dynamic)
                    .set_width(width),
                None => table.set_content_arrangement(ContentArrangement::Disabled),
            };
            if headers {
                table.set_header(header);
            }
            for row in rows {
                table.add_row(cells(row));
            }
            if let Some(column) = table.column_mut(4) {
                column.set_cell_alignment(CellAlignment::Right);
            }
            format!("{table}\n")
        }
    }
}

async fn redrive(
    ctx: &Context,
    api: &Api,
    args: &QueuesDeadLettersArgs,
    selection: &Selection<'_>,
    readable: Readable,
) -> Result<Exit> {
    if readable == Readable::Stream {
        return Err(Error::MoveRefused {
            reason: format!(
                "'{}' is a stream: it keeps what is read, so a redrive would only copy it",
                args.queue
            ),
        });
    }
    let mut interrupts = Interrupts::install().map_err(Error::Runtime)?;
    // What the queue holds now is what the redrive takes, at most: a destination that
    // dead-letters back into it (a TTL of 0, a maximum length of 0) cannot make it endless.
    let session = Session::connect(ctx, CONNECTION_NAME, &ctx.status).await?;
    let ready = session.inspect_queue(&args.queue).await;
    session.close().await;
    let (ready, _) = ready?;
    let mut redrive = Redrive {
        selection,
        via_exchange: args.via_exchange,
        to: BTreeMap::new(),
        bar: ctx.status.progress.waiting("redriving"),
    };
    let plan = Transfer {
        connection_name: CONNECTION_NAME,
        source: &args.queue,
        limit: None,
        at_start: Some(ready.into()),
    };
    let moved = transfer(ctx, &ctx.status, &plan, &mut redrive, &mut interrupts).await;
    redrive.bar.finish_and_clear();
    let moved = moved?;
    let mut lines = String::new();
    for (to, redriven) in &redrive.to {
        lines.push_str(&format!(
            " [x] Redrove {} message(s) to {to}\n",
            redriven.count
        ));
    }
    lines.push_str(&format!(
        " [x] Redrove {} message(s) from queue '{}'\n",
        moved.moved, args.queue
    ));
    print_text(lines.as_bytes())?;
    if moved.republished > 0 {
        ctx.status.warn(format_args!(
            " [!] {} message(s) were published again after the connection was lost: they may \
             have arrived twice",
            moved.republished
        ));
    }
    readable.put_back(ctx.status, &args.queue, moved.left, 0);
    if let Some(more) = moved.more {
        ctx.status.warn(format_args!(
            " [!] queue '{}' holds {more} more message(s): they came in during the redrive \
             (dead-lettered again by where they went, or from a publisher), and a redrive takes \
             no more than the {ready} message(s) the queue held when it began; they are still \
             there",
            args.queue
        ));
    }
    warn_of_expiry(ctx, api, &redrive.to).await;
    match moved.stopped {
        true => Ok(Exit::Stopped(interrupts.first().unwrap_or(Stop::Interrupt))),
        false => Ok(Exit::Success),
    }
}

/// Expired messages sent back to a queue with a message TTL expire again after it.
async fn warn_of_expiry(ctx: &Context, api: &Api, to: &BTreeMap<Destination, Redriven>) {
    let mut expired: BTreeMap<&str, u64> = BTreeMap::new();
    for redriven in to.values() {
        for (queue, count) in &redriven.expired {
            *expired.entry(queue).or_default() += count;
        }
    }
    for (queue, count) in expired {
        match api.queue_facts(ctx.url().vhost(), queue).await {
            Ok(facts) => {
                if let Some(ttl) = facts.message_ttl {
                    ctx.status.warn(format_args!(
                        " [!] {count} expired message(s) went back to queue '{queue}', whose \
                         message TTL is {}: they will expire again unless consumed within it",
                        humantime::format_duration(Duration::from_millis(ttl))
                    ));
                }
            }
            Err(error) => ctx.status.debug(format_args!(
                "cannot ask the TTL of queue '{queue}': {}",
                error.one_line()
            )),
        }
    }
}

/// What went to one destination.
#[derive(Default)]
struct Redriven {
    count: u64,
    /// Expired messages among them, by the queue they expired in.
    expired: BTreeMap<String, u64>,
}

struct Redrive<'a> {
    selection: &'a Selection<'a>,
    via_exchange: bool,
    to: BTreeMap<Destination, Redriven>,
    bar: indicatif::ProgressBar,
}

impl Router for Redrive<'_> {
    fn route(&mut self, delivery: &Delivery) -> Option<Destination> {
        let (death, _) = death_of(delivery.properties.headers().as_ref())?;
        if !self.selection.picks(&death) {
            return None;
        }
        let via = match death.routing_keys.first() {
            Some(key) if self.via_exchange && death.reason != PARKED => Some(key),
            _ => None,
        };
        Some(match via {
            Some(key) => Destination {
                exchange: death.exchange,
                routing_key: key.clone(),
            },
            None => Destination {
                exchange: String::new(),
                routing_key: death.queue,
            },
        })
    }

    fn moved(&mut self, delivery: &Delivery, to: &Destination, _: u32) {
        let redriven = self.to.entry(to.clone()).or_default();
        redriven.count += 1;
        if let Some((death, _)) = death_of(delivery.properties.headers().as_ref())
            && death.reason == "expired"
        {
            *redriven.expired.entry(death.queue).or_default() += 1;
        }
        self.bar.inc(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString};

    fn long(text: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(text))
    }

    fn entry(queue: &str, reason: &str, time: u64, keys: &[&str]) -> AMQPValue {
        let mut table = FieldTable::default();
        table.insert("queue".into(), long(queue));
        table.insert("reason".into(), long(reason));
        table.insert("exchange".into(), long("orders"));
        table.insert("count".into(), AMQPValue::LongLongInt(1));
        table.insert("time".into(), AMQPValue::Timestamp(time));
        let keys: Vec<AMQPValue> = keys.iter().map(|key| long(key)).collect();
        table.insert(
            "routing-keys".into(),
            AMQPValue::FieldArray(FieldArray::from(keys)),
        );
        AMQPValue::FieldTable(table)
    }

    #[test]
    fn the_first_death_is_the_group_even_after_a_later_one() {
        let mut headers = FieldTable::default();
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![
                entry("retry", "expired", 200, &["retry"]),
                entry("orders", "rejected", 100, &["new", "cc"]),
            ])),
        );
        headers.insert("x-first-death-queue".into(), long("orders"));
        headers.insert("x-first-death-reason".into(), long("rejected"));
        headers.insert("x-first-death-exchange".into(), long("shop"));
        let (death, time) = death_of(Some(&headers)).unwrap();
        assert_eq!(
            death,
            Death {
                queue: "orders".into(),
                reason: "rejected".into(),
                exchange: "shop".into(),
                routing_keys: vec!["new".into(), "cc".into()],
            }
        );
        assert_eq!(time, Some(100));
    }

    #[test]
    fn any_64_bit_time_is_shown() {
        assert_eq!(death_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(death_time(LAST_RFC3339_SECOND), "9999-12-31T23:59:59Z");
        assert_eq!(
            death_time(u64::MAX),
            "18446744073709551615 (seconds since 1970)"
        );
        // -1 as the broker's unsigned timestamp.
        assert_eq!(
            death_time(-1i64 as u64),
            "18446744073709551615 (seconds since 1970)"
        );
        let row = |time| {
            let death = Death {
                queue: "q\x1b]0;x\x07".into(),
                reason: "rejected\x1b[2J".into(),
                exchange: String::new(),
                routing_keys: vec!["k\r".into()],
            };
            let group = Group {
                count: 1,
                oldest: Some(time),
                newest: Some(time),
            };
            (death, group)
        };
        for format in [TableFormat::Table, TableFormat::Tsv, TableFormat::Json] {
            let shown = render(&[row(u64::MAX), row(0)], format, true, None, false);
            assert!(shown.contains("18446744073709551615"), "{shown}");
        }
    }

    #[test]
    fn a_table_escapes_control_characters_even_through_a_pipe() {
        let death = Death {
            queue: "q\x1b]0;x\x07".into(),
            reason: "rejected\x1b[2J".into(),
            exchange: "ex\x08".into(),
            routing_keys: vec!["k\r".into()],
        };
        let rows = [(death, Group::default())];
        let table = render(&rows, TableFormat::Table, true, None, false);
        assert!(
            !table.chars().any(|c| c.is_control() && c != '\n'),
            "{table:?}"
        );
        assert!(table.contains("\\x1b[2J"), "{table}");
    }

    #[test]
    fn a_parked_task_dies_in_its_queue() {
        let mut headers = FieldTable::default();
        headers.insert(QUEUE_HEADER.into(), long("task_queue"));
        headers.insert(FAILED_AT_HEADER.into(), long("2026-01-02T03:04:05Z"));
        let (death, time) = death_of(Some(&headers)).unwrap();
        assert_eq!(
            (death.queue.as_str(), death.reason.as_str()),
            ("task_queue", PARKED)
        );
        assert_eq!(time, Some(1_767_323_045));
        assert_eq!(death_of(Some(&FieldTable::default())), None);
        assert_eq!(death_of(None), None);
    }

    #[test]
    fn groups_render_as_table_tsv_and_json() {
        let death = Death {
            queue: "orders".into(),
            reason: "expired".into(),
            exchange: String::new(),
            routing_keys: vec!["orders".into()],
        };
        let mut group = Group::default();
        group.add(Some(100));
        group.add(Some(50));
        group.add(None);
        let rows = vec![(death, group)];
        let tsv = render(&rows, TableFormat::Tsv, true, None, false);
        assert_eq!(
            tsv,
            "queue\treason\texchange\trouting_keys\tcount\toldest\tnewest\n\
             orders\texpired\t\torders\t3\t1970-01-01T00:00:50Z\t1970-01-01T00:01:40Z\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(&rows, TableFormat::Json, true, None, false)).unwrap();
        assert_eq!(json[0]["count"], 3);
        assert_eq!(json[0]["exchange"], "");
        let table = render(&rows, TableFormat::Table, true, None, false);
        assert!(table.contains("(default)"), "{table}");
    }
}
