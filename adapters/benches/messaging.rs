//! Messaging cost against raw TCP over loopback, in one run:
//!
//! * a one-shot `send` round trip to the leader vs a raw TCP echo round
//!   trip of the same payload;
//! * pipelined `send`s (many outstanding) per second vs a minimal
//!   length-prefixed request/reply server on the same runtime (one task per
//!   connection, an async handler call per request, replies written when no
//!   further request is buffered) and its client, with the same number of
//!   requests in flight;
//! * stream throughput to the leader vs a raw TCP bulk copy;
//! * a `broadcast` to 50 members (one process, loopback, a MemoryStore)
//!   until all 50 replies are in, vs one task writing to 50 raw TCP echo
//!   connections and reading every echo back;
//! * with mutual TLS (`tls`): a `send` round trip and stream throughput of
//!   a TLS pair against the plain pair and against a raw rustls echo and
//!   bulk copy over loopback (same provider, TLS 1.3, mutual
//!   authentication): the limit with encryption.
//!
//! Each hedgerow measurement alternates with its raw counterpart over
//! several rounds, so both see the same machine load; the table gives the
//! median of each and the ratio of the medians, and the range of the
//! per-round ratios.
//!
//! `cargo bench -p hedgerow --bench messaging` (release). Knobs:
//! `HEDGEROW_BENCH_ROUNDS` (5), `HEDGEROW_BENCH_SENDS` (2000 round trips
//! per round), `HEDGEROW_BENCH_PIPELINED` (20000 sends per round),
//! `HEDGEROW_BENCH_WINDOW` (128 outstanding), `HEDGEROW_BENCH_MIB` (128 per
//! round), `HEDGEROW_BENCH_BROADCASTS` (100 per round),
//! `HEDGEROW_BENCH_MEMBERS` (50), and `HEDGEROW_BENCH_ONLY` (a comma list
//! of `rtt`, `pipelined`, `stream`, `broadcast`, `recorder`, `tls`) to run a subset, e.g.
//! under a profiler; `HEDGEROW_BENCH_CALLER=worker` runs the measuring
//! loops (hedgerow's caller and the raw client alike) as a task on the
//! runtime's workers instead of on the `block_on` thread.
//!
//! `recorder`: the cost of the library's metrics. Two more pairs of
//! nodes, one built while the process's recorder (a Prometheus one behind
//! a switch) was off, so their handles are no-ops as with no recorder at
//! all, and one built with it on; their `send` round trips alternate over
//! the rounds. The row's "hedgerow" column is with the recorder, "raw"
//! without.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::io::{AsyncRead, AsyncWrite};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::StreamExt;
use futures_rustls::rustls;
use hedgerow::runtime::{Runtime, TokioRuntime};
use hedgerow::store::MemoryStore;
use hedgerow::tls::ClusterCa;
use hedgerow::{Config, Hedgerow, NodeId, Tls};
use hedgerow_clock::SystemClock;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const CLUSTER: &str = "bench";
const PAYLOAD: usize = 64;
const CHUNK: usize = 64 * 1024;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn wanted(what: &str) -> bool {
    match std::env::var("HEDGEROW_BENCH_ONLY") {
        Ok(list) => list.split(',').any(|w| w.trim() == what),
        Err(_) => true,
    }
}

async fn node(
    rt: &TokioRuntime,
    store: &MemoryStore,
    name: &str,
    done: mpsc::UnboundedSender<u64>,
) -> Hedgerow {
    node_with(rt, store, name, done, None).await
}

