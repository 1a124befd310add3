//! Pure formatting of what rmqlab prints on stdout: the tutorial's lines, raw bodies, JSON lines.

use crate::{
    amqp::stream::StreamMessage,
    cli::{OutputFormat, QueueColumn, TableFormat},
    management::QueueRow,
    message::{body_to_json, properties_to_json},
};
use comfy_table::{CellAlignment, ContentArrangement, Table, presets};
use lapin::BasicProperties;
use serde_json::{Map, Value, json};
use std::io::{self, Write};

/// A received message, independent of the client library's delivery type.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub body: &'a [u8],
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub redelivered: bool,
    pub delivery_tag: u64,
    pub properties: &'a BasicProperties,
}

impl<'a> From<&'a lapin::message::Delivery> for Received<'a> {
    fn from(delivery: &'a lapin::message::Delivery) -> Self {
        Received {
            body: &delivery.data,
            exchange: delivery.exchange.as_str(),
            routing_key: delivery.routing_key.as_str(),
            redelivered: delivery.redelivered,
            delivery_tag: delivery.delivery_tag,
            properties: &delivery.properties,
        }
    }
}

/// What a publisher prints once the broker confirmed a message: ` [x] Sent 'MESSAGE'`, or
/// with the routing key, ` [x] Sent KEY:MESSAGE` (tutorials 4 and 5).
pub fn write_sent(out: &mut impl Write, key: Option<&str>, body: &[u8]) -> io::Result<()> {
    match key {
        None => {
            out.write_all(b" [x] Sent '")?;
            write_lossy(out, body)?;
            out.write_all(b"'\n")
        }
        Some(key) => {
            write!(out, " [x] Sent {key}:")?;
            write_lossy(out, body)?;
            out.write_all(b"\n")
        }
    }
}

/// A consumer's line for each message in text mode, as its tutorial prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextLine {
    /// A marker, then the body: ` [x] Received ` (tutorials 1 and 2), ` [x] ` (tutorial 3).
    Body(&'static str),
    /// ` [x] KEY:MESSAGE`, with the message's routing key (tutorials 4 and 5).
    KeyAndBody,
}

/// Writes one received message in the chosen format; `text` is the line of text mode.
pub fn write_received(
    out: &mut impl Write,
    format: OutputFormat,
    text: TextLine,
    message: &Received<'_>,
) -> io::Result<()> {
    match format {
        OutputFormat::Text => {
            match text {
                TextLine::Body(marker) => out.write_all(marker.as_bytes())?,
                TextLine::KeyAndBody => write!(out, " [x] {}:", message.routing_key)?,
            }
            write_lossy(out, message.body)?;
        }
        OutputFormat::Body => out.write_all(message.body)?,
        OutputFormat::Json => serde_json::to_writer(&mut *out, &to_json(message))?,
    }
    out.write_all(b"\n")
}

/// Writes bytes as UTF-8, replacing invalid sequences, without allocating for valid text.
fn write_lossy(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    for chunk in bytes.utf8_chunks() {
        out.write_all(chunk.valid().as_bytes())?;
        if !chunk.invalid().is_empty() {
            out.write_all(char::REPLACEMENT_CHARACTER.to_string().as_bytes())?;
        }
    }
    Ok(())
}

/// The JSON form of a message (see [`crate::message`]). `body` is the text of the body (lossy
/// when it is not UTF-8, in which case `body_base64` carries the exact bytes); `properties` holds
/// only the properties set.
pub fn to_json(message: &Received<'_>) -> Value {
    let mut object = Map::new();
    body_to_json(&mut object, message.body);
    object.insert("exchange".into(), message.exchange.into());
    object.insert("routing_key".into(), message.routing_key.into());
    object.insert("redelivered".into(), message.redelivered.into());
    object.insert("delivery_tag".into(), message.delivery_tag.into());
    object.insert(
        "properties".into(),
        Value::Object(properties_to_json(message.properties)),
    );
    Value::Object(object)
}

/// How `queues list` prints its rows.
#[derive(Debug, Clone, Copy)]
pub struct QueueTable<'a> {
    /// The columns, in order.
    pub columns: &'a [QueueColumn],
    pub format: TableFormat,
    pub headers: bool,
    /// Width to fit a table into (a terminal's); `None` never wraps.
    pub width: Option<u16>,
    /// With `--watch`: each row's change in ready messages since the last refresh (`None` for a
    /// queue that was not there).
    pub ready_change: Option<&'a [Option<i64>]>,
    /// With `--watch` on a terminal: each row's sparkline of its ready messages.
    pub depth: Option<&'a [String]>,
}

