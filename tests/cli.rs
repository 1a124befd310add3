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
        ["routing", "emit"],
        ["routing", "listen"],
        ["topics", "emit"],
        ["topics", "listen"],
        ["topics", "match"],
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

/// A broker address where nothing listens: a command that tried to connect would exit 69.
const NOWHERE: &str = "amqp://guest:guest@127.0.0.1:1/%2f";

/// Runs rmqlab with `args`, pointed at [`NOWHERE`].
fn offline(args: &[&str]) -> std::process::Output {
    rmqlab()
        .env("RMQLAB_URL", NOWHERE)
        .args(args)
        .output()
        .unwrap()
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
        let output = offline(&command);
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
        let output = offline(&args);
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
        &offline(&["topics", "match", &"k".repeat(255), &"k".repeat(255)]),
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
fn topics_match_answers_the_tutorials_table_offline() {
    for (column, pattern) in ["*.orange.*", "*.*.rabbit", "lazy.#"].iter().enumerate() {
        let mut args = vec!["topics", "match", pattern];
        args.extend(TUTORIAL.iter().map(|(key, ..)| *key));
        let output = offline(&args);
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
        assert_code(&offline(&all), code);
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
    let output = offline(&["topics", "match", "a*b.#", "a*b.c"]);
    assert_code(&output, 0);
    assert_eq!(
        text(&output.stderr),
        " [!] binding key 'a*b.#': 'a*b' is a literal word; `*` and `#` are wildcards only as \
         whole words\n"
    );
    assert_code(&offline(&["topics", "match", "a*b.#", "axb.c"]), 1);
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
