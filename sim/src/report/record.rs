//! What a run's picture is drawn from: [`Recorder`] collects the change
//! points a runner already has (a node started, crashed, left; a fault
//! began or ended; a view changed size; a step ended) and
//! [`Recorder::finish`] joins them with what the checkers hold (the exact
//! leadership and permit intervals, the violations) into a [`Record`].
//! Nothing here samples: every entry is one change, so a 2 → 150 → 2 run
//! stays a few hundred KiB.

use serde::Serialize;

use crate::check::leadership::Interval;
use crate::check::permits::PermitInterval;
use crate::check::Violation;

/// A node's life as the lanes show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Life {
    /// Started (its first boot).
    Up,
    /// Killed without a goodbye.
    Crashed,
    /// Started again with a new incarnation.
    Restarted,
    /// Left gracefully; its process exited.
    Left,
}

/// The faults a run injects, one band each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Node links cut (isolate, split, a one-pair partition).
    Partition,
    /// The store answers nobody.
    StoreDown,
    /// Extra latency on every store call.
    StoreSpike,
    /// One node cut from the store.
    StoreCut,
    /// A node's clock reports a status other than Synchronized.
    Clock,
    /// A process frozen (SIGSTOP).
    Paused,
}

/// One fault band: kind, label, the node it hits (`None`: everyone),
/// start and end in µs of simulated time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Fault {
    kind: FaultKind,
    label: String,
    slot: Option<usize>,
    start: u64,
    end: Option<u64>,
}

/// A run recorded for its report. Times are µs of simulated true time;
/// the lists are change points, drawn by the page's script.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Record {
    /// The scenario's name.
    pub title: String,
    /// `in-process` or `turmoil`.
    pub runner: String,
    /// The run's seed.
    pub seed: u64,
    /// Whether the run passed (no violation, every phase converged).
    pub passed: bool,
    /// Simulated end of the run, µs.
    pub end: u64,
    /// Node names by slot.
    pub nodes: Vec<String>,
    /// `(slot, t, life)` in time order.
    pub states: Vec<(usize, u64, Life)>,
    /// `(slot, t, members in its view)` whenever that changed.
    pub views: Vec<(usize, u64, u32)>,
    /// `(t, live nodes)` whenever that changed.
    pub live: Vec<(u64, u32)>,
    /// `(slot, term, start, end)`: the leadership checker's intervals.
    pub leads: Vec<(usize, u64, u64, u64)>,
    /// The faults injected.
    pub faults: Vec<Fault>,
    /// `(t, label, kind, took)`: each step's end; kind `converge` for a
    /// `converge` step, with how long convergence took in µs (`None`: it
    /// did not), `step` for any other.
    pub marks: Vec<(u64, String, &'static str, Option<u64>)>,
    /// `(t, invariant, what)`: every violation at its instant.
    pub violations: Vec<(u64, String, String)>,
    /// `(slot, name, token, start, end)`: the permit checker's intervals.
    pub permits: Vec<(usize, String, u64, u64, u64)>,
}

impl Record {
    /// Leadership intervals: how often leadership changed hands.
    pub fn leaderships(&self) -> usize {
        self.leads.len()
    }
}

/// Collects a run's change points as it goes.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    rec: Record,
    up: Vec<bool>,
    view: Vec<Option<u32>>,
}

fn us(ns: u64) -> u64 {
    ns / 1000
}

impl Recorder {
    /// A node got slot `slot`, named `name`, and started at `t` ns.
    pub fn started(&mut self, slot: usize, name: String, t: u64) {
        if self.rec.nodes.len() <= slot {
            self.rec.nodes.resize(slot + 1, String::new());
            self.up.resize(slot + 1, false);
            self.view.resize(slot + 1, None);
        }
        self.rec.nodes[slot] = name;
        self.life(slot, t, Life::Up);
    }

    /// The node in `slot` changed life at `t` ns.
    pub fn life(&mut self, slot: usize, t: u64, life: Life) {
        let Some(up) = self.up.get_mut(slot) else {
            return;
        };
        let now_up = matches!(life, Life::Up | Life::Restarted);
        if life == Life::Restarted && *up {
            // A restart is a crash and a start at once; the lane shows
            // the restart, the live count does not dip.
            self.rec.states.push((slot, us(t), life));
            self.view[slot] = None;
            return;
        }
        if *up == now_up {
            return;
        }
        *up = now_up;
        self.rec.states.push((slot, us(t), life));
        if !now_up {
            self.view[slot] = None;
        }
        let live = self.up.iter().filter(|u| **u).count() as u32;
        match self.rec.live.last_mut() {
            Some(last) if last.0 == us(t) => last.1 = live,
            _ => self.rec.live.push((us(t), live)),
        }
    }

