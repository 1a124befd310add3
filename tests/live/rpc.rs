//! Tutorial 6: `rpc serve` and `rpc call` against the live broker, with each other and with the
//! official Python programs.

use crate::common::{
    Running, TestQueue, assert_code, assert_ended_by, broker, code, eventually, rmq, run, text,
    wait_output,
};
use crate::declarations::{official, official_command};
use serde_json::Value;
use std::{
    process::Stdio,
    time::{Duration, Instant},
};

const WAIT: Duration = Duration::from_secs(30);

/// fib(n) in decimal, computed here from first principles (digit strings), to check rmqlab's.
fn reference_fib(n: usize) -> String {
    fn add(a: &[u8], b: &[u8]) -> Vec<u8> {
        // Little-endian decimal digits.
        let mut sum = Vec::with_capacity(a.len().max(b.len()) + 1);
        let mut carry = 0;
        for i in 0..a.len().max(b.len()) {
            let digit = a.get(i).copied().unwrap_or(0) + b.get(i).copied().unwrap_or(0) + carry;
            sum.push(digit % 10);
            carry = digit / 10;
        }
        if carry > 0 {
            sum.push(carry);
        }
        sum
    }
    let (mut a, mut b) = (vec![0u8], vec![1u8]);
    for _ in 0..n {
        let next = add(&a, &b);
        a = std::mem::replace(&mut b, next);
    }
    a.iter().rev().map(|d| char::from(b'0' + d)).collect()
}

/// A server on `queue`, waiting for requests once this returns.
fn serve(queue: &TestQueue, extra: &[&str]) -> Running {
    let mut args = vec!["rpc", "serve", "--queue", queue.name()];
    args.extend(extra);
    let mut server = Running::start(&args);
    match extra.contains(&"-o") {
        true => {
            server.wait_for_stderr("Waiting for messages", WAIT);
        }
        false => assert_eq!(server.next_line(WAIT), " [x] Awaiting RPC requests"),
    }
    server
}

fn stop(server: Running) {
    server.signal("INT");
    let (status, _, stderr) = server.finish_status(WAIT);
    assert_ended_by(&status, "INT", &stderr);
}

fn lines(bytes: &[u8]) -> Vec<String> {
    text(bytes).lines().map(str::to_string).collect()
}

#[test]
fn serve_and_call_print_the_tutorials_lines_and_fib_is_exact() {
    let q = TestQueue::new("rpc_round_trip");
    let mut server = serve(&q, &[]);
    let called = rmq(&format!("rpc call --queue {q}"), None);
    assert_code(&called, 0);
    assert_eq!(
        text(&called.stdout),
        " [x] Requesting fib(30)\n [.] Got 832040\n"
    );
    assert_eq!(server.next_line(WAIT), " [.] fib(30)");

    for n in [0, 1, 30, 100, 1000] {
        let called = rmq(&format!("rpc call --queue {q} {n} -o body"), None);
        assert_code(&called, 0);
        assert_eq!(
            text(&called.stdout),
            format!("{}\n", reference_fib(n)),
            "fib({n})"
        );
    }
    assert_eq!(reference_fib(30), "832040");

    // A body that is no N gets an error reply, and the server goes on.
    for bad in ["abc", "-1", "100001", "99999999999999999999999"] {
        let called = run(
            &["rpc", "call", "--queue", q.name(), bad, "-o", "json"],
            None,
        );
        assert_code(&called, 65);
        let reply: Value = serde_json::from_slice(&called.stdout).unwrap();
        let reason = reply["properties"]["headers"]["x-error"].as_str().unwrap();
        assert!(
            reason.contains("is not an integer from 0 to 100000"),
            "{reason}"
        );
        assert!(
            text(&called.stderr).contains(reason),
            "{}",
            text(&called.stderr)
        );
    }
    let empty = run(&["rpc", "call", "--queue", q.name(), ""], None);
    assert_code(&empty, 65);
    let called = rmq(&format!("rpc call --queue {q} 10 -o body"), None);
    assert_eq!(text(&called.stdout), "55\n");
    stop(server);
    assert_eq!(broker::queue_state(q.name()), Some((0, 0)));
}

#[test]
fn exclusive_reply_queue_works_as_the_python_tutorial() {
    let q = TestQueue::new("rpc_exclusive");
    let server = serve(&q, &[]);
    let called = rmq(
        &format!("rpc call --queue {q} --reply-queue exclusive 12"),
        None,
    );
    assert_code(&called, 0);
    assert_eq!(
        text(&called.stdout),
        " [x] Requesting fib(12)\n [.] Got 144\n"
    );
    stop(server);
}

