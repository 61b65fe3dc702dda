//! What travels between nodes: the handshake, the protocol messages and the
//! frame format (`u32` big-endian length prefix + postcard body). This room
//! encodes, decodes and validates shapes; it decides nothing about leases
//! or views. The decoder returns an error, never panics, on any input, and
//! checks a frame's length against the limit before anything is allocated.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use bytes::Bytes;
use core::fmt;
use serde::{Deserialize, Serialize};

use crate::coord::{check_name, CoordAnswer, CoordCall, MAX_VALUE_LEN};
pub use crate::decode::DecodeError;
use crate::id::{NodeId, Term, MAX_ADDR_LEN};
use crate::payload::Payload;
use crate::view::{Change, Member};

/// First bytes of every handshake: "HGRW".
pub const MAGIC: [u8; 4] = *b"HGRW";
/// The newest protocol version this build speaks.
///
/// Version 2 added [`Message::Request`]'s `settled_below`. To a peer that
/// negotiated version 1 a request goes without it
/// ([`encode_message_for_version`]), and a version-1 request decodes with
/// it 0 ("nothing said"), so N and N-1 still interoperate.
///
/// Version 3 added the coordination services: [`Message::Coord`],
/// [`Message::PermitsRenewed`] and [`ReplyBody::Coord`]. They are never
/// encoded for a peer that negotiated less ([`encode_message_for_version`]
/// refuses them), so a mixed group keeps its membership, election and
/// messaging while it upgrades; the new verbs work once the leader and the
/// caller both speak version 3.
///
/// Version 4 added relayed views: [`Message::RelayDelta`],
/// [`Message::DeltaRequest`], [`Message::SnapshotFrom`] and
/// [`Heartbeat::relays`]. The heartbeat's
/// new field is its last, so a version-3 peer gets the heartbeat without
/// it and a version-3 heartbeat decodes with it `false`; a leader relays
/// only while every member it knows said `relays`, so during an upgrade
/// it pushes to each member as before.
///
/// Version 5 added [`Message::Broadcast`]'s `to_incarnation`, last in its
/// frame: a version-4 peer gets the broadcast without it, and a version-4
/// broadcast decodes with it 0 ("not said"), which every member accepts,
/// as before.
pub const PROTOCOL_VERSION: u16 = 5;
/// The oldest protocol version this build still speaks (N-1 interop).
pub const MIN_PROTOCOL_VERSION: u16 = 1;
/// Bytes a stream sender may send before the receiver's first credit.
pub const INITIAL_STREAM_CREDIT: u32 = 64 * 1024;
/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;

/// The first frame on every connection, in both directions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: [u8; 4],
    /// Oldest protocol version the sender speaks.
    pub min_version: u16,
    /// Newest protocol version the sender speaks.
    pub max_version: u16,
    /// The sender's cluster id.
    pub cluster_id: String,
    /// The sender's node id.
    pub node_id: NodeId,
    /// The sender's incarnation.
    pub incarnation: u64,
    /// The sender's advertised address.
    pub addr: String,
}

impl Hello {
    /// This build's hello for a node.
    pub fn new(cluster_id: &str, node_id: NodeId, incarnation: u64, addr: &str) -> Self {
        Hello {
            magic: MAGIC,
            min_version: MIN_PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            cluster_id: cluster_id.into(),
            node_id,
            incarnation,
            addr: addr.into(),
        }
    }

