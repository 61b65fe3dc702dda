//! The coordination services on turmoil: the real facade's `kv().put`,
//! `semaphore(..).acquire_timeout` and `Permit::release` over the TCP
//! transport, with the store host's coordination tables (the core's
//! `execute_coord`), through leader crashes, a partition, a store outage
//! and a restart. The same checkers as in-process: holders never more than
//! the limit at a true instant (exact intervals from each holder's clock),
//! lock tokens rising, every acknowledged put stored once at its revision,
//! and every acknowledged put in every later read of every node.
//!
//! `HEDGEROW_SEEDS=<n>` sets how many seeds the mixed scenario runs
//! (default 10, CI 100; about 0.05 s of wall time each), `HEDGEROW_SEED=<seed>`
//! replays one; the built-in `coordination` scenario (with 2 → 150 → 2
//! churn) runs over `HEDGEROW_TURMOIL_SEEDS` (default 1, CI 3). Each checker
//! is also shown to fail on a deliberately broken run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hedgerow_core::Config;
use hedgerow_sim::scenario::Scenario;
use hedgerow_sim::turmoil::{run, TurmoilOptions, TurmoilReport};
use hedgerow_sim::{seeds, turmoil_seeds};

fn scenario(text: &str) -> Scenario {
    Scenario::parse("test", text).expect("scenario parses")
}

/// The local preset (1 s permit lease, short leases): more grants and
/// expiries per simulated second than `lan`.
fn options() -> TurmoilOptions {
    TurmoilOptions {
        config: Config::local("hedgerow-turmoil"),
        bound: std::time::Duration::from_millis(5),
        ..TurmoilOptions::default()
    }
}

const MIXED: &str = "\
nodes 5
converge within 15s
lock job 4
acquire pool 2 5
put 20
run 1s
release all
run 1s
release 2
crash leader
put 10
run 2s
release all
converge within 20s
split
acquire pool 2 3
lock job 3
put 10
run 3s
heal
release all
store down 2s
put 10
lock job 2
run 4s
restart random
release all
put 10
run 3s
release all
converge within 20s
";

#[test]
fn coordination_holds_through_crashes_partitions_and_store_outages() {
    let s = scenario(MIXED);
    let mut failed = Vec::new();
    for seed in seeds(14, 10).list {
        let r = run(&s, seed, &options());
        print!("{}", r.summary());
        if !r.passed() {
            failed.push(seed);
            continue;
        }
        let (ok, _, grants, reads) = r.coord;
        assert!(ok >= 20, "seed {seed}: only {ok} puts acknowledged");
        assert!(grants >= 3, "seed {seed}: only {grants} permits granted");
        assert!(reads >= 3, "seed {seed}: {reads} nodes read the puts back");
    }
    assert!(failed.is_empty(), "failed seeds: {failed:?}");
}

fn first_violation(r: &TurmoilReport) -> &str {
    r.violations.first().map_or("none", |v| v.invariant)
}

/// Holders that ignore their clocks and `lost()`: the lock's holder is cut
/// off with the store, its permit lapses, the new leader grants it again,
/// and the permit checker sees two holders of a lock of one.
#[test]
fn the_permit_checker_catches_holders_that_believe_past_their_permit() {
    let s = scenario(
        "nodes 3\nconverge within 15s\nlock job 1\nrun 1s\nstore down 6s\nlock job 2\nrun 15s\n",
    );
    let honest = run(&s, 3, &options());
    print!("{}", honest.summary());
    assert!(honest.passed(), "{}", honest.summary());
    assert!(
        honest.coord.2 >= 2,
        "the lock was granted again after the outage"
    );
    let broken = run(
        &s,
        3,
        &TurmoilOptions {
            broken_holders: true,
            ..options()
        },
    );
    print!("{}", broken.summary());
    assert!(
        first_violation(&broken).starts_with('8'),
        "expected a permit overlap, got {:?}",
        broken.violations
    );
}

/// A store that answers puts as appended but keeps none: the KV checker
/// finds the acknowledged puts missing from the store and from the reads.
#[test]
fn the_kv_checker_catches_a_store_that_loses_acknowledged_puts() {
    let s = scenario("nodes 3\nconverge within 15s\nput 5\nrun 2s\n");
    let honest = run(&s, 4, &options());
    print!("{}", honest.summary());
    assert!(honest.passed(), "{}", honest.summary());
    assert_eq!(honest.coord.0, 5, "every put acknowledged");
    let broken = run(
        &s,
        4,
        &TurmoilOptions {
            broken_store_forgets_puts: true,
            ..options()
        },
    );
    print!("{}", broken.summary());
    assert!(
        first_violation(&broken).starts_with("10"),
        "expected lost puts, got {:?}",
        broken.violations
    );
}

/// The built-in `coordination` scenario (locks, a semaphore and puts
/// through leader crashes, an isolated node, partitions, store outages and
/// 2 → 150 → 2 churn) on turmoil, at the `lan` preset. About 30–70 s of
/// wall time per seed.
#[test]
fn the_builtin_coordination_scenario_passes_on_turmoil() {
    let s = Scenario::load("coordination").unwrap();
    let mut failed = Vec::new();
    for seed in turmoil_seeds(140_000, 1).list {
        let r = run(&s, seed, &TurmoilOptions::default());
        print!("{}", r.summary());
        if !r.passed() {
            failed.push(seed);
        }
        assert!(r.coord.0 > 0 && r.coord.2 > 0, "seed {seed}: {:?}", r.coord);
    }
    assert!(failed.is_empty(), "failed seeds: {failed:?}");
}

/// Found by this sweep (seed 14000122): a waiter queued at a new leader
/// before its permits were loaded already held a permit granted by the
/// crashed leader; the new leader granted it again, and the grant's
/// shorter promise replaced the one the holder had been answered with, so
/// the leader freed the permit while its holder still believed in it and
/// granted it twice more (3 holders of a semaphore of 2). Fixed in
/// `hedgerow_core::coord::leader`: a load drops waiters that hold, and a
/// retried grant never shortens a promise.
#[test]
fn a_waiter_holding_a_permit_from_the_last_leader_is_not_granted_again() {
    let r = run(&scenario(MIXED), 14_000_122, &options());
    print!("{}", r.summary());
    assert!(r.passed(), "{}", r.summary());
}

/// Found by the same seed: a grant's promise was made when the grant was
/// queued, so behind a run of puts (one store write at a time) it lapsed
/// before its answer came and the holders gave their permits straight
/// back: the first round of the mixed scenario granted nothing (7 grants
/// in the whole run). A grant now promises from when it is written.
///
/// Counted over 20 seeds rather than at the one that found it: one seed's
/// count moves with any change of the schedule (leaders answering in the
/// step that read the request moved it from 9 to 6, as many as with the
/// bug), while over these seeds promises made at queueing granted 126 and
/// promises made when written 142 (154 with those answers).
#[test]
fn a_grant_queued_behind_puts_still_reaches_its_holder_valid() {
    let r = run(&scenario(MIXED), 14_000_122, &options());
    print!("{}", r.summary());
    assert!(r.passed(), "{}", r.summary());
    let s = scenario(MIXED);
    let grants: u64 = (0..20)
        .map(|i| {
            let r = run(&s, 14_000_042 + i, &options());
            assert!(r.passed(), "{}", r.summary());
            r.coord.2
        })
        .sum();
    assert!(
        grants >= 135,
        "grants lost to promises that lapsed in the queue: {grants} over 20 seeds"
    );
}
