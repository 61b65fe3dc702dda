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
//!
//! This file holds the [`Node`] itself: its fields, the public verbs (each
//! reads the time, hands the work to the room that owns it, then steps),
//! and the dispatch of inputs and messages. The work lives by role:
//! `lease` drives the lease and applies what it decides, `leader` is what
//! only a leader does, `member` what a member does to follow one,
//! `requests` and `streams` the messaging above them.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use crate::config::{Config, ConfigError};
use crate::id::{Identity, NodeId, Term};
use crate::lease::{Lease, LeaseNote, NotLeadingReason};
use crate::messaging::{BroadcastId, Broadcasts, Dedupe, RequestId, Requests, SeenBroadcasts};
use crate::payload::Payload;
use crate::rng::Rng;
use crate::spread::DeltaLog;
use crate::store::Holder;
use crate::stream::{StreamError, StreamId, Streams};
use crate::time::{MonoTime, Now};
use crate::view::{MemberChange, View};
use crate::wire::Message;

mod contract;
mod coord;
mod leader;
mod lease;
mod member;
mod relay;
mod requests;
mod role;
mod streams;
mod timers;

use role::{MemberState, Role};

/// Room for this many outputs stays allocated at a member once they are
/// drained.
const KEEP_OUTPUTS: usize = 256;

pub use contract::{
    BroadcastHandle, Event, Input, LeaderInfo, MetaTooLarge, NodeStats, NotReadyReason, Output,
    RequestHandle, StreamTarget,
};
pub use timers::Timer;

