//! Carrying out a scenario's steps on turmoil, one method a step, and the
//! `converge within` check. Steps turmoil cannot carry out honestly fail
//! the run with a reason instead of being skipped.

use std::time::Duration;

use hedgerow_core::{ClockStatus, Rng};

use super::record::{lock, name, Cmd, What};
use super::{Runner, STORE_HOST};
use crate::check::convergence::{self, NodeReport};
use crate::report::{FaultKind, Life};
use crate::scenario::{clock_word, scale_to, Resizable, Step, Target};
use crate::SimClock;

/// Why `net drop` cannot run here.
const NO_NET_DROP: &str = "`net drop` is not supported on turmoil: its TCP drops segments \
                            without retransmission, which leaves gaps no real TCP stream has; \
                            use the in-process harness for lossy networks";
/// Why `net dup` cannot run here.
const NO_NET_DUP: &str = "`net dup` is not supported on turmoil: TCP never duplicates";

/// The turmoil run marks each wave in the trace.
impl Resizable for Runner<'_> {
    type Error = String;
    fn live(&self) -> Vec<usize> {
        Runner::live(self)
    }
    fn add_node(&mut self) {
        Runner::add_node(self);
    }
    fn crash(&mut self, slot: usize) {
        Runner::crash(self, slot);
    }
    fn leave(&mut self, slot: usize) {
        Runner::leave(self, slot);
    }
    fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }
    fn wave_done(&mut self, wave: String, pause: Duration) -> Result<(), String> {
        self.mark(wave);
        self.advance(pause)
    }
}

