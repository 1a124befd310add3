//! Faults that disturb the whole broker: restarts, closed connections, a stopped broker. These
//! tests run one at a time (a lock), and cargo runs test binaries one after another, so no other
//! test sees the disturbance. Each counts what was confirmed against what was consumed.

mod common;

use common::{
    OwnNode, Running, TestExchange, TestQueue, assert_ended_by, broker, broker_address, eventually,
    lines_file, management_api, rabbitmqctl, rabbitmqctl_cleanup, rmq, rmqlab, scratch_dir, text,
};
use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

const WAIT: Duration = Duration::from_secs(60);

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Stops the RabbitMQ app; starts it again when dropped, even if the test failed.
struct AppStopped;

impl AppStopped {
    fn stop() -> AppStopped {
        rabbitmqctl(&["-q", "stop_app"]);
        AppStopped
    }
}

impl Drop for AppStopped {
    fn drop(&mut self) {
        rabbitmqctl_cleanup(&["-q", "start_app"]);
        rabbitmqctl_cleanup(&["-q", "await_startup"]);
    }
}

fn restart_broker() {
    drop(AppStopped::stop());
}

/// The prefetch of the consumers of `queue`, as the management API reports them.
fn api_prefetch(queue: &str) -> Vec<u64> {
    let consumers: serde_json::Value =
        serde_json::from_str(&management_api("GET", "/api/consumers/%2F")).unwrap();
    consumers
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["queue"]["name"] == queue)
        .map(|c| c["prefetch_count"].as_u64().unwrap())
        .collect()
}

fn bodies(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|i| i.to_string()).collect()
}

fn publish_all(queue: &str, bodies: &[String]) {
    broker::publish(
        queue,
        &bodies.iter().map(String::as_str).collect::<Vec<_>>(),
    );
}

/// A worker with `--count 20 --prefetch 3` takes 10 tasks, then `disturb` breaks its
/// connection, then 10 more tasks come: it completes all 20, exits 0, and its prefetch after
/// reconnecting is still 3.
fn worker_survives(test: &str, disturb: impl FnOnce(&TestQueue)) {
    let q = TestQueue::new(test);
    let mut worker = Running::start_line(&format!(
        "task work --queue {q} --count 20 --prefetch 3 --dot-duration 0s -o body"
    ));
    worker.wait_for_stderr("Waiting for messages", WAIT);
    publish_all(q.name(), &bodies(1..=10));
    for _ in 1..=10 {
        worker.next_line(WAIT);
    }
    eventually(WAIT, "the first 10 acks", || {
        broker::queue_state(q.name()) == Some((0, 1))
    });

    disturb(&q);

    worker.wait_for_stderr("Reconnected", WAIT);
    eventually(WAIT, "the API to show the consumer's prefetch of 3", || {
        api_prefetch(q.name()) == [3]
    });
    publish_all(q.name(), &bodies(11..=20));
    let (code, lines, stderr) = worker.finish(WAIT);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("reconnecting to amqp://guest:****@"),
        "{stderr}"
    );
    let received: BTreeSet<u32> = lines.iter().map(|l| l.parse().unwrap()).collect();
    assert_eq!(received, (1..=20).collect(), "all 20 tasks, none lost");
    assert_eq!(broker::queue_state(q.name()), Some((0, 0)));
}

#[test]
fn worker_survives_a_broker_restart() {
    let _serial = serial();
    worker_survives("restart", |_| restart_broker());
}

#[test]
fn worker_survives_close_all_connections() {
    let _serial = serial();
    worker_survives("close_all", |_| {
        rabbitmqctl(&["-q", "close_all_connections", "rmqlab fault test"]);
    });
}

#[test]
fn worker_survives_its_connection_closed_through_the_api() {
    let _serial = serial();
    worker_survives("api_close", |q| {
        // The worker's own connection: the one consuming from the test's queue (another
        // `rmqlab task work` may run on the same broker).
        let mut name = String::new();
        eventually(WAIT, "the API to list the worker's consumer", || {
            let consumers: serde_json::Value =
                serde_json::from_str(&management_api("GET", "/api/consumers/%2F")).unwrap();
            let found = consumers
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["queue"]["name"] == q.name());
            if let Some(found) = found {
                name = found["channel_details"]["connection_name"]
                    .as_str()
                    .unwrap()
                    .to_string();
            }
            found.is_some()
        });
        let encoded: String = name
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        management_api("DELETE", &format!("/api/connections/{encoded}"));
    });
}

#[test]
fn what_survives_a_restart_persistent_tasks_and_everything_in_a_quorum_queue() {
    let _serial = serial();
    let persistent = TestQueue::new("persistent_restart");
    let quorum_transient = TestQueue::new("quorum_transient_restart");
    let classic_transient = TestQueue::new("classic_transient_restart");
    let input: String = (1..=100).map(|i| format!("{i}\n")).collect();
    // task new publishes persistent messages; hello send transient ones (the tutorial's first
    // step), which a quorum queue (rmqlab's default) keeps all the same, and a classic one not.
    for line in [
        format!("-q task new --queue {persistent} -f -"),
        format!("-q hello send --queue {quorum_transient} -f -"),
        format!("-q hello send --queue {classic_transient} --queue-type classic -f -"),
    ] {
        let sent = rmq(&line, Some(input.as_bytes()));
        assert_eq!(
            text(&sent.stdout).lines().count(),
            100,
            "100 confirmed: {line}"
        );
    }

    restart_broker();

    assert_eq!(
        broker::ready(persistent.name()),
        100,
        "persistent: all kept"
    );
    assert_eq!(
        broker::ready(quorum_transient.name()),
        100,
        "a quorum queue keeps even transient messages"
    );
    assert_eq!(
        broker::ready(classic_transient.name()),
        0,
        "transient messages in a classic queue: gone with the restart"
    );
}

