//! The `hedgerow` binary, black box: `hedgerow node` processes on loopback
//! sharing one store, driven and observed only through their HTTP control
//! API and signals. Election and membership, send from a non-leader,
//! broadcast, failover after SIGKILL (SQLite and PostgreSQL), a graceful
//! handover on SIGTERM, and the coordination routes: KV through
//! `hedgerow kv` and HTTP with its bad input, semaphores, a lock holder
//! paused with SIGSTOP past its permit lease, and acknowledged puts across
//! a leader's SIGKILL.
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
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

// The binary's own minimal HTTP client, so the test speaks to the control
// API exactly as the demo does.
use hedgerow_cli::client::request;
use hedgerow_tests::{
    agreement, log_tails, one_at_a_time, postgres, postgres_url, status, temp_dir,
};
use hedgerow_tests::{Node, NodeCommand, Process, Scrape, TempDir};
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
    /// Mutual TLS between the nodes, with certificates from `hedgerow
    /// certs` in `dir`.
    tls: bool,
}

impl Cluster {
    fn start(n: usize, store: Option<String>, lease_ms: u64) -> Cluster {
        Self::start_with(n, store, lease_ms, false)
    }

    fn start_with(n: usize, store: Option<String>, lease_ms: u64, tls: bool) -> Cluster {
        let dir = temp_dir();
        if tls {
            let ids: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
            let hosts = hedgerow_cli::certs::LOOPBACK_HOSTS.map(String::from);
            hedgerow_cli::certs::write("cli-test", dir.path(), &ids, &hosts).unwrap();
        }
        let store =
            store.unwrap_or_else(|| format!("sqlite:{}", dir.path().join("lease.db").display()));
        let mut cluster = Cluster {
            nodes: Vec::new(),
            dir,
            store,
            lease_ms,
            tls,
        };
        for i in 1..=n {
            let node = cluster.spawn(&format!("n{i}"));
            cluster.nodes.push(node);
        }
        cluster
    }

    fn spawn(&self, id: &str) -> Node {
        let log = File::create(self.dir.path().join(format!("{id}.log"))).unwrap();
        let mut tls = Vec::new();
        if self.tls {
            let (cert, key) = hedgerow_cli::certs::node_files(self.dir.path(), id);
            let ca = hedgerow_cli::certs::ca_file(self.dir.path());
            for (flag, path) in [("--tls-ca", ca), ("--tls-cert", cert), ("--tls-key", key)] {
                tls.extend([flag.to_string(), path.display().to_string()]);
            }
        }
        NodeCommand::new(Path::new(HEDGEROW), "cli-test", id, &self.store)
            .args(tls.iter().map(String::as_str))
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
        self.call(id, "POST", path, body)
    }

    /// `method path` with `body` to node `id`; the status and the JSON
    /// answer.
    fn call(&self, id: &str, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        http_json(self.node(id).http, method, path, body)
    }