const READY_CHANGE: &str = "ready_change";
const DEPTH: &str = "depth";

/// A sparkline of `values`, one character each, from the lowest to the highest of them (all
/// the lowest bar when they are equal).
pub fn sparkline(values: impl IntoIterator<Item = u64> + Clone) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let (low, high) = values
        .clone()
        .into_iter()
        .fold((u64::MAX, 0), |(low, high), v| (low.min(v), high.max(v)));
    values
        .into_iter()
        .map(|v| match high > low {
            true => BARS[(((v - low) * 7 + (high - low) / 2) / (high - low)).min(7) as usize],
            false => BARS[0],
        })
        .collect()
}

/// The default columns of `queues list`; `vhost` first when the listing spans vhosts.
pub fn default_queue_columns(with_vhost: bool) -> Vec<QueueColumn> {
    let mut columns = Vec::with_capacity(5);
    if with_vhost {
        columns.push(QueueColumn::Vhost);
    }
    columns.extend([
        QueueColumn::Name,
        QueueColumn::MessagesReady,
        QueueColumn::MessagesUnacknowledged,
        QueueColumn::Consumers,
    ]);
    columns
}

impl QueueColumn {
    /// The column's name: the management API's field name.
    pub fn api_name(self) -> &'static str {
        match self {
            QueueColumn::Vhost => "vhost",
            QueueColumn::Name => "name",
            QueueColumn::Type => "type",
            QueueColumn::State => "state",
            QueueColumn::Durable => "durable",
            QueueColumn::Messages => "messages",
            QueueColumn::MessagesReady => "messages_ready",
            QueueColumn::MessagesUnacknowledged => "messages_unacknowledged",
            QueueColumn::Consumers => "consumers",
            QueueColumn::Memory => "memory",
            QueueColumn::Node => "node",
            QueueColumn::Leader => "leader",
            QueueColumn::Members => "members",
            QueueColumn::Online => "online",
            QueueColumn::PublishRate => "publish_rate",
            QueueColumn::DeliverRate => "deliver_rate",
            QueueColumn::AckRate => "ack_rate",
        }
    }

    /// The field to ask the management API for (`columns=`): the column's name, or for a rate
    /// its place in the queue's statistics.
    pub fn api_field(self) -> &'static str {
        match self {
            QueueColumn::PublishRate => "message_stats.publish_details.rate",
            QueueColumn::DeliverRate => "message_stats.deliver_get_details.rate",
            QueueColumn::AckRate => "message_stats.ack_details.rate",
            other => other.api_name(),
        }
    }

    /// A rate column's messages per second, `None` for a queue without a sample yet; `None`
    /// (outer) for any other column.
    fn rate(self, row: &QueueRow) -> Option<Option<f64>> {
        let stats = row.message_stats.as_ref();
        let rate =
            |pick: fn(&crate::management::MessageStats) -> Option<crate::management::Rate>| {
                stats.and_then(pick).map(|rate| rate.rate)
            };
        Some(match self {
            QueueColumn::PublishRate => rate(|s| s.publish_details),
            QueueColumn::DeliverRate => rate(|s| s.deliver_get_details),
            QueueColumn::AckRate => rate(|s| s.ack_details),
            _ => return None,
        })
    }

    /// Whether the column holds numbers (right-aligned in a table).
    fn is_number(self) -> bool {
        let row = QueueRow::default();
        self.count(&row).is_some() || self.rate(&row).is_some()
    }

    /// Whether the column needs every queue's statistics (the slow, lagging listing).
    pub fn needs_stats(self) -> bool {
        matches!(
            self,
            QueueColumn::Memory
                | QueueColumn::PublishRate
                | QueueColumn::DeliverRate
                | QueueColumn::AckRate
        )
    }

    fn count(self, row: &QueueRow) -> Option<Option<u64>> {
        Some(match self {
            QueueColumn::Messages => row.messages,
            QueueColumn::MessagesReady => row.messages_ready,
            QueueColumn::MessagesUnacknowledged => row.messages_unacknowledged,
            QueueColumn::Consumers => row.consumers,
            QueueColumn::Memory => row.memory,
            _ => return None,
        })
    }

    fn value(self, row: &QueueRow) -> Cell<'_> {
        if let Some(count) = self.count(row) {
            return Cell::Number(count.unwrap_or(0));
        }
        if let Some(rate) = self.rate(row) {
            // Tenths of a message per second: enough for a rate, and it sorts as a number.
            return Cell::Rate((rate.unwrap_or(0.0).max(0.0) * 10.0).round() as u64);
        }
        fn text(text: &Option<String>) -> Cell<'_> {
            Cell::Text(text.as_deref().unwrap_or("").into())
        }
        fn list(list: &Option<Vec<String>>) -> Cell<'_> {
            Cell::Text(list.as_ref().map_or(String::new(), |l| l.join(",")).into())
        }
        match self {
            QueueColumn::Vhost => Cell::Text(row.vhost.as_str().into()),
            QueueColumn::Name => Cell::Text(row.name.as_str().into()),
            QueueColumn::Type => text(&row.kind),
            QueueColumn::State => text(&row.state),
            QueueColumn::Durable => Cell::Text(match row.durable {
                Some(true) => "true".into(),
                Some(false) => "false".into(),
                None => "".into(),
            }),
            QueueColumn::Node => text(&row.node),
            QueueColumn::Leader => text(&row.leader),
            QueueColumn::Members => list(&row.members),
            QueueColumn::Online => list(&row.online),
            _ => unreachable!("counts are handled above"),
        }
    }

    /// The column's value in JSON: `null` for what the broker did not report.
    fn json(self, row: &QueueRow) -> Value {
        if let Some(count) = self.count(row) {
            return json!(count);
        }
        if let Some(rate) = self.rate(row) {
            return json!(rate);
        }
        match self {
            QueueColumn::Vhost => json!(row.vhost),
            QueueColumn::Name => json!(row.name),
            QueueColumn::Type => json!(row.kind),
            QueueColumn::State => json!(row.state),
            QueueColumn::Durable => json!(row.durable),
            QueueColumn::Node => json!(row.node),
            QueueColumn::Leader => json!(row.leader),
            QueueColumn::Members => json!(row.members),
            QueueColumn::Online => json!(row.online),
            _ => unreachable!("counts are handled above"),
        }
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Cell<'a> {
    Text(std::borrow::Cow<'a, str>),
    Number(u64),
    /// Tenths of a message per second.
    Rate(u64),
}

impl std::fmt::Display for Cell<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Text(text) => f.write_str(text),
            Cell::Number(number) => write!(f, "{number}"),
            Cell::Rate(tenths) => write!(f, "{}.{}/s", tenths / 10, tenths % 10),
        }
    }
}

