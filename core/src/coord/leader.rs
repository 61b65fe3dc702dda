//! What the leader's coordination services decide: which fenced writes to
//! issue and in what order, who gets a permit and when one is free again,
//! and what to answer. Pure state, built when a leadership starts and
//! dropped when it ends; the node hands it calls, store answers and the
//! time, and carries out what it returns.
//!
//! The permit rule (DESIGN.md, "Permits are sub-leases"): a grant or
//! renewal promises the holder its permit until `latest + permit_lease`
//! of the leader's reading; the holder believes it only while its own
//! `latest` is below that; this room frees a permit only once its
//! `earliest` has passed the promise. Renewals ride the holder's
//! heartbeats and are never written: a new leader treats every stored
//! permit as held until `its own lease expiry at election +
//! permit_lease`, a bound above every promise an earlier leader made
//! (each was made at a `latest` before that leader's expiry, which this
//! leader's takeover waited out and its new expiry exceeds).

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use crate::coord::calls::{CoordAnswer, CoordRefusal};
use crate::coord::store::{CoordOp, CoordReply, Fence, Origin};
use crate::id::NodeId;
use crate::payload::Payload;
#[cfg(feature = "model-check")]
use crate::seeded::SeededBug;
use crate::store::{OpId, StoreError};
use crate::time::{MonoTime, Now, TimeInterval};

/// Who asked, to send the answer to: `(node, request id)`.
pub(crate) type ReplyTo = (NodeId, u64);

