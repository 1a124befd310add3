//! Test harness: runs the rmqlab binary against the live broker, with a unique queue per test and
//! cleanup after. A missing broker fails the tests loudly; nothing is skipped.
//!
//! The broker under test comes from the environment of `cargo test`:
//! - `RMQLAB_TEST_URL`: its AMQP URL (default `amqp://guest:guest@127.0.0.1:5672/%2f`);
//! - `RMQLAB_TEST_API_URL`: its management API. Unset, rmqlab gets no `RMQLAB_API_URL` and derives
//!   `http://<host of the URL>:15672` itself, and the harness's own API calls go to
//!   `http://127.0.0.1:15672`. Credentials come from the URL, or else from `RMQLAB_TEST_URL`, as
//!   rmqlab takes them;
//! - `RMQLAB_TEST_CTL`: the command that inspects it (default `rabbitmqctl`), split on whitespace
//!   so that it may carry arguments, e.g. `rabbitmqctl -n rmq4@localhost`.
//!
//! Every rmqlab a test starts, directly or through a shell, gets none of the caller's variables
//! that rmqlab reads (every `RMQLAB_*`, `NO_COLOR`, `AMQP_URL`, `RUST_LOG`), then `RMQLAB_URL`
//! (and `RMQLAB_API_URL`) of the broker under test: see [`command`].
#![allow(dead_code)]

use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    message::BasicGetMessage,
    options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::FieldTable,
};
use std::{
    ffi::OsStr,
    io::{BufRead, BufReader, Write},
    os::unix::process::ExitStatusExt,
    process::ExitStatus,
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

/// A variable of the test run's environment, when set and not empty.
fn setting(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

/// The broker every test uses: RMQLAB_TEST_URL, or the local default.
pub fn broker_url() -> String {
    setting("RMQLAB_TEST_URL").unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// `host:port` of the broker under test, for tests that build URLs of their own (another user,
/// password or vhost on the same broker).
pub fn broker_address() -> String {
    let url = url::Url::parse(&broker_url()).expect("RMQLAB_TEST_URL is a URL");
    let host = url.host_str().expect("RMQLAB_TEST_URL names a host");
    format!("{host}:{}", broker_port())
}

/// The AMQP port of the broker under test.
pub fn broker_port() -> u16 {
    let url = url::Url::parse(&broker_url()).expect("RMQLAB_TEST_URL is a URL");
    let default_port = if url.scheme() == "amqps" { 5671 } else { 5672 };
    url.port().unwrap_or(default_port)
}

/// RMQLAB_TEST_API_URL, given to rmqlab as RMQLAB_API_URL; None lets rmqlab derive it.
pub fn test_api_url() -> Option<String> {
    setting("RMQLAB_TEST_API_URL")
}

/// The management API of the broker under test, without credentials and without a trailing
/// `/`: RMQLAB_TEST_API_URL, or `http://127.0.0.1:15672`.
pub fn api_base() -> String {
    let (base, _) = api_base_and_credentials();
    base
}

/// [`api_base`] with the given user and password in it, as a `--api-url` / RMQLAB_API_URL.
pub fn api_url_with(user: &str, password: &str) -> String {
    let mut url = url::Url::parse(&api_base()).expect("the API URL is a URL");
    url.set_username(user).unwrap();
    url.set_password(Some(password)).unwrap();
    url.to_string()
}

/// (base, `user:password`) of the API: the credentials of RMQLAB_TEST_API_URL, else those of
/// RMQLAB_TEST_URL (as rmqlab does), else guest's.
fn api_base_and_credentials() -> (String, String) {
    let raw = test_api_url().unwrap_or_else(|| "http://127.0.0.1:15672".into());
    let mut url = url::Url::parse(&raw)
        .unwrap_or_else(|error| panic!("RMQLAB_TEST_API_URL {raw:?} is not a URL: {error}"));
    let source = match url.username() {
        "" => url::Url::parse(&broker_url()).expect("RMQLAB_TEST_URL is a URL"),
        _ => url.clone(),
    };
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8_lossy()
            .into_owned()
    };
    let user = match source.username() {
        "" => "guest".to_string(),
        user => decode(user),
    };
    let password = source
        .password()
        .map_or_else(|| "guest".to_string(), decode);
    url.set_username("").unwrap();
    url.set_password(None).unwrap();
    let base = url.as_str().trim_end_matches('/').to_string();
    (base, format!("{user}:{password}"))
}

/// Calls the management API with curl (`method` on `path`, which starts with `/api/`) and
/// returns the response body, failing the test on an HTTP error.
pub fn management_api(method: &str, path: &str) -> String {
    let (base, credentials) = api_base_and_credentials();
    let output = Command::new("curl")
        .args(["-sf", "-u", &credentials, "-X", method])
        .arg(format!("{base}{path}"))
        .output()
        .expect("run curl (the tests need it to call the management API)");
    assert!(
        output.status.success(),
        "curl -X {method} {base}{path}: {}",
        text(&output.stderr)
    );
    text(&output.stdout)
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

/// The rmqlab binary the tests run.
pub const BIN: &str = env!("CARGO_BIN_EXE_rmqlab");

/// `program` with the environment of every rmqlab a test starts, whether `program` is rmqlab or a
/// shell (or `script`) that starts it: without any variable of the caller's that rmqlab reads
/// (every `RMQLAB_*`, `NO_COLOR`, `AMQP_URL`, `RUST_LOG`; XDG_CONFIG_HOME points nowhere, so
/// no config file of the user's is read), then with `RMQLAB_URL` of the broker
/// under test and, when RMQLAB_TEST_API_URL is set, `RMQLAB_API_URL`. A test may still set any
/// of them afterwards.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        if name.as_encoded_bytes().starts_with(b"RMQLAB_") {
            command.env_remove(name);
        }
    }
    for name in ["NO_COLOR", "AMQP_URL", "RUST_LOG"] {
        command.env_remove(name);
    }
    // The user's own config file (named brokers) stays out of the tests.
    command.env("XDG_CONFIG_HOME", "/nonexistent/rmqlab-test-config");
    command.env("RMQLAB_URL", broker_url());
    if let Some(api) = test_api_url() {
        command.env("RMQLAB_API_URL", api);
    }
    command
}

