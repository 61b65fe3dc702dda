//! Connections to peers as the driver keeps them: which connection a
//! message goes out on (dialing one when there is none, backing off after
//! failed dials), what the transport's connection events mean for that
//! bookkeeping and for the node, and writing what one wake queued in one
//! write per connection. Sockets, frames and handshakes are the
//! transport's; this book never touches them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::AbortHandle;
use hedgerow_core::{Input, Message, NodeId, Rng};

use super::Driver;
use crate::metrics::Traffic;
use crate::runtime::Runtime;
use crate::transport::{self, ConnId, NetCtx, NetEvent, Outbox, Refused};

struct Conn {
    id: ConnId,
    outbox: Arc<Outbox>,
    abort: AbortHandle,
    /// `None` while a dialed connection is not up yet.
    incarnation: Option<u64>,
}

impl Drop for Conn {
    /// Letting go of a connection writes what is queued (a goodbye, a
    /// release notice) and closes it.
    fn drop(&mut self) {
        self.outbox.close();
    }
}

struct Backoff {
    failures: u32,
    until: Instant,
}

pub(super) struct Peers {
    net: Arc<NetCtx>,
    listener: AbortHandle,
    conns: BTreeMap<NodeId, Vec<Conn>>,
    /// Outboxes this wake queued frames in, flushed once at its end.
    unflushed: Vec<Arc<Outbox>>,
    /// Wakes of the loop so far (for [`Outbox::flush`]).
    wakes: u64,
    backoff: BTreeMap<NodeId, Backoff>,
    /// Jitter for the backoff.
    rng: Rng,
    /// Frames and bytes each way, by message kind.
    traffic: Traffic,
}

impl Peers {
    pub(super) fn new(
        net: Arc<NetCtx>,
        listener: AbortHandle,
        seed: u64,
        traffic: Traffic,
    ) -> Self {
        Peers {
            net,
            listener,
            conns: BTreeMap::new(),
            unflushed: Vec::new(),
            wakes: 0,
            backoff: BTreeMap::new(),
            rng: Rng::new(seed),
            traffic,
        }
    }

    /// Queues `msg` for `to` on its first connection, or dials `addr` for
    /// it when there is none (and `to` is not in backoff).
    pub(super) fn transmit<R: Runtime>(
        &mut self,
        rt: &R,
        to: NodeId,
        addr: Option<String>,
        msg: Message,
    ) {
        if let Some(conn) = self.conns.get(&to).and_then(|c| c.first()) {
            let kind = msg.kind();
            match conn.outbox.push(msg, self.wakes + 1) {
                Ok(bytes) => {
                    let outbox = conn.outbox.clone();
                    self.mark_unflushed(outbox);
                    self.traffic.sent(kind, bytes);
                }
                Err(Refused::Full(msg)) => {
                    let kind = msg.kind();
                    tracing::warn!(peer = %to, kind, "send queue to peer is full; dropping the message");
                }
                // The connection is going down; its Down event follows.
                Err(Refused::Closed) => {}
            }
            return;
        }
        let Some(addr) = addr else {
            tracing::debug!(peer = %to, kind = msg.kind(), "no connection to answer on; dropping");
            return;
        };
        let now = rt.now();
        if self.backoff.get(&to).is_some_and(|b| now < b.until) {
            tracing::trace!(peer = %to, "peer in reconnect backoff; dropping");
            return;
        }
        self.dial(rt, to, addr, msg);
    }

    /// A new connection to `to` at `addr`, with `msg` queued first.
    fn dial<R: Runtime>(&mut self, rt: &R, to: NodeId, addr: String, msg: Message) {
        let outbox = Outbox::new(self.net.max_frame_len, self.net.limits.send_queue);
        let kind = msg.kind();
        if let Ok(bytes) = outbox.push(msg, self.wakes + 1) {
            self.traffic.sent(kind, bytes);
        }
        let id = self.net.next_conn();
        tracing::debug!(peer = %to, %addr, "dialing");
        let abort =
            transport::spawn_dial(rt, self.net.clone(), id, to.clone(), addr, outbox.clone());
        self.conns.entry(to).or_default().push(Conn {
            id,
            outbox,
            abort,
            incarnation: None,
        });
    }

    fn mark_unflushed(&mut self, outbox: Arc<Outbox>) {
        if !self
            .unflushed
            .last()
            .is_some_and(|o| Arc::ptr_eq(o, &outbox))
        {
            self.unflushed.push(outbox);
        }
    }

    /// `peer` joined the view: its connections' frames come first on the
    /// transport's frame budget from now on.
    pub(super) fn mark_member(&self, peer: &NodeId) {
        for c in self.conns.get(peer).into_iter().flatten() {
            c.outbox.mark_member();
        }
    }

    /// Writes what this wake queued, one write per connection.
    pub(super) fn flush(&mut self) {
        self.wakes += 1;
        for outbox in self.unflushed.drain(..) {
            outbox.flush(self.wakes);
        }
    }

