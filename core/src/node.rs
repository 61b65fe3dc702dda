//! The node: one state machine that owns the lease decisions, the
//! membership view, messaging and streams, and turns inputs into outputs.
//!
//! ```text
//! node.handle(now, Input::…);             // a message, a lease result, a tick
//! while let Some(out) = node.poll() { … } // Transmit / Lease / Event
//! let deadline = node.poll_timeout();     // when to handle(Input::Tick) next
//! ```
//!
//! The node never sleeps, reads a clock, or does I/O; same inputs and seed
//! give the same outputs. Outputs must be drained after every call.

use alloc::collections::{BTreeSet, VecDeque};
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use crate::config::{Config, ConfigError};
use crate::id::{Identity, NodeId, Term};
use crate::lease::{Lease, LeaseNote, NotLeadingReason, StepDownReason};
use crate::membership::{members_per_chunk, snapshot_chunks, Assembly, Roster};
use crate::messaging::{
    due, reply_body, BroadcastError, BroadcastId, Broadcasts, Dedupe, DedupeVerdict, RequestId,
    Requests, SeenBroadcasts, SendError, SendReply,
};
use crate::payload::Payload;
use crate::rng::Rng;
use crate::store::{Holder, LeaseOp, LeaseReply, LeaseRow, OpId, StoreError};
use crate::stream::{kind_accepted, Incoming, StreamError, StreamId, Streams};
use crate::time::{MonoTime, Now};
use crate::view::{Member, MemberChange, View};
use crate::wire::{
    Heartbeat, HeartbeatAck, LeaderHint, Message, ReplyBody, StreamKind, ViewDelta, ViewSnapshot,
};

/// Something that happened to the node, for the driver to carry to it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input {
    /// Time passed (a timer from [`Node::poll_timeout`] fired, or any wakeup).
    Tick,
    /// A message from a peer whose handshake succeeded.
    Message {
        /// The peer's node id, as its hello said.
        from: NodeId,
        /// The message.
        msg: Message,
    },
    /// The answer to a [`LeaseOp`].
    Lease {
        /// The operation answered.
        op: OpId,
        /// The store's answer, or why there is none.
        result: Result<LeaseReply, StoreError>,
    },
    /// The connection to a peer was lost (streams with it are reset).
    PeerLost {
        /// The peer.
        peer: NodeId,
    },
}

/// Something the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Send `msg` to `to`, over the existing connection to it, or by dialing
    /// `addr` when there is none.
    Transmit {
        /// The peer.
        to: NodeId,
        /// Where to dial if not connected (`None`: reply on the connection
        /// the peer opened).
        addr: Option<String>,
        /// The message.
        msg: Message,
    },
    /// Execute a store operation and answer with [`Input::Lease`].
    Lease(LeaseOp),
    /// Tell the application.
    Event(Event),
}

/// The leader as this node knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderInfo {
    /// Its id.
    pub id: NodeId,
    /// Its address.
    pub addr: String,
    /// Its incarnation (the lease nonce).
    pub incarnation: u64,
    /// Its term, confirmed by the store.
    pub term: Term,
}

/// Hands a request delivered to the leader back with the reply.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestHandle {
    /// Sender.
    pub from: NodeId,
    /// Sender's incarnation.
    pub incarnation: u64,
    /// Sender's request id: across a failover a retried request can reach
    /// a new leader after the old one handled it, so applications that must
    /// not act twice dedupe on `(from, incarnation, id)`.
    pub id: u64,
    /// The term under which this leader handles it (its fencing token).
    pub term: Term,
}

/// Hands a broadcast delivered to a member back with the reply.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BroadcastHandle {
    /// Sender.
    pub from: NodeId,
    /// Sender's incarnation.
    pub incarnation: u64,
    /// Broadcast id.
    pub id: u64,
}

/// Where a stream goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamTarget {
    /// The current leader (accepted only while it leads).
    Leader,
    /// One member of the view (a leg of a broadcast stream).
    Member(NodeId),
}

/// What the node tells the application.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// This node became leader under `term`.
    Elected {
        /// The term (fencing token).
        term: Term,
    },
    /// This node stopped leading.
    SteppedDown {
        /// The term it led.
        term: Term,
        /// Why.
        reason: StepDownReason,
    },
    /// The leader this node follows changed (`None`: none known).
    LeaderChanged {
        /// The new leader.
        leader: Option<NodeId>,
        /// Its term.
        term: Term,
    },
    /// Membership changed.
    Member(MemberChange),
    /// The view reached a new `(term, version)`.
    ViewChanged {
        /// The authoring leader's term.
        term: Term,
        /// The version.
        version: u64,
        /// Number of members.
        size: usize,
    },
    /// This node leads and a request arrived: answer with [`Node::reply`].
    Request {
        /// Give it back to [`Node::reply`].
        handle: RequestHandle,
        /// The request.
        payload: Payload,
    },
    /// A `send` finished.
    SendDone {
        /// Which.
        id: RequestId,
        /// The leader's reply or why there is none.
        result: Result<SendReply, SendError>,
    },
    /// A broadcast arrived: answer with [`Node::reply_broadcast`].
    Broadcast {
        /// Give it back to [`Node::reply_broadcast`].
        handle: BroadcastHandle,
        /// The message.
        payload: Payload,
    },
    /// One member answered a broadcast of ours (or timed out).
    BroadcastReply {
        /// Which broadcast.
        id: BroadcastId,
        /// Which member.
        from: NodeId,
        /// Its reply.
        result: Result<Payload, BroadcastError>,
    },
    /// Every member of a broadcast answered or timed out.
    BroadcastDone {
        /// Which broadcast.
        id: BroadcastId,
    },
    /// A peer opened a stream to this node.
    StreamOpened {
        /// The peer.
        from: NodeId,
        /// Its stream id.
        sid: u64,
        /// For the leader, or for any member.
        kind: StreamKind,
    },
    /// Stream bytes, in order. Call [`Node::stream_consumed`] as the
    /// application processes them, or the sender stops after one window.
    StreamData {
        /// The peer.
        from: NodeId,
        /// Its stream id.
        sid: u64,
        /// Offset of `data`.
        offset: u64,
        /// The bytes.
        data: Payload,
    },
    /// An inbound stream ended cleanly.
    StreamFinished {
        /// The peer.
        from: NodeId,
        /// Its stream id.
        sid: u64,
    },
    /// An inbound stream was abandoned.
    StreamReset {
        /// The peer.
        from: NodeId,
        /// Its stream id.
        sid: u64,
        /// Why.
        reason: String,
    },
    /// One of our streams can take more data after pushing back.
    StreamWritable {
        /// Which.
        id: StreamId,
    },
    /// One of our streams was delivered in full, end included (the
    /// receiver confirmed it).
    StreamSent {
        /// Which.
        id: StreamId,
    },
    /// One of our streams was abandoned (by the peer, or the connection).
    StreamFailed {
        /// Which.
        id: StreamId,
        /// Why.
        reason: String,
    },
}

