//! Several broker URLs (`--url` repeated, or a comma-separated RMQLAB_URL): the first that
//! answers is used, `-v` says which and why the others were skipped, and no password is shown.
//! Failing over after a lost connection needs nodes a test may stop: see tests/faults.rs.

use crate::common::{
    TestQueue, api_base, assert_code, assert_hidden, assert_login_refused, broker, broker_url,
    rmqlab, test_api_url, text,
};
use std::{
    process::Output,
    time::{Duration, Instant},
};

const SECRET: &str = "Sekr1t-urls-pw";

/// A URL where nothing listens, with a password that must never be shown.
fn closed(port: u16) -> String {
    format!("amqp://guest:{SECRET}@127.0.0.1:{port}/%2f")
}

/// The broker under test with `password` instead of its own.
fn with_password(password: &str) -> String {
    let mut url = url::Url::parse(&broker_url()).unwrap();
    url.set_password(Some(password)).unwrap();
    url.to_string()
}

/// The broker under test as rmqlab shows it.
fn shown(url: &str) -> String {
    let mut url = url::Url::parse(url).unwrap();
    if url.password().is_some() {
        url.set_password(Some("****")).unwrap();
    }
    url.to_string()
}

/// rmqlab with RMQLAB_URL set to `list`.
fn with_list(list: &str, args: &[&str]) -> Output {
    rmqlab()
        .env("RMQLAB_URL", list)
        .args(args)
        .output()
        .unwrap()
}

fn assert_no_secret(output: &Output) {
    assert_hidden(output, SECRET);
}

