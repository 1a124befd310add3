//! rmqlab against the live broker: tutorials 1 and 2, acks, signals, errors and exit codes.

use crate::common::{
    Running, TestQueue, assert_code, assert_ended_by, assert_hidden, assert_login_refused, broker,
    broker_address, broker_port, broker_url, code, eventually, rabbitmqctl, rmq, rmqlab, run, text,
    wait_output,
};
use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

const SECRET: &str = "Sekr1t-pw-not-guest";

fn lines(bytes: &[u8]) -> Vec<String> {
    text(bytes).lines().map(str::to_string).collect()
}

/// Waits until `n` consumers are attached to the queue.
fn wait_for_consumers(queue: &str, n: u32) {
    eventually(Duration::from_secs(20), "consumers to attach", || {
        broker::queue_state(queue).is_some_and(|(_, consumers)| consumers == n)
    });
}

#[test]
fn hello_send_then_recv_round_trips_the_tutorial_message() {
    let q = TestQueue::new("hello_round_trip");
    let sent = rmq(&format!("hello send --queue {q}"), None);
    assert_code(&sent, 0);
    assert_eq!(text(&sent.stdout), " [x] Sent 'Hello World!'\n");

    let received = rmq(&format!("hello recv --queue {q} --count 1"), None);
    assert_code(&received, 0);
    assert_eq!(text(&received.stdout), " [x] Received Hello World!\n");
    assert!(
        text(&received.stderr).contains(" [*] Waiting for messages. To exit press CTRL+C"),
        "{}",
        text(&received.stderr)
    );
    assert_eq!(broker::ready(q.name()), 0);
}

#[test]
fn words_are_joined_into_one_message() {
    let q = TestQueue::new("words_joined");
    let sent = rmq(&format!("task new --queue {q} First message."), None);
    assert_code(&sent, 0);
    assert_eq!(text(&sent.stdout), " [x] Sent 'First message.'\n");
    assert_eq!(broker::ready(q.name()), 1);
    let message = broker::get(q.name()).expect("one message");
    assert_eq!(message.delivery.data, b"First message.");
}

#[test]
fn lines_from_stdin_arrive_in_order() {
    let q = TestQueue::new("stdin_lines");
    let sent = rmq(
        &format!("hello send --queue {q} -f -"),
        Some(b"one\ntwo\nthree\n"),
    );
    assert_code(&sent, 0);
    assert_eq!(
        lines(&sent.stdout),
        [" [x] Sent 'one'", " [x] Sent 'two'", " [x] Sent 'three'"]
    );
    let received = rmq(&format!("hello recv --queue {q} --count 3 -o body"), None);
    assert_code(&received, 0);
    assert_eq!(text(&received.stdout), "one\ntwo\nthree\n");
}

#[test]
fn stdin_is_not_read_without_dash_f() {
    let q = TestQueue::new("stdin_untouched");
    let sent = rmq(&format!("hello send --queue {q}"), Some(b"not me\n"));
    assert_code(&sent, 0);
    assert_eq!(
        broker::get(q.name()).unwrap().delivery.data,
        b"Hello World!"
    );
}

#[test]
fn bulk_publish_confirms_every_line() {
    let q = TestQueue::new("bulk");
    let input: String = (1..=5000).map(|i| format!("{i}\n")).collect();
    let sent = run(
        &["task", "new", "-q", "--queue", q.name(), "-f", "-"],
        Some(input.as_bytes()),
    );
    assert_code(&sent, 0);
    assert_eq!(lines(&sent.stdout).len(), 5000);
    assert_eq!(broker::ready(q.name()), 5000);
    let worked = rmq(
        &format!("task work --queue {q} --count 5000 --dot-duration 0s -o body --prefetch 100"),
        None,
    );
    assert_code(&worked, 0);
    assert_eq!(text(&worked.stdout), input);
    assert_eq!(broker::queue_state(q.name()), Some((0, 0)));
}

#[test]
fn task_messages_are_persistent_in_a_durable_queue() {
    let q = TestQueue::new("persistent");
    assert_code(&rmq(&format!("task new --queue {q} a task"), None), 0);
    let message = broker::get(q.name()).expect("the task");
    assert_eq!(*message.delivery.properties.delivery_mode(), Some(2));
    // The broker refuses to redeclare it non-durable: it is durable.
    let error = broker::declare(q.name(), false).expect_err("queue is durable");
    assert!(
        error
            .to_string()
            .contains("received 'false' but current is 'true'"),
        "{error}"
    );
}

