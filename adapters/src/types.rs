//! The values the public API hands out and the driver fills in: the one
//! [`Error`] enum (with the conversions from the core's errors), a send's
//! [`Reply`], the [`Request`] and [`BroadcastRequest`] handlers get, the
//! [`WatchEvent`]s of `watch()`, and the [`LeaderGuard`] on a term. Nothing
//! here talks to the driver or holds a channel into it.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::channel::oneshot;
use futures::future::Shared;
use hedgerow_clock::{Clock, ClockError};
use hedgerow_core::coord::CoordRefusal;
use hedgerow_core::{
    BroadcastError, Bytes, ConfigError, InvalidId, LeaderInfo, Member, MemberChange, MetaTooLarge,
    Node, NodeId, NotLeadingReason, NotReadyReason, SendError, StepDownReason, StoreError,
    StreamError, Term,
};

/// What can go wrong, each variant saying what to do about it.
///
/// Every message starts with what failed, once ("invalid configuration:
/// …", "lease store: …"); a variant that wraps another error returns it
/// from [`std::error::Error::source`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// No leader was known before the deadline: check that a candidate runs
    /// with a clock that may lead and can reach the store.
    NoLeader,
    /// [`Hedgerow::wait_for_leader`](crate::Hedgerow::wait_for_leader) saw
    /// no leader within `waited`. `this_node` says why this node did not
    /// lead itself (see [`NotLeadingReason::is_lasting`]).
    NoLeaderWithin {
        /// How long it waited.
        waited: Duration,
        /// Why this node does not lead, if it does not.
        this_node: Option<NotLeadingReason>,
    },
    /// No answer before the deadline; a request may still have been
    /// handled (dedupe on [`Request::id`] if that matters).
    Timeout,
    /// The leader (or a member) refused or its handler failed; the text is
    /// the handler's error or the refusal.
    Refused(String),
    /// Too many requests, handler calls or streams outstanding; retry later.
    Overloaded,
    /// A broadcast's member left the view before it answered (it left, was
    /// declared failed, or restarted). It may have handled the broadcast;
    /// no answer will come, so the broadcast did not wait for its timeout.
    MemberLeft,
    /// The lease store failed (e.g. releasing the lease on `leave`).
    Store(StoreError),
    /// The clock could not be opened or read; the node does not lead
    /// meanwhile.
    Clock(ClockError),
    /// A stream was abandoned by the peer or the connection; the text says why.
    StreamReset(String),
    /// The node was shut down, left, or its driver stopped.
    Closed,
    /// The listener could not be bound to `addr`, given as `field`
    /// (`"listen"`, or `"advertise"` when no listen address was set).
    Bind {
        /// Which builder argument the address came from.
        field: &'static str,
        /// The address.
        addr: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// An address is not `host:port`.
    Address {
        /// Which builder argument it came from (`"listen"` or `"advertise"`).
        field: &'static str,
        /// The address.
        addr: String,
    },
    /// A socket could not be used after it was bound.
    Io(std::io::Error),
    /// The node id is not a valid id.
    InvalidId(InvalidId),
    /// The node configuration is invalid; the text says which field.
    Config(ConfigError),
    /// Metadata larger than `max_meta_len`.
    MetaTooLarge(MetaTooLarge),
    /// No lease store was given to the builder.
    NoStore,
    /// The TLS material could not be used; the text says which file and
    /// why.
    Tls(crate::tls::TlsError),
    /// A coordination call (KV, lock, semaphore) was refused: a bad key,
    /// name, value or limit (nothing was sent), another limit for a
    /// semaphore in use, or a store without coordination tables.
    Coord(CoordRefusal),
    /// No async runtime was found: call `start()` from inside one, or pass
    /// one with [`Builder::runtime`](crate::Builder::runtime).
    NoRuntime,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoLeader => f.write_str("no leader known; is a candidate running with a clock that may lead, and can it reach the store?"),
            Error::NoLeaderWithin { waited, this_node: Some(why) } if why.is_lasting() => write!(f, "no leader within {waited:?}, and this node cannot lead: {why}"),
            Error::NoLeaderWithin { waited, this_node: Some(why) } => write!(f, "no leader within {waited:?}; this node did not lead because {why}"),
            Error::NoLeaderWithin { waited, this_node: None } => write!(f, "no leader within {waited:?}"),
            Error::Timeout => f.write_str("no answer before the deadline; the request may still have been handled"),
            Error::Refused(why) => write!(f, "refused: {why}"),
            Error::Overloaded => f.write_str("too much outstanding work; retry later"),
            Error::MemberLeft => f.write_str("the member left the view (left, failed or restarted) before it answered; it may have handled the broadcast"),
            // StoreError's text starts with "lease store".
            Error::Store(e) => write!(f, "{e}"),
            Error::Clock(e) => write!(f, "clock: {e}"),
            Error::StreamReset(why) => write!(f, "stream reset: {why}"),
            Error::Closed => f.write_str("the node was shut down"),
            Error::Bind { field, addr, source } => write!(f, "cannot listen on {addr} (the {field} address): {source}"),
            Error::Address { field, addr } => write!(f, "the {field} address {addr:?} is not host:port"),
            Error::Io(e) => write!(f, "socket: {e}"),
            Error::InvalidId(e) => write!(f, "invalid node id: {e}"),
            // ConfigError's own text starts with "invalid configuration:".
            Error::Config(e) => write!(f, "{e}"),
            // MetaTooLarge's text starts with "metadata of N bytes".
            Error::MetaTooLarge(e) => write!(f, "{e}"),
            Error::NoStore => f.write_str("no lease store: call Builder::store or Builder::async_store (every node of the cluster must share one)"),
            Error::Coord(r) => write!(f, "coordination call refused: {r}"),
            // TlsError's text starts with "tls:".
            Error::Tls(e) => write!(f, "{e}"),
            Error::NoRuntime => f.write_str("no async runtime found: start the node from inside one, or pass it with Builder::runtime"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) | Error::Bind { source: e, .. } => Some(e),
            Error::Store(e) => Some(e),
            Error::Clock(e) => Some(e),
            Error::InvalidId(e) => Some(e),
            Error::Config(e) => Some(e),
            Error::MetaTooLarge(e) => Some(e),
            Error::Coord(e) => Some(e),
            Error::Tls(e) => Some(e),
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
            BroadcastError::Left => Error::MemberLeft,
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
    pub payload: Bytes,
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
    pub payload: Bytes,
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
    pub payload: Bytes,
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
    /// The state as the watch began: always the first event of a
    /// [`Hedgerow::watch`](crate::Hedgerow::watch) stream, so later events
    /// are changes from it and none falls in between.
    Current {
        /// The leader this node follows (itself when leading), if known.
        leader: Option<LeaderInfo>,
        /// Whether this node leads.
        is_leader: bool,
        /// The members of the view.
        members: Vec<Member>,
        /// The view's `(authoring leader's term, version)` stamp.
        view: (Term, u64),
    },
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

/// Where a node stands, from [`Hedgerow::status`](crate::Hedgerow::status):
/// one consistent reading, for logs and health checks.
///
/// A node that does not lead says why in [`Status::not_leading`]; when
/// [`NotLeadingReason::is_lasting`] holds (no candidate, a clock that may
/// not lead), waiting will not change it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// This node's id.
    pub id: NodeId,
    /// Whether the node's driver still runs (see
    /// [`Hedgerow::is_running`](crate::Hedgerow::is_running)).
    pub running: bool,
    /// Whether this node leads now (fresh clock reading).
    pub is_leader: bool,
    /// Why this node does not lead now; `None` while it leads.
    pub not_leading: Option<NotLeadingReason>,
    /// Why this node is not ready to serve; `None` once it leads, or
    /// follows a leader that answers and whose view lists it.
    pub not_ready: Option<NotReadyReason>,
    /// The leader this node follows (itself when leading), if known.
    pub leader: Option<LeaderInfo>,
    /// The highest term confirmed to this node.
    pub term: Term,
    /// Number of members in the view.
    pub members: usize,
    /// The view's `(authoring leader's term, version)` stamp.
    pub view: (Term, u64),
    /// Whether the view may be out of date (see
    /// [`Hedgerow::view_is_stale`](crate::Hedgerow::view_is_stale)).
    pub view_is_stale: bool,
    /// The clock, as it describes itself (e.g. "system clock, assumed
    /// bound ±50ms").
    pub clock: String,
}