/// Orders rows by vhost and name, or by `column` first (ties by vhost and name).
pub fn sort_queues(rows: &mut [QueueRow], column: Option<QueueColumn>, reverse: bool) {
    rows.sort_by(|a, b| {
        let first = column.map_or(std::cmp::Ordering::Equal, |c| c.value(a).cmp(&c.value(b)));
        first
            .then_with(|| a.vhost.cmp(&b.vhost))
            .then_with(|| a.name.cmp(&b.name))
    });
    if reverse {
        rows.reverse();
    }
}

/// Renders queue rows as a table, TSV or JSON. An empty list is a header-only table, no TSV
/// at all, and `[]` in JSON. Missing numbers are 0 in tables and TSV, `null` in JSON. In a
/// table, a replicated queue with members that are not running has `! ` before its online
/// list (or its members, when online is not shown).
pub fn render_queues(rows: &[QueueRow], table: &QueueTable<'_>) -> String {
    let columns = table.columns;
    if table.format == TableFormat::Json {
        // One object at a time: a listing of any size is never held as JSON values.
        let objects = rows.iter().map(|row| {
            let object = columns
                .iter()
                .map(|c| (c.api_name().to_string(), c.json(row)))
                .collect();
            Value::Object(object)
        });
        let mut json = Vec::new();
        serde::Serializer::collect_seq(&mut serde_json::Serializer::pretty(&mut json), objects)
            .expect("rows serialize");
        json.push(b'\n');
        return String::from_utf8(json).expect("JSON is UTF-8");
    }
    let mut header: Vec<&str> = columns.iter().map(|c| c.api_name()).collect();
    if table.ready_change.is_some() {
        header.push(READY_CHANGE);
    }
    if table.depth.is_some() {
        header.push(DEPTH);
    }
    let marked = [QueueColumn::Online, QueueColumn::Members]
        .into_iter()
        .find(|c| columns.contains(c))
        .filter(|_| table.format == TableFormat::Table);
    let cells = |index: usize, row: &QueueRow| -> Vec<String> {
        let mut cells: Vec<String> = columns
            .iter()
            .map(|&c| match c.value(row) {
                cell if Some(c) == marked && row.degraded() => format!("! {cell}"),
                cell => cell.to_string(),
            })
            .collect();
        if let Some(changes) = table.ready_change {
            cells.push(match changes.get(index).copied().flatten() {
                Some(change) if change > 0 => format!("+{change}"),
                Some(change) => change.to_string(),
                None => String::new(),
            });
        }
        if let Some(depth) = table.depth {
            cells.push(depth.get(index).cloned().unwrap_or_default());
        }
        cells
    };
    match table.format {
        TableFormat::Json => unreachable!("rendered above"),
        TableFormat::Tsv => {
            if rows.is_empty() {
                return String::new();
            }
            let mut tsv = String::new();
            if table.headers {
                tsv.push_str(&header.join("\t"));
                tsv.push('\n');
            }
            for (index, row) in rows.iter().enumerate() {
                let fields: Vec<String> = cells(index, row).iter().map(|c| tsv_escape(c)).collect();
                tsv.push_str(&fields.join("\t"));
                tsv.push('\n');
            }
            tsv
        }
        TableFormat::Table => {
            // Numbers read best right-aligned.
            let right: Vec<bool> = columns
                .iter()
                .map(|c| c.is_number())
                .chain(table.ready_change.map(|_| true))
                .chain(table.depth.map(|_| false))
                .collect();
            let row = |index: usize| cells(index, &rows[index]);
            let plain = match table.width {
                None => plain_table(&header, &right, table.headers, rows.len(), row),
                Some(_) => None,
            };
            plain.unwrap_or_else(|| comfy(&header, &right, table, rows.len(), row))
        }
    }
}

