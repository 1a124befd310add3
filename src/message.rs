//! A whole message — body, routing key, properties and headers — and its JSON form: the one
//! `-o json` prints and `--input json` reads, so that a consumer's output replays exactly.
//!
//! Header values keep natural JSON where it is unambiguous: a string is a long string (`S`),
//! `true`/`false` a boolean, `null` void, an array a field array, an object a field table, a
//! number with a fraction or exponent a double (`d`), and a plain integer a signed 32-bit long-int
//! (`I`) when it fits, else a signed 64-bit long-long-int (`l`) — what pika and the Java client
//! send for an integer. Every other AMQP value is written typed, `{"type":TYPE,"value":VALUE}`:
//!
//! | TYPE | AMQP | VALUE |
//! |---|---|---|
//! | `i8` `u8` `i16` `u16` `u32` | `b` `B` `s` `u` `i` | the integer |
//! | `i32` `i64` | `I` `l` | the integer (written typed only when a plain one would read back as the other width) |
//! | `f32`, `f64` | `f`, `d` | a number, or `"NaN"`, `"inf"`, `"-inf"` (`f64` is typed only for those; shown, never published: RabbitMQ closes the connection on them) |
//! | `decimal` | `D` | a string of digits with at most one point: `"12.50"` is scale 2, value 1250 |
//! | `timestamp` | `T` | seconds since 1970 (as in `x-death`'s `time`) |
//! | `bytes` | `x` | base64 |
//! | `string_base64` | `S` | base64 of a long string that is not UTF-8 |
//! | `table` | `F` | an object: a nested table that has a key `type` of its own |

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use lapin::{
    BasicProperties,
    types::{AMQPValue, DecimalValue, FieldArray, FieldTable, LongString, ShortString},
};
use serde_json::{Map, Number, Value, json};
use std::time::Duration;

/// A message to publish. `properties` is `None` for a plain line: the command's own properties
/// apply; `routing_key` is `None` unless the input gave one (`--input json`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    pub body: Vec<u8>,
    pub routing_key: Option<String>,
    pub properties: Option<Box<BasicProperties>>,
}

impl From<Vec<u8>> for Message {
    fn from(body: Vec<u8>) -> Self {
        Message {
            body,
            routing_key: None,
            properties: None,
        }
    }
}

/// How `--input` reads each input line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    /// each line is a message's body
    #[default]
    Body,
    /// each line is a whole message as `-o json` prints it
    Json,
}

/// What the command line sets on every message (`--header`, `--content-type`...): over what a
/// JSON input line says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stamp {
    pub headers: Vec<(String, AMQPValue)>,
    pub content_type: Option<String>,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    pub expiration: Option<Duration>,
    pub priority: Option<u8>,
}

impl Stamp {
    fn is_empty(&self) -> bool {
        *self == Stamp::default()
    }

    /// `properties` with what this stamp sets.
    pub fn apply(&self, mut properties: BasicProperties) -> BasicProperties {
        if !self.headers.is_empty() {
            let mut headers = properties.headers().clone().unwrap_or_default();
            for (key, value) in &self.headers {
                headers.insert(key.as_str().into(), value.clone());
            }
            properties = properties.with_headers(headers);
        }
        let text = |value: &String| ShortString::from(value.as_str());
        if let Some(value) = &self.content_type {
            properties = properties.with_content_type(text(value));
        }
        if let Some(value) = &self.message_id {
            properties = properties.with_message_id(text(value));
        }
        if let Some(value) = &self.correlation_id {
            properties = properties.with_correlation_id(text(value));
        }
        if let Some(value) = &self.reply_to {
            properties = properties.with_reply_to(text(value));
        }
        if let Some(value) = self.expiration {
            properties = properties.with_expiration(value.as_millis().to_string().into());
        }
        if let Some(value) = self.priority {
            properties = properties.with_priority(value);
        }
        properties
    }
}

/// Turns input into messages: `--input` and the command line's stamp.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MessageForm {
    pub input: InputFormat,
    pub stamp: Stamp,
    /// The user the messages are published as, when known: a line whose `user_id` names
    /// another is refused (the broker would close the channel on it).
    pub user: Option<String>,
}