/// Writes lines `1`..`20000` to `stdin` in 40 chunks of 500, `pause` apart: deliberate pacing,
/// not a wait, that stretches the input over time so that a fault comes while lines still come.
fn feed_20000_lines(
    mut stdin: impl Write + Send + 'static,
    pause: Duration,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for chunk in 0..40 {
            let lines: String = (chunk * 500 + 1..=chunk * 500 + 500)
                .map(|i| format!("{i}\n"))
                .collect();
            stdin.write_all(lines.as_bytes()).unwrap();
            thread::sleep(pause);
        }
    })
}

#[test]
fn bulk_publish_resends_what_was_not_confirmed_when_connections_close() {
    let _serial = serial();
    let q = TestQueue::new("bulk_reconnect");
    let (publisher, stdin) =
        Running::start_with_stdin(&["task", "new", "--queue", q.name(), "-f", "-"]);
    // Over about four seconds, so that connections close mid-stream.
    let feeder = feed_20000_lines(stdin, Duration::from_millis(100));
    // The publisher is connected and publishing: the queue fills.
    eventually(WAIT, "the publisher's first messages in the queue", || {
        broker::queue_state(q.name()).is_some_and(|(ready, _)| ready > 0)
    });
    rabbitmqctl(&["-q", "close_all_connections", "rmqlab fault test 1"]);
    publisher.wait_for_stderr("Reconnected", WAIT);
    rabbitmqctl(&["-q", "close_all_connections", "rmqlab fault test 2"]);
    feeder.join().unwrap();
    let (code, stdout, stderr) = publisher.finish(WAIT);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stderr.matches("Reconnected").count(), 2, "{stderr}");
    // A line per reconnection that had messages in doubt (with paced input, often none).
    let resends = stderr.matches(" message(s) not confirmed before").count();
    assert!(resends <= 2, "{stderr}");
    assert!(!stderr.contains("Sending again the 0 "), "{stderr}");
    assert_eq!(stdout.len(), 20000, "every line confirmed once");

    let (ready, _) = broker::queue_state(q.name()).unwrap();
    assert!(ready >= 20000, "{ready} messages for 20,000 lines");
    let drained = rmq(
        &format!(
            "-q task work --queue {q} --count {ready} --prefetch 500 --dot-duration 0s -o body"
        ),
        None,
    );
    let distinct: BTreeSet<u32> = text(&drained.stdout)
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(distinct, (1..=20000).collect(), "every line at least once");
    // Duplicates in the queue are messages sent again: stderr reports how many were.
    let resent: usize = stderr
        .lines()
        .filter_map(|line| line.strip_prefix(" [*] Sending again the "))
        .map(|rest| rest.split(' ').next().unwrap().parse::<usize>().unwrap())
        .sum();
    let duplicates = ready as usize - 20000;
    assert!(
        duplicates <= resent,
        "{duplicates} duplicates, {resent} resent: {stderr}"
    );
    if resent > 0 {
        assert!(
            stderr.contains(&format!("{resent} message(s) were sent again")),
            "{stderr}"
        );
    }
}

#[test]
fn reconnect_timeout_gives_up_with_75() {
    let _serial = serial();
    let q = TestQueue::new("reconnect_timeout");
    let worker = Running::start_line(&format!("task work --queue {q} --reconnect-timeout 2s"));
    worker.wait_for_stderr("Waiting for messages", WAIT);
    let stopped = AppStopped::stop();
    let lost_at = Instant::now();
    let (code, _, stderr) = worker.finish(WAIT);
    let waited = lost_at.elapsed();
    drop(stopped);
    assert_eq!(code, Some(75), "{stderr}");
    assert!(
        stderr.contains("rmqlab: error: could not reconnect to the broker within 2s"),
        "{stderr}"
    );
    assert!(waited < Duration::from_secs(10), "gave up after {waited:?}");
    let attempts = stderr.matches("reconnecting to").count();
    assert!(attempts >= 2, "one status line per attempt: {stderr}");
}

#[test]
fn no_reconnect_with_a_zero_timeout() {
    let _serial = serial();
    let q = TestQueue::new("no_reconnect");
    let worker = Running::start_line(&format!("task work --queue {q} --reconnect-timeout 0s"));
    worker.wait_for_stderr("Waiting for messages", WAIT);
    rabbitmqctl(&["-q", "close_all_connections", "rmqlab fault test"]);
    let (code, _, stderr) = worker.finish(WAIT);
    assert_eq!(code, Some(75), "{stderr}");
    assert!(!stderr.contains("reconnecting"), "{stderr}");
}

#[test]
fn listener_comes_back_on_a_new_queue_and_says_what_was_missed() {
    let _serial = serial();
    let x = TestExchange::new("listener_reconnect");
    let mut listener =
        Running::start_line(&format!("pubsub listen --exchange {x} --count 2 -o body"));
    listener.wait_for_stderr("Waiting for messages", WAIT);
    assert_eq!(
        rmq(&format!("pubsub emit --exchange {x} before"), None)
            .status
            .code(),
        Some(0)
    );
    assert_eq!(listener.next_line(WAIT), "before");
    rabbitmqctl(&["-q", "close_all_connections", "rmqlab fault test"]);
    let stderr =
        listener.wait_for_stderr("messages emitted while disconnected were not kept", WAIT);
    assert!(stderr.contains("Reconnected"), "{stderr}");
    eventually(WAIT, "the listener's new queue to be bound", || {
        let emitted = rmq(&format!("pubsub emit --exchange {x} after"), None);
        !text(&emitted.stderr).contains("dropped")
    });
    let (code, lines, stderr) = listener.finish(WAIT);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(lines, ["before", "after"]);
}

/// Sets the broker's max_message_size for the test, restoring the default when dropped.
struct MaxMessageSize;

impl MaxMessageSize {
    fn set(bytes: u64) -> MaxMessageSize {
        rabbitmqctl(&[
            "-q",
            "eval",
            &format!("application:set_env(rabbit, max_message_size, {bytes})."),
        ]);
        MaxMessageSize
    }
}

impl Drop for MaxMessageSize {
    fn drop(&mut self) {
        rabbitmqctl_cleanup(&[
            "-q",
            "eval",
            "application:set_env(rabbit, max_message_size, 134217728).",
        ]);
    }
}

