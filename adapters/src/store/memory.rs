//! The in-process store: rows in a map behind a mutex, shared by every
//! clone, with each group's coordination tables beside its lease row under
//! the same mutex (so a fenced write sees the row as it is). It exists for tests and for nodes that live in one process, and
//! it can be told to fail or to be slow so that tests reach the error paths
//! of the driver without a real database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::coord::{execute_coord, CoordOp, CoordReply, CoordStore, CoordTables, KvEntry};
use super::{next_version, CasOutcome, LeaseRow, LeaseStore, LeaseWrite, StoreError};

/// A lease store in memory; every clone shares the same rows.
///
/// ```
/// use hedgerow::store::{CasOutcome, LeaseStore, LeaseWrite, MemoryStore};
/// use hedgerow_core::Term;
///
/// let store = MemoryStore::new();
/// let write = LeaseWrite { holder: None, token: Term(1), expires_ns: 0 };
/// let other_node = store.clone();
/// assert!(matches!(store.compare_and_set("web", None, &write), Ok(CasOutcome::Applied(_))));
/// assert!(matches!(other_node.compare_and_set("web", None, &write), Ok(CasOutcome::Conflict(Some(_)))));
///
/// store.set_unavailable(true);
/// assert!(other_node.read("web").is_err());
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    shared: Arc<Mutex<Shared>>,
}

#[derive(Debug, Default)]
struct Shared {
    rows: HashMap<String, LeaseRow>,
    /// Each group's coordination tables, fenced by the row beside them.
    coord: HashMap<String, CoordTables>,
    unavailable: bool,
    latency: Duration,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// While `true`, every call (from every clone) fails with
    /// [`StoreError::Unavailable`] and changes nothing.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.lock().unavailable = unavailable;
    }

    /// Every call first waits `latency`, then takes effect: a write sent
    /// before another can be applied after it, as with a slow store.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic elsewhere while holding the lock cannot leave a half-made
        // row (rows are replaced whole), so a poisoned lock is still usable.
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits out the configured latency without holding the lock, then
    /// returns the state if the store is up.
    fn enter(&self) -> Result<MutexGuard<'_, Shared>, StoreError> {
        let latency = self.lock().latency;
        if !latency.is_zero() {
            std::thread::sleep(latency);
        }
        let shared = self.lock();
        if shared.unavailable {
            return Err(StoreError::Unavailable(
                "the in-memory store was set unavailable (MemoryStore::set_unavailable)".into(),
            ));
        }
        Ok(shared)
    }
}

impl LeaseStore for MemoryStore {
    fn read(&self, group: &str) -> Result<Option<LeaseRow>, StoreError> {
        Ok(self.enter()?.rows.get(group).cloned())
    }

    fn compare_and_set(
        &self,
        group: &str,
        expected_version: Option<u64>,
        write: &LeaseWrite,
    ) -> Result<CasOutcome, StoreError> {
        let mut shared = self.enter()?;
        let current = shared.rows.get(group);
        if current.map(|row| row.version) != expected_version {
            return Ok(CasOutcome::Conflict(current.cloned()));
        }
        let row = write
            .clone()
            .into_row(next_version(group, expected_version)?);
        shared.rows.insert(group.to_owned(), row.clone());
        Ok(CasOutcome::Applied(row))
    }

    fn coord(&self) -> Option<&dyn CoordStore> {
        Some(self)
    }
}

impl MemoryStore {
    /// Runs `read` on `group`'s coordination tables (empty if none yet).
    fn read_coord<T>(
        &self,
        group: &str,
        read: impl FnOnce(&CoordTables) -> T,
    ) -> Result<T, StoreError> {
        let shared = self.enter()?;
        Ok(match shared.coord.get(group) {
            Some(tables) => read(tables),
            None => read(&CoordTables::default()),
        })
    }
}

impl CoordStore for MemoryStore {
    fn execute(&self, group: &str, op: &CoordOp) -> Result<CoordReply, StoreError> {
        let mut shared = self.enter()?;
        let Shared { rows, coord, .. } = &mut *shared;
        let tables = coord.entry(group.to_owned()).or_default();
        Ok(execute_coord(tables, rows.get(group), op))
    }

    fn kv_get(&self, group: &str, key: &str) -> Result<Option<KvEntry>, StoreError> {
        self.read_coord(group, |t| t.get(key).cloned())
    }

    fn kv_get_at(
        &self,
        group: &str,
        key: &str,
        revision: u64,
    ) -> Result<Option<KvEntry>, StoreError> {
        self.read_coord(group, |t| t.get_at(key, revision).cloned())
    }

    fn kv_history(&self, group: &str, key: &str) -> Result<Vec<KvEntry>, StoreError> {
        self.read_coord(group, |t| t.history(key))
    }

    fn kv_list(&self, group: &str, prefix: &str) -> Result<Vec<KvEntry>, StoreError> {
        self.read_coord(group, |t| t.list(prefix))
    }

    fn kv_changes(
        &self,
        group: &str,
        prefix: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<KvEntry>, StoreError> {
        self.read_coord(group, |t| t.changes(prefix, after, limit))
    }
}