/// A fenced write (or the load) waiting to be issued.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Job {
    Load,
    Put {
        origin: Origin,
        key: String,
        value: Payload,
    },
    Grant {
        name: String,
        waiter: Waiter,
        expires_ns: u64,
    },
    Free {
        name: String,
        token: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Waiter {
    holder: NodeId,
    incarnation: u64,
    ticket: u64,
    wait: bool,
    last_asked: MonoTime,
}

impl Waiter {
    fn is(&self, holder: &NodeId, incarnation: u64, ticket: u64) -> bool {
        &self.holder == holder && self.incarnation == incarnation && self.ticket == ticket
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Permit {
    holder: NodeId,
    incarnation: u64,
    ticket: u64,
    /// Freed only once a reading's `earliest` is past this.
    expires_ns: u64,
    /// A free of it is queued or out: it still counts as held.
    freeing: bool,
    /// Releases waiting for the free to land.
    answers: Vec<ReplyTo>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Sem {
    limit: u32,
    /// By token.
    permits: BTreeMap<u64, Permit>,
    /// Grants queued or out.
    granting: u32,
    waiters: VecDeque<Waiter>,
}

impl Sem {
    fn used(&self) -> u32 {
        self.permits.len() as u32 + self.granting
    }

    fn in_use(&self) -> bool {
        self.used() > 0
    }
}

/// What the services want sent.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Effects {
    /// Answers to callers.
    pub(crate) answers: Vec<(ReplyTo, CoordAnswer)>,
}

/// One leadership's coordination services.
#[derive(Clone, Debug)]
pub(crate) struct Services {
    fence: Fence,
    permit_ns: u64,
    /// Stored permits count as held until then unless renewed.
    inherited_until: u64,
    /// Waiters asking again less often than this are gone.
    waiter_silence: Duration,
    loaded: bool,
    /// The load is queued or out.
    loading: bool,
    /// The store has no coordination tables.
    unsupported: bool,
    sems: BTreeMap<String, Sem>,
    /// Puts queued or out, by origin, with who to answer.
    puts: BTreeMap<Origin, ReplyTo>,
    jobs: VecDeque<Job>,
    in_flight: Option<(OpId, Job)>,
    /// After a store error, the next job waits until then.
    retry_at: MonoTime,
    retry: Duration,
    /// The deliberate bug these services carry, for the model checker.
    #[cfg(feature = "model-check")]
    bug: Option<SeededBug>,
}

impl Services {
    /// Services for a leadership under `fence` whose lease, when it was
    /// won, ran to `lease_expires_ns`.
    pub(crate) fn new(
        fence: Fence,
        lease_expires_ns: u64,
        permit_lease: Duration,
        waiter_silence: Duration,
        retry: Duration,
    ) -> Self {
        let permit_ns = crate::time::duration_nanos(permit_lease);
        Services {
            fence,
            permit_ns,
            inherited_until: lease_expires_ns.saturating_add(permit_ns),
            waiter_silence,
            loaded: false,
            loading: false,
            unsupported: false,
            sems: BTreeMap::new(),
            puts: BTreeMap::new(),
            jobs: VecDeque::new(),
            in_flight: None,
            retry_at: MonoTime::ZERO,
            retry,
            #[cfg(feature = "model-check")]
            bug: None,
        }
    }

    /// Makes these services carry `bug` (model checking only).
    #[cfg(feature = "model-check")]
    pub(crate) fn seed_bug(&mut self, bug: Option<SeededBug>) {
        self.bug = bug;
    }

    /// The end of a reading that must have passed a promise before its
    /// permit is freed: `earliest`, unless the model checker seeded the
    /// opposite.
    fn free_reading(&self, c: &TimeInterval) -> u64 {
        #[cfg(feature = "model-check")]
        if self.bug == Some(SeededBug::FreeOnLatest) {
            return c.latest;
        }
        c.earliest
    }

    /// Queues the permits' load unless it is done or under way. Lazy: a
    /// group that never asks for a permit never reads the table, so an
    /// election costs the store nothing more than the lease.
    fn load(&mut self) {
        if !self.loaded && !self.loading {
            self.loading = true;
            self.jobs.push_front(Job::Load);
        }
    }

    /// A put from `from`'s request `request`.
    pub(crate) fn put(&mut self, origin: Origin, key: String, value: Payload, fx: &mut Effects) {
        let to = (origin.node.clone(), origin.request);
        if self.unsupported {
            fx.answers
                .push((to, CoordAnswer::Refused(CoordRefusal::Unsupported)));
            return;
        }
        // A retry of a put already queued or out is answered with it.
        if self.puts.insert(origin.clone(), to).is_none() {
            self.jobs.push_back(Job::Put { origin, key, value });
        }
    }

    /// An acquire: `ticket` is the caller's request id.
    pub(crate) fn acquire(
        &mut self,
        now: &Now,
        (holder, incarnation, ticket): (NodeId, u64, u64),
        (name, limit, wait): (String, u32, bool),
        fx: &mut Effects,
    ) {
        let to = (holder.clone(), ticket);
        if self.unsupported {
            fx.answers
                .push((to, CoordAnswer::Refused(CoordRefusal::Unsupported)));
            return;
        }
        self.load();
        let sem = self.sems.entry(name.clone()).or_insert_with(|| Sem {
            limit,
            ..Sem::default()
        });
        if let Some((token, p)) = sem
            .permits
            .iter()
            .find(|(_, p)| p.holder == holder && p.incarnation == incarnation && p.ticket == ticket)
        {
            let answer = CoordAnswer::Granted {
                token: *token,
                expires_ns: p.expires_ns,
            };
            fx.answers.push((to, answer));
            return;
        }
        if let Some(w) = sem
            .waiters
            .iter_mut()
            .find(|w| w.is(&holder, incarnation, ticket))
        {
            w.last_asked = now.mono;
            return;
        }
        let granting = self
            .jobs
            .iter()
            .chain(self.in_flight.as_ref().map(|(_, j)| j));
        if granting.into_iter().any(
            |j| matches!(j, Job::Grant { waiter, .. } if waiter.is(&holder, incarnation, ticket)),
        ) {
            return;
        }
        if sem.limit != limit {
            if sem.in_use() {
                let refusal = CoordRefusal::LimitConflict { stored: sem.limit };
                fx.answers.push((to, CoordAnswer::Refused(refusal)));
                return;
            }
            sem.limit = limit;
        }
        // Free for this caller: room left after everyone queued ahead.
        let ahead = sem.used() as usize + sem.waiters.len();
        let free = self.loaded && ahead < sem.limit as usize;
        if !wait && self.loaded && !free {
            fx.answers.push((to, CoordAnswer::Busy));
            return;
        }
        sem.waiters.push_back(Waiter {
            holder,
            incarnation,
            ticket,
            wait,
            last_asked: now.mono,
        });
    }

    /// A release (or a cancelled wait) of `ticket`.
    pub(crate) fn release(
        &mut self,
        (holder, incarnation, ticket): (NodeId, u64, u64),
        name: &str,
        request: u64,
        fx: &mut Effects,
    ) {
        let to = (holder.clone(), request);
        if !self.loaded {
            // The permit may be in the store, granted by an earlier
            // leader: answer once it is known (the caller retries).
            self.load();
            return;
        }
        let Some(sem) = self.sems.get_mut(name) else {
            fx.answers.push((to, CoordAnswer::Released));
            return;
        };
        sem.waiters.retain(|w| !w.is(&holder, incarnation, ticket));
        let permit = sem.permits.iter_mut().find(|(_, p)| {
            p.holder == holder && p.incarnation == incarnation && p.ticket == ticket
        });
        match permit {
            Some((token, p)) => {
                p.answers.push(to);
                if !p.freeing {
                    p.freeing = true;
                    let (name, token) = (name.into(), *token);
                    self.jobs.push_back(Job::Free { name, token });
                }
            }
            // A grant of it may be out: when it lands the holder learns of
            // a permit it does not know and releases it again.
            None => fx.answers.push((to, CoordAnswer::Released)),
        }
    }

    /// `holder` left the group on purpose: it stopped believing in its
    /// permits before it said so, so they are free at once.
    pub(crate) fn holder_left(&mut self, holder: &NodeId, incarnation: u64) {
        for (name, sem) in &mut self.sems {
            sem.waiters
                .retain(|w| !(&w.holder == holder && w.incarnation == incarnation));
            for (token, p) in &mut sem.permits {
                if &p.holder == holder && p.incarnation == incarnation && !p.freeing {
                    p.freeing = true;
                    self.jobs.push_back(Job::Free {
                        name: name.clone(),
                        token: *token,
                    });
                }
            }
        }
    }

    /// A heartbeat from `holder`: its permits are promised until
    /// `latest + permit_lease`. Returns the promise and the permits it
    /// covers as `(ticket, name)`, if it holds any.
    pub(crate) fn renew(
        &mut self,
        now: &Now,
        holder: &NodeId,
        incarnation: u64,
    ) -> Option<(u64, Vec<(u64, String)>)> {
        if self.sems.is_empty() {
            return None;
        }
        let until = now.clock.interval.latest.saturating_add(self.permit_ns);
        let mut covered = Vec::new();
        for (name, sem) in &mut self.sems {
            for p in sem.permits.values_mut() {
                if &p.holder == holder && p.incarnation == incarnation && !p.freeing {
                    p.expires_ns = p.expires_ns.max(until);
                    covered.push((p.ticket, name.clone()));
                }
            }
        }
        (!covered.is_empty()).then_some((until, covered))
    }

    /// The periodic work at `now`: free what expired, grant what is free.
    /// `alive` says whether a waiter's node is still in the group.
    pub(crate) fn step(&mut self, now: &Now, alive: impl Fn(&NodeId, u64) -> bool) {
        if !self.loaded {
            return;
        }
        let past = self.free_reading(&now.clock.interval);
        for (name, sem) in &mut self.sems {
            for (token, p) in &mut sem.permits {
                if !p.freeing && past > p.expires_ns {
                    p.freeing = true;
                    self.jobs.push_back(Job::Free {
                        name: name.clone(),
                        token: *token,
                    });
                }
            }
            let silence = self.waiter_silence;
            sem.waiters.retain(|w| {
                alive(&w.holder, w.incarnation)
                    && now.mono.saturating_since(w.last_asked) <= silence
            });
            while sem.used() < sem.limit {
                let Some(waiter) = sem.waiters.pop_front() else {
                    break;
                };
                sem.granting += 1;
                self.jobs.push_back(Job::Grant {
                    name: name.clone(),
                    waiter,
                    expires_ns: now.clock.interval.latest.saturating_add(self.permit_ns),
                });
            }
        }
    }

    /// Answers `Busy` to the waiters that did not want to wait; called
    /// once the permits are known.
    fn refuse_non_waiting(&mut self, fx: &mut Effects) {
        for sem in self.sems.values_mut() {
            let free = sem.limit.saturating_sub(sem.used()) as usize;
            let mut kept = VecDeque::new();
            for (i, w) in sem.waiters.drain(..).enumerate() {
                if !w.wait && i >= free {
                    fx.answers.push(((w.holder, w.ticket), CoordAnswer::Busy));
                } else {
                    kept.push_back(w);
                }
            }
            sem.waiters = kept;
        }
    }

    /// The next store operation to issue, if none is out.
    pub(crate) fn next_op(&mut self, now: &Now, op: impl FnOnce() -> OpId) -> Option<CoordOp> {
        if self.in_flight.is_some() || now.mono < self.retry_at {
            return None;
        }
        // Permit work (the load, grants, frees) goes ahead of puts, which
        // touch other rows: a waiter is not kept behind a run of writes
        // to the KV table. Each kind keeps its own order.
        let first = self
            .jobs
            .iter()
            .position(|j| !matches!(j, Job::Put { .. }))
            .unwrap_or(0);
        let mut job = self.jobs.remove(first)?;
        // A grant promises from when it is written, not from when it was
        // queued: behind a run of puts a promise made at queueing lapsed
        // before its answer reached the holder, who then gave the permit
        // straight back. Never shorter than a retry's.
        if let Job::Grant { expires_ns, .. } = &mut job {
            let from_now = now.clock.interval.latest.saturating_add(self.permit_ns);
            *expires_ns = (*expires_ns).max(from_now);
        }
        let op = op();
        let fence = self.fence;
        let store_op = match &job {
            Job::Load => CoordOp::LoadPermits { op },
            Job::Put { origin, key, value } => CoordOp::Put {
                op,
                fence,
                origin: origin.clone(),
                key: key.clone(),
                value: value.clone(),
            },
            Job::Grant {
                name,
                waiter,
                expires_ns,
            } => CoordOp::Grant {
                op,
                fence,
                name: name.clone(),
                limit: self.sems.get(name).map_or(1, |s| s.limit),
                holder: waiter.holder.clone(),
                incarnation: waiter.incarnation,
                ticket: waiter.ticket,
                expires_ns: *expires_ns,
            },
            Job::Free { name, token } => CoordOp::Free {
                op,
                fence,
                name: name.clone(),
                token: *token,
            },
        };
        self.in_flight = Some((op, job));
        Some(store_op)
    }

    /// When the services want to be stepped again: a retry after a store
    /// error while work is queued, or the first permit's expiry in this
    /// reading's `earliest`.
    pub(crate) fn next_wake(&self, now: &Now) -> MonoTime {
        let mut at = if self.in_flight.is_none() && !self.jobs.is_empty() {
            self.retry_at
        } else {
            MonoTime::MAX
        };
        if self.loaded {
            let past = self.free_reading(&now.clock.interval);
            let first = self
                .sems
                .values()
                .flat_map(|s| s.permits.values())
                .filter(|p| !p.freeing)
                .map(|p| p.expires_ns)
                .min();
            if let Some(expires) = first {
                let wait = expires.saturating_sub(past).saturating_add(1);
                at = at.min(now.mono + Duration::from_nanos(wait));
            }
        }
        at
    }

    /// Nothing asked of these services yet (or everything forgotten): no
    /// semaphore known, no write queued or out. The node skips them then.
    pub(crate) fn is_idle(&self) -> bool {
        self.sems.is_empty() && self.jobs.is_empty() && self.in_flight.is_none()
    }

    /// A store answer. Returns `false` when the store refused the fence:
    /// this leadership is over as far as the store is concerned.
    pub(crate) fn on_result(
        &mut self,
        now: &Now,
        op: OpId,
        result: Result<CoordReply, StoreError>,
        fx: &mut Effects,
    ) -> bool {
        let Some((id, job)) = self.in_flight.take() else {
            return true;
        };
        if id != op {
            self.in_flight = Some((id, job));
            return true;
        }
        let reply = match result {
            Ok(CoordReply::Fenced) => {
                self.jobs.push_front(job);
                return false;
            }
            Ok(reply) => reply,
            Err(StoreError::Unsupported) => {
                self.unsupported = true;
                self.refuse_all(fx);
                return true;
            }
            Err(_) => {
                // The write may or may not have landed: issue it again
                // (puts are deduped by origin, grants by ticket, frees
                // are idempotent), after a pause.
                self.jobs.push_front(job);
                self.retry_at = now.mono + self.retry;
                return true;
            }
        };
        match (job, reply) {
            (
                Job::Load,
                CoordReply::Permits {
                    semaphores,
                    permits,
                },
            ) => {
                for s in semaphores {
                    let sem = self.sems.entry(s.name).or_default();
                    sem.limit = s.limit;
                }
                for p in permits {
                    let sem = self.sems.entry(p.name).or_default();
                    let expires_ns = p.expires_ns.max(self.inherited_until);
                    sem.permits
                        .entry(p.token)
                        .and_modify(|known| known.expires_ns = known.expires_ns.max(expires_ns))
                        .or_insert(Permit {
                            holder: p.holder,
                            incarnation: p.incarnation,
                            ticket: p.ticket,
                            expires_ns,
                            freeing: false,
                            answers: Vec::new(),
                        });
                }
                // A waiter that asked before the load may hold its permit
                // already (an earlier leader granted it and its answer was
                // lost): it waits no more. Granting it again would count
                // its slot twice and, worse, store a shorter promise than
                // the one its retried acquire is answered with.
                for sem in self.sems.values_mut() {
                    let permits = &sem.permits;
                    sem.waiters.retain(|w| {
                        !permits
                            .values()
                            .any(|p| w.is(&p.holder, p.incarnation, p.ticket))
                    });
                }
                self.loaded = true;
                self.loading = false;
                self.refuse_non_waiting(fx);
            }
            (Job::Put { origin, .. }, CoordReply::Put { revision })
            | (Job::Put { origin, .. }, CoordReply::Duplicate { revision }) => {
                if let Some(to) = self.puts.remove(&origin) {
                    fx.answers.push((to, CoordAnswer::Put { revision }));
                }
            }
            (
                Job::Grant {
                    name,
                    waiter,
                    expires_ns,
                },
                reply,
            ) => {
                let Some(sem) = self.sems.get_mut(&name) else {
                    return true;
                };
                sem.granting = sem.granting.saturating_sub(1);
                let to = (waiter.holder.clone(), waiter.ticket);
                match reply {
                    CoordReply::Granted { token } => {
                        // A retried grant of a permit known here already
                        // never shortens what it was promised.
                        let p = sem
                            .permits
                            .entry(token)
                            .and_modify(|p| p.expires_ns = p.expires_ns.max(expires_ns))
                            .or_insert(Permit {
                                holder: waiter.holder,
                                incarnation: waiter.incarnation,
                                ticket: waiter.ticket,
                                expires_ns,
                                freeing: false,
                                answers: Vec::new(),
                            });
                        let expires_ns = p.expires_ns;
                        fx.answers
                            .push((to, CoordAnswer::Granted { token, expires_ns }));
                    }
                    CoordReply::LimitConflict { stored } => {
                        let refusal = CoordRefusal::LimitConflict { stored };
                        fx.answers.push((to, CoordAnswer::Refused(refusal)));
                    }
                    // The store holds permits this leader does not know
                    // of: wait at the head, and learn them again.
                    _ => {
                        sem.waiters.push_front(waiter);
                        self.loaded = false;
                        self.load();
                    }
                }
            }
            (Job::Free { name, token }, _) => {
                if let Some(p) = self
                    .sems
                    .get_mut(&name)
                    .and_then(|s| s.permits.remove(&token))
                {
                    for to in p.answers {
                        fx.answers.push((to, CoordAnswer::Released));
                    }
                }
            }
            // An answer of the wrong kind: the store broke its contract.
            // Load again rather than guess.
            (_, _) => {
                self.loaded = false;
                self.loading = false;
                self.load();
            }
        }
        true
    }

    fn refuse_all(&mut self, fx: &mut Effects) {
        let refused = || CoordAnswer::Refused(CoordRefusal::Unsupported);
        for (_, to) in core::mem::take(&mut self.puts) {
            fx.answers.push((to, refused()));
        }
        for sem in self.sems.values_mut() {
            for w in sem.waiters.drain(..) {
                fx.answers.push(((w.holder, w.ticket), refused()));
            }
        }
        self.jobs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Term;
    use crate::time::ClockReading;

    fn at(ms: u64) -> Now {
        Now {
            mono: MonoTime::from_nanos(ms * 1_000_000),
            clock: ClockReading::synchronized(ms * 1_000_000, 1_000_000),
        }
    }

    /// Each issued op answered as the store would, in order; the kinds.
    fn issue_all(s: &mut Services, now: &Now, fx: &mut Effects) -> Vec<&'static str> {
        let mut kinds = Vec::new();
        let mut id = 0;
        while let Some(op) = s.next_op(now, || {
            id += 1;
            OpId(id)
        }) {
            let reply = match &op {
                CoordOp::LoadPermits { .. } => CoordReply::Permits {
                    semaphores: Vec::new(),
                    permits: Vec::new(),
                },
                CoordOp::Put { .. } => CoordReply::Put { revision: id },
                CoordOp::Grant { .. } => CoordReply::Granted { token: id },
                CoordOp::Free { .. } => CoordReply::Freed,
            };
            kinds.push(op.kind());
            s.on_result(now, op.id(), Ok(reply), fx);
            s.step(now, |_, _| true);
        }
        kinds
    }

    #[test]
    fn a_grant_is_written_ahead_of_puts_queued_before_it() {
        let fence = Fence {
            token: Term(1),
            nonce: 7,
        };
        let second = Duration::from_secs(1);
        let mut s = Services::new(fence, 0, 2 * second, 5 * second, second / 10);
        let mut fx = Effects::default();
        let now = at(1_000);
        let a = NodeId::new("a").unwrap();
        for request in 0..20 {
            let origin = Origin {
                node: a.clone(),
                incarnation: 1,
                request,
            };
            s.put(origin, "k".into(), Payload::from(b"v".to_vec()), &mut fx);
        }
        s.acquire(&now, (a, 1, 99), ("lock".into(), 1, true), &mut fx);
        let kinds = issue_all(&mut s, &now, &mut fx);
        assert_eq!(kinds.len(), 22, "{kinds:?}");
        assert_eq!(&kinds[..2], ["permits_load", "permit_grant"], "{kinds:?}");
        assert!(kinds[2..].iter().all(|k| *k == "kv_put"), "{kinds:?}");
    }
}
