//! Whole messages in and out: `-o json | --input json` replays every AMQP value and property,
//! each publish flag reaches the consumer, `--exec` handlers see the delivery in RMQLAB_MSG_*
//! variables, and bad input is refused as documented.

use crate::common::{
    Running, TestExchange, TestQueue, assert_code, broker, rmq, run, text, wait_output,
};
use lapin::{
    BasicProperties,
    message::BasicGetMessage,
    options::{BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions},
    types::{AMQPValue, DecimalValue, FieldArray, FieldTable, ShortString},
};
use std::{collections::BTreeMap, process::Stdio, time::Duration};

const WAIT: Duration = Duration::from_secs(30);

/// Takes `count` messages from `queue` (acked), failing when fewer are there.
fn take(queue: &str, count: usize) -> Vec<BasicGetMessage> {
    broker::block_on(async {
        let connection = broker::connect().await;
        let channel = connection.create_channel().await.unwrap();
        let mut messages = Vec::new();
        while messages.len() < count {
            match channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                Some(message) => messages.push(message),
                None => panic!("{queue} holds {} message(s), not {count}", messages.len()),
            }
        }
        let _ = connection.close(200, "OK".into()).await;
        messages
    })
}

/// The bodies of `count` messages taken from `queue`, as text.
fn bodies(queue: &str, count: usize) -> Vec<String> {
    take(queue, count)
        .iter()
        .map(|message| text(&message.delivery.data))
        .collect()
}

/// A dead-lettered message's `x-death` as RabbitMQ writes it, and every other width of value.
fn every_kind_of_header() -> FieldTable {
    let text = |value: &str| AMQPValue::LongString(value.into());
    let mut death = FieldTable::default();
    death.insert("count".into(), AMQPValue::LongLongInt(1));
    death.insert("reason".into(), text("rejected"));
    death.insert("queue".into(), text("orders"));
    death.insert("time".into(), AMQPValue::Timestamp(1_764_000_000));
    death.insert("exchange".into(), text(""));
    death.insert(
        "routing-keys".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![text("orders")])),
    );
    let mut nested = FieldTable::default();
    nested.insert("type".into(), text("a key named type"));
    nested.insert("deep".into(), AMQPValue::ShortInt(-2));
    let mut headers = FieldTable::default();
    for (key, value) in [
        (
            "x-death",
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        ),
        ("i8", AMQPValue::ShortShortInt(-8)),
        ("u8", AMQPValue::ShortShortUInt(250)),
        ("i16", AMQPValue::ShortInt(-16_000)),
        ("u16", AMQPValue::ShortUInt(65_000)),
        ("i32", AMQPValue::LongInt(-2_000_000_000)),
        ("u32", AMQPValue::LongUInt(4_000_000_000)),
        ("i64 small", AMQPValue::LongLongInt(64)),
        ("i64 large", AMQPValue::LongLongInt(-9_000_000_000_000)),
        ("bytes", AMQPValue::ByteArray(vec![0, 1, 0xfe, 0xff].into())),
        (
            "binary text",
            AMQPValue::LongString(vec![0xc3, 0x28].into()),
        ),
        ("f32", AMQPValue::Float(1.5)),
        ("f64", AMQPValue::Double(-0.1)),
        (
            "decimal",
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 1250,
            }),
        ),
        ("flag", AMQPValue::Boolean(true)),
        ("nothing", AMQPValue::Void),
        ("nested", AMQPValue::FieldTable(nested)),
        ("word", text("héllo")),
    ] {
        headers.insert(key.into(), value);
    }
    headers
}

fn every_property() -> BasicProperties {
    let short = |value: &str| ShortString::from(value);
    BasicProperties::default()
        .with_content_type(short("application/octet-stream"))
        .with_content_encoding(short("identity"))
        .with_headers(every_kind_of_header())
        .with_delivery_mode(2)
        .with_priority(3)
        .with_correlation_id(short("corr-1"))
        .with_reply_to(short("answers"))
        .with_expiration(short("600000"))
        .with_message_id(short("msg-1"))
        .with_timestamp(1_700_000_000)
        .with_type(short("order.created"))
        .with_app_id(short("shop"))
}

