//! Lease stores: where the lease row of each group lives, and the one
//! atomic primitive the core needs from it, compare-and-set of the whole
//! row on its `version`. A store never decides anything about leases (who
//! may take over, when a lease expires, which token comes next): the core
//! does, and the store only applies or refuses a write. A store never
//! deletes a row, never panics on what the backend returns, and reports
//! every failure as a [`StoreError`] within its configured timeouts.
//!
//! # Why the trait is blocking
//!
//! [`LeaseStore`] is a plain blocking trait. The driver runs its calls on
//! the runtime's blocking pool (`spawn_blocking` or its equivalent), so the
//! same stores work under tokio, smol and async-std without a compatibility
//! layer: SQLite (rusqlite) is blocking anyway, and the PostgreSQL store
//! drives its client on a private single-threaded tokio runtime of its own,
//! invisible to the caller. The driver keeps at most one store call in
//! flight per node and renews every `lease / 3`, so a thread per call costs
//! nothing that matters. The consequence for callers: never call a store
//! from inside an async task; go through the blocking pool.
//!
//! # Async stores
//!
//! A store whose backend is reached with the runtime's own I/O implements
//! [`AsyncLeaseStore`] instead; the driver runs its calls as tasks on the
//! runtime with the same timeout. The simulator's store (a host on a
//! simulated network) is one: a blocking call there could neither do
//! simulated I/O nor stay deterministic.
//!
//! # Stores
//!
//! | store | feature | for | coordination ([`coord`]) |
//! |---|---|---|---|
//! | [`MemoryStore`] | always | tests and nodes that share one process | [`execute_coord`](coord::execute_coord) on tables beside the row, under one mutex |
//! | `SqliteStore` | `sqlite` (default) | the processes of one machine sharing one file | one `BEGIN IMMEDIATE` transaction: lease row checked, then the write |
//! | `PostgresStore` | `postgres` (default) | groups spread over many machines | one transaction: lease row `FOR SHARE`, a per-group lock, the write |
//!
//! Every store here also answers [`LeaseStore::coord`]: the fenced writes
//! and KV reads of the coordination services (KV, locks, semaphores), each
//! write applied only if the group's lease row still names the writer, in
//! the same atomic step; see [`coord`] for the tables.
//!
//! The SQL stores create their table if it is missing; the exact DDL is in
//! `SqliteStore`'s and `PostgresStore`'s docs. Unsigned 64-bit fields
//! (token, nonce, expiry, version) are stored bit-for-bit in the signed
//! 64-bit integer column, so values from 2^63 up read as negative numbers
//! in SQL but round-trip exactly. Every row records
//! [`LEASE_SCHEMA_VERSION`]; a row with another schema version is refused
//! as [`StoreError::Corrupt`] rather than misread.

use std::sync::Arc;

use crate::runtime::BoxFuture;

pub use hedgerow_core::{
    CasOutcome, Holder, LeaseRow, LeaseWrite, StoreError, LEASE_SCHEMA_VERSION,
};

mod memory;
pub use memory::MemoryStore;

pub mod coord;
pub use coord::{AsyncCoordStore, CoordStore};

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;

#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteStore, SqliteStoreBuilder};
#[cfg(feature = "sqlite")]
mod sqlite_coord;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
pub use postgres::{redacted, PostgresStore, PostgresStoreBuilder};
#[cfg(feature = "postgres")]
mod postgres_coord;
#[cfg(feature = "postgres")]
mod postgres_tls;

#[cfg(feature = "conformance")]
pub mod conformance;

/// The table every SQL store keeps its lease rows in, one row per group.
pub const LEASE_TABLE: &str = "hedgerow_lease";

/// A shared store holding one lease row per group, with compare-and-set of
/// the whole row on its version.
///
/// Calls block; see the [module docs](self) for why and for how an async
/// driver runs them. Implementations must be safe to share between
/// threads and processes (each call is atomic on its own) and must answer
/// every call, with a [`StoreError`] if need be, within their configured
/// timeouts.
pub trait LeaseStore: Send + Sync {
    /// The row of `group`, or `None` if none was ever written.
    fn read(&self, group: &str) -> Result<Option<LeaseRow>, StoreError>;

