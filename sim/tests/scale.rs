//! Scale and the checkers' own teeth: a 1000-node cluster through a leader
//! crash and a join wave, and a run that deliberately breaks the clock
//! bound, which the overlap checker must catch.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hedgerow_sim::{seeds, Cluster, ClusterConfig, SimClock};

#[test]
fn thousand_nodes_elect_fail_over_and_absorb_a_join_wave() {
    // A thousand nodes cost about a second of wall time per seed; the
    // default keeps `cargo test` quick, CI sweeps more.
    let s = seeds(1000, 2);
    let list: Vec<u64> = if s.replay {
        s.list
    } else {
        s.list.into_iter().take(20).collect()
    };
    for seed in list {
        let mut c = Cluster::with_nodes(ClusterConfig::new(seed), 1000);
        c.run_until_converged(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("seed {seed}: {:?}", c.divergence()));
        // A thousand processes starting in the same 20 ms exceed a
        // 100-connection store; the refused ones back off and retry. After
        // start-up nothing may be refused.
        let refused_at_start = c.store().refused;
        c.crash(c.leader().unwrap());
        c.run_until_converged(Duration::from_secs(60))
            .unwrap_or_else(|| panic!("seed {seed}: after the crash: {:?}", c.divergence()));
        for _ in 0..100 {
            c.add_node();
        }
        c.run_until_converged(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("seed {seed}: after the wave: {:?}", c.divergence()));
        assert_eq!(
            c.store().refused,
            refused_at_start,
            "refusals after start-up"
        );
        println!(
            "seed {seed}: {refused_at_start} store refusals at start-up, store peak {} in flight",
            c.store().peak_in_flight
        );
        c.assert_no_violations();
    }
}

#[test]
fn a_clock_outside_its_bound_is_caught_by_the_overlap_checker() {
    // The leader's clock runs three bounds behind while claiming the usual
    // bound: it believes in its lease after true expiry, and a successor
    // takes over in the meantime. The checker must report the overlap.
    let mut caught = 0;
    for seed in 0..5 {
        let cfg = ClusterConfig::new(seed);
        let bound = cfg.bound.as_nanos() as i64;
        let mut c = Cluster::with_nodes(cfg, 3);
        c.run_until_converged(Duration::from_secs(10)).unwrap();
        let l = c.leader().unwrap();
        let broken = SimClock {
            offset_ns: -3 * bound,
            drift_ppb: 0,
            ..c.node(l).clock
        };
        assert!(!broken.is_honest());
        c.set_clock(l, broken);
        c.cut_store(l, true);
        c.run_for(Duration::from_secs(20));
        let v = c.violations();
        if v.iter().any(|x| x.invariant.starts_with("1 ")) {
            caught += 1;
        }
    }
    assert_eq!(
        caught, 5,
        "every broken-clock run shows two leaders at once"
    );
}
