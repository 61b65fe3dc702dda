//! Whole clusters over loopback TCP, once per runtime feature: election
//! and membership, send, broadcast, a large stream, failover, and the
//! handshake refusing another cluster. Every node shares one
//! `MemoryStore` and reads a system clock with a small assumed bound
//! (`lead_on_assumed_clock`), with `Config::local` timings.
//!
//! `HEDGEROW_STREAM_MIB` sets the stream test's size (default 16 MiB; CI
//! runs 100).
#![cfg(any(feature = "tokio", feature = "smol", feature = "async-std"))]
// clippy.toml's test allowance covers `#[test]` functions only; the shared
// async test bodies here are plain functions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hedgerow::runtime::Runtime;
use hedgerow::store::MemoryStore;
use hedgerow::{Builder, Config, Error, Hedgerow, NodeId};
use hedgerow_clock::SystemClock;
use hedgerow_core::wire::{decode_frame, encode_frame, Frame};
use hedgerow_core::Hello;

mod support;
use support::{blocking, wait_until};

const BOUND: Duration = Duration::from_millis(5);

fn local(c: &mut Config) {
    *c = Config::local(c.cluster.clone());
    c.lead_on_assumed_clock = true;
}

/// What the leader's stream handler saw.
#[derive(Default)]
struct Received {
    bytes: AtomicU64,
    finished: AtomicBool,
    corrupt: Mutex<Option<String>>,
    /// Legs of broadcast streams: (receiver, sender, bytes, intact and ended).
    legs: Mutex<Vec<(String, String, u64, bool)>>,
}

fn pattern(offset: u64) -> u8 {
    (offset.wrapping_mul(31) ^ (offset >> 16)) as u8
}

async fn start<R: Runtime>(
    rt: &R,
    cluster: &str,
    i: usize,
    store: &MemoryStore,
    received: Arc<Received>,
) -> Hedgerow {
    let name = format!("n{i}");
    let me = name.clone();
    let me2 = name.clone();
    Builder::<R>::new(cluster, name.clone(), "127.0.0.1:0")
        .runtime(rt.clone())
        .store(store.clone())
        .clock(SystemClock::new(BOUND))
        .config(local)
        .leader_handler(move |req| {
            let me = me.clone();
            async move {
                if req.guard.term() != req.term || !req.guard.is_current() {
                    return Err("handled without a live leader guard".into());
                }
                let mut out = format!("{me} term {}: ", req.term).into_bytes();
                out.extend_from_slice(&req.payload);
                Ok(out)
            }
        })
        .broadcast_handler(move |b| {
            let name = name.clone();
            async move {
                let mut out = name.into_bytes();
                out.extend_from_slice(&b.payload);
                Ok(out)
            }
        })
        .stream_handler(move |mut s| {
            let received = received.clone();
            let me = me2.clone();
            async move {
                if !s.to_leader() {
                    let from = s.from().to_string();
                    let (mut n, mut intact) = (0u64, true);
                    while let Some(chunk) = s.next().await {
                        match chunk {
                            Ok(c) => {
                                intact &= c
                                    .iter()
                                    .enumerate()
                                    .all(|(i, b)| *b == pattern(n + i as u64));
                                n += c.len() as u64;
                            }
                            Err(_) => {
                                intact = false;
                                break;
                            }
                        }
                    }
                    received.legs.lock().unwrap().push((me, from, n, intact));
                    return;
                }
                let mut offset = 0u64;
                while let Some(chunk) = s.next().await {
                    let chunk = match chunk {
                        Ok(c) => c,
                        Err(e) => {
                            *received.corrupt.lock().unwrap() = Some(e.to_string());
                            return;
                        }
                    };
                    for (i, b) in chunk.iter().enumerate() {
                        if *b != pattern(offset + i as u64) {
                            *received.corrupt.lock().unwrap() =
                                Some(format!("wrong byte at {}", offset + i as u64));
                            return;
                        }
                    }
                    offset += chunk.len() as u64;
                    received.bytes.store(offset, Ordering::SeqCst);
                }
                received.finished.store(true, Ordering::SeqCst);
            }
        })
        .start()
        .await
        .expect("node starts")
}

