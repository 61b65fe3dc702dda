//! Shorthands the whole-cluster tests share: each fails the test with the
//! harness's own explanation instead of a bare `None`.

// Each test file is its own crate and uses only some of these.
#![allow(dead_code)]

use std::time::Duration;

use hedgerow_core::Term;
use hedgerow_sim::Cluster;

/// Runs until every live view agrees, within `limit_s` simulated seconds;
/// returns when (ns), or fails the test with what still differs.
pub fn converged(c: &mut Cluster, limit_s: u64) -> u64 {
    match c.run_until_converged(Duration::from_secs(limit_s)) {
        Some(t) => t,
        None => panic!("no convergence: {:?}", c.divergence()),
    }
}

/// The one leader's slot; fails the test when there is none or several.
pub fn leader(c: &Cluster) -> usize {
    c.leader().expect("one leader")
}

/// The term of the lease claim `slot` holds; `Term::default()` when none.
pub fn term_of(c: &Cluster, slot: usize) -> Term {
    c.lease_term(slot).unwrap_or_default()
}
