//! Chaos schedules as data. A scenario is a small text file, one step per
//! line (`#` starts a comment), run against a [`Cluster`] from one seed:
//!
//! ```text
//! nodes 3                      # start 3 nodes
//! run 2s                       # let simulated time pass
//! scale-to 150 waves 10 over 20s
//! crash leader                 # leader | random | <slot>
//! leave random
//! restart random
//! isolate random               # cut a node from every other node
//! split                        # two halves that cannot talk
//! heal                         # restore every link
//! store down 2s                # store outage for a while
//! store spike 1500ms 5s        # extra store latency for a while
//! cut-store leader 4s          # cut one node from the store for a while
//! clock unknown leader         # that node's clock reports Unknown
//! clock disrupted 1            # … Disrupted (a VM migration), and back:
//! clock synchronized 1         # unknown | disrupted | free-running | synchronized
//! net drop 0.01                # drop | dup probability
//! net latency 1ms 20ms
//! send 10                      # sends from random nodes
//! stream 3 200000              # streams of that many bytes to the leader
//! converge within 30s          # must converge; the time is reported
//! put 20                       # KV puts from random nodes
//! lock job 5                   # 5 random nodes wait (up to 10 s) for lock "job"
//! acquire pool 3 8             # 8 random nodes wait for a permit of "pool" (limit 3)
//! release 4                    # 4 random held permits given back (`release all`)
//!                              # (waiters keep waiting, up to their 10 s)
//! ```
//!
//! The coordination steps run on both runners (on turmoil through the real
//! facade: `kv().put`, `semaphore(..).acquire_timeout`, `Permit::release`;
//! after a run with puts every live node reads every revision back).
//!
//! Random choices come from the run's seed, so a scenario and a seed
//! replay exactly.

use std::time::Duration;

use hedgerow_core::{ClockStatus, Rng, StreamTarget};

use crate::{Cluster, ClusterConfig, SimClock};

/// One step of a scenario.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Start this many nodes now.
    Nodes(usize),
    /// Let simulated time pass.
    Run(Duration),
    /// Grow or shrink to `n` live nodes in `waves` equal waves spread over
    /// a duration (shrinking uses graceful leaves, one in four a crash).
    ScaleTo {
        /// Target live count.
        n: usize,
        /// Number of waves.
        waves: usize,
        /// Over how long.
        over: Duration,
    },
    /// Crash a node.
    Crash(Target),
    /// Gracefully leave.
    Leave(Target),
    /// Restart with a new incarnation.
    Restart(Target),
    /// Cut a node from every other node.
    Isolate(Target),
    /// Split the live nodes into two halves.
    Split,
    /// Restore every link.
    Heal,
    /// Store down for a while.
    StoreDown(Duration),
    /// Extra store latency for a while.
    StoreSpike(Duration, Duration),
    /// Cut a node from the store for a while.
    CutStore(Target, Duration),
    /// Set a node's clock status, as its ClockBound daemon would report
    /// it: Unknown or Disrupted (a VM migration) take away its right to
    /// lead; Synchronized or FreeRunning give it back. The bound is kept.
    Clock(ClockStatus, Target),
    /// Drop probability.
    NetDrop(f64),
    /// Duplicate probability.
    NetDup(f64),
    /// Latency range.
    NetLatency(Duration, Duration),
    /// Sends from random live nodes.
    Send(usize),
    /// Streams from random live nodes to the leader: how many, and how
    /// many bytes each. Each must arrive whole and in order, or fail.
    Stream(usize, u64),
    /// The cluster must converge within the limit.
    Converge(Duration),
    /// KV puts from random live nodes.
    Put(usize),
    /// Random live nodes wait (up to 10 s each) for a permit of a
    /// semaphore: its name, its limit (1: a lock), how many ask.
    Acquire(String, u32, usize),
    /// Random held permits given back (`usize::MAX`: all held); waiters
    /// keep waiting.
    Release(usize),
}

