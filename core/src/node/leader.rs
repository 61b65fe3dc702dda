//! What only a leader does: authoring the view (its own entry, the roster's
//! joins and leaves as deltas, full snapshots), answering members'
//! heartbeats, and noticing when nobody hears it. It must never act
//! without checking the lease at the reading it was given.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::config::ViewSpread;
use crate::id::{NodeId, Term};
use crate::membership::{members_per_chunk, snapshot_chunks, Roster};
use crate::time::Now;
use crate::view::Member;
use crate::wire::{Heartbeat, HeartbeatAck, Message, ViewDelta};

use super::role::{LeaderState, Role};
use super::{Event, LeaderInfo, Node};

impl Node {
    /// The lease elected this node under `term`: it authors a new view
    /// (itself in it), starts a roster seeded from the old one, and sends
    /// every member the whole view.
    pub(super) fn become_leader(&mut self, now: &Now, term: Term) {
        self.stats.elections_won += 1;
        let previous = self.last_followed.clone().filter(|id| id != &self.me.id);
        self.leader = Some(LeaderInfo {
            id: self.me.id.clone(),
            addr: self.me.addr.clone(),
            incarnation: self.me.incarnation,
            term,
        });
        self.claim = None;
        let mut members: Vec<Arc<Member>> = self
            .view
            .shared_members()
            .filter(|m| m.id != self.me.id)
            .cloned()
            .collect();
        members.push(Arc::new(self.self_member()));
        let version = if term > self.view.term() {
            1
        } else {
            self.view.version() + 1
        };
        let changes = self.view.replace(term, version, members);
        self.log.clear();
        let services = alloc::boxed::Box::new(self.new_services());
        self.role.lead(
            Roster::new(
                term,
                &self.view,
                &self.me.id,
                previous.as_ref(),
                now.mono,
                self.cfg.failure_timeout,
            ),
            services,
        );
        self.event(Event::Elected { term });
        self.event(Event::LeaderChanged {
            leader: Some(self.me.id.clone()),
            term,
        });
        self.emit_view_changes(changes);
        // The first view of a term is a full snapshot: to every member
        // where views are pushed; where they are relayed, to a few members
        // spread over the view, from whom the rest take theirs when they
        // ask (a snapshot each for 10,000 members is the view's size
        // 10,000 times over, all from one node at once).
        let seeds = self.spread_mends().then(|| self.relay_fanout());
        let every = seeds.map_or(1, |f| (self.view.len() / usize::from(f)).max(1));
        let targets: Vec<NodeId> = self
            .view
            .members()
            .step_by(every)
            .map(|m| m.id.clone())
            .collect();
        for id in targets {
            self.send_snapshot(&id);
        }
    }

    fn self_member(&self) -> Member {
        Member {
            id: self.me.id.clone(),
            incarnation: self.me.incarnation,
            addr: self.me.addr.clone(),
            meta_version: self.meta_version,
            meta: self.meta.clone(),
        }
    }

    /// The leader's own metadata changed: it authors its own entry at once.
    pub(super) fn upsert_self(&mut self, now: &Now) {
        let change = crate::view::Change::Upsert(Arc::new(self.self_member()));
        let base = self.view.version();
        if let Some(e) = self.view.apply(change.clone()) {
            let term = self.view.term();
            self.view.set_stamp(term, base + 1);
            let digest = self.view.digest();
            self.emit_view_changes(alloc::vec![e]);
            self.push_delta(
                now,
                ViewDelta {
                    term,
                    base_version: base,
                    version: base + 1,
                    digest,
                    changes: alloc::vec![change],
                },
            );
        }
    }

    /// Sends a new delta on its way: to every member, or down the relay
    /// tree, or (pulled) nowhere until members heartbeat. Relayed and
    /// pulled only while every member said it relays (protocol version
    /// 4): during an upgrade the leader pushes.
    fn push_delta(&mut self, now: &Now, delta: ViewDelta) {
        let delta = Arc::new(delta);
        let mends = self.spread_mends();
        if mends {
            self.log.applied(delta.clone(), now.mono);
        }
        let all_relay = match &self.role {
            Role::Leader(LeaderState { roster, .. }) => roster.all_relay(),
            _ => false,
        };
        match self.cfg.view_spread {
            ViewSpread::Relay { fanout, .. } if mends && all_relay => {
                self.pass_on(&delta, (None, None), fanout);
            }
            ViewSpread::Pull if all_relay => {}
            _ => self.send_to_members(&Message::ViewDelta(delta)),
        }
    }

    /// Sends `msg` to every other member of the view.
    pub(super) fn send_to_members(&mut self, msg: &Message) {
        let targets: Vec<(NodeId, String)> = self
            .view
            .members()
            .filter(|m| m.id != self.me.id)
            .map(|m| (m.id.clone(), m.addr.clone()))
            .collect();
        for (id, addr) in targets {
            self.transmit(id, Some(addr), msg.clone());
        }
    }

    pub(super) fn send_snapshot(&mut self, to: &NodeId) {
        if to == &self.me.id {
            return;
        }
        let addr = self.addr_of(to);
        let per = members_per_chunk(self.cfg.max_frame_len, self.cfg.max_meta_len);
        for chunk in snapshot_chunks(&self.view, per) {
            self.transmit(to.clone(), addr.clone(), Message::ViewSnapshot(chunk));
        }
    }