impl MessageForm {
    /// The message of one input line; the error says why the line is not one.
    pub fn line(&self, line: Vec<u8>) -> Result<Message, String> {
        match self.input {
            InputFormat::Body => Ok(self.body(line)),
            InputFormat::Json => {
                let mut message = from_json(&line)?;
                let user_id = message
                    .properties
                    .as_ref()
                    .and_then(|properties| properties.user_id().clone());
                if let (Some(user_id), Some(user)) = (user_id, &self.user)
                    && user_id.as_str() != user
                {
                    return Err(format!(
                        "its user_id '{}' is not the user rmqlab connects as ('{user}'): \
                         RabbitMQ refuses a message that claims another user",
                        user_id.as_str().escape_debug()
                    ));
                }
                message.properties = message
                    .properties
                    .map(|properties| Box::new(self.stamp.apply(*properties)));
                Ok(message)
            }
        }
    }

    /// A message with this body, stamped.
    pub fn body(&self, body: Vec<u8>) -> Message {
        let mut message = Message::from(body);
        if !self.stamp.is_empty() {
            message.properties = Some(Box::new(self.stamp.apply(BasicProperties::default())));
        }
        message
    }
}

/// `K=V` (a string) or `K:=JSON` (a value in the JSON form above), as `--header` takes it.
pub fn parse_header(text: &str) -> Result<(String, AMQPValue), String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!(
            "'{text}' is not a header: write NAME=TEXT, or NAME:=JSON for another type \
             (n:=3, flag:=true, at:='{{\"type\":\"timestamp\",\"value\":1700000000}}')"
        ));
    };
    let (key, value) = match key.strip_suffix(':') {
        Some(key) => {
            let json: Value = serde_json::from_str(value)
                .map_err(|error| format!("the value of header '{key}' is not JSON: {error}"))?;
            let value =
                value_from_json(&json).map_err(|error| format!("header '{key}': {error}"))?;
            (key, value)
        }
        None => (key, AMQPValue::LongString(value.into())),
    };
    if key.is_empty() {
        return Err(format!("'{text}' has no header name before '='"));
    }
    check_short(key, "a header name")?;
    Ok((key.to_string(), value))
}

fn check_short(text: &str, what: &str) -> Result<(), String> {
    match text.len() {
        len if len > 255 => Err(format!(
            "{what} is {len} bytes long; AMQP takes at most 255"
        )),
        _ => Ok(()),
    }
}

fn typed(kind: &str, value: impl Into<Value>) -> Value {
    json!({ "type": kind, "value": value.into() })
}

/// A header value in the JSON form.
pub fn value_to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(v) => json!(v),
        AMQPValue::ShortShortInt(v) => typed("i8", *v),
        AMQPValue::ShortShortUInt(v) => typed("u8", *v),
        AMQPValue::ShortInt(v) => typed("i16", *v),
        AMQPValue::ShortUInt(v) => typed("u16", *v),
        AMQPValue::LongInt(v) => json!(v),
        AMQPValue::LongUInt(v) => typed("u32", *v),
        AMQPValue::LongLongInt(v) if i32::try_from(*v).is_err() => json!(v),
        AMQPValue::LongLongInt(v) => typed("i64", *v),
        AMQPValue::Float(v) => typed("f32", float_json(f64::from(*v))),
        AMQPValue::Double(v) if v.is_finite() => json!(v),
        AMQPValue::Double(v) => typed("f64", float_json(*v)),
        AMQPValue::DecimalValue(v) => typed("decimal", decimal_text(v)),
        AMQPValue::ShortString(v) => json!(v.as_str()),
        AMQPValue::LongString(v) => match std::str::from_utf8(v.as_bytes()) {
            Ok(text) => json!(text),
            Err(_) => typed("string_base64", BASE64.encode(v.as_bytes())),
        },
        AMQPValue::FieldArray(v) => Value::Array(v.as_slice().iter().map(value_to_json).collect()),
        AMQPValue::Timestamp(v) => typed("timestamp", *v),
        AMQPValue::FieldTable(v) if v.contains_key("type") => typed("table", table_to_json(v)),
        AMQPValue::FieldTable(v) => table_to_json(v),
        AMQPValue::ByteArray(v) => typed("bytes", BASE64.encode(v.as_slice())),
        AMQPValue::Void => Value::Null,
    }
}

fn float_json(value: f64) -> Value {
    match value {
        v if v.is_nan() => json!("NaN"),
        v if v == f64::INFINITY => json!("inf"),
        v if v == f64::NEG_INFINITY => json!("-inf"),
        v => json!(v),
    }
}

