//! The command line without a broker: help, usage errors, the README's usage block.

mod common;

use common::{Running, assert_code, assert_ended_by, rmqlab, text};
use std::{
    fs::File,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::{Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

/// A broker address where nothing listens: a command that got past its usage checks would
/// exit 69 there, not 2.
const NOWHERE: &str = "amqp://guest:guest@127.0.0.1:1/%2f";

fn rmqlab_nowhere(args: &[&str]) -> Output {
    rmqlab()
        .env("RMQLAB_URL", NOWHERE)
        .env("RMQLAB_API_URL", "http://127.0.0.1:1/")
        .args(args)
        .output()
        .unwrap()
}

/// Every option and argument that names a queue, an exchange or a vhost, in a command line
/// with `{}` where the name goes.
const NAME_PLACES: &[&[&str]] = &[
    &["hello", "send", "--queue", "{}"],
    &["hello", "recv", "--queue", "{}"],
    &["task", "new", "--queue", "{}"],
    &["task", "work", "--queue", "{}"],
    &["pubsub", "emit", "--exchange", "{}"],
    &["pubsub", "listen", "--exchange", "{}"],
    &["queues", "list", "--vhost", "{}"],
    &["queues", "purge", "{}"],
    &["queues", "purge", "q", "--vhost", "{}"],
    &["queues", "delete", "{}"],
    &["queues", "delete", "q", "--vhost", "{}"],
    &["stream", "send", "--stream", "{}"],
    &["stream", "recv", "--stream", "{}"],
    &["stream", "recv", "--name", "{}"],
    &["stream", "info", "{}"],
    &["queues", "peek", "{}"],
    &["queues", "move", "{}", "d"],
    &["queues", "move", "s", "{}"],
    &["queues", "move", "s", "--to-exchange", "{}"],
    &["queues", "dead-letters", "{}"],
    &["queues", "dead-letters", "q", "--from-queue", "{}"],
    &["routing", "emit", "--exchange", "{}"],
    &["routing", "listen", "--exchange", "{}", "info"],
    &["routing", "listen", "--queue", "{}", "info"],
    &["topics", "emit", "--exchange", "{}"],
    &["topics", "listen", "--exchange", "{}", "a.*"],
    &["topics", "listen", "--queue", "{}", "a.*"],
    &["rpc", "serve", "--queue", "{}"],
    &["rpc", "call", "--queue", "{}", "1"],
];

#[test]
fn stream_urls_and_offsets_are_checked_before_connecting() {
    for (args, needle) in [
        (
            &["--stream-url", "amqp://127.0.0.1:1", "stream", "send"][..],
            "use rabbitmq-stream:// or rabbitmq-stream+tls://",
        ),
        (
            &[
                "--stream-url",
                "rabbitmq-stream+tls://127.0.0.1:1",
                "stream",
                "recv",
            ][..],
            "needs --tls-ca-file",
        ),
        (
            &["stream", "recv", "--offset", "soon"][..],
            "is not an offset",
        ),
        (&["stream", "recv", "--store-every", "10"][..], "--name"),
    ] {
        let output = rmqlab_nowhere(args);
        assert_code(&output, 2);
        assert!(
            text(&output.stderr).contains(needle),
            "{args:?}: {}",
            text(&output.stderr)
        );
    }
    // The stream URL comes from RMQLAB_STREAM_URL when no option gives it, masked when shown.
    let output = rmqlab()
        .env(
            "RMQLAB_STREAM_URL",
            "rabbitmq-stream://u:secret@127.0.0.1:1/%2f",
        )
        .args(["stream", "send"])
        .output()
        .unwrap();
    assert_code(&output, 69);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("rabbitmq-stream://u:****@127.0.0.1:1/"),
        "{stderr}"
    );
    assert!(!stderr.contains("secret"), "{stderr}");
}

fn with_name(place: &[&str], name: &str) -> Vec<String> {
    place
        .iter()
        .map(|arg| arg.replace("{}", name))
        .collect::<Vec<_>>()
}

#[test]
fn names_over_255_bytes_are_usage_errors_before_connecting() {
    // 128 two-byte characters: 256 bytes, 128 characters.
    let long = "é".repeat(128);
    for place in NAME_PLACES {
        let args = with_name(place, &long);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = rmqlab_nowhere(&args);
        assert_code(&output, 2);
        let stderr = text(&output.stderr);
        assert!(stderr.contains("256 bytes"), "{place:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{place:?}: {stderr}");
    }
    let output = rmqlab()
        .args(["--url", &format!("amqp://guest:guest@127.0.0.1:1/{long}")])
        .args(["hello", "send"])
        .output()
        .unwrap();
    assert_code(&output, 2);
    assert!(text(&output.stderr).contains("256 bytes"));
    // 255 bytes pass the check and meet the (absent) broker.
    let output = rmqlab_nowhere(&["hello", "send", "--queue", &"q".repeat(255)]);
    assert_code(&output, 69);
}

#[test]
fn empty_names_are_usage_errors_before_connecting() {
    for place in NAME_PLACES {
        let args = with_name(place, "");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = rmqlab_nowhere(&args);
        assert_code(&output, 2);
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("a name cannot be empty"),
            "{place:?}: {stderr}"
        );
    }
}

#[test]
fn a_delimiter_in_a_password_gets_a_hint_to_percent_encode_it() {
    for (delimiter, encoded) in [('/', "%2F"), ('#', "%23"), ('?', "%3F")] {
        for args in [
            vec![
                "--url".to_string(),
                format!("amqp://user:pa{delimiter}ss@127.0.0.1:5672/%2f"),
                "hello".into(),
                "send".into(),
            ],
            vec![
                "--api-url".to_string(),
                format!("http://u:SEC{delimiter}RET@127.0.0.1:15672/"),
                "queues".into(),
                "list".into(),
            ],
        ] {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let output = rmqlab_nowhere(&args);
            assert_code(&output, 2);
            let stderr = text(&output.stderr);
            assert!(stderr.starts_with("rmqlab: error: invalid "), "{stderr}");
            assert!(
                stderr.ends_with(&format!(
                    "\n  hint: percent-encode a '{delimiter}' in the user name or password: \
                     write it {encoded}\n"
                )),
                "{stderr}"
            );
            assert!(
                !stderr.contains("ss@") && !stderr.contains("RET"),
                "{stderr}"
            );
        }
    }
}

#[test]
fn passwords_with_delimiters_are_masked_in_unparsable_urls() {
    let output = rmqlab_nowhere(&[
        "--url",
        "amqp://user:pa/ss@127.0.0.1:5672/%2f",
        "hello",
        "send",
    ]);
    assert_code(&output, 2);
    let stderr = text(&output.stderr);
    assert!(
        !stderr.contains("pa/ss") && !stderr.contains("ss@"),
        "{stderr}"
    );
    assert!(
        stderr.contains("'amqp://user:****@127.0.0.1:5672/%2f'"),
        "{stderr}"
    );

    let output = rmqlab_nowhere(&[
        "--api-url",
        "http://u:SEC/RET@127.0.0.1:15672/",
        "queues",
        "list",
    ]);
    assert_code(&output, 2);
    let stderr = text(&output.stderr);
    assert!(
        !stderr.contains("SEC") && !stderr.contains("RET"),
        "{stderr}"
    );
    assert!(
        stderr.contains("'http://u:****@127.0.0.1:15672/'"),
        "{stderr}"
    );
}

