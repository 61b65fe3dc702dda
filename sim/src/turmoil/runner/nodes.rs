//! The runner's hands on the cluster's processes: starting a node (a new
//! host or a stopped one booted again), crashing it, telling it to leave,
//! and holding links. Everything here also keeps the live set the trace
//! records up to date.

use std::sync::Arc;

use super::host::{host_main, HostCtx};
use super::record::{lock, name, Cmd, What};
use super::{Runner, Slot};
use crate::report::Life;
use crate::turmoil::clock::SimHostClock;
use crate::SimClock;

impl Runner<'_> {
    /// A clock for a new host: a random offset and drift inside the bound,
    /// unless the options give `slot` a broken clock or a status.
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
    pub(super) fn add_node(&mut self) {
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
        let t = self.now();
        let slot = match free {
            Some(s) => {
                self.sim.bounce(name(s).as_str());
                self.record_in_report(|r| r.life(s, t, Life::Up));
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
                    broken_holders: self.opts.broken_holders,
                    tls: self.opts.tls.get(&slot).cloned(),
                };
                self.slots.push(Slot {
                    clock: ctx.clock.clone(),
                    bytes: ctx.bytes.clone(),
                    alive: false,
                });
                self.sim
                    .host(name(slot).as_str(), move || host_main(ctx.clone()));
                self.record_in_report(|r| r.started(slot, name(slot), t));
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

    /// Holds the link between `a` and `b` until the schedule heals it.
    pub(super) fn hold(&mut self, a: usize, b: usize) {
        let pair = (a.min(b), a.max(b));
        if a != b && self.held.insert(pair) {
            self.sim.hold(name(pair.0).as_str(), name(pair.1).as_str());
        }
    }

    /// Drops the runner's hold on a process that is gone or going,
    /// keeping the messages it sent.
    pub(super) fn forget(&mut self, slot: usize) {
        let mut sh = lock(&self.shared);
        if let Some(h) = sh.handles.remove(&slot) {
            *self.messages.entry(name(slot)).or_default() += h.stats().messages_sent;
        }
        sh.cmds.remove(&slot);
        sh.pending.remove(&slot);
    }

    /// Kills the host's process at once.
    pub(super) fn crash(&mut self, slot: usize) {
        self.rec(slot, What::Crashed);
        let t = self.now();
        self.record_in_report(|r| r.life(slot, t, Life::Crashed));
        self.forget(slot);
        self.sim.crash(name(slot).as_str());
        self.slots[slot].alive = false;
        self.live_changed();
    }

    /// Tells the process to leave; it stops once it has.
    pub(super) fn leave(&mut self, slot: usize) {
        let mut sh = lock(&self.shared);
        sh.command(slot, Cmd::Leave);
        // Later commands go nowhere: this process is on its way out.
        sh.cmds.remove(&slot);
        if let Some(h) = sh.handles.remove(&slot) {
            *self.messages.entry(name(slot)).or_default() += h.stats().messages_sent;
        }
        drop(sh);
        let t = self.now();
        self.record_in_report(|r| r.life(slot, t, Life::Left));
        self.slots[slot].alive = false;
        self.live_changed();
    }
}