fn decimal_text(decimal: &DecimalValue) -> String {
    let digits = decimal.value.to_string();
    let scale = usize::from(decimal.scale);
    if scale == 0 {
        return digits;
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = padded.split_at(padded.len() - scale);
    format!("{whole}.{fraction}")
}

/// A table as a JSON object (headers, and a nested table that needs no `table` type).
pub fn table_to_json(table: &FieldTable) -> Value {
    Value::Object(
        table
            .inner()
            .iter()
            .map(|(key, value)| (key.to_string(), value_to_json(value)))
            .collect(),
    )
}

/// The value a JSON value stands for; the error says why it stands for none.
pub fn value_from_json(json: &Value) -> Result<AMQPValue, String> {
    Ok(match json {
        Value::Null => AMQPValue::Void,
        Value::Bool(v) => AMQPValue::Boolean(*v),
        Value::Number(number) => plain_number(number)?,
        Value::String(text) => AMQPValue::LongString(text.as_str().into()),
        Value::Array(items) => AMQPValue::FieldArray(FieldArray::from(
            items
                .iter()
                .map(value_from_json)
                .collect::<Result<Vec<_>, _>>()?,
        )),
        Value::Object(object) if object.contains_key("type") => typed_from_json(object)?,
        Value::Object(object) => AMQPValue::FieldTable(table_from_json(object)?),
    })
}

fn plain_number(number: &Number) -> Result<AMQPValue, String> {
    if let Some(integer) = number.as_i64() {
        return Ok(match i32::try_from(integer) {
            Ok(small) => AMQPValue::LongInt(small),
            Err(_) => AMQPValue::LongLongInt(integer),
        });
    }
    if number.is_u64() {
        return Err(format!(
            "{number} is larger than AMQP's largest integer (a signed 64-bit one)"
        ));
    }
    number
        .as_f64()
        .map(AMQPValue::Double)
        .ok_or_else(|| format!("{number} is not a number AMQP can carry"))
}

/// A table from a JSON object.
pub fn table_from_json(object: &Map<String, Value>) -> Result<FieldTable, String> {
    let mut table = FieldTable::default();
    for (key, value) in object {
        check_short(key, &format!("key '{key}'"))?;
        let value = value_from_json(value).map_err(|error| format!("'{key}': {error}"))?;
        table.insert(key.as_str().into(), value);
    }
    Ok(table)
}

const TYPES: &str = "i8, u8, i16, u16, i32, u32, i64, f32, f64, decimal, timestamp, bytes, \
                     string_base64, table";

fn typed_from_json(object: &Map<String, Value>) -> Result<AMQPValue, String> {
    let kind = match &object["type"] {
        Value::String(kind) => kind.as_str(),
        other => {
            return Err(format!(
                "\"type\" must be a type name ({TYPES}), not {other}"
            ));
        }
    };
    if let Some(extra) = object.keys().find(|key| *key != "type" && *key != "value") {
        return Err(format!(
            "a typed value has only \"type\" and \"value\", not \"{extra}\" (a table with a key \
             \"type\" is written {{\"type\":\"table\",\"value\":{{...}}}})"
        ));
    }
    let value = object
        .get("value")
        .ok_or_else(|| format!("a {kind} value needs a \"value\""))?;
    let wrong = || format!("{value} is not a {kind} value");
    fn integer<T: TryFrom<i64>>(value: &Value) -> Option<T> {
        value.as_i64().and_then(|v| T::try_from(v).ok())
    }
    let base64 = || {
        value
            .as_str()
            .and_then(|text| BASE64.decode(text).ok())
            .ok_or_else(|| format!("{value} is not base64"))
    };
    Ok(match kind {
        "i8" => AMQPValue::ShortShortInt(integer(value).ok_or_else(wrong)?),
        "u8" => AMQPValue::ShortShortUInt(integer(value).ok_or_else(wrong)?),
        "i16" => AMQPValue::ShortInt(integer(value).ok_or_else(wrong)?),
        "u16" => AMQPValue::ShortUInt(integer(value).ok_or_else(wrong)?),
        "i32" => AMQPValue::LongInt(integer(value).ok_or_else(wrong)?),
        "u32" => AMQPValue::LongUInt(integer(value).ok_or_else(wrong)?),
        "i64" => AMQPValue::LongLongInt(value.as_i64().ok_or_else(wrong)?),
        "f32" => AMQPValue::Float(finite(
            kind,
            float_from_json(value).ok_or_else(wrong)? as f32,
        )?),
        "f64" => AMQPValue::Double(finite(kind, float_from_json(value).ok_or_else(wrong)?)?),
        "decimal" => {
            AMQPValue::DecimalValue(value.as_str().and_then(decimal_from_text).ok_or_else(
                || format!("{value} is not a decimal: write a string like \"12.50\""),
            )?)
        }
        "timestamp" => {
            AMQPValue::Timestamp(value.as_u64().ok_or_else(|| {
                format!("{value} is not a timestamp: write the seconds since 1970")
            })?)
        }
        "bytes" => AMQPValue::ByteArray(base64()?.into()),
        "string_base64" => AMQPValue::LongString(LongString::from(base64()?)),
        "table" => match value {
            Value::Object(table) => AMQPValue::FieldTable(table_from_json(table)?),
            _ => return Err(wrong()),
        },
        other => return Err(format!("unknown type \"{other}\" (the types: {TYPES})")),
    })
}

/// A float to publish: NaN and the infinities are shown (`-o json`), never sent, for RabbitMQ
/// 3.x closes the connection on a message that carries one.
fn finite<F: Into<f64> + Copy>(kind: &str, value: F) -> Result<F, String> {
    let wide: f64 = value.into();
    match wide.is_finite() {
        true => Ok(value),
        false => Err(format!(
            "{} is not published: RabbitMQ closes the connection on a message with a NaN or \
             infinite {kind} in it",
            float_json(wide)
                .as_str()
                .map_or_else(|| wide.to_string(), str::to_string)
        )),
    }
}

fn float_from_json(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => match text.as_str() {
            "NaN" => Some(f64::NAN),
            "inf" => Some(f64::INFINITY),
            "-inf" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

fn decimal_from_text(text: &str) -> Option<DecimalValue> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let all_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    Some(DecimalValue {
        scale: u8::try_from(fraction.len()).ok()?,
        value: format!("{whole}{fraction}").parse().ok()?,
    })
}

/// The properties that are set, as a JSON object.
pub fn properties_to_json(p: &BasicProperties) -> Map<String, Value> {
    let mut map = Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            map.insert(key.into(), value);
        }
    };
    let text = |s: &Option<ShortString>| s.as_ref().map(|s| json!(s.as_str()));
    put("content_type", text(p.content_type()));
    put("content_encoding", text(p.content_encoding()));
    put("headers", p.headers().as_ref().map(table_to_json));
    put("delivery_mode", p.delivery_mode().map(|v| json!(v)));
    put("priority", p.priority().map(|v| json!(v)));
    put("correlation_id", text(p.correlation_id()));
    put("reply_to", text(p.reply_to()));
    put("expiration", text(p.expiration()));
    put("message_id", text(p.message_id()));
    put("timestamp", p.timestamp().map(|v| json!(v)));
    put("type", text(p.kind()));
    put("user_id", text(p.user_id()));
    put("app_id", text(p.app_id()));
    put("cluster_id", text(p.cluster_id()));
    map
}

