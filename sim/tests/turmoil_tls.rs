//! Mutual TLS under turmoil: the same driver, transport and TLS path as on
//! a real network (futures-rustls over the `Runtime`'s streams), with
//! certificates from `tls::ClusterCa`. A TLS cluster goes through a
//! leader crash with every checker passing, and a node whose certificate
//! comes from another CA never enters anyone's view.
//!
//! `HEDGEROW_SEED=<seed>` replays one seed (default 1).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hedgerow::tls::ClusterCa;
use hedgerow::Tls;
use hedgerow_sim::scenario::Scenario;
use hedgerow_sim::turmoil::runner::CLUSTER;
use hedgerow_sim::turmoil::{run, TurmoilOptions};

fn seed() -> u64 {
    std::env::var("HEDGEROW_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// `n<slot>`'s material from `ca`.
fn material(ca: &ClusterCa, slot: usize) -> Tls {
    let cert = ca.node(&format!("n{slot}")).unwrap();
    Tls::from_pem(ca.cert_pem(), cert.cert_pem, cert.key_pem)
}

fn tls_options(ca: &ClusterCa, slots: impl IntoIterator<Item = usize>) -> TurmoilOptions {
    TurmoilOptions {
        tls: slots.into_iter().map(|s| (s, material(ca, s))).collect(),
        ..TurmoilOptions::default()
    }
}

#[test]
fn a_tls_cluster_fails_over_and_the_checkers_pass() {
    let ca = ClusterCa::new(CLUSTER).unwrap();
    // Slot 4 is the node started after the crash.
    let opts = tls_options(&ca, 1..=4);
    let s = Scenario::parse(
        "tls-failover",
        "nodes 3\nconverge within 15s\nsend 5\nrun 2s\ncrash leader\nconverge within 30s\n\
         nodes 1\nconverge within 15s\nsend 5\nrun 3s\n",
    )
    .unwrap();
    let r = run(&s, seed(), &opts);
    print!("{}", r.summary());
    assert!(r.passed(), "seed {}: {}", seed(), r.summary());
    assert_eq!(r.sends.0, 10, "every send answered Ok: {:?}", r.sends);
    assert!(r.failovers[0].is_some(), "a new leader after the crash");
    // The bytes really went through TLS: the same run in plaintext sends
    // less (no handshakes with certificates, no record overhead).
    let plain = run(&s, seed(), &TurmoilOptions::default());
    assert!(plain.passed(), "{}", plain.summary());
    let total = |r: &hedgerow_sim::turmoil::TurmoilReport| r.trace.bytes_sent.values().sum::<u64>();
    assert!(
        total(&r) > total(&plain) + 3 * 1000,
        "TLS {} bytes vs plain {}",
        total(&r),
        total(&plain)
    );
}

#[test]
fn a_node_with_a_foreign_ca_never_enters_a_view() {
    let ca = ClusterCa::new(CLUSTER).unwrap();
    let foreign = ClusterCa::new(CLUSTER).unwrap();
    let mut opts = tls_options(&ca, 1..=3);
    // Same cluster name, same node naming, the wrong CA.
    opts.tls.insert(4, material(&foreign, 4));
    let s = Scenario::parse(
        "tls-foreign",
        "nodes 3\nconverge within 15s\nnodes 1\nrun 10s\nsend 5\nrun 2s\n",
    )
    .unwrap();
    let r = run(&s, seed(), &opts);
    print!("{}", r.summary());
    assert!(
        r.error.is_none() && r.violations.is_empty(),
        "{}",
        r.summary()
    );
    let seen: Vec<_> = r
        .trace
        .views
        .iter()
        .filter(|(_, node, view)| node.as_str() != "n4" && view.iter().any(|m| m == "n4"))
        .collect();
    assert!(seen.is_empty(), "n4 entered views: {seen:?}");
    let n4_views: Vec<_> = r.trace.views.iter().filter(|(_, n, _)| n == "n4").collect();
    assert!(
        n4_views.iter().all(|(_, _, view)| view.len() <= 1),
        "n4 saw others: {n4_views:?}"
    );
    // The members carry on undisturbed: no step-down, their sends
    // answered, none failed.
    assert!(r.step_downs.is_empty(), "{:?}", r.step_downs);
    assert!(r.sends.0 >= 3 && r.sends.1 == 0, "{:?}", r.sends);
}
