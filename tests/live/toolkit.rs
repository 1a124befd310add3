//! `queues peek`, `queues move` and `queues dead-letters` against the live broker: what a queue
//! holds afterwards, in which order, with which properties and headers.

use crate::common::{
    BIN, Running, TestQueue, assert_code, assert_ended_by, broker, broker_address, eventually,
    management_api, rabbitmqctl, rabbitmqctl_cleanup, rmq, rmqlab, run, text, unique_name,
    wait_output,
};
use lapin::{
    BasicProperties,
    options::{BasicGetOptions, BasicPublishOptions, BasicRejectOptions},
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use serde_json::Value;
use std::{
    io::Write,
    process::{Output, Stdio},
    time::Duration,
};

const WAIT: Duration = Duration::from_secs(30);

fn long(text: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(text))
}

/// Declares a durable queue with these arguments.
fn declare(queue: &str, arguments: &[(&str, AMQPValue)]) {
    let mut table = FieldTable::default();
    for (key, value) in arguments {
        table.insert(ShortString::from(*key), value.clone());
    }
    broker::declare_durable(queue, table);
}

/// A classic queue that dead-letters to `dlq` through the default exchange.
fn dead_lettering(queue: &str, dlq: &str, more: &[(&str, AMQPValue)]) {
    let mut arguments = vec![
        ("x-dead-letter-exchange", long("")),
        ("x-dead-letter-routing-key", long(dlq)),
    ];
    arguments.extend(more.iter().cloned());
    declare(queue, &arguments);
}

/// Takes `count` messages from the head of `queue` and rejects them without requeue: they are
/// dead-lettered.
fn reject(queue: &str, count: usize) {
    broker::block_on(async {
        let connection = broker::connect().await;
        let channel = connection.create_channel().await.unwrap();
        for _ in 0..count {
            let message = channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: false })
                .await
                .unwrap()
                .expect("a message to reject");
            channel
                .basic_reject(
                    message.delivery.delivery_tag,
                    BasicRejectOptions { requeue: false },
                )
                .await
                .unwrap();
        }
        let _ = connection.close(200, "OK".into()).await;
    });
}

fn bodies_of(deliveries: &[lapin::message::Delivery]) -> Vec<String> {
    deliveries.iter().map(|d| text(&d.data)).collect()
}

fn header(delivery: &lapin::message::Delivery, key: &str) -> Option<AMQPValue> {
    delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(key).cloned())
}

#[test]
fn peek_five_of_ten_on_a_classic_queue_leaves_ten_in_the_same_order() {
    let queue = TestQueue::new("peek-classic");
    broker::declare(queue.name(), true).unwrap();
    let ten: Vec<String> = (1..=10).map(|n| format!("m{n}")).collect();
    let refs: Vec<&str> = ten.iter().map(String::as_str).collect();
    broker::publish(queue.name(), &refs);

    let peeked = rmq(&format!("queues peek {queue} --count 5 -o body"), None);
    assert_code(&peeked, 0);
    assert_eq!(text(&peeked.stdout), "m1\nm2\nm3\nm4\nm5\n");
    let stderr = text(&peeked.stderr);
    assert_eq!(stderr.matches("redelivered").count(), 1, "{stderr}");
    assert!(
        stderr.contains("5 message(s) put back in their places"),
        "{stderr}"
    );

    let json = rmq(&format!("queues peek {queue} --count 1 -o json"), None);
    assert_code(&json, 0);
    let line: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(line["body"], "m1");
    assert_eq!(line["redelivered"], true);
    assert_eq!(line["properties"]["delivery_mode"], 2);

    let text_line = rmq(&format!("queues peek {queue} --count 2"), None);
    assert_eq!(text(&text_line.stdout), " [x] m1\n [x] m2\n");

    let left = broker::drain(queue.name());
    assert_eq!(bodies_of(&left), ten, "the queue keeps all ten, in order");
}

