//! Publishers never stop silently: a closed stdout ends the report and not the publishing,
//! Ctrl-C and SIGTERM stop with exactly what was confirmed reported, and a line with no end is
//! refused. (A resource alarm needs a broker of its own: `tests/faults.rs`.)

use crate::common::{
    Running, TestQueue, assert_code, assert_ended_by, broker, eventually, rmqlab, run, scratch_dir,
    text, wait_output,
};
use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Write},
    process::Stdio,
    thread,
    time::Duration,
};

const WAIT: Duration = Duration::from_secs(60);

/// Takes every message of `queue` (there must be `count`) with rmqlab, and returns the distinct
/// bodies, as numbers.
fn distinct_bodies(queue: &str, count: u64) -> BTreeSet<u64> {
    let count = count.to_string();
    let output = run(
        &[
            "hello", "recv", "--queue", queue, "--count", &count, "-o", "body",
        ],
        None,
    );
    assert_code(&output, 0);
    text(&output.stdout)
        .lines()
        .map(|line| line.parse().unwrap())
        .collect()
}

/// `task new -f 100k.txt | head -1`: the pipe closes after one line, and every line is still
/// published; exit 0. A stdout that fails otherwise (a full disk) is 74, after publishing all.
#[test]
fn a_closed_stdout_stops_the_report_not_the_publishing() {
    let q = TestQueue::new("head_1");
    let dir = scratch_dir();
    let file = dir.path().join("100k.txt");
    let input: String = (1..=100_000).map(|i| format!("{i}\n")).collect();
    std::fs::write(&file, input).unwrap();
    let mut publisher = rmqlab()
        .args(["task", "new", "--queue", q.name(), "-f"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(publisher.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The read end is closed here, as `head -1` does.
    let output = wait_output(publisher, WAIT);
    assert_eq!(first, " [x] Sent '1'\n");
    assert_code(&output, 0);
    assert_eq!(text(&output.stderr), "", "a closed stdout is no failure");
    assert_eq!(broker::ready(q.name()), 100_000);
    assert_eq!(distinct_bodies(q.name(), 100_000), (1..=100_000).collect());

    // `seq 1000 | rmqlab task new -f - > /dev/full`
    let q = TestQueue::new("dev_full");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let mut publisher = rmqlab()
        .args(["task", "new", "--queue", q.name(), "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(full)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input: String = (1..=1000).map(|i| format!("{i}\n")).collect();
    publisher
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = wait_output(publisher, WAIT);
    assert_code(&output, 74);
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with(
            "rmqlab: error: cannot write the report to standard output; all 1000 message(s) \
             were still published and confirmed\n"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert_eq!(distinct_bodies(q.name(), 1000), (1..=1000).collect());
}

/// `seq 1000000 | rmqlab task new -f - > out`, stopped mid-way by `signal`: the lines written
/// are exactly the messages in the queue, the stop says how many and from where to go on, and
/// rmqlab ends by the signal.
fn a_signal_stops_a_publisher_with_what_was_confirmed(signal: &str, test: &str) {
    let q = TestQueue::new(test);
    let (publisher, mut stdin) =
        Running::start_with_stdin(&["task", "new", "--queue", q.name(), "-f", "-"]);
    thread::spawn(move || {
        let mut chunk = String::new();
        for i in 1..=1_000_000 {
            chunk.push_str(&format!("{i}\n"));
            if i % 1000 == 0 {
                if stdin.write_all(chunk.as_bytes()).is_err() {
                    return;
                }
                chunk.clear();
            }
        }
    });
    eventually(WAIT, "publishing under way", || {
        broker::queue_state(q.name()).is_some_and(|(ready, _)| ready >= 5000)
    });
    publisher.signal(signal);
    let (status, lines, stderr) = publisher.finish_status(WAIT);
    assert_ended_by(&status, signal, &stderr);
    let confirmed = lines.len() as u64;
    assert!((5000..1_000_000).contains(&confirmed), "{confirmed}");
    let name = if signal == "INT" { "Ctrl-C" } else { "SIGTERM" };
    assert!(
        stderr.contains(&format!(
            " [!] Stopped by {name}: the first {confirmed} input line(s) were confirmed; resend \
             from line {}",
            confirmed + 1
        )),
        "{stderr}"
    );
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(
            line,
            &format!(" [x] Sent '{}'", i + 1),
            "lines in input order"
        );
    }
    // Exactly what was reported is in the queue, nothing more, nothing twice.
    assert_eq!(u64::from(broker::ready(q.name())), confirmed, "{stderr}");
    assert_eq!(
        distinct_bodies(q.name(), confirmed),
        (1..=confirmed).collect()
    );
}

#[test]
fn sigterm_stops_a_publisher_reporting_exactly_what_was_confirmed() {
    a_signal_stops_a_publisher_with_what_was_confirmed("TERM", "publisher_term");
}

#[test]
fn ctrl_c_stops_a_publisher_reporting_exactly_what_was_confirmed() {
    a_signal_stops_a_publisher_with_what_was_confirmed("INT", "publisher_int");
}

/// A line with no newline is not read without end: past --max-message-size the run stops with
/// 65 naming the line; the lines before it are published, nothing after it.
#[test]
fn a_line_longer_than_max_message_size_exits_65_naming_it() {
    let q = TestQueue::new("endless_line");
    let mut publisher = rmqlab()
        .args([
            "task",
            "new",
            "--queue",
            q.name(),
            "--max-message-size",
            "1KiB",
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = publisher.stdin.take().unwrap();
    // `{ printf 'a\nb\n'; head -c 200M /dev/zero; echo c; }`: fed until rmqlab stops reading.
    let feeder = thread::spawn(move || {
        let zeros = vec![0u8; 1 << 20];
        let mut written = 0;
        let result = (|| {
            stdin.write_all(b"a\nb\n")?;
            for _ in 0..200 {
                stdin.write_all(&zeros)?;
                written += zeros.len();
            }
            stdin.write_all(b"\nc\n")
        })();
        (result.is_ok(), written)
    });
    let output = wait_output(publisher, WAIT);
    let (fed_whole, _) = feeder.join().unwrap();
    assert_code(&output, 65);
    assert!(!fed_whole, "rmqlab stopped reading the endless line");
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with(
            "rmqlab: error: publishing stopped after 2 confirmed message(s)\n  caused by: line 3 \
             of standard input is longer than --max-message-size (1024 bytes): not published\n"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: the first 2 input line(s) were confirmed"),
        "{stderr}"
    );
    assert_eq!(text(&output.stdout), " [x] Sent 'a'\n [x] Sent 'b'\n");
    assert_eq!(broker::ready(q.name()), 2);
    assert_eq!(broker::get(q.name()).unwrap().data, b"a");
    assert_eq!(broker::get(q.name()).unwrap().data, b"b");
    assert!(broker::get(q.name()).is_none());
}

/// `rmqlab task new -f FILE >&-` and `rmqlab hello send WORDS >&-` (the one-message path): a
/// stdout closed as rmqlab starts takes no report, every message is still published, and the
/// run ends 74 saying so.
#[test]
fn a_stdout_closed_from_the_start_stops_the_report_not_the_publishing() {
    let q = TestQueue::new("closed_from_start");
    let dir = scratch_dir();
    let file = dir.path().join("50.txt");
    let input: String = (1..=50).map(|i| format!("{i}\n")).collect();
    std::fs::write(&file, input).unwrap();
    let closed = |args: &str| {
        crate::common::command("sh")
            .arg("-c")
            .arg(format!("exec \"$0\" {args} >&-"))
            .arg(crate::common::BIN)
            .arg(q.name())
            .arg(&file)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let output = closed("task new --queue \"$1\" -f \"$2\"");
    assert_code(&output, 74);
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with(
            "rmqlab: error: cannot write the report to standard output; all 50 message(s) \
             were still published and confirmed\n"
        ),
        "{stderr}"
    );
    let output = closed("hello send --queue \"$1\" 51");
    assert_code(&output, 74);
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with(
            "rmqlab: error: cannot write the report to standard output; all 1 message(s) \
             were still published and confirmed\n"
        ),
        "{stderr}"
    );
    assert_eq!(distinct_bodies(q.name(), 51), (1..=51).collect());
}
