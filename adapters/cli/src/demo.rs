//! `hedgerow demo`: N `hedgerow node` child processes on loopback sharing a
//! SQLite file in a temporary directory, a live table of what each one
//! sees, and the leader killed (SIGKILL) now and then so a failover shows.
//!
//! Child processes rather than nodes in this process: a crash is then a
//! real crash (sockets reset, no goodbye, the lease left to expire), the
//! store is shared across processes as in production, and the demo drives
//! exactly the binary and HTTP API a user would. Children get
//! `--exit-on-stdin-eof` with a pipe as stdin, so none outlives the demo
//! even if the demo itself is killed; on a normal stop the pipe closes, each
//! child leaves gracefully, stragglers are killed after a few seconds, and
//! the temporary directory is removed.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead as _, BufReader, IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::Value;

use crate::certs;
use crate::client;
use crate::node::Toggle;

/// Flags of `hedgerow demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// How many nodes to run.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub nodes: u16,
    /// Stop after this many seconds. Default: run until Ctrl-C when stdout
    /// is a terminal, else 30 s.
    #[arg(long, env = "HEDGEROW_DEMO_DURATION_SECS")]
    pub duration_secs: Option<u64>,
    /// Kill the leader this many seconds after start, and again every as
    /// many seconds (0: never; Enter kills it at once on a terminal).
    #[arg(long, default_value_t = 10)]
    pub kill_every_secs: u64,
    /// Seconds after which a killed node is started again.
    #[arg(long, default_value_t = 4)]
    pub restart_after_secs: u64,
    /// Lease duration of the nodes, in ms (the other timings are the
    /// `local` preset's).
    #[arg(long, default_value_t = 2000)]
    pub lease_ms: u64,
    /// Error bound asserted for the system clock when no ClockBound daemon
    /// runs here, in ms (`--clock auto --clock-bound-ms N` on each node).
    #[arg(long, default_value_t = 5)]
    pub clock_bound_ms: u64,
    /// Mutual TLS between the nodes, with a CA and certificates the demo
    /// makes in its temporary directory (`hedgerow certs`).
    #[arg(long, value_enum, default_value_t = Toggle::On)]
    pub tls: Toggle,
}

/// One node slot: the process when running, what it last said.
struct Slot {
    id: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    generation: u64,
    http: Option<SocketAddr>,
    status: Option<Value>,
    restart_at: Option<Instant>,
}

/// A ready line from a child: `(slot, generation, http address)`.
type Ready = (usize, u64, SocketAddr);

/// Everything the demo started; dropping it stops the children and
/// removes the directory, also on a panic.
struct Demo {
    exe: PathBuf,
    dir: PathBuf,
    args: DemoArgs,
    slots: Vec<Slot>,
    ready_tx: Sender<Ready>,
}

impl Demo {
    fn db(&self) -> PathBuf {
        self.dir.join("lease.db")
    }

    /// The control API token every node of the demo asks for.
    fn token_file(&self) -> PathBuf {
        self.dir.join("http.token")
    }

    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let id = self.slots[i].id.clone();
        let log = File::create(self.dir.join(format!("{id}.log")))
            .map_err(|e| format!("create a log file in {}: {e}", self.dir.display()))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("node")
            .args(["--cluster", "demo", "--id", &id])
            .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .arg("--store")
            .arg(format!("sqlite:{}", self.db().display()))
            .args(["--clock", "auto", "--preset", "local"])
            .args(["--clock-bound-ms", &self.args.clock_bound_ms.to_string()])
            .args(["--lease-ms", &self.args.lease_ms.to_string()])
            .arg("--exit-on-stdin-eof")
            .arg("--http-token-file")
            .arg(self.token_file())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log);
        if self.args.tls == Toggle::On {
            let (cert, key) = certs::node_files(&self.dir, &id);
            cmd.arg("--tls-ca")
                .arg(certs::ca_file(&self.dir))
                .arg("--tls-cert")
                .arg(cert)
                .arg("--tls-key")
                .arg(key);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.exe.display()))?;
        let slot = &mut self.slots[i];
        slot.generation += 1;
        slot.http = None;
        slot.status = None;
        slot.restart_at = None;
        slot.stdin = child.stdin.take();
        if let Some(stdout) = child.stdout.take() {
            let tx = self.ready_tx.clone();
            let generation = slot.generation;
            std::thread::spawn(move || read_ready(stdout, i, generation, &tx));
        }
        slot.child = Some(child);
        Ok(())
    }

    /// SIGKILL: no goodbye, the lease is left to expire.
    fn kill(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        slot.stdin = None;
        if let Some(mut child) = slot.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        slot.http = None;
        slot.status = None;
        slot.restart_at = Some(Instant::now() + Duration::from_secs(self.args.restart_after_secs));
    }

    /// Closes every child's stdin (each leaves gracefully), waits up to
    /// `grace`, then kills what is left.
    fn stop_all(&mut self, grace: Duration) -> usize {
        for slot in &mut self.slots {
            slot.stdin = None;
        }
        let deadline = Instant::now() + grace;
        let mut killed = 0;
        for slot in &mut self.slots {
            let Some(mut child) = slot.child.take() else {
                continue;
            };
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        killed += 1;
                        break;
                    }
                }
            }
        }
        killed
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.stop_all(Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn read_ready(stdout: std::process::ChildStdout, i: usize, generation: u64, tx: &Sender<Ready>) {
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let Ok(line) = line else { return };
        let http = line
            .strip_prefix("ready ")
            .and_then(|rest| rest.split(' ').find_map(|kv| kv.strip_prefix("http=")))
            .and_then(|a| a.parse().ok());
        if let Some(addr) = http {
            let _ = tx.send((i, generation, addr));
            break;
        }
    }
    // Keep draining so the child never blocks on a full pipe.
    for _ in lines {}
}