/// Metadata larger than the configured limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaTooLarge {
    /// Its size.
    pub len: usize,
    /// The limit.
    pub max: usize,
}

impl fmt::Display for MetaTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "metadata of {} bytes exceeds max_meta_len {}",
            self.len, self.max
        )
    }
}

#[cfg(feature = "std")]
impl std::error::Error for MetaTooLarge {}

/// Counters for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Messages handed to the driver.
    pub messages_sent: u64,
    /// Messages received.
    pub messages_received: u64,
    /// Store operations issued.
    pub store_ops: u64,
    /// Times this node became leader.
    pub elections_won: u64,
    /// Times the followed leader changed.
    pub leader_changes: u64,
    /// Requests currently remembered for dedupe.
    pub dedupe_entries: usize,
}

/// The hedgerow state machine of one node.
#[derive(Debug)]
pub struct Node {
    cfg: Config,
    me: Identity,
    rng: Rng,
    out: VecDeque<Output>,
    loopback: VecDeque<Message>,
    notes: Vec<LeaseNote>,
    last: Option<Now>,
    lease: Lease,
    leader: Option<LeaderInfo>,
    /// The last leader this node followed, kept after it is gone: a new
    /// leader drops it at once unless it heartbeats.
    last_followed: Option<NodeId>,
    /// The term this node is releasing; when the release lands it tells
    /// the members.
    releasing: Option<Term>,
    claim: Option<Term>,
    view: View,
    meta: Payload,
    meta_version: u64,
    next_heartbeat: MonoTime,
    last_ack: MonoTime,
    cut_off: bool,
    next_lost_read: MonoTime,
    leader_has_meta: Option<(Term, u64)>,
    snapshot_asked: Option<MonoTime>,
    assembly: Assembly,
    roster: Option<Roster>,
    unreachable_resign: bool,
    requests: Requests,
    dedupe: Dedupe,
    broadcasts: Broadcasts,
    seen_broadcasts: SeenBroadcasts,
    streams: Streams,
    left: bool,
    stats: NodeStats,
}

impl Node {
    /// A node for `identity`, with randomness from `seed` only.
    ///
    /// ```
    /// use hedgerow_core::{Config, Identity, Node, NodeId};
    /// let me = Identity { id: NodeId::new("a").unwrap(), addr: "127.0.0.1:7000".into(), incarnation: 42 };
    /// let node = Node::new(Config::local("demo"), me, 7).unwrap();
    /// assert!(node.leader().is_none());
    /// ```
    pub fn new(config: Config, identity: Identity, seed: u64) -> Result<Node, ConfigError> {
        config.validate()?;
        let holder = Holder {
            id: identity.id.clone(),
            nonce: identity.incarnation,
            addr: identity.addr.clone(),
        };
        let mut rng = Rng::new(seed);
        Ok(Node {
            lease: Lease::new(holder, &config, rng.next_u64()),
            cfg: config,
            me: identity,
            rng,
            out: VecDeque::new(),
            loopback: VecDeque::new(),
            notes: Vec::new(),
            last: None,
            leader: None,
            last_followed: None,
            releasing: None,
            claim: None,
            view: View::new(),
            meta: Payload::default(),
            meta_version: 0,
            next_heartbeat: MonoTime::ZERO,
            last_ack: MonoTime::ZERO,
            cut_off: true,
            next_lost_read: MonoTime::MAX,
            leader_has_meta: None,
            snapshot_asked: None,
            assembly: Assembly::default(),
            roster: None,
            unreachable_resign: false,
            requests: Requests::default(),
            dedupe: Dedupe::default(),
            broadcasts: Broadcasts::default(),
            seen_broadcasts: SeenBroadcasts::default(),
            streams: Streams::default(),
            left: false,
            stats: NodeStats::default(),
        })
    }

    // ---- the sans-IO contract -------------------------------------------------

    /// Feeds one input. Drain [`Node::poll`] afterwards.
    pub fn handle(&mut self, now: Now, input: Input) {
        let now = self.observe(now);
        match input {
            Input::Tick => {}
            // Our own id from outside is a misconfigured or hostile peer
            // (the handshake refuses it); never confuse it with loopback.
            Input::Message { from, .. } if from == self.me.id => {}
            Input::Message { from, msg } => {
                self.stats.messages_received += 1;
                self.on_message(&now, from, msg);
            }
            Input::Lease { op, result } => {
                let mut notes = core::mem::take(&mut self.notes);
                self.lease.on_result(&now, op, result, &mut notes);
                self.apply_notes(&now, &mut notes);
                self.notes = notes;
            }
            Input::PeerLost { peer } => self.on_peer_lost(&peer),
        }
        self.step(&now);
    }

