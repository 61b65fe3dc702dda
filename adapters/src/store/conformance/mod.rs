//! The conformance suite every [`LeaseStore`] must pass, and the tools to
//! run it: a harness trait a store's tests implement, races between
//! separate processes, and a throw-away PostgreSQL server. The checks of
//! a store's coordination side ([`coord`]) are run by [`run_coord`]. Enabled by the
//! `conformance` feature; meant for tests only (its checks panic with a
//! message naming the check when a store misbehaves).
//!
//! ```
//! use hedgerow::store::conformance::{self, Harness};
//! use hedgerow::store::MemoryStore;
//! use std::time::Duration;
//!
//! struct Memory(MemoryStore);
//! impl Harness for Memory {
//!     type Store = MemoryStore;
//!     fn open(&self) -> MemoryStore { self.0.clone() }
//!     fn take_down(&self) { self.0.set_unavailable(true) }
//!     fn bring_back(&self) { self.0.set_unavailable(false) }
//!     fn down_deadline(&self) -> Duration { Duration::from_millis(100) }
//! }
//! conformance::run_all(&Memory(MemoryStore::new()));
//! conformance::store_down_is_an_error_then_recovers(&Memory(MemoryStore::new()));
//! // The coordination side (KV, locks, semaphores), for a store that has one.
//! conformance::run_coord(&Memory(MemoryStore::new()));
//! conformance::coord_store_down_is_an_error_then_recovers(&Memory(MemoryStore::new()));
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hedgerow_core::{NodeId, Term, MAX_ADDR_LEN, MAX_NODE_ID_LEN};

use super::{CasOutcome, Holder, LeaseRow, LeaseStore, LeaseWrite, StoreError};

pub mod postgres_server;
pub use postgres_server::PostgresServer;

pub mod coord;
pub use coord::{
    coord_store_down_is_an_error_then_recovers, fenced_while_another_process_holds,
    permit_race_child, permit_race_in_processes, run_coord, takeover_child,
};

/// How the suite reaches the store under test.
pub trait Harness {
    /// The store type under test.
    type Store: LeaseStore + 'static;

    /// A new handle on the store under test. All handles of one harness
    /// share the same rows; where the store has connections, each handle
    /// has its own, so that concurrent checks race for real.
    fn open(&self) -> Self::Store;

    /// Makes the store unavailable to every handle (stop the server, hold
    /// a lock, …) until [`bring_back`](Harness::bring_back).
    fn take_down(&self);

    /// Undoes [`take_down`](Harness::take_down).
    fn bring_back(&self);

    /// The longest any call may take while the store is down, from the
    /// handle's configured timeouts.
    fn down_deadline(&self) -> Duration;
}

/// How many threads race in the concurrency checks.
pub const RACERS: usize = 8;

/// Runs every check but the outage one, each on its own groups.
pub fn run_all<H: Harness + Sync>(harness: &H) {
    insert_if_absent_has_one_winner(harness);
    concurrent_cas_on_one_version_has_one_winner(harness);
    version_bumps_by_exactly_one(harness);
    stale_write_loses(harness);
    fields_round_trip_exactly(harness);
    groups_are_independent(harness);
    conflict_returns_current_row(harness);
}

/// A group name unique to this check and run, so checks never see each
/// other's rows, also in a store that outlives the test.
pub fn fresh_group(check: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{check}-{}-{nanos}", std::process::id())
}

/// A write by `id` with nonce `nonce`.
pub fn write_by(id: &str, nonce: u64, token: u64, expires_ns: u64) -> LeaseWrite {
    LeaseWrite {
        holder: Some(Holder {
            id: node(id),
            nonce,
            addr: format!("{id}.test:7000"),
        }),
        token: Term(token),
        expires_ns,
    }
}

fn node(id: &str) -> NodeId {
    NodeId::new(id).unwrap_or_else(|e| panic!("test node id {id:?}: {e}"))
}

fn ok<T>(check: &str, what: &str, result: Result<T, StoreError>) -> T {
    result.unwrap_or_else(|e| panic!("[{check}] {what}: store error: {e}"))
}

fn applied(check: &str, what: &str, result: Result<CasOutcome, StoreError>) -> LeaseRow {
    match ok(check, what, result) {
        CasOutcome::Applied(row) => row,
        CasOutcome::Conflict(row) => {
            panic!("[{check}] {what}: expected Applied, got Conflict({row:?})")
        }
    }
}

