//! The declaration rule: a queue rmqlab creates is durable and quorum (as the official tutorial
//! programs declare theirs); one that exists is used as it is, unless an explicit --queue-type
//! contradicts it; an exchange of the same kind is used whatever its durability, one of another
//! kind is an error. And the official programs (tests/live/official_tutorials.py) and rmqlab
//! work together in both orders.

use crate::common::{
    TestExchange, TestQueue, assert_code, broker, broker_address, broker_url, management_api,
    rabbitmqctl, rabbitmqctl_cleanup, rmq, rmqlab, text,
};
use lapin::{
    ExchangeKind,
    options::{ExchangeDeclareOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};
use std::process::{Command, Output};

/// (type, durable) of a queue, as the management API reports it.
fn queue_kind(queue: &str) -> (String, bool) {
    let body = management_api("GET", &format!("/api/queues/%2F/{queue}"));
    let json: serde_json::Value = serde_json::from_str(&body).expect("the API answers JSON");
    (
        json["type"].as_str().expect("a queue type").to_string(),
        json["durable"].as_bool().expect("durable"),
    )
}

fn declare_exchange(exchange: &str, kind: ExchangeKind, durable: bool) {
    broker::block_on(async {
        let connection = broker::connect().await;
        let channel = connection.create_channel().await.unwrap();
        let options = ExchangeDeclareOptions {
            durable,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(exchange.into(), kind, options, FieldTable::default())
            .await
            .expect("declare the test exchange");
        let _ = connection.close(200, "OK".into()).await;
    });
}

/// Publishes one message the quick way (`hello send WORDS`) and one through lapin (`-f`).
fn send_both_ways(queue: &str, extra: &str) -> (Output, Output) {
    let quick = rmq(&format!("hello send --queue {queue} {extra} quick"), None);
    let bulk = rmq(
        &format!("hello send --queue {queue} {extra} -f -"),
        Some(b"bulk\n"),
    );
    (quick, bulk)
}

fn received(queue: &str, count: usize) -> Vec<String> {
    let output = rmq(
        &format!("hello recv --queue {queue} --count {count} -o body"),
        None,
    );
    assert_code(&output, 0);
    text(&output.stdout).lines().map(str::to_string).collect()
}

#[test]
fn an_absent_queue_is_created_durable_and_quorum_by_every_path() {
    for path in ["quick", "bulk", "consumer"] {
        let q = TestQueue::new("absent_quorum");
        let output = match path {
            "quick" => rmq(&format!("hello send --queue {q}"), None),
            "bulk" => rmq(&format!("task new --queue {q} -f -"), Some(b"t\n")),
            _ => rmq(
                &format!("hello recv --queue {q} --idle-timeout 100ms"),
                None,
            ),
        };
        assert_code(&output, 0);
        assert_eq!(queue_kind(q.name()), ("quorum".into(), true), "{path}");
    }
}

#[test]
fn queue_type_classic_creates_a_classic_queue() {
    let q = TestQueue::new("explicit_classic");
    assert_code(
        &rmq(
            &format!("hello send --queue {q} --queue-type classic"),
            None,
        ),
        0,
    );
    assert_eq!(queue_kind(q.name()), ("classic".into(), true));
}

#[test]
fn a_classic_queue_left_by_an_older_run_is_used_as_it_is() {
    let q = TestQueue::new("classic_adopted");
    broker::declare(q.name(), true).expect("declare a durable classic queue");
    let (quick, bulk) = send_both_ways(q.name(), "-v");
    for output in [&quick, &bulk] {
        assert_code(output, 0);
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("using it as it is") && stderr.contains("x-queue-type"),
            "{stderr}"
        );
    }
    assert_eq!(received(q.name(), 2), ["quick", "bulk"]);
    assert_eq!(queue_kind(q.name()), ("classic".into(), true));
}

#[test]
fn a_quorum_queue_declared_as_the_tutorials_do_is_used() {
    let q = TestQueue::new("quorum_used");
    broker::declare_quorum(q.name());
    let (quick, bulk) = send_both_ways(q.name(), "-v");
    for output in [&quick, &bulk] {
        assert_code(output, 0);
        assert!(!text(&output.stderr).contains("using it as it is"));
    }
    assert_eq!(received(q.name(), 2), ["quick", "bulk"]);
}

#[test]
fn an_old_non_durable_queue_is_used_as_it_is_where_the_broker_still_has_one() {
    let q = TestQueue::new("transient_adopted");
    match broker::declare(q.name(), false) {
        // RabbitMQ 4.3's default (transient_nonexcl_queues not permitted): no such queue can
        // exist, so there is nothing to adopt.
        Err(error) => assert!(
            error.to_string().contains("transient_nonexcl_queues"),
            "the broker refused a transient queue for another reason: {error}"
        ),
        Ok(()) => {
            let (quick, bulk) = send_both_ways(q.name(), "-v");
            for output in [&quick, &bulk] {
                assert_code(output, 0);
                let stderr = text(&output.stderr);
                assert!(stderr.contains("'durable'"), "{stderr}");
            }
            assert_eq!(received(q.name(), 2), ["quick", "bulk"]);
        }
    }
}

#[test]
fn an_explicit_queue_type_that_contradicts_the_queue_is_an_error_and_sends_nothing() {
    let q = TestQueue::new("explicit_mismatch");
    broker::declare_quorum(q.name());
    let (quick, bulk) = send_both_ways(q.name(), "--queue-type classic");
    let consumer = rmq(
        &format!("hello recv --queue {q} --queue-type classic --count 1"),
        None,
    );
    for output in [&quick, &bulk, &consumer] {
        assert_code(output, 65);
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("'x-queue-type' is quorum on the broker, rmqlab declares classic"),
            "{stderr}"
        );
        assert!(stderr.contains("leave out --queue-type"), "{stderr}");
        assert!(!stderr.contains("queues delete"), "{stderr}");
    }
    assert_eq!(broker::ready(q.name()), 0);
}

