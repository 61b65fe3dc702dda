//! The conformance suite against PostgreSQL, on throw-away servers these
//! tests start themselves (skipped, saying why, where PostgreSQL is not
//! installed, unless HEDGEROW_REQUIRE_POSTGRES=1). Also: a server stopped
//! and restarted under a live store, a frozen server, idle connections
//! closed, and damaged rows reported. Separate processes race in the
//! workspace's `tests/tests/store_races.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hedgerow::store::conformance::{self, fresh_group, write_by, Harness, PostgresServer};
use hedgerow::store::{CasOutcome, LeaseStore, PostgresStore, StoreError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(2);

struct Postgres {
    server: PostgresServer,
}

fn open(connection_string: &str) -> PostgresStore {
    PostgresStore::builder(connection_string)
        .connect_timeout(CONNECT_TIMEOUT)
        .statement_timeout(STATEMENT_TIMEOUT)
        .build()
        .unwrap_or_else(|e| panic!("build store: {e}"))
}

impl Harness for Postgres {
    type Store = PostgresStore;

    fn open(&self) -> PostgresStore {
        open(&self.server.connection_string())
    }

    fn take_down(&self) {
        self.server
            .stop()
            .unwrap_or_else(|e| panic!("stop PostgreSQL: {e}"));
    }

    fn bring_back(&self) {
        self.server
            .start_again()
            .unwrap_or_else(|e| panic!("restart PostgreSQL: {e}"));
    }

    fn down_deadline(&self) -> Duration {
        // A refused connection fails at once; the bound is the worst case
        // of a connect plus a statement.
        CONNECT_TIMEOUT + STATEMENT_TIMEOUT + Duration::from_secs(1)
    }
}

fn server(test: &str) -> Option<Postgres> {
    PostgresServer::start_for_test(test).map(|server| Postgres { server })
}

#[test]
fn conformance() {
    let Some(pg) = server("conformance") else {
        return;
    };
    conformance::run_all(&pg);
}

#[test]
fn server_stopped_and_restarted_under_a_live_store() {
    let Some(pg) = server("server_stopped_and_restarted_under_a_live_store") else {
        return;
    };
    conformance::store_down_is_an_error_then_recovers(&pg);

    // A connection left open across a restart is dead; the next call
    // notices, reconnects and succeeds, for reads and for writes.
    let store = pg.open();
    let group = fresh_group("restart");
    let first = match store.compare_and_set(&group, None, &write_by("a", 1, 1, 1)) {
        Ok(CasOutcome::Applied(row)) => row,
        other => panic!("seed: {other:?}"),
    };
    assert!(store.is_connected());
    pg.take_down();
    pg.bring_back();
    assert_eq!(store.read(&group), Ok(Some(first.clone())));
    pg.take_down();
    pg.bring_back();
    let next = write_by("a", 1, 1, 2);
    assert_eq!(
        store.compare_and_set(&group, Some(first.version), &next),
        Ok(CasOutcome::Applied(next.clone().into_row(2)))
    );
}

#[test]
fn a_frozen_server_is_a_timeout_not_a_hang() {
    let Some(pg) = server("a_frozen_server_is_a_timeout_not_a_hang") else {
        return;
    };
    let store = pg.open();
    let group = fresh_group("frozen");
    let seeded = store.compare_and_set(&group, None, &write_by("a", 1, 1, 1));
    assert!(matches!(seeded, Ok(CasOutcome::Applied(_))), "{seeded:?}");
    pg.server.freeze().unwrap_or_else(|e| panic!("freeze: {e}"));

    // On the open connection: the client-side deadline fires.
    let started = Instant::now();
    let result = store.compare_and_set(&group, Some(1), &write_by("a", 1, 1, 2));
    let took = started.elapsed();
    assert_eq!(result, Err(StoreError::Timeout));
    assert!(
        took < STATEMENT_TIMEOUT + Duration::from_secs(2),
        "took {took:?}"
    );

    // On a new connection: the connect timeout fires.
    let started = Instant::now();
    let result = pg.open().read(&group);
    let took = started.elapsed();
    assert!(
        matches!(result, Err(StoreError::Unavailable(ref why)) if why.contains("could not connect")),
        "{result:?}"
    );
    assert!(
        took < CONNECT_TIMEOUT + Duration::from_secs(2),
        "took {took:?}"
    );

    pg.server.thaw().unwrap_or_else(|e| panic!("thaw: {e}"));
    // The timed-out write may or may not have been applied: read first.
    let row = store
        .read(&group)
        .unwrap_or_else(|e| panic!("read after thaw: {e}"))
        .unwrap_or_else(|| panic!("row gone after thaw"));
    let next = write_by("a", 1, 1, 3);
    assert_eq!(
        store.compare_and_set(&group, Some(row.version), &next),
        Ok(CasOutcome::Applied(next.clone().into_row(row.version + 1)))
    );
}

/// Trap 8's part in the store: members that touch the store now and then
/// do not keep a connection each. The connection opens on the first call
/// and closes after the idle timeout; the server sees it go.
#[test]
fn idle_connections_are_closed() {
    let Some(pg) = server("idle_connections_are_closed") else {
        return;
    };
    let store = PostgresStore::builder(pg.server.connection_string())
        .idle_timeout(Duration::from_millis(300))
        .build()
        .unwrap_or_else(|e| panic!("build: {e}"));
    let count = || {
        pg.server
            .psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'hedgerow'")
            .unwrap_or_else(|e| panic!("psql: {e}"))
            .trim()
            .to_owned()
    };
    assert!(!store.is_connected(), "connected before the first call");
    assert_eq!(count(), "0");
    assert_eq!(store.read(&fresh_group("idle")), Ok(None));
    assert!(store.is_connected());
    assert_eq!(count(), "1");
    eventually("the idle connection closes", || !store.is_connected());
    eventually("the server sees the idle connection go", || count() == "0");
    // And it comes back on demand.
    assert_eq!(store.read(&fresh_group("idle")), Ok(None));
    assert_eq!(count(), "1");
    drop(store);
    eventually("a dropped store closes its connection", || count() == "0");
}

/// Waits up to 10 s for `done`, a generous bound for a loaded machine.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Rows the store cannot understand are reported as `Corrupt` with a
/// message saying what to do, never a panic, and are not overwritten.
#[test]
fn damaged_rows_and_tables_are_reported() {
    let Some(pg) = server("damaged_rows_and_tables_are_reported") else {
        return;
    };
    let store = pg.open();
    let group = fresh_group("damaged");
    let seeded = store.compare_and_set(&group, None, &write_by("a", 1, 1, 1));
    assert!(matches!(seeded, Ok(CasOutcome::Applied(_))), "{seeded:?}");
    let sql = |sql: &str| pg.server.psql(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));

    sql(&format!(
        "UPDATE hedgerow_lease SET schema_version = 2 WHERE name = '{group}'"
    ));
    match store.read(&group) {
        Err(StoreError::Corrupt(why)) => assert!(why.contains("schema version 2"), "{why}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(matches!(
        store.compare_and_set(&group, Some(1), &write_by("b", 2, 2, 2)),
        Err(StoreError::Corrupt(_))
    ));
    sql(&format!(
        "UPDATE hedgerow_lease SET schema_version = 1, holder_id = '' WHERE name = '{group}'"
    ));
    assert!(matches!(store.read(&group), Err(StoreError::Corrupt(_))));

    // Versions around the sign bit of BIGINT, set behind the store's back.
    sql(&format!(
        "UPDATE hedgerow_lease SET holder_id = 'a', version = {} WHERE name = '{group}'",
        i64::MAX
    ));
    let next = write_by("a", 1, 1, 5);
    assert_eq!(
        store.compare_and_set(&group, Some(i64::MAX as u64), &next),
        Ok(CasOutcome::Applied(next.clone().into_row(1 << 63)))
    );
    assert_eq!(
        sql(&format!(
            "SELECT version FROM hedgerow_lease WHERE name = '{group}'"
        ))
        .trim(),
        i64::MIN.to_string()
    );
    sql(&format!(
        "UPDATE hedgerow_lease SET version = -1 WHERE name = '{group}'"
    ));
    assert!(matches!(
        store.compare_and_set(&group, Some(u64::MAX), &next),
        Err(StoreError::Corrupt(_))
    ));

    // A table of another layout.
    sql("ALTER TABLE hedgerow_lease DROP COLUMN holder_addr");
    let fresh = pg.open();
    let result = fresh.read(&group);
    assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
}