#[test]
fn a_message_larger_than_the_broker_accepts_exits_65() {
    let _serial = serial();
    let q = TestQueue::new("too_large");
    let _limit = MaxMessageSize::set(1024 * 1024);
    let mut input = vec![b'a'; 2_000_000];
    input.push(b'\n');
    let output = rmq(&format!("task new --queue {q} -f -"), Some(&input));
    assert_eq!(output.status.code(), Some(65), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with("rmqlab: error: the broker refused message 1\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("larger than configured max size"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: the broker's max_message_size"),
        "{stderr}"
    );
    assert_eq!(text(&output.stdout), "", "nothing claimed as sent");
}

/// Among 600 lines in flight, the one the broker refuses as too large (line 500) is named by
/// its size, not as one of a range; the broker took every line before it, and none after.
#[test]
fn a_message_larger_than_the_broker_accepts_among_others_is_named() {
    let _serial = serial();
    let q = TestQueue::new("too_large_among");
    let _limit = MaxMessageSize::set(1024 * 1024);
    let mut input = Vec::new();
    for n in 1..=600 {
        match n {
            500 => input.extend(vec![b'a'; 2_000_000]),
            n => input.extend(n.to_string().into_bytes()),
        }
        input.push(b'\n');
    }
    let output = rmq(&format!("task new --queue {q} -f -"), Some(&input));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(65), "{stderr}");
    assert!(
        stderr.starts_with("rmqlab: error: the broker refused message 500"),
        "{stderr}"
    );
    assert!(
        stderr.contains("larger than configured max size"),
        "{stderr}"
    );
    let sent = text(&output.stdout).lines().count();
    assert!(sent < 500, "only what was confirmed is claimed: {sent}");
    let mut stored = BTreeSet::new();
    for message in broker::drain(q.name()) {
        assert!(stored.insert(text(&message.data)), "a duplicate");
    }
    let before: BTreeSet<String> = (1..500).map(|n: u32| n.to_string()).collect();
    assert_eq!(stored, before, "{stderr}");
}