impl Step {
    /// The step as a scenario file writes it, for reports.
    pub fn label(&self) -> String {
        let d = |d: &Duration| format!("{d:?}");
        match self {
            Step::Nodes(n) => format!("nodes {n}"),
            Step::Run(t) => format!("run {}", d(t)),
            Step::ScaleTo { n, waves, over } => {
                format!("scale-to {n} waves {waves} over {}", d(over))
            }
            Step::Crash(t) => format!("crash {t}"),
            Step::Leave(t) => format!("leave {t}"),
            Step::Restart(t) => format!("restart {t}"),
            Step::Isolate(t) => format!("isolate {t}"),
            Step::Split => "split".into(),
            Step::Heal => "heal".into(),
            Step::StoreDown(t) => format!("store down {}", d(t)),
            Step::StoreSpike(x, t) => format!("store spike {} {}", d(x), d(t)),
            Step::CutStore(n, t) => format!("cut-store {n} {}", d(t)),
            Step::Clock(s, t) => format!("clock {} {t}", clock_word(*s)),
            Step::NetDrop(p) => format!("net drop {p}"),
            Step::NetDup(p) => format!("net dup {p}"),
            Step::NetLatency(a, b) => format!("net latency {} {}", d(a), d(b)),
            Step::Send(k) => format!("send {k}"),
            Step::Stream(k, b) => format!("stream {k} {b}"),
            Step::Converge(t) => format!("converge within {}", d(t)),
            Step::Put(k) => format!("put {k}"),
            Step::Acquire(name, 1, k) => format!("lock {name} {k}"),
            Step::Acquire(name, l, k) => format!("acquire {name} {l} {k}"),
            Step::Release(usize::MAX) => "release all".into(),
            Step::Release(k) => format!("release {k}"),
        }
    }
}

/// Which node a step acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The current leader (skipped when there is none).
    Leader,
    /// A random live node.
    Random,
    /// A slot.
    Slot(usize),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Leader => f.write_str("leader"),
            Target::Random => f.write_str("random"),
            Target::Slot(s) => write!(f, "{s}"),
        }
    }
}

/// A parse error with its line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "scenario line {}: {}", self.line, self.what)
    }
}

impl std::error::Error for ParseError {}

/// A named sequence of steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// Its steps.
    pub steps: Vec<Step>,
}

/// Built-in scenarios by name.
pub const BUILT_IN: &[(&str, &str)] = &[
    (
        "scale-2-150-2",
        "# Scale 2 -> 150 -> 2 in waves, twice, with crashes and a leader crash at full size.
nodes 2
converge within 10s
scale-to 150 waves 10 over 20s
converge within 30s
crash leader
converge within 30s
scale-to 2 waves 10 over 20s
converge within 30s
scale-to 150 waves 5 over 5s
crash random
leave random
converge within 30s
scale-to 2 waves 5 over 5s
converge within 30s
",
    ),
    (
        "partitions",
        "# Isolated members, a split into halves, an isolated leader, store trouble.
nodes 20
converge within 10s
isolate random
run 5s
heal
converge within 20s
split
run 10s
heal
converge within 30s
isolate leader
run 15s
heal
converge within 40s
cut-store leader 15s
converge within 40s
store spike 1500ms 5s
store down 3s
converge within 40s
",
    ),
    (
        "lossy",
        "# A lossy, reordering network with sends and leader crashes.
net latency 1ms 30ms
net drop 0.05
net dup 0.05
nodes 30
converge within 30s
send 50
crash leader
send 50
converge within 40s
restart random
clock unknown leader
converge within 40s
",
    ),
    (
        "streams",
        "# Streams to the leader cut by crashes, a restart, a leave and an isolated node:
# each must arrive whole or fail loudly; the last batch, sent in a settled
# cluster, must get through.
nodes 6
converge within 15s
stream 6 300000
run 100ms
crash leader
stream 6 200000
run 300ms
restart random
stream 4 500000
leave random
converge within 30s
stream 6 300000
run 50ms
crash random
isolate random
stream 4 300000
run 3s
heal
converge within 40s
stream 4 100000
run 10s
",
    ),
    (
        "coordination",
        "# Locks, a semaphore and puts through leader crashes, an isolated node,
# partitions, store outages and 2 -> 150 -> 2 churn: never more holders
# than the limit at any true instant, lock tokens rising, every
# acknowledged put stored once.
nodes 5
converge within 10s
lock job 4
acquire pool 2 5
put 20
run 1s
release all
run 1s
release all
crash leader
put 10
run 1s
release all
converge within 20s
isolate random
acquire pool 2 3
lock job 3
run 2s
release all
heal
run 1s
release all
store down 2s
put 10
run 1s
release all
converge within 20s
scale-to 150 waves 10 over 20s
acquire pool 2 20
lock job 10
put 50
run 1s
release all
run 1s
release all
converge within 30s
split
run 3s
release all
heal
run 1s
release all
crash leader
run 2s
release all
converge within 30s
scale-to 2 waves 10 over 20s
release all
put 10
lock job 2
run 1s
release all
converge within 30s
run 5s
",
    ),
];