    /// Checks a peer's hello against ours: same magic and cluster, a common
    /// protocol version (the highest is returned), and not ourselves.
    ///
    /// ```
    /// use hedgerow_core::{Hello, NodeId, HandshakeError};
    /// let a = Hello::new("c1", NodeId::new("a").unwrap(), 1, "10.0.0.1:7000");
    /// let b = Hello::new("c2", NodeId::new("b").unwrap(), 2, "10.0.0.2:7000");
    /// assert!(matches!(a.negotiate(&b), Err(HandshakeError::ClusterMismatch { .. })));
    /// ```
    pub fn negotiate(&self, peer: &Hello) -> Result<u16, HandshakeError> {
        if peer.magic != MAGIC {
            return Err(HandshakeError::BadMagic);
        }
        if peer.cluster_id != self.cluster_id {
            return Err(HandshakeError::ClusterMismatch {
                ours: self.cluster_id.clone(),
                theirs: peer.cluster_id.clone(),
            });
        }
        let low = self.min_version.max(peer.min_version);
        let high = self.max_version.min(peer.max_version);
        if low > high {
            return Err(HandshakeError::NoCommonVersion {
                ours: (self.min_version, self.max_version),
                theirs: (peer.min_version, peer.max_version),
            });
        }
        if peer.node_id == self.node_id {
            return Err(HandshakeError::SameId {
                id: peer.node_id.clone(),
            });
        }
        if !peer.node_id.is_well_formed() || peer.addr.len() > MAX_ADDR_LEN {
            return Err(HandshakeError::Malformed);
        }
        Ok(high)
    }
}

/// Why a handshake was refused. Sent to the peer as [`Frame::Refuse`] and
/// logged on both sides.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peer does not speak hedgerow (wrong magic).
    BadMagic,
    /// The peer belongs to another cluster.
    ClusterMismatch {
        /// Our cluster id.
        ours: String,
        /// Theirs.
        theirs: String,
    },
    /// No protocol version in common.
    NoCommonVersion {
        /// Our supported range.
        ours: (u16, u16),
        /// Theirs.
        theirs: (u16, u16),
    },
    /// The peer claims our own node id: two live processes with one id.
    SameId {
        /// The id claimed twice.
        id: NodeId,
    },
    /// Ids or addresses beyond the protocol's limits.
    Malformed,
    /// The peer sent something other than a hello first.
    NotHello,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::BadMagic => f.write_str("peer is not a hedgerow node (bad magic); check the port"),
            HandshakeError::ClusterMismatch { ours, theirs } => write!(
                f,
                "peer belongs to cluster {theirs:?}, we are {ours:?}; two groups must not share ports"
            ),
            HandshakeError::NoCommonVersion { ours, theirs } => write!(
                f,
                "no common protocol version: we speak {}..={}, peer {}..={}; upgrade one step at a time",
                ours.0, ours.1, theirs.0, theirs.1
            ),
            HandshakeError::SameId { id } => write!(
                f,
                "peer claims our own node id {id}: two live processes share one id; give each a unique id"
            ),
            HandshakeError::Malformed => f.write_str("peer's hello has an id or address beyond the limits"),
            HandshakeError::NotHello => f.write_str("peer sent a message before its hello"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for HandshakeError {}

/// What a leader tells about itself so a member can follow or redirect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderHint {
    /// The leader's id.
    pub id: NodeId,
    /// Where to reach it.
    pub addr: String,
    /// Its term. A hint with a higher term than the receiver knows is a
    /// claim, not a fact: followed only once the store confirms it.
    pub term: Term,
}

/// Member → leader, every heartbeat interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The term the member believes the receiver leads.
    pub term: Term,
    /// The member's incarnation.
    pub incarnation: u64,
    /// The member's advertised address.
    pub addr: String,
    /// Version of the member's metadata.
    pub meta_version: u64,
    /// The metadata itself, only when the leader may not have this version.
    pub meta: Option<Payload>,
    /// The member's view numbers, so the leader can see it is behind.
    pub view_term: Term,
    /// The member's view version.
    pub view_version: u64,
    /// The member passes on the deltas it is given to relay and answers
    /// [`Message::DeltaRequest`] (version 4). Last, so that a version-3
    /// peer's encoding is this one's minus its final byte.
    pub relays: bool,
}