#[test]
fn a_closed_port_first_in_the_list_is_skipped_and_verbose_says_so() {
    let q = TestQueue::new("urls-closed-first");
    let list = format!(" {} , {} ,", closed(1), broker_url());
    let skipped = "rmqlab: skipping amqp://guest:****@127.0.0.1:1/%2f: cannot reach the broker at \
                   amqp://guest:****@127.0.0.1:1/%2f";
    let connected = format!("rmqlab: connected to {}", shown(&broker_url()));
    // The one-message path, then the general one, then a consumer.
    for (args, body) in [
        (["-v", "hello", "send", "--queue", q.name(), "one"], "one"),
        (["-v", "task", "new", "--queue", q.name(), "two"], "two"),
    ] {
        let output = with_list(&list, &args);
        assert_code(&output, 0);
        let stderr = text(&output.stderr);
        assert!(stderr.contains(skipped), "{stderr}");
        assert!(stderr.contains(&connected), "{stderr}");
        assert_eq!(text(&output.stdout), format!(" [x] Sent '{body}'\n"));
        assert_no_secret(&output);
    }
    assert_eq!(broker::ready(q.name()), 2);
    let output = rmqlab()
        .args(["--url", &closed(1), "--url", &broker_url(), "-v"])
        .args(["task", "work", "--queue", q.name(), "--count", "2"])
        .args(["--dot-duration", "0s"])
        .output()
        .unwrap();
    assert_code(&output, 0);
    assert!(
        text(&output.stderr).contains(skipped),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(
        text(&output.stdout),
        " [x] Received one\n [x] Done\n [x] Received two\n [x] Done\n"
    );
    assert_no_secret(&output);
    assert_eq!(broker::ready(q.name()), 0);
}

/// Credentials may differ per URL: a node that refuses the login is skipped, saying why,
/// without the password.
#[test]
fn a_refused_login_is_skipped_for_the_next_url_that_accepts() {
    let q = TestQueue::new("urls-login");
    let list = format!("{},{}", with_password(SECRET), broker_url());
    let skipped = format!(
        "rmqlab: skipping {}: the broker at {} refused the login of user 'guest'",
        shown(&with_password(SECRET)),
        shown(&with_password(SECRET))
    );
    for args in [
        ["-v", "hello", "send", "--queue", q.name(), "first"],
        ["-v", "task", "new", "--queue", q.name(), "second"],
    ] {
        let output = with_list(&list, &args);
        assert_code(&output, 0);
        assert!(
            text(&output.stderr).contains(&skipped),
            "{}",
            text(&output.stderr)
        );
        assert_no_secret(&output);
    }
    assert_eq!(broker::get(q.name()).unwrap().data, b"first");
    assert_eq!(broker::get(q.name()).unwrap().data, b"second");
}

/// None answering: 69 at once (as for one URL), each URL's failure named, the hint of an
/// unreachable broker; every node refusing the login: 77. No password in any of it.
#[test]
fn no_url_answering_is_69_quickly_and_names_each() {
    let q = TestQueue::new("urls-none");
    let list = format!("{},{}", closed(1), closed(2));
    for args in [
        &["hello", "send", "--queue", q.name()][..],
        &["task", "new", "--queue", q.name(), "x"],
        &["task", "work", "--queue", q.name()],
        &["rpc", "call", "--timeout", "5s", "3"],
    ] {
        let started = Instant::now();
        let output = with_list(&list, args);
        assert_code(&output, 69);
        assert!(started.elapsed() < Duration::from_secs(5), "{args:?}");
        let stderr = text(&output.stderr);
        assert!(
            stderr.starts_with("rmqlab: error: could not connect to any of the 2 broker URLs\n"),
            "{stderr}"
        );
        for port in [1, 2] {
            assert!(
                stderr.contains(&format!(
                    "caused by: cannot reach the broker at amqp://guest:****@127.0.0.1:{port}/%2f"
                )),
                "{stderr}"
            );
        }
        assert!(stderr.contains("hint: start a broker"), "{stderr}");
        assert_no_secret(&output);
    }
    let output = with_list(
        &format!("{}, {}", with_password(SECRET), closed(1)),
        &["task", "new", "--queue", q.name(), "x"],
    );
    assert_login_refused(&output, SECRET);
    assert!(
        text(&output.stderr).contains("caused by: the broker at amqp://guest:****@"),
        "{}",
        text(&output.stderr)
    );
    assert!(!broker::exists(q.name()), "nothing was declared");
}

/// `queues list` goes to the API of the first URL that answers: by default the API beside each
/// `--url` (with that URL's credentials), else the items of an `--api-url` list.
#[test]
fn the_management_api_follows_the_url_list() {
    let q = TestQueue::new("urls-api");
    broker::declare(q.name(), true).unwrap();
    let listed = |output: &Output| {
        text(&output.stdout)
            .lines()
            .any(|line| line.split('\t').any(|field| field == q.name()))
    };
    let filter = format!("^{}$", regex_escape(q.name()));
    let list_args = ["-v", "queues", "list", "-o", "tsv", "--filter", &filter];

    // An --api-url list: the closed port is skipped.
    let output = rmqlab()
        .args(["--api-url", &format!("http://127.0.0.1:1/, {}", api_base())])
        .args(list_args)
        .output()
        .unwrap();
    assert_code(&output, 0);
    assert!(listed(&output), "{}", text(&output.stdout));
    assert!(
        text(&output.stderr).contains("rmqlab: skipping the management API at http://127.0.0.1:1/"),
        "{}",
        text(&output.stderr)
    );

    // The URL list: the first URL's credentials are refused by the API beside it, the second's
    // accepted.
    let list = format!("{},{}", with_password(SECRET), broker_url());
    let mut command = rmqlab();
    command.env("RMQLAB_URL", &list).args(list_args);
    match test_api_url() {
        // The API derived from the URLs (the broker's host, port 15672).
        None => {
            let output = command.env_remove("RMQLAB_API_URL").output().unwrap();
            assert_code(&output, 0);
            assert!(listed(&output), "{}", text(&output.stdout));
            let stderr = text(&output.stderr);
            assert!(
                stderr.contains(
                    "rmqlab: skipping the management API at http://127.0.0.1:15672/: \
                     the management API at http://127.0.0.1:15672/ refused user 'guest'"
                ),
                "{stderr}"
            );
            assert_no_secret(&output);
        }
        // An API given (RMQLAB_API_URL, as for a broker not on 15672) wins over the URLs:
        // nothing is derived from them, the given one is used with the credentials of the
        // first URL, which it refuses (77), without showing them.
        Some(api) => {
            let output = command.output().unwrap();
            assert_code(&output, 77);
            let stderr = text(&output.stderr);
            assert!(!stderr.contains("skipping"), "{stderr}");
            assert!(
                stderr.contains(&format!("management API at {}", api.trim_end_matches('/'))),
                "{stderr}"
            );
            assert_no_secret(&output);
        }
    }
}

fn regex_escape(name: &str) -> String {
    name.replace('.', "\\.")
}

/// amqps:// items of a list are TLS each, as a single one is: a plain listener among them is
/// named as not TLS, never used in plaintext.
#[test]
fn amqps_items_of_a_list_are_tls_and_never_fall_back() {
    let q = TestQueue::new("urls-tls");
    let port = crate::common::broker_port();
    let list = format!(
        "amqps://guest:{SECRET}@127.0.0.1:1/%2f, amqps://guest:{SECRET}@127.0.0.1:{port}/%2f"
    );
    for args in [
        &["hello", "send", "--queue", q.name()][..],
        &["task", "work", "--queue", q.name()],
    ] {
        let output = with_list(&list, args);
        assert_code(&output, 69);
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains(&format!(
                "caused by: TLS to amqps://guest:****@127.0.0.1:{port}/%2f failed: the server \
                 did not answer TLS: is port {port} a TLS listener?"
            )),
            "{stderr}"
        );
        assert_no_secret(&output);
    }
    assert!(
        !broker::exists(q.name()),
        "nothing was declared in plaintext"
    );
}

