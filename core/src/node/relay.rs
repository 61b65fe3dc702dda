//! What every node does to spread a view change it did not author: pass
//! a relayed delta on down its part of the id range, keep the deltas it
//! applied, and answer a member that asks what it missed. Deltas are only
//! ever the leader's; a relay never changes one, and a member takes one
//! from a relay only under the term it follows.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::config::ViewSpread;
use crate::id::{NodeId, Term};
use crate::spread::{legs, Leg};
use crate::time::Now;
use crate::wire::{Message, ViewDelta};

use super::role::{LeaderState, Role};
use super::Node;

impl Node {
    /// Whether views travel by relay or pull at this view's size: then
    /// every node keeps its recent deltas, a gap is mended by asking for
    /// the missing deltas, and the leader answers a heartbeat that shows
    /// a member behind with what it lacks.
    pub(super) fn spread_mends(&self) -> bool {
        match self.cfg.view_spread {
            ViewSpread::Push => false,
            ViewSpread::Relay { above, .. } => self.view.len() > above,
            ViewSpread::Pull => true,
        }
    }

    /// The relay fanout in force (the default one where views are pulled
    /// or pushed).
    pub(super) fn relay_fanout(&self) -> u16 {
        match self.cfg.view_spread {
            ViewSpread::Relay { fanout, .. } => fanout,
            _ => ViewSpread::DEFAULT_FANOUT,
        }
    }

    /// How long a delta may be on its way down the relays before a member
    /// whose heartbeat shows it lacks one counts as having lost it: five
    /// batch windows, at least 50 ms, at most half a heartbeat interval
    /// (so the heartbeat after the ack that showed the gap mends it).
    pub(super) fn relay_grace(&self) -> core::time::Duration {
        (self.cfg.batch_window * 5)
            .max(core::time::Duration::from_millis(50))
            .min(self.cfg.heartbeat_interval / 2)
    }

    /// A message carrying a leader's view from `from`: the leader this
    /// node follows under its term, or, unless views are pushed, a peer
    /// relaying for it under the same term. (Not only members of this
    /// node's view: a node that is behind does not know the newest
    /// members yet, and they relay too. Peers are who the transport let
    /// in; with TLS, holders of the cluster's certificates.) A higher term
    /// is a claim, as ever.
    pub(super) fn accept_view_message(&mut self, now: &Now, from: &NodeId, term: Term) -> bool {
        if self.leader.as_ref().is_some_and(|l| &l.id == from) {
            return self.accept_leader_message(now, from, term);
        }
        let relayed = self.cfg.view_spread != ViewSpread::Push
            && !self.role.is_leader()
            && self.leader.as_ref().is_some_and(|l| l.term == term);
        if !relayed && term > self.term() {
            self.claim(now, term);
        }
        relayed
    }

    /// A delta to apply and pass on within `[lo, until)`.
    pub(super) fn on_relay(
        &mut self,
        now: &Now,
        from: NodeId,
        delta: Arc<ViewDelta>,
        (lo, until): (Option<NodeId>, Option<NodeId>),
        fanout: u16,
    ) {
        if !self.accept_view_message(now, &from, delta.term) {
            return;
        }
        // Applied first where it can be, so members who join in this very
        // delta are passed it too; passed on in any case, so a gap here
        // does not become a gap below.
        self.take_delta(now, &from, delta.clone());
        self.pass_on(&delta, (lo.as_ref(), until.as_ref()), fanout);
    }

    /// Sends `delta` on to this node's part of `range`, as
    /// [`crate::spread::legs`] cuts it.
    pub(super) fn pass_on(
        &mut self,
        delta: &Arc<ViewDelta>,
        range: (Option<&NodeId>, Option<&NodeId>),
        fanout: u16,
    ) {
        let Some(leader) = self.leader.as_ref().map(|l| l.id.clone()) else {
            return;
        };
        // The leader picks relays that hold its view; a member knows no
        // better than its own view.
        let roster = match &self.role {
            Role::Leader(LeaderState { roster, .. }) => Some(roster),
            _ => None,
        };
        let fit = |m: &crate::view::Member| roster.is_none_or(|r| r.holds_view(&m.id));
        let sends: Vec<(NodeId, String, Message)> = legs(
            &self.view,
            &self.me.id,
            &leader,
            range,
            fanout,
            delta.version,
            &fit,
        )
        .into_iter()
        .map(|leg| match leg {
            Leg::Plain(m) => (
                m.id.clone(),
                m.addr.clone(),
                Message::ViewDelta(delta.clone()),
            ),
            Leg::Relay { to, from, until } => (
                to.id.clone(),
                to.addr.clone(),
                Message::RelayDelta {
                    delta: delta.clone(),
                    from,
                    until,
                    fanout,
                },
            ),
        })
        .collect();
        for (id, addr, msg) in sends {
            self.transmit(id, Some(addr), msg);
        }
    }

