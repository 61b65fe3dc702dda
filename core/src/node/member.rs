//! What a member does to follow a leader: heartbeating it, watching for
//! its acks, taking its deltas and snapshots, and losing it (silence, a
//! resignation, the store) and looking for the next. Everything a leader
//! says is checked against the term this node confirmed; a higher term is
//! only ever a claim for the store to settle.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;

use crate::id::{NodeId, Term};
use crate::store::{Holder, LeaseRow};
use crate::time::Now;
use crate::wire::{Heartbeat, HeartbeatAck, Message, ViewDelta, ViewSnapshot};

use super::role::Role;
use super::{Event, LeaderInfo, Node};

impl Node {
    /// A member's periodic work: notice a leader gone quiet, look in the
    /// store while cut off, heartbeat the leader when due.
    pub(super) fn step_member(&mut self, now: &Now) {
        let ft = self.cfg.failure_timeout;
        let following = self.following().is_some();
        let Role::Member(m) = &mut self.role else {
            return;
        };
        if following && !m.cut_off && now.mono.saturating_since(m.last_ack) > ft {
            // The leader went quiet: look in the store for who leads now.
            m.look_at(now.mono);
        }
        let read_due = m.cut_off && now.mono >= m.next_lost_read;
        if read_due {
            m.next_lost_read = now.mono + ft;
        }
        let heartbeat_due = following && now.mono >= m.next_heartbeat;
        if read_due {
            let at = now.mono + self.read_spread();
            self.lease.want_read(at);
        }
        if heartbeat_due {
            self.heartbeat(now);
        }
    }

    fn heartbeat(&mut self, now: &Now) {
        // Cloned only when a heartbeat is due: it holds strings.
        let Some(l) = self.following().cloned() else {
            return;
        };
        let Some(m) = self.role.member_mut() else {
            return;
        };
        m.next_heartbeat = now.mono + self.cfg.heartbeat_interval;
        let meta =
            (m.leader_has_meta != Some((l.term, self.meta_version))).then(|| self.meta.clone());
        let hb = Heartbeat {
            term: l.term,
            incarnation: self.me.incarnation,
            addr: self.me.addr.clone(),
            meta_version: self.meta_version,
            meta,
            view_term: self.view.term(),
            view_version: self.view.version(),
            relays: true,
        };
        self.transmit(l.id.clone(), Some(l.addr.clone()), Message::Heartbeat(hb));
        if self.view.term() < l.term {
            self.ask_snapshot(now, &l);
        }
    }

    /// Asks the leader for the whole view, at most once a heartbeat
    /// interval (where views are relayed or pulled, once every two relay
    /// graces: a leader or member that had no snapshot to spare sends no
    /// answer).
    fn ask_snapshot(&mut self, now: &Now, l: &LeaderInfo) {
        let every = match self.cfg.view_spread {
            crate::config::ViewSpread::Push => self.cfg.heartbeat_interval,
            _ => self.relay_grace() * 2,
        };
        let Some(m) = self.role.member_mut() else {
            return;
        };
        if m.snapshot_asked
            .is_some_and(|at| now.mono.saturating_since(at) < every)
        {
            return;
        }
        m.snapshot_asked = Some(now.mono);
        self.transmit(
            l.id.clone(),
            Some(l.addr.clone()),
            Message::SnapshotRequest { term: l.term },
        );
    }

    /// A leader-authored message with `term` from `from`: true when it comes
    /// from the leader this node follows, under its confirmed term. A higher
    /// term is a claim, checked against the store before it is followed.
    pub(super) fn accept_leader_message(&mut self, now: &Now, from: &NodeId, term: Term) -> bool {
        // A leader follows nobody: only its own messages carry its term.
        let followed = !self.role.is_leader()
            && self
                .leader
                .as_ref()
                .is_some_and(|l| &l.id == from && l.term == term);
        if followed {
            return true;
        }
        if term > self.term() {
            self.claim(now, term);
        }
        false
    }

