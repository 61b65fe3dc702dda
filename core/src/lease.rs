//! Lease decisions: when to read the lease row, renew, take over or
//! release, and whether this node leads right now. The TrueTime rule:
//!
//! * renew (holder is me, same nonce, `now.latest < expires`):
//!   `expires = now.latest + lease`, token kept;
//! * take over (anything else) only once `now.earliest > expires`, with
//!   `token + 1`;
//! * release: no holder, `expires = now.latest`, token kept;
//! * I lead exactly while `now.latest < expires` of my last successful
//!   write and my clock may lead.
//!
//! True time is at most my `latest` and at least a taker's `earliest`, so two
//! leaderships never overlap in true time. This room decides; it never
//! touches a store (it emits [`LeaseOp`]s) and never reads a clock.

use alloc::vec::Vec;
use core::time::Duration;

use crate::id::Term;
use crate::seeded::SeededBug;
use crate::store::{
    CasOutcome, Holder, LeaseOp, LeaseReply, LeaseRow, LeaseWrite, OpId, StoreError,
};
use crate::time::{duration_nanos, ClockReading, ClockSource, MonoTime, Now, TimeInterval};

/// Why a node stopped leading.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StepDownReason {
    /// The lease ran out before a renew succeeded (store slow or down, or
    /// the process was paused).
    Expired,
    /// The clock stopped being trustworthy (Unknown, Disrupted, malformed).
    ClockUntrusted,
    /// A compare-and-set lost: someone else wrote the row.
    LostRace,
    /// The node released the lease on purpose.
    Resigned,
    /// The leader heard from none of its members for too long.
    Unreachable,
}

/// Why this node does not lead at the moment, for operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotLeadingReason {
    /// Configured with `candidate = false`.
    NotCandidate,
    /// The clock's status is not Synchronized or FreeRunning.
    ClockUntrusted,
    /// The clock's bound is operator-assumed and the configuration does not
    /// allow leading on it.
    AssumedClockNotAllowed,
    /// Recently resigned; waiting before competing again.
    Resigned,
    /// Someone else holds a lease that has not expired in this node's clock.
    HeldElsewhere,
    /// The lease row is not known yet, or a store operation is pending.
    Waiting,
}

impl core::fmt::Display for StepDownReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            StepDownReason::Expired => "the lease ran out before a renewal was stored",
            StepDownReason::ClockUntrusted => "the clock stopped being trustworthy",
            StepDownReason::LostRace => "another node wrote the lease row first",
            StepDownReason::Resigned => "this node released the lease",
            StepDownReason::Unreachable => "no member answered for too long",
        })
    }
}

impl NotLeadingReason {
    /// Whether the reason lasts until the configuration or the clock
    /// changes: waiting will not make this node lead.
    pub fn is_lasting(self) -> bool {
        matches!(
            self,
            NotLeadingReason::NotCandidate
                | NotLeadingReason::ClockUntrusted
                | NotLeadingReason::AssumedClockNotAllowed
        )
    }
}

impl core::fmt::Display for NotLeadingReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            NotLeadingReason::NotCandidate => "it is configured with `candidate = false`",
            NotLeadingReason::ClockUntrusted => {
                "its clock gives no trustworthy bound (status Unknown or Disrupted: no ClockBound \
                 daemon, or it lost sync); give it a clock that may lead"
            }
            NotLeadingReason::AssumedClockNotAllowed => {
                "its clock's bound is assumed by the operator and `lead_on_assumed_clock` is off"
            }
            NotLeadingReason::Resigned => "it resigned and sits out one lease duration",
            NotLeadingReason::HeldElsewhere => "another node holds a lease that has not expired",
            NotLeadingReason::Waiting => "it is waiting for the lease store",
        })
    }
}

/// What the lease room tells the node after a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LeaseNote {
    /// This node now leads under `term` (a new leadership, or the same term
    /// re-acquired after a gap).
    Elected(Term),
    /// This node stopped leading.
    SteppedDown(Term, StepDownReason),
    /// A row was learned from the store.
    Row(LeaseRow),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Read,
    Acquire,
    Renew,
    Release,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Held {
    term: Term,
    expires_ns: u64,
    version: u64,
    renew_at: MonoTime,
}

#[derive(Clone, Debug)]
pub(crate) struct Lease {
    me: Holder,
    lease_ns: u64,
    renew_every: Duration,
    retry: Duration,
    lead_on_assumed: bool,
    candidate: bool,
    /// Last row known from the store, or from the leader's acks.
    row: Option<LeaseRow>,
    /// The store said there is no row yet.
    row_absent: bool,
    held: Option<Held>,
    in_flight: Option<(OpId, Purpose)>,
    next_op: u64,
    need_read: bool,
    read_at: MonoTime,
    /// A write's outcome is unknown: read before writing again.
    unsure: bool,
    release_wanted: bool,
    cooldown_until: MonoTime,
    stagger_ns: u64,
    rng: crate::Rng,
    /// The highest token seen confirmed; takeovers go above it.
    floor: Term,
    /// The deliberate bug this node carries, for the model checker.
    #[cfg(feature = "model-check")]
    bug: Option<SeededBug>,
}

