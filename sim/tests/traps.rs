//! The known traps of DESIGN.md, one test each, through the harness.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{converged, term_of};
use hedgerow_core::wire::{HeartbeatAck, ViewSnapshot};
use hedgerow_core::{ClockStatus, Config, Message, NotLeadingReason, StepDownReason, Term};
use hedgerow_sim::{seeds, Cluster, ClusterConfig, SimClock};

const MS: u64 = 1_000_000;

/// Trap 1: a renew the store applies late races a takeover based on the
/// older row; exactly one wins. Store latency spikes past the driver's
/// timeout make renews land late over many seeds; the checkers verify no
/// overlap and increasing tokens at every step.
#[test]
fn trap1_late_renew_races_takeover() {
    for seed in seeds(1, 10).list {
        let mut cfg = ClusterConfig::new(seed);
        cfg.node = Config::local("sim");
        cfg.store.op_timeout = Duration::from_millis(300);
        let mut c = Cluster::with_nodes(cfg, 4);
        converged(&mut c, 10);
        for round in 0..6u64 {
            // A spike longer than the timeout: writes land after the
            // writer gave up on them.
            c.store_spike(Duration::from_millis(200 + 97 * round));
            c.run_for(Duration::from_millis(2500));
            c.store_spike(Duration::ZERO);
            c.run_for(Duration::from_millis(1500));
        }
        c.assert_no_violations();
        converged(&mut c, 20);
    }
}

/// Trap 2: a leader restarts with the same id; it must not renew its old
/// lease (another nonce) and the next leadership has token + 1.
#[test]
fn trap2_restarted_leader_waits_and_takes_token_plus_one() {
    let cfg = ClusterConfig::new(2);
    let mut c = Cluster::with_nodes(cfg, 1);
    converged(&mut c, 10);
    let old_term = term_of(&c, 0);
    let expires = c.store().row().unwrap().expires_ns;
    c.restart(0);
    c.run_until_true(Duration::from_secs(30), Duration::from_millis(1), |c| {
        c.leader().is_some()
    })
    .expect("leads again after expiry");
    assert_eq!(term_of(&c, 0), Term(old_term.0 + 1));
    let iv = c.leadership_intervals();
    let second = iv.last().unwrap();
    let clock = c.node(0).clock;
    // It took over only once its earliest passed the old expiry.
    let earliest_at_start = clock.now(second.start).clock.interval.earliest;
    assert!(earliest_at_start > expires);
    c.assert_no_violations();
}

/// Trap 3: after a release, or a lapse nobody took over, the next
/// leadership (even the same node's) gets token + 1.
#[test]
fn trap3_release_or_lapse_never_reuses_a_token() {
    let mut c = Cluster::with_nodes(ClusterConfig::new(3), 1);
    converged(&mut c, 10);
    assert_eq!(term_of(&c, 0), Term(1));
    let now = c.now_of(0);
    c.node_mut(0).node.resign(now);
    c.flush(0);
    c.run_until_true(Duration::from_secs(30), Duration::from_millis(5), |c| {
        c.leader().is_some()
    })
    .expect("leads again after its cooldown");
    assert_eq!(term_of(&c, 0), Term(2), "released then retaken: token + 1");
    // Lapse: the store goes away for longer than the lease.
    c.store_down(true);
    c.run_until_true(Duration::from_secs(30), Duration::from_millis(5), |c| {
        c.leader().is_none()
    })
    .expect("steps down at expiry");
    c.store_down(false);
    c.run_until_true(Duration::from_secs(30), Duration::from_millis(5), |c| {
        c.leader().is_some()
    })
    .expect("leads again");
    assert_eq!(term_of(&c, 0), Term(3), "lapsed then retaken: token + 1");
    c.assert_no_violations();
}

