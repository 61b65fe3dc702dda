//! # hedgerow-tests
//!
//! Black-box tests that start processes: `hedgerow` command clusters on
//! SQLite and PostgreSQL (`tests/cli.rs`), stores raced by separate
//! processes (`tests/store_races.rs`), and a PostgreSQL server killed
//! under a running cluster (`tests/postgres_outage.rs`). In-process tests
//! stay next to the crate they test; this crate is for what needs more
//! than one process.
//!
//! This library is their one harness: child processes killed on drop
//! ([`Process`]), `hedgerow node` builders that wait for the node's ready
//! line ([`NodeCommand`], [`Node`]), temporary directories and log tails,
//! polling, the throw-away PostgreSQL server ([`postgres`]), and headless
//! Chromium for the tests that look at pages ([`browser`]).
//!
//! ## The binary under test
//!
//! Cargo hands an integration test the path of a binary
//! (`CARGO_BIN_EXE_<name>`) only for binaries of the test's own package,
//! and builds them before the tests. So this package has a binary,
//! `hedgerow-under-test`, built from the very file that is the `hedgerow`
//! binary (`adapters/cli/src/main.rs`, a single call into the
//! `hedgerow_cli` library): the same code, without a nested `cargo build`
//! (slow, and fragile under another target dir or profile) and without
//! guessing paths under `target/`. A test takes it with
//! `env!("CARGO_BIN_EXE_hedgerow-under-test")`. It cannot be named
//! `hedgerow` too: two binaries of one name in one workspace build would
//! overwrite each other in `target/`.
//!
//! Re-executing the test binary itself (as the store races do, see
//! [`hedgerow::store::conformance::race_in_processes`]) would not do for
//! the command: `hedgerow demo` starts its nodes by running its own
//! executable with `node …`, which a test binary would read as a test
//! filter.
//!
//! ## PostgreSQL
//!
//! PostgreSQL tests start their own server from `/usr/lib/postgresql/*/bin`
//! (as the `postgres` user when run as root) and skip, saying why, when
//! it is not installed; `HEDGEROW_REQUIRE_POSTGRES=1` makes that a
//! failure.

// The harness panics on setup failures: that is how a test reports them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hedgerow_cli::client::request;
use serde_json::Value;

pub mod browser;
pub mod hostile;

pub use hedgerow::store::conformance::postgres_server::PostgresServer;
pub use tempfile::TempDir;

/// Serialises the process-heavy tests of one test binary: each starts
/// several processes, and the machine may have 2 cores. Hold the guard for
/// the whole test. (Cargo runs the test binaries themselves one by one.)
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A fresh temporary directory, removed on drop.
pub fn temp_dir() -> TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"))
}