#[test]
fn an_unwritable_stderr_never_panics() {
    for args in [
        &["-v", "hello", "send"][..],
        &["-v", "queues", "list"][..],
        &["hello", "recv", "--count", "0"][..],
    ] {
        let output = rmqlab()
            .env("RMQLAB_URL", NOWHERE)
            .env("RMQLAB_API_URL", "http://127.0.0.1:1/")
            .args(args)
            .stderr(Stdio::from(
                File::options().write(true).open("/dev/full").unwrap(),
            ))
            .output()
            .unwrap();
        let expected = if args.contains(&"0") { 2 } else { 69 };
        assert_eq!(output.status.code(), Some(expected), "{args:?}");
    }
}

#[test]
fn a_panic_is_an_internal_error_70() {
    // Debug builds only: RMQLAB_DEBUG_PANIC panics on purpose, for this test.
    let output = rmqlab()
        .env("RMQLAB_DEBUG_PANIC", "1")
        .args(["hello", "send"])
        .output()
        .unwrap();
    assert_code(&output, 70);
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with("rmqlab: error: internal error: RMQLAB_DEBUG_PANIC is set"),
        "{stderr}"
    );
    assert!(stderr.contains("please report it"), "{stderr}");
    assert!(!stderr.contains("panicked at"), "{stderr}");
}

#[test]
fn help_and_version_to_a_full_stdout_are_74() {
    for args in [
        &["--help"][..],
        &["--version"][..],
        &["hello", "send", "--help"][..],
    ] {
        let output = rmqlab()
            .args(args)
            .stdout(Stdio::from(
                File::options().write(true).open("/dev/full").unwrap(),
            ))
            .output()
            .unwrap();
        assert_code(&output, 74);
        assert!(
            text(&output.stderr).contains("cannot write to standard output"),
            "{}",
            text(&output.stderr)
        );
    }
}

#[test]
fn count_zero_names_a_sane_range() {
    let output = rmqlab_nowhere(&["hello", "recv", "--count", "0"]);
    assert_code(&output, 2);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("it must be 1 or more"), "{stderr}");
    assert!(!stderr.contains("18446744073709551615"), "{stderr}");
}

#[test]
fn a_broken_filter_is_a_usage_error() {
    let output = rmqlab_nowhere(&["queues", "list", "--filter", "(["]);
    assert_code(&output, 2);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("not a regular expression: unclosed"),
        "{stderr}"
    );
}

#[test]
fn a_broken_filter_behind_a_look_around_is_a_usage_error_before_any_request() {
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let base = fake_api(move |_, _| {
        counter.fetch_add(1, Ordering::SeqCst);
        Some((200, "[]".into()))
    });
    for broken in ["(?=a", "(?<!a)[", "(a)\\1("] {
        let output = rmqlab()
            .args(["--api-url", &base, "queues", "list", "--filter", broken])
            .output()
            .unwrap();
        assert_code(&output, 2);
        let stderr = text(&output.stderr);
        assert!(
            stderr.starts_with(&format!(
                "error: invalid value '{broken}' for '--filter <REGEX>': not a regular expression: unclosed"
            )),
            "{stderr}"
        );
    }
    assert_eq!(
        asked.load(Ordering::SeqCst),
        0,
        "no request for a broken filter"
    );
}

#[test]
fn watching_more_often_than_100ms_is_a_usage_error() {
    for interval in ["0s", "99ms"] {
        let output = rmqlab_nowhere(&["queues", "list", "--watch", interval]);
        assert_code(&output, 2);
        assert!(
            text(&output.stderr).contains("100ms"),
            "{}",
            text(&output.stderr)
        );
    }
}

#[test]
fn an_rpc_timeout_under_a_millisecond_is_a_usage_error() {
    for timeout in ["0s", "500us"] {
        let output = rmqlab_nowhere(&["rpc", "call", "--timeout", timeout]);
        assert_code(&output, 2);
        assert!(
            text(&output.stderr).contains("less than 1ms"),
            "{}",
            text(&output.stderr)
        );
    }
}

#[test]
fn usage_lines_do_not_show_options_from_the_environment() {
    let output = rmqlab()
        .env("RMQLAB_URL", "amqp://u:Sekr1t@127.0.0.1:1/%2f")
        .env("RMQLAB_API_URL", "http://u:Sekr1t@127.0.0.1:1/")
        .args(["-q", "-v", "hello", "send"])
        .output()
        .unwrap();
    assert_code(&output, 2);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("Usage: rmqlab --quiet"), "{stderr}");
    assert!(
        !stderr.contains("--url") && !stderr.contains("--api-url"),
        "{stderr}"
    );
    assert!(!stderr.contains("Sekr1t"), "{stderr}");
}

#[test]
fn help_texts_name_each_commands_own_lines() {
    let help = |args: &[&str]| {
        let output = rmqlab().args(args).arg("--help").output().unwrap();
        assert_code(&output, 0);
        text(&output.stdout)
    };
    let listen = help(&["pubsub", "listen"]);
    assert!(listen.contains("(text: ` [x] MESSAGE`)"), "{listen}");
    assert!(!listen.contains("Received"), "{listen}");
    assert!(help(&["hello", "recv"]).contains("(text: ` [x] Received MESSAGE`)"));
    for command in [["hello", "send"], ["task", "new"]] {
        let shown = help(&command);
        assert!(!shown.contains("pubsub emit"), "{command:?}: {shown}");
        assert!(
            shown.contains("[default: Hello World!]"),
            "{command:?}: {shown}"
        );
    }
    assert!(help(&["pubsub", "emit"]).contains("[default: info: Hello World!]"));
}

/// A local HTTP server for the management API's failures: each request gets `answer(path,
/// n)` (n counts the queue listings: unpaged, or the first page; usize::MAX for all others),
/// `None` meaning no answer at all (the connection stays open). Returns its base URL.
fn fake_api(
    answer: impl Fn(&str, usize) -> Option<(u16, String)> + Send + Sync + 'static,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!(
        "http://127.0.0.1:{}/",
        listener.local_addr().unwrap().port()
    );
    let answer = Arc::new(answer);
    let counter = Arc::new(AtomicUsize::new(0));
    thread::spawn(move || {
        let mut silent: Vec<TcpStream> = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                request.push(byte[0]);
            }
            let request = String::from_utf8_lossy(&request).into_owned();
            let path = request
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            let listing = path.contains("page=1&") || !path.contains("page=");
            let n = match path.starts_with("/api/queues") && listing {
                true => counter.fetch_add(1, Ordering::SeqCst),
                false => usize::MAX,
            };
            match answer(&path, n) {
                None => silent.push(stream),
                Some((status, body)) => {
                    let kind = if body.starts_with('<') {
                        "text/html"
                    } else {
                        "application/json"
                    };
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status} X\r\ncontent-type: {kind}\r\ncontent-length: {}\r\n\
                         connection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
            }
        }
    });
    base
}

