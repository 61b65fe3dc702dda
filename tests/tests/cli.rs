//! The `hedgerow` binary, black box: `hedgerow node` processes on loopback
//! sharing one store, driven and observed only through their HTTP control
//! API and signals. Election and membership, send from a non-leader,
//! broadcast, failover after SIGKILL (SQLite and PostgreSQL), and a
//! graceful handover on SIGTERM.
//!
//! Every node runs `--clock system --clock-bound-ms 5` with fast timings.
//! Children get `--exit-on-stdin-eof` and are killed on drop, so none
//! outlives a failing test (or the test binary). The tests run one at a
//! time: each starts several processes, and the machine may have 2 cores.
// clippy.toml's test allowance covers `#[test]` functions only; the shared
// helpers here are plain functions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

// The binary's own minimal HTTP client, so the test speaks to the control
// API exactly as the demo does.
use hedgerow_cli::http::request;
use hedgerow_tests::{
    agreement, log_tails, one_at_a_time, postgres, postgres_url, status, temp_dir,
};
use hedgerow_tests::{Node, NodeCommand, Process, TempDir};
use serde_json::Value;

/// The `hedgerow` binary, built from its own `main.rs` as a binary of this
/// package (see the crate docs).
const HEDGEROW: &str = env!("CARGO_BIN_EXE_hedgerow-under-test");

const BOUND_MS: u64 = 5;
const HEARTBEAT_MS: u64 = 100;
const FAILURE_TIMEOUT_MS: u64 = 400;
/// Time for a loaded machine (2 shared cores, 5 processes) to react,
/// beyond what the timings imply.
const SLACK: Duration = Duration::from_millis(2500);

/// Several nodes sharing a store, with their logs in a temporary
/// directory (printed when a wait fails).
struct Cluster {
    nodes: Vec<Node>,
    dir: TempDir,
    store: String,
    lease_ms: u64,
}

impl Cluster {
    fn start(n: usize, store: Option<String>, lease_ms: u64) -> Cluster {
        let dir = temp_dir();
        let store =
            store.unwrap_or_else(|| format!("sqlite:{}", dir.path().join("lease.db").display()));
        let mut cluster = Cluster {
            nodes: Vec::new(),
            dir,
            store,
            lease_ms,
        };
        for i in 1..=n {
            let node = cluster.spawn(&format!("n{i}"));
            cluster.nodes.push(node);
        }
        cluster
    }

    fn spawn(&self, id: &str) -> Node {
        let log = File::create(self.dir.path().join(format!("{id}.log"))).unwrap();
        NodeCommand::new(Path::new(HEDGEROW), "cli-test", id, &self.store)
            .args([
                "--clock",
                "system",
                "--clock-bound-ms",
                &BOUND_MS.to_string(),
            ])
            .args([
                "--preset",
                "local",
                "--lease-ms",
                &self.lease_ms.to_string(),
            ])
            .args(["--heartbeat-ms", &HEARTBEAT_MS.to_string()])
            .args(["--failure-timeout-ms", &FAILURE_TIMEOUT_MS.to_string()])
            .args(["--meta", &format!("zone-{id}")])
            .env("RUST_LOG", "info")
            .log_to(log)
            .start(Duration::from_secs(20))
            .unwrap_or_else(|why| panic!("{why}\n{}", self.logs()))
    }

    fn logs(&self) -> String {
        log_tails(self.dir.path(), 30)
    }

    /// The id of some node other than `id`.
    fn other_than(&self, id: &str) -> String {
        let other = self.nodes.iter().find(|n| n.id != id);
        other.expect("a second node").id.clone()
    }

    fn node(&self, id: &str) -> &Node {
        self.nodes.iter().find(|n| n.id == id).unwrap()
    }

    fn remove(&mut self, id: &str) -> Node {
        let i = self.nodes.iter().position(|n| n.id == id).unwrap();
        self.nodes.remove(i)
    }

    fn statuses(&self) -> Vec<Option<Value>> {
        self.nodes.iter().map(|n| status(n.http)).collect()
    }

    /// Waits until every node agrees on one leader (and only it says it
    /// leads), a term above `above`, and exactly the live nodes as
    /// members. Returns `(leader, term)`.
    fn wait_agreed(&self, limit: Duration, above: u64) -> (String, u64) {
        let start = Instant::now();
        let want: BTreeSet<String> = self.nodes.iter().map(|n| n.id.clone()).collect();
        let mut last = Vec::new();
        while start.elapsed() < limit {
            last = self.statuses();
            if let Some(agreed) = agreement(&last, &want, above) {
                return agreed;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "no agreement on one leader (term > {above}) and members {want:?} within {limit:?}; \
             last statuses: {last:#?}\n{}",
            self.logs()
        );
    }

    fn post(&self, id: &str, path: &str, body: &[u8]) -> (u16, Value) {
        let (code, body) = request(
            self.node(id).http,
            "POST",
            path,
            body,
            Duration::from_secs(10),
        )
        .unwrap();
        let json = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!("{path}: not JSON ({e}): {}", String::from_utf8_lossy(&body))
        });
        (code, json)
    }
}

