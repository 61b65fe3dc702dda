//! The coordination services' cost against the store underneath, in one
//! run, on SQLite (a file in a temp dir) and on a throw-away PostgreSQL
//! (skipped with a note when its binaries are missing):
//!
//! * a bare SQL insert on the same store (autocommit, one row) vs the
//!   store's fenced put (one transaction: the lease row checked, then the
//!   append) vs a `kv().put` round trip from a member of a 3-node group
//!   over loopback (member → leader → store → member);
//! * put throughput with 32 concurrent putters on one member;
//! * a lock acquire + release round trip vs a `send` round trip, on the
//!   memory store (so the network and the core are what is measured).
//!
//! Each pair alternates over rounds; the table gives medians and the ratio
//! of the medians. `cargo bench -p hedgerow --features postgres --bench coord`
//! (release).
//! Knobs: `HEDGEROW_BENCH_ROUNDS` (5), `HEDGEROW_BENCH_OPS` (300 per round).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use hedgerow::coord::Kv;
use hedgerow::runtime::{Runtime, TokioRuntime};
use hedgerow::store::conformance::PostgresServer;
use hedgerow::store::coord::{CoordOp, Fence, Origin};
use hedgerow::store::{LeaseStore, MemoryStore, PostgresStore, SqliteStore};
use hedgerow::{Config, Hedgerow, NodeId, Payload};
use hedgerow_clock::SystemClock;
use hedgerow_core::OpId;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn group<S: LeaseStore + Clone + 'static>(rt: &TokioRuntime, store: &S) -> Vec<Hedgerow> {
    let mut nodes = Vec::new();
    for i in 0..3 {
        let node = hedgerow::Builder::<TokioRuntime>::new("bench", format!("n{i}"), "127.0.0.1:0")
            .runtime(rt.clone())
            .store(store.clone())
            .clock(SystemClock::new(Duration::from_millis(1)))
            .config(|c| {
                *c = Config::local(c.cluster.clone());
                c.lead_on_assumed_clock = true;
                c.heartbeat_interval = Duration::from_millis(500);
                c.failure_timeout = Duration::from_secs(5);
                c.lease_duration = Duration::from_secs(10);
                c.permit_lease = Duration::from_secs(5);
                c.request_timeout = Duration::from_secs(10);
                c.dedupe_window = Duration::from_secs(10);
            })
            .leader_handler(|req| async move { Ok(req.payload) })
            .start()
            .await
            .unwrap();
        nodes.push(node);
    }
    let end = Instant::now() + Duration::from_secs(20);
    while !(nodes.iter().filter(|n| n.is_leader()).count() == 1
        && nodes.iter().all(|n| n.members().len() == 3))
    {
        assert!(Instant::now() < end, "the bench group did not form");
        rt.sleep(Duration::from_millis(10)).await;
    }
    nodes
}

fn member(nodes: &[Hedgerow]) -> Hedgerow {
    nodes.iter().find(|n| !n.is_leader()).unwrap().clone()
}

/// µs per op of `ops` sequential calls of `f` on the blocking pool.
async fn blocking_us(rt: &TokioRuntime, ops: u64, f: Arc<dyn Fn(u64) + Send + Sync>) -> f64 {
    let (tx, rx) = futures::channel::oneshot::channel();
    rt.spawn_blocking(Box::new(move || {
        let t = Instant::now();
        for i in 0..ops {
            f(i);
        }
        let _ = tx.send(t.elapsed().as_secs_f64() * 1e6 / ops as f64);
    }));
    rx.await.unwrap()
}

async fn puts_us(kv: &Kv, ops: u64, round: u64) -> f64 {
    let t = Instant::now();
    for i in 0..ops {
        kv.put(&format!("rtt/{round}/{i}"), vec![7u8; 64])
            .await
            .unwrap();
    }
    t.elapsed().as_secs_f64() * 1e6 / ops as f64
}