const ONE_QUEUE: &str =
    r#"[{"vhost":"/","name":"q","type":"classic","messages_ready":3,"messages_unacknowledged":0}]"#;

#[test]
fn a_server_that_is_not_the_management_api_is_named_so() {
    let base = fake_api(|_, _| Some((404, "<html><body>Not Found</body></html>".into())));
    let output = rmqlab()
        .args(["--api-url", &base, "queues", "list"])
        .output()
        .unwrap();
    assert_code(&output, 69);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("is not a RabbitMQ management API"),
        "{stderr}"
    );
    assert!(stderr.contains("--api-url"), "{stderr}");
}

#[test]
fn purge_and_delete_at_a_server_that_is_not_the_api_are_named_so() {
    // A plain web server: 405 to a DELETE, 404 elsewhere, in HTML.
    let base = fake_api(|path, _| match path.contains("overview") {
        true => Some((404, "<html><body>Not Found</body></html>".into())),
        false => Some((405, "<html><body>Method Not Allowed</body></html>".into())),
    });
    for verb in ["purge", "delete"] {
        let output = rmqlab()
            .args(["--api-url", &base, "queues", verb, "q"])
            .output()
            .unwrap();
        assert_code(&output, 69);
        let stderr = text(&output.stderr);
        assert!(
            stderr.starts_with("rmqlab: error: ")
                && stderr.contains("is not a RabbitMQ management API"),
            "{stderr}"
        );
        assert!(stderr.contains("hint: point --api-url"), "{stderr}");
    }
}

/// A listener that takes connections and answers as a TLS server does to a plain client: with
/// silence (`alert` false: it waits for a ClientHello) or a TLS alert record, then a close.
fn tls_like_listener(alert: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            if alert {
                let mut header = [0; 8];
                let _ = stream.read_exact(&mut header);
                let _ = stream.write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]);
            } else {
                held.push(stream);
            }
        }
    });
    port
}

#[test]
fn a_plain_url_at_a_tls_listener_names_the_likely_cause() {
    for (alert, code) in [(false, 75), (true, 69)] {
        let port = tls_like_listener(alert);
        for command in [&["hello", "send"][..], &["hello", "recv", "--count", "1"]] {
            let output = rmqlab()
                .args([
                    "--url",
                    &format!("amqp://guest:secret@127.0.0.1:{port}/%2f"),
                    "--connect-timeout",
                    "1s",
                ])
                .args(command)
                .output()
                .unwrap();
            assert_code(&output, code);
            assert_eq!(
                text(&output.stderr),
                format!(
                    "rmqlab: error: the server at amqp://guest:****@127.0.0.1:{port}/%2f took the \
                     connection but did not answer AMQP: is port {port} a TLS listener?\n  hint: \
                     use amqps:// for a TLS listener (5671 by default), or the port of the \
                     broker's plain AMQP listener (5672 by default) with amqp://\n"
                ),
                "{command:?}, alert: {alert}"
            );
        }
    }
}

#[test]
fn the_api_timeout_bounds_a_request_and_is_named() {
    let base = fake_api(|_, _| None);
    let started = Instant::now();
    let output = rmqlab()
        .args(["--api-url", &base, "--api-timeout", "1s", "queues", "list"])
        .output()
        .unwrap();
    assert_code(&output, 75);
    assert!(started.elapsed() < Duration::from_secs(10));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("within 1s (--api-timeout)"), "{stderr}");
}

#[test]
fn watch_keeps_going_through_failed_refreshes_within_the_reconnect_timeout() {
    // Refreshes: a listing, a failure, a listing, then failures only.
    let base = fake_api(|path, n| match (path.starts_with("/api/consumers"), n) {
        (true, _) => Some((200, "[]".into())),
        (false, 0 | 2) => Some((200, ONE_QUEUE.into())),
        (false, _) => Some((
            503,
            r#"{"error":"unavailable","reason":"overloaded"}"#.into(),
        )),
    });
    let output = rmqlab()
        .args(["--api-url", &base, "--reconnect-timeout", "1s"])
        .args(["queues", "list", "--watch", "200ms", "-o", "json"])
        .output()
        .unwrap();
    assert_code(&output, 75);
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    // One JSON document per successful refresh, nothing else on stdout.
    let documents: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(documents.len(), 2, "{stdout}");
    assert_eq!(documents[1][0]["messages_ready"], 3);
    assert!(!stdout.contains('#'), "{stdout}");
    assert_eq!(
        stderr.matches("\n# ").count() + usize::from(stderr.starts_with("# ")),
        2,
        "{stderr}"
    );
    let failures = stderr.matches(" [!] refresh failed").count();
    assert!(failures >= 3, "one line per failed refresh: {stderr}");
    assert!(stderr.contains("answered 503"), "{stderr}");
    assert!(
        stderr.contains("rmqlab: error: the management API failed for 1s (--reconnect-timeout)"),
        "{stderr}"
    );
}

/// A TCP server that accepts connections and never says a word.
fn silent_server() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

#[test]
fn ctrl_c_while_connecting_stops_at_once() {
    let (_listener, port) = silent_server();
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let api = format!("http://127.0.0.1:{port}/");
    for args in [
        &["hello", "recv"][..],
        &["task", "work"][..],
        &["hello", "send"][..],
        &["queues", "list", "--watch", "1s"][..],
    ] {
        let running = Running::spawn(
            rmqlab()
                .args([
                    "-v",
                    "--url",
                    &url,
                    "--api-url",
                    &api,
                    "--connect-timeout",
                    "30s",
                ])
                .args(args),
        );
        let waiting = if args[0] == "queues" {
            "management API at"
        } else {
            "connecting to"
        };
        running.wait_for_stderr(waiting, Duration::from_secs(10));
        // Let the connection attempt start waiting for the server.
        thread::sleep(Duration::from_millis(300));
        running.signal("INT");
        let started = Instant::now();
        let (status, _, stderr) = running.finish_status(Duration::from_secs(10));
        assert_ended_by(&status, "INT", &stderr);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{args:?} took {:?}",
            started.elapsed()
        );
        assert!(!stderr.contains("rmqlab: error"), "{args:?}: {stderr}");
    }
}

#[test]
fn readme_usage_matches_help() {
    let help = rmqlab().arg("--help").output().unwrap();
    assert_code(&help, 0);
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("<!-- usage:start")
        .expect("README has a usage:start marker");
    let block = &readme[start..];
    let body_start = block
        .find("```text\n")
        .expect("usage block opens with ```text")
        + 8;
    let body_end = block
        .find("```\n<!-- usage:end -->")
        .expect("usage block closes");
    assert_eq!(
        &block[body_start..body_end],
        text(&help.stdout),
        "README.md's usage block differs from `rmqlab --help`: run scripts/generate"
    );
}