/// Leader → member, in answer to a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    /// The leader's term.
    pub term: Term,
    /// The leader's incarnation (lease nonce).
    pub leader_incarnation: u64,
    /// The leader's current view version.
    pub view_version: u64,
    /// Digest of the leader's view: same numbers but another digest means
    /// the member must fetch a snapshot.
    pub digest: u64,
    /// When the leader's lease ends (Unix ns).
    pub lease_expires_ns: u64,
    /// The lease row version after the leader's last write, so a candidate
    /// can take over with one compare-and-set once the lease has expired.
    pub lease_version: u64,
    /// The metadata version the leader holds for this member (`None`: none),
    /// so the member knows whether to send its metadata again.
    pub your_meta_version: Option<u64>,
}

/// Leader → members: changes from one view version to the next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewDelta {
    /// The leader's term.
    pub term: Term,
    /// Applies only to a view at exactly `(term, base_version)`.
    pub base_version: u64,
    /// The version after applying.
    pub version: u64,
    /// Digest after applying.
    pub digest: u64,
    /// The changes.
    pub changes: Vec<Change>,
}

/// Leader → member: one chunk of a full view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewSnapshot {
    /// The leader's term.
    pub term: Term,
    /// The view version.
    pub version: u64,
    /// Digest of the whole view.
    pub digest: u64,
    /// Index of this chunk.
    pub chunk: u32,
    /// Number of chunks.
    pub chunks: u32,
    /// Total members across the chunks.
    pub total: u32,
    /// This chunk's members (shared records, encoded as the members
    /// themselves).
    pub members: Vec<Arc<Member>>,
}

/// The answer to a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplyBody {
    /// The leader's handler answered.
    Ok {
        /// The term under which the request was handled.
        term: Term,
        /// The handler's reply.
        payload: Payload,
    },
    /// The receiver is not leader; where to try instead, if it knows.
    NotLeader {
        /// Its idea of the leader.
        hint: Option<LeaderHint>,
    },
    /// The leader's handler failed, or the leader refused (overloaded).
    Failed {
        /// The term under which it was handled or refused.
        term: Term,
        /// What happened.
        reason: String,
    },
    /// The leader's coordination services answered a [`Message::Coord`].
    Coord {
        /// The term under which it was handled.
        term: Term,
        /// The answer.
        answer: CoordAnswer,
    },
}

/// A request or a stream opening is for the leader, or for whoever receives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamKind {
    /// Only the leader accepts it.
    ToLeader,
    /// Any member accepts it (a leg of a broadcast stream).
    ToMember,
}