/// Compares two header tables value by value, naming the first that differs.
fn assert_same_headers(got: &FieldTable, expected: &FieldTable) {
    let got: &BTreeMap<ShortString, AMQPValue> = got.inner();
    for (key, value) in expected.inner() {
        assert_eq!(got.get(key), Some(value), "header {key}");
    }
    assert_eq!(got.len(), expected.inner().len(), "headers: {got:?}");
}

#[test]
fn json_output_replayed_as_input_reproduces_bodies_headers_and_properties() {
    // Classic queues: a quorum queue adds its own x-delivery-count header to what it delivers.
    let source = TestQueue::new("messages_replay_source");
    let target = TestQueue::new("messages_replay_target");
    broker::declare(source.name(), true).unwrap();
    let binary = b"\xff\x00not utf-8\xfe".to_vec();
    broker::publish_message("", source.name(), &binary, every_property());
    broker::publish_message(
        "",
        source.name(),
        "plain, with \"quotes\" and ünïcode".as_bytes(),
        BasicProperties::default(),
    );
    let heard = rmq(
        &format!("hello recv --queue {source} --count 2 -o json"),
        None,
    );
    assert_code(&heard, 0);
    let first: serde_json::Value =
        serde_json::from_str(text(&heard.stdout).lines().next().unwrap()).unwrap();
    // The typed form, as documented.
    let headers = &first["properties"]["headers"];
    assert_eq!(
        headers["x-death"][0]["time"],
        serde_json::json!({"type": "timestamp", "value": 1_764_000_000})
    );
    assert_eq!(
        headers["x-death"][0]["count"],
        serde_json::json!({"type": "i64", "value": 1})
    );
    assert_eq!(headers["i32"], -2_000_000_000);
    assert_eq!(
        headers["bytes"],
        serde_json::json!({"type": "bytes", "value": "AAH+/w=="})
    );
    assert_eq!(first["body_base64"], "/wBub3QgdXRmLTj+");

    let replayed = run(
        &[
            "hello",
            "send",
            "--queue",
            target.name(),
            "--queue-type",
            "classic",
            "--input",
            "json",
        ],
        Some(&heard.stdout),
    );
    assert_code(&replayed, 0);
    let messages = take(target.name(), 2);
    assert_eq!(messages[0].delivery.data, binary);
    let got = &messages[0].delivery.properties;
    assert_same_headers(
        got.headers().as_ref().expect("headers"),
        &every_kind_of_header(),
    );
    assert_eq!(*got, every_property(), "every property, exactly");
    assert_eq!(
        text(&messages[1].delivery.data),
        "plain, with \"quotes\" and ünïcode"
    );
    assert_eq!(messages[1].delivery.properties, BasicProperties::default());
}