/// With replies in flight behind it (`--prefetch 16`), a reply the broker refuses is still the
/// one reported, with the broker's reason, not the closed channel the later replies met; and
/// every request answered before it is acked (the replies have a channel of their own): the
/// queue holds the refused request and those after it, once each, and nothing answered.
#[test]
fn a_reply_larger_than_the_broker_accepts_is_reported_with_its_reason() {
    let _serial = serial();
    let q = TestQueue::new("reply_too_large");
    let _limit = MaxMessageSize::set(1024 * 1024);
    let dir = scratch_dir();
    let script = dir.path().join("reply.sh");
    std::fs::write(
        &script,
        "read n\nif [ \"$n\" = big ]; then head -c 2000000 /dev/zero | tr '\\0' a; \
         else echo \"$n\"; fi\n",
    )
    .unwrap();
    let exec = format!("sh {}", script.display());
    let mut server = Running::start(&[
        "rpc",
        "serve",
        "--queue",
        q.name(),
        "--prefetch",
        "16",
        "--exec",
        &exec,
    ]);
    assert_eq!(server.next_line(WAIT), " [x] Awaiting RPC requests");
    let request = |n: u32| match n {
        10 => "big".to_string(),
        n => n.to_string(),
    };
    let input: String = (1..=60).map(|n| request(n) + "\n").collect();
    // A long timeout: the requests left in the queue do not expire before they are counted.
    let (mut client, mut stdin) = Running::start_with_stdin(&[
        "rpc",
        "call",
        "--queue",
        q.name(),
        "-f",
        "-",
        "-o",
        "body",
        "--timeout",
        "60s",
    ]);
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let (code, _, stderr) = server.finish(WAIT);
    assert_eq!(code, Some(65), "{stderr}");
    assert!(
        stderr.starts_with("rmqlab: error: no confirm of the reply to 'amq.rabbitmq.reply-to."),
        "{stderr}"
    );
    assert!(
        stderr.contains("message size 2000000 is larger than configured max size 1048576"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: the broker's max_message_size"),
        "{stderr}"
    );
    // The client got the replies before the refused one, in order.
    for n in 1..=9 {
        assert_eq!(client.next_line(WAIT), n.to_string());
    }
    // The server's deliveries not acked are back once its connection is gone.
    eventually(WAIT, "the unanswered requests back in the queue", || {
        broker::ready(q.name()) >= 51
    });
    let mut left: Vec<String> = broker::drain(q.name())
        .iter()
        .map(|message| text(&message.data))
        .collect();
    left.sort_by_key(|body| body.parse::<u32>().unwrap_or(10));
    assert_eq!(left, (10..=60).map(request).collect::<Vec<_>>());
    client.signal("TERM");
    let (status, lines, stderr) = client.finish_status(WAIT);
    assert_ended_by(&status, "TERM", &stderr);
    let replies: Vec<String> = (1..=9).map(|n| n.to_string()).collect();
    assert_eq!(lines, replies, "no reply after the refused one");
}

/// A request the broker refuses (too large) is the error, named, with the broker's reason. With
/// an exclusive reply queue the replies to the requests before it, sent on a channel the
/// refusal does not close, are all printed first; with Direct Reply-To (the replies come to the
/// channel the broker closed) those that did not come in time are counted as lost, with a hint.
#[test]
fn a_request_larger_than_the_broker_accepts_is_named_after_the_replies_before_it() {
    let _serial = serial();
    let q = TestQueue::new("request_too_large");
    let _limit = MaxMessageSize::set(1024 * 1024);
    let mut server = Running::start(&["rpc", "serve", "--queue", q.name(), "--exec", "cat"]);
    assert_eq!(server.next_line(WAIT), " [x] Awaiting RPC requests");
    let mut input = String::new();
    for n in 1..=10 {
        match n {
            5 => input.push_str(&"a".repeat(2_000_000)),
            n => input.push_str(&n.to_string()),
        }
        input.push('\n');
    }
    let before: Vec<String> = (1..=4).map(|n| n.to_string()).collect();
    for reply_queue in ["exclusive", "direct"] {
        let called = rmq(
            &format!("rpc call --queue {q} -f - -o body --reply-queue {reply_queue}"),
            Some(input.as_bytes()),
        );
        let stderr = text(&called.stderr);
        assert_eq!(called.status.code(), Some(65), "{reply_queue}: {stderr}");
        assert!(
            stderr.contains("request 5\n"),
            "{reply_queue}: the refused request is named: {stderr}"
        );
        assert!(
            stderr.contains("larger than configured max size 1048576"),
            "{reply_queue}: {stderr}"
        );
        let printed: Vec<String> = text(&called.stdout).lines().map(str::to_string).collect();
        match reply_queue {
            "exclusive" => {
                assert_eq!(printed, before, "{stderr}");
                assert!(
                    stderr.starts_with("rmqlab: error: no confirm of request 5\n"),
                    "{stderr}"
                );
            }
            _ => {
                assert_eq!(printed, before[..printed.len()], "{stderr}");
                if printed.len() < 4 {
                    let headline = format!(
                        "rmqlab: error: the replies to {} request(s) sent before request 5 were \
                         lost with the channel\n",
                        4 - printed.len()
                    );
                    assert!(stderr.starts_with(&headline), "{stderr}");
                    assert!(
                        stderr.contains("--reply-queue exclusive` keeps"),
                        "{stderr}"
                    );
                }
            }
        }
        assert!(
            stderr.contains("hint: the broker's max_message_size"),
            "{reply_queue}: {stderr}"
        );
    }
    server.signal("TERM");
    let (status, lines, stderr) = server.finish_status(WAIT);
    assert_ended_by(&status, "TERM", &stderr);
    // Each request it answered is printed once; the refused one never reached it.
    assert!(lines.iter().all(|line| !line.contains("aaaa")), "{lines:?}");
}

/// A connection closed under `rpc call -f` with requests in flight: exit 75, and the replies
/// still to come are counted as lost with the connection, not blamed on a refused request (and
/// no hint that an exclusive reply queue would have kept them: it goes with the connection too).
#[test]
fn rpc_call_whose_connection_is_closed_counts_the_replies_lost_with_it() {
    let _serial = serial();
    let q = TestQueue::new("rpc_call_closed");
    let mut server = Running::start(&[
        "rpc",
        "serve",
        "--queue",
        q.name(),
        "--exec",
        "sleep 0.05; cat",
    ]);
    assert_eq!(server.next_line(WAIT), " [x] Awaiting RPC requests");
    for reply_queue in ["direct", "exclusive"] {
        let (mut client, mut stdin) = Running::start_with_stdin(&[
            "rpc",
            "call",
            "--queue",
            q.name(),
            "-f",
            "-",
            "-o",
            "body",
            "--reply-queue",
            reply_queue,
        ]);
        let input: String = (1..=300).map(|n| format!("{n}\n")).collect();
        stdin.write_all(input.as_bytes()).unwrap();
        drop(stdin);
        assert_eq!(client.next_line(WAIT), "1");
        rabbitmqctl(&["-q", "close_all_connections", "rmqlab fault test"]);
        let (code, lines, stderr) = client.finish(WAIT);
        assert_eq!(code, Some(75), "{reply_queue}: {stderr}");
        let headline = stderr.lines().next().unwrap_or_default();
        let lost: usize = headline
            .strip_prefix("rmqlab: error: the replies to ")
            .and_then(|rest| rest.strip_suffix(" request(s) were lost with the connection"))
            .and_then(|count| count.parse().ok())
            .unwrap_or_else(|| panic!("{reply_queue}: {stderr}"));
        assert!(
            lost >= 1 && lines.len() + lost <= 300,
            "{reply_queue}: {stderr}"
        );
        let printed: Vec<String> = (1..=lines.len()).map(|n| n.to_string()).collect();
        assert_eq!(lines, printed, "{reply_queue}: in order, each once");
        assert!(
            stderr.contains("CONNECTION_FORCED"),
            "{reply_queue}: {stderr}"
        );
        assert!(!stderr.contains("--reply-queue"), "{reply_queue}: {stderr}");
        assert!(!stderr.contains("refused"), "{reply_queue}: {stderr}");
    }
    server.signal("TERM");
    let (status, _, stderr) = server.finish_status(WAIT);
    assert_ended_by(&status, "TERM", &stderr);
}

#[test]
fn publisher_that_cannot_reconnect_exits_75_saying_where_to_resume() {
    let _serial = serial();
    let q = TestQueue::new("publisher_gives_up");
    // Lines arrive slowly through stdin; the broker stops between them.
    let (publisher, mut stdin) = Running::start_with_stdin(&[
        "task",
        "new",
        "--queue",
        q.name(),
        "--reconnect-timeout",
        "2s",
        "-f",
        "-",
    ]);
    stdin.write_all(b"1\n2\n3\n").unwrap();
    eventually(WAIT, "the first lines to be confirmed", || {
        broker::queue_state(q.name()).is_some_and(|(ready, _)| ready == 3)
    });
    let stopped = AppStopped::stop();
    let _ = stdin.write_all(b"4\n5\n");
    drop(stdin);
    let (code, lines, stderr) = publisher.finish(WAIT);
    drop(stopped);
    assert_eq!(code, Some(75), "{stderr}");
    assert_eq!(lines.len(), 3, "three lines claimed as sent: {lines:?}");
    assert!(
        stderr.contains("rmqlab: error: publishing stopped after 3 confirmed message(s)"),
        "{stderr}"
    );
    assert!(stderr.contains("resend from line 4"), "{stderr}");
}

/// A TCP proxy to the broker on a port of its own that cuts its first connection right after
/// the client's third write (for a one-message send: protocol header, start-ok, then TuneOk
/// and everything up to the message) once the broker has put the message in `queue`, without
/// passing on anything the broker says after it. Later connections are passed through whole.
/// Returns the port and a count of connections.
fn proxy_cutting_the_first_connection_after_the_message(queue: &str) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    let queue = queue.to_string();
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { break };
            let first = count.fetch_add(1, Ordering::SeqCst) == 0;
            let broker = TcpStream::connect(broker_address()).unwrap();
            let cut = Arc::new(AtomicBool::new(false));
            let (mut from_client, mut to_broker) =
                (client.try_clone().unwrap(), broker.try_clone().unwrap());
            let (mut from_broker, mut to_client) = (broker, client);
            let cut_up = cut.clone();
            let queue = queue.clone();
            thread::spawn(move || {
                let mut chunk = [0u8; 65536];
                let mut writes = 0;
                while let Ok(n @ 1..) = from_client.read(&mut chunk) {
                    writes += 1;
                    if first && writes == 3 {
                        cut_up.store(true, Ordering::SeqCst);
                        let _ = to_broker.write_all(&chunk[..n]);
                        // Once the broker has put the message in the queue, drop both sides
                        // (past the deadline, cut anyway: the test's checks then fail).
                        let routed =
                            || broker::queue_state(&queue).is_some_and(|(ready, _)| ready > 0);
                        let deadline = Instant::now() + WAIT;
                        while !routed() && Instant::now() < deadline {
                            thread::sleep(Duration::from_millis(20));
                        }
                        let _ = to_broker.shutdown(Shutdown::Both);
                        let _ = from_client.shutdown(Shutdown::Both);
                        return;
                    }
                    if to_broker.write_all(&chunk[..n]).is_err() {
                        break;
                    }
                }
                let _ = to_broker.shutdown(Shutdown::Both);
            });
            thread::spawn(move || {
                let mut chunk = [0u8; 65536];
                while let Ok(n @ 1..) = from_broker.read(&mut chunk) {
                    if cut.load(Ordering::SeqCst) || to_client.write_all(&chunk[..n]).is_err() {
                        break;
                    }
                }
                let _ = to_client.shutdown(Shutdown::Both);
            });
        }
    });
    (port, connections)
}

