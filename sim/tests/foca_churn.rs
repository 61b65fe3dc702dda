//! foca under a small churn schedule inside turmoil: the side-by-side
//! runner must record a trace whose metrics make sense, or the table it
//! feeds means nothing.

#[path = "../examples/support/foca_turmoil.rs"]
mod foca_turmoil;

use std::time::Duration;

use hedgerow_sim::compare::Convergence;
use hedgerow_sim::scenario::Scenario;

const SMALL_CHURN: &str = "
nodes 5
converge within 20s
scale-to 20 waves 3 over 6s
converge within 40s
crash random
converge within 40s
scale-to 5 waves 3 over 6s
converge within 40s
";

#[test]
fn foca_grows_and_shrinks_and_every_live_view_ends_as_the_live_set() {
    let scenario = Scenario::parse("small-churn", SMALL_CHURN).unwrap();
    let report = foca_turmoil::run(&scenario, 7, &foca_turmoil::Opts::default());
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    // No host starts twice in this schedule.
    assert_eq!(report.stale_incarnation_reports, 0);
    assert_eq!(foca_turmoil::peak_size(&scenario), 20);
    let t = &report.trace;
    let m = t.metrics();

    assert_eq!(m.nodes_started, 20);
    // A mark per step (and per wave): nodes, three waves up, the crash,
    // three waves down, and one after each `converge`.
    assert_eq!(m.convergence.len(), 12, "{:?}", m.convergence);
    // Each `converge` step waited for agreement, so the last wave of each
    // direction and the crash converged before the next step.
    for label in ["wave 3/3 to 20", "crash n", "wave 3/3 to 5"] {
        let (l, _, c) = m
            .convergence
            .iter()
            .find(|(l, ..)| l.starts_with(label))
            .unwrap_or_else(|| panic!("no mark {label}: {:?}", m.convergence));
        match c {
            Convergence::After(d) => assert!(*d <= Duration::from_secs(40), "{l}: {d:?}"),
            other => panic!("{l} did not converge: {other}"),
        }
    }
    // The views at the end are the live set.
    let (_, last_live) = t.live.last().unwrap();
    assert_eq!(last_live.len(), 5);
    for n in last_live {
        let (_, _, view) = t.views.iter().rev().find(|(_, who, _)| who == n).unwrap();
        assert_eq!(view, last_live, "{n}");
    }
    // A lossless network: nobody alive is declared dead and the cluster
    // never splits.
    assert_eq!(m.false_reports, 0);
    assert_eq!(m.max_groups, 1);
    // A crash is typically seen within the suspicion timeout plus a few
    // probe periods: each member probes one peer a period, round-robin, so
    // at this size a dead one is picked within a few periods, suspected,
    // and declared down by the member that suspected it; the others learn
    // it from gossip. The tail is longer: only the suspecting member runs
    // the suspicion timer, and in a shrink wave it may leave before the
    // timer fires, so the dead member must be probed and suspected again.
    assert!(m.true_reports >= 4, "the crash at 20 nodes: {m:?}");
    let cfg = &report.config;
    assert!(
        m.detection_p50.unwrap() <= cfg.suspect_to_down_after + cfg.probe_period * 3,
        "{m:?}"
    );
    assert!(
        m.detection_max.unwrap() <= (cfg.suspect_to_down_after + cfg.probe_period * 10) * 2,
        "{m:?}"
    );
    // Gossip costs something, and not kilobytes per second at this size.
    assert!(
        m.bytes_per_node_sec_mean > 10.0 && m.bytes_per_node_sec_max < 5_000.0,
        "{m:?}"
    );
}

#[test]
fn the_same_seed_gives_the_same_foca_trace() {
    let scenario = Scenario::parse("small-churn", SMALL_CHURN).unwrap();
    let opts = foca_turmoil::Opts::default();
    let a = foca_turmoil::run(&scenario, 11, &opts).trace;
    let b = foca_turmoil::run(&scenario, 11, &opts).trace;
    assert!(a == b, "two runs of seed 11 differ");
}

#[test]
fn foca_and_hedgerow_churn_the_same_nodes() {
    // No `leader` targets: those pick hedgerow's leader, which foca lacks.
    let scenario = Scenario::parse("small-churn", SMALL_CHURN).unwrap();
    let opts = foca_turmoil::Opts::default();
    let foca = foca_turmoil::run(&scenario, 3, &opts).trace;
    let hedgerow = hedgerow_sim::turmoil::run(&scenario, 3, &opts.mirror).trace;
    let sets = |t: &hedgerow_sim::compare::MembershipTrace| -> Vec<_> {
        // hedgerow's runner also records the empty set it starts from.
        t.live
            .iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(_, s)| s.clone())
            .collect()
    };
    assert_eq!(sets(&foca), sets(&hedgerow));
    let labels = |t: &hedgerow_sim::compare::MembershipTrace| -> Vec<_> {
        t.marks.iter().map(|(_, l)| l.clone()).collect()
    };
    assert_eq!(labels(&foca), labels(&hedgerow));
}