    /// The next output, until `None`.
    pub fn poll(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When to call [`Node::handle`] with [`Input::Tick`] at the latest.
    pub fn poll_timeout(&self) -> Option<MonoTime> {
        let now = self.last.as_ref()?;
        let mut t = self.lease.next_wake(now);
        if let Some(r) = self.roster.as_ref().filter(|_| self.lease.is_leader(now)) {
            t = t.min(r.next_due());
            if r.expect_contact {
                t = t.min(r.last_contact + self.cfg.failure_timeout * self.cfg.unreachable_factor);
            }
        }
        if self.following().is_some() && !self.left {
            t = t.min(self.next_heartbeat);
            if !self.cut_off {
                t = t.min(self.last_ack + self.cfg.failure_timeout + Duration::from_nanos(1));
            }
        }
        if self.cut_off && self.roster.is_none() && !self.left {
            t = t.min(self.next_lost_read);
        }
        t = t
            .min(self.requests.next_due())
            .min(self.broadcasts.next_due());
        (t != MonoTime::MAX).then_some(t.max(now.mono))
    }

    // ---- queries ---------------------------------------------------------------

    /// This node's identity.
    pub fn identity(&self) -> &Identity {
        &self.me
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Whether this node leads at `now`: answered from this reading against
    /// the stored expiry, never from a cached flag, so a process paused past
    /// its lease answers "no" at once.
    pub fn is_leader(&self, now: &Now) -> bool {
        self.lease.is_leader(now)
    }

    /// This node's own lease claim `(term, expires_ns)`, if it holds one
    /// (check [`Node::is_leader`] for whether it is still valid).
    pub fn lease_claim(&self) -> Option<(Term, u64)> {
        self.lease.claim()
    }

    /// Why this node does not lead at `now`, if it does not.
    pub fn not_leading_reason(&self, now: &Now) -> Option<NotLeadingReason> {
        self.lease.not_leading_reason(now)
    }

    /// The leader this node follows (itself when leading), if known.
    pub fn leader(&self) -> Option<&LeaderInfo> {
        self.leader.as_ref()
    }

    /// The highest term confirmed to this node.
    pub fn term(&self) -> Term {
        let row = self.lease.row().map_or(Term(0), |r| r.token);
        let led = self.leader.as_ref().map_or(Term(0), |l| l.term);
        row.max(led).max(self.view.term())
    }

    /// The current view.
    pub fn view(&self) -> &View {
        &self.view
    }

    /// Whether the view may be out of date: no leader known, or the leader
    /// has not answered for a failure timeout. A cut-off node says so
    /// instead of leading a group of its own.
    pub fn view_is_stale(&self) -> bool {
        if self.roster.is_some() {
            return false;
        }
        self.leader.is_none()
            || self.cut_off
            || self.view.term() < self.leader.as_ref().map_or(Term(0), |l| l.term)
    }

    /// Counters.
    pub fn stats(&self) -> NodeStats {
        NodeStats {
            dedupe_entries: self.dedupe.len(),
            ..self.stats.clone()
        }
    }

    /// Bytes buffered for one of our streams (for flow-control checks).
    pub fn stream_buffered(&self, id: StreamId) -> Option<usize> {
        self.streams.buffered(id.0)
    }

    /// Bytes delivered on an inbound stream and not yet consumed.
    pub fn stream_unconsumed(&self, from: &NodeId, sid: u64) -> Option<u64> {
        self.streams.unconsumed(from, sid)
    }

    /// Number of requests this node awaits answers for.
    pub fn requests_outstanding(&self) -> usize {
        self.requests.len()
    }

    // ---- commands --------------------------------------------------------------

    /// Sends `payload` to the leader; the answer comes as
    /// [`Event::SendDone`]. Retries (same id) until `request_timeout`,
    /// following redirects.
    pub fn send(&mut self, now: Now, payload: impl Into<Payload>) -> RequestId {
        let now = self.observe(now);
        let id = if self.requests.len() >= self.cfg.max_outstanding {
            let id = self
                .requests
                .start(Payload::default(), now.mono, Duration::ZERO);
            self.requests.remove(id);
            self.event(Event::SendDone {
                id: RequestId(id),
                result: Err(SendError::Overloaded),
            });
            id
        } else {
            self.requests
                .start(payload.into(), now.mono, self.cfg.request_timeout)
        };
        self.step(&now);
        RequestId(id)
    }

    /// Answers a request delivered by [`Event::Request`].
    pub fn reply(&mut self, now: Now, handle: RequestHandle, result: Result<Payload, String>) {
        let now = self.observe(now);
        let body = reply_body(handle.term, result);
        self.dedupe.complete(
            &(handle.from.clone(), handle.incarnation, handle.id),
            body.clone(),
        );
        self.transmit(
            handle.from,
            None,
            Message::Reply {
                id: handle.id,
                body,
            },
        );
        self.step(&now);
    }

    /// Sends `payload` to every member of the current view, this node
    /// included; answers come as [`Event::BroadcastReply`] then
    /// [`Event::BroadcastDone`].
    pub fn broadcast(&mut self, now: Now, payload: impl Into<Payload>) -> BroadcastId {
        let now = self.observe(now);
        let payload = payload.into();
        let mut targets: BTreeSet<NodeId> = self.view.members().map(|m| m.id.clone()).collect();
        targets.insert(self.me.id.clone());
        let id = self
            .broadcasts
            .start(targets.clone(), now.mono + self.cfg.broadcast_timeout);
        for to in targets {
            let addr = self.addr_of(&to);
            self.transmit(
                to,
                addr,
                Message::Broadcast {
                    id,
                    incarnation: self.me.incarnation,
                    payload: payload.clone(),
                },
            );
        }
        self.step(&now);
        BroadcastId(id)
    }

    /// Answers a broadcast delivered by [`Event::Broadcast`].
    pub fn reply_broadcast(
        &mut self,
        now: Now,
        handle: BroadcastHandle,
        result: Result<Payload, String>,
    ) {
        let now = self.observe(now);
        self.transmit(
            handle.from,
            None,
            Message::BroadcastReply {
                id: handle.id,
                result,
            },
        );
        self.step(&now);
    }

    /// Opens a stream; write with [`Node::stream_write`].
    pub fn open_stream(&mut self, now: Now, target: StreamTarget) -> Result<StreamId, StreamError> {
        let now = self.observe(now);
        if self.streams.open_count() >= self.cfg.max_streams {
            return Err(StreamError::TooMany);
        }
        let (peer, addr, kind, term) = match target {
            StreamTarget::Leader => {
                let l = self.leader.as_ref().ok_or(StreamError::NoLeader)?;
                (
                    l.id.clone(),
                    Some(l.addr.clone()),
                    StreamKind::ToLeader,
                    l.term,
                )
            }
            StreamTarget::Member(id) => {
                let addr = self.addr_of(&id);
                (id, addr, StreamKind::ToMember, self.term())
            }
        };
        let sid = self.streams.open(peer.clone(), addr.clone());
        self.transmit(peer, addr, Message::StreamOpen { sid, kind, term });
        self.step(&now);
        Ok(StreamId(sid))
    }

    /// Buffers bytes for a stream; returns how many were taken from the
    /// front of `data` (fewer than offered when the send buffer is full:
    /// wait for [`Event::StreamWritable`]). A [`Payload`] (or `Vec<u8>`,
    /// or [`bytes::Bytes`]) is kept shared, not copied, until it is sent.
    pub fn stream_write(
        &mut self,
        now: Now,
        id: StreamId,
        data: impl Into<Payload>,
    ) -> Result<usize, StreamError> {
        let now = self.observe(now);
        let n = self
            .streams
            .write(id.0, data.into(), self.cfg.stream_send_buffer)?;
        self.flush_stream(id.0);
        self.step(&now);
        Ok(n)
    }

    /// Ends a stream once its buffered bytes are sent.
    pub fn stream_finish(&mut self, now: Now, id: StreamId) -> Result<(), StreamError> {
        let now = self.observe(now);
        self.streams.finish(id.0)?;
        self.flush_stream(id.0);
        self.step(&now);
        Ok(())
    }

    /// Abandons one of our streams.
    pub fn stream_reset(&mut self, now: Now, id: StreamId, reason: &str) {
        let now = self.observe(now);
        if let Some(s) = self.streams.reset_sending(id.0) {
            self.transmit(
                s.peer,
                s.addr,
                Message::StreamReset {
                    sid: id.0,
                    yours: false,
                    reason: reason.into(),
                },
            );
        }
        self.step(&now);
    }

    /// The application processed `n` bytes of an inbound stream; grants the
    /// sender more credit.
    pub fn stream_consumed(&mut self, now: Now, from: &NodeId, sid: u64, n: usize) {
        let now = self.observe(now);
        if let Some(limit) = self
            .streams
            .consumed(from, sid, n as u64, self.cfg.stream_window)
        {
            self.transmit(from.clone(), None, Message::StreamCredit { sid, limit });
        }
        self.step(&now);
    }

    /// Sets this node's metadata; it reaches the leader with the next
    /// heartbeat and every member with the next view.
    pub fn set_meta(&mut self, now: Now, meta: impl Into<Payload>) -> Result<(), MetaTooLarge> {
        // The reading counts even when the metadata is refused: like every
        // call that takes one, this one moves the node's time forward (a
        // refusal that skipped it left `poll_timeout` behind the caller's
        // clock; found by the node fuzz target).
        let now = self.observe(now);
        let meta = meta.into();
        if meta.len() > self.cfg.max_meta_len {
            self.step(&now);
            return Err(MetaTooLarge {
                len: meta.len(),
                max: self.cfg.max_meta_len,
            });
        }
        self.meta = meta;
        self.meta_version += 1;
        if self.roster.is_some() {
            // The leader authors its own entry directly.
            self.upsert_self();
        } else {
            self.next_heartbeat = now.mono;
        }
        self.step(&now);
        Ok(())
    }

    /// Releases the lease now if held (e.g. before a rolling deploy
    /// replaces this pod) and stays out of the race for one lease duration.
    pub fn resign(&mut self, now: Now) {
        let now = self.observe(now);
        self.lease.resign(&now, self.cfg.lease_duration);
        self.step(&now);
    }

    /// Leaves the group for good: releases the lease if held, tells the
    /// leader, and stops heartbeating and competing.
    pub fn leave(&mut self, now: Now) {
        let now = self.observe(now);
        self.lease.resign(&now, Duration::MAX / 4);
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
        self.left = true;
        self.step(&now);
    }

    /// Whether this node competes for the lease.
    pub fn is_candidate(&self) -> bool {
        self.lease.is_candidate()
    }

    /// Whether this node may compete for the lease.
    pub fn set_candidate(&mut self, candidate: bool) {
        if !self.left {
            self.lease.set_candidate(candidate);
        }
    }

    // ---- internals -------------------------------------------------------------

    fn observe(&mut self, mut now: Now) -> Now {
        match &self.last {
            // Monotonic time never goes backwards, whatever the driver says.
            Some(last) => now.mono = now.mono.max(last.mono),
            None => {
                // A fleet that starts together spreads its first reads.
                let at = now.mono + self.jitter(self.cfg.takeover_jitter);
                self.lease.delay_read(at);
                // A node starts with no leader: it looks in the store again
                // every failure timeout until it finds one, as after losing
                // one. A member that cannot take over itself (not a
                // candidate, or a clock that may not lead) would otherwise
                // never find the leader elected after it started.
                self.next_lost_read = now.mono + self.cfg.failure_timeout;
            }
        }
        self.last = Some(now);
        now
    }

    fn event(&mut self, e: Event) {
        self.out.push_back(Output::Event(e));
    }

    fn transmit(&mut self, to: NodeId, addr: Option<String>, msg: Message) {
        if to == self.me.id {
            self.loopback.push_back(msg);
            return;
        }
        self.stats.messages_sent += 1;
        self.out.push_back(Output::Transmit { to, addr, msg });
    }

    fn addr_of(&self, id: &NodeId) -> Option<String> {
        self.view.get(id).map(|m| m.addr.clone())
    }

    /// The leader this node heartbeats (not itself).
    fn following(&self) -> Option<&LeaderInfo> {
        self.leader.as_ref().filter(|l| l.id != self.me.id)
    }

    fn jitter(&mut self, max: Duration) -> Duration {
        Duration::from_nanos(self.rng.below(crate::time::duration_nanos(max).max(1)))
    }

    /// How widely to spread store reads that many members may make at
    /// once (after a failover), so the store is not hit all at once.
    fn read_spread(&mut self) -> Duration {
        let spread = self.cfg.takeover_jitter + Duration::from_millis(self.view.len() as u64);
        let spread = spread.min(self.cfg.failure_timeout / 2);
        self.jitter(spread)
    }

    fn step(&mut self, now: &Now) {
        // Messages to ourselves are handled like any other, bounded so a
        // bug cannot spin forever.
        for _ in 0..1024 {
            let Some(msg) = self.loopback.pop_front() else {
                break;
            };
            let from = self.me.id.clone();
            self.on_message(now, from, msg);
        }
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
        self.step_leader(now);
        self.step_member(now);
        self.step_requests(now);
        self.step_broadcasts(now);
        for _ in 0..1024 {
            let Some(msg) = self.loopback.pop_front() else {
                break;
            };
            let from = self.me.id.clone();
            self.on_message(now, from, msg);
        }
    }

    fn apply_notes(&mut self, now: &Now, notes: &mut Vec<LeaseNote>) {
        for note in notes.drain(..) {
            match note {
                LeaseNote::Elected(term) => self.become_leader(now, term),
                LeaseNote::SteppedDown(term, reason) => {
                    let reason = if reason == StepDownReason::Resigned && self.unreachable_resign {
                        StepDownReason::Unreachable
                    } else {
                        reason
                    };
                    self.unreachable_resign = false;
                    if reason == StepDownReason::Resigned || reason == StepDownReason::Unreachable {
                        self.releasing = Some(term);
                    }
                    self.roster = None;
                    self.event(Event::SteppedDown { term, reason });
                    if self.leader.as_ref().is_some_and(|l| l.id == self.me.id) {
                        self.leader = None;
                        self.event(Event::LeaderChanged { leader: None, term });
                    }
                    // Without a leader this node looks in the store every
                    // failure timeout until it finds one (a successor's
                    // first snapshot may be lost).
                    self.cut_off = true;
                    self.next_lost_read = now.mono + self.cfg.failure_timeout;
                    let at = now.mono + self.read_spread();
                    self.lease.want_read(at);
                }
                LeaseNote::Row(row) => self.on_row(now, row),
            }
        }
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
                if newer && self.roster.is_none() {
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
                    self.leader = None;
                    self.cut_off = true;
                    self.next_lost_read = now.mono + self.cfg.failure_timeout;
                    self.event(Event::LeaderChanged {
                        leader: None,
                        term: row.token,
                    });
                }
            }
        }
    }