async fn node_with(
    rt: &TokioRuntime,
    store: &MemoryStore,
    name: &str,
    done: mpsc::UnboundedSender<u64>,
    tls: Option<&ClusterCa>,
) -> Hedgerow {
    let builder = hedgerow::Builder::<TokioRuntime>::new(CLUSTER, name, "127.0.0.1:0");
    let builder = match tls {
        Some(ca) => {
            let cert = ca.node(name).unwrap();
            builder.tls(Tls::from_pem(ca.cert_pem(), cert.cert_pem, cert.key_pem))
        }
        None => builder,
    };
    builder
        .runtime(rt.clone())
        .store(store.clone())
        .clock(SystemClock::new(Duration::from_millis(1)))
        .config(|c| {
            *c = Config::local(c.cluster.clone());
            c.lead_on_assumed_clock = true;
            // A loaded 2-core machine can stall a node's driver for longer
            // than the local preset's failure timeout; a lost member in the
            // middle of a run measures the machine, not the messaging.
            c.heartbeat_interval = Duration::from_millis(500);
            c.failure_timeout = Duration::from_secs(5);
            c.lease_duration = Duration::from_secs(10);
            c.broadcast_timeout = Duration::from_secs(10);
            c.request_timeout = Duration::from_secs(5);
            c.dedupe_window = Duration::from_secs(10);
            // The default dedupe table (100 000 entries) holds: senders
            // say what they settled, so it holds the requests in flight.
        })
        .leader_handler(|req| async move { Ok(req.payload) })
        .broadcast_handler(|req| async move { Ok(req.payload) })
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

/// The process's recorder: Prometheus, registering only while switched
/// on. Handles registered while off are no-ops for good, exactly what a
/// node built with no recorder installed holds.
struct Switch {
    on: std::sync::atomic::AtomicBool,
    inner: metrics_exporter_prometheus::PrometheusRecorder,
}

static SWITCH: std::sync::OnceLock<&'static Switch> = std::sync::OnceLock::new();

impl Switch {
    fn install() -> &'static Switch {
        SWITCH.get_or_init(|| {
            let s: &'static Switch = Box::leak(Box::new(Switch {
                on: std::sync::atomic::AtomicBool::new(false),
                inner: metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder(),
            }));
            metrics::set_global_recorder(s).unwrap();
            s
        })
    }

    fn set(&self, on: bool) {
        self.on.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    fn is_on(&self) -> bool {
        self.on.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl metrics::Recorder for Switch {
    fn describe_counter(
        &self,
        k: metrics::KeyName,
        u: Option<metrics::Unit>,
        d: metrics::SharedString,
    ) {
        self.inner.describe_counter(k, u, d)
    }
    fn describe_gauge(
        &self,
        k: metrics::KeyName,
        u: Option<metrics::Unit>,
        d: metrics::SharedString,
    ) {
        self.inner.describe_gauge(k, u, d)
    }
    fn describe_histogram(
        &self,
        k: metrics::KeyName,
        u: Option<metrics::Unit>,
        d: metrics::SharedString,
    ) {
        self.inner.describe_histogram(k, u, d)
    }
    fn register_counter(&self, k: &metrics::Key, m: &metrics::Metadata<'_>) -> metrics::Counter {
        if self.is_on() {
            self.inner.register_counter(k, m)
        } else {
            metrics::Counter::noop()
        }
    }
    fn register_gauge(&self, k: &metrics::Key, m: &metrics::Metadata<'_>) -> metrics::Gauge {
        if self.is_on() {
            self.inner.register_gauge(k, m)
        } else {
            metrics::Gauge::noop()
        }
    }
    fn register_histogram(
        &self,
        k: &metrics::Key,
        m: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        if self.is_on() {
            self.inner.register_histogram(k, m)
        } else {
            metrics::Histogram::noop()
        }
    }
}

/// A leader and a member that knows it, on a store of their own.
async fn pair(
    rt: &TokioRuntime,
    done: &mpsc::UnboundedSender<u64>,
    tls: Option<&ClusterCa>,
) -> (Hedgerow, Hedgerow) {
    let store = MemoryStore::new();
    let a = node_with(rt, &store, "a", done.clone(), tls).await;
    while !a.is_leader() {
        rt.sleep(Duration::from_millis(5)).await;
    }
    let b = node_with(rt, &store, "b", done.clone(), tls).await;
    while b.leader().map(|l| l.id) != Some(a.id().clone()) || b.members().len() < 2 {
        rt.sleep(Duration::from_millis(5)).await;
    }
    (a, b)
}

/// A raw echo server: writes back whatever it reads, as it reads it.
async fn echo_server(rt: &TokioRuntime) -> String {
    let listener = rt.bind("127.0.0.1:0".into()).await.unwrap();
    let addr = TokioRuntime::local_addr(&listener).unwrap().to_string();
    let server = rt.clone();
    rt.spawn(Box::pin(async move {
        while let Ok((s, _)) = server.accept(&listener).await {
            server.spawn(Box::pin(echo(s)));
        }
    }));
    addr
}

/// Writes back whatever it reads, as it reads it, until the peer closes.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(k) => {
                if s.write_all(&buf[..k]).await.is_err() {
                    break;
                }
            }
        }
    }
}