/// Properties from the JSON object [`properties_to_json`] writes.
pub fn properties_from_json(object: &Map<String, Value>) -> Result<BasicProperties, String> {
    let mut p = BasicProperties::default();
    for (key, value) in object {
        let text = || -> Result<ShortString, String> {
            let text = value
                .as_str()
                .ok_or_else(|| format!("property {key} must be a string, not {value}"))?;
            check_short(text, &format!("property {key}"))?;
            Ok(text.into())
        };
        let octet = || {
            value
                .as_u64()
                .and_then(|v| u8::try_from(v).ok())
                .ok_or_else(|| format!("property {key} must be a number from 0 to 255"))
        };
        p = match key.as_str() {
            "content_type" => p.with_content_type(text()?),
            "content_encoding" => p.with_content_encoding(text()?),
            "headers" => match value {
                Value::Object(headers) => p.with_headers(
                    table_from_json(headers).map_err(|error| format!("header {error}"))?,
                ),
                _ => return Err(format!("headers must be an object, not {value}")),
            },
            // RabbitMQ closes the channel on any other (after the lines before were sent):
            // refused here, at its line.
            "delivery_mode" => match octet()? {
                mode @ (1 | 2) => p.with_delivery_mode(mode),
                mode => {
                    return Err(format!(
                        "property delivery_mode must be 1 (transient) or 2 (persistent), not \
                         {mode}"
                    ));
                }
            },
            "priority" => p.with_priority(octet()?),
            "correlation_id" => p.with_correlation_id(text()?),
            "reply_to" => p.with_reply_to(text()?),
            "expiration" => {
                let expiration = text()?;
                let digits = expiration
                    .as_str()
                    .strip_prefix('+')
                    .unwrap_or(expiration.as_str());
                if digits.is_empty()
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                    || digits.parse::<u64>().is_err()
                {
                    return Err(format!(
                        "property expiration must be milliseconds as a string of digits (\"60000\"), \
                         not {value}"
                    ));
                }
                p.with_expiration(expiration)
            }
            "message_id" => p.with_message_id(text()?),
            "timestamp" => p.with_timestamp(value.as_u64().ok_or_else(|| {
                format!("property timestamp must be the seconds since 1970, not {value}")
            })?),
            "type" => p.with_type(text()?),
            "user_id" => p.with_user_id(text()?),
            "app_id" => p.with_app_id(text()?),
            "cluster_id" => p.with_cluster_id(text()?),
            other => return Err(format!("unknown property \"{other}\"")),
        };
    }
    Ok(p)
}

