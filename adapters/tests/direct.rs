//! The driver runs on whoever has an input for it (its loop task, a
//! caller, a connection task, a handler task): these tests hold the
//! promises that makes. Replies are never lost or mixed up when many
//! threads and tasks send at once; a deadline a direct input sets still
//! fires on time; and once the driver stops (shut down, or its runtime
//! dropped), every waiter gets `Closed` instead of hanging. Plus, over the
//! same path: a leader's dedupe table stays as small as the requests in
//! flight however many are sent (senders say what they settled).
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use hedgerow::runtime::{Runtime, TokioRuntime};
use hedgerow::store::MemoryStore;
use hedgerow::{Builder, Config, Error, Hedgerow};
use hedgerow_clock::SystemClock;

mod support;
use support::wait_until;

/// Runs `fut` to completion on this plain thread (no runtime).
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::sync::Arc::new(Unpark(std::thread::current())).into();
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// A node with `Config::local` timings and an echo handler that never
/// answers a payload starting with `hang`.
async fn node_with(
    rt: &TokioRuntime,
    store: &MemoryStore,
    name: &str,
    tweak: fn(&mut Config),
) -> Hedgerow {
    Builder::<TokioRuntime>::new("direct", name, "127.0.0.1:0")
        .runtime(rt.clone())
        .store(store.clone())
        .clock(SystemClock::new(Duration::from_millis(5)))
        .config(move |c| {
            *c = Config::local(c.cluster.clone());
            c.lead_on_assumed_clock = true;
            tweak(c);
        })
        .leader_handler(|req| async move {
            if req.payload.starts_with(b"hang") {
                futures::future::pending::<()>().await;
            }
            Ok(req.payload)
        })
        .start()
        .await
        .unwrap()
}

/// A two-node cluster (the leader, then a member following it).
async fn pair(rt: &TokioRuntime) -> (Hedgerow, Hedgerow) {
    pair_with(rt, |_| {}).await
}

async fn pair_with(rt: &TokioRuntime, tweak: fn(&mut Config)) -> (Hedgerow, Hedgerow) {
    let store = MemoryStore::new();
    let a = node_with(rt, &store, "a", tweak).await;
    assert!(wait_until(rt, Duration::from_secs(10), || a.is_leader()).await);
    let b = node_with(rt, &store, "b", tweak).await;
    let ok = wait_until(rt, Duration::from_secs(10), || {
        b.leader().is_some_and(|l| &l.id == a.id()) && b.members().len() == 2
    })
    .await;
    assert!(ok, "b never followed a");
    (a, b)
}

#[test]
fn replies_reach_their_callers_when_threads_and_tasks_send_at_once() {
    let runtime = support::tokio_runtime();
    let rt = runtime.block_on(async { TokioRuntime::from_context().unwrap() });
    let (a, b) = runtime.block_on(pair(&rt));
    // Plain threads (outside the runtime) and runtime tasks send through
    // the same member at once, so direct inputs race each other, the
    // loop task and the connection tasks for the driver.
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let b = b.clone();
            std::thread::spawn(move || {
                for i in 0..300 {
                    let msg = format!("thread {t} message {i}").into_bytes();
                    let reply = block_on(b.send(msg.clone())).unwrap();
                    assert_eq!(reply.payload, msg);
                }
            })
        })
        .collect();
    let tasks = runtime.block_on(async {
        let tasks: Vec<_> = (0..3)
            .map(|t| {
                let b = b.clone();
                tokio::spawn(async move {
                    let replies = futures::stream::iter(0..300)
                        .map(|i| {
                            let b = b.clone();
                            async move {
                                let msg = format!("task {t} message {i}").into_bytes();
                                (b.send(msg.clone()).await.unwrap().payload, msg)
                            }
                        })
                        .buffer_unordered(32)
                        .collect::<Vec<_>>()
                        .await;
                    for (got, sent) in replies {
                        assert_eq!(got, sent);
                    }
                })
            })
            .collect();
        futures::future::join_all(tasks).await
    });
    for t in tasks {
        t.unwrap();
    }
    for t in threads {
        t.join().unwrap();
    }
    runtime.block_on(async {
        b.shutdown().await;
        a.shutdown().await;
    });
}

#[test]
fn a_deadline_set_by_a_direct_send_fires_on_time() {
    let runtime = support::tokio_runtime();
    runtime.block_on(async {
        let rt = TokioRuntime::from_context().unwrap();
        let store = MemoryStore::new();
        let a = Builder::<TokioRuntime>::new("direct", "solo", "127.0.0.1:0")
            .runtime(rt.clone())
            .store(store.clone())
            .clock(SystemClock::new(Duration::from_millis(5)))
            .config(|c| {
                *c = Config::local(c.cluster.clone());
                c.lead_on_assumed_clock = true;
                // Nothing else for the node to do for a while: its loop
                // sleeps up to a second, and only the send's deadline can
                // wake it sooner.
                c.heartbeat_interval = Duration::from_secs(5);
                c.failure_timeout = Duration::from_secs(20);
                c.lease_duration = Duration::from_secs(30);
                c.request_timeout = Duration::from_millis(100);
            })
            .leader_handler(|_req| futures::future::pending::<Result<Vec<u8>, String>>())
            .start()
            .await
            .unwrap();
        assert!(wait_until(&rt, Duration::from_secs(10), || a.is_leader()).await);
        // One after the other: each send starts just after the previous
        // deadline woke the loop, when its timer was re-armed for up to a
        // second ahead, so a send that failed to bring that timer forward
        // would time out up to a second late.
        for _ in 0..3 {
            let t = Instant::now();
            let r = a.send(b"nobody answers".to_vec()).await;
            let took = t.elapsed();
            assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
            assert!(
                took < Duration::from_millis(600),
                "timed out after {took:?}"
            );
        }
        a.shutdown().await;
    });
}