async fn start_cluster<R: Runtime>(
    rt: &R,
    cluster: &str,
    n: usize,
) -> (Vec<Hedgerow>, Arc<Received>) {
    let store = MemoryStore::new();
    let received = Arc::new(Received::default());
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(start(rt, cluster, i, &store, received.clone()).await);
    }
    (nodes, received)
}

/// Whether `fut` completes within `limit`.
async fn timeout_of<R: Runtime>(rt: &R, limit: Duration, fut: impl std::future::Future) -> bool {
    let fut = std::pin::pin!(fut);
    matches!(
        futures::future::select(fut, rt.sleep(limit)).await,
        futures::future::Either::Left(_)
    )
}

/// The one leader every node agrees on, with every node in every view.
fn converged(nodes: &[Hedgerow]) -> Option<NodeId> {
    let leaders: Vec<&Hedgerow> = nodes.iter().filter(|n| n.is_leader()).collect();
    if leaders.len() != 1 {
        return None;
    }
    let leader = leaders[0].id().clone();
    let mut all: Vec<NodeId> = nodes.iter().map(|n| n.id().clone()).collect();
    all.sort();
    for n in nodes {
        if n.leader().map(|l| l.id) != Some(leader.clone()) {
            return None;
        }
        let mut ids: Vec<NodeId> = n.members().into_iter().map(|m| m.id).collect();
        ids.sort();
        if ids != all {
            return None;
        }
    }
    Some(leader)
}

async fn elect_send_broadcast_stream<R: Runtime>(rt: R) {
    let (nodes, received) = start_cluster(&rt, "facade-main", 5).await;
    assert!(
        wait_until(&rt, Duration::from_secs(10), || converged(&nodes).is_some()).await,
        "5 nodes did not converge on one leader and one view"
    );
    let leader = converged(&nodes).unwrap();
    let term = nodes[0].term();
    assert!(term.0 >= 1);
    for n in &nodes {
        assert_eq!(n.term(), term, "every node knows the same term");
    }

    // send: from every non-leader, answered by the leader.
    for n in nodes.iter().filter(|n| n.id() != &leader) {
        let body = format!("from {}", n.id());
        let reply = n.send(body.clone().into_bytes()).await.expect("send");
        assert_eq!(reply.leader, leader);
        assert_eq!(reply.term, term);
        let want = format!("{leader} term {term}: {body}");
        assert_eq!(reply.payload, want);
    }

    // broadcast: one reply per member, this node included.
    let replies = nodes[1].broadcast(b"!".to_vec()).await.expect("broadcast");
    assert_eq!(replies.len(), 5, "{replies:?}");
    let mut from: Vec<String> = replies
        .into_iter()
        .map(|(id, r)| {
            let payload = r.expect("member answered");
            assert_eq!(payload, format!("{id}!"));
            id.to_string()
        })
        .collect();
    from.sort();
    assert_eq!(from, ["n0", "n1", "n2", "n3", "n4"]);

    // A large stream from a non-leader to the leader: intact, in order,
    // and the sender never runs further ahead of the reader than the
    // stream window plus the send buffer plus one write.
    let mib: u64 = std::env::var("HEDGEROW_STREAM_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let total = mib * 1024 * 1024;
    let chunk = 64 * 1024u64;
    let cfg = Config::local("x");
    let bound = u64::from(cfg.stream_window) + cfg.stream_send_buffer as u64 + chunk;
    let sender = nodes.iter().find(|n| n.id() != &leader).unwrap();
    let started = Instant::now();
    let mut s = sender.send_stream().await.expect("open stream");
    let mut written = 0u64;
    let mut peak = 0u64;
    while written < total {
        let n = chunk.min(total - written);
        let data: Vec<u8> = (written..written + n).map(pattern).collect();
        s.write_all(data).await.expect("stream write");
        written += n;
        let ahead = written - received.bytes.load(Ordering::SeqCst);
        peak = peak.max(ahead);
        assert!(
            ahead <= bound,
            "sender ran {ahead} bytes ahead of the reader (bound {bound})"
        );
    }
    s.finish().await.expect("stream finish");
    assert!(
        wait_until(&rt, Duration::from_secs(30), || received
            .finished
            .load(Ordering::SeqCst)
            || received.corrupt.lock().unwrap().is_some())
        .await
    );
    assert_eq!(*received.corrupt.lock().unwrap(), None);
    assert_eq!(received.bytes.load(Ordering::SeqCst), total);
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "stream: {mib} MiB in {secs:.2} s ({:.0} MiB/s), sender at most {peak} bytes ahead",
        mib as f64 / secs
    );

    // A broadcast stream reaches every member, the sender included.
    let leg_len = 256 * 1024u64;
    let mut b = nodes[2]
        .broadcast_stream()
        .await
        .expect("open broadcast stream");
    assert_eq!(b.members().count(), 5);
    let data: Vec<u8> = (0..leg_len).map(pattern).collect();
    b.write_all(data).await.expect("broadcast stream write");
    for (id, r) in b.finish().await {
        r.unwrap_or_else(|e| panic!("leg to {id}: {e}"));
    }
    assert!(
        wait_until(&rt, Duration::from_secs(10), || received
            .legs
            .lock()
            .unwrap()
            .len()
            == 5)
        .await
    );
    let mut legs = received.legs.lock().unwrap().clone();
    legs.sort();
    for (i, (to, from, n, intact)) in legs.into_iter().enumerate() {
        assert_eq!(to, format!("n{i}"));
        assert_eq!(from, "n2");
        assert_eq!(n, leg_len);
        assert!(intact, "leg to {to} arrived out of order or incomplete");
    }
    for n in nodes {
        n.shutdown().await;
    }
}

