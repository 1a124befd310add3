//! A task worker never destroys a task it did not handle: an `--exec` command that cannot be
//! started, failures counted per task, what `--on-failure` does after the last try, Ctrl-C and
//! SIGKILL with a command running, and a stdout that is closed or closes.

use crate::common::{
    BIN, Running, TestQueue, assert_code, broker, command, eventually, rmqlab, run, scratch_dir,
    text, wait_output,
};
use lapin::{
    message::Delivery,
    options::QueueDeclareOptions,
    types::{AMQPValue, FieldTable},
};
use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::Path,
    process::Stdio,
    time::Duration,
};

const LIMIT: Duration = Duration::from_secs(30);

/// `task work --queue QUEUE` and `extra`, run to its end.
fn work(queue: &str, extra: &[&str]) -> std::process::Output {
    run(&[&["task", "work", "--queue", queue], extra].concat(), None)
}

/// Takes every message of a queue (acked), once `expected` are ready.
fn drain(queue: &str, expected: u32) -> Vec<Delivery> {
    eventually(
        LIMIT,
        &format!("{expected} message(s) ready in {queue}"),
        || {
            broker::queue_state(queue)
                .is_some_and(|(ready, consumers)| ready == expected && consumers == 0)
        },
    );
    broker::drain(queue)
}

fn body(message: &Delivery) -> String {
    text(&message.data)
}

/// The distinct bodies of a queue's messages, asserting there is no duplicate among them.
fn distinct_bodies(messages: &[Delivery]) -> BTreeSet<String> {
    let bodies: BTreeSet<String> = messages.iter().map(body).collect();
    assert_eq!(bodies.len(), messages.len(), "duplicates among {bodies:?}");
    bodies
}

fn set(bodies: &[&str]) -> BTreeSet<String> {
    bodies.iter().map(|body| body.to_string()).collect()
}

fn header<'a>(message: &'a Delivery, name: &str) -> &'a AMQPValue {
    message
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(name))
        .unwrap_or_else(|| panic!("no header {name} on {:?}", message.properties))
}

fn header_text(message: &Delivery, name: &str) -> String {
    match header(message, name) {
        AMQPValue::LongString(value) => value.to_string(),
        other => panic!("header {name} is not a string: {other:?}"),
    }
}

fn header_number(message: &Delivery, name: &str) -> i64 {
    match header(message, name) {
        AMQPValue::LongLongInt(value) => *value,
        AMQPValue::LongInt(value) => (*value).into(),
        other => panic!("header {name} is not a number: {other:?}"),
    }
}

/// The queue where `task work --queue QUEUE` parks failed tasks, deleted after the test.
fn parking(queue: &TestQueue) -> TestQueue {
    TestQueue(format!("{}.failed", queue.name()))
}

/// Waits for a file a command writes, and returns its content.
fn wait_for_file(path: &Path) -> String {
    eventually(LIMIT, &format!("{} to be written", path.display()), || {
        std::fs::read_to_string(path).is_ok_and(|content| content.ends_with('\n'))
    });
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

/// Whether a process is gone (a zombie waiting for its new parent counts as gone: it runs no
/// more).
fn process_gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// Sends `signal` to a whole process group, as a terminal does on Ctrl-C.
fn signal_group(group: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), "--", &format!("-{group}")])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} -{group} failed");
}