#[test]
fn a_single_message_lost_with_its_connection_is_sent_again_and_said_so() {
    let _serial = serial();
    let q = TestQueue::new("quick_lost");
    let (port, connections) = proxy_cutting_the_first_connection_after_the_message(q.name());
    let output = rmqlab()
        .args(["--url", &format!("amqp://guest:guest@127.0.0.1:{port}/%2f")])
        .args(["task", "new", "--queue", q.name(), "only once?"])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(text(&output.stdout), " [x] Sent 'only once?'\n");
    assert!(stderr.contains("reconnecting to"), "{stderr}");
    assert!(
        stderr.contains(" [*] Sending again the 1 message(s) not confirmed before"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            " [!] 1 message(s) were sent again after a lost connection: some may have arrived twice"
        ),
        "{stderr}"
    );
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    // The broker had routed the first copy before the connection went: at least once, here twice.
    assert_eq!(broker::ready(q.name()), 2);
    assert_eq!(broker::get(q.name()).unwrap().data, b"only once?");
}

/// rmqlab against the test's own node.
fn on_node(node: &OwnNode, args: &[&str]) -> std::process::Command {
    let mut command = rmqlab();
    command.env("RMQLAB_URL", node.url()).args(args);
    command
}

/// A resource alarm on a node of the test's own (never the shared one): publishers say at once
/// that the broker blocks them and why, and when it lets them go; `--confirm-timeout` bounds
/// the wait (75, saying what was confirmed); Ctrl-C stops a blocked publisher after the grace
/// period, a second one at once, both ending by SIGINT; nothing is lost once the alarm lifts.
#[test]
fn a_resource_alarm_is_shown_and_bounded_and_publishing_resumes_when_it_lifts() {
    let node = OwnNode::start("alarm");
    let dir = scratch_dir();
    let file = dir.path().join("lines.txt");
    let input: String = (1..=1000).map(|i| format!("{i}\n")).collect();
    std::fs::write(&file, &input).unwrap();
    let file = file.to_str().unwrap();

    node.ctl(&["-q", "set_disk_free_limit", "100000GB"]);
    eventually(WAIT, "the disk alarm", || node.alarms().contains("disk"));

    // One message, the quick way.
    let output = on_node(&node, &["hello", "send", "--confirm-timeout", "2s"])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(75), "{stderr}");
    assert!(
        stderr.contains(" [!] the broker is blocking publishers: low on disk"),
        "{stderr}"
    );
    assert!(
        stderr.contains("rmqlab: error: the broker confirmed no message within 2s"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "the message was not confirmed but may still arrive at the broker, so sending it \
             again may make a duplicate"
        ),
        "{stderr}"
    );
    assert_eq!(text(&output.stdout), "", "nothing claimed as sent");

    // Many messages, through lapin.
    let output = on_node(
        &node,
        &[
            "task",
            "new",
            "--queue",
            "timeout",
            "--confirm-timeout",
            "2s",
            "-f",
            file,
        ],
    )
    .output()
    .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(75), "{stderr}");
    assert!(
        stderr.contains(" [!] the broker is blocking publishers: low on disk"),
        "{stderr}"
    );
    assert!(
        stderr.contains("rmqlab: error: publishing stopped after 0 confirmed message(s)"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "resume with `tail -n +1 {file} | rmqlab ... -f -`; the lines after them were not \
             confirmed but may still arrive at the broker, so resending them may make duplicates"
        )),
        "{stderr}"
    );
    assert_eq!(text(&output.stdout), "", "nothing claimed as sent");

    // Ctrl-C while blocked: the grace period (here --confirm-timeout), then the end by SIGINT.
    let blocked = |queue: &str, extra: &[&str]| {
        let mut args = vec!["--url", "", "task", "new", "--queue", queue, "-f", file];
        let url = node.url();
        args[1] = &url;
        args.extend(extra);
        let publisher = Running::start(&args);
        publisher.wait_for_stderr("blocking publishers", WAIT);
        publisher
    };
    let publisher = blocked("grace", &["--confirm-timeout", "1s"]);
    publisher.signal("INT");
    publisher.wait_for_stderr(
        " [*] Stopping: waiting up to 1s for the broker to confirm what was sent (press CTRL+C \
         again to stop at once)\n",
        WAIT,
    );
    let started = Instant::now();
    let (status, lines, stderr) = publisher.finish_status(WAIT);
    assert_ended_by(&status, "INT", &stderr);
    assert!(started.elapsed() < Duration::from_secs(20), "{stderr}");
    assert!(lines.is_empty(), "{lines:?}");
    assert!(
        stderr.contains(&format!(
            " [!] Stopped by Ctrl-C: the first 0 line(s) were confirmed; resume with `tail -n +1 \
             {file} | rmqlab ... -f -`"
        )),
        "{stderr}"
    );
    // A second Ctrl-C does not wait for the grace period (5s without --confirm-timeout).
    let publisher = blocked("abort", &[]);
    publisher.signal("INT");
    publisher.wait_for_stderr(
        " [*] Stopping: waiting up to 5s for the broker to confirm what was sent (press CTRL+C \
         again to stop at once)\n",
        WAIT,
    );
    let started = Instant::now();
    publisher.signal("INT");
    let (status, _, stderr) = publisher.finish_status(WAIT);
    assert_ended_by(&status, "INT", &stderr);
    assert!(started.elapsed() < Duration::from_secs(4), "{stderr}");
    assert!(stderr.contains(" [!] Stopped by Ctrl-C"), "{stderr}");

    // Without a bound, the publisher waits, and goes on once the alarm lifts.
    let publisher = blocked("resumes", &[]);
    node.ctl(&["-q", "set_disk_free_limit", "50MB"]);
    let (status, lines, stderr) = publisher.finish_status(WAIT);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(" [*] the broker accepts publishers again"),
        "{stderr}"
    );
    assert_eq!(lines.len(), 1000, "{stderr}");
    let received = on_node(
        &node,
        &[
            "hello", "recv", "--queue", "resumes", "--count", "1000", "-o", "body",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(
        received.status.code(),
        Some(0),
        "{}",
        text(&received.stderr)
    );
    let distinct: BTreeSet<u32> = text(&received.stdout)
        .lines()
        .map(|line| line.parse().unwrap())
        .collect();
    assert_eq!(distinct, (1..=1000).collect(), "every line arrived");
}

/// `amqp://guest:****@127.0.0.1:PORT/%2f`: how rmqlab shows a node's URL.
fn shown(node: &OwnNode) -> String {
    format!("amqp://guest:****@127.0.0.1:{}/%2f", node.port)
}

/// Two nodes of the test's own, not clustered (each holds its own queue), given to one worker
/// as a list: it works on the first, goes to the second when the first stops, and back to the
/// first when both stopped and the first returns. `--idle-timeout` does not run while it
/// reconnects, however long that takes; none back within `--reconnect-timeout` is 75.
#[test]
fn a_worker_fails_over_along_its_url_list_and_idle_time_waits_while_reconnecting() {
    let _serial = serial();
    let a = OwnNode::start("urls-a");
    let b = OwnNode::start("urls-b");
    let list = format!("{}, {}", a.url(), b.url());
    let send = |node: &OwnNode, body: &str| {
        let output = on_node(node, &["task", "new", "--queue", "failover", body])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
    };
    let idle = Duration::from_secs(10);
    let mut worker = Running::spawn(rmqlab().env("RMQLAB_URL", &list).args([
        "-v",
        "task",
        "work",
        "--queue",
        "failover",
        "--dot-duration",
        "0s",
        "--idle-timeout",
        "10s",
        "--reconnect-timeout",
        "2m",
        "-o",
        "body",
    ]));
    worker.wait_for_stderr(&format!("rmqlab: connected to {}", shown(&a)), WAIT);
    worker.wait_for_stderr("Waiting for messages", WAIT);
    send(&a, "one");
    assert_eq!(worker.next_line(WAIT), "one");

    // The first node stops: the second, tried first, takes over.
    a.ctl(&["-q", "stop_app"]);
    worker.wait_for_stderr(&format!("rmqlab: connected to {}", shown(&b)), WAIT);
    let stderr = worker.wait_for_stderr("Reconnected", WAIT);
    assert!(
        stderr.contains(&format!(
            "reconnecting to whichever of the 2 URLs answers, from {} on (attempt 1)",
            shown(&b)
        )),
        "{stderr}"
    );
    send(&b, "two");
    assert_eq!(worker.next_line(WAIT), "two");

    // Both stopped for longer than the idle timeout: the worker keeps trying, around the
    // list, and takes the next task once the first node is back.
    b.ctl(&["-q", "stop_app"]);
    let stopped_at = Instant::now();
    worker.wait_for_stderr("(attempt 8)", WAIT);
    assert!(stopped_at.elapsed() > idle, "{:?}", stopped_at.elapsed());
    a.ctl(&["-q", "start_app"]);
    send(&a, "three");
    assert_eq!(worker.next_line(WAIT), "three");
    let (code, lines, stderr) = worker.finish(WAIT);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(lines, ["one", "two", "three"]);
    assert!(
        stderr.contains(&format!(
            "reconnecting to whichever of the 2 URLs answers, from {} on (attempt 1)",
            shown(&a)
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("rmqlab: skipping {}: ", shown(&b))),
        "{stderr}"
    );

    // None back in time: 75, saying what each URL answered.
    let worker = Running::spawn(rmqlab().env("RMQLAB_URL", &list).args([
        "task",
        "work",
        "--queue",
        "failover",
        "--reconnect-timeout",
        "3s",
    ]));
    worker.wait_for_stderr("Waiting for messages", WAIT);
    a.ctl(&["-q", "stop_app"]);
    let (code, _, stderr) = worker.finish(WAIT);
    assert_eq!(code, Some(75), "{stderr}");
    assert!(
        stderr.contains(
            "rmqlab: error: could not reconnect to the broker within 3s\n  caused by: could not \
             connect to any of the 2 broker URLs\n"
        ),
        "{stderr}"
    );
    for node in [&a, &b] {
        assert!(
            stderr.contains(&format!("cannot reach the broker at {}", shown(node))),
            "{stderr}"
        );
    }
}

/// `queues move` of 10,000 messages whose connection is closed once mid-way, on a node of the
/// test's own: it reconnects and carries on; the destination holds every body at least once,
/// with its properties and headers, the source is empty, and the summary says how many messages
/// were published again (at least as many as the destination holds twice).
#[test]
fn move_carries_on_after_its_connection_is_closed_mid_way() {
    use lapin::{
        BasicProperties, Connection, ConnectionProperties,
        options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions},
        types::{AMQPValue, FieldTable, LongString},
    };
    const COUNT: u32 = 10_000;
    let _serial = serial();
    let node = OwnNode::start("move");
    let url = node.url();
    let connect = || async {
        Connection::connect(&url, ConnectionProperties::default())
            .await
            .expect("connect to the test's own node")
    };
    let padding = "p".repeat(1000);
    broker::block_on(async {
        let connection = connect().await;
        let channel = connection.create_channel().await.unwrap();
        for queue in ["src", "dst"] {
            let options = QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            };
            channel
                .queue_declare(queue.into(), options, FieldTable::default())
                .await
                .unwrap();
        }
        channel.confirm_select(Default::default()).await.unwrap();
        let mut confirms = Vec::new();
        for n in 1..=COUNT {
            let mut headers = FieldTable::default();
            headers.insert("x-n".into(), AMQPValue::LongLongInt(n.into()));
            headers.insert("x-tag".into(), AMQPValue::LongString(LongString::from("t")));
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("text/plain".into())
                .with_message_id(n.to_string().into())
                .with_headers(headers);
            let body = format!("{n} {padding}");
            confirms.push(
                channel
                    .basic_publish(
                        "".into(),
                        "src".into(),
                        BasicPublishOptions::default(),
                        body.as_bytes(),
                        properties,
                    )
                    .await
                    .unwrap(),
            );
        }
        for confirm in confirms {
            assert!(confirm.await.unwrap().is_ack());
        }
        let _ = connection.close(200, "OK".into()).await;
    });

    let mover = Running::start(&["--url", &url, "queues", "move", "src", "dst"]);
    // Mid-way: once the destination holds some, and long before the source is empty.
    let depth = |queue: &str| {
        broker::block_on(async {
            let connection = connect().await;
            let channel = connection.create_channel().await.unwrap();
            let options = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            let depth = channel
                .queue_declare(queue.into(), options, FieldTable::default())
                .await
                .unwrap()
                .message_count();
            let _ = connection.close(200, "OK".into()).await;
            depth
        })
    };
    eventually(WAIT, "the move to begin", || depth("dst") >= 500);
    // Only rmqlab is connected to this node now.
    node.ctl(&["-q", "close_all_connections", "closed by the test"]);
    let (code, lines, stderr) = mover.finish(Duration::from_secs(120));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(" [*] Reconnected"),
        "closed mid-way: {stderr}"
    );
    assert_eq!(depth("src"), 0, "the source is empty");

    let moved: Vec<lapin::message::Delivery> = broker::block_on(async {
        let connection = connect().await;
        let channel = connection.create_channel().await.unwrap();
        let mut all = Vec::new();
        while let Some(message) = channel
            .basic_get("dst".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            all.push(message.delivery);
        }
        let _ = connection.close(200, "OK".into()).await;
        all
    });
    let mut seen = BTreeSet::new();
    for delivery in &moved {
        let body = text(&delivery.data);
        let n: u32 = body.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(body, format!("{n} {padding}"));
        let properties = &delivery.properties;
        assert_eq!(properties.delivery_mode(), &Some(2));
        assert_eq!(
            properties.content_type().as_ref().unwrap().as_str(),
            "text/plain"
        );
        assert_eq!(
            properties.message_id().as_ref().unwrap().as_str(),
            n.to_string()
        );
        let headers = properties.headers().as_ref().unwrap().inner();
        assert_eq!(headers.get("x-n"), Some(&AMQPValue::LongLongInt(n.into())));
        assert_eq!(
            headers.get("x-tag"),
            Some(&AMQPValue::LongString(LongString::from("t")))
        );
        seen.insert(n);
    }
    assert_eq!(seen, (1..=COUNT).collect(), "every body arrived");
    let twice = moved.len() - COUNT as usize;
    let summary = lines.join("\n");
    let republished: usize = match summary.split("; ").nth(1) {
        Some(rest) => rest.split(' ').next().unwrap().parse().unwrap(),
        None => 0,
    };
    // Each message is counted once, even one moved again after its ack was lost.
    let counted: usize = summary
        .strip_prefix(" [x] Moved ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no summary: {summary}"));
    assert_eq!(
        counted,
        COUNT as usize,
        "{counted} counted, {} arrived: {summary}",
        moved.len()
    );
    assert!(
        republished >= twice,
        "{twice} duplicate(s), {republished} reported: {summary}"
    );
    eprintln!("moved {}, duplicates {twice}: {summary}", moved.len());
}