/// Every message after the handshake. New kinds are only ever appended and
/// only sent to peers whose negotiated version knows them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Member → leader liveness and metadata.
    Heartbeat(Heartbeat),
    /// Leader → member answer to a heartbeat.
    HeartbeatAck(HeartbeatAck),
    /// Leader → members view change. Shared: the leader sends the same
    /// delta to every member, and a clone per member was most of a
    /// delta's cost in a large view. (Encoded as the delta itself.)
    ViewDelta(Arc<ViewDelta>),
    /// Leader → member full view chunk.
    ViewSnapshot(ViewSnapshot),
    /// Member → leader: send me a full view.
    SnapshotRequest {
        /// The term of the leader asked.
        term: Term,
    },
    /// Member → leader: I am leaving for good.
    Leave {
        /// The leaving member's incarnation.
        incarnation: u64,
    },
    /// Any node → leader: a one-shot request.
    Request {
        /// Request id, unique per sender incarnation.
        id: u64,
        /// The sender's incarnation (dedupe key with the id).
        incarnation: u64,
        /// The application's bytes.
        payload: Payload,
        /// Every id of this sender incarnation below this one is settled
        /// at the sender (answered or given up) and never sent again, so
        /// the leader may forget it (and refuses a stray copy that still
        /// turns up). 0 says nothing. Last, so that a version-1 peer's
        /// encoding is this one's minus its final byte.
        settled_below: u64,
    },
    /// Leader (or a non-leader redirecting) → sender.
    Reply {
        /// The request id answered.
        id: u64,
        /// The answer.
        body: ReplyBody,
    },
    /// Any node → each member: a one-shot broadcast.
    Broadcast {
        /// Broadcast id, unique per sender incarnation.
        id: u64,
        /// The sender's incarnation.
        incarnation: u64,
        /// The application's bytes.
        payload: Payload,
        /// The incarnation of the member this copy is for, as the sender's
        /// view knows it; 0 when the sender does not say (a version-4
        /// sender). A member of another incarnation (the process
        /// restarted since) neither handles nor answers the copy.
        to_incarnation: u64,
    },
    /// Member → broadcaster.
    BroadcastReply {
        /// The broadcast id answered.
        id: u64,
        /// The handler's reply or error text.
        result: Result<Payload, String>,
    },
    /// Opens a stream.
    StreamOpen {
        /// Stream id, unique per sender incarnation.
        sid: u64,
        /// Who may accept it.
        kind: StreamKind,
        /// The term the sender believes the receiver leads (`ToLeader`).
        term: Term,
    },
    /// Stream bytes starting at `offset`.
    StreamData {
        /// Stream id.
        sid: u64,
        /// Byte offset of `data` in the stream.
        offset: u64,
        /// The bytes.
        data: Payload,
    },
    /// Receiver → sender: you may send up to this offset.
    StreamCredit {
        /// Stream id.
        sid: u64,
        /// Highest offset (exclusive) the sender may reach.
        limit: u64,
    },
    /// Sender → receiver: the stream ends after `len` bytes.
    StreamEnd {
        /// Stream id.
        sid: u64,
        /// Total length.
        len: u64,
    },
    /// Receiver → sender: the whole stream, end included, was delivered.
    StreamDone {
        /// Stream id.
        sid: u64,
    },
    /// Leader → members: I released the lease (graceful leave or resign);
    /// the row now has no holder. Candidates may take over once their
    /// `earliest` passes `expires_ns`, with one compare-and-set on
    /// `version`, instead of waiting to notice the silence.
    Resigned {
        /// The term given up.
        term: Term,
        /// The released row's expiry (the releaser's `latest`).
        expires_ns: u64,
        /// The released row's version.
        version: u64,
    },
    /// Either side: the stream is abandoned.
    StreamReset {
        /// Stream id.
        sid: u64,
        /// Whether the stream was opened by the receiver of this reset.
        yours: bool,
        /// Why.
        reason: String,
    },
    /// Any node → leader: a call to the coordination services (version 3).
    /// Shares the request ids, retries and redirects of [`Message::Request`];
    /// the leader makes every call idempotent by `(sender, incarnation, id)`.
    Coord {
        /// Request id, unique per sender incarnation.
        id: u64,
        /// The sender's incarnation.
        incarnation: u64,
        /// The call.
        call: CoordCall,
    },
    /// Leader → permit holder, with each heartbeat ack while it holds
    /// permits (version 3): the listed permits are valid until `until_ns`.
    PermitsRenewed {
        /// The promise (Unix ns): the holder believes its permits while its
        /// `latest` is below it.
        until_ns: u64,
        /// `(ticket, name)` of each permit renewed.
        permits: Vec<(u64, String)>,
    },
    /// Leader or relay → member (version 4): apply `delta`, and see that
    /// every member of your view with an id in `[from, until)` gets it too
    /// (`None`: unbounded), splitting that range `fanout` ways.
    RelayDelta {
        /// The leader-authored delta, unchanged by every relay.
        delta: Arc<ViewDelta>,
        /// Lowest id of the range (inclusive).
        from: Option<NodeId>,
        /// End of the range (exclusive).
        until: Option<NodeId>,
        /// Into how many parts a relay splits its range.
        fanout: u16,
    },
    /// Member → leader or relay (version 4): send me the deltas of `term`
    /// after version `after`, as plain [`Message::ViewDelta`]s in order.
    DeltaRequest {
        /// The term of the view.
        term: Term,
        /// The version the asker holds.
        after: u64,
    },
    /// Leader → a member that asked it for the whole view (version 4): ask
    /// `id` instead, a member whose view of `term` was up to date, and
    /// take its snapshot, so joiners do not all load the leader.
    SnapshotFrom {
        /// The leader's term.
        term: Term,
        /// Whom to ask.
        id: NodeId,
        /// Its address.
        addr: String,
    },
}

