//! Shell completion of live names (issue 16, part 6): the scripts under completions/ call
//! rmqlab at each Tab, which asks the broker's management API for queue and exchange names.

use crate::common::{BIN, TestExchange, TestQueue, broker, command, text};
use std::{
    net::TcpListener,
    path::Path,
    time::{Duration, Instant},
};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// PATH with the rmqlab under test first: the scripts call `rmqlab`.
fn path_with_rmqlab() -> std::ffi::OsString {
    let bin = Path::new(BIN).parent().unwrap();
    let mut paths = vec![bin.to_path_buf()];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).unwrap()
}

/// The words bash offers for the last word of `line`, after sourcing the committed script.
fn bash_complete(line: &str) -> Vec<String> {
    bash_complete_with(line, &[])
}

/// [`bash_complete`] with these variables set (or, with an empty value, unset).
fn bash_complete_with(line: &str, envs: &[(&str, &str)]) -> Vec<String> {
    let script = r#"
        source completions/rmqlab.bash
        read -ra COMP_WORDS <<< "$1"
        [[ "$1" == *" " ]] && COMP_WORDS+=("")
        COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
        COMP_LINE="$1"; COMP_POINT=${#1}
        _clap_complete_rmqlab rmqlab "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
        printf '%s\n' "${COMPREPLY[@]}"
    "#;
    let mut bash = command("bash");
    bash.current_dir(ROOT).env("PATH", path_with_rmqlab());
    for (name, value) in envs {
        match value.is_empty() {
            true => bash.env_remove(name),
            false => bash.env(name, value),
        };
    }
    let output = bash.args(["-c", script, "bash", line]).output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout)
        .lines()
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect()
}

/// What fish offers for `line` (`complete -C`), after sourcing the committed script.
fn fish_complete(line: &str) -> Vec<String> {
    let output = command("fish")
        .current_dir(ROOT)
        .env("PATH", path_with_rmqlab())
        .args([
            "-c",
            "source completions/rmqlab.fish; complete -C $argv[1]",
            line,
        ])
        .output()
        .expect("fish (scripts/test installs it)");
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout)
        .lines()
        .map(|line| line.split('\t').next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn queue_and_exchange_names_come_from_the_broker() {
    let q = TestQueue::new("complete_me");
    let other = TestQueue::new("complete_me_too");
    broker::declare(q.name(), true).unwrap();
    broker::declare(other.name(), true).unwrap();
    let prefix = &q.name()[..q.name().len() - 2];
    for line in [
        format!("rmqlab queues purge {prefix}"),
        format!("rmqlab hello recv --queue {prefix}"),
        format!("rmqlab task new --queue {prefix}"),
        format!("rmqlab queues peek {prefix}"),
        format!("rmqlab queues move {prefix}"),
        format!("rmqlab queues move src {prefix}"),
        format!("rmqlab queues dead-letters {prefix}"),
        format!("rmqlab queues dead-letters dlq --from-queue {prefix}"),
    ] {
        let words = bash_complete(&line);
        assert!(words.contains(&q.name().to_string()), "{line}: {words:?}");
        assert!(
            words.iter().all(|word| word.starts_with(prefix)),
            "{line}: {words:?}"
        );
    }
    let words = fish_complete(&format!("rmqlab queues delete {prefix}"));
    assert!(words.contains(&q.name().to_string()), "{words:?}");

    // Exchanges for --exchange, and not queues.
    let x = TestExchange::new("complete_x");
    rmqlab_declares_exchange(&x.0);
    let words = bash_complete(&format!("rmqlab pubsub emit --exchange {}", x.0));
    assert_eq!(words, vec![x.0.clone()]);
    let words = bash_complete(&format!("rmqlab queues move src --to-exchange {}", x.0));
    assert_eq!(words, vec![x.0.clone()]);
    let words = bash_complete(&format!("rmqlab pubsub emit --exchange {prefix}"));
    assert!(words.is_empty(), "{words:?}");
    // What is not a name still completes from the definition.
    assert_eq!(
        bash_complete("rmqlab queues list -o "),
        ["table", "tsv", "json"]
    );
}

fn rmqlab_declares_exchange(name: &str) {
    let output = crate::common::rmqlab()
        .args(["pubsub", "emit", "--exchange", name, "-q", "x"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
}

#[test]
fn a_silent_or_absent_api_completes_nothing_quickly() {
    // Accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    for api in [
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{closed_port}"),
    ] {
        let started = Instant::now();
        let words = bash_complete(&format!("rmqlab --api-url {api} queues purge rmqlab"));
        assert!(words.is_empty(), "{api}: {words:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{api}: a Tab waited {:?}",
            started.elapsed()
        );
    }
    drop(silent);
}

#[test]
fn the_broker_named_on_the_line_is_asked_and_unsafe_names_are_never_offered() {
    let q = TestQueue::new("complete_line");
    broker::declare(q.name(), true).unwrap();
    // A name the shell would run a command from, were it put on the line as it is.
    let hostile = TestQueue(format!("{};touch${{IFS}}x", q.name()));
    broker::declare(hostile.name(), true).unwrap();
    let api = crate::common::api_url_with("guest", "guest");
    // The environment names nothing that answers: only the line does (bash splits its URLs
    // at `:` and `=`).
    let nowhere = [
        ("RMQLAB_URL", "amqp://guest:guest@127.0.0.1:1/%2f"),
        ("RMQLAB_API_URL", "http://127.0.0.1:1"),
    ];
    for line in [
        format!("rmqlab --api-url {api} queues purge {}", q.name()),
        format!("rmqlab --api-url={api} hello recv --queue {}", q.name()),
        format!(
            "rmqlab --url {} --api-url {api} queues delete {}",
            crate::common::broker_url(),
            q.name()
        ),
    ] {
        let words = bash_complete_with(&line, &nowhere);
        assert_eq!(words, vec![q.name().to_string()], "{line}");
    }
    let words = bash_complete(&format!("rmqlab queues purge {}", q.name()));
    assert_eq!(
        words,
        vec![q.name().to_string()],
        "the hostile name is not offered"
    );
}