/// Election, send, broadcast, metrics, then SIGKILL the leader and check
/// the survivors agree on a new leader within the bound the flags imply.
fn elect_send_broadcast_failover(store: Option<String>) {
    let lease_ms = 1500;
    let mut cluster = Cluster::start(5, store, lease_ms);
    let (leader, term) = cluster.wait_agreed(Duration::from_secs(15), 0);

    // Each member's metadata reaches every view.
    for st in cluster.statuses().into_iter().flatten() {
        for m in st["members"].as_array().unwrap() {
            assert_eq!(
                m["meta"],
                format!("zone-{}", m["id"].as_str().unwrap()),
                "{st}"
            );
        }
    }

    // Send from a non-leader: the leader's built-in handler answers.
    let sender = cluster.other_than(&leader);
    let (code, reply) = cluster.post(&sender, "/v1/send", b"hello");
    assert_eq!(code, 200, "{reply}");
    assert_eq!(reply["handled_by"], leader.as_str(), "{reply}");
    assert_eq!(reply["term"], term, "{reply}");
    assert_eq!(reply["from"], sender.as_str(), "{reply}");
    assert_eq!(reply["echo"], "hello", "{reply}");

    // Broadcast from a non-leader: one good reply per member.
    let (code, reply) = cluster.post(&sender, "/v1/broadcast", b"reload");
    assert_eq!(code, 200, "{reply}");
    let replies = reply["replies"].as_array().unwrap();
    let ids: BTreeSet<&str> = replies.iter().filter_map(|r| r["id"].as_str()).collect();
    let all: BTreeSet<&str> = cluster.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, all, "{reply}");
    for r in replies {
        assert!(r["error"].is_null(), "{reply}");
        assert_eq!(r["ok"]["handled_by"], r["id"], "{reply}");
        assert_eq!(r["ok"]["echo"], "reload", "{reply}");
    }

    // Metrics of the leader say so.
    let (code, text) = request(
        cluster.node(&leader).http,
        "GET",
        "/metrics",
        b"",
        Duration::from_secs(2),
    )
    .unwrap();
    let text = String::from_utf8(text).unwrap();
    assert_eq!(code, 200);
    assert!(text.contains("\nhedgerow_is_leader 1\n"), "{text}");
    assert!(
        text.contains(&format!("\nhedgerow_term {term}\n")),
        "{text}"
    );
    assert!(text.contains("\nhedgerow_members 5\n"), "{text}");

    // Crash the leader: the lease must expire before anyone takes over.
    let mut old = cluster.remove(&leader);
    let killed = Instant::now();
    old.process.kill();
    // DESIGN.md: crash to takeover is at most lease + 4 x bound plus the
    // taker's reaction; dropping the dead member takes a failure timeout.
    let bound = Duration::from_millis(lease_ms + 4 * BOUND_MS + FAILURE_TIMEOUT_MS) + SLACK;
    let (next, next_term) = cluster.wait_agreed(bound, term);
    let took = killed.elapsed();
    assert_ne!(next, leader);
    assert!(next_term > term);
    eprintln!(
        "failover {leader} (term {term}) -> {next} (term {next_term}) in {took:?}, bound {bound:?}"
    );

    // The new leader handles sends under its term.
    let sender = cluster.other_than(&next);
    let (code, reply) = cluster.post(&sender, "/v1/send", b"again");
    assert_eq!(code, 200, "{reply}");
    assert_eq!(reply["handled_by"], next.as_str(), "{reply}");
    assert_eq!(reply["term"], next_term, "{reply}");

    // The new leader renews its lease, and /metrics times the renewals.
    let deadline = Instant::now() + Duration::from_millis(2 * lease_ms);
    loop {
        let (_, text) = request(
            cluster.node(&next).http,
            "GET",
            "/metrics",
            b"",
            Duration::from_secs(2),
        )
        .unwrap();
        let text = String::from_utf8(text).unwrap();
        let renewals: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("hedgerow_lease_renew_seconds_count "))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no renew count in {text}"));
        if renewals > 0 {
            assert!(text.contains("\nhedgerow_leader_changes_total "), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no renewal timed in {lease_ms} ms x 2: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn five_processes_on_sqlite_elect_serve_and_fail_over() {
    let _one = one_at_a_time();
    elect_send_broadcast_failover(None);
}

#[test]
fn five_processes_on_postgres_elect_serve_and_fail_over() {
    let _one = one_at_a_time();
    let Some(server) = postgres("five_processes_on_postgres") else {
        return;
    };
    elect_send_broadcast_failover(Some(postgres_url(&server)));
}

#[test]
fn sigterm_hands_over_well_before_the_lease_expires() {
    let _one = one_at_a_time();
    // A long lease, so that "before it expires" is unmistakable.
    let lease_ms = 8000;
    let mut cluster = Cluster::start(3, None, lease_ms);
    let (leader, term) = cluster.wait_agreed(Duration::from_secs(15), 0);
    let mut old = cluster.remove(&leader);
    let sent = Instant::now();
    old.process.signal("TERM");
    let limit = Duration::from_millis(lease_ms / 2);
    let (next, next_term) = cluster.wait_agreed(limit, term);
    let took = sent.elapsed();
    assert_ne!(next, leader);
    // The old leader exited by itself, with status 0.
    let exit = old
        .process
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("{leader} did not exit after SIGTERM\n{}", cluster.logs()));
    assert!(
        exit.success(),
        "{leader} exited with {exit}\n{}",
        cluster.logs()
    );
    eprintln!(
        "graceful handover {leader} -> {next} (term {next_term}) in {took:?}, lease {lease_ms} ms"
    );
}

#[test]
fn bad_flags_fail_fast_with_a_clear_message() {
    let run = |args: &[&str]| {
        let out = Command::new(HEDGEROW)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let base = [
        "node",
        "--cluster",
        "c",
        "--id",
        "a",
        "--listen",
        "127.0.0.1:0",
    ];
    let (code, err) = run(&[&base[..], &["--store", "mysql://db"]].concat());
    assert_eq!(code, Some(2));
    assert!(err.contains("expected sqlite:PATH"), "{err}");
    let (code, err) = run(&[&base[..], &["--store", "memory", "--clock", "system"]].concat());
    assert_eq!(code, Some(2));
    assert!(err.contains("--clock-bound-ms"), "{err}");
    let (code, err) = run(&[
        &base[..],
        &[
            "--store",
            "memory",
            "--heartbeat-ms",
            "500",
            "--failure-timeout-ms",
            "100",
        ],
    ]
    .concat());
    assert_eq!(code, Some(2));
    assert!(err.contains("failure_timeout"), "{err}");
    // Every flag can come from a HEDGEROW_* variable instead.
    let out = Command::new(HEDGEROW)
        .arg("node")
        .env("HEDGEROW_CLUSTER", "c")
        .env("HEDGEROW_ID", "a")
        .env("HEDGEROW_LISTEN", "0.0.0.0:0")
        .env("HEDGEROW_STORE", "memory")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("also give --advertise"), "{err}");
}

#[test]
fn without_a_leader_send_is_a_503_with_a_json_error() {
    let _one = one_at_a_time();
    let dir = temp_dir();
    let store = format!("sqlite:{}", dir.path().join("lease.db").display());
    let mut node = NodeCommand::new(Path::new(HEDGEROW), "lonely", "m1", &store)
        .args([
            "--clock",
            "system",
            "--clock-bound-ms",
            "5",
            "--preset",
            "local",
        ])
        .args(["--candidate", "false"])
        .start(Duration::from_secs(20))
        .unwrap_or_else(|why| panic!("{why}"));
    let http = node.http;
    let (code, body) = request(http, "POST", "/v1/send", b"x", Duration::from_secs(10)).unwrap();
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(code, 503, "{json}");
    assert_eq!(json["kind"], "no_leader", "{json}");
    assert!(
        json["error"].as_str().unwrap().contains("no leader"),
        "{json}"
    );
    let st = status(http).unwrap();
    assert!(st["leader"].is_null() && st["is_leader"] == false, "{st}");
    // Closing stdin makes it leave and exit 0.
    node.process.close_stdin();
    let exit = node
        .process
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no exit 10 s after stdin closed"));
    assert!(exit.success(), "{exit}");
}

#[test]
fn the_demo_shows_a_failover_and_cleans_up_on_ctrl_c() {
    let _one = one_at_a_time();
    // Stopped if this test fails before it does: Ctrl-C first, so it
    // removes its directory, then SIGKILL.
    let mut demo = Process::spawn(
        Command::new(HEDGEROW)
            .args(["demo", "--nodes", "3", "--duration-secs", "25"])
            .args(["--kill-every-secs", "3", "--restart-after-secs", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    )
    .signal_on_drop("INT", Duration::from_secs(8));
    let stdout = demo.take_stdout().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let mut pids = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    // Wait for a failover after a kill, then press Ctrl-C (SIGINT).
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            panic!("no failover within 20 s; output:\n{}", seen.join("\n"));
        };
        if let Some(rest) = line.split("(pids ").nth(1) {
            let list = rest.split(')').next().unwrap_or_default();
            pids.extend(list.split(' ').filter_map(|p| p.parse::<u32>().ok()));
        }
        if let Some(rest) = line.split("(pid ").nth(1) {
            pids.extend(rest.split(')').next().and_then(|p| p.parse::<u32>().ok()));
        }
        let failover = line.contains("after node-") && line.contains("was killed");
        seen.push(line);
        if failover {
            break;
        }
    }
    assert!(pids.len() >= 3, "{}", seen.join("\n"));
    demo.signal("INT");
    let exit = demo.wait();
    seen.extend(rx.iter());
    let out = seen.join("\n");
    assert!(exit.success(), "demo exited with {exit}:\n{out}");
    let removed = seen
        .iter()
        .find(|l| l.contains("stopped; removed"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(!removed.contains("failed"), "{out}");
    let dir = removed.rsplit("removed ").next().unwrap().trim();
    assert!(!Path::new(dir).exists(), "{dir} left behind:\n{out}");
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "node process {pid} outlived the demo:\n{out}"
        );
    }
}
