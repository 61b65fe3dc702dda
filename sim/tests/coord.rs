//! The coordination services under faults: locks and semaphores never
//! over-granted at any true instant (exact permit intervals), lock tokens
//! strictly increasing, acknowledged puts durable and applied once, across
//! leader crashes, pauses past the permit lease, partitions and store
//! outages. Seeds: `HEDGEROW_SEEDS` (default 4). Each checker is also shown
//! to fail on a deliberately broken run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{converged, leader};
use hedgerow_core::coord::CoordAnswer;
use hedgerow_core::{Config, Message, RequestId, Rng};
use hedgerow_sim::{seeds, Cluster, ClusterConfig};

const FOREVER: Duration = Duration::from_secs(3600);

fn cluster(seed: u64, n: usize) -> Cluster {
    let mut cfg = ClusterConfig::new(seed);
    cfg.node = Config::local("sim");
    let mut c = Cluster::with_nodes(cfg, n);
    converged(&mut c, 10);
    c
}

fn granted(c: &Cluster, slot: usize, id: RequestId) -> Option<u64> {
    match c.node(slot).app.coord.get(&id) {
        Some(Ok(CoordAnswer::Granted { token, .. })) => Some(*token),
        _ => None,
    }
}

#[test]
fn a_lock_goes_round_in_order_with_rising_tokens() {
    let mut c = cluster(7, 3);
    let ids: Vec<(usize, RequestId)> = (0..3)
        .map(|s| (s, c.acquire(s, "job", 1, true, FOREVER).unwrap()))
        .collect();
    let mut tokens = Vec::new();
    for _ in 0..3 {
        c.run_for(Duration::from_millis(300));
        let holders: Vec<(usize, RequestId)> = ids
            .iter()
            .copied()
            .filter(|(s, id)| c.node(*s).node.permit(*id).is_some())
            .collect();
        assert_eq!(
            holders.len(),
            1,
            "exactly one holder of the lock: {holders:?}"
        );
        let (s, id) = holders[0];
        tokens.push(granted(&c, s, id).unwrap());
        assert!(c.release(s, id));
    }
    c.run_for(Duration::from_millis(300));
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "tokens {tokens:?}");
    assert_eq!(c.permits_granted(), 3);
    c.assert_no_violations();
}

#[test]
fn try_acquire_on_a_full_semaphore_is_busy_and_mixed_limits_are_refused() {
    let mut c = cluster(8, 3);
    let a = c.acquire(0, "pool", 2, false, FOREVER).unwrap();
    let b = c.acquire(1, "pool", 2, false, FOREVER).unwrap();
    c.run_for(Duration::from_millis(200));
    assert!(
        granted(&c, 0, a).is_some() && granted(&c, 1, b).is_some(),
        "{:?} {:?}",
        c.node(0).app.coord,
        c.node(1).app.coord
    );
    let full = c.acquire(2, "pool", 2, false, FOREVER).unwrap();
    let mixed = c.acquire(2, "pool", 3, false, FOREVER).unwrap();
    c.run_for(Duration::from_millis(200));
    assert_eq!(c.node(2).app.coord.get(&full), Some(&Ok(CoordAnswer::Busy)));
    assert!(
        matches!(
            c.node(2).app.coord.get(&mixed),
            Some(Ok(CoordAnswer::Refused(_)))
        ),
        "{:?}",
        c.node(2).app.coord.get(&mixed)
    );
    // A limit of 0 and an empty name never leave the node.
    assert!(c.acquire(2, "pool", 0, false, FOREVER).is_none());
    assert!(c.acquire(2, "", 1, false, FOREVER).is_none());
    // Released twice: the second is a no-op.
    assert!(c.release(0, a));
    assert!(!c.release(0, a));
    c.assert_no_violations();
}

