//! Each property catches the bug it is there for: with one deliberate bug
//! in every node ([`SeededBug`]), the checker finds a counterexample and
//! prints it as the inputs that led to it. The bounds are narrowed to the
//! few steps each bug needs (one clock layout, one message in flight, a
//! depth limit where a buggy node loops within a step), so each run takes
//! seconds.

use hedgerow_core::SeededBug;
use hedgerow_model::{
    check, run, Bounds, Search, BOUND_NS, CALM_LEADS, FAILOVER_LEADS, ONE_LEADER,
    PERMITS_WITHIN_LIMIT, PERMIT_TOKENS_INCREASE, TOKENS_INCREASE, VIEWS_MONOTONIC,
};

fn narrow(max_time: u64, max_faults: u8) -> Bounds {
    Bounds {
        max_time,
        max_faults,
        max_crashes: 1,
        max_in_flight: 1,
        start: Some(vec![0, 0, 0]),
        max_depth: Some(16),
        calm_steps: 4,
        ..Bounds::quick()
    }
}

fn expect_counterexample(bounds: Bounds, property: &'static str) -> String {
    find_counterexample(bounds, property, Search::BreadthFirst)
}

fn find_counterexample(bounds: Bounds, property: &'static str, search: Search) -> String {
    let bug = bounds.bug;
    let outcome = run(bounds, 2, Some(property), search);
    let trace = outcome
        .trace(property)
        .unwrap_or_else(|| {
            panic!(
                "{bug:?}: no counterexample to {property:?} in {} states",
                outcome.unique_states
            )
        })
        .to_string();
    println!("{bug:?} breaks {property:?}; counterexample:\n{trace}");
    trace
}

#[test]
fn a_first_insert_on_version_zero_leaves_a_calm_cluster_leaderless() {
    let bounds = narrow(4, 0).with_bug(SeededBug::FirstInsertOnVersionZero);
    let trace = expect_counterexample(bounds, CALM_LEADS);
    assert!(!trace.contains("LEADS"), "nobody ever leads:\n{trace}");
}

#[test]
fn a_renew_without_the_nonce_check_reuses_a_token_after_a_restart() {
    let bounds = narrow(2, 2).with_bug(SeededBug::RenewIgnoresNonce);
    let trace = expect_counterexample(bounds, TOKENS_INCREASE);
    assert!(
        trace.contains("RESTART"),
        "only a restart can reuse a token:\n{trace}"
    );
    assert!(trace.contains("won token 1 after"), "{trace}");
}

/// One node reading 5 ms behind true time, two 5 ms ahead, five steps of
/// time and no messages (a holder whose renewal hangs in the store is all
/// it takes). The holder leads until its own `latest` reaches the expiry,
/// 45 ms of true time after its write; a taker ahead by the whole bound
/// that waits only for its `latest` to pass the expiry writes 40 ms after
/// it, one step before the holder stops.
fn early_takeover() -> Bounds {
    let b = BOUND_NS as i64;
    Bounds {
        start: Some(vec![-b, b, b]),
        max_in_flight: 0,
        ..narrow(5, 0)
    }
}

/// Two messages in flight and one duplicate: enough for a member to get
/// the same snapshot twice with a delta between the copies.
fn stale_snapshot() -> Bounds {
    Bounds {
        max_in_flight: 2,
        max_depth: Some(24),
        ..narrow(2, 1)
    }
}

#[test]
fn a_takeover_judged_by_latest_makes_two_leaders() {
    let bounds = early_takeover().with_bug(SeededBug::TakeoverOnLatest);
    let trace = expect_counterexample(bounds, ONE_LEADER);
    assert!(trace.contains("may all lead"), "{trace}");
}

#[test]
fn a_snapshot_installed_without_its_stamp_check_moves_a_view_back() {
    let bounds = stale_snapshot().with_bug(SeededBug::SnapshotIgnoresStamp);
    let trace = expect_counterexample(bounds, VIEWS_MONOTONIC);
    assert!(trace.contains("went from view"), "{trace}");
}

#[test]
fn without_the_bugs_the_same_narrow_bounds_hold() {
    // The runs above, bug-free: the counterexamples come from the bugs,
    // not from the bounds.
    for bounds in [
        narrow(4, 0),
        narrow(2, 2),
        early_takeover(),
        stale_snapshot(),
    ] {
        let outcome = check(bounds.clone(), 2, None);
        assert!(
            outcome.violated().is_empty(),
            "{bounds:?} without a bug: {:?}\n{}",
            outcome.violated(),
            outcome
                .discoveries
                .iter()
                .map(|(p, t)| format!("--- {p}\n{t}"))
                .collect::<String>()
        );
        assert!(outcome.trace(hedgerow_model::SOME_LEADER).is_some());
    }
}

// The permit and failover bugs run in the bounds `tests/properties.rs`
// checks bug-free in full (`Bounds::permit_lapse`, `Bounds::failover`):
// there the correct core keeps both properties, so these counterexamples
// come from the bugs. Depth first: the lapse is six steps in.

#[test]
fn a_permit_freed_by_latest_is_held_twice() {
    let bounds = Bounds::permit_lapse().with_bug(SeededBug::FreeOnLatest);
    let trace = find_counterexample(bounds, PERMITS_WITHIN_LIMIT, Search::DepthFirst);
    assert!(trace.contains("may all hold permit"), "{trace}");
}

#[test]
fn a_grant_that_keeps_the_last_token_reuses_it() {
    let bounds = Bounds::permit_lapse().with_bug(SeededBug::GrantKeepsLastToken);
    let trace = find_counterexample(bounds, PERMIT_TOKENS_INCREASE, Search::DepthFirst);
    assert!(trace.contains("permit token 1 after"), "{trace}");
}

#[test]
fn a_taker_that_never_takes_an_expired_row_leaves_a_crashed_leader_unreplaced() {
    let bounds = Bounds::failover().with_bug(SeededBug::NoTakeoverOfExpired);
    let trace = expect_counterexample(bounds, FAILOVER_LEADS);
    assert!(
        !trace.contains("LEADS"),
        "nobody leads after the crash:\n{trace}"
    );
}
