//! Tutorial 3 against the live broker: fan-out to every listener, drops noted, queues cleaned up.

use crate::common::{Running, TestExchange, assert_code, assert_ended_by, broker, rmq, text};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// Starts a listener and waits until its queue is bound and consuming; returns it with the name
/// of its exclusive queue.
fn listener(exchange: &TestExchange, extra: &str) -> (Running, String) {
    let running = Running::start_line(&format!("-v pubsub listen --exchange {exchange} {extra}"));
    let stderr = running.wait_for_stderr(" [*] Waiting for messages", WAIT);
    let queue = stderr
        .split("exclusive queue '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_else(|| panic!("no queue name in: {stderr}"))
        .to_string();
    (running, queue)
}

#[test]
fn every_listener_receives_every_message_in_order() {
    let x = TestExchange::new("fanout");
    let (first, first_queue) = listener(&x, "--count 3");
    let (second, second_queue) = listener(&x, "--count 3");
    assert_ne!(first_queue, second_queue, "each listener has its own queue");

    let emitted = rmq(
        &format!("pubsub emit --exchange {x} -f -"),
        Some(b"a\nb\nc\n"),
    );
    assert_code(&emitted, 0);
    assert_eq!(
        text(&emitted.stdout),
        " [x] Sent 'a'\n [x] Sent 'b'\n [x] Sent 'c'\n"
    );
    assert!(
        !text(&emitted.stderr).contains("dropped"),
        "{}",
        text(&emitted.stderr)
    );

    for (listener, queue) in [(first, first_queue), (second, second_queue)] {
        let (code, lines, stderr) = listener.finish(WAIT);
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(lines, [" [x] a", " [x] b", " [x] c"]);
        assert!(
            !broker::exists(&queue),
            "queue {queue} outlived its listener"
        );
    }
}

#[test]
fn words_make_one_message() {
    let x = TestExchange::new("words");
    let (listening, _) = listener(&x, "--count 1 -o body");
    let emitted = rmq(
        &format!("pubsub emit --exchange {x} warning: disk full"),
        None,
    );
    assert_code(&emitted, 0);
    assert_eq!(text(&emitted.stdout), " [x] Sent 'warning: disk full'\n");
    let (code, lines, _) = listening.finish(WAIT);
    assert_eq!(code, Some(0));
    assert_eq!(lines, ["warning: disk full"]);
}

#[test]
fn default_message_is_the_tutorials() {
    let x = TestExchange::new("default_message");
    let (listening, _) = listener(&x, "--count 1");
    assert_code(&rmq(&format!("pubsub emit --exchange {x}"), None), 0);
    let (_, lines, _) = listening.finish(WAIT);
    assert_eq!(lines, [" [x] info: Hello World!"]);
}

#[test]
fn emitting_with_no_listener_notes_the_drop_and_succeeds() {
    let x = TestExchange::new("no_listener");
    let emitted = rmq(&format!("pubsub emit --exchange {x} lost"), None);
    assert_code(&emitted, 0);
    assert_eq!(
        text(&emitted.stderr),
        format!(" [!] no queue is bound to exchange '{x}': message dropped\n")
    );
    let many = rmq(
        &format!("pubsub emit --exchange {x} -f -"),
        Some(b"1\n2\n3\n"),
    );
    assert_code(&many, 0);
    assert!(
        text(&many.stderr).contains(&format!(
            " [!] 3 of 3 messages were dropped: no queue is bound to exchange '{x}'"
        )),
        "{}",
        text(&many.stderr)
    );
}

#[test]
fn listener_queue_is_gone_after_ctrl_c() {
    let x = TestExchange::new("listener_gone");
    let (listening, queue) = listener(&x, "");
    assert!(broker::exists(&queue));
    listening.signal("INT");
    let (status, _, stderr) = listening.finish_status(WAIT);
    assert_ended_by(&status, "INT", &stderr);
    assert!(!broker::exists(&queue));
}

#[test]
fn exchange_of_another_type_exits_65() {
    let x = TestExchange::new("type_mismatch");
    broker::block_on(async {
        let connection = broker::connect().await;
        let channel = connection.create_channel().await.unwrap();
        channel
            .exchange_declare(
                x.0.as_str().into(),
                lapin::ExchangeKind::Direct,
                Default::default(),
                Default::default(),
            )
            .await
            .unwrap();
        let _ = connection.close(200, "OK".into()).await;
    });
    let emitted = rmq(&format!("pubsub emit --exchange {x}"), None);
    assert_code(&emitted, 65);
    let stderr = text(&emitted.stderr);
    assert!(
        stderr.starts_with(&format!(
            "rmqlab: error: exchange '{x}' already exists with other properties: 'type' is direct on the broker, rmqlab declares fanout\n"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: RabbitMQ cannot change an existing exchange"),
        "{stderr}"
    );
}