/// Trap 4: a new leader that missed the last joins and leaves: members
/// converge to its view, no stale member survives, no view goes back.
#[test]
fn trap4_a_behind_new_leader_converges_the_group() {
    let mut base = ClusterConfig::new(4);
    base.node.candidate = false;
    let mut c = Cluster::new(base.clone());
    let mut lead_cfg = base.node.clone();
    lead_cfg.candidate = true;
    let a = c.add_node_with(lead_cfg.clone());
    c.run_for(Duration::from_secs(1));
    let b = c.add_node_with(lead_cfg);
    let m = c.add_node();
    converged(&mut c, 10);
    assert_eq!(c.leader(), Some(a));
    // b misses two joins and a leave.
    c.partition(a, b);
    let d = c.add_node();
    let e = c.add_node();
    c.run_for(Duration::from_millis(500));
    c.leave(m);
    c.run_for(Duration::from_millis(500));
    assert!(c.node(b).node.view().len() < c.node(a).node.view().len());
    c.heal();
    c.crash(a);
    c.run_until_true(Duration::from_secs(30), Duration::from_millis(5), |c| {
        c.leader() == Some(b)
    })
    .expect("b takes over");
    converged(&mut c, 20);
    let ids: Vec<String> = c
        .node(b)
        .node
        .view()
        .members()
        .map(|x| x.id.to_string())
        .collect();
    assert_eq!(ids.len(), 3, "b, d and e: {ids:?}");
    for s in [d, e] {
        assert!(c
            .node(s)
            .node
            .view()
            .contains(&c.node(b).node.identity().id));
    }
    c.assert_no_violations();
}

/// Trap 5: a member restarts inside the dedupe window and reuses request
/// id 7: the leader treats it as a new request.
#[test]
fn trap5_restarted_member_reusing_request_ids_is_handled_anew() {
    let mut c = Cluster::with_nodes(ClusterConfig::new(5), 3);
    converged(&mut c, 10);
    let l = c.leader().unwrap();
    let m = (0..3).find(|s| *s != l).unwrap();
    let first: Vec<_> = (0..7).map(|i| c.send(m, &[i])).collect();
    c.run_for(Duration::from_millis(200));
    assert!(first
        .iter()
        .all(|id| matches!(c.node(m).app.sends.get(id), Some(Ok(_)))));
    c.restart(m);
    converged(&mut c, 10);
    let second: Vec<_> = (0..7).map(|i| c.send(m, &[100 + i])).collect();
    assert_eq!(
        first.last(),
        second.last(),
        "the restarted process reuses id 7"
    );
    c.run_for(Duration::from_millis(200));
    assert!(second
        .iter()
        .all(|id| matches!(c.node(m).app.sends.get(id), Some(Ok(_)))));
    assert_eq!(
        c.handlings(),
        14,
        "the reused ids were handled, not answered from the cache"
    );
    c.assert_no_violations();
}

/// Trap 6: a restarted member (new incarnation) that the leader holds as
/// failed, or still as alive, rejoins at once.
#[test]
fn trap6_restarted_member_rejoins_at_once() {
    let cfg = ClusterConfig::new(6);
    let hb = cfg.node.heartbeat_interval.as_nanos() as u64;
    let mut c = Cluster::with_nodes(cfg, 4);
    converged(&mut c, 10);
    let l = c.leader().unwrap();
    let m = (0..4).find(|s| *s != l).unwrap();
    c.crash(m);
    c.run_for(Duration::from_secs(5)); // the leader drops it as failed
    assert_eq!(c.node(l).node.view().len(), 3);
    let t0 = c.now_ns();
    c.restart(m);
    let t1 = converged(&mut c, 10);
    assert!(t1 - t0 < hb, "rejoined in {} ns", t1 - t0);
    // Restart while the leader still holds the old incarnation as alive.
    let t0 = c.now_ns();
    c.restart(m);
    let t1 = converged(&mut c, 10);
    assert!(t1 - t0 < hb, "replaced in {} ns", t1 - t0);
    let inc = c.node(m).node.identity().incarnation;
    assert_eq!(
        c.node(l)
            .node
            .view()
            .get(&c.node(m).node.identity().id)
            .unwrap()
            .incarnation,
        inc
    );
    c.assert_no_violations();
}

/// Trap 7: a leader that reaches the store but none of its members steps
/// down after k × failure timeout, and a reachable node takes over.
#[test]
fn trap7_unreachable_leader_steps_down() {
    let cfg = ClusterConfig::new(7);
    let k = cfg.node.unreachable_factor as u64;
    let ft = cfg.node.failure_timeout.as_nanos() as u64;
    let mut c = Cluster::with_nodes(cfg, 5);
    converged(&mut c, 10);
    let l = c.leader().unwrap();
    let t0 = c.now_ns();
    c.isolate(l);
    let t1 = c
        .run_until_true(Duration::from_secs(60), Duration::from_millis(5), |c| {
            c.leaders().iter().any(|s| *s != l)
        })
        .expect("a reachable node takes over");
    assert!(t1 - t0 <= k * ft + 2_000 * MS, "took {} ns", t1 - t0);
    assert!(!c.leaders().contains(&l));
    c.run_for(Duration::from_secs(2));
    assert!(c.divergence().is_none(), "{:?}", c.divergence());
    assert!(
        c.node(l).node.view_is_stale(),
        "the old leader knows it is cut off"
    );
    c.assert_no_violations();
}

