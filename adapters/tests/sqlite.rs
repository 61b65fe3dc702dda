//! The conformance suite against SQLite: threads with their own
//! connections, and a database held locked by another writer as the
//! outage. Separate processes sharing one file race in the workspace's
//! `tests/tests/store_races.rs`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use hedgerow::store::conformance::{self, Harness};
use hedgerow::store::SqliteStore;
use rusqlite::Connection;

const BUSY_TIMEOUT: Duration = Duration::from_millis(700);

struct Sqlite {
    _dir: tempfile::TempDir,
    path: PathBuf,
    /// The connection holding the database locked while "down".
    locker: Mutex<Option<Connection>>,
}

impl Sqlite {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let path = dir.path().join("lease.db");
        Sqlite {
            _dir: dir,
            path,
            locker: Mutex::new(None),
        }
    }
}

fn open(path: &Path) -> SqliteStore {
    SqliteStore::builder(path)
        .busy_timeout(BUSY_TIMEOUT)
        .open()
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

impl Harness for Sqlite {
    type Store = SqliteStore;

    fn open(&self) -> SqliteStore {
        open(&self.path)
    }

    /// Another process stuck inside a write transaction.
    fn take_down(&self) {
        let conn = Connection::open(&self.path)
            .and_then(|c| c.execute_batch("BEGIN EXCLUSIVE").map(|()| c))
            .unwrap_or_else(|e| panic!("lock the database: {e}"));
        *self.locker.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn);
    }

    fn bring_back(&self) {
        self.locker.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    fn down_deadline(&self) -> Duration {
        BUSY_TIMEOUT + Duration::from_millis(500)
    }
}

#[test]
fn conformance() {
    conformance::run_all(&Sqlite::new());
}

#[test]
fn store_down_is_an_error_then_recovers() {
    conformance::store_down_is_an_error_then_recovers(&Sqlite::new());
}

#[test]
fn coord_conformance() {
    conformance::run_coord(&Sqlite::new());
}

#[test]
fn coord_store_down_is_an_error_then_recovers() {
    conformance::coord_store_down_is_an_error_then_recovers(&Sqlite::new());
}