#[test]
fn peek_refuses_a_quorum_queue_without_force_and_says_what_force_changed() {
    let queue = TestQueue::new("peek-quorum");
    broker::declare_quorum(queue.name());
    broker::publish(queue.name(), &["q1", "q2"]);

    let refused = rmq(&format!("queues peek {queue}"), None);
    assert_code(&refused, 65);
    let stderr = text(&refused.stderr);
    assert!(stderr.contains("quorum queue"), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert!(refused.stdout.is_empty());
    assert_eq!(broker::ready(queue.name()), 2);

    let forced = rmq(
        &format!("queues peek {queue} --force --count 1 -o body"),
        None,
    );
    assert_code(&forced, 0);
    assert_eq!(text(&forced.stdout), "q1\n");
    let stderr = text(&forced.stderr);
    assert!(
        stderr.contains("1 message(s) put back in quorum queue")
            && stderr.contains("one more delivery (x-delivery-count)"),
        "{stderr}"
    );
    // RabbitMQ 3.x puts it back at the end of the queue, 4.x in its place.
    let overview: Value = serde_json::from_str(&management_api(
        "GET",
        "/api/overview?columns=rabbitmq_version",
    ))
    .unwrap();
    let version_3 = overview["rabbitmq_version"]
        .as_str()
        .unwrap()
        .starts_with("3.");
    assert_eq!(
        stderr.contains("at the back of the queue (RabbitMQ 3.x)"),
        version_3
    );
    let left = broker::drain(queue.name());
    let expected = if version_3 {
        ["q2", "q1"]
    } else {
        ["q1", "q2"]
    };
    assert_eq!(bodies_of(&left), expected);
    let q1 = left.iter().find(|d| d.data == b"q1").unwrap();
    let counted = matches!(
        header(q1, "x-delivery-count"),
        Some(AMQPValue::LongLongInt(1) | AMQPValue::LongInt(1))
    );
    assert!(counted, "{:?}", q1.properties.headers());
}

#[test]
fn peek_force_says_which_messages_it_ended_at_their_delivery_limit() {
    let queue = TestQueue::new("peek-limit");
    declare(
        queue.name(),
        &[
            ("x-queue-type", long("quorum")),
            ("x-delivery-limit", AMQPValue::LongInt(1)),
        ],
    );
    broker::publish(queue.name(), &["d1"]);
    let peek = || rmq(&format!("queues peek {queue} --force -o body"), None);
    let first = peek();
    assert_code(&first, 0);
    assert_eq!(text(&first.stdout), "d1\n");
    let stderr = text(&first.stderr);
    assert!(!stderr.contains("delivery limit (1)"), "{stderr}");
    // Delivered once before: put back again, it is past the limit of 1.
    let second = peek();
    assert_code(&second, 0);
    assert_eq!(text(&second.stdout), "d1\n");
    let stderr = text(&second.stderr);
    assert!(
        stderr.contains(&format!(
            "1 of the message(s) read in quorum queue '{queue}' had reached its delivery limit \
             (1): put back, they were dead-lettered or dropped by the queue, not kept"
        )),
        "{stderr}"
    );
    eventually(WAIT, "the message to be dropped", || {
        broker::ready(queue.name()) == 0
    });
}

#[test]
fn peek_of_a_queue_that_does_not_exist_exits_65() {
    let name = unique_name("peek-missing");
    let output = rmq(&format!("queues peek {name}"), None);
    assert_code(&output, 65);
    assert!(text(&output.stderr).contains("not found"));
}

/// rmqlab pointed at the RabbitMQ 4 node, with its stream port and management API.
fn on_stream_node(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let setting = |name: &str, default: &str| std::env::var(name).unwrap_or(default.into());
    let mut child = rmqlab()
        .env(
            "RMQLAB_URL",
            setting(
                "RMQLAB_TEST_STREAM_AMQP_URL",
                "amqp://guest:guest@127.0.0.1:5741/%2f",
            ),
        )
        .env(
            "RMQLAB_STREAM_URL",
            setting(
                "RMQLAB_TEST_STREAM_URL",
                "rabbitmq-stream://guest:guest@127.0.0.1:5751/%2f",
            ),
        )
        .env(
            "RMQLAB_API_URL",
            setting("RMQLAB_TEST_STREAM_API_URL", "http://127.0.0.1:15741"),
        )
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rmqlab");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    wait_output(child, Duration::from_secs(60))
}

#[test]
fn peek_reads_a_stream_by_offset_and_changes_nothing() {
    let stream = unique_name("peek-stream");
    let sent = on_stream_node(
        &["stream", "send", "--stream", &stream, "-f", "-"],
        Some(b"s1\ns2\ns3\ns4\ns5\n"),
    );
    assert_code(&sent, 0);

    let first = on_stream_node(
        &["queues", "peek", &stream, "--count", "3", "-o", "json"],
        None,
    );
    assert_code(&first, 0);
    let lines: Vec<Value> = text(&first.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let bodies: Vec<&str> = lines.iter().map(|l| l["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["s1", "s2", "s3"]);
    // A 64-bit integer, in the typed form of `-o json`.
    assert_eq!(
        lines[0]["properties"]["headers"]["x-stream-offset"],
        serde_json::json!({"type": "i64", "value": 0})
    );
    assert!(
        !text(&first.stderr).contains("put back"),
        "{}",
        text(&first.stderr)
    );

    let again = on_stream_node(
        &["queues", "peek", &stream, "--count", "3", "-o", "json"],
        None,
    );
    assert_eq!(text(&again.stdout), text(&first.stdout), "nothing changed");
    let all = on_stream_node(&["queues", "peek", &stream, "-o", "body"], None);
    assert_code(&all, 0);
    assert_eq!(text(&all.stdout), "s1\ns2\ns3\ns4\ns5\n");

    // A stream keeps what is read: it cannot be moved from, nor redriven.
    let moved = on_stream_node(
        &["queues", "move", &stream, "--to-exchange", "amq.direct"],
        None,
    );
    assert_code(&moved, 65);
    assert!(
        text(&moved.stderr).contains("cannot be taken from queue"),
        "{}",
        text(&moved.stderr)
    );
    let redriven = on_stream_node(&["queues", "dead-letters", &stream, "--redrive"], None);
    assert_code(&redriven, 65);
    let all = on_stream_node(&["queues", "peek", &stream, "-o", "body"], None);
    assert_eq!(text(&all.stdout), "s1\ns2\ns3\ns4\ns5\n");

    let deleted = on_stream_node(&["queues", "delete", &stream], None);
    assert_code(&deleted, 0);
}

#[test]
fn move_keeps_properties_and_headers_and_stops_after_count() {
    let source = TestQueue::new("move-src");
    let destination = TestQueue::new("move-dst");
    broker::declare(source.name(), true).unwrap();
    broker::declare_quorum(destination.name());
    let mut headers = FieldTable::default();
    headers.insert("x-trace".into(), long("abc"));
    headers.insert("x-attempt".into(), AMQPValue::LongLongInt(3));
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("text/plain".into())
        .with_message_id("id-7".into())
        .with_correlation_id("corr".into())
        .with_priority(4)
        .with_headers(headers);
    broker::publish_with(source.name(), &["a", "b", "c"], properties.clone());

    let two = rmq(
        &format!("queues move {source} {destination} --count 2"),
        None,
    );
    assert_code(&two, 0);
    assert_eq!(
        text(&two.stdout),
        format!(" [x] Moved 2 message(s) from queue '{source}' to queue '{destination}'\n")
    );
    assert_eq!(broker::ready(source.name()), 1);

    let rest = rmq(&format!("queues move {source} {destination}"), None);
    assert_code(&rest, 0);
    assert!(text(&rest.stdout).contains("Moved 1 message(s)"));
    assert_eq!(broker::ready(source.name()), 0);

    let moved = broker::drain(destination.name());
    assert_eq!(bodies_of(&moved), ["a", "b", "c"]);
    for delivery in &moved {
        let got = &delivery.properties;
        assert_eq!(got.delivery_mode(), &Some(2));
        assert_eq!(got.content_type().as_ref().unwrap().as_str(), "text/plain");
        assert_eq!(got.message_id().as_ref().unwrap().as_str(), "id-7");
        assert_eq!(got.correlation_id().as_ref().unwrap().as_str(), "corr");
        assert_eq!(got.priority(), &Some(4));
        assert_eq!(header(delivery, "x-trace"), Some(long("abc")));
        assert_eq!(
            header(delivery, "x-attempt"),
            Some(AMQPValue::LongLongInt(3))
        );
    }
}

#[test]
fn move_into_a_missing_destination_or_exchange_moves_nothing_65() {
    let source = TestQueue::new("move-nodst");
    broker::declare(source.name(), true).unwrap();
    broker::publish(source.name(), &["x", "y"]);
    let missing = unique_name("move-missing");
    for args in [
        format!("queues move {source} {missing}"),
        format!("queues move {source} --to-exchange {missing} --routing-key k"),
        format!("queues move {source} {source}"),
    ] {
        let output = rmq(&args, None);
        assert_code(&output, 65);
        assert!(output.stdout.is_empty(), "{args}");
    }
    assert_eq!(bodies_of(&broker::drain(source.name())), ["x", "y"]);
}

#[test]
fn move_to_an_exchange_with_no_binding_stops_65_and_keeps_the_message() {
    let source = TestQueue::new("move-unroutable");
    broker::declare(source.name(), true).unwrap();
    broker::publish(source.name(), &["u1", "u2"]);
    let output = rmq(
        &format!("queues move {source} --to-exchange amq.direct --routing-key nobody.{source}"),
        None,
    );
    assert_code(&output, 65);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("did not take a message"), "{stderr}");
    assert!(stderr.contains("312 NO_ROUTE"), "{stderr}");
    assert_eq!(bodies_of(&broker::drain(source.name())), ["u1", "u2"]);
}

/// Dead-lettering from two (three) source queues into one queue, by rejection, maximum length
/// and TTL expiry.
struct DeadLetters {
    dlq: TestQueue,
    a: TestQueue,
    b: TestQueue,
    c: TestQueue,
}

impl DeadLetters {
    fn make(test: &str) -> DeadLetters {
        let dlq = TestQueue::new(&format!("{test}-dlq"));
        let a = TestQueue::new(&format!("{test}-a"));
        let b = TestQueue::new(&format!("{test}-b"));
        let c = TestQueue::new(&format!("{test}-c"));
        declare(dlq.name(), &[]);
        // a: at most 3 messages, the oldest dropped (maxlen) beyond.
        dead_lettering(
            a.name(),
            dlq.name(),
            &[("x-max-length", AMQPValue::LongInt(3))],
        );
        dead_lettering(b.name(), dlq.name(), &[]);
        // c: messages expire after 50 ms.
        dead_lettering(
            c.name(),
            dlq.name(),
            &[("x-message-ttl", AMQPValue::LongInt(50))],
        );
        let persistent = BasicProperties::default().with_delivery_mode(2);
        broker::publish_with(
            a.name(),
            &["a1", "a2", "a3", "a4", "a5"],
            persistent.clone(),
        );
        reject(a.name(), 1); // a3
        broker::publish_with(b.name(), &["b1", "b2"], persistent.clone());
        reject(b.name(), 2);
        // Per-message TTL: they expire at the head of b.
        broker::publish_with(
            b.name(),
            &["b3", "b4"],
            persistent.clone().with_expiration("1".into()),
        );
        broker::publish_with(c.name(), &["c1"], persistent);
        eventually(WAIT, "eight dead letters", || {
            broker::ready(dlq.name()) == 8
        });
        DeadLetters { dlq, a, b, c }
    }
}

/// The groups as (queue, reason, count), from `-o json`.
fn groups(output: &Output) -> Vec<(String, String, u64)> {
    assert_code(output, 0);
    let rows: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    rows.iter()
        .map(|row| {
            if row["queue"] != "(unknown)" {
                assert!(row["oldest"].is_string() && row["newest"].is_string());
            }
            (
                row["queue"].as_str().unwrap().to_string(),
                row["reason"].as_str().unwrap().to_string(),
                row["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn dead_letters_are_grouped_by_queue_and_reason_and_redriven_by_reason() {
    let dl = DeadLetters::make("dl");
    let (a, b, c) = (dl.a.0.clone(), dl.b.0.clone(), dl.c.0.clone());
    let listed = rmq(&format!("queues dead-letters {} -o json", dl.dlq), None);
    let mut expected = vec![
        (a.clone(), "maxlen".to_string(), 2),
        (a.clone(), "rejected".to_string(), 1),
        (b.clone(), "expired".to_string(), 2),
        (b.clone(), "rejected".to_string(), 2),
        (c.clone(), "expired".to_string(), 1),
    ];
    expected.sort();
    assert_eq!(groups(&listed), expected);
    let tsv = rmq(
        &format!("queues dead-letters {} -o tsv --no-headers", dl.dlq),
        None,
    );
    assert!(
        text(&tsv.stdout).contains(&format!("{a}\tmaxlen\t\t{a}\t2\t")),
        "{}",
        text(&tsv.stdout)
    );
    assert_eq!(broker::ready(dl.dlq.name()), 8, "listing takes nothing");

    let redriven = rmq(
        &format!("queues dead-letters {} --redrive --reason rejected", dl.dlq),
        None,
    );
    assert_code(&redriven, 0);
    let stdout = text(&redriven.stdout);
    assert!(
        stdout.contains(&format!("Redrove 1 message(s) to queue '{a}'"))
            && stdout.contains(&format!("Redrove 2 message(s) to queue '{b}'"))
            && stdout.contains("Redrove 3 message(s) from queue"),
        "{stdout}"
    );
    assert_eq!(bodies_of(&broker::drain(&a)), ["a4", "a5", "a3"]);
    assert_eq!(bodies_of(&broker::drain(&b)), ["b1", "b2"]);
    let left = rmq(&format!("queues dead-letters {} -o json", dl.dlq), None);
    let mut expected: Vec<_> = expected
        .into_iter()
        .filter(|(_, reason, _)| reason != "rejected")
        .collect();
    expected.sort();
    assert_eq!(groups(&left), expected);

    let selected = rmq(
        &format!("queues dead-letters {} --from-queue {c} -o json", dl.dlq),
        None,
    );
    assert_eq!(groups(&selected), [(c.clone(), "expired".to_string(), 1)]);
    let expired = rmq(
        &format!(
            "queues dead-letters {} --redrive --reason expired --from-queue {c}",
            dl.dlq
        ),
        None,
    );
    assert_code(&expired, 0);
    let stderr = text(&expired.stderr);
    assert!(
        stderr.contains(&format!("1 expired message(s) went back to queue '{c}'"))
            && stderr.contains("will expire again"),
        "{stderr}"
    );
    // ...and so it did: back in the dead-letter queue.
    eventually(WAIT, "c1 to expire again", || {
        broker::ready(dl.dlq.name()) == 5
    });
}

#[test]
fn dead_letters_via_exchange_goes_through_the_first_death_exchange() {
    let dlq = TestQueue::new("dlx-via-dlq");
    let source = TestQueue::new("dlx-via-src");
    declare(dlq.name(), &[]);
    dead_lettering(source.name(), dlq.name(), &[]);
    // Published through amq.direct with the queue's name as binding key.
    broker::block_on(async {
        let connection = broker::connect().await;
        let channel = connection.create_channel().await.unwrap();
        channel
            .queue_bind(
                source.name().into(),
                "amq.direct".into(),
                "via.key".into(),
                Default::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel.confirm_select(Default::default()).await.unwrap();
        channel
            .basic_publish(
                "amq.direct".into(),
                "via.key".into(),
                BasicPublishOptions::default(),
                b"v1",
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        let _ = connection.close(200, "OK".into()).await;
    });
    reject(source.name(), 1);
    eventually(WAIT, "the dead letter", || broker::ready(dlq.name()) == 1);
    let listed = rmq(&format!("queues dead-letters {dlq} -o json"), None);
    assert_code(&listed, 0);
    let rows: Vec<Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(rows[0]["exchange"], "amq.direct");
    assert_eq!(rows[0]["routing_keys"][0], "via.key");
    let redriven = rmq(
        &format!("queues dead-letters {dlq} --redrive --via-exchange"),
        None,
    );
    assert_code(&redriven, 0);
    assert!(
        text(&redriven.stdout)
            .contains("Redrove 1 message(s) to exchange 'amq.direct' with routing key 'via.key'"),
        "{}",
        text(&redriven.stdout)
    );
    assert_eq!(bodies_of(&broker::drain(source.name())), ["v1"]);
}

#[test]
fn parked_tasks_are_listed_and_redriven_to_their_queue() {
    let queue = TestQueue::new("dl-parked");
    let parked = TestQueue(format!("{queue}.failed"));
    broker::publish(queue.name(), &["p1", "p2"]);
    let worked = run(
        &[
            "task",
            "work",
            "--queue",
            queue.name(),
            "--exec",
            "exit 3",
            "--retries",
            "0",
            "--count",
            "2",
        ],
        None,
    );
    assert_code(&worked, 65);
    assert_eq!(broker::ready(parked.name()), 2);
    // rmqlab parks in a quorum queue: reading it needs --force.
    let refused = rmq(&format!("queues dead-letters {parked}"), None);
    assert_code(&refused, 65);
    let listed = rmq(
        &format!("queues dead-letters {parked} --force -o json"),
        None,
    );
    assert_eq!(
        groups(&listed),
        [(queue.0.clone(), "parked".to_string(), 2)]
    );
    // A redrive of everything takes every message: no --force needed.
    let redriven = rmq(&format!("queues dead-letters {parked} --redrive"), None);
    assert_code(&redriven, 0);
    assert!(text(&redriven.stdout).contains(&format!("Redrove 2 message(s) to queue '{queue}'")));
    let back = broker::drain(queue.name());
    assert_eq!(bodies_of(&back), ["p1", "p2"]);
    assert_eq!(header(&back[0], "x-rmqlab-queue"), Some(long(queue.name())));
    assert_eq!(broker::ready(parked.name()), 0);
}

/// Two classic queues of one test, the source holding `bodies`.
fn source_and_destination(test: &str, bodies: &[&str]) -> (TestQueue, TestQueue) {
    let source = TestQueue::new(test);
    let destination = TestQueue::new(&format!("{test}-dst"));
    broker::declare(source.name(), true).unwrap();
    broker::declare(destination.name(), true).unwrap();
    broker::publish(source.name(), bodies);
    (source, destination)
}

/// The bodies "1" to "count".
fn numbers(count: u32) -> Vec<String> {
    (1..=count).map(|n| n.to_string()).collect()
}

#[test]
fn move_to_an_exchange_uses_each_message_routing_key_by_default() {
    let (source, destination) = source_and_destination("move-own-key", &["k1", "k2"]);
    // The messages were published with the source's name as routing key.
    broker::bind(destination.name(), "amq.direct", source.name());
    let output = rmq(
        &format!("queues move {source} --to-exchange amq.direct"),
        None,
    );
    assert_code(&output, 0);
    assert_eq!(
        text(&output.stdout),
        format!(" [x] Moved 2 message(s) from queue '{source}' to exchange 'amq.direct'\n")
    );
    assert_eq!(bodies_of(&broker::drain(destination.name())), ["k1", "k2"]);
    assert_eq!(broker::ready(source.name()), 0);
}

#[test]
fn move_stopped_by_ctrl_c_loses_nothing_and_ends_by_sigint() {
    let bodies = numbers(20_000);
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    let (source, destination) = source_and_destination("move-stop", &refs);
    let mover = Running::start(&["queues", "move", source.name(), destination.name()]);
    eventually(WAIT, "the move to begin", || {
        broker::ready(destination.name()) > 0
    });
    mover.signal("INT");
    let (status, lines, stderr) = mover.finish_status(WAIT);
    assert_ended_by(&status, "INT", &stderr);
    let summary = lines.join("\n");
    let moved: usize = summary
        .strip_prefix(" [x] Moved ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no summary: {summary} {stderr}"));
    assert!(moved < bodies.len(), "stopped before the end: {summary}");
    let at_destination = broker::drain(destination.name());
    let left = broker::drain(source.name());
    assert_eq!(
        at_destination.len(),
        moved,
        "every message counted arrived once"
    );
    let mut all = bodies_of(&at_destination);
    all.extend(bodies_of(&left));
    assert_eq!(all, bodies, "nothing lost, nothing doubled, in order");
}

#[test]
fn messages_without_death_facts_show_as_unknown_and_stay() {
    let dlq = TestQueue::new("dl-unknown");
    broker::declare(dlq.name(), true).unwrap();
    broker::publish(dlq.name(), &["plain"]);
    let listed = rmq(&format!("queues dead-letters {dlq} -o json"), None);
    assert_eq!(
        groups(&listed),
        [("(unknown)".to_string(), String::new(), 1)]
    );
    let redriven = rmq(&format!("queues dead-letters {dlq} --redrive"), None);
    assert_code(&redriven, 0);
    assert!(text(&redriven.stdout).contains("Redrove 0 message(s)"));
    assert_eq!(bodies_of(&broker::drain(dlq.name())), ["plain"]);
}

#[test]
fn move_shows_a_progress_bar_on_a_terminal_only() {
    let bodies = numbers(5_000);
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    let (source, destination) = source_and_destination("move-bar", &refs);
    let shown = crate::terminal::on_terminal(
        &format!("{BIN} queues move {source} {destination} > /dev/null"),
        &[],
    );
    assert!(
        shown.contains("moving") && shown.contains("/5,000 confirmed"),
        "no bar: {shown:?}"
    );
    assert_eq!(broker::ready(destination.name()), 5_000);
    let piped = rmq(&format!("queues move {destination} {source}"), None);
    assert_code(&piped, 0);
    assert_eq!(text(&piped.stderr), "", "no progress into a pipe");
    assert_eq!(broker::ready(source.name()), 5_000);
}

/// Every body of `queue` (taken), sorted.
fn sorted_bodies(queue: &str) -> Vec<String> {
    let mut bodies = bodies_of(&broker::drain(queue));
    bodies.sort();
    bodies
}

#[test]
fn move_into_a_full_destination_leaves_each_message_in_exactly_one_place() {
    let source = TestQueue::new("move-full");
    let destination = TestQueue::new("move-full-dst");
    broker::declare(source.name(), true).unwrap();
    declare(
        destination.name(),
        &[
            ("x-max-length", AMQPValue::LongLongInt(30)),
            ("x-overflow", long("reject-publish")),
        ],
    );
    let bodies = numbers(200);
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    broker::publish(source.name(), &refs);
    let output = rmq(&format!("queues move {source} {destination}"), None);
    assert_code(&output, 65);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("the broker nacked it"), "{stderr}");
    assert!(
        stderr.contains("x-overflow reject-publish nacks"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the move stopped there: 30 message(s) were moved"),
        "{stderr}"
    );
    let at_destination = sorted_bodies(destination.name());
    let in_source = sorted_bodies(source.name());
    assert_eq!(at_destination.len(), 30, "{stderr}");
    assert_eq!(in_source.len(), 170, "{stderr}");
    let mut all: Vec<String> = at_destination.into_iter().chain(in_source).collect();
    all.sort();
    let mut expected = bodies.clone();
    expected.sort();
    assert_eq!(all, expected, "each body once, in one of the two queues");
}

#[test]
fn move_to_an_exchange_that_routes_back_into_the_source_ends() {
    let source = TestQueue::new("move-loop");
    broker::declare(source.name(), true).unwrap();
    broker::bind(source.name(), "amq.direct", source.name());
    broker::publish(source.name(), &["l1", "l2", "l3"]);
    let output = rmq(
        &format!("queues move {source} --to-exchange amq.direct"),
        None,
    );
    assert_code(&output, 0);
    assert_eq!(
        text(&output.stdout),
        format!(" [x] Moved 3 message(s) from queue '{source}' to exchange 'amq.direct'\n")
    );
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("queue '{source}' holds 3 more message(s)")),
        "{stderr}"
    );
    assert_eq!(sorted_bodies(source.name()), ["l1", "l2", "l3"]);
}

#[test]
fn redrive_into_a_queue_that_dead_letters_back_at_once_ends() {
    let dlq = TestQueue::new("redrive-loop-dlq");
    let source = TestQueue::new("redrive-loop");
    declare(dlq.name(), &[]);
    // A TTL of 0: whatever comes in expires at once, back into the dead-letter queue.
    dead_lettering(
        source.name(),
        dlq.name(),
        &[("x-message-ttl", AMQPValue::LongInt(0))],
    );
    broker::publish(source.name(), &["r1", "r2", "r3"]);
    eventually(WAIT, "three dead letters", || {
        broker::ready(dlq.name()) == 3
    });
    // Without a cap it went round until killed (`run` fails the test past 60 s).
    let output = rmq(&format!("queues dead-letters {dlq} --redrive"), None);
    assert_code(&output, 0);
    assert_eq!(
        text(&output.stdout),
        format!(
            " [x] Redrove 3 message(s) to queue '{source}'\n [x] Redrove 3 message(s) from \
             queue '{dlq}'\n"
        )
    );
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("queue '{dlq}' holds 3 more message(s)")),
        "{stderr}"
    );
    assert_eq!(sorted_bodies(dlq.name()), ["r1", "r2", "r3"]);
}

#[test]
fn move_of_a_message_that_names_another_user_says_what_the_broker_said() {
    let (source, destination) = source_and_destination("move-user-id", &[]);
    let user = source.name();
    rabbitmqctl(&["add_user", user, "move-user-pw"]);
    rabbitmqctl(&["set_permissions", user, ".*", ".*", ".*"]);
    let line = format!("{{\"body\":\"theirs\",\"properties\":{{\"user_id\":\"{user}\"}}}}\n");
    let sent = rmqlab()
        .args(["hello", "send", "--queue", user, "--input", "json"])
        .env(
            "RMQLAB_URL",
            format!("amqp://{user}:move-user-pw@{}/%2f", broker_address()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(line.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    rabbitmqctl_cleanup(&["delete_user", user]);
    assert_code(&sent, 0);
    broker::publish(source.name(), &["mine"]);
    let output = rmq(&format!("queues move {source} {destination}"), None);
    assert_code(&output, 65);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "the broker closed the channel: AMQP soft error: PRECONDITION-FAILED: \
             PRECONDITION_FAILED - user_id property set to '{user}'"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("as a user tagged impersonator"), "{stderr}");
    assert_eq!(sorted_bodies(source.name()), ["mine", "theirs"]);
    assert_eq!(broker::ready(destination.name()), 0);
}

#[test]
fn move_from_a_quorum_queue_leaves_it_empty_and_drops_the_delivery_count() {
    let source = TestQueue::new("move-qq");
    let destination = TestQueue::new("move-qq-dst");
    broker::declare_quorum(source.name());
    broker::declare(destination.name(), true).unwrap();
    let bodies = numbers(300);
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    broker::publish(source.name(), &refs);
    // A peek puts them back counted: each then carries x-delivery-count.
    let peeked = rmq(
        &format!("queues peek {source} --force --count 300 -o body"),
        None,
    );
    assert_code(&peeked, 0);
    let counted = rmq(
        &format!("queues peek {source} --force --count 1 -o json"),
        None,
    );
    assert!(
        text(&counted.stdout).contains("x-delivery-count"),
        "the source's messages carry the header: {}",
        text(&counted.stdout)
    );
    let part = rmq(
        &format!("queues move {source} {destination} --count 100"),
        None,
    );
    assert_code(&part, 0);
    assert!(text(&part.stdout).contains("Moved 100 message(s)"));
    assert_eq!(
        broker::queue_state(source.name()).map(|(ready, _)| ready),
        Some(200)
    );
    let output = rmq(&format!("queues move {source} {destination}"), None);
    assert_code(&output, 0);
    assert!(text(&output.stdout).contains("Moved 200 message(s)"));
    // At once: the acks were applied before rmqlab ended.
    assert_eq!(
        broker::queue_state(source.name()).map(|(ready, _)| ready),
        Some(0)
    );
    assert!(broker::get(source.name()).is_none());
    let moved = broker::drain(destination.name());
    assert_eq!(moved.len(), 300);
    for delivery in &moved {
        assert_eq!(header(delivery, "x-delivery-count"), None);
    }
}

#[test]
fn redrive_of_a_quorum_queue_without_force_does_not_claim_force() {
    let dlq = TestQueue::new("redrive-qq");
    broker::declare_quorum(dlq.name());
    broker::publish(dlq.name(), &["no-facts"]);
    let output = rmq(&format!("queues dead-letters {dlq} --redrive"), None);
    assert_code(&output, 0);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "1 message(s) put back in quorum queue '{dlq}': each counted one more delivery"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("--force"), "{stderr}");
    assert_eq!(bodies_of(&broker::drain(dlq.name())), ["no-facts"]);
}

#[test]
fn move_stopped_by_an_unroutable_message_keeps_it_and_acks_those_confirmed_after_it() {
    use crate::common::TestExchange;
    let source = TestQueue::new("move-mixed");
    let destination = TestQueue::new("move-mixed-dst");
    let feed = TestExchange::new("move-mixed-in");
    broker::declare(source.name(), true).unwrap();
    broker::declare(destination.name(), true).unwrap();
    let key = source.name().to_string();
    let bad = format!("nobody.{key}");
    broker::block_on(async {
        let connection = broker::connect().await;
        let channel = connection.create_channel().await.unwrap();
        channel
            .exchange_declare(
                feed.0.as_str().into(),
                lapin::ExchangeKind::Fanout,
                Default::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        for (queue, exchange, routing_key) in [
            (source.name(), feed.0.as_str(), ""),
            (destination.name(), "amq.direct", key.as_str()),
        ] {
            channel
                .queue_bind(
                    queue.into(),
                    exchange.into(),
                    routing_key.into(),
                    Default::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
        }
        channel.confirm_select(Default::default()).await.unwrap();
        for n in 1..=100 {
            let routing_key = if n == 40 { bad.as_str() } else { key.as_str() };
            let confirm = channel
                .basic_publish(
                    feed.0.as_str().into(),
                    routing_key.into(),
                    BasicPublishOptions::default(),
                    n.to_string().as_bytes(),
                    BasicProperties::default(),
                )
                .await
                .unwrap();
            assert!(confirm.await.unwrap().is_ack());
        }
        let _ = connection.close(200, "OK".into()).await;
    });
    let output = rmq(
        &format!("queues move {source} --to-exchange amq.direct"),
        None,
    );
    assert_code(&output, 65);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("312 NO_ROUTE"), "{stderr}");
    assert!(
        stderr.contains("the move stopped there: 99 message(s) were moved"),
        "{stderr}"
    );
    let at_destination = sorted_bodies(destination.name());
    let in_source = sorted_bodies(source.name());
    assert_eq!(
        at_destination.len() + in_source.len(),
        100,
        "{stderr}\nat the destination: {at_destination:?}\nin the source: {in_source:?}"
    );
    // The ones in flight after it were confirmed at the destination: acked, not duplicated.
    assert_eq!(in_source, ["40"], "{stderr}");
    let mut all: Vec<u32> = at_destination
        .iter()
        .chain(&in_source)
        .map(|body| body.parse().unwrap())
        .collect();
    all.sort();
    assert_eq!(all, (1..=100).collect::<Vec<u32>>(), "each body once");
}

#[test]
fn move_whose_exchange_is_deleted_mid_way_keeps_every_message_and_reports_those_in_doubt() {
    use crate::common::TestExchange;
    const COUNT: u32 = 20_000;
    let source = TestQueue::new("move-gone");
    let destination = TestQueue::new("move-gone-dst");
    let via = TestExchange::new("move-gone-ex");
    broker::declare(source.name(), true).unwrap();
    broker::declare(destination.name(), true).unwrap();
    broker::block_on(async {
        let connection = broker::connect().await;
        let channel = connection.create_channel().await.unwrap();
        channel
            .exchange_declare(
                via.0.as_str().into(),
                lapin::ExchangeKind::Fanout,
                Default::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                destination.name().into(),
                via.0.as_str().into(),
                "".into(),
                Default::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let _ = connection.close(200, "OK".into()).await;
    });
    let padding = "p".repeat(500);
    let bodies: Vec<String> = (1..=COUNT).map(|n| format!("{n} {padding}")).collect();
    let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
    broker::publish(source.name(), &refs);
    let mover = Running::start(&["queues", "move", source.name(), "--to-exchange", &via.0]);
    eventually(WAIT, "the move to begin", || {
        broker::queue_state(destination.name()).is_some_and(|(ready, _)| ready >= 500)
    });
    broker::delete_exchange(&via.0);
    let (code, _, stderr) = mover.finish(WAIT);
    let at_destination = sorted_bodies(destination.name());
    let in_source = sorted_bodies(source.name());
    if in_source.is_empty() {
        // The move ended before the exchange went: nothing to check.
        assert_eq!(code, Some(0), "{stderr}");
        return;
    }
    assert_eq!(code, Some(65), "{stderr}");
    assert!(stderr.contains("the move stopped there"), "{stderr}");
    assert!(stderr.contains("may hold some of those left"), "{stderr}");
    // What the broker confirmed is only at the destination; what it took and had not confirmed
    // when it closed the channel may be in both (at-least-once), no more than were reported.
    let left: usize = stderr
        .split("and it and ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no count of those left: {stderr}"));
    let all: Vec<String> = at_destination.into_iter().chain(in_source).collect();
    let distinct: std::collections::BTreeSet<&String> = all.iter().collect();
    assert_eq!(
        distinct.len(),
        COUNT as usize,
        "every body somewhere: {stderr}"
    );
    let twice = all.len() - distinct.len();
    assert!(
        twice <= left + 1,
        "{twice} in both, {left} reported: {stderr}"
    );
    eprintln!("stopped mid-way, {twice} in both: {stderr}");
}