/// A received message's body in JSON: `body` is its text (lossy when it is not UTF-8, and then
/// `body_base64` carries the exact bytes).
pub fn body_to_json(object: &mut Map<String, Value>, body: &[u8]) {
    object.insert(
        "body".into(),
        String::from_utf8_lossy(body).into_owned().into(),
    );
    if std::str::from_utf8(body).is_err() {
        object.insert("body_base64".into(), BASE64.encode(body).into());
    }
}

/// A message from one line as `-o json` prints it: `body_base64` (when present) or `body`,
/// `routing_key` and `properties`; the delivery's other fields (exchange, redelivered,
/// delivery_tag...) are not the message's and are left.
pub fn from_json(line: &[u8]) -> Result<Message, String> {
    let json: Value = serde_json::from_slice(line).map_err(|error| {
        // serde's own position counts lines of the one line: give the column alone.
        let text = error.to_string();
        let reason = text
            .strip_suffix(&format!(
                " at line {} column {}",
                error.line(),
                error.column()
            ))
            .unwrap_or(&text);
        format!("not JSON: {reason} (column {})", error.column())
    })?;
    let Value::Object(object) = json else {
        return Err(format!("not a JSON object but {}", kind_of(&json)));
    };
    check_keys(&object)?;
    let body = match (object.get("body_base64"), object.get("body")) {
        (Some(Value::String(encoded)), _) => BASE64
            .decode(encoded)
            .map_err(|error| format!("body_base64 is not base64: {error}"))?,
        (Some(other), _) => return Err(format!("body_base64 must be a string, not {other}")),
        (None, Some(Value::String(text))) => text.clone().into_bytes(),
        (None, Some(other)) => return Err(format!("body must be a string, not {other}")),
        (None, None) => return Err("it has neither \"body\" nor \"body_base64\"".into()),
    };
    let routing_key = match object.get("routing_key") {
        None => None,
        Some(Value::String(key)) => {
            check_short(key, "routing_key")?;
            Some(key.clone())
        }
        Some(other) => return Err(format!("routing_key must be a string, not {other}")),
    };
    let properties = match object.get("properties") {
        None => BasicProperties::default(),
        Some(Value::Object(properties)) => properties_from_json(properties)?,
        Some(other) => return Err(format!("properties must be an object, not {other}")),
    };
    Ok(Message {
        body,
        routing_key,
        properties: Some(Box::new(properties)),
    })
}

/// The keys of a message line: the message's own, and what rmqlab's consumers print beside it
/// (`-o json` of a delivery, a stream message, an RPC reply), which are not the message's and
/// are left. Anything else is a mistake said at its line, not ignored.
const MESSAGE_KEYS: &[&str] = &["body", "body_base64", "routing_key", "properties"];
const PRINTED_KEYS: &[&str] = &[
    "exchange",
    "redelivered",
    "delivery_tag",
    "stream",
    "offset",
    "timestamp",
    "timestamp_ms",
    "request",
    "round_trip_ms",
];
/// The properties `properties` holds, to say so when one is beside the body.
const PROPERTY_KEYS: &[&str] = &[
    "content_type",
    "content_encoding",
    "headers",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "type",
    "user_id",
    "app_id",
    "cluster_id",
];