#[test]
fn exec_turns_a_command_into_a_server_and_relays_its_exit_code() {
    let q = TestQueue::new("rpc_exec");
    let server = serve(&q, &["--exec", "tr a-z A-Z"]);
    let called = run(
        &["rpc", "call", "--queue", q.name(), "-f", "-", "-o", "body"],
        Some(b"hello\nrabbit mq\n"),
    );
    assert_code(&called, 0);
    assert_eq!(text(&called.stdout), "HELLO\nRABBIT MQ\n");
    let json = rmq(&format!("rpc call --queue {q} abc -o json"), None);
    assert_code(&json, 0);
    let reply: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(reply["body"], "ABC");
    assert_eq!(reply["request"], "abc");
    assert_eq!(reply["properties"]["headers"]["x-exit-code"], 0);
    assert!(reply["round_trip_ms"].as_f64().unwrap() > 0.0);
    stop(server);

    let failing = serve(&q, &["--exec", "echo 'it failed'; exit 3"]);
    let called = rmq(&format!("rpc call --queue {q} x"), None);
    assert_code(&called, 3);
    assert_eq!(
        text(&called.stdout),
        " [x] Requesting fib(x)\n [.] Got it failed\n\n"
    );
    stop(failing);
    // The failed request was answered, so acked.
    assert_eq!(broker::queue_state(q.name()), Some((0, 0)));
}

#[test]
fn many_requests_through_four_servers_come_back_once_each_in_input_order() {
    let q = TestQueue::new("rpc_many");
    let servers: Vec<Running> = (0..4).map(|_| serve(&q, &[])).collect();
    let input: String = (0..2000).map(|i| format!("{}\n", i % 500)).collect();
    let called = run(
        &["rpc", "call", "--queue", q.name(), "-f", "-", "-o", "json"],
        Some(input.as_bytes()),
    );
    assert_code(&called, 0);
    let replies: Vec<Value> = lines(&called.stdout)
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(replies.len(), 2000);
    let mut ids = std::collections::HashSet::new();
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(reply["request"], (i % 500).to_string(), "reply {i}");
        assert_eq!(reply["body"], reference_fib(i % 500), "reply {i}");
        assert!(ids.insert(reply["properties"]["correlation_id"].to_string()));
    }
    let mut served = 0;
    for server in servers {
        server.signal("INT");
        let (status, lines, stderr) = server.finish_status(WAIT);
        assert_ended_by(&status, "INT", &stderr);
        served += lines.iter().filter(|l| l.starts_with(" [.] fib(")).count();
    }
    assert_eq!(served, 2000, "each request served exactly once");
}

#[test]
fn a_server_killed_mid_request_leaves_it_to_another_and_the_client_gets_one_reply() {
    let q = TestQueue::new("rpc_killed");
    let command = ["--exec", "sleep 1; cat"];
    let mut first = serve(&q, &command);
    let client = Running::start(&["rpc", "call", "--queue", q.name(), "ping", "-o", "body"]);
    assert_eq!(first.next_line(WAIT), " [.] ping");
    let mut second = serve(&q, &command);
    first.signal("KILL");
    let _ = first.finish_status(WAIT);
    assert_eq!(second.next_line(WAIT), " [.] ping");
    let (code, lines, stderr) = client.finish(WAIT);
    assert_eq!(
        (code, lines),
        (Some(0), vec!["ping".to_string()]),
        "{stderr}"
    );
    stop(second);
}

/// With requests prefetched and replies awaiting their confirms, `--count` still counts the
/// requests handled: exactly that many are answered, the rest stay in the queue.
#[test]
fn count_with_a_large_prefetch_serves_exactly_that_many() {
    let q = TestQueue::new("rpc_count_prefetch");
    broker::declare_quorum(q.name());
    let (mut client, mut stdin) = Running::start_with_stdin(&[
        "rpc",
        "call",
        "--queue",
        q.name(),
        "-f",
        "-",
        "-o",
        "body",
        "--concurrency",
        "300",
        "--timeout",
        "60s",
    ]);
    std::io::Write::write_all(&mut stdin, "1\n".repeat(300).as_bytes()).unwrap();
    eventually(WAIT, "300 requests in the queue", || {
        broker::ready(q.name()) == 300
    });
    let served = rmq(
        &format!("rpc serve --queue {q} --prefetch 16 --count 100"),
        None,
    );
    assert_code(&served, 0);
    let answered = lines(&served.stdout)
        .iter()
        .filter(|line| *line == " [.] fib(1)")
        .count();
    assert_eq!(answered, 100, "{}", text(&served.stdout));
    eventually(WAIT, "the other 200 requests back in the queue", || {
        broker::queue_state(q.name()) == Some((200, 0))
    });
    for n in 0..100 {
        assert_eq!(client.next_line(WAIT), "1", "reply {n}");
    }
    assert_eq!(client.try_next_line(Duration::from_secs(1)), None);
    drop(stdin);
    drop(client);
}

