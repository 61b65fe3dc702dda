//! What a deployment (Kubernetes or any supervisor) relies on, black box
//! through the `hedgerow` binary: the probe routes, exits with a reason
//! when a node cannot recover, `--advertise :PORT`, and a rolling update
//! of five processes replaced one by one with SIGTERM.
//!
//! Every node runs `--clock system --clock-bound-ms 5` with fast timings
//! and `--exit-on-stdin-eof`; children are killed on drop. One test at a
//! time: each starts several processes on a machine that may have 2 cores.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hedgerow_cli::client::request;
use hedgerow_tests::{
    agreement, kv_history, log_tails, one_at_a_time, status, temp_dir, wait_until,
};
use hedgerow_tests::{Node, NodeCommand, Process, TempDir};
use serde_json::Value;

const HEDGEROW: &str = env!("CARGO_BIN_EXE_hedgerow-under-test");

fn node_command(dir: &TempDir, id: &str, store: &str, lease_ms: u64) -> NodeCommand {
    let log = File::options()
        .create(true)
        .append(true)
        .open(dir.path().join(format!("{id}.log")))
        .unwrap();
    NodeCommand::new(Path::new(HEDGEROW), "deploy-test", id, store)
        .args(["--clock", "system", "--clock-bound-ms", "5"])
        .args(["--preset", "local", "--lease-ms", &lease_ms.to_string()])
        .args(["--heartbeat-ms", "100", "--failure-timeout-ms", "400"])
        .env("RUST_LOG", "info")
        .log_to(log)
}

/// `GET path` on `http`: status code and JSON body.
fn get(http: SocketAddr, path: &str) -> Option<(u16, Value)> {
    let (code, body) = request(http, "GET", path, b"", Duration::from_secs(5)).ok()?;
    Some((code, serde_json::from_slice(&body).ok()?))
}

/// Runs `hedgerow node ARGS` to its exit (at most `limit`): exit code and
/// stderr.
fn run_node(args: &[&str], limit: Duration) -> (Option<i32>, String) {
    let dir = temp_dir();
    let err_path = dir.path().join("stderr");
    let mut process = Process::spawn(
        Command::new(HEDGEROW)
            .arg("node")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&err_path).unwrap()),
    );
    let exit = process.wait_exit(limit);
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let exit = exit.unwrap_or_else(|| panic!("still running after {limit:?}: {stderr}"));
    (exit.code(), stderr)
}

#[test]
fn probes_say_live_at_once_and_ready_only_with_a_leader() {
    let _one = one_at_a_time();
    let dir = temp_dir();
    let store = format!("sqlite:{}", dir.path().join("lease.db").display());
    // A node that may not lead, alone: live, but never ready.
    let member = node_command(&dir, "m", &store, 1500)
        .args(["--candidate", "false"])
        .start(Duration::from_secs(20))
        .unwrap();
    let (code, live) = get(member.http, "/v1/live").unwrap();
    assert_eq!((code, &live["live"]), (200, &Value::Bool(true)), "{live}");
    let (code, ready) = get(member.http, "/v1/ready").unwrap();
    assert_eq!(code, 503, "{ready}");
    assert!(
        ready["reason"].as_str().unwrap().contains("no leader"),
        "{ready}"
    );

    // A candidate joins and leads: both are ready.
    let leader = node_command(&dir, "l", &store, 1500)
        .start(Duration::from_secs(20))
        .unwrap();
    let both_ready = wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
        [&member, &leader]
            .iter()
            .all(|n| get(n.http, "/v1/ready").is_some_and(|(c, _)| c == 200))
    });
    assert!(both_ready, "{}", log_tails(dir.path(), 20));
    let (_, ready) = get(member.http, "/v1/ready").unwrap();
    assert_eq!(ready["leader"], "l", "{ready}");
    // The probes need no token and stay out of /metrics' way: plain GETs.
    let (_, ready) = get(leader.http, "/v1/ready").unwrap();
    assert_eq!(ready["is_leader"], true, "{ready}");
}

