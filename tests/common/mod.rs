//! Test harness: runs the rmqlab binary against the live broker, with a unique queue per test and
//! cleanup after. A missing broker fails the tests loudly; nothing is skipped.
#![allow(dead_code)]

use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    message::BasicGetMessage,
    options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::FieldTable,
};
use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

/// The broker every test uses: RMQLAB_TEST_URL, or the local default.
pub fn broker_url() -> String {
    std::env::var("RMQLAB_TEST_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A name no other test (or earlier run) uses: `rmqlab.test.<test>.<pid>.<n>`.
pub fn unique_name(test: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "rmqlab.test.{test}.{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The rmqlab binary, pointed at the test broker, with no user configuration leaking in.
pub fn rmqlab() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rmqlab"));
    command
        .env_remove("AMQP_URL")
        .env_remove("RMQLAB_API_URL")
        .env_remove("RUST_LOG")
        .env("RMQLAB_URL", broker_url())
        .stdin(Stdio::null());
    command
}

/// Runs rmqlab with `args`, `stdin` fed to it, and returns what it printed and its exit code.
pub fn run(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut command = rmqlab();
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if stdin.is_some() {
        command.stdin(Stdio::piped());
    }
    let mut child = command.spawn().expect("run rmqlab");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_vec();
        thread::spawn(move || pipe.write_all(&input));
    }
    wait_output(child, Duration::from_secs(60))
}

/// [`run`] with the arguments given as one line, split at spaces (no quoting).
pub fn rmq(line: &str, stdin: Option<&[u8]>) -> Output {
    run(&line.split_whitespace().collect::<Vec<_>>(), stdin)
}

/// Waits for a child with a deadline (reading its output meanwhile, so that a full pipe never
/// stalls it), killing it and failing the test past the deadline.
pub fn wait_output(child: Child, limit: Duration) -> Output {
    let pid = child.id();
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || sender.send(child.wait_with_output()));
    match receiver.recv_timeout(limit) {
        Ok(output) => output.expect("collect rmqlab's output"),
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            let output = receiver.recv().unwrap().expect("collect rmqlab's output");
            panic!(
                "rmqlab did not finish within {limit:?}\nstdout: {}\nstderr: {}",
                text(&output.stdout),
                text(&output.stderr)
            );
        }
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn code(output: &Output) -> i32 {
    output.status.code().expect("rmqlab ended by a signal")
}

/// Asserts the exit code, showing both streams when it differs.
pub fn assert_code(output: &Output, expected: i32) {
    assert_eq!(
        code(output),
        expected,
        "stdout: {}\nstderr: {}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// A running rmqlab whose stdout lines can be awaited one by one.
pub struct Running {
    pub child: Option<Child>,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    pub fn start(args: &[&str]) -> Running {
        Running::spawn(rmqlab().args(args))
    }

    /// [`Running::start`] with a pipe to its stdin.
    pub fn start_with_stdin(args: &[&str]) -> (Running, std::process::ChildStdin) {
        let mut running = Running::spawn(rmqlab().args(args).stdin(Stdio::piped()));
        let stdin = running.child.as_mut().unwrap().stdin.take().unwrap();
        (running, stdin)
    }

    fn spawn(command: &mut Command) -> Running {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rmqlab");
        let stdout = child.stdout.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut stderr_pipe = child.stderr.take().unwrap();
        let stderr_sink = stderr.clone();
        thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = std::io::Read::read(&mut stderr_pipe, &mut chunk) {
                stderr_sink.lock().unwrap().push_str(&text(&chunk[..n]));
            }
        });
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child: Some(child),
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// Waits until stderr contains `needle`, and returns stderr so far.
    pub fn wait_for_stderr(&self, needle: &str, limit: Duration) -> String {
        eventually(limit, &format!("'{needle}' on stderr"), || {
            self.stderr.lock().unwrap().contains(needle)
        });
        self.stderr.lock().unwrap().clone()
    }

    /// [`Running::start`] with the arguments given as one line, split at spaces.
    pub fn start_line(line: &str) -> Running {
        Running::start(&line.split_whitespace().collect::<Vec<_>>())
    }

    /// The next stdout line, waiting up to `limit`.
    pub fn next_line(&mut self, limit: Duration) -> String {
        let line = self
            .lines
            .recv_timeout(limit)
            .unwrap_or_else(|_| panic!("no stdout line within {limit:?}; saw {:?}", self.seen));
        self.seen.push(line.clone());
        line
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.as_ref().expect("running").id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the end; returns the exit code (None when killed), the remaining stdout lines
    /// and stderr.
    pub fn finish(mut self, limit: Duration) -> (Option<i32>, Vec<String>, String) {
        let output = wait_output(self.child.take().expect("running"), limit);
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(line);
        }
        // Let the stderr reader catch up with the end of the pipe.
        thread::sleep(Duration::from_millis(50));
        let stderr = self.stderr.lock().unwrap().clone();
        (output.status.code(), std::mem::take(&mut self.seen), stderr)
    }
}

impl Drop for Running {
    /// A test that failed half-way must not leave rmqlab running.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `condition` every 100 ms until it holds, failing after `limit`.
pub fn eventually(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Direct access to the broker with lapin, for setting up and checking what rmqlab did.
pub mod broker {
    use super::*;

    pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    pub async fn connect() -> Connection {
        let url = broker_url();
        match Connection::connect(&url, ConnectionProperties::default()).await {
            Ok(connection) => connection,
            Err(error) => panic!(
                "\n\nNO RABBITMQ BROKER at {url}: {error}\n\
                 These tests need a live broker: run scripts/broker-up (or scripts/test).\n\n"
            ),
        }
    }

    /// (ready messages, consumers) of a queue, or None when it does not exist.
    pub fn queue_state(queue: &str) -> Option<(u32, u32)> {
        match passive_declare(queue) {
            Ok(state) => Some(state),
            Err(404) => None,
            Err(code) => panic!("cannot inspect queue {queue}: reply code {code}"),
        }
    }

    /// Whether a queue exists, exclusive queues of other connections included.
    pub fn exists(queue: &str) -> bool {
        match passive_declare(queue) {
            Ok(_) => true,
            Err(404) => false,
            // RESOURCE_LOCKED: it exists, as another connection's exclusive queue.
            Err(405) => true,
            Err(code) => panic!("cannot inspect queue {queue}: reply code {code}"),
        }
    }

    fn passive_declare(queue: &str) -> Result<(u32, u32), u16> {
        block_on(async {
            let connection = connect().await;
            let channel = connection.create_channel().await.unwrap();
            let options = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            let state = channel
                .queue_declare(queue.into(), options, FieldTable::default())
                .await
                .map(|q| (q.message_count(), q.consumer_count()))
                .map_err(|error| match error.kind() {
                    lapin::ErrorKind::ProtocolError(amqp) => amqp.get_id(),
                    _ => panic!("cannot inspect queue {queue}: {error}"),
                });
            let _ = connection.close(200, "OK".into()).await;
            state
        })
    }

    pub fn ready(queue: &str) -> u32 {
        queue_state(queue)
            .unwrap_or_else(|| panic!("queue {queue} does not exist"))
            .0
    }

    /// Declares a queue with the given durability, for tests that need one rmqlab did not make.
    pub fn declare(queue: &str, durable: bool) -> Result<(), lapin::Error> {
        block_on(async {
            let connection = connect().await;
            let channel = connection.create_channel().await.unwrap();
            let options = QueueDeclareOptions {
                durable,
                ..QueueDeclareOptions::default()
            };
            let result = channel
                .queue_declare(queue.into(), options, FieldTable::default())
                .await
                .map(|_| ());
            let _ = connection.close(200, "OK".into()).await;
            result
        })
    }

    /// Declares `queue` durable (as rmqlab does) and publishes persistent messages to it.
    pub fn publish(queue: &str, bodies: &[&str]) {
        declare(queue, true).expect("declare the test queue");
        block_on(async {
            let connection = connect().await;
            let channel = connection.create_channel().await.unwrap();
            channel.confirm_select(Default::default()).await.unwrap();
            for body in bodies {
                channel
                    .basic_publish(
                        "".into(),
                        queue.into(),
                        BasicPublishOptions::default(),
                        body.as_bytes(),
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
            let _ = connection.close(200, "OK".into()).await;
        })
    }

    /// Takes one message (acked), or None when the queue is empty.
    pub fn get(queue: &str) -> Option<BasicGetMessage> {
        block_on(async {
            let connection = connect().await;
            let channel = connection.create_channel().await.unwrap();
            let message = channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap();
            let _ = connection.close(200, "OK".into()).await;
            message
        })
    }

    pub fn delete_exchange(exchange: &str) {
        block_on(async {
            let connection = connect().await;
            let channel = connection.create_channel().await.unwrap();
            let _ = channel
                .exchange_delete(exchange.into(), Default::default())
                .await;
            let _ = connection.close(200, "OK".into()).await;
        })
    }

    pub fn delete(queue: &str) {
        block_on(async {
            let connection = connect().await;
            let channel = connection.create_channel().await.unwrap();
            let _ = channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await;
            let _ = connection.close(200, "OK".into()).await;
        })
    }
}

/// A queue name for one test, deleted before use and when the test ends (even on failure).
pub struct TestQueue(pub String);

impl TestQueue {
    pub fn new(test: &str) -> TestQueue {
        let name = unique_name(test);
        broker::delete(&name);
        TestQueue(name)
    }

    pub fn name(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TestQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        let name = self.0.clone();
        // Drop may run inside a panicking test: do the cleanup on a thread of its own.
        let _ = thread::spawn(move || broker::delete(&name)).join();
    }
}

/// An exchange name for one test, deleted when the test ends.
pub struct TestExchange(pub String);

impl TestExchange {
    pub fn new(test: &str) -> TestExchange {
        let name = unique_name(test);
        broker::delete_exchange(&name);
        TestExchange(name)
    }
}

impl std::fmt::Display for TestExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Drop for TestExchange {
    fn drop(&mut self) {
        let name = self.0.clone();
        let _ = thread::spawn(move || broker::delete_exchange(&name)).join();
    }
}

/// Runs `rabbitmqctl` with `args` and returns its stdout.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("run rabbitmqctl (the tests need it to inspect the broker)");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        text(&output.stderr)
    );
    text(&output.stdout)
}
