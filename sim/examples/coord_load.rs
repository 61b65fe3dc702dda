//! The store load of permits: N members each holding a permit, against the
//! same group holding none, in the in-process simulator (`Config::lan`,
//! 1 s heartbeats, the default 5 s permit lease). Permits are renewed by
//! the heartbeats the members send anyway, never written, so the store
//! should see the grants and nothing more.
//!
//! `cargo run --release -p hedgerow-sim --example coord_load`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hedgerow_core::coord::CoordAnswer;
use hedgerow_core::Config;
use hedgerow_sim::{Cluster, ClusterConfig};

fn main() {
    println!("| members | store ops/s, no permits | store ops/s, each holding a permit | permits held | messages/s out of the leader, no permits → with |");
    println!("|---|---|---|---|---|");
    for n in [10usize, 50, 150] {
        let mut cfg = ClusterConfig::new(7);
        cfg.node = Config::lan("load");
        let mut c = Cluster::with_nodes(cfg, n);
        c.run_until_converged(Duration::from_secs(60))
            .expect("converged");
        let window = Duration::from_secs(30);
        let leader = c.leader().unwrap();
        let (ops0, sent0) = (c.store().ops, c.node(leader).app.sent_msgs);
        c.run_for(window);
        let idle = (c.store().ops - ops0) as f64 / window.as_secs_f64();
        let idle_msgs = (c.node(leader).app.sent_msgs - sent0) as f64 / window.as_secs_f64();
        let ids: Vec<_> = (0..n)
            .map(|s| {
                (
                    s,
                    c.acquire(s, "pool", n as u32, true, Duration::from_secs(60))
                        .unwrap(),
                )
            })
            .collect();
        c.run_for(Duration::from_secs(5));
        let held = ids
            .iter()
            .filter(|(s, id)| {
                matches!(
                    c.node(*s).app.coord.get(id),
                    Some(Ok(CoordAnswer::Granted { .. }))
                )
            })
            .count();
        let (ops1, sent1) = (c.store().ops, c.node(leader).app.sent_msgs);
        c.run_for(window);
        let busy = (c.store().ops - ops1) as f64 / window.as_secs_f64();
        let busy_msgs = (c.node(leader).app.sent_msgs - sent1) as f64 / window.as_secs_f64();
        let still = ids
            .iter()
            .filter(|(s, id)| c.node(*s).node.permit_valid(&c.now_of(*s), *id))
            .count();
        c.assert_no_violations();
        println!(
            "| {n} | {idle:.2} | {busy:.2} | {held} granted, {still} still valid after {}s | {idle_msgs:.0} → {busy_msgs:.0} |",
            window.as_secs()
        );
    }
}