/// Trap 8: 150 members and a store that allows 100 connections: nobody is
/// refused, at start-up or when the lease expires after a leader crash.
#[test]
fn trap8_150_members_within_100_store_connections() {
    for seed in 0..3 {
        let mut cfg = ClusterConfig::new(seed);
        cfg.store.max_connections = 100;
        let mut c = Cluster::with_nodes(cfg, 150);
        converged(&mut c, 20);
        c.crash(c.leader().unwrap());
        converged(&mut c, 40);
        let s = c.store();
        println!(
            "seed {seed}: peak {} store operations in flight, {} refused, {} executed",
            s.peak_in_flight, s.refused, s.ops
        );
        assert_eq!(s.refused, 0);
        assert!(s.peak_in_flight < 60, "peak {}", s.peak_in_flight);
        c.assert_no_violations();
    }
}

/// Trap 9: a peer claims a higher term the store does not confirm: ignored.
#[test]
fn trap9_unconfirmed_higher_term_is_ignored() {
    let mut c = Cluster::with_nodes(ClusterConfig::new(9), 3);
    converged(&mut c, 10);
    let l = c.leader().unwrap();
    let m = (0..3).find(|s| *s != l).unwrap();
    let before = c.node(m).node.leader().cloned().unwrap();
    let stamp = c.node(m).node.view().stamp();
    let ops = c.store().ops;
    c.inject(
        m,
        "impostor",
        Message::ViewSnapshot(ViewSnapshot {
            term: Term(99),
            version: 1,
            digest: 0,
            chunk: 0,
            chunks: 1,
            total: 0,
            members: Vec::new(),
        }),
    );
    c.inject(
        m,
        "impostor",
        Message::HeartbeatAck(HeartbeatAck {
            term: Term(99),
            leader_incarnation: 1,
            view_version: 5,
            digest: 0,
            lease_expires_ns: u64::MAX,
            lease_version: 1000,
            your_meta_version: None,
        }),
    );
    c.run_for(Duration::from_secs(2));
    assert!(
        c.store().ops > ops,
        "the claim was checked against the store"
    );
    assert_eq!(c.node(m).node.leader(), Some(&before));
    assert_eq!(c.node(m).node.view().stamp(), stamp);
    assert!(c.divergence().is_none());
    c.assert_no_violations();
}

/// Trap 10: a leader paused past its lease answers "not leader" first
/// thing after it resumes.
#[test]
fn trap10_paused_leader_says_no_on_resume() {
    let cfg = ClusterConfig::new(10);
    let lease = cfg.node.lease_duration;
    let mut c = Cluster::with_nodes(cfg, 3);
    converged(&mut c, 10);
    let l = c.leader().unwrap();
    c.pause(l);
    c.run_for(lease + Duration::from_secs(2));
    c.resume(l);
    let now = c.now_of(l);
    assert!(
        !c.node(l).node.is_leader(&now),
        "the first answer after resuming is no"
    );
    c.wake(l);
    converged(&mut c, 20);
    assert_ne!(c.leader(), Some(l));
    c.assert_no_violations();
}

/// Trap 11: no ClockBound and no configured bound: the node runs as a
/// member but never leads, and says why.
#[test]
fn trap11_untrusted_clocks_never_lead_and_say_why() {
    let mut c = Cluster::with_nodes(ClusterConfig::new(11), 3);
    for s in 0..3 {
        let clock = SimClock {
            assumed: true,
            ..c.node(s).clock
        };
        c.set_clock(s, clock);
    }
    let unknown = c.add_node();
    let clock = SimClock {
        status: ClockStatus::Unknown,
        ..c.node(unknown).clock
    };
    c.set_clock(unknown, clock);
    c.run_for(Duration::from_secs(15));
    assert!(c.leaders().is_empty());
    assert!(c.leadership_intervals().is_empty());
    for s in 0..3 {
        let now = c.now_of(s);
        assert_eq!(
            c.node(s).node.not_leading_reason(&now),
            Some(NotLeadingReason::AssumedClockNotAllowed)
        );
    }
    let now = c.now_of(unknown);
    assert_eq!(
        c.node(unknown).node.not_leading_reason(&now),
        Some(NotLeadingReason::ClockUntrusted)
    );
    // An operator who opts in to the assumed bound gets a leader.
    let mut cfg = Config::lan("sim");
    cfg.lead_on_assumed_clock = true;
    let ok = c.add_node_with(cfg);
    let clock = SimClock {
        assumed: true,
        ..c.node(ok).clock
    };
    c.set_clock(ok, clock);
    c.run_until_true(Duration::from_secs(5), Duration::from_millis(5), |c| {
        c.leader() == Some(ok)
    })
    .expect("leads with an explicit opt-in");
    let _ = StepDownReason::Expired;
}

