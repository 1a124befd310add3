//! `stream send` / `stream recv` over the stream protocol. rmqlab's stream client needs
//! RabbitMQ 3.11 or later, so these tests always talk to the RabbitMQ 4 node, whichever broker
//! the rest of the run targets: `RMQLAB_TEST_STREAM_URL` (default
//! rabbitmq-stream://guest:guest@127.0.0.1:5751/%2f) and `RMQLAB_TEST_STREAM_AMQP_URL` (default
//! amqp://guest:guest@127.0.0.1:5741/%2f, the same node's AMQP port).

use crate::common::{
    Running, assert_code, broker, lines_file, rmqlab, scratch_dir, text, unique_name,
};
use rabbitmq_stream_client::Environment;
use rmqlab::uri::StreamUrl;
use serde_json::Value;
use std::{
    process::{Output, Stdio},
    time::{Duration, SystemTime},
};

const WAIT: Duration = Duration::from_secs(30);

fn stream_url() -> String {
    std::env::var("RMQLAB_TEST_STREAM_URL")
        .unwrap_or_else(|_| "rabbitmq-stream://guest:guest@127.0.0.1:5751/%2f".into())
}

fn amqp_url() -> String {
    std::env::var("RMQLAB_TEST_STREAM_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5741/%2f".into())
}

/// rmqlab pointed at the stream node.
fn stream_rmqlab(args: &[&str]) -> std::process::Command {
    let mut command = rmqlab();
    command
        .env("RMQLAB_URL", amqp_url())
        .env("RMQLAB_STREAM_URL", stream_url())
        .env_remove("RMQLAB_API_URL")
        .args(args);
    command
}

