//! Wiring the coordination services to the node: the verbs a caller uses
//! (`kv_put`, `acquire`, `release`), the leader handing calls and store
//! answers to its services (`crate::coord::leader`) and carrying out what
//! they return, renewals riding heartbeats, and a holder's permits lapsing.
//! The decisions are the coord room's; this room routes.

use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use crate::coord::leader::{Effects, Services};
use crate::coord::member::HeldPermit;
use crate::coord::{
    check_name, CoordAnswer, CoordCall, CoordRefusal, CoordReply, Fence, Origin, MAX_VALUE_LEN,
};
use crate::id::NodeId;
use crate::messaging::{Body, RequestId, SendError};
use crate::payload::Payload;
use crate::store::{OpId, StoreError};
use crate::time::{MonoTime, Now};
use crate::wire::{Message, ReplyBody};

use super::role::Role;
use super::{Event, Node, Output};

impl Node {
    // ---- verbs ---------------------------------------------------------------

    /// Appends `value` as a new revision of `key` through the leader; the
    /// answer ([`CoordAnswer::Put`] with the revision) comes as
    /// [`Event::Coord`]. Retried (same id, deduped by the store) across
    /// failovers until `request_timeout`; a timeout means the put may or
    /// may not have been committed.
    pub fn kv_put(
        &mut self,
        now: Now,
        key: &str,
        value: impl Into<Payload>,
    ) -> Result<RequestId, CoordRefusal> {
        let value = value.into();
        check_name(key).map_err(|e| CoordRefusal::Invalid(alloc::format!("key: {e}")))?;
        if value.len() > MAX_VALUE_LEN {
            return Err(CoordRefusal::Invalid(alloc::format!(
                "a value of {} bytes exceeds {MAX_VALUE_LEN}",
                value.len()
            )));
        }
        let call = CoordCall::Put {
            key: key.into(),
            value,
        };
        Ok(self.start_coord(now, call, self.cfg.request_timeout))
    }

    /// Asks for a permit of semaphore `name` with `limit` permits (a lock:
    /// `limit` 1). With `wait`, the request queues (FIFO) at the leader
    /// until a permit is free or `timeout` passes; without, a full
    /// semaphore answers [`CoordAnswer::Busy`]. The answer comes as
    /// [`Event::Coord`] with this id, which is also the permit's ticket for
    /// [`Node::permit_valid`] and [`Node::release`]. A wait that times out
    /// leaves the queue by itself.
    pub fn acquire(
        &mut self,
        now: Now,
        name: &str,
        limit: u32,
        wait: bool,
        timeout: Duration,
    ) -> Result<RequestId, CoordRefusal> {
        check_name(name).map_err(|e| CoordRefusal::Invalid(alloc::format!("name: {e}")))?;
        if limit == 0 {
            return Err(CoordRefusal::Invalid(
                "a semaphore's limit must be at least 1".into(),
            ));
        }
        let call = CoordCall::Acquire {
            name: name.into(),
            limit,
            wait,
        };
        Ok(self.start_coord(now, call, timeout))
    }

    /// Gives back the permit of `ticket`, or stops waiting for it. The
    /// permit stops being valid here at once; the leader frees it in the
    /// store. Returns `false` if `ticket` is neither held nor pending.
    pub fn release(&mut self, now: Now, ticket: RequestId) -> bool {
        let now = self.observe(now);
        let name = match self.held.remove(ticket.0) {
            Some(p) => Some(p.name),
            None => match self.requests.get(ticket.0).map(|o| &o.body) {
                Some(Body::Coord(CoordCall::Acquire { name, .. })) => {
                    let name = name.clone();
                    self.requests.remove(ticket.0);
                    Some(name)
                }
                _ => None,
            },
        };
        if let Some(name) = &name {
            self.start_release(&now, name.clone(), ticket.0);
        }
        self.step(&now);
        name.is_some()
    }

    /// Whether the permit of `ticket` is held at `now`: from this reading
    /// against the promised expiry, so a process paused past it answers
    /// "no" at once.
    pub fn permit_valid(&self, now: &Now, ticket: RequestId) -> bool {
        self.held.valid(ticket.0, now)
    }

    /// The permit of `ticket`, if this node holds it (check
    /// [`Node::permit_valid`] before acting on it).
    pub fn permit(&self, ticket: RequestId) -> Option<&HeldPermit> {
        self.held.get(ticket.0)
    }