/// Writes a fresh random control API token to `path` (owner-only) and
/// returns the header value that presents it.
fn write_token(path: &std::path::Path) -> Result<String, String> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 24];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "no system randomness for the control API token".to_string())?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .map_err(|e| format!("create {}: {e}", path.display()))?;
    std::io::Write::write_all(&mut f, hex.as_bytes())
        .map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(format!("Bearer {hex}"))
}

/// A private temporary directory for the store and the logs.
fn make_dir() -> Result<PathBuf, String> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "hedgerow-demo-{}-{nanos:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Sets the returned flag on Ctrl-C or SIGTERM.
fn stop_flag() -> Result<Arc<AtomicBool>, String> {
    let flag = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("could not start the signal runtime: {e}"))?;
    let set = flag.clone();
    let (ok_tx, ok_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("demo-signals".into())
        .spawn(move || {
            runtime.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    let _ = ok_tx.send(false);
                    return;
                };
                let _ = ok_tx.send(true);
                let first = futures::future::select(Box::pin(int.recv()), Box::pin(term.recv()));
                first.await;
                set.store(true, Ordering::SeqCst);
            })
        })
        .map_err(|e| format!("could not start the signal thread: {e}"))?;
    match ok_rx.recv() {
        Ok(true) => Ok(flag),
        _ => Err("could not watch Ctrl-C and SIGTERM".into()),
    }
}

/// Lines typed on a terminal's stdin (Enter = kill the leader now).
fn enter_presses() -> Option<Receiver<()>> {
    if !std::io::stdin().is_terminal() {
        return None;
    }
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("demo-keys".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                if line.is_err() || tx.send(()).is_err() {
                    return;
                }
            }
        })
        .ok()?;
    Some(rx)
}

/// A kill whose failover has not been seen yet.
struct PendingKill {
    at: Instant,
    id: String,
    term: u64,
}

