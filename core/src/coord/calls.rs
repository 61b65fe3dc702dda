//! What members ask of the leader's coordination services and what it
//! answers, as they travel (inside [`crate::Message::Coord`] and
//! [`crate::wire::ReplyBody::Coord`]). Every call is idempotent at the
//! leader, keyed by the caller's `(id, incarnation, request id)`, so a
//! retry (same id) or a retry to a new leader never acts twice.

use alloc::string::String;
use core::fmt;
use serde::{Deserialize, Serialize};

use crate::payload::Payload;

/// A call to the leader's coordination services.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordCall {
    /// Append `value` as a new revision of `key`.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Payload,
    },
    /// Ask for a permit of semaphore `name` of `limit` permits. The
    /// request id is the ticket: the waiter's place in the queue and, once
    /// granted, the permit's key at the holder.
    Acquire {
        /// The semaphore (a lock is a semaphore of limit 1).
        name: String,
        /// How many permits it has.
        limit: u32,
        /// Queue until a permit is free (`false`: answer `Busy` at once).
        wait: bool,
    },
    /// Give back the permit of ticket `ticket` (or stop waiting for it).
    Release {
        /// The semaphore.
        name: String,
        /// The acquire's request id.
        ticket: u64,
    },
}

impl CoordCall {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            CoordCall::Put { .. } => "kv_put",
            CoordCall::Acquire { .. } => "acquire",
            CoordCall::Release { .. } => "release",
        }
    }
}

/// The leader's answer to a [`CoordCall`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordAnswer {
    /// The put was committed at this revision.
    Put {
        /// Its revision.
        revision: u64,
    },
    /// A permit was granted.
    Granted {
        /// Its token (a lock's fencing token).
        token: u64,
        /// Until when it is valid (Unix ns, ClockBound time) unless renewed.
        expires_ns: u64,
    },
    /// All permits are held (an acquire that does not wait).
    Busy,
    /// The permit is given back, or the waiter left the queue.
    Released,
    /// Refused: the reason.
    Refused(CoordRefusal),
}

/// Why the leader refused a coordination call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CoordRefusal {
    /// The semaphore exists with another limit while permits are held.
    LimitConflict {
        /// The limit in force.
        stored: u32,
    },
    /// The key or name is empty or too long, or the value too large.
    Invalid(String),
    /// The store has no coordination tables (a lease-only store).
    Unsupported,
}

impl fmt::Display for CoordRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoordRefusal::LimitConflict { stored } => write!(
                f,
                "the semaphore is in use with a limit of {stored}; every user of one name must ask for the same limit"
            ),
            CoordRefusal::Invalid(why) => write!(f, "invalid call: {why}"),
            CoordRefusal::Unsupported => f.write_str(
                "the lease store has no coordination tables; use a store of the hedgerow crate (memory, SQLite, PostgreSQL)",
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for CoordRefusal {}
