//! The values the public API hands out and the driver fills in: the one
//! [`Error`] enum (with the conversions from the core's errors), a send's
//! [`Reply`], the [`Request`] and [`BroadcastRequest`] handlers get, the
//! [`WatchEvent`]s of `watch()`, and the [`LeaderGuard`] on a term. Nothing
//! here talks to the driver or holds a channel into it.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::channel::oneshot;
use futures::future::Shared;
use hedgerow_clock::Clock;
use hedgerow_core::{
    BroadcastError, MemberChange, Node, NodeId, SendError, StepDownReason, StoreError, StreamError,
    Term,
};

/// What can go wrong, each variant saying what to do about it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// No leader was known before the deadline: check that a candidate runs
    /// with a clock that may lead and can reach the store.
    NoLeader,
    /// No answer before the deadline; a request may still have been
    /// handled (dedupe on [`Request::id`] if that matters).
    Timeout,
    /// The leader (or a member) refused or its handler failed; the text is
    /// the handler's error or the refusal.
    Refused(String),
    /// Too many requests, handler calls or streams outstanding; retry later.
    Overloaded,
    /// The lease store failed (e.g. releasing the lease on `leave`).
    Store(StoreError),
    /// The clock could not be read; the node does not lead meanwhile.
    Clock(String),
    /// A stream was abandoned by the peer or the connection; the text says why.
    StreamReset(String),
    /// The node was shut down (or its driver stopped).
    Closed,
    /// A socket could not be bound or used.
    Io(std::io::Error),
    /// The configuration, id or address is invalid; the text says which.
    Config(String),
    /// No async runtime was found: call `start()` from inside one, or pass
    /// one with [`Builder::runtime`](crate::Builder::runtime).
    NoRuntime,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoLeader => f.write_str("no leader known; is a candidate running with a clock that may lead, and can it reach the store?"),
            Error::Timeout => f.write_str("no answer before the deadline; the request may still have been handled"),
            Error::Refused(why) => write!(f, "refused: {why}"),
            Error::Overloaded => f.write_str("too much outstanding work; retry later"),
            Error::Store(e) => write!(f, "lease store: {e}"),
            Error::Clock(why) => write!(f, "clock: {why}"),
            Error::StreamReset(why) => write!(f, "stream reset: {why}"),
            Error::Closed => f.write_str("the node was shut down"),
            Error::Io(e) => write!(f, "socket: {e}"),
            Error::Config(why) => write!(f, "invalid configuration: {why}"),
            Error::NoRuntime => f.write_str("no async runtime found: start the node from inside one, or pass it with Builder::runtime"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Store(e) => Some(e),
            _ => None,
        }
    }
}

// Not `From` impls: those would be public, and the core's errors are not
// part of this crate's API.
impl Error {
    /// A failed `send`, as its caller sees it.
    pub(crate) fn from_send(e: SendError) -> Self {
        match e {
            SendError::Timeout => Error::Timeout,
            SendError::NoLeader => Error::NoLeader,
            SendError::Failed(why) => Error::Refused(why),
            SendError::Overloaded => Error::Overloaded,
            other => Error::Refused(other.to_string()),
        }
    }

    /// One member's failed broadcast reply.
    pub(crate) fn from_broadcast(e: BroadcastError) -> Self {
        match e {
            BroadcastError::Timeout => Error::Timeout,
            BroadcastError::Failed(why) => Error::Refused(why),
            other => Error::Refused(other.to_string()),
        }
    }

    /// A stream that could not be opened, written or finished.
    pub(crate) fn from_stream(e: StreamError) -> Self {
        match e {
            StreamError::NoLeader => Error::NoLeader,
            StreamError::TooMany => Error::Overloaded,
            StreamError::Reset(why) => Error::StreamReset(why),
            other => Error::StreamReset(other.to_string()),
        }
    }
}

/// The leader's answer to a [`Hedgerow::send`](crate::Hedgerow::send).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Who answered.
    pub leader: NodeId,
    /// The term under which it answered (its fencing token).
    pub term: Term,
    /// The handler's reply.
    pub payload: Vec<u8>,
}

/// Leadership under one term, as a handler or caller holds it: work
/// started as leader checks [`LeaderGuard::is_current`] before acting, or
/// stops when [`LeaderGuard::lost`] completes (the node stepped down, or
/// shut down). Clones share the same signal.
#[derive(Clone)]
pub struct LeaderGuard {
    term: Term,
    node: Arc<Mutex<Node>>,
    clock: Arc<dyn Clock>,
    lost: Shared<oneshot::Receiver<()>>,
}