async fn failover<R: Runtime>(rt: R) {
    let (mut nodes, _) = start_cluster(&rt, "facade-failover", 5).await;
    assert!(wait_until(&rt, Duration::from_secs(10), || converged(&nodes).is_some()).await);
    let old = converged(&nodes).unwrap();
    let old_term = nodes[0].term();
    let i = nodes.iter().position(|n| n.id() == &old).unwrap();
    let gone = nodes.remove(i);
    gone.shutdown().await;
    let t0 = Instant::now();
    let cfg = Config::local("x");
    let limit = cfg.lease_duration + 2 * BOUND + cfg.renew_interval();
    assert!(
        wait_until(&rt, limit, || nodes.iter().any(|n| n.is_leader())).await,
        "no takeover within lease + 2 bound + renew = {limit:?}"
    );
    eprintln!(
        "failover: new leader after {:?} (limit {limit:?})",
        t0.elapsed()
    );
    let new = nodes.iter().find(|n| n.is_leader()).unwrap().id().clone();
    assert_ne!(new, old);
    assert!(
        wait_until(&rt, Duration::from_secs(5), || converged(&nodes).is_some()).await,
        "the survivors did not converge on the new leader with the old one dropped"
    );
    assert!(nodes[0].term() > old_term, "the new term is higher");
    for n in &nodes {
        assert!(n.members().iter().all(|m| m.id != old));
    }
    for n in nodes {
        n.shutdown().await;
    }
}

/// Connects a raw client, sends `hello` then `after`, and reads until the
/// node closes the connection (on the blocking pool, so the node keeps
/// running meanwhile).
async fn raw_exchange<R: Runtime>(
    rt: &R,
    addr: std::net::SocketAddr,
    hello: Hello,
    after: Vec<u8>,
) -> Vec<u8> {
    let run = move || -> std::io::Result<Vec<u8>> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = Vec::new();
        encode_frame(&Frame::Hello(hello), 1 << 20, &mut buf).unwrap();
        buf.extend_from_slice(&after);
        s.write_all(&buf)?;
        let mut got = Vec::new();
        s.read_to_end(&mut got)?;
        Ok(got)
    };
    blocking(rt, run)
        .await
        .expect("the node answers, then closes the connection")
}