impl Runner<'_> {
    /// Carries out step `i` of the schedule.
    pub(super) fn step(&mut self, i: usize, step: &Step) -> Result<(), String> {
        match step {
            Step::Nodes(n) => self.start_nodes(*n),
            Step::Run(d) => self.run_for(*d)?,
            Step::ScaleTo { n, waves, over } => scale_to(self, *n, *waves, *over)?,
            Step::Crash(t) => self.crash_target(*t),
            Step::Leave(t) => self.leave_target(*t),
            Step::Restart(t) => self.restart_target(*t),
            Step::Isolate(t) => self.isolate_target(*t),
            Step::Split => self.split_live(),
            Step::Heal => self.heal(),
            Step::StoreDown(d) => self.store_down(*d)?,
            Step::CutStore(t, d) => self.cut_store(*t, *d)?,
            Step::Clock(status, t) => self.set_clock_status(*status, *t),
            // Applied when the simulation was built.
            Step::NetLatency(..) => {}
            Step::NetDrop(_) => return Err(NO_NET_DROP.into()),
            Step::NetDup(_) => return Err(NO_NET_DUP.into()),
            Step::StoreSpike(extra, d) => self.store_spike(*extra, *d)?,
            Step::Put(k) => self.put_from_random(*k),
            Step::Acquire(name, limit, k) => self.acquire_from_random(name, *limit, *k),
            Step::Release(k) => self.release_random(*k),
            Step::Send(k) => self.send_from_random(*k),
            Step::Stream(k, bytes) => self.stream_from_random(*k, *bytes),
            Step::Converge(limit) => {
                self.converge(format!("converge #{}", i + 1), *limit)?;
                let took = self.report.converge.last().and_then(|c| c.1);
                let t = self.now();
                let label = format!("{} (#{})", step.label(), i + 1);
                let took = took.map(|d| d.as_nanos() as u64);
                self.record_in_report(|r| r.mark(t, label, Some(took)));
                self.mark(format!("converged #{}", i + 1));
            }
        }
        Ok(())
    }

    /// `k` puts, each from a random live node, each with a value of its
    /// own (the run's put number).
    fn put_from_random(&mut self, k: usize) {
        for _ in 0..k {
            if let Some(s) = self.pick(Target::Random) {
                self.puts += 1;
                lock(&self.shared).command(s, Cmd::Put(self.puts));
            }
        }
    }

    /// `k` random live nodes wait (up to 10 s each, as in-process) for a
    /// permit of `name`.
    fn acquire_from_random(&mut self, name: &str, limit: u32, k: usize) {
        for _ in 0..k {
            if let Some(s) = self.pick(Target::Random) {
                let cmd = Cmd::Acquire(name.into(), limit, Duration::from_secs(10));
                lock(&self.shared).command(s, cmd);
            }
        }
    }

    /// Gives back `k` random held permits (`usize::MAX`: all) of live
    /// nodes; waiters keep waiting.
    fn release_random(&mut self, k: usize) {
        let live = self.live();
        let mut held: Vec<(usize, u64)> = lock(&self.shared)
            .permits
            .iter()
            .filter(|(s, _)| live.contains(s))
            .flat_map(|(s, ns)| ns.iter().map(move |n| (*s, *n)))
            .collect();
        for _ in 0..k.min(held.len()) {
            let i = self.rng.below(held.len() as u64) as usize;
            let (s, n) = held.swap_remove(i);
            lock(&self.shared).command(s, Cmd::Release(n));
        }
    }

    /// After a run with puts: every live node reads every revision back
    /// (checked against the acknowledged puts when the run finishes).
    pub(super) fn read_back_puts(&mut self) -> Result<(), String> {
        if self.puts == 0 {
            return Ok(());
        }
        for s in self.live() {
            lock(&self.shared).command(s, Cmd::ReadKv);
        }
        self.advance(Duration::from_secs(2))
    }

    fn start_nodes(&mut self, n: usize) {
        for _ in 0..n {
            self.add_node();
        }
        self.mark(format!("nodes {n}"));
    }

    fn run_for(&mut self, d: Duration) -> Result<(), String> {
        self.advance(d)?;
        self.mark(format!("run {d:?}"));
        Ok(())
    }

    fn crash_target(&mut self, t: Target) {
        if let Some(s) = self.pick(t) {
            if t == Target::Leader {
                self.crashes_of_leader.push(self.now());
            }
            self.crash(s);
            self.mark(format!("crash n{s}"));
        }
    }

    fn leave_target(&mut self, t: Target) {
        if let Some(s) = self.pick(t) {
            self.leave(s);
            self.mark(format!("leave n{s}"));
        }
    }

    fn restart_target(&mut self, t: Target) {
        if let Some(s) = self.pick(t) {
            self.rec(s, What::Restarted);
            let now = self.now();
            self.record_in_report(|r| r.life(s, now, Life::Restarted));
            self.forget(s);
            self.sim.bounce(name(s).as_str());
            self.mark(format!("restart n{s}"));
        }
    }

    fn isolate_target(&mut self, t: Target) {
        if let Some(s) = self.pick(t) {
            self.isolated.insert(s);
            for o in 1..self.slots.len() {
                self.hold(s, o);
            }
            self.band(FaultKind::Partition, "isolated", Some(s), true);
            self.mark(format!("isolate n{s}"));
        }
    }

    /// Cuts the first half of the live nodes from the second half.
    fn split_live(&mut self) {
        let live = self.live();
        let (a, b) = live.split_at(live.len() / 2);
        for x in a {
            for y in b {
                self.hold(*x, *y);
            }
        }
        self.split = Some(a.iter().copied().collect());
        let label = format!("split: {} nodes cut from the rest", a.len());
        self.band(FaultKind::Partition, &label, None, true);
        self.mark("split".into());
    }

    fn heal(&mut self) {
        for (a, b) in std::mem::take(&mut self.held) {
            self.sim.release(name(a).as_str(), name(b).as_str());
        }
        self.isolated.clear();
        self.split = None;
        self.band(FaultKind::Partition, "", None, false);
        self.mark("heal".into());
    }

    fn store_down(&mut self, d: Duration) -> Result<(), String> {
        self.sim.crash(STORE_HOST);
        self.band(FaultKind::StoreDown, "store down", None, true);
        self.mark("store down".into());
        self.advance(d)?;
        self.sim.bounce(STORE_HOST);
        self.band(FaultKind::StoreDown, "", None, false);
        self.mark("store up".into());
        Ok(())
    }

    fn cut_store(&mut self, t: Target, d: Duration) -> Result<(), String> {
        if let Some(s) = self.pick(t) {
            self.sim.hold(name(s).as_str(), STORE_HOST);
            self.band(FaultKind::StoreCut, "cut from the store", Some(s), true);
            self.mark(format!("cut-store n{s}"));
            self.advance(d)?;
            self.sim.release(name(s).as_str(), STORE_HOST);
            self.band(FaultKind::StoreCut, "", Some(s), false);
            self.mark(format!("uncut-store n{s}"));
        }
        Ok(())
    }

    fn set_clock_status(&mut self, status: ClockStatus, t: Target) {
        if let Some(s) = self.pick(t) {
            let clock = &self.slots[s].clock;
            clock.set(SimClock {
                status,
                ..clock.params()
            });
            // A clock that may not lead ends the node's leadership
            // interval now (it steps down on its next reading); one
            // that may lead again starts nothing by itself: a new
            // interval starts with a store write, as always.
            if !status.may_lead() {
                self.rec(s, What::ClockUntrusted);
            }
            self.band(FaultKind::Clock, "", Some(s), false);
            if status != ClockStatus::Synchronized {
                let label = format!("clock {}", clock_word(status));
                self.band(FaultKind::Clock, &label, Some(s), true);
            }
            self.mark(format!("clock {} n{s}", clock_word(status)));
        }
    }

    /// Every node's link to the store gets a fixed latency of `extra` for
    /// `d`, then the run's latency range again.
    fn store_spike(&mut self, extra: Duration, d: Duration) -> Result<(), String> {
        let nodes: Vec<String> = (1..self.slots.len()).map(name).collect();
        for n in &nodes {
            self.sim.set_link_latency(n.as_str(), STORE_HOST, extra);
        }
        let label = format!("store +{extra:?}");
        self.band(FaultKind::StoreSpike, &label, None, true);
        self.mark(format!("store spike {extra:?}"));
        self.advance(d)?;
        self.band(FaultKind::StoreSpike, "", None, false);
        let (lo, hi) = self.latency;
        for n in &nodes {
            self.sim.set_link_latency(n.as_str(), STORE_HOST, lo);
            self.sim
                .set_link_max_message_latency(n.as_str(), STORE_HOST, hi);
        }
        self.mark("store spike over".into());
        Ok(())
    }

    /// `k` sends, each from a random live node.
    fn send_from_random(&mut self, k: usize) {
        for _ in 0..k {
            if let Some(s) = self.pick(Target::Random) {
                let n = self.rng.next_u64() >> 1;
                lock(&self.shared).command(s, Cmd::Send(n));
            }
        }
        self.mark(format!("send {k}"));
    }

    /// `k` checked streams of `bytes` each, each from a random live node.
    fn stream_from_random(&mut self, k: usize, bytes: u64) {
        for _ in 0..k {
            if let Some(s) = self.pick(Target::Random) {
                let key = self.rng.next_u64() >> 1;
                lock(&self.shared).command(s, Cmd::Stream(key, bytes));
            }
        }
        self.mark(format!("stream {k} {bytes}"));
    }

    /// What each live node's handle says, for the convergence check.
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

    /// Steps until every live node's view is the live set, or `limit`
    /// passes; records how long it took under `label`.
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
}