#[test]
fn an_emitter_replays_each_line_with_its_own_routing_key() {
    let exchange = TestExchange::new("messages_keys");
    let q = TestQueue::new("messages_keys");
    broker::declare_quorum(q.name());
    broker::block_on(async {
        let connection = broker::connect().await;
        let channel = connection.create_channel().await.unwrap();
        channel
            .exchange_declare(
                exchange.0.as_str().into(),
                lapin::ExchangeKind::Direct,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                q.name().into(),
                exchange.0.as_str().into(),
                "wanted".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let _ = connection.close(200, "OK".into()).await;
    });
    let lines = "{\"body\":\"not for us\",\"routing_key\":\"other\"}\n\
                 {\"body\":\"for us\",\"routing_key\":\"wanted\"}\n\
                 {\"body\":\"keyless\"}\n";
    let emitted = run(
        &[
            "routing",
            "emit",
            "--exchange",
            &exchange.0,
            "--input",
            "json",
            "wanted",
        ],
        Some(lines.as_bytes()),
    );
    assert_code(&emitted, 0);
    assert_eq!(
        text(&emitted.stdout),
        " [x] Sent other:not for us\n [x] Sent wanted:for us\n [x] Sent wanted:keyless\n"
    );
    // The note names the key the dropped message had.
    let stderr = text(&emitted.stderr);
    assert!(
        stderr.contains(&format!(
            "no queue is bound to exchange '{exchange}' for routing key 'other': message dropped"
        )),
        "{stderr}"
    );
    // The line without a key took the command's SEVERITY.
    assert_eq!(bodies(q.name(), 2), ["for us", "keyless"]);
    assert_eq!(broker::ready(q.name()), 0);
}

#[test]
fn every_publish_flag_reaches_the_consumer() {
    let q = TestQueue::new("messages_flags");
    let sent = run(
        &[
            "task",
            "new",
            "--queue",
            q.name(),
            "--queue-type",
            "classic",
            "--header",
            "text=a=b",
            "--header",
            "n:=3",
            "--header",
            "big:=5000000000",
            "--header",
            "at:={\"type\":\"timestamp\",\"value\":1700000000}",
            "--header",
            "tags:=[\"x\",{\"type\":\"u8\",\"value\":7}]",
            "--content-type",
            "text/plain",
            "--message-id",
            "id-42",
            "--correlation-id",
            "corr-42",
            "--reply-to",
            "replies",
            "--expiration",
            "90s",
            "--priority",
            "7",
            "the",
            "task",
        ],
        None,
    );
    assert_code(&sent, 0);
    let message = &take(q.name(), 1)[0];
    assert_eq!(text(&message.delivery.data), "the task");
    let mut headers = FieldTable::default();
    headers.insert("text".into(), AMQPValue::LongString("a=b".into()));
    headers.insert("n".into(), AMQPValue::LongInt(3));
    headers.insert("big".into(), AMQPValue::LongLongInt(5_000_000_000));
    headers.insert("at".into(), AMQPValue::Timestamp(1_700_000_000));
    headers.insert(
        "tags".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::LongString("x".into()),
            AMQPValue::ShortShortUInt(7),
        ])),
    );
    let expected = BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_headers(headers)
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id("corr-42".into())
        .with_reply_to("replies".into())
        .with_expiration("90000".into())
        .with_message_id("id-42".into());
    assert_eq!(message.delivery.properties, expected);
}

#[test]
fn flags_beside_input_json_win_over_the_line() {
    let q = TestQueue::new("messages_flags_win");
    let line = "{\"body\":\"b\",\"properties\":{\"priority\":1,\"message_id\":\"kept\",\
                \"delivery_mode\":1,\"headers\":{\"h\":\"line\",\"other\":\"kept\"}}}\n";
    let sent = run(
        &[
            "task",
            "new",
            "--queue",
            q.name(),
            "--input",
            "json",
            "--header",
            "h=flag",
            "--priority",
            "9",
        ],
        Some(line.as_bytes()),
    );
    assert_code(&sent, 0);
    let properties = take(q.name(), 1)[0].delivery.properties.clone();
    assert_eq!(*properties.priority(), Some(9));
    assert_eq!(properties.message_id().as_ref().unwrap().as_str(), "kept");
    // The line's delivery mode wins over task new's persistent default.
    assert_eq!(*properties.delivery_mode(), Some(1));
    let headers = properties.headers().clone().unwrap();
    assert_eq!(headers.inner()["h"], AMQPValue::LongString("flag".into()));
    assert_eq!(
        headers.inner()["other"],
        AMQPValue::LongString("kept".into())
    );
    // The words on the command line are one such line.
    let words = run(
        &[
            "task",
            "new",
            "--queue",
            q.name(),
            "--input",
            "json",
            "{\"body\":",
            "\"from words\"}",
        ],
        None,
    );
    assert_code(&words, 0);
    assert_eq!(text(&take(q.name(), 1)[0].delivery.data), "from words");
}