/// The rmqlab binary, pointed at the test broker, with no user configuration leaking in.
pub fn rmqlab() -> Command {
    let mut command = command(BIN);
    command.stdin(Stdio::null());
    command
}

/// A scratch directory for one test's files, removed when dropped (even on failure).
pub fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("rmqlab-test.")
        .tempdir()
        .expect("make a temporary directory")
}

/// A file of lines `PREFIX0`, `PREFIX1`... for `range`, in a scratch directory that goes when
/// dropped.
pub fn lines_file(
    prefix: &str,
    range: std::ops::Range<u64>,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = scratch_dir();
    let path = dir.path().join("lines");
    let lines: String = range.map(|n| format!("{prefix}{n}\n")).collect();
    std::fs::write(&path, lines).unwrap();
    (dir, path)
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

/// Asserts that neither stream of `output` shows `secret` (a password).
pub fn assert_hidden(output: &Output, secret: &str) {
    for stream in [&output.stdout, &output.stderr] {
        assert!(
            !text(stream).contains(secret),
            "the password leaked: {}",
            text(stream)
        );
    }
}

/// Asserts a refused login of `guest`: 77, the reason, the hint, and `secret` never shown.
pub fn assert_login_refused(output: &Output, secret: &str) {
    assert_code(output, 77);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("refused the login of user 'guest'"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: check the user and password"),
        "{stderr}"
    );
    assert_hidden(output, secret);
}

/// A running rmqlab whose stdout lines can be awaited one by one.
pub struct Running {
    pub child: Option<Child>,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
    /// Disconnected once the stderr reader has seen the end of the pipe.
    stderr_done: mpsc::Receiver<()>,
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

    /// Starts any program (an official tutorial program, say) with its stdout lines awaitable.
    pub fn spawn(command: &mut Command) -> Running {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rmqlab");
        let stdout = child.stdout.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut stderr_pipe = child.stderr.take().unwrap();
        let stderr_sink = stderr.clone();
        let (stderr_end, stderr_done) = mpsc::channel::<()>();
        thread::spawn(move || {
            let _end = stderr_end;
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
            stderr_done,
        }
    }

    /// Waits until stderr contains `needle`, and returns stderr so far.
    pub fn wait_for_stderr(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let stderr = self.stderr.lock().unwrap().clone();
            if stderr.contains(needle) {
                return stderr;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?}: '{needle}' on stderr; stderr so far:\n{stderr}"
            );
            thread::sleep(Duration::from_millis(50));
        }
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

    /// The next stdout line if one comes within `limit`.
    pub fn try_next_line(&mut self, limit: Duration) -> Option<String> {
        let line = self.lines.recv_timeout(limit).ok()?;
        self.seen.push(line.clone());
        Some(line)
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.as_ref().expect("running").id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the end; returns the exit code (None when ended by a signal), the remaining
    /// stdout lines and stderr.
    pub fn finish(self, limit: Duration) -> (Option<i32>, Vec<String>, String) {
        let (status, lines, stderr) = self.finish_status(limit);
        (status.code(), lines, stderr)
    }

    /// [`Running::finish`] with the whole exit status, to see a signal.
    pub fn finish_status(mut self, limit: Duration) -> (ExitStatus, Vec<String>, String) {
        let output = wait_output(self.child.take().expect("running"), limit);
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(line);
        }
        // Let the stderr reader reach the end of the pipe (it hangs up then).
        let _ = self.stderr_done.recv_timeout(limit);
        let stderr = self.stderr.lock().unwrap().clone();
        (output.status, std::mem::take(&mut self.seen), stderr)
    }
}

/// Asserts that rmqlab ended by `signal` (`INT`, `TERM`) itself, after its clean shutdown, as a
/// well-behaved tool does: the shell then reports 128 + the signal's number.
pub fn assert_ended_by(status: &ExitStatus, signal: &str, stderr: &str) {
    let number = match signal {
        "INT" => 2,
        "TERM" => 15,
        other => panic!("no such stop signal in the tests: {other}"),
    };
    assert_eq!(
        (status.code(), status.signal()),
        (None, Some(number)),
        "rmqlab should end by SIG{signal}; stderr: {stderr}"
    );
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

    /// Declares a queue as rmqlab creates one, and as the official tutorial programs declare
    /// theirs: durable, `x-queue-type: quorum`.
    pub fn declare_quorum(queue: &str) {
        declare_typed(queue, "quorum");
    }

    /// Declares a durable queue of a type (`x-queue-type`: classic, quorum or stream).
    pub fn declare_typed(queue: &str, kind: &str) {
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-queue-type".into(),
            lapin::types::AMQPValue::LongString(kind.into()),
        );
        declare_durable(queue, arguments);
    }

    /// Declares a durable queue with these arguments (a dead-letter exchange, a length limit...).
    pub fn declare_durable(queue: &str, arguments: FieldTable) {
        block_on(async {
            let connection = connect().await;
            let channel = connection.create_channel().await.unwrap();
            let options = QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            };
            channel
                .queue_declare(queue.into(), options, arguments)
                .await
                .unwrap_or_else(|error| panic!("declare queue {queue}: {error}"));
            let _ = connection.close(200, "OK".into()).await;
        });
    }

    /// Publishes persistent messages to `queue`, declaring it first as rmqlab would when it does
    /// not exist.
    pub fn publish(queue: &str, bodies: &[&str]) {
        if queue_state(queue).is_none() {
            declare_quorum(queue);
        }
        publish_with(
            queue,
            bodies,
            BasicProperties::default().with_delivery_mode(2),
        );
    }

    /// Publishes each body with `properties` to `queue` through the default exchange, each
    /// confirmed.
    pub fn publish_with(queue: &str, bodies: &[&str], properties: BasicProperties) {
        block_on(async {
            let connection = connect().await;
            let channel = connection.create_channel().await.unwrap();
            channel.confirm_select(Default::default()).await.unwrap();
            let mut confirms = Vec::with_capacity(bodies.len());
            for body in bodies {
                let confirm = channel
                    .basic_publish(
                        "".into(),
                        queue.into(),
                        BasicPublishOptions::default(),
                        body.as_bytes(),
                        properties.clone(),
                    )
                    .await
                    .unwrap();
                confirms.push(confirm);
            }
            for confirm in confirms {
                assert!(
                    confirm.await.unwrap().is_ack(),
                    "the broker nacked a message"
                );
            }
            let _ = connection.close(200, "OK".into()).await;
        })
    }

    /// Publishes one message with exactly these properties through `exchange` with `key`,
    /// confirmed and mandatory (a message no queue takes fails the test).
    pub fn publish_message(exchange: &str, key: &str, body: &[u8], properties: BasicProperties) {
        block_on(async {
            let connection = connect().await;
            let channel = connection.create_channel().await.unwrap();
            channel.confirm_select(Default::default()).await.unwrap();
            let options = BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            };
            let confirmation = channel
                .basic_publish(exchange.into(), key.into(), options, body, properties)
                .await
                .unwrap()
                .await
                .unwrap();
            assert!(
                confirmation.is_ack() && confirmation.take_message().is_none(),
                "the broker did not take the message for '{key}'"
            );
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

    /// Takes every message of a queue (acked), on one connection, in order.
    pub fn drain(queue: &str) -> Vec<lapin::message::Delivery> {
        block_on(async {
            let connection = connect().await;
            let channel = connection.create_channel().await.unwrap();
            let mut all = Vec::new();
            while let Some(message) = channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                all.push(message.delivery);
            }
            let _ = connection.close(200, "OK".into()).await;
            all
        })
    }

    /// Whether an exchange exists.
    pub fn exchange_exists(exchange: &str) -> bool {
        block_on(async {
            let connection = connect().await;
            let channel = connection.create_channel().await.unwrap();
            let options = lapin::options::ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            };
            let declared = channel
                .exchange_declare(
                    exchange.into(),
                    lapin::ExchangeKind::Topic,
                    options,
                    FieldTable::default(),
                )
                .await;
            let _ = connection.close(200, "OK".into()).await;
            match declared {
                Ok(()) => true,
                Err(error) => match error.kind() {
                    lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404 => false,
                    _ => panic!("cannot inspect exchange {exchange}: {error}"),
                },
            }
        })
    }

    /// Binds `queue` to `exchange` with `key`.
    pub fn bind(queue: &str, exchange: &str, key: &str) {
        block_on(async {
            let connection = connect().await;
            let channel = connection.create_channel().await.unwrap();
            channel
                .queue_bind(
                    queue.into(),
                    exchange.into(),
                    key.into(),
                    Default::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap_or_else(|error| panic!("bind {queue} to {exchange} ({key}): {error}"));
            let _ = connection.close(200, "OK".into()).await;
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

/// The rabbitmqctl of the broker under test with `args`: RMQLAB_TEST_CTL (default
/// `rabbitmqctl`), split on whitespace. Every rabbitmqctl the tests run is made here.
pub fn rabbitmqctl_command(args: &[&str]) -> Command {
    let ctl = setting("RMQLAB_TEST_CTL").unwrap_or_else(|| "rabbitmqctl".into());
    let mut words = ctl.split_whitespace();
    let mut command = Command::new(words.next().expect("RMQLAB_TEST_CTL is not blank"));
    command.args(words).args(args);
    command
}

/// Runs [`rabbitmqctl_command`] with `args` and returns its stdout, failing the test when it
/// fails.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let output = rabbitmqctl_command(args).output().unwrap_or_else(|error| {
        panic!("run rabbitmqctl (the tests need it to inspect the broker): {error}")
    });
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// Runs [`rabbitmqctl_command`] with `args` for a cleanup, which must not fail the test (it may
/// run while one unwinds); returns whether it succeeded.
pub fn rabbitmqctl_cleanup(args: &[&str]) -> bool {
    rabbitmqctl_command(args)
        .output()
        .is_ok_and(|output| output.status.success())
}

/// The machine's rabbitmqctl for the node `node` (a node of a test's own, or of the cluster of
/// `scripts/cluster-up`), with `args`.
pub fn rabbitmqctl_on_command(node: &str, args: &[&str]) -> Command {
    let mut command = Command::new("rabbitmqctl");
    command.args(["-n", node]).args(args);
    command
}

/// Runs [`rabbitmqctl_on_command`], failing the test when it fails; returns its stdout.
pub fn rabbitmqctl_on(node: &str, args: &[&str]) -> String {
    let output = rabbitmqctl_on_command(node, args)
        .output()
        .unwrap_or_else(|error| panic!("run rabbitmqctl (the tests need it): {error}"));
    assert!(
        output.status.success(),
        "rabbitmqctl -n {node} {args:?} failed: {}",
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// A RabbitMQ node of one test's own, for the faults that must never touch the shared nodes
/// (a resource alarm, a restart): under its own node name, ports and directories, run as the
/// `rabbitmq` user (whose home holds the Erlang cookie the CLI tools share). [`OwnNode::start`]
/// runs the machine's RabbitMQ (3.x) with no plugins; [`OwnNode::start_v4`] the RabbitMQ 4 of
/// `scripts/broker-up --v4` with the stream plugin. Stopped, and its directories removed, when
/// dropped.
pub struct OwnNode {
    pub name: String,
    pub port: u16,
    /// The stream protocol's port (RabbitMQ 4 only).
    pub stream_port: Option<u16>,
    /// The RabbitMQ 4 tree, when the node runs it.
    v4: Option<V4>,
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
}

/// The machine's RabbitMQ server script, run directly (the wrapper in /usr/sbin would read the
/// machine's environment file, which names the shared node).
const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/// Where `scripts/broker-up --v4` extracted RabbitMQ 4 and its Erlang.
const V4_DIR: &str = "/var/cache/rmqlab-v4";

/// The RabbitMQ 4 tree: its programs and plugins.
#[derive(Clone)]
struct V4 {
    bin: std::path::PathBuf,
    erlang_bin: std::path::PathBuf,
    plugins: std::path::PathBuf,
}

impl V4 {
    fn find() -> V4 {
        let prefix = std::path::Path::new(V4_DIR).join("prefix");
        let lib = prefix.join("usr/lib/rabbitmq/lib");
        let plugins = std::fs::read_dir(&lib)
            .unwrap_or_else(|error| {
                panic!(
                    "{} ({error}): run scripts/broker-up --v4 first",
                    lib.display()
                )
            })
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.path().join("plugins"))
            .find(|plugins| plugins.is_dir())
            .expect("a rabbitmq_server-*/plugins directory in the RabbitMQ 4 tree");
        V4 {
            bin: prefix.join("usr/lib/rabbitmq/bin"),
            erlang_bin: prefix.join("usr/lib/erlang/bin"),
            plugins,
        }
    }
}

/// Whether the tests run as root (then the node runs as `rabbitmq`).
fn root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A program of the node's RabbitMQ, as the user the node runs as when the tests are root.
fn as_node_user(program: &std::path::Path) -> Command {
    if root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "rabbitmq", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

impl OwnNode {
    /// Starts the node and waits until RabbitMQ has booted (a minute at most).
    pub fn start(test: &str) -> OwnNode {
        assert!(
            std::path::Path::new(RABBITMQ_SERVER).exists(),
            "{RABBITMQ_SERVER} is missing: this test starts a RabbitMQ node of its own"
        );
        OwnNode::boot(test, None, "[].\n", "")
    }

    /// A RabbitMQ 4 node with the stream plugin (streams on `stream_port`, advertised there),
    /// from the tree `scripts/broker-up --v4` extracted.
    pub fn start_v4(test: &str) -> OwnNode {
        let v4 = V4::find();
        let stream_port = free_port();
        let config = format!(
            "stream.listeners.tcp.1 = 127.0.0.1:{stream_port}\n\
             stream.advertised_host = 127.0.0.1\n\
             stream.advertised_port = {stream_port}\n\
             loopback_users.guest = true\n"
        );
        let mut node = OwnNode::boot(test, Some(v4), "[rabbitmq_stream].\n", &config);
        node.stream_port = Some(stream_port);
        node
    }

    fn boot(test: &str, v4: Option<V4>, plugins: &str, config: &str) -> OwnNode {
        let (port, dist_port) = (free_port(), free_port());
        let name = format!("rmqlab-{test}-{}@localhost", std::process::id());
        let dir = scratch_dir();
        let path = dir.path();
        std::fs::write(path.join("enabled_plugins"), plugins).unwrap();
        std::fs::write(
            path.join("rabbitmq.conf"),
            format!("listeners.tcp.1 = 127.0.0.1:{port}\n{config}"),
        )
        .unwrap();
        std::fs::write(path.join("rabbitmq-env.conf"), "").unwrap();
        if root() {
            let status = Command::new("chown")
                .args(["-R", "rabbitmq:"])
                .arg(path)
                .status()
                .expect("run chown");
            assert!(status.success(), "chown the node's directory to rabbitmq");
        }
        let server = match &v4 {
            Some(v4) => v4.bin.join("rabbitmq-server"),
            None => RABBITMQ_SERVER.into(),
        };
        let mut command = as_node_user(&server);
        node_environment(&mut command, &name, v4.as_ref());
        command
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_CONF_ENV_FILE", path.join("rabbitmq-env.conf"))
            .env("RABBITMQ_CONFIG_FILE", path.join("rabbitmq.conf"))
            .env(
                "RABBITMQ_ADVANCED_CONFIG_FILE",
                path.join("advanced.config"),
            )
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                path.join("enabled_plugins"),
            )
            .env("RABBITMQ_MNESIA_BASE", path.join("data"))
            .env("RABBITMQ_LOG_BASE", path.join("log"))
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .current_dir(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command.spawn().expect("start rabbitmq-server");
        let node = OwnNode {
            name,
            port,
            stream_port: None,
            v4,
            child: Some(child),
            dir: Some(dir),
        };
        node.await_startup();
        node
    }

    /// Waits until RabbitMQ has booted (after a start or a start_app).
    pub fn await_startup(&self) {
        // await_startup fails while the node has not registered yet: poll.
        eventually(
            Duration::from_secs(90),
            "the test's own node to boot",
            || {
                self.ctl_command(&["-q", "await_startup", "--timeout", "60"])
                    .output()
                    .is_ok_and(|output| output.status.success())
            },
        );
    }

    /// The node's AMQP URL.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The node's stream URL (RabbitMQ 4 only).
    pub fn stream_url(&self) -> String {
        let port = self.stream_port.expect("a node started by start_v4");
        format!("rabbitmq-stream://guest:guest@127.0.0.1:{port}/%2f")
    }

    /// The rabbitmqctl for this node: RabbitMQ 4's own for a node of [`OwnNode::start_v4`], else
    /// the machine's.
    pub fn ctl_command(&self, args: &[&str]) -> Command {
        let Some(v4) = &self.v4 else {
            return rabbitmqctl_on_command(&self.name, args);
        };
        let mut command = as_node_user(&v4.bin.join("rabbitmqctl"));
        node_environment(&mut command, &self.name, Some(v4));
        command.env(
            "RABBITMQ_CTL_ERL_ARGS",
            "-kernel inet_dist_use_interface {127,0,0,1}",
        );
        command.args(["-n", &self.name]).args(args);
        command
    }

    /// Stops the RabbitMQ app (every connection closes, the ports close) and starts it again.
    pub fn restart_app(&self) {
        self.ctl(&["-q", "stop_app"]);
        self.ctl(&["-q", "start_app"]);
        self.await_startup();
    }

    /// Runs rabbitmqctl on this node, failing the test when it fails; returns its stdout.
    pub fn ctl(&self, args: &[&str]) -> String {
        rabbitmqctl_on(&self.name, args)
    }

    /// The resource alarms in effect on this node, as Erlang terms.
    pub fn alarms(&self) -> String {
        self.ctl(&["-q", "eval", "rabbit_alarm:get_alarms()."])
    }
}

/// The environment of the node `name` (and of its CLI tools): nothing of the machine's.
fn node_environment(command: &mut Command, name: &str, v4: Option<&V4>) {
    let path = match v4 {
        Some(v4) => format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", v4.erlang_bin.display()),
        None => "/usr/sbin:/usr/bin:/sbin:/bin".into(),
    };
    let home = if root() {
        "/var/lib/rabbitmq".to_string()
    } else {
        std::env::var("HOME").unwrap_or_default()
    };
    command
        .env_clear()
        .env("PATH", path)
        .env("HOME", home)
        .env("LANG", "C.UTF-8")
        .env("LC_ALL", "C.UTF-8")
        .env("RABBITMQ_NODENAME", name)
        .env("ERL_EPMD_ADDRESS", "127.0.0.1");
    if let Some(v4) = v4 {
        command.env("RABBITMQ_PLUGINS_DIR", &v4.plugins);
    }
}

impl Drop for OwnNode {
    fn drop(&mut self) {
        let _ = self.ctl_command(&["-q", "stop"]).output();
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        drop(self.dir.take());
    }
}