#[test]
fn a_node_that_cannot_recover_exits_non_zero_saying_why() {
    let _one = one_at_a_time();
    // `hedgerow node` with these flags after the common ones must exit 2
    // by itself; its stderr.
    let fails = |flags: &[&str]| {
        let common = [
            "--cluster",
            "c",
            "--id",
            "a",
            "--clock",
            "system",
            "--clock-bound-ms",
            "5",
        ];
        let (code, err) = run_node(&[&common[..], flags].concat(), Duration::from_secs(20));
        assert_eq!(code, Some(2), "{flags:?}: {err}");
        err
    };
    let loopback = ["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"];

    // A PostgreSQL URL where nothing listens: the store never answers.
    let free = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("postgres://nobody:pw@{}/db", free.local_addr().unwrap());
    drop(free);
    let err = fails(&[&loopback[..], &["--store", &url, "--store-wait-ms", "500"]].concat());
    assert!(err.contains("did not answer within 500 ms"), "{err}");
    assert!(
        !err.contains(":pw@"),
        "the password stays out of the message: {err}"
    );

    // The HTTP port, then the cluster port, is taken.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let err = fails(&[
        "--listen",
        "127.0.0.1:0",
        "--http",
        &port,
        "--store",
        "memory",
    ]);
    assert!(err.contains(&format!("--http {port}")), "{err}");
    let err = fails(&[
        "--listen",
        &port,
        "--http",
        "127.0.0.1:0",
        "--store",
        "memory",
    ]);
    assert!(err.contains("could not start the node"), "{err}");
    drop(taken);

    // A SQLite file in a directory that does not exist.
    let store = "sqlite:/nonexistent/dir/lease.db";
    let err = fails(&[&loopback[..], &["--store", store]].concat());
    assert!(err.contains(&format!("--store {store}")), "{err}");
}

#[test]
fn advertise_with_only_a_port_takes_this_machines_address() {
    let _one = one_at_a_time();
    let dir = temp_dir();
    let node = node_command(&dir, "a", "memory", 1500)
        .args(["--advertise", ":0"])
        .start(Duration::from_secs(20))
        .unwrap();
    let ip: IpAddr = node.addr.ip();
    assert!(
        !ip.is_loopback() && !ip.is_unspecified(),
        "advertised {}",
        node.addr
    );
    assert_ne!(node.addr.port(), 0, "the listener's port is advertised");
    let st = status(node.http).unwrap();
    assert_eq!(st["addr"], node.addr.to_string(), "{st}");
}

/// A cluster being rolled: its nodes by id, the store, the logs.
struct Rolling {
    dir: TempDir,
    store: String,
    lease_ms: u64,
    nodes: BTreeMap<String, Node>,
}

impl Rolling {
    fn statuses(&self) -> Vec<Option<Value>> {
        self.nodes.values().map(|n| status(n.http)).collect()
    }

    fn wait_agreed(&self, limit: Duration, above: u64) -> (String, u64) {
        let want: BTreeSet<String> = self.nodes.keys().cloned().collect();
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(agreed) = agreement(&self.statuses(), &want, above) {
                return agreed;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no agreement among {want:?} above term {above} in {limit:?}\n{}",
            log_tails(self.dir.path(), 30)
        );
    }

    /// Starts `id` and polls its probes until it is ready: every 503 on the
    /// way must say why, and the first 200 must come with the node in a
    /// leader's view. Returns how many not-ready answers it saw.
    fn start_ready(&mut self, id: &str) -> usize {
        let node = node_command(&self.dir, id, &self.store, self.lease_ms)
            .start(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{e}\n{}", log_tails(self.dir.path(), 30)));
        let mut not_ready = 0;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            assert!(
                Instant::now() < deadline,
                "{id} never ready\n{}",
                log_tails(self.dir.path(), 30)
            );
            let (code, body) = get(node.http, "/v1/ready").unwrap();
            if code == 200 {
                let st = status(node.http).unwrap();
                let members: Vec<&str> = st["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|m| m["id"].as_str())
                    .collect();
                assert!(
                    st["leader"].is_string() && members.contains(&id),
                    "ready before joining: {st}"
                );
                break;
            }
            assert_eq!(code, 503);
            assert!(body["reason"].is_string(), "{body}");
            not_ready += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
        self.nodes.insert(id.to_owned(), node);
        not_ready
    }
}

/// Puts one after another through whichever node is up, each Ok answer
/// recorded as `(value, revision)`.
fn putter(
    targets: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, u64)>>>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut failed = 0;
        for i in 0u64.. {
            if stop.load(Ordering::SeqCst) {
                return failed;
            }
            let list = targets.lock().unwrap().clone();
            let addr = list[(i as usize) % list.len()];
            let value = format!("v{i}");
            match request(
                addr,
                "PUT",
                "/v1/kv/roll",
                value.as_bytes(),
                Duration::from_secs(10),
            ) {
                Ok((200, body)) => {
                    let answer: Value = serde_json::from_slice(&body).unwrap();
                    acked
                        .lock()
                        .unwrap()
                        .push((value, answer["revision"].as_u64().unwrap()));
                }
                _ => failed += 1,
            }
        }
        failed
    })
}