impl Lease {
    pub(crate) fn new(me: Holder, cfg: &crate::Config, seed: u64) -> Self {
        Lease {
            rng: crate::Rng::new(seed),
            floor: Term(0),
            me,
            lease_ns: duration_nanos(cfg.lease_duration),
            renew_every: cfg.renew_interval(),
            retry: cfg.store_retry_interval,
            lead_on_assumed: cfg.lead_on_assumed_clock,
            candidate: cfg.candidate,
            row: None,
            row_absent: false,
            held: None,
            in_flight: None,
            next_op: 0,
            need_read: true,
            read_at: MonoTime::ZERO,
            unsure: false,
            release_wanted: false,
            cooldown_until: MonoTime::ZERO,
            stagger_ns: 0,
            #[cfg(feature = "model-check")]
            bug: None,
        }
    }

    /// Makes this lease carry `bug` (model checking only).
    #[cfg(feature = "model-check")]
    pub(crate) fn seed_bug(&mut self, bug: Option<SeededBug>) {
        self.bug = bug;
    }

    /// The deliberate bug this node carries, for the rooms it hands it to.
    #[cfg(feature = "model-check")]
    pub(crate) fn bug(&self) -> Option<SeededBug> {
        self.bug
    }

    /// Whether this lease carries `bug`; always `false` in a normal build.
    #[cfg(feature = "model-check")]
    pub(crate) fn seeded(&self, bug: SeededBug) -> bool {
        self.bug == Some(bug)
    }

    /// Whether this lease carries `bug`; always `false` in a normal build.
    #[cfg(not(feature = "model-check"))]
    #[inline(always)]
    pub(crate) fn seeded(&self, _bug: SeededBug) -> bool {
        false
    }

    /// The end of a reading a taker compares with the holder's expiry:
    /// `earliest`, unless the model checker seeded the opposite.
    fn taker_reading(&self, c: &TimeInterval) -> u64 {
        if self.seeded(SeededBug::TakeoverOnLatest) {
            c.latest
        } else {
            c.earliest
        }
    }

    /// Whether a reading may be used to hold the lease.
    pub(crate) fn clock_may_lead(&self, c: &ClockReading) -> bool {
        c.interval.is_valid()
            && c.status.may_lead()
            && (matches!(c.source, ClockSource::ClockBound) || self.lead_on_assumed)
    }

    /// Whether this node leads at `now`: answered from the reading, never
    /// from a cached flag.
    pub(crate) fn is_leader(&self, now: &Now) -> bool {
        self.held.as_ref().is_some_and(|h| {
            self.clock_may_lead(&now.clock) && now.clock.interval.latest < h.expires_ns
        })
    }

    /// The term and expiry of this node's current claim, if any (it may
    /// already have lapsed; [`Lease::is_leader`] says).
    pub(crate) fn claim(&self) -> Option<(Term, u64)> {
        self.held.as_ref().map(|h| (h.term, h.expires_ns))
    }

    /// The row version after this node's last write while it holds.
    pub(crate) fn held_version(&self) -> Option<u64> {
        self.held.as_ref().map(|h| h.version)
    }

    pub(crate) fn row(&self) -> Option<&LeaseRow> {
        self.row.as_ref()
    }

    pub(crate) fn set_candidate(&mut self, candidate: bool) {
        self.candidate = candidate;
    }

    pub(crate) fn is_candidate(&self) -> bool {
        self.candidate
    }

    /// Spreads takeover attempts: this node waits `stagger` past expiry.
    pub(crate) fn set_stagger(&mut self, stagger: Duration) {
        self.stagger_ns = duration_nanos(stagger);
    }

    /// Asks for a store read no earlier than `at` (e.g. to confirm a claim,
    /// or to find the leader after losing it).
    pub(crate) fn want_read(&mut self, at: MonoTime) {
        if !self.need_read {
            self.need_read = true;
            self.read_at = at;
        } else {
            self.read_at = self.read_at.min(at);
        }
    }

    /// Moves the pending read to `at` (the first read of a process is
    /// jittered so a fleet starting together does not hit the store at once).
    pub(crate) fn delay_read(&mut self, at: MonoTime) {
        if self.need_read {
            self.read_at = at;
        }
    }

    pub(crate) fn read_pending(&self) -> bool {
        self.need_read || matches!(self.in_flight, Some((_, Purpose::Read)))
    }

    /// Gives the lease up at the next step and stays out of the race for
    /// `cooldown`.
    ///
    /// An acquire still on its way, or one whose answer was lost, may win
    /// the row: that row is released too, without leading on it.
    pub(crate) fn resign(&mut self, now: &Now, cooldown: Duration) {
        let acquiring = matches!(self.in_flight, Some((_, Purpose::Acquire)))
            || (self.unsure && self.held.is_none());
        self.release_wanted = self.held.is_some() || acquiring;
        self.cooldown_until = now.mono + cooldown;
    }

