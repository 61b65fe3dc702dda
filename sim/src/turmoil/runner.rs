//! Runs a [`Scenario`] over turmoil: every node is the real facade (driver,
//! TCP transport, framing) on its own simulated host `n1`, `n2`, …, the
//! lease store is the host `store`, and each host has its own clock. The
//! runner steps the simulation, carries out the schedule between steps,
//! and hands back a [`TurmoilReport`]: violations, timings, and a
//! [`MembershipTrace`] comparable with other membership systems run under
//! the same schedule.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use hedgerow::{Hedgerow, WatchEvent};
use hedgerow_core::{ClockStatus, Config, LeaveReason, NodeId, Rng, Term};

use super::clock::{SimHostClock, TrueTime};
use super::runtime::TurmoilRuntime;
use super::store::{serve, StoreClient, StoreState, STORE_PORT};
use crate::check::convergence::{self, NodeReport};
use crate::check::leadership::Leadership;
use crate::check::requests::{Handling, Requests};
use crate::check::streams::{check_delivery, header, pattern_byte, Reader, Seen};
use crate::check::views::ViewOrder;
use crate::check::{tokens, Violation};
use crate::compare::MembershipTrace;
use crate::scenario::{clock_word, Scenario, Step, Target};
use crate::SimClock;

/// The cluster id every simulated node uses.
pub const CLUSTER: &str = "sim";
/// The port every node listens on.
pub const NODE_PORT: u16 = 7000;
/// The store host's name.
pub const STORE_HOST: &str = "store";

/// How a turmoil run is set up.
#[derive(Clone, Debug)]
pub struct TurmoilOptions {
    /// Turmoil's step: every host runs this much simulated time per step,
    /// and a message takes at least one step. Default 10 ms.
    pub tick: Duration,
    /// Node configuration (default `Config::lan`).
    pub config: Config,
    /// Every clock's error bound (default 50 ms).
    pub bound: Duration,
    /// Initial offsets are drawn in `±fraction × bound` (default 0.9).
    pub offset_fraction: f64,
    /// Largest clock drift, parts per million (default 100); offsets stay
    /// inside the bound whatever the drift.
    pub drift_ppm: u64,
    /// Give node `n<slot>` a broken clock: its centre this many ms from
    /// true time (negative: behind) whatever its bound says. The overlap
    /// checker must then catch what it causes.
    pub broken_clock: Option<(usize, i64)>,
    /// Nodes `n<slot>` whose clocks report this status from the start
    /// (e.g. Disrupted or Unknown): they may be members, never leaders.
    pub clock_status: Vec<(usize, ClockStatus)>,
    /// Store call timeout (default: the facade's, a renew interval).
    pub store_timeout: Option<Duration>,
    /// How often `converge within` looks at the cluster (default 100 ms).
    pub check_every: Duration,
    /// How often each node's `is_leader()` is sampled and checked against
    /// its recorded leadership interval (`None`: only at its events).
    pub sample_every: Option<Duration>,
    /// Record every node's view changes in the membership trace (default
    /// true; large runs may turn it off to save memory).
    pub record_views: bool,
}

impl Default for TurmoilOptions {
    fn default() -> Self {
        TurmoilOptions {
            tick: Duration::from_millis(10),
            config: Config::lan(CLUSTER),
            bound: Duration::from_millis(50),
            offset_fraction: 0.9,
            drift_ppm: 100,
            broken_clock: None,
            clock_status: Vec::new(),
            store_timeout: None,
            check_every: Duration::from_millis(100),
            sample_every: Some(Duration::from_millis(100)),
            record_views: true,
        }
    }
}

/// What one turmoil run measured.
#[derive(Clone, Debug, Default)]
pub struct TurmoilReport {
    /// The run's seed (`HEDGEROW_SEED=<seed>` replays it).
    pub seed: u64,
    /// Broken invariants, each with its simulated time and a short trace.
    pub violations: Vec<Violation>,
    /// A step the runner could not carry out (an unsupported step, a host
    /// that failed to start); the run stopped there.
    pub error: Option<String>,
    /// `(at, node, term)` for every election, in time order.
    pub elections: Vec<(Duration, String, Term)>,
    /// `(at, node, term)` for every step-down, in time order.
    pub step_downs: Vec<(Duration, String, Term)>,
    /// When the first node was elected.
    pub first_leader: Option<Duration>,
    /// After each `crash leader`: how long until another node was elected.
    pub failovers: Vec<Option<Duration>>,
    /// Each `converge within` step: its label and how long convergence
    /// took (`None`: not within the limit).
    pub converge: Vec<(String, Option<Duration>)>,
    /// Why the first convergence that failed had not, when it gave up.
    pub divergence: Option<String>,
    /// Messages each node sent (from the core's counters).
    pub messages_sent: BTreeMap<String, u64>,
    /// Node-seconds of life over the run (for per-node rates).
    pub node_seconds: f64,
    /// Membership observations, comparable across systems.
    pub trace: MembershipTrace,
    /// Hash of the whole event trace: same seed, same hash.
    pub trace_hash: u64,
    /// Events recorded.
    pub events: usize,
    /// Sends that returned Ok / an error, and handlings by leaders.
    pub sends: (u64, u64, u64),
    /// Streams whose `finish()` answered Ok / that failed loudly, and the
    /// body bytes receivers read and checked.
    pub streams: (u64, u64, u64),
    /// Wall-clock time the run took.
    pub wall: Duration,
}