/// Five processes, each replaced in turn by SIGTERM and a new process of
/// the same id, while puts run: each replaced leader hands over once, by
/// releasing its lease (well before it would expire); a replaced member
/// changes no leadership; no put answered Ok is lost; a new process is
/// ready only once it is in a leader's view.
#[test]
fn a_rolling_update_hands_over_once_per_leader_and_loses_no_acknowledged_put() {
    let _one = one_at_a_time();
    let lease_ms = 4000;
    let dir = temp_dir();
    let store = format!("sqlite:{}", dir.path().join("lease.db").display());
    let mut cluster = Rolling {
        dir,
        store,
        lease_ms,
        nodes: BTreeMap::new(),
    };
    let ids: Vec<String> = (1..=5).map(|i| format!("n{i}")).collect();
    for id in &ids {
        cluster.start_ready(id);
    }
    let (_, mut term) = cluster.wait_agreed(Duration::from_secs(20), 0);

    let all: Vec<SocketAddr> = cluster.nodes.values().map(|n| n.http).collect();
    let targets = Arc::new(Mutex::new(all));
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let puts = putter(targets.clone(), stop.clone(), acked.clone());
    let mut handovers = Vec::new();
    let mut leaders_replaced = 0;
    let mut not_ready_seen = 0;
    for id in &ids {
        let (leader, _) = cluster.wait_agreed(Duration::from_secs(20), term - 1);
        // Puts go to the nodes that stay up during this step.
        *targets.lock().unwrap() = cluster
            .nodes
            .iter()
            .filter(|(k, _)| *k != id)
            .map(|(_, n)| n.http)
            .collect();
        let mut old = cluster.nodes.remove(id).unwrap();
        let sent = Instant::now();
        old.process.signal("TERM");
        if *id == leader {
            leaders_replaced += 1;
            let (next, next_term) = cluster.wait_agreed(Duration::from_millis(lease_ms), term);
            handovers.push((sent.elapsed(), leader.clone(), next));
            assert_eq!(
                next_term,
                term + 1,
                "one leadership change for one replaced leader"
            );
            term = next_term;
        }
        let exit = old
            .process
            .wait_exit(Duration::from_secs(10))
            .expect("exits after SIGTERM");
        assert!(exit.success(), "{id} exited with {exit}");
        not_ready_seen += cluster.start_ready(id);
        let (_, now_term) = cluster.wait_agreed(Duration::from_secs(20), term - 1);
        assert_eq!(now_term, term, "replacing {id} changed the leadership");
    }
    let settle = acked.lock().unwrap().len();
    wait_until(Duration::from_secs(10), Duration::from_millis(10), || {
        acked.lock().unwrap().len() >= settle + 5
    });
    stop.store(true, Ordering::SeqCst);
    let failed = puts.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    for (took, from, to) in &handovers {
        eprintln!("handover {from} -> {to} on SIGTERM: {took:?} (lease {lease_ms} ms)");
    }
    eprintln!(
        "{} puts acknowledged, {failed} failed; {leaders_replaced} leaders replaced; \
         {not_ready_seen} not-ready answers from new processes",
        acked.len()
    );
    assert!(leaders_replaced >= 1, "the leader was among the replaced");
    for (took, ..) in &handovers {
        // A lapsed lease would take at least lease_ms: this one was released.
        assert!(
            took.as_millis() < u128::from(lease_ms),
            "handover by expiry: {took:?}"
        );
    }
    assert!(acked.len() >= 10, "too few puts to judge: {}", acked.len());
    let reader = cluster.nodes.values().next().unwrap().http;
    let stored: BTreeSet<(String, u64)> = kv_history(reader, "roll").into_iter().collect();
    for put in &acked {
        assert!(stored.contains(put), "acknowledged put {put:?} is missing");
    }
}