/// The table drawn by comfy-table, which also fits one to a terminal's width.
fn comfy(
    header: &[&str],
    right: &[bool],
    table: &QueueTable<'_>,
    count: usize,
    row: impl Fn(usize) -> Vec<String>,
) -> String {
    let mut out = Table::new();
    out.load_style(presets::UTF8_FULL_CONDENSED);
    match table.width {
        Some(width) => {
            out.set_content_arrangement(ContentArrangement::Dynamic)
                .set_width(width);
        }
        None => {
            out.set_content_arrangement(ContentArrangement::Disabled);
        }
    }
    if table.headers {
        out.set_header(header);
    }
    for index in 0..count {
        out.add_row(row(index));
    }
    for (index, &right) in right.iter().enumerate() {
        if let (true, Some(column)) = (right, out.column_mut(index)) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    format!("{out}\n")
}

/// The same table as [`comfy`] without a width to fit, drawn a row at a time: comfy-table holds
/// every cell several times over, 49 MB for 20,000 queues. `None` for what only comfy-table
/// lays out: a cell of several lines, an empty column without a header.
fn plain_table(
    header: &[&str],
    right: &[bool],
    headers: bool,
    count: usize,
    row: impl Fn(usize) -> Vec<String>,
) -> Option<String> {
    use unicode_width::UnicodeWidthStr;
    let mut widths = vec![0; header.len()];
    if headers {
        for (width, name) in widths.iter_mut().zip(header) {
            *width = name.width();
        }
    }
    for index in 0..count {
        for (width, cell) in widths.iter_mut().zip(row(index)) {
            if cell.contains(['\n', '\r']) {
                return None;
            }
            *width = (*width).max(cell.width());
        }
    }
    if widths.contains(&0) {
        return None;
    }
    let mut out = String::new();
    let rule = |out: &mut String, [left, fill, cross, end]: [&str; 4]| {
        out.push_str(left);
        for (index, width) in widths.iter().enumerate() {
            if index > 0 {
                out.push_str(cross);
            }
            out.push_str(&fill.repeat(width + 2));
        }
        out.push_str(end);
        out.push('\n');
    };
    let line = |out: &mut String, cells: &[&str]| {
        out.push('│');
        for (index, cell) in cells.iter().enumerate() {
            let pad = " ".repeat(widths[index] - cell.width());
            out.push(' ');
            match right[index] {
                true => out.extend([pad.as_str(), cell]),
                false => out.extend([*cell, pad.as_str()]),
            }
            out.push(' ');
            out.push(if index + 1 == cells.len() {
                '│'
            } else {
                '┆'
            });
        }
        out.push('\n');
    };
    rule(&mut out, ["┌", "─", "┬", "┐"]);
    if headers {
        line(&mut out, header);
        rule(&mut out, ["╞", "═", "╪", "╡"]);
    }
    for index in 0..count {
        let cells = row(index);
        line(
            &mut out,
            &cells.iter().map(String::as_str).collect::<Vec<_>>(),
        );
    }
    rule(&mut out, ["└", "─", "┴", "┘"]);
    Some(out)
}

/// Keeps one row a line: tabs, newlines and backslashes in names are escaped.
pub fn tsv_escape(field: &str) -> String {
    field
        .replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
}

/// One message read from a stream: the tutorial's line (`Got message: BODY with offset: N`),
/// the body alone, or JSON with the offset and the chunk's timestamp (RFC 3339, UTC, with
/// milliseconds, and as milliseconds since the Unix epoch).
pub fn write_stream_message(
    out: &mut impl Write,
    format: OutputFormat,
    stream: &str,
    message: &StreamMessage<'_>,
) -> io::Result<()> {
    let StreamMessage {
        offset,
        timestamp,
        body,
    } = *message;
    match format {
        OutputFormat::Text => {
            out.write_all(b"Got message: ")?;
            write_lossy(out, body)?;
            write!(out, " with offset: {offset}")?;
        }
        OutputFormat::Body => out.write_all(body)?,
        OutputFormat::Json => {
            let mut object = Map::new();
            body_to_json(&mut object, body);
            object.insert("stream".into(), stream.into());
            object.insert("offset".into(), offset.into());
            if let Some(millis) = timestamp {
                let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis);
                object.insert(
                    "timestamp".into(),
                    humantime::format_rfc3339_millis(time).to_string().into(),
                );
                object.insert("timestamp_ms".into(), millis.into());
            }
            serde_json::to_writer(&mut *out, &Value::Object(object))?;
        }
    }
    out.write_all(b"\n")
}

