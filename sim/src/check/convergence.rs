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
    let expected = expected(reports.iter().map(|r| (r.reachable, &r.me)));
    reports
        .iter()
        .find_map(|r| diverged_one(r, &leader.me.0, leader.stamp, &expected))
}

/// The view every reachable node should hold: exactly the reachable live
/// nodes, from `(reachable, (id, incarnation))` of each live node.
pub(crate) fn expected<'a>(
    live: impl Iterator<Item = (bool, &'a (NodeId, u64))>,
) -> BTreeSet<(NodeId, u64)> {
    live.filter(|(reachable, _)| *reachable)
        .map(|(_, me)| me.clone())
        .collect()
}

/// Why one node's report breaks convergence under the one leader `leader`
/// with view `stamp`, when the live set is `expected`. The in-process
/// cluster checks node by node with it, so that its many views are never
/// all copied into reports at once.
pub(crate) fn diverged_one(
    r: &NodeReport,
    leader: &NodeId,
    stamp: (Term, u64),
    expected: &BTreeSet<(NodeId, u64)>,
) -> Option<String> {
    if !r.reachable {
        if !r.stale && !r.leads {
            return Some(format!(
                "node {} is cut off but says its view is fresh",
                r.slot
            ));
        }
        return None;
    }
    if r.leader.as_ref().map(|l| &l.0) != Some(leader) {
        return Some(format!(
            "node {} follows {:?}, not {}",
            r.slot, r.leader, leader
        ));
    }
    if r.stamp != stamp {
        return Some(format!(
            "node {} has view ({}, {}), leader has ({}, {})",
            r.slot, r.stamp.0, r.stamp.1, stamp.0, stamp.1
        ));
    }
    if &r.members != expected {
        let extra: Vec<_> = r.members.difference(expected).collect();
        let missing: Vec<_> = expected.difference(&r.members).collect();
        return Some(format!(
            "node {} view differs from the live set: extra {extra:?}, missing {missing:?}",
            r.slot
        ));
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
