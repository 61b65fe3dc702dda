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
    assert_eq!(foca_turmoil::peak_size(&scenario), 20);
    let t = &report.trace;
    let m = t.metrics();

    assert_eq!(m.nodes_started, 20);
    // nodes, three waves up, the crash, three waves down.
    assert_eq!(m.convergence.len(), 8, "{:?}", m.convergence);
    // Each `converge` step waited for agreement, so the last wave of each
    // direction and the crash converged in time.
    for k in [3, 4, 7] {
        match m.convergence[k].2 {
            Convergence::After(d) => {
                assert!(d <= Duration::from_secs(40), "{:?}", m.convergence[k])
            }
            other => panic!("{} did not converge: {other}", m.convergence[k].0),
        }
    }
    // The views at the end are the live set.
    let (_, last_live) = t.live.last().unwrap();
    assert_eq!(last_live.len(), 5);
    for n in last_live {
        let (_, _, view) = t.views.iter().rev().find(|(_, who, _)| who == n).unwrap();
        assert_eq!(view, last_live, "{n}");
    }
    // A lossless network: nobody alive is declared dead, the cluster never
    // splits, and a crash is seen within the suspicion timeout plus a few
    // probe periods: each member probes one peer a period, round-robin, so
    // at this size a dead one is picked within a few periods and, failing
    // the probe, suspected; others learn "down" from gossip.
    assert_eq!(m.false_reports, 0);
    assert_eq!(m.max_groups, 1);
    assert!(m.true_reports >= 4, "the crash at 20 nodes: {m:?}");
    let bound = report.config.probe_period * 10 + report.config.suspect_to_down_after;
    assert!(m.detection_max.unwrap() <= bound, "{m:?}");
    // Gossip costs something, and not kilobytes per second at this size.
    assert!(
        m.bytes_per_node_sec_mean > 10.0 && m.bytes_per_node_sec_max < 5_000.0,
        "{m:?}"
    );
}
