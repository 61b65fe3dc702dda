//! The built-in chaos scenarios run clean: every phase converges and no
//! invariant breaks. Seeds: `HEDGEROW_SEEDS` (default 2, at most 10 per
//! scenario here), replay with `HEDGEROW_SEED`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hedgerow_sim::scenario::{self, Scenario, BUILT_IN};
use hedgerow_sim::{seeds, ClusterConfig};

#[test]
fn built_in_scenarios_run_clean() {
    let s = seeds(77, 2);
    let list: Vec<u64> = if s.replay {
        s.list
    } else {
        s.list.into_iter().take(10).collect()
    };
    for (name, _) in BUILT_IN {
        let sc = Scenario::load(name).unwrap();
        for &seed in &list {
            let out = scenario::run(&sc, ClusterConfig::new(seed));
            assert!(
                out.passed(),
                "scenario {name} seed {seed}: converge {:?} ({:?}), violations {:?}; replay with HEDGEROW_SEED={seed}",
                out.converge,
                out.divergence,
                out.violations.first().map(ToString::to_string)
            );
        }
    }
}