#[test]
fn ctrl_c_finishes_the_request_in_progress() {
    let q = TestQueue::new("rpc_ctrl_c");
    let mut server = serve(&q, &["--exec", "sleep 1; cat"]);
    let client = Running::start(&["rpc", "call", "--queue", q.name(), "late", "-o", "body"]);
    assert_eq!(server.next_line(WAIT), " [.] late");
    server.signal("INT");
    let (code, lines, stderr) = client.finish(WAIT);
    assert_eq!(
        (code, lines),
        (Some(0), vec!["late".to_string()]),
        "{stderr}"
    );
    let (status, _, stderr) = server.finish_status(WAIT);
    assert_ended_by(&status, "INT", &stderr);
    assert!(
        stderr.contains("Stopping after the current request"),
        "{stderr}"
    );
    assert_eq!(broker::queue_state(q.name()), Some((0, 0)));
}

#[test]
fn a_command_that_cannot_start_puts_the_request_back_and_exits_71() {
    let q = TestQueue::new("rpc_missing_command");
    broker::declare_quorum(q.name());
    let client = Running::start(&["rpc", "call", "--queue", q.name(), "--timeout", "20s"]);
    eventually(WAIT, "the request in the queue", || {
        broker::ready(q.name()) == 1
    });
    let served = rmq(
        &format!("rpc serve --queue {q} --exec rmqlab-no-such-command"),
        None,
    );
    assert_code(&served, 71);
    assert!(
        text(&served.stderr).contains("not found"),
        "{}",
        text(&served.stderr)
    );
    eventually(WAIT, "the request back in the queue", || {
        broker::ready(q.name()) == 1
    });
    drop(client);
}

#[test]
fn no_reply_in_time_is_75_with_the_consumer_count_and_the_request_expires() {
    let q = TestQueue::new("rpc_no_server");
    broker::declare_quorum(q.name());
    let called = rmq(&format!("rpc call --queue {q} --timeout 1s"), None);
    assert_code(&called, 75);
    let stderr = text(&called.stderr);
    assert!(
        stderr.contains("no reply to request 1 within 1s"),
        "{stderr}"
    );
    assert!(
        stderr.contains("has no consumer: is `rmqlab rpc serve --queue"),
        "{stderr}"
    );
    // Expired: a server started now gets nothing.
    std::thread::sleep(Duration::from_millis(200));
    let served = rmq(&format!("rpc serve --queue {q} --idle-timeout 2s"), None);
    assert_code(&served, 0);
    assert_eq!(text(&served.stdout), " [x] Awaiting RPC requests\n");
    eventually(WAIT, "the expired request gone", || {
        broker::ready(q.name()) == 0
    });
}

#[test]
fn no_request_queue_is_65_at_once() {
    let q = TestQueue::new("rpc_no_queue");
    let started = Instant::now();
    let called = rmq(&format!("rpc call --queue {q}"), None);
    assert_code(&called, 65);
    assert!(started.elapsed() < Duration::from_secs(5));
    let stderr = text(&called.stderr);
    assert!(stderr.contains(&format!("no queue '{q}'")), "{stderr}");
    assert!(
        !broker::exists(q.name()),
        "rpc call must not declare the queue"
    );
}

#[test]
fn official_python_client_and_server_interoperate_with_rmqlab() {
    let q = TestQueue::new("rpc_official");
    // rmqlab serves, the tutorial's client asks.
    let server = serve(&q, &[]);
    let asked = official("rpc_client", q.name(), &[]);
    assert_eq!(
        text(&asked.stdout),
        " [x] Requesting fib(30)\n [.] Got 832040\n"
    );
    stop(server);
    // The tutorial's server answers, rmqlab asks (both reply-queue kinds).
    let server = official_command("rpc_server", q.name())
        .arg("2")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3 with pika");
    eventually(WAIT, "the official server consuming", || {
        broker::queue_state(q.name()).is_some_and(|(_, consumers)| consumers == 1)
    });
    let direct = rmq(&format!("rpc call --queue {q} 30"), None);
    assert_code(&direct, 0);
    assert_eq!(
        text(&direct.stdout),
        " [x] Requesting fib(30)\n [.] Got 832040\n"
    );
    let exclusive = rmq(
        &format!("rpc call --queue {q} --reply-queue exclusive 1000 -o body"),
        None,
    );
    assert_code(&exclusive, 0);
    assert_eq!(
        text(&exclusive.stdout),
        format!("{}\n", reference_fib(1000))
    );
    let served = wait_output(server, WAIT);
    assert_eq!(code(&served), 0, "{}", text(&served.stderr));
    assert_eq!(
        text(&served.stdout),
        " [x] Awaiting RPC requests\n [.] fib(30)\n [.] fib(1000)\n"
    );
}
