//! What a person at a terminal sees: progress and colour on stderr under a pseudo-terminal, and
//! none of it when stderr is a pipe or a file. stdout is the same either way.

use crate::common::{BIN, TestQueue, broker, command, rmqlab, scratch_dir, text};

/// Runs `shell` under a pseudo-terminal (util-linux `script`); returns what the terminal
/// showed. Redirections inside `shell` still apply. The rmqlab it starts gets the harness's
/// clean environment, then `envs`.
pub(crate) fn on_terminal(shell: &str, envs: &[(&str, &str)]) -> String {
    let output = command("script")
        .args(["-qec", shell, "/dev/null"])
        .envs(envs.iter().copied())
        .output()
        .expect("script (from util-linux) runs commands under a pseudo-terminal");
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout)
}

/// Runs `shell` with stdout and stderr going to pipes, in the same environment as
/// [`on_terminal`].
fn piped(shell: &str, envs: &[(&str, &str)]) -> (String, String) {
    let output = command("sh")
        .args(["-c", shell])
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    (text(&output.stdout), text(&output.stderr))
}

#[test]
fn publishing_shows_a_counter_on_a_terminal_only() {
    let q = TestQueue::new("progress_publish");
    let dir = scratch_dir();
    let tty_out = dir.path().join("tty.out");
    let shown = on_terminal(
        &format!(
            "seq 30000 | {BIN} task new --queue {q} -f - > '{}'",
            tty_out.display()
        ),
        &[],
    );
    assert!(
        shown.contains("confirmed") && shown.contains("/s"),
        "no counter: {shown:?}"
    );
    assert!(
        shown.contains("30,000 confirmed"),
        "the counter reaches the end: {shown:?}"
    );

    let (stdout, stderr) = piped(&format!("seq 30000 | {BIN} task new --queue {q} -f -"), &[]);
    assert_eq!(
        stderr, "",
        "no progress bytes when stderr is not a terminal"
    );
    assert_eq!(
        std::fs::read_to_string(&tty_out).unwrap(),
        stdout,
        "stdout is the same"
    );
    assert_eq!(broker::ready(q.name()), 60000);

    // A regular file has a known size: a bar with a percentage and an ETA.
    let input = dir.path().join("lines.txt");
    std::fs::write(
        &input,
        (1..=30000).map(|i| format!("{i}\n")).collect::<String>(),
    )
    .unwrap();
    let shown = on_terminal(
        &format!(
            "{BIN} task new --queue {q} -f '{}' > /dev/null",
            input.display()
        ),
        &[],
    );
    assert!(
        shown.contains("100%") && shown.contains("eta"),
        "no bar: {shown:?}"
    );
}

#[test]
fn quiet_hides_progress_even_on_a_terminal() {
    let q = TestQueue::new("progress_quiet");
    let shown = on_terminal(
        &format!("seq 30000 | {BIN} -q task new --queue {q} -f - > /dev/null"),
        &[],
    );
    assert_eq!(shown, "");
}

#[test]
fn a_worker_shows_a_spinner_while_working_and_clears_it() {
    let q = TestQueue::new("progress_work");
    broker::publish(q.name(), &["slow....", "slow...."]);
    let dir = scratch_dir();
    let tty_out = dir.path().join("tty.out");
    let args = format!("task work --queue {q} --count 1 --dot-duration 150ms");
    let shown = on_terminal(&format!("{BIN} {args} > '{}'", tty_out.display()), &[]);
    assert!(
        shown.contains("working") && shown.contains("dot 1/4"),
        "no spinner: {shown:?}"
    );
    let (stdout, stderr) = piped(&format!("{BIN} {args}"), &[]);
    assert_eq!(stdout, " [x] Received slow....\n [x] Done\n");
    assert_eq!(std::fs::read_to_string(&tty_out).unwrap(), stdout);
    assert!(
        !stderr.contains("working") && !stderr.contains('\r'),
        "{stderr:?}"
    );
}

#[test]
fn status_markers_are_coloured_on_a_terminal_unless_no_color() {
    let q = TestQueue::new("colour");
    let args = format!("hello recv --queue {q} --idle-timeout 100ms");
    let cyan = "\x1b[36m [*]\x1b[0m Waiting";
    assert!(on_terminal(&format!("{BIN} {args}"), &[]).contains(cyan));
    let plain = on_terminal(&format!("{BIN} {args}"), &[("NO_COLOR", "1")]);
    assert!(
        plain.contains(" [*] Waiting") && !plain.contains('\x1b'),
        "{plain:?}"
    );
    let never = on_terminal(&format!("{BIN} --color never {args}"), &[]);
    assert!(!never.contains('\x1b'), "{never:?}");
    let (_, stderr) = piped(&format!("{BIN} {args}"), &[]);
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
    let (stdout, stderr) = piped(&format!("{BIN} --color always {args}"), &[]);
    assert!(stderr.contains(cyan), "{stderr:?}");
    assert!(!stdout.contains('\x1b'));
}

#[test]
fn errors_are_coloured_only_on_a_terminal() {
    let shown = on_terminal(
        &format!("{BIN} --url amqp://guest:guest@127.0.0.1:1/%2f hello send || true"),
        &[],
    );
    assert!(
        shown.contains("\x1b[1;31mrmqlab: error:\x1b[0m cannot reach"),
        "{shown:?}"
    );
    let output = rmqlab()
        .args([
            "--url",
            "amqp://guest:guest@127.0.0.1:1/%2f",
            "hello",
            "send",
        ])
        .output()
        .unwrap();
    assert!(text(&output.stderr).starts_with("rmqlab: error: cannot reach"));
}
