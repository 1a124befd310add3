//! rmqlab against a live three-node cluster: the nodes of `scripts/cluster-up`
//! (rmqlab-1..3@localhost, AMQP 127.0.0.1:5701–5703, management API 15701–15703). Nodes are
//! stopped and killed here, so the tests run one at a time (a lock), each brings the cluster up
//! first (`scripts/cluster-up`, a fraction of a second when it runs) and leaves all three nodes
//! running for the next, even when it fails. Never the machine's own node (5672) nor rmq4 (5741).
//!
//! `cargo test --test cluster -- --nocapture` shows the counts of the failover runs (published,
//! confirmed, consumed, distinct, duplicates) and the `queues list` views before and after.

mod common;

use common::{BIN, Running, eventually, rabbitmqctl_on, text, unique_name, wait_output};
use std::{
    collections::BTreeSet,
    io::Write,
    process::{Command, Output, Stdio},
    sync::{Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

const WAIT: Duration = Duration::from_secs(60);
/// How long a worker of the failover tests waits without a message before it ends (exit 0):
/// far longer than a failover takes here (a few seconds), and not counted while it reconnects.
const WORKER_IDLE: &str = "10s";
const LINES: u32 = 20_000;

/// One of the three nodes, 1 to 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Node(u16);

const NODES: [Node; 3] = [Node(1), Node(2), Node(3)];

impl Node {
    fn name(self) -> String {
        format!("rmqlab-{}@localhost", self.0)
    }

    fn port(self) -> u16 {
        5700 + self.0
    }

    fn url(self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port())
    }

    fn api(self) -> String {
        format!("http://127.0.0.1:{}", 15700 + self.0)
    }

    /// Runs rabbitmqctl on this node, failing the test when it fails; returns its stdout.
    fn ctl(self, args: &[&str]) -> String {
        rabbitmqctl_on(&self.name(), args)
    }

    /// Stops the node's RabbitMQ app (its Erlang VM stays up): its clients' connections close.
    fn stop_app(self) {
        self.ctl(&["-q", "stop_app"]);
    }

    /// The pid of the node's Erlang VM (checked to be this node's).
    fn vm_pid(self) -> i32 {
        let pid = self.ctl(&["-q", "eval", "os:getpid()."]);
        let pid: i32 = pid
            .trim()
            .trim_matches('"')
            .parse()
            .unwrap_or_else(|_| panic!("os:getpid() of {} said {pid:?}", self.name()));
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let variable = format!("RABBITMQ_NODENAME={}", self.name());
        assert!(
            environ
                .split(|&byte| byte == 0)
                .any(|v| v == variable.as_bytes()),
            "pid {pid} is not the Erlang VM of {}",
            self.name()
        );
        pid
    }
}

/// Kills an Erlang VM (of [`Node::vm_pid`]) with SIGKILL: no goodbye to its clients or peers.
fn kill_vm(pid: i32) {
    // SAFETY: kill has no memory-safety preconditions; the pid is a node's VM.
    assert_eq!(
        unsafe { libc::kill(pid, libc::SIGKILL) },
        0,
        "kill -KILL {pid}"
    );
    eventually(WAIT, "the killed VM to be gone", || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
}

/// What `-v` says once connected to `node`.
fn connected_to(node: Node) -> String {
    format!("connected to amqp://guest:****@127.0.0.1:{}/", node.port())
}

/// Whether `-v`'s stderr says a connection was made to node 2 or 3.
fn on_node_2_or_3(stderr: &str) -> bool {
    stderr.contains(&connected_to(Node(2))) || stderr.contains(&connected_to(Node(3)))
}

/// `--url` of every node, node 1 first.
fn all_urls() -> Vec<String> {
    NODES
        .iter()
        .flat_map(|node| ["--url".to_string(), node.url()])
        .collect()
}

/// The path of scripts/cluster-up.
fn cluster_up_script() -> String {
    format!("{}/scripts/cluster-up", env!("CARGO_MANIFEST_DIR"))
}

/// Runs scripts/cluster-up: starts whatever node (or app) is down and waits until all three run.
fn cluster_up() -> Output {
    Command::new(cluster_up_script())
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/cluster-up")
}

/// The cluster for one test: taken one test at a time, brought up first and again at the end
/// (even when the test failed), so that every test starts with all three nodes running.
struct Cluster {
    _serial: MutexGuard<'static, ()>,
}

impl Cluster {
    fn take() -> Cluster {
        static LOCK: Mutex<()> = Mutex::new(());
        let serial = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let up = cluster_up();
        assert!(
            up.status.success(),
            "scripts/cluster-up failed (the cluster tests need its three nodes):\n{}",
            text(&up.stderr)
        );
        Cluster { _serial: serial }
    }

    /// Brings back whatever node the test took down, failing the test when it cannot.
    fn restore(&self) {
        let up = cluster_up();
        assert!(
            up.status.success(),
            "scripts/cluster-up could not bring the cluster back:\n{}",
            text(&up.stderr)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let up = cluster_up();
        if !up.status.success() && !thread::panicking() {
            panic!(
                "scripts/cluster-up could not bring the cluster back:\n{}",
                text(&up.stderr)
            );
        }
    }
}

/// rmqlab with none of the caller's settings and no default broker: the test gives the URLs.
fn rmqlab(args: &[String]) -> Command {
    let mut command = common::command(BIN);
    command
        .env_remove("RMQLAB_URL")
        .env_remove("RMQLAB_API_URL");
    command.args(args).stdin(Stdio::null());
    command
}

fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

/// A queue name for one test, deleted through a node that runs when the test ends.
struct ClusterQueue(String);

impl ClusterQueue {
    fn new(test: &str) -> ClusterQueue {
        ClusterQueue(unique_name(test))
    }

    /// The queue as the management API of `node` shows it (404: None).
    fn api(&self, node: Node) -> Option<serde_json::Value> {
        let output = Command::new("curl")
            .args([
                "-s",
                "-m",
                "10",
                "-u",
                "guest:guest",
                "-w",
                "\n%{http_code}",
            ])
            .arg(format!("{}/api/queues/%2F/{}", node.api(), self.0))
            .output()
            .expect("run curl");
        let body = text(&output.stdout);
        let (json, status) = body.rsplit_once('\n').expect("curl printed the status");
        match status {
            "200" => Some(serde_json::from_str(json).expect("the API answers JSON")),
            "404" => None,
            other => panic!(
                "GET queue {} from {}: HTTP {other} {json}",
                self.0,
                node.api()
            ),
        }
    }

    /// (leader, members, online) of this quorum queue, as `node`'s API shows them.
    fn placement(&self, node: Node) -> (String, Vec<String>, Vec<String>) {
        let queue = self
            .api(node)
            .unwrap_or_else(|| panic!("queue {} does not exist", self.0));
        let names = |field: &str| -> Vec<String> {
            let mut names: Vec<String> = queue[field]
                .as_array()
                .unwrap_or_else(|| panic!("no {field} in {queue}"))
                .iter()
                .map(|name| name.as_str().unwrap().to_string())
                .collect();
            names.sort();
            names
        };
        let leader = queue["leader"].as_str().unwrap_or_default().to_string();
        (leader, names("members"), names("online"))
    }
}

impl std::fmt::Display for ClusterQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Drop for ClusterQueue {
    fn drop(&mut self) {
        for node in NODES {
            let deleted = Command::new("curl")
                .args(["-sf", "-m", "10", "-u", "guest:guest", "-X", "DELETE"])
                .arg(format!("{}/api/queues/%2F/{}", node.api(), self.0))
                .output()
                .is_ok_and(|output| output.status.success());
            if deleted {
                return;
            }
        }
    }
}

/// `queues list --columns name,leader,members,online` of one queue, through `node`'s API.
fn queues_view(queue: &ClusterQueue, node: Node, format: &str) -> String {
    let mut args = all_urls();
    args.extend(words(&format!(
        "--api-url {} queues list --filter ^{}$ --columns name,leader,members,online -o {format}",
        node.api(),
        queue.0.replace('.', "\\.")
    )));
    let output = wait_output(
        rmqlab(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run rmqlab"),
        WAIT,
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "queues list: {}",
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// What happens to node 1 in the middle of the stream.
#[derive(Clone, Copy, Debug)]
enum Disturbance {
    /// `rabbitmqctl stop_app`: its connections are closed, its queue replicas stop.
    StopApp,
    /// SIGKILL to its Erlang VM: no goodbye to clients or peers.
    Kill,
}

/// What the failover run counted.
struct Counts {
    published: u32,
    confirmed: usize,
    consumed: usize,
    distinct: usize,
    duplicates: usize,
    resent: usize,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "published {}, confirmed {}, consumed {}, distinct {}, duplicates {} (sent again \
             by the publisher: {})",
            self.published,
            self.confirmed,
            self.consumed,
            self.distinct,
            self.duplicates,
            self.resent
        )
    }
}

/// Reads the lines that a running rmqlab has printed so far, without waiting.
fn drain(running: &mut Running) -> usize {
    while running.try_next_line(Duration::ZERO).is_some() {}
    running.seen.len()
}

/// A publisher of 20,000 lines (`task new -f -`, fed over about 20 s) and two workers (`task work
/// --prefetch 10 --dot-duration 0s`), all given the three URLs and connected to node 1, the leader
/// of the quorum queue; node 1 is disturbed mid-stream. Everything confirmed is consumed, at least
/// once, through nodes 2 and 3; every exit code is 0; the queue's leader moves, which `queues
/// list` shows, with node 1 offline while it is down.
fn carry_on_when_node_1_fails(test: &str, disturbance: Disturbance) {
    // Dropped after the cluster is brought back, to be deleted on every node.
    let q = ClusterQueue::new(test);
    let cluster = Cluster::take();
    let vm = Node(1).vm_pid();
    let worker_line = format!(
        "-v task work --queue {q} --prefetch 10 --dot-duration 0s -o body --idle-timeout {WORKER_IDLE}"
    );
    let mut workers: Vec<Running> = (0..2)
        .map(|_| {
            let mut args = all_urls();
            args.extend(words(&worker_line));
            Running::spawn(&mut rmqlab(&args))
        })
        .collect();
    for worker in &workers {
        let stderr = worker.wait_for_stderr("Waiting for messages", WAIT);
        assert!(
            stderr.contains(&connected_to(Node(1))),
            "on node 1: {stderr}"
        );
    }
    let (leader, members, online) = q.placement(Node(2));
    assert_eq!(leader, Node(1).name(), "declared through node 1, led there");
    assert_eq!(members, online, "all members online before");
    assert_eq!(members.len(), 3, "a member on every node: {members:?}");
    let before = queues_view(&q, Node(2), "table");
    assert!(!before.contains('!'), "all members online: {before}");

    let mut args = all_urls();
    args.extend(words(&format!("-v task new --queue {q} -f -")));
    let mut publisher = Running::spawn(rmqlab(&args).stdin(Stdio::piped()));
    let mut stdin = publisher.child.as_mut().unwrap().stdin.take().unwrap();
    let feeder = thread::spawn(move || {
        for chunk in 0..40 {
            let lines: String = (chunk * 500 + 1..=chunk * 500 + 500)
                .map(|i| format!("{i}\n"))
                .collect();
            if stdin.write_all(lines.as_bytes()).is_err() {
                return; // the publisher ended: its exit code and stderr tell why
            }
            // Deliberate pacing, not a wait: it stretches the input over time, so that node 1
            // fails while lines are still coming.
            thread::sleep(Duration::from_millis(500));
        }
    });

    // Mid-stream: a tenth confirmed, some consumed.
    let deadline = Instant::now() + WAIT;
    loop {
        let confirmed = drain(&mut publisher);
        let consumed: usize = workers.iter_mut().map(drain).sum();
        if confirmed >= LINES as usize / 10 && consumed > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no stream: {confirmed} confirmed, {consumed} consumed"
        );
        thread::sleep(Duration::from_millis(20));
    }

    let publisher_stderr = publisher.wait_for_stderr("connected to", WAIT);
    assert!(
        publisher_stderr.contains(&connected_to(Node(1))),
        "on node 1: {publisher_stderr}"
    );

    match disturbance {
        Disturbance::StopApp => Node(1).stop_app(),
        Disturbance::Kill => kill_vm(vm),
    }
    let confirmed_then = drain(&mut publisher);
    assert!(
        confirmed_then < LINES as usize,
        "node 1 failed mid-stream, not after it: {confirmed_then} confirmed"
    );
    eventually(WAIT, "a new leader on node 2 or 3", || {
        let (leader, _, _) = q.placement(Node(2));
        !leader.is_empty() && leader != Node(1).name()
    });
    let (leader, members, online) = q.placement(Node(2));
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(
        !online.contains(&Node(1).name()) && online.len() == 2,
        "node 1 offline: {online:?}"
    );
    let during = queues_view(&q, Node(2), "table");
    let during_tsv = queues_view(&q, Node(2), "tsv");
    assert!(during.contains(&leader), "the new leader shown: {during}");
    assert!(during.contains('!'), "a member offline is marked: {during}");
    assert!(
        during_tsv.contains(&format!("\t{leader}\t")),
        "the new leader in tsv: {during_tsv}"
    );

    for worker in &workers {
        let stderr = worker.wait_for_stderr("Reconnected", WAIT);
        assert!(on_node_2_or_3(&stderr), "worker: {stderr}");
    }
    feeder.join().unwrap();
    let (code, sent, publisher_stderr) = publisher.finish(WAIT);
    assert_eq!(code, Some(0), "publisher: {publisher_stderr}");
    assert!(
        publisher_stderr.contains("Reconnected") && on_node_2_or_3(&publisher_stderr),
        "the publisher carried on through node 2 or 3: {publisher_stderr}"
    );
    let mut consumed = Vec::new();
    for worker in workers.drain(..) {
        let (code, lines, stderr) = worker.finish(WAIT * 2);
        assert_eq!(code, Some(0), "worker: {stderr}");
        consumed.extend(lines);
    }

    let confirmed: BTreeSet<u32> = sent
        .iter()
        .map(|line| {
            line.strip_prefix(" [x] Sent '")
                .and_then(|rest| rest.strip_suffix('\''))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("a publisher line: {line:?}"))
        })
        .collect();
    let distinct: BTreeSet<u32> = consumed
        .iter()
        .map(|line| line.parse().unwrap_or_else(|_| panic!("a body: {line:?}")))
        .collect();
    let lost: Vec<&u32> = confirmed.difference(&distinct).collect();
    assert!(
        lost.is_empty(),
        "{} confirmed but never consumed, first {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert_eq!(confirmed.len(), LINES as usize, "every line confirmed");
    assert_eq!(sent.len(), LINES as usize, "each confirmed once");
    let resent = publisher_stderr
        .lines()
        .filter_map(|line| line.strip_prefix(" [*] Sending again the "))
        .map(|rest| rest.split(' ').next().unwrap().parse::<usize>().unwrap())
        .sum();
    let counts = Counts {
        published: LINES,
        confirmed: confirmed.len(),
        consumed: consumed.len(),
        distinct: distinct.len(),
        duplicates: consumed.len() - distinct.len(),
        resent,
    };
    eventually(WAIT, "the queue empty", || {
        q.api(Node(2))
            .is_some_and(|queue| queue["messages"].as_u64() == Some(0))
    });

    cluster.restore();
    eventually(WAIT, "node 1 back online in the queue", || {
        let (_, members, online) = q.placement(Node(1));
        members == online
    });
    let after = queues_view(&q, Node(1), "table");
    assert!(!after.contains('!'), "all members online again: {after}");
    let nacked = publisher_stderr.matches("(nack)").count();
    eprintln!(
        "{test}: node 1 {disturbance:?} mid-stream: {counts}; nacked during the failover and \
         sent again: {nacked} time(s)\nqueues list before:\n{before}\
         while node 1 was down:\n{during}after node 1 came back:\n{after}"
    );
    // A duplicate is a message the publisher sent again (unconfirmed when its connection went),
    // or one a worker printed but whose ack was lost with node 1: at most its prefetch, each.
    assert!(
        counts.duplicates <= counts.resent + 2 * 10,
        "more duplicates than resent and unacked messages: {counts}"
    );
}

#[test]
fn publisher_and_workers_carry_on_when_node_1_stops() {
    carry_on_when_node_1_fails("cluster_stop_app", Disturbance::StopApp);
}

#[test]
fn publisher_and_workers_carry_on_when_node_1_is_killed() {
    carry_on_when_node_1_fails("cluster_kill", Disturbance::Kill);
}

/// Ports on which nothing listens: bound, then let go.
fn closed_ports() -> Vec<u16> {
    let listeners: Vec<_> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().unwrap().port())
        .collect()
}

#[test]
fn no_node_answering_at_start_exits_69() {
    let q = unique_name("cluster_none");
    let mut args: Vec<String> = closed_ports()
        .into_iter()
        .flat_map(|port| {
            [
                "--url".to_string(),
                format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
            ]
        })
        .collect();
    args.extend(words(&format!("task new --queue {q} hello")));
    let output = rmqlab(&args).output().expect("run rmqlab");
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(69), "{stderr}");
    assert!(stderr.starts_with("rmqlab: error: "), "{stderr}");
    assert!(!stderr.contains(":guest@"), "no password: {stderr}");
}

#[test]
fn every_node_stopped_under_a_worker_exits_75_after_the_reconnect_timeout() {
    let q = ClusterQueue::new("cluster_all_stopped");
    let _cluster = Cluster::take();
    let mut args = all_urls();
    args.extend(words(&format!(
        "task work --queue {q} --reconnect-timeout 3s"
    )));
    let worker = Running::spawn(&mut rmqlab(&args));
    worker.wait_for_stderr("Waiting for messages", WAIT);
    // All three at once, so that the worker finds none to fail over to.
    let stopping: Vec<_> = NODES
        .into_iter()
        .map(|node| thread::spawn(move || node.stop_app()))
        .collect();
    for stop in stopping {
        stop.join().unwrap();
    }
    let all_stopped = Instant::now();
    let (code, _, stderr) = worker.finish(WAIT);
    let waited = all_stopped.elapsed();
    assert_eq!(code, Some(75), "{stderr}");
    assert!(
        stderr.contains("could not reconnect") && stderr.contains("within 3s"),
        "{stderr}"
    );
    assert!(waited < Duration::from_secs(15), "gave up after {waited:?}");
    assert!(!stderr.contains(":guest@"), "no password: {stderr}");
}

#[test]
fn a_node_refusing_the_login_is_skipped_saying_why() {
    let q = ClusterQueue::new("cluster_login");
    let _cluster = Cluster::take();
    let args = words(&format!(
        "--url amqp://guest:wrong-secret@127.0.0.1:{}/%2f --url {} -v task new --queue {q} hello",
        Node(1).port(),
        Node(2).url()
    ));
    let output = rmqlab(&args).output().expect("run rmqlab");
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(text(&output.stdout), " [x] Sent 'hello'\n");
    let skipped = stderr
        .lines()
        .find(|line| line.starts_with("rmqlab: skipping amqp://guest:****@127.0.0.1:5701/"))
        .unwrap_or_else(|| panic!("says it skipped node 1: {stderr}"));
    assert!(
        skipped.contains("refused the login of user 'guest'"),
        "says why: {skipped}"
    );
    assert!(
        stderr.contains(&connected_to(Node(2))),
        "connected to node 2: {stderr}"
    );
    assert!(!stderr.contains("wrong-secret"), "no password: {stderr}");
    assert_eq!(
        q.api(Node(2)).map(|queue| queue["name"].clone()),
        Some(serde_json::json!(q.0)),
        "the queue exists"
    );
}

/// A nack soon after a reconnection (a quorum queue electing a new leader refuses what it gets)
/// is sent again, after a pause, until `--reconnect-timeout` has passed since the lost
/// connection; a queue that goes on refusing (a full `reject-publish` queue here) then ends the
/// run with 65, what was confirmed before it reported.
#[test]
fn a_nack_after_a_reconnection_is_sent_again_until_the_reconnect_timeout() {
    let q = ClusterQueue::new("cluster_nack");
    let _cluster = Cluster::take();
    let declared = Command::new("curl")
        .args(["-sf", "-m", "10", "-u", "guest:guest", "-X", "PUT"])
        .args(["-H", "content-type: application/json", "-d"])
        .arg(
            r#"{"durable":true,"arguments":{"x-queue-type":"classic","x-max-length":1,"x-overflow":"reject-publish"}}"#,
        )
        .arg(format!("{}/api/queues/%2F/{q}", Node(1).api()))
        .output()
        .expect("run curl");
    assert!(declared.status.success(), "{}", text(&declared.stderr));
    let mut args = all_urls();
    args.extend(words(&format!(
        "--reconnect-timeout 3s task new --queue {q} -f -"
    )));
    let mut publisher = Running::spawn(rmqlab(&args).stdin(Stdio::piped()));
    let mut stdin = publisher.child.as_mut().unwrap().stdin.take().unwrap();
    stdin.write_all(b"1\n").unwrap();
    assert_eq!(publisher.next_line(WAIT), " [x] Sent '1'");
    Node(1).ctl(&["-q", "close_all_connections", "rmqlab cluster test"]);
    let closed = Instant::now();
    // The publisher finds its connection closed as it sends message 2, reconnects, and sends it
    // again; the queue is full: message 2 is refused, again and again.
    stdin.write_all(b"2\n").unwrap();
    drop(stdin);
    let (code, lines, stderr) = publisher.finish(WAIT);
    let took = closed.elapsed();
    assert_eq!(code, Some(65), "{stderr}");
    assert_eq!(lines, [" [x] Sent '1'"], "{stderr}");
    assert!(stderr.contains("Reconnected"), "{stderr}");
    let refused = "the broker refused message 2 (nack): it was not stored";
    assert!(
        stderr.matches(refused).count() >= 3,
        "refused, sent again, refused for good: {stderr}"
    );
    assert!(
        stderr.contains(&format!("rmqlab: error: {refused}")),
        "{stderr}"
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "sent again for about --reconnect-timeout: {took:?}"
    );
}
