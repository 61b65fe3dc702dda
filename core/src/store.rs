//! The contract between the core and a lease store. The store keeps one row
//! per cluster and offers one atomic primitive, compare-and-set of the whole
//! row conditioned on the row version the writer last read. The core
//! decides what to write; the driver executes the operation and feeds the
//! result back as [`crate::Input::Lease`]. Nothing here talks to a store.

use alloc::string::String;
use core::fmt;
use serde::{Deserialize, Serialize};

use crate::id::{NodeId, Term};

/// Schema version of the lease row; stores record it so that a future
/// layout change is detected instead of misread.
pub const LEASE_SCHEMA_VERSION: u32 = 1;

/// Who holds (or last held) the lease.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Holder {
    /// The holder's node id.
    pub id: NodeId,
    /// The holder's nonce: its incarnation, random per process start. A
    /// restarted process with the same id is a different holder.
    pub nonce: u64,
    /// The address members dial to reach the leader.
    pub addr: String,
}

/// The lease row as stored.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseRow {
    /// The current holder; `None` when the lease was released (graceful
    /// leave, `resign()`) or never taken.
    pub holder: Option<Holder>,
    /// The fencing token of the current or last leadership.
    pub token: Term,
    /// Unix ns (ClockBound time) at which the lease ends.
    pub expires_ns: u64,
    /// Row version, bumped by the store on every successful write.
    pub version: u64,
}

/// What the core asks the store to write: the whole row but its version,
/// which the store assigns (`expected + 1`, or 1 for a first insert).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseWrite {
    /// The new holder; `None` releases the lease (with `expires_ns` set to
    /// the releaser's `latest`, so a successor still waits until that has
    /// passed in its own clock).
    pub holder: Option<Holder>,
    /// The new token.
    pub token: Term,
    /// The new expiry (Unix ns).
    pub expires_ns: u64,
}

impl LeaseWrite {
    /// The row this write produces at `version`.
    pub fn into_row(self, version: u64) -> LeaseRow {
        LeaseRow {
            holder: self.holder,
            token: self.token,
            expires_ns: self.expires_ns,
            version,
        }
    }
}

/// Identifies one store operation so a late result is never mistaken for a
/// newer one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpId(pub u64);

/// A store operation the driver must execute and answer with
/// [`crate::Input::Lease`] carrying the same [`OpId`]. Every operation
/// must be answered, with a [`StoreError`] if need be (a timeout too): the
/// node keeps at most one operation in flight and waits for its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseOp {
    /// Read the row (`None` if there is none yet).
    Read {
        /// The operation id to answer with.
        op: OpId,
    },
    /// Write `write` if the row's version is `expected_version`
    /// (`None`: insert only if no row exists). SQL: `UPDATE … SET …,
    /// version = version + 1 WHERE name = $1 AND version = $2`, or
    /// `INSERT … ON CONFLICT DO NOTHING`.
    CompareAndSet {
        /// The operation id to answer with.
        op: OpId,
        /// The version the write is conditioned on.
        expected_version: Option<u64>,
        /// The row to write.
        write: LeaseWrite,
    },
}

impl LeaseOp {
    /// The operation's id.
    pub fn id(&self) -> OpId {
        match self {
            LeaseOp::Read { op } | LeaseOp::CompareAndSet { op, .. } => *op,
        }
    }
}

/// The result of a compare-and-set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    /// The write was applied; the row as now stored (with its new version).
    Applied(LeaseRow),
    /// The version did not match; the row as currently stored, if the
    /// store could read it back (`None`: no row, or not read).
    Conflict(Option<LeaseRow>),
}

/// A successful store answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseReply {
    /// Answer to [`LeaseOp::Read`].
    Read(Option<LeaseRow>),
    /// Answer to [`LeaseOp::CompareAndSet`].
    Cas(CasOutcome),
}

/// The store primitive's semantics on an in-memory row: what every store
/// must do, atomically. Used by in-memory stores, simulators and tests, so
/// there is one definition of compare-and-set.
///
/// ```
/// use hedgerow_core::{execute_on_row, CasOutcome, LeaseOp, LeaseReply, LeaseWrite, OpId, Term};
/// let mut row = None;
/// let write = LeaseWrite { holder: None, token: Term(1), expires_ns: 5 };
/// let insert = LeaseOp::CompareAndSet { op: OpId(1), expected_version: None, write };
/// assert!(matches!(execute_on_row(&mut row, &insert), LeaseReply::Cas(CasOutcome::Applied(_))));
/// assert!(matches!(execute_on_row(&mut row, &insert), LeaseReply::Cas(CasOutcome::Conflict(Some(_)))));
/// ```
pub fn execute_on_row(row: &mut Option<LeaseRow>, op: &LeaseOp) -> LeaseReply {
    match op {
        LeaseOp::Read { .. } => LeaseReply::Read(row.clone()),
        LeaseOp::CompareAndSet {
            expected_version,
            write,
            ..
        } => {
            let current = row.as_ref().map(|r| r.version);
            if current == *expected_version {
                let new = write.clone().into_row(current.unwrap_or(0) + 1);
                *row = Some(new.clone());
                LeaseReply::Cas(CasOutcome::Applied(new))
            } else {
                LeaseReply::Cas(CasOutcome::Conflict(row.clone()))
            }
        }
    }
}

/// A store failure. The core keeps leading until its lease expires and
/// retries; it never guesses whether an unanswered write was applied.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The store did not answer in time; the write may or may not have been
    /// applied.
    Timeout,
    /// The store could not be reached or refused the connection (e.g. too
    /// many connections); the text says why.
    Unavailable(String),
    /// The store answered with something the driver could not understand
    /// (wrong schema version, corrupt row); retrying will not help until an
    /// operator fixes the store.
    Corrupt(String),
    /// The store does not offer what was asked (a lease-only store asked
    /// for the coordination services).
    Unsupported,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Timeout => f.write_str(
                "lease store did not answer in time; check its load and the network path to it",
            ),
            StoreError::Unavailable(why) => write!(f, "lease store unavailable: {why}"),
            StoreError::Corrupt(why) => write!(
                f,
                "lease store returned an unusable row ({why}); check the table's schema version"
            ),
            StoreError::Unsupported => f.write_str(
                "the store has no coordination tables (KV, locks, semaphores); use a store of the hedgerow crate",
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for StoreError {}
