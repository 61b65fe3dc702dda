//! Whole-cluster churn: 150 nodes with joins, graceful leaves, crashes, restarts and
//! leader crashes; after churn stops the cluster converges and no invariant breaks.
//! Seed count: `HEDGEROW_SEEDS` (default 8), replay one with `HEDGEROW_SEED`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hedgerow_core::Rng;
use hedgerow_sim::{seeds, Cluster, ClusterConfig, NetConfig};

fn churn_run(seed: u64, size: usize) -> Cluster {
    let mut cfg = ClusterConfig::new(seed);
    cfg.net = NetConfig {
        latency_min: Duration::from_micros(200),
        latency_max: Duration::from_millis(5),
        drop: 0.01,
        duplicate: 0.01,
        fifo: false,
    };
    let mut c = Cluster::with_nodes(cfg, 3);
    let mut rng = Rng::new(seed ^ 0xC0FFEE);
    c.run_for(Duration::from_secs(2));
    // Scale up to `size` in waves, with churn on the way.
    while c.live().len() < size {
        let wave = 1 + rng.below(30) as usize;
        for _ in 0..wave.min(size - c.live().len()) {
            c.add_node();
        }
        c.run_for(Duration::from_millis(rng.below(1500)));
        let live = c.live();
        match rng.below(10) {
            0 => c.crash(live[rng.below(live.len() as u64) as usize]),
            1 => c.leave(live[rng.below(live.len() as u64) as usize]),
            2 => {
                let s = live[rng.below(live.len() as u64) as usize];
                c.restart(s);
            }
            3 => {
                if let Some(l) = c.leader() {
                    c.crash(l);
                }
            }
            _ => {}
        }
    }
    c.run_for(Duration::from_secs(5));
    // Leader crash at full size.
    if let Some(l) = c.leader() {
        c.crash(l);
    }
    c.run_for(Duration::from_secs(3));
    // Scale back down, mostly by graceful leaves, some crashes.
    while c.live().len() > 2 {
        let live = c.live();
        let s = live[rng.below(live.len() as u64) as usize];
        if rng.below(4) == 0 {
            c.crash(s);
        } else {
            c.leave(s);
        }
        if rng.below(8) == 0 {
            c.run_for(Duration::from_millis(rng.below(800)));
        }
    }
    c
}

#[test]
fn churn_150_converges_without_violations() {
    let s = seeds(150, 8);
    for seed in s.list {
        let mut c = churn_run(seed, 150);
        let t0 = c.now_ns();
        let done = c.run_until_converged(Duration::from_secs(40));
        if done.is_none() {
            c.assert_no_violations();
            panic!(
                "seed {seed}: no convergence 40 s after churn stopped: {:?}; replay with HEDGEROW_SEED={seed}",
                c.divergence()
            );
        }
        c.assert_no_violations();
        println!(
            "seed {seed}: converged {:.2}s after churn, {} events, store peak {} in flight",
            (done.unwrap_or(t0) - t0) as f64 / 1e9,
            c.events(),
            c.store().peak_in_flight
        );
    }
}