    /// `hedgerow kv ARGS --node <id's HTTP>`: exit code, stdout, stderr.
    fn kv_cli(&self, id: &str, args: &[&str]) -> (Option<i32>, String, String) {
        let out = Command::new(HEDGEROW)
            .arg("kv")
            .args(args)
            .args(["--node", &self.node(id).http.to_string()])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Two distinct ids other than `id`.
    fn two_others(&self, id: &str) -> (String, String) {
        let mut others = self.nodes.iter().filter(|n| n.id != id);
        let a = others.next().expect("a second node").id.clone();
        let b = others.next().expect("a third node").id.clone();
        (a, b)
    }

    fn metrics(&self, id: &str) -> Scrape {
        Scrape::of(self.node(id).http).unwrap()
    }
}

fn http_json(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let (code, body) = request(addr, method, path, body, Duration::from_secs(10)).unwrap();
    let json = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "{method} {path}: {code}, not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    });
    (code, json)
}

/// Field `field` of each object in the JSON array `list`, where it is a
/// string.
fn strings<'a>(list: &'a Value, field: &str) -> Vec<&'a str> {
    let items = list
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"));
    items.iter().filter_map(|e| e[field].as_str()).collect()
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

    // Metrics of the leader say so, as a Prometheus server parses them
    // (published about once a second: a scrape or two may come first).
    let me = [("node", leader.as_str()), ("cluster", "cli-test")];
    let shown =
        hedgerow_tests::wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
            let m = Scrape::of(cluster.node(&leader).http).unwrap();
            m.value("hedgerow_is_leader", &me) == Some(1.0)
                && m.value("hedgerow_term", &me) == Some(term as f64)
                && m.value("hedgerow_members", &me) == Some(5.0)
        });
    let m = Scrape::of(cluster.node(&leader).http).unwrap();
    assert!(shown, "the leader's metrics: {:?}", m.names());
    assert_eq!(m.value("hedgerow_elections_won_total", &me), Some(1.0));
    assert!(m.value("hedgerow_lease_cas_other_seconds", &me) >= Some(1.0));
    assert!(
        m.value(
            "hedgerow_transport_messages_in_total",
            &[("kind", "heartbeat")]
        ) > Some(0.0)
    );
    assert!(m.value("hedgerow_transport_bytes_out_total", &me) > Some(0.0));
    assert_eq!(m.value("hedgerow_store_errors_total", &me), Some(0.0));
    assert!(m
        .help("hedgerow_term")
        .is_some_and(|h| h.contains("fencing token")));
    // Every series the library names, and nothing else of ours.
    for name in m.names().iter().filter(|n| n.starts_with("hedgerow_")) {
        let base = name.trim_end_matches("_count").trim_end_matches("_sum");
        assert!(
            hedgerow::metrics::ALL.iter().any(|x| x.name == base),
            "{name} is not in hedgerow::metrics::ALL"
        );
    }

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
        let m = Scrape::of(cluster.node(&next).http).unwrap();
        let renewals = m
            .value("hedgerow_lease_renew_seconds_count", &[])
            .unwrap_or_else(|| panic!("no renew count in {:?}", m.names()));
        if renewals > 0.0 {
            assert!(m.value("hedgerow_leader_changes_total", &[]) >= Some(1.0));
            assert_eq!(m.value("hedgerow_is_leader", &[]), Some(1.0));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no renewal timed in {lease_ms} ms x 2: {:?}",
            m.names()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Each log line's node span names the term once, however many terms
    // the node has seen (a recorded field used to be appended, one
    // `term=` per change).
    std::thread::sleep(Duration::from_millis(200));
    let new_leader_log = cluster.dir.path().join(format!("{next}.log"));
    let log = std::fs::read_to_string(&new_leader_log).unwrap();
    let spans: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once("hedgerow{").map(|(_, s)| s))
        .filter_map(|s| s.split_once('}').map(|(span, _)| span))
        .collect();
    assert!(
        spans.iter().any(|s| s.contains("term=")),
        "no line names its term:\n{log}"
    );
    for span in spans {
        assert!(span.matches("term=").count() <= 1, "{span}");
    }
    for line in log.lines() {
        assert!(line.matches("hedgerow{").count() <= 1, "nested: {line}");
    }
}

#[test]
fn five_processes_on_sqlite_elect_serve_and_fail_over() {
    let _one = one_at_a_time();
    elect_send_broadcast_failover(None);
}

#[test]
fn five_tls_processes_elect_and_fail_over_after_a_sigkill_and_refuse_plaintext() {
    let _one = one_at_a_time();
    let lease_ms = 1500;
    let mut cluster = Cluster::start_with(5, None, lease_ms, true);
    let (leader, term) = cluster.wait_agreed(Duration::from_secs(20), 0);
    // A plaintext hello at a TLS node's cluster port is answered with a
    // plain refusal that says why.
    let addr = cluster.node(&leader).addr;
    let refusal = plain_hello(addr);
    assert!(refusal.contains("requires mutual TLS"), "{refusal}");
    // The library publishes the transport's counters about once a second.
    let refused = || {
        cluster
            .metrics(&leader)
            .value("hedgerow_refused_plaintext_peer_total", &[])
    };
    hedgerow_tests::wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        refused() == Some(1.0)
    });
    assert_eq!(refused(), Some(1.0));

    let mut old = cluster.remove(&leader);
    old.process.kill();
    let bound = Duration::from_millis(lease_ms + 4 * BOUND_MS + FAILURE_TIMEOUT_MS) + SLACK;
    let (next, next_term) = cluster.wait_agreed(bound, term);
    assert_ne!(next, leader);
    assert!(next_term > term);
    let sender = cluster.other_than(&next);
    let (code, reply) = cluster.post(&sender, "/v1/send", b"over tls");
    assert_eq!(code, 200, "{reply}");
    assert_eq!(reply["handled_by"], next.as_str(), "{reply}");
}