#[test]
fn a_command_that_cannot_be_started_leaves_every_task_in_the_queue_and_exits_71() {
    let q = TestQueue::new("exec_typo");
    let _parking = parking(&q);
    broker::publish(q.name(), &["a", "b", "c"]);
    let dir = scratch_dir();
    let not_executable = dir.path().join("handle.sh");
    std::fs::write(&not_executable, "#!/bin/sh\nexit 0\n").unwrap();
    let not_executable = not_executable.display().to_string();
    // Refused before a task is taken: a missing file, one that is not executable, an unknown
    // command.
    for (exec, said) in [
        ("./handel.sh", "'./handel.sh': No such file or directory"),
        (not_executable.as_str(), "is not executable"),
        ("handel-rmqlab-test arg", "no command sh knows"),
    ] {
        let worked = work(q.name(), &["--exec", exec, "--idle-timeout", "3s"]);
        assert_code(&worked, 71);
        let stderr = text(&worked.stderr);
        assert!(
            stderr.contains("cannot be started") && stderr.contains(said),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert_eq!(text(&worked.stdout), "", "no task taken");
    }
    // Not seen before the first task (the first word is a builtin): sh's 127 puts it back.
    let worked = work(
        q.name(),
        &["--exec", "true; ./handel.sh", "--idle-timeout", "3s"],
    );
    assert_code(&worked, 71);
    let stderr = text(&worked.stderr);
    assert!(
        stderr.contains("exit status 127 (not found); the task is back in the queue"),
        "{stderr}"
    );
    assert_eq!(text(&worked.stdout), " [x] Received a\n");
    assert_eq!(distinct_bodies(&drain(q.name(), 3)), set(&["a", "b", "c"]));
}

#[test]
fn failures_are_counted_per_task_and_the_last_one_parks_it_with_why() {
    let q = TestQueue::new("exec_park");
    let parked = parking(&q);
    broker::publish(q.name(), &["1", "2", "3", "4", "5"]);
    // A worker that stops at --count 1 while holding prefetched tasks: the broker redelivers
    // them with `redelivered` set, and they have not failed yet.
    let first = work(
        q.name(),
        &["--count", "1", "--prefetch", "10", "--dot-duration", "0s"],
    );
    assert_code(&first, 0);
    assert_eq!(text(&first.stdout), " [x] Received 1\n [x] Done\n");
    let worked = run(
        &[
            "-q",
            "task",
            "work",
            "--queue",
            q.name(),
            "--exec",
            "echo \"failing on $(cat)\" >&2; exit 1",
            "--idle-timeout",
            "2s",
            "-o",
            "body",
        ],
        None,
    );
    assert_code(&worked, 65);
    let stdout = text(&worked.stdout);
    for task in ["2", "3", "4", "5"] {
        let tries = stdout.lines().filter(|line| *line == task).count();
        assert_eq!(tries, 2, "task {task} is tried twice: {stdout}");
    }
    let stderr = text(&worked.stderr);
    // -q hides no park.
    assert_eq!(
        stderr.matches(" [!] Task parked in queue").count(),
        4,
        "{stderr}"
    );
    assert!(
        stderr.contains("4 task(s) failed on every try: 4 parked in queue"),
        "{stderr}"
    );
    assert!(stderr.contains("failing on 5"), "passed through: {stderr}");
    assert_eq!(broker::queue_state(q.name()), Some((0, 0)), "nothing left");
    let messages = drain(parked.name(), 4);
    assert_eq!(distinct_bodies(&messages), set(&["2", "3", "4", "5"]));
    for message in &messages {
        let task = body(message);
        assert_eq!(header_number(message, "x-rmqlab-failures"), 2);
        assert_eq!(header_number(message, "x-rmqlab-exit-status"), 1);
        assert_eq!(header_text(message, "x-rmqlab-reason"), "exit status 1");
        assert_eq!(
            header_text(message, "x-rmqlab-stderr"),
            format!("failing on {task}")
        );
        assert_eq!(header_text(message, "x-rmqlab-queue"), q.name());
        assert!(header_text(message, "x-rmqlab-failed-at").ends_with('Z'));
        assert_eq!(message.properties.delivery_mode(), &Some(2));
    }
}

#[test]
fn retries_count_every_try_and_a_signal_is_a_failure_too() {
    let q = TestQueue::new("exec_retries");
    let parked = parking(&q);
    broker::publish(q.name(), &["stubborn"]);
    let dir = scratch_dir();
    let tries = dir.path().join("tries");
    let exec = format!("cat >> '{}'; echo >> '{0}'; kill -TERM $$", tries.display());
    let worked = work(
        q.name(),
        &["--exec", &exec, "--retries", "2", "--idle-timeout", "2s"],
    );
    assert_code(&worked, 65);
    assert_eq!(
        std::fs::read_to_string(&tries).unwrap(),
        "stubborn\n".repeat(3),
        "1 try + 2 retries"
    );
    let stderr = text(&worked.stderr);
    assert!(stderr.contains("queued again for try 3 of 3"), "{stderr}");
    assert!(
        stderr.contains("after 3 tries (--exec command killed by SIGTERM (signal 15))"),
        "{stderr}"
    );
    let messages = drain(parked.name(), 1);
    assert_eq!(header_number(&messages[0], "x-rmqlab-failures"), 3);
    assert_eq!(header_text(&messages[0], "x-rmqlab-signal"), "SIGTERM");
    assert_eq!(broker::queue_state(q.name()), Some((0, 0)));
}

/// The tries of a task, counted by the lines its `--exec` command appends to a file.
fn work_counting_tries(queue: &str, tries: &Path) -> std::process::Output {
    let exec = format!("cat >> '{}'; echo >> '{0}'; exit 1", tries.display());
    work(
        queue,
        &["--exec", &exec, "--retries", "1", "--idle-timeout", "2s"],
    )
}

#[test]
fn a_parked_task_redriven_or_moved_back_gets_its_tries_again() {
    let q = TestQueue::new("exec_again");
    let parked = parking(&q);
    broker::publish(q.name(), &["again"]);
    let dir = scratch_dir();
    let tries = dir.path().join("tries");
    let first = work_counting_tries(q.name(), &tries);
    assert_code(&first, 65);
    assert_eq!(
        std::fs::read_to_string(&tries).unwrap(),
        "again\n".repeat(2)
    );
    eventually(LIMIT, "the task parked", || {
        broker::queue_state(parked.name()).is_some_and(|(ready, _)| ready == 1)
    });
    // Redriven: it is tried twice again, not parked at once as a task already out of tries.
    let redriven = run(
        &["queues", "dead-letters", parked.name(), "--redrive"],
        None,
    );
    assert_code(&redriven, 0);
    let second = work_counting_tries(q.name(), &tries);
    assert_code(&second, 65);
    let stderr = text(&second.stderr);
    assert!(stderr.contains("queued again for try 2 of 2"), "{stderr}");
    assert!(stderr.contains("parked in queue"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&tries).unwrap(),
        "again\n".repeat(4)
    );
    eventually(LIMIT, "the task parked again", || {
        broker::queue_state(parked.name()).is_some_and(|(ready, _)| ready == 1)
    });
    // Moved back: the same.
    let moved = run(&["queues", "move", parked.name(), q.name()], None);
    assert_code(&moved, 0);
    let third = work_counting_tries(q.name(), &tries);
    assert_code(&third, 65);
    assert_eq!(
        std::fs::read_to_string(&tries).unwrap(),
        "again\n".repeat(6)
    );
    let messages = drain(parked.name(), 1);
    // Parked afresh: its failures counted from the redrive, no header of an old park left over.
    assert_eq!(header_number(&messages[0], "x-rmqlab-failures"), 2);
    assert_eq!(header_text(&messages[0], "x-rmqlab-queue"), q.name());
    assert_eq!(broker::queue_state(q.name()), Some((0, 0)));
}

#[test]
fn on_failure_requeue_puts_the_task_back_as_it_is() {
    let q = TestQueue::new("exec_requeue");
    let parked = parking(&q);
    broker::publish(q.name(), &["again"]);
    let worked = work(
        q.name(),
        &[
            "--exec",
            "exit 1",
            "--retries",
            "0",
            "--on-failure",
            "requeue",
            "--count",
            "3",
        ],
    );
    assert_code(&worked, 0);
    let stderr = text(&worked.stderr);
    assert_eq!(stderr.matches("requeued as it is").count(), 3, "{stderr}");
    assert_eq!(distinct_bodies(&drain(q.name(), 1)), set(&["again"]));
    assert_eq!(broker::queue_state(parked.name()), None, "nothing parked");
}

#[test]
fn on_failure_stop_puts_the_task_back_and_exits_65() {
    let q = TestQueue::new("exec_stop");
    let _parking = parking(&q);
    broker::publish(q.name(), &["first", "second"]);
    let worked = work(
        q.name(),
        &[
            "--exec",
            "exit 4",
            "--retries",
            "0",
            "--on-failure",
            "stop",
            "--idle-timeout",
            "5s",
        ],
    );
    assert_code(&worked, 65);
    let stderr = text(&worked.stderr);
    assert!(
        stderr.contains(
            "(1 tries, the last: exit status 4): it is back in the queue, and the worker stopped"
        ),
        "{stderr}"
    );
    assert_eq!(text(&worked.stdout), " [x] Received first\n");
    assert_eq!(
        distinct_bodies(&drain(q.name(), 2)),
        set(&["first", "second"])
    );
}

/// Declares `queue` as a quorum queue that dead-letters to `dead_letters` through the default
/// exchange, when `dead_letters` is given.
fn declare_with_dead_letters(queue: &str, dead_letters: Option<&str>) {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    if let Some(dead_letters) = dead_letters {
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        arguments.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(dead_letters.into()),
        );
    }
    broker::block_on(async {
        let connection = broker::connect().await;
        let channel = connection.create_channel().await.unwrap();
        let options = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(queue.into(), options, arguments)
            .await
            .expect("declare the queue");
        let _ = connection.close(200, "OK".into()).await;
    });
}

