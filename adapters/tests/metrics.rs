//! The library's metrics as an embedder sees them: two nodes on loopback
//! with `metrics-util`'s debugging recorder installed, a send, a
//! broadcast and a failover, and the counters and gauges that must have
//! moved, by value. The recorder is the process's global one (the nodes'
//! tasks run on runtime threads, where a thread-local recorder would not
//! be seen); each test keeps to its own `cluster` label.
#![cfg(all(feature = "tokio", feature = "metrics"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use hedgerow::metrics as m;
use hedgerow::runtime::{Runtime as _, TokioRuntime};
use hedgerow::store::MemoryStore;
use hedgerow::Hedgerow;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;

mod support;
use support::{local_node, tokio_runtime, wait_until};

/// The recorder is the process's, and each snapshot takes what it shows:
/// the tests in this file run one at a time, or one would take another's
/// counts.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("no other recorder in this test binary");
        snapshotter
    })
}

/// A series as the test names it: `name{node=…,extra=…}` (the cluster
/// label is the test's own and left out).
type Series = String;

/// What the recorder saw over many snapshots (each one resets its
/// values): per counter the sum of what was added and the largest value
/// set (counters published as absolute values), per gauge the last value
/// and the largest, per histogram every observation.
#[derive(Default)]
struct Seen {
    added: BTreeMap<Series, u64>,
    absolute: BTreeMap<Series, u64>,
    gauge: BTreeMap<Series, f64>,
    gauge_max: BTreeMap<Series, f64>,
    observed: BTreeMap<Series, Vec<f64>>,
}

impl Seen {
    /// Takes in a snapshot, keeping only series of `cluster`.
    fn take(&mut self, cluster: &str) {
        for (key, _, _, value) in snapshotter().snapshot().into_vec() {
            let (kind, key) = key.into_parts();
            let mut labels: Vec<_> = key.labels().collect();
            if !labels
                .iter()
                .any(|l| l.key() == m::CLUSTER && l.value() == cluster)
            {
                continue;
            }
            labels.retain(|l| l.key() != m::CLUSTER);
            labels.sort_by(|a, b| a.key().cmp(b.key()));
            let labels: Vec<_> = labels
                .iter()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let series = format!("{}{{{}}}", key.name(), labels.join(","));
            match (kind, value) {
                (MetricKind::Counter, DebugValue::Counter(v)) => {
                    *self.added.entry(series.clone()).or_default() += v;
                    let max = self.absolute.entry(series).or_default();
                    *max = (*max).max(v);
                }
                (MetricKind::Gauge, DebugValue::Gauge(v)) => {
                    let v = v.into_inner();
                    self.gauge.insert(series.clone(), v);
                    let max = self.gauge_max.entry(series).or_insert(f64::MIN);
                    *max = max.max(v);
                }
                (MetricKind::Histogram, DebugValue::Histogram(vs)) => self
                    .observed
                    .entry(series)
                    .or_default()
                    .extend(vs.into_iter().map(|v| v.into_inner())),
                _ => {}
            }
        }
    }

    fn added(&self, series: &str) -> u64 {
        self.added.get(series).copied().unwrap_or(0)
    }

    fn absolute(&self, series: &str) -> u64 {
        self.absolute.get(series).copied().unwrap_or(0)
    }

    fn gauge_max(&self, series: &str) -> f64 {
        self.gauge_max.get(series).copied().unwrap_or(f64::NAN)
    }

    fn observations(&self, series: &str) -> usize {
        self.observed.get(series).map_or(0, Vec::len)
    }

    /// The sum over every series of `name` whose labels include `labels`.
    fn added_where(&self, name: &str, labels: &str) -> u64 {
        self.added
            .iter()
            .filter(|(s, _)| s.starts_with(&format!("{name}{{")) && s.contains(labels))
            .map(|(_, v)| v)
            .sum()
    }
}

/// The series of `metric` for `node` with the `extra` labels
/// (`key=value,…`), labels in key order as [`Seen::take`] keeps them.
fn series(metric: m::Metric, node: &str, extra: &str) -> Series {
    let node = format!("node={node}");
    let mut labels: Vec<&str> = extra.split(',').filter(|l| !l.is_empty()).collect();
    labels.push(&node);
    labels.sort_unstable();
    format!("{}{{{}}}", metric.name, labels.join(","))
}

