//! Separate processes racing one lease row, on SQLite (one file shared by
//! the processes of one machine) and on PostgreSQL: every version is won
//! by exactly one process. Also the coordination tables: processes racing
//! for the one permit of a lock (every token granted to exactly one, never
//! two permits stored at once), and a write fenced on an expired lease
//! refused while another process holds the lease it took over. The children are this test binary run again
//! on the `race_child` test of the same store (see
//! [`conformance::race_in_processes`]); the PostgreSQL race skips, saying
//! why, without PostgreSQL unless `HEDGEROW_REQUIRE_POSTGRES=1`.
//!
//! Each race starts four processes, so the two run one at a time.

use hedgerow::store::conformance;
use hedgerow_tests::{one_at_a_time, postgres, temp_dir};

/// Processes per race, and the row version at which they stop.
const CHILDREN: usize = 4;
const TARGET: u64 = 300;
/// The lock token at which the permit race stops.
const PERMIT_TARGET: u64 = 100;

mod sqlite {
    use std::path::Path;
    use std::time::Duration;

    use hedgerow::store::SqliteStore;

    use super::*;

    /// The parent's final read.
    const BUSY_TIMEOUT: Duration = Duration::from_millis(700);
    /// Four processes fsyncing one file on a loaded 2-core machine can wait
    /// longer than a short timeout; a busy error in a child would be a
    /// flake, not a finding.
    const RACE_BUSY_TIMEOUT: Duration = Duration::from_secs(15);
    const PATH_ENV: &str = "HEDGEROW_TEST_SQLITE_PATH";

    fn open(path: &Path, busy_timeout: Duration) -> SqliteStore {
        SqliteStore::builder(path)
            .busy_timeout(busy_timeout)
            .open()
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
    }

    #[test]
    fn separate_processes_never_both_win() {
        let _one = one_at_a_time();
        let dir = temp_dir();
        let path = dir.path().join("lease.db");
        let scratch = temp_dir();
        conformance::race_in_processes(
            &open(&path, BUSY_TIMEOUT),
            "sqlite::race_child",
            &[(PATH_ENV, &path.to_string_lossy())],
            CHILDREN,
            TARGET,
            scratch.path(),
        );
    }

    /// A child process of `separate_processes_never_both_win`; does nothing
    /// when run on its own.
    #[test]
    #[ignore = "started by separate_processes_never_both_win"]
    fn race_child() {
        conformance::race_child(|| {
            let path = std::env::var(PATH_ENV).unwrap_or_else(|_| panic!("{PATH_ENV} is not set"));
            open(Path::new(&path), RACE_BUSY_TIMEOUT)
        });
    }

    #[test]
    fn separate_processes_never_both_hold_a_permit() {
        let _one = one_at_a_time();
        let dir = temp_dir();
        let path = dir.path().join("lease.db");
        let scratch = temp_dir();
        conformance::permit_race_in_processes(
            &open(&path, BUSY_TIMEOUT),
            "sqlite::permit_race_child",
            &[(PATH_ENV, &path.to_string_lossy())],
            CHILDREN,
            PERMIT_TARGET,
            scratch.path(),
        );
    }

    /// A child process of `separate_processes_never_both_hold_a_permit`.
    #[test]
    #[ignore = "started by separate_processes_never_both_hold_a_permit"]
    fn permit_race_child() {
        conformance::permit_race_child(|| {
            let path = std::env::var(PATH_ENV).unwrap_or_else(|_| panic!("{PATH_ENV} is not set"));
            open(Path::new(&path), RACE_BUSY_TIMEOUT)
        });
    }

    #[test]
    fn a_write_fenced_on_an_expired_lease_is_refused_while_another_process_holds_it() {
        let _one = one_at_a_time();
        let dir = temp_dir();
        let path = dir.path().join("lease.db");
        let scratch = temp_dir();
        conformance::fenced_while_another_process_holds(
            &open(&path, BUSY_TIMEOUT),
            "sqlite::takeover_child",
            &[(PATH_ENV, &path.to_string_lossy())],
            scratch.path(),
        );
    }