fn raw_msg() -> Vec<u8> {
    let mut msg = (PAYLOAD as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&[7u8; PAYLOAD]);
    msg
}

async fn raw_rtt(rt: &TokioRuntime, addr: &str, rounds: u64) -> Duration {
    let mut c = rt.connect(addr.to_string()).await.unwrap();
    rtt_on(&mut c, rounds).await
}

/// Echo round trips of a length-prefixed payload over `c`.
async fn rtt_on<S: AsyncRead + AsyncWrite + Unpin>(c: &mut S, rounds: u64) -> Duration {
    let msg = raw_msg();
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

async fn hedgerow_rtt(b: &Hedgerow, rounds: u64) -> Duration {
    let payload = vec![7u8; PAYLOAD];
    for _ in 0..rounds / 10 {
        b.send(payload.clone()).await.unwrap();
    }
    let t = Instant::now();
    for _ in 0..rounds {
        let r = b.send(payload.clone()).await.unwrap();
        assert_eq!(r.payload.len(), PAYLOAD);
    }
    t.elapsed() / rounds as u32
}

/// The request handler of [`request_server`]: what hedgerow's bench
/// handler does (the payload back), behind an async call the compiler
/// cannot see through.
#[inline(never)]
async fn echo_handler(payload: Vec<u8>) -> Vec<u8> {
    std::hint::black_box(payload)
}

/// A minimal request/reply server, the fair counterpart of a leader: one
/// task per connection reads length-prefixed requests, calls
/// [`echo_handler`] for each and queues its length-prefixed reply; the
/// replies queued go out in one write once no further request is already
/// buffered (as any pipelining server does).
async fn request_server(rt: &TokioRuntime) -> String {
    let listener = rt.bind("127.0.0.1:0".into()).await.unwrap();
    let addr = TokioRuntime::local_addr(&listener).unwrap().to_string();
    let server = rt.clone();
    rt.spawn(Box::pin(async move {
        while let Ok((s, _)) = server.accept(&listener).await {
            server.spawn(Box::pin(serve_requests(s)));
        }
    }));
    addr
}

async fn serve_requests<S: AsyncRead + AsyncWrite + Unpin>(s: S) {
    // A `BufReader` writes straight through to the stream.
    let mut r = futures::io::BufReader::with_capacity(64 * 1024, s);
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        let mut len = [0u8; 4];
        if r.read_exact(&mut len).await.is_err() {
            break;
        }
        let mut req = vec![0u8; u32::from_be_bytes(len) as usize];
        if r.read_exact(&mut req).await.is_err() {
            break;
        }
        let reply = echo_handler(req).await;
        out.extend_from_slice(&(reply.len() as u32).to_be_bytes());
        out.extend_from_slice(&reply);
        if r.buffer().is_empty() {
            if r.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
        }
    }
}

/// `total` requests to [`request_server`] over one connection with up to
/// `window` in flight: one task writes every request the window allows in
/// one write, then reads whatever replies have arrived (each checked
/// whole).
async fn raw_pipelined(rt: &TokioRuntime, addr: &str, total: u64, window: u64) -> Duration {
    let c = rt.connect(addr.to_string()).await.unwrap();
    let mut c = futures::io::BufReader::with_capacity(64 * 1024, c);
    let msg = raw_msg();
    let mut out = Vec::with_capacity(msg.len() * window as usize);
    let mut back = vec![0u8; PAYLOAD];
    let t = Instant::now();
    let (mut sent, mut replied) = (0u64, 0u64);
    while replied < total {
        let more = (window - (sent - replied)).min(total - sent);
        if more > 0 {
            out.clear();
            for _ in 0..more {
                out.extend_from_slice(&msg);
            }
            c.write_all(&out).await.unwrap();
            sent += more;
        }
        // Every reply already here, at least one.
        loop {
            let mut len = [0u8; 4];
            c.read_exact(&mut len).await.unwrap();
            assert_eq!(u32::from_be_bytes(len) as usize, PAYLOAD);
            c.read_exact(&mut back).await.unwrap();
            replied += 1;
            if c.buffer().is_empty() {
                break;
            }
        }
    }
    t.elapsed()
}