#[test]
fn a_bad_json_line_stops_there_after_publishing_the_lines_before_it() {
    let q = TestQueue::new("messages_bad_line");
    let input =
        "{\"body\":\"one\"}\n{\"body\":\"two\"}\n{\"body\":\"three\",\n{\"body\":\"four\"}\n";
    let sent = run(
        &["hello", "send", "--queue", q.name(), "--input", "json"],
        Some(input.as_bytes()),
    );
    assert_code(&sent, 65);
    let stderr = text(&sent.stderr);
    assert!(
        stderr.contains("publishing stopped after 2 confirmed message(s)")
            && stderr.contains("line 3 of standard input is not a message: not JSON"),
        "{stderr}"
    );
    assert_eq!(bodies(q.name(), 2), ["one", "two"]);
    assert_eq!(broker::ready(q.name()), 0, "nothing after the bad line");

    let typed = run(
        &["hello", "send", "--queue", q.name(), "--input", "json"],
        Some(b"{\"body\":\"x\",\"properties\":{\"headers\":{\"n\":{\"type\":\"u8\",\"value\":300}}}}\n"),
    );
    assert_code(&typed, 65);
    assert!(
        text(&typed.stderr).contains(
            "line 1 of standard input is not a message: header 'n': 300 is not a u8 value"
        ),
        "{}",
        text(&typed.stderr)
    );
    assert_eq!(broker::ready(q.name()), 0);
}

#[test]
fn a_user_id_of_another_user_is_refused_before_publishing() {
    let q = TestQueue::new("messages_user_id");
    let user = url::Url::parse(&crate::common::broker_url())
        .unwrap()
        .username()
        .to_string();
    let input = format!(
        "{{\"body\":\"mine\",\"properties\":{{\"user_id\":\"{user}\"}}}}\n\
         {{\"body\":\"theirs\",\"properties\":{{\"user_id\":\"someone-else\"}}}}\n"
    );
    let sent = run(
        &["hello", "send", "--queue", q.name(), "--input", "json"],
        Some(input.as_bytes()),
    );
    assert_code(&sent, 65);
    let stderr = text(&sent.stderr);
    assert!(
        stderr.contains(&format!(
            "line 2 of standard input is not a message: its user_id 'someone-else' is not the \
             user rmqlab connects as ('{user}')"
        )),
        "{stderr}"
    );
    assert_eq!(bodies(q.name(), 1), ["mine"]);
    assert_eq!(broker::ready(q.name()), 0);
}

#[test]
fn an_expiration_or_delivery_mode_the_broker_refuses_stops_at_its_line() {
    for (property, says) in [
        (
            "\"expiration\":\"abc\"",
            "line 3 of standard input is not a message: property expiration must be milliseconds",
        ),
        (
            "\"expiration\":\"-1\"",
            "line 3 of standard input is not a message: property expiration must be milliseconds",
        ),
        (
            "\"delivery_mode\":7",
            "line 3 of standard input is not a message: property delivery_mode must be 1",
        ),
    ] {
        let q = TestQueue::new("messages_bad_property");
        let input = format!(
            "{{\"body\":\"g1\"}}\n{{\"body\":\"g2\",\"properties\":{{\"expiration\":\"60000\",\
             \"delivery_mode\":2}}}}\n{{\"body\":\"bad\",\"properties\":{{{property}}}}}\n\
             {{\"body\":\"g4\"}}\n"
        );
        let sent = run(
            &["hello", "send", "--queue", q.name(), "--input", "json"],
            Some(input.as_bytes()),
        );
        assert_code(&sent, 65);
        let stderr = text(&sent.stderr);
        assert!(stderr.contains(says), "{stderr}");
        assert!(
            stderr.contains("the first 2 input line(s) were confirmed"),
            "{stderr}"
        );
        assert_eq!(bodies(q.name(), 2), ["g1", "g2"]);
        assert_eq!(broker::ready(q.name()), 0);
    }
}