/// Says a plaintext hello to `addr` and returns the refusal's text.
fn plain_hello(addr: SocketAddr) -> String {
    use hedgerow_core::wire::{decode_frame, encode_frame, Frame};
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let id = hedgerow_core::NodeId::new("plain").unwrap();
    let hello = hedgerow_core::Hello::new("cli-test", id, 1, "127.0.0.1:1");
    let mut buf = Vec::new();
    encode_frame(&Frame::Hello(hello), 1 << 20, &mut buf).unwrap();
    s.write_all(&buf).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    match decode_frame(&got, 1 << 20) {
        Ok(Some((Frame::Refuse(why), _))) => why,
        other => panic!("a plaintext hello got {other:?}"),
    }
}

/// One node `t` on the memory store whose control API asks for a token
/// (written in `dir`), with `extra` flags; the node and the token file.
fn node_with_token(dir: &TempDir, extra: &[&str]) -> (Node, std::path::PathBuf) {
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "a-long-enough-token-0123456789\n").unwrap();
    let log = File::create(dir.path().join("t.log")).unwrap();
    let node = NodeCommand::new(Path::new(HEDGEROW), "cli-test", "t", "memory")
        .args([
            "--clock",
            "system",
            "--clock-bound-ms",
            "5",
            "--preset",
            "local",
        ])
        .args(extra.iter().copied())
        .args(["--http-token-file", &token_file.display().to_string()])
        .log_to(log)
        .start(Duration::from_secs(20))
        .unwrap();
    (node, token_file)
}

#[test]
fn the_control_api_asks_for_its_token_and_kv_sends_it() {
    let _one = one_at_a_time();
    let dir = temp_dir();
    let (node, token_file) = node_with_token(&dir, &[]);
    let wait = Duration::from_secs(5);
    // No token, a wrong one: a bare 401.
    for auth in [
        None,
        Some("Bearer a-long-enough-token-0123456780"),
        Some("Basic eA=="),
    ] {
        let (code, body) =
            hedgerow_cli::client::request_with(node.http, "GET", "/v1/status", b"", wait, auth)
                .unwrap();
        assert_eq!(code, 401, "{auth:?}");
        assert!(body.is_empty(), "{}", String::from_utf8_lossy(&body));
    }
    let good = Some("Bearer a-long-enough-token-0123456789");
    let (code, _) =
        hedgerow_cli::client::request_with(node.http, "GET", "/metrics", b"", wait, good).unwrap();
    assert_eq!(code, 200);
    // The probes need no token.
    let (code, _) = request(node.http, "GET", "/v1/live", b"", wait).unwrap();
    assert_ne!(code, 401);
    // `hedgerow kv` sends the token from the same flag.
    let kv = |args: &[&str], token: bool| {
        let mut cmd = Command::new(HEDGEROW);
        cmd.arg("kv")
            .args(args)
            .args(["--node", &node.http.to_string()]);
        if token {
            cmd.args(["--http-token-file", &token_file.display().to_string()]);
        }
        cmd.stdin(Stdio::null()).output().unwrap()
    };
    // A single node leads within a lease or so; retry the put until then.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !kv(&["put", "k", "v"], true).status.success() {
        assert!(Instant::now() < deadline, "no put through the token");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = kv(&["get", "k"], false);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    assert!(kv(&["get", "k"], true).status.success());
    drop(node);
}