    /// Learns a row from a leader's heartbeat ack; kept only if newer than
    /// what is known (row versions only grow).
    pub(crate) fn learn_from_leader(&mut self, row: LeaseRow) {
        if self.held.is_some() {
            return;
        }
        if self.row.as_ref().is_none_or(|r| row.version > r.version) {
            self.row = Some(row);
            self.row_absent = false;
        }
    }

    /// Why this node does not lead at `now`, if it does not.
    pub(crate) fn not_leading_reason(&self, now: &Now) -> Option<NotLeadingReason> {
        if self.is_leader(now) {
            return None;
        }
        let c = &now.clock;
        Some(if !self.candidate {
            NotLeadingReason::NotCandidate
        } else if !c.interval.is_valid() || !c.status.may_lead() {
            NotLeadingReason::ClockUntrusted
        } else if !self.clock_may_lead(c) {
            NotLeadingReason::AssumedClockNotAllowed
        } else if now.mono < self.cooldown_until {
            NotLeadingReason::Resigned
        } else if self
            .row
            .as_ref()
            .is_some_and(|r| r.holder.is_some() && c.interval.earliest <= r.expires_ns)
        {
            NotLeadingReason::HeldElsewhere
        } else {
            NotLeadingReason::Waiting
        })
    }

    /// When this room next wants to be called.
    pub(crate) fn next_wake(&self, now: &Now) -> MonoTime {
        let mut wake = MonoTime::MAX;
        if self.in_flight.is_some() {
            // Only the step-down deadline matters while we wait.
            if let Some(h) = &self.held {
                wake = wake.min(self.stepdown_at(now, h));
            }
            return wake;
        }
        if self.need_read || self.unsure {
            wake = wake.min(self.read_at);
        }
        if let Some(h) = &self.held {
            if !self.unsure {
                wake = wake.min(h.renew_at);
            }
            return wake.min(self.stepdown_at(now, h));
        }
        if self.candidate && !self.need_read && !self.unsure {
            wake = wake.min(self.cooldown_until.max(self.takeover_at(now)));
        }
        wake
    }

    /// The retry delay after a failed store operation: the configured
    /// interval, jittered between half and one and a half of it, so nodes
    /// refused together (connection limit, outage) do not retry together.
    fn backoff(&mut self) -> Duration {
        let base = duration_nanos(self.retry);
        Duration::from_nanos(base / 2 + self.rng.below(base.max(1)))
    }

    fn stepdown_at(&self, now: &Now, h: &Held) -> MonoTime {
        let left = h.expires_ns.saturating_sub(now.clock.interval.latest);
        now.mono + Duration::from_nanos(left)
    }

    /// Monotonic instant at which a takeover may be attempted.
    fn takeover_at(&self, now: &Now) -> MonoTime {
        if !self.clock_may_lead(&now.clock) {
            // Nothing to do until a reading that may lead comes in.
            return MonoTime::MAX;
        }
        match &self.row {
            None if self.row_absent => now.mono,
            None => MonoTime::MAX,
            Some(r) if self.is_mine(r) && now.clock.interval.latest < r.expires_ns => now.mono,
            Some(r) if !self.is_mine(r) && self.seeded(SeededBug::NoTakeoverOfExpired) => {
                MonoTime::MAX
            }
            Some(r) => {
                let target = r
                    .expires_ns
                    .saturating_add(self.stagger_ns)
                    .saturating_add(1);
                let past = self.taker_reading(&now.clock.interval);
                now.mono + Duration::from_nanos(target.saturating_sub(past))
            }
        }
    }

    fn is_mine(&self, r: &LeaseRow) -> bool {
        r.holder.as_ref().is_some_and(|h| {
            h.id == self.me.id
                && (h.nonce == self.me.nonce || self.seeded(SeededBug::RenewIgnoresNonce))
        })
    }

    fn issue(&mut self, purpose: Purpose, op: impl FnOnce(OpId) -> LeaseOp) -> LeaseOp {
        self.next_op += 1;
        let id = OpId(self.next_op);
        self.in_flight = Some((id, purpose));
        op(id)
    }

    fn write(&self, now: &Now, token: Term) -> LeaseWrite {
        LeaseWrite {
            holder: Some(self.me.clone()),
            token,
            expires_ns: now.clock.interval.latest.saturating_add(self.lease_ns),
        }
    }

    /// Checks leadership against the reading and decides the next store
    /// operation, if any.
    pub(crate) fn step(&mut self, now: &Now, notes: &mut Vec<LeaseNote>) -> Option<LeaseOp> {
        self.check_held(now, notes);
        if self.in_flight.is_some() {
            return None;
        }
        if let Some(h) = self.held.clone() {
            return self.step_held(now, h, notes);
        }
        if self.release_wanted {
            if let Some(op) = self.release_unheld(now) {
                return Some(op);
            }
        }
        self.step_unheld(now)
    }