/// The store is called from a tokio runtime's blocking pool, as the
/// driver will do, and dropped inside an async task without panicking.
#[test]
fn works_from_a_runtime_blocking_pool() {
    let Some(pg) = server("works_from_a_runtime_blocking_pool") else {
        return;
    };
    let store = Arc::new(pg.open());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    runtime.block_on(async {
        let on_pool = Arc::clone(&store);
        let read = tokio::task::spawn_blocking(move || on_pool.read("blocking-pool"))
            .await
            .unwrap_or_else(|e| panic!("join: {e}"));
        assert_eq!(read, Ok(None));
        drop(store);
    });
}

#[test]
fn an_unreachable_server_is_unavailable_quickly() {
    // Nothing listens on port 1 of loopback: refused at once.
    let store = open("host=127.0.0.1 port=1 user=postgres dbname=postgres");
    let started = Instant::now();
    let result = store.read("g");
    assert!(started.elapsed() < CONNECT_TIMEOUT + Duration::from_secs(1));
    match result {
        Err(StoreError::Unavailable(why)) => assert!(why.contains("127.0.0.1:1"), "{why}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(matches!(
        PostgresStore::builder("host=x port=notaport").build(),
        Err(StoreError::Unavailable(_))
    ));
}

/// Many nodes starting at once against an empty database all create the
/// table at the same moment; PostgreSQL then fails some of the concurrent
/// CREATE TABLE IF NOT EXISTS on its catalog. None of them may fail.
#[test]
fn many_stores_create_the_table_at_once() {
    let Some(pg) = server("many_stores_create_the_table_at_once") else {
        return;
    };
    for round in 0..4 {
        let db = format!("fresh{round}");
        pg.server
            .psql(&format!("CREATE DATABASE {db}"))
            .unwrap_or_else(|e| panic!("create database: {e}"));
        let url = format!("{} dbname={db}", pg.server.connection_string());
        let start = std::sync::Barrier::new(8);
        std::thread::scope(|scope| {
            let racers: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        let store = open(&url);
                        start.wait();
                        store.read("g")
                    })
                })
                .collect();
            for racer in racers {
                let read = racer.join().unwrap_or_else(|_| panic!("racer panicked"));
                assert_eq!(read, Ok(None), "round {round}");
            }
        });
    }
}