    pub(super) fn on_ack(&mut self, now: &Now, from: NodeId, ack: HeartbeatAck) {
        if !self.accept_leader_message(now, &from, ack.term) {
            return;
        }
        let Some(l) = self.leader.clone() else { return };
        // Accepted only while following, so there is a member state.
        let Some(m) = self.role.member_mut() else {
            return;
        };
        m.last_ack = now.mono;
        m.cut_off = false;
        m.leader_has_meta = ack.your_meta_version.map(|v| (ack.term, v));
        self.lease.learn_from_leader(LeaseRow {
            holder: Some(Holder {
                id: from,
                nonce: ack.leader_incarnation,
                addr: l.addr.clone(),
            }),
            token: ack.term,
            expires_ns: ack.lease_expires_ns,
            version: ack.lease_version,
        });
        let behind = (self.view.term(), self.view.version()) < (ack.term, ack.view_version);
        let diverged =
            self.view.stamp() == (ack.term, ack.view_version) && self.view.digest() != ack.digest;
        // Pushed, a member behind has lost a delta and asks for the view.
        // Relayed or pulled, being behind is normal (the delta is on its
        // way, or waits for the next heartbeat): the leader sends what is
        // missing when a heartbeat shows this node still behind what the
        // ack before said, so only a node still behind that mark asks.
        let mends = self.spread_mends() && self.view.term() == ack.term;
        let version = self.view.version();
        let Some(m) = self.role.member_mut() else {
            return;
        };
        let ask = diverged
            || (behind && !mends)
            || (behind && m.behind.is_some_and(|mark| version < mark));
        m.behind = behind.then_some(ack.view_version);
        if ask {
            self.ask_snapshot(now, &l);
        }
    }

    pub(super) fn on_delta(&mut self, now: &Now, from: NodeId, d: Arc<ViewDelta>) {
        if !self.accept_view_message(now, &from, d.term) {
            return;
        }
        self.take_delta(now, &from, d);
    }

    /// Applies an accepted delta that follows this node's view. A gap is
    /// mended by the deltas between ([`Node::ask_missing`]) where views are
    /// relayed or pulled, else by a snapshot; a wrong digest after applying
    /// means a snapshot.
    pub(super) fn take_delta(&mut self, now: &Now, from: &NodeId, d: Arc<ViewDelta>) {
        if (d.term, d.version) <= self.view.stamp() {
            return;
        }
        // A peer's delta far beyond this view is not one a relay could
        // have (it would have had to be this far behind): refused, so a
        // bad peer cannot set a view's version out of the leader's reach.
        let relayed = self.leader.as_ref().is_none_or(|l| &l.id != from);
        if relayed && d.version > self.view.version().saturating_add(RELAYED_AHEAD) {
            return;
        }
        let mends = self.spread_mends();
        if self.view.stamp() != (d.term, d.base_version) {
            if mends && self.view.term() == d.term {
                self.ask_missing(now, from);
            } else if let Some(l) = self.leader.clone() {
                self.ask_snapshot(now, &l);
            }
            return;
        }
        let (term, version, digest) = (d.term, d.version, d.digest);
        let changes = if mends {
            // Kept to answer others, and passed on by a relay: shared.
            let changes = d.changes.clone();
            self.log.applied(d, now.mono);
            changes
        } else {
            // Decoded, the delta is this node's alone: no copy.
            Arc::unwrap_or_clone(d).changes
        };
        let mut effects = Vec::new();
        for c in changes {
            if let Some(e) = self.view.apply(c) {
                effects.push(e);
            }
        }
        self.view.set_stamp(term, version);
        self.emit_view_changes(effects);
        if self.view.digest() != digest {
            if let Some(l) = self.leader.clone() {
                if let Some(m) = self.role.member_mut() {
                    m.snapshot_asked = None;
                }
                self.ask_snapshot(now, &l);
            }
        }
    }

