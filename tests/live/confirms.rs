//! Tutorial 7: `confirms` publishes exactly --count messages with each strategy. No timing is
//! asserted here: that is the benchmark's job.

use crate::common::{assert_code, rmq, text};

#[test]
fn every_strategy_publishes_exactly_the_count() {
    let output = rmq("-v confirms --count 300 --batch-size 7", None);
    assert_code(&output, 0);
    let stdout = text(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("Published 300 messages individually in "),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("Published 300 messages in batch in "),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("Published 300 messages and handled confirms asynchronously in "),
        "{stdout}"
    );
    for strategy in ["individual", "batch", "async"] {
        let row = lines
            .iter()
            .find(|line| line.contains(&format!(" {strategy} ")))
            .unwrap_or_else(|| panic!("no {strategy} row: {stdout}"));
        assert!(row.contains(" 300 "), "{row}");
    }
    // The depth checked before the queue went, strategy by strategy.
    let stderr = text(&output.stderr);
    for strategy in ["individual", "batch", "async"] {
        assert!(
            stderr.contains(&format!("{strategy}: queue '"))
                && stderr.contains("held 300 message(s), 300 confirmed"),
            "{stderr}"
        );
    }
}

#[test]
fn one_strategy_alone() {
    let output = rmq("confirms --count 1000 --strategy async", None);
    assert_code(&output, 0);
    let stdout = text(&output.stdout);
    assert!(
        stdout.starts_with("Published 1,000 messages and handled confirms asynchronously in "),
        "{stdout}"
    );
    assert!(!stdout.contains("individual"), "{stdout}");
}

#[test]
fn ctrl_c_stops_the_async_strategy_by_the_signal() {
    let run = crate::common::Running::start(&[
        "-v",
        "confirms",
        "--count",
        "100000000",
        "--strategy",
        "async",
    ]);
    run.wait_for_stderr("connecting to", std::time::Duration::from_secs(30));
    run.signal("INT");
    let (status, _, stderr) = run.finish_status(std::time::Duration::from_secs(30));
    crate::common::assert_ended_by(&status, "INT", &stderr);
    assert!(!stderr.contains("rmqlab: error"), "{stderr}");
}