fn conflict(check: &str, what: &str, result: Result<CasOutcome, StoreError>) -> Option<LeaseRow> {
    match ok(check, what, result) {
        CasOutcome::Conflict(row) => row,
        CasOutcome::Applied(row) => {
            panic!("[{check}] {what}: expected Conflict, got Applied({row:?})")
        }
    }
}

/// Runs `cas(i, store)` on [`RACERS`] threads, each with its own handle,
/// released together; returns the outcomes in thread order.
fn race<H: Harness + Sync>(
    harness: &H,
    cas: impl Fn(usize, &H::Store) -> Result<CasOutcome, StoreError> + Sync,
) -> Vec<Result<CasOutcome, StoreError>> {
    let stores: Vec<H::Store> = (0..RACERS).map(|_| harness.open()).collect();
    let start = Barrier::new(RACERS);
    std::thread::scope(|scope| {
        let handles: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(i, store)| {
                let (start, cas) = (&start, &cas);
                scope.spawn(move || {
                    start.wait();
                    cas(i, store)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| panic!("a racing thread panicked inside the store"))
            })
            .collect()
    })
}

/// Checks a race: exactly one `Applied` with `version`, and every other
/// racer got `Conflict` with the winner's row.
fn one_winner(
    check: &str,
    outcomes: Vec<Result<CasOutcome, StoreError>>,
    version: u64,
) -> LeaseRow {
    let mut winners = Vec::new();
    let mut conflicts = Vec::new();
    for (i, outcome) in outcomes.into_iter().enumerate() {
        match ok(check, &format!("racer {i}"), outcome) {
            CasOutcome::Applied(row) => winners.push(row),
            CasOutcome::Conflict(row) => conflicts.push((i, row)),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "[{check}] expected exactly one winner, got {winners:?}"
    );
    let winner = winners.remove(0);
    assert_eq!(winner.version, version, "[{check}] the winner's version");
    for (i, row) in conflicts {
        assert_eq!(
            row.as_ref(),
            Some(&winner),
            "[{check}] racer {i} lost but was not shown the winner's row"
        );
    }
    winner
}

/// Insert-if-absent (`expected_version: None`) from [`RACERS`] threads at
/// once: exactly one wins, with version 1; the others see its row.
pub fn insert_if_absent_has_one_winner<H: Harness + Sync>(harness: &H) {
    let check = "insert_if_absent_has_one_winner";
    let group = fresh_group(check);
    let outcomes = race(harness, |i, store| {
        store.compare_and_set(&group, None, &write_by(&format!("n{i}"), i as u64, 1, 100))
    });
    let winner = one_winner(check, outcomes, 1);
    let stored = ok(check, "read after", harness.open().read(&group));
    assert_eq!(
        stored,
        Some(winner),
        "[{check}] the stored row is the winner's"
    );
}

/// [`RACERS`] threads write on the same version at once (all read the same
/// row and try to take over): exactly one wins; the others get `Conflict`
/// with the winner's row.
pub fn concurrent_cas_on_one_version_has_one_winner<H: Harness + Sync>(harness: &H) {
    let check = "concurrent_cas_on_one_version_has_one_winner";
    let group = fresh_group(check);
    let store = harness.open();
    let first = applied(
        check,
        "seed",
        store.compare_and_set(&group, None, &write_by("seed", 1, 1, 10)),
    );
    let outcomes = race(harness, |i, store| {
        store.compare_and_set(
            &group,
            Some(first.version),
            &write_by(&format!("n{i}"), i as u64, 2, 200 + i as u64),
        )
    });
    let winner = one_winner(check, outcomes, first.version + 1);
    assert_eq!(ok(check, "read after", store.read(&group)), Some(winner));
}

/// Each applied write bumps the version by exactly one, starting at 1, and
/// a read returns what was written.
pub fn version_bumps_by_exactly_one<H: Harness>(harness: &H) {
    let check = "version_bumps_by_exactly_one";
    let group = fresh_group(check);
    let store = harness.open();
    assert_eq!(ok(check, "read of a new group", store.read(&group)), None);
    let mut expected = None;
    for step in 1..=5u64 {
        let write = write_by("a", 7, step, step * 1000);
        let row = applied(
            check,
            &format!("write {step}"),
            store.compare_and_set(&group, expected, &write),
        );
        assert_eq!(
            row,
            write.clone().into_row(step),
            "[{check}] write {step} answered"
        );
        assert_eq!(
            ok(check, "read", store.read(&group)),
            Some(row.clone()),
            "[{check}] write {step} stored"
        );
        expected = Some(row.version);
    }
}

/// Trap 1: a renew applied late by a slow store and a takeover based on
/// the same (older) row cannot both win, in either order; nor can a write
/// based on a version the row never had, or an insert over a row.
pub fn stale_write_loses<H: Harness>(harness: &H) {
    let check = "stale_write_loses";
    for takeover_first in [true, false] {
        let group = fresh_group(&format!("{check}-{takeover_first}"));
        let leader = harness.open();
        let taker = harness.open();
        let held = applied(
            check,
            "leader takes the lease",
            leader.compare_and_set(&group, None, &write_by("leader", 1, 5, 1_000)),
        );
        let renew = write_by("leader", 1, 5, 2_000);
        let takeover = write_by("taker", 2, 6, 3_000);
        let (first, second) = if takeover_first {
            (
                taker.compare_and_set(&group, Some(held.version), &takeover),
                leader.compare_and_set(&group, Some(held.version), &renew),
            )
        } else {
            (
                leader.compare_and_set(&group, Some(held.version), &renew),
                taker.compare_and_set(&group, Some(held.version), &takeover),
            )
        };
        let won = applied(check, "the first of the two writes", first);
        let shown = conflict(check, "the late write based on the older row", second);
        assert_eq!(
            shown.as_ref(),
            Some(&won),
            "[{check}] the loser is shown the winner's row"
        );
        assert_eq!(ok(check, "read", leader.read(&group)), Some(won.clone()));
        // Versions the row never had, and an insert over an existing row.
        for bad in [
            Some(0),
            Some(won.version + 1),
            Some(won.version + 5),
            Some(u64::MAX),
            None,
        ] {
            let shown = conflict(
                check,
                &format!("write on version {bad:?}"),
                taker.compare_and_set(&group, bad, &takeover),
            );
            assert_eq!(shown.as_ref(), Some(&won), "[{check}] write on {bad:?}");
        }
        assert_eq!(
            ok(check, "read", taker.read(&group)),
            Some(won),
            "[{check}] refused writes changed nothing"
        );
    }
}

/// Holder, token and expiry are stored exactly, across the whole `u64`
/// range (0, 2^63 - 1, 2^63, `u64::MAX`), with the longest id and address
/// the core accepts, and with no holder.
pub fn fields_round_trip_exactly<H: Harness>(harness: &H) {
    let check = "fields_round_trip_exactly";
    let store = harness.open();
    let edge = [
        0,
        1,
        i64::MAX as u64,
        (i64::MAX as u64) + 1,
        u64::MAX - 1,
        u64::MAX,
    ];
    let long_id = "n".repeat(MAX_NODE_ID_LEN);
    let long_addr = format!("[{}]:65535", "é".repeat((MAX_ADDR_LEN - 8) / 2));
    assert!(long_addr.len() <= MAX_ADDR_LEN);
    let mut writes = vec![LeaseWrite {
        holder: None,
        token: Term(u64::MAX),
        expires_ns: u64::MAX,
    }];
    for (i, v) in edge.iter().enumerate() {
        writes.push(LeaseWrite {
            holder: Some(Holder {
                id: node(&long_id),
                nonce: *v,
                addr: long_addr.clone(),
            }),
            token: Term(edge[(i + 1) % edge.len()]),
            expires_ns: edge[(i + 2) % edge.len()],
        });
    }
    writes.push(LeaseWrite {
        holder: Some(Holder {
            id: node("ünïcode-ノード"),
            nonce: 0,
            addr: String::new(),
        }),
        token: Term(0),
        expires_ns: 0,
    });
    // Each as a first insert (its own group) and as an update of one group.
    let updated = fresh_group(&format!("{check}-updates"));
    let mut expected = None;
    for (i, write) in writes.iter().enumerate() {
        let group = fresh_group(&format!("{check}-{i}"));
        let row = applied(
            check,
            &format!("insert {i}"),
            store.compare_and_set(&group, None, write),
        );
        assert_eq!(
            row,
            write.clone().into_row(1),
            "[{check}] insert {i} answered"
        );
        assert_eq!(
            ok(check, "read", store.read(&group)),
            Some(row),
            "[{check}] insert {i} stored"
        );
        let row = applied(
            check,
            &format!("update {i}"),
            store.compare_and_set(&updated, expected, write),
        );
        assert_eq!(
            ok(check, "read", store.read(&updated)),
            Some(row.clone()),
            "[{check}] update {i} stored"
        );
        expected = Some(row.version);
    }
}

/// Rows of different groups do not affect each other: same versions,
/// separate holders, a write to one leaves the other as it was.
pub fn groups_are_independent<H: Harness>(harness: &H) {
    let check = "groups_are_independent";
    let (a, b) = (
        fresh_group(&format!("{check}-a")),
        fresh_group(&format!("{check}-b")),
    );
    let store = harness.open();
    let row_a = applied(
        check,
        "insert a",
        store.compare_and_set(&a, None, &write_by("x", 1, 1, 1)),
    );
    assert_eq!(
        ok(check, "read b", store.read(&b)),
        None,
        "[{check}] a write to one group created another"
    );
    let row_b = applied(
        check,
        "insert b",
        store.compare_and_set(&b, None, &write_by("y", 2, 9, 9)),
    );
    assert_eq!(row_b.version, 1);
    let row_b2 = applied(
        check,
        "update b",
        store.compare_and_set(&b, Some(1), &write_by("y", 2, 9, 10)),
    );
    assert_eq!(
        ok(check, "read a", store.read(&a)),
        Some(row_a.clone()),
        "[{check}] group a changed"
    );
    let row_a2 = applied(
        check,
        "update a on its own version",
        store.compare_and_set(&a, Some(1), &write_by("x", 1, 1, 2)),
    );
    assert_eq!(row_a2.version, 2);
    assert_eq!(ok(check, "read b", store.read(&b)), Some(row_b2));
}

/// A refused write is answered with the row as stored now (after several
/// writes by someone else), and with no row for a group that has none.
pub fn conflict_returns_current_row<H: Harness>(harness: &H) {
    let check = "conflict_returns_current_row";
    let group = fresh_group(check);
    let (me, other) = (harness.open(), harness.open());
    let shown = conflict(
        check,
        "update of a missing row",
        me.compare_and_set(&group, Some(1), &write_by("me", 1, 1, 1)),
    );
    assert_eq!(
        shown, None,
        "[{check}] a group without a row has no current row"
    );
    assert_eq!(
        ok(check, "read", me.read(&group)),
        None,
        "[{check}] a refused update created a row"
    );
    let mut current = applied(
        check,
        "insert",
        other.compare_and_set(&group, None, &write_by("other", 2, 1, 1)),
    );
    for step in 2..=4 {
        current = applied(
            check,
            "update",
            other.compare_and_set(
                &group,
                Some(current.version),
                &write_by("other", 2, step, step),
            ),
        );
    }
    let shown = conflict(
        check,
        "write on version 1",
        me.compare_and_set(&group, Some(1), &write_by("me", 1, 2, 2)),
    );
    assert_eq!(
        shown,
        Some(current),
        "[{check}] the conflict shows the current row"
    );
}

/// While the store is down every call returns within
/// [`Harness::down_deadline`], a write fails (a read may still be served,
/// e.g. by SQLite's WAL, but then with the true row) and nothing panics;
/// once it is back, reads and writes work again.
pub fn store_down_is_an_error_then_recovers<H: Harness>(harness: &H) {
    let check = "store_down_is_an_error_then_recovers";
    let group = fresh_group(check);
    let store = harness.open();
    let before = applied(
        check,
        "seed",
        store.compare_and_set(&group, None, &write_by("a", 1, 1, 1)),
    );
    harness.take_down();
    let deadline = harness.down_deadline();
    for attempt in 0..2 {
        let started = Instant::now();
        let result = store.compare_and_set(&group, Some(before.version), &write_by("a", 1, 1, 2));
        let took = started.elapsed();
        assert!(
            result.is_err(),
            "[{check}] write {attempt} while down: expected an error, got {result:?}"
        );
        assert!(
            took <= deadline,
            "[{check}] write {attempt} while down took {took:?} (deadline {deadline:?})"
        );
        let started = Instant::now();
        let result = store.read(&group);
        let took = started.elapsed();
        assert!(
            took <= deadline,
            "[{check}] read {attempt} while down took {took:?} (deadline {deadline:?})"
        );
        if let Ok(row) = result {
            assert_eq!(
                row,
                Some(before.clone()),
                "[{check}] a read while down returned a wrong row"
            );
        }
    }
    harness.bring_back();
    // A write that timed out may have been applied; go by what is stored.
    let now = recover(check, &store, &group);
    let after = applied(
        check,
        "write after recovery",
        store.compare_and_set(&group, Some(now.version), &write_by("a", 1, 1, 3)),
    );
    assert_eq!(after.version, now.version + 1);
    assert_eq!(
        ok(check, "read after recovery", harness.open().read(&group)),
        Some(after)
    );
}

/// Reads until the store answers again (the first calls after an outage
/// may still fail while the store comes back), for at most 30 s.
fn recover<S: LeaseStore>(check: &str, store: &S, group: &str) -> LeaseRow {
    let started = Instant::now();
    loop {
        match store.read(group) {
            Ok(Some(row)) => return row,
            Ok(None) => panic!("[{check}] the row vanished during the outage"),
            Err(e) if started.elapsed() < Duration::from_secs(30) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("[{check}] the store did not come back within 30 s: {e}"),
        }
    }
}

/// Environment variables a child process of [`race_in_processes`] reads.
pub mod race_env {
    /// The group the children race on; its presence makes a child run.
    pub const GROUP: &str = "HEDGEROW_RACE_GROUP";
    /// This child's name (its node id, or its permits' holder).
    pub const NAME: &str = "HEDGEROW_RACE_NAME";
    /// The version at which the children stop.
    pub const TARGET: &str = "HEDGEROW_RACE_TARGET";
    /// Unix ms at which the children start, together.
    pub const START_MS: &str = "HEDGEROW_RACE_START_MS";
    /// The file a child writes its results to.
    pub const OUT: &str = "HEDGEROW_RACE_OUT";
}

/// Starts `child_test` of the current test binary once per entry of
/// `names`, with [`race_env::NAME`], [`race_env::OUT`], `vars` and `env`
/// set; returns each child's name, result file and process.
fn spawn_children(
    check: &str,
    child_test: &str,
    names: &[String],
    vars: &[(&str, String)],
    env: &[(&str, &str)],
    scratch: &Path,
) -> Vec<(String, PathBuf, std::process::Child)> {
    let exe =
        std::env::current_exe().unwrap_or_else(|e| panic!("[{check}] current test binary: {e}"));
    names
        .iter()
        .map(|name| {
            let out = scratch.join(format!("{name}.race"));
            let mut command = std::process::Command::new(&exe);
            command
                .args([
                    child_test,
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(race_env::NAME, name)
                .env(race_env::OUT, &out)
                .stdout(std::process::Stdio::null());
            for (key, value) in vars
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .chain(env.iter().copied())
            {
                command.env(key, value);
            }
            let child = command
                .spawn()
                .unwrap_or_else(|e| panic!("[{check}] spawn {name}: {e}"));
            (name.clone(), out, child)
        })
        .collect()
}

/// Waits for every child and reads its result lines (`won <n>`, `lost`,
/// `error …`): which child won each number (two winners of one `what` is
/// a failure, and so is any error), how many children won any, how many
/// attempts lost.
fn collect_wins(
    check: &str,
    spawned: Vec<(String, PathBuf, std::process::Child)>,
    what: &str,
) -> (BTreeMap<u64, String>, usize, usize) {
    let mut owner: BTreeMap<u64, String> = BTreeMap::new();
    let (mut winners, mut lost) = (0, 0);
    for (name, out, mut child) in spawned {
        let status = child
            .wait()
            .unwrap_or_else(|e| panic!("[{check}] wait for {name}: {e}"));
        assert!(status.success(), "[{check}] child {name} failed: {status}");
        let text = std::fs::read_to_string(&out)
            .unwrap_or_else(|e| panic!("[{check}] results of {name}: {e}"));
        let mut won_any = false;
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("won"), Some(v)) => {
                    let v: u64 = v
                        .parse()
                        .unwrap_or_else(|e| panic!("[{check}] {name} wrote {line:?}: {e}"));
                    if let Some(earlier) = owner.insert(v, name.clone()) {
                        panic!("[{check}] {what} {v} was won by both {earlier} and {name}");
                    }
                    won_any = true;
                }
                (Some("lost"), _) => lost += 1,
                (Some("error"), _) => panic!("[{check}] {name} saw a store error: {line}"),
                _ => panic!("[{check}] {name} wrote an unknown line {line:?}"),
            }
        }
        winners += usize::from(won_any);
    }
    (owner, winners, lost)
}

