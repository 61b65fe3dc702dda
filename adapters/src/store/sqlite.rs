//! The embedded default store: one SQLite file that the processes of one
//! machine share. SQLite's own file locking makes each compare-and-set
//! atomic across processes; WAL mode lets readers proceed while a writer
//! works, and the busy timeout turns a stuck writer elsewhere into an error
//! instead of a hang. This module never deletes a row and never changes the
//! table beyond creating it.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};

use super::sql::{to_sql, RawRow, RawWrite, COLUMNS};
use super::LEASE_SCHEMA_VERSION;
use super::{next_version, CasOutcome, CoordStore, LeaseRow, LeaseStore, LeaseWrite, StoreError};

const SCHEMA: &str = include_str!("schema/sqlite.sql");

/// A lease store in one SQLite file, safe to share between the processes
/// (and threads) of one machine.
///
/// The file must sit on a local file system: WAL mode needs shared memory
/// between the processes, which network file systems do not provide. Each
/// `SqliteStore` holds one connection; calls on one store take turns, and
/// calls on different stores (in this process or another) are serialized
/// by SQLite's file lock, waiting at most the busy timeout (default 5 s)
/// before failing with [`StoreError::Unavailable`].
///
/// The table is created if it is missing:
///
#[doc = concat!("```sql\n", include_str!("schema/sqlite.sql"), "```")]
///
/// ```
/// use hedgerow::store::{LeaseStore, SqliteStore};
/// # fn main() -> Result<(), hedgerow::store::StoreError> {
/// # let dir = tempfile::tempdir().map_err(|e| hedgerow::store::StoreError::Unavailable(e.to_string()))?;
/// # let path = dir.path().join("lease.db");
/// let store = SqliteStore::open(&path)?;
/// assert_eq!(store.read("web")?, None);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
    pub(super) busy_timeout: Duration,
    /// Whether this handle made sure the coordination tables exist.
    pub(super) coord_ready: AtomicBool,
}

/// Options for [`SqliteStore`]; see [`SqliteStore::builder`].
#[derive(Clone, Debug)]
pub struct SqliteStoreBuilder {
    path: PathBuf,
    busy_timeout: Duration,
}

impl SqliteStoreBuilder {
    /// How long a call waits for another connection's write to finish
    /// before failing with [`StoreError::Unavailable`] (default 5 s). Keep
    /// it well below the lease duration.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Opens (creating if need be) the file and the table, and switches the
    /// file to WAL mode.
    ///
    /// Processes started together on a new file race for it: switching to
    /// WAL and creating the table need locks that SQLite may refuse at
    /// once with `SQLITE_BUSY`, without waiting in its busy handler (a
    /// lock upgrade it cannot wait for without risking a deadlock). Such a
    /// refusal is retried with backoff until the busy timeout has passed
    /// since the first attempt; only then does `open` fail, saying how
    /// often and for how long it tried.
    pub fn open(self) -> Result<SqliteStore, StoreError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let left = self.busy_timeout.saturating_sub(started.elapsed());
            let failure = match self.try_open(left) {
                Ok(store) => return Ok(store),
                Err(OpenFailure::Busy { step, error }) => (step, error),
                Err(OpenFailure::Other(e)) => return Err(e),
            };
            if started.elapsed() + pause >= self.busy_timeout {
                let (step, error) = failure;
                return Err(StoreError::Unavailable(format!(
                    "SQLite lease store {} (open): {step} was refused as busy ({error}) on each \
                     of {attempts} attempts over {:?}: other processes kept the file locked \
                     for the whole busy timeout ({:?}); nothing was written. Retry, or raise \
                     the busy timeout",
                    self.path.display(),
                    started.elapsed(),
                    self.busy_timeout
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(MAX_OPEN_PAUSE);
        }
    }

    /// One attempt at [`open`](Self::open), its busy handler waiting at
    /// most `wait`.
    fn try_open(&self, wait: Duration) -> Result<SqliteStore, OpenFailure> {
        let conn =
            Connection::open(&self.path).map_err(|e| self.open_failure("opening the file", e))?;
        // The busy timeout first: the pragmas and the DDL below may have to
        // wait for other processes opening the same file at the same time.
        conn.busy_timeout(wait.max(Duration::from_millis(1)))
            .map_err(|e| self.open_failure("setting the busy timeout", e))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(|e| self.open_failure("switching the file to WAL mode", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(OpenFailure::Other(StoreError::Unavailable(format!(
                "SQLite lease store {}: could not switch the file to WAL mode (it is in {mode:?} \
                 mode); use a file on a local file system",
                self.path.display()
            ))));
        }
        // FULL, not WAL's usual NORMAL: a committed takeover lost to a power
        // cut would let the next leader reuse its token.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| self.open_failure("setting synchronous=FULL", e))?;
        // The table in one IMMEDIATE transaction: it takes the write lock
        // up front (waiting in the busy handler) instead of reading the
        // schema under a read lock and then failing to upgrade it.
        let mut conn = conn;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.open_failure("locking the file to create the table", e))?;
        tx.execute_batch(SCHEMA)
            .map_err(|e| self.open_failure("creating the table", e))?;
        tx.commit()
            .map_err(|e| self.open_failure("committing the table", e))?;
        conn.busy_timeout(self.busy_timeout)
            .map_err(|e| self.open_failure("setting the busy timeout", e))?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            path: self.path.clone(),
            busy_timeout: self.busy_timeout,
            coord_ready: AtomicBool::new(false),
        })
    }