async fn hedgerow_pipelined(b: &Hedgerow, total: u64, window: u64) -> Duration {
    let payload = vec![7u8; PAYLOAD];
    let t = Instant::now();
    let replies = futures::stream::iter(0..total)
        .map(|_| b.send(payload.clone()))
        .buffer_unordered(window as usize)
        .fold(0u64, |n, r| async move {
            assert_eq!(r.unwrap().payload.len(), PAYLOAD);
            n + 1
        })
        .await;
    assert_eq!(replies, total);
    t.elapsed()
}

/// A raw TCP bulk copy: 64 KiB writes, 64 KiB reads, the receiver counts.
/// With `fresh`, each write is from a new `Vec`, as in
/// [`hedgerow_stream`].
async fn raw_copy(rt: &TokioRuntime, total: u64, fresh: bool) -> Duration {
    let listener = rt.bind("127.0.0.1:0".into()).await.unwrap();
    let addr = TokioRuntime::local_addr(&listener).unwrap();
    let (tx, mut rx) = mpsc::unbounded();
    let server = rt.clone();
    rt.spawn(Box::pin(async move {
        let (s, _) = server.accept(&listener).await.unwrap();
        let _ = tx.unbounded_send(count(s).await);
    }));
    let mut c = rt.connect(addr.to_string()).await.unwrap();
    let t = Instant::now();
    let sent = copy_on(&mut c, total, fresh).await;
    assert_eq!(rx.next().await, Some(sent));
    t.elapsed()
}

/// Reads until the peer closes; the bytes read.
async fn count<S: AsyncRead + Unpin>(mut s: S) -> u64 {
    let mut buf = vec![0u8; CHUNK];
    let mut n = 0u64;
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k as u64,
        }
    }
    n
}

/// Writes `total` bytes in 64 KiB writes, then closes; the bytes written.
async fn copy_on<S: AsyncWrite + Unpin>(c: &mut S, total: u64, fresh: bool) -> u64 {
    let chunk = vec![7u8; CHUNK];
    let mut sent = 0u64;
    while sent < total {
        if fresh {
            let chunk = std::hint::black_box(chunk.clone());
            c.write_all(&chunk).await.unwrap();
        } else {
            c.write_all(&chunk).await.unwrap();
        }
        sent += CHUNK as u64;
    }
    c.close().await.unwrap();
    sent
}

/// The raw rustls side: a server and a client configuration as close to
/// a TLS node's as rustls allows without hedgerow (ring provider, TLS 1.3
/// only, no resumption, the client certificate verified against the CA).
/// The client accepts the server's certificate without checking its name
/// (it names a URI, which rustls' `ServerName` cannot): connections are
/// opened once, before the clock starts, so no handshake is timed.
struct RawTls {
    server: futures_rustls::TlsAcceptor,
    client: futures_rustls::TlsConnector,
}