    /// Every permit this node holds, by ticket (valid or not at a given
    /// reading: ask [`Node::permit_valid`]).
    pub fn permits(&self) -> impl Iterator<Item = (RequestId, &HeldPermit)> {
        self.held.iter().map(|(t, p)| (RequestId(t), p))
    }

    fn start_coord(&mut self, now: Now, call: CoordCall, timeout: Duration) -> RequestId {
        let now = self.observe(now);
        let id = self.start_call(&now, Body::Coord(call), timeout);
        self.step(&now);
        id
    }

    fn start_release(&mut self, now: &Now, name: String, ticket: u64) {
        let call = CoordCall::Release { name, ticket };
        self.requests
            .start(Body::Coord(call), now.mono, self.cfg.request_timeout);
    }

    // ---- the caller's side -----------------------------------------------------

    /// The leader answered coordination call `id`.
    pub(super) fn coord_reply(&mut self, now: &Now, id: u64, call: CoordCall, body: ReplyBody) {
        let result = match body {
            ReplyBody::Coord { answer, .. } => Ok(answer),
            ReplyBody::Failed { reason, .. } => Err(SendError::Failed(reason)),
            ReplyBody::Ok { .. } | ReplyBody::NotLeader { .. } => Err(SendError::Failed(
                "the leader answered a coordination call with something else".into(),
            )),
        };
        if let (CoordCall::Acquire { name, .. }, Ok(CoordAnswer::Granted { token, expires_ns })) =
            (&call, &result)
        {
            let permit = HeldPermit {
                name: name.clone(),
                token: *token,
                expires_ns: *expires_ns,
            };
            self.held.granted(id, permit);
            if !self.held.valid(id, now) {
                // Granted, but lapsed before the answer came: say so.
                self.held.remove(id);
                self.start_release(now, name.clone(), id);
                self.event(Event::Coord {
                    id: RequestId(id),
                    result: Err(SendError::Timeout),
                });
                return;
            }
        }
        if matches!(call, CoordCall::Release { .. }) {
            return;
        }
        self.event(Event::Coord {
            id: RequestId(id),
            result,
        });
    }

    /// Coordination call `id` got no answer in time.
    pub(super) fn coord_gave_up(&mut self, now: &Now, id: u64, call: CoordCall, err: SendError) {
        match call {
            // Leave the queue (or give back what was granted meanwhile).
            CoordCall::Acquire { name, .. } => self.start_release(now, name, id),
            // A release that could not be delivered: the permit lapses.
            CoordCall::Release { .. } => return,
            CoordCall::Put { .. } => {}
        }
        self.event(Event::Coord {
            id: RequestId(id),
            result: Err(err),
        });
    }

    /// The leader renewed some of this node's permits.
    pub(super) fn on_permits_renewed(
        &mut self,
        now: &Now,
        from: &NodeId,
        until_ns: u64,
        permits: Vec<(u64, String)>,
    ) {
        if self.following().is_none_or(|l| &l.id != from) {
            return;
        }
        for (ticket, name) in self.held.renewed(until_ns, permits) {
            // Granted to a call this node gave up on: give it back.
            if !self.requests.contains(ticket) {
                self.start_release(now, name, ticket);
            }
        }
    }

    /// This node leaves: every permit it holds is given up here first, so
    /// the leader may free them as soon as it hears of the leave.
    pub(super) fn drop_permits(&mut self) {
        for (ticket, p) in self.held.drain() {
            self.event(Event::PermitLost {
                ticket: RequestId(ticket),
                name: p.name,
                token: p.token,
            });
        }
    }

    // ---- the leader's side -----------------------------------------------------

    /// The services of a leadership that starts now.
    pub(super) fn new_services(&self) -> Services {
        let (term, expires) = self.lease.claim().unwrap_or_default();
        #[cfg_attr(not(feature = "model-check"), allow(unused_mut))]
        let mut services = Services::new(
            Fence {
                token: term,
                nonce: self.me.incarnation,
            },
            expires,
            self.cfg.effective_permit_lease(),
            self.cfg.request_retry_interval * 3 + self.cfg.failure_timeout,
            self.cfg.store_retry_interval,
        );
        #[cfg(feature = "model-check")]
        services.seed_bug(self.lease.bug());
        services
    }