fn duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let v: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?} (e.g. 500ms, 2s)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        _ => return Err(format!("bad duration unit in {s:?}: use ms, s or m")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// The clock statuses a scenario can set, by their word in the text.
const CLOCK_STATUSES: [(&str, ClockStatus); 4] = [
    ("unknown", ClockStatus::Unknown),
    ("disrupted", ClockStatus::Disrupted),
    ("free-running", ClockStatus::FreeRunning),
    ("synchronized", ClockStatus::Synchronized),
];

/// A clock status as a scenario writes it (`clock <word> <target>`).
pub fn clock_word(status: ClockStatus) -> &'static str {
    CLOCK_STATUSES
        .iter()
        .find(|(_, s)| *s == status)
        .map_or("other", |(w, _)| *w)
}

fn target(s: Option<&str>) -> Result<Target, String> {
    match s {
        Some("leader") => Ok(Target::Leader),
        Some("random") => Ok(Target::Random),
        Some(n) => n
            .parse()
            .map(Target::Slot)
            .map_err(|_| format!("bad target {n:?}: leader, random or a slot")),
        None => Err("missing target: leader, random or a slot".into()),
    }
}

impl Scenario {
    /// A built-in scenario by name, or a file's contents.
    pub fn load(name_or_path: &str) -> Result<Scenario, String> {
        if let Some((name, text)) = BUILT_IN.iter().find(|(n, _)| *n == name_or_path) {
            return Scenario::parse(name, text).map_err(|e| e.to_string());
        }
        let text = std::fs::read_to_string(name_or_path).map_err(|e| {
            let names: Vec<&str> = BUILT_IN.iter().map(|(n, _)| *n).collect();
            format!(
                "{name_or_path:?} is neither a built-in scenario ({}) nor a readable file: {e}",
                names.join(", ")
            )
        })?;
        Scenario::parse(name_or_path, &text).map_err(|e| e.to_string())
    }

    /// Parses the text format.
    pub fn parse(name: &str, text: &str) -> Result<Scenario, ParseError> {
        let mut steps = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let err = |what: String| ParseError { line: i + 1, what };
            let w: Vec<&str> = line.split_whitespace().collect();
            let num = |s: Option<&&str>| -> Result<usize, ParseError> {
                s.and_then(|x| x.parse().ok())
                    .ok_or_else(|| err(format!("expected a number in {line:?}")))
            };
            let dur = |s: Option<&&str>| -> Result<Duration, ParseError> {
                duration(s.copied().unwrap_or("")).map_err(err)
            };
            let prob = |s: Option<&&str>| -> Result<f64, ParseError> {
                s.and_then(|x| x.parse::<f64>().ok())
                    .filter(|p| (0.0..=1.0).contains(p))
                    .ok_or_else(|| err(format!("expected a probability 0..1 in {line:?}")))
            };
            let step = match (w[0], w.get(1).copied()) {
                ("nodes", _) => Step::Nodes(num(w.get(1))?),
                ("run", _) => Step::Run(dur(w.get(1))?),
                ("scale-to", _) => {
                    if w.get(2) != Some(&"waves") || w.get(4) != Some(&"over") {
                        return Err(err("use: scale-to N waves W over DURATION".into()));
                    }
                    Step::ScaleTo {
                        n: num(w.get(1))?,
                        waves: num(w.get(3))?.max(1),
                        over: dur(w.get(5))?,
                    }
                }
                ("crash", t) => Step::Crash(target(t).map_err(err)?),
                ("leave", t) => Step::Leave(target(t).map_err(err)?),
                ("restart", t) => Step::Restart(target(t).map_err(err)?),
                ("isolate", t) => Step::Isolate(target(t).map_err(err)?),
                ("split", _) => Step::Split,
                ("heal", _) => Step::Heal,
                ("store", Some("down")) => Step::StoreDown(dur(w.get(2))?),
                ("store", Some("spike")) => Step::StoreSpike(dur(w.get(2))?, dur(w.get(3))?),
                ("cut-store", t) => Step::CutStore(target(t).map_err(err)?, dur(w.get(2))?),
                ("clock", Some(word)) => {
                    let Some(status) = CLOCK_STATUSES
                        .iter()
                        .find(|(w, _)| *w == word)
                        .map(|(_, s)| *s)
                    else {
                        return Err(err(format!(
                            "unknown clock status {word:?}: unknown, disrupted, free-running or synchronized"
                        )));
                    };
                    Step::Clock(status, target(w.get(2).copied()).map_err(err)?)
                }
                ("net", Some("drop")) => Step::NetDrop(prob(w.get(2))?),
                ("net", Some("dup")) => Step::NetDup(prob(w.get(2))?),
                ("net", Some("latency")) => Step::NetLatency(dur(w.get(2))?, dur(w.get(3))?),
                ("send", _) => Step::Send(num(w.get(1))?),
                ("stream", _) => Step::Stream(num(w.get(1))?, num(w.get(2))? as u64),
                ("converge", Some("within")) => Step::Converge(dur(w.get(2))?),
                ("put", _) => Step::Put(num(w.get(1))?),
                ("lock", Some(name)) => Step::Acquire(name.into(), 1, num(w.get(2))?),
                ("acquire", Some(name)) => {
                    let limit = num(w.get(2))?;
                    if limit == 0 || limit > u32::MAX as usize {
                        return Err(err(format!(
                            "a semaphore's limit must be 1 or more in {line:?}"
                        )));
                    }
                    Step::Acquire(name.into(), limit as u32, num(w.get(3))?)
                }
                ("release", Some("all")) => Step::Release(usize::MAX),
                ("release", _) => Step::Release(num(w.get(1))?),
                _ => return Err(err(format!("unknown step {line:?}"))),
            };
            steps.push(step);
        }
        Ok(Scenario {
            name: name.into(),
            steps,
        })
    }
}