#[test]
fn on_failure_dead_letter_needs_a_dead_letter_exchange_and_uses_it() {
    let exec = ["--exec", "exit 2", "--on-failure", "dead-letter"];
    // No dead-letter exchange: refused before a task is taken.
    let plain = TestQueue::new("exec_no_dlx");
    declare_with_dead_letters(plain.name(), None);
    broker::publish(plain.name(), &["kept"]);
    let refused = work(
        plain.name(),
        &[&exec[..], &["--idle-timeout", "2s"]].concat(),
    );
    assert_code(&refused, 65);
    let stderr = text(&refused.stderr);
    assert!(stderr.contains("has no dead-letter exchange"), "{stderr}");
    assert_eq!(text(&refused.stdout), "");
    assert_eq!(distinct_bodies(&drain(plain.name(), 1)), set(&["kept"]));
    // A queue that does not exist yet would have none either.
    let absent = TestQueue::new("exec_absent_dlx");
    let refused = work(
        absent.name(),
        &[&exec[..], &["--idle-timeout", "2s"]].concat(),
    );
    assert_code(&refused, 65);
    assert!(text(&refused.stderr).contains("does not exist yet"));
    // With one: after the retry, the task is dead-lettered, and the run says so.
    let q = TestQueue::new("exec_dlx");
    let dead_letters = TestQueue::new("exec_dlx_target");
    broker::declare_quorum(dead_letters.name());
    declare_with_dead_letters(q.name(), Some(dead_letters.name()));
    broker::publish(q.name(), &["doomed"]);
    let worked = work(q.name(), &[&exec[..], &["--idle-timeout", "2s"]].concat());
    assert_code(&worked, 65);
    let stderr = text(&worked.stderr);
    assert!(
        stderr.contains("Task dead-lettered after 2 tries (--exec command exit status 2)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("1 task(s) failed on every try: 1 dead-lettered"),
        "{stderr}"
    );
    let messages = drain(dead_letters.name(), 1);
    assert_eq!(body(&messages[0]), "doomed");
    // A reject cannot change the task: its header counts the failures before the last try,
    // and the broker's x-death records the rejection.
    assert_eq!(header_number(&messages[0], "x-rmqlab-failures"), 1);
    assert!(matches!(
        header(&messages[0], "x-death"),
        AMQPValue::FieldArray(_)
    ));
    assert_eq!(broker::queue_state(q.name()), Some((0, 0)));
}

#[test]
fn the_first_ctrl_c_at_a_terminal_lets_the_exec_command_finish() {
    let q = TestQueue::new("exec_ctrl_c");
    let _parking = parking(&q);
    broker::publish(q.name(), &["first", "second"]);
    let dir = scratch_dir();
    let started = dir.path().join("started");
    let finished = dir.path().join("finished");
    let exec = format!(
        "cat >/dev/null; echo $$ > '{}'; sleep 2; echo done > '{}'",
        started.display(),
        finished.display()
    );
    // As at a terminal: rmqlab leads a process group, and Ctrl-C signals the whole group.
    let mut worker = Running::spawn(
        rmqlab()
            .args(["task", "work", "--queue", q.name(), "--exec", &exec])
            .process_group(0),
    );
    let group = worker.child.as_ref().unwrap().id();
    assert_eq!(worker.next_line(LIMIT), " [x] Received first");
    wait_for_file(&started);
    signal_group(group, "INT");
    let (status, stdout, stderr) = worker.finish_status(LIMIT);
    crate::common::assert_ended_by(&status, "INT", &stderr);
    assert!(
        stderr.contains("Stopping after the current task"),
        "{stderr}"
    );
    assert_eq!(wait_for_file(&finished), "done", "the command finished");
    assert_eq!(stdout, [" [x] Received first", " [x] Done"]);
    assert_eq!(distinct_bodies(&drain(q.name(), 1)), set(&["second"]));
}

#[test]
fn a_second_ctrl_c_ends_the_exec_commands_whole_group() {
    let q = TestQueue::new("exec_abort");
    let _parking = parking(&q);
    broker::publish(q.name(), &["aborted"]);
    let dir = scratch_dir();
    let shell = dir.path().join("sh");
    let child = dir.path().join("child");
    let exec = format!(
        "cat >/dev/null; sleep 60 & echo $! > '{}'; echo $$ > '{}'; wait",
        child.display(),
        shell.display()
    );
    let worker = Running::spawn(
        rmqlab()
            .args(["task", "work", "--queue", q.name(), "--exec", &exec])
            .process_group(0),
    );
    let group = worker.child.as_ref().unwrap().id();
    let (shell, child) = (wait_for_file(&shell), wait_for_file(&child));
    signal_group(group, "INT");
    worker.wait_for_stderr("Stopping after the current task", LIMIT);
    signal_group(group, "INT");
    let (status, _, stderr) = worker.finish_status(LIMIT);
    crate::common::assert_ended_by(&status, "INT", &stderr);
    assert!(stderr.contains("Ending the --exec command"), "{stderr}");
    assert!(process_gone(&shell) && process_gone(&child), "{stderr}");
    assert_eq!(distinct_bodies(&drain(q.name(), 1)), set(&["aborted"]));
}

#[test]
fn a_killed_worker_leaves_no_exec_command_running() {
    let q = TestQueue::new("exec_sigkill");
    let _parking = parking(&q);
    broker::publish(q.name(), &["orphan?"]);
    let dir = scratch_dir();
    let shell = dir.path().join("sh");
    let child = dir.path().join("child");
    let exec = format!(
        "cat >/dev/null; sleep 60 & echo $! > '{}'; echo $$ > '{}'; wait",
        child.display(),
        shell.display()
    );
    let worker = Running::start(&["task", "work", "--queue", q.name(), "--exec", &exec]);
    let (shell, child) = (wait_for_file(&shell), wait_for_file(&child));
    assert!(!process_gone(&shell) && !process_gone(&child));
    worker.signal("KILL");
    eventually(
        LIMIT,
        "the command and its child to die with rmqlab",
        || process_gone(&shell) && process_gone(&child),
    );
    let (status, _, _) = worker.finish_status(LIMIT);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    // The broker gives the task to the next worker, and no orphan works on it meanwhile.
    assert_eq!(distinct_bodies(&drain(q.name(), 1)), set(&["orphan?"]));
}

#[test]
fn a_closed_stdout_is_exit_74_before_any_task_is_taken() {
    let q = TestQueue::new("stdout_closed");
    broker::publish(q.name(), &["0", "1", "2", "3"]);
    // `>/dev/null` is a choice, not a closed stdout.
    let discarded = command("sh")
        .arg("-c")
        .arg("exec \"$0\" task work --queue \"$1\" --count 1 --dot-duration 0s >/dev/null")
        .arg(BIN)
        .arg(q.name())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_code(&discarded, 0);
    for consumer in ["task work", "hello recv"] {
        let output = command("sh")
            .arg("-c")
            .arg(format!(
                "exec \"$0\" {consumer} --queue \"$1\" --count 3 >&-"
            ))
            .arg(BIN)
            .arg(q.name())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_code(&output, 74);
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("cannot write to standard output"),
            "{consumer}: {stderr}"
        );
        assert_eq!(broker::queue_state(q.name()), Some((3, 0)), "{consumer}");
    }
    assert_eq!(distinct_bodies(&drain(q.name(), 3)), set(&["1", "2", "3"]));
}