async fn puts_per_s(kv: &Kv, ops: u64, round: u64) -> f64 {
    let t = Instant::now();
    let tasks: Vec<_> = (0..32)
        .map(|w| {
            let kv = kv.clone();
            tokio::spawn(async move {
                for i in 0..ops / 32 {
                    kv.put(&format!("tp/{round}/{w}/{i}"), vec![7u8; 64])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (ops / 32 * 32) as f64 / t.elapsed().as_secs_f64()
}

/// Rows: (what, median µs or ops/s, note).
async fn store_rows<S: LeaseStore + Clone + 'static>(
    rt: &TokioRuntime,
    name: &str,
    store: S,
    bare: Arc<dyn Fn(u64) + Send + Sync>,
) {
    let rounds = env("HEDGEROW_BENCH_ROUNDS", 5);
    let ops = env("HEDGEROW_BENCH_OPS", 300);
    let nodes = group(rt, &store).await;
    // Store calls block (PostgreSQL's drive a runtime of their own): off
    // this async context, as the driver makes them.
    let lease = {
        let store = store.clone();
        let (tx, rx) = futures::channel::oneshot::channel();
        rt.spawn_blocking(Box::new(move || {
            let _ = tx.send(store.read("bench"));
        }));
        rx.await.unwrap().unwrap().unwrap()
    };
    let holder = lease.holder.clone().unwrap();
    let fence = Fence {
        token: lease.token,
        nonce: holder.nonce,
    };
    let direct = {
        let store = store.clone();
        let next = std::sync::atomic::AtomicU64::new(0);
        Arc::new(move |_: u64| {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let op = CoordOp::Put {
                op: OpId(i),
                fence,
                origin: Origin {
                    node: NodeId::new("bench").unwrap(),
                    incarnation: 1,
                    request: i + (std::process::id() as u64) * 1_000_000_000 + rand_base(),
                },
                key: format!("direct/{i}"),
                value: Payload::from(vec![7u8; 64]),
            };
            store.coord().unwrap().execute("bench", &op).unwrap();
        }) as Arc<dyn Fn(u64) + Send + Sync>
    };
    let kv = member(&nodes).kv();
    let (mut b, mut d, mut p, mut tp) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        b.push(blocking_us(rt, ops, bare.clone()).await);
        d.push(blocking_us(rt, ops, direct.clone()).await);
        p.push(puts_us(&kv, ops, round).await);
        tp.push(puts_per_s(&kv, ops * 4, round).await);
    }
    let (b, d, p, tp) = (median(b), median(d), median(p), median(tp));
    println!("| {name} | bare SQL insert | {b:.0} µs | 1.00 |");
    println!(
        "| {name} | fenced put, store call | {d:.0} µs | {:.2} |",
        d / b
    );
    println!(
        "| {name} | `kv().put` from a member | {p:.0} µs | {:.2} |",
        p / b
    );
    println!(
        "| {name} | `kv().put`, 32 concurrent | {tp:.0} puts/s | 1/{:.0} µs |",
        1e6 / tp
    );
    for n in &nodes {
        n.shutdown().await;
    }
}

/// Origins must be unique across rounds and runs: a duplicate is answered
/// without a write, which would flatter the fenced put.
fn rand_base() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static BASE: AtomicU64 = AtomicU64::new(0);
    if BASE.load(Ordering::Relaxed) == 0 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        BASE.store(t % 1_000_000_000_000, Ordering::Relaxed);
    }
    BASE.load(Ordering::Relaxed)
}

async fn lock_rows(rt: &TokioRuntime) {
    let rounds = env("HEDGEROW_BENCH_ROUNDS", 5);
    let ops = env("HEDGEROW_BENCH_OPS", 300);
    let nodes = group(rt, &MemoryStore::new()).await;
    let m = member(&nodes);
    let (mut s, mut l) = (vec![], vec![]);
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..ops {
            m.send(vec![7u8; 64]).await.unwrap();
        }
        s.push(t.elapsed().as_secs_f64() * 1e6 / ops as f64);
        let lock = m.lock("bench");
        let t = Instant::now();
        for _ in 0..ops {
            let p = lock.acquire().await.unwrap();
            p.release();
        }
        l.push(t.elapsed().as_secs_f64() * 1e6 / ops as f64);
    }
    let (s, l) = (median(s), median(l));
    println!("| memory | `send` round trip from a member | {s:.0} µs | 1.00 |");
    println!(
        "| memory | lock acquire + release from a member | {l:.0} µs | {:.2} |",
        l / s
    );
    for n in &nodes {
        n.shutdown().await;
    }
}