/// Runs the demo; exit code 1 if a kill was not followed by a failover
/// within the bound the timings imply, or no leader was ever seen.
pub fn run(args: DemoArgs) -> Result<ExitCode, String> {
    let tty = std::io::stdout().is_terminal();
    let duration = match args.duration_secs {
        Some(s) => Some(Duration::from_secs(s)),
        None if tty => None,
        None => Some(Duration::from_secs(30)),
    };
    let exe = std::env::current_exe().map_err(|e| format!("where is this binary? {e}"))?;
    let stop = stop_flag()?;
    let keys = enter_presses();
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut demo = Demo {
        exe,
        dir: make_dir()?,
        slots: (1..=args.nodes)
            .map(|n| Slot {
                id: format!("node-{n}"),
                child: None,
                stdin: None,
                generation: 0,
                http: None,
                status: None,
                restart_at: None,
            })
            .collect(),
        args: args.clone(),
        ready_tx,
    };
    let token = write_token(&demo.token_file())?;
    if args.tls == Toggle::On {
        let ids: Vec<String> = demo.slots.iter().map(|s| s.id.clone()).collect();
        let hosts = certs::LOOPBACK_HOSTS.map(String::from);
        certs::write("demo", &demo.dir, &ids, &hosts)?;
    }
    for i in 0..demo.slots.len() {
        demo.spawn(i)?;
    }
    // Crash to takeover is at most lease + 4 x bound plus reaction time
    // (DESIGN.md); allow 3 s for a loaded machine and our 0.5 s polling.
    let failover_limit =
        Duration::from_millis(args.lease_ms + 4 * args.clock_bound_ms) + Duration::from_secs(3);
    let mut out = Output::new(tty, &demo);
    let pids: Vec<String> = demo
        .slots
        .iter()
        .filter_map(|s| s.child.as_ref().map(|c| c.id().to_string()))
        .collect();
    out.event(format!(
        "started {} nodes (pids {}); store sqlite:{}; lease {} ms; clock: ClockBound if its \
         daemon runs, else the system clock with an assumed ±{} ms",
        args.nodes,
        pids.join(" "),
        demo.db().display(),
        args.lease_ms,
        args.clock_bound_ms
    ));

    let start = Instant::now();
    let kill_every = Duration::from_secs(args.kill_every_secs);
    let mut next_kill = (!kill_every.is_zero()).then(|| start + kill_every);
    let mut pending: Option<PendingKill> = None;
    let mut last_leader: Option<(String, u64)> = None;
    let mut failovers: Vec<Duration> = Vec::new();
    let mut missed = 0u32;
    let mut ever_led = false;

    while !stop.load(Ordering::SeqCst) && duration.is_none_or(|d| start.elapsed() < d) {
        while let Ok((i, generation, addr)) = ready_rx.try_recv() {
            if demo.slots[i].generation == generation {
                demo.slots[i].http = Some(addr);
                out.event(format!(
                    "{} serves its live page at http://{addr}/",
                    demo.slots[i].id
                ));
            }
        }
        for i in 0..demo.slots.len() {
            let exited = match demo.slots[i].child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => Some(status),
                _ => None,
            };
            if let Some(status) = exited {
                out.event(format!("{} exited on its own ({status})", demo.slots[i].id));
                demo.kill(i);
            }
            if demo.slots[i]
                .restart_at
                .is_some_and(|t| Instant::now() >= t)
            {
                demo.spawn(i)?;
                let pid = demo.slots[i].child.as_ref().map_or(0, Child::id);
                out.event(format!("restarted {} (pid {pid})", demo.slots[i].id));
            }
            let status = demo.slots[i].http.and_then(|addr| {
                let wait = Duration::from_millis(400);
                let (code, body) =
                    client::request_with(addr, "GET", "/v1/status", b"", wait, Some(&token))
                        .ok()?;
                (code == 200)
                    .then(|| serde_json::from_slice(&body).ok())
                    .flatten()
            });
            demo.slots[i].status = status;
        }

        // The leader: a node that says it leads, highest term first.
        let leader = demo
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let st = s.status.as_ref()?;
                st["is_leader"]
                    .as_bool()
                    .filter(|l| *l)
                    .map(|_| (i, st["term"].as_u64().unwrap_or(0)))
            })
            .max_by_key(|(_, term)| *term);
        if let Some((i, term)) = leader {
            ever_led = true;
            let id = demo.slots[i].id.clone();
            if last_leader.as_ref() != Some(&(id.clone(), term)) {
                let mut line = format!("{id} leads, term {term}");
                if let Some(k) = pending.take_if(|k| term > k.term) {
                    let took = k.at.elapsed();
                    failovers.push(took);
                    line.push_str(&format!(
                        " ({:.1} s after {} was killed)",
                        took.as_secs_f64(),
                        k.id
                    ));
                }
                out.event(line);
                last_leader = Some((id, term));
            }
        }
        if let Some(k) = pending.take_if(|k| k.at.elapsed() > failover_limit) {
            missed += 1;
            out.event(format!(
                "no new leader {:.1} s after {} was killed (expected within {:.1} s)",
                k.at.elapsed().as_secs_f64(),
                k.id,
                failover_limit.as_secs_f64()
            ));
        }

        let pressed = keys.as_ref().is_some_and(|k| k.try_recv().is_ok());
        let due = next_kill.is_some_and(|t| Instant::now() >= t);
        if (pressed || due) && pending.is_none() {
            if let Some((i, term)) = leader {
                let id = demo.slots[i].id.clone();
                demo.kill(i);
                out.event(format!("killed the leader {id} (SIGKILL, term {term})"));
                pending = Some(PendingKill {
                    at: Instant::now(),
                    id,
                    term,
                });
                next_kill = next_kill.map(|_| Instant::now() + kill_every);
            }
        }

        out.frame(&demo, start.elapsed());
        std::thread::sleep(Duration::from_millis(500));
    }

    // From here on, plain lines (the table is no longer redrawn).
    out.tty = false;
    out.event("stopping: every node leaves gracefully".into());
    let killed = demo.stop_all(Duration::from_secs(5));
    if killed > 0 {
        out.event(format!(
            "{killed} node(s) did not stop in 5 s and were killed"
        ));
    }
    let dir = demo.dir.clone();
    drop(demo);
    out.event(format!(
        "stopped; removed {}{}",
        dir.display(),
        if dir.exists() { " (failed!)" } else { "" }
    ));
    let summary = match failovers.iter().max() {
        Some(worst) => format!(
            "{} failover(s), slowest {:.1} s (bound {:.1} s)",
            failovers.len(),
            worst.as_secs_f64(),
            failover_limit.as_secs_f64()
        ),
        None => "no failover observed".into(),
    };
    out.event(summary);
    if !ever_led {
        out.event("no node ever led: see the logs with RUST_LOG=info".into());
        return Ok(ExitCode::FAILURE);
    }
    Ok(if missed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The screen: a redrawn table on a terminal, plain lines otherwise.
struct Output {
    tty: bool,
    started: Instant,
    events: VecDeque<String>,
    last_line: Instant,
    header: String,
    drawn: bool,
}

impl Output {
    fn new(tty: bool, demo: &Demo) -> Self {
        Output {
            tty,
            started: Instant::now(),
            events: VecDeque::new(),
            last_line: Instant::now(),
            header: format!(
                "hedgerow demo: {} nodes on loopback, logs in {}",
                demo.slots.len(),
                demo.dir.display()
            ),
            drawn: false,
        }
    }

    fn event(&mut self, text: String) {
        let line = format!("{:6.1}s  {text}", self.started.elapsed().as_secs_f64());
        if self.tty {
            self.events.push_back(line);
            while self.events.len() > 10 {
                self.events.pop_front();
            }
        } else {
            println!("{line}");
        }
    }

    fn frame(&mut self, demo: &Demo, elapsed: Duration) {
        if !self.tty {
            // One summary line a second for logs and CI.
            if self.last_line.elapsed() >= Duration::from_secs(1) {
                self.last_line = Instant::now();
                let cells: Vec<String> = demo
                    .slots
                    .iter()
                    .map(|s| {
                        let (role, term, members) = cells(s);
                        format!("{}={role}/t{term}/{members}m", s.id)
                    })
                    .collect();
                println!("{:6.1}s  {}", elapsed.as_secs_f64(), cells.join(" "));
            }
            return;
        }
        // Clear the screen once, then redraw in place (less flicker).
        let mut screen = String::from(if self.drawn {
            "\x1b[H"
        } else {
            "\x1b[2J\x1b[H"
        });
        self.drawn = true;
        screen.push_str(&self.header);
        screen.push_str(&format!(
            "\x1b[K\n\x1b[K\n  {:<10} {:<16} {:>5} {:>8}   {:<8} {}\x1b[K\n",
            "node", "role", "term", "members", "pid", "live page"
        ));
        for s in &demo.slots {
            let (role, term, members) = cells(s);
            screen.push_str(&format!(
                "  {:<10} {:<16} {:>5} {:>8}   {:<8} {}\x1b[K\n",
                s.id,
                role,
                term,
                members,
                s.child.as_ref().map_or("-".into(), |c| c.id().to_string()),
                s.http.map_or("-".into(), |a| format!("http://{a}/")),
            ));
        }
        screen.push_str("\x1b[K\n  events:\x1b[K\n");
        for e in &self.events {
            screen.push_str("  ");
            screen.push_str(e);
            screen.push_str("\x1b[K\n");
        }
        screen.push_str(&format!(
            "\x1b[K\n  {:.0}s · Enter: kill the leader now · Ctrl-C: stop\x1b[K\n\x1b[J",
            elapsed.as_secs_f64()
        ));
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(screen.as_bytes());
        let _ = stdout.flush();
    }
}

/// Role, term and members-seen of a slot, for display.
fn cells(s: &Slot) -> (String, String, String) {
    if s.child.is_none() {
        let role = match s.restart_at {
            Some(t) => format!(
                "killed ({:.0}s)",
                t.saturating_duration_since(Instant::now()).as_secs_f64()
            ),
            None => "stopped".into(),
        };
        return (role, "-".into(), "-".into());
    }
    let Some(st) = &s.status else {
        return ("starting".into(), "-".into(), "-".into());
    };
    let role = if st["is_leader"].as_bool() == Some(true) {
        "LEADER".to_owned()
    } else if st["leader"].is_string() {
        "follower".to_owned()
    } else {
        "no leader".to_owned()
    };
    let term = st["term"].as_u64().unwrap_or(0).to_string();
    let members = st["members"].as_array().map_or(0, Vec::len).to_string();
    (role, term, members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_dirs_are_private_and_distinct() {
        let a = make_dir().unwrap();
        let b = make_dir().unwrap();
        assert_ne!(a, b);
        assert!(a.is_dir());
        std::fs::remove_dir_all(a).unwrap();
        std::fs::remove_dir_all(b).unwrap();
    }
}