/// The broker names one difference in its refusal: a classic queue with a TTL refuses a quorum
/// declaration for its `x-message-ttl` first, never reaching `x-queue-type`. The type is still
/// checked (through the management API).
#[test]
fn an_explicit_type_is_checked_even_when_another_argument_differs_first() {
    let q = TestQueue::new("explicit_other_first");
    let mut arguments = FieldTable::default();
    arguments.insert("x-message-ttl".into(), AMQPValue::LongInt(600_000));
    broker::declare_durable(q.name(), arguments);
    let (quick, bulk) = send_both_ways(q.name(), "--queue-type quorum");
    let consumer = rmq(
        &format!("hello recv --queue {q} --queue-type quorum --count 1"),
        None,
    );
    for output in [&quick, &bulk, &consumer] {
        assert_code(output, 65);
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("'x-queue-type' is classic on the broker, rmqlab declares quorum"),
            "{stderr}"
        );
        assert!(stderr.contains("leave out --queue-type"), "{stderr}");
    }
    assert_eq!(broker::ready(q.name()), 0);
    // The type it has: used as it is, with its TTL.
    let (quick, bulk) = send_both_ways(q.name(), "--queue-type classic");
    assert_code(&quick, 0);
    assert_code(&bulk, 0);
    assert_eq!(received(q.name(), 2), ["quick", "bulk"]);
}

#[test]
fn an_explicit_type_the_queue_has_uses_it_with_its_other_arguments() {
    let q = TestQueue::new("explicit_match");
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(5));
    broker::block_on(async {
        let connection = broker::connect().await;
        let channel = connection.create_channel().await.unwrap();
        let options = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(q.name().into(), options, arguments)
            .await
            .expect("declare a quorum queue with a length limit");
        let _ = connection.close(200, "OK".into()).await;
    });
    let (quick, bulk) = send_both_ways(q.name(), "--queue-type quorum -v");
    for output in [&quick, &bulk] {
        assert_code(output, 0);
        let stderr = text(&output.stderr);
        assert!(stderr.contains("x-max-length"), "{stderr}");
    }
    assert_eq!(received(q.name(), 2), ["quick", "bulk"]);
}

#[test]
fn a_user_without_configure_permission_uses_what_exists() {
    const PASSWORD: &str = "no-configure-pw";
    let q = TestQueue::new("no_configure");
    let absent = TestQueue::new("no_configure_absent");
    broker::declare_quorum(q.name());
    let user = q.name().to_string();
    rabbitmqctl(&["add_user", &user, PASSWORD]);
    rabbitmqctl(&["set_permissions", &user, "", ".*", ".*"]);
    let as_user = |args: &[&str]| {
        rmqlab()
            .env(
                "RMQLAB_URL",
                format!("amqp://{user}:{PASSWORD}@{}/%2f", broker_address()),
            )
            .args(args)
            .output()
            .unwrap()
    };
    let sent = as_user(&["hello", "send", "--queue", q.name(), "one"]);
    let received = as_user(&[
        "hello",
        "recv",
        "--queue",
        q.name(),
        "--count",
        "1",
        "-o",
        "body",
    ]);
    let refused = as_user(&["hello", "send", "--queue", absent.name(), "lost"]);
    rabbitmqctl_cleanup(&["delete_user", &user]);
    assert_code(&sent, 0);
    assert_code(&received, 0);
    assert_eq!(text(&received.stdout), "one\n");
    assert_code(&refused, 77);
    assert!(
        text(&refused.stderr).contains(&format!("cannot declare queue '{absent}'")),
        "{}",
        text(&refused.stderr)
    );
    assert!(!text(&refused.stderr).contains(PASSWORD));
}

