//! PostgreSQL killed under a running 3-node cluster and restarted: at no
//! sampled instant do two nodes say they lead, the leader steps down once
//! its lease runs out with the store gone, and the cluster has a leader
//! again after the restart. Skips (saying why) without PostgreSQL unless
//! `HEDGEROW_REQUIRE_POSTGRES=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use hedgerow::runtime::TokioRuntime;
use hedgerow::store::PostgresStore;
use hedgerow::{Builder, Config, Hedgerow};
use hedgerow_clock::SystemClock;
use hedgerow_tests::{postgres, tokio_runtime};

const BOUND: Duration = Duration::from_millis(5);

fn local(c: &mut Config) {
    *c = Config::local(c.cluster.clone());
    c.lead_on_assumed_clock = true;
}

fn leaders(nodes: &[Hedgerow]) -> usize {
    nodes.iter().filter(|n| n.is_leader()).count()
}

/// Samples every few milliseconds until `done` or `limit`, failing the test
/// if two nodes ever say they lead at once. Returns whether `done` held.
async fn watch(
    rt: &TokioRuntime,
    nodes: &[Hedgerow],
    limit: Duration,
    done: impl Fn(&[Hedgerow]) -> bool,
) -> bool {
    use hedgerow::runtime::Runtime;
    let end = Instant::now() + limit;
    loop {
        let n = leaders(nodes);
        assert!(n <= 1, "{n} nodes say they lead at once");
        if done(nodes) {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        rt.sleep(Duration::from_millis(3)).await;
    }
}

#[test]
fn postgres_killed_under_a_cluster_and_restarted() {
    let Some(server) = postgres("postgres_killed_under_a_cluster_and_restarted") else {
        return;
    };
    let runtime = tokio_runtime();
    runtime.block_on(async {
        use hedgerow::runtime::Runtime;
        let rt = TokioRuntime::from_context().unwrap();
        let mut nodes = Vec::new();
        for i in 0..3 {
            // One store (one connection) per node, as separate processes have.
            let store = PostgresStore::builder(server.connection_string())
                .connect_timeout(Duration::from_millis(500))
                .statement_timeout(Duration::from_millis(500))
                .build()
                .unwrap();
            let node = Builder::<TokioRuntime>::new("pg-outage", format!("n{i}"), "127.0.0.1:0")
                .runtime(rt.clone())
                .store(store)
                .clock(SystemClock::new(BOUND))
                .config(local)
                .start()
                .await
                .expect("node starts");
            nodes.push(node);
        }
        assert!(
            watch(&rt, &nodes, Duration::from_secs(15), |n| leaders(n) == 1).await,
            "a leader before the outage"
        );
        let lease = Config::local("x").lease_duration;

        server.stop().unwrap();
        let down = Instant::now();
        // Nobody can renew or take over: the leader must stop leading by the
        // end of its lease, and nobody may lead while the store is gone.
        assert!(
            watch(&rt, &nodes, lease + Duration::from_secs(3), |n| leaders(n)
                == 0)
            .await,
            "the leader stepped down when its lease ran out"
        );
        let stepped = down.elapsed();
        assert!(
            stepped <= lease + Duration::from_secs(1),
            "stepped down after {stepped:?}"
        );
        assert!(
            !watch(&rt, &nodes, Duration::from_secs(2), |n| leaders(n) > 0).await,
            "no leader while the store is down"
        );

        let up = Instant::now();
        server.start_again().unwrap();
        assert!(
            watch(&rt, &nodes, Duration::from_secs(20), |n| leaders(n) == 1).await,
            "a leader again after the store came back"
        );
        eprintln!(
            "stepped down {stepped:?} after the kill; a leader {:?} after starting the server again (pg_ctl start included)",
            up.elapsed()
        );
        for n in &nodes {
            n.shutdown().await;
        }
        rt.sleep(Duration::from_millis(10)).await;
    });
}