fn check_keys(object: &Map<String, Value>) -> Result<(), String> {
    for key in object.keys() {
        let key = key.as_str();
        if MESSAGE_KEYS.contains(&key) || PRINTED_KEYS.contains(&key) {
            continue;
        }
        let shown = key.escape_debug();
        return Err(match PROPERTY_KEYS.contains(&key) {
            true => format!(
                "\"{shown}\" is a property: write it inside \"properties\" \
                 ({{\"body\":...,\"properties\":{{\"{shown}\":...}}}})"
            ),
            false => format!(
                "unknown key \"{shown}\" (a message line has body or body_base64, routing_key \
                 and properties)"
            ),
        });
    }
    Ok(())
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// What an `--exec` command finds in its environment about the delivery it handles: every
/// variable is set, empty when the delivery has no such value. The prefix is not one rmqlab
/// reads settings from, so a handler that runs rmqlab itself is not configured by them.
pub const EXEC_VARIABLES: &[(&str, &str)] = &[
    (
        "RMQLAB_MSG_ROUTING_KEY",
        "the routing key it was published with",
    ),
    (
        "RMQLAB_MSG_EXCHANGE",
        "the exchange it was published to (empty: the default exchange)",
    ),
    (
        "RMQLAB_MSG_REDELIVERED",
        "1 when the broker delivered it before, else 0",
    ),
    (
        "RMQLAB_MSG_DELIVERY_COUNT",
        "the header x-delivery-count (quorum queues count earlier deliveries); 0 when it is \
         absent and the message is not redelivered, empty when it is absent on a redelivery \
         (a classic queue does not count)",
    ),
    ("RMQLAB_MSG_MESSAGE_ID", "the message_id property"),
    ("RMQLAB_MSG_CORRELATION_ID", "the correlation_id property"),
    ("RMQLAB_MSG_REPLY_TO", "the reply_to property"),
    ("RMQLAB_MSG_CONTENT_TYPE", "the content_type property"),
    (
        "RMQLAB_MSG_HEADERS",
        "the headers as a JSON object, typed values as in -o json ({} when none)",
    ),
];

/// A header value of any AMQP integer width, as an `i64`; `None` for any other type.
pub fn header_int(value: &AMQPValue) -> Option<i64> {
    Some(match *value {
        AMQPValue::ShortShortInt(v) => v.into(),
        AMQPValue::ShortShortUInt(v) => v.into(),
        AMQPValue::ShortInt(v) => v.into(),
        AMQPValue::ShortUInt(v) => v.into(),
        AMQPValue::LongInt(v) => v.into(),
        AMQPValue::LongUInt(v) => v.into(),
        AMQPValue::LongLongInt(v) => v,
        _ => return None,
    })
}

/// The variables of [`EXEC_VARIABLES`] for `delivery`.
pub fn exec_environment(delivery: &lapin::message::Delivery) -> Vec<(&'static str, String)> {
    let properties = &delivery.properties;
    let text =
        |value: &Option<ShortString>| value.as_ref().map_or_else(String::new, |v| v.to_string());
    let headers = properties.headers().clone().unwrap_or_default();
    let delivery_count = match headers.inner().get("x-delivery-count") {
        Some(count) => match value_to_json(count) {
            Value::Object(typed) => typed["value"].to_string(),
            plain => plain.to_string(),
        },
        None if delivery.redelivered => String::new(),
        None => "0".into(),
    };
    let values = [
        delivery.routing_key.to_string(),
        delivery.exchange.to_string(),
        u8::from(delivery.redelivered).to_string(),
        delivery_count,
        text(properties.message_id()),
        text(properties.correlation_id()),
        text(properties.reply_to()),
        text(properties.content_type()),
        table_to_json(&headers).to_string(),
    ];
    EXEC_VARIABLES
        .iter()
        .zip(values)
        // An environment cannot hold a NUL byte: one in a routing key or property would keep
        // the command from starting.
        .map(|((name, _), value)| (*name, value.replace('\0', "\u{fffd}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every AMQP value a broker can send, each of which must come back as the same variant.
    fn every_value() -> FieldTable {
        let mut death = FieldTable::default();
        death.insert("count".into(), AMQPValue::LongLongInt(1));
        death.insert("reason".into(), AMQPValue::LongString("rejected".into()));
        death.insert("time".into(), AMQPValue::Timestamp(1_764_000_000));
        death.insert(
            "routing-keys".into(),
            AMQPValue::FieldArray(vec![AMQPValue::LongString("task_queue".into())].into()),
        );
        let mut typed_table = FieldTable::default();
        typed_table.insert("type".into(), AMQPValue::LongString("order".into()));
        let mut headers = FieldTable::default();
        let values = [
            ("bool", AMQPValue::Boolean(true)),
            ("i8", AMQPValue::ShortShortInt(-8)),
            ("u8", AMQPValue::ShortShortUInt(200)),
            ("i16", AMQPValue::ShortInt(-16_000)),
            ("u16", AMQPValue::ShortUInt(60_000)),
            ("i32", AMQPValue::LongInt(-5)),
            ("u32", AMQPValue::LongUInt(4_000_000_000)),
            ("i64 small", AMQPValue::LongLongInt(7)),
            ("i64 big", AMQPValue::LongLongInt(-9_000_000_000)),
            ("f32", AMQPValue::Float(0.1)),
            ("f64", AMQPValue::Double(2.0)),
            (
                "decimal",
                AMQPValue::DecimalValue(DecimalValue {
                    scale: 3,
                    value: 1205,
                }),
            ),
            (
                "tiny decimal",
                AMQPValue::DecimalValue(DecimalValue { scale: 4, value: 5 }),
            ),
            ("text", AMQPValue::LongString("héllo".into())),
            ("binary text", AMQPValue::LongString(vec![0xff, 0].into())),
            ("bytes", AMQPValue::ByteArray(vec![0, 1, 0xfe].into())),
            ("when", AMQPValue::Timestamp(1_700_000_000)),
            ("void", AMQPValue::Void),
            (
                "x-death",
                AMQPValue::FieldArray(vec![AMQPValue::FieldTable(death)].into()),
            ),
            ("typed table", AMQPValue::FieldTable(typed_table)),
        ];
        for (key, value) in values {
            headers.insert(key.into(), value);
        }
        headers
    }

    /// Equality that holds for NaN too, as the wire keeps its bits.
    fn same(a: &FieldTable, b: &FieldTable) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }

    #[test]
    fn every_value_comes_back_as_the_same_variant() {
        let headers = every_value();
        let json = table_to_json(&headers);
        let text = serde_json::to_string(&json).unwrap();
        let back: Value = serde_json::from_str(&text).unwrap();
        let table = table_from_json(back.as_object().unwrap()).unwrap();
        assert!(same(&table, &headers), "{table:?}\n!=\n{headers:?}");
    }

    #[test]
    fn natural_json_stays_natural() {
        let json = table_to_json(&every_value());
        assert_eq!(json["bool"], true);
        assert_eq!(json["i32"], -5);
        assert_eq!(json["i64 big"], -9_000_000_000i64);
        assert_eq!(json["f64"], 2.0);
        assert_eq!(json["text"], "héllo");
        assert_eq!(json["void"], Value::Null);
        assert_eq!(json["i64 small"], json!({"type":"i64","value":7}));
        assert_eq!(json["decimal"], json!({"type":"decimal","value":"1.205"}));
        assert_eq!(
            json["tiny decimal"],
            json!({"type":"decimal","value":"0.0005"})
        );
        assert_eq!(json["bytes"], json!({"type":"bytes","value":"AAH+"}));
        assert_eq!(
            json["x-death"][0]["time"],
            json!({"type":"timestamp","value":1_764_000_000})
        );
        assert_eq!(
            json["typed table"],
            json!({"type":"table","value":{"type":"order"}})
        );
    }

    #[test]
    fn bad_values_say_why() {
        let error = |json: Value| value_from_json(&json).unwrap_err();
        assert!(error(json!({"type":"u8","value":300})).contains("not a u8"));
        assert!(error(json!({"type":"date","value":1})).contains("unknown type \"date\""));
        assert!(error(json!({"type":"i8"})).contains("needs a \"value\""));
        assert!(error(json!({"type":"bytes","value":"%%"})).contains("not base64"));
        assert!(error(json!({"type":"decimal","value":"-1.5"})).contains("not a decimal"));
        assert!(error(json!(u64::MAX)).contains("larger than"));
        for kind in ["f32", "f64"] {
            for value in ["NaN", "inf", "-inf"] {
                let why = error(json!({"type":kind,"value":value}));
                assert!(
                    why.contains("closes the connection"),
                    "{kind} {value}: {why}"
                );
            }
        }
        // Too large for an f32: it would be sent as an infinity.
        assert!(error(json!({"type":"f32","value":1e300})).contains("inf"));
    }

    #[test]
    fn non_finite_floats_are_shown_typed() {
        let mut headers = FieldTable::default();
        headers.insert("nan".into(), AMQPValue::Double(f64::NAN));
        headers.insert("inf".into(), AMQPValue::Float(f32::NEG_INFINITY));
        let json = table_to_json(&headers);
        assert_eq!(json["nan"], json!({"type":"f64","value":"NaN"}));
        assert_eq!(json["inf"], json!({"type":"f32","value":"-inf"}));
    }

    #[test]
    fn headers_are_text_unless_json_is_asked_for() {
        assert_eq!(
            parse_header("a=b=c"),
            Ok(("a".into(), AMQPValue::LongString("b=c".into())))
        );
        assert_eq!(
            parse_header("n:=3"),
            Ok(("n".into(), AMQPValue::LongInt(3)))
        );
        assert_eq!(
            parse_header("at:={\"type\":\"timestamp\",\"value\":5}"),
            Ok(("at".into(), AMQPValue::Timestamp(5)))
        );
        assert!(parse_header("novalue").unwrap_err().contains("NAME=TEXT"));
        assert!(parse_header("=v").unwrap_err().contains("no header name"));
        assert!(parse_header("n:=nope").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn a_key_at_the_wrong_level_or_unknown_is_refused() {
        let error = |line: &str| from_json(line.as_bytes()).unwrap_err();
        assert!(
            error(r#"{"body":"b","headers":{"n":1}}"#)
                .contains("\"headers\" is a property: write it inside \"properties\""),
        );
        assert!(error(r#"{"body":"b","message_id":"m"}"#).contains("is a property"));
        assert!(error(r#"{"body":"b","bdy":"x"}"#).contains("unknown key \"bdy\""));
        // What consumers print beside a message is left, as before.
        let printed = r#"{"body":"b","exchange":"","redelivered":false,"delivery_tag":1,"stream":"s","offset":3,"timestamp":"2026-01-01T00:00:00.000Z","timestamp_ms":1,"request":"r","round_trip_ms":1.5,"properties":{}}"#;
        assert_eq!(from_json(printed.as_bytes()).unwrap().body, b"b");
    }

    #[test]
    fn a_json_line_is_a_whole_message_and_the_stamp_wins() {
        let form = MessageForm {
            input: InputFormat::Json,
            stamp: Stamp {
                headers: vec![("replayed".into(), AMQPValue::Boolean(true))],
                priority: Some(9),
                ..Stamp::default()
            },
            user: None,
        };
        let line = br#"{"body":"lossy","body_base64":"/w==","routing_key":"k","exchange":"x","delivery_tag":3,"properties":{"priority":1,"message_id":"m","headers":{"n":1}}}"#;
        let message = form.line(line.to_vec()).unwrap();
        assert_eq!(message.body, b"\xff");
        assert_eq!(message.routing_key.as_deref(), Some("k"));
        let properties = message.properties.unwrap();
        assert_eq!(*properties.priority(), Some(9));
        assert_eq!(properties.message_id().as_ref().unwrap().as_str(), "m");
        let headers = properties.headers().clone().unwrap();
        assert_eq!(headers.inner()["n"], AMQPValue::LongInt(1));
        assert_eq!(headers.inner()["replayed"], AMQPValue::Boolean(true));
        let error = |line: &str| form.line(line.as_bytes().to_vec()).unwrap_err();
        assert!(error("{").contains("not JSON"));
        assert!(error("[1]").contains("not a JSON object but an array"));
        assert!(error("{\"routing_key\":\"k\"}").contains("neither"));
        assert!(
            error("{\"body\":\"\",\"properties\":{\"colour\":\"red\"}}")
                .contains("unknown property")
        );
    }

    #[test]
    fn a_plain_line_carries_the_stamp_only_when_there_is_one() {
        let plain = MessageForm::default();
        assert_eq!(
            plain.line(b"x".to_vec()).unwrap(),
            Message::from(b"x".to_vec())
        );
        let stamped = MessageForm {
            stamp: Stamp {
                expiration: Some(Duration::from_secs(2)),
                ..Stamp::default()
            },
            ..MessageForm::default()
        };
        let message = stamped.line(b"x".to_vec()).unwrap();
        assert_eq!(
            message
                .properties
                .unwrap()
                .expiration()
                .as_ref()
                .unwrap()
                .as_str(),
            "2000"
        );
    }
}