    /// Write `write` as the row of `group` if the stored row's version is
    /// `expected_version`; `None` inserts only if `group` has no row yet.
    /// The store assigns the version: `expected + 1`, or 1 for an insert.
    ///
    /// On a version mismatch the answer is [`CasOutcome::Conflict`] with
    /// the row as currently stored (if it could be read back), and nothing
    /// is written. A [`StoreError::Timeout`] means the write may or may not
    /// have been applied.
    fn compare_and_set(
        &self,
        group: &str,
        expected_version: Option<u64>,
        write: &LeaseWrite,
    ) -> Result<CasOutcome, StoreError>;

    /// This store's coordination side (KV, locks, semaphores), if it has
    /// one; `None` (the default) for a lease-only store, on which a node
    /// refuses the coordination calls with [`StoreError::Unsupported`].
    /// **A store that wraps another (for timing, logging, retries) must
    /// forward this** (`self.inner.coord()`), or it hides the inner store's
    /// tables.
    fn coord(&self) -> Option<&dyn CoordStore> {
        None
    }
}

impl<S: LeaseStore + ?Sized> LeaseStore for Arc<S> {
    fn read(&self, group: &str) -> Result<Option<LeaseRow>, StoreError> {
        (**self).read(group)
    }

    fn compare_and_set(
        &self,
        group: &str,
        expected_version: Option<u64>,
        write: &LeaseWrite,
    ) -> Result<CasOutcome, StoreError> {
        (**self).compare_and_set(group, expected_version, write)
    }

    fn coord(&self) -> Option<&dyn CoordStore> {
        (**self).coord()
    }
}

impl<S: LeaseStore + ?Sized> LeaseStore for Box<S> {
    fn read(&self, group: &str) -> Result<Option<LeaseRow>, StoreError> {
        (**self).read(group)
    }

    fn compare_and_set(
        &self,
        group: &str,
        expected_version: Option<u64>,
        write: &LeaseWrite,
    ) -> Result<CasOutcome, StoreError> {
        (**self).compare_and_set(group, expected_version, write)
    }

    fn coord(&self) -> Option<&dyn CoordStore> {
        (**self).coord()
    }
}

/// A lease store whose calls are futures, for stores that speak to their
/// backend with the runtime's own I/O (a simulated network, an async
/// client). Same contract as [`LeaseStore`]: one atomic compare-and-set of
/// the whole row on its version, every failure a [`StoreError`].
///
/// The driver runs each call as a task on the node's runtime (never on the
/// blocking pool) and drops the future when the store timeout passes, so an
/// implementation must tolerate being cancelled at any await: a write that
/// was cancelled may or may not have been applied, exactly like a
/// [`StoreError::Timeout`]. Pass one with `Builder::async_store`.
pub trait AsyncLeaseStore: Send + Sync {
    /// The row of `group`, or `None` if none was ever written.
    fn read<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<Option<LeaseRow>, StoreError>>;

    /// As [`LeaseStore::compare_and_set`].
    fn compare_and_set<'a>(
        &'a self,
        group: &'a str,
        expected_version: Option<u64>,
        write: &'a LeaseWrite,
    ) -> BoxFuture<'a, Result<CasOutcome, StoreError>>;

    /// The store's coordination side (KV, locks, semaphores), if it has
    /// one; as [`LeaseStore::coord`], a wrapper must forward it.
    fn coord(&self) -> Option<&dyn AsyncCoordStore> {
        None
    }
}

impl<S: AsyncLeaseStore + ?Sized> AsyncLeaseStore for Arc<S> {
    fn read<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<Option<LeaseRow>, StoreError>> {
        (**self).read(group)
    }

    fn compare_and_set<'a>(
        &'a self,
        group: &'a str,
        expected_version: Option<u64>,
        write: &'a LeaseWrite,
    ) -> BoxFuture<'a, Result<CasOutcome, StoreError>> {
        (**self).compare_and_set(group, expected_version, write)
    }

    fn coord(&self) -> Option<&dyn AsyncCoordStore> {
        (**self).coord()
    }
}

/// The version a successful write conditioned on `expected` gets.
fn next_version(group: &str, expected: Option<u64>) -> Result<u64, StoreError> {
    match expected {
        None => Ok(1),
        Some(v) => v.checked_add(1).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "the lease row of group {group:?} is at version u64::MAX and cannot be written \
                 again; only a damaged table gets there: restore it from a backup"
            ))
        }),
    }
}