    /// Someone asks for the deltas of `term` after `after`: sent from the
    /// log where it holds them; a leader that does not sends the whole
    /// view instead. Only members are answered.
    pub(super) fn on_delta_request(&mut self, now: &Now, from: &NodeId, term: Term, after: u64) {
        if term != self.view.term() || !self.view.contains(from) {
            return;
        }
        let leading = self.role.is_leader() && self.lease.is_leader(now);
        self.send_missing(now, from, self.addr_of(from), after, leading);
    }

    /// Sends `to` the deltas after `after` of this view's term, or, when
    /// the log lacks them and this node is `leading`, the whole view (as
    /// [`Node::give_snapshot`] does).
    pub(super) fn send_missing(
        &mut self,
        now: &Now,
        to: &NodeId,
        addr: Option<String>,
        after: u64,
        leading: bool,
    ) {
        match self.log.after(self.view.term(), after) {
            Some(deltas) => {
                for d in deltas {
                    self.transmit(to.clone(), addr.clone(), Message::ViewDelta(d));
                }
            }
            None if leading && after < self.view.version() => self.give_snapshot(now, to),
            None => {}
        }
    }

    /// A delta that does not follow this node's view arrived from `from`:
    /// ask a member picked at random for the ones between. (Not the
    /// sender: it relays the same run of ids this node is in, which a dead
    /// relay above cut off from the missing delta as a whole.) Still the
    /// same gap a relay grace later, ask the leader, and the leader again
    /// each half heartbeat interval.
    pub(super) fn ask_missing(&mut self, now: &Now, from: &NodeId) {
        let gap = (self.view.term(), self.view.version());
        let (grace, again) = (self.relay_grace(), self.cfg.heartbeat_interval / 2);
        let Some(leader) = self.following().map(|l| (l.id.clone(), l.addr.clone())) else {
            return;
        };
        let Some(m) = self.role.member_mut() else {
            return;
        };
        let ask = match m.missing_asked {
            Some((g, _, _)) if g != gap => Some(false),
            None => Some(false),
            Some((_, at, to_leader)) => {
                let waited = now.mono.saturating_since(at);
                match to_leader {
                    false if waited >= grace => Some(true),
                    true if waited >= again => Some(true),
                    _ => None,
                }
            }
        };
        let Some(to_leader) = ask else {
            return;
        };
        m.missing_asked = Some((gap, now.mono, to_leader));
        let n = self.view.len() as u64;
        let pick = self.rng.below(n.max(1)) as usize;
        let peer = (!to_leader)
            .then(|| self.view.members().nth(pick))
            .flatten()
            .filter(|p| p.id != self.me.id && &p.id != from && p.id != leader.0)
            .map(|p| (p.id.clone(), Some(p.addr.clone())));
        let (to, addr) = peer.unwrap_or((leader.0, Some(leader.1)));
        self.transmit(
            to,
            addr,
            Message::DeltaRequest {
                term: gap.0,
                after: gap.1,
            },
        );
    }

    /// The leader sent this node to `id` for its snapshot: ask it, and
    /// take its chunks as the leader's.
    pub(super) fn on_snapshot_from(
        &mut self,
        now: &Now,
        from: &NodeId,
        term: Term,
        (id, addr): (NodeId, String),
    ) {
        if id == self.me.id || !self.accept_leader_message(now, from, term) {
            return;
        }
        let Some(m) = self.role.member_mut() else {
            return;
        };
        m.snapshot_via = Some(id.clone());
        self.transmit(id, Some(addr), Message::SnapshotRequest { term });
    }

    /// A member (not the leader) is asked for its view of `term`, which a
    /// leader sends joiners to: served when it follows that term's leader
    /// and holds its view, at most [`SERVED_PER_HEARTBEAT`] times a
    /// heartbeat interval, so nobody can make a member a snapshot pump.
    pub(super) fn serve_snapshot(&mut self, now: &Now, from: &NodeId, term: Term) {
        let ours = self.leader.as_ref().is_some_and(|l| l.term == term)
            && self.view.term() == term
            && self.spread_mends();
        let every = self.cfg.heartbeat_interval;
        let Some(m) = self.role.member_mut() else {
            return;
        };
        if ours && m.served.take(now.mono, every, SERVED_PER_HEARTBEAT) {
            self.send_snapshot(from);
        }
    }
}

/// Snapshots a member serves others per heartbeat interval at most.
const SERVED_PER_HEARTBEAT: u32 = 16;