    /// Takes in what the transport reports; what the node must hear of it
    /// comes back.
    /// `member`: the peer of a new inbound connection is in the view, so
    /// the connection is marked as a member's for the frame budget.
    pub(super) fn on_net<R: Runtime>(
        &mut self,
        rt: &R,
        e: NetEvent,
        member: bool,
    ) -> Option<Input> {
        match e {
            NetEvent::Up {
                conn,
                peer,
                incarnation,
                inbound,
            } => {
                if let (true, Some((outbox, _))) = (member, &inbound) {
                    outbox.mark_member();
                }
                self.up(conn, peer, incarnation, inbound)
            }
            NetEvent::Msg {
                conn,
                peer,
                msg,
                len,
            } => {
                self.traffic.received(msg.kind(), len);
                let known = self
                    .conns
                    .get(&peer)
                    .is_some_and(|c| c.iter().any(|c| c.id == conn));
                known.then_some(Input::Message { from: peer, msg })
            }
            NetEvent::Down {
                conn,
                peer,
                was_up,
                reason,
            } => self.down(rt, conn, peer, was_up, &reason),
        }
    }

    /// A connection's handshake succeeded; `PeerLost` if it shows the peer
    /// restarted.
    fn up(
        &mut self,
        conn: ConnId,
        peer: NodeId,
        incarnation: u64,
        inbound: Option<(Arc<Outbox>, AbortHandle)>,
    ) -> Option<Input> {
        let conns = self.conns.entry(peer.clone()).or_default();
        // Another incarnation means the peer restarted: whatever is
        // left of the old process's connections is dead.
        let before = conns.len();
        conns.retain(|c| {
            let stale = c.incarnation.is_some_and(|i| i != incarnation);
            if stale {
                c.abort.abort();
            }
            !stale
        });
        let lost = conns.len() != before;
        match inbound {
            Some((outbox, abort)) => conns.push(Conn {
                id: conn,
                outbox,
                abort,
                incarnation: Some(incarnation),
            }),
            None => {
                if let Some(c) = conns.iter_mut().find(|c| c.id == conn) {
                    c.incarnation = Some(incarnation);
                }
                self.backoff.remove(&peer);
            }
        }
        tracing::debug!(%peer, conn, "connection up");
        lost.then_some(Input::PeerLost { peer })
    }

    /// A connection ended (or a dial failed): `PeerLost` if it was one we
    /// knew.
    fn down<R: Runtime>(
        &mut self,
        rt: &R,
        conn: ConnId,
        peer: NodeId,
        was_up: bool,
        reason: &str,
    ) -> Option<Input> {
        let mut removed = false;
        if let Some(conns) = self.conns.get_mut(&peer) {
            let before = conns.len();
            conns.retain(|c| c.id != conn);
            removed = conns.len() != before;
            if conns.is_empty() {
                self.conns.remove(&peer);
            }
        }
        if !removed {
            return None;
        }
        if !was_up {
            self.back_off(rt, &peer);
        }
        tracing::debug!(%peer, conn, %reason, "connection down");
        Some(Input::PeerLost { peer })
    }

    /// Exponential backoff with jitter before the next dial to `peer`:
    /// 50 ms doubling to 5 s, times a random factor in [0.5, 1.5).
    fn back_off<R: Runtime>(&mut self, rt: &R, peer: &NodeId) {
        let failures = self.backoff.get(peer).map_or(0, |b| b.failures) + 1;
        let base = Duration::from_millis(50)
            .saturating_mul(1 << failures.min(7))
            .min(Duration::from_secs(5));
        let factor = 500 + self.rng.below(1000);
        let delay = base * u32::try_from(factor).unwrap_or(1000) / 1000;
        let until = rt.now() + delay;
        self.backoff
            .insert(peer.clone(), Backoff { failures, until });
    }

    /// What the transport counted so far.
    pub(super) fn stats(&self) -> crate::transport::TransportStats {
        self.net.stats()
    }

    /// Takes no more inbound connections.
    pub(super) fn stop_listening(&self) {
        self.listener.abort();
    }

    /// Lets go of every connection: each writes what is queued and closes.
    pub(super) fn disconnect(&mut self) {
        self.conns.clear();
    }
}

impl<R: Runtime> Driver<R> {
    /// A connection event; the node hears what it needs to.
    pub(super) fn on_net(&mut self, e: NetEvent) {
        self.on_net_all(std::iter::once(e));
    }

    /// Events that came in together (one connection's read, and what its
    /// channel held before it). The messages among them go to the node in
    /// one call, so its housekeeping runs once for a read of many frames,
    /// not once a frame. A connection coming up or going down is taken in
    /// its place: the node has the messages before it (and their outputs
    /// are carried out) before the connection books take it.
    pub(super) fn on_net_all(&mut self, events: impl IntoIterator<Item = NetEvent>) {
        let mut msgs = self.core.take_inputs();
        for e in events {
            if !matches!(e, NetEvent::Msg { .. }) {
                self.input_all(&mut msgs);
            }
            if let Some(input) = self.net_input(e) {
                msgs.push(input);
            }
        }
        self.input_all(&mut msgs);
        self.core.keep_inputs(msgs);
    }

    /// What the node is to be told of `e`, once the connection books have
    /// taken it.
    fn net_input(&mut self, e: NetEvent) -> Option<Input> {
        // Members' frames come first on the transport's frame budget: an
        // inbound connection of a peer already in the view is marked now,
        // the others when their peer joins (`Peers::mark_member`).
        let member = match &e {
            NetEvent::Up {
                peer,
                inbound: Some(_),
                ..
            } => self.core.node().view().contains(peer),
            _ => false,
        };
        self.peers.on_net(&self.rt, e, member)
    }
}