/// What one run of a scenario measured.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Time to each `converge` step's convergence (None: it did not).
    pub converge: Vec<Option<Duration>>,
    /// Violations found.
    pub violations: Vec<crate::check::Violation>,
    /// When the first leader appeared.
    pub first_leader: Option<Duration>,
    /// Simulated time at the end.
    pub end: Duration,
    /// Events processed.
    pub events: u64,
    /// Why the first phase that did not converge had not, when it gave up.
    pub divergence: Option<String>,
    /// Permits granted (coordination steps).
    pub permits_granted: u64,
    /// Puts acknowledged (coordination steps).
    pub puts_acked: usize,
}

impl Outcome {
    /// Whether every `converge` step converged and nothing broke.
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.converge.iter().all(Option::is_some)
    }
}

/// Runs a scenario from `cfg` (its network settings may be changed by
/// `net` steps).
pub fn run(scenario: &Scenario, cfg: ClusterConfig) -> Outcome {
    run_with(scenario, cfg).0
}

/// Runs a scenario and hands back the cluster too, to inspect it.
pub fn run_with(scenario: &Scenario, mut cfg: ClusterConfig) -> (Outcome, Cluster) {
    let rng = Rng::new(cfg.seed ^ 0x5CE7_A210);
    shape_network(scenario, &mut cfg);
    let mut run = InProcess {
        c: Cluster::new(cfg),
        rng,
        out: Outcome::default(),
        tickets: Vec::new(),
        puts: 0,
    };
    for step in &scenario.steps {
        run.step(step);
    }
    let InProcess { c, mut out, .. } = run;
    out.violations = c.violations();
    out.first_leader = c.first_leader_at().map(Duration::from_nanos);
    out.end = Duration::from_nanos(c.now_ns());
    out.events = c.events();
    out.permits_granted = c.permits_granted();
    out.puts_acked = c.puts_acked();
    (out, c)
}

/// `net` steps shape the network from the start, wherever they stand; a
/// lossy or duplicating network is also a reordering one.
fn shape_network(scenario: &Scenario, cfg: &mut ClusterConfig) {
    for step in &scenario.steps {
        match step {
            Step::NetDrop(p) => cfg.net.drop = *p,
            Step::NetDup(p) => cfg.net.duplicate = *p,
            Step::NetLatency(a, b) => {
                cfg.net.latency_min = *a;
                cfg.net.latency_max = *b;
            }
            _ => {}
        }
    }
    if cfg.net.drop > 0.0 || cfg.net.duplicate > 0.0 {
        cfg.net.fifo = false;
    }
}

