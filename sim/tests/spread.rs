//! How view changes reach members in a large group (`Config::view_spread`):
//! relayed down a tree of members, or pulled on heartbeats, against
//! pushing every delta from the leader. Small fanouts and thresholds make
//! a few dozen nodes behave as a few thousand would: trees several levels
//! deep, relays that crash, members that join mid-stream. Every run must
//! converge with the checkers silent; the leader's bytes show where the
//! work went.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hedgerow_core::ViewSpread;
use hedgerow_sim::{seeds, Churn, Cluster, ClusterConfig};

fn config(seed: u64, spread: ViewSpread) -> ClusterConfig {
    let mut cfg = ClusterConfig::new(seed);
    cfg.node.view_spread = spread;
    cfg.measure_bytes = true;
    cfg
}

const RELAY: ViewSpread = ViewSpread::Relay {
    fanout: 3,
    above: 8,
};

/// Bytes the node in `slot` sent of `kind`.
fn sent(c: &Cluster, slot: usize, kind: &str) -> u64 {
    c.node(slot)
        .app
        .sent_bytes_by_kind
        .get(kind)
        .copied()
        .unwrap_or(0)
}

/// `n` nodes, converged, then ten seconds of churn (one member a 100 ms
/// crashes or leaves and comes back a second later) and a join every
/// second; converged again. Returns the cluster and the leader's bytes of
/// each kind during the churn.
fn churned(cfg: ClusterConfig, n: usize) -> (Cluster, usize, Vec<(&'static str, u64)>) {
    let seed = cfg.seed;
    let mut c = Cluster::with_nodes(cfg, n);
    c.run_until_converged(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("seed {seed}: {:?}", c.divergence()));
    let leader = c.leader().unwrap();
    let before = c.node(leader).app.sent_bytes_by_kind.clone();
    Churn::new(seed, 1, 10).run_keeping_the_leader(&mut c, 100, 10);
    let by_kind = c
        .node(leader)
        .app
        .sent_bytes_by_kind
        .iter()
        .map(|(k, v)| (*k, v - before.get(k).copied().unwrap_or(0)))
        .collect();
    c.run_until_converged(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("seed {seed}: after the churn: {:?}", c.divergence()));
    assert_eq!(c.node(leader).node.view().len(), n + 10, "seed {seed}");
    c.assert_no_violations();
    (c, leader, by_kind)
}

fn of(by_kind: &[(&str, u64)], kind: &str) -> u64 {
    by_kind
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(0, |(_, v)| *v)
}

#[test]
fn relayed_views_converge_through_churn_and_crashed_relays() {
    for seed in seeds(4100, 3).list {
        let (c, leader, by_kind) = churned(config(seed, RELAY), 60);
        // The leader sent each delta to at most three relays, and left
        // the rest of the sending to members.
        assert!(of(&by_kind, "relay_delta") > 0, "seed {seed}: {by_kind:?}");
        let relayed_by_members: u64 = (0..c.nodes().len())
            .filter(|&i| i != leader)
            .map(|i| sent(&c, i, "relay_delta") + sent(&c, i, "view_delta"))
            .sum();
        assert!(
            relayed_by_members > of(&by_kind, "relay_delta"),
            "seed {seed}: members relayed {relayed_by_members} bytes"
        );
    }
}

#[test]
fn relayed_views_converge_on_a_lossy_network_that_duplicates() {
    for seed in seeds(4200, 3).list {
        let mut cfg = config(seed, RELAY);
        cfg.net.drop = 0.02;
        cfg.net.duplicate = 0.02;
        churned(cfg, 40);
    }
}

#[test]
fn relaying_cuts_the_leaders_delta_bytes_against_pushing() {
    // The same churn on the same seed, pushed and relayed.
    let seed = 4300;
    let (_, _, pushed) = churned(config(seed, ViewSpread::Push), 120);
    let (_, _, relayed) = churned(config(seed, RELAY), 120);
    let deltas = |k: &[(&str, u64)]| of(k, "view_delta") + of(k, "relay_delta");
    assert!(
        deltas(&relayed) * 5 < deltas(&pushed),
        "relayed {relayed:?} vs pushed {pushed:?}"
    );
    // Joiners take their snapshot from a member, not from the leader.
    assert!(of(&relayed, "snapshot_from") > 0, "{relayed:?}");
    assert!(
        of(&relayed, "view_snapshot") * 5 < of(&pushed, "view_snapshot"),
        "relayed {relayed:?} vs pushed {pushed:?}"
    );
}

#[test]
fn pulled_views_converge_and_the_leader_pushes_nothing() {
    for seed in seeds(4400, 2).list {
        let (_, _, by_kind) = churned(config(seed, ViewSpread::Pull), 40);
        assert_eq!(of(&by_kind, "relay_delta"), 0, "seed {seed}: {by_kind:?}");
        // Deltas went out only on heartbeats that showed a member behind.
        assert!(of(&by_kind, "view_delta") > 0, "seed {seed}: {by_kind:?}");
    }
}

#[test]
fn a_relayed_group_fails_over_and_the_new_leader_relays() {
    for seed in seeds(4500, 3).list {
        let mut c = Cluster::with_nodes(config(seed, RELAY), 50);
        c.run_until_converged(Duration::from_secs(30)).unwrap();
        let old = c.leader().unwrap();
        let snapshots = |c: &Cluster| -> Vec<u64> {
            (0..c.nodes().len())
                .map(|i| sent(c, i, "view_snapshot"))
                .collect()
        };
        let before = snapshots(&c);
        c.crash(old);
        c.run_until_converged(Duration::from_secs(60))
            .unwrap_or_else(|| panic!("seed {seed}: {:?}", c.divergence()));
        let new = c.leader().unwrap();
        assert_ne!(new, old);
        // The new term's snapshots: the leader sent a few, members the
        // rest (pushed, the leader sends every member one).
        let after = snapshots(&c);
        let by_leader = after[new] - before[new];
        let by_members: u64 = (0..after.len())
            .filter(|&i| i != new)
            .map(|i| after[i] - before[i])
            .sum();
        assert!(
            by_leader < by_members,
            "seed {seed}: snapshots from members {by_members} B, from the leader {by_leader} B"
        );
        let before = sent(&c, new, "relay_delta");
        for _ in 0..5 {
            c.add_node();
        }
        c.run_until_converged(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("seed {seed}: {:?}", c.divergence()));
        assert!(sent(&c, new, "relay_delta") > before, "seed {seed}");
        c.assert_no_violations();
    }
}

/// A delta for the current term, as a peer that is not the leader might
/// send it: adds a member nobody else knows.
fn forged(c: &Cluster, slot: usize) -> hedgerow_core::Message {
    use hedgerow_core::wire::ViewDelta;
    use hedgerow_core::{Change, Member, Payload};
    let (term, version) = c.node(slot).node.view().stamp();
    hedgerow_core::Message::ViewDelta(std::sync::Arc::new(ViewDelta {
        term,
        base_version: version,
        version: version + 1,
        digest: 0,
        changes: vec![Change::Upsert(std::sync::Arc::new(Member {
            id: hedgerow_core::NodeId::new("ghost").unwrap(),
            incarnation: 1,
            addr: "ghost:1".into(),
            meta_version: 0,
            meta: Payload::default(),
        }))],
    }))
}

#[test]
fn pushed_views_take_deltas_from_the_leader_only_relayed_ones_from_peers_too() {
    for (spread, taken) in [(ViewSpread::Push, false), (RELAY, true)] {
        let mut c = Cluster::with_nodes(config(7, spread), 12);
        c.run_until_converged(Duration::from_secs(30)).unwrap();
        let l = c.leader().unwrap();
        let m = (l + 1) % 12;
        let peer = c.node((l + 2) % 12).node.identity().id.to_string();
        let msg = forged(&c, m);
        c.inject(m, &peer, msg);
        let ghost = hedgerow_core::NodeId::new("ghost").unwrap();
        assert_eq!(
            c.node(m).node.view().contains(&ghost),
            taken,
            "{spread:?}: a peer's delta"
        );
        // Either way the leader's view wins: with its next version the
        // stamps agree and the digests do not, so the member fetches the
        // leader's view and the ghost is gone. (A view's stamp never goes
        // back, so until then the forged version stands.)
        c.add_node();
        c.run_until_converged(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("{spread:?}: {:?}", c.divergence()));
        assert!(!c.node(m).node.view().contains(&ghost), "{spread:?}");
        c.assert_no_violations();
    }
}

#[test]
fn a_peer_cannot_push_a_view_beyond_the_leaders_reach() {
    let mut c = Cluster::with_nodes(config(8, RELAY), 12);
    c.run_until_converged(Duration::from_secs(30)).unwrap();
    let l = c.leader().unwrap();
    let m = (l + 1) % 12;
    let peer = c.node((l + 2) % 12).node.identity().id.to_string();
    let hedgerow_core::Message::ViewDelta(d) = forged(&c, m) else {
        unreachable!()
    };
    let mut far = (*d).clone();
    far.base_version = u64::MAX - 1;
    far.version = u64::MAX;
    let before = c.node(m).node.view().stamp();
    c.inject(
        m,
        &peer,
        hedgerow_core::Message::ViewDelta(std::sync::Arc::new(far)),
    );
    assert_eq!(
        c.node(m).node.view().stamp(),
        before,
        "refused, not applied"
    );
    c.run_until_converged(Duration::from_secs(30)).unwrap();
    c.assert_no_violations();
}
