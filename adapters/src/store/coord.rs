//! The coordination services' side of a store: the fenced writes a leader
//! makes for the KV store, locks and semaphores ([`CoordOp`], answered
//! with a [`CoordReply`]), and the KV reads any node makes directly, with
//! no leader hop. What to write and when is the core's call
//! (`hedgerow_core::coord`); a store only applies or refuses, atomically
//! with a check of the lease row in the same transaction, exactly as
//! [`execute_coord`] defines.
//!
//! A store offers these by answering [`LeaseStore::coord`] with itself.
//! The stores of this crate all do; a lease-only store written elsewhere
//! keeps working for membership and election, and a node on it refuses
//! the coordination verbs with a clear error.
//!
//! # The SQL stores' tables
//!
//! `SqliteStore` and `PostgresStore` keep these beside `hedgerow_lease`
//! and create them when missing, the first time a handle makes a
//! coordination call. Each write is one transaction that reads the
//! group's lease row first (PostgreSQL: `FOR SHARE`, so a takeover waits
//! for the fenced write to commit) and writes only if the row names the
//! writer; rows read back are validated, and one of another
//! [`COORD_SCHEMA_VERSION`] is refused as [`StoreError::Corrupt`].
//!
//! SQLite:
//!
#![doc = concat!("```sql\n", include_str!("schema/sqlite_coord.sql"), "```")]
//!
//! PostgreSQL:
//!
#![doc = concat!("```sql\n", include_str!("schema/postgres_coord.sql"), "```")]
//!
//! [`LeaseStore::coord`]: super::LeaseStore::coord

pub use hedgerow_core::coord::{
    execute_coord, CoordOp, CoordReply, CoordTables, Fence, KvEntry, KvRead, Origin, PermitRow,
    SemaphoreRow, COORD_SCHEMA_VERSION, MAX_KEY_LEN,
};

use super::StoreError;
use crate::runtime::BoxFuture;

/// The table every SQL store keeps KV revisions in.
pub const KV_TABLE: &str = "hedgerow_kv";
/// The table of semaphore settings and last tokens.
pub const SEMAPHORE_TABLE: &str = "hedgerow_semaphores";
/// The table of granted permits.
pub const PERMIT_TABLE: &str = "hedgerow_permits";

/// Fenced coordination writes and KV reads, per group (the cluster name,
/// the same key as the group's lease row). Calls block, as
/// [`LeaseStore`](super::LeaseStore)'s do, and every failure is a
/// [`StoreError`] within the store's timeouts; a
/// [`StoreError::Timeout`] on a write means it may or may not have been
/// applied (the core retries with the same dedupe key, so a retried write
/// is recognised, never applied twice).
pub trait CoordStore: Send + Sync {
    /// Executes `op` as [`execute_coord`] defines, in one transaction with
    /// the fence check against `group`'s lease row.
    fn execute(&self, group: &str, op: &CoordOp) -> Result<CoordReply, StoreError>;

    /// The latest revision of `key`.
    fn kv_get(&self, group: &str, key: &str) -> Result<Option<KvEntry>, StoreError>;

    /// Revision `revision`, if it is a revision of `key`.
    fn kv_get_at(
        &self,
        group: &str,
        key: &str,
        revision: u64,
    ) -> Result<Option<KvEntry>, StoreError>;

    /// Every revision of `key`, oldest first.
    fn kv_history(&self, group: &str, key: &str) -> Result<Vec<KvEntry>, StoreError>;

    /// The latest revision of each key that starts with `prefix`, by key.
    fn kv_list(&self, group: &str, prefix: &str) -> Result<Vec<KvEntry>, StoreError>;

    /// Revisions after `after` of keys starting with `prefix`, oldest
    /// first, at most `limit`.
    fn kv_changes(
        &self,
        group: &str,
        prefix: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<KvEntry>, StoreError>;

    /// Answers `read` with the read method its variant names.
    fn kv_read(&self, group: &str, read: &KvRead) -> Result<Vec<KvEntry>, StoreError> {
        match read {
            KvRead::Get(key) => self.kv_get(group, key).map(|e| e.into_iter().collect()),
            KvRead::GetAt(key, rev) => self
                .kv_get_at(group, key, *rev)
                .map(|e| e.into_iter().collect()),
            KvRead::History(key) => self.kv_history(group, key),
            KvRead::List(prefix) => self.kv_list(group, prefix),
            KvRead::Changes(prefix, after, limit) => self.kv_changes(group, prefix, *after, *limit),
        }
    }
}

/// The coordination side of an
/// [`AsyncLeaseStore`](super::AsyncLeaseStore): [`CoordStore`]'s contract,
/// with futures. The driver runs each call as a task and drops it at the
/// store timeout, so an implementation must tolerate being cancelled at
/// any await: a cancelled write may or may not have been applied, exactly
/// like a [`StoreError::Timeout`].
pub trait AsyncCoordStore: Send + Sync {
    /// As [`CoordStore::execute`].
    fn execute<'a>(
        &'a self,
        group: &'a str,
        op: &'a CoordOp,
    ) -> BoxFuture<'a, Result<CoordReply, StoreError>>;

    /// As [`CoordStore::kv_read`].
    fn kv_read<'a>(
        &'a self,
        group: &'a str,
        read: &'a KvRead,
    ) -> BoxFuture<'a, Result<Vec<KvEntry>, StoreError>>;
}