    /// A resign that came while an acquire was out: releases the row that
    /// acquire won, if it did, without ever leading on it. When the
    /// acquire's answer was lost, the read `step_unheld` issues decides.
    fn release_unheld(&mut self, now: &Now) -> Option<LeaseOp> {
        if self.unsure {
            return None;
        }
        self.release_wanted = false;
        let latest = now.clock.interval.latest;
        let row = self
            .row
            .as_ref()
            .filter(|r| self.is_mine(r) && latest < r.expires_ns)?;
        let (version, token) = (row.version, row.token);
        Some(self.release(now, version, token))
    }

    /// The release write: no holder, the token kept (the next taker goes
    /// above it), expiring at the reading's `latest`, on the row `version`.
    fn release(&mut self, now: &Now, version: u64, token: Term) -> LeaseOp {
        let write = LeaseWrite {
            holder: None,
            token,
            expires_ns: now.clock.interval.latest,
        };
        self.issue(Purpose::Release, |op| LeaseOp::CompareAndSet {
            op,
            expected_version: Some(version),
            write,
        })
    }

    /// Steps down at once when the reading may not lead or the lease has
    /// expired by it.
    fn check_held(&mut self, now: &Now, notes: &mut Vec<LeaseNote>) {
        if let Some(h) = &self.held {
            let reason = if !self.clock_may_lead(&now.clock) {
                Some(StepDownReason::ClockUntrusted)
            } else if now.clock.interval.latest >= h.expires_ns {
                Some(StepDownReason::Expired)
            } else {
                None
            };
            if let Some(reason) = reason {
                notes.push(LeaseNote::SteppedDown(h.term, reason));
                self.held = None;
            }
        }
    }

    /// While holding: release when asked, read when unsure, renew when due.
    fn step_held(&mut self, now: &Now, h: Held, notes: &mut Vec<LeaseNote>) -> Option<LeaseOp> {
        if self.release_wanted {
            self.release_wanted = false;
            self.held = None;
            notes.push(LeaseNote::SteppedDown(h.term, StepDownReason::Resigned));
            return Some(self.release(now, h.version, h.term));
        }
        if self.unsure || self.need_read {
            if now.mono >= self.read_at {
                return Some(self.issue(Purpose::Read, |op| LeaseOp::Read { op }));
            }
            if self.unsure {
                return None;
            }
        }
        if now.mono >= h.renew_at {
            // Never shorten the lease: a reading's `latest` can go back
            // (the bound shrinks, the clock steps), and if this write
            // lands but its answer is lost we keep leading until the
            // old expiry, so the row must not end before it.
            let mut write = self.write(now, h.term);
            write.expires_ns = write.expires_ns.max(h.expires_ns);
            return Some(self.issue(Purpose::Renew, |op| LeaseOp::CompareAndSet {
                op,
                expected_version: Some(h.version),
                write,
            }));
        }
        None
    }

    /// While not holding: read when due, else take over when allowed.
    fn step_unheld(&mut self, now: &Now) -> Option<LeaseOp> {
        if (self.need_read || self.unsure) && now.mono >= self.read_at {
            return Some(self.issue(Purpose::Read, |op| LeaseOp::Read { op }));
        }
        if !self.candidate
            || self.need_read
            || self.unsure
            || now.mono < self.cooldown_until
            || !self.clock_may_lead(&now.clock)
        {
            return None;
        }
        let c = now.clock.interval;
        // What the decision needs from the row, without cloning it (it
        // holds strings) on every step.
        let row = self
            .row
            .as_ref()
            .map(|r| (self.is_mine(r), r.expires_ns, r.token, r.version));
        match row {
            None if self.row_absent => {
                // A missing row after tokens were seen means the table was
                // recreated: carry on above the highest token seen.
                let write = self.write(now, Term(self.floor.0.saturating_add(1)));
                let expected_version = self
                    .seeded(SeededBug::FirstInsertOnVersionZero)
                    .then_some(0);
                Some(self.issue(Purpose::Acquire, |op| LeaseOp::CompareAndSet {
                    op,
                    expected_version,
                    write,
                }))
            }
            None => {
                self.want_read(now.mono);
                None
            }
            Some((mine, expires_ns, token, version)) if mine && c.latest < expires_ns => {
                // Our own write, applied after we stopped counting on it:
                // nobody else can have held since. Renew it under its token.
                let write = self.write(now, token);
                Some(self.issue(Purpose::Acquire, |op| LeaseOp::CompareAndSet {
                    op,
                    expected_version: Some(version),
                    write,
                }))
            }
            Some((mine, _, _, _)) if !mine && self.seeded(SeededBug::NoTakeoverOfExpired) => None,
            Some((_, expires_ns, token, version))
                if self.taker_reading(&c) > expires_ns.saturating_add(self.stagger_ns) =>
            {
                let write = self.write(now, Term(token.max(self.floor).0.saturating_add(1)));
                Some(self.issue(Purpose::Acquire, |op| LeaseOp::CompareAndSet {
                    op,
                    expected_version: Some(version),
                    write,
                }))
            }
            Some(_) => None,
        }
    }