    fn open_failure(&self, step: &'static str, e: rusqlite::Error) -> OpenFailure {
        match &e {
            rusqlite::Error::SqliteFailure(err, _)
                if matches!(
                    err.code,
                    ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked
                ) =>
            {
                OpenFailure::Busy { step, error: e }
            }
            _ => OpenFailure::Other(classify(&self.path, self.busy_timeout, "open", &e)),
        }
    }
}

/// Longest pause between two attempts at opening a busy file.
const MAX_OPEN_PAUSE: Duration = Duration::from_millis(50);

/// Why one attempt at opening failed.
enum OpenFailure {
    /// SQLite refused a lock at `step`: worth another attempt.
    Busy {
        step: &'static str,
        error: rusqlite::Error,
    },
    /// Anything else, as the caller gets it.
    Other(StoreError),
}

impl SqliteStore {
    /// Options for a store in the file at `path`.
    pub fn builder(path: impl AsRef<Path>) -> SqliteStoreBuilder {
        SqliteStoreBuilder {
            path: path.as_ref().to_path_buf(),
            busy_timeout: Duration::from_secs(5),
        }
    }

    /// Opens the store in the file at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::builder(path).open()
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Connection> {
        // rusqlite rolls back an unfinished transaction when it is dropped,
        // also during a panic, so a poisoned connection is still consistent.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn fail(&self, op: &str, e: &rusqlite::Error) -> StoreError {
        classify(&self.path, self.busy_timeout, op, e)
    }