#[test]
fn the_control_api_over_tls_serves_holders_of_the_ca_and_the_token_only() {
    use hedgerow_cli::client::{request_to, HttpsTrust};
    let _one = one_at_a_time();
    let dir = temp_dir();
    let hosts = hedgerow_cli::certs::LOOPBACK_HOSTS.map(String::from);
    hedgerow_cli::certs::write("cli-test", dir.path(), &["t".into()], &hosts).unwrap();
    let ca = hedgerow_cli::certs::ca_file(dir.path());
    let (cert, key) = hedgerow_cli::certs::node_files(dir.path(), "t");
    let (ca_arg, cert_arg, key_arg) = (
        ca.display().to_string(),
        cert.display().to_string(),
        key.display().to_string(),
    );
    let tls_args = [
        "--tls-ca",
        &ca_arg,
        "--tls-cert",
        &cert_arg,
        "--tls-key",
        &key_arg,
        "--http-tls",
        "on",
    ];
    let (node, token_file) = node_with_token(&dir, &tls_args);
    let wait = Duration::from_secs(5);
    let trust = HttpsTrust::from_file(&ca).unwrap();
    let good = Some("Bearer a-long-enough-token-0123456789");
    let https = |host: &str, trust: &HttpsTrust, path: &str, auth: Option<&str>| {
        let authority = format!("{host}:{}", node.http.port());
        request_to(&authority, Some(trust), "GET", path, b"", wait, auth)
    };
    // Every loopback name the certificate carries, with the token.
    for host in ["127.0.0.1", "localhost"] {
        let (code, _) = https(host, &trust, "/v1/status", good).unwrap();
        assert_eq!(code, 200, "{host}");
    }
    // TLS authenticates the server, not the caller: the token is still
    // asked for; the probes still need none.
    let (code, body) = https("127.0.0.1", &trust, "/v1/status", None).unwrap();
    assert_eq!((code, body.len()), (401, 0));
    let (code, _) = https("127.0.0.1", &trust, "/v1/live", None).unwrap();
    assert_eq!(code, 200);
    // A client trusting another CA refuses the node; plain HTTP gets no
    // answer.
    let other_dir = temp_dir();
    hedgerow_cli::certs::write("cli-test", other_dir.path(), &["x".into()], &hosts).unwrap();
    let other = HttpsTrust::from_file(&hedgerow_cli::certs::ca_file(other_dir.path())).unwrap();
    let err = https("127.0.0.1", &other, "/v1/live", None).unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    assert!(request(node.http, "GET", "/v1/live", b"", wait).is_err());

    // Connections that stall before their ClientHello, or send garbage,
    // hold up nobody else: the handshake runs on each connection's task.
    let mut stalled: Vec<std::net::TcpStream> = (0..50)
        .map(|_| std::net::TcpStream::connect(node.http).unwrap())
        .collect();
    for s in stalled.iter_mut().take(10) {
        use std::io::Write as _;
        let _ = s.write_all(b"\x16\x03\x01\xff\xffgarbage before any ClientHello");
    }
    let started = Instant::now();
    let (code, _) = https("127.0.0.1", &trust, "/v1/status", good).unwrap();
    assert_eq!(code, 200, "after {:?}", started.elapsed());
    drop(stalled);

    // `hedgerow kv` reaches it with the CA and the token, and says why
    // without the CA.
    let kv = |args: &[&str], ca_flag: bool| {
        let mut cmd = Command::new(HEDGEROW);
        cmd.arg("kv")
            .args(args)
            .args(["--node", &format!("localhost:{}", node.http.port())])
            .args(["--http-tls", "on"])
            .args(["--http-token-file", &token_file.display().to_string()]);
        if ca_flag {
            cmd.args(["--tls-ca", &ca.display().to_string()]);
        }
        cmd.stdin(Stdio::null()).output().unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !kv(&["put", "k", "over-tls"], true).status.success() {
        assert!(Instant::now() < deadline, "no put over TLS");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = kv(&["get", "k"], true);
    assert!(String::from_utf8_lossy(&out.stdout).contains("over-tls"));
    let out = kv(&["get", "k"], false);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-ca"));
    drop(node);
}

#[test]
fn five_processes_on_postgres_elect_serve_and_fail_over() {
    let _one = one_at_a_time();
    let Some(server) = postgres("five_processes_on_postgres") else {
        return;
    };
    elect_send_broadcast_failover(Some(postgres_url(&server)));
}

/// The PostgreSQL password from `--store-password-file`'s file (env var
/// here, as a Kubernetes pod sets it) over verify-full TLS: the node leads
/// with the right one, and with a wrong one exits naming the failure but
/// not the password.
#[test]
fn a_node_logs_in_to_postgres_with_a_password_file() {
    let _one = one_at_a_time();
    let Some(server) = postgres("a_node_logs_in_to_postgres_with_a_password_file") else {
        return;
    };
    let role = hedgerow::store::conformance::postgres_server::PASSWORD_ROLE;
    server
        .psql(&format!(
            "CREATE ROLE {role} LOGIN SUPERUSER PASSWORD 'pw-in-a-file'"
        ))
        .unwrap_or_else(|e| panic!("psql: {e}"));
    let url = postgres_url(&server).replace("://postgres@", &format!("://{role}@"));
    let dir = temp_dir();
    let password = dir.path().join("pg-password");
    let log = dir.path().join("node.log");
    let start = |secret: &str| {
        std::fs::write(&password, secret).unwrap();
        NodeCommand::new(Path::new(HEDGEROW), "pw-test", "p1", &url)
            .args(["--clock", "system", "--clock-bound-ms", "5"])
            .args(["--preset", "local", "--store-wait-ms", "3000"])
            .env(
                "HEDGEROW_STORE_PASSWORD_FILE",
                &password.display().to_string(),
            )
            .log_to(std::fs::File::create(&log).unwrap())
            .start(Duration::from_secs(20))
    };
    let node = start("pw-in-a-file\n").unwrap_or_else(|why| panic!("{why}"));
    assert!(
        hedgerow_tests::wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
            status(node.http).is_some_and(|st| st["is_leader"] == true)
        }),
        "the node never led: {}",
        log_tails(dir.path(), 20)
    );
    drop(node);

    let refused = start("not-the-password\n");
    assert!(refused.is_err(), "a wrong password got a node ready");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("password authentication failed"),
        "the log says why: {text}"
    );
    assert!(
        !text.contains("not-the-password"),
        "the password is never logged: {text}"
    );
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
    // The control API beyond loopback needs a token; TLS needs its files.
    let (code, err) = run(&[&base[..], &["--store", "memory", "--http", "0.0.0.0:0"]].concat());
    assert_eq!(code, Some(2));
    assert!(err.contains("--http-token-file"), "{err}");
    let (code, err) = run(&[&base[..], &["--store", "memory", "--tls", "on"]].concat());
    assert_eq!(code, Some(2));
    assert!(
        err.contains("missing --tls-ca, --tls-cert, --tls-key"),
        "{err}"
    );
    let (code, err) = run(&[&base[..], &["--store", "memory", "--http-tls", "on"]].concat());
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--http-tls on serves the node's certificate: also give --tls-ca, --tls-cert"),
        "{err}"
    );
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
    // A put has no leader to go to: the same error, and nothing written
    // (reads go to the store, so they answer without a leader).
    let (code, put) = http_json(http, "PUT", "/v1/kv/k", b"v");
    assert_eq!((code, &put["kind"]), (503, &"no_leader".into()), "{put}");
    let (code, get) = http_json(http, "GET", "/v1/kv/k", b"");
    assert_eq!((code, &get["kind"]), (404, &"not_found".into()), "{get}");
    let (code, lock) = http_json(http, "POST", "/v1/locks/job", b"");
    assert_eq!((code, &lock["kind"]), (503, &"no_leader".into()), "{lock}");
    let m = Scrape::of(http).unwrap();
    assert_eq!(
        m.value("hedgerow_kv_puts_total", &[("outcome", "no_leader")]),
        Some(1.0)
    );
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

