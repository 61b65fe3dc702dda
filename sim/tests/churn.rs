//! Whole-cluster churn: scale 3 → 150 → 2 in waves with joins, graceful
//! leaves, crashes, restarts, leader crashes, isolated members, a store
//! outage and sends all the way; the cluster must converge at full size,
//! after a leader crash at full size and after the scale-down, and no
//! invariant may break at any step. Seeds: `HEDGEROW_SEEDS` (default 8),
//! replay one with `HEDGEROW_SEED`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hedgerow_core::Rng;
use hedgerow_sim::{seeds, Cluster, ClusterConfig, NetConfig};

fn pick(rng: &mut Rng, live: &[usize]) -> usize {
    live[rng.below(live.len() as u64) as usize]
}

fn converge(c: &mut Cluster, seed: u64, phase: &str, limit: Duration) -> f64 {
    let t0 = c.now_ns();
    match c.run_until_converged(limit) {
        Some(t) => {
            c.assert_no_violations();
            (t - t0) as f64 / 1e9
        }
        None => {
            c.assert_no_violations();
            panic!(
                "seed {seed}: no convergence {phase} within {limit:?}: {:?}; replay with HEDGEROW_SEED={seed}",
                c.divergence()
            );
        }
    }
}

fn churn(seed: u64, size: usize) {
    let mut cfg = ClusterConfig::new(seed);
    cfg.net = NetConfig {
        latency_min: Duration::from_micros(200),
        latency_max: Duration::from_millis(5),
        drop: 0.01,
        duplicate: 0.01,
        fifo: false,
    };
    cfg.node.request_timeout = Duration::from_secs(15);
    cfg.node.dedupe_window = Duration::from_secs(30);
    let mut c = Cluster::with_nodes(cfg, 3);
    let mut rng = Rng::new(seed ^ 0xC0FFEE);
    c.run_for(Duration::from_secs(2));
    let mut isolated: Vec<usize> = Vec::new();
    let mut store_outage = false;
    while c.live().len() < size {
        let wave = 1 + rng.below(30) as usize;
        for _ in 0..wave.min(size - c.live().len()) {
            c.add_node();
        }
        c.run_for(Duration::from_millis(rng.below(1500)));
        let live = c.live();
        match rng.below(12) {
            0 => c.crash(pick(&mut rng, &live)),
            1 => c.leave(pick(&mut rng, &live)),
            2 => c.restart(pick(&mut rng, &live)),
            3 => {
                if let Some(l) = c.leader() {
                    c.crash(l);
                }
            }
            4 => {
                let s = pick(&mut rng, &live);
                c.isolate(s);
                isolated.push(s);
            }
            5 => {
                if let Some(s) = isolated.pop() {
                    c.heal_node(s);
                }
            }
            6 if !store_outage => {
                store_outage = true;
                c.store_down(true);
                c.run_for(Duration::from_millis(500 + rng.below(3000)));
                c.store_down(false);
            }
            _ => {
                for _ in 0..3 {
                    let s = pick(&mut rng, &live);
                    c.send(s, &seed.to_le_bytes());
                }
            }
        }
    }
    c.heal();
    let full = converge(&mut c, seed, "at full size", Duration::from_secs(40));
    if let Some(l) = c.leader() {
        c.crash(l);
    }
    let failover = converge(
        &mut c,
        seed,
        "after a leader crash at full size",
        Duration::from_secs(40),
    );
    while c.live().len() > 2 {
        let live = c.live();
        let s = pick(&mut rng, &live);
        match rng.below(8) {
            0 | 1 => c.crash(s),
            2 => {
                if let Some(l) = c.leader() {
                    c.leave(l);
                }
            }
            _ => c.leave(s),
        }
        if rng.below(6) == 0 {
            c.run_for(Duration::from_millis(rng.below(800)));
        }
    }
    let down = converge(&mut c, seed, "after scaling down", Duration::from_secs(40));
    println!(
        "seed {seed}: converged {full:.2}s at {size}, {failover:.2}s after the leader crash, {down:.2}s after scale-down; {} handlings, store peak {} in flight, {} refused",
        c.handlings(),
        c.store().peak_in_flight,
        c.store().refused
    );
}

#[test]
fn churn_2_150_2_converges_without_violations() {
    for seed in seeds(150, 8).list {
        churn(seed, 150);
    }
}
