//! `queues list/purge/delete` against the live broker's management API.

use crate::common::{
    Running, TestQueue, api_base, api_url_with, assert_code, assert_ended_by, broker,
    broker_address, eventually, rabbitmqctl, rabbitmqctl_cleanup, rmq, rmqlab, text, unique_name,
};
use lapin::options::{
    BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use serde_json::Value;
use std::{
    process::Output,
    time::{Duration, Instant},
};

/// Management statistics lag behind the broker by about 5 s.
const STATS: Duration = Duration::from_secs(30);

fn list(args: &str) -> Output {
    rmq(&format!("queues list {args}"), None)
}

fn json_rows(output: &Output) -> Vec<Value> {
    assert_code(output, 0);
    serde_json::from_slice::<Vec<Value>>(&output.stdout)
        .unwrap_or_else(|e| panic!("not a JSON array ({e}): {}", text(&output.stdout)))
}

#[test]
fn list_reports_ready_and_unacked_exactly() {
    let prefix = unique_name("depths");
    let (a, b) = (
        TestQueue(format!("{prefix}.a")),
        TestQueue(format!("{prefix}.b")),
    );
    broker::publish(&a.0, &["1", "2", "3"]);
    broker::publish(&b.0, &["1", "2"]);
    // Hold one of b's messages unacked while rmqlab looks.
    broker::block_on(async {
        let connection = broker::connect().await;
        let channel = connection.create_channel().await.unwrap();
        channel
            .basic_qos(1, BasicQosOptions::default())
            .await
            .unwrap();
        let _consumer = channel
            .basic_consume(
                b.0.as_str().into(),
                "holder".into(),
                BasicConsumeOptions::default(),
                Default::default(),
            )
            .await
            .unwrap();
        let filter = format!("--filter ^{} -o json", regex_escape(&prefix));
        let expected = |rows: &[Value]| {
            let pick = |name: &str| rows.iter().find(|row| row["name"] == name).cloned();
            matches!(
                (pick(&a.0), pick(&b.0)),
                (Some(ra), Some(rb))
                    if ra["messages_ready"] == 3 && ra["messages_unacknowledged"] == 0
                    && rb["messages_ready"] == 1 && rb["messages_unacknowledged"] == 1
                    && rb["consumers"] == 1 && rows.len() == 2
            )
        };
        eventually(STATS, "the API to report 3/0 and 1/1", || {
            expected(&json_rows(&list(&filter)))
        });
        let tsv = list(&format!("--filter ^{} -o tsv", regex_escape(&prefix)));
        assert_code(&tsv, 0);
        assert_eq!(
            text(&tsv.stdout),
            format!(
                "vhost\tname\tmessages_ready\tmessages_unacknowledged\tconsumers\n\
                 /\t{}\t3\t0\t0\n/\t{}\t1\t1\t1\n",
                a.0, b.0
            )
        );
        let _ = connection.close(200, "OK".into()).await;
    });
}

fn regex_escape(name: &str) -> String {
    name.replace('.', "\\.")
}

/// A classic queue for one test, and the `--filter` that lists it alone.
fn classic_queue(test: &str) -> (TestQueue, String) {
    let q = TestQueue::new(test);
    broker::declare_typed(q.name(), "classic");
    let only = format!("--filter ^{}$", regex_escape(q.name()));
    (q, only)
}

#[test]
fn filter_sort_and_reverse() {
    let prefix = unique_name("sorting");
    let queues: Vec<TestQueue> = ["x", "y", "z"]
        .iter()
        .map(|s| TestQueue(format!("{prefix}.{s}")))
        .collect();
    broker::publish(&queues[0].0, &["1", "2"]);
    broker::publish(&queues[1].0, &["1", "2", "3"]);
    broker::publish(&queues[2].0, &["1"]);
    let filter = format!("--filter ^{}", regex_escape(&prefix));
    eventually(STATS, "stats for the three queues", || {
        json_rows(&list(&format!("{filter} -o json")))
            .iter()
            .map(|row| row["messages_ready"].as_u64().unwrap_or(0))
            .sum::<u64>()
            == 6
    });
    let names = |args: &str| -> Vec<String> {
        let output = list(&format!("{filter} {args} -o tsv --no-headers"));
        assert_code(&output, 0);
        text(&output.stdout)
            .lines()
            .map(|line| line.split('\t').nth(1).unwrap().to_string())
            .collect()
    };
    let name = |i: usize| queues[i].0.clone();
    assert_eq!(names(""), [name(0), name(1), name(2)], "by name");
    assert_eq!(names("--sort messages_ready"), [name(2), name(0), name(1)]);
    assert_eq!(
        names("--sort messages_ready --reverse"),
        [name(1), name(0), name(2)]
    );
    assert_eq!(names("--sort name --reverse"), [name(2), name(1), name(0)]);

    // As the broker matches: caseless; and what only the broker can match (look-ahead), it does.
    let upper = format!("--filter ^{}", regex_escape(&prefix.to_uppercase()));
    let output = list(&format!("{upper} -o tsv --no-headers"));
    assert_eq!(text(&output.stdout).lines().count(), 3, "caseless");
    let ahead = format!(
        "--filter ^{}\\.(?!y) -o tsv --no-headers",
        regex_escape(&prefix)
    );
    let output = list(&ahead);
    assert_code(&output, 0);
    let listed: Vec<String> = text(&output.stdout)
        .lines()
        .map(|line| line.split('\t').nth(1).unwrap().to_string())
        .collect();
    assert_eq!(
        listed,
        [name(0), name(2)],
        "look-ahead, filtered by the broker"
    );
}

/// The default listing is the queue's own count, not the statistics (about 5 s behind): a
/// classic queue's depth is exact the moment the publisher's confirm arrives.
#[test]
fn a_classic_queues_depth_is_exact_right_after_publishing() {
    let (q, only) = classic_queue("exact");
    let filter = format!("--vhost / {only} -o tsv --no-headers");
    for (bodies, total) in [(&["1", "2"][..], 2), (&["3", "4", "5"][..], 5)] {
        broker::publish(q.name(), bodies);
        let output = list(&filter);
        assert_code(&output, 0);
        assert_eq!(text(&output.stdout), format!("{q}\t{total}\t0\t0\n"));
    }
}

/// `--columns` picks the API's fields, in tsv, JSON and table alike; `type` tells classic,
/// quorum and stream apart, and a replicated queue names its leader, members and the members
/// online.
#[test]
fn columns_choose_fields_and_show_every_queue_type() {
    let prefix = unique_name("columns");
    let kinds = ["classic", "quorum", "stream"];
    let queues: Vec<TestQueue> = kinds
        .iter()
        .map(|kind| TestQueue(format!("{prefix}.{kind}")))
        .collect();
    for (queue, kind) in queues.iter().zip(kinds) {
        broker::declare_typed(queue.name(), kind);
    }
    let chosen = format!(
        "--filter ^{} --columns name,type,durable,state,leader,members,online",
        regex_escape(&prefix)
    );

    // A stream's members are in its statistics only (3.x): a new one's come a few seconds late.
    let mut tsv = String::new();
    eventually(STATS, "the stream's members", || {
        let output = list(&format!("{chosen} -o tsv"));
        assert_code(&output, 0);
        tsv = text(&output.stdout);
        tsv.lines()
            .nth(3)
            .is_some_and(|line| !line.ends_with("\t\t"))
    });
    let lines: Vec<Vec<&str>> = tsv.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(
        lines[0],
        [
            "name", "type", "durable", "state", "leader", "members", "online"
        ]
    );
    assert_eq!(lines.len(), 4, "{tsv}");
    let leader = lines[2][4];
    assert!(leader.contains('@'), "a quorum queue's leader: {tsv}");
    assert_eq!(
        lines[1],
        [queues[0].name(), "classic", "true", "running", "", "", ""]
    );
    let quorum_row = [
        queues[1].name(),
        "quorum",
        "true",
        "running",
        leader,
        leader,
        leader,
    ];
    assert_eq!(lines[2], quorum_row);
    assert_eq!(
        &lines[3][..4],
        [queues[2].name(), "stream", "true", "running"]
    );
    // 3.x does not name a stream's leader in its API; 4.x does.
    assert!(["", leader].contains(&lines[3][4]), "{tsv}");
    assert_eq!(&lines[3][5..], [leader, leader], "{tsv}");

    let json = json_rows(&list(&format!("{chosen} -o json")));
    let keys: Vec<&str> = json[1]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "name", "type", "durable", "state", "leader", "members", "online"
        ]
    );
    assert_eq!(json[1]["members"], serde_json::json!([leader]));
    assert_eq!(json[1]["online"], serde_json::json!([leader]));
    assert_eq!(json[1]["durable"], true);
    assert_eq!(json[0]["members"], Value::Null);
    assert_eq!(json[2]["type"], "stream");

    let table = list(&format!("{chosen} -o table"));
    assert_code(&table, 0);
    let table = text(&table.stdout);
    let row = |name: &str| {
        table
            .lines()
            .find(|line| line.contains(&format!(" {name} ")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{table}"))
            .to_string()
    };
    let cells = |line: &str| -> Vec<String> {
        line.trim_matches('│')
            .split('┆')
            .map(|cell| cell.trim().to_string())
            .collect()
    };
    assert_eq!(
        cells(table.lines().nth(1).unwrap()),
        [
            "name", "type", "durable", "state", "leader", "members", "online"
        ]
    );
    assert_eq!(cells(&row(queues[1].name())), quorum_row);
    assert_eq!(cells(&row(queues[2].name()))[1], "stream");
    assert!(!table.contains('!'), "every member is online:\n{table}");
}

/// A stream reports its counts only in its statistics: they come, a few seconds late.
#[test]
fn a_streams_messages_are_counted() {
    let stream = TestQueue::new("stream_count");
    broker::declare_typed(stream.name(), "stream");
    broker::publish(stream.name(), &["1", "2", "3"]);
    let chosen = format!(
        "--filter ^{}$ --columns name,type,messages -o tsv --no-headers",
        regex_escape(stream.name())
    );
    eventually(STATS, "the stream to count 3 messages", || {
        text(&list(&chosen).stdout) == format!("{stream}\tstream\t3\n")
    });
}

/// `memory` is in the statistics only: asking for it asks for them.
#[test]
fn memory_comes_from_the_statistics() {
    let (_q, only) = classic_queue("memory");
    let chosen = format!("{only} --columns name,memory -o json");
    eventually(STATS, "the queue's memory", || {
        json_rows(&list(&chosen))
            .first()
            .is_some_and(|row| row["memory"].as_u64().is_some_and(|bytes| bytes > 0))
    });
}

/// A vhost for one test, with guest allowed in it, deleted at the end.
struct TestVhost(String);

impl TestVhost {
    fn new(test: &str) -> TestVhost {
        let name = unique_name(test);
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        TestVhost(name)
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        rabbitmqctl_cleanup(&["delete_vhost", &self.0]);
    }
}

#[test]
fn vhost_limits_the_listing_and_drops_the_vhost_column() {
    let vhost = TestVhost::new("vhost");
    let queue = unique_name("in_vhost");
    let url = format!("amqp://guest:guest@{}/{}", broker_address(), vhost.0);
    let sent = rmqlab()
        .env("RMQLAB_URL", &url)
        .args(["task", "new", "--queue", &queue, "x"])
        .output()
        .unwrap();
    assert_code(&sent, 0);

    eventually(STATS, "the queue in the vhost to show one message", || {
        let output = list(&format!("--vhost {} -o tsv --no-headers", vhost.0));
        assert_code(&output, 0);
        text(&output.stdout) == format!("{queue}\t1\t0\t0\n")
    });
    let all = list(&format!(
        "--filter ^{} -o tsv --no-headers",
        regex_escape(&queue)
    ));
    assert_eq!(
        text(&all.stdout),
        format!("{}\t{queue}\t1\t0\t0\n", vhost.0)
    );
    let json = json_rows(&list(&format!("--vhost {} -o json", vhost.0)));
    assert_eq!(json.len(), 1);
    assert_eq!(json[0]["vhost"], vhost.0.as_str());

    // purge and delete take --vhost too.
    assert_code(
        &rmq(&format!("queues purge {queue} --vhost {}", vhost.0), None),
        0,
    );
    assert_code(
        &rmq(&format!("queues delete {queue} --vhost {}", vhost.0), None),
        0,
    );
    let gone = list(&format!("--vhost {} -o json", vhost.0));
    assert_eq!(text(&gone.stdout).trim(), "[]");
}

#[test]
fn unknown_vhost_exits_65() {
    let output = list("--vhost rmqlab-no-such-vhost");
    assert_code(&output, 65);
    assert_eq!(
        text(&output.stderr),
        "rmqlab: error: vhost 'rmqlab-no-such-vhost' not found\n"
    );
}

#[test]
fn empty_results_by_format() {
    let filter = format!("--filter ^{}$", regex_escape(&unique_name("nothing")));
    let table = list(&format!("{filter} -o table"));
    assert_code(&table, 0);
    assert!(
        text(&table.stdout).contains("messages_ready"),
        "headers only: {}",
        text(&table.stdout)
    );
    assert_eq!(
        text(&table.stdout).lines().count(),
        4, // top border, header, separator, bottom border
        "{}",
        text(&table.stdout)
    );
    assert_eq!(text(&list(&format!("{filter} -o tsv")).stdout), "");
    assert_eq!(
        text(&list(&format!("{filter} -o json")).stdout).trim(),
        "[]"
    );
}

#[test]
fn twelve_hundred_queues_are_all_listed() {
    let prefix = unique_name("paging");
    let names: Vec<String> = (0..1200).map(|i| format!("{prefix}.{i:04}")).collect();
    broker::block_on(async {
        let connection = broker::connect().await;
        let channel = connection.create_channel().await.unwrap();
        for name in &names {
            let options = QueueDeclareOptions {
                durable: true,
                ..Default::default()
            };
            channel
                .queue_declare(name.as_str().into(), options, Default::default())
                .await
                .unwrap();
        }
        let output = list(&format!(
            "--filter ^{} -o tsv --no-headers",
            regex_escape(&prefix)
        ));
        assert_code(&output, 0);
        let listed: Vec<String> = text(&output.stdout)
            .lines()
            .map(|line| line.split('\t').nth(1).unwrap().to_string())
            .collect();
        for name in &names {
            channel
                .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                .await
                .unwrap();
        }
        let _ = connection.close(200, "OK".into()).await;
        assert_eq!(listed, names, "all 1,200 queues, in order, once each");
    });
}

#[test]
fn purge_and_delete_if_empty() {
    // Quorum queues take neither if-empty nor if-unused: rmqlab checks those itself.
    for classic in [true, false] {
        purge_and_delete_if_empty_of(classic);
    }
}

fn purge_and_delete_if_empty_of(classic: bool) {
    let q = TestQueue::new("purge_delete");
    if classic {
        broker::declare(q.name(), true).expect("declare a classic queue");
    }
    broker::publish(q.name(), &["1", "2"]);
    let refused = rmq(&format!("queues delete {q} --if-empty"), None);
    assert_code(&refused, 65);
    assert!(
        text(&refused.stderr).starts_with(&format!(
            "rmqlab: error: the broker refused to delete queue '{q}'"
        )),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(broker::ready(q.name()), 2, "nothing lost");

    let purged = rmq(&format!("queues purge {q}"), None);
    assert_code(&purged, 0);
    assert_eq!(
        text(&purged.stdout),
        format!(" [x] Purged queue '{q}' in vhost '/'\n")
    );
    assert_eq!(broker::ready(q.name()), 0);

    let deleted = rmq(&format!("queues delete {q} --if-empty --if-unused"), None);
    assert_code(&deleted, 0);
    assert_eq!(
        text(&deleted.stdout),
        format!(" [x] Deleted queue '{q}' in vhost '/'\n")
    );
    assert_eq!(broker::queue_state(q.name()), None);

    let again = rmq(&format!("queues delete {q}"), None);
    assert_code(&again, 65);
    assert_eq!(
        text(&again.stderr),
        format!("rmqlab: error: queue '{q}' in vhost '/' not found\n")
    );
}

#[test]
fn names_with_url_characters_reach_their_own_queue() {
    for (i, tail) in [
        "jobs[1]",
        "a#b",
        "a?b",
        "a/b",
        "a%2Fb",
        "a%b",
        "a b",
        "[x]?#%/ y",
    ]
    .into_iter()
    .enumerate()
    {
        let q = TestQueue::new(&format!("encoded{i}"));
        let name = format!("{q}.{tail}");
        // A neighbour the name would reach if a character were not encoded.
        let prefix = TestQueue(
            name.split(['#', '?', '/', '[', '%', ' '])
                .next()
                .unwrap()
                .into(),
        );
        broker::publish(prefix.name(), &["keep"]);
        broker::publish(&name, &["1", "2"]);

        let purged = rmqlab().args(["queues", "purge", &name]).output().unwrap();
        assert_code(&purged, 0);
        assert_eq!(
            text(&purged.stdout),
            format!(" [x] Purged queue '{name}' in vhost '/'\n")
        );
        assert_eq!(broker::ready(&name), 0, "{name} purged");
        assert_eq!(broker::ready(prefix.name()), 1, "{prefix} untouched");

        let deleted = rmqlab().args(["queues", "delete", &name]).output().unwrap();
        assert_code(&deleted, 0);
        assert_eq!(broker::queue_state(&name), None, "{name} deleted");
        assert_eq!(broker::ready(prefix.name()), 1, "{prefix} untouched");
        broker::delete(&name);
    }
}

#[test]
fn purge_and_delete_at_a_path_that_is_not_the_api_say_so() {
    let q = TestQueue::new("not_the_api");
    broker::publish(q.name(), &["1"]);
    let wrong = format!("{}/nothing/", api_base().trim_end_matches('/'));
    for verb in ["purge", "delete"] {
        let output = rmqlab()
            .args(["--api-url", &wrong, "queues", verb, q.name()])
            .output()
            .unwrap();
        assert_code(&output, 69);
        let stderr = text(&output.stderr);
        assert!(
            stderr.starts_with(&format!(
                "rmqlab: error: {wrong} is not a RabbitMQ management API"
            )),
            "{stderr}"
        );
        assert!(stderr.contains("hint: point --api-url"), "{stderr}");
    }
    assert_eq!(broker::ready(q.name()), 1, "nothing purged or deleted");
}

#[test]
fn delete_if_unused_refuses_a_queue_with_a_consumer_of_either_type() {
    for classic in [true, false] {
        let q = TestQueue::new("delete_in_use");
        if classic {
            broker::declare(q.name(), true).expect("declare a classic queue");
        }
        let consumer = Running::start_line(&format!("hello recv --queue {q}"));
        consumer.wait_for_stderr("Waiting for messages", Duration::from_secs(30));
        let refused = rmq(&format!("queues delete {q} --if-unused"), None);
        assert_code(&refused, 65);
        assert!(
            text(&refused.stderr).contains("refused to delete queue"),
            "{}",
            text(&refused.stderr)
        );
        assert!(broker::exists(q.name()), "classic: {classic}");
    }
}

#[test]
fn api_on_a_closed_port_exits_69_with_the_plugin_hint() {
    let output = rmqlab()
        .env("RMQLAB_API_URL", "http://ops:Sekr1t-api@127.0.0.1:1/")
        .args(["queues", "list"])
        .output()
        .unwrap();
    assert_code(&output, 69);
    let stderr = text(&output.stderr);
    assert!(
        stderr
            .starts_with("rmqlab: error: cannot reach the management API at http://127.0.0.1:1/\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("rabbitmq-plugins enable rabbitmq_management"),
        "{stderr}"
    );
    assert!(!stderr.contains("Sekr1t-api"), "{stderr}");
}

#[test]
fn wrong_password_exits_77_without_showing_it() {
    for (var, value) in [
        (
            "RMQLAB_URL",
            format!("amqp://guest:Sekr1t-amqp@{}/%2f", broker_address()),
        ),
        ("RMQLAB_API_URL", api_url_with("guest", "Sekr1t-amqp")),
    ] {
        let output = rmqlab()
            .env(var, value)
            .args(["queues", "list"])
            .output()
            .unwrap();
        assert_code(&output, 77);
        let stderr = text(&output.stderr);
        assert!(stderr.contains("refused user 'guest'"), "{stderr}");
        assert!(
            !stderr.contains("Sekr1t-amqp") && !text(&output.stdout).contains("Sekr1t-amqp"),
            "{stderr}"
        );
    }
}

#[test]
fn json_output_parses_with_python() {
    let output = list("-o json");
    assert_code(&output, 0);
    let mut python = std::process::Command::new("python3")
        .args(["-m", "json.tool"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("python3");
    use std::io::Write;
    python
        .stdin
        .take()
        .unwrap()
        .write_all(&output.stdout)
        .unwrap();
    assert!(python.wait().unwrap().success());
}

#[test]
fn watch_prints_timestamped_blocks_with_changes_until_interrupted() {
    let q = TestQueue::new("watch");
    broker::publish(q.name(), &["1"]);
    // --watch shows the broker's rates, so its listing is the statistics: wait until they know
    // the new queue (about 5 s), or its count is unknown and no change is shown.
    wait_for_statistics(q.name());
    let mut watcher = Running::start_line(&format!(
        "queues list --watch 300ms -o tsv --filter ^{}$",
        regex_escape(q.name())
    ));
    // Wait for two blocks with the queue's row (one row a block): the second has a change.
    let row = format!("/\t{q}\t");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut rows = 0;
    while rows < 2 {
        assert!(
            Instant::now() < deadline,
            "no two blocks with the queue's row: {:?}",
            watcher.seen
        );
        rows += usize::from(watcher.next_line(Duration::from_secs(20)).starts_with(&row));
    }
    watcher.signal("INT");
    let (status, lines, stderr) = watcher.finish_status(Duration::from_secs(20));
    assert_ended_by(&status, "INT", &stderr);
    // The time of each block goes to stderr: stdout stays data.
    let stamps = stderr.lines().filter(|line| line.starts_with("# ")).count();
    assert!(stamps >= 2, "a stamp per interval: {stderr}");
    assert!(
        !lines.iter().any(|line| line.starts_with("# ")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|line| line.ends_with("\tready_change")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with(&format!("/\t{q}\t")) && line.ends_with("\t0")),
        "{lines:?}"
    );
}

#[test]
fn rates_come_from_the_brokers_statistics_while_messages_flow() {
    let q = TestQueue::new("rates");
    let (publisher, mut stdin) =
        Running::start_with_stdin(&["task", "new", "--queue", q.name(), "-f", "-", "-q"]);
    // Publish all along, until the broker's statistics show a publish rate.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                if writeln!(stdin, "m{n}")
                    .and_then(|()| stdin.flush())
                    .is_err()
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let filter = format!("^{}$", regex_escape(q.name()));
    let mut seen = Value::Null;
    eventually(STATS, "a publish rate in the statistics", || {
        let listed = list(&format!(
            "--filter {filter} --columns name,publish_rate,deliver_rate,ack_rate -o json"
        ));
        assert_code(&listed, 0);
        seen = serde_json::from_slice(&listed.stdout).unwrap();
        seen[0]["publish_rate"]
            .as_f64()
            .is_some_and(|rate| rate > 0.0)
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    feeder.join().unwrap();
    let (code, _, stderr) = publisher.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(seen[0]["name"], q.name(), "{seen}");
    // No consumer: nothing delivered or acked, a rate of 0 or none yet.
    for rate in ["deliver_rate", "ack_rate"] {
        assert!(
            seen[0][rate].is_null() || seen[0][rate] == 0.0,
            "{rate}: {seen}"
        );
    }
    // The table shows the rate per second.
    let table = list(&format!(
        "--filter {filter} --columns name,publish_rate -o tsv"
    ));
    let shown = text(&table.stdout);
    assert!(
        shown.lines().nth(1).is_some_and(|row| row.ends_with("/s")),
        "{shown}"
    );
}

#[test]
fn watching_on_a_terminal_adds_rates_and_a_depth_sparkline() {
    let q = TestQueue::new("sparkline");
    broker::publish(q.name(), &["1", "2"]);
    wait_for_statistics(q.name());
    let shell = format!(
        "stty cols 200 rows 50; timeout -s INT 8 {} queues list --watch 300ms --filter '^{}$'; true",
        crate::common::BIN,
        regex_escape(q.name())
    );
    let shown = crate::terminal::on_terminal(&shell, &[]);
    for header in [
        "publish_rate",
        "deliver_rate",
        "ack_rate",
        "ready_change",
        "depth",
    ] {
        assert!(shown.contains(header), "{header}: {shown}");
    }
    assert!(shown.contains("▁▁"), "a sparkline over refreshes: {shown}");
    // Not a terminal: the rates, but no sparkline (tsv stays data).
    let mut watcher = Running::start_line(&format!(
        "queues list --watch 300ms -o tsv --filter ^{}$",
        regex_escape(q.name())
    ));
    let header = watcher.next_line(Duration::from_secs(30));
    watcher.signal("INT");
    let _ = watcher.finish_status(Duration::from_secs(20));
    assert!(
        header.contains("\tpublish_rate\tdeliver_rate\tack_rate\tready_change"),
        "{header}"
    );
    assert!(!header.contains("depth"), "{header}");
}

/// Waits until the broker's statistics report the ready messages of `queue`.
fn wait_for_statistics(queue: &str) {
    let filter = format!("^{}$", regex_escape(queue));
    eventually(STATS, "the statistics to know the queue", || {
        let listed = list(&format!(
            "--filter {filter} --columns name,messages_ready,memory -o json"
        ));
        serde_json::from_slice::<Value>(&listed.stdout)
            .is_ok_and(|rows| rows[0]["messages_ready"].is_u64())
    });
}

/// `queues list >&-`: the list cannot be shown, and that is an output error (74), not 0.
#[test]
fn list_to_a_closed_stdout_is_an_output_error() {
    let output = crate::common::command("sh")
        .arg("-c")
        .arg("exec \"$0\" queues list >&-")
        .arg(crate::common::BIN)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_code(&output, 74);
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with("rmqlab: error: cannot write to standard output\n"),
        "{stderr}"
    );
}

/// The ready messages of each queue of `vhost`, as `rabbitmqctl` counts them (exact, at once).
fn ready_in(vhost: &str) -> std::collections::BTreeMap<String, u32> {
    rabbitmqctl(&[
        "list_queues",
        "-q",
        "--no-table-headers",
        "-p",
        vhost,
        "name",
        "messages_ready",
    ])
    .lines()
    .filter_map(|line| {
        let (name, ready) = line.rsplit_once('\t')?;
        Some((name.to_string(), ready.trim().parse().ok()?))
    })
    .collect()
}

#[test]
fn queues_named_dot_and_dot_dot_are_purged_and_deleted_themselves_never_a_neighbour() {
    // In an API URL `.` and `..` are path steps (encoded or not): `/api/queues/V/./contents`
    // is the queue `contents`. rmqlab purges and deletes such queues over AMQP, and refuses
    // them where only the API can answer.
    let vhost = TestVhost::new("dots");
    let url = format!("amqp://guest:guest@{}/{}", broker_address(), vhost.0);
    for queue in [".", "..", "contents"] {
        let sent = rmqlab()
            .args(["--url", &url, "hello", "send", "--queue", queue, "m"])
            .output()
            .unwrap();
        assert_code(&sent, 0);
    }
    let all = |ready: u32, dots: u32| {
        [(".", dots), ("..", dots), ("contents", ready)]
            .map(|(name, n)| (name.to_string(), n))
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    // A quorum queue's counts reach rabbitmqctl a moment later.
    let reaches = |wanted: std::collections::BTreeMap<String, u32>| {
        eventually(STATS, &format!("the vhost to hold {wanted:?}"), || {
            ready_in(&vhost.0) == wanted
        })
    };
    reaches(all(1, 1));
    for name in [".", ".."] {
        let purged = rmqlab()
            .args(["--url", &url, "queues", "purge", name])
            .output()
            .unwrap();
        assert_code(&purged, 0);
        assert_eq!(
            text(&purged.stdout),
            format!(" [x] Purged queue '{name}' in vhost '{}'\n", vhost.0)
        );
    }
    reaches(all(1, 0));

    let peek = rmqlab()
        .args(["--url", &url, "queues", "peek", "."])
        .output()
        .unwrap();
    assert_code(&peek, 65);
    assert_eq!(
        text(&peek.stderr),
        "rmqlab: error: the management API cannot address a queue, exchange or vhost named '.': \
         in its URL '.' would name another object\n"
    );
    let listed = rmqlab()
        .args(["queues", "list", "--vhost", ".."])
        .output()
        .unwrap();
    assert_code(&listed, 65);

    for name in [".", ".."] {
        let deleted = rmqlab()
            .args(["--url", &url, "queues", "delete", name, "--if-empty"])
            .output()
            .unwrap();
        assert_code(&deleted, 0);
    }
    reaches([("contents".to_string(), 1)].into_iter().collect());
    let again = rmqlab()
        .args(["--url", &url, "queues", "delete", "."])
        .output()
        .unwrap();
    assert_code(&again, 65);
    assert!(
        text(&again.stderr).contains("no queue '.' in vhost"),
        "{}",
        text(&again.stderr)
    );
}