/// A message that claims to come from the receiver itself (a peer
/// misconfigured with our id) changes nothing.
#[test]
fn a_message_under_our_own_id_is_ignored() {
    let mut c = Cluster::with_nodes(ClusterConfig::new(12), 3);
    converged(&mut c, 10);
    let l = c.leader().unwrap();
    let own = c.node(l).node.identity().id.to_string();
    let stamp = c.node(l).node.view().stamp();
    let hb = hedgerow_core::wire::Heartbeat {
        term: stamp.0,
        incarnation: c.node(l).node.identity().incarnation + 1,
        addr: "elsewhere:1".into(),
        meta_version: 1,
        meta: None,
        view_term: stamp.0,
        view_version: stamp.1,
        relays: true,
    };
    c.inject(l, &own, Message::Heartbeat(hb));
    c.run_for(Duration::from_secs(1));
    assert_eq!(c.node(l).node.view().stamp(), stamp);
    assert!(c.divergence().is_none());
}

/// A recreated lease table (the row lost) does not make tokens restart:
/// takeovers go above the highest token the nodes have seen.
#[test]
fn a_recreated_table_does_not_reuse_tokens() {
    let mut c = Cluster::with_nodes(ClusterConfig::new(13), 4);
    converged(&mut c, 10);
    for _ in 0..3 {
        c.restart(c.leader().unwrap());
        converged(&mut c, 30);
    }
    let before = term_of(&c, c.leader().unwrap());
    assert!(before >= Term(4));
    c.store_wipe();
    c.crash(c.leader().unwrap());
    converged(&mut c, 30);
    let after = term_of(&c, c.leader().unwrap());
    assert!(after > before, "token {after} after {before}");
    c.assert_no_violations();
}

/// Found by the turmoil runner: a member that cannot take over (a clock
/// that may not lead, or `candidate = false`) and starts before any leader
/// exists finds nobody in its start-up read; it must keep looking, and
/// follow the leader elected after it.
#[test]
fn a_member_that_cannot_lead_started_first_finds_the_later_leader() {
    for seed in seeds(0x11F1, 5).list {
        for via_config in [false, true] {
            let mut c = Cluster::new(ClusterConfig::new(seed));
            let first = if via_config {
                let mut cfg = Config::lan("sim");
                cfg.candidate = false;
                c.add_node_with(cfg)
            } else {
                let s = c.add_node();
                let clock = SimClock {
                    status: ClockStatus::Disrupted,
                    ..c.node(s).clock
                };
                c.set_clock(s, clock);
                s
            };
            c.run_for(Duration::from_secs(3));
            c.add_node();
            c.add_node();
            converged(&mut c, 15);
            assert!(c.node(first).node.leader().is_some(), "seed {seed}");
            c.assert_no_violations();
        }
    }
}

/// A node that leaves while its first acquire is on its way to the store
/// must not hold on to the row that acquire wins: it releases it, so the
/// others need not wait out a lease it will never renew (and it never
/// leads after `leave`). The leave instant is swept across the start-up
/// read and the acquire, with a slow store so the acquire is out a while.
#[test]
fn a_leave_while_the_first_acquire_is_out_releases_the_row() {
    let mut hits = 0;
    for step in 0..60u64 {
        let mut cfg = ClusterConfig::new(7);
        cfg.store.latency_min = Duration::from_millis(150);
        cfg.store.latency_max = Duration::from_millis(150);
        let mut c = Cluster::with_nodes(cfg, 1);
        c.run_for(Duration::from_millis(20 * step));
        let acquiring = c.store().row().is_none();
        c.leave(0);
        c.run_for(Duration::from_secs(3));
        let me = c.node(0).node.identity().id.clone();
        if let Some(row) = c.store().row() {
            hits += usize::from(acquiring);
            assert!(
                row.holder.as_ref().is_none_or(|h| h.id != me),
                "left at {} ms, the row is still held: {row:?}",
                20 * step
            );
        }
        assert!(c.leaders().is_empty());
        c.assert_no_violations();
    }
    // Some leave instants fell inside the acquire (the row appeared after it).
    assert!(hits > 0, "no leave instant fell inside the first acquire");
}