#[test]
fn after_shutdown_calls_and_waiters_get_closed() {
    let runtime = support::tokio_runtime();
    runtime.block_on(async {
        let rt = TokioRuntime::from_context().unwrap();
        let (a, b) = pair(&rt).await;
        // A send the leader never answers is waiting when its node stops.
        let waiting = tokio::spawn({
            let b = b.clone();
            async move { b.send(b"hang".to_vec()).await }
        });
        rt.sleep(Duration::from_millis(100)).await;
        b.shutdown().await;
        let r = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiting send hung after shutdown")
            .unwrap();
        assert!(matches!(r, Err(Error::Closed)), "{r:?}");
        let r = b.send(b"late".to_vec()).await;
        assert!(matches!(r, Err(Error::Closed)), "{r:?}");
        let r = b.broadcast(b"late".to_vec()).await;
        assert!(matches!(r, Err(Error::Closed)), "{r:?}");
        a.shutdown().await;
    });
}

#[test]
fn dropping_the_runtime_releases_every_waiter() {
    let runtime = support::tokio_runtime();
    let rt = runtime.block_on(async { TokioRuntime::from_context().unwrap() });
    let (a, b) = runtime.block_on(pair(&rt));
    let waiter = std::thread::spawn({
        let b = b.clone();
        move || block_on(b.send(b"hang".to_vec()))
    });
    std::thread::sleep(Duration::from_millis(200));
    // The driver's loop task goes with the runtime: the driver's state
    // (and the waiting send's reply channel) must go with it.
    runtime.shutdown_timeout(Duration::from_secs(5));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(waiter.join());
    });
    let r = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the waiting send hung after its runtime was dropped")
        .unwrap();
    assert!(matches!(r, Err(Error::Closed)), "{r:?}");
    let r = block_on(b.send(b"late".to_vec()));
    assert!(matches!(r, Err(Error::Closed)), "{r:?}");
    drop(a);
}

#[test]
fn a_leader_answers_far_more_requests_than_its_dedupe_table_holds() {
    let runtime = support::tokio_runtime();
    runtime.block_on(async {
        let rt = TokioRuntime::from_context().unwrap();
        // 500 entries and a 30 s window: remembering every request for
        // the window (as the table did before senders said what they
        // settled) would refuse all but the first 500 ("overloaded").
        let (a, b) = pair_with(&rt, |c| {
            c.max_dedupe_entries = 500;
            c.dedupe_window = Duration::from_secs(30);
        })
        .await;
        let replies = futures::stream::iter(0..20_000u32)
            .map(|i| {
                let b = b.clone();
                async move {
                    b.send(i.to_be_bytes().to_vec())
                        .await
                        .map(|r| (r.payload, i))
                }
            })
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await;
        for r in replies {
            let (got, i) = r.expect("every request answered");
            assert_eq!(got, &i.to_be_bytes()[..]);
        }
        // What is left is what the last requests did not settle: the ids
        // from the lowest one still outstanding when the last request went
        // out, not 20 000.
        let entries = a.stats().dedupe_entries;
        assert!(entries < 500, "{entries} entries left");
        b.shutdown().await;
        a.shutdown().await;
    });
}

/// A handler call is polled once in the step that asked for it: answers
/// ready at once, answers that wait (finished on a task of their own), and
/// a handler panicking before it waits all reach the right callers, in any
/// mix, and a panic leaves the leader answering.
#[test]
fn handlers_answering_at_once_waiting_or_panicking_all_reach_their_callers() {
    let runtime = support::tokio_runtime();
    runtime.block_on(async {
        let rt = TokioRuntime::from_context().unwrap();
        let store = MemoryStore::new();
        let node = |name: &'static str| {
            let sleeper = rt.clone();
            Builder::<TokioRuntime>::new("direct", name, "127.0.0.1:0")
                .runtime(rt.clone())
                .store(store.clone())
                .clock(SystemClock::new(Duration::from_millis(5)))
                .config(|c| {
                    *c = Config::local(c.cluster.clone());
                    c.lead_on_assumed_clock = true;
                })
                .leader_handler(move |req| {
                    let sleeper = sleeper.clone();
                    async move {
                        if req.payload.starts_with(b"panic") {
                            panic!("a handler panicking before it waits");
                        }
                        if req.payload.starts_with(b"wait") {
                            sleeper.sleep(Duration::from_millis(2)).await;
                        }
                        Ok(req.payload)
                    }
                })
                .start()
        };
        let a = node("a").await.unwrap();
        assert!(wait_until(&rt, Duration::from_secs(10), || a.is_leader()).await);
        let b = node("b").await.unwrap();
        let ok = wait_until(&rt, Duration::from_secs(10), || {
            b.leader().is_some_and(|l| &l.id == a.id()) && b.members().len() == 2
        })
        .await;
        assert!(ok, "b never followed a");
        let replies = futures::stream::iter(0..600u32)
            .map(|i| {
                let b = b.clone();
                let kind = ["now", "wait", "panic"][i as usize % 3];
                async move {
                    let msg = format!("{kind} {i}").into_bytes();
                    (b.send(msg.clone()).await, msg)
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
        for (got, sent) in replies {
            if sent.starts_with(b"panic") {
                assert!(matches!(got, Err(Error::Refused(_))), "{got:?}");
            } else {
                assert_eq!(got.expect("answered").payload, sent);
            }
        }
        b.shutdown().await;
        a.shutdown().await;
    });
}
