//! The coordination services through the facade, over loopback TCP on
//! tokio: KV puts from every node with reads from any, a watcher that
//! misses nothing, a lock passed round with rising fencing tokens, a
//! semaphore's limit, a permit lost on leave, and puts across a leader's
//! shutdown. Nodes share one store (memory, and SQLite for the fenced SQL
//! path) and read a system clock with a small assumed bound.
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt;
use hedgerow::coord::CoordRefusal;
use hedgerow::runtime::Runtime;
use hedgerow::store::{LeaseStore, MemoryStore};
use hedgerow::{Builder, Config, Error, Hedgerow};
use hedgerow_clock::SystemClock;

mod support;
use support::{tokio_runtime, wait_until};

fn local(c: &mut Config) {
    *c = Config::local(c.cluster.clone());
    c.lead_on_assumed_clock = true;
}

async fn cluster<R: Runtime, S: LeaseStore + Clone + 'static>(
    rt: &R,
    store: &S,
    n: usize,
) -> Vec<Hedgerow> {
    let mut nodes = Vec::new();
    for i in 0..n {
        let node = Builder::<R>::new("coord", format!("n{i}"), "127.0.0.1:0")
            .runtime(rt.clone())
            .store(store.clone())
            .clock(SystemClock::new(Duration::from_millis(5)))
            .config(local)
            .broadcast_handler(|b| async move { Ok(b.payload) })
            .start()
            .await
            .unwrap();
        nodes.push(node);
    }
    let all = nodes.clone();
    let formed = wait_until(rt, Duration::from_secs(10), || {
        all.iter().filter(|n| n.is_leader()).count() == 1
            && all.iter().all(|n| n.members().len() == n_of(&all))
    })
    .await;
    assert!(formed, "the cluster formed");
    nodes
}

fn n_of(nodes: &[Hedgerow]) -> usize {
    nodes.len()
}

fn leader_of(nodes: &[Hedgerow]) -> usize {
    nodes.iter().position(|n| n.is_leader()).expect("a leader")
}

async fn kv_and_locks<S: LeaseStore + Clone + 'static>(store: S) {
    let rt = <hedgerow::runtime::TokioRuntime as Runtime>::from_context().unwrap();
    let nodes = cluster(&rt, &store, 3).await;
    let watcher = nodes[2]
        .kv()
        .watch("cfg/", Duration::from_millis(20))
        .await
        .unwrap();
    futures::pin_mut!(watcher);

    // Puts from every node, reads from any.
    let mut revs = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        revs.push(node.kv().put("cfg/mode", format!("v{i}")).await.unwrap());
    }
    assert!(
        revs.windows(2).all(|w| w[0] < w[1]),
        "revisions rise: {revs:?}"
    );
    nodes[0].kv().put("other", b"x".to_vec()).await.unwrap();
    for node in &nodes {
        let latest = node.kv().get("cfg/mode").await.unwrap().unwrap();
        assert_eq!((latest.revision, &latest.value[..]), (revs[2], &b"v2"[..]));
        let first = node
            .kv()
            .get_at("cfg/mode", revs[0])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&first.value[..], b"v0");
        assert_eq!(node.kv().history("cfg/mode").await.unwrap().len(), 3);
    }
    assert_eq!(nodes[1].kv().list("cfg/").await.unwrap().len(), 1);
    assert!(nodes[1].kv().get("missing").await.unwrap().is_none());
    // The watcher saw each change to its prefix, in order, and nothing else.
    let mut seen = Vec::new();
    for _ in 0..3 {
        let e = tokio::time::timeout(Duration::from_secs(5), watcher.next())
            .await
            .expect("a change within 5 s")
            .unwrap()
            .unwrap();
        seen.push(e.revision);
    }
    assert_eq!(seen, revs);

    // Bad input is refused before it leaves the node.
    assert!(matches!(
        nodes[0].kv().put("", b"x".to_vec()).await,
        Err(Error::Coord(CoordRefusal::Invalid(_)))
    ));
    let huge = vec![0u8; 300 * 1024];
    assert!(matches!(
        nodes[0].kv().put("k", huge).await,
        Err(Error::Coord(CoordRefusal::Invalid(_)))
    ));
    assert!(matches!(
        nodes[0].semaphore("s", 0).try_acquire().await,
        Err(Error::Coord(CoordRefusal::Invalid(_)))
    ));

    // A broadcast to a subset: the named members answer, an unknown id is
    // reported, not dropped.
    let ids = [
        nodes[0].id().clone(),
        hedgerow::NodeId::new("ghost").unwrap(),
    ];
    let replies = nodes[1].broadcast_to(&ids, "hi").await.unwrap();
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert!(
        replies
            .iter()
            .any(|(id, r)| id == nodes[0].id() && r.is_ok()),
        "{replies:?}"
    );
    assert!(
        replies
            .iter()
            .any(|(id, r)| id.as_str() == "ghost" && r.is_err()),
        "{replies:?}"
    );

    // A lock passed round: one holder at a time, tokens rising.
    let mut tokens = Vec::new();
    for node in &nodes {
        let lock = node.lock("report").acquire().await.unwrap();
        assert!(lock.is_valid());
        assert!(lock.valid_until().is_some());
        for other in &nodes {
            if other.id() != node.id() {
                assert!(other.lock("report").try_acquire().await.unwrap().is_none());
            }
        }
        tokens.push(lock.token());
        lock.release();
    }
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens rise: {tokens:?}"
    );

    // A semaphore of 2: a third waiter gets in when one is released.
    let pool = |i: usize| nodes[i].semaphore("pool", 2);
    let a = pool(0).acquire().await.unwrap();
    let _b = pool(1).acquire().await.unwrap();
    assert!(pool(2).try_acquire().await.unwrap().is_none());
    assert!(matches!(
        pool(2).acquire_timeout(Duration::from_millis(300)).await,
        Err(Error::Timeout)
    ));
    // Mixed limits for one name are refused while permits are held.
    assert!(matches!(
        nodes[2].semaphore("pool", 3).try_acquire().await,
        Err(Error::Coord(CoordRefusal::LimitConflict { stored: 2 }))
    ));
    let waiter = {
        let p = pool(2);
        tokio::spawn(async move { p.acquire().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(a);
    let c = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter got in")
        .unwrap()
        .unwrap();
    assert!(c.is_valid());

    // A permit held by a node that leaves is lost at once.
    let held = nodes[1].lock("leaving").acquire().await.unwrap();
    let lost = held.lost();
    let l = leader_of(&nodes);
    let leaver = if l == 1 { 0 } else { 1 };
    let held = if leaver == 1 {
        held
    } else {
        drop(held);
        nodes[leaver].lock("leaving").acquire().await.unwrap()
    };
    let lost = if leaver == 1 { lost } else { held.lost() };
    nodes[leaver].leave().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), lost)
        .await
        .expect("lost() fired");
    assert!(!held.is_valid());
    for n in &nodes {
        n.shutdown().await;
    }
}