    fn cas(
        &self,
        conn: &mut Connection,
        group: &str,
        expected_version: Option<u64>,
        write: &LeaseWrite,
    ) -> rusqlite::Result<Result<CasOutcome, StoreError>> {
        let w = RawWrite::new(write);
        // IMMEDIATE takes the write lock up front, so the row read back on a
        // conflict is the one that caused it, not a later one.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version = match next_version(group, expected_version) {
            Ok(v) => v,
            // Only a row at u64::MAX can match; anything else conflicts.
            Err(e) => {
                let current = read_row(&tx, group)?
                    .map(|raw| raw.decode(&self.describe(), group))
                    .transpose();
                return Ok(match current {
                    Ok(row) if row.as_ref().map(|r| r.version) != expected_version => {
                        Ok(CasOutcome::Conflict(row))
                    }
                    Ok(_) => Err(e),
                    Err(decode) => Err(decode),
                });
            }
        };
        let changed = match expected_version {
            None => tx.execute(
                "INSERT INTO hedgerow_lease (name, schema_version, holder_id, holder_nonce, \
                 holder_addr, token, expires_ns, version) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (name) DO NOTHING",
                params![
                    group,
                    LEASE_SCHEMA_VERSION,
                    w.holder_id,
                    w.holder_nonce,
                    w.holder_addr,
                    w.token,
                    w.expires_ns,
                    to_sql(version)
                ],
            )?,
            Some(expected) => tx.execute(
                "UPDATE hedgerow_lease SET holder_id = ?3, holder_nonce = ?4, holder_addr = ?5, \
                 token = ?6, expires_ns = ?7, version = ?8 \
                 WHERE name = ?1 AND version = ?2 AND schema_version = ?9",
                params![
                    group,
                    to_sql(expected),
                    w.holder_id,
                    w.holder_nonce,
                    w.holder_addr,
                    w.token,
                    w.expires_ns,
                    to_sql(version),
                    LEASE_SCHEMA_VERSION
                ],
            )?,
        };
        let outcome = if changed == 1 {
            Ok(CasOutcome::Applied(write.clone().into_row(version)))
        } else {
            read_row(&tx, group)?
                .map(|raw| raw.decode(&self.describe(), group))
                .transpose()
                .map(CasOutcome::Conflict)
        };
        tx.commit()?;
        Ok(outcome)
    }

    pub(super) fn describe(&self) -> String {
        format!("SQLite lease store {}", self.path.display())
    }
}

pub(super) fn read_row(conn: &Connection, group: &str) -> rusqlite::Result<Option<RawRow>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM hedgerow_lease WHERE name = ?1"
    ))?
    .query_row([group], |row| {
        Ok(RawRow {
            schema_version: row.get(0)?,
            holder_id: row.get(1)?,
            holder_nonce: row.get(2)?,
            holder_addr: row.get(3)?,
            token: row.get(4)?,
            expires_ns: row.get(5)?,
            version: row.get(6)?,
        })
    })
    .optional()
}

/// Maps a rusqlite error to what the caller can do about it.
fn classify(path: &Path, busy_timeout: Duration, op: &str, e: &rusqlite::Error) -> StoreError {
    let at = format!("SQLite lease store {} ({op})", path.display());
    match e {
        rusqlite::Error::SqliteFailure(err, _) => match err.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                StoreError::Unavailable(format!(
                    "{at}: another connection kept the database locked for longer than the busy \
                 timeout ({busy_timeout:?}); nothing was written"
                ))
            }
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => StoreError::Corrupt(format!(
                "{at}: {e}; the file is damaged or not a SQLite database"
            )),
            ErrorCode::Unknown | ErrorCode::TypeMismatch | ErrorCode::ConstraintViolation => {
                StoreError::Corrupt(format!(
                    "{at}: {e}; table hedgerow_lease does not have the layout this build of \
                     hedgerow creates"
                ))
            }
            _ => StoreError::Unavailable(format!("{at}: {e}")),
        },
        rusqlite::Error::SqlInputError { .. } => StoreError::Corrupt(format!(
            "{at}: {e}; table hedgerow_lease does not have the layout this build of hedgerow \
             creates"
        )),
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => StoreError::Corrupt(format!(
            "{at}: {e}; a column of table hedgerow_lease holds a value of the wrong type"
        )),
        _ => StoreError::Unavailable(format!("{at}: {e}")),
    }
}

impl LeaseStore for SqliteStore {
    fn read(&self, group: &str) -> Result<Option<LeaseRow>, StoreError> {
        let conn = self.lock();
        read_row(&conn, group)
            .map_err(|e| self.fail("read", &e))?
            .map(|raw| raw.decode(&self.describe(), group))
            .transpose()
    }

    fn compare_and_set(
        &self,
        group: &str,
        expected_version: Option<u64>,
        write: &LeaseWrite,
    ) -> Result<CasOutcome, StoreError> {
        let mut conn = self.lock();
        self.cas(&mut conn, group, expected_version, write)
            .map_err(|e| self.fail("compare-and-set", &e))?
    }