impl Message {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Heartbeat(_) => "heartbeat",
            Message::HeartbeatAck(_) => "heartbeat_ack",
            Message::ViewDelta(_) => "view_delta",
            Message::ViewSnapshot(_) => "view_snapshot",
            Message::SnapshotRequest { .. } => "snapshot_request",
            Message::Leave { .. } => "leave",
            Message::Request { .. } => "request",
            Message::Reply { .. } => "reply",
            Message::Broadcast { .. } => "broadcast",
            Message::BroadcastReply { .. } => "broadcast_reply",
            Message::StreamOpen { .. } => "stream_open",
            Message::StreamData { .. } => "stream_data",
            Message::StreamCredit { .. } => "stream_credit",
            Message::StreamEnd { .. } => "stream_end",
            Message::StreamDone { .. } => "stream_done",
            Message::Resigned { .. } => "resigned",
            Message::StreamReset { .. } => "stream_reset",
            Message::Coord { .. } => "coord",
            Message::PermitsRenewed { .. } => "permits_renewed",
            Message::RelayDelta { .. } => "relay_delta",
            Message::DeltaRequest { .. } => "delta_request",
            Message::SnapshotFrom { .. } => "snapshot_from",
        }
    }

    /// The lowest protocol version that knows this message.
    pub fn min_version(&self) -> u16 {
        match self {
            Message::Coord { .. }
            | Message::PermitsRenewed { .. }
            | Message::Reply {
                body: ReplyBody::Coord { .. },
                ..
            } => 3,
            Message::RelayDelta { .. }
            | Message::DeltaRequest { .. }
            | Message::SnapshotFrom { .. } => 4,
            _ => 1,
        }
    }

    /// Checks what the type system cannot: ids, addresses and counts within
    /// the protocol's limits. The decoder applies it to every message.
    fn check_shape(&self) -> Result<(), DecodeError> {
        let bad = |what: &'static str| Err(DecodeError::Invalid(what));
        match self {
            Message::Heartbeat(h) if h.addr.len() > MAX_ADDR_LEN => {
                bad("heartbeat address too long")
            }
            Message::SnapshotFrom { id, addr, .. }
                if !id.is_well_formed() || addr.len() > MAX_ADDR_LEN =>
            {
                bad("snapshot source")
            }
            Message::ViewDelta(d) | Message::RelayDelta { delta: d, .. } => {
                d.changes.iter().try_for_each(Change::check_shape)
            }
            Message::ViewSnapshot(s) => {
                if s.chunks == 0 || s.chunk >= s.chunks || s.members.len() > s.total as usize {
                    return bad("snapshot chunk numbering");
                }
                s.members.iter().try_for_each(|m| m.check_shape())
            }
            Message::Reply {
                body: ReplyBody::NotLeader { hint: Some(h) },
                ..
            } if !h.id.is_well_formed() || h.addr.len() > MAX_ADDR_LEN => bad("leader hint"),
            Message::Coord { call, .. } => match call {
                CoordCall::Put { key, value } => {
                    if check_name(key).is_err() || value.len() > MAX_VALUE_LEN {
                        return bad("kv key or value beyond the limits");
                    }
                    Ok(())
                }
                CoordCall::Acquire { name, limit, .. }
                    if check_name(name).is_err() || *limit == 0 =>
                {
                    bad("semaphore name or limit")
                }
                CoordCall::Release { name, .. } if check_name(name).is_err() => {
                    bad("semaphore name")
                }
                _ => Ok(()),
            },
            Message::PermitsRenewed { permits, .. } => {
                if permits.iter().any(|(_, n)| check_name(n).is_err()) {
                    return bad("renewed permit name");
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// One frame on a connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// The handshake, first in each direction.
    Hello(Hello),
    /// The handshake was refused; the text says why. The connection closes.
    Refuse(String),
    /// A protocol message.
    Msg(Message),
}

/// Why a frame could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded frame would exceed the configured maximum.
    TooLarge {
        /// Encoded length.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// The serializer failed (should not happen for well-formed values).
    Serialize,
    /// The peer's negotiated protocol version does not know this message.
    NotInVersion {
        /// The message's kind.
        kind: &'static str,
        /// The peer's version.
        version: u16,
        /// The lowest version that knows the message.
        needs: u16,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TooLarge { len, max } => write!(
                f,
                "message of {len} bytes exceeds max_frame_len {max}; send large data as a stream"
            ),
            EncodeError::Serialize => f.write_str("message could not be serialized"),
            EncodeError::NotInVersion {
                kind,
                version,
                needs,
            } => write!(
                f,
                "a {kind} message needs protocol version {needs}, and the peer speaks {version}; upgrade it to use {}",
                if *needs == 3 {
                    "the coordination services"
                } else {
                    "relayed views"
                }
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for EncodeError {}

/// A postcard output that appends to a caller's vector, so a frame is
/// serialized in place instead of into a vector of its own and copied.
struct AppendTo<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendTo<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Serializes `frame` after a length prefix at the end of `out`; on error
/// `out` is left as it was.
fn append_frame(frame: &Frame, max_len: u32, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0; LEN_PREFIX]);
    if postcard::serialize_with_flavor(frame, AppendTo(out)).is_err() {
        out.truncate(start);
        return Err(EncodeError::Serialize);
    }
    let len = out.len() - start - LEN_PREFIX;
    if len > max_len as usize {
        out.truncate(start);
        return Err(EncodeError::TooLarge { len, max: max_len });
    }
    out[start..start + LEN_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Encodes a frame with its length prefix, appending to `out`. On error
/// `out` is left as it was.
pub fn encode_frame(frame: &Frame, max_len: u32, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    append_frame(frame, max_len, out)
}

/// Stream data of at least this many bytes is left out of the encoded
/// frame by [`encode_message_split`].
pub const SPLIT_AT: usize = 4 * 1024;

/// Encodes a message as a frame, appending to `out`, except that the bytes
/// of a [`Message::StreamData`] of [`SPLIT_AT`] bytes or more are left
/// out and returned: the caller writes them right after `out`'s bytes (a
/// vectored write), and the peer reads exactly what [`encode_frame`] would
/// have produced. This is how a bulk stream reaches the socket without its
/// bytes being copied into a frame buffer. On error `out` is left as it
/// was.
///
/// ```
/// use hedgerow_core::wire::{encode_frame, encode_message_split, Frame};
/// use hedgerow_core::{Message, Payload};
/// let msg = Message::StreamData { sid: 1, offset: 0, data: Payload::from(vec![7; 10_000]) };
/// let mut whole = Vec::new();
/// encode_frame(&Frame::Msg(msg.clone()), 1 << 20, &mut whole).unwrap();
/// let mut head = Vec::new();
/// let body = encode_message_split(msg, 1 << 20, &mut head).unwrap().unwrap();
/// head.extend_from_slice(&body);
/// assert_eq!(head, whole);
/// ```
pub fn encode_message_split(
    msg: Message,
    max_len: u32,
    out: &mut Vec<u8>,
) -> Result<Option<Payload>, EncodeError> {
    let (sid, offset, data) = match msg {
        Message::StreamData { sid, offset, data } if data.len() >= SPLIT_AT => (sid, offset, data),
        other => return append_frame(&Frame::Msg(other), max_len, out).map(|()| None),
    };
    // The header is the frame of the same message with no bytes, whose
    // last byte is the bytes' length, 0; it becomes the real length. The
    // bytes are the last field of the last thing in the frame.
    let start = out.len();
    let empty = Frame::Msg(Message::StreamData {
        sid,
        offset,
        data: Payload::default(),
    });
    append_frame(&empty, max_len, out)?;
    if out.pop() != Some(0) {
        out.truncate(start);
        return Err(EncodeError::Serialize);
    }
    let mut n = data.len();
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    let len = out.len() - start - LEN_PREFIX + data.len();
    if len > max_len as usize {
        out.truncate(start);
        return Err(EncodeError::TooLarge { len, max: max_len });
    }
    out[start..start + LEN_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(Some(data))
}

/// Reads the length prefix at the start of `buf`: `Ok(None)` if fewer than
/// 4 bytes are there, the body length otherwise. Refuses lengths above
/// `max_len` before any allocation, so a driver calls this first and reads
/// the body only when it is acceptable.
pub fn peek_frame_len(buf: &[u8], max_len: u32) -> Result<Option<usize>, DecodeError> {
    let Some(prefix) = buf.get(..LEN_PREFIX) else {
        return Ok(None);
    };
    let mut b = [0u8; LEN_PREFIX];
    b.copy_from_slice(prefix);
    let len = u32::from_be_bytes(b);
    if len == 0 {
        return Err(DecodeError::Empty);
    }
    if len > max_len {
        return Err(DecodeError::TooLarge {
            len: u64::from(len),
            max: max_len,
        });
    }
    Ok(Some(len as usize))
}

/// Decodes one frame body (without the length prefix).
pub fn decode_body(body: &[u8]) -> Result<Frame, DecodeError> {
    let (frame, rest) = match postcard::take_from_bytes::<Frame>(body) {
        Ok(x) => x,
        // An older peer's request, heartbeat or broadcast: without the
        // last field a later version added (`settled_below` read as 0,
        // `relays` as false, `to_incarnation` as 0).
        Err(_)
            if body.starts_with(&REQUEST_TAG)
                || body.starts_with(&HEARTBEAT_TAG)
                || body.starts_with(&BROADCAST_TAG) =>
        {
            let mut v2 = Vec::with_capacity(body.len() + 1);
            v2.extend_from_slice(body);
            v2.push(0);
            let (frame, rest) =
                postcard::take_from_bytes::<Frame>(&v2).map_err(|_| DecodeError::Malformed)?;
            if !rest.is_empty() {
                return Err(DecodeError::TrailingBytes);
            }
            check_frame(&frame)?;
            return Ok(frame);
        }
        Err(_) => return Err(DecodeError::Malformed),
    };
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes);
    }
    check_frame(&frame)?;
    Ok(frame)
}

fn check_frame(frame: &Frame) -> Result<(), DecodeError> {
    match frame {
        Frame::Msg(m) => m.check_shape()?,
        Frame::Hello(h) if !h.node_id.is_well_formed() || h.addr.len() > MAX_ADDR_LEN => {
            return Err(DecodeError::Invalid("hello id or address"))
        }
        _ => {}
    }
    Ok(())
}

/// Postcard's first bytes of a `Frame::Msg(Message::StreamData { .. })`:
/// the two variant indices (checked by a test against the encoder).
const STREAM_DATA_TAG: [u8; 2] = [2, 11];
/// Likewise for `Frame::Msg(Message::Request { .. })`.
const REQUEST_TAG: [u8; 2] = [2, 6];
/// Likewise for `Frame::Msg(Message::Heartbeat { .. })`.
const HEARTBEAT_TAG: [u8; 2] = [2, 0];
/// Likewise for `Frame::Msg(Message::Broadcast { .. })`.
const BROADCAST_TAG: [u8; 2] = [2, 8];

/// As [`encode_message_split`], for a peer that negotiated `version`: a
/// version-1 peer gets [`Message::Request`] without `settled_below` (the
/// one field version 2 added), a peer below version 4 gets
/// [`Message::Heartbeat`] without `relays`, a peer below version 5 gets
/// [`Message::Broadcast`] without `to_incarnation`; everything else is the
/// same.
pub fn encode_message_for_version(
    msg: Message,
    version: u16,
    max_len: u32,
    out: &mut Vec<u8>,
) -> Result<Option<Payload>, EncodeError> {
    if msg.min_version() > version {
        return Err(EncodeError::NotInVersion {
            kind: msg.kind(),
            version,
            needs: msg.min_version(),
        });
    }
    // Each field a later version added is the last of its frame; at its
    // zero value it is one byte, 0, and the frame without that byte is
    // the older version's.
    let older = match msg {
        // Version 4 added `relays`.
        Message::Heartbeat(hb) if version < 4 => Message::Heartbeat(Heartbeat {
            relays: false,
            ..hb
        }),
        // Version 2 added `settled_below`.
        Message::Request {
            id,
            incarnation,
            payload,
            ..
        } if version < 2 => Message::Request {
            id,
            incarnation,
            payload,
            settled_below: 0,
        },
        // Version 5 added `to_incarnation`.
        Message::Broadcast {
            id,
            incarnation,
            payload,
            ..
        } if version < 5 => Message::Broadcast {
            id,
            incarnation,
            payload,
            to_incarnation: 0,
        },
        other => return encode_message_split(other, max_len, out),
    };
    append_without_last_zero(&Frame::Msg(older), max_len, out).map(|()| None)
}

/// Appends `frame` minus its last byte, which must be a 0 (a field a later
/// version added, at its zero value, last in the frame).
fn append_without_last_zero(
    frame: &Frame,
    max_len: u32,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let start = out.len();
    append_frame(frame, max_len, out)?;
    if out.pop() != Some(0) {
        out.truncate(start);
        return Err(EncodeError::Serialize);
    }
    let len = out.len() - start - LEN_PREFIX;
    out[start..start + LEN_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Decodes one frame body (without the length prefix) held in a shared
/// buffer: the same result as [`decode_body`], except that the bytes of a
/// [`Message::StreamData`] are a slice of `body` rather than a copy.
pub fn decode_body_shared(body: Bytes) -> Result<Frame, DecodeError> {
    let Some(rest) = body.strip_prefix(&STREAM_DATA_TAG[..]) else {
        return decode_body(&body);
    };
    fn varint(b: &[u8]) -> Result<(u64, &[u8]), DecodeError> {
        postcard::take_from_bytes::<u64>(b).map_err(|_| DecodeError::Malformed)
    }
    let (sid, rest) = varint(rest)?;
    let (offset, rest) = varint(rest)?;
    let (len, rest) = varint(rest)?;
    match (rest.len() as u64).cmp(&len) {
        core::cmp::Ordering::Less => return Err(DecodeError::Malformed),
        core::cmp::Ordering::Greater => return Err(DecodeError::TrailingBytes),
        core::cmp::Ordering::Equal => {}
    }
    let data = Payload::from(body.slice(body.len() - rest.len()..));
    Ok(Frame::Msg(Message::StreamData { sid, offset, data }))
}

/// Decodes the first complete frame in `buf`: `Ok(None)` if more bytes are
/// needed, else the frame and how many bytes it used.
///
/// ```
/// use hedgerow_core::wire::{decode_frame, encode_frame, Frame};
/// let mut buf = Vec::new();
/// encode_frame(&Frame::Refuse("no".into()), 1024, &mut buf).unwrap();
/// let (frame, used) = decode_frame(&buf, 1024).unwrap().unwrap();
/// assert_eq!(frame, Frame::Refuse("no".into()));
/// assert_eq!(used, buf.len());
/// assert!(decode_frame(&buf[..3], 1024).unwrap().is_none());
/// ```
pub fn decode_frame(buf: &[u8], max_len: u32) -> Result<Option<(Frame, usize)>, DecodeError> {
    let Some(len) = peek_frame_len(buf, max_len)? else {
        return Ok(None);
    };
    let Some(body) = buf.get(LEN_PREFIX..LEN_PREFIX + len) else {
        return Ok(None);
    };
    Ok(Some((decode_body(body)?, LEN_PREFIX + len)))
}

/// The encoded size of a message body, for budgeting chunks.
pub fn encoded_len(msg: &Message) -> usize {
    postcard::to_allocvec(msg)
        .map(|v| v.len())
        .unwrap_or(usize::MAX)
}
