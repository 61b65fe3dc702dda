//! Each property catches the bug it is there for: with one deliberate bug
//! in every node ([`SeededBug`]), the checker finds a counterexample and
//! prints it as the inputs that led to it. The bounds are narrowed to the
//! few steps each bug needs (one clock layout, one message in flight, a
//! depth limit where a buggy node loops within a step), so each run takes
//! seconds.

use hedgerow_core::SeededBug;
use hedgerow_model::{check, Bounds, CALM_LEADS, TOKENS_INCREASE};

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
    let bug = bounds.bug;
    let outcome = check(bounds, 2, Some(property));
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

#[test]
fn without_the_bugs_the_same_narrow_bounds_hold() {
    // The two runs above, bug-free: the counterexamples come from the
    // bugs, not from the bounds.
    for bounds in [narrow(4, 0), narrow(2, 2)] {
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