    /// The leader's periodic work: drop members gone silent, push the
    /// batched changes as one delta, resign if nobody hears it.
    pub(super) fn step_leader(&mut self, now: &Now) {
        let Role::Leader(LeaderState { roster, .. }) = &mut self.role else {
            return;
        };
        if !self.lease.is_leader(now) {
            return;
        }
        let (ft, batch) = (self.cfg.failure_timeout, self.cfg.batch_window);
        roster.scan(now.mono, ft, batch);
        let unreachable = roster.expect_contact
            && now.mono.saturating_since(roster.last_contact) >= ft * self.cfg.unreachable_factor;
        if let Some((delta, effects)) = roster.flush(now.mono, &mut self.view) {
            self.emit_view_changes(effects);
            self.push_delta(now, delta);
        }
        if unreachable {
            // Nobody hears us: let a reachable node lead instead.
            self.resign_unreachable(now);
        }
    }

    /// A member's heartbeat: the roster hears it, the member gets an ack.
    pub(super) fn on_heartbeat(&mut self, now: &Now, from: NodeId, hb: Heartbeat) {
        if !self.lease.is_leader(now) {
            return;
        }
        let Role::Leader(LeaderState { roster, .. }) = &mut self.role else {
            return;
        };
        let Some(your_meta) = roster.heard(
            &from,
            &hb,
            now.mono,
            self.cfg.batch_window,
            self.cfg.max_meta_len,
            self.cfg.max_members,
        ) else {
            return;
        };
        let behind = hb.view_term == roster.term() && hb.view_version < self.view.version();
        let current = hb.view_term == roster.term() && hb.view_version == self.view.version();
        if hb.relays && current {
            roster.note_current(&from);
        }
        // Relayed, a member that lacks a delta authored longer than the
        // relay grace ago lost it on the way; pulled, every member behind
        // is sent what it lacks. Sent ahead of the ack, so the ack finds
        // it up to date. One the log cannot mend is sent to a member for
        // the whole view (a redirect costs the leader a few bytes, where a
        // snapshot on every heartbeat of a member slow to take one would
        // pile up).
        let lost = || {
            self.log
                .applied_at(hb.view_term, hb.view_version)
                .is_none_or(|at| now.mono.saturating_since(at) >= self.relay_grace())
        };
        let mend =
            behind && self.spread_mends() && (self.cfg.view_spread == ViewSpread::Pull || lost());
        if mend {
            self.send_missing(now, &from, Some(hb.addr.clone()), hb.view_version, true);
        }
        let Role::Leader(LeaderState { roster, .. }) = &mut self.role else {
            return;
        };
        let (expires, _) = self.lease.claim().map_or((0, Term(0)), |c| (c.1, c.0));
        let ack = HeartbeatAck {
            term: roster.term(),
            leader_incarnation: self.me.incarnation,
            view_version: self.view.version(),
            digest: self.view.digest(),
            lease_expires_ns: expires,
            lease_version: self.lease.held_version().unwrap_or(0),
            your_meta_version: your_meta,
        };
        // Renewals follow the ack only for a member holding permits; the
        // common heartbeat moves its id and address into the ack as before.
        match self.renew_permits(now, &from, hb.incarnation) {
            Some(renewed) => {
                self.transmit(
                    from.clone(),
                    Some(hb.addr.clone()),
                    Message::HeartbeatAck(ack),
                );
                self.transmit(from, Some(hb.addr), renewed);
            }
            None => self.transmit(from, Some(hb.addr), Message::HeartbeatAck(ack)),
        }
    }

    /// Someone asks for the whole view of this leader's term. Where views
    /// are relayed, a member that relays is sent to an up-to-date member
    /// for it instead ([`Node::give_snapshot`]): a joiner's snapshot is the
    /// size of the view, and under churn joiners arrive every second. A
    /// member asked (such a source) answers in [`Node::serve_snapshot`].
    pub(super) fn on_snapshot_request(&mut self, now: &Now, from: &NodeId, term: Term) {
        if !self.role.is_leader() {
            self.serve_snapshot(now, from, term);
            return;
        }
        if self.lease.is_leader(now) && term == self.view.term() {
            self.give_snapshot(now, from);
        }
    }

    /// The leader gives `from` the whole view: pushed, itself; relayed or
    /// pulled, by sending it to a member that has it, or itself within its
    /// share while no member can (a term just began).
    pub(super) fn give_snapshot(&mut self, now: &Now, from: &NodeId) {
        let term = self.view.term();
        let mends = self.spread_mends();
        let source = match &mut self.role {
            Role::Leader(LeaderState { roster, .. }) if mends && roster.relays(from) => {
                roster.snapshot_source(from, now.mono, self.cfg.heartbeat_interval * 2)
            }
            _ => None,
        };
        match source.and_then(|id| Some((self.addr_of(&id)?, id))) {
            Some((addr, id)) => {
                self.transmit(from.clone(), None, Message::SnapshotFrom { term, id, addr })
            }
            None if !mends => self.send_snapshot(from),
            None => {
                // The leader's own share: a fanout's worth of 1,000-member
                // snapshots an interval (more, smaller ones while a group
                // grows); the rest ask again. One it serves holds the view
                // in a moment, so joiners after it are sent to it.
                let every = self.cfg.heartbeat_interval;
                let fanout = usize::from(self.relay_fanout());
                let limit = (fanout * 1000 / self.view.len().max(1)).max(fanout) as u32;
                let Role::Leader(LeaderState { roster, .. }) = &mut self.role else {
                    return;
                };
                if roster.served.take(now.mono, every, limit) {
                    roster.note_current(from);
                    self.send_snapshot(from);
                }
            }
        }
    }

    /// A member leaves for good.
    pub(super) fn on_leave(&mut self, now: &Now, from: &NodeId, incarnation: u64) {
        let (ft, batch) = (self.cfg.failure_timeout, self.cfg.batch_window);
        if let Role::Leader(LeaderState { roster, .. }) = &mut self.role {
            roster.left(from, incarnation, now.mono, batch, ft);
        }
        self.permits_left(from, incarnation);
    }
}
