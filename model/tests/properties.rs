//! The real core within the bounds `HEDGEROW_MODEL_DEPTH` names (`quick`
//! by default, what CI runs; `deep` by hand): every reachable state keeps every property,
//! and the space is not vacuous (some run elects a leader); a narrower
//! run in which a node acquires the permit; one that starts from a permit
//! held, long enough for it to lapse and be granted again; and one that
//! starts from a leader's crash, long enough for a calm failover.

use hedgerow_model::{
    check, Bounds, Outcome, SOME_CALM, SOME_FAILOVER, SOME_GRANT, SOME_LEADER, SOME_REGRANT,
};

#[test]
fn every_interleaving_within_the_bounds_keeps_every_property() {
    let bounds = Bounds::from_env().unwrap_or_else(|e| panic!("{e}"));
    check_all(bounds);
}

#[test]
fn every_interleaving_with_an_acquire_keeps_every_property() {
    let outcome = check_all(Bounds::permits());
    assert!(
        outcome.trace(SOME_GRANT).is_some(),
        "no run grants the permit: the acquire explores nothing"
    );
}

#[test]
fn every_interleaving_after_a_permit_is_held_keeps_every_property() {
    let outcome = check_all(Bounds::permit_lapse());
    assert!(
        outcome.trace(SOME_REGRANT).is_some(),
        "no run grants the permit again: no lapse is explored"
    );
}

#[test]
fn every_calm_interleaving_after_a_leader_crash_elects_a_leader_again() {
    let outcome = check_all(Bounds::failover());
    assert!(
        outcome.trace(SOME_FAILOVER).is_some(),
        "no run fails over: the horizon is too short"
    );
    assert!(
        outcome.trace(SOME_CALM).is_some(),
        "no run stays calm long enough: the liveness check is vacuous"
    );
}

fn check_all(bounds: Bounds) -> Outcome {
    let outcome = check(bounds.clone(), 2, None);
    println!(
        "{bounds:?}: {} unique states ({} generated), depth {}, {:.1?}",
        outcome.unique_states, outcome.states, outcome.max_depth, outcome.elapsed
    );
    let violated = outcome.violated();
    let traces: String = violated
        .iter()
        .filter_map(|p| outcome.trace(p).map(|t| format!("--- {p}\n{t}")))
        .collect();
    assert!(violated.is_empty(), "violated: {violated:?}\n{traces}");
    assert!(
        outcome.trace(SOME_LEADER).is_some(),
        "no run elects a leader: the bounds explore nothing"
    );
    outcome
}