impl RawTls {
    fn new(ca: &ClusterCa) -> Self {
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap())
            .unwrap();
        let material = |name: &str| {
            let cert = ca.node(name).unwrap();
            let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
            (chain, key)
        };
        let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let (chain, key) = material("raw-server");
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(clients)
            .with_single_cert(chain, key)
            .unwrap();
        server.send_tls13_tickets = 0;
        let (chain, key) = material("raw-client");
        let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyName(provider)))
            .with_client_auth_cert(chain, key)
            .unwrap();
        client.resumption = rustls::client::Resumption::disabled();
        RawTls {
            server: Arc::new(server).into(),
            client: Arc::new(client).into(),
        }
    }

    /// A rustls echo server; its address.
    async fn echo_server(&self, rt: &TokioRuntime) -> String {
        let listener = rt.bind("127.0.0.1:0".into()).await.unwrap();
        let addr = TokioRuntime::local_addr(&listener).unwrap().to_string();
        let (server, acceptor) = (rt.clone(), self.server.clone());
        rt.spawn(Box::pin(async move {
            while let Ok((s, _)) = server.accept(&listener).await {
                let acceptor = acceptor.clone();
                server.spawn(Box::pin(async move {
                    if let Ok(s) = acceptor.accept(s).await {
                        echo(s).await;
                    }
                }));
            }
        }));
        addr
    }

    async fn connect(
        &self,
        rt: &TokioRuntime,
        addr: &str,
    ) -> futures_rustls::client::TlsStream<<TokioRuntime as Runtime>::Stream> {
        let tcp = rt.connect(addr.to_string()).await.unwrap();
        let name = ServerName::try_from("hedgerow").unwrap();
        self.client.connect(name, tcp).await.unwrap()
    }

    /// [`raw_copy`] over rustls (one shared buffer).
    async fn copy(&self, rt: &TokioRuntime, total: u64) -> Duration {
        let listener = rt.bind("127.0.0.1:0".into()).await.unwrap();
        let addr = TokioRuntime::local_addr(&listener).unwrap().to_string();
        let (tx, mut rx) = mpsc::unbounded();
        let (server, acceptor) = (rt.clone(), self.server.clone());
        rt.spawn(Box::pin(async move {
            let (s, _) = server.accept(&listener).await.unwrap();
            let s = acceptor.accept(s).await.unwrap();
            let _ = tx.unbounded_send(count(s).await);
        }));
        let mut c = self.connect(rt, &addr).await;
        let t = Instant::now();
        let sent = copy_on(&mut c, total, false).await;
        assert_eq!(rx.next().await, Some(sent));
        t.elapsed()
    }
}

/// Signatures checked, the server's name not (see [`RawTls`]).
#[derive(Debug)]
struct AnyName(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A stream of 64 KiB writes to the leader, until its handler has read
/// every byte. Like the raw copy, which writes one buffer over and over,
/// each write hands over the same 64 KiB (shared, as `Bytes`, not copied).
///
/// With `fresh`, each write is a new `Vec` instead (a copy and an
/// allocation per write, as an application that builds every chunk anew).
async fn hedgerow_stream(
    b: &Hedgerow,
    finished: &mut mpsc::UnboundedReceiver<u64>,
    total: u64,
    fresh: bool,
) -> Duration {
    let chunk = hedgerow::Bytes::from(vec![7u8; CHUNK]);
    let t = Instant::now();
    let mut s = b.send_stream().await.unwrap();
    let mut sent = 0u64;
    while sent < total {
        if fresh {
            s.write_all(chunk.to_vec()).await.unwrap();
        } else {
            s.write_all(chunk.clone()).await.unwrap();
        }
        sent += CHUNK as u64;
    }
    s.finish().await.unwrap();
    assert_eq!(finished.next().await, Some(sent));
    t.elapsed()
}

/// One broadcast from the leader to every member (itself included), until
/// every member's reply is in: one `Ok` reply from each of `members`, no
/// other. A failure names the members missing or unexpected and each
/// failed reply's error.
async fn hedgerow_broadcast(leader: &Hedgerow, members: &BTreeSet<NodeId>) -> Duration {
    let t = Instant::now();
    let replies = leader.broadcast(vec![7u8; PAYLOAD]).await.expect("running");
    let took = t.elapsed();
    let from: BTreeSet<NodeId> = replies.iter().map(|(id, _)| id.clone()).collect();
    let failed: Vec<String> = replies
        .iter()
        .filter_map(|(id, r)| r.as_ref().err().map(|e| format!("{id}: {e}")))
        .collect();
    assert!(
        replies.len() == members.len() && from == *members,
        "{} replies from {} members after {took:?}, expected one from each of {}: \
         missing {:?}, unexpected {:?}; failed replies: {failed:?}",
        replies.len(),
        from.len(),
        members.len(),
        members.difference(&from).collect::<Vec<_>>(),
        from.difference(members).collect::<Vec<_>>(),
    );
    assert!(
        failed.is_empty(),
        "{} of {} replies failed after {took:?}: {failed:?}",
        failed.len(),
        replies.len()
    );
    took
}

/// The ids in `n`'s view.
fn view_ids(n: &Hedgerow) -> BTreeSet<NodeId> {
    n.members().into_iter().map(|m| m.id).collect()
}

/// One task writes a message to each of `conns` and reads every echo.
async fn raw_fanout(conns: &mut [<TokioRuntime as Runtime>::Stream]) -> Duration {
    let msg = raw_msg();
    let mut back = vec![0u8; msg.len()];
    let t = Instant::now();
    for c in conns.iter_mut() {
        c.write_all(&msg).await.unwrap();
    }
    for c in conns.iter_mut() {
        c.read_exact(&mut back).await.unwrap();
    }
    t.elapsed()
}

/// CPU time this process's live threads have used, from Linux's
/// per-thread scheduler statistics (nanosecond resolution); `None`
/// elsewhere. CPU time per byte moved is steadier than wall time on a
/// shared machine.
fn cpu_time() -> Option<Duration> {
    let mut ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        ns += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(ns))
}