/// rmqlab against the streams of a RabbitMQ 4 node of the test's own.
fn on_stream_node(node: &OwnNode, args: &[&str]) -> std::process::Command {
    let mut command = rmqlab();
    command
        .env("RMQLAB_URL", node.url())
        .env("RMQLAB_STREAM_URL", node.stream_url())
        .env_remove("RMQLAB_API_URL")
        .args(args);
    command
}

/// Runs rmqlab on `node` to the end (two minutes at most).
fn run_on_stream_node(node: &OwnNode, args: &[&str]) -> std::process::Output {
    let child = on_stream_node(node, args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run rmqlab");
    common::wait_output(child, Duration::from_secs(120))
}

/// `(offset, body)` of a JSON line of `stream recv`.
fn offset_and_body(line: &str) -> (u64, String) {
    let value: serde_json::Value = serde_json::from_str(line).unwrap();
    (
        value["offset"].as_u64().unwrap(),
        value["body"].as_str().unwrap().to_string(),
    )
}

/// A restart of the node while `stream recv` reads (a RabbitMQ 4 node of the test's own): the
/// reader says it lost the connection, comes back when the node does, and reads on from just
/// after the last offset it printed: every offset once, in order, and exit 0 at --count.
#[test]
fn stream_recv_resumes_after_a_broker_restart_from_the_last_offset_seen() {
    let _serial = serial();
    let node = OwnNode::start_v4("fault4-recv");
    let stream = "fault-recv";
    let send = |prefix: &str| {
        let (_dir, path) = lines_file(prefix, 0..1000);
        let sent = run_on_stream_node(
            &node,
            &[
                "-q",
                "stream",
                "send",
                "--stream",
                stream,
                "-f",
                path.to_str().unwrap(),
            ],
        );
        assert_eq!(sent.status.code(), Some(0), "{}", text(&sent.stderr));
        assert_eq!(text(&sent.stdout).lines().count(), 1000);
    };
    send("a");
    let mut reader = Running::spawn(&mut on_stream_node(
        &node,
        &[
            "stream", "recv", "--stream", stream, "--count", "2000", "-o", "json",
        ],
    ));
    let mut seen: Vec<(u64, String)> = (0..1000)
        .map(|_| offset_and_body(&reader.next_line(WAIT)))
        .collect();

    node.restart_app();
    reader.wait_for_stderr("Lost the stream connection", WAIT);
    send("b");
    reader.wait_for_stderr("Reconnected: reading on from offset 1000", WAIT);
    seen.extend((0..1000).map(|_| offset_and_body(&reader.next_line(WAIT))));
    let (code, rest, stderr) = reader.finish(WAIT);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(rest.len() == 2000, "nothing more than --count: {rest:?}");
    let expected: Vec<(u64, String)> = (0..1000)
        .map(|n| (n, format!("a{n}")))
        .chain((0..1000).map(|n| (1000 + n, format!("b{n}"))))
        .collect();
    assert_eq!(seen, expected, "every offset once, in order");
}

/// A restart of the node while `stream send -f -` publishes (a RabbitMQ 4 node of the test's
/// own): as `task new`, the publisher reconnects, sends again what was not confirmed, says so,
/// and exits 0 with one ` [x] Sent` line per input line; the stream holds every line at least
/// once, duplicates at most the messages sent again.
#[test]
fn stream_send_reconnects_after_a_broker_restart_and_sends_again_what_was_not_confirmed() {
    let _serial = serial();
    let node = OwnNode::start_v4("fault4-send");
    let stream = "fault-send";
    let mut publisher = Running::spawn(
        on_stream_node(&node, &["stream", "send", "--stream", stream, "-f", "-"])
            .stdin(std::process::Stdio::piped()),
    );
    let stdin = publisher.child.as_mut().unwrap().stdin.take().unwrap();
    // Over about eight seconds, so that the restart comes while lines still come.
    let feeder = feed_20000_lines(stdin, Duration::from_millis(200));
    // The publisher is connected and its first lines are confirmed.
    publisher.next_line(WAIT);
    node.restart_app();
    publisher.wait_for_stderr("Reconnected", WAIT);
    feeder.join().unwrap();
    let (code, stdout, stderr) = publisher.finish(WAIT);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("; reconnecting to rabbitmq-stream://guest:****@127.0.0.1:"),
        "the stream URL, password masked: {stderr}"
    );
    let sent: Vec<String> = (1..=20000).map(|i| format!(" [x] Sent '{i}'")).collect();
    assert_eq!(stdout, sent, "one line per input line, in order");
    let resent: usize = stderr
        .lines()
        .filter_map(|line| line.strip_prefix(" [*] Sending again the "))
        .map(|rest| rest.split(' ').next().unwrap().parse::<usize>().unwrap())
        .sum();
    // Said when some were in doubt (a line was read while the node was down), never "the 0".
    assert!(!stderr.contains("Sending again the 0 "), "{stderr}");

    let read = run_on_stream_node(
        &node,
        &[
            "stream",
            "recv",
            "--stream",
            stream,
            "--idle-timeout",
            "3s",
            "-o",
            "body",
        ],
    );
    assert_eq!(read.status.code(), Some(0), "{}", text(&read.stderr));
    let bodies: Vec<u32> = text(&read.stdout)
        .lines()
        .map(|line| line.parse().unwrap())
        .collect();
    let distinct: BTreeSet<u32> = bodies.iter().copied().collect();
    assert_eq!(distinct, (1..=20000).collect(), "every line at least once");
    let duplicates = bodies.len() - 20000;
    assert!(
        duplicates <= resent,
        "{duplicates} duplicates, {resent} sent again: {stderr}"
    );
    if resent > 0 {
        assert!(
            stderr.contains(&format!(
                " [!] {resent} message(s) were sent again after a lost connection"
            )),
            "{stderr}"
        );
    }

    // A node that stays away: past --reconnect-timeout, 75, saying where to resume.
    let mut publisher = Running::spawn(
        on_stream_node(
            &node,
            &[
                "stream",
                "send",
                "--stream",
                stream,
                "--reconnect-timeout",
                "2s",
                "-f",
                "-",
            ],
        )
        .stdin(std::process::Stdio::piped()),
    );
    let mut stdin = publisher.child.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(b"first\n").unwrap();
    assert_eq!(publisher.next_line(WAIT), " [x] Sent 'first'");
    node.ctl(&["-q", "stop_app"]);
    let lost_at = Instant::now();
    // The next line meets the lost connection.
    let _ = stdin.write_all(b"second\n");
    let (code, stdout, stderr) = publisher.finish(WAIT);
    drop(stdin);
    assert_eq!(code, Some(75), "{stderr}");
    assert_eq!(stdout, [" [x] Sent 'first'"]);
    assert!(
        stderr.contains("could not reconnect to the broker within 2s"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the first 1 input line(s) were confirmed; resend from line 2"),
        "{stderr}"
    );
    assert!(lost_at.elapsed() < Duration::from_secs(30), "bounded");
}
