//! The command line without a broker: help, usage errors, the README's usage block.

mod common;

use common::{assert_code, rmqlab, text};

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
