//! What a turmoil run hands back: [`TurmoilReport`] and its summary for
//! people (convergence after each mark is the trace's own measure,
//! [`MembershipTrace::convergence`], as `compare` reports it).

use std::collections::BTreeMap;
use std::time::Duration;

use hedgerow_core::Term;

use crate::check::Violation;
use crate::compare::{Convergence, MembershipTrace};

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
    /// Puts acknowledged / failed, permits granted, KV reads checked.
    pub coord: (u64, u64, u64, u64),
    /// Wall-clock time the run took.
    pub wall: Duration,
    /// The run recorded for its report, when
    /// [`TurmoilOptions::record`](super::TurmoilOptions::record) asked.
    pub record: Option<crate::report::Record>,
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
        if self.coord != (0, 0, 0, 0) {
            let _ = writeln!(
                s,
                "  coordination: {} puts ok, {} failed, {} permits granted, {} reads of every revision checked",
                self.coord.0, self.coord.1, self.coord.2, self.coord.3
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

impl TurmoilReport {
    /// The long form for `--verbose`: after every wave, crash, leave,
    /// restart and heal, how long until every view was the live set (or
    /// that the next change of the live set overtook it).
    pub fn details(&self) -> String {
        let ms = |d: Duration| format!("{:.0}ms", d.as_secs_f64() * 1e3);
        let waves: Vec<String> = self
            .trace
            .convergence()
            .into_iter()
            .filter(|(m, ..)| {
                ["wave", "crash", "leave", "restart", "heal"]
                    .iter()
                    .any(|p| m.starts_with(p))
            })
            .map(|(m, _, c)| match c {
                Convergence::After(d) => format!("{m}: {}", ms(d)),
                Convergence::Overtaken(d) => format!("{m}: overtaken at +{}", ms(d)),
                Convergence::Never => format!("{m}: never"),
            })
            .collect();
        if waves.is_empty() {
            return String::new();
        }
        format!("  views = live set after: {}\n", waves.join(", "))
    }
}