impl TurmoilReport {
    /// No violation, no error, and every `converge` step converged.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
            && self.error.is_none()
            && self.converge.iter().all(|(_, c)| c.is_some())
    }

    /// Total bytes sent per node-second of life.
    pub fn bytes_per_node_second(&self) -> f64 {
        let total: u64 = self.trace.bytes_sent.values().sum();
        total as f64 / self.node_seconds.max(1e-9)
    }

    /// Total messages sent per node-second of life.
    pub fn messages_per_node_second(&self) -> f64 {
        let total: u64 = self.messages_sent.values().sum();
        total as f64 / self.node_seconds.max(1e-9)
    }

    /// Failure verdicts (`Left` with reason Failed, as every node saw
    /// them) and how many of those named a node that was actually alive.
    pub fn failure_verdicts(&self) -> (usize, usize) {
        let live = &self.trace.live;
        let false_dead = self
            .trace
            .failed_reports
            .iter()
            .filter(|(t, _, subject)| {
                let i = live.partition_point(|(at, _)| at <= t);
                i > 0 && live[i - 1].1.contains(subject)
            })
            .count();
        (self.trace.failed_reports.len(), false_dead)
    }

    /// A few lines for people: seed, violations, timings, load.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let ms = |d: &Option<Duration>| match d {
            Some(d) => format!("{:.0}ms", d.as_secs_f64() * 1e3),
            None => "never".into(),
        };
        let mut s = String::new();
        let _ = writeln!(
            s,
            "seed {}: {} ({} violations, {:.1}s simulated in {:.1}s wall, {} events, trace {:016x})",
            self.seed,
            if self.passed() { "ok" } else { "FAILED" },
            self.violations.len(),
            self.trace.duration.as_secs_f64(),
            self.wall.as_secs_f64(),
            self.events,
            self.trace_hash,
        );
        let _ = writeln!(s, "  first leader after {}", ms(&self.first_leader));
        if self.sends != (0, 0, 0) {
            let _ = writeln!(
                s,
                "  sends: {} ok, {} failed, {} handlings",
                self.sends.0, self.sends.1, self.sends.2
            );
        }
        if self.streams != (0, 0, 0) {
            let _ = writeln!(
                s,
                "  streams: {} ok, {} failed, {} bytes read and checked",
                self.streams.0, self.streams.1, self.streams.2
            );
        }
        if !self.failovers.is_empty() {
            let f: Vec<String> = self.failovers.iter().map(ms).collect();
            let _ = writeln!(s, "  failover after leader crash: {}", f.join(", "));
        }
        let c: Vec<String> = self
            .converge
            .iter()
            .map(|(label, d)| format!("{label}: {}", ms(d)))
            .collect();
        let _ = writeln!(s, "  convergence: {}", c.join(", "));
        let waves: Vec<String> = convergence_after_marks(&self.trace)
            .into_iter()
            .filter(|(m, _)| {
                ["wave", "crash", "leave", "restart", "heal"]
                    .iter()
                    .any(|p| m.starts_with(p))
            })
            .map(|(m, d)| format!("{m}: {}", ms(&d)))
            .collect();
        if !waves.is_empty() {
            let _ = writeln!(s, "  views = live set after: {}", waves.join(", "));
        }
        let _ = writeln!(
            s,
            "  load: {:.1} messages and {:.0} bytes per node per second ({:.0} node-seconds)",
            self.messages_per_node_second(),
            self.bytes_per_node_second(),
            self.node_seconds
        );
        let (verdicts, false_dead) = self.failure_verdicts();
        let _ = writeln!(
            s,
            "  failure verdicts: {verdicts} seen by nodes, {false_dead} about a live node"
        );
        if let Some(e) = &self.error {
            let _ = writeln!(s, "  error: {e}");
        }
        if let Some(d) = &self.divergence {
            let _ = writeln!(s, "  did not converge: {d}");
        }
        for v in &self.violations {
            let _ = write!(s, "  {v}");
        }
        if !self.passed() {
            let _ = writeln!(s, "  replay: HEDGEROW_SEED={}", self.seed);
        }
        s
    }
}

/// For each mark of `trace`: how long after it every live node's view was
/// exactly the live set, if that happened before the next mark (`None`:
/// not before the next step began). Nodes with no view yet count as
/// holding an empty one. Works on any system's trace.
pub fn convergence_after_marks(trace: &MembershipTrace) -> Vec<(String, Option<Duration>)> {
    // One time-ordered stream of live-set and view changes.
    enum Change<'a> {
        Live(&'a BTreeSet<String>),
        View(&'a String, &'a BTreeSet<String>),
    }
    let mut changes: Vec<(Duration, usize, Change)> = Vec::new();
    for (i, (t, set)) in trace.live.iter().enumerate() {
        changes.push((*t, i, Change::Live(set)));
    }
    let base = trace.live.len();
    for (i, (t, node, view)) in trace.views.iter().enumerate() {
        changes.push((*t, base + i, Change::View(node, view)));
    }
    changes.sort_by_key(|c| (c.0, c.1));
    let empty = BTreeSet::new();
    let mut live: &BTreeSet<String> = &empty;
    let mut views: BTreeMap<&String, &BTreeSet<String>> = BTreeMap::new();
    let converged = |live: &BTreeSet<String>, views: &BTreeMap<&String, &BTreeSet<String>>| {
        !live.is_empty()
            && live
                .iter()
                .all(|n| views.get(n).is_some_and(|v| *v == live))
    };
    let mut out = Vec::new();
    let mut next = 0;
    for (k, (at, label)) in trace.marks.iter().enumerate() {
        let until = trace.marks.get(k + 1).map_or(trace.duration, |m| m.0);
        while next < changes.len() && changes[next].0 <= *at {
            match changes[next].2 {
                Change::Live(set) => live = set,
                Change::View(n, v) => {
                    views.insert(n, v);
                }
            }
            next += 1;
        }
        let mut done = converged(live, &views).then_some(Duration::ZERO);
        while done.is_none() && next < changes.len() && changes[next].0 <= until {
            let t = changes[next].0;
            while next < changes.len() && changes[next].0 == t {
                match changes[next].2 {
                    Change::Live(set) => live = set,
                    Change::View(n, v) => {
                        views.insert(n, v);
                    }
                }
                next += 1;
            }
            if converged(live, &views) {
                done = Some(t - *at);
            }
        }
        out.push((label.clone(), done));
    }
    out
}