    fn follow(&mut self, now: &Now, h: Holder, term: Term) {
        self.stats.leader_changes += 1;
        self.last_followed = Some(h.id.clone());
        self.leader = Some(LeaderInfo {
            id: h.id.clone(),
            addr: h.addr.clone(),
            incarnation: h.nonce,
            term,
        });
        self.last_ack = now.mono;
        self.cut_off = false;
        self.next_heartbeat = now.mono;
        self.leader_has_meta = None;
        self.snapshot_asked = None;
        self.event(Event::LeaderChanged {
            leader: Some(h.id),
            term,
        });
    }

    fn become_leader(&mut self, now: &Now, term: Term) {
        self.stats.elections_won += 1;
        let previous = self.last_followed.clone().filter(|id| id != &self.me.id);
        self.leader = Some(LeaderInfo {
            id: self.me.id.clone(),
            addr: self.me.addr.clone(),
            incarnation: self.me.incarnation,
            term,
        });
        self.claim = None;
        self.cut_off = false;
        let mut members: Vec<Member> = self
            .view
            .members()
            .filter(|m| m.id != self.me.id)
            .cloned()
            .collect();
        members.push(self.self_member());
        let version = if term > self.view.term() {
            1
        } else {
            self.view.version() + 1
        };
        let changes = self.view.replace(term, version, members);
        self.roster = Some(Roster::new(
            term,
            &self.view,
            &self.me.id,
            previous.as_ref(),
            now.mono,
            self.cfg.failure_timeout,
        ));
        self.event(Event::Elected { term });
        self.event(Event::LeaderChanged {
            leader: Some(self.me.id.clone()),
            term,
        });
        self.emit_view_changes(changes);
        // The first view of a term is always a full snapshot.
        let targets: Vec<NodeId> = self.view.members().map(|m| m.id.clone()).collect();
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
    fn upsert_self(&mut self) {
        let change = crate::view::Change::Upsert(self.self_member());
        let base = self.view.version();
        if let Some(e) = self.view.apply(change.clone()) {
            let term = self.view.term();
            self.view.set_stamp(term, base + 1);
            let digest = self.view.digest();
            self.emit_view_changes(alloc::vec![e]);
            self.push_delta(ViewDelta {
                term,
                base_version: base,
                version: base + 1,
                digest,
                changes: alloc::vec![change],
            });
        }
    }

    fn emit_view_changes(&mut self, changes: Vec<MemberChange>) {
        self.lease.raise_floor(self.view.term());
        for c in changes {
            self.event(Event::Member(c));
        }
        self.event(Event::ViewChanged {
            term: self.view.term(),
            version: self.view.version(),
            size: self.view.len(),
        });
        // Candidates stagger takeovers by their rank in the view.
        let rank = self.view.rank_of(&self.me.id).unwrap_or(self.view.len()) as u32;
        let jitter = self.jitter(self.cfg.takeover_jitter);
        self.lease
            .set_stagger(self.cfg.takeover_stagger * rank + jitter);
    }

    fn push_delta(&mut self, delta: ViewDelta) {
        self.send_to_members(&Message::ViewDelta(Arc::new(delta)));
    }

    /// Sends `msg` to every other member of the view.
    fn send_to_members(&mut self, msg: &Message) {
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

    fn send_snapshot(&mut self, to: &NodeId) {
        if to == &self.me.id {
            return;
        }
        let addr = self.addr_of(to);
        let per = members_per_chunk(self.cfg.max_frame_len, self.cfg.max_meta_len);
        for chunk in snapshot_chunks(&self.view, per) {
            self.transmit(to.clone(), addr.clone(), Message::ViewSnapshot(chunk));
        }
    }

    fn step_leader(&mut self, now: &Now) {
        let Some(roster) = &mut self.roster else {
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
            self.push_delta(delta);
        }
        if unreachable {
            // Nobody hears us: let a reachable node lead instead.
            self.unreachable_resign = true;
            self.lease.resign(now, self.cfg.failure_timeout);
            let mut notes = core::mem::take(&mut self.notes);
            if let Some(op) = self.lease.step(now, &mut notes) {
                self.stats.store_ops += 1;
                self.out.push_back(Output::Lease(op));
            }
            self.apply_notes(now, &mut notes);
            self.notes = notes;
        }
    }

    fn step_member(&mut self, now: &Now) {
        if self.left {
            return;
        }
        if self.following().is_none() {
            if self.roster.is_none() && self.cut_off && now.mono >= self.next_lost_read {
                self.next_lost_read = now.mono + self.cfg.failure_timeout;
                let at = now.mono + self.read_spread();
                self.lease.want_read(at);
            }
            return;
        }
        if !self.cut_off && now.mono.saturating_since(self.last_ack) > self.cfg.failure_timeout {
            // The leader went quiet: look in the store for who leads now.
            self.cut_off = true;
            self.next_lost_read = now.mono;
        }
        if self.cut_off && now.mono >= self.next_lost_read {
            self.next_lost_read = now.mono + self.cfg.failure_timeout;
            let at = now.mono + self.read_spread();
            self.lease.want_read(at);
        }
        if now.mono >= self.next_heartbeat {
            // Cloned only when a heartbeat is due: it holds strings.
            let Some(l) = self.following().cloned() else {
                return;
            };
            self.next_heartbeat = now.mono + self.cfg.heartbeat_interval;
            let meta = (self.leader_has_meta != Some((l.term, self.meta_version)))
                .then(|| self.meta.clone());
            let hb = Heartbeat {
                term: l.term,
                incarnation: self.me.incarnation,
                addr: self.me.addr.clone(),
                meta_version: self.meta_version,
                meta,
                view_term: self.view.term(),
                view_version: self.view.version(),
            };
            self.transmit(l.id.clone(), Some(l.addr.clone()), Message::Heartbeat(hb));
            if self.view.term() < l.term {
                self.ask_snapshot(now, &l);
            }
        }
    }

    fn ask_snapshot(&mut self, now: &Now, l: &LeaderInfo) {
        if self
            .snapshot_asked
            .is_some_and(|at| now.mono.saturating_since(at) < self.cfg.heartbeat_interval)
        {
            return;
        }
        self.snapshot_asked = Some(now.mono);
        self.transmit(
            l.id.clone(),
            Some(l.addr.clone()),
            Message::SnapshotRequest { term: l.term },
        );
    }

    fn step_requests(&mut self, now: &Now) {
        if self.requests.next_due() > now.mono {
            return;
        }
        for id in self.requests.due(now.mono) {
            let Some(o) = self.requests.get(id) else {
                continue;
            };
            if o.deadline <= now.mono {
                let err = if o.ever_sent {
                    SendError::Timeout
                } else {
                    SendError::NoLeader
                };
                self.requests.remove(id);
                self.event(Event::SendDone {
                    id: RequestId(id),
                    result: Err(err),
                });
                continue;
            }
            match self.leader.clone() {
                Some(l) => {
                    let payload = o.payload.clone();
                    self.requests
                        .retry_at(id, now.mono + self.cfg.request_retry_interval, true);
                    let addr = (l.id != self.me.id).then_some(l.addr);
                    let settled_below = self.requests.settled_below();
                    self.transmit(
                        l.id,
                        addr,
                        Message::Request {
                            id,
                            incarnation: self.me.incarnation,
                            payload,
                            settled_below,
                        },
                    );
                }
                None => {
                    let at = now.mono + self.cfg.request_retry_interval / 4;
                    self.requests.retry_at(id, at, false);
                }
            }
        }
    }

    fn step_broadcasts(&mut self, now: &Now) {
        if self.broadcasts.next_due() > now.mono {
            return;
        }
        let ids = due(&self.broadcasts.pending, |b| b.deadline <= now.mono);
        for id in ids {
            if let Some(b) = self.broadcasts.pending.remove(&id) {
                for from in b.waiting {
                    self.event(Event::BroadcastReply {
                        id: BroadcastId(id),
                        from,
                        result: Err(BroadcastError::Timeout),
                    });
                }
                self.event(Event::BroadcastDone {
                    id: BroadcastId(id),
                });
            }
        }
    }

    fn on_message(&mut self, now: &Now, from: NodeId, msg: Message) {
        match msg {
            Message::Heartbeat(hb) => self.on_heartbeat(now, from, hb),
            Message::HeartbeatAck(ack) => self.on_ack(now, from, ack),
            Message::ViewDelta(d) => self.on_delta(now, from, d),
            Message::ViewSnapshot(s) => self.on_snapshot(now, from, s),
            Message::SnapshotRequest { term } => {
                if self.roster.is_some() && self.lease.is_leader(now) && term == self.view.term() {
                    self.send_snapshot(&from);
                }
            }
            Message::Leave { incarnation } => {
                let (ft, batch) = (self.cfg.failure_timeout, self.cfg.batch_window);
                if let Some(r) = &mut self.roster {
                    r.left(&from, incarnation, now.mono, batch, ft);
                }
            }
            Message::Request {
                id,
                incarnation,
                payload,
                settled_below,
            } => self.on_request(now, from, (id, incarnation, settled_below), payload),
            Message::Reply { id, body } => self.on_reply(now, from, id, body),
            Message::Broadcast {
                id,
                incarnation,
                payload,
            } => {
                let key = (from.clone(), incarnation, id);
                let window = self.cfg.broadcast_timeout * 2;
                if self
                    .seen_broadcasts
                    .first(key, now.mono, window, self.cfg.max_dedupe_entries)
                {
                    self.event(Event::Broadcast {
                        handle: BroadcastHandle {
                            from,
                            incarnation,
                            id,
                        },
                        payload,
                    });
                }
            }
            Message::BroadcastReply { id, result } => {
                let Some(b) = self.broadcasts.pending.get_mut(&id) else {
                    return;
                };
                if !b.waiting.remove(&from) {
                    return;
                }
                let done = b.waiting.is_empty();
                self.event(Event::BroadcastReply {
                    id: BroadcastId(id),
                    from,
                    result: result.map_err(BroadcastError::Failed),
                });
                if done {
                    self.broadcasts.pending.remove(&id);
                    self.event(Event::BroadcastDone {
                        id: BroadcastId(id),
                    });
                }
            }
            Message::StreamOpen { sid, kind, term } => {
                let leading = self.lease.is_leader(now)
                    && term == self.lease.claim().map_or(Term(0), |c| c.0);
                let reason = if !kind_accepted(kind, leading) {
                    Some("not leader")
                } else if self.streams.open_count() >= self.cfg.max_streams {
                    Some("too many streams")
                } else if !self.streams.accept(from.clone(), sid) {
                    Some("stream id reused")
                } else {
                    None
                };
                match reason {
                    Some(r) => self.transmit(
                        from,
                        None,
                        Message::StreamReset {
                            sid,
                            yours: true,
                            reason: r.to_string(),
                        },
                    ),
                    None => {
                        let initial = crate::wire::INITIAL_STREAM_CREDIT;
                        if self.cfg.stream_window > initial {
                            if let Some(limit) =
                                self.streams.consumed(&from, sid, 0, self.cfg.stream_window)
                            {
                                self.transmit(
                                    from.clone(),
                                    None,
                                    Message::StreamCredit { sid, limit },
                                );
                            }
                        }
                        self.event(Event::StreamOpened { from, sid, kind });
                    }
                }
            }
            Message::StreamData { sid, offset, data } => {
                match self.streams.receive(&from, sid, offset, data) {
                    Incoming::Data { offset, data } => self.event(Event::StreamData {
                        from,
                        sid,
                        offset,
                        data,
                    }),
                    Incoming::Reset(reason) => self.reset_inbound(from, sid, reason),
                    Incoming::Finished | Incoming::Nothing => {}
                }
            }
            Message::StreamEnd { sid, len } => match self.streams.end(&from, sid, len) {
                Incoming::Finished => {
                    self.transmit(from.clone(), None, Message::StreamDone { sid });
                    self.event(Event::StreamFinished { from, sid });
                }
                Incoming::Reset(reason) => self.reset_inbound(from, sid, reason),
                _ => {}
            },
            Message::Resigned {
                term,
                expires_ns,
                version,
            } => {
                let ours = self
                    .leader
                    .as_ref()
                    .is_some_and(|l| l.id == from && l.term == term);
                if ours && self.roster.is_none() {
                    self.leader = None;
                    self.cut_off = true;
                    self.next_lost_read = now.mono + self.cfg.failure_timeout;
                    self.lease.learn_from_leader(LeaseRow {
                        holder: None,
                        token: term,
                        expires_ns,
                        version,
                    });
                    self.event(Event::LeaderChanged { leader: None, term });
                    // Candidates race for the released row at once; the
                    // others learn the successor from its first snapshot (a
                    // claim they confirm) or, failing that, from a read.
                    if !self.lease.is_candidate() {
                        let at = now.mono + self.cfg.failure_timeout / 2 + self.read_spread();
                        self.lease.want_read(at);
                    }
                }
            }
            Message::StreamDone { sid } => {
                if self.streams.done(&from, sid) {
                    self.event(Event::StreamSent { id: StreamId(sid) });
                }
            }
            Message::StreamCredit { sid, limit } => {
                if self.streams.credit(&from, sid, limit) {
                    self.flush_stream(sid);
                }
            }
            Message::StreamReset { sid, yours, reason } => {
                if yours {
                    if self
                        .streams
                        .sending
                        .get(&sid)
                        .is_some_and(|s| s.peer == from)
                    {
                        self.streams.reset_sending(sid);
                        self.event(Event::StreamFailed {
                            id: StreamId(sid),
                            reason,
                        });
                    }
                } else if self.streams.reset_receiving(&from, sid) {
                    self.event(Event::StreamReset { from, sid, reason });
                }
            }
        }
    }

    fn reset_inbound(&mut self, from: NodeId, sid: u64, reason: String) {
        self.transmit(
            from.clone(),
            None,
            Message::StreamReset {
                sid,
                yours: true,
                reason: reason.clone(),
            },
        );
        self.event(Event::StreamReset { from, sid, reason });
    }

    fn flush_stream(&mut self, sid: u64) {
        let f = self
            .streams
            .flush(sid, self.cfg.stream_chunk, self.cfg.stream_send_buffer);
        if let Some((peer, addr)) = f.peer {
            for m in f.frames {
                self.transmit(peer.clone(), addr.clone(), m);
            }
        }
        if f.writable {
            self.event(Event::StreamWritable { id: StreamId(sid) });
        }
    }

    fn on_peer_lost(&mut self, peer: &NodeId) {
        let (out, inb) = self.streams.drop_peer(peer);
        for sid in out {
            self.event(Event::StreamFailed {
                id: StreamId(sid),
                reason: "connection to peer lost".into(),
            });
        }
        for sid in inb {
            self.event(Event::StreamReset {
                from: peer.clone(),
                sid,
                reason: "connection to peer lost".into(),
            });
        }
    }

    fn on_heartbeat(&mut self, now: &Now, from: NodeId, hb: Heartbeat) {
        if !self.lease.is_leader(now) {
            return;
        }
        let Some(roster) = &mut self.roster else {
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
        self.transmit(from, Some(hb.addr), Message::HeartbeatAck(ack));
    }

    /// A leader-authored message with `term` from `from`: true when it comes
    /// from the leader this node follows, under its confirmed term. A higher
    /// term is a claim, checked against the store before it is followed.
    fn accept_leader_message(&mut self, now: &Now, from: &NodeId, term: Term) -> bool {
        if self.roster.is_some() {
            if term > self.term() {
                self.claim(now, term);
            }
            return false;
        }
        match &self.leader {
            Some(l) if &l.id == from && l.term == term => true,
            _ if term > self.term() => {
                self.claim(now, term);
                false
            }
            _ => false,
        }
    }

    fn claim(&mut self, now: &Now, term: Term) {
        if self.claim.is_some_and(|t| t >= term) || self.lease.read_pending() {
            self.claim = Some(self.claim.map_or(term, |t| t.max(term)));
            return;
        }
        self.claim = Some(term);
        let at = now.mono + self.read_spread();
        self.lease.want_read(at);
    }

    fn on_ack(&mut self, now: &Now, from: NodeId, ack: HeartbeatAck) {
        if !self.accept_leader_message(now, &from, ack.term) {
            return;
        }
        let Some(l) = self.leader.clone() else { return };
        self.last_ack = now.mono;
        self.cut_off = false;
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
        self.leader_has_meta = ack.your_meta_version.map(|v| (ack.term, v));
        let behind = (self.view.term(), self.view.version()) < (ack.term, ack.view_version);
        let diverged =
            self.view.stamp() == (ack.term, ack.view_version) && self.view.digest() != ack.digest;
        if behind || diverged {
            self.ask_snapshot(now, &l);
        }
    }

    fn on_delta(&mut self, now: &Now, from: NodeId, d: Arc<ViewDelta>) {
        if !self.accept_leader_message(now, &from, d.term) {
            return;
        }
        if (d.term, d.version) <= self.view.stamp() {
            return;
        }
        if self.view.stamp() != (d.term, d.base_version) {
            if let Some(l) = self.leader.clone() {
                self.ask_snapshot(now, &l);
            }
            return;
        }
        // Decoded, the delta is this node's alone: no copy.
        let d = Arc::unwrap_or_clone(d);
        let mut effects = Vec::new();
        for c in d.changes {
            if let Some(e) = self.view.apply(c) {
                effects.push(e);
            }
        }
        self.view.set_stamp(d.term, d.version);
        self.emit_view_changes(effects);
        if self.view.digest() != d.digest {
            if let Some(l) = self.leader.clone() {
                self.snapshot_asked = None;
                self.ask_snapshot(now, &l);
            }
        }
    }

    fn on_snapshot(&mut self, now: &Now, from: NodeId, s: ViewSnapshot) {
        if !self.accept_leader_message(now, &from, s.term) {
            return;
        }
        if (s.term, s.version) < self.view.stamp()
            || ((s.term, s.version) == self.view.stamp() && s.digest == self.view.digest())
        {
            return;
        }
        let max_members = 1 << 20;
        if let Some((term, version, _digest, members)) = self.assembly.add(s, max_members) {
            let changes = self.view.replace(term, version, members);
            self.snapshot_asked = None;
            self.emit_view_changes(changes);
        }
    }

    /// `req` is `(id, incarnation, settled_below)` as the request carried
    /// them.
    fn on_request(&mut self, now: &Now, from: NodeId, req: (u64, u64, u64), payload: Payload) {
        let (id, incarnation, settled_below) = req;
        if !self.lease.is_leader(now) {
            let hint = self
                .leader
                .as_ref()
                .filter(|l| l.id != self.me.id)
                .map(|l| LeaderHint {
                    id: l.id.clone(),
                    addr: l.addr.clone(),
                    term: l.term,
                });
            self.transmit(
                from,
                None,
                Message::Reply {
                    id,
                    body: ReplyBody::NotLeader { hint },
                },
            );
            return;
        }
        let term = self.lease.claim().map_or(Term(0), |c| c.0);
        let key = (from.clone(), incarnation, id);
        match self.dedupe.check(
            key,
            settled_below,
            now.mono,
            self.cfg.dedupe_window,
            self.cfg.max_dedupe_entries,
        ) {
            DedupeVerdict::New => self.event(Event::Request {
                handle: RequestHandle {
                    from,
                    incarnation,
                    id,
                    term,
                },
                payload,
            }),
            DedupeVerdict::InProgress => {}
            DedupeVerdict::Replay(body) => self.transmit(from, None, Message::Reply { id, body }),
            DedupeVerdict::Full => self.refuse_request(
                from,
                (id, term),
                "leader overloaded: too many requests in the dedupe window",
            ),
            // Nobody waits for this answer: the sender settled the id.
            DedupeVerdict::Settled => self.refuse_request(
                from,
                (id, term),
                "a stray copy of a request its sender already settled",
            ),
        }
    }

    /// Answers request `id` with a failure under `term`, unhandled.
    fn refuse_request(&mut self, to: NodeId, (id, term): (u64, Term), reason: &str) {
        let body = ReplyBody::Failed {
            term,
            reason: reason.into(),
        };
        self.transmit(to, None, Message::Reply { id, body });
    }

    fn on_reply(&mut self, now: &Now, from: NodeId, id: u64, body: ReplyBody) {
        if !self.requests.contains(id) {
            return;
        }
        match body {
            ReplyBody::Ok { term, payload } => {
                self.requests.remove(id);
                self.event(Event::SendDone {
                    id: RequestId(id),
                    result: Ok(SendReply {
                        leader: from,
                        term,
                        payload,
                    }),
                });
            }
            ReplyBody::Failed { reason, .. } => {
                self.requests.remove(id);
                self.event(Event::SendDone {
                    id: RequestId(id),
                    result: Err(SendError::Failed(reason)),
                });
            }
            ReplyBody::NotLeader { hint } => {
                // Retry soon; a hint with a higher term is checked against
                // the store before this node follows it.
                if let Some(h) = hint {
                    if h.term > self.term() {
                        self.claim(now, h.term);
                    }
                }
                if let Some(o) = self.requests.get(id) {
                    let at = o
                        .next_try
                        .min(now.mono + self.cfg.request_retry_interval / 4);
                    self.requests.retry_at(id, at, false);
                }
            }
        }
    }
}