#[test]
fn kv_puts_through_the_cli_are_read_from_another_node_and_bad_input_is_a_400() {
    let _one = one_at_a_time();
    let cluster = Cluster::start(3, None, 1500);
    let (leader, _) = cluster.wait_agreed(Duration::from_secs(15), 0);
    let (n1, n2, n3) = ("n1", "n2", "n3");

    // Two revisions of one key, put with `hedgerow kv put` through two
    // nodes (whichever leads, at least one of them forwards).
    let (code, out, err) = cluster.kv_cli(n1, &["put", "cfg/mode", "blue"]);
    assert_eq!(code, Some(0), "{err}");
    let first: Value = serde_json::from_str(&out).unwrap();
    let r1 = first["revision"]
        .as_u64()
        .unwrap_or_else(|| panic!("{out}"));
    let (code, out, err) = cluster.kv_cli(n2, &["put", "cfg/mode", "green"]);
    assert_eq!(code, Some(0), "{err}");
    let r2 = serde_json::from_str::<Value>(&out).unwrap()["revision"]
        .as_u64()
        .unwrap();
    assert!(r2 > r1, "revisions rise: {r1} then {r2}");

    // Read over another node's HTTP: the latest, and the first by revision.
    let (code, latest) = cluster.call(n3, "GET", "/v1/kv/cfg%2Fmode", b"");
    assert_eq!(code, 200, "{latest}");
    assert_eq!(latest["key"], "cfg/mode", "{latest}");
    assert_eq!(latest["value"], "green", "{latest}");
    assert_eq!(latest["encoding"], "utf8", "{latest}");
    assert_eq!(latest["revision"], r2, "{latest}");
    assert_eq!(latest["written_by"], n2, "{latest}");
    assert!(latest["term"].as_u64().unwrap() >= 1, "{latest}");
    let (code, old) = cluster.call(n3, "GET", &format!("/v1/kv/cfg%2Fmode?rev={r1}"), b"");
    assert_eq!(code, 200, "{old}");
    assert_eq!(
        (&old["value"], &old["written_by"]),
        (&"blue".into(), &n1.into())
    );
    let (code, out, err) = cluster.kv_cli(n3, &["get", "cfg/mode", "--rev", &r1.to_string()]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["value"],
        "blue"
    );

    // Bytes that are not UTF-8 come back as base64, and say so.
    let (code, put) = cluster.call(n2, "PUT", "/v1/kv/cfg%2Fbin", &[0xff, 0x00]);
    assert_eq!(code, 200, "{put}");
    let (_, bin) = cluster.call(n1, "GET", "/v1/kv/cfg%2Fbin", b"");
    assert_eq!(
        (&bin["value"], &bin["encoding"]),
        (&"/wA=".into(), &"base64".into())
    );

    // History and list, through the CLI.
    let (code, out, err) = cluster.kv_cli(n3, &["history", "cfg/mode"]);
    assert_eq!(code, Some(0), "{err}");
    let history: Value = serde_json::from_str(&out).unwrap();
    let values = strings(&history["revisions"], "value");
    assert_eq!(values, ["blue", "green"], "{history}");
    cluster.call(n1, "PUT", "/v1/kv/other", b"x");
    let (code, out, err) = cluster.kv_cli(n1, &["list", "--prefix", "cfg/"]);
    assert_eq!(code, Some(0), "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    let keys = strings(&list["entries"], "key");
    assert_eq!(keys, ["cfg/bin", "cfg/mode"], "{list}");

    // Missing: a 404, and the CLI exits non-zero saying so.
    let (code, missing) = cluster.call(n1, "GET", "/v1/kv/nope", b"");
    assert_eq!(
        (code, &missing["kind"]),
        (404, &"not_found".into()),
        "{missing}"
    );
    let (code, _, err) = cluster.kv_cli(n1, &["get", "nope"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("HTTP 404"), "{err}");
    let (code, _) = cluster.call(n1, "GET", "/v1/kv/cfg%2Fmode?rev=abc", b"");
    assert_eq!(code, 400);

    // Bad input is a clear 400 and writes nothing.
    let (code, empty) = cluster.call(n1, "PUT", "/v1/kv/", b"x");
    assert_eq!((code, &empty["kind"]), (400, &"invalid".into()), "{empty}");
    let huge = vec![b'a'; 300 * 1024];
    let (code, oversize) = cluster.call(n1, "PUT", "/v1/kv/cfg%2Fhuge", &huge);
    assert_eq!(
        (code, &oversize["kind"]),
        (400, &"invalid".into()),
        "{oversize}"
    );
    assert!(
        oversize["error"].as_str().unwrap().contains("value"),
        "{oversize}"
    );
    let long_key = "k".repeat(600);
    let (code, long) = cluster.call(n1, "PUT", &format!("/v1/kv/{long_key}"), b"x");
    assert_eq!(code, 400, "{long}");
    let (code, _, err) = cluster.kv_cli(n1, &["put", "", "x"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("HTTP 400"), "{err}");
    let (code, _) = cluster.call(n3, "GET", "/v1/kv/cfg%2Fhuge", b"");
    assert_eq!(code, 404);
    let (_, history) = cluster.call(n3, "GET", "/v1/kv/cfg%2Fmode/history", b"");
    assert_eq!(
        history["revisions"].as_array().unwrap().len(),
        2,
        "{history}"
    );

    // n1 answered two good puts (one by the CLI, `other`) and four bad ones.
    let m = cluster.metrics(n1);
    assert_eq!(
        m.value("hedgerow_kv_puts_total", &[("outcome", "ok")]),
        Some(2.0)
    );
    assert_eq!(
        m.value("hedgerow_kv_puts_total", &[("outcome", "invalid")]),
        Some(4.0)
    );
    // Published about once a second: the leader's count may lag a scrape.
    let leader_http = cluster.node(&leader).http;
    assert!(
        hedgerow_tests::wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
            Scrape::of(leader_http)
                .unwrap()
                .value("hedgerow_coord_store_ops_total", &[])
                >= Some(4.0)
        }),
        "fewer than 4 coordination store ops on the leader"
    );
    assert!(
        Scrape::of(leader_http)
            .unwrap()
            .value("hedgerow_coord_store_op_seconds", &[("kind", "put")])
            >= Some(2.0)
    );
}

/// A lock's JSON in `GET /v1/locks` of `addr`, by name.
fn held_lock(addr: SocketAddr, name: &str) -> Option<Value> {
    let (code, locks) = http_json(addr, "GET", "/v1/locks", b"");
    assert_eq!(code, 200, "{locks}");
    locks["locks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .cloned()
}

#[test]
fn a_lock_holder_paused_past_its_permit_lease_reports_it_lost_on_resuming() {
    let _one = one_at_a_time();
    let cluster = Cluster::start(3, None, 1500);
    let (leader, _) = cluster.wait_agreed(Duration::from_secs(15), 0);
    // Both non-leaders, so that pausing `a` leaves the leader running.
    let (a, b) = cluster.two_others(&leader);

    // A semaphore of 2 held by the nodes for their callers.
    let (code, p1) = cluster.post(&a, "/v1/semaphores/pool?limit=2", b"");
    assert_eq!(code, 200, "{p1}");
    let (code, p2) = cluster.post(&b, "/v1/semaphores/pool?limit=2", b"");
    assert_eq!(code, 200, "{p2}");
    let (code, busy) = cluster.post(&leader, "/v1/semaphores/pool?limit=2", b"");
    assert_eq!((code, &busy["kind"]), (409, &"busy".into()), "{busy}");
    let (code, conflict) = cluster.post(&leader, "/v1/semaphores/pool?limit=3", b"");
    assert_eq!(
        (code, &conflict["kind"]),
        (409, &"refused".into()),
        "{conflict}"
    );
    let (code, zero) = cluster.post(&leader, "/v1/semaphores/pool0?limit=0", b"");
    assert_eq!((code, &zero["kind"]), (400, &"invalid".into()), "{zero}");
    let permit = p1["permit"].as_u64().unwrap();
    let (code, _) = cluster.call(&a, "DELETE", &format!("/v1/semaphores/pool/{permit}"), b"");
    assert_eq!(code, 200);
    let (code, again) = cluster.call(&a, "DELETE", &format!("/v1/semaphores/pool/{permit}"), b"");
    assert_eq!(code, 404, "{again}");
    let (code, p3) = cluster.post(&leader, "/v1/semaphores/pool?limit=2&wait_ms=3000", b"");
    assert_eq!(code, 200, "{p3}");
    assert!(
        p3["token"].as_u64() > p2["token"].as_u64(),
        "{p2} then {p3}"
    );

    // `a` takes the lock; `b` cannot have it meanwhile.
    let (code, first) = cluster.post(&a, "/v1/locks/job", b"");
    assert_eq!(code, 200, "{first}");
    assert_eq!(first["valid"], true, "{first}");
    let t1 = first["token"].as_u64().unwrap();
    let (code, busy) = cluster.post(&b, "/v1/locks/job", b"");
    assert_eq!((code, &busy["kind"]), (409, &"busy".into()), "{busy}");
    let held = held_lock(cluster.node(&a).http, "job").unwrap();
    assert_eq!(
        (&held["valid"], &held["lost"]),
        (&true.into(), &false.into()),
        "{held}"
    );
    let a_http = cluster.node(&a).http;
    assert!(
        hedgerow_tests::wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
            Scrape::of(a_http)
                .unwrap()
                .value("hedgerow_permits_held", &[])
                == Some(1.0)
        }),
        "the held permit is not in a's metrics"
    );

    // Pause `a` past its permit lease (1 s in the local preset): `b`'s
    // waiting acquire gets the lock once the leader has let it lapse, with
    // a higher fencing token.
    let node_a = cluster.node(&a);
    node_a.process.signal("STOP");
    let (code, second) = cluster.post(&b, "/v1/locks/job?wait_ms=5000", b"");
    if code != 200 {
        node_a.process.signal("CONT");
        panic!(
            "b did not get the lock: {code} {second}\n{}",
            cluster.logs()
        );
    }
    let t2 = second["token"].as_u64().unwrap();
    assert!(t2 > t1, "fencing tokens rise: {t1} then {t2}");
    node_a.process.signal("CONT");

    // The first answer after resuming already says the permit is invalid.
    let resumed = held_lock(node_a.http, "job").expect("a still lists the lock");
    assert_eq!(resumed["valid"], false, "{resumed}");
    assert_eq!(resumed["token"], t1, "{resumed}");
    // And it learns the permit is lost soon after.
    let mut last = resumed;
    let lost =
        hedgerow_tests::wait_until(Duration::from_secs(3), Duration::from_millis(20), || {
            last = held_lock(node_a.http, "job").unwrap();
            last["lost"] == true
        });
    assert!(lost, "never reported lost: {last}\n{}", cluster.logs());
    assert_eq!(last["valid"], false, "{last}");
    let holder = held_lock(cluster.node(&b).http, "job").unwrap();
    assert_eq!(
        (&holder["valid"], &holder["token"]),
        (&true.into(), &t2.into()),
        "{holder}"
    );

    // Releasing: once, then 404.
    let (code, released) = cluster.call(&a, "DELETE", "/v1/locks/job", b"");
    assert_eq!(code, 200, "{released}");
    let (code, twice) = cluster.call(&a, "DELETE", "/v1/locks/job", b"");
    assert_eq!(
        (code, &twice["kind"]),
        (404, &"not_found".into()),
        "{twice}"
    );
    let (code, _) = cluster.call(&b, "DELETE", "/v1/locks/job", b"");
    assert_eq!(code, 200);
    let (code, third) = cluster.post(&a, "/v1/locks/job?wait_ms=3000", b"");
    assert_eq!(code, 200, "{third}");
    assert!(third["token"].as_u64().unwrap() > t2, "{third}");
}