#[test]
fn a_property_beside_the_body_or_an_unknown_key_stops_at_its_line() {
    let q = TestQueue::new("messages_wrong_level");
    for (second, says) in [
        (
            "{\"body\":\"x\",\"headers\":{\"n\":1}}",
            "line 2 of standard input is not a message: \"headers\" is a property",
        ),
        (
            "{\"body\":\"x\",\"colour\":\"red\"}",
            "line 2 of standard input is not a message: unknown key \"colour\"",
        ),
    ] {
        let input =
            format!("{{\"body\":\"fine\",\"exchange\":\"\",\"delivery_tag\":1}}\n{second}\n");
        let sent = run(
            &["hello", "send", "--queue", q.name(), "--input", "json"],
            Some(input.as_bytes()),
        );
        assert_code(&sent, 65);
        assert!(text(&sent.stderr).contains(says), "{}", text(&sent.stderr));
        assert_eq!(bodies(q.name(), 1), ["fine"]);
    }
    assert_eq!(broker::ready(q.name()), 0);
}

#[test]
fn nan_and_infinite_floats_are_refused_before_publishing() {
    let q = TestQueue::new("messages_nan");
    let input = "{\"body\":\"fine\"}\n{\"body\":\"x\",\"properties\":{\"headers\":{\"f\":{\"type\":\"f64\",\"value\":\"NaN\"}}}}\n";
    let sent = run(
        &["hello", "send", "--queue", q.name(), "--input", "json"],
        Some(input.as_bytes()),
    );
    assert_code(&sent, 65);
    let stderr = text(&sent.stderr);
    assert!(
        stderr.contains(
            "line 2 of standard input is not a message: header 'f': NaN is not published"
        ),
        "{stderr}"
    );
    assert_eq!(bodies(q.name(), 1), ["fine"]);
    for header in [
        r#"f:={"type":"f32","value":"inf"}"#,
        r#"f:={"type":"f64","value":"-inf"}"#,
        r#"f:={"type":"f32","value":1e300}"#,
    ] {
        let sent = run(
            &[
                "hello",
                "send",
                "--queue",
                q.name(),
                "--header",
                header,
                "x",
            ],
            None,
        );
        // A bad --header is a bad command line, as every other one.
        assert_code(&sent, 2);
        assert!(
            text(&sent.stderr).contains("closes the connection"),
            "{header}: {}",
            text(&sent.stderr)
        );
    }
    assert_eq!(broker::ready(q.name()), 0);
}

#[test]
fn bad_headers_and_flags_rpc_call_makes_itself_are_usage_errors() {
    let q = TestQueue::new("messages_bad_header");
    for (header, says) in [
        ("novalue", "'novalue' is not a header: write NAME=TEXT"),
        ("n:={oops", "the value of header 'n' is not JSON"),
        ("=v", "has no header name"),
    ] {
        let sent = run(
            &["hello", "send", "--queue", q.name(), "--header", header],
            None,
        );
        assert_code(&sent, 2);
        assert!(text(&sent.stderr).contains(says), "{}", text(&sent.stderr));
    }
    let priority = run(
        &["hello", "send", "--queue", q.name(), "--priority", "256"],
        None,
    );
    assert_code(&priority, 2);
    for (flag, property) in [
        ("--correlation-id", "correlation_id"),
        ("--reply-to", "reply_to"),
        ("--expiration", "expiration (--timeout)"),
    ] {
        let call = run(&["rpc", "call", "--queue", q.name(), flag, "1s"], None);
        assert_code(&call, 2);
        let says = format!("rpc call makes each request's {property} itself");
        assert!(text(&call.stderr).contains(&says), "{}", text(&call.stderr));
    }
    assert!(!broker::exists(q.name()), "nothing was declared");
}