async fn refuses_other_cluster<R: Runtime>(rt: R) {
    let (nodes, _) = start_cluster(&rt, "facade-refuse", 1).await;
    let addr = nodes[0].local_addr();
    assert!(wait_until(&rt, Duration::from_secs(5), || nodes[0].is_leader()).await);

    // After a good hello, a frame announcing more than the limit closes
    // the connection before anything is allocated; the node runs on.
    let hello = Hello::new("facade-refuse", NodeId::new("raw").unwrap(), 9, "x:1");
    let got = raw_exchange(&rt, addr, hello, u32::MAX.to_be_bytes().to_vec()).await;
    let (frame, used) = decode_frame(&got, 1 << 20).unwrap().expect("its hello");
    assert!(matches!(frame, Frame::Hello(h) if h.node_id.as_str() == "n0"));
    assert_eq!(used, got.len(), "closed after an oversize frame");
    assert!(nodes[0].is_leader(), "the node keeps running");

    // Another cluster is refused with a reason, then closed.
    let hello = Hello::new("someone-else", NodeId::new("stranger").unwrap(), 9, "x:1");
    let got = raw_exchange(&rt, addr, hello, Vec::new()).await;
    let (frame, used) = decode_frame(&got, 1 << 20).unwrap().expect("one frame");
    match frame {
        Frame::Refuse(why) => assert!(why.contains("cluster"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        used,
        got.len(),
        "nothing follows the refusal: the connection closed"
    );
    for n in nodes {
        n.shutdown().await;
    }
}

async fn leave_hands_over<R: Runtime>(rt: R) {
    let (mut nodes, _) = start_cluster(&rt, "facade-leave", 3).await;
    assert!(wait_until(&rt, Duration::from_secs(10), || converged(&nodes).is_some()).await);
    let old = converged(&nodes).unwrap();
    let i = nodes.iter().position(|n| n.id() == &old).unwrap();
    let gone = nodes.remove(i);
    let guard = gone.leader_guard().await.expect("the leader gets a guard");
    assert!(guard.is_current());
    assert!(guard.valid_until_ns().is_some());
    assert!(
        nodes[0].leader_guard().await.is_none(),
        "a member gets none"
    );
    gone.leave().await.expect("the release is stored");
    assert!(!guard.is_current());
    assert!(
        timeout_of(&rt, Duration::from_secs(1), guard.lost()).await,
        "the guard fires when leadership ends"
    );
    let t0 = Instant::now();
    // A released lease is free once the taker's earliest passes the
    // releaser's latest: a few bounds, far less than a lease.
    let cfg = Config::local("x");
    assert!(
        wait_until(&rt, cfg.lease_duration / 2, || nodes
            .iter()
            .any(|n| n.is_leader()))
        .await,
        "no takeover soon after a graceful leave"
    );
    eprintln!("leave: new leader after {:?}", t0.elapsed());
    assert!(wait_until(&rt, Duration::from_secs(5), || converged(&nodes).is_some()).await);
    for n in nodes {
        n.shutdown().await;
    }
}

/// A member that dies (here: `shutdown`, which stops like a crash) while
/// the sender's view still names it: its part of a broadcast ends with
/// `MemberLeft` once the leader declares it failed and the sender's view
/// drops it, instead of waiting out the broadcast timeout.
async fn broadcast_part_of_a_dead_member_ends_when_it_leaves_the_view<R: Runtime>(rt: R) {
    let (mut nodes, _) = start_cluster(&rt, "facade-bcast-dead", 3).await;
    assert!(wait_until(&rt, Duration::from_secs(10), || converged(&nodes).is_some()).await);
    let leader = converged(&nodes).unwrap();
    let i = nodes.iter().position(|n| n.id() != &leader).unwrap();
    let dead = nodes.remove(i);
    let dead_id = dead.id().clone();
    dead.shutdown().await;
    let from = nodes.iter().find(|n| n.id() != &leader).unwrap();
    assert!(from.members().iter().any(|m| m.id == dead_id));
    let cfg = Config::local("x");
    let t0 = Instant::now();
    let replies = from.broadcast(b"!".to_vec()).await.expect("broadcast");
    let took = t0.elapsed();
    eprintln!("broadcast with a dead member: all parts after {took:?}");
    assert_eq!(replies.len(), 3, "{replies:?}");
    for (who, r) in &replies {
        if *who == dead_id {
            assert!(matches!(r, Err(Error::MemberLeft)), "{r:?}");
        } else {
            assert!(r.is_ok(), "{who}: {r:?}");
        }
    }
    assert!(
        took < cfg.broadcast_timeout,
        "waited {took:?}, as long as the broadcast timeout"
    );
    for n in nodes {
        n.shutdown().await;
    }
}

/// A leader that leaves with a stream half read: its reader must see the
/// stream cut (`StreamReset`), never a clean end that would pass for all of
/// it (found by the turmoil stream checker).
async fn receiver_stopping_resets_its_reader<R: Runtime>(rt: R) {
    let (mut nodes, received) = start_cluster(&rt, "facade-cut", 2).await;
    assert!(wait_until(&rt, Duration::from_secs(10), || converged(&nodes).is_some()).await);
    let leader = converged(&nodes).unwrap();
    let i = nodes.iter().position(|n| n.id() == &leader).unwrap();
    let gone = nodes.remove(i);
    let mut s = nodes[0]
        .send_stream()
        .await
        .expect("a stream to the leader");
    let data: Vec<u8> = (0..256 * 1024).map(pattern).collect();
    s.write_all(data).await.expect("written");
    assert!(
        wait_until(&rt, Duration::from_secs(5), || received
            .bytes
            .load(Ordering::SeqCst)
            > 0)
        .await,
        "the leader's handler read some of it"
    );
    gone.leave().await.expect("left");
    assert!(
        wait_until(&rt, Duration::from_secs(5), || received
            .corrupt
            .lock()
            .unwrap()
            .is_some())
        .await,
        "the reader saw no error"
    );
    let why = received.corrupt.lock().unwrap().clone().unwrap();
    assert!(why.contains("stopped"), "{why}");
    assert!(
        !received.finished.load(Ordering::SeqCst),
        "a cut stream ended as if whole"
    );
    drop(s);
    for n in nodes {
        n.shutdown().await;
    }
}

/// A system clock that can be made to fail.
struct FlakyClock {
    inner: SystemClock,
    broken: Arc<AtomicBool>,
}

impl hedgerow_clock::Clock for FlakyClock {
    fn now(&self) -> Result<hedgerow_core::Now, hedgerow_clock::ClockError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(hedgerow_clock::ClockError::SegmentMissing {
                path: "/nonexistent/clockbound".into(),
            });
        }
        self.inner.now()
    }
}