    /// The child process of the test above.
    #[test]
    #[ignore = "started by a_write_fenced_on_an_expired_lease_is_refused_while_another_process_holds_it"]
    fn takeover_child() {
        conformance::takeover_child(|| {
            let path = std::env::var(PATH_ENV).unwrap_or_else(|_| panic!("{PATH_ENV} is not set"));
            open(Path::new(&path), RACE_BUSY_TIMEOUT)
        });
    }
}

mod postgres {
    use std::time::Duration;

    use hedgerow::store::PostgresStore;

    use super::*;

    const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    const STATEMENT_TIMEOUT: Duration = Duration::from_secs(2);
    const URL_ENV: &str = "HEDGEROW_TEST_POSTGRES";

    fn open(connection_string: &str) -> PostgresStore {
        PostgresStore::builder(connection_string)
            .connect_timeout(CONNECT_TIMEOUT)
            .statement_timeout(STATEMENT_TIMEOUT)
            .build()
            .unwrap_or_else(|e| panic!("build store: {e}"))
    }

    #[test]
    fn separate_processes_never_both_win() {
        let _one = one_at_a_time();
        let Some(server) = postgres("separate_processes_never_both_win") else {
            return;
        };
        let scratch = temp_dir();
        let url = server.connection_string();
        conformance::race_in_processes(
            &open(&url),
            "postgres::race_child",
            &[(URL_ENV, &url)],
            CHILDREN,
            TARGET,
            scratch.path(),
        );
    }

    /// A child process of `separate_processes_never_both_win`; does nothing
    /// when run on its own.
    #[test]
    #[ignore = "started by separate_processes_never_both_win"]
    fn race_child() {
        conformance::race_child(|| {
            let url = std::env::var(URL_ENV).unwrap_or_else(|_| panic!("{URL_ENV} is not set"));
            open(&url)
        });
    }

    #[test]
    fn separate_processes_never_both_hold_a_permit() {
        let _one = one_at_a_time();
        let Some(server) = postgres("separate_processes_never_both_hold_a_permit") else {
            return;
        };
        let scratch = temp_dir();
        let url = server.connection_string();
        conformance::permit_race_in_processes(
            &open(&url),
            "postgres::permit_race_child",
            &[(URL_ENV, &url)],
            CHILDREN,
            PERMIT_TARGET,
            scratch.path(),
        );
    }

    /// A child process of `separate_processes_never_both_hold_a_permit`.
    #[test]
    #[ignore = "started by separate_processes_never_both_hold_a_permit"]
    fn permit_race_child() {
        conformance::permit_race_child(|| {
            let url = std::env::var(URL_ENV).unwrap_or_else(|_| panic!("{URL_ENV} is not set"));
            open(&url)
        });
    }

    /// A real PostgreSQL refuses a write fenced on this process's expired
    /// lease while another process holds the lease it took over.
    #[test]
    fn a_write_fenced_on_an_expired_lease_is_refused_while_another_process_holds_it() {
        let _one = one_at_a_time();
        let Some(server) = postgres("fenced_while_another_process_holds") else {
            return;
        };
        let scratch = temp_dir();
        let url = server.connection_string();
        conformance::fenced_while_another_process_holds(
            &open(&url),
            "postgres::takeover_child",
            &[(URL_ENV, &url)],
            scratch.path(),
        );
    }

    /// The child process of the test above.
    #[test]
    #[ignore = "started by a_write_fenced_on_an_expired_lease_is_refused_while_another_process_holds_it"]
    fn takeover_child() {
        conformance::takeover_child(|| {
            let url = std::env::var(URL_ENV).unwrap_or_else(|_| panic!("{URL_ENV} is not set"));
            open(&url)
        });
    }
}