fn cpu_since(start: Option<Duration>) -> f64 {
    match (start, cpu_time()) {
        (Some(a), Some(b)) => b.saturating_sub(a).as_secs_f64(),
        _ => f64::NAN,
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

/// Rows of the result table; every ratio is hedgerow / raw (for
/// throughput higher is better, for latency lower).
struct Table(Vec<String>);

impl Table {
    fn row(&mut self, what: &str, unit: &str, h: &mut [f64], r: &mut [f64]) {
        let mut ratios: Vec<f64> = h.iter().zip(r.iter()).map(|(h, r)| h / r).collect();
        ratios.sort_by(f64::total_cmp);
        let (hm, rm) = (median(h), median(r));
        self.0.push(format!(
            "| {what} | {hm:.1} {unit} | {rm:.1} {unit} | {:.2}x | {:.2}–{:.2}x |",
            hm / rm,
            ratios[0],
            ratios[ratios.len() - 1]
        ));
    }
}

async fn run(rt: TokioRuntime) {
    let rounds = env("HEDGEROW_BENCH_ROUNDS", 5).max(1);
    let sends = env("HEDGEROW_BENCH_SENDS", 2000);
    let pipelined = env("HEDGEROW_BENCH_PIPELINED", 20_000);
    let window = env("HEDGEROW_BENCH_WINDOW", 128).max(1);
    let mib = env("HEDGEROW_BENCH_MIB", 128);
    let broadcasts = env("HEDGEROW_BENCH_BROADCASTS", 100).max(1);
    let members = env("HEDGEROW_BENCH_MEMBERS", 50).max(2) as usize;
    let total = mib * 1024 * 1024;

    let store = MemoryStore::new();
    let (done, mut finished) = mpsc::unbounded();
    let a = node(&rt, &store, "a", done.clone()).await;
    while !a.is_leader() {
        rt.sleep(Duration::from_millis(5)).await;
    }
    let b = node(&rt, &store, "b", done.clone()).await;
    while b.leader().map(|l| l.id) != Some(a.id().clone()) || b.members().len() < 2 {
        rt.sleep(Duration::from_millis(5)).await;
    }
    let echo = echo_server(&rt).await;
    let mut table = Table(Vec::new());

    if wanted("rtt") {
        let (mut h, mut r) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            h.push(hedgerow_rtt(&b, sends).await.as_secs_f64() * 1e6);
            r.push(raw_rtt(&rt, &echo, sends).await.as_secs_f64() * 1e6);
        }
        table.row(
            &format!("one-shot `send` round trip ({PAYLOAD} B)"),
            "µs",
            &mut h,
            &mut r,
        );
    }

    if wanted("recorder") {
        let switch = Switch::install();
        let (_a0, without) = pair(&rt, &done, None).await;
        switch.set(true);
        let (_a1, with) = pair(&rt, &done, None).await;
        let (mut h, mut r) = (Vec::new(), Vec::new());
        hedgerow_rtt(&with, sends / 10).await;
        hedgerow_rtt(&without, sends / 10).await;
        for _ in 0..rounds {
            h.push(hedgerow_rtt(&with, sends).await.as_secs_f64() * 1e6);
            r.push(hedgerow_rtt(&without, sends).await.as_secs_f64() * 1e6);
        }
        let scraped = switch.inner.handle().render();
        assert!(
            scraped.contains("hedgerow_sends_total"),
            "the recorded pair's sends were not recorded"
        );
        table.row(
            &format!("`send` round trip ({PAYLOAD} B): Prometheus recorder / none"),
            "µs",
            &mut h,
            &mut r,
        );
    }

    if wanted("pipelined") {
        let requests = request_server(&rt).await;
        let (mut h, mut r) = (Vec::new(), Vec::new());
        hedgerow_pipelined(&b, pipelined / 10, window).await;
        raw_pipelined(&rt, &requests, pipelined / 10, window).await;
        for _ in 0..rounds {
            let d = hedgerow_pipelined(&b, pipelined, window).await;
            h.push(pipelined as f64 / d.as_secs_f64() / 1000.0);
            let d = raw_pipelined(&rt, &requests, pipelined, window).await;
            r.push(pipelined as f64 / d.as_secs_f64() / 1000.0);
        }
        table.row(
            &format!("pipelined `send`s, {window} in flight ({PAYLOAD} B) vs request/reply server"),
            "k/s",
            &mut h,
            &mut r,
        );
    }

    if wanted("stream") {
        let mib_f = total as f64 / (1024.0 * 1024.0);
        // Per variant (one shared buffer, a fresh `Vec` per write): MiB/s
        // and CPU µs per MiB, hedgerow and raw.
        let mut runs: [[Vec<f64>; 4]; 2] = Default::default();
        for _ in 0..rounds {
            for (fresh, v) in [false, true].into_iter().zip(runs.iter_mut()) {
                let cpu = cpu_time();
                let d = hedgerow_stream(&b, &mut finished, total, fresh).await;
                v[0].push(mib_f / d.as_secs_f64());
                v[1].push(cpu_since(cpu) * 1e6 / mib_f);
                let cpu = cpu_time();
                let d = raw_copy(&rt, total, fresh).await;
                v[2].push(mib_f / d.as_secs_f64());
                v[3].push(cpu_since(cpu) * 1e6 / mib_f);
            }
        }
        for (what, [h, hc, r, rc]) in ["one shared buffer", "a fresh `Vec` per write"]
            .into_iter()
            .zip(runs.iter_mut())
        {
            table.row(
                &format!("stream throughput ({mib} MiB in 64 KiB writes, {what})"),
                "MiB/s",
                h,
                r,
            );
            table.row(
                &format!("stream CPU time per MiB, both ends ({what})"),
                "µs",
                hc,
                rc,
            );
        }
    }
    if wanted("tls") {
        let ca = ClusterCa::new(CLUSTER).unwrap();
        let (_ta, tb) = pair(&rt, &done, Some(&ca)).await;
        let raw = RawTls::new(&ca);
        let tls_echo = raw.echo_server(&rt).await;
        let mut tls_conn = raw.connect(&rt, &tls_echo).await;
        hedgerow_rtt(&tb, sends / 10).await;
        // Per round: TLS hedgerow, plain hedgerow, raw rustls, raw TCP.
        let mut rtt: [Vec<f64>; 4] = Default::default();
        for _ in 0..rounds {
            rtt[0].push(hedgerow_rtt(&tb, sends).await.as_secs_f64() * 1e6);
            rtt[1].push(hedgerow_rtt(&b, sends).await.as_secs_f64() * 1e6);
            rtt[2].push(rtt_on(&mut tls_conn, sends).await.as_secs_f64() * 1e6);
            rtt[3].push(raw_rtt(&rt, &echo, sends).await.as_secs_f64() * 1e6);
        }
        let what = format!("`send` round trip ({PAYLOAD} B)");
        let [h, plain, rustls_rtt, tcp] = &mut rtt;
        table.row(
            &format!("TLS {what} / plain hedgerow"),
            "µs",
            &mut h.clone(),
            &mut plain.clone(),
        );
        table.row(
            &format!("TLS {what} / raw rustls echo"),
            "µs",
            &mut h.clone(),
            &mut rustls_rtt.clone(),
        );
        table.row("raw rustls echo / raw TCP echo", "µs", rustls_rtt, tcp);
        let mib_f = total as f64 / (1024.0 * 1024.0);
        let mut stream: [Vec<f64>; 3] = Default::default();
        for _ in 0..rounds {
            let d = hedgerow_stream(&tb, &mut finished, total, false).await;
            stream[0].push(mib_f / d.as_secs_f64());
            let d = hedgerow_stream(&b, &mut finished, total, false).await;
            stream[1].push(mib_f / d.as_secs_f64());
            stream[2].push(mib_f / raw.copy(&rt, total).await.as_secs_f64());
        }
        let what = format!("stream throughput ({mib} MiB, one shared buffer)");
        let [h, plain, rustls_copy] = &mut stream;
        table.row(
            &format!("TLS {what} / plain hedgerow"),
            "MiB/s",
            &mut h.clone(),
            plain,
        );
        table.row(
            &format!("TLS {what} / raw rustls copy"),
            "MiB/s",
            h,
            rustls_copy,
        );
        tls_conn.close().await.unwrap();
    }
    b.shutdown().await;

    if wanted("broadcast") {
        let mut nodes = Vec::new();
        for i in 1..members {
            nodes.push(node(&rt, &store, &format!("m{i:02}"), done.clone()).await);
        }
        // Every node's view must be exactly these nodes, not merely as
        // many: `b`, stopped like a crash above, stays in the views until
        // its failure timeout, and a node whose join is still on its way
        // may already hold the others' view without itself. So 50
        // everywhere could be `b` and all but one of the new nodes; the
        // broadcast then went to 51, `b`'s part a timeout 10 s later.
        let expected: BTreeSet<NodeId> = std::iter::once(a.id().clone())
            .chain(nodes.iter().map(|n| n.id().clone()))
            .collect();
        let started = Instant::now();
        while view_ids(&a) != expected || nodes.iter().any(|n| view_ids(n) != expected) {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{members} nodes did not converge: the leader's view is {:?}",
                view_ids(&a)
            );
            rt.sleep(Duration::from_millis(20)).await;
        }
        let mut conns = Vec::new();
        for _ in 0..members {
            let addr = echo_server(&rt).await;
            conns.push(rt.connect(addr).await.unwrap());
        }
        for _ in 0..10 {
            hedgerow_broadcast(&a, &expected).await;
            raw_fanout(&mut conns).await;
        }
        // Per round: the median of its broadcasts (the row's range is over
        // rounds); p99 over every broadcast of every round.
        let (mut h, mut r) = (Vec::new(), Vec::new());
        let (mut h_all, mut r_all) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let (mut hr, mut rr) = (Vec::new(), Vec::new());
            for _ in 0..broadcasts {
                hr.push(hedgerow_broadcast(&a, &expected).await.as_secs_f64() * 1e6);
                rr.push(raw_fanout(&mut conns).await.as_secs_f64() * 1e6);
            }
            h_all.extend_from_slice(&hr);
            r_all.extend_from_slice(&rr);
            h.push(median(&mut hr));
            r.push(median(&mut rr));
        }
        let (h99, r99) = (percentile(&mut h_all, 0.99), percentile(&mut r_all, 0.99));
        table.row(
            &format!("`broadcast` to {members} members, all replies, median"),
            "µs",
            &mut h,
            &mut r,
        );
        table.0.push(format!(
            "| `broadcast` to {members} members, all replies, p99 | {h99:.1} µs | {r99:.1} µs | {:.2}x | |",
            h99 / r99
        ));
        for n in &nodes {
            n.shutdown().await;
        }
    }
    a.shutdown().await;

    println!();
    let caller = match std::env::var("HEDGEROW_BENCH_CALLER") {
        Ok(v) if v == "worker" => "callers on a worker task",
        _ => "callers on the block_on thread",
    };
    println!(
        "loopback TCP, tokio multi-thread (2 workers) for both sides, {caller}, {rounds} rounds alternating hedgerow and raw"
    );
    println!();
    println!(
        "| | hedgerow (median) | raw TCP (median) | ratio of medians | ratio range over rounds |"
    );
    println!("|---|---:|---:|---:|---:|");
    for row in table.0 {
        println!("{row}");
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a plain run takes no arguments either.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Where the measuring loops (the `send` caller and the raw client)
    // run: on the `block_on` thread, outside the worker pool (the
    // default), or as a task on one of the 2 workers, as a caller inside
    // an application usually is. Both sides always run in the same place.
    let on_worker = std::env::var("HEDGEROW_BENCH_CALLER").is_ok_and(|v| v == "worker");
    rt.block_on(async {
        let hr = TokioRuntime::from_context().unwrap();
        if on_worker {
            tokio::spawn(run(hr)).await.unwrap();
        } else {
            run(hr).await;
        }
    });
}