/// A cluster a `scale-to` step grows and shrinks: the in-process harness,
/// the turmoil runner and the foca example run the same waves through it.
pub trait Resizable {
    /// What letting time pass can fail with.
    type Error;
    /// The live slots.
    fn live(&self) -> Vec<usize>;
    /// Starts one more node.
    fn add_node(&mut self);
    /// Kills the process in `slot` at once.
    fn crash(&mut self, slot: usize);
    /// Tells the process in `slot` to leave.
    fn leave(&mut self, slot: usize);
    /// The schedule's random choices.
    fn rng(&mut self) -> &mut Rng;
    /// A wave is done (`wave` says which, e.g. `wave 2/10 to 150`): let
    /// `pause` pass before the next.
    fn wave_done(&mut self, wave: String, pause: Duration) -> Result<(), Self::Error>;
}

/// Runs `scale-to n waves k over d` on `cluster`: each of the `waves`
/// waves starts or stops its share of the nodes still to go (rounded up),
/// then `over / waves` passes. A node to stop is picked at random among
/// the live ones and crashed one time in four, told to leave otherwise.
pub fn scale_to<C: Resizable + ?Sized>(
    cluster: &mut C,
    n: usize,
    waves: usize,
    over: Duration,
) -> Result<(), C::Error> {
    let pause = over / waves as u32;
    for w in 0..waves {
        let live = cluster.live().len();
        let left = waves - w;
        if live < n {
            for _ in 0..(n - live).div_ceil(left) {
                cluster.add_node();
            }
        } else {
            for _ in 0..(live - n).div_ceil(left) {
                let l = cluster.live();
                let s = l[cluster.rng().below(l.len() as u64) as usize];
                if cluster.rng().below(4) == 0 {
                    cluster.crash(s);
                } else {
                    cluster.leave(s);
                }
            }
        }
        cluster.wave_done(format!("wave {}/{waves} to {n}", w + 1), pause)?;
    }
    Ok(())
}

/// One in-process run in progress: the cluster, the schedule's own random
/// choices (apart from the cluster's), and what it measured so far.
struct InProcess {
    c: Cluster,
    rng: Rng,
    out: Outcome,
    /// Permits asked for and not yet given back: slot and ticket.
    tickets: Vec<(usize, hedgerow_core::RequestId)>,
    puts: u64,
}

impl Resizable for InProcess {
    type Error = std::convert::Infallible;
    fn live(&self) -> Vec<usize> {
        self.c.live()
    }
    fn add_node(&mut self) {
        self.c.add_node();
    }
    fn crash(&mut self, slot: usize) {
        self.c.crash(slot);
    }
    fn leave(&mut self, slot: usize) {
        self.c.leave(slot);
    }
    fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }
    fn wave_done(&mut self, wave: String, pause: Duration) -> Result<(), Self::Error> {
        self.c.mark(wave, None);
        self.c.run_for(pause);
        Ok(())
    }
}

impl InProcess {
    fn pick(&mut self, t: Target) -> Option<usize> {
        let live = self.c.live();
        match t {
            Target::Leader => self.c.leader(),
            Target::Random if live.is_empty() => None,
            Target::Random => Some(live[self.rng.below(live.len() as u64) as usize]),
            Target::Slot(s) => live.contains(&s).then_some(s),
        }
    }

    /// Carries out one step and marks its end in the record; `net` steps
    /// were applied before the start.
    fn step(&mut self, step: &Step) {
        self.act(step);
        let converge = match step {
            Step::Converge(_) => self
                .out
                .converge
                .last()
                .map(|c| c.map(|d| d.as_nanos() as u64)),
            _ => None,
        };
        self.c.mark(step.label(), converge);
    }