/// `stream info`: one `field: value` line each.
pub fn write_stream_info(
    out: &mut impl Write,
    stream: &str,
    info: &crate::amqp::stream::StreamInfo,
) -> io::Result<()> {
    let offset =
        |offset: Option<u64>| offset.map_or("(none: empty)".to_string(), |o| o.to_string());
    writeln!(out, "stream:       {stream}")?;
    writeln!(out, "leader:       {}", info.leader)?;
    match info.replicas.is_empty() {
        true => writeln!(out, "replicas:     (none)")?,
        false => writeln!(out, "replicas:     {}", info.replicas.join(", "))?,
    }
    writeln!(out, "first offset: {}", offset(info.first))?;
    writeln!(
        out,
        "last offset:  {} (last message of the last chunk)",
        offset(info.last)
    )?;
    for (name, stored) in &info.consumers {
        match stored {
            Some(stored) => writeln!(out, "consumer '{name}': stored offset {stored}")?,
            None => writeln!(out, "consumer '{name}': no stored offset")?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{AMQPValue, FieldTable};

    #[test]
    fn a_sparkline_spans_the_lowest_to_the_highest_value() {
        assert_eq!(sparkline([0, 7, 14]), "▁▅█");
        assert_eq!(sparkline([5, 5, 5]), "▁▁▁");
        assert_eq!(sparkline([3, 1, 2, 10]), "▃▁▂█");
        assert_eq!(sparkline(std::iter::empty()), "");
    }

    #[test]
    fn rates_show_in_tenths_and_sort_as_numbers() {
        use crate::management::{MessageStats, Rate};
        let row = |name: &str, rate: Option<f64>| QueueRow {
            name: name.into(),
            message_stats: Some(MessageStats {
                publish_details: rate.map(|rate| Rate { rate }),
                ..MessageStats::default()
            }),
            ..QueueRow::default()
        };
        let mut rows = vec![row("a", Some(12.34)), row("b", Some(9.96)), row("c", None)];
        sort_queues(&mut rows, Some(QueueColumn::PublishRate), false);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["c", "b", "a"]);
        let columns = [QueueColumn::Name, QueueColumn::PublishRate];
        let table = QueueTable {
            columns: &columns,
            format: TableFormat::Tsv,
            headers: true,
            width: None,
            ready_change: None,
            depth: None,
        };
        assert_eq!(
            render_queues(&rows, &table),
            "name\tpublish_rate\nc\t0.0/s\nb\t10.0/s\na\t12.3/s\n"
        );
        let json = render_queues(
            &rows,
            &QueueTable {
                format: TableFormat::Json,
                ..table
            },
        );
        let parsed: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed[0]["publish_rate"], Value::Null);
        assert_eq!(parsed[2]["publish_rate"], json!(12.34));
    }

    fn render(format: OutputFormat, text: TextLine, message: &Received<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        write_received(&mut out, format, text, message).unwrap();
        out
    }

    fn message<'a>(body: &'a [u8], properties: &'a BasicProperties) -> Received<'a> {
        Received {
            body,
            exchange: "",
            routing_key: "task_queue",
            redelivered: false,
            delivery_tag: 7,
            properties,
        }
    }

    #[test]
    fn text_is_the_tutorial_line() {
        let props = BasicProperties::default();
        let m = message(b"Hello World!", &props);
        assert_eq!(
            render(OutputFormat::Text, TextLine::Body(" [x] Received "), &m),
            b" [x] Received Hello World!\n"
        );
        assert_eq!(
            render(OutputFormat::Text, TextLine::Body(" [x] "), &m),
            b" [x] Hello World!\n"
        );
        assert_eq!(
            render(OutputFormat::Text, TextLine::KeyAndBody, &m),
            b" [x] task_queue:Hello World!\n"
        );
        let mut out = Vec::new();
        write_sent(&mut out, None, b"First message.").unwrap();
        assert_eq!(out, b" [x] Sent 'First message.'\n");
        let mut out = Vec::new();
        write_sent(&mut out, Some("kern.critical"), b"A critical kernel error").unwrap();
        assert_eq!(out, b" [x] Sent kern.critical:A critical kernel error\n");
    }

    #[test]
    fn body_is_exact_bytes() {
        let props = BasicProperties::default();
        let m = message(b"\xff\x00raw", &props);
        assert_eq!(
            render(OutputFormat::Body, TextLine::KeyAndBody, &m),
            b"\xff\x00raw\n"
        );
        assert_eq!(
            render(OutputFormat::Text, TextLine::Body(" [x] "), &m),
            " [x] \u{fffd}\0raw\n".as_bytes()
        );
    }

    #[test]
    fn json_has_the_fields_and_set_properties_only() {
        let mut headers = FieldTable::default();
        headers.insert("attempt".into(), AMQPValue::LongInt(2));
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("text/plain".into())
            .with_headers(headers);
        let m = message(b"a \"quoted\" task.", &props);
        let line = String::from_utf8(render(OutputFormat::Json, TextLine::KeyAndBody, &m)).unwrap();
        assert_eq!(
            line,
            "{\"body\":\"a \\\"quoted\\\" task.\",\"exchange\":\"\",\"routing_key\":\"task_queue\",\
             \"redelivered\":false,\"delivery_tag\":7,\"properties\":{\"content_type\":\
             \"text/plain\",\"headers\":{\"attempt\":2},\"delivery_mode\":2}}\n"
        );
    }

    #[test]
    fn json_stays_valid_for_binary_bodies() {
        let props = BasicProperties::default();
        let m = message(b"\xff\xfe", &props);
        let value: Value =
            serde_json::from_slice(&render(OutputFormat::Json, TextLine::KeyAndBody, &m)).unwrap();
        assert_eq!(value["body_base64"], "//4=");
        assert_eq!(value["body"], "\u{fffd}\u{fffd}");
    }

    fn rows() -> Vec<QueueRow> {
        vec![
            QueueRow {
                vhost: "/".into(),
                name: "task_queue".into(),
                messages_ready: Some(12),
                messages_unacknowledged: Some(1),
                consumers: Some(2),
                ..QueueRow::default()
            },
            QueueRow {
                vhost: "shop".into(),
                name: "fresh".into(),
                ..QueueRow::default()
            },
        ]
    }

    const DEFAULT: [QueueColumn; 5] = [
        QueueColumn::Vhost,
        QueueColumn::Name,
        QueueColumn::MessagesReady,
        QueueColumn::MessagesUnacknowledged,
        QueueColumn::Consumers,
    ];

    fn layout(format: TableFormat) -> QueueTable<'static> {
        QueueTable {
            columns: &DEFAULT,
            format,
            headers: true,
            width: None,
            ready_change: None,
            depth: None,
        }
    }

    #[test]
    fn tsv_has_one_row_a_line_and_zero_for_missing_numbers() {
        assert_eq!(
            render_queues(&rows(), &layout(TableFormat::Tsv)),
            "vhost\tname\tmessages_ready\tmessages_unacknowledged\tconsumers\n\
             /\ttask_queue\t12\t1\t2\n\
             shop\tfresh\t0\t0\t0\n"
        );
        let no_headers = QueueTable {
            headers: false,
            columns: &DEFAULT[1..],
            ..layout(TableFormat::Tsv)
        };
        assert_eq!(
            render_queues(&rows()[..1], &no_headers),
            "task_queue\t12\t1\t2\n"
        );
        assert_eq!(render_queues(&[], &layout(TableFormat::Tsv)), "");
    }

    #[test]
    fn tsv_escapes_tabs_and_newlines_in_names() {
        let mut odd = rows();
        odd[0].name = "a\tb\nc".into();
        let out = render_queues(
            &odd[..1],
            &QueueTable {
                headers: false,
                ..layout(TableFormat::Tsv)
            },
        );
        assert_eq!(out, "/\ta\\tb\\nc\t12\t1\t2\n");
    }

    #[test]
    fn json_keeps_api_names_and_nulls() {
        let out = render_queues(&rows(), &layout(TableFormat::Json));
        let value: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value[0]["messages_ready"], 12);
        assert_eq!(value[1]["messages_ready"], Value::Null);
        assert_eq!(value[1]["vhost"], "shop");
        assert_eq!(render_queues(&[], &layout(TableFormat::Json)), "[]\n");
    }

    #[test]
    fn table_is_bordered_and_right_aligns_numbers() {
        let out = render_queues(&rows(), &layout(TableFormat::Table));
        assert_eq!(
            out,
            "\
┌───────┬────────────┬────────────────┬─────────────────────────┬───────────┐
│ vhost ┆ name       ┆ messages_ready ┆ messages_unacknowledged ┆ consumers │
╞═══════╪════════════╪════════════════╪═════════════════════════╪═══════════╡
│ /     ┆ task_queue ┆             12 ┆                       1 ┆         2 │
│ shop  ┆ fresh      ┆              0 ┆                       0 ┆         0 │
└───────┴────────────┴────────────────┴─────────────────────────┴───────────┘
"
        );
    }

    #[test]
    fn table_fits_a_narrow_terminal() {
        let narrow = QueueTable {
            width: Some(50),
            ..layout(TableFormat::Table)
        };
        let out = render_queues(&rows(), &narrow);
        for line in out.lines() {
            assert!(line.chars().count() <= 50, "{line:?} is wider than 50");
        }
        assert!(
            out.contains("task_queue") || out.contains("task_que"),
            "{out}"
        );
    }

    #[test]
    fn watch_shows_the_change_in_ready_messages() {
        let changes = [Some(5), None];
        let watching = QueueTable {
            ready_change: Some(&changes),
            depth: None,
            ..layout(TableFormat::Tsv)
        };
        let out = render_queues(&rows(), &watching);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].ends_with("\tready_change"));
        assert!(lines[1].ends_with("\t+5"));
        assert!(
            lines[2].ends_with("\t0\t"),
            "a new queue has no change yet: {:?}",
            lines[2]
        );
    }

    /// A quorum queue with one of three members down, and a classic queue.
    fn placed() -> Vec<QueueRow> {
        let nodes = |n: &[&str]| Some(n.iter().map(|n| n.to_string()).collect());
        vec![
            QueueRow {
                vhost: "/".into(),
                name: "orders".into(),
                kind: Some("quorum".into()),
                leader: Some("rmq2@h".into()),
                members: nodes(&["rmq1@h", "rmq2@h", "rmq3@h"]),
                online: nodes(&["rmq2@h", "rmq3@h"]),
                ..QueueRow::default()
            },
            QueueRow {
                vhost: "/".into(),
                name: "log".into(),
                kind: Some("classic".into()),
                node: Some("rmq1@h".into()),
                durable: Some(true),
                ..QueueRow::default()
            },
        ]
    }

    #[test]
    fn chosen_columns_show_placement_and_mark_a_degraded_queue() {
        let columns = [
            QueueColumn::Name,
            QueueColumn::Type,
            QueueColumn::Leader,
            QueueColumn::Members,
            QueueColumn::Online,
        ];
        let chosen = |format| QueueTable {
            columns: &columns,
            ..layout(format)
        };
        assert_eq!(
            render_queues(&placed(), &chosen(TableFormat::Tsv)),
            "name\ttype\tleader\tmembers\tonline\n\
             orders\tquorum\trmq2@h\trmq1@h,rmq2@h,rmq3@h\trmq2@h,rmq3@h\n\
             log\tclassic\t\t\t\n"
        );
        let table = render_queues(&placed(), &chosen(TableFormat::Table));
        assert!(
            table.contains("┆ ! rmq2@h,rmq3@h │"),
            "the online list is marked:\n{table}"
        );
        assert_eq!(table.matches('!').count(), 1, "{table}");
        let members_only = [QueueColumn::Name, QueueColumn::Members];
        let table = render_queues(
            &placed(),
            &QueueTable {
                columns: &members_only,
                ..layout(TableFormat::Table)
            },
        );
        assert!(table.contains("! rmq1@h,rmq2@h,rmq3@h"), "{table}");
        let json: Value =
            serde_json::from_str(&render_queues(&placed(), &chosen(TableFormat::Json))).unwrap();
        assert_eq!(
            json[0],
            json!({"name": "orders", "type": "quorum", "leader": "rmq2@h",
                   "members": ["rmq1@h", "rmq2@h", "rmq3@h"], "online": ["rmq2@h", "rmq3@h"]})
        );
        assert_eq!(json[1]["members"], Value::Null);
        let durable = [QueueColumn::Durable, QueueColumn::Node, QueueColumn::Memory];
        let json: Value = serde_json::from_str(&render_queues(
            &placed(),
            &QueueTable {
                columns: &durable,
                ..layout(TableFormat::Json)
            },
        ))
        .unwrap();
        assert_eq!(
            json[1],
            json!({"durable": true, "node": "rmq1@h", "memory": null})
        );
    }

    #[test]
    fn the_plain_table_is_comfy_tables_without_its_memory() {
        let mut odd = placed();
        // The `!` of a degraded queue is rmqlab's own: not in comfy's cells below.
        odd[0].online = odd[0].members.clone();
        odd[1].name = "ünïcode 名前".into();
        odd.extend(rows());
        let changes = [Some(3), None, Some(-1), Some(0)];
        let all = [
            QueueColumn::Vhost,
            QueueColumn::Name,
            QueueColumn::Type,
            QueueColumn::Durable,
            QueueColumn::MessagesReady,
            QueueColumn::Memory,
            QueueColumn::Members,
            QueueColumn::Online,
        ];
        for headers in [true, false] {
            for ready_change in [None, Some(&changes[..])] {
                for columns in [&all[..], &DEFAULT[..], &all[1..2]] {
                    let table = QueueTable {
                        columns,
                        headers,
                        ready_change,
                        ..layout(TableFormat::Table)
                    };
                    let plain = render_queues(&odd, &table);
                    let mut right: Vec<bool> = columns
                        .iter()
                        .map(|c| c.count(&QueueRow::default()).is_some())
                        .collect();
                    let mut header: Vec<&str> = columns.iter().map(|c| c.api_name()).collect();
                    if ready_change.is_some() {
                        right.push(true);
                        header.push(READY_CHANGE);
                    }
                    let drawn = comfy(&header, &right, &table, odd.len(), |index| {
                        let plain = render_queues(
                            &odd[index..=index],
                            &QueueTable {
                                format: TableFormat::Tsv,
                                headers: false,
                                ready_change: ready_change.map(|c| &c[index..=index]),
                                ..table
                            },
                        );
                        plain
                            .trim_end_matches('\n')
                            .split('\t')
                            .map(str::to_string)
                            .collect()
                    });
                    assert_eq!(plain, drawn, "headers {headers}, {columns:?}");
                }
            }
        }
        let multiline = [QueueRow {
            name: "two\nlines".into(),
            ..QueueRow::default()
        }];
        let table = render_queues(&multiline, &layout(TableFormat::Table));
        assert!(
            table.contains("┆ lines ┆"),
            "comfy-table lays it out:\n{table}"
        );
    }

    #[test]
    fn sorting_by_a_number_breaks_ties_by_name() {
        let mut sorted = rows();
        sorted.push(QueueRow {
            name: "another".into(),
            ..sorted[0].clone()
        });
        sort_queues(&mut sorted, Some(QueueColumn::MessagesReady), true);
        let names: Vec<&str> = sorted.iter().map(|row| row.name.as_str()).collect();
        assert_eq!(names, ["task_queue", "another", "fresh"]);
        sort_queues(&mut sorted, None, false);
        let names: Vec<&str> = sorted.iter().map(|row| row.name.as_str()).collect();
        assert_eq!(names, ["another", "task_queue", "fresh"]);
    }
}