async fn clock_and_store_failures<R: Runtime>(rt: R) {
    let store = MemoryStore::new();
    store.set_unavailable(true);
    let broken = Arc::new(AtomicBool::new(true));
    let node = Builder::<R>::new("facade-faults", "solo", "127.0.0.1:0")
        .runtime(rt.clone())
        .store(store.clone())
        .clock(FlakyClock {
            inner: SystemClock::new(BOUND),
            broken: broken.clone(),
        })
        .config(local)
        .start()
        .await
        .unwrap();
    rt.sleep(Duration::from_millis(300)).await;
    assert!(!node.is_leader());
    assert!(matches!(
        node.try_is_leader(),
        Err(hedgerow::Error::Clock(_))
    ));
    // A readable clock but no store: still no leader, and no panic.
    broken.store(false, Ordering::SeqCst);
    rt.sleep(Duration::from_millis(300)).await;
    assert!(!node.is_leader());
    // The store comes back: the node takes the lease.
    store.set_unavailable(false);
    assert!(wait_until(&rt, Duration::from_secs(5), || node.is_leader()).await);
    // The clock fails again: the very next answer is "not leader".
    broken.store(true, Ordering::SeqCst);
    assert!(!node.is_leader());
    node.shutdown().await;
}

/// The shared `MemoryStore` behind the async store trait, with a switch
/// that makes every call hang (the driver's timeout must give up on it).
#[derive(Clone)]
struct AsyncMemory {
    inner: MemoryStore,
    hang: Arc<AtomicBool>,
}