    /// Takes the store's answer to an operation. A result for an operation
    /// that is not the one in flight is ignored.
    pub(crate) fn on_result(
        &mut self,
        now: &Now,
        op: OpId,
        result: Result<LeaseReply, StoreError>,
        notes: &mut Vec<LeaseNote>,
    ) {
        let Some((id, purpose)) = self.in_flight else {
            return;
        };
        if id != op {
            return;
        }
        self.in_flight = None;
        match result {
            Ok(LeaseReply::Read(row)) => self.on_read(row, notes),
            Ok(LeaseReply::Cas(CasOutcome::Applied(row))) => {
                self.on_applied(now, purpose, row, notes)
            }
            Ok(LeaseReply::Cas(CasOutcome::Conflict(current))) => {
                self.on_conflict(now, current, notes)
            }
            Err(_) => self.on_store_error(now, purpose),
        }
    }

    /// A read answered: a held lease is kept only if the row is still ours.
    fn on_read(&mut self, row: Option<LeaseRow>, notes: &mut Vec<LeaseNote>) {
        self.need_read = false;
        self.unsure = false;
        self.row_absent = row.is_none();
        let mine = row.as_ref().filter(|r| self.is_mine(r)).map(|r| r.version);
        if let Some(h) = &mut self.held {
            match mine {
                Some(version) => h.version = version,
                None => {
                    notes.push(LeaseNote::SteppedDown(h.term, StepDownReason::LostRace));
                    self.held = None;
                }
            }
        }
        self.learn_row(row, notes);
    }

    /// A write of ours landed as `row`.
    fn on_applied(
        &mut self,
        now: &Now,
        purpose: Purpose,
        row: LeaseRow,
        notes: &mut Vec<LeaseNote>,
    ) {
        self.unsure = false;
        self.row_absent = false;
        let valid = self.clock_may_lead(&now.clock) && now.clock.interval.latest < row.expires_ns;
        let mine = self.is_mine(&row);
        match purpose {
            // Resigned while the acquire was out: the next step releases
            // the row (`release_unheld`) instead of leading on it.
            Purpose::Acquire if mine && self.release_wanted => {}
            Purpose::Acquire | Purpose::Renew if mine && valid => {
                // A store that answers a renew with another token
                // broke its contract; still, the application hears
                // of every change of term: the old one ends first.
                if let Some(h) = self.held.take_if(|h| h.term != row.token) {
                    notes.push(LeaseNote::SteppedDown(h.term, StepDownReason::LostRace));
                }
                let held = Held {
                    term: row.token,
                    expires_ns: row.expires_ns,
                    version: row.version,
                    renew_at: now.mono + self.renew_every,
                };
                if self.held.is_none() {
                    notes.push(LeaseNote::Elected(row.token));
                }
                self.held = Some(held);
            }
            Purpose::Renew => {
                // Renewed, but the reading no longer allows leading
                // (the clock went bad while the write was out).
                if let Some(h) = self.held.take() {
                    notes.push(LeaseNote::SteppedDown(
                        h.term,
                        StepDownReason::ClockUntrusted,
                    ));
                }
            }
            _ => {}
        }
        self.learn_row(Some(row), notes);
    }

    /// A write of ours lost to `current` (`None`: the row is gone).
    fn on_conflict(&mut self, now: &Now, current: Option<LeaseRow>, notes: &mut Vec<LeaseNote>) {
        if let Some(h) = self.held.take() {
            notes.push(LeaseNote::SteppedDown(h.term, StepDownReason::LostRace));
        }
        if current.is_none() {
            self.want_read(now.mono);
        }
        self.row_absent = false;
        if let Some(row) = current {
            self.learn_row(Some(row), notes);
        }
    }

    /// The store did not answer; retry after a backoff.
    fn on_store_error(&mut self, now: &Now, purpose: Purpose) {
        match purpose {
            Purpose::Renew => {
                // Keep leading until expiry; the write may or may not
                // have landed, so read before the next write.
                self.unsure = true;
                self.read_at = now.mono + self.backoff();
            }
            Purpose::Acquire => {
                self.unsure = true;
                self.read_at = now.mono + self.backoff();
            }
            Purpose::Read => {
                self.need_read = true;
                self.read_at = now.mono + self.backoff();
            }
            Purpose::Release => {}
        }
    }

    /// Raises the lowest token this node will ever take over with: tokens
    /// it has seen confirmed (rows, views) are never reused, even if the
    /// store loses its row (a recreated table).
    pub(crate) fn raise_floor(&mut self, seen: Term) {
        self.floor = self.floor.max(seen);
    }