/// A tokio runtime as the tests use it: multi-threaded, 2 workers, every
/// driver enabled.
pub fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A throw-away PostgreSQL server for the test `test`, or `None` (after
/// saying why on stderr) where PostgreSQL is not installed, unless
/// `HEDGEROW_REQUIRE_POSTGRES=1` makes that a failure.
pub fn postgres(test: &str) -> Option<PostgresServer> {
    PostgresServer::start_for_test(test)
}

/// `server` as a `postgres://` URL, the form `hedgerow node --store` takes.
pub fn postgres_url(server: &PostgresServer) -> String {
    server.url()
}

/// Polls `done` every `every` until it holds or `limit` passes; whether it
/// held.
pub fn wait_until(limit: Duration, every: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// The last `lines` lines of every `*.log` file in `dir`, each under a
/// `---- name` header, in name order: what to print when a wait fails.
pub fn log_tails(dir: &Path, lines: usize) -> String {
    let mut out = String::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    for path in entries
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
    {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(lines).collect();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push_str(&format!("---- {name}\n"));
        for line in tail.into_iter().rev() {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// A child process that never outlives its test: on drop its stdin pipe
/// closes (a `hedgerow node --exit-on-stdin-eof` then leaves by itself),
/// it gets the gentle signal if one was set and its grace to exit, and is
/// then killed and reaped.
#[derive(Debug)]
pub struct Process {
    child: Child,
    stdin: Option<ChildStdin>,
    gentle: Option<(&'static str, Duration)>,
}

impl Process {
    /// Starts `command`. Its stdin is whatever `command` set; when that is
    /// a pipe, the process holds the writing end until
    /// [`close_stdin`](Self::close_stdin) or drop.
    pub fn spawn(command: &mut Command) -> Process {
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {:?}: {e}", command.get_program()));
        let stdin = child.stdin.take();
        Process {
            child,
            stdin,
            gentle: None,
        }
    }

    /// On drop, send `signal` (`"INT"`, `"TERM"`) first and wait up to
    /// `grace` for the process to exit before killing it: for a process
    /// that cleans up after itself, like `hedgerow demo`.
    pub fn signal_on_drop(mut self, signal: &'static str, grace: Duration) -> Process {
        self.gentle = Some((signal, grace));
        self
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The process's stdout, when it was a pipe and not taken yet.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// Closes the process's stdin.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sends `signal` (`"INT"`, `"TERM"`, …) with `kill(1)`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.id().to_string())
            .status()
            .unwrap_or_else(|e| panic!("kill -{signal}: {e}"));
        assert!(status.success(), "kill -{signal} {}: {status}", self.id());
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        self.child.kill().unwrap_or_else(|e| panic!("SIGKILL: {e}"));
        self.child.wait().unwrap_or_else(|e| panic!("wait: {e}"));
    }

    /// Waits up to `limit` for the process to exit; its status, or `None`
    /// if it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(limit, Duration::from_millis(20), || {
            status = self
                .child
                .try_wait()
                .unwrap_or_else(|e| panic!("wait: {e}"));
            status.is_some()
        });
        status
    }

    /// Waits for the process to exit, however long it takes.
    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().unwrap_or_else(|e| panic!("wait: {e}"))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stdin = None;
        if let Some((signal, grace)) = self.gentle {
            if matches!(self.child.try_wait(), Ok(None)) {
                let _ = Command::new("kill")
                    .arg(format!("-{signal}"))
                    .arg(self.id().to_string())
                    .status();
                let _ = self.wait_exit(grace);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `hedgerow node` command line: on loopback, both ports picked by the
/// system, `--exit-on-stdin-eof` with a pipe as stdin so the node never
/// outlives its test. Add flags, then [`start`](Self::start) it.
#[derive(Debug)]
pub struct NodeCommand {
    id: String,
    command: Command,
}

impl NodeCommand {
    /// `bin node --cluster cluster --id id --store store`, listening on
    /// 127.0.0.1 port 0 for the cluster and for HTTP. Its stderr is
    /// discarded unless [`log_to`](Self::log_to) says otherwise.
    pub fn new(bin: &Path, cluster: &str, id: &str, store: &str) -> NodeCommand {
        let mut command = Command::new(bin);
        command
            .arg("node")
            .args(["--cluster", cluster, "--id", id])
            .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .args(["--store", store])
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        NodeCommand {
            id: id.to_owned(),
            command,
        }
    }

    /// Adds flags.
    pub fn args<'a>(mut self, args: impl IntoIterator<Item = &'a str>) -> NodeCommand {
        self.command.args(args);
        self
    }

    /// Sets an environment variable of the node.
    pub fn env(mut self, key: &str, value: &str) -> NodeCommand {
        self.command.env(key, value);
        self
    }

    /// Sends the node's stderr (its logs) to `file`.
    pub fn log_to(mut self, file: File) -> NodeCommand {
        self.command.stderr(file);
        self
    }

    /// Starts the node and waits up to `limit` for its
    /// `ready id=… addr=… http=…` line, which it prints once it serves.
    /// Its later output is read and dropped, so it never blocks on a full
    /// pipe. An error says why it is not ready (it exited, or the time ran
    /// out); the process is gone by then.
    pub fn start(mut self, limit: Duration) -> Result<Node, String> {
        let mut process = Process::spawn(&mut self.command);
        let stdout = process.take_stdout().expect("stdout is a pipe");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref().map_while(Result::ok) {
                if let Some(addrs) = ready_addrs(&line) {
                    let _ = tx.send(addrs);
                    break;
                }
            }
            for _ in lines {}
        });
        let id = self.id;
        match rx.recv_timeout(limit) {
            Ok((addr, http)) => Ok(Node {
                id,
                process,
                addr,
                http,
            }),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Err(format!("{id} did not get ready in {limit:?}"))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = process.wait_exit(Duration::from_secs(5));
                Err(format!(
                    "{id} closed its stdout before a ready line (exit: {status:?})"
                ))
            }
        }
    }
}

/// The cluster and HTTP addresses in a node's `ready … addr=A http=H`
/// line.
fn ready_addrs(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.strip_prefix("ready ")?;
    let field = |key: &str| {
        rest.split(' ')
            .find_map(|kv| kv.strip_prefix(key))?
            .parse()
            .ok()
    };
    Some((field("addr=")?, field("http=")?))
}

/// A running `hedgerow node`, killed on drop.
#[derive(Debug)]
pub struct Node {
    /// Its `--id`.
    pub id: String,
    /// The process.
    pub process: Process,
    /// Where it listens for peers.
    pub addr: SocketAddr,
    /// Where its HTTP control API listens.
    pub http: SocketAddr,
}

/// The `(leader, term)` every status agrees on, if each node answered,
/// names one leader and term above `above`, has exactly the members `want`
/// and a fresh view, and only the named leader says it leads.
pub fn agreement(
    statuses: &[Option<Value>],
    want: &BTreeSet<String>,
    above: u64,
) -> Option<(String, u64)> {
    let mut leader: Option<(String, u64)> = None;
    let mut leading = 0;
    for st in statuses {
        let st = st.as_ref()?;
        let this = (st["leader"].as_str()?.to_owned(), st["term"].as_u64()?);
        if leader.as_ref().is_some_and(|l| *l != this) {
            return None;
        }
        let members: BTreeSet<String> = st["members"]
            .as_array()?
            .iter()
            .filter_map(|m| m["id"].as_str().map(str::to_owned))
            .collect();
        if members != *want || st["view_stale"].as_bool()? {
            return None;
        }
        if st["is_leader"].as_bool()? {
            leading += 1;
            if st["id"].as_str()? != this.0 {
                return None;
            }
        }
        leader = Some(this);
    }
    leader.filter(|(_, term)| *term > above && leading == 1)
}

/// A node's `GET /v1/status`, if it answered 200 with JSON.
pub fn status(addr: SocketAddr) -> Option<Value> {
    let (code, body) = request(addr, "GET", "/v1/status", b"", Duration::from_secs(2)).ok()?;
    (code == 200)
        .then(|| serde_json::from_slice(&body).ok())
        .flatten()
}

/// A node's `GET /metrics`, parsed by a Prometheus text parser
/// (`prometheus-parse`): what a Prometheus server would read.
pub struct Scrape(prometheus_parse::Scrape);

impl Scrape {
    /// Scrapes the node whose HTTP API is at `http`.
    pub fn of(http: SocketAddr) -> Result<Scrape, String> {
        let (code, body) = request(http, "GET", "/metrics", b"", Duration::from_secs(5))
            .map_err(|e| format!("GET /metrics: {e}"))?;
        if code != 200 {
            return Err(format!("GET /metrics answered {code}"));
        }
        let text = String::from_utf8(body).map_err(|e| format!("/metrics is not UTF-8: {e}"))?;
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        prometheus_parse::Scrape::parse(lines)
            .map(Scrape)
            .map_err(|e| format!("/metrics does not parse: {e}\n{text}"))
    }

    /// The sum of every sample of `name` whose labels include `labels`
    /// (a histogram counts its observations); `None` if there is none.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let values: Vec<f64> = self
            .0
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                prometheus_parse::Value::Histogram(buckets) => {
                    buckets.iter().map(|b| b.count).fold(0.0, f64::max)
                }
                prometheus_parse::Value::Summary(_) => f64::NAN,
            })
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    /// The names of every metric in the scrape (histograms by their base
    /// name, without `_bucket`).
    pub fn names(&self) -> BTreeSet<String> {
        self.0.samples.iter().map(|s| s.metric.clone()).collect()
    }

    /// The `# HELP` text of `name`, if the scrape has one.
    pub fn help(&self, name: &str) -> Option<&str> {
        self.0.docs.get(name).map(String::as_str)
    }
}

