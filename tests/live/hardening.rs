//! What a hostile input or a wrong setting must not do (issue 11, parts 3 and 4): drive the
//! terminal through a message or a name, mislead about TLS, a vhost or a built-in exchange, or
//! leave `scripts/broker-up --tls` content with a port held by something else.

use crate::{
    common::{
        BIN, TestExchange, TestQueue, assert_code, broker, broker_address, broker_port, command,
        rmqlab, run, scratch_dir, text,
    },
    terminal::on_terminal,
};
use std::{net::TcpListener, path::Path, process::Stdio};

/// A title change, a bell and a screen clear: what a hostile message or name may hold.
const HOSTILE: &str = "\x1b]0;PWNED\x07\x1b[2J";
/// The same, as rmqlab shows it.
const ESCAPED: &str = "\\x1b]0;PWNED\\a\\x1b[2J";
/// The start of the raw sequence, never to be seen.
const RAW: &str = "\x1b]0;PWNED";

#[test]
fn a_hostile_body_is_escaped_on_a_terminal_and_exact_with_o_body() {
    let q = TestQueue::new("hostile_body");
    broker::publish(q.name(), &[HOSTILE]);
    let shown = on_terminal(&format!("{BIN} hello recv --queue {q} --count 1"), &[]);
    assert!(
        !shown.contains(RAW),
        "raw escape reached the terminal: {shown:?}"
    );
    assert!(
        shown.contains(&format!(" [x] Received {ESCAPED}")),
        "{shown:?}"
    );
    assert_eq!(broker::ready(q.name()), 0, "the message was taken");

    broker::publish(q.name(), &[HOSTILE]);
    let output = rmqlab()
        .args([
            "hello",
            "recv",
            "--queue",
            q.name(),
            "--count",
            "1",
            "-o",
            "body",
        ])
        .output()
        .unwrap();
    assert_code(&output, 0);
    assert_eq!(
        output.stdout,
        format!("{HOSTILE}\n").as_bytes(),
        "byte-exact"
    );
}

#[test]
fn a_hostile_sent_line_is_escaped_on_a_terminal() {
    let q = TestQueue::new("hostile_sent");
    let shown = on_terminal(
        &format!("{BIN} hello send --queue {q} \"$(printf '\\033]0;PWNED\\007\\033[2J')\""),
        &[],
    );
    assert!(!shown.contains(RAW), "{shown:?}");
    assert!(
        shown.contains(&format!(" [x] Sent '{ESCAPED}'")),
        "{shown:?}"
    );
    // The message itself is unchanged.
    let message = broker::get(q.name()).expect("the message was published");
    assert_eq!(message.delivery.data, HOSTILE.as_bytes());
}

#[test]
fn hostile_names_are_escaped_on_stderr_and_in_queue_tables() {
    let q = TestQueue(format!(
        "{}{HOSTILE}",
        crate::common::unique_name("hostile_name")
    ));
    // Through lapin (-f), which reports each declaration with the queue's name.
    let output = run(
        &["-v", "hello", "send", "--queue", q.name(), "-f", "-"],
        Some(b"x\n"),
    );
    assert_code(&output, 0);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("declared"), "{stderr:?}");
    assert!(!stderr.contains(RAW), "{stderr:?}");
    assert!(stderr.contains(ESCAPED), "{stderr:?}");
    assert!(!stderr.contains('\x07'), "{stderr:?}");

    let prefix = q.name().split('\x1b').next().unwrap().to_string();
    let shown = on_terminal(
        &format!(
            "{BIN} queues list -o tsv --filter '^{}'",
            prefix.replace('.', "\\.")
        ),
        &[],
    );
    assert!(!shown.contains(RAW), "{shown:?}");
    // Escaped once: TSV's own escaping does not double the backslashes of `\x1b`.
    assert!(shown.contains(&format!("{prefix}{ESCAPED}")), "{shown:?}");
    assert!(!shown.contains("\\\\"), "{shown:?}");

    // A table is for people even through a pipe (`| less -R`): escaped there too; TSV through
    // a pipe is data, exact.
    let filter = format!("^{}", prefix.replace('.', "\\."));
    let table = run(
        &["queues", "list", "--columns", "name", "--filter", &filter],
        None,
    );
    assert_code(&table, 0);
    let table = text(&table.stdout);
    assert!(!table.contains(RAW) && table.contains(ESCAPED), "{table:?}");
    let tsv = run(
        &[
            "queues",
            "list",
            "--columns",
            "name",
            "-o",
            "tsv",
            "--filter",
            &filter,
        ],
        None,
    );
    assert!(
        text(&tsv.stdout).contains(HOSTILE),
        "{:?}",
        text(&tsv.stdout)
    );
}

