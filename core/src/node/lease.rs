//! Driving the lease room: feeding it store answers, stepping it, and
//! applying what it decides (elected, stepped down, a row that names a
//! leader or none). The decisions themselves are `crate::lease`'s; this
//! room only turns them into the node's state and outputs, and must never
//! decide by itself who leads.

use alloc::vec::Vec;

use crate::id::Term;
use crate::lease::{LeaseNote, StepDownReason};
use crate::store::{LeaseReply, LeaseRow, OpId, StoreError};
use crate::time::Now;
use crate::wire::Message;

use super::role::Role;
use super::{Event, Node, Output};

impl Node {
    /// The store answered a lease operation.
    pub(super) fn on_lease_result(
        &mut self,
        now: &Now,
        op: OpId,
        result: Result<LeaseReply, StoreError>,
    ) {
        let mut notes = core::mem::take(&mut self.notes);
        self.lease.on_result(now, op, result, &mut notes);
        self.apply_notes(now, &mut notes);
        self.notes = notes;
    }

    /// Steps the lease until it issues a store operation or has nothing
    /// more to say (a few rounds: a note can make it want another).
    pub(super) fn step_lease(&mut self, now: &Now) {
        let mut notes = core::mem::take(&mut self.notes);
        for _ in 0..4 {
            let op = self.lease.step(now, &mut notes);
            let had_notes = !notes.is_empty();
            self.apply_notes(now, &mut notes);
            match op {
                Some(op) => {
                    self.stats.store_ops += 1;
                    self.out.push_back(Output::Lease(op));
                    break;
                }
                None if !had_notes => break,
                None => {}
            }
        }
        self.notes = notes;
    }

    /// Nobody hears this leader: it resigns at once so that a reachable
    /// node leads instead, and says why when it steps down.
    pub(super) fn resign_unreachable(&mut self, now: &Now) {
        if let Role::Leader(l) = &mut self.role {
            l.unreachable_resign = true;
        }
        self.lease.resign(now, self.cfg.failure_timeout);
        let mut notes = core::mem::take(&mut self.notes);
        // The release goes out before the step-down is applied.
        if let Some(op) = self.lease.step(now, &mut notes) {
            self.stats.store_ops += 1;
            self.out.push_back(Output::Lease(op));
        }
        self.apply_notes(now, &mut notes);
        self.notes = notes;
    }

    fn apply_notes(&mut self, now: &Now, notes: &mut Vec<LeaseNote>) {
        for note in notes.drain(..) {
            match note {
                LeaseNote::Elected(term) => self.become_leader(now, term),
                LeaseNote::SteppedDown(term, reason) => self.step_down(now, term, reason),
                LeaseNote::Row(row) => self.on_row(now, row),
            }
        }
    }

    /// The lease ended this node's term: it becomes a member that looks
    /// for the next leader (or, after a `leave`, a node that left).
    fn step_down(&mut self, now: &Now, term: Term, reason: StepDownReason) {
        // Without a leader this node looks in the store every failure
        // timeout until it finds one (a successor's first snapshot may be
        // lost).
        let unreachable = self.role.stop_leading(now.mono + self.cfg.failure_timeout);
        let reason = if reason == StepDownReason::Resigned && unreachable {
            StepDownReason::Unreachable
        } else {
            reason
        };
        if reason == StepDownReason::Resigned || reason == StepDownReason::Unreachable {
            self.releasing = Some(term);
        }
        self.event(Event::SteppedDown { term, reason });
        if self.leader.as_ref().is_some_and(|l| l.id == self.me.id) {
            self.lose_leader(now, term);
        }
        let at = now.mono + self.read_spread();
        self.lease.want_read(at);
    }

    fn on_row(&mut self, now: &Now, row: LeaseRow) {
        if self.claim.is_some_and(|t| t <= row.token) {
            self.claim = None;
        }
        let known = self.leader.as_ref().map_or(Term(0), |l| l.term);
        match row.holder {
            Some(h) if h.id == self.me.id && h.nonce == self.me.incarnation => {}
            Some(h) => {
                let newer = self.leader.is_none() || row.token > known;
                if newer && !self.role.is_leader() {
                    self.follow(now, h, row.token);
                }
            }
            None => {
                if self.releasing.take() == Some(row.token) {
                    // Our release landed: tell the members, so that a
                    // successor takes over now rather than after noticing
                    // the silence.
                    let msg = Message::Resigned {
                        term: row.token,
                        expires_ns: row.expires_ns,
                        version: row.version,
                    };
                    self.send_to_members(&msg);
                }
                if self
                    .leader
                    .as_ref()
                    .is_some_and(|l| l.term <= row.token && l.id != self.me.id)
                {
                    self.lose_leader(now, row.token);
                }
            }
        }
    }

    /// A leader-authored message claimed `term`: check it against the
    /// store (one read, spread) before following anyone under it.
    pub(super) fn claim(&mut self, now: &Now, term: Term) {
        if self.claim.is_some_and(|t| t >= term) || self.lease.read_pending() {
            self.claim = Some(self.claim.map_or(term, |t| t.max(term)));
            return;
        }
        self.claim = Some(term);
        let at = now.mono + self.read_spread();
        self.lease.want_read(at);
    }
}