/// The RMQLAB_MSG_* lines of an `env` printed by an --exec command, as a map.
fn variables(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("RMQLAB_MSG_"))
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// Runs `task work --exec` on `queue`'s one message twice: the first try fails and puts it
/// back as it is, the second, a redelivery, succeeds. Returns the RMQLAB_MSG_* variables of each
/// try, and the whole output.
fn two_tries(queue: &str) -> (BTreeMap<String, String>, BTreeMap<String, String>, String) {
    let worked = run(
        &[
            "task",
            "work",
            "--queue",
            queue,
            // Each try is a delivery.
            "--count",
            "2",
            "-o",
            "body",
            "--retries",
            "0",
            "--on-failure",
            "requeue",
            "--exec",
            "env | grep -E '^RMQLAB_(MSG_|FAILURES|REDELIVERED|ROUTING_KEY)' | sort; echo; \
             [ \"$RMQLAB_MSG_REDELIVERED\" = 1 ]",
        ],
        None,
    );
    assert_code(&worked, 0);
    let stdout = text(&worked.stdout);
    let tries: Vec<&str> = stdout.split("\n\n").collect();
    assert!(tries.len() >= 2, "two tries: {stdout}");
    assert!(
        tries[0]
            .lines()
            .all(|line| line.starts_with("RMQLAB_MSG_") || line == "work"),
        "no RMQLAB_FAILURES, RMQLAB_REDELIVERED or RMQLAB_ROUTING_KEY: {stdout}"
    );
    (variables(tries[0]), variables(tries[1]), stdout)
}

#[test]
fn a_classic_queue_counts_no_deliveries() {
    let q = TestQueue::new("messages_exec_classic");
    broker::declare(q.name(), true).unwrap();
    broker::publish_message("", q.name(), b"work", BasicProperties::default());
    let (first, second, stdout) = two_tries(q.name());
    assert_eq!(first["DELIVERY_COUNT"], "0", "a first delivery: {stdout}");
    assert_eq!(second["REDELIVERED"], "1");
    assert_eq!(second["DELIVERY_COUNT"], "", "unknown: {stdout}");
    assert_eq!(second["HEADERS"], "{}");
    assert_eq!(second["MESSAGE_ID"], "");
}

#[test]
fn a_task_handler_sees_every_documented_variable() {
    let q = TestQueue::new("messages_exec_env");
    broker::declare_quorum(q.name());
    let mut headers = FieldTable::default();
    headers.insert("n".into(), AMQPValue::LongInt(3));
    headers.insert("at".into(), AMQPValue::Timestamp(1_700_000_000));
    broker::publish_message(
        "",
        q.name(),
        b"work",
        BasicProperties::default()
            .with_message_id("m-1".into())
            .with_correlation_id("c-1".into())
            .with_reply_to("r-1".into())
            .with_content_type("text/plain".into())
            .with_headers(headers),
    );
    let (first, second, stdout) = two_tries(q.name());
    let expected_headers = serde_json::json!({
        "at": {"type": "timestamp", "value": 1_700_000_000},
        "n": 3,
    });
    for variables in [&first, &second] {
        assert_eq!(variables["ROUTING_KEY"], q.name(), "{stdout}");
        assert_eq!(variables["EXCHANGE"], "");
        assert_eq!(variables["MESSAGE_ID"], "m-1");
        assert_eq!(variables["CORRELATION_ID"], "c-1");
        assert_eq!(variables["REPLY_TO"], "r-1");
        assert_eq!(variables["CONTENT_TYPE"], "text/plain");
        assert_eq!(variables["FAILURES"], "0");
        let headers: serde_json::Value = serde_json::from_str(&variables["HEADERS"]).unwrap();
        for (name, value) in expected_headers.as_object().unwrap() {
            assert_eq!(&headers[name], value, "{name} in {headers}");
        }
    }
    assert_eq!(first["REDELIVERED"], "0");
    assert_eq!(first["DELIVERY_COUNT"], "0");
    assert_eq!(second["REDELIVERED"], "1");
    assert_eq!(
        second["DELIVERY_COUNT"], "1",
        "a quorum queue counts: {stdout}"
    );
    // Only the documented variables; the old ones, under the prefix rmqlab reads settings
    // from, are gone.
    let names: Vec<&str> = first.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "CONTENT_TYPE",
            "CORRELATION_ID",
            "DELIVERY_COUNT",
            "EXCHANGE",
            "FAILURES",
            "HEADERS",
            "MESSAGE_ID",
            "REDELIVERED",
            "REPLY_TO",
            "ROUTING_KEY"
        ]
    );
    assert_eq!(broker::ready(q.name()), 0);
}

