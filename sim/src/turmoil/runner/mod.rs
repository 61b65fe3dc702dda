//! Runs a [`Scenario`] over turmoil: every node is the real facade (driver,
//! TCP transport, framing) on its own simulated host `n1`, `n2`, …, the
//! lease store is the host `store`, and each host has its own clock. The
//! runner steps the simulation, carries out the schedule between steps,
//! and hands back a [`TurmoilReport`]: violations, timings, and a
//! [`MembershipTrace`](crate::compare::MembershipTrace) comparable with
//! other membership systems run under the same schedule.
//!
//! One file a phase: `record` is the log the hosts and the runner share,
//! `host` the software on each node's host, `nodes` starting and stopping
//! processes, `steps` the schedule's steps, `finish` the checks over the
//! log once the run is over, `report` what comes back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hedgerow::Hedgerow;
use hedgerow_core::{ClockStatus, Config, Rng};

use super::clock::{SimHostClock, TrueTime};
use super::store::{serve, StoreState};
use crate::report::{FaultKind, Recorder};
use crate::scenario::{Scenario, Step, Target};
use record::{lock, name, Shared, What};

mod finish;
mod host;
mod nodes;
mod record;
mod report;
mod steps;

pub use report::TurmoilReport;

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
    /// Record the run for a report ([`TurmoilReport::record`]; default
    /// false).
    pub record: bool,
    /// Deliberately broken: permit holders believe their permits until
    /// they release them, whatever their clocks and `lost()` say. The
    /// permit checker must then catch the overlap this causes.
    pub broken_holders: bool,
    /// Deliberately broken: the store answers puts as appended but does
    /// not keep them. The KV checker must then catch the lost puts.
    pub broken_store_forgets_puts: bool,
    /// Mutual TLS material of node `n<slot>` (e.g. from
    /// `hedgerow::tls::ClusterCa`); a slot without an entry runs without
    /// TLS (default: none).
    pub tls: BTreeMap<usize, hedgerow::Tls>,
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
            record: false,
            broken_holders: false,
            broken_store_forgets_puts: false,
            tls: BTreeMap::new(),
        }
    }
}

/// What the runner keeps of a host across its boots.
struct Slot {
    clock: SimHostClock,
    bytes: Arc<AtomicU64>,
    /// Started and not crashed or told to leave.
    alive: bool,
}

/// One run in progress: the simulation, the schedule's state (held links,
/// isolated and split-off nodes) and the report so far.
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
    /// The report's change points, when the options ask for them.
    recorder: Option<Recorder>,
    /// Puts asked for so far (each put's value is its number).
    puts: u64,
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
    let mut state = StoreState::default();
    state.forget_puts = opts.broken_store_forgets_puts;
    let store = Arc::new(Mutex::new(state));
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
        recorder: opts.record.then(Recorder::default),
        puts: 0,
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
    if r.report.error.is_none() {
        if let Err(e) = r.read_back_puts() {
            r.report.error = Some(format!("reading the puts back: {e}"));
        }
    }
    let mut report = r.finish();
    report.wall = wall.elapsed();
    report
}

impl Runner<'_> {
    /// Simulated true time, ns.
    fn now(&self) -> u64 {
        u64::try_from(self.sim.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Steps turmoil for `d`, keeping every host's true time in step.
    fn advance(&mut self, d: Duration) -> Result<(), String> {
        let end = self.sim.elapsed() + d;
        while self.sim.elapsed() < end {
            self.sim.step().map_err(|e| format!("a host failed: {e}"))?;
            self.truth.set_ns(self.now());
        }
        Ok(())
    }

    /// Records what the runner did to the process in `slot` (a crash, a
    /// restart, an untrusted clock) under its current incarnation.
    fn rec(&mut self, slot: usize, what: What) {
        let t = self.now();
        let inc = lock(&self.shared)
            .handles
            .get(&slot)
            .map_or(0, |h| h.incarnation());
        lock(&self.shared).rec(t, slot, inc, what);
    }

    /// Marks the end of a schedule step, in the trace and the log.
    fn mark(&mut self, label: String) {
        let t = self.now();
        self.record_in_report(|r| r.mark(t, label.clone(), None));
        self.report
            .trace
            .marks
            .push((Duration::from_nanos(t), label.clone()));
        lock(&self.shared).rec(t, 0, 0, What::Mark(label));
    }

    /// Hands the report's recorder what `f` records, if the run records.
    fn record_in_report(&mut self, f: impl FnOnce(&mut Recorder)) {
        if let Some(r) = &mut self.recorder {
            f(r);
        }
    }

    /// A fault band begins (`on`) or ends now.
    fn band(&mut self, kind: FaultKind, label: &str, slot: Option<usize>, on: bool) {
        let t = self.now();
        if on {
            self.record_in_report(|r| r.fault(kind, label.into(), slot, t));
        } else {
            self.record_in_report(|r| r.fault_over(kind, slot, t));
        }
    }

    /// Slots started and not crashed or told to leave.
    fn live(&self) -> Vec<usize> {
        (1..self.slots.len())
            .filter(|s| self.slots[*s].alive)
            .collect()
    }

    /// Records the live set in the trace if it changed.
    fn live_changed(&mut self) {
        let set: BTreeSet<String> = self.live().into_iter().map(name).collect();
        if self.last_live.as_ref() != Some(&set) {
            let t = Duration::from_nanos(self.now());
            self.report.trace.live.push((t, set.clone()));
            self.last_live = Some(set);
        }
    }

    /// The first live node whose handle says it leads.
    fn leader(&self) -> Option<usize> {
        let sh = lock(&self.shared);
        self.live()
            .into_iter()
            .find(|s| sh.handles.get(s).is_some_and(Hedgerow::is_leader))
    }

    /// The live node a step's target names, if any.
    fn pick(&mut self, t: Target) -> Option<usize> {
        let live = self.live();
        match t {
            Target::Leader => self.leader(),
            Target::Random if live.is_empty() => None,
            Target::Random => Some(live[self.rng.below(live.len() as u64) as usize]),
            Target::Slot(s) => live.contains(&s).then_some(s),
        }
    }
}