/// Parent side of the cross-process race: starts `children` copies of the
/// current test binary, each running the test `child_test` (which must
/// call [`race_child`]), with `env` added (how to reach the store). Each
/// child races read + compare-and-set rounds on one group until the row
/// reaches version `target`. Checks that every version 1..=final was won
/// by exactly one process, that no process saw an error, that at least
/// two processes won something and some writes lost (they did race), and
/// that the stored row is the last winner's.
pub fn race_in_processes<S: LeaseStore>(
    store: &S,
    child_test: &str,
    env: &[(&str, &str)],
    children: usize,
    target: u64,
    scratch: &Path,
) {
    let check = "separate_processes_never_both_win";
    let group = fresh_group(check);
    let start_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() + 1500)
        .unwrap_or(0);
    let names: Vec<String> = (0..children).map(|i| format!("proc-{i}")).collect();
    let vars = [
        (race_env::GROUP, group.clone()),
        (race_env::TARGET, target.to_string()),
        (race_env::START_MS, start_ms.to_string()),
    ];
    let spawned = spawn_children(check, child_test, &names, &vars, env, scratch);
    let (owner, winners, lost) = collect_wins(check, spawned, "version");
    let stored = ok(check, "final read", store.read(&group))
        .unwrap_or_else(|| panic!("[{check}] no row after the race"));
    assert!(
        stored.version >= target,
        "[{check}] the race stopped at version {}",
        stored.version
    );
    let claimed: Vec<u64> = owner.keys().copied().collect();
    let all: Vec<u64> = (1..=stored.version).collect();
    assert_eq!(
        claimed, all,
        "[{check}] every version must be won by exactly one process"
    );
    let last = owner.get(&stored.version).map(String::as_str);
    assert_eq!(
        stored.holder.as_ref().map(|h| h.id.as_str()),
        last,
        "[{check}] the stored row is the last winner's"
    );
    eprintln!(
        "{check}: {winners} processes won, {lost} writes lost, {} versions",
        stored.version
    );
    assert!(
        winners >= 2 && lost > 0,
        "[{check}] {winners} processes won and {lost} writes lost: the processes did not race"
    );
}