#[test]
fn an_rpc_handler_sees_the_request_in_its_variables() {
    let q = TestQueue::new("messages_rpc_env");
    let mut server = Running::start(&[
        "rpc",
        "serve",
        "--queue",
        q.name(),
        "--exec",
        "env | grep ^RMQLAB_MSG_ | sort",
    ]);
    assert_eq!(server.next_line(WAIT), " [x] Awaiting RPC requests");
    let mut call = crate::common::rmqlab();
    call.args([
        "rpc",
        "call",
        "--queue",
        q.name(),
        "--message-id",
        "request-7",
        "--content-type",
        "text/plain",
        "--header",
        "attempt:={\"type\":\"u16\",\"value\":2}",
        "-o",
        "json",
        "7",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let called = wait_output(call.spawn().unwrap(), WAIT);
    assert_code(&called, 0);
    let reply: serde_json::Value = serde_json::from_slice(&called.stdout).unwrap();
    let env = variables(reply["body"].as_str().unwrap());
    assert_eq!(env["ROUTING_KEY"], q.name());
    assert_eq!(env["MESSAGE_ID"], "request-7");
    assert_eq!(env["CONTENT_TYPE"], "text/plain");
    assert!(
        env["REPLY_TO"].starts_with("amq.rabbitmq.reply-to"),
        "{env:?}"
    );
    assert_eq!(env["CORRELATION_ID"].len(), 36, "a uuid: {env:?}");
    assert_eq!(env["REDELIVERED"], "0");
    assert_eq!(
        env["HEADERS"],
        "{\"attempt\":{\"type\":\"u16\",\"value\":2}}"
    );
    assert!(!env.contains_key("FAILURES"), "task work's own: {env:?}");
    server.signal("INT");
    let _ = server.finish_status(WAIT);
}

/// A message the broker refuses by closing the channel (an expiration that is not a number)
/// ends the run with 65: no reconnection, nothing sent twice, nothing after it.
#[test]
fn a_message_the_broker_would_refuse_stops_the_publish_at_its_line_once() {
    let q = TestQueue::new("channel_refusal");
    let mut input = String::new();
    for i in 1..=100 {
        input.push_str(&format!("{{\"body\":\"g{i}\"}}\n"));
    }
    input.push_str("{\"body\":\"bad\",\"properties\":{\"expiration\":\"abc\"}}\n");
    for i in 101..=200 {
        input.push_str(&format!("{{\"body\":\"g{i}\"}}\n"));
    }
    let output = run(
        &[
            "-q",
            "task",
            "new",
            "--queue",
            q.name(),
            "--queue-type",
            "classic",
            "--input",
            "json",
            "-f",
            "-",
        ],
        Some(input.as_bytes()),
    );
    assert_code(&output, 65);
    let stderr = text(&output.stderr);
    assert!(!stderr.contains("reconnecting"), "{stderr}");
    // Refused at its line now, before the broker sees it (it would close the channel).
    assert!(
        stderr.contains("line 101 of standard input is not a message: property expiration"),
        "{stderr}"
    );
    let mut bodies = Vec::new();
    while let Some(message) = broker::get(q.name()) {
        bodies.push(String::from_utf8(message.delivery.data).unwrap());
    }
    let expected: Vec<String> = (1..=100).map(|i| format!("g{i}")).collect();
    assert_eq!(bodies, expected, "each line before the refused one, once");
}