/// Takes snapshots into `seen` until `done` holds (true) or 20 s pass.
async fn observe_until(
    rt: &TokioRuntime,
    seen: &mut Seen,
    cluster: &str,
    mut done: impl FnMut(&Seen) -> bool,
) -> bool {
    wait_until(rt, Duration::from_secs(20), || {
        seen.take(cluster);
        done(seen)
    })
    .await
}

async fn node(rt: &TokioRuntime, store: &MemoryStore, cluster: &str, name: &str) -> Hedgerow {
    local_node(rt, store, (cluster, name), |b| {
        b.leader_handler(|req| async move { Ok(req.payload) })
    })
    .await
}

#[test]
fn a_send_a_broadcast_and_a_failover_move_the_counters_and_gauges() {
    const CLUSTER: &str = "metrics-failover";
    let _one = one_at_a_time();
    snapshotter();
    let tokio = tokio_runtime();
    tokio.block_on(async {
        let rt = TokioRuntime::from_context().unwrap();
        let store = MemoryStore::new();
        let a = node(&rt, &store, CLUSTER, "a").await;
        assert!(wait_until(&rt, Duration::from_secs(10), || a.is_leader()).await);
        let b = node(&rt, &store, CLUSTER, "b").await;
        let both = || a.members().len() == 2 && b.members().len() == 2;
        assert!(wait_until(&rt, Duration::from_secs(10), both).await);
        let reply = b.send("ping").await.expect("the leader answers");
        assert_eq!(&reply.payload[..], b"ping");
        let replies = a.broadcast("all").await.expect("the broadcast runs");
        assert_eq!(replies.len(), 2);

        let mut seen = Seen::default();
        let settled = observe_until(&rt, &mut seen, CLUSTER, |s| {
            s.gauge_max(&series(m::IS_LEADER, "a", "")) == 1.0
                && s.gauge_max(&series(m::MEMBERS, "b", "")) == 2.0
                && s.absolute(&series(m::ELECTIONS_WON, "a", "")) == 1
                && s.added(&series(m::STORE_RESULTS, "a", "kind=renew,outcome=ok")) >= 1
        })
        .await;
        assert!(settled, "the leader's series never showed it leading");
        // The send: one, answered, timed once.
        assert_eq!(s_added(&seen, m::SENDS, "b", "outcome=ok"), 1);
        assert_eq!(seen.observations(&series(m::SEND_SECONDS, "b", "")), 1);
        assert_eq!(seen.added_where(m::SENDS.name, "node=a"), 0);
        // The broadcast: both members answered, one latency.
        assert_eq!(s_added(&seen, m::BROADCAST_REPLIES, "a", "outcome=ok"), 2);
        assert_eq!(seen.observations(&series(m::BROADCAST_SECONDS, "a", "")), 1);
        // The request went out on b's connection and came in on a's.
        assert!(s_added(&seen, m::TRANSPORT_MESSAGES_OUT, "b", "kind=request") >= 1);
        assert!(s_added(&seen, m::TRANSPORT_MESSAGES_IN, "a", "kind=request") >= 1);
        assert!(s_added(&seen, m::TRANSPORT_MESSAGES_OUT, "b", "kind=heartbeat") >= 1);
        let bytes_out = seen.added_where(m::TRANSPORT_BYTES_OUT.name, "node=b");
        let bytes_in = seen.added_where(m::TRANSPORT_BYTES_IN.name, "node=a");
        assert!(
            bytes_out > 0 && bytes_in > 0,
            "bytes {bytes_out} out, {bytes_in} in"
        );
        // Store calls: the first write took the lease, renewals followed,
        // each timed; b, a follower, wrote nothing.
        assert!(s_added(&seen, m::STORE_RESULTS, "a", "kind=cas_other,outcome=ok") >= 1);
        assert!(seen.observations(&series(m::LEASE_RENEW_SECONDS, "a", "")) >= 1);
        assert_eq!(
            seen.observations(&series(m::LEASE_RENEW_SECONDS, "b", "")),
            0
        );
        assert_eq!(seen.absolute(&series(m::STORE_ERRORS, "a", "")), 0);
        assert!(seen.absolute(&series(m::MESSAGES_SENT, "b", "")) >= 1);
        let old_term = seen.gauge_max(&series(m::TERM, "a", ""));
        assert!(old_term >= 1.0);

        // Failover: the leader goes without a word; b takes over.
        a.shutdown().await;
        let took_over = observe_until(&rt, &mut seen, CLUSTER, |s| {
            s.gauge_max(&series(m::IS_LEADER, "b", "")) == 1.0
                && s.gauge.get(&series(m::MEMBERS, "b", "")) == Some(&1.0)
        })
        .await;
        assert!(took_over, "b never showed leading a view of itself alone");
        assert!(b.is_leader());
        assert_eq!(seen.absolute(&series(m::ELECTIONS_WON, "b", "")), 1);
        // b followed a once; leading itself is counted as an election.
        assert_eq!(seen.absolute(&series(m::LEADER_CHANGES, "b", "")), 1);
        assert!(seen.gauge_max(&series(m::TERM, "b", "")) > old_term);
        assert_eq!(seen.added_where(m::MEMBERS_LEFT.name, "node=b"), 1);
        assert!(s_added(&seen, m::STORE_RESULTS, "b", "kind=cas_other,outcome=ok") >= 1);
        assert!(seen.observations(&series(m::LEASE_CAS_OTHER_SECONDS, "b", "")) >= 1);
        b.shutdown().await;
    });
}

