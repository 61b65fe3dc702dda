//! Invariants 4 and 5: after churn stops, every live node that can reach
//! the leader has the same leader and the same view, equal to exactly the
//! live nodes; no two live nodes hold views from different leaders. A node
//! cut off from the leader must say its view is stale.

use std::collections::BTreeSet;

use hedgerow_core::{NodeId, Term};

/// What one live node reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeReport {
    /// Slot.
    pub slot: usize,
    /// Its id and incarnation.
    pub me: (NodeId, u64),
    /// Whether it can reach the leader (not partitioned by the scenario).
    pub reachable: bool,
    /// Whether it leads now.
    pub leads: bool,
    /// The leader it follows.
    pub leader: Option<(NodeId, Term)>,
    /// Its view's stamp.
    pub stamp: (Term, u64),
    /// Its view's members.
    pub members: BTreeSet<(NodeId, u64)>,
    /// Whether it says its view is stale.
    pub stale: bool,
}

/// Why the cluster is not converged, or `None` when it is.
pub fn diverged(reports: &[NodeReport]) -> Option<String> {
    let leaders: Vec<&NodeReport> = reports.iter().filter(|r| r.leads).collect();
    if leaders.len() != 1 {
        return Some(format!("{} nodes lead", leaders.len()));
    }
    let leader = leaders[0];
    let expected: BTreeSet<(NodeId, u64)> = reports
        .iter()
        .filter(|r| r.reachable)
        .map(|r| r.me.clone())
        .collect();
    for r in reports {
        if !r.reachable {
            if !r.stale && !r.leads {
                return Some(format!(
                    "node {} is cut off but says its view is fresh",
                    r.slot
                ));
            }
            continue;
        }
        if r.leader.as_ref().map(|l| &l.0) != Some(&leader.me.0) {
            return Some(format!(
                "node {} follows {:?}, not {}",
                r.slot, r.leader, leader.me.0
            ));
        }
        if r.stamp != leader.stamp {
            return Some(format!(
                "node {} has view ({}, {}), leader has ({}, {})",
                r.slot, r.stamp.0, r.stamp.1, leader.stamp.0, leader.stamp.1
            ));
        }
        if r.members != expected {
            let extra: Vec<_> = r.members.difference(&expected).collect();
            let missing: Vec<_> = expected.difference(&r.members).collect();
            return Some(format!(
                "node {} view differs from the live set: extra {extra:?}, missing {missing:?}",
                r.slot
            ));
        }
    }
    None
}

/// Invariant 5 on its own: views held by reachable nodes come from one
/// leader term.
pub fn split_groups(reports: &[NodeReport]) -> usize {
    reports
        .iter()
        .filter(|r| r.reachable)
        .map(|r| r.stamp.0)
        .collect::<BTreeSet<_>>()
        .len()
}
