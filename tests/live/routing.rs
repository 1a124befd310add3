//! Tutorial 4 against the live broker: a direct exchange gives each message to the listeners
//! bound with its severity, drops are noted with the key, a named queue keeps what arrives while
//! no listener runs, and the official programs work with rmqlab both ways.

use crate::{
    common::{
        Running, TestExchange, TestQueue, assert_code, assert_ended_by, broker, rmq, run, text,
    },
    declarations::official_command,
};
use std::time::Duration;

pub const WAIT: Duration = Duration::from_secs(20);

/// Starts `rmqlab ARGS` (a listener) and waits until its bindings are made and it consumes.
pub fn listener(args: &[&str]) -> Running {
    let running = Running::start(args);
    running.wait_for_stderr(" [*] Waiting for messages", WAIT);
    running
}

/// Starts an official receiver (`receive_logs_direct`, `receive_logs_topic`) stopping after
/// `count` messages, and waits until it consumes.
pub fn official_listener(
    program: &str,
    exchange: &TestExchange,
    count: u32,
    keys: &[&str],
) -> Running {
    let mut running = Running::spawn(
        official_command(program, &exchange.0)
            .arg(count.to_string())
            .args(keys),
    );
    assert_eq!(
        running.next_line(WAIT),
        " [*] Waiting for logs. To exit press CTRL+C"
    );
    running
}

#[test]
fn the_tutorials_transcript() {
    let x = TestExchange::new("routing_transcript");
    let errors = listener(&[
        "routing",
        "listen",
        "--exchange",
        &x.0,
        "warning",
        "error",
        "--count",
        "2",
    ]);
    let all = listener(&[
        "routing",
        "listen",
        "--exchange",
        &x.0,
        "info",
        "warning",
        "error",
        "--count",
        "3",
    ]);
    let emitted = run(
        &[
            "routing",
            "emit",
            "--exchange",
            &x.0,
            "error",
            "Run. Run. Or it will explode.",
        ],
        None,
    );
    assert_code(&emitted, 0);
    assert_eq!(
        text(&emitted.stdout),
        " [x] Sent error:Run. Run. Or it will explode.\n"
    );
    assert_eq!(text(&emitted.stderr), "");
    for line in [
        "routing emit --exchange X info",
        "routing emit --exchange X warning disk full",
    ] {
        assert_code(&rmq(&line.replace(" X ", &format!(" {x} ")), None), 0);
    }
    let (code, lines, stderr) = errors.finish(WAIT);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        lines,
        [
            " [x] error:Run. Run. Or it will explode.",
            " [x] warning:disk full"
        ]
    );
    let (code, lines, stderr) = all.finish(WAIT);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        lines,
        [
            " [x] error:Run. Run. Or it will explode.",
            " [x] info:Hello World!",
            " [x] warning:disk full"
        ]
    );
}

#[test]
fn the_first_word_is_the_key_and_the_defaults_are_the_tutorials() {
    let x = TestExchange::new("routing_defaults");
    let listening = listener(&[
        "routing",
        "listen",
        "--exchange",
        &x.0,
        "info",
        "error",
        "--count",
        "2",
    ]);
    let sent = rmq(&format!("routing emit --exchange {x}"), None);
    assert_eq!(text(&sent.stdout), " [x] Sent info:Hello World!\n");
    // The official emitter would send this to `info`: rmqlab takes the first word as the key.
    let sent = rmq(&format!("routing emit --exchange {x} error"), None);
    assert_eq!(text(&sent.stdout), " [x] Sent error:Hello World!\n");
    let (_, lines, _) = listening.finish(WAIT);
    assert_eq!(lines, [" [x] info:Hello World!", " [x] error:Hello World!"]);
}