async fn run(rt: TokioRuntime) {
    println!("| store | what | median | ratio |");
    println!("|---|---|---|---|");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let sqlite = Arc::new(SqliteStore::open(&path).unwrap());
    let bare_conn = {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        c.pragma_update(None, "synchronous", "FULL").unwrap();
        c.execute("CREATE TABLE IF NOT EXISTS bare (k TEXT, v BLOB)", [])
            .unwrap();
        std::sync::Mutex::new(c)
    };
    let bare = Arc::new(move |i: u64| {
        bare_conn
            .lock()
            .unwrap()
            .execute(
                "INSERT INTO bare (k, v) VALUES (?1, ?2)",
                rusqlite::params![format!("k{i}"), vec![7u8; 64]],
            )
            .unwrap();
    }) as Arc<dyn Fn(u64) + Send + Sync>;
    store_rows(&rt, "SQLite", sqlite, bare).await;

    match PostgresServer::start_for_test("coord bench") {
        Some(server) => {
            let url = server.connection_string();
            let pg = {
                let url = url.clone();
                let (tx, rx) = futures::channel::oneshot::channel();
                rt.spawn_blocking(Box::new(move || {
                    let _ = tx.send(PostgresStore::builder(url).build());
                }));
                Arc::new(rx.await.unwrap().unwrap())
            };
            // The bare client lives on a thread of its own with its own
            // runtime (a runtime cannot be driven from inside another); a
            // channel hop of a few µs per insert is the price.
            let (tx, rx) = std::sync::mpsc::channel::<(u64, std::sync::mpsc::Sender<()>)>();
            // The bare client speaks TLS to the TLS-only server, as the
            // store does (verify-full against the server's own CA).
            let worker_url = format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=require",
                server.port()
            );
            let tls = bare_tls(&server.ca_path());
            std::thread::spawn(move || {
                let prt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                prt.block_on(async move {
                    let (client, conn) = tokio_postgres::connect(&worker_url, tls).await.unwrap();
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    client
                        .batch_execute("CREATE TABLE IF NOT EXISTS bare (k TEXT, v BYTEA)")
                        .await
                        .unwrap();
                    while let Ok((i, done)) = rx.recv() {
                        client
                            .execute(
                                "INSERT INTO bare (k, v) VALUES ($1, $2)",
                                &[&format!("k{i}"), &vec![7u8; 64]],
                            )
                            .await
                            .unwrap();
                        let _ = done.send(());
                    }
                });
            });
            let tx = std::sync::Mutex::new(tx);
            let bare = Arc::new(move |i: u64| {
                let (done, wait) = std::sync::mpsc::channel();
                tx.lock().unwrap().send((i, done)).unwrap();
                wait.recv().unwrap();
            }) as Arc<dyn Fn(u64) + Send + Sync>;
            store_rows(&rt, "PostgreSQL", pg, bare).await;
            let _ = server.stop();
        }
        None => println!("| PostgreSQL | skipped: no server binaries | | |"),
    }
    lock_rows(&rt).await;
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let hr = TokioRuntime::from_context().unwrap();
        run(hr).await;
    });
}

/// A tokio-postgres TLS connector that trusts the CA in `ca` and checks
/// the server's name, on ring as the store is.
fn bare_tls(ca: &std::path::Path) -> tokio_postgres_rustls::MakeRustlsConnect {
    use futures_rustls::rustls;
    use rustls_pki_types::pem::PemObject;
    let pem = std::fs::read(ca).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    #[allow(deprecated)] // ring's provider, as in the library
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}