    fn learn_row(&mut self, row: Option<LeaseRow>, notes: &mut Vec<LeaseNote>) {
        if let Some(r) = &row {
            self.floor = self.floor.max(r.token);
        }
        if let Some(r) = &row {
            notes.push(LeaseNote::Row(r.clone()));
        }
        match (&self.row, row) {
            (Some(old), Some(new)) if new.version < old.version => {}
            (_, new) => self.row = new,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClockStatus, Config, NodeId};

    const MS: u64 = 1_000_000;

    fn holder(id: &str, nonce: u64) -> Holder {
        Holder {
            id: NodeId::new(id).unwrap(),
            nonce,
            addr: "x:1".into(),
        }
    }

    fn now(mono_ms: u64, t_ms: u64, bound_ms: u64) -> Now {
        Now {
            mono: MonoTime::from_nanos(mono_ms * MS),
            clock: ClockReading::synchronized(t_ms * MS, bound_ms * MS),
        }
    }

    fn lease(id: &str, nonce: u64) -> Lease {
        Lease::new(holder(id, nonce), &Config::lan("c"), nonce)
    }

    fn answer(
        l: &mut Lease,
        n: &Now,
        op: &LeaseOp,
        store: &mut Option<LeaseRow>,
    ) -> Vec<LeaseNote> {
        let reply = crate::store::execute_on_row(store, op);
        let mut notes = Vec::new();
        l.on_result(n, op.id(), Ok(reply), &mut notes);
        notes
    }

    fn run(l: &mut Lease, n: &Now, store: &mut Option<LeaseRow>) -> Vec<LeaseNote> {
        let mut notes = Vec::new();
        while let Some(op) = l.step(n, &mut notes) {
            notes.extend(answer(l, n, &op, store));
        }
        notes
    }

    /// Node `a` alone, elected at t = 1000 s (bound 5 ms), and the store row it wrote.
    fn a_leads() -> (Lease, Option<LeaseRow>) {
        let mut store = None;
        let mut a = lease("a", 1);
        run(&mut a, &now(0, 1_000_000, 5), &mut store);
        (a, store)
    }

    #[test]
    fn first_node_inserts_with_token_one() {
        let mut store = None;
        let mut a = lease("a", 1);
        let n = now(0, 1_000_000, 5);
        let notes = run(&mut a, &n, &mut store);
        assert!(notes.contains(&LeaseNote::Elected(Term(1))));
        assert!(a.is_leader(&n));
        assert_eq!(store.as_ref().map(|r| r.token), Some(Term(1)));
    }

    #[test]
    fn takeover_waits_for_earliest_past_expiry_and_bumps_token() {
        let (_a, mut store) = a_leads();
        let expires = store.as_ref().unwrap().expires_ns;
        let mut b = lease("b", 2);
        // b's earliest is still before expiry: no write.
        let t_ms = expires / MS + 4; // earliest = t - 5 ms < expires
        let n = now(t_ms - 1_000_000, t_ms, 5);
        let notes = run(&mut b, &n, &mut store);
        assert!(!notes.iter().any(|x| matches!(x, LeaseNote::Elected(_))));
        assert!(!b.is_leader(&n));
        let t_ms = expires / MS + 6;
        let n = now(t_ms - 1_000_000, t_ms, 5);
        let notes = run(&mut b, &n, &mut store);
        assert!(notes.contains(&LeaseNote::Elected(Term(2))));
    }

    #[test]
    fn leader_answers_no_once_latest_reaches_expiry() {
        let (a, store) = a_leads();
        let expires = store.as_ref().unwrap().expires_ns;
        let late = now(20_000, expires / MS - 5, 5);
        assert!(
            !a.is_leader(&late),
            "paused past its lease: first answer is no"
        );
    }

    #[test]
    fn unknown_clock_steps_down_at_once() {
        let (mut a, mut store) = a_leads();
        let mut n = now(10, 1_000_010, 5);
        n.clock.status = ClockStatus::Unknown;
        assert!(!a.is_leader(&n));
        let notes = run(&mut a, &n, &mut store);
        assert!(notes.contains(&LeaseNote::SteppedDown(
            Term(1),
            StepDownReason::ClockUntrusted
        )));
    }

    #[test]
    fn restarted_holder_does_not_renew_old_lease() {
        let (_a, mut store) = a_leads();
        let expires = store.as_ref().unwrap().expires_ns;
        let mut a2 = lease("a", 99);
        let n = now(0, 1_000_100, 5);
        let notes = run(&mut a2, &n, &mut store);
        assert!(notes.iter().all(|x| !matches!(x, LeaseNote::Elected(_))));
        let t = expires / MS + 6;
        let notes = run(&mut a2, &now(t - 1_000_000, t, 5), &mut store);
        assert!(notes.contains(&LeaseNote::Elected(Term(2))));
    }

    #[test]
    fn assumed_clock_leads_only_when_allowed() {
        let mut store = None;
        let mut a = lease("a", 1);
        let mut n = now(0, 1_000_000, 5);
        n.clock.source = ClockSource::Assumed { bound_ns: 5 * MS };
        run(&mut a, &n, &mut store);
        assert!(!a.is_leader(&n));
        assert_eq!(
            a.not_leading_reason(&n),
            Some(NotLeadingReason::AssumedClockNotAllowed)
        );
        let mut cfg = Config::lan("c");
        cfg.lead_on_assumed_clock = true;
        let mut b = Lease::new(holder("b", 2), &cfg, 2);
        run(&mut b, &n, &mut store);
        assert!(b.is_leader(&n));
    }

    #[test]
    fn store_error_keeps_leading_until_expiry() {
        let (mut a, _store) = a_leads();
        let n = now(4_000, 1_004_000, 5);
        let mut notes = Vec::new();
        let op = a.step(&n, &mut notes).expect("renew due");
        a.on_result(&n, op.id(), Err(StoreError::Timeout), &mut notes);
        assert!(a.is_leader(&n));
        let expires = a.claim().unwrap().1;
        let late = now(11_000, expires / MS, 5);
        a.step(&late, &mut notes);
        assert!(notes.contains(&LeaseNote::SteppedDown(Term(1), StepDownReason::Expired)));
    }

    #[test]
    fn renew_never_shortens_the_lease_when_latest_goes_back() {
        // Found by the node fuzz target: the bound shrank, so the renew was
        // written with an earlier expiry than the one the leader held; the
        // write landed, its answer was lost, the leader kept its old expiry
        // and another node took over from the row's earlier one.
        let mut store = None;
        let mut a = lease("a", 1);
        run(&mut a, &now(0, 1_000_000, 5_000), &mut store);
        let held = a.claim().unwrap().1;
        let n = now(4_000, 1_004_000, 0);
        let mut notes = Vec::new();
        let op = a.step(&n, &mut notes).expect("renew due");
        let LeaseOp::CompareAndSet { write, .. } = &op else {
            panic!("expected a renew, got {op:?}");
        };
        assert!(write.expires_ns >= held, "renew shortened the lease");
        // The write lands but the driver reports a timeout.
        let version = store.as_ref().unwrap().version + 1;
        store = Some(write.clone().into_row(version));
        a.on_result(&n, op.id(), Err(StoreError::Timeout), &mut notes);
        assert!(a.is_leader(&n));
        let row = store.as_ref().unwrap();
        assert!(
            row.expires_ns >= a.claim().unwrap().1,
            "the store's row ends before the lease this node still claims"
        );
    }

    #[test]
    fn renews_under_a_wandering_clock_never_move_the_expiry_back() {
        // Readings whose `latest` steps back and forth (bound growing and
        // shrinking, small steps of the clock) across many renewals: no
        // renew write, landed or not, ends before the lease held so far.
        let mut store = None;
        let mut a = lease("a", 1);
        run(&mut a, &now(0, 1_000_000, 5), &mut store);
        let mut rng = crate::rng::Rng::new(3);
        let mut held = a.claim().unwrap().1;
        let mut renews = 0;
        let mut shorter = 0;
        for step in 1..600u64 {
            let mono = step * 500;
            // Each reading at one of two extremes: on time or 2.5 s behind,
            // with a bound of 0 or 3 s. From a high one to a low one,
            // `latest` goes back by more than the 3.5 s between renewals,
            // and never forward by the 10 s lease.
            let t = 1_000_000 + mono - 2_500 * rng.below(2);
            let n = now(mono, t, 3_000 * rng.below(2));
            if n.clock.interval.latest + 10_000 * MS < held {
                shorter += 1;
            }
            let mut notes = Vec::new();
            while let Some(op) = a.step(&n, &mut notes) {
                if let LeaseOp::CompareAndSet { write, .. } = &op {
                    assert!(
                        write.expires_ns >= held,
                        "step {step}: renew to {} before the held {held}",
                        write.expires_ns
                    );
                    renews += 1;
                }
                notes.extend(answer(&mut a, &n, &op, &mut store));
            }
            assert!(
                !notes
                    .iter()
                    .any(|x| matches!(x, LeaseNote::SteppedDown(..))),
                "step {step}: {notes:?}"
            );
            let now_held = a.claim().unwrap().1;
            assert!(now_held >= held, "step {step}: the held expiry went back");
            held = now_held;
        }
        assert!(renews > 40, "only {renews} renewals");
        assert!(shorter > 0, "no reading would have shortened the lease");
    }

    #[test]
    fn a_renew_answered_under_another_token_ends_the_old_term_first() {
        // Found by the node fuzz target (a store that contradicts itself):
        // the term changed under the application without an event.
        let (mut a, _store) = a_leads();
        let n = now(4_000, 1_004_000, 5);
        let mut notes = Vec::new();
        let op = a.step(&n, &mut notes).expect("renew due");
        let LeaseOp::CompareAndSet { write, .. } = &op else {
            panic!("expected a renew, got {op:?}");
        };
        let mut row = write.clone().into_row(2);
        row.token = Term(7);
        a.on_result(
            &n,
            op.id(),
            Ok(LeaseReply::Cas(CasOutcome::Applied(row))),
            &mut notes,
        );
        assert_eq!(
            notes[..2],
            [
                LeaseNote::SteppedDown(Term(1), StepDownReason::LostRace),
                LeaseNote::Elected(Term(7)),
            ]
        );
        assert_eq!(a.claim().map(|c| c.0), Some(Term(7)));
    }

    #[test]
    fn release_bumps_next_token() {
        let (mut a, mut store) = a_leads();
        a.resign(&now(1, 1_000_001, 5), Duration::from_secs(10));
        run(&mut a, &now(1, 1_000_001, 5), &mut store);
        assert!(store.as_ref().unwrap().holder.is_none());
        let mut b = lease("b", 2);
        let notes = run(&mut b, &now(100, 1_000_100, 5), &mut store);
        assert!(notes.contains(&LeaseNote::Elected(Term(2))));
    }

    /// Trap 1: a renew the store applies late and a takeover based on the
    /// older row are both conditioned on the same version; in either
    /// order exactly one of them wins.
    #[test]
    fn late_renew_and_takeover_cannot_both_win() {
        for renew_first in [true, false] {
            let mut store = None;
            let mut a = lease("a", 1);
            run(&mut a, &now(0, 1_000_000, 5), &mut store);
            let expires = store.as_ref().unwrap().expires_ns;
            // a sends its renew; the store sits on it.
            let n = now(4_000, 1_004_000, 5);
            let mut notes = Vec::new();
            let renew = a.step(&n, &mut notes).expect("renew due");
            // b sees the old row expire and sends its takeover.
            let mut b = lease("b", 2);
            b.learn_from_leader(store.clone().unwrap());
            b.need_read = false;
            let t = expires / MS + 6;
            let nb = now(t - 1_000_000, t, 5);
            let takeover = b.step(&nb, &mut notes).expect("takeover due");
            let (first, second) = if renew_first {
                (&renew, &takeover)
            } else {
                (&takeover, &renew)
            };
            let mut s2 = store.clone();
            let r1 = crate::store::execute_on_row(&mut s2, first);
            let r2 = crate::store::execute_on_row(&mut s2, second);
            let applied = [r1, r2]
                .iter()
                .filter(|r| matches!(r, LeaseReply::Cas(CasOutcome::Applied(_))))
                .count();
            assert_eq!(applied, 1, "renew_first={renew_first}");
        }
    }

    /// Steps a fresh lease through its start-up read to its first write.
    fn first_acquire(l: &mut Lease, n: &Now, store: &mut Option<LeaseRow>) -> LeaseOp {
        let mut notes = Vec::new();
        loop {
            let op = l.step(n, &mut notes).expect("an operation");
            if matches!(op, LeaseOp::CompareAndSet { .. }) {
                return op;
            }
            notes.extend(answer(l, n, &op, store));
        }
    }

    #[test]
    fn a_resign_while_the_acquire_is_out_releases_the_lease_it_wins() {
        let mut store = None;
        let mut a = lease("a", 1);
        let n = now(0, 1_000_000, 5);
        let mut notes = Vec::new();
        let op = first_acquire(&mut a, &n, &mut store);
        // `leave` (or `resign`) while the acquire is on its way.
        a.resign(&n, Duration::MAX / 4);
        a.set_candidate(false);
        notes.extend(answer(&mut a, &n, &op, &mut store));
        notes.extend(run(&mut a, &n, &mut store));
        assert!(
            !a.is_leader(&n),
            "a node that resigned kept the lease it won"
        );
        assert!(
            !notes
                .iter()
                .any(|x| matches!(x, LeaseNote::Elected(_) | LeaseNote::SteppedDown(..))),
            "it never leads on the row it releases: {notes:?}"
        );
        let row = store.expect("the acquire landed");
        assert!(row.holder.is_none(), "the row was not released: {row:?}");
        assert_eq!(row.token, Term(1));
        // Nothing is written again: it stays out.
        let later = now(60_000, 1_060_000, 5);
        assert!(a.step(&later, &mut notes).is_none());
    }

    #[test]
    fn a_resign_after_a_lost_acquire_answer_reads_then_releases_what_it_won() {
        let mut store = None;
        let mut a = lease("a", 1);
        let n = now(0, 1_000_000, 5);
        let mut notes = Vec::new();
        let op = first_acquire(&mut a, &n, &mut store);
        // The write lands but its answer is lost (a store timeout).
        let _ = crate::store::execute_on_row(&mut store, &op);
        a.on_result(&n, op.id(), Err(StoreError::Timeout), &mut notes);
        a.resign(&n, Duration::MAX / 4);
        a.set_candidate(false);
        let later = now(2_000, 1_002_000, 5);
        notes.extend(run(&mut a, &later, &mut store));
        assert!(!a.is_leader(&later));
        let row = store.expect("the acquire landed");
        assert!(row.holder.is_none(), "the row was not released: {row:?}");
        assert!(
            !notes.iter().any(|x| matches!(x, LeaseNote::Elected(_))),
            "{notes:?}"
        );
    }

    #[test]
    fn a_resign_while_an_acquire_loses_releases_nothing() {
        let (_a, mut store) = a_leads();
        let mut b = lease("b", 2);
        // b knows no row and tries the first insert, which conflicts.
        let n = now(0, 1_000_000, 5);
        let mut notes = Vec::new();
        let op = first_acquire(&mut b, &n, &mut None);
        b.resign(&n, Duration::MAX / 4);
        b.set_candidate(false);
        notes.extend(answer(&mut b, &n, &op, &mut store));
        let before = store.clone();
        notes.extend(run(&mut b, &n, &mut store));
        assert_eq!(store, before, "b wrote a row it never won");
        assert!(!b.is_leader(&n));
    }
}