#[test]
fn kv_locks_and_semaphores_on_the_memory_store() {
    tokio_runtime().block_on(kv_and_locks(MemoryStore::new()));
}

#[cfg(feature = "sqlite")]
#[test]
fn kv_locks_and_semaphores_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = hedgerow::store::SqliteStore::open(dir.path().join("coord.db")).unwrap();
    tokio_runtime().block_on(kv_and_locks(std::sync::Arc::new(store)));
}

#[test]
fn puts_survive_the_leader_shutting_down() {
    tokio_runtime().block_on(async {
        let rt = <hedgerow::runtime::TokioRuntime as Runtime>::from_context().unwrap();
        let store = MemoryStore::new();
        let nodes = cluster(&rt, &store, 3).await;
        let l = leader_of(&nodes);
        let writer = nodes[(l + 1) % 3].clone();
        let puts = tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..40u32 {
                match writer
                    .kv()
                    .put(&format!("k{i}"), i.to_be_bytes().to_vec())
                    .await
                {
                    Ok(rev) => acked.push((i, rev)),
                    Err(Error::Timeout | Error::NoLeader) => {}
                    Err(e) => panic!("put {i}: {e}"),
                }
            }
            acked
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        nodes[l].shutdown().await;
        let acked = puts.await.unwrap();
        assert!(
            acked.len() >= 30,
            "most puts acknowledged across the failover: {}",
            acked.len()
        );
        let reader = &nodes[(l + 2) % 3];
        for (i, rev) in acked {
            let e = reader
                .kv()
                .get(&format!("k{i}"))
                .await
                .unwrap()
                .expect("acknowledged put stored");
            assert_eq!((e.revision, &e.value[..]), (rev, &i.to_be_bytes()[..]));
            assert_eq!(
                reader.kv().history(&format!("k{i}")).await.unwrap().len(),
                1,
                "applied once"
            );
        }
        for n in &nodes {
            n.shutdown().await;
        }
    });
}

/// A put with no leader anywhere fails with a clear error and writes
/// nothing; a put during a store outage is either committed once or an
/// error that says it may have been (never a false `Ok`), and the services
/// work again once the store is back.
#[test]
fn no_leader_and_a_store_outage_are_errors_not_false_oks() {
    tokio_runtime().block_on(async {
        let rt = <hedgerow::runtime::TokioRuntime as Runtime>::from_context().unwrap();
        // A node that may not lead (no assumed clock allowed): no leader.
        let store = MemoryStore::new();
        let lone = Builder::<hedgerow::runtime::TokioRuntime>::new("coord", "lone", "127.0.0.1:0")
            .runtime(rt.clone())
            .store(store.clone())
            .clock(SystemClock::new(Duration::from_millis(5)))
            .config(|c| {
                *c = Config::local(c.cluster.clone());
                c.request_timeout = Duration::from_millis(500);
                c.dedupe_window = Duration::from_secs(1);
            })
            .start()
            .await
            .unwrap();
        let r = lone.kv().put("k", "v").await;
        assert!(matches!(r, Err(Error::NoLeader)), "{r:?}");
        let r = lone
            .lock("l")
            .acquire_timeout(Duration::from_millis(300))
            .await;
        assert!(matches!(r, Err(Error::NoLeader | Error::Timeout)), "{r:?}");
        lone.shutdown().await;

        let nodes = cluster(&rt, &store, 2).await;
        let m = nodes.iter().find(|n| !n.is_leader()).unwrap().clone();
        store.set_unavailable(true);
        let during = m.kv().put("during", "v").await;
        store.set_unavailable(false);
        match during {
            Ok(rev) => {
                let e = m
                    .kv()
                    .get("during")
                    .await
                    .unwrap()
                    .expect("an Ok put is stored");
                assert_eq!(e.revision, rev);
            }
            Err(Error::Timeout | Error::NoLeader) => {
                // May or may not have landed; if it did, exactly once.
                assert!(m.kv().history("during").await.unwrap().len() <= 1);
            }
            Err(e) => panic!("unexpected {e}"),
        }
        let after = m.kv().put("after", "v").await.unwrap();
        assert!(after > 0);
        for n in &nodes {
            n.shutdown().await;
        }
    });
}