#[test]
fn puts_acknowledged_before_the_leader_is_killed_are_all_readable_after() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let _one = one_at_a_time();
    let lease_ms = 1500;
    let mut cluster = Cluster::start(3, None, lease_ms);
    let (leader, term) = cluster.wait_agreed(Duration::from_secs(15), 0);
    let (writer, reader) = cluster.two_others(&leader);

    // Puts one after another through `writer`, each answer recorded.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let addr = cluster.node(&writer).http;
    let putter = {
        let (stop, acked) = (stop.clone(), acked.clone());
        std::thread::spawn(move || {
            let mut failed = 0;
            for i in 0.. {
                if stop.load(Ordering::SeqCst) {
                    return failed;
                }
                let value = format!("v{i}");
                match request(
                    addr,
                    "PUT",
                    "/v1/kv/seq",
                    value.as_bytes(),
                    Duration::from_secs(10),
                ) {
                    Ok((200, body)) => {
                        let answer: Value = serde_json::from_slice(&body).unwrap();
                        let rev = answer["revision"].as_u64().unwrap();
                        acked.lock().unwrap().push((value, rev));
                    }
                    _ => failed += 1,
                }
            }
            failed
        })
    };
    let count = |acked: &Mutex<Vec<(String, u64)>>| acked.lock().unwrap().len();
    let started =
        hedgerow_tests::wait_until(Duration::from_secs(10), Duration::from_millis(10), || {
            count(&acked) >= 10
        });
    assert!(started, "puts did not get going\n{}", cluster.logs());

    let mut old = cluster.remove(&leader);
    old.process.kill();
    let at_kill = count(&acked);
    cluster.wait_agreed(Duration::from_secs(15), term);
    let resumed =
        hedgerow_tests::wait_until(Duration::from_secs(15), Duration::from_millis(10), || {
            count(&acked) >= at_kill + 10
        });
    stop.store(true, Ordering::SeqCst);
    let failed = putter.join().unwrap();
    assert!(
        resumed,
        "puts did not resume after the failover\n{}",
        cluster.logs()
    );
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "{} puts acknowledged ({at_kill} before the kill), {failed} failed",
        acked.len()
    );

    // Every acknowledged put is there, at its revision, and none twice.
    let stored = hedgerow_tests::kv_history(cluster.node(&reader).http, "seq");
    let values: BTreeSet<&str> = stored.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(
        values.len(),
        stored.len(),
        "a put applied twice: {stored:?}"
    );
    for (value, rev) in &acked {
        assert!(
            stored.contains(&(value.clone(), *rev)),
            "acknowledged {value} at revision {rev} is missing: {stored:?}"
        );
        let (code, one) = cluster.call(&reader, "GET", &format!("/v1/kv/seq?rev={rev}"), b"");
        assert_eq!(
            (code, &one["value"]),
            (200, &value.as_str().into()),
            "{one}"
        );
    }
    assert!(
        acked.windows(2).all(|w| w[0].1 < w[1].1),
        "revisions rise: {acked:?}"
    );
}