/// Child side of [`race_in_processes`]: when the race variables are set,
/// opens the store with `open`, races until the row reaches the target
/// version and writes `won <version>` (or `error …`) lines to the result
/// file, then returns `true`. Without them it does nothing and returns
/// `false`.
pub fn race_child<S: LeaseStore>(open: impl FnOnce() -> S) -> bool {
    let Ok(group) = std::env::var(race_env::GROUP) else {
        return false;
    };
    let var =
        |key: &str| std::env::var(key).unwrap_or_else(|_| panic!("race child: {key} is not set"));
    let name = var(race_env::NAME);
    let target: u64 = var(race_env::TARGET)
        .parse()
        .unwrap_or_else(|e| panic!("race child: target: {e}"));
    let start_ms: u128 = var(race_env::START_MS)
        .parse()
        .unwrap_or_else(|e| panic!("race child: start: {e}"));
    let out = PathBuf::from(var(race_env::OUT));
    let store = open();
    let nonce = u64::from(std::process::id());
    while SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
        < start_ms
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut lines = String::new();
    loop {
        let current = match store.read(&group) {
            Ok(row) => row,
            Err(e) => {
                lines.push_str(&format!("error read: {e}\n"));
                break;
            }
        };
        if current.as_ref().is_some_and(|row| row.version >= target) {
            break;
        }
        let token = current.as_ref().map_or(1, |row| row.token.0 + 1);
        let write = write_by(&name, nonce, token, token);
        let expected = current.map(|row| row.version);
        match store.compare_and_set(&group, expected, &write) {
            Ok(CasOutcome::Applied(row)) => {
                lines.push_str(&format!("won {}\n", row.version));
                // A winner steps back for a moment, as a leader that just
                // renewed would; without it, a store that hands its lock to
                // the last holder (SQLite's busy handler sleeps) lets one
                // process win every round and nothing races.
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(CasOutcome::Conflict(_)) => lines.push_str(&format!("lost {expected:?}\n")),
            Err(e) => {
                lines.push_str(&format!("error compare-and-set: {e}\n"));
                break;
            }
        }
    }
    std::fs::write(&out, lines)
        .unwrap_or_else(|e| panic!("race child: write {}: {e}", out.display()));
    true
}