impl Status {
    /// Ready to serve: running, and in a live leader's view (or leading).
    /// What a readiness probe asks.
    pub fn is_ready(&self) -> bool {
        self.running && self.not_ready.is_none()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.not_leading, &self.leader) {
            (None, _) => write!(f, "{} leads under term {}", self.id, self.term)?,
            (Some(why), Some(l)) => write!(
                f,
                "{} follows {} (term {}); it does not lead because {why}",
                self.id, l.id, l.term
            )?,
            (Some(why), None) => write!(
                f,
                "{} knows no leader; it does not lead because {why}",
                self.id
            )?,
        }
        write!(f, "; {} members; clock: {}", self.members, self.clock)
    }
}

/// Locks the node the driver, the handle's queries and every guard share;
/// a panic while it was held cannot leave it half-updated in a way a lock
/// could repair, so a poisoned lock is used as is.
pub(crate) fn lock(node: &Mutex<Node>) -> MutexGuard<'_, Node> {
    node.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::path::PathBuf;

    use super::*;

    /// Each public error kind's text as a user reads it: what failed, said
    /// once, and what to do where there is something to do.
    #[test]
    fn every_error_kind_says_what_failed_once() {
        let mut bad = hedgerow_core::Config::lan("orders");
        bad.heartbeat_interval = Duration::ZERO;
        let config = bad.validate().unwrap_err();
        let io = || std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let waited = Duration::from_millis(300);
        let clock = ClockError::SegmentMissing {
            path: PathBuf::from("/x"),
        };
        let clock_text = format!("clock: {clock}");
        let cases: Vec<(Error, &str)> = vec![
            (Error::NoLeader, "no leader known; is a candidate running with a clock that may lead, and can it reach the store?"),
            (Error::NoLeaderWithin { waited, this_node: Some(NotLeadingReason::AssumedClockNotAllowed) },
             "no leader within 300ms, and this node cannot lead: its clock's bound is assumed by the operator and `lead_on_assumed_clock` is off"),
            (Error::NoLeaderWithin { waited, this_node: Some(NotLeadingReason::HeldElsewhere) },
             "no leader within 300ms; this node did not lead because another node holds a lease that has not expired"),
            (Error::NoLeaderWithin { waited, this_node: None }, "no leader within 300ms"),
            (Error::Timeout, "no answer before the deadline; the request may still have been handled"),
            (Error::Refused("busy".into()), "refused: busy"),
            (Error::Overloaded, "too much outstanding work; retry later"),
            (Error::Store(StoreError::Timeout), "lease store did not answer in time; check its load and the network path to it"),
            (Error::Store(StoreError::Unavailable("refused".into())), "lease store unavailable: refused"),
            (Error::Clock(clock), &clock_text),
            (Error::StreamReset("peer lost".into()), "stream reset: peer lost"),
            (Error::Closed, "the node was shut down"),
            (Error::Bind { field: "listen", addr: "0.0.0.0:80".into(), source: io() },
             "cannot listen on 0.0.0.0:80 (the listen address): address in use"),
            (Error::Address { field: "advertise", addr: "web-1".into() }, "the advertise address \"web-1\" is not host:port"),
            (Error::Io(io()), "socket: address in use"),
            (Error::InvalidId(InvalidId::Length(0)), "invalid node id: node id is 0 bytes; use 1 to 128 bytes (a pod name fits)"),
            (Error::Config(config), "invalid configuration: heartbeat_interval must be positive"),
            (Error::MetaTooLarge(MetaTooLarge { len: 600, max: 512 }), "metadata of 600 bytes exceeds max_meta_len 512"),
            (Error::NoStore, "no lease store: call Builder::store or Builder::async_store (every node of the cluster must share one)"),
            (Error::Coord(CoordRefusal::LimitConflict { stored: 2 }),
             "coordination call refused: the semaphore is in use with a limit of 2; every user of one name must ask for the same limit"),
            (Error::Coord(CoordRefusal::Invalid("key: an empty key or name".into())),
             "coordination call refused: invalid call: key: an empty key or name"),
            (Error::NoRuntime, "no async runtime found: start the node from inside one, or pass it with Builder::runtime"),
        ];
        for (e, want) in &cases {
            let text = e.to_string();
            assert_eq!(&text, want);
            // No prefix twice: what follows the first ": " does not start
            // with the word the message starts with.
            if let Some((head, rest)) = text.split_once(": ") {
                let first = head.split_whitespace().next().unwrap_or_default();
                assert!(!rest.starts_with(first), "{text}");
            }
        }
    }

    #[test]
    fn wrapping_errors_return_their_source() {
        let io = std::io::Error::other("boom");
        let bind = Error::Bind {
            field: "listen",
            addr: "x:1".into(),
            source: io,
        };
        assert_eq!(bind.source().map(|s| s.to_string()), Some("boom".into()));
        let store = Error::Store(StoreError::Timeout);
        assert_eq!(
            store.source().map(|s| s.to_string()),
            Some(StoreError::Timeout.to_string())
        );
        let id = Error::InvalidId(InvalidId::Character);
        assert!(id.source().is_some());
        assert!(Error::Closed.source().is_none());
    }
}