    pub(super) fn on_snapshot(&mut self, now: &Now, from: NodeId, s: ViewSnapshot) {
        let via = !self.role.is_leader()
            && self.leader.as_ref().is_some_and(|l| l.term == s.term)
            && self
                .role
                .member()
                .is_some_and(|m| m.snapshot_via.as_ref() == Some(&from));
        if !via && !self.accept_leader_message(now, &from, s.term) {
            return;
        }
        let stale = (s.term, s.version) < self.view.stamp()
            || ((s.term, s.version) == self.view.stamp() && s.digest == self.view.digest());
        if stale
            && !self
                .lease
                .seeded(crate::seeded::SeededBug::SnapshotIgnoresStamp)
        {
            return;
        }
        let max_members = 1 << 20;
        let Some(m) = self.role.member_mut() else {
            return;
        };
        if let Some((term, version, _digest, members)) = m.assembly.add(s, max_members) {
            m.snapshot_asked = None;
            let changes = self.view.replace(term, version, members);
            self.log.clear();
            self.emit_view_changes(changes);
        }
    }

    /// The followed leader released its lease: forget it at once.
    pub(super) fn on_resigned(
        &mut self,
        now: &Now,
        from: &NodeId,
        term: Term,
        (expires_ns, version): (u64, u64),
    ) {
        let ours = self
            .leader
            .as_ref()
            .is_some_and(|l| &l.id == from && l.term == term);
        if ours && !self.role.is_leader() {
            self.lose_leader(now, term);
            self.lease.learn_from_leader(LeaseRow {
                holder: None,
                token: term,
                expires_ns,
                version,
            });
            // Candidates race for the released row at once; the
            // others learn the successor from its first snapshot (a
            // claim they confirm) or, failing that, from a read.
            if !self.lease.is_candidate() {
                let at = now.mono + self.cfg.failure_timeout / 2 + self.read_spread();
                self.lease.want_read(at);
            }
        }
    }

    pub(super) fn follow(&mut self, now: &Now, h: Holder, term: Term) {
        self.stats.leader_changes += 1;
        self.last_followed = Some(h.id.clone());
        self.leader = Some(LeaderInfo {
            id: h.id.clone(),
            addr: h.addr.clone(),
            incarnation: h.nonce,
            term,
        });
        // Followed only while not leading, so there is a member state.
        if let Some(m) = self.role.member_mut() {
            m.followed(now.mono);
        }
        self.event(Event::LeaderChanged {
            leader: Some(h.id),
            term,
        });
    }

    /// Forgets the leader this node knew, says so, and looks in the store
    /// for the next every failure timeout until it finds one.
    pub(super) fn lose_leader(&mut self, now: &Now, term: Term) {
        self.leader = None;
        if let Some(m) = self.role.member_mut() {
            m.look_at(now.mono + self.cfg.failure_timeout);
        }
        self.event(Event::LeaderChanged { leader: None, term });
    }

    /// The metadata changed: a leader authors its own entry, a member
    /// heartbeats it now.
    pub(super) fn meta_changed(&mut self, now: &Now) {
        match &mut self.role {
            // The leader authors its own entry directly.
            Role::Leader(_) => self.upsert_self(now),
            Role::Member(m) | Role::Left(m) => m.next_heartbeat = now.mono,
        }
    }

    /// Stops competing for good, tells the leader, and stops heartbeating.
    pub(super) fn leave_group(&mut self, now: &Now) {
        self.drop_permits();
        self.lease.resign(now, Duration::MAX / 4);
        self.lease.set_candidate(false);
        if let Some(l) = self.following() {
            let (id, addr) = (l.id.clone(), l.addr.clone());
            self.transmit(
                id,
                Some(addr),
                Message::Leave {
                    incarnation: self.me.incarnation,
                },
            );
        }
        self.role.leave();
    }
}

/// How far beyond this node's view version a delta from a peer other than
/// the leader may be (at a 20 ms batch window, 20 s of deltas: far more
/// than a member taking relayed deltas falls behind).
const RELAYED_AHEAD: u64 = 1024;