#[test]
fn a_file_is_one_message_per_line_with_the_key() {
    let x = TestExchange::new("routing_file");
    let listening = listener(&[
        "routing",
        "listen",
        "--exchange",
        &x.0,
        "error",
        "--count",
        "3",
        "-o",
        "json",
    ]);
    let sent = rmq(
        &format!("routing emit --exchange {x} error -f -"),
        Some(b"a\nb\nc\n"),
    );
    assert_code(&sent, 0);
    assert_eq!(
        text(&sent.stdout),
        " [x] Sent error:a\n [x] Sent error:b\n [x] Sent error:c\n"
    );
    let (code, lines, _) = listening.finish(WAIT);
    assert_eq!(code, Some(0));
    let bodies: Vec<(String, String, String)> = lines
        .iter()
        .map(|line| {
            let json: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                json["body"].as_str().unwrap().to_string(),
                json["routing_key"].as_str().unwrap().to_string(),
                json["exchange"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = ["a", "b", "c"]
        .iter()
        .map(|body| (body.to_string(), "error".to_string(), x.0.clone()))
        .collect();
    assert_eq!(bodies, expected);
}

#[test]
fn an_unbound_key_is_dropped_and_noted_with_the_key() {
    let x = TestExchange::new("routing_unbound");
    let _listening = listener(&["routing", "listen", "--exchange", &x.0, "error"]);
    let sent = rmq(&format!("routing emit --exchange {x} debug lost"), None);
    assert_code(&sent, 0);
    assert_eq!(text(&sent.stdout), " [x] Sent debug:lost\n");
    assert_eq!(
        text(&sent.stderr),
        format!(
            " [!] no queue is bound to exchange '{x}' for routing key 'debug': message dropped\n"
        )
    );
    let many = rmq(
        &format!("routing emit --exchange {x} debug -f -"),
        Some(b"1\n2\n"),
    );
    assert_code(&many, 0);
    assert!(
        text(&many.stderr).contains(&format!(
            " [!] 2 of 2 messages were dropped: no queue is bound to exchange '{x}' for routing key 'debug'"
        )),
        "{}",
        text(&many.stderr)
    );
}

#[test]
fn a_named_queue_keeps_what_arrives_while_no_listener_runs() {
    let x = TestExchange::new("routing_named");
    let q = TestQueue::new("routing_named");
    let first = rmq(
        &format!("routing listen --exchange {x} --queue {q} error --idle-timeout 100ms"),
        None,
    );
    assert_code(&first, 0);
    assert!(broker::exists(q.name()), "the queue outlives its listener");
    let sent = rmq(&format!("routing emit --exchange {x} error kept"), None);
    assert_eq!(text(&sent.stderr), "", "a bound named queue takes it");
    let second = rmq(
        &format!("routing listen --exchange {x} --queue {q} error --count 1"),
        None,
    );
    assert_code(&second, 0);
    assert_eq!(text(&second.stdout), " [x] error:kept\n");
    let api = crate::common::management_api("GET", &format!("/api/queues/%2F/{q}"));
    let json: serde_json::Value = serde_json::from_str(&api).unwrap();
    assert_eq!(json["type"], "quorum");
}

#[test]
fn ctrl_c_ends_a_listener_by_sigint_and_its_queue_goes() {
    let x = TestExchange::new("routing_ctrl_c");
    let listening = Running::start(&["-v", "routing", "listen", "--exchange", &x.0, "error"]);
    let stderr = listening.wait_for_stderr(" [*] Waiting for messages", WAIT);
    let queue = stderr
        .split("exclusive queue '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_else(|| panic!("no queue name in: {stderr}"))
        .to_string();
    listening.signal("INT");
    let (status, _, stderr) = listening.finish_status(WAIT);
    assert_ended_by(&status, "INT", &stderr);
    assert!(!broker::exists(&queue));
}

#[test]
fn official_emitter_then_rmqlab_listener() {
    let x = TestExchange::new("routing_official_emit");
    let listening = listener(&[
        "routing",
        "listen",
        "--exchange",
        &x.0,
        "warning",
        "error",
        "--count",
        "2",
    ]);
    for words in [
        &["error", "Run.", "Run."][..],
        &["warning", "disk", "full"],
        &["info", "ignored"],
    ] {
        let output = official_command("emit_log_direct", &x.0)
            .args(words)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
    }
    let (_, lines, _) = listening.finish(WAIT);
    assert_eq!(lines, [" [x] error:Run. Run.", " [x] warning:disk full"]);
}

#[test]
fn rmqlab_emitter_then_official_listener() {
    let x = TestExchange::new("routing_official_listen");
    let listening = official_listener("receive_logs_direct", &x, 2, &["warning", "error"]);
    for line in ["error Run. Run.", "info ignored", "warning disk full"] {
        assert_code(
            &rmq(&format!("routing emit --exchange {x} {line}"), None),
            0,
        );
    }
    let (code, lines, stderr) = listening.finish(WAIT);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        lines,
        [
            " [*] Waiting for logs. To exit press CTRL+C",
            " [x] error:Run. Run.",
            " [x] warning:disk full"
        ]
    );
}