/// The hedgerow state machine of one node.
#[derive(Clone, Debug)]
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
    /// The deltas this node applied last, while views are relayed or
    /// pulled (empty otherwise).
    log: DeltaLog,
    meta: Payload,
    meta_version: u64,
    /// Leader, member, or left, with the state only that role has.
    role: Role,
    requests: Requests,
    /// The ids of requests due, kept for its allocation.
    due_scratch: Vec<u64>,
    dedupe: Dedupe,
    broadcasts: Broadcasts,
    seen_broadcasts: SeenBroadcasts,
    streams: Streams,
    /// The permits this node holds.
    held: crate::coord::member::Held,
    /// The last coordination store operation's id.
    coord_ops: u64,
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
            log: DeltaLog::default(),
            meta: Payload::default(),
            meta_version: 0,
            role: Role::Member(MemberState::looking(MonoTime::MAX)),
            requests: Requests::default(),
            due_scratch: Vec::new(),
            dedupe: Dedupe::default(),
            broadcasts: Broadcasts::default(),
            seen_broadcasts: SeenBroadcasts::default(),
            streams: Streams::default(),
            held: Default::default(),
            coord_ops: 0,
            stats: NodeStats::default(),
        })
    }

    // ---- the sans-IO contract -------------------------------------------------

    /// Feeds one input. Drain [`Node::poll`] afterwards.
    pub fn handle(&mut self, now: Now, input: Input) {
        self.handle_all(now, core::iter::once(input));
    }

    /// Feeds several inputs that came in together (the frames of one
    /// read, say), all at `now`: the same as [`Node::handle`] for each in
    /// turn, except that the node's housekeeping (timers, the lease,
    /// sending what is due) runs once, after the last, instead of after
    /// each. Nothing is lost by that: every input is already handled
    /// before the housekeeping of its own call, so each one here meets a
    /// state [`Node::handle`] could have shown it. Drain [`Node::poll`]
    /// afterwards.
    ///
    /// ```
    /// use hedgerow_core::*;
    /// let me = Identity { id: NodeId::new("a").unwrap(), addr: "127.0.0.1:7000".into(), incarnation: 1 };
    /// let mut node = Node::new(Config::local("demo"), me, 42).unwrap();
    /// let now = Now { mono: MonoTime::from_nanos(0), clock: ClockReading::synchronized(1_700_000_000_000_000_000, 1_000_000) };
    /// let peer = NodeId::new("b").unwrap();
    /// node.handle_all(now, [Input::PeerLost { peer: peer.clone() }, Input::PeerLost { peer }]);
    /// while let Some(_out) = node.poll() {}
    /// ```
    pub fn handle_all(&mut self, now: Now, inputs: impl IntoIterator<Item = Input>) {
        let now = self.observe(now);
        for input in inputs {
            self.take(&now, input);
        }
        self.step(&now);
    }

    /// One input, before the step that follows it.
    fn take(&mut self, now: &Now, input: Input) {
        match input {
            Input::Tick => {}
            // Our own id from outside is a misconfigured or hostile peer
            // (the handshake refuses it); never confuse it with loopback.
            Input::Message { from, .. } if from == self.me.id => {}
            Input::Message { from, msg } => {
                self.stats.messages_received += 1;
                self.on_message(now, from, msg);
            }
            Input::Lease { op, result } => self.on_lease_result(now, op, result),
            Input::PeerLost { peer } => self.on_peer_lost(&peer),
            Input::Coord { op, result } => self.on_coord_result(now, op, result),
        }
    }

    /// The next output, until `None`.
    pub fn poll(&mut self) -> Option<Output> {
        if self.out.is_empty() {
            self.drained();
            return None;
        }
        self.out.pop_front()
    }

    /// Moves every output into `outs`, in the order [`Node::poll`] gives
    /// them: the queue itself when `outs` is empty (the two swap, so a
    /// driver that keeps one buffer moves no output one by one), else
    /// appended to it.
    pub fn poll_into(&mut self, outs: &mut VecDeque<Output>) {
        if outs.is_empty() {
            core::mem::swap(&mut self.out, outs);
        } else {
            outs.append(&mut self.out);
        }
        if self.out.capacity() > KEEP_OUTPUTS {
            self.drained();
        }
    }

    /// A snapshot of n members queues n events at a member once; a drained
    /// queue gives that room back instead of holding it for good (n × n at
    /// rest in a process of n simulated nodes). A leader queues a transmit
    /// per member at every delta: it keeps its room rather than grow it
    /// again each time.
    #[cold]
    fn drained(&mut self) {
        if self.out.capacity() > KEEP_OUTPUTS && !self.role.is_leader() {
            self.out = VecDeque::new();
        }
    }

    /// When to call [`Node::handle`] with [`Input::Tick`] at the latest.
    pub fn poll_timeout(&self) -> Option<MonoTime> {
        let now = self.last.as_ref()?;
        let at = self.timers(now).earliest()?;
        Some(at.max(now.mono))
    }

    /// Which timer [`Node::poll_timeout`] is waiting for, and when (never
    /// before the last reading): for logs and tests that ask why a node
    /// wakes. On a tie the timer listed first in [`Timer`] is named.
    ///
    /// ```
    /// use hedgerow_core::*;
    /// let me = Identity { id: NodeId::new("a").unwrap(), addr: "127.0.0.1:7000".into(), incarnation: 1 };
    /// let mut node = Node::new(Config::local("demo"), me, 42).unwrap();
    /// let now = Now { mono: MonoTime::from_nanos(0), clock: ClockReading::synchronized(1_700_000_000_000_000_000, 1_000_000) };
    /// node.handle(now, Input::Tick);
    /// // A node starts by reading the lease row.
    /// assert!(matches!(node.next_timer(), Some((Timer::Lease, _))));
    /// ```
    pub fn next_timer(&self) -> Option<(Timer, MonoTime)> {
        let now = self.last.as_ref()?;
        let (timer, at) = self.timers(now).next()?;
        Some((timer, at.max(now.mono)))
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
        let Some(m) = self.role.member() else {
            return false;
        };
        self.leader.is_none()
            || m.cut_off
            || self.view.term() < self.leader.as_ref().map_or(Term(0), |l| l.term)
    }

    /// Why this node is not ready to serve at `now`, or `None` when it is:
    /// it leads (a valid lease at this reading), or it follows a leader
    /// that answers and whose view lists this node's incarnation under the
    /// leader's term. A leaving node is never ready, so a probe takes it
    /// out of rotation before it goes.
    pub fn not_ready_reason(&self, now: &Now) -> Option<NotReadyReason> {
        if self.role.has_left() {
            return Some(NotReadyReason::Leaving);
        }
        let Some(member) = self.role.member() else {
            return (!self.is_leader(now)).then_some(NotReadyReason::LeaseLapsed);
        };
        let Some(leader) = &self.leader else {
            return Some(NotReadyReason::NoLeader);
        };
        if member.cut_off {
            return Some(NotReadyReason::LeaderUnreachable);
        }
        if self.view.term() < leader.term {
            return Some(NotReadyReason::ViewBehindLeader);
        }
        let listed = self
            .view
            .get(&self.me.id)
            .is_some_and(|m| m.incarnation == self.me.incarnation);
        (!listed).then_some(NotReadyReason::NotInView)
    }

    /// Counters.
    pub fn stats(&self) -> NodeStats {
        NodeStats {
            dedupe_entries: self.dedupe.len(),
            permits_held: self.held.len(),
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
        let id = self.start_request(&now, payload);
        self.step(&now);
        id
    }

    /// Answers a request delivered by [`Event::Request`].
    pub fn reply(&mut self, now: Now, handle: RequestHandle, result: Result<Payload, String>) {
        self.reply_all(now, core::iter::once((handle, result)));
    }

    /// Answers several requests at `now`: the same as [`Node::reply`] for
    /// each in turn, with the housekeeping once after the last (see
    /// [`Node::handle_all`]). For a driver whose handlers answered a
    /// read's worth of requests at once.
    pub fn reply_all(
        &mut self,
        now: Now,
        answers: impl IntoIterator<Item = (RequestHandle, Result<Payload, String>)>,
    ) {
        let now = self.observe(now);
        for (handle, result) in answers {
            self.answer_request(handle, result);
        }
        self.step(&now);
    }

    /// Sends `payload` to every member of the current view, this node
    /// included; answers come as [`Event::BroadcastReply`] then
    /// [`Event::BroadcastDone`].
    pub fn broadcast(&mut self, now: Now, payload: impl Into<Payload>) -> BroadcastId {
        let now = self.observe(now);
        let id = self.start_broadcast(&now, payload.into());
        self.step(&now);
        id
    }

    /// As [`Node::broadcast`], to the members named in `to` only (hedge's
    /// `OnlySendTo`). An id that is not in the view is answered at once
    /// with [`crate::BroadcastError::NotMember`], never dropped silently.
    pub fn broadcast_to(
        &mut self,
        now: Now,
        to: &[NodeId],
        payload: impl Into<Payload>,
    ) -> BroadcastId {
        let now = self.observe(now);
        let id = self.start_broadcast_to(&now, to, payload.into());
        self.step(&now);
        id
    }

    /// Answers a broadcast delivered by [`Event::Broadcast`].
    pub fn reply_broadcast(
        &mut self,
        now: Now,
        handle: BroadcastHandle,
        result: Result<Payload, String>,
    ) {
        let now = self.observe(now);
        self.answer_broadcast(handle, result);
        self.step(&now);
    }

    /// Opens a stream; write with [`Node::stream_write`].
    pub fn open_stream(&mut self, now: Now, target: StreamTarget) -> Result<StreamId, StreamError> {
        let now = self.observe(now);
        // A refused open returns before the step, as it always has.
        let id = self.open_stream_to(target)?;
        self.step(&now);
        Ok(id)
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
        let n = self.write_stream(id, data.into())?;
        self.step(&now);
        Ok(n)
    }

    /// Ends a stream once its buffered bytes are sent.
    pub fn stream_finish(&mut self, now: Now, id: StreamId) -> Result<(), StreamError> {
        let now = self.observe(now);
        self.finish_stream(id)?;
        self.step(&now);
        Ok(())
    }

    /// Abandons one of our streams.
    pub fn stream_reset(&mut self, now: Now, id: StreamId, reason: &str) {
        let now = self.observe(now);
        self.reset_stream(id, reason);
        self.step(&now);
    }

    /// The application processed `n` bytes of an inbound stream; grants the
    /// sender more credit.
    pub fn stream_consumed(&mut self, now: Now, from: &NodeId, sid: u64, n: usize) {
        let now = self.observe(now);
        self.grant_credit(from, sid, n);
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
        self.meta_changed(&now);
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
        self.leave_group(&now);
        self.step(&now);
    }

    /// Whether this node competes for the lease.
    pub fn is_candidate(&self) -> bool {
        self.lease.is_candidate()
    }

    /// Whether this node may compete for the lease.
    pub fn set_candidate(&mut self, candidate: bool) {
        if !self.role.has_left() {
            self.lease.set_candidate(candidate);
        }
    }

    // ---- model checking (feature `model-check`) --------------------------------

    /// Makes this node carry a deliberate bug, or none: for the model
    /// checker's tests that each property catches the bug it is there for.
    #[cfg(feature = "model-check")]
    pub fn seed_bug(&mut self, bug: Option<crate::SeededBug>) {
        self.lease.seed_bug(bug);
    }

    /// Writes a canonical encoding of everything that decides this node's
    /// future behaviour, for a model checker's state hashing: two nodes
    /// with equal fingerprints answer every input alike. Every collection
    /// inside a node is ordered (`BTreeMap`, `VecDeque`, no hash maps), so
    /// the `Debug` rendering of the fields is canonical; the counters of
    /// [`Node::stats`] and the configuration are left out, since they never
    /// change what the node does.
    #[cfg(feature = "model-check")]
    pub fn fingerprint(&self, w: &mut dyn core::fmt::Write) -> core::fmt::Result {
        // Destructured, so a field added to `Node` must be placed here.
        let Node {
            cfg: _,
            me,
            rng,
            out,
            loopback,
            notes,
            last,
            lease,
            leader,
            last_followed,
            releasing,
            claim,
            view,
            log,
            meta,
            meta_version,
            role,
            requests,
            due_scratch: _,
            dedupe,
            broadcasts,
            seen_broadcasts,
            streams,
            held,
            coord_ops,
            stats: _,
        } = self;
        write!(
            w,
            "{me:?}{rng:?}{out:?}{loopback:?}{notes:?}{last:?}{lease:?}{leader:?}{last_followed:?}"
        )?;
        write!(
            w,
            "{releasing:?}{claim:?}{view:?}{meta:?}{meta_version}{role:?}{requests:?}{dedupe:?}"
        )?;
        write!(w, "{log:?}")?;
        write!(
            w,
            "{broadcasts:?}{seen_broadcasts:?}{streams:?}{held:?}{coord_ops}"
        )
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
                if let Some(m) = self.role.member_mut() {
                    m.next_lost_read = now.mono + self.cfg.failure_timeout;
                }
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

    /// After every input: what the loopback, the lease, each role and the
    /// messaging want to do at `now`.
    fn step(&mut self, now: &Now) {
        self.drain_loopback(now);
        self.step_lease(now);
        self.step_leader(now);
        self.step_member(now);
        self.step_requests(now);
        self.step_broadcasts(now);
        self.step_coord(now);
        self.drain_loopback(now);
    }

    /// Messages to ourselves are handled like any other, bounded so a bug
    /// cannot spin forever.
    fn drain_loopback(&mut self, now: &Now) {
        for _ in 0..1024 {
            let Some(msg) = self.loopback.pop_front() else {
                break;
            };
            let from = self.me.id.clone();
            self.on_message(now, from, msg);
        }
    }

    fn on_message(&mut self, now: &Now, from: NodeId, msg: Message) {
        match msg {
            Message::Heartbeat(hb) => self.on_heartbeat(now, from, hb),
            Message::HeartbeatAck(ack) => self.on_ack(now, from, ack),
            Message::ViewDelta(d) => self.on_delta(now, from, d),
            Message::ViewSnapshot(s) => self.on_snapshot(now, from, s),
            Message::SnapshotRequest { term } => self.on_snapshot_request(now, &from, term),
            Message::RelayDelta {
                delta,
                from: lo,
                until,
                fanout,
            } => self.on_relay(now, from, delta, (lo, until), fanout),
            Message::DeltaRequest { term, after } => self.on_delta_request(now, &from, term, after),
            Message::SnapshotFrom { term, id, addr } => {
                self.on_snapshot_from(now, &from, term, (id, addr))
            }
            Message::Leave { incarnation } => self.on_leave(now, &from, incarnation),
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
                to_incarnation,
            } => self.on_broadcast(now, from, (id, incarnation, to_incarnation), payload),
            Message::BroadcastReply { id, result } => self.on_broadcast_reply(from, id, result),
            Message::StreamOpen { sid, kind, term } => {
                self.on_stream_open(now, from, sid, (kind, term))
            }
            Message::StreamData { sid, offset, data } => {
                self.on_stream_data(from, sid, offset, data)
            }
            Message::StreamEnd { sid, len } => self.on_stream_end(from, sid, len),
            Message::Resigned {
                term,
                expires_ns,
                version,
            } => self.on_resigned(now, &from, term, (expires_ns, version)),
            Message::StreamDone { sid } => self.on_stream_done(&from, sid),
            Message::StreamCredit { sid, limit } => self.on_stream_credit(&from, sid, limit),
            Message::StreamReset { sid, yours, reason } => {
                self.on_stream_reset(from, sid, yours, reason)
            }
            Message::Coord {
                id,
                incarnation,
                call,
            } => self.on_coord(now, from, (id, incarnation), call),
            Message::PermitsRenewed { until_ns, permits } => {
                self.on_permits_renewed(now, &from, until_ns, permits)
            }
        }
    }

    fn emit_view_changes(&mut self, changes: Vec<MemberChange>) {
        self.lease.raise_floor(self.view.term());
        for c in changes {
            let left = match &c {
                MemberChange::Left { id, .. } => Some(id.clone()),
                _ => None,
            };
            self.event(Event::Member(c));
            if let Some(id) = left {
                self.end_broadcast_parts(&id);
                self.seen_broadcasts.forget_sender(&id);
            }
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
}