/// What a host recorded, at true time `t`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum What {
    Booted,
    Elected(Term),
    SteppedDown(Term),
    View((Term, u64), BTreeSet<String>),
    Failed(String),
    Handled {
        term: Term,
        key: (NodeId, u64, u64),
    },
    SendOk {
        leader: NodeId,
        term: Term,
        key: (NodeId, u64, u64),
    },
    SendFailed(String),
    Left(bool),
    /// `is_leader()` said yes, holding this term.
    Leads(Term),
    // Recorded by the runner.
    Crashed,
    Restarted,
    ClockUntrusted,
    Mark(String),
    /// A checked stream, as its sender or a receiver saw it. Last, so
    /// that adding it left the trace hashes of runs without streams as
    /// they were.
    Stream(Seen),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Rec {
    t: u64,
    seq: u64,
    slot: usize,
    inc: u64,
    what: What,
}

enum Cmd {
    Leave,
    Send(u64),
    /// Open a stream to the leader: its key and body length.
    Stream(u64, u64),
    Stopped,
}

#[derive(Default)]
struct Shared {
    log: Vec<Rec>,
    seq: u64,
    handles: BTreeMap<usize, Hedgerow>,
    cmds: BTreeMap<usize, mpsc::UnboundedSender<Cmd>>,
    /// Commands for a process that has not booted yet (just started or
    /// restarted): handed to it when it registers.
    pending: BTreeMap<usize, Vec<Cmd>>,
}

impl Shared {
    fn command(&mut self, slot: usize, cmd: Cmd) {
        match self.cmds.get(&slot) {
            Some(tx) => {
                let _ = tx.unbounded_send(cmd);
            }
            None => self.pending.entry(slot).or_default().push(cmd),
        }
    }
}

