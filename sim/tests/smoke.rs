//! Smoke test: a small cluster elects one leader and converges.
use hedgerow_sim::{Cluster, ClusterConfig};
use std::time::Duration;

#[test]
fn five_nodes_elect_and_converge() {
    let mut c = Cluster::with_nodes(ClusterConfig::new(1), 5);
    let t = c.run_until_converged(Duration::from_secs(20));
    println!(
        "converged at {:?}, first leader {:?}, div {:?}",
        t,
        c.first_leader_at(),
        c.divergence()
    );
    for r in c.reports() {
        println!(
            "{:?} leads={} leader={:?} stamp={:?} n={} stale={}",
            r.slot,
            r.leads,
            r.leader,
            r.stamp,
            r.members.len(),
            r.stale
        );
    }
    c.assert_no_violations();
    assert!(t.is_some());
}