#[test]
fn amqps_to_a_plain_port_asks_whether_it_is_a_tls_listener() {
    let q = TestQueue::new("not_tls");
    let port = broker_port();
    let output = rmqlab()
        .env(
            "RMQLAB_URL",
            format!("amqps://guest:guest@{}/%2f", broker_address()),
        )
        .args(["hello", "send", "--queue", q.name()])
        .output()
        .unwrap();
    assert_code(&output, 69);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "the server did not answer TLS: is port {port} a TLS listener?"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("start a broker"), "{stderr}");
    assert!(!broker::exists(q.name()), "nothing was declared");
}

#[test]
fn built_in_exchanges_get_no_hint_to_delete_them() {
    let output = rmqlab()
        .args([
            "pubsub",
            "listen",
            "--exchange",
            "amq.direct",
            "--count",
            "1",
        ])
        .output()
        .unwrap();
    assert_code(&output, 65);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("built-in exchanges"), "{stderr}");
    assert!(!stderr.contains("delete it"), "{stderr}");

    // A new name in the reserved namespace: the broker refuses to declare it.
    let reserved = TestExchange(format!("amq.{}", crate::common::unique_name("reserved")));
    let output = rmqlab()
        .args(["pubsub", "emit", "--exchange", &reserved.0, "x"])
        .output()
        .unwrap();
    assert_code(&output, 77);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("ACCESS_REFUSED"), "{stderr}");
    assert!(
        stderr.contains("names starting with 'amq.' are reserved"),
        "{stderr}"
    );
    assert!(!stderr.contains("delete it"), "{stderr}");
}

#[test]
fn the_publish_progress_counts_messages_per_second_up_to_the_real_total() {
    let q = TestQueue::new("progress_rate");
    let dir = scratch_dir();
    let input = dir.path().join("lines");
    let lines: String = (1..=18_001).map(|n| format!("{n}\n")).collect();
    std::fs::write(&input, lines).unwrap();
    let shown = on_terminal(
        &format!(
            "{BIN} task new --queue {q} -f '{}' > /dev/null",
            input.display()
        ),
        &[],
    );
    assert!(shown.contains("msg/s"), "{shown:?}");
    assert!(!shown.contains("B/s"), "a rate in bytes: {shown:?}");
    assert!(
        shown.contains("18,001 confirmed"),
        "the last frame shows the real total: {shown:?}"
    );
    assert_eq!(broker::ready(q.name()), 18_001);
}

/// `scripts/broker-up --tls` with the node's tools stubbed out (the shared node's listeners
/// are left alone) and its first TLS port held by another process.
#[test]
fn broker_up_tls_refuses_a_port_held_by_something_else() {
    let dir = scratch_dir();
    let stubs = dir.path().join("bin");
    std::fs::create_dir(&stubs).unwrap();
    for tool in ["rabbitmqctl", "rabbitmq-diagnostics", "rabbitmq-plugins"] {
        let path = stubs.join(tool);
        std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        make_executable(&path);
    }
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    let path = format!(
        "{}:{}",
        stubs.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = command(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/broker-up"))
        .arg("--tls")
        .env("PATH", path)
        .env("RMQLAB_TLS_DIR", dir.path().join("tls"))
        .env("BROKER_UP_TLS_PORT", port.to_string())
        .env("BROKER_UP_WAIT", "5")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_code(&output, 1);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "broker-up: error: 127.0.0.1:{port} is taken by something else"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("TLS ready"), "{stderr}");
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn an_internal_exchange_is_a_data_error_for_a_publisher_with_a_hint() {
    let x = TestExchange::new("internal");
    broker::block_on(async {
        let connection = broker::connect().await;
        let channel = connection.create_channel().await.unwrap();
        channel
            .exchange_declare(
                x.0.as_str().into(),
                lapin::ExchangeKind::Direct,
                lapin::options::ExchangeDeclareOptions {
                    durable: true,
                    internal: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .unwrap();
        connection.close(200, "done".into()).await.unwrap();
    });
    let output = rmqlab()
        .args(["routing", "emit", "--exchange", &x.0, "info", "hello"])
        .output()
        .unwrap();
    assert_code(&output, 65);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("internal exchange"), "{stderr}");
    assert!(
        stderr.contains("takes messages only from other exchanges"),
        "{stderr}"
    );
}

#[test]
fn a_terminal_of_zero_columns_gets_tables_of_their_natural_width() {
    let q = TestQueue::new("zero-columns-table-width");
    broker::declare(q.name(), true).unwrap();
    let filter = format!("^{}$", q.name().replace('.', "\\."));
    let shown = on_terminal(
        &format!(
            "stty cols 0 rows 0; {BIN} queues list --columns name,messages --filter '{filter}'"
        ),
        &[],
    );
    // Fitted to 0 columns, the name would be broken over many lines of a character or two.
    assert!(shown.contains(q.name()), "{shown:?}");
    assert!(shown.contains("messages"), "{shown:?}");
}