    /// The node in `slot` holds a view of `members` members at `t` ns.
    pub fn view(&mut self, slot: usize, t: u64, members: usize) {
        let Some(last) = self.view.get_mut(slot) else {
            return;
        };
        let m = members as u32;
        if *last != Some(m) {
            *last = Some(m);
            self.rec.views.push((slot, us(t), m));
        }
    }

    /// The next view of `slot` is recorded whatever its size: a new
    /// process holds it.
    pub fn new_process(&mut self, slot: usize) {
        if let Some(v) = self.view.get_mut(slot) {
            *v = None;
        }
    }

    /// A fault began at `t` ns.
    pub fn fault(&mut self, kind: FaultKind, label: String, slot: Option<usize>, t: u64) {
        self.rec.faults.push(Fault {
            kind,
            label,
            slot,
            start: us(t),
            end: None,
        });
    }

    /// Every open fault of `kind` (on `slot`, or on any node when `None`)
    /// ended at `t` ns.
    pub fn fault_over(&mut self, kind: FaultKind, slot: Option<usize>, t: u64) {
        for f in self.rec.faults.iter_mut().rev() {
            if f.kind == kind && f.end.is_none() && (slot.is_none() || f.slot == slot) {
                f.end = Some(us(t));
            }
        }
    }

    /// A step ended at `t` ns; `converge` is how long a `converge` step
    /// took in ns (`Some(None)`: it did not converge).
    pub fn mark(&mut self, t: u64, label: String, converge: Option<Option<u64>>) {
        let mark = match converge {
            Some(took) => (us(t), label, "converge", took.map(us)),
            None => (us(t), label, "step", None),
        };
        self.rec.marks.push(mark);
    }

    /// The record, with what the checkers judged: `end` ns, the leadership
    /// and permit intervals, the violations.
    pub fn finish(
        mut self,
        end: u64,
        leads: &[Interval],
        permits: &[PermitInterval],
        violations: &[Violation],
    ) -> Record {
        let end = us(end);
        for f in &mut self.rec.faults {
            f.end.get_or_insert(end);
        }
        self.rec.end = end;
        self.rec.leads = leads
            .iter()
            .map(|i| (i.owner.slot, i.owner.term.0, us(i.start), us(i.end)))
            .collect();
        self.rec.permits = permits
            .iter()
            .map(|p| (p.slot, p.name.clone(), p.token, us(p.start), us(p.end)))
            .collect();
        self.rec.violations = violations
            .iter()
            .map(|v| (us(v.at_ns), v.invariant.to_string(), v.what.clone()))
            .collect();
        self.rec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_count_follows_lives_and_views_only_their_changes() {
        let mut r = Recorder::default();
        r.started(0, "n0".into(), 0);
        r.started(1, "n1".into(), 1_000);
        r.view(0, 2_000, 2);
        r.view(0, 3_000, 2);
        r.life(1, 4_000, Life::Restarted);
        r.life(0, 5_000, Life::Crashed);
        r.life(0, 6_000, Life::Crashed);
        let rec = r.finish(9_000, &[], &[], &[]);
        assert_eq!(rec.live, vec![(0, 1), (1, 2), (5, 1)]);
        assert_eq!(rec.views, vec![(0, 2, 2)]);
        assert_eq!(rec.states.len(), 4, "{:?}", rec.states);
        assert_eq!(rec.end, 9);
    }

    #[test]
    fn open_faults_end_with_the_run() {
        let mut r = Recorder::default();
        r.fault(FaultKind::StoreDown, "store down".into(), None, 1_000);
        r.fault(FaultKind::Clock, "unknown".into(), Some(2), 2_000);
        r.fault_over(FaultKind::StoreDown, None, 3_000);
        let rec = r.finish(10_000, &[], &[], &[]);
        assert_eq!(rec.faults[0].end, Some(3));
        assert_eq!(rec.faults[1].end, Some(10));
    }
}