#[test]
fn a_reader_that_goes_away_ends_the_worker_quietly_and_loses_nothing() {
    let q = TestQueue::new("stdout_head");
    // Long bodies: few fit in a pipe, so what went into it unread is bounded.
    let bodies: Vec<String> = (1..=200)
        .map(|i| format!("{i:03} {}", "x".repeat(8 * 1024)))
        .collect();
    broker::publish(
        q.name(),
        &bodies.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    // `rmqlab task work ... | head -1`
    let mut worker = rmqlab()
        .args([
            "task",
            "work",
            "--queue",
            q.name(),
            // Acked two by two, each pair once written.
            "--prefetch",
            "4",
            "--dot-duration",
            "0s",
            "-o",
            "body",
            "--idle-timeout",
            "3s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(worker.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let output = wait_output(worker, LIMIT);
    assert_code(&output, 0);
    assert_eq!(text(&output.stderr).matches("error").count(), 0);
    assert_eq!(first.trim_end(), bodies[0]);
    // Every task is in the queue still, but the one read and the few that fit in the pipe.
    eventually(LIMIT, "the worker's consumer to go", || {
        broker::queue_state(q.name()).is_some_and(|(_, consumers)| consumers == 0)
    });
    let (ready, _) = broker::queue_state(q.name()).unwrap();
    let left = distinct_bodies(&drain(q.name(), ready));
    let gone: Vec<&String> = bodies.iter().filter(|body| !left.contains(*body)).collect();
    let pipe_holds = 64 * 1024 / (8 * 1024);
    assert!(gone.len() <= 1 + pipe_holds, "{} tasks gone", gone.len());
    // Those that are gone are the first ones, in order: written, then acked.
    assert!(gone.iter().zip(&bodies).all(|(gone, body)| *gone == body));
}