/// `--shuffle-urls` draws a new order per process: over 20 runs, the closed port comes first in
/// some (and is skipped) and second in others (and is never tried); every run connects.
#[test]
fn shuffled_urls_vary_their_order_per_process() {
    let q = TestQueue::new("urls-shuffle");
    let list = format!("{},{}", closed(1), broker_url());
    let mut skipped = 0;
    for _ in 0..20 {
        let output = with_list(
            &list,
            &[
                "-v",
                "--shuffle-urls",
                "task",
                "new",
                "--queue",
                q.name(),
                "x",
            ],
        );
        assert_code(&output, 0);
        if text(&output.stderr).contains("skipping amqp://guest:****@127.0.0.1:1/%2f") {
            skipped += 1;
        }
    }
    assert!(
        (1..20).contains(&skipped),
        "skipped in {skipped} of 20 runs"
    );
    assert_eq!(broker::ready(q.name()), 20);
}

/// Without --api-url, a broker on another AMQP port than 5672 gets the API on port 15672 of its
/// host, which may be another broker's: rmqlab says so.
#[test]
fn a_guessed_api_beside_a_non_default_port_is_warned_about() {
    let output = rmqlab()
        .env_remove("RMQLAB_API_URL")
        .env("RMQLAB_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .args(["queues", "list", "--filter", "^nothing-by-this-name$"])
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(
            " [!] no --api-url: trying the management API on port 15672 of the host of \
             amqp://guest:****@127.0.0.1:1/%2f, whose AMQP port is 1; give --api-url"
        ),
        "{stderr}"
    );
    let output = rmqlab()
        .env_remove("RMQLAB_API_URL")
        .args(["queues", "list", "--filter", "^nothing-by-this-name$"])
        .output()
        .unwrap();
    let warned = text(&output.stderr).contains("no --api-url");
    assert_eq!(
        warned,
        crate::common::broker_port() != 5672,
        "{}",
        text(&output.stderr)
    );
}