#[test]
fn quorum_queue_type_is_declared() {
    let q = TestQueue::new("quorum");
    let sent = rmq(&format!("task new --queue {q} --queue-type quorum q"), None);
    assert_code(&sent, 0);
    let listing = rabbitmqctl(&["-q", "list_queues", "name", "type"]);
    assert!(
        listing
            .lines()
            .any(|line| line.starts_with(q.name()) && line.ends_with("quorum")),
        "{listing}"
    );
}

#[test]
fn fair_dispatch_gives_each_worker_heavy_tasks_and_one_at_a_time() {
    let q = TestQueue::new("fair_dispatch");
    // No --idle-timeout: under load one worker could give up before the other has attached.
    // Both run until every task is printed, then end by Ctrl-C.
    let worker_args = [
        "task",
        "work",
        "--queue",
        q.name(),
        "--prefetch",
        "1",
        "--dot-duration",
        "150ms",
        "-o",
        "body",
    ];
    // One after the other: the first declares the quorum queue (two declaring a new quorum
    // queue at the same moment is a race this test is not about).
    let first = Running::start(&worker_args);
    wait_for_consumers(q.name(), 1);
    let second = Running::start(&worker_args);
    wait_for_consumers(q.name(), 2);
    let mut workers = [first, second];
    // Heavy and light alternate: plain round-robin would give one worker every heavy task.
    let tasks: Vec<String> = (0..4)
        .flat_map(|i| [format!("heavy{i}.........."), format!("light{i}.")])
        .collect();
    broker::publish(
        q.name(),
        &tasks.iter().map(String::as_str).collect::<Vec<_>>(),
    );

    // While they work, ask the broker what each consumer's channel holds unacked.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, queue) = (stop.clone(), q.name().to_string());
        thread::spawn(move || {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                samples.extend(unacked_per_consumer(&queue));
            }
            samples
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while workers.iter().map(|w| w.seen.len()).sum::<usize>() < tasks.len() {
        assert!(
            Instant::now() < deadline,
            "not every task done within 60s: {:?} {:?}",
            workers[0].seen,
            workers[1].seen
        );
        for worker in &mut workers {
            worker.try_next_line(Duration::from_millis(50));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let samples = watcher.join().unwrap();
    for worker in &workers {
        worker.signal("INT");
    }
    let outputs: Vec<_> = workers
        .into_iter()
        .map(|worker| worker.finish_status(Duration::from_secs(60)))
        .collect();

    let mut all = Vec::new();
    for (status, bodies, stderr) in &outputs {
        assert_ended_by(status, "INT", stderr);
        assert!(
            bodies.iter().any(|body| body.starts_with("heavy")),
            "a worker got no heavy task: {outputs:?}"
        );
        all.extend(bodies.iter().cloned());
    }
    all.sort();
    let mut expected = tasks.clone();
    expected.sort();
    assert_eq!(all, expected, "every task exactly once");
    assert_eq!(broker::queue_state(q.name()), Some((0, 0)), "nothing left");
    assert!(
        samples.len() >= 2,
        "too few samples of the broker's view: {samples:?}"
    );
    for (prefetch, unacked) in &samples {
        assert_eq!(*prefetch, 1, "consumer prefetch");
        assert!(*unacked <= 1, "a worker held {unacked} unacked tasks");
    }
}

/// (prefetch, unacked messages) of every channel consuming from `queue`, as the broker sees it.
fn unacked_per_consumer(queue: &str) -> Vec<(u32, u32)> {
    let consumers = rabbitmqctl(&[
        "-q",
        "list_consumers",
        "queue_name",
        "channel_pid",
        "prefetch_count",
    ]);
    let ours: HashMap<String, u32> = consumers
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            (fields.len() == 3 && fields[0] == queue)
                .then(|| (fields[1].to_string(), fields[2].parse().unwrap()))
        })
        .collect();
    if ours.is_empty() {
        return Vec::new();
    }
    let channels = rabbitmqctl(&["-q", "list_channels", "pid", "messages_unacknowledged"]);
    channels
        .lines()
        .filter_map(|line| {
            let (pid, unacked) = line.split_once('\t')?;
            let prefetch = ours.get(pid)?;
            Some((*prefetch, unacked.trim().parse().unwrap()))
        })
        .collect()
}

#[test]
fn a_task_of_a_killed_worker_goes_to_another_worker() {
    let q = TestQueue::new("sigkill");
    broker::publish(q.name(), &["unlucky.........."]);
    let mut first =
        Running::start_line(&format!("task work --queue {q} --dot-duration 1s -o body"));
    assert_eq!(
        first.next_line(Duration::from_secs(20)),
        "unlucky.........."
    );
    first.signal("KILL");
    let (code, _, _) = first.finish(Duration::from_secs(10));
    assert_eq!(code, None, "killed by a signal");

    let second = rmq(
        &format!("task work --queue {q} --dot-duration 0s --count 1 --idle-timeout 20s -o json"),
        None,
    );
    assert_code(&second, 0);
    let delivery: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(delivery["body"], "unlucky..........");
    assert_eq!(delivery["redelivered"], true);
    assert_eq!(delivery["properties"]["delivery_mode"], 2);
    assert_eq!(broker::queue_state(q.name()), Some((0, 0)));
}

#[test]
fn exec_gets_the_body_on_stdin_and_success_acks() {
    let q = TestQueue::new("exec_ok");
    let sink = tempfile::NamedTempFile::new().unwrap();
    let sink = sink.path();
    broker::publish(q.name(), &["first task", "second task"]);
    let command = format!("cat >> '{}'; echo >> '{}'", sink.display(), sink.display());
    let worked = run(
        &[
            "task",
            "work",
            "--queue",
            q.name(),
            "--exec",
            &command,
            "--count",
            "2",
        ],
        None,
    );
    assert_code(&worked, 0);
    assert_eq!(
        lines(&worked.stdout),
        [
            " [x] Received first task",
            " [x] Done",
            " [x] Received second task",
            " [x] Done"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(sink).unwrap(),
        "first task\nsecond task\n"
    );
    assert_eq!(broker::queue_state(q.name()), Some((0, 0)));
}

#[test]
fn count_stops_without_taking_more_messages() {
    let q = TestQueue::new("count");
    broker::publish(q.name(), &["1", "2", "3", "4", "5"]);
    let received = rmq(&format!("hello recv --queue {q} --count 2 -o body"), None);
    assert_code(&received, 0);
    assert_eq!(text(&received.stdout), "1\n2\n");
    assert_eq!(
        broker::queue_state(q.name()),
        Some((3, 0)),
        "3 messages left"
    );
}

#[test]
fn idle_timeout_ends_an_empty_consumer_with_success() {
    let q = TestQueue::new("idle");
    let started = Instant::now();
    let received = rmq(&format!("task work --queue {q} --idle-timeout 300ms"), None);
    assert_code(&received, 0);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(text(&received.stdout), "");
}

/// A worker sent `signal` mid-task finishes that task, acks it, takes no other, and ends by the
/// signal.
fn signal_lets_the_task_in_progress_finish_and_be_acked(signal: &str, test: &str) {
    let q = TestQueue::new(test);
    broker::publish(q.name(), &["interrupted....", "untouched"]);
    let mut worker = Running::start_line(&format!("task work --queue {q} --dot-duration 300ms"));
    assert_eq!(
        worker.next_line(Duration::from_secs(20)),
        " [x] Received interrupted...."
    );
    worker.signal(signal);
    let (status, stdout, stderr) = worker.finish_status(Duration::from_secs(30));
    assert_ended_by(&status, signal, &stderr);
    assert_eq!(stdout, [" [x] Received interrupted....", " [x] Done"]);
    assert!(
        stderr.contains("Stopping after the current task"),
        "{stderr}"
    );
    // The finished task is gone; the next one was never taken.
    assert_eq!(broker::queue_state(q.name()), Some((1, 0)));
    assert_eq!(broker::get(q.name()).unwrap().delivery.data, b"untouched");
}

#[test]
fn ctrl_c_lets_the_task_in_progress_finish_and_be_acked() {
    signal_lets_the_task_in_progress_finish_and_be_acked("INT", "ctrl_c");
}

#[test]
fn sigterm_mid_task_finishes_and_acks_it() {
    signal_lets_the_task_in_progress_finish_and_be_acked("TERM", "sigterm_mid_task");
}

#[test]
fn second_ctrl_c_aborts_the_task_and_the_broker_keeps_it() {
    let q = TestQueue::new("ctrl_c_twice");
    broker::publish(q.name(), &["aborted.........."]);
    let mut worker = Running::start_line(&format!("task work --queue {q} --dot-duration 1s"));
    worker.next_line(Duration::from_secs(20));
    worker.signal("INT");
    // The first signal has been taken in (the worker says it will stop) before the second comes.
    worker.wait_for_stderr("Stopping after the current task", Duration::from_secs(20));
    worker.signal("INT");
    let (status, stdout, stderr) = worker.finish_status(Duration::from_secs(20));
    assert_ended_by(&status, "INT", &stderr);
    assert_eq!(stdout, [" [x] Received aborted.........."]);
    eventually(Duration::from_secs(10), "the task to be requeued", || {
        broker::queue_state(q.name()) == Some((1, 0))
    });
}

#[test]
fn sigterm_stops_a_waiting_consumer_cleanly() {
    let q = TestQueue::new("sigterm");
    let worker = Running::start_line(&format!("hello recv --queue {q}"));
    wait_for_consumers(q.name(), 1);
    worker.signal("TERM");
    let (status, _, stderr) = worker.finish_status(Duration::from_secs(20));
    assert_ended_by(&status, "TERM", &stderr);
    assert_eq!(broker::queue_state(q.name()), Some((0, 0)));
}

#[test]
fn connections_are_named_after_their_command() {
    let q = TestQueue::new("named");
    let worker = Running::start_line(&format!("task work --queue {q} --idle-timeout 20s"));
    wait_for_consumers(q.name(), 1);
    let connections = rabbitmqctl(&["-q", "list_connections", "client_properties"]);
    assert!(
        connections.contains("rmqlab task work"),
        "no connection named 'rmqlab task work': {connections}"
    );
    worker.signal("TERM");
    worker.finish(Duration::from_secs(20));
}

#[test]
fn a_frame_max_in_the_url_is_the_one_negotiated_and_big_messages_span_frames() {
    let q = TestQueue::new("frame_max");
    let url = format!("{}?frame_max=20000", broker_url());
    let mut receiver = Running::start(&[
        "--url",
        &url,
        "hello",
        "recv",
        "--queue",
        q.name(),
        "--count",
        "2",
        "-o",
        "body",
    ]);
    wait_for_consumers(q.name(), 1);
    let connections = rabbitmqctl(&["-q", "list_connections", "frame_max", "client_properties"]);
    assert!(
        connections
            .lines()
            .any(|line| line.starts_with("20000\t") && line.contains("rmqlab hello recv")),
        "no rmqlab connection with frame_max 20000: {connections}"
    );
    // Five frames' worth of body, through senders with the same frame size: from a file, and
    // as the one message of the command line, which takes the pipelined way.
    let body = "0123456789".repeat(10_000);
    let send = |extra: &[&str], stdin: Option<&[u8]>| {
        let base = ["--url", &url, "-q", "hello", "send", "--queue", q.name()];
        run(&[&base[..], extra].concat(), stdin)
    };
    assert_code(&send(&["-f", "-"], Some(format!("{body}\n").as_bytes())), 0);
    assert_eq!(receiver.next_line(Duration::from_secs(20)), body);
    assert_code(&send(&[&body], None), 0);
    let (code, lines, _) = receiver.finish(Duration::from_secs(20));
    assert_eq!(code, Some(0));
    assert_eq!(lines, [body.clone(), body], "both arrived whole");
}

#[test]
fn closed_stdout_ends_quietly_and_loses_nothing() {
    let q = TestQueue::new("broken_pipe");
    let bodies: Vec<String> = (1..=2000).map(|i| format!("message {i}")).collect();
    broker::publish(
        q.name(),
        &bodies.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    // Like `| head -n 1`: read one line, then close the read end of rmqlab's stdout.
    let mut receiver = rmqlab()
        .args([
            "hello",
            "recv",
            "--queue",
            q.name(),
            "--idle-timeout",
            "5s",
            "-o",
            "body",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rmqlab");
    let mut stdout = String::new();
    BufReader::new(receiver.stdout.take().unwrap())
        .read_line(&mut stdout)
        .unwrap();
    let output = wait_output(receiver, Duration::from_secs(60));
    assert!(stdout.starts_with("message 1\n"), "{stdout}");
    // rmqlab's own exit status: a closed stdout is not a failure.
    assert_code(&output, 0);
    assert_eq!(
        text(&output.stderr).matches("error").count(),
        0,
        "{}",
        text(&output.stderr)
    );
    // What was not written before the pipe closed is still in the queue.
    eventually(
        Duration::from_secs(10),
        "unprinted messages to stay queued",
        || {
            broker::queue_state(q.name())
                .is_some_and(|(ready, consumers)| ready > 0 && consumers == 0)
        },
    );
}

#[test]
fn unreachable_broker_exits_69_quickly_with_a_hint() {
    let started = Instant::now();
    let output = rmqlab()
        .args(["hello", "send", "--connect-timeout", "30s"])
        .env(
            "RMQLAB_URL",
            format!("amqp://guest:{SECRET}@127.0.0.1:1/%2f"),
        )
        .output()
        .unwrap();
    assert_code(&output, 69);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused at once, not after the timeout"
    );
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with(
            "rmqlab: error: cannot reach the broker at amqp://guest:****@127.0.0.1:1/%2f\n"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("caused by: "), "{stderr}");
    assert!(
        stderr.contains("hint: start a broker: `rabbitmq-server -detached`"),
        "{stderr}"
    );
    assert_no_secret(&output);
}

#[test]
fn wrong_password_exits_77_without_showing_it() {
    let output = rmqlab()
        .args(["task", "work", "--count", "1"])
        .env(
            "RMQLAB_URL",
            format!("amqp://guest:{SECRET}@{}/%2f", broker_address()),
        )
        .output()
        .unwrap();
    assert_login_refused(&output, SECRET);
}

#[test]
fn guest_from_another_host_gets_the_loopback_hint() {
    // Same broker, reached through a non-loopback address of this machine when there is one;
    // the broker then refuses `guest` whatever the password.
    let Some(address) = non_loopback_address() else {
        panic!("this machine has no non-loopback IPv4 address to test the guest hint with");
    };
    let port = broker_port();
    let output = rmqlab()
        .args(["hello", "send"])
        .env(
            "RMQLAB_URL",
            format!("amqp://guest:guest@{address}:{port}/%2f"),
        )
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    match code(&output) {
        77 => assert!(stderr.contains("only from localhost"), "{stderr}"),
        // The broker listens on loopback only: the hint case cannot arise here.
        69 => assert!(stderr.contains("cannot reach the broker"), "{stderr}"),
        other => panic!("exit {other}: {stderr}"),
    }
}

fn non_loopback_address() -> Option<String> {
    let output = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .ok()?;
    text(&output.stdout)
        .split_whitespace()
        .find(|address| address.contains('.') && !address.starts_with("127."))
        .map(str::to_string)
}

#[test]
fn mismatch_error_hides_a_password_too() {
    let q = TestQueue::new("mismatch_secret");
    broker::declare(q.name(), true).expect("declare a classic queue");
    rabbitmqctl(&["add_user", q.name(), SECRET]);
    rabbitmqctl(&["set_permissions", q.name(), ".*", ".*", ".*"]);
    let output = rmqlab()
        .args([
            "-v",
            "hello",
            "send",
            "--queue",
            q.name(),
            "--queue-type",
            "quorum",
        ])
        .env(
            "RMQLAB_URL",
            format!("amqp://{}:{SECRET}@{}/%2f", q.name(), broker_address()),
        )
        .output()
        .unwrap();
    rabbitmqctl(&["delete_user", q.name()]);
    assert_code(&output, 65);
    assert!(
        text(&output.stderr).contains(":****@127.0.0.1"),
        "{}",
        text(&output.stderr)
    );
    assert_no_secret(&output);
}

#[test]
fn missing_input_file_exits_66_before_connecting() {
    let q = TestQueue::new("missing_file");
    let output = rmq(
        &format!("task new --queue {q} -f /nonexistent/tasks.txt"),
        None,
    );
    assert_code(&output, 66);
    assert!(
        text(&output.stderr).starts_with("rmqlab: error: cannot read /nonexistent/tasks.txt\n"),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(broker::queue_state(q.name()), None, "nothing declared");
}

#[test]
fn binary_bodies_are_exact_with_body_and_valid_json() {
    let q = TestQueue::new("binary");
    let sent = rmq(
        &format!("hello send --queue {q} -f -"),
        Some(b"\xff\xfeok\n"),
    );
    assert_code(&sent, 0);
    let received = rmq(&format!("hello recv --queue {q} --count 1 -o body"), None);
    assert_code(&received, 0);
    assert_eq!(received.stdout, b"\xff\xfeok\n");
    broker::publish(q.name(), &["placeholder"]);
    let sent = rmq(&format!("hello send --queue {q} -f -"), Some(b"\xff\n"));
    assert_code(&sent, 0);
    let received = rmq(&format!("hello recv --queue {q} --count 2 -o json"), None);
    assert_code(&received, 0);
    let last: serde_json::Value =
        serde_json::from_str(lines(&received.stdout).last().unwrap()).unwrap();
    assert_eq!(last["body_base64"], "/w==");
}

fn assert_no_secret(output: &std::process::Output) {
    assert_hidden(output, SECRET);
}

#[test]
fn an_empty_vhost_is_a_usage_error_and_an_unknown_one_65_with_the_percent_2f_hint() {
    let output = rmqlab()
        .env(
            "RMQLAB_URL",
            format!("amqp://guest:guest@{}/", broker_address()),
        )
        .args(["hello", "send"])
        .output()
        .unwrap();
    assert_code(&output, 2);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("the vhost (the URI's path) is empty"),
        "{stderr}"
    );
    assert!(stderr.contains("%2f"), "{stderr}");

    let vhost = "rmqlab-no-such-vhost";
    for command in [
        &["hello", "send"][..],
        &["hello", "recv", "--count", "1"][..],
    ] {
        let output = rmqlab()
            .env(
                "RMQLAB_URL",
                format!("amqp://guest:guest@{}/{vhost}", broker_address()),
            )
            .args(command)
            .output()
            .unwrap();
        // A vhost that does not exist is a data error, as over the API; one the user may not
        // use would be 77.
        assert_code(&output, 65);
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains(&format!("has no virtual host '{vhost}'")),
            "{stderr}"
        );
        assert!(stderr.contains("is written %2f"), "{stderr}");
        assert!(stderr.contains("amqp://guest:****@"), "{stderr}");
    }
}

#[test]
fn a_silent_server_is_bounded_by_the_connect_timeout() {
    // A listener that never speaks AMQP: the TCP connect succeeds, the handshake never ends
    // (as at a TLS listener, which waits for a ClientHello).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = Instant::now();
    let output = rmqlab()
        .env(
            "RMQLAB_URL",
            format!("amqp://guest:{SECRET}@127.0.0.1:{port}/%2f"),
        )
        .args(["--connect-timeout", "1s", "hello", "send"])
        .output()
        .unwrap();
    let waited = started.elapsed();
    assert_code(&output, 75);
    assert!(
        text(&output.stderr).starts_with(&format!(
            "rmqlab: error: the server at amqp://guest:****@127.0.0.1:{port}/%2f took the connection \
             but did not answer AMQP: is port {port} a TLS listener?\n"
        )),
        "{}",
        text(&output.stderr)
    );
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert_no_secret(&output);
    drop(silent);
}

/// A SIGINT ignored when rmqlab starts (a background job of a non-interactive shell, `nohup`)
/// stays ignored; SIGTERM still ends the run cleanly, by the signal itself.
#[test]
fn an_ignored_sigint_stays_ignored_and_sigterm_still_stops() {
    use std::os::unix::process::CommandExt;
    let q = TestQueue::new("sigint_ignored");
    let mut command = rmqlab();
    command.args(["hello", "recv", "--queue", q.name()]);
    // SAFETY: signal() is async-signal-safe, as a pre_exec hook must be.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut consumer = Running::spawn(&mut command);
    let wait = Duration::from_secs(30);
    consumer.wait_for_stderr("Waiting for messages", wait);
    consumer.signal("INT");
    consumer.signal("INT");
    broker::publish(q.name(), &["after one"]);
    assert_eq!(consumer.next_line(wait), " [x] Received after one");
    broker::publish(q.name(), &["after two"]);
    assert_eq!(consumer.next_line(wait), " [x] Received after two");
    assert!(
        consumer
            .child
            .as_mut()
            .unwrap()
            .try_wait()
            .unwrap()
            .is_none(),
        "still running after two SIGINTs"
    );
    consumer.signal("TERM");
    let (status, lines, stderr) = consumer.finish_status(wait);
    assert_ended_by(&status, "TERM", &stderr);
    assert_eq!(
        lines,
        [" [x] Received after one", " [x] Received after two"],
        "nothing after SIGTERM"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(broker::ready(q.name()), 0, "both messages acked");
}