    /// The coordination tables live in the same file (`sqlite_coord.rs`).
    fn coord(&self) -> Option<&dyn CoordStore> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hedgerow_core::Term;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let store =
            SqliteStore::open(dir.path().join("lease.db")).unwrap_or_else(|e| panic!("open: {e}"));
        (dir, store)
    }

    fn raw(store: &SqliteStore, sql: &str) {
        store
            .lock()
            .execute_batch(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn write() -> LeaseWrite {
        LeaseWrite {
            holder: None,
            token: Term(3),
            expires_ns: 9,
        }
    }

    #[test]
    fn versions_cross_the_sign_bit_of_the_column() {
        let (_dir, store) = store();
        // A row at version 2^63 - 1; its next version is stored as i64::MIN.
        raw(
            &store,
            &format!(
                "INSERT INTO hedgerow_lease VALUES ('g', 1, NULL, NULL, NULL, 1, 1, {})",
                i64::MAX
            ),
        );
        let outcome = store.compare_and_set("g", Some(i64::MAX as u64), &write());
        assert_eq!(outcome, Ok(CasOutcome::Applied(write().into_row(1 << 63))));
        assert_eq!(
            store.read("g").map(|r| r.map(|r| r.version)),
            Ok(Some(1 << 63))
        );
        // u64::MAX is stored as -1, and cannot be bumped further.
        raw(&store, "UPDATE hedgerow_lease SET version = -1");
        assert_eq!(
            store.read("g").map(|r| r.map(|r| r.version)),
            Ok(Some(u64::MAX))
        );
        assert!(matches!(
            store.compare_and_set("g", Some(u64::MAX), &write()),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn a_row_of_another_schema_version_is_refused_and_not_overwritten() {
        let (_dir, store) = store();
        raw(
            &store,
            "INSERT INTO hedgerow_lease VALUES ('g', 2, NULL, NULL, NULL, 1, 1, 1)",
        );
        match store.read("g") {
            Err(StoreError::Corrupt(why)) => assert!(why.contains("schema version 2"), "{why}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(matches!(
            store.compare_and_set("g", Some(1), &write()),
            Err(StoreError::Corrupt(_))
        ));
        raw(&store, "UPDATE hedgerow_lease SET schema_version = 1");
        assert_eq!(
            store.read("g").map(|r| r.map(|r| r.token)),
            Ok(Some(Term(1)))
        );
    }

    #[test]
    fn a_table_of_another_layout_is_reported_not_panicked_on() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let path = dir.path().join("lease.db");
        Connection::open(&path)
            .and_then(|c| c.execute_batch("CREATE TABLE hedgerow_lease (name TEXT PRIMARY KEY)"))
            .unwrap_or_else(|e| panic!("setup: {e}"));
        let store = SqliteStore::open(&path).unwrap_or_else(|e| panic!("open: {e}"));
        let read = store.read("g");
        assert!(matches!(read, Err(StoreError::Corrupt(_))), "{read:?}");
        assert!(matches!(
            store.compare_and_set("g", None, &write()),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn a_file_locked_past_the_busy_timeout_fails_saying_what_was_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let path = dir.path().join("lease.db");
        let holder = Connection::open(&path).unwrap_or_else(|e| panic!("open: {e}"));
        holder
            .execute_batch("BEGIN EXCLUSIVE; CREATE TABLE held (x INTEGER);")
            .unwrap_or_else(|e| panic!("lock: {e}"));
        let opened = SqliteStore::builder(&path)
            .busy_timeout(Duration::from_millis(200))
            .open();
        match opened {
            Err(StoreError::Unavailable(why)) => {
                assert!(why.contains("refused as busy"), "{why}");
                assert!(why.contains("attempts"), "{why}");
                assert!(why.contains("lease.db"), "{why}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        // Once the lock is let go, the same file opens.
        drop(holder);
        let store = SqliteStore::open(&path).unwrap_or_else(|e| panic!("open: {e}"));
        assert_eq!(store.read("g"), Ok(None));
    }

    #[test]
    fn a_file_that_is_not_a_database_is_reported() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let path = dir.path().join("lease.db");
        std::fs::write(&path, vec![b'x'; 4096]).unwrap_or_else(|e| panic!("write: {e}"));
        match SqliteStore::open(&path) {
            Err(StoreError::Corrupt(why)) => assert!(why.contains("lease.db"), "{why}"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}