#[test]
fn a_paused_holder_loses_its_permit_and_another_gets_it_meanwhile() {
    let mut c = cluster(9, 3);
    let lead = leader(&c);
    let (holder, other) = ((lead + 1) % 3, (lead + 2) % 3);
    let mine = c.acquire(holder, "job", 1, true, FOREVER).unwrap();
    c.run_for(Duration::from_millis(200));
    assert!(granted(&c, holder, mine).is_some());
    let theirs = c.acquire(other, "job", 1, true, FOREVER).unwrap();
    c.pause(holder);
    // Past the permit lease (1 s in `Config::local`) and the clock bound.
    c.run_for(Duration::from_millis(2500));
    assert!(
        granted(&c, other, theirs).is_some(),
        "the waiter got the lock"
    );
    c.resume(holder);
    c.wake(holder);
    let now = c.now_of(holder);
    assert!(
        !c.node(holder).node.permit_valid(&now, mine),
        "lost the moment it resumes"
    );
    assert!(c
        .node(holder)
        .app
        .permits_lost
        .iter()
        .any(|(t, _, _)| *t == mine));
    c.assert_no_violations();
}

#[test]
fn puts_are_acknowledged_once_and_survive_a_leader_crash() {
    let mut c = cluster(10, 3);
    let ids: Vec<RequestId> = (0..20)
        .map(|i| {
            c.kv_put(i % 3, &format!("k/{}", i % 4), &[i as u8])
                .unwrap()
        })
        .collect();
    c.run_for(Duration::from_millis(50));
    let lead = leader(&c);
    c.crash(lead);
    c.run_for(Duration::from_secs(5));
    let acked = c.puts_acked();
    assert!(
        acked >= 15,
        "most puts acknowledged across the crash: {acked}"
    );
    assert!(ids.len() >= acked);
    assert!(c.kv_put(0, "", b"x").is_none(), "an empty key is refused");
    assert!(
        c.kv_put(0, "k", &vec![0; 300 * 1024]).is_none(),
        "an oversize value is refused"
    );
    c.assert_no_violations();
}

/// The mixed scenario: locks, a semaphore of 2 and puts from every node,
/// under leader crashes, holder pauses, partitions and store outages.
#[test]
fn coordination_under_chaos() {
    for seed in seeds(14, 4).list {
        let mut c = cluster(seed, 5);
        let mut rng = Rng::new(seed ^ 0xc0);
        // (slot, ticket, step at which the holder lets go)
        let mut held: Vec<(usize, RequestId, u64)> = Vec::new();
        let mut paused = None;
        for step in 0..120u64 {
            let slot = rng.below(5) as usize;
            let hold = 1 + rng.below(4);
            if c.node(slot).alive {
                match rng.below(3) {
                    0 => {
                        let id = c.acquire(slot, "lock", 1, true, Duration::from_secs(3));
                        held.extend(id.map(|id| (slot, id, step + hold)));
                    }
                    1 => {
                        let id = c.acquire(slot, "pool", 2, true, Duration::from_secs(3));
                        held.extend(id.map(|id| (slot, id, step + hold)));
                    }
                    _ => {
                        let _ = c.kv_put(slot, &format!("k/{}", rng.below(8)), &step.to_be_bytes());
                    }
                }
            }
            for (s, id, _) in held.iter().filter(|h| h.2 == step) {
                c.release(*s, *id);
            }
            held.retain(|h| h.2 > step);
            match step % 30 {
                5 => {
                    if let Some(l) = c.leader() {
                        c.crash(l);
                    }
                }
                9 => c.restart((seed as usize + step as usize) % 5),
                12 => {
                    c.pause(slot);
                    paused = Some(slot);
                }
                16 => {
                    if let Some(p) = paused.take() {
                        c.resume(p);
                        c.wake(p);
                    }
                }
                18 => c.partition(slot, (slot + 1) % 5),
                21 => c.heal(),
                24 => c.store_down(true),
                25 => c.store_down(false),
                _ => {}
            }
            c.run_for(Duration::from_millis(100 + rng.below(200)));
        }
        if let Some(p) = paused {
            c.resume(p);
            c.wake(p);
        }
        for s in 0..5 {
            if !c.node(s).alive {
                c.restart(s);
            }
        }
        c.heal();
        c.run_for(Duration::from_secs(5));
        c.assert_no_violations();
        // Once the faults stop, the services work again for everyone.
        let puts: Vec<(usize, RequestId)> = (0..5)
            .map(|s| (s, c.kv_put(s, "after", &[s as u8]).unwrap()))
            .collect();
        let locks: Vec<(usize, RequestId)> = (0..5)
            .map(|s| (s, c.acquire(s, "final", 1, true, FOREVER).unwrap()))
            .collect();
        for _ in 0..5 {
            c.run_for(Duration::from_millis(500));
            for (s, id) in &locks {
                if c.node(*s).node.permit(*id).is_some() {
                    c.release(*s, *id);
                }
            }
        }
        c.run_for(Duration::from_millis(500));
        for (s, id) in &puts {
            let r = c.node(*s).app.coord.get(id);
            assert!(
                matches!(r, Some(Ok(CoordAnswer::Put { .. }))),
                "seed {seed}: put of {s}: {r:?}"
            );
        }
        for (s, id) in &locks {
            assert!(
                granted(&c, *s, *id).is_some(),
                "seed {seed}: lock of {s} never granted"
            );
        }
        c.assert_no_violations();
    }
}