#[test]
fn every_command_has_examples_in_its_long_help() {
    for command in [
        ["hello", "send"],
        ["hello", "recv"],
        ["task", "new"],
        ["task", "work"],
        ["pubsub", "emit"],
        ["pubsub", "listen"],
        ["routing", "emit"],
        ["routing", "listen"],
        ["topics", "emit"],
        ["topics", "listen"],
        ["topics", "match"],
        ["rpc", "serve"],
        ["rpc", "call"],
        ["queues", "list"],
        ["queues", "purge"],
        ["queues", "delete"],
    ] {
        let help = rmqlab().args(command).arg("--help").output().unwrap();
        assert_code(&help, 0);
        let help = text(&help.stdout);
        assert!(help.contains("Examples:\n  rmqlab "), "{command:?}: {help}");
    }
}

#[test]
fn confirms_has_examples_in_its_long_help() {
    let help = rmqlab().args(["confirms", "--help"]).output().unwrap();
    assert_code(&help, 0);
    assert!(text(&help.stdout).contains("Examples:\n  rmqlab "));
}

#[test]
fn bad_duration_is_a_usage_error() {
    let output = rmqlab()
        .args(["task", "work", "--dot-duration", "fast"])
        .output()
        .unwrap();
    assert_code(&output, 2);
    assert!(
        text(&output.stderr).contains("--dot-duration"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn malformed_uris_are_usage_errors_that_hide_the_password() {
    for url in [
        "amqp://guest:Sekr1t-pw@127.0.0.1:99999/%2f",
        "http://guest:Sekr1t-pw@127.0.0.1/",
        "amqp:guest:Sekr1t-pw",
        "amqp:x",
        "rabbit://guest:Sekr1t-pw@host/",
    ] {
        let output = rmqlab()
            .args(["--url", url, "hello", "send"])
            .output()
            .unwrap();
        assert_code(&output, 2);
        let stderr = text(&output.stderr);
        assert!(
            stderr.starts_with("rmqlab: error: invalid broker URI"),
            "{url}: {stderr}"
        );
        assert!(!stderr.contains("Sekr1t-pw"), "password shown: {stderr}");
        assert_eq!(text(&output.stdout), "");
    }
}

#[test]
fn amqp_url_is_the_fallback_for_rmqlab_url() {
    let output = rmqlab()
        .env_remove("RMQLAB_URL")
        .env("AMQP_URL", "amqp://guest:Sekr1t-pw@127.0.0.1:1/%2f")
        .args(["hello", "send"])
        .output()
        .unwrap();
    assert_code(&output, 69);
    assert!(
        text(&output.stderr).contains("127.0.0.1:1"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn words_and_file_do_not_mix() {
    let output = rmqlab()
        .args(["task", "new", "-f", "-", "word"])
        .output()
        .unwrap();
    assert_code(&output, 2);
}

/// `hello recv -o body | head -1` takes more than one message: the help must not promise that
/// a closed stdout takes nothing unprinted, and must name the way to take exactly N.
#[test]
fn recv_help_tells_the_truth_about_a_closed_stdout() {
    let help = rmqlab().args(["hello", "recv", "--help"]).output().unwrap();
    assert_code(&help, 0);
    let help = text(&help.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(!help.contains("or a closed stdout never take"), "{help}");
    assert!(
        help.contains("the lines already written into the pipe are gone with it"),
        "{help}"
    );
    assert!(help.contains("use --count N"), "{help}");
}

/// Runs rmqlab with `args` and `input` on its stdin.
fn with_stdin(args: &[&str], input: &[u8]) -> std::process::Output {
    use std::{io::Write, process::Stdio};
    let mut child = rmqlab()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_listen_without_keys_is_a_usage_error_with_an_example() {
    for (command, example) in [
        (["routing", "listen"], "rmqlab routing listen warning error"),
        (
            ["topics", "listen"],
            "rmqlab topics listen 'kern.*' '*.critical'",
        ),
    ] {
        let output = rmqlab_nowhere(&command);
        assert_code(&output, 2);
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains(&format!("tip: for example: {example}")),
            "{stderr}"
        );
    }
}

#[test]
fn keys_over_255_bytes_are_usage_errors_before_connecting() {
    let long = "k".repeat(256);
    for args in [
        vec!["routing", "emit", &long],
        vec!["routing", "listen", "info", &long],
        vec!["topics", "emit", &long, "message"],
        vec!["topics", "listen", &long],
        vec!["topics", "match", &long, "a"],
        vec!["topics", "match", "#", &long],
    ] {
        let output = rmqlab_nowhere(&args);
        assert_code(&output, 2);
        assert!(
            text(&output.stderr).contains("256 bytes: a routing or binding key has at most 255"),
            "{args:?}: {}",
            text(&output.stderr)
        );
    }
    let output = with_stdin(
        &["topics", "match", "#", "-f", "-"],
        format!("ok\n{long}\n").as_bytes(),
    );
    assert_code(&output, 2);
    assert!(
        text(&output.stderr)
            .starts_with("rmqlab: error: line 2 of standard input is not a routing key: 256 bytes"),
        "{}",
        text(&output.stderr)
    );
    assert_code(
        &rmqlab_nowhere(&["topics", "match", &"k".repeat(255), &"k".repeat(255)]),
        0,
    );
}

/// The worked examples of tutorial 5: (key, matched by `*.orange.*`, by `*.*.rabbit`, by
/// `lazy.#`).
const TUTORIAL: &[(&str, bool, bool, bool)] = &[
    ("quick.orange.rabbit", true, true, false),
    ("lazy.orange.elephant", true, false, true),
    ("quick.orange.fox", true, false, false),
    ("lazy.brown.fox", false, false, true),
    ("lazy.pink.rabbit", false, true, true),
    ("quick.brown.fox", false, false, false),
    ("quick.orange.new.rabbit", false, false, false),
    ("lazy.orange.new.rabbit", false, false, true),
];

#[test]
fn topics_match_answers_the_tutorials_table_rmqlab_nowhere() {
    for (column, pattern) in ["*.orange.*", "*.*.rabbit", "lazy.#"].iter().enumerate() {
        let mut args = vec!["topics", "match", pattern];
        args.extend(TUTORIAL.iter().map(|(key, ..)| *key));
        let output = rmqlab_nowhere(&args);
        assert_code(&output, 1);
        let expected: String = TUTORIAL
            .iter()
            .map(|&(key, a, b, c)| {
                let verb = match [a, b, c][column] {
                    true => "matches",
                    false => "does not match",
                };
                format!("'{pattern}' {verb} '{key}'\n")
            })
            .collect();
        assert_eq!(text(&output.stdout), expected);
        assert_eq!(text(&output.stderr), "");
    }
}

#[test]
fn topics_match_exits_like_grep_and_counts_empty_words() {
    for (args, code) in [
        (&["a.*.b", "a..b"][..], 0),
        (&["#", ""], 0),
        (&["*", ""], 1),
        (&["lazy.#", "lazy", "lazy.a.b"], 0),
        (&["*.orange.*", "quick.orange.rabbit", "quick.brown.fox"], 1),
    ] {
        let mut all = vec!["topics", "match"];
        all.extend(args);
        assert_code(&rmqlab_nowhere(&all), code);
    }
    // The answer comes from stdin too, and a bad --url does not matter offline.
    let output = with_stdin(
        &["--url", "nonsense", "topics", "match", "a.#", "-f", "-"],
        b"a\na.b\nb\n",
    );
    assert_code(&output, 1);
    assert_eq!(
        text(&output.stdout),
        "'a.#' matches 'a'\n'a.#' matches 'a.b'\n'a.#' does not match 'b'\n"
    );
}

#[test]
fn a_wildcard_inside_a_word_is_a_warning_and_the_answer_stands() {
    let output = rmqlab_nowhere(&["topics", "match", "a*b.#", "a*b.c"]);
    assert_code(&output, 0);
    assert_eq!(
        text(&output.stderr),
        " [!] binding key 'a*b.#': 'a*b' is a literal word; `*` and `#` are wildcards only as \
         whole words\n"
    );
    assert_code(&rmqlab_nowhere(&["topics", "match", "a*b.#", "axb.c"]), 1);
}

#[test]
fn a_closed_stdout_does_not_change_the_answer() {
    let output = common::command("bash")
        .arg("-c")
        .arg(format!(
            "seq 100000 | {} topics match '#.1' -f - | head -1; echo \"status ${{PIPESTATUS[1]}}\"",
            common::BIN
        ))
        .output()
        .unwrap();
    assert_eq!(
        text(&output.stdout),
        "'#.1' matches '1'\nstatus 1\n",
        "{}",
        text(&output.stderr)
    );
}

/// A list of broker URIs is checked whole before anything connects: a bad item, an empty list
/// or two vhosts are usage errors (2) that name the item and never show a password, whether
/// the list comes from `--url` (repeated or comma-separated), RMQLAB_URL or AMQP_URL.
#[test]
fn url_lists_are_checked_before_connecting_and_name_the_bad_item() {
    let good = "amqp://guest:Sekr1t-pw@127.0.0.1:1/%2f";
    let cases: &[(&str, &str, &str)] = &[
        (
            "RMQLAB_URL",
            "amqp://guest:Sekr1t-pw@127.0.0.1:1/%2f , amqp://guest:Sekr1t-pw@127.0.0.1:99999/%2f ,",
            "invalid broker URI 'amqp://guest:****@127.0.0.1:99999/%2f' (URL 2 of 2 in \
             RMQLAB_URL): invalid port number",
        ),
        (
            "AMQP_URL",
            "amqp://guest:Sekr1t-pw@127.0.0.1:1/%2f,http://guest:Sekr1t-pw@127.0.0.1/",
            "invalid broker URI 'http://guest:****@127.0.0.1/' (URL 2 of 2 in AMQP_URL): \
             unknown scheme 'http'",
        ),
        (
            "RMQLAB_URL",
            " , ",
            "invalid broker URI: RMQLAB_URL lists no URL",
        ),
        (
            "RMQLAB_URL",
            "amqp://guest:Sekr1t-pw@127.0.0.1:1/%2f,,amqp://guest:Sekr1t-pw@127.0.0.1:2/%2f",
            "invalid broker URI (URL 2 of 3 in RMQLAB_URL): it is empty",
        ),
        (
            "RMQLAB_URL",
            "amqp://guest:Sekr1t-pw@127.0.0.1:1/%2f, amqp://guest:Sekr1t-pw@127.0.0.1:2/staging",
            "invalid broker URI 'amqp://guest:****@127.0.0.1:2/staging' (URL 2 of 2 in \
             RMQLAB_URL): its vhost 'staging' is not '/', the first URL's",
        ),
    ];
    for (variable, value, expected) in cases {
        for command in [
            &["hello", "send"][..],
            &["task", "work"],
            &["queues", "list"],
        ] {
            let output = rmqlab()
                .env_remove("RMQLAB_URL")
                .env(variable, value)
                .args(command)
                .output()
                .unwrap();
            assert_code(&output, 2);
            let stderr = text(&output.stderr);
            assert!(
                stderr.starts_with(&format!("rmqlab: error: {expected}")),
                "{variable}={value} {command:?}: {stderr}"
            );
            assert!(!stderr.contains("Sekr1t-pw"), "password shown: {stderr}");
        }
    }
    // Repeated --url: the items are numbered across the options.
    let output = rmqlab()
        .args([
            "--url",
            good,
            "--url",
            &format!("{good},amqp://u:Sekr1t-pw@h/other"),
        ])
        .args(["task", "new", "x"])
        .output()
        .unwrap();
    assert_code(&output, 2);
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with(
            "rmqlab: error: invalid broker URI 'amqp://u:****@h/other' (URL 3 of 3 in --url): \
             its vhost 'other' is not '/'"
        ),
        "{stderr}"
    );
    let output = rmqlab()
        .args(["--url", "", "hello", "send"])
        .output()
        .unwrap();
    assert_code(&output, 2);
    assert!(
        text(&output.stderr).starts_with("rmqlab: error: invalid broker URI: --url lists no URL"),
        "{}",
        text(&output.stderr)
    );
}

/// `--api-url` may be a list too: a bad item is a usage error naming it, password masked.
#[test]
fn api_url_lists_name_the_bad_item() {
    let output = rmqlab_nowhere(&[
        "--api-url",
        "http://127.0.0.1:1/, ftp://ops:Sekr1t-pw@127.0.0.1/",
        "queues",
        "list",
    ]);
    assert_code(&output, 2);
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with(
            "rmqlab: error: invalid API URL 'ftp://ops:****@127.0.0.1/' (URL 2 of 2 in \
             --api-url): unknown scheme 'ftp'"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("Sekr1t-pw"), "{stderr}");
}

/// Without --stream-url, `stream` commands try the stream port beside each `--url` in turn
/// (nodes on one host share theirs), and name every one that failed, password masked.
#[test]
fn stream_commands_try_the_stream_port_of_each_url() {
    let output = rmqlab()
        .env(
            "RMQLAB_URL",
            "amqp://guest:Sekr1t-pw@127.0.0.1:1/%2f, amqp://guest:Sekr1t-pw@127.0.0.1:2/%2f, \
             amqp://guest:Sekr1t-pw@127.0.0.2:1/%2f",
        )
        .args(["-v", "stream", "info", "s"])
        .output()
        .unwrap();
    assert_code(&output, 69);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("rmqlab: error: could not connect to any of the 2 stream URLs\n"),
        "{stderr}"
    );
    for host in ["127.0.0.1", "127.0.0.2"] {
        assert!(
            stderr.contains(&format!(
                "rmqlab: skipping rabbitmq-stream://guest:****@{host}:5552/%2F"
            )),
            "{stderr}"
        );
    }
    assert!(
        stderr.contains("hint: is the stream plugin on?"),
        "{stderr}"
    );
    assert!(!stderr.contains("Sekr1t-pw"), "{stderr}");
}

#[test]
fn peek_move_and_dead_letters_check_their_arguments_before_connecting() {
    for (args, needle) in [
        (&["queues", "move", "src"][..], "<DESTINATION>"),
        (
            &["queues", "move", "src", "dst", "--to-exchange", "x"],
            "cannot be used",
        ),
        (
            &["queues", "move", "src", "dst", "--routing-key", "k"],
            "give --to-exchange EXCHANGE with it",
        ),
        (
            &["queues", "move", "src", "--routing-key", "k"],
            "--to-exchange",
        ),
        (
            &["queues", "move", "src", "dst", "--count", "0"],
            "1 or more",
        ),
        (&["queues", "peek", "q", "--count", "0"], "1 or more"),
        (
            &["queues", "dead-letters", "q", "--via-exchange"],
            "--redrive",
        ),
        (
            &["queues", "dead-letters", "q", "--reason", "lost"],
            "rejected",
        ),
    ] {
        let output = rmqlab_nowhere(args);
        assert_code(&output, 2);
        let stderr = text(&output.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn an_unknown_column_is_a_usage_error_naming_the_valid_ones() {
    let output = rmqlab()
        .args(["queues", "list", "--columns", "name,colour"])
        .output()
        .unwrap();
    assert_code(&output, 2);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("invalid value 'colour' for '--columns <COLUMN,...>'"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "[possible values: vhost, name, type, state, durable, messages, messages_ready, \
             messages_unacknowledged, consumers, memory, node, leader, members, online, \
             publish_rate, deliver_rate, ack_rate]"
        ),
        "{stderr}"
    );
    assert_eq!(text(&output.stdout), "");
}

/// Named brokers without a broker: the config file, its errors, and `config show`.
mod named_brokers {
    use super::*;
    use std::{fs, os::unix::fs::PermissionsExt, path::Path};

    const SECRET: &str = "Sekr1t-cfg-cli";

    /// A config file in `dir` with `content`, of mode `mode`.
    fn write_config(dir: &Path, content: &str, mode: u32) -> std::path::PathBuf {
        let path = dir.join("config.toml");
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    /// A file with every kind of password: in a URL, in the password key, in an API URL.
    fn prod(dir: &Path, mode: u32) -> std::path::PathBuf {
        write_config(
            dir,
            &format!(
                "# production\n\
                 [broker.prod]\n\
                 urls = [\"amqp://rabbit1.example\", \"amqps://ops:{SECRET}@rabbit2.example:5671\"]\n\
                 user = \"app\"\n\
                 password = \"{SECRET}\"\n\
                 vhost = \"shop\"\n\
                 api_url = \"https://admin:{SECRET}@rabbit.example:15671\"\n\
                 tls_ca_file = \"prod-ca.pem\"\n\
                 connect_timeout = \"7s\"\n\
                 \n\
                 [broker.dev]\n\
                 url = \"amqp://127.0.0.1:1\"\n\
                 \n\
                 [broker.slow]\n\
                 reconnect_timeout = \"1h\"\n"
            ),
            mode,
        )
    }

    /// rmqlab with `config` as --config, and `args`; the environment as the harness leaves it
    /// (RMQLAB_URL set) unless `env` adds to it.
    fn run(config: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut command = rmqlab();
        command.arg("--config").arg(config).args(args);
        for (name, value) in env {
            command.env(name, value);
        }
        let output = command.output().unwrap();
        for stream in [&output.stdout, &output.stderr] {
            assert!(
                !text(stream).contains(SECRET),
                "password shown: {}",
                text(stream)
            );
        }
        output
    }

    /// The line of `config show` for `setting`, and the lines that continue it.
    fn setting(stdout: &str, name: &str) -> String {
        let mut lines = stdout
            .lines()
            .skip_while(|line| !line.starts_with(&format!("{name} ")));
        let first = lines
            .next()
            .unwrap_or_else(|| panic!("no {name} in {stdout}"));
        let rest = lines.take_while(|line| line.starts_with(' '));
        std::iter::once(first)
            .chain(rest)
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join(" | ")
    }

    #[test]
    fn config_show_masks_every_password_and_says_where_each_setting_comes_from() {
        let dir = common::scratch_dir();
        let path = prod(dir.path(), 0o600);
        let output = run(&path, &[], &["--broker", "prod", "config", "show"]);
        assert_code(&output, 0);
        assert_eq!(text(&output.stderr), "");
        let stdout = text(&output.stdout);
        let shown = |name| setting(&stdout, name);
        assert_eq!(shown("broker"), "broker prod flag --broker");
        assert_eq!(
            shown("urls"),
            "urls amqp://app:****@rabbit1.example/shop section broker.prod | \
             amqps://ops:****@rabbit2.example:5671/shop"
        );
        assert_eq!(
            shown("api_url"),
            "api_url https://admin:****@rabbit.example:15671 section broker.prod"
        );
        assert_eq!(shown("vhost"), "vhost shop section broker.prod");
        // A relative path is the config file's neighbour.
        assert_eq!(
            shown("tls_ca_file"),
            format!(
                "tls_ca_file {}/prod-ca.pem section broker.prod",
                dir.path().display()
            )
        );
        assert_eq!(
            shown("connect_timeout"),
            "connect_timeout 7s section broker.prod"
        );
        assert_eq!(shown("api_timeout"), "api_timeout 1m default");
        assert_eq!(shown("brokers"), "brokers dev, prod, slow");

        let output = run(
            &path,
            &[],
            &["--broker", "prod", "config", "show", "-o", "json"],
        );
        assert_code(&output, 0);
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(
            json["urls"],
            serde_json::json!({
                "value": ["amqp://app:****@rabbit1.example/shop",
                          "amqps://ops:****@rabbit2.example:5671/shop"],
                "from": "section",
                "name": "broker.prod"
            })
        );
        assert_eq!(json["config_file"], path.display().to_string());
        assert_eq!(json["tls_cert_file"]["value"], serde_json::Value::Null);
    }

    #[test]
    fn options_beat_the_section_and_the_section_beats_the_environment() {
        let dir = common::scratch_dir();
        let path = prod(dir.path(), 0o600);
        // The harness sets RMQLAB_URL: --broker beats it.
        let output = run(
            &path,
            &[("RMQLAB_API_URL", "http://elsewhere:15672")],
            &[
                "--broker",
                "prod",
                "--connect-timeout",
                "2s",
                "config",
                "show",
            ],
        );
        assert_code(&output, 0);
        let stdout = text(&output.stdout);
        assert!(
            setting(&stdout, "urls")
                .ends_with("section broker.prod | amqps://ops:****@rabbit2.example:5671/shop"),
            "{stdout}"
        );
        assert_eq!(
            setting(&stdout, "connect_timeout"),
            "connect_timeout 2s flag --connect-timeout"
        );
        assert!(
            setting(&stdout, "api_url").contains("section broker.prod"),
            "{stdout}"
        );
        // --url replaces the section's URLs, and takes its user, password and vhost where it
        // names none.
        let output = run(
            &path,
            &[],
            &[
                "--broker",
                "prod",
                "--url",
                "amqp://node3.example",
                "config",
                "show",
            ],
        );
        assert_eq!(
            setting(&text(&output.stdout), "urls"),
            "urls amqp://app:****@node3.example/shop flag --url"
        );
        // A section without URLs leaves the address to the environment.
        let output = run(
            &path,
            &[("RMQLAB_URL", "amqp://u:p@from-env.example/%2f")],
            &["--broker", "slow", "config", "show"],
        );
        let stdout = text(&output.stdout);
        assert_eq!(
            setting(&stdout, "urls"),
            "urls amqp://u:****@from-env.example/%2f env RMQLAB_URL"
        );
        assert_eq!(
            setting(&stdout, "reconnect_timeout"),
            "reconnect_timeout 1h section broker.slow"
        );
    }

    #[test]
    fn the_broker_variable_with_an_address_variable_is_a_usage_error_unless_an_option_settles_it() {
        let dir = common::scratch_dir();
        let path = prod(dir.path(), 0o600);
        let env = [("RMQLAB_BROKER", "prod"), ("RMQLAB_URL", NOWHERE)];
        let output = run(&path, &env, &["config", "show"]);
        assert_code(&output, 2);
        let stderr = text(&output.stderr);
        assert!(
            stderr.starts_with(
                "rmqlab: error: RMQLAB_BROKER=prod and RMQLAB_URL are both set in the environment"
            ),
            "{stderr}"
        );
        assert!(
            stderr.contains("hint: say which on the command line"),
            "{stderr}"
        );
        for settled in [&["--broker", "prod"][..], &["--url", NOWHERE]] {
            let output = run(&path, &env, &[settled, &["config", "show"]].concat());
            assert_code(&output, 0);
        }
        // AMQP_URL, which other tools set too, is simply beaten by the section.
        let output = run(
            &path,
            // An empty variable counts as unset.
            &[
                ("RMQLAB_BROKER", "prod"),
                ("RMQLAB_URL", ""),
                ("AMQP_URL", NOWHERE),
            ],
            &["config", "show"],
        );
        assert_code(&output, 0);
        let urls = setting(&text(&output.stdout), "urls");
        assert!(urls.contains("section broker.prod"), "{urls}");
    }

    #[test]
    fn the_tls_files_of_a_section_are_the_ones_read_and_the_variables_come_after() {
        let dir = common::scratch_dir();
        let path = write_config(
            dir.path(),
            "[broker.t]\nurl = \"amqps://127.0.0.1:1\"\ntls_ca_file = \"missing-ca.pem\"\n",
            0o600,
        );
        let env = [("RMQLAB_TLS_CA_FILE", "/from/env/ca.pem")];
        let output = run(&path, &env, &["--broker", "t", "hello", "send"]);
        assert_code(&output, 66);
        assert!(
            text(&output.stderr).starts_with(&format!(
                "rmqlab: error: cannot read {}/missing-ca.pem\n",
                dir.path().display()
            )),
            "{}",
            text(&output.stderr)
        );
        let output = run(&path, &env, &["config", "show"]);
        assert_eq!(
            setting(&text(&output.stdout), "tls_ca_file"),
            "tls_ca_file /from/env/ca.pem env RMQLAB_TLS_CA_FILE"
        );
        let output = run(
            &path,
            &[("RMQLAB_TLS_INSECURE", "maybe")],
            &["config", "show"],
        );
        assert_code(&output, 2);
    }

    #[test]
    fn without_a_broker_the_default_file_is_not_read() {
        let dir = common::scratch_dir();
        fs::create_dir(dir.path().join("rmqlab")).unwrap();
        fs::write(dir.path().join("rmqlab/config.toml"), "not toml [").unwrap();
        let output = rmqlab()
            .env("XDG_CONFIG_HOME", dir.path())
            .env("RMQLAB_URL", NOWHERE)
            .args(["hello", "send"])
            .output()
            .unwrap();
        assert_code(&output, 69);
    }

    #[test]
    fn a_file_others_can_read_that_holds_a_password_warns() {
        let dir = common::scratch_dir();
        for mode in [0o644, 0o640] {
            let path = prod(dir.path(), mode);
            let output = run(&path, &[], &["-q", "--broker", "prod", "config", "show"]);
            assert_code(&output, 0);
            assert_eq!(
                text(&output.stderr),
                format!(
                    " [!] {0} holds a password and other users can read it: chmod 600 {0}\n",
                    path.display()
                )
            );
        }
        let path = prod(dir.path(), 0o600);
        let output = run(&path, &[], &["--broker", "prod", "config", "show"]);
        assert_eq!(text(&output.stderr), "");
        // Without a password, reading it is no secret.
        let path = write_config(dir.path(), "[broker.a]\nurl = \"amqp://u@h\"\n", 0o644);
        let output = run(&path, &[], &["--broker", "a", "config", "show"]);
        assert_eq!(text(&output.stderr), "");
    }

    #[test]
    fn a_broken_file_is_one_line_with_its_file_and_line_and_exit_78() {
        let dir = common::scratch_dir();
        for (content, message) in [
            (
                format!("[broker.a]\nurl = \"amqp://h\"\npassword = {SECRET}\n"),
                ":3: ",
            ),
            (
                "[broker.a]\nurl = \"amqp://h\"\n\nurlz = \"amqp://elsewhere\"\n".into(),
                ":4: unknown key `urlz`, expected one of `url`, `urls`",
            ),
            (
                format!("[broker.a]\ntls_insecure = \"{SECRET}\"\n"),
                ":2: invalid type: string, expected a boolean",
            ),
            (
                "[brokers.a]\n".into(),
                ":1: unknown key `brokers`, expected `broker`",
            ),
        ] {
            let path = write_config(dir.path(), &content, 0o600);
            for args in [&["--broker", "a", "hello", "send"][..], &["config", "show"]] {
                let output = run(&path, &[], args);
                assert_code(&output, 78);
                let stderr = text(&output.stderr);
                assert!(
                    stderr.starts_with(&format!("rmqlab: error: {}{message}", path.display())),
                    "{content}: {stderr}"
                );
                assert_eq!(stderr.lines().count(), 1, "{stderr}");
            }
        }
    }

    #[test]
    fn an_unknown_broker_lists_the_known_ones_and_a_missing_file_is_66() {
        let dir = common::scratch_dir();
        let path = prod(dir.path(), 0o600);
        let output = run(&path, &[], &["--broker", "prdo", "hello", "send"]);
        assert_code(&output, 78);
        assert_eq!(
            text(&output.stderr),
            format!(
                "rmqlab: error: no broker 'prdo' in {}: it has dev, prod, slow\n",
                path.display()
            )
        );
        let missing = dir.path().join("absent.toml");
        for args in [
            &["--broker", "prod", "hello", "send"][..],
            &["config", "show"],
        ] {
            let output = run(&missing, &[], args);
            assert_code(&output, 66);
            let stderr = text(&output.stderr);
            assert!(
                stderr.starts_with(&format!(
                    "rmqlab: error: cannot read the config file {}\n",
                    missing.display()
                )),
                "{stderr}"
            );
            assert!(
                stderr.contains("hint: write one with a [broker.NAME] section"),
                "{stderr}"
            );
        }
        // --broker without --config reads the default file: XDG_CONFIG_HOME's.
        let output = rmqlab()
            .env("XDG_CONFIG_HOME", dir.path())
            .args(["--broker", "prod", "hello", "send"])
            .output()
            .unwrap();
        assert_code(&output, 66);
        let expected = format!("{}/rmqlab/config.toml", dir.path().display());
        assert!(
            text(&output.stderr).contains(&expected),
            "{}",
            text(&output.stderr)
        );
    }

    #[test]
    fn a_bad_value_in_a_section_names_the_section_and_hides_the_password() {
        let dir = common::scratch_dir();
        let path = write_config(
            dir.path(),
            &format!("[broker.a]\nurls = [\"amqp://h1\", \"amqp://u:{SECRET}@h2:99999\"]\n"),
            0o600,
        );
        let output = run(&path, &[], &["--broker", "a", "hello", "send"]);
        assert_code(&output, 2);
        assert_eq!(
            text(&output.stderr),
            format!(
                "rmqlab: error: invalid broker URI 'amqp://u:****@h2:99999' (URL 2 of 2 in urls \
                 of [broker.a] in {}): invalid port number\n",
                path.display()
            )
        );
        let path = write_config(
            dir.path(),
            "[broker.a]\nurl = \"amqps://h\"\ntls_cert_file = \"/c.pem\"\n",
            0o600,
        );
        let output = run(&path, &[], &["--broker", "a", "hello", "send"]);
        assert_code(&output, 2);
        assert!(
            text(&output.stderr).contains(&format!(
                "a client certificate or key from tls_cert_file of [broker.a] in {} needs a \
                 --tls-key-file too",
                path.display()
            )),
            "{}",
            text(&output.stderr)
        );
        // An option gives the other half; alone, it is as incomplete.
        let output = run(
            &path,
            &[],
            &[
                "--broker",
                "a",
                "--tls-key-file",
                "/k.pem",
                "config",
                "show",
            ],
        );
        assert_code(&output, 0);
        let stdout = text(&output.stdout);
        assert_eq!(
            setting(&stdout, "tls_cert_file"),
            "tls_cert_file /c.pem section broker.a"
        );
        assert_eq!(
            setting(&stdout, "tls_key_file"),
            "tls_key_file /k.pem flag --tls-key-file"
        );
        let output = run(&path, &[], &["--tls-key-file", "/k.pem", "hello", "send"]);
        assert_code(&output, 2);
        assert!(
            text(&output.stderr).contains("from --tls-key-file needs a --tls-cert-file too"),
            "{}",
            text(&output.stderr)
        );
    }
}

/// `rmqlab ARGS >&-`, with no broker: what it printed and its exit code.
fn with_stdout_closed(args: &str) -> Output {
    common::command("sh")
        .arg("-c")
        .arg(format!("exec \"$0\" {args} >&-"))
        .arg(common::BIN)
        .env("RMQLAB_URL", NOWHERE)
        .env("RMQLAB_API_URL", "http://127.0.0.1:1/")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A stdout closed as rmqlab starts (`>&-`) is an output error (74), not a silent success:
/// Rust's runtime puts /dev/null in its place, where every write would be lost.
#[test]
fn a_closed_stdout_is_an_output_error() {
    for args in [
        "--help",
        "--version",
        "completions bash",
        "topics match 'a.*' a.b",
    ] {
        let output = with_stdout_closed(args);
        assert_code(&output, 74);
        let stderr = text(&output.stderr);
        assert!(
            stderr.starts_with("rmqlab: error: cannot write to standard output\n"),
            "{args}: {stderr}"
        );
        assert!(stderr.contains("Bad file descriptor"), "{args}: {stderr}");
    }
    // `>/dev/null` is a choice, not a closed stdout.
    let output = common::command("sh")
        .arg("-c")
        .arg("exec \"$0\" --version >/dev/null")
        .arg(common::BIN)
        .output()
        .unwrap();
    assert_code(&output, 0);
}

#[test]
fn confirms_count_zero_is_a_usage_error() {
    let output = rmqlab_nowhere(&["confirms", "--count", "0"]);
    assert_code(&output, 2);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("it must be 1 or more"), "{stderr}");
    assert!(!stderr.contains("18446744073709551615"), "{stderr}");
}

/// A limit of 0s on a wait would give up before anything could answer: a usage error (2),
/// before connecting.
#[test]
fn zero_timeouts_are_usage_errors() {
    for args in [
        &["--connect-timeout", "0s", "hello", "send", "x"][..],
        &["--api-timeout", "0s", "queues", "list"][..],
        &["hello", "send", "--confirm-timeout", "0s", "x"][..],
        &["task", "new", "--confirm-timeout", "0ms", "x"][..],
    ] {
        let output = rmqlab_nowhere(args);
        assert_code(&output, 2);
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains("it must be more than 0"),
            "{args:?}: {stderr}"
        );
    }
    // The least limit above 0 passes the check and meets the (absent) broker.
    let output = rmqlab_nowhere(&["--connect-timeout", "1ms", "hello", "send", "x"]);
    assert_ne!(output.status.code(), Some(2), "{}", text(&output.stderr));
}

#[test]
fn a_vhost_named_dot_in_a_uri_is_refused_not_read_as_another_vhost() {
    // URLs drop `.` and `..` path steps (encoded too): `amqp://h/..` would reach no vhost, and
    // `amqp://h/a/../b` the vhost `b`.
    for (path, step) in [
        ("..", ".."),
        ("%2E%2E", ".."),
        (".", "."),
        ("%2e", "."),
        ("a/../b", ".."),
    ] {
        let url = format!("amqp://guest:Sekr1t@127.0.0.1:1/{path}?heartbeat=5");
        let output = rmqlab()
            .args(["--url", &url, "hello", "send"])
            .output()
            .unwrap();
        assert_code(&output, 2);
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains(&format!(
                ": a vhost named '{step}' cannot be written in a URI: URLs read '{step}' \
                 (encoded or not) as a step in the path\n"
            )),
            "{path}: {stderr}"
        );
        assert!(!stderr.contains("Sekr1t"), "{stderr}");
    }
    let fine = rmqlab_nowhere(&["--url", "amqp://127.0.0.1:1/.a..%2F..b", "hello", "send"]);
    assert_code(&fine, 69);
    // --stream-url read `/..` as the default vhost '/'.
    for path in ["..", "%2e%2E", "a/../b"] {
        let url = format!("rabbitmq-stream://guest:Sekr1t@127.0.0.1:1/{path}");
        let output = rmqlab_nowhere(&["--stream-url", &url, "stream", "send", "s", "x"]);
        assert_code(&output, 2);
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains(": a vhost named '..' cannot be written in a URL: URLs read '..'"),
            "{path}: {stderr}"
        );
        assert!(!stderr.contains("Sekr1t"), "{stderr}");
    }
}