    fn act(&mut self, step: &Step) {
        match step {
            Step::Nodes(n) => {
                for _ in 0..*n {
                    self.c.add_node();
                }
            }
            Step::Run(d) => self.c.run_for(*d),
            Step::ScaleTo { n, waves, over } => {
                let Ok(()) = scale_to(self, *n, *waves, *over);
            }
            Step::Crash(t) => self.on_target(*t, Cluster::crash),
            Step::Leave(t) => self.on_target(*t, Cluster::leave),
            Step::Restart(t) => self.on_target(*t, Cluster::restart),
            Step::Isolate(t) => self.on_target(*t, Cluster::isolate),
            Step::Split => {
                let live = self.c.live();
                self.c.split(&live[..live.len() / 2]);
            }
            Step::Heal => self.c.heal(),
            Step::StoreDown(d) => {
                self.c.store_down(true);
                self.c.run_for(*d);
                self.c.store_down(false);
            }
            Step::StoreSpike(extra, d) => {
                self.c.store_spike(*extra);
                self.c.run_for(*d);
                self.c.store_spike(Duration::ZERO);
            }
            Step::CutStore(t, d) => self.on_target(*t, |c, s| {
                c.cut_store(s, true);
                c.run_for(*d);
                c.cut_store(s, false);
            }),
            Step::Clock(status, t) => self.on_target(*t, |c, s| {
                let clock = SimClock {
                    status: *status,
                    ..c.node(s).clock
                };
                c.set_clock(s, clock);
            }),
            Step::NetDrop(_) | Step::NetDup(_) | Step::NetLatency(..) => {}
            Step::Send(k) => self.on_random(*k, |c, s| {
                c.send(s, b"scenario");
            }),
            Step::Stream(k, bytes) => self.on_random(*k, |c, s| {
                // No leader known yet: nothing opened, as a caller
                // would be told (NoLeader).
                let _ = c.stream(s, StreamTarget::Leader, *bytes);
            }),
            Step::Converge(limit) => self.converge(*limit),
            Step::Put(k) => {
                for _ in 0..*k {
                    if let Some(s) = self.pick(Target::Random) {
                        self.puts += 1;
                        let key = format!("k/{}", self.puts % 16);
                        let _ = self.c.kv_put(s, &key, &self.puts.to_be_bytes());
                    }
                }
            }
            Step::Acquire(name, limit, k) => {
                for _ in 0..*k {
                    if let Some(s) = self.pick(Target::Random) {
                        let wait = Duration::from_secs(10);
                        if let Some(id) = self.c.acquire(s, name, *limit, true, wait) {
                            self.tickets.push((s, id));
                        }
                    }
                }
            }
            Step::Release(k) => {
                // Held permits only: a waiter keeps waiting (its acquire
                // times out by itself).
                self.tickets.retain(|(s, id)| {
                    self.c.node(*s).alive
                        && self.c.node(*s).app.coord.get(id).is_none_or(|r| r.is_ok())
                });
                let mut held: Vec<usize> = (0..self.tickets.len())
                    .filter(|&i| {
                        let (s, id) = self.tickets[i];
                        self.c.node(s).node.permit(id).is_some()
                    })
                    .collect();
                for _ in 0..(*k).min(held.len()) {
                    let i = held.swap_remove(self.rng.below(held.len() as u64) as usize);
                    let (s, id) = self.tickets[i];
                    self.c.release(s, id);
                }
            }
        }
    }

    /// Does `act` to the node `t` names, if one is live.
    fn on_target(&mut self, t: Target, act: impl FnOnce(&mut Cluster, usize)) {
        if let Some(s) = self.pick(t) {
            act(&mut self.c, s);
        }
    }

    /// Does `act` `k` times, each to a random live node.
    fn on_random(&mut self, k: usize, mut act: impl FnMut(&mut Cluster, usize)) {
        for _ in 0..k {
            if let Some(s) = self.pick(Target::Random) {
                act(&mut self.c, s);
            }
        }
    }

    fn converge(&mut self, limit: Duration) {
        let t0 = self.c.now_ns();
        let done = self
            .c
            .run_until_converged(limit)
            .map(|t| Duration::from_nanos(t - t0));
        if done.is_none() && self.out.divergence.is_none() {
            self.out.divergence = self.c.divergence();
        }
        self.out.converge.push(done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_ins_parse_and_errors_name_the_line() {
        for (name, _) in BUILT_IN {
            assert!(Scenario::load(name).is_ok(), "{name}");
        }
        let e = Scenario::parse("x", "nodes 3\nfly away\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(Scenario::parse("x", "run 3parsecs").is_err());
        assert!(Scenario::parse("x", "net drop 2").is_err());
        assert_eq!(
            Scenario::parse("x", "stream 3 65536").unwrap().steps,
            vec![Step::Stream(3, 65536)]
        );
        assert!(Scenario::parse("x", "stream 3").is_err());
        assert_eq!(
            Scenario::parse("x", "clock disrupted 2\nclock synchronized leader")
                .unwrap()
                .steps,
            vec![
                Step::Clock(ClockStatus::Disrupted, Target::Slot(2)),
                Step::Clock(ClockStatus::Synchronized, Target::Leader)
            ]
        );
        let e = Scenario::parse("x", "clock sideways 1").unwrap_err();
        assert!(e.what.contains("sideways"), "{e}");
    }
}