fn run_stream(args: &[&str]) -> Output {
    let child = stream_rmqlab(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rmqlab");
    crate::common::wait_output(child, Duration::from_secs(120))
}

/// A stream of this test's own, deleted at the end.
struct TestStream(String);

impl TestStream {
    fn new(test: &str) -> TestStream {
        TestStream(unique_name(test))
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let url = StreamUrl::parse(&stream_url()).unwrap();
        let name = self.0.clone();
        broker::block_on(async move {
            if let Ok(env) = Environment::builder()
                .host(&url.host)
                .port(url.port)
                .username(&url.user)
                .password(&url.password)
                .virtual_host(&url.vhost)
                .build()
                .await
            {
                let _ = env.delete_stream(&name).await;
            }
        });
    }
}

/// Lines `prefix0`..`prefix{count-1}` in a file of the test's scratch directory.
fn send_lines(stream: &str, prefix: &str, range: std::ops::Range<u64>) {
    let (_dir, path) = lines_file(prefix, range.clone());
    let output = run_stream(&[
        "stream",
        "send",
        "--stream",
        stream,
        "-f",
        path.to_str().unwrap(),
    ]);
    assert_code(&output, 0);
    let sent: Vec<String> = text(&output.stdout).lines().map(str::to_string).collect();
    let expected: Vec<String> = range.map(|n| format!(" [x] Sent '{prefix}{n}'")).collect();
    assert_eq!(sent, expected, "one ` [x] Sent` line per confirm, in order");
}

/// `(offset, body)` of each JSON line.
fn json_messages(output: &Output) -> Vec<(u64, String)> {
    text(&output.stdout)
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line).unwrap();
            (
                value["offset"].as_u64().unwrap(),
                value["body"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn expected(prefix: &str, range: std::ops::Range<u64>) -> Vec<(u64, String)> {
    range.map(|n| (n, format!("{prefix}{n}"))).collect()
}

#[test]
fn the_hello_world_tutorial_sends_and_reads_back_with_offsets() {
    let stream = TestStream::new("stream_hello");
    let output = run_stream(&["stream", "send", "--stream", &stream.0]);
    assert_code(&output, 0);
    assert_eq!(text(&output.stdout), " [x] Sent 'Hello, World!'\n");
    let output = run_stream(&["stream", "send", "--stream", &stream.0, "Hello", "again"]);
    assert_code(&output, 0);
    let output = run_stream(&["stream", "recv", "--stream", &stream.0, "--count", "2"]);
    assert_code(&output, 0);
    assert_eq!(
        text(&output.stdout),
        "Got message: Hello, World! with offset: 0\nGot message: Hello again with offset: 1\n"
    );
    assert!(text(&output.stderr).contains(" [*] Waiting for messages"));
}

#[test]
fn a_thousand_messages_come_back_in_order_with_consecutive_offsets() {
    let stream = TestStream::new("stream_thousand");
    send_lines(&stream.0, "m", 0..1000);
    let output = run_stream(&[
        "stream", "recv", "--stream", &stream.0, "--offset", "first", "--count", "1000", "-o",
        "json",
    ]);
    assert_code(&output, 0);
    assert_eq!(json_messages(&output), expected("m", 0..1000));
    // Reading takes nothing away: a second reader sees the same, body only.
    let output = run_stream(&[
        "stream", "recv", "--stream", &stream.0, "--count", "1000", "-o", "body",
    ]);
    assert_code(&output, 0);
    let bodies: String = (0..1000).map(|n| format!("m{n}\n")).collect();
    assert_eq!(text(&output.stdout), bodies);
}

#[test]
fn a_numeric_offset_starts_exactly_there() {
    let stream = TestStream::new("stream_numeric");
    send_lines(&stream.0, "m", 0..1000);
    let output = run_stream(&[
        "stream", "recv", "--stream", &stream.0, "--offset", "500", "--count", "20", "-o", "json",
    ]);
    assert_code(&output, 0);
    assert_eq!(json_messages(&output), expected("m", 500..520));
    // The last offset, then nothing more within the idle timeout.
    let output = run_stream(&[
        "stream",
        "recv",
        "--stream",
        &stream.0,
        "--offset",
        "999",
        "--idle-timeout",
        "2s",
        "-o",
        "json",
    ]);
    assert_code(&output, 0);
    assert_eq!(json_messages(&output), expected("m", 999..1000));
}

#[test]
fn offset_next_sees_only_what_is_sent_after_it_starts() {
    let stream = TestStream::new("stream_next");
    send_lines(&stream.0, "old", 0..50);
    let mut reader = Running::spawn(&mut stream_rmqlab(&[
        "stream", "recv", "--stream", &stream.0, "--offset", "next", "--count", "3", "-o", "json",
    ]));
    reader.wait_for_stderr("Waiting for messages", WAIT);
    let output = run_stream(&["stream", "send", "--stream", &stream.0, "new"]);
    assert_code(&output, 0);
    let mut seen = Vec::new();
    for _ in 0..3 {
        if seen.len() == 2 {
            // The third after the first two arrived, to show they come as they are sent.
            let output = run_stream(&["stream", "send", "--stream", &stream.0, "newer"]);
            assert_code(&output, 0);
        } else if seen.len() == 1 {
            let output = run_stream(&["stream", "send", "--stream", &stream.0, "new"]);
            assert_code(&output, 0);
        }
        let line = reader.next_line(WAIT);
        let value: Value = serde_json::from_str(&line).unwrap();
        seen.push((
            value["offset"].as_u64().unwrap(),
            value["body"].as_str().unwrap().to_string(),
        ));
    }
    let (status, all, stderr) = reader.finish(WAIT);
    assert_eq!(status, Some(0), "{stderr}");
    assert_eq!(all.len(), 3, "nothing more: {all:?}");
    assert_eq!(
        seen,
        vec![
            (50, "new".to_string()),
            (51, "new".to_string()),
            (52, "newer".to_string())
        ]
    );
}

/// Milliseconds since the Unix epoch.
fn millis(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn a_timestamp_and_a_duration_ago_start_at_the_second_batch() {
    let stream = TestStream::new("stream_time");
    let before = SystemTime::now();
    send_lines(&stream.0, "a", 0..100);
    // The pause is the subject: the batches' chunks must carry different times.
    std::thread::sleep(Duration::from_millis(1500));
    let between = SystemTime::now();
    std::thread::sleep(Duration::from_millis(1500));
    send_lines(&stream.0, "b", 0..100);
    let after = SystemTime::now();
    let expected_b: Vec<(u64, String)> = (0..100).map(|n| (100 + n, format!("b{n}"))).collect();

    // Each message's JSON has its chunk's timestamp, which the broker wrote within its batch's
    // window, in both forms.
    let output = run_stream(&[
        "stream", "recv", "--stream", &stream.0, "--count", "200", "-o", "json",
    ]);
    assert_code(&output, 0);
    for line in text(&output.stdout).lines() {
        let value: Value = serde_json::from_str(line).unwrap();
        let stamp = value["timestamp_ms"].as_u64().expect(line);
        let window = match value["body"].as_str().unwrap().starts_with('a') {
            true => millis(before)..=millis(between),
            false => millis(between)..=millis(after) + 1,
        };
        assert!(window.contains(&stamp), "{window:?} holds {line}");
        let rfc3339 =
            humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH + Duration::from_millis(stamp))
                .to_string();
        assert_eq!(value["timestamp"], rfc3339.as_str(), "{line}");
        assert!(rfc3339.ends_with('Z') && rfc3339.len() == 24, "{rfc3339}");
    }
    assert_eq!(text(&output.stdout).lines().count(), 200);

    let rfc3339 = humantime::format_rfc3339_millis(between).to_string();
    let output = run_stream(&[
        "stream", "recv", "--stream", &stream.0, "--offset", &rfc3339, "--count", "100", "-o",
        "json",
    ]);
    assert_code(&output, 0);
    assert_eq!(json_messages(&output), expected_b, "--offset {rfc3339}");

    let ago = format!("{}ms", between.elapsed().unwrap().as_millis());
    let output = run_stream(&[
        "stream", "recv", "--stream", &stream.0, "--offset", &ago, "--count", "100", "-o", "json",
    ]);
    assert_code(&output, 0);
    assert_eq!(json_messages(&output), expected_b, "--offset {ago}");
}

#[test]
fn a_named_consumer_resumes_exactly_where_it_stopped() {
    let stream = TestStream::new("stream_tracking");
    send_lines(&stream.0, "m", 0..1000);
    let name = unique_name("consumer");
    let first = run_stream(&[
        "stream",
        "recv",
        "--stream",
        &stream.0,
        "--name",
        &name,
        "--count",
        "300",
        "-o",
        "json",
        "--store-every",
        "1000",
    ]);
    assert_code(&first, 0);
    assert_eq!(json_messages(&first), expected("m", 0..300));
    // The stored offset wins over --offset.
    let second = run_stream(&[
        "stream",
        "recv",
        "--stream",
        &stream.0,
        "--name",
        &name,
        "--offset",
        "first",
        "--idle-timeout",
        "2s",
        "-o",
        "json",
    ]);
    assert_code(&second, 0);
    assert_eq!(json_messages(&second), expected("m", 300..1000));
    // A third run has nothing left to read.
    let third = run_stream(&[
        "stream",
        "recv",
        "--stream",
        &stream.0,
        "--name",
        &name,
        "--idle-timeout",
        "2s",
        "-o",
        "json",
    ]);
    assert_code(&third, 0);
    assert_eq!(json_messages(&third), vec![]);
}

#[test]
fn a_named_consumer_killed_repeats_at_most_one_batch_and_skips_nothing() {
    let stream = TestStream::new("stream_kill");
    // Bodies of 1 KiB: the consumer blocks on a full stdout pipe while the test reads slowly,
    // so that it is killed in the middle of the stream.
    let pad = "x".repeat(1024);
    send_lines(&stream.0, &format!("{pad}-"), 0..1000);
    let name = unique_name("consumer");
    let mut reader = Running::spawn(&mut stream_rmqlab(&[
        "stream",
        "recv",
        "--stream",
        &stream.0,
        "--name",
        &name,
        "--store-every",
        "100",
        "-o",
        "body",
    ]));
    for n in 0..300 {
        assert_eq!(reader.next_line(WAIT), format!("{pad}-{n}"));
    }
    reader.signal("KILL");
    let (status, seen, _) = reader.finish_status(WAIT);
    assert_eq!(status.code(), None, "killed");
    let printed = seen.len() as u64;
    assert!(
        (300..1000).contains(&printed),
        "killed mid-stream: {printed} printed"
    );
    for (n, line) in seen.iter().enumerate() {
        assert_eq!(line, &format!("{pad}-{n}"));
    }
    let again = run_stream(&[
        "stream",
        "recv",
        "--stream",
        &stream.0,
        "--name",
        &name,
        "--idle-timeout",
        "2s",
        "-o",
        "json",
    ]);
    assert_code(&again, 0);
    let resumed = json_messages(&again);
    let start = resumed.first().expect("the rest is read").0;
    assert!(start <= printed, "skipped {start}..{printed}");
    assert!(
        printed - start <= 100,
        "repeated {} messages",
        printed - start
    );
    assert_eq!(
        resumed,
        expected(&format!("{pad}-"), start..1000),
        "consecutive to the end"
    );
}

#[test]
fn ctrl_c_stores_the_offset_and_ends_by_the_signal() {
    let stream = TestStream::new("stream_sigint");
    send_lines(&stream.0, "m", 0..10);
    let name = unique_name("consumer");
    let mut reader = Running::spawn(&mut stream_rmqlab(&[
        "stream", "recv", "--stream", &stream.0, "--name", &name, "-o", "body",
    ]));
    for n in 0..10 {
        assert_eq!(reader.next_line(WAIT), format!("m{n}"));
    }
    reader.signal("INT");
    let (status, _, stderr) = reader.finish_status(WAIT);
    crate::common::assert_ended_by(&status, "INT", &stderr);
    send_lines(&stream.0, "n", 0..5);
    let again = run_stream(&[
        "stream",
        "recv",
        "--stream",
        &stream.0,
        "--name",
        &name,
        "--idle-timeout",
        "2s",
        "-o",
        "json",
    ]);
    assert_code(&again, 0);
    // The stored offset is kept in the stream's log itself (a tracking chunk takes an offset):
    // the new messages come after it, in order, and nothing of the first ten again.
    let resumed = json_messages(&again);
    let bodies: Vec<&str> = resumed.iter().map(|(_, body)| body.as_str()).collect();
    assert_eq!(bodies, ["n0", "n1", "n2", "n3", "n4"]);
    let first = resumed[0].0;
    assert!(first >= 10, "{resumed:?}");
    let offsets: Vec<u64> = resumed.iter().map(|(offset, _)| *offset).collect();
    assert_eq!(offsets, (first..first + 5).collect::<Vec<_>>());
}

#[test]
fn a_broker_without_streams_and_a_closed_port_say_what_to_do() {
    // An AMQP port (the 3.10 node's): the broker closes the stream handshake at once, as 3.10
    // does at the client's ExchangeCommandVersions.
    let output = run_stream(&[
        "--stream-url",
        "rabbitmq-stream://guest:guest@127.0.0.1:5672/%2f",
        "stream",
        "send",
    ]);
    assert_code(&output, 69);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("closed the stream connection"), "{stderr}");
    assert!(stderr.contains("needs RabbitMQ 3.11 or later"), "{stderr}");
    assert!(output.stdout.is_empty());

    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("rabbitmq-stream://guest:guest@127.0.0.1:{port}/%2f");
    let output = run_stream(&["--stream-url", &url, "stream", "recv"]);
    assert_code(&output, 69);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("cannot reach the stream protocol"),
        "{stderr}"
    );
    assert!(
        stderr.contains("rabbitmq-plugins enable rabbitmq_stream"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("guest:guest"),
        "the password is masked: {stderr}"
    );
}

#[test]
fn a_name_that_is_a_queue_is_a_data_error_and_the_queue_is_untouched() {
    let queue = unique_name("stream_classic");
    let output = {
        let mut command = stream_rmqlab(&[
            "hello",
            "send",
            "--queue",
            &queue,
            "--queue-type",
            "classic",
            "kept",
        ]);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        crate::common::wait_output(command.spawn().unwrap(), WAIT)
    };
    assert_code(&output, 0);
    for verb in ["send", "recv"] {
        let output = run_stream(&["stream", verb, "--stream", &queue]);
        assert_code(&output, 65);
        assert!(
            text(&output.stderr).contains("is a queue of another type, not a stream"),
            "{}",
            text(&output.stderr)
        );
    }
    // The queue still holds its one message: get it back, then delete the queue.
    let output = {
        let mut command = stream_rmqlab(&[
            "hello",
            "recv",
            "--queue",
            &queue,
            "--queue-type",
            "classic",
            "--count",
            "1",
            "-o",
            "body",
        ]);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        crate::common::wait_output(command.spawn().unwrap(), WAIT)
    };
    assert_code(&output, 0);
    assert_eq!(text(&output.stdout), "kept\n");
    broker::block_on(async move {
        let connection = lapin::Connection::connect(&amqp_url(), Default::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let _ = channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await;
        let _ = connection.close(200, "OK".into()).await;
    });
}

#[test]
fn bad_offset_syntax_is_a_usage_error() {
    let output = run_stream(&["stream", "recv", "--offset", "yesterday-ish"]);
    assert_code(&output, 2);
    assert!(text(&output.stderr).contains("is not an offset"));
    assert!(output.stdout.is_empty());
}

/// A TCP proxy to the stream port whose connections the test can cut, as a network failure
/// would, without touching the shared node.
struct CuttableProxy {
    port: u16,
    connections: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl CuttableProxy {
    fn start(upstream: String) -> CuttableProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = connections.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                kept.lock().unwrap().push(client.try_clone().unwrap());
                kept.lock().unwrap().push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        CuttableProxy { port, connections }
    }

    /// Cuts every connection made so far; new ones still go through.
    fn cut(&self) {
        for connection in self.connections.lock().unwrap().drain(..) {
            let _ = connection.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[test]
fn a_lost_connection_resumes_after_the_last_offset_seen() {
    let stream = TestStream::new("stream_reconnect");
    send_lines(&stream.0, "a", 0..100);
    let url = StreamUrl::parse(&stream_url()).unwrap();
    let proxy = CuttableProxy::start(format!("{}:{}", url.host, url.port));
    let through_proxy = format!(
        "rabbitmq-stream://{}:{}@127.0.0.1:{}/%2f",
        url.user, url.password, proxy.port
    );
    let mut reader = Running::spawn(&mut stream_rmqlab(&[
        "--stream-url",
        &through_proxy,
        "stream",
        "recv",
        "--stream",
        &stream.0,
        "--count",
        "200",
        "-o",
        "json",
    ]));
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen.push(reader.next_line(WAIT));
    }
    proxy.cut();
    reader.wait_for_stderr("Lost the stream connection", WAIT);
    send_lines(&stream.0, "b", 0..100);
    reader.wait_for_stderr("Reconnected: reading on from offset 100", WAIT);
    for _ in 0..100 {
        seen.push(reader.next_line(WAIT));
    }
    let (status, _, stderr) = reader.finish(WAIT);
    assert_eq!(status, Some(0), "{stderr}");
    let messages: Vec<(u64, String)> = seen
        .iter()
        .map(|line| {
            let value: Value = serde_json::from_str(line).unwrap();
            (
                value["offset"].as_u64().unwrap(),
                value["body"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut wanted = expected("a", 0..100);
    wanted.extend((0..100).map(|n| (100 + n, format!("b{n}"))));
    assert_eq!(messages, wanted, "nothing skipped, nothing repeated");
}

#[test]
fn info_shows_the_offsets_and_what_named_consumers_stored() {
    let stream = TestStream::new("stream_info");
    send_lines(&stream.0, "m", 0..1000);
    let name = unique_name("consumer");
    let read = run_stream(&[
        "stream", "recv", "--stream", &stream.0, "--name", &name, "--count", "300", "-o", "body",
    ]);
    assert_code(&read, 0);
    let output = run_stream(&[
        "stream", "info", &stream.0, "--name", &name, "--name", "nobody",
    ]);
    assert_code(&output, 0);
    let shown = text(&output.stdout);
    assert!(shown.contains("first offset: 0\n"), "{shown}");
    assert!(
        shown.contains("last offset:  999 (last message of the last chunk)\n"),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("consumer '{name}': stored offset 299\n")),
        "{shown}"
    );
    assert!(
        shown.contains("consumer 'nobody': no stored offset\n"),
        "{shown}"
    );
    // Reading for info took nothing and stored nothing: the consumer goes on at 300.
    let again = run_stream(&[
        "stream", "recv", "--stream", &stream.0, "--name", &name, "--count", "1", "-o", "json",
    ]);
    assert_code(&again, 0);
    assert_eq!(json_messages(&again), expected("m", 300..301));

    let missing = run_stream(&["stream", "info", &unique_name("stream_missing")]);
    assert_code(&missing, 65);
    assert!(text(&missing.stderr).contains("does not exist"));
}

#[test]
fn an_existing_stream_with_other_retention_is_used_as_it_is() {
    let stream = TestStream::new("stream_retention");
    let output = run_stream(&[
        "stream",
        "send",
        "--stream",
        &stream.0,
        "--max-length-bytes",
        "2GB",
        "--max-age",
        "7d",
        "first",
    ]);
    assert_code(&output, 0);
    // The defaults (5GB, no max age) differ: the broker refuses the creation, rmqlab adopts it.
    let output = run_stream(&["stream", "send", "--stream", &stream.0, "second"]);
    assert_code(&output, 0);
    let output = run_stream(&[
        "stream", "recv", "--stream", &stream.0, "--count", "2", "-o", "json",
    ]);
    assert_code(&output, 0);
    assert_eq!(
        json_messages(&output),
        vec![(0, "first".to_string()), (1, "second".to_string())]
    );
}

/// `stream` commands read the `--broker` section as the others do: its `stream_url`, with the
/// section's user and password filled in, over RMQLAB_STREAM_URL (which leads nowhere here).
#[test]
fn a_broker_section_gives_the_stream_url_and_credentials() {
    let s = TestStream::new("stream-section");
    let dir = scratch_dir();
    let path = dir.path().join("config.toml");
    let host_and_port = |raw: String| {
        let url = url::Url::parse(&raw).unwrap();
        format!("{}:{}", url.host_str().unwrap(), url.port().unwrap())
    };
    let stream = StreamUrl::parse(&stream_url()).unwrap();
    std::fs::write(
        &path,
        format!(
            "[broker.streams]\nurl = \"amqp://{}\"\nstream_url = \"rabbitmq-stream://{}\"\n\
             user = \"{}\"\npassword = \"{}\"\n",
            host_and_port(amqp_url()),
            host_and_port(stream_url()),
            stream.user,
            stream.password,
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        rmqlab()
            .env("RMQLAB_URL", "amqp://127.0.0.1:1")
            .env("RMQLAB_STREAM_URL", "rabbitmq-stream://127.0.0.1:1")
            .arg("--config")
            .arg(&path)
            .args(["--broker", "streams"])
            .args(args)
            .output()
            .unwrap()
    };
    let output = run(&["stream", "send", "--stream", &s.0, "through the section"]);
    assert_code(&output, 0);
    let output = run(&[
        "stream", "recv", "--stream", &s.0, "--count", "1", "-o", "body",
    ]);
    assert_code(&output, 0);
    assert_eq!(text(&output.stdout), "through the section\n");
}