    /// A coordination call arrived.
    pub(super) fn on_coord(
        &mut self,
        now: &Now,
        from: NodeId,
        (id, incarnation): (u64, u64),
        call: CoordCall,
    ) {
        if !self.lease.is_leader(now) {
            self.redirect(from, id);
            return;
        }
        let Role::Leader(l) = &mut self.role else {
            self.redirect(from, id);
            return;
        };
        let mut fx = Effects::default();
        let s = &mut l.services;
        match call {
            CoordCall::Put { key, value } => {
                let origin = Origin {
                    node: from,
                    incarnation,
                    request: id,
                };
                s.put(origin, key, value, &mut fx);
            }
            CoordCall::Acquire { name, limit, wait } => {
                s.acquire(now, (from, incarnation, id), (name, limit, wait), &mut fx);
            }
            CoordCall::Release { name, ticket } => {
                s.release((from, incarnation, ticket), &name, id, &mut fx);
            }
        }
        self.send_answers(fx);
    }

    /// A store answered a coordination operation.
    pub(super) fn on_coord_result(
        &mut self,
        now: &Now,
        op: OpId,
        result: Result<CoordReply, StoreError>,
    ) {
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let mut fx = Effects::default();
        if !l.services.on_result(now, op, result, &mut fx) {
            // The store says the lease moved on: read it, and step down.
            self.lease.want_read(now.mono);
        }
        self.send_answers(fx);
    }

    fn send_answers(&mut self, fx: Effects) {
        let term = self.lease.claim().map_or(crate::id::Term(0), |c| c.0);
        for ((to, id), answer) in fx.answers {
            let body = ReplyBody::Coord { term, answer };
            self.transmit(to, None, Message::Reply { id, body });
        }
    }

    /// A heartbeat from `from`: renews its permits, if it holds any, and
    /// returns the message that tells it so.
    pub(super) fn renew_permits(
        &mut self,
        now: &Now,
        from: &NodeId,
        incarnation: u64,
    ) -> Option<Message> {
        let Role::Leader(l) = &mut self.role else {
            return None;
        };
        let (until_ns, permits) = l.services.renew(now, from, incarnation)?;
        Some(Message::PermitsRenewed { until_ns, permits })
    }

    /// A member left on purpose: its permits are free.
    pub(super) fn permits_left(&mut self, from: &NodeId, incarnation: u64) {
        if let Role::Leader(l) = &mut self.role {
            l.services.holder_left(from, incarnation);
        }
    }

    /// After every input: lapse what this node holds; as leader, renew its
    /// own permits, free and grant, and issue the next store operation.
    pub(super) fn step_coord(&mut self, now: &Now) {
        if self.held.len() == 0 && !matches!(&self.role, Role::Leader(l) if !l.services.is_idle()) {
            return;
        }
        for (ticket, p) in self.held.lapsed(now) {
            self.event(Event::PermitLost {
                ticket: RequestId(ticket),
                name: p.name,
                token: p.token,
            });
        }
        if !self.lease.is_leader(now) {
            return;
        }
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        if self.held.len() > 0 && now.mono >= l.next_self_renew {
            l.next_self_renew = now.mono + self.cfg.heartbeat_interval;
            if let Some((until, permits)) = l.services.renew(now, &self.me.id, self.me.incarnation)
            {
                self.held.renewed(until, permits);
            }
        }
        let view = &self.view;
        let me = &self.me;
        l.services.step(now, |id, inc| {
            (id == &me.id && inc == me.incarnation)
                || view.get(id).is_some_and(|m| m.incarnation == inc)
        });
        let next_op = &mut self.coord_ops;
        if let Some(op) = l.services.next_op(now, || {
            *next_op += 1;
            OpId(*next_op)
        }) {
            self.stats.coord_ops += 1;
            self.out.push_back(Output::Coord(op));
        }
    }

    /// When the coordination services want a step: a permit held here
    /// lapsing, the leader's own renewal, or a store retry.
    pub(super) fn coord_wake(&self, now: &Now) -> MonoTime {
        let mut at = self.held.next_lapse(now);
        if let Role::Leader(l) = &self.role {
            if l.services.is_idle() {
                return at;
            }
            at = at.min(l.services.next_wake(now));
            if self.held.len() > 0 {
                at = at.min(l.next_self_renew);
            }
        }
        at
    }
}
