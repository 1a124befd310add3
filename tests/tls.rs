//! amqps:// against TLS listeners of the local broker, made by `scripts/broker-up --tls` with a
//! test CA: verification against --tls-ca-file, host names, client certificates, --tls-insecure,
//! and never a fallback to plaintext.

mod common;

use common::{TestQueue, assert_code, rmqlab, text};
use std::{path::PathBuf, process::Output, sync::Once};

const SECRET: &str = "Sekr1t-tls-pw";

/// The TLS listeners and certificates; made once per run (a broker restart drops listeners).
fn tls_dir() -> PathBuf {
    static SETUP: Once = Once::new();
    let dir = std::env::temp_dir().join("rmqlab-tls");
    SETUP.call_once(|| {
        let status =
            std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/broker-up"))
                .arg("--tls")
                .env("RMQLAB_TLS_DIR", &dir)
                .status()
                .expect("run scripts/broker-up --tls");
        assert!(
            status.success(),
            "scripts/broker-up --tls failed: the TLS tests need its listeners"
        );
    });
    dir
}

fn send(url: &str, q: &TestQueue, extra: &[&str]) -> Output {
    rmqlab()
        .env("RMQLAB_URL", url)
        .args(extra)
        .args(["hello", "send", "--queue", q.name(), "tls"])
        .output()
        .unwrap()
}

fn ca(dir: &std::path::Path) -> String {
    dir.join("ca.pem").display().to_string()
}

#[test]
fn amqps_with_the_ca_round_trips() {
    let dir = tls_dir();
    let q = TestQueue::new("tls_round_trip");
    let url = "amqps://guest:guest@localhost:5671/%2f";
    let sent = send(url, &q, &["--tls-ca-file", &ca(&dir)]);
    assert_code(&sent, 0);
    let received = rmqlab()
        .env("RMQLAB_URL", url)
        .env("RMQLAB_TLS_CA_FILE", ca(&dir))
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
    assert_code(&received, 0);
    assert_eq!(text(&received.stdout), "tls\n");
}

fn assert_refused(output: &Output, needle: &str) {
    assert_code(output, 69);
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with("rmqlab: error: TLS to amqps://guest:****@"),
        "{stderr}"
    );
    assert!(stderr.contains(needle), "{stderr}");
    assert!(!stderr.contains(SECRET), "{stderr}");
}

#[test]
fn an_unknown_ca_is_refused() {
    tls_dir();
    let q = TestQueue::new("tls_unknown_ca");
    let output = send(
        &format!("amqps://guest:{SECRET}@localhost:5671/%2f"),
        &q,
        &[],
    );
    assert_refused(&output, "UnknownIssuer");
    assert!(
        text(&output.stderr).contains("hint: pass the CA"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn a_host_name_mismatch_is_refused() {
    let dir = tls_dir();
    let q = TestQueue::new("tls_mismatch");
    // The certificate names "localhost", not "127.0.0.1".
    let output = send(
        &format!("amqps://guest:{SECRET}@127.0.0.1:5671/%2f"),
        &q,
        &["--tls-ca-file", &ca(&dir)],
    );
    assert_refused(&output, "not valid for name \"127.0.0.1\"");
}

#[test]
fn insecure_connects_with_a_loud_warning() {
    tls_dir();
    let q = TestQueue::new("tls_insecure");
    let output = send(
        "amqps://guest:guest@127.0.0.1:5671/%2f",
        &q,
        &["--tls-insecure"],
    );
    assert_code(&output, 0);
    assert!(
        text(&output.stderr).contains("--tls-insecure: the server's certificate is NOT verified"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn a_client_certificate_is_presented_when_required() {
    let dir = tls_dir();
    let q = TestQueue::new("tls_client_cert");
    let url = format!("amqps://guest:{SECRET}@localhost:5681/%2f");
    let without = send(&url, &q, &["--tls-ca-file", &ca(&dir)]);
    assert_refused(&without, "client certificate");
    assert!(
        text(&without.stderr).contains("hint: present a client certificate"),
        "{}",
        text(&without.stderr)
    );
    let with = rmqlab()
        .env("RMQLAB_URL", "amqps://guest:guest@localhost:5681/%2f")
        .env("RMQLAB_TLS_CA_FILE", ca(&dir))
        .env("RMQLAB_TLS_CERT_FILE", dir.join("client.pem"))
        .env("RMQLAB_TLS_KEY_FILE", dir.join("client.key"))
        .args(["hello", "send", "--queue", q.name()])
        .output()
        .unwrap();
    assert_code(&with, 0);
}

#[test]
fn amqps_never_falls_back_to_plaintext() {
    let dir = tls_dir();
    let q = TestQueue::new("tls_no_fallback");
    // 5672 speaks plain AMQP: the TLS handshake fails and nothing is sent in clear.
    let output = send(
        &format!("amqps://guest:{SECRET}@localhost:5672/%2f"),
        &q,
        &["--tls-ca-file", &ca(&dir), "--connect-timeout", "5s"],
    );
    assert_eq!(output.status.code(), Some(69), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "");
    assert!(!text(&output.stderr).contains(SECRET));
    assert_eq!(
        common::broker::queue_state(q.name()),
        None,
        "nothing declared"
    );
}