impl fmt::Debug for LeaderGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaderGuard")
            .field("term", &self.term)
            .finish_non_exhaustive()
    }
}

impl LeaderGuard {
    pub(crate) fn new(
        term: Term,
        node: Arc<Mutex<Node>>,
        clock: Arc<dyn Clock>,
        lost: Shared<oneshot::Receiver<()>>,
    ) -> Self {
        LeaderGuard {
            term,
            node,
            clock,
            lost,
        }
    }

    /// The term this guard is for: the fencing token to pass downstream.
    pub fn term(&self) -> Term {
        self.term
    }

    /// Whether this node still leads under this term, from a fresh clock
    /// reading (`false` if the clock cannot be read).
    pub fn is_current(&self) -> bool {
        let Ok(now) = self.clock.now() else {
            return false;
        };
        let node = lock(&self.node);
        node.is_leader(&now) && node.lease_claim().map(|c| c.0) == Some(self.term)
    }

    /// Unix time (ns, ClockBound time) until which the lease under this
    /// term is held as of the last renewal, if it still is.
    pub fn valid_until_ns(&self) -> Option<u64> {
        lock(&self.node)
            .lease_claim()
            .filter(|c| c.0 == self.term)
            .map(|c| c.1)
    }

    /// Completes when leadership under this term ends (at once if it
    /// already has).
    pub async fn lost(&self) {
        let _ = self.lost.clone().await;
    }
}

/// A request delivered to the leader's handler.
#[derive(Clone, Debug)]
pub struct Request {
    /// The sender.
    pub from: NodeId,
    /// The sender's incarnation.
    pub incarnation: u64,
    /// The sender's request id. Across a failover a retried request can
    /// reach a new leader after the old one handled it; applications that
    /// must not act twice dedupe on `(from, incarnation, id)`.
    pub id: u64,
    /// The term under which this leader handles it: pass it to downstream
    /// systems as a fencing token.
    pub term: Term,
    /// The request's bytes.
    pub payload: Vec<u8>,
    /// Leadership under [`Request::term`]: a long handler can stop when it
    /// ends.
    pub guard: LeaderGuard,
}

/// A broadcast delivered to a member's handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BroadcastRequest {
    /// The sender.
    pub from: NodeId,
    /// The sender's broadcast id.
    pub id: u64,
    /// The broadcast's bytes.
    pub payload: Vec<u8>,
}

/// A change in membership or leadership, from
/// [`Hedgerow::watch`](crate::Hedgerow::watch).
///
/// Membership changes come as the core reports them, in
/// [`WatchEvent::Member`]. (Earlier versions repeated
/// [`MemberChange`]'s variants here as `Joined`, `Updated` and `Left`;
/// match `WatchEvent::Member(MemberChange::Joined(m))` and so on instead.)
///
/// ```
/// use hedgerow::{MemberChange, WatchEvent};
///
/// fn describe(ev: &WatchEvent) -> String {
///     match ev {
///         WatchEvent::Member(MemberChange::Joined(m)) => format!("{} joined", m.id),
///         WatchEvent::Member(MemberChange::Left { id, reason, .. }) => {
///             format!("{id} left ({reason:?})")
///         }
///         WatchEvent::Elected { term } => format!("elected under term {term}"),
///         other => format!("{other:?}"),
///     }
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchEvent {
    /// A member joined the view, changed its address or metadata, or left.
    Member(MemberChange),
    /// The leader this node follows changed (`None`: none known).
    LeaderChanged {
        /// The new leader.
        leader: Option<NodeId>,
        /// Its term.
        term: Term,
    },
    /// This node became leader.
    Elected {
        /// Its term (fencing token).
        term: Term,
    },
    /// This node stopped leading.
    SteppedDown {
        /// The term it led.
        term: Term,
        /// Why.
        reason: StepDownReason,
    },
    /// The view reached a new version.
    ViewChanged {
        /// The authoring leader's term.
        term: Term,
        /// The version.
        version: u64,
        /// Number of members.
        size: usize,
    },
}

/// Locks the node the driver, the handle's queries and every guard share;
/// a panic while it was held cannot leave it half-updated in a way a lock
/// could repair, so a poisoned lock is used as is.
pub(crate) fn lock(node: &Mutex<Node>) -> MutexGuard<'_, Node> {
    node.lock().unwrap_or_else(|p| p.into_inner())
}
