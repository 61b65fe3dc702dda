//! Messaging cost against raw TCP over loopback, in one run:
//!
//! * a one-shot `send` round trip to the leader vs a raw TCP echo round
//!   trip of the same payload;
//! * stream throughput to the leader vs a raw TCP bulk copy.
//!
//! `cargo bench -p hedgerow --bench messaging` (release). Sizes can be
//! shrunk with `HEDGEROW_BENCH_SENDS` and `HEDGEROW_BENCH_MIB`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::StreamExt;
use hedgerow::runtime::{Runtime, TokioRuntime};
use hedgerow::store::MemoryStore;
use hedgerow::{Config, Hedgerow};
use hedgerow_clock::SystemClock;

const PAYLOAD: usize = 64;
const CHUNK: usize = 64 * 1024;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn node(
    rt: &TokioRuntime,
    store: &MemoryStore,
    name: &str,
    done: mpsc::UnboundedSender<u64>,
) -> Hedgerow {
    hedgerow::Builder::<TokioRuntime>::new("bench", name, "127.0.0.1:0")
        .runtime(rt.clone())
        .store(store.clone())
        .clock(SystemClock::new(Duration::from_millis(1)))
        .config(|c| {
            *c = Config::local(c.cluster.clone());
            c.lead_on_assumed_clock = true;
        })
        .leader_handler(|req| async move { Ok(req.payload) })
        .stream_handler(move |mut s| {
            let done = done.clone();
            async move {
                let mut n = 0u64;
                while let Some(Ok(chunk)) = s.next().await {
                    n += chunk.len() as u64;
                }
                let _ = done.unbounded_send(n);
            }
        })
        .start()
        .await
        .unwrap()
}

async fn raw_echo(rt: &TokioRuntime, rounds: u64) -> Duration {
    let listener = rt.bind("127.0.0.1:0".into()).await.unwrap();
    let addr = TokioRuntime::local_addr(&listener).unwrap();
    let server = rt.clone();
    rt.spawn(Box::pin(async move {
        let (mut s, _) = server.accept(&listener).await.unwrap();
        let mut buf = vec![0u8; 4 + PAYLOAD];
        while s.read_exact(&mut buf).await.is_ok() {
            if s.write_all(&buf).await.is_err() {
                break;
            }
        }
    }));
    let mut c = rt.connect(addr.to_string()).await.unwrap();
    let mut msg = (PAYLOAD as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&[7u8; PAYLOAD]);
    let mut back = vec![0u8; msg.len()];
    for _ in 0..rounds / 10 {
        c.write_all(&msg).await.unwrap();
        c.read_exact(&mut back).await.unwrap();
    }
    let t = Instant::now();
    for _ in 0..rounds {
        c.write_all(&msg).await.unwrap();
        c.read_exact(&mut back).await.unwrap();
    }
    t.elapsed() / rounds as u32
}

async fn raw_copy(rt: &TokioRuntime, total: u64) -> Duration {
    let listener = rt.bind("127.0.0.1:0".into()).await.unwrap();
    let addr = TokioRuntime::local_addr(&listener).unwrap();
    let (tx, mut rx) = mpsc::unbounded();
    let server = rt.clone();
    rt.spawn(Box::pin(async move {
        let (mut s, _) = server.accept(&listener).await.unwrap();
        let mut buf = vec![0u8; CHUNK];
        let mut n = 0u64;
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k as u64,
            }
        }
        let _ = tx.unbounded_send(n);
    }));
    let mut c = rt.connect(addr.to_string()).await.unwrap();
    let chunk = vec![7u8; CHUNK];
    let t = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        c.write_all(&chunk).await.unwrap();
        sent += CHUNK as u64;
    }
    c.close().await.unwrap();
    assert_eq!(rx.next().await, Some(sent));
    t.elapsed()
}

async fn run(rt: TokioRuntime) {
    let sends = env("HEDGEROW_BENCH_SENDS", 5000);
    let mib = env("HEDGEROW_BENCH_MIB", 256);
    let total = mib * 1024 * 1024;

    let store = MemoryStore::new();
    let (done, mut finished) = mpsc::unbounded();
    let a = node(&rt, &store, "a", done.clone()).await;
    while !a.is_leader() {
        rt.sleep(Duration::from_millis(5)).await;
    }
    let b = node(&rt, &store, "b", done).await;
    while b.leader().map(|l| l.id) != Some(a.id().clone()) || b.members().len() < 2 {
        rt.sleep(Duration::from_millis(5)).await;
    }

    // One-shot sends.
    let payload = vec![7u8; PAYLOAD];
    for _ in 0..sends / 10 {
        b.send(payload.clone()).await.unwrap();
    }
    let t = Instant::now();
    for _ in 0..sends {
        let r = b.send(payload.clone()).await.unwrap();
        assert_eq!(r.payload.len(), PAYLOAD);
    }
    let send_rtt = t.elapsed() / sends as u32;
    let echo_rtt = raw_echo(&rt, sends).await;

    // Streams.
    let chunk = vec![7u8; CHUNK];
    let t = Instant::now();
    let mut s = b.send_stream().await.unwrap();
    let mut sent = 0u64;
    while sent < total {
        s.write_all(chunk.clone()).await.unwrap();
        sent += CHUNK as u64;
    }
    s.finish().await.unwrap();
    assert_eq!(finished.next().await, Some(sent));
    let stream_time = t.elapsed();
    let copy_time = raw_copy(&rt, total).await;

    let mbps = |d: Duration| sent as f64 / (1024.0 * 1024.0) / d.as_secs_f64();
    println!();
    println!("| loopback, {PAYLOAD} B payload, {sends} round trips, {mib} MiB streamed | hedgerow | raw TCP | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| one-shot round trip | {:.1} µs | {:.1} µs | {:.2}x |",
        send_rtt.as_secs_f64() * 1e6,
        echo_rtt.as_secs_f64() * 1e6,
        send_rtt.as_secs_f64() / echo_rtt.as_secs_f64()
    );
    println!(
        "| stream throughput | {:.0} MiB/s | {:.0} MiB/s | {:.2}x |",
        mbps(stream_time),
        mbps(copy_time),
        mbps(stream_time) / mbps(copy_time)
    );
    b.shutdown().await;
    a.shutdown().await;
}

fn main() {
    // `cargo bench` passes `--bench`; a plain run takes no arguments either.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let hr = TokioRuntime::from_context().unwrap();
        run(hr).await
    });
}