impl AsyncMemory {
    async fn gate(&self) {
        if self.hang.load(Ordering::SeqCst) {
            futures::future::pending::<()>().await;
        }
    }
}

impl hedgerow::store::AsyncLeaseStore for AsyncMemory {
    fn read<'a>(
        &'a self,
        group: &'a str,
    ) -> hedgerow::runtime::BoxFuture<
        'a,
        Result<Option<hedgerow::store::LeaseRow>, hedgerow::store::StoreError>,
    > {
        use hedgerow::store::LeaseStore;
        Box::pin(async move {
            self.gate().await;
            self.inner.read(group)
        })
    }

    fn compare_and_set<'a>(
        &'a self,
        group: &'a str,
        expected_version: Option<u64>,
        write: &'a hedgerow::store::LeaseWrite,
    ) -> hedgerow::runtime::BoxFuture<
        'a,
        Result<hedgerow::store::CasOutcome, hedgerow::store::StoreError>,
    > {
        use hedgerow::store::LeaseStore;
        Box::pin(async move {
            self.gate().await;
            self.inner.compare_and_set(group, expected_version, write)
        })
    }
}

/// An async store: nodes elect through it; when its calls hang, the
/// driver's timeout turns them into errors, the leader steps down by its
/// expiry and nobody takes over; when they answer again, a leader returns.
async fn async_store<R: Runtime>(rt: R) {
    let store = AsyncMemory {
        inner: MemoryStore::new(),
        hang: Arc::default(),
    };
    let mut nodes = Vec::new();
    for i in 0..3 {
        let node = Builder::<R>::new("facade-async-store", format!("n{i}"), "127.0.0.1:0")
            .runtime(rt.clone())
            .async_store(store.clone())
            .clock(SystemClock::new(BOUND))
            .config(local)
            .start()
            .await
            .expect("node starts");
        nodes.push(node);
    }
    assert!(wait_until(&rt, Duration::from_secs(10), || converged(&nodes).is_some()).await);
    store.hang.store(true, Ordering::SeqCst);
    let cfg = Config::local("x");
    let limit = cfg.lease_duration + 2 * BOUND + cfg.renew_interval() * 2;
    assert!(
        wait_until(&rt, limit, || nodes.iter().all(|n| !n.is_leader())).await,
        "a leader kept leading without a store answer"
    );
    store.hang.store(false, Ordering::SeqCst);
    assert!(
        wait_until(&rt, limit * 2, || nodes.iter().any(|n| n.is_leader())).await,
        "no leader after the store answered again"
    );
    for n in nodes {
        n.shutdown().await;
    }
}

#[cfg(feature = "tokio")]
fn on_tokio<F, Fut>(test: F)
where
    F: FnOnce(hedgerow::runtime::TokioRuntime) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let rt = support::tokio_runtime();
    rt.block_on(async {
        let hr = hedgerow::runtime::TokioRuntime::from_context().unwrap();
        test(hr).await
    });
}

/// The tests measure failover against the lease bound: running several
/// 5-node clusters at once on a small machine (smol's global executor has
/// one thread by default) starves them and measures the machine instead.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

macro_rules! per_runtime {
    ($($test:ident),* $(,)?) => {
        #[cfg(feature = "tokio")]
        mod tokio_runtime {
            $(#[test] fn $test() { let _s = super::serial(); super::on_tokio(super::$test) })*
        }
        #[cfg(feature = "smol")]
        mod smol_runtime {
            $(#[test] fn $test() {
                let _s = super::serial();
                smol::block_on(super::$test(hedgerow::runtime::SmolRuntime))
            })*
        }
        #[cfg(feature = "async-std")]
        mod async_std_runtime {
            $(#[test] fn $test() {
                let _s = super::serial();
                async_std::task::block_on(super::$test(hedgerow::runtime::AsyncStdRuntime))
            })*
        }
    };
}

per_runtime!(
    elect_send_broadcast_stream,
    failover,
    leave_hands_over,
    broadcast_part_of_a_dead_member_ends_when_it_leaves_the_view,
    receiver_stopping_resets_its_reader,
    clock_and_store_failures,
    refuses_other_cluster,
    async_store,
);
