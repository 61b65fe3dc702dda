//! The vocabulary of the sans-IO contract: what the driver hands the node
//! ([`Input`]), what it carries out ([`Output`], [`Event`]), and the
//! handles and small results the public verbs give back. Plain data: this
//! room decides nothing.

use alloc::string::String;
use core::fmt;

use crate::coord::{CoordAnswer, CoordOp, CoordReply};
use crate::id::{NodeId, Term};
use crate::lease::StepDownReason;
use crate::messaging::{BroadcastError, BroadcastId, RequestId, SendError, SendReply};
use crate::payload::Payload;
use crate::store::{LeaseOp, LeaseReply, OpId, StoreError};
use crate::stream::StreamId;
use crate::view::MemberChange;
use crate::wire::{Message, StreamKind};

#[cfg(doc)]
use super::Node;

/// Something that happened to the node, for the driver to carry to it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input {
    /// Time passed (a timer from [`Node::poll_timeout`] fired, or any wakeup).
    /// See [the driver contract](crate#the-driver-contract) on timers.
    Tick,
    /// A message from a peer whose handshake succeeded: `from` is the id
    /// its [`Hello`](crate::Hello) proved, never one read from a body. See
    /// [the driver contract](crate#the-driver-contract) on what the
    /// transport may drop, reorder or duplicate.
    Message {
        /// The peer's node id, as its hello said.
        from: NodeId,
        /// The message.
        msg: Message,
    },
    /// The answer to a [`LeaseOp`], with its [`OpId`]: every operation gets
    /// one, a failure or timeout included (see [the driver
    /// contract](crate#the-driver-contract) on the lease store).
    Lease {
        /// The operation answered.
        op: OpId,
        /// The store's answer, or why there is none.
        result: Result<LeaseReply, StoreError>,
    },
    /// The connection to a peer was lost, or the peer came back with a new
    /// incarnation: streams with it are reset. Required whenever a
    /// connection ends (see [the driver
    /// contract](crate#the-driver-contract) on the transport).
    PeerLost {
        /// The peer.
        peer: NodeId,
    },
    /// The answer to a [`CoordOp`]. Like a lease operation, every one must
    /// be answered (with a [`StoreError`] if need be); the leader keeps one
    /// out at a time.
    Coord {
        /// The operation answered.
        op: OpId,
        /// The store's answer, or why there is none.
        result: Result<CoordReply, StoreError>,
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
    /// Execute a coordination store operation (a fenced write or the
    /// permits' load) and answer with [`Input::Coord`].
    Coord(CoordOp),
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
    /// A coordination call of ours ([`Node::kv_put`], [`Node::acquire`],
    /// [`Node::release`]) finished. A granted permit is held from here
    /// until [`Event::PermitLost`] or a release; check
    /// [`Node::permit_valid`] before acting on it.
    Coord {
        /// The call's id (for an acquire, the permit's ticket).
        id: RequestId,
        /// The leader's answer, or why there is none.
        result: Result<CoordAnswer, SendError>,
    },
    /// A permit this node held lapsed (no renewal came in time: the leader
    /// is gone or unreachable, or this process was paused) or was given up
    /// by a leave. It may already be granted to another holder.
    PermitLost {
        /// The acquire's id.
        ticket: RequestId,
        /// The semaphore or lock.
        name: String,
        /// The permit's token.
        token: u64,
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

/// Why a node is not ready to serve, from [`Node::not_ready_reason`]: what
/// a readiness probe reports. A node is ready once it has joined a view
/// authored by a leader it can reach (or leads itself), and stays ready
/// while that holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotReadyReason {
    /// No leader is known yet (starting, or the last one went away).
    NoLeader,
    /// The leader has not answered for a failure timeout: the view may be
    /// out of date.
    LeaderUnreachable,
    /// The view is older than the leader's term: a snapshot is on its way.
    ViewBehindLeader,
    /// The leader's view does not list this node (this incarnation) yet.
    NotInView,
    /// This node holds the lease but its clock no longer says it is valid;
    /// it steps down at its next step.
    LeaseLapsed,
    /// This node is leaving or has left the group.
    Leaving,
}

impl fmt::Display for NotReadyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotReadyReason::NoLeader => "no leader is known yet",
            NotReadyReason::LeaderUnreachable => {
                "the leader has not answered for a failure timeout, so the view may be stale"
            }
            NotReadyReason::ViewBehindLeader => {
                "the view is older than the leader's term; waiting for its snapshot"
            }
            NotReadyReason::NotInView => "the leader's view does not list this node yet",
            NotReadyReason::LeaseLapsed => "this node's lease lapsed and it is stepping down",
            NotReadyReason::Leaving => "this node is leaving the group",
        })
    }
}

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
    /// Permits this node holds.
    pub permits_held: usize,
    /// Coordination store operations issued (as leader).
    pub coord_ops: u64,
}