/// The permit checker fails when a holder believes past a free: a forged
/// renewal (a leader that renews a permit it already freed) to a paused
/// holder whose permit went to another node.
#[test]
fn the_permit_checker_catches_a_renewal_after_a_free() {
    let mut c = cluster(11, 3);
    let lead = leader(&c);
    let (holder, other) = ((lead + 1) % 3, (lead + 2) % 3);
    let mine = c.acquire(holder, "job", 1, true, FOREVER).unwrap();
    c.run_for(Duration::from_millis(200));
    let theirs = c.acquire(other, "job", 1, true, FOREVER).unwrap();
    c.pause(holder);
    c.run_for(Duration::from_millis(2500));
    assert!(granted(&c, other, theirs).is_some());
    c.resume(holder);
    // Before the holder notices it lapsed, the "leader" renews it.
    let until = c.now_of(holder).clock.interval.latest + 5_000_000_000;
    let leader_id = c.node(lead).node.identity().id.to_string();
    let renew = Message::PermitsRenewed {
        until_ns: until,
        permits: vec![(mine.0, "job".into())],
    };
    c.inject(holder, &leader_id, renew);
    c.run_for(Duration::from_millis(100));
    let v = c.violations();
    assert!(
        v.iter().any(|v| v.invariant.starts_with("8")),
        "the overlap is reported: {v:?}"
    );
}

/// The put checker fails when acknowledged puts are lost by the store.
#[test]
fn the_put_checker_catches_a_lost_acknowledged_put() {
    let mut c = cluster(12, 3);
    c.kv_put(1, "k", b"v").unwrap();
    c.run_for(Duration::from_millis(200));
    assert_eq!(c.puts_acked(), 1);
    assert!(c.violations().is_empty());
    c.store_lose_coord();
    let v = c.violations();
    assert!(v.iter().any(|v| v.invariant.starts_with("10")), "{v:?}");
}

/// The built-in `coordination` scenario (locks, a semaphore, puts through
/// crashes, partitions, store outages and 2 -> 150 -> 2 churn) runs clean
/// and does grant and commit: the checkers had work to check.
#[test]
fn the_coordination_scenario_runs_clean_and_does_work() {
    let sc = hedgerow_sim::scenario::Scenario::load("coordination").unwrap();
    for seed in seeds(15, 2).list {
        let (out, _) = hedgerow_sim::scenario::run_with(&sc, ClusterConfig::new(seed));
        assert!(
            out.passed(),
            "seed {seed}: converge {:?} ({:?}), violations {:?}",
            out.converge,
            out.divergence,
            out.violations.first().map(ToString::to_string)
        );
        assert!(
            out.permits_granted >= 10,
            "seed {seed}: {} grants",
            out.permits_granted
        );
        assert!(
            out.puts_acked >= 50,
            "seed {seed}: {} puts acknowledged",
            out.puts_acked
        );
    }
}