#[test]
fn an_existing_exchange_of_the_same_kind_is_used_whatever_its_durability() {
    for durable in [true, false] {
        let exchange = TestExchange::new("fanout_adopted");
        declare_exchange(&exchange.0, ExchangeKind::Fanout, durable);
        let mut listener = crate::common::Running::start(&[
            "pubsub",
            "listen",
            "--exchange",
            &exchange.0,
            "--count",
            "2",
        ]);
        listener.wait_for_stderr("Waiting for messages", std::time::Duration::from_secs(30));
        let quick = rmq(&format!("-v pubsub emit --exchange {exchange} one"), None);
        let bulk = rmq(
            &format!("-v pubsub emit --exchange {exchange} -f -"),
            Some(b"two\n"),
        );
        for output in [&quick, &bulk] {
            assert_code(output, 0);
            let adopted = text(&output.stderr).contains("using it as it is");
            assert_eq!(adopted, durable, "{}", text(&output.stderr));
        }
        assert_eq!(
            listener.next_line(std::time::Duration::from_secs(30)),
            " [x] one"
        );
        assert_eq!(
            listener.next_line(std::time::Duration::from_secs(30)),
            " [x] two"
        );
        let (code, _, _) = listener.finish(std::time::Duration::from_secs(30));
        assert_eq!(code, Some(0));
    }
}

#[test]
fn an_exchange_of_another_kind_is_an_error_by_every_path() {
    let exchange = TestExchange::new("other_kind");
    declare_exchange(&exchange.0, ExchangeKind::Direct, false);
    let quick = rmq(&format!("pubsub emit --exchange {exchange} one"), None);
    let bulk = rmq(
        &format!("pubsub emit --exchange {exchange} -f -"),
        Some(b"two\n"),
    );
    let listener = rmq(
        &format!("pubsub listen --exchange {exchange} --count 1"),
        None,
    );
    for output in [&quick, &bulk, &listener] {
        assert_code(output, 65);
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("'type' is direct on the broker, rmqlab declares fanout"),
            "{stderr}"
        );
    }
}

/// One of the official tutorial programs against the broker under test, on `name` (its queue or
/// exchange), to be given its other arguments.
pub fn official_command(program: &str, name: &str) -> Command {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/live/official_tutorials.py"
    );
    let mut command = Command::new("python3");
    command.arg(script).args([program, &broker_url(), name]);
    command
}

/// Runs one of the official tutorial programs against the broker under test, to its end.
pub fn official(program: &str, name: &str, words: &[&str]) -> Output {
    let output = official_command(program, name)
        .args(words)
        .output()
        .expect("run python3 (the interoperability tests need it, with pika)");
    assert!(
        output.status.success(),
        "{program}.py failed (is pika installed? scripts/test installs it): {}",
        text(&output.stderr)
    );
    output
}

#[test]
fn official_send_then_rmqlab_hello_recv() {
    let q = TestQueue::new("official_send");
    let sent = official("send", q.name(), &[]);
    assert_eq!(text(&sent.stdout), " [x] Sent 'Hello World!'\n");
    let output = rmq(&format!("hello recv --queue {q} --count 1"), None);
    assert_code(&output, 0);
    assert_eq!(text(&output.stdout), " [x] Received Hello World!\n");
}

#[test]
fn rmqlab_hello_send_then_official_receive() {
    let q = TestQueue::new("official_receive");
    let output = rmq(&format!("hello send --queue {q}"), None);
    assert_code(&output, 0);
    assert_eq!(text(&output.stdout), " [x] Sent 'Hello World!'\n");
    let received = official("receive", q.name(), &[]);
    assert_eq!(
        text(&received.stdout).lines().last(),
        Some(" [x] Received Hello World!")
    );
    assert_eq!(queue_kind(q.name()), ("quorum".into(), true));
}

#[test]
fn official_new_task_then_rmqlab_task_work() {
    let q = TestQueue::new("official_new_task");
    let sent = official("new_task", q.name(), &["First", "message."]);
    assert_eq!(text(&sent.stdout), " [x] Sent First message.\n");
    let output = rmq(
        &format!("task work --queue {q} --count 1 --dot-duration 0s"),
        None,
    );
    assert_code(&output, 0);
    assert_eq!(
        text(&output.stdout),
        " [x] Received First message.\n [x] Done\n"
    );
}

#[test]
fn rmqlab_task_new_then_official_worker() {
    let q = TestQueue::new("official_worker");
    assert_code(&rmq(&format!("task new --queue {q} Second task"), None), 0);
    let worked = official("worker", q.name(), &[]);
    assert!(
        text(&worked.stdout).ends_with(" [x] Received Second task\n [x] Done\n"),
        "{}",
        text(&worked.stdout)
    );
    assert_eq!(broker::ready(q.name()), 0);
}