impl Shared {
    fn rec(&mut self, t: u64, slot: usize, inc: u64, what: What) {
        self.seq += 1;
        let seq = self.seq;
        self.log.push(Rec {
            t,
            seq,
            slot,
            inc,
            what,
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn mix(a: u64, b: u64) -> u64 {
    let mut r = Rng::new(a ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    r.next_u64()
}

fn name(slot: usize) -> String {
    format!("n{slot}")
}

fn slot_of(id: &str) -> Option<usize> {
    id.strip_prefix('n')?.parse().ok()
}

/// What a host's software needs; cloned into each boot.
#[derive(Clone)]
struct HostCtx {
    slot: usize,
    seed: u64,
    shared: Arc<Mutex<Shared>>,
    clock: SimHostClock,
    truth: TrueTime,
    bytes: Arc<AtomicU64>,
    boots: Arc<AtomicU64>,
    config: Config,
    store_timeout: Option<Duration>,
    sample_every: Option<Duration>,
}

async fn host_main(ctx: HostCtx) -> Result<(), Box<dyn std::error::Error>> {
    let boot = ctx.boots.fetch_add(1, Ordering::Relaxed) + 1;
    let slot = ctx.slot;
    let me = name(slot);
    let inc = mix(ctx.seed, (slot as u64) << 20 | boot);
    let (tx, mut rx) = mpsc::unbounded();
    let rt = TurmoilRuntime::new(ctx.bytes.clone());
    let cfg = ctx.config.clone();
    let (shared, truth) = (ctx.shared.clone(), ctx.truth.clone());
    let mut b =
        hedgerow::Builder::<TurmoilRuntime>::new(CLUSTER, me.clone(), format!("{me}:{NODE_PORT}"))
            .runtime(rt)
            .listen(format!("0.0.0.0:{NODE_PORT}"))
            .async_store(StoreClient::new(format!("{STORE_HOST}:{STORE_PORT}")))
            .clock(ctx.clock.clone())
            .config(move |c| *c = cfg)
            .seed(mix(ctx.seed ^ 0x5eed, (slot as u64) << 20 | boot))
            .incarnation(inc)
            .leader_handler(move |req| {
                let key = (
                    req.from.clone(),
                    req.incarnation,
                    String::from_utf8_lossy(&req.payload)
                        .parse()
                        .unwrap_or(u64::MAX),
                );
                let t = truth.now_ns();
                lock(&shared).rec(
                    t,
                    slot,
                    inc,
                    What::Handled {
                        term: req.term,
                        key,
                    },
                );
                async move { Ok(req.payload) }
            })
            .stream_handler({
                let (shared, truth) = (ctx.shared.clone(), ctx.truth.clone());
                move |mut s| {
                    let (shared, truth) = (shared.clone(), truth.clone());
                    let rec = move |what| {
                        lock(&shared).rec(truth.now_ns(), slot, inc, What::Stream(what))
                    };
                    async move {
                        let from = s.from().to_string();
                        let mut r = Reader::default();
                        let mut clean = true;
                        while let Some(item) = s.next().await {
                            let Ok(chunk) = item else {
                                clean = false;
                                break;
                            };
                            if r.chunk(&chunk) {
                                let key = r.header.map_or(0, |(k, _)| k);
                                rec(Seen::Opened {
                                    at: slot,
                                    from: from.clone(),
                                    key,
                                });
                            }
                        }
                        rec(Seen::Ended {
                            at: slot,
                            from,
                            key: r.header.map(|(k, _)| k),
                            got: r.got,
                            announced: r.header.map_or(0, |(_, n)| n),
                            clean,
                            bad: r.bad,
                        });
                    }
                }
            });
    if let Some(limit) = ctx.store_timeout {
        b = b.store_timeout(limit);
    }
    let node = b.start().await?;
    let mut watch = node.watch().fuse();
    {
        let mut sh = lock(&ctx.shared);
        sh.handles.insert(slot, node.clone());
        sh.cmds.insert(slot, tx.clone());
        sh.rec(ctx.truth.now_ns(), slot, inc, What::Booted);
        for cmd in sh.pending.remove(&slot).unwrap_or_default() {
            let _ = tx.unbounded_send(cmd);
        }
    }
    let record = |what: What| {
        let t = ctx.truth.now_ns();
        lock(&ctx.shared).rec(t, slot, inc, what);
    };
    let on_event = |ev: WatchEvent| match ev {
        WatchEvent::Elected { term } => record(What::Elected(term)),
        WatchEvent::SteppedDown { term, .. } => record(What::SteppedDown(term)),
        WatchEvent::ViewChanged { term, version, .. } => {
            let members = node
                .members()
                .into_iter()
                .map(|m| m.id.to_string())
                .collect();
            record(What::View((term, version), members));
        }
        WatchEvent::Left {
            id,
            reason: LeaveReason::Failed,
            ..
        } => record(What::Failed(id.to_string())),
        _ => {}
    };
    // The API's own answer, checked against the recorded intervals.
    let sample = || {
        if node.is_leader() {
            if let Some((term, _)) = node.lease_claim() {
                record(What::Leads(term));
            }
        }
    };
    let every = ctx.sample_every.unwrap_or(Duration::from_secs(3600));
    let mut tick = Box::pin(tokio::time::sleep(every)).fuse();
    loop {
        futures::select_biased! {
            ev = watch.next() => match ev {
                Some(ev) => {
                    on_event(ev);
                    sample();
                }
                None => return Ok(()),
            },
            () = tick => {
                if ctx.sample_every.is_some() {
                    sample();
                }
                tick = Box::pin(tokio::time::sleep(every)).fuse();
            },
            cmd = rx.next() => match cmd {
                Some(Cmd::Leave) => {
                    let (node, tx) = (node.clone(), tx.clone());
                    let (shared, truth) = (ctx.shared.clone(), ctx.truth.clone());
                    tokio::task::spawn_local(async move {
                        let ok = node.leave().await.is_ok();
                        lock(&shared).rec(truth.now_ns(), slot, inc, What::Left(ok));
                        let _ = tx.unbounded_send(Cmd::Stopped);
                    });
                }
                Some(Cmd::Send(n)) => {
                    let node = node.clone();
                    let (shared, truth) = (ctx.shared.clone(), ctx.truth.clone());
                    tokio::task::spawn_local(async move {
                        let r = node.send(n.to_string().into_bytes()).await;
                        let what = match r {
                            Ok(reply) => What::SendOk {
                                leader: reply.leader,
                                term: reply.term,
                                key: (node.id().clone(), inc, n),
                            },
                            Err(e) => What::SendFailed(e.to_string()),
                        };
                        lock(&shared).rec(truth.now_ns(), slot, inc, what);
                    });
                }
                Some(Cmd::Stream(key, len)) => {
                    let node = node.clone();
                    let (shared, truth) = (ctx.shared.clone(), ctx.truth.clone());
                    tokio::task::spawn_local(async move {
                        let ok = send_checked_stream(&node, key, len).await.is_ok();
                        let from = node.id().to_string();
                        let what = What::Stream(Seen::Sent { from, key, ok });
                        lock(&shared).rec(truth.now_ns(), slot, inc, what);
                    });
                }
                Some(Cmd::Stopped) | None => {
                    while let Some(Some(ev)) = watch.next().now_or_never() {
                        on_event(ev);
                    }
                    return Ok(());
                }
            },
        }
    }
}

/// Writes a checked stream (its header, then `len` pattern bytes in
/// chunks of at most 16 KiB) to the leader and finishes it.
async fn send_checked_stream(node: &Hedgerow, key: u64, len: u64) -> Result<(), hedgerow::Error> {
    let mut s = node.send_stream().await?;
    s.write_all(header(key, len).to_vec()).await?;
    let mut at = 0;
    while at < len {
        let n = (len - at).min(16 * 1024);
        let chunk: Vec<u8> = (at..at + n).map(|o| pattern_byte(key, o)).collect();
        s.write_all(chunk).await?;
        at += n;
    }
    s.finish().await
}

struct Slot {
    clock: SimHostClock,
    bytes: Arc<AtomicU64>,
    /// Started and not crashed or told to leave.
    alive: bool,
}

struct Runner<'a> {
    sim: turmoil::Sim<'a>,
    opts: TurmoilOptions,
    seed: u64,
    rng: Rng,
    truth: TrueTime,
    shared: Arc<Mutex<Shared>>,
    store: Arc<Mutex<StoreState>>,
    slots: Vec<Slot>,
    /// Node↔node pairs the schedule holds (isolate, split).
    held: BTreeSet<(usize, usize)>,
    isolated: BTreeSet<usize>,
    split: Option<BTreeSet<usize>>,
    report: TurmoilReport,
    messages: BTreeMap<String, u64>,
    last_live: Option<BTreeSet<String>>,
    crashes_of_leader: Vec<u64>,
    /// The run's latency range (turmoil's default unless `net latency`).
    latency: (Duration, Duration),
}

/// Runs `scenario` from `seed` over turmoil and reports what it saw.
///
/// Steps that make no sense on turmoil stop the run with
/// [`TurmoilReport::error`] set (`net dup`, `net drop`): nothing is
/// silently skipped.
pub fn run(scenario: &Scenario, seed: u64, opts: &TurmoilOptions) -> TurmoilReport {
    let wall = Instant::now();
    let mut b = turmoil::Builder::new();
    let mut latency = (Duration::ZERO, Duration::from_millis(100));
    b.tick_duration(opts.tick)
        .simulation_duration(Duration::from_secs(1_000_000))
        .rng_seed(seed)
        .tcp_capacity(1 << 16);
    for step in &scenario.steps {
        if let Step::NetLatency(lo, hi) = step {
            b.min_message_latency(*lo).max_message_latency(*hi);
            latency = (*lo, *hi);
        }
    }
    let sim = b.build();
    let truth = TrueTime::default();
    let store = Arc::new(Mutex::new(StoreState::default()));
    let mut r = Runner {
        sim,
        opts: opts.clone(),
        seed,
        rng: Rng::new(seed ^ 0x7u64.rotate_left(40)),
        truth: truth.clone(),
        shared: Arc::new(Mutex::new(Shared::default())),
        store: store.clone(),
        slots: Vec::new(),
        held: BTreeSet::new(),
        isolated: BTreeSet::new(),
        split: None,
        report: TurmoilReport {
            seed,
            ..TurmoilReport::default()
        },
        messages: BTreeMap::new(),
        last_live: None,
        crashes_of_leader: Vec::new(),
        latency,
    };
    {
        let (store, truth) = (store.clone(), truth.clone());
        r.sim
            .host(STORE_HOST, move || serve(store.clone(), truth.clone()));
    }
    r.live_changed();
    for (i, step) in scenario.steps.iter().enumerate() {
        if let Err(e) = r.step(i, step) {
            r.report.error = Some(format!("step {} ({step:?}): {e}", i + 1));
            break;
        }
    }
    let mut report = r.finish();
    report.wall = wall.elapsed();
    report
}

impl Runner<'_> {
    fn now(&self) -> u64 {
        u64::try_from(self.sim.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn advance(&mut self, d: Duration) -> Result<(), String> {
        let end = self.sim.elapsed() + d;
        while self.sim.elapsed() < end {
            self.sim.step().map_err(|e| format!("a host failed: {e}"))?;
            self.truth.set_ns(self.now());
        }
        Ok(())
    }

    fn rec(&mut self, slot: usize, what: What) {
        let t = self.now();
        let inc = lock(&self.shared)
            .handles
            .get(&slot)
            .map_or(0, |h| h.incarnation());
        lock(&self.shared).rec(t, slot, inc, what);
    }

    fn mark(&mut self, label: String) {
        let t = self.now();
        self.report
            .trace
            .marks
            .push((Duration::from_nanos(t), label.clone()));
        lock(&self.shared).rec(t, 0, 0, What::Mark(label));
    }

    fn live(&self) -> Vec<usize> {
        (1..self.slots.len())
            .filter(|s| self.slots[*s].alive)
            .collect()
    }

    fn live_changed(&mut self) {
        let set: BTreeSet<String> = self.live().into_iter().map(name).collect();
        if self.last_live.as_ref() != Some(&set) {
            let t = Duration::from_nanos(self.now());
            self.report.trace.live.push((t, set.clone()));
            self.last_live = Some(set);
        }
    }

    fn leader(&self) -> Option<usize> {
        let sh = lock(&self.shared);
        self.live()
            .into_iter()
            .find(|s| sh.handles.get(s).is_some_and(Hedgerow::is_leader))
    }

    fn pick(&mut self, t: Target) -> Option<usize> {
        let live = self.live();
        match t {
            Target::Leader => self.leader(),
            Target::Random if live.is_empty() => None,
            Target::Random => Some(live[self.rng.below(live.len() as u64) as usize]),
            Target::Slot(s) => live.contains(&s).then_some(s),
        }
    }

    fn clock_for(&mut self, slot: usize) -> SimClock {
        let bound = u64::try_from(self.opts.bound.as_nanos()).unwrap_or(u64::MAX);
        if let Some((s, off)) = self.opts.broken_clock {
            if s == slot {
                return SimClock::fixed(off.saturating_mul(1_000_000), bound);
            }
        }
        let span = (bound as f64 * self.opts.offset_fraction) as u64;
        let offset = self.rng.below(2 * span + 1) as i64 - span as i64;
        let d = self.opts.drift_ppm * 1000;
        let drift = self.rng.below(2 * d + 1) as i64 - d as i64;
        let mut params = SimClock {
            drift_ppb: drift,
            ..SimClock::fixed(offset, bound)
        };
        if let Some((_, status)) = self.opts.clock_status.iter().find(|(s, _)| *s == slot) {
            params.status = *status;
        }
        params
    }

    /// Starts a node: a free host is restarted, else a new host is added.
    fn add_node(&mut self) {
        if self.slots.is_empty() {
            // Slot 0 is unused so that slots match host names.
            self.slots.push(Slot {
                clock: SimHostClock::new(SimClock::fixed(0, 0), self.truth.clone()),
                bytes: Arc::default(),
                alive: false,
            });
        }
        let free = (1..self.slots.len())
            .find(|s| !self.slots[*s].alive && !self.sim.is_host_running(name(*s).as_str()));
        let slot = match free {
            Some(s) => {
                self.sim.bounce(name(s).as_str());
                s
            }
            None => {
                let slot = self.slots.len();
                let params = self.clock_for(slot);
                let ctx = HostCtx {
                    slot,
                    seed: self.seed,
                    shared: self.shared.clone(),
                    clock: SimHostClock::new(params, self.truth.clone()),
                    truth: self.truth.clone(),
                    bytes: Arc::default(),
                    boots: Arc::default(),
                    config: self.opts.config.clone(),
                    store_timeout: self.opts.store_timeout,
                    sample_every: self.opts.sample_every,
                };
                self.slots.push(Slot {
                    clock: ctx.clock.clone(),
                    bytes: ctx.bytes.clone(),
                    alive: false,
                });
                self.sim
                    .host(name(slot).as_str(), move || host_main(ctx.clone()));
                slot
            }
        };
        self.slots[slot].alive = true;
        // A node started while some are isolated or split off stays
        // cut from them.
        let others: Vec<usize> = self.live().into_iter().filter(|s| *s != slot).collect();
        for o in others {
            let cut = self.isolated.contains(&o)
                || self
                    .split
                    .as_ref()
                    .is_some_and(|minority| minority.contains(&o));
            if cut {
                self.hold(slot, o);
            }
        }
        self.live_changed();
    }

    fn hold(&mut self, a: usize, b: usize) {
        let pair = (a.min(b), a.max(b));
        if a != b && self.held.insert(pair) {
            self.sim.hold(name(pair.0).as_str(), name(pair.1).as_str());
        }
    }

    fn forget(&mut self, slot: usize) {
        let mut sh = lock(&self.shared);
        if let Some(h) = sh.handles.remove(&slot) {
            *self.messages.entry(name(slot)).or_default() += h.stats().messages_sent;
        }
        sh.cmds.remove(&slot);
        sh.pending.remove(&slot);
    }

    fn crash(&mut self, slot: usize) {
        self.rec(slot, What::Crashed);
        self.forget(slot);
        self.sim.crash(name(slot).as_str());
        self.slots[slot].alive = false;
        self.live_changed();
    }

    fn leave(&mut self, slot: usize) {
        let mut sh = lock(&self.shared);
        sh.command(slot, Cmd::Leave);
        // Later commands go nowhere: this process is on its way out.
        sh.cmds.remove(&slot);
        if let Some(h) = sh.handles.remove(&slot) {
            *self.messages.entry(name(slot)).or_default() += h.stats().messages_sent;
        }
        drop(sh);
        self.slots[slot].alive = false;
        self.live_changed();
    }

    fn reports(&self) -> Vec<NodeReport> {
        let sh = lock(&self.shared);
        let mut out = Vec::new();
        for slot in self.live() {
            let Some(h) = sh.handles.get(&slot) else {
                continue;
            };
            let cut = self.isolated.contains(&slot)
                || self.split.as_ref().is_some_and(|m| m.contains(&slot));
            out.push(NodeReport {
                slot,
                me: (h.id().clone(), h.incarnation()),
                reachable: !cut,
                leads: h.is_leader(),
                leader: h.leader().map(|l| (l.id, l.term)),
                stamp: h.view_stamp(),
                members: h
                    .members()
                    .into_iter()
                    .map(|m| (m.id, m.incarnation))
                    .collect(),
                stale: h.view_is_stale(),
            });
        }
        out
    }

    fn converge(&mut self, label: String, limit: Duration) -> Result<(), String> {
        let t0 = self.sim.elapsed();
        let done = loop {
            let reports = self.reports();
            // A live node whose host has not registered yet is not converged.
            let booting = reports.len() != self.live().len();
            let why = if booting {
                Some("a node is still starting".to_string())
            } else {
                convergence::diverged(&reports)
            };
            match why {
                None => break Some(self.sim.elapsed() - t0),
                Some(why) if self.sim.elapsed() - t0 >= limit => {
                    if self.report.divergence.is_none() {
                        self.report.divergence = Some(format!("{label}: {why}"));
                    }
                    break None;
                }
                Some(_) => self.advance(self.opts.check_every)?,
            }
        };
        self.report.converge.push((label, done));
        Ok(())
    }

    fn step(&mut self, i: usize, step: &Step) -> Result<(), String> {
        match step {
            Step::Nodes(n) => {
                for _ in 0..*n {
                    self.add_node();
                }
                self.mark(format!("nodes {n}"));
            }
            Step::Run(d) => {
                self.advance(*d)?;
                self.mark(format!("run {d:?}"));
            }
            Step::ScaleTo { n, waves, over } => {
                let pause = *over / *waves as u32;
                for w in 0..*waves {
                    let live = self.live().len();
                    let left = *waves - w;
                    if live < *n {
                        for _ in 0..(*n - live).div_ceil(left) {
                            self.add_node();
                        }
                    } else {
                        for _ in 0..(live - *n).div_ceil(left) {
                            let l = self.live();
                            let s = l[self.rng.below(l.len() as u64) as usize];
                            if self.rng.below(4) == 0 {
                                self.crash(s);
                            } else {
                                self.leave(s);
                            }
                        }
                    }
                    self.mark(format!("wave {}/{waves} to {n}", w + 1));
                    self.advance(pause)?;
                }
            }
            Step::Crash(t) => {
                if let Some(s) = self.pick(*t) {
                    if *t == Target::Leader {
                        self.crashes_of_leader.push(self.now());
                    }
                    self.crash(s);
                    self.mark(format!("crash n{s}"));
                }
            }
            Step::Leave(t) => {
                if let Some(s) = self.pick(*t) {
                    self.leave(s);
                    self.mark(format!("leave n{s}"));
                }
            }
            Step::Restart(t) => {
                if let Some(s) = self.pick(*t) {
                    self.rec(s, What::Restarted);
                    self.forget(s);
                    self.sim.bounce(name(s).as_str());
                    self.mark(format!("restart n{s}"));
                }
            }
            Step::Isolate(t) => {
                if let Some(s) = self.pick(*t) {
                    self.isolated.insert(s);
                    for o in 1..self.slots.len() {
                        self.hold(s, o);
                    }
                    self.mark(format!("isolate n{s}"));
                }
            }
            Step::Split => {
                let live = self.live();
                let (a, b) = live.split_at(live.len() / 2);
                for x in a {
                    for y in b {
                        self.hold(*x, *y);
                    }
                }
                self.split = Some(a.iter().copied().collect());
                self.mark("split".into());
            }
            Step::Heal => {
                for (a, b) in std::mem::take(&mut self.held) {
                    self.sim.release(name(a).as_str(), name(b).as_str());
                }
                self.isolated.clear();
                self.split = None;
                self.mark("heal".into());
            }
            Step::StoreDown(d) => {
                self.sim.crash(STORE_HOST);
                self.mark("store down".into());
                self.advance(*d)?;
                self.sim.bounce(STORE_HOST);
                self.mark("store up".into());
            }
            Step::CutStore(t, d) => {
                if let Some(s) = self.pick(*t) {
                    self.sim.hold(name(s).as_str(), STORE_HOST);
                    self.mark(format!("cut-store n{s}"));
                    self.advance(*d)?;
                    self.sim.release(name(s).as_str(), STORE_HOST);
                    self.mark(format!("uncut-store n{s}"));
                }
            }
            Step::Clock(status, t) => {
                if let Some(s) = self.pick(*t) {
                    let clock = &self.slots[s].clock;
                    clock.set(SimClock {
                        status: *status,
                        ..clock.params()
                    });
                    // A clock that may not lead ends the node's leadership
                    // interval now (it steps down on its next reading); one
                    // that may lead again starts nothing by itself: a new
                    // interval starts with a store write, as always.
                    if !status.may_lead() {
                        self.rec(s, What::ClockUntrusted);
                    }
                    self.mark(format!("clock {} n{s}", clock_word(*status)));
                }
            }
            // Applied when the simulation was built.
            Step::NetLatency(..) => {}
            Step::NetDrop(_) => {
                return Err(
                    "`net drop` is not supported on turmoil: its TCP drops segments \
                            without retransmission, which leaves gaps no real TCP stream has; \
                            use the in-process harness for lossy networks"
                        .into(),
                )
            }
            Step::NetDup(_) => {
                return Err("`net dup` is not supported on turmoil: TCP never duplicates".into())
            }
            Step::StoreSpike(extra, d) => {
                // Every node's link to the store gets a fixed latency of
                // `extra` for a while, then the run's latency range again.
                let nodes: Vec<String> = (1..self.slots.len()).map(name).collect();
                for n in &nodes {
                    self.sim.set_link_latency(n.as_str(), STORE_HOST, *extra);
                }
                self.mark(format!("store spike {extra:?}"));
                self.advance(*d)?;
                let (lo, hi) = self.latency;
                for n in &nodes {
                    self.sim.set_link_latency(n.as_str(), STORE_HOST, lo);
                    self.sim
                        .set_link_max_message_latency(n.as_str(), STORE_HOST, hi);
                }
                self.mark("store spike over".into());
            }
            Step::Send(k) => {
                for _ in 0..*k {
                    if let Some(s) = self.pick(Target::Random) {
                        let n = self.rng.next_u64() >> 1;
                        lock(&self.shared).command(s, Cmd::Send(n));
                    }
                }
                self.mark(format!("send {k}"));
            }
            Step::Stream(k, bytes) => {
                for _ in 0..*k {
                    if let Some(s) = self.pick(Target::Random) {
                        let key = self.rng.next_u64() >> 1;
                        lock(&self.shared).command(s, Cmd::Stream(key, *bytes));
                    }
                }
                self.mark(format!("stream {k} {bytes}"));
            }
            Step::Converge(limit) => {
                self.converge(format!("converge #{}", i + 1), *limit)?;
                self.mark(format!("converged #{}", i + 1));
            }
        }
        Ok(())
    }

    fn finish(mut self) -> TurmoilReport {
        let end = self.now();
        let live = self.live();
        for s in live {
            self.forget(s);
        }
        let mut report = std::mem::take(&mut self.report);
        report.messages_sent = std::mem::take(&mut self.messages);
        let mut log = std::mem::take(&mut lock(&self.shared).log);
        log.sort_by_key(|r| (r.t, r.seq));
        let applied = lock(&self.store).applied.clone();

        // Leadership intervals: a holder's belief starts no later than the
        // store applying its write (it learns of it after), extends with
        // each renew to the true instant its own clock's `latest` reaches
        // the expiry, and ends earlier when it steps down, crashes,
        // restarts, or its clock turns untrusted.
        enum Ev<'a> {
            End(usize, Option<(u64, Term)>),
            Write(&'a super::store::Applied),
        }
        let mut evs: Vec<(u64, u8, usize, Ev)> = Vec::new();
        for (i, a) in applied.iter().enumerate() {
            evs.push((a.at_ns, 1, i, Ev::Write(a)));
        }
        for (i, r) in log.iter().enumerate() {
            let ev = match &r.what {
                What::SteppedDown(term) => Ev::End(r.slot, Some((r.inc, *term))),
                What::Crashed | What::Restarted | What::ClockUntrusted => Ev::End(r.slot, None),
                What::Left(_) => Ev::End(r.slot, Some((r.inc, Term(u64::MAX)))),
                _ => continue,
            };
            evs.push((r.t, 0, i, ev));
        }
        evs.sort_by_key(|e| (e.0, e.1, e.2));
        let mut lead = Leadership::default();
        let mut open: BTreeMap<usize, (u64, Term)> = BTreeMap::new();
        for (t, _, _, ev) in evs {
            match ev {
                Ev::Write(a) => {
                    let Some(h) = &a.row.holder else { continue };
                    let Some(slot) = slot_of(h.id.as_str()) else {
                        continue;
                    };
                    let Some(s) = self.slots.get(slot) else {
                        continue;
                    };
                    let end = s.clock.params().true_time_latest_reaches(a.row.expires_ns);
                    lead.observe(slot, h.nonce, Some(a.row.token), end, t);
                    open.insert(slot, (h.nonce, a.row.token));
                }
                Ev::End(slot, who) => {
                    let ends = match (open.get(&slot), who) {
                        (None, _) => false,
                        (Some(_), None) => true,
                        (Some((inc, term)), Some((i2, t2))) => *inc == i2 && *term <= t2,
                    };
                    if ends {
                        // Inclusive of `t`: within that instant the node
                        // may have answered yes before it stepped down.
                        lead.end(slot, t + 1);
                        open.remove(&slot);
                    }
                }
            }
        }
        let trace_of = |at: u64| -> Vec<String> {
            let i = log.partition_point(|r| r.t <= at);
            log[i.saturating_sub(12)..(i + 3).min(log.len())]
                .iter()
                .map(|r| format!("t={:.3}s n{} {:?}", r.t as f64 / 1e9, r.slot, r.what))
                .collect()
        };
        let mut violations = Vec::new();
        let intervals = lead.intervals(end);
        violations.extend(lead.check(end));
        violations.extend(tokens::check(&intervals));
        let mut views = ViewOrder::default();
        let mut requests = Requests::default();
        let mut last_view: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
        for r in &log {
            let t = Duration::from_nanos(r.t);
            match &r.what {
                What::View(stamp, members) => {
                    violations.extend(views.observe(r.slot, r.inc, *stamp, r.t));
                    if self.opts.record_views && last_view.get(&r.slot) != Some(members) {
                        last_view.insert(r.slot, members.clone());
                        report.trace.views.push((t, name(r.slot), members.clone()));
                    }
                }
                What::Failed(subject) => {
                    report
                        .trace
                        .failed_reports
                        .push((t, name(r.slot), subject.clone()));
                }
                What::Handled { term, key } => {
                    let leading = lead
                        .leaders_at(r.t)
                        .iter()
                        .any(|o| o.slot == r.slot && o.term == *term);
                    let h = Handling {
                        slot: r.slot,
                        incarnation: r.inc,
                        id: NodeId::new(name(r.slot)).unwrap_or_else(|_| key.0.clone()),
                        term: *term,
                        leading,
                    };
                    violations.extend(requests.handled(h, key.clone(), r.t));
                }
                What::SendFailed(_) => report.sends.1 += 1,
                What::Leads(term) => {
                    let inside = lead
                        .leaders_at(r.t)
                        .iter()
                        .any(|o| o.slot == r.slot && o.incarnation == r.inc && o.term == *term);
                    if !inside {
                        violations.push(Violation {
                            invariant: "1 (the API's answer matches the leadership interval)",
                            at_ns: r.t,
                            what: format!(
                                "n{} says it leads under term {term} outside its recorded interval",
                                r.slot
                            ),
                            trace: Vec::new(),
                        });
                    }
                }
                What::SendOk { leader, term, key } => {
                    report.sends.0 += 1;
                    violations.extend(requests.replied_ok(leader, *term, key, r.t));
                }
                What::Elected(term) => {
                    report.first_leader.get_or_insert(t);
                    report.elections.push((t, name(r.slot), *term));
                }
                What::SteppedDown(term) => report.step_downs.push((t, name(r.slot), *term)),
                _ => {}
            }
        }
        for c in &self.crashes_of_leader {
            let next = log
                .iter()
                .find(|r| r.t >= *c && matches!(r.what, What::Elected(_)))
                .map(|r| Duration::from_nanos(r.t - c));
            report.failovers.push(next);
        }
        for v in &mut violations {
            v.what = format!("seed {}: {}", self.seed, v.what);
            v.trace = trace_of(v.at_ns);
        }
        report.sends.2 = requests.handlings;
        let seen: Vec<(u64, Seen)> = log
            .iter()
            .filter_map(|r| match &r.what {
                What::Stream(s) => Some((r.t, s.clone())),
                _ => None,
            })
            .collect();
        for (_, s) in &seen {
            match s {
                Seen::Sent { ok: true, .. } => report.streams.0 += 1,
                Seen::Sent { ok: false, .. } => report.streams.1 += 1,
                Seen::Ended { got, .. } => report.streams.2 += got,
                Seen::Opened { .. } => {}
            }
        }
        // A receiver that crashed, restarted or left after it opened a
        // stream may have died with bytes it had been handed unread.
        let gone_after = |slot: usize, t: u64| {
            log.iter().any(|r| {
                r.slot == slot
                    && r.t >= t
                    && matches!(r.what, What::Crashed | What::Restarted | What::Left(_))
            })
        };
        let mut stream_violations = check_delivery(&seen, gone_after);
        for v in &mut stream_violations {
            v.what = format!("seed {}: {}", self.seed, v.what);
            v.trace = trace_of(v.at_ns);
        }
        violations.extend(stream_violations);
        report.violations = violations;
        for (i, s) in self.slots.iter().enumerate().skip(1) {
            report
                .trace
                .bytes_sent
                .insert(name(i), s.bytes.load(Ordering::Relaxed));
        }
        report.trace.duration = Duration::from_nanos(end);
        // Node-seconds from the live-set changes.
        let mut ns = 0f64;
        for w in report.trace.live.windows(2) {
            ns += (w[1].0 - w[0].0).as_secs_f64() * w[0].1.len() as f64;
        }
        if let Some((t, set)) = report.trace.live.last() {
            ns += (Duration::from_nanos(end).saturating_sub(*t)).as_secs_f64() * set.len() as f64;
        }
        report.node_seconds = ns;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        log.hash(&mut h);
        applied.len().hash(&mut h);
        for a in &applied {
            (a.at_ns, &a.row).hash(&mut h);
        }
        report.trace_hash = h.finish();
        report.events = log.len() + applied.len();
        report
    }
}
