//! Helpers shared by the facade's integration tests.

// Each test binary includes this module and uses only part of it.
#![allow(dead_code)]

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use hedgerow::runtime::Runtime;

/// Polls `done` every 5 ms on `rt` until it holds or `limit` passes;
/// whether it held.
pub async fn wait_until<R: Runtime>(
    rt: &R,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> bool {
    let end = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        rt.sleep(Duration::from_millis(5)).await;
    }
}

/// Runs blocking socket work on `rt`'s blocking pool, so the nodes keep
/// running meanwhile, and hands back its result.
pub async fn blocking<R: Runtime, T: Send + 'static>(
    rt: &R,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = futures::channel::oneshot::channel();
    rt.spawn_blocking(Box::new(move || {
        let _ = tx.send(work());
    }));
    rx.await.expect("the blocking work ran to the end")
}

/// A tokio runtime as the tests use it: multi-threaded, 2 workers, every
/// driver enabled.
pub fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Blocks until the node closes `s` (true) or `wait` passes (false).
pub fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    if s.set_nonblocking(false).is_err() || s.set_read_timeout(Some(wait)).is_err() {
        return true;
    }
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// A node of `cluster` named `name` on loopback port 0 (tokio), on the
/// local preset with the system clock (5 ms bound) allowed to lead,
/// answering broadcasts with their payload; `tweak` adjusts the builder.
#[cfg(feature = "tokio")]
pub async fn local_node(
    rt: &hedgerow::runtime::TokioRuntime,
    store: &hedgerow::store::MemoryStore,
    (cluster, name): (&str, &str),
    tweak: impl FnOnce(
        hedgerow::Builder<hedgerow::runtime::TokioRuntime>,
    ) -> hedgerow::Builder<hedgerow::runtime::TokioRuntime>,
) -> hedgerow::Hedgerow {
    let b = hedgerow::Builder::<hedgerow::runtime::TokioRuntime>::new(cluster, name, "127.0.0.1:0")
        .runtime(rt.clone())
        .store(store.clone())
        .clock(hedgerow_clock::SystemClock::new(Duration::from_millis(5)))
        .config(|c| {
            *c = hedgerow::Config::local(c.cluster.clone());
            c.lead_on_assumed_clock = true;
        })
        .broadcast_handler(|req| async move { Ok(req.payload) });
    match tweak(b).start().await {
        Ok(node) => node,
        Err(e) => panic!("node {name} does not start: {e}"),
    }
}