/// Every revision of KV `key` as a node's `GET /v1/kv/{key}/history`
/// lists them: `(value, revision)`, oldest first. Fails the test when the
/// node does not answer 200 with that list.
pub fn kv_history(http: SocketAddr, key: &str) -> Vec<(String, u64)> {
    let path = format!("/v1/kv/{key}/history");
    let (code, body) = request(http, "GET", &path, b"", Duration::from_secs(10)).unwrap();
    let history: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(code, 200, "{history}");
    history["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["value"].as_str().unwrap().to_owned(),
                e["revision"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_addresses_of_a_ready_line() {
        assert_eq!(
            ready_addrs("ready id=n1 addr=127.0.0.1:4000 http=127.0.0.1:4001"),
            Some((
                "127.0.0.1:4000".parse().unwrap(),
                "127.0.0.1:4001".parse().unwrap()
            ))
        );
        assert_eq!(ready_addrs("starting id=n1 http=127.0.0.1:4001"), None);
        assert_eq!(ready_addrs("ready id=n1 addr=127.0.0.1:4000"), None);
    }

    #[test]
    fn a_process_is_killed_on_drop() {
        let process = Process::spawn(Command::new("sleep").arg("30"));
        let proc_dir = format!("/proc/{}", process.id());
        assert!(Path::new(&proc_dir).exists());
        drop(process);
        assert!(
            !Path::new(&proc_dir).exists(),
            "{proc_dir} outlived its drop"
        );
    }
}