/// Trap 8's part in the store: a server out of connection slots is
/// reported as Unavailable with advice, and once idle connections close,
/// a refused store gets in.
#[test]
fn a_full_server_is_unavailable_with_advice() {
    let Some(pg) = PostgresServer::start_for_test_with(
        "a_full_server_is_unavailable_with_advice",
        &["max_connections=4", "superuser_reserved_connections=0"],
    )
    .map(|server| Postgres { server }) else {
        return;
    };
    let idle = Duration::from_millis(500);
    let stores: Vec<PostgresStore> = (0..5)
        .map(|_| {
            PostgresStore::builder(pg.server.connection_string())
                .idle_timeout(idle)
                .build()
                .unwrap_or_else(|e| panic!("build: {e}"))
        })
        .collect();
    let group = fresh_group("full");
    let results: Vec<_> = stores.iter().map(|s| s.read(&group)).collect();
    let refused: Vec<usize> = (0..results.len())
        .filter(|&i| results[i].is_err())
        .collect();
    assert_eq!(refused.len(), 1, "{results:?}");
    match &results[refused[0]] {
        Err(StoreError::Unavailable(why)) => {
            assert!(why.contains("max_connections"), "{why}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    std::thread::sleep(idle * 3);
    assert_eq!(stores[refused[0]].read(&group), Ok(None));
}

/// The coordination side: the suite, then a stopped and restarted server
/// under a live store.
#[test]
fn coord_conformance() {
    let Some(pg) = server("coord_conformance") else {
        return;
    };
    conformance::run_coord(&pg);
    conformance::coord_store_down_is_an_error_then_recovers(&pg);
}

/// Coordination rows the store cannot understand are `Corrupt`, never a
/// panic; a table of another layout is named.
#[test]
fn damaged_coord_rows_are_reported() {
    use hedgerow::store::coord::{CoordOp, CoordReply, Fence, Origin};
    use hedgerow_core::{NodeId, OpId, Payload, Term};
    let Some(pg) = server("damaged_coord_rows_are_reported") else {
        return;
    };
    let store = pg.open();
    let coord = store.coord().unwrap_or_else(|| panic!("no coord side"));
    let group = fresh_group("damaged-coord");
    let seeded = store.compare_and_set(&group, None, &write_by("l", 5, 1, 1));
    assert!(matches!(seeded, Ok(CasOutcome::Applied(_))), "{seeded:?}");
    let fence = Fence {
        token: Term(1),
        nonce: 5,
    };
    let node = |id: &str| NodeId::new(id).unwrap_or_else(|e| panic!("{e}"));
    let put = |request| CoordOp::Put {
        op: OpId(request),
        fence,
        origin: Origin {
            node: node("m"),
            incarnation: 1,
            request,
        },
        key: "k".into(),
        value: Payload::from(&b"v"[..]),
    };
    let grant = CoordOp::Grant {
        op: OpId(1),
        fence,
        name: "s".into(),
        limit: 2,
        holder: node("h"),
        incarnation: 1,
        ticket: 1,
        expires_ns: 1,
    };
    assert_eq!(
        coord.execute(&group, &put(1)),
        Ok(CoordReply::Put { revision: 1 })
    );
    assert_eq!(
        coord.execute(&group, &grant),
        Ok(CoordReply::Granted { token: 1 })
    );
    let sql = |sql: &str| pg.server.psql(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let corrupt = |what: &str, result: Result<String, StoreError>, says: &str| match result {
        Err(StoreError::Corrupt(why)) => assert!(why.contains(says), "{what}: {why}"),
        other => panic!("{what}: expected Corrupt, got {other:?}"),
    };
    let show = |r: Result<CoordReply, StoreError>| r.map(|r| format!("{r:?}"));
    sql("UPDATE hedgerow_kv SET schema_version = 2");
    corrupt(
        "kv of schema 2",
        coord.kv_get(&group, "k").map(|e| format!("{e:?}")),
        "schema version 2",
    );
    sql("UPDATE hedgerow_kv SET schema_version = 1, origin_node = ''");
    corrupt(
        "kv of an empty origin",
        coord.kv_history(&group, "k").map(|e| format!("{e:?}")),
        "node id",
    );
    sql("UPDATE hedgerow_permits SET holder_id = ''");
    corrupt(
        "a permit of no holder",
        show(coord.execute(&group, &grant)),
        "node id",
    );
    sql("UPDATE hedgerow_permits SET holder_id = 'h'; UPDATE hedgerow_semaphores SET permit_limit = -1");
    let load = CoordOp::LoadPermits { op: OpId(1) };
    corrupt(
        "a negative limit",
        show(coord.execute(&group, &load)),
        "permit_limit -1",
    );
    sql("UPDATE hedgerow_semaphores SET permit_limit = 2");
    sql(&format!("UPDATE hedgerow_kv SET revision = {}", i64::MAX));
    corrupt(
        "the last revision",
        show(coord.execute(&group, &put(2))),
        "below 2^63",
    );
    sql(&format!(
        "UPDATE hedgerow_lease SET schema_version = 2 WHERE name = '{group}'"
    ));
    corrupt(
        "a foreign lease row as the fence",
        show(coord.execute(&group, &put(3))),
        "schema version 2",
    );
    sql("ALTER TABLE hedgerow_kv DROP COLUMN term");
    corrupt(
        "a kv table of another layout",
        coord.kv_get(&group, "k").map(|e| format!("{e:?}")),
        "hedgerow_kv",
    );
}

// TLS and passwords. The throw-away server speaks TLS only (hostssl) with
// a certificate for localhost and 127.0.0.1 from its own CA; everything
// above already connects with sslmode=verify-full.

/// `pg` without its TLS options, to add other ones.
fn plain_options(pg: &Postgres) -> String {
    format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        pg.server.port()
    )
}

/// Whether every connection the store made (application `hedgerow`) is
/// encrypted, and how many there are.
fn store_connections_encrypted(pg: &Postgres) -> String {
    pg.server
        .psql(
            "SELECT coalesce(bool_and(s.ssl)::text, 'none') || '/' || count(*) FROM pg_stat_ssl s \
             JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'hedgerow'",
        )
        .unwrap_or_else(|e| panic!("psql: {e}"))
        .trim()
        .to_string()
}

fn unavailable(result: Result<Option<hedgerow::store::LeaseRow>, StoreError>) -> String {
    match result {
        Err(StoreError::Unavailable(why)) => why,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[test]
fn verify_full_connects_encrypted() {
    let Some(pg) = server("verify_full_connects_encrypted") else {
        return;
    };
    let store = open(&pg.server.connection_string());
    assert_eq!(store.read(&fresh_group("tls")), Ok(None));
    assert_eq!(store_connections_encrypted(&pg), "true/1");
}

#[test]
fn verify_full_refuses_a_certificate_from_another_ca() {
    let Some(pg) = server("verify_full_refuses_a_certificate_from_another_ca") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-ca.pem");
    let other_ca = hedgerow::tls::ClusterCa::new("elsewhere").unwrap();
    std::fs::write(&other, other_ca.cert_pem()).unwrap();
    let store = open(&format!(
        "{} sslmode=verify-full sslrootcert='{}'",
        plain_options(&pg),
        other.display()
    ));
    let why = unavailable(store.read("g"));
    assert!(
        why.contains("TLS with the server failed") && why.contains("UnknownIssuer"),
        "{why}"
    );
    assert!(why.contains("chain to sslrootcert"), "{why}");
    assert_eq!(store_connections_encrypted(&pg), "none/0", "nothing got in");
}

#[test]
fn verify_full_refuses_a_certificate_for_another_host() {
    let Some(pg) = server("verify_full_refuses_a_certificate_for_another_host") else {
        return;
    };
    // Connect to 127.0.0.1 but expect the certificate to name db.invalid.
    let named = |mode: &str| {
        format!(
            "host=db.invalid hostaddr=127.0.0.1 port={} user=postgres dbname=postgres \
             sslmode={mode} sslrootcert='{}'",
            pg.server.port(),
            pg.server.ca_path().display()
        )
    };
    let why = unavailable(open(&named("verify-full")).read("g"));
    assert!(why.contains("not valid for name \"db.invalid\""), "{why}");
    assert!(why.contains("name the host"), "{why}");
    // verify-ca checks only the chain, which is good.
    assert_eq!(open(&named("verify-ca")).read(&fresh_group("ca")), Ok(None));
}

#[test]
fn sslmode_require_encrypts_without_a_root() {
    let Some(pg) = server("sslmode_require_encrypts_without_a_root") else {
        return;
    };
    let store = open(&format!("{} sslmode=require", plain_options(&pg)));
    assert_eq!(store.read(&fresh_group("require")), Ok(None));
    assert_eq!(store_connections_encrypted(&pg), "true/1");
}

#[test]
fn a_plaintext_client_is_refused_by_the_server() {
    let Some(pg) = server("a_plaintext_client_is_refused_by_the_server") else {
        return;
    };
    let why = unavailable(open(&format!("{} sslmode=disable", plain_options(&pg))).read("g"));
    assert!(
        why.contains("pg_hba.conf rejects connection") && why.contains("no encryption"),
        "{why}"
    );
}

#[test]
fn verify_full_without_a_root_fails_to_build() {
    let err = PostgresStore::builder("host=db.internal user=app sslmode=verify-full")
        .build()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("sslmode=verify-full needs sslrootcert=PATH"),
        "{err}"
    );
}

#[test]
fn the_password_comes_from_a_file() {
    let Some(pg) = server("the_password_comes_from_a_file") else {
        return;
    };
    let role = conformance::postgres_server::PASSWORD_ROLE;
    pg.server
        .psql(&format!(
            "CREATE ROLE {role} LOGIN SUPERUSER PASSWORD 'correct horse'"
        ))
        .unwrap_or_else(|e| panic!("psql: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let with_file = |password: &str| {
        let file = dir.path().join("password");
        std::fs::write(&file, password).unwrap();
        PostgresStore::builder(
            pg.server
                .connection_string()
                .replace("user=postgres", &format!("user={role}")),
        )
        .connect_timeout(CONNECT_TIMEOUT)
        .password_file(&file)
        .build()
        .unwrap_or_else(|e| panic!("build: {e}"))
    };
    // A Secret's file usually ends in a newline; it is not part of the
    // password.
    assert_eq!(
        with_file("correct horse\n").read(&fresh_group("pw")),
        Ok(None)
    );
    let why = unavailable(with_file("battery staple\n").read("g"));
    assert!(why.contains("password authentication failed"), "{why}");
    assert!(
        !why.contains("battery"),
        "the password is never shown: {why}"
    );

    // Rotation: the server takes a new password and the file says it;
    // the next connection (the old one ended) logs in with it, and the
    // file going missing meanwhile keeps the last one read.
    let file = dir.path().join("password");
    let rotating = with_file("correct horse\n");
    let group = fresh_group("pw-rotated");
    assert_eq!(rotating.read(&group), Ok(None));
    // The role's connections ended, so the next reads must log in again.
    let end_connections = || {
        pg.server
            .psql(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
            ))
            .unwrap_or_else(|e| panic!("psql: {e}"));
    };
    pg.server
        .psql(&format!("ALTER ROLE {role} PASSWORD 'battery staple'"))
        .unwrap_or_else(|e| panic!("psql: {e}"));
    std::fs::write(&file, "battery staple\n").unwrap();
    end_connections();
    eventually("a new connection with the rotated password", || {
        rotating.read(&group) == Ok(None)
    });
    std::fs::remove_file(&file).unwrap();
    end_connections();
    eventually("a new connection with the last password read", || {
        rotating.read(&group) == Ok(None)
    });

    let missing = dir.path().join("no-such-file");
    let err = PostgresStore::builder(pg.server.connection_string())
        .password_file(&missing)
        .build()
        .unwrap_err();
    let err = err.to_string();
    assert!(
        err.contains("cannot read the password file") && err.contains("no-such-file"),
        "{err}"
    );
}