fn s_added(seen: &Seen, metric: m::Metric, node: &str, extra: &str) -> u64 {
    seen.added(&series(metric, node, extra))
}

#[test]
fn relayed_views_cross_real_connections_and_members_relay() {
    // Ten nodes on loopback with relaying from 4 members on and a fanout
    // of 2: the leader hands each delta to two members, which pass it on
    // over their own connections; joiners take snapshots from members.
    const CLUSTER: &str = "metrics-relay";
    let _one = one_at_a_time();
    snapshotter();
    let tokio = tokio_runtime();
    tokio.block_on(async {
        let rt = TokioRuntime::from_context().unwrap();
        let store = MemoryStore::new();
        let relay = |b: hedgerow::Builder<TokioRuntime>| {
            // `config` replaces local_node's own tweak, so it is repeated.
            b.config(|c| {
                *c = hedgerow::Config::local(c.cluster.clone());
                c.lead_on_assumed_clock = true;
                c.view_spread = hedgerow::ViewSpread::Relay {
                    fanout: 2,
                    above: 4,
                }
            })
        };
        let mut nodes = Vec::new();
        for i in 0..10 {
            let name = format!("r{i}");
            nodes.push(local_node(&rt, &store, (CLUSTER, &name), relay).await);
        }
        let agreed = |nodes: &[Hedgerow], n: usize| {
            let stamp = nodes[0].view_stamp();
            nodes
                .iter()
                .all(|x| x.members().len() == n && x.view_stamp() == stamp)
        };
        assert!(wait_until(&rt, Duration::from_secs(20), || agreed(&nodes, 10)).await);
        // Two members go and two join: deltas and joiner snapshots.
        for _ in 0..2 {
            let member = nodes.iter().position(|n| !n.is_leader()).unwrap();
            nodes.remove(member).shutdown().await;
        }
        for i in 10..12 {
            let name = format!("r{i}");
            nodes.push(local_node(&rt, &store, (CLUSTER, &name), relay).await);
        }
        assert!(
            wait_until(&rt, Duration::from_secs(20), || agreed(&nodes, 10)).await,
            "views: {:?}",
            nodes.iter().map(|n| n.view_stamp()).collect::<Vec<_>>()
        );
        let leader = nodes
            .iter()
            .find(|n| n.is_leader())
            .unwrap()
            .id()
            .to_string();
        let mut seen = Seen::default();
        let relayed = |s: &Seen| {
            let by_members: u64 = (0..12)
                .map(|i| format!("r{i}"))
                .filter(|n| *n != leader)
                .map(|n| s_added(s, m::TRANSPORT_MESSAGES_OUT, &n, "kind=relay_delta"))
                .sum();
            by_members > 0 && s.added_where(m::TRANSPORT_MESSAGES_IN.name, "kind=relay_delta") > 0
        };
        assert!(observe_until(&rt, &mut seen, CLUSTER, relayed).await);
        assert!(seen.added_where(m::TRANSPORT_MESSAGES_OUT.name, "kind=snapshot_from") > 0);
        for n in nodes {
            n.shutdown().await;
        }
    });
}
