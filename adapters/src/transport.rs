//! The TCP transport: dialing, accepting, the hello handshake, framing and
//! per-connection read and write loops. Each connection is one task that
//! hands the frames it reads to the driver (the small ones already in its
//! read-ahead together, in one turn): straight in, on this task, when the
//! driver is free, else through its event channel. Outgoing frames go into
//! the connection's [`Outbox`]: the driver encodes them there and, at the
//! end of each of its wakes, writes them straight into the socket when no
//! one else is writing it; only a write that would block is handed to the
//! connection's task, which finishes it. On the common path a frame thus
//! costs no task hop between the driver and the socket.
//!
//! A frame's body is read as its bytes arrive, into a buffer that grows
//! only by what the node's [`budget`] grants, so what a peer announces
//! never reserves memory by itself; a frame must be complete within the
//! frame timeout once its first byte came. A small frame already whole in
//! the read-ahead buffer is decoded where it lies instead: it holds no
//! memory beyond that buffer.
//!
//! This room moves frames; it never interprets a protocol message, never
//! decides where a message goes (the driver does) and never touches the
//! node. Anything a peer sends that breaks the framing closes that
//! connection with a logged reason and a count in [`TransportStats`]; the
//! node keeps running.

mod budget;
mod secure;
mod stats;

pub use stats::TransportStats;

#[cfg(feature = "testing")]
#[cfg(feature = "testing")]
pub use secure::FuzzAcceptor;

use std::collections::HashMap;
use std::future::Future;
use std::io::IoSlice;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::channel::mpsc;
use futures::future::{AbortHandle, Abortable, Either};
use futures::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use futures::task::noop_waker_ref;
use futures::SinkExt;
use hedgerow_core::wire::{
    decode_body, decode_body_shared, encode_frame, encode_message_for_version, peek_frame_len,
    Frame, LEN_PREFIX, MIN_PROTOCOL_VERSION, SPLIT_AT,
};
use hedgerow_core::{Bytes, Hello, Message, NodeId, Payload};

use crate::input::Accept;
use crate::runtime::{timeout, Runtime};
use crate::tls::TlsContext;
use budget::{FrameBudget, Grant};
use secure::Link;
use stats::{bump, Counters};

/// Identifies one connection for the driver's bookkeeping.
pub(crate) type ConnId = u64;

/// A batch buffer that grew past four times this is given back to the
/// allocator once written.
const MAX_BATCH: usize = 256 * 1024;
/// Most slices handed to one vectored write (well under `IOV_MAX`).
const MAX_SLICES: usize = 64;
/// Bytes read ahead of the current frame on an established connection.
const READ_AHEAD: usize = 16 * 1024;
/// Largest hello accepted. A hello is a few hundred bytes; reading it under
/// the full frame limit would let each of the bounded handshakes pin
/// megabytes before anyone is known.
const MAX_HELLO_LEN: u32 = 16 * 1024;
/// A frame body's buffer starts at this size (or the body's, if smaller)
/// and at least doubles each time it fills, so a body costs few copies
/// and never more than twice the bytes that came.
const BODY_STEP: usize = 16 * 1024;

/// What connection tasks tell the driver.
pub(crate) enum NetEvent {
    /// A handshake succeeded; `tx` queues frames for this connection.
    Up {
        conn: ConnId,
        peer: NodeId,
        incarnation: u64,
        /// Set for inbound connections (dialed ones were registered with
        /// their outbox at dial time).
        inbound: Option<(Arc<Outbox>, AbortHandle)>,
    },
    /// A message arrived, in a frame of `len` bytes (prefix included).
    Msg {
        conn: ConnId,
        peer: NodeId,
        msg: Message,
        len: usize,
    },
    /// A connection ended (or a dial failed before it was up).
    Down {
        conn: ConnId,
        peer: NodeId,
        was_up: bool,
        reason: String,
    },
}

/// The transport's limits, as the builder set them.
pub(crate) struct Limits {
    /// Longest a connect plus handshake may take.
    pub(crate) handshake_timeout: Duration,
    /// Most inbound handshakes in progress at once.
    pub(crate) max_handshakes: usize,
    /// Most of those from one IP address, so one address cannot take
    /// every slot and keep joiners out.
    pub(crate) max_handshakes_per_ip: usize,
    /// Most established inbound connections at once.
    pub(crate) max_inbound: usize,
    /// A connection with no bytes either way for this long (up to twice
    /// this, as it is checked once per period) is closed.
    pub(crate) idle_timeout: Duration,
    /// Frames queued per connection before new ones are dropped.
    pub(crate) send_queue: usize,
    /// Bytes of frames being read, all connections together.
    pub(crate) frame_budget: usize,
    /// Longest a frame may take from its first byte to its last.
    pub(crate) frame_timeout: Duration,
    /// Most established inbound connections from one IP address.
    pub(crate) max_inbound_per_ip: usize,
}

/// What every connection task shares.
pub(crate) struct NetCtx {
    pub(crate) hello: Hello,
    pub(crate) max_frame_len: u32,
    pub(crate) limits: Limits,
    /// Mutual TLS in front of every hello, when on.
    tls: Option<Arc<TlsContext>>,
    pub(crate) events: mpsc::Sender<NetEvent>,
    /// The driver, for events handed over without a hop through `events`.
    /// Weak: the driver holds this context.
    inputs: OnceLock<Weak<dyn Accept<NetEvent>>>,
    /// Buffers for big frame bodies, shared by every connection.
    bodies: Arc<BodyPool>,
    /// Bytes of frames being read, shared by every connection.
    budget: Arc<FrameBudget>,
    counters: Counters,
    next_conn: AtomicU64,
    handshakes: AtomicUsize,
    /// Handshakes in progress per source address.
    handshakes_by_ip: Mutex<HashMap<IpAddr, usize>>,
    inbound: AtomicUsize,
    /// Established inbound connections per source address.
    inbound_by_ip: Mutex<HashMap<IpAddr, usize>>,
    /// The established inbound connection of each node id that claimed
    /// one; a newer hello for the id replaces it.
    inbound_by_id: Mutex<HashMap<NodeId, (ConnId, Arc<Outbox>)>>,
}

impl NetCtx {
    pub(crate) fn new(
        hello: Hello,
        max_frame_len: u32,
        limits: Limits,
        tls: Option<TlsContext>,
        events: mpsc::Sender<NetEvent>,
    ) -> Self {
        NetCtx {
            hello,
            max_frame_len,
            tls: tls.map(Arc::new),
            events,
            inputs: OnceLock::new(),
            bodies: BodyPool::new(),
            budget: FrameBudget::new(limits.frame_budget),
            counters: Counters::default(),
            next_conn: AtomicU64::new(1),
            handshakes: AtomicUsize::new(0),
            handshakes_by_ip: Mutex::new(HashMap::new()),
            inbound: AtomicUsize::new(0),
            inbound_by_ip: Mutex::new(HashMap::new()),
            inbound_by_id: Mutex::new(HashMap::new()),
            limits,
        }
    }

    /// What the transport has counted so far.
    pub(crate) fn stats(&self) -> TransportStats {
        self.counters.snapshot(&self.budget)
    }

    /// Makes `outbox`'s connection the one inbound connection of `peer`;
    /// an older one it had is closed (it may be half-open after a network
    /// blip, and one id needs one inbound connection). Undone by dropping
    /// the claim.
    fn claim_id(self: &Arc<Self>, peer: &NodeId, conn: ConnId, outbox: &Arc<Outbox>) -> IdClaim {
        let old = lock_map(&self.inbound_by_id).insert(peer.clone(), (conn, outbox.clone()));
        if let Some((old_conn, old)) = old {
            bump(&self.counters.replaced_same_id);
            tracing::warn!(%peer, old_conn, conn, "a new connection claims this node id; closing the older one");
            old.close();
        }
        IdClaim {
            ctx: self.clone(),
            peer: peer.clone(),
            conn,
        }
    }

    pub(crate) fn next_conn(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Lets connections hand events to the driver directly.
    pub(crate) fn set_inputs(&self, inputs: Weak<dyn Accept<NetEvent>>) {
        let _ = self.inputs.set(inputs);
    }

    /// Hands `e` to the driver: at once, on this task, when the driver is
    /// free; else through the event channel, which waits while it is full
    /// and so pushes back on the peer through TCP. `Err` once the driver
    /// has stopped.
    async fn deliver(&self, events: &mut mpsc::Sender<NetEvent>, e: NetEvent) -> Result<(), ()> {
        let e = match self.inputs.get().and_then(Weak::upgrade) {
            Some(driver) => match driver.accept(e) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            },
            None => e,
        };
        events.send(e).await.map_err(|_| ())
    }

    /// As [`NetCtx::deliver`] for every event of `batch`, in order: all in
    /// one turn of the driver when it is free. Leaves `batch` empty.
    async fn deliver_all(
        &self,
        events: &mut mpsc::Sender<NetEvent>,
        batch: &mut Vec<NetEvent>,
    ) -> Result<(), ()> {
        let taken = self
            .inputs
            .get()
            .and_then(Weak::upgrade)
            .is_some_and(|driver| driver.accept_all(batch));
        if !taken {
            for e in batch.drain(..) {
                events.send(e).await.map_err(|_| ())?;
            }
        }
        Ok(())
    }
}

/// One inbound handshake in progress: counted against the global and the
/// per-address limits until dropped, however the handshake ends.
struct HandshakeSlot {
    ctx: Arc<NetCtx>,
    ip: IpAddr,
}

impl HandshakeSlot {
    /// A slot for a handshake from `ip`, or why there is none.
    fn take(ctx: &Arc<NetCtx>, ip: IpAddr) -> Result<Self, &'static str> {
        let mut by_ip = ctx
            .handshakes_by_ip
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if ctx.handshakes.load(Ordering::Relaxed) >= ctx.limits.max_handshakes {
            return Err("too many handshakes in progress");
        }
        let n = by_ip.entry(ip).or_insert(0);
        if *n >= ctx.limits.max_handshakes_per_ip {
            return Err("too many handshakes in progress from this address");
        }
        *n += 1;
        ctx.handshakes.fetch_add(1, Ordering::Relaxed);
        Ok(HandshakeSlot {
            ctx: ctx.clone(),
            ip,
        })
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut by_ip = self
            .ctx
            .handshakes_by_ip
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = by_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                by_ip.remove(&self.ip);
            }
        }
        self.ctx.handshakes.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock_map<K, V>(m: &Mutex<HashMap<K, V>>) -> MutexGuard<'_, HashMap<K, V>> {
    // Counts only; a panic cannot leave one half-updated.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One established inbound connection, counted against the global and
/// the per-address limits until dropped.
struct InboundSlot {
    ctx: Arc<NetCtx>,
    ip: IpAddr,
}

impl InboundSlot {
    /// A slot for a peer at `ip`, or why there is none.
    fn take(ctx: &Arc<NetCtx>, ip: IpAddr) -> Result<Self, String> {
        let mut by_ip = lock_map(&ctx.inbound_by_ip);
        if ctx.inbound.load(Ordering::Relaxed) >= ctx.limits.max_inbound {
            bump(&ctx.counters.refused_inbound);
            return Err(format!(
                "too many connections to this node (limit {}); try later",
                ctx.limits.max_inbound
            ));
        }
        let n = by_ip.entry(ip).or_insert(0);
        if *n >= ctx.limits.max_inbound_per_ip {
            bump(&ctx.counters.refused_per_address);
            return Err(format!(
                "too many connections to this node from {ip} (limit {}); try later",
                ctx.limits.max_inbound_per_ip
            ));
        }
        *n += 1;
        ctx.inbound.fetch_add(1, Ordering::Relaxed);
        Ok(InboundSlot {
            ctx: ctx.clone(),
            ip,
        })
    }
}

impl Drop for InboundSlot {
    fn drop(&mut self) {
        let mut by_ip = lock_map(&self.ctx.inbound_by_ip);
        if let Some(n) = by_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                by_ip.remove(&self.ip);
            }
        }
        self.ctx.inbound.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's claim to be its node id's inbound connection; see
/// [`NetCtx::claim_id`].
struct IdClaim {
    ctx: Arc<NetCtx>,
    peer: NodeId,
    conn: ConnId,
}

impl Drop for IdClaim {
    fn drop(&mut self) {
        let mut by_id = lock_map(&self.ctx.inbound_by_id);
        // Only if no newer connection took the id over meanwhile.
        if by_id.get(&self.peer).is_some_and(|(c, _)| *c == self.conn) {
            by_id.remove(&self.peer);
        }
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum Closed {
    Io(std::io::Error),
    Protocol(String),
    Eof,
    Driver,
    Idle(Duration),
    /// A frame was not complete this long after its first byte; `budget`
    /// if it was waiting for the frame budget rather than for the peer.
    SlowFrame {
        limit: Duration,
        budget: bool,
    },
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Closed::Io(e) => write!(f, "i/o error: {e}"),
            Closed::Protocol(why) => f.write_str(why),
            Closed::Eof => f.write_str("peer closed the connection"),
            Closed::Driver => f.write_str("closed by this node"),
            Closed::Idle(limit) => write!(f, "no bytes either way for {limit:?}; closed as idle"),
            Closed::SlowFrame {
                limit,
                budget: false,
            } => write!(f, "a frame was not complete {limit:?} after it started"),
            Closed::SlowFrame {
                limit,
                budget: true,
            } => write!(
                f,
                "a frame waited {limit:?} for the node's frame budget (other connections hold it)"
            ),
        }
    }
}

async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    frame: &Frame,
    max: u32,
) -> Result<(), Closed> {
    let mut buf = Vec::new();
    encode_frame(frame, max, &mut buf).map_err(|e| Closed::Protocol(e.to_string()))?;
    w.write_all(&buf).await.map_err(Closed::Io)?;
    w.flush().await.map_err(Closed::Io)
}

/// Where an established connection's frame bodies come from: the node's
/// budget and body pool.
struct Bodies<'a> {
    budget: &'a Arc<FrameBudget>,
    pool: &'a Arc<BodyPool>,
    /// Whether the peer is a member of the view (first call on the
    /// budget).
    member: bool,
    /// Set while the read waits for the budget, so a frame that times out
    /// says why.
    waiting: &'a AtomicBool,
}

/// Reads one frame, checking the announced length first, and says how
/// many bytes it took (prefix included). The body is read as it arrives
/// (see [`read_body`]); with `bodies`, under the budget.
async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
    bodies: Option<&Bodies<'_>>,
) -> Result<(Frame, usize), Closed> {
    let mut prefix = [0u8; LEN_PREFIX];
    match r.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(Closed::Eof),
        Err(e) => return Err(Closed::Io(e)),
    }
    let len = match peek_frame_len(&prefix, max) {
        Ok(Some(len)) => len,
        Ok(None) => return Err(Closed::Protocol("short length prefix".into())),
        Err(e) => return Err(Closed::Protocol(e.to_string())),
    };
    let mut grant = bodies.map(|b| Grant::new(b.budget, b.member));
    let body = read_body(r, len, bodies, grant.as_mut()).await?;
    // Shared, so stream data is handed on as a slice of this buffer. The
    // grant ends with this call: what the message holds from here on is
    // bounded by the protocol (credit, queues), not by the framing.
    let frame = decode_body_shared(body).map_err(|e| Closed::Protocol(e.to_string()))?;
    Ok((frame, LEN_PREFIX + len))
}

/// Reads a body of `len` bytes as they arrive. Its buffer starts at
/// [`BODY_STEP`] and at least doubles whenever it fills, each step first
/// granted by the budget (waiting while it has no room), so a peer that
/// announces a big frame and sends little of it holds little. A body a
/// pooled buffer already has room for takes that buffer, charged whole.
async fn read_body<R: AsyncRead + Unpin>(
    r: &mut R,
    len: usize,
    bodies: Option<&Bodies<'_>>,
    mut grant: Option<&mut Grant>,
) -> Result<Bytes, Closed> {
    let pooled = bodies
        .filter(|_| (SPLIT_AT..=POOL_BUFFER_MAX).contains(&len))
        .and_then(|b| b.pool.take_with_room(len).map(|buf| (b, buf)));
    let (mut buf, pool) = match pooled {
        Some((b, mut buf)) => {
            if let Some(g) = grant.as_deref_mut() {
                charge(g, len, b.waiting).await;
            }
            // A reused buffer only grows its initialized length: no
            // zeroing of bytes that are about to be overwritten anyway.
            buf.resize(len, 0);
            (buf, Some(b.pool))
        }
        None => (Vec::new(), bodies.map(|b| b.pool)),
    };
    let mut filled = 0;
    while filled < len {
        if filled == buf.len() {
            let window = (buf.len() * 2).max(BODY_STEP).min(len);
            if let (Some(g), Some(b)) = (grant.as_deref_mut(), bodies) {
                charge(g, window, b.waiting).await;
            }
            buf.reserve_exact(window - buf.len());
            buf.resize(window, 0);
        }
        match r.read(&mut buf[filled..]).await {
            Ok(0) => return Err(Closed::Io(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Closed::Io(e)),
        }
    }
    Ok(match pool {
        Some(pool) if len >= SPLIT_AT => Bytes::from_owner(PooledBody {
            bytes: buf,
            pool: pool.clone(),
        }),
        _ => Bytes::from(buf),
    })
}

/// Holds `total` bytes of the budget, flagging `waiting` while it waits.
async fn charge(grant: &mut Grant, total: usize, waiting: &AtomicBool) {
    waiting.store(true, Ordering::Relaxed);
    grant.grow_to(total).await;
    waiting.store(false, Ordering::Relaxed);
}

/// Buffers for big frame bodies, reused once every slice of a body has
/// been dropped. A bulk stream's chunks are handed to the application as
/// slices of the buffers they were read into; allocating each afresh made
/// the allocator return memory to the kernel and fault it back in, page by
/// page, which cost more than the bytes' copies had.
pub(crate) struct BodyPool {
    free: Mutex<Vec<Vec<u8>>>,
}

/// Most buffers a pool keeps: a full default stream window of 64 KiB
/// chunks twice over.
const POOL_BUFFERS: usize = 32;
/// Largest buffer a pool keeps; bigger bodies are allocated and freed.
const POOL_BUFFER_MAX: usize = 256 * 1024;

impl BodyPool {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(BodyPool {
            free: Mutex::new(Vec::new()),
        })
    }

    /// A kept buffer with room for `len` bytes, if there is one (its
    /// contents unspecified).
    fn take_with_room(&self, len: usize) -> Option<Vec<u8>> {
        let mut free = self.free.lock().ok()?;
        let at = free.iter().rposition(|b| b.capacity() >= len)?;
        Some(free.swap_remove(at))
    }
}

/// A frame body that goes back to its pool when dropped.
struct PooledBody {
    bytes: Vec<u8>,
    pool: Arc<BodyPool>,
}

impl AsRef<[u8]> for PooledBody {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if self.bytes.capacity() > POOL_BUFFER_MAX {
            return;
        }
        if let Ok(mut free) = self.pool.free.lock() {
            if free.len() < POOL_BUFFERS {
                free.push(std::mem::take(&mut self.bytes));
            }
        }
    }
}

/// Dials `addr` expecting node `peer`, handshakes, then runs the
/// connection with frames from `outbox`. Spawned by the driver.
pub(crate) fn spawn_dial<R: Runtime>(
    rt: &R,
    ctx: Arc<NetCtx>,
    conn: ConnId,
    peer: NodeId,
    addr: String,
    outbox: Arc<Outbox>,
) -> AbortHandle {
    let (abort, reg) = AbortHandle::new_pair();
    let rt2 = rt.clone();
    // The driver dials the nodes it has to reach: the leader, members.
    outbox.mark_member();
    let task = async move {
        let mut events = ctx.events.clone();
        let limit = ctx.limits.handshake_timeout;
        let dialed = timeout(&rt2, limit, dial_handshake(&rt2, &ctx, &peer, addr.clone())).await;
        let (stream, incarnation, version) = match dialed {
            Some(Ok(x)) => x,
            failed => {
                let reason = match failed {
                    Some(Err(Closed::Protocol(why))) => {
                        // A refusal either way (TLS, cluster, version):
                        // the operator has something to fix.
                        tracing::warn!(%peer, %addr, reason = %why, "handshake with peer failed");
                        why
                    }
                    Some(Err(e)) => e.to_string(),
                    _ => "connect or handshake timed out".to_string(),
                };
                tracing::debug!(%peer, %addr, %reason, "dial failed");
                let down = NetEvent::Down {
                    conn,
                    peer,
                    was_up: false,
                    reason,
                };
                let _ = ctx.deliver(&mut events, down).await;
                return;
            }
        };
        let up = NetEvent::Up {
            conn,
            peer: peer.clone(),
            incarnation,
            inbound: None,
        };
        // Before the driver hears of the connection, so everything it
        // queues from then on is encoded for the version agreed.
        outbox.set_version(version);
        if ctx.deliver(&mut events, up).await.is_err() {
            return;
        }
        run(&rt2, stream, ctx, conn, peer, outbox).await;
    };
    rt.spawn(Box::pin(async move {
        let _ = Abortable::new(task, reg).await;
    }));
    abort
}

async fn dial_handshake<R: Runtime>(
    rt: &R,
    ctx: &NetCtx,
    expected: &NodeId,
    addr: String,
) -> Result<(Link<R::Stream>, u64, u16), Closed> {
    let s = rt.connect(addr).await.map_err(Closed::Io)?;
    let tls = ctx.tls.as_deref();
    let mut s = secure::dial(tls, &ctx.counters, s, ctx.max_frame_len).await?;
    write_frame(&mut s, &Frame::Hello(ctx.hello.clone()), ctx.max_frame_len).await?;
    match read_frame(&mut s, MAX_HELLO_LEN.min(ctx.max_frame_len), None)
        .await?
        .0
    {
        Frame::Hello(h) => {
            let version = match ctx.hello.negotiate(&h) {
                Ok(v) => v,
                Err(e) => {
                    return Err(Closed::Protocol(format!("handshake refused by us: {e}")));
                }
            };
            if &h.node_id != expected {
                return Err(Closed::Protocol(format!(
                    "expected node {expected} at that address, found {}",
                    h.node_id
                )));
            }
            secure::check_claim(&s, tls, &ctx.counters, h.node_id.as_str())
                .map_err(Closed::Protocol)?;
            Ok((s, h.incarnation, version))
        }
        Frame::Refuse(why) => {
            tracing::warn!(peer = %expected, reason = %why, "peer refused our handshake");
            Err(Closed::Protocol(format!(
                "peer refused the handshake: {why}"
            )))
        }
        Frame::Msg(_) => Err(Closed::Protocol(
            "peer sent a message before its hello".into(),
        )),
    }
}

/// Accepts connections until aborted; each gets a handshake task, with at
/// most `max_handshakes` in progress at once (the rest are closed at once).
pub(crate) fn spawn_listener<R: Runtime>(
    rt: &R,
    ctx: Arc<NetCtx>,
    listener: R::Listener,
) -> AbortHandle {
    let (abort, reg) = AbortHandle::new_pair();
    let rt2 = rt.clone();
    let task = async move {
        loop {
            let (stream, from) = match rt2.accept(&listener).await {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    rt2.sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let slot = match HandshakeSlot::take(&ctx, from.ip()) {
                Ok(slot) => slot,
                Err(why) => {
                    bump(&ctx.counters.refused_handshake_slots);
                    tracing::warn!(%from, limit = ctx.limits.max_handshakes, per_address = ctx.limits.max_handshakes_per_ip, "{why}; closing new connection");
                    drop(stream);
                    continue;
                }
            };
            let (conn_abort, conn_reg) = AbortHandle::new_pair();
            let ctx2 = ctx.clone();
            let rt3 = rt2.clone();
            let conn = ctx.next_conn();
            let task = async move {
                let limit = ctx2.limits.handshake_timeout;
                let shaken = timeout(&rt3, limit, accept_handshake(&ctx2, stream, from.ip())).await;
                drop(slot);
                let (stream, hello, version, _inbound) = match shaken {
                    Some(Ok(x)) => x,
                    Some(Err(e)) => {
                        bump(&ctx2.counters.failed_handshakes);
                        tracing::info!(%from, reason = %e, "inbound handshake failed");
                        return;
                    }
                    None => {
                        bump(&ctx2.counters.failed_handshakes);
                        tracing::info!(%from, "inbound handshake timed out");
                        return;
                    }
                };
                let outbox = Outbox::new(ctx2.max_frame_len, ctx2.limits.send_queue);
                outbox.set_version(version);
                let _claim = ctx2.claim_id(&hello.node_id, conn, &outbox);
                let up = NetEvent::Up {
                    conn,
                    peer: hello.node_id.clone(),
                    incarnation: hello.incarnation,
                    inbound: Some((outbox.clone(), conn_abort)),
                };
                let mut events = ctx2.events.clone();
                if ctx2.deliver(&mut events, up).await.is_err() {
                    return;
                }
                run(&rt3, stream, ctx2, conn, hello.node_id, outbox).await;
            };
            rt2.spawn(Box::pin(async move {
                let _ = Abortable::new(task, conn_reg).await;
            }));
        }
    };
    rt.spawn(Box::pin(async move {
        let _ = Abortable::new(task, reg).await;
    }));
    abort
}

async fn accept_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &Arc<NetCtx>,
    s: S,
    ip: IpAddr,
) -> Result<(Link<S>, Hello, u16, InboundSlot), Closed> {
    let max = ctx.max_frame_len;
    let tls = ctx.tls.as_deref();
    let mut s = secure::accept(tls, &ctx.counters, s, max).await?;
    let hello = match read_frame(&mut s, MAX_HELLO_LEN.min(max), None).await?.0 {
        Frame::Hello(h) => h,
        _ => {
            let why = hedgerow_core::HandshakeError::NotHello.to_string();
            let _ = write_frame(&mut s, &Frame::Refuse(why.clone()), max).await;
            return Err(Closed::Protocol(why));
        }
    };
    let version = match ctx.hello.negotiate(&hello) {
        Ok(v) => v,
        Err(e) => {
            let why = e.to_string();
            tracing::warn!(peer = %hello.node_id, addr = %hello.addr, reason = %why, "refusing peer");
            let _ = write_frame(&mut s, &Frame::Refuse(why.clone()), max).await;
            let _ = s.close().await;
            return Err(Closed::Protocol(why));
        }
    };
    if let Err(why) = secure::check_claim(&s, tls, &ctx.counters, hello.node_id.as_str()) {
        tracing::warn!(peer = %hello.node_id, %ip, reason = %why, "refusing peer");
        let _ = write_frame(&mut s, &Frame::Refuse(why.clone()), max).await;
        let _ = s.close().await;
        return Err(Closed::Protocol(why));
    }
    let slot = match InboundSlot::take(ctx, ip) {
        Ok(slot) => slot,
        Err(why) => {
            tracing::warn!(peer = %hello.node_id, %ip, reason = %why, "refusing peer");
            let _ = write_frame(&mut s, &Frame::Refuse(why.clone()), max).await;
            let _ = s.close().await;
            return Err(Closed::Protocol(why));
        }
    };
    write_frame(&mut s, &Frame::Hello(ctx.hello.clone()), max).await?;
    Ok((s, hello, version, slot))
}

/// Runs an established connection until either direction ends, then tells
/// the driver.
async fn run<R: Runtime, S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    rt: &R,
    stream: S,
    ctx: Arc<NetCtx>,
    conn: ConnId,
    peer: NodeId,
    outbox: Arc<Outbox>,
) {
    // However this ends (closed, failed, aborted), the outbox lets go of
    // the socket's write half so the socket closes now, not when the
    // driver drops its handle.
    let _shut = ShutOnDrop(outbox.clone());
    let (r, w) = stream.split();
    let max = ctx.max_frame_len;
    // A small read-ahead: it gathers small frames in few reads, while
    // most of a big frame's body is read straight into its own buffer
    // rather than through this one.
    let reader = read_loop(
        rt,
        BufReader::with_capacity(READ_AHEAD, r),
        max,
        &ctx,
        conn,
        peer.clone(),
        outbox.clone(),
    );
    let idle = idle_watch(rt, &outbox, ctx.limits.idle_timeout);
    let writer = write_loop(outbox.clone(), Box::pin(w));
    let io = futures::future::select(Box::pin(reader), Box::pin(writer));
    let closed = match futures::future::select(io, Box::pin(idle)).await {
        Either::Left((Either::Left((c, _)) | Either::Right((c, _)), _)) | Either::Right((c, _)) => {
            c
        }
    };
    let counters = &ctx.counters;
    match &closed {
        Closed::Protocol(why) => {
            bump(&counters.closed_bad_frame);
            tracing::warn!(%peer, reason = %why, "closing connection");
        }
        Closed::SlowFrame { budget, .. } => {
            bump(if *budget {
                &counters.closed_budget_wait
            } else {
                &counters.closed_slow_frame
            });
            tracing::warn!(%peer, reason = %closed, "closing connection");
        }
        Closed::Idle(_) => {
            bump(&counters.closed_idle);
            tracing::info!(%peer, reason = %closed, "closing connection");
        }
        other => tracing::debug!(%peer, reason = %other, "connection closed"),
    }
    let mut events = ctx.events.clone();
    let down = NetEvent::Down {
        conn,
        peer,
        was_up: true,
        reason: closed.to_string(),
    };
    let _ = ctx.deliver(&mut events, down).await;
}

async fn read_loop<Rt: Runtime, R: AsyncRead + Unpin>(
    rt: &Rt,
    mut r: BufReader<R>,
    max: u32,
    ctx: &NetCtx,
    conn: ConnId,
    peer: NodeId,
    outbox: Arc<Outbox>,
) -> Closed {
    let mut events = ctx.events.clone();
    let limit = ctx.limits.frame_timeout;
    let waiting = AtomicBool::new(false);
    // Frames read but not handed to the driver yet, and their bytes: the
    // small frames already whole in the read-ahead go in together, in
    // one turn of the driver (a pipelining peer's requests, the replies
    // to them), so the turn's fixed costs (lock, clock, flush, next
    // timer) are paid once. A batch goes on only while the next frame is
    // small and whole (its read never waits, not on the peer nor on the
    // budget), up to a read-ahead's worth of bytes: what a batch holds
    // outside the frame budget is bounded by that.
    let mut batch: Vec<NetEvent> = Vec::new();
    let mut batch_bytes = 0;
    loop {
        // The next frame's first byte may take any time (the idle watch
        // minds silence); from then on the frame has `limit` to complete.
        match r.fill_buf().await {
            Ok([]) => return Closed::Eof,
            Ok(_) => {}
            Err(e) => return Closed::Io(e),
        }
        let read = match small_frame_buffered(r.buffer(), max) {
            // Whole in the read-ahead already: decoded where it lies, with
            // no body buffer (an allocation and a copy a frame), no grant
            // and no timer; it holds nothing beyond the read-ahead.
            Some(len) => {
                let frame = decode_body(&r.buffer()[LEN_PREFIX..len]);
                r.consume_unpin(len);
                frame
                    .map(|f| (f, len))
                    .map_err(|e| Closed::Protocol(e.to_string()))
            }
            None => {
                let bodies = Bodies {
                    budget: &ctx.budget,
                    pool: &ctx.bodies,
                    member: outbox.is_member(),
                    waiting: &waiting,
                };
                match finish_within(rt, limit, read_frame(&mut r, max, Some(&bodies))).await {
                    Some(read) => read,
                    None => Err(Closed::SlowFrame {
                        limit,
                        budget: waiting.load(Ordering::Relaxed),
                    }),
                }
            }
        };
        let read = match read {
            Ok((Frame::Msg(m), len)) => Ok((m, len)),
            Ok((Frame::Hello(_), _)) => {
                Err(Closed::Protocol("second hello on one connection".into()))
            }
            Ok((Frame::Refuse(why), _)) => Err(Closed::Protocol(format!("peer refused: {why}"))),
            Err(c) => Err(c),
        };
        let (msg, len) = match read {
            Ok(x) => x,
            Err(c) => {
                // What came before the bad frame is the driver's still.
                let _ = ctx.deliver_all(&mut events, &mut batch).await;
                return c;
            }
        };
        outbox.touch();
        outbox.note_input(!r.buffer().is_empty());
        // A big stream chunk has usually just woken its reader's task,
        // which on tokio waits in this worker's LIFO slot (never stolen)
        // until this task yields; reading on without yielding held back
        // its consumption, and so the sender's credit.
        let big = matches!(&msg, Message::StreamData { data, .. } if data.len() >= SPLIT_AT);
        let msg = NetEvent::Msg {
            conn,
            peer: peer.clone(),
            msg,
            len,
        };
        batch_bytes += len;
        let next_fits = small_frame_buffered(r.buffer(), max)
            .is_some_and(|next| batch_bytes + next <= READ_AHEAD);
        if !big && next_fits {
            batch.push(msg);
            continue;
        }
        batch_bytes = 0;
        // A frame alone (a round trip's) goes in as before, without the
        // batch's bookkeeping.
        let delivered = if batch.is_empty() {
            ctx.deliver(&mut events, msg).await
        } else {
            batch.push(msg);
            ctx.deliver_all(&mut events, &mut batch).await
        };
        if delivered.is_err() {
            return Closed::Driver;
        }
        if big {
            crate::runtime::yield_once().await;
        }
    }
}

/// The length (prefix included) of the frame at the start of `buf` if it
/// is all there, valid so far, and small: a body under [`SPLIT_AT`], which
/// [`read_body`] would copy out of the read-ahead anyway (bigger ones
/// take a pooled buffer that stream data is then a slice of). `None` also
/// for a bad prefix, which [`read_frame`] reports.
fn small_frame_buffered(buf: &[u8], max: u32) -> Option<usize> {
    match peek_frame_len(buf, max) {
        Ok(Some(len)) if len < SPLIT_AT && buf.len() >= LEN_PREFIX + len => Some(LEN_PREFIX + len),
        _ => None,
    }
}

/// `fut`'s output, or `None` if it takes longer than `limit`. Most frames
/// are whole in the read-ahead buffer already: those finish on the first
/// poll and cost no timer.
async fn finish_within<R: Runtime, T>(
    rt: &R,
    limit: Duration,
    fut: impl Future<Output = T>,
) -> Option<T> {
    let mut fut = std::pin::pin!(fut);
    let first = futures::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(v) => Some(v),
        Poll::Pending => timeout(rt, limit, fut).await,
    }
}

/// Completes once `outbox` saw no bytes either way for a whole `limit`:
/// an idle or half-open peer does not keep its connection (and its memory)
/// forever. Links to the leader carry heartbeats every heartbeat interval;
/// a link between members closed this way is dialed again on demand.
async fn idle_watch<R: Runtime>(rt: &R, outbox: &Outbox, limit: Duration) -> Closed {
    let mut seen = outbox.activity.load(Ordering::Relaxed);
    loop {
        rt.sleep(limit).await;
        let now = outbox.activity.load(Ordering::Relaxed);
        if now == seen {
            return Closed::Idle(limit);
        }
        seen = now;
    }
}

/// Frames queued for one write: encoded bytes, with the bytes of big
/// stream chunks kept aside (shared, not copied) and written in place by a
/// vectored write.
#[derive(Default)]
struct Batch {
    /// Every frame's encoded bytes except the chunks kept aside.
    head: Vec<u8>,
    /// Chunks kept aside, each with the length of `head` it follows.
    bodies: Vec<(usize, Payload)>,
    /// Bytes in `head` and `bodies` together.
    len: usize,
    /// Bytes already written (a write that would have blocked part way).
    sent: usize,
}

impl Batch {
    /// Encodes `msg` at the end; the bytes it took (`None`: it cannot be
    /// framed and was dropped).
    fn push(&mut self, msg: Message, max: u32, version: u16) -> Option<usize> {
        let before = self.len;
        let head_before = self.head.len();
        match encode_message_for_version(msg, version, max, &mut self.head) {
            Ok(body) => {
                self.len += self.head.len() - head_before;
                if let Some(body) = body {
                    self.len += body.len();
                    self.bodies.push((self.head.len(), body));
                }
                Some(self.len - before)
            }
            Err(e) => {
                tracing::warn!(error = %e, "dropping a message that cannot be framed");
                None
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.sent == self.len
    }

    fn clear(&mut self) {
        self.head.clear();
        self.bodies.clear();
        self.len = 0;
        self.sent = 0;
        if self.head.capacity() > 4 * MAX_BATCH {
            self.head = Vec::with_capacity(64 * 1024);
        }
    }

    /// The bytes not written yet, in order, as at most [`MAX_SLICES`]
    /// slices in `slices`; returns how many. (An array on the caller's
    /// stack: a `Vec` here was an allocation per write.)
    fn unsent<'a>(&'a self, slices: &mut [IoSlice<'a>; MAX_SLICES]) -> usize {
        let mut n = 0;
        let mut skip = self.sent;
        let mut at = 0;
        let segments = self
            .bodies
            .iter()
            .flat_map(|(end, body)| {
                let head = &self.head[at..*end];
                at = *end;
                [head, &body[..]]
            })
            .chain(std::iter::once_with(|| &self.head[self.last_body_end()..]));
        for seg in segments {
            if skip >= seg.len() {
                skip -= seg.len();
                continue;
            }
            slices[n] = IoSlice::new(&seg[skip..]);
            n += 1;
            skip = 0;
            if n == MAX_SLICES {
                break;
            }
        }
        n
    }

    fn last_body_end(&self) -> usize {
        self.bodies.last().map_or(0, |(end, _)| *end)
    }

    /// Writes what is left, in order, with as few system calls as the
    /// stream allows; progress survives a `Pending`.
    fn poll_write(&mut self, w: &mut Writer, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.is_empty() {
            let n = {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let k = self.unsent(&mut slices);
                match w.as_mut().poll_write_vectored(cx, &slices[..k]) {
                    Poll::Ready(Ok(n)) => n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            };
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        Poll::Ready(Ok(()))
    }
}

/// A connection's write half, as the outbox keeps it.
type Writer = Pin<Box<dyn AsyncWrite + Send>>;

/// Why a frame was not queued.
pub(crate) enum Refused {
    /// The queue is full; the message comes back.
    Full(Message),
    /// The connection is gone (its `Down` event follows).
    Closed,
}

/// A connection's outgoing frames, shared by the driver (which queues and,
/// when the socket is free, writes) and the connection's task (which
/// finishes writes that would have blocked). Bounded: at most `capacity`
/// frames wait in it; beyond that the driver is told and drops the message,
/// as a full send queue always did.
pub(crate) struct Outbox {
    state: Mutex<OutboxState>,
    /// Counts frames read and writes done, for the idle check.
    activity: AtomicU64,
    /// The peer is a member of the view (or a node this one dialed): its
    /// frames come first on the frame budget.
    member: AtomicBool,
    /// What the connection's reader saw once it had read the frame just
    /// handed to the driver ([`INPUT_NONE`], [`INPUT_MORE`] or
    /// [`INPUT_DRAINED`]); the next flush takes it.
    input: AtomicU8,
    max_frame_len: u32,
    capacity: usize,
}

/// No frame was read since the last flush: the outbox is written on the
/// driver's account (commands, timers).
const INPUT_NONE: u8 = 0;
/// More bytes from the peer are already buffered behind the frame read:
/// its next frames follow at once, so what answers them can go out in one
/// write with them.
const INPUT_MORE: u8 = 1;
/// The frame read was the last the peer had sent: it waits for the answer,
/// which goes out now.
const INPUT_DRAINED: u8 = 2;

#[derive(Default)]
struct OutboxState {
    /// Encoded frames not written yet.
    pending: Batch,
    /// Frames in `pending`.
    frames: usize,
    /// The socket's write half while no one is writing it; `None` before
    /// the connection is up and while its task writes.
    writer: Option<Writer>,
    /// A write by the driver would have blocked: the connection's task
    /// finishes it, and the driver leaves the socket alone until it has.
    handed_off: bool,
    /// A flush the driver could not finish.
    unflushed: bool,
    /// The connection task's waker while it waits for work.
    waker: Option<Waker>,
    /// The driver let go: write what is queued, then close.
    closed: bool,
    /// The connection ended: nothing more is queued.
    dead: bool,
    /// A write by the driver failed; the connection task closes with it.
    error: Option<std::io::Error>,
    /// The driver wake that last flushed this outbox.
    last_flush: u64,
    /// The protocol version agreed with the peer; until the handshake is
    /// done (a dial queues before it), the oldest this build speaks, which
    /// every peer it can talk to decodes.
    version: u16,
    /// Until the handshake is done: the messages queued, kept to be
    /// encoded again for the version agreed (a first heartbeat encoded
    /// for version 1 would tell the leader this node cannot relay).
    early: Option<Vec<Message>>,
}

impl OutboxState {
    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// What the connection's task does next.
enum Work {
    Write(Writer, Batch),
    Close(Writer),
    Failed(std::io::Error),
}

impl Outbox {
    pub(crate) fn new(max_frame_len: u32, capacity: usize) -> Arc<Self> {
        Arc::new(Outbox {
            state: Mutex::new(OutboxState {
                version: MIN_PROTOCOL_VERSION,
                early: Some(Vec::new()),
                ..OutboxState::default()
            }),
            activity: AtomicU64::new(0),
            member: AtomicBool::new(false),
            input: AtomicU8::new(INPUT_NONE),
            max_frame_len,
            capacity: capacity.max(1),
        })
    }

    fn touch(&self) {
        self.activity.fetch_add(1, Ordering::Relaxed);
    }

    /// Puts the peer's frames first on the frame budget: the driver calls
    /// it for a member of the view; dialed connections start so.
    pub(crate) fn mark_member(&self) {
        self.member.store(true, Ordering::Relaxed);
    }

    fn is_member(&self) -> bool {
        self.member.load(Ordering::Relaxed)
    }

    /// The reader read a frame; `more`: bytes of the peer's next frames are
    /// already buffered behind it.
    fn note_input(&self, more: bool) {
        let input = if more { INPUT_MORE } else { INPUT_DRAINED };
        self.input.store(input, Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, OutboxState> {
        // Nothing in the state is left half-updated by a panic that could
        // be repaired by refusing the lock.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `msg`, during driver wake `wake`, and says how many encoded
    /// bytes it took (0: it could not be framed and was dropped, as
    /// logged). The driver writes nothing itself until [`Outbox::flush`].
    ///
    /// While traffic is flowing (the previous wake, `wake - 1`, wrote here
    /// too, and the peer is not waiting on this answer: see
    /// [`Outbox::flush`]) the connection's task is woken at once, so it
    /// writes while the driver goes on taking inputs rather than after the
    /// whole wake.
    pub(crate) fn push(&self, msg: Message, wake: u64) -> Result<usize, Refused> {
        let mut st = self.lock();
        if st.dead || st.closed {
            return Err(Refused::Closed);
        }
        if st.frames >= self.capacity {
            return Err(Refused::Full(msg));
        }
        let version = st.version;
        let early = st.early.is_some().then(|| msg.clone());
        let bytes = st.pending.push(msg, self.max_frame_len, version);
        if bytes.is_some() {
            st.frames += 1;
            if let (Some(kept), Some(msg)) = (st.early.as_mut(), early) {
                kept.push(msg);
            }
        }
        let answering = self.input.load(Ordering::Relaxed) == INPUT_DRAINED;
        if st.last_flush.wrapping_add(1) >= wake && st.last_flush != 0 && !answering {
            st.wake();
        }
        Ok(bytes.unwrap_or(0))
    }

    /// Writes what is queued straight into the socket if no one is writing
    /// it and it takes the bytes without blocking; otherwise wakes the
    /// connection's task to do it. Called by the driver once per wake
    /// (`wake` counts them), so everything the wake queued goes out in one
    /// write.
    ///
    /// When the previous wake wrote here too and what is queued is small,
    /// traffic is flowing (a pipeline of small messages): the connection's
    /// task writes instead, so what the next wakes queue while it is being
    /// scheduled goes out in the same write, rather than one system call
    /// per message. What the connection's reader saw decides instead when
    /// this wake read a frame from the peer: with more of its frames
    /// already buffered, traffic is flowing; with none, the peer waits on
    /// this answer (a request/reply round trip, where every wake both reads
    /// and writes here), and it is written at once. A batch of [`SPLIT_AT`] bytes or more (a stream chunk)
    /// is written here at once: handing it over left a stream's bytes
    /// waiting while the writer kept queueing (on tokio, the connection's
    /// task sat in the writer's worker's LIFO slot, which no other worker
    /// may steal, until the writer ran out of credit).
    pub(crate) fn flush(&self, wake: u64) {
        let mut st = self.lock();
        if st.pending.is_empty() && !st.unflushed {
            return;
        }
        let flowing = match self.input.swap(INPUT_NONE, Ordering::Relaxed) {
            INPUT_MORE => true,
            INPUT_DRAINED => false,
            _ => st.last_flush.wrapping_add(1) == wake,
        };
        st.last_flush = wake;
        if (flowing && st.pending.len < SPLIT_AT) || st.handed_off || st.error.is_some() {
            return st.wake();
        }
        let Some(mut w) = st.writer.take() else {
            // Not up yet, or the task is writing: it looks again when done.
            return st.wake();
        };
        // A no-op waker: if the socket would block, the connection's task
        // is woken below and registers its own waker by polling again.
        let mut cx = Context::from_waker(noop_waker_ref());
        let st = &mut *st;
        let written = match st.pending.poll_write(&mut w, &mut cx) {
            Poll::Ready(Ok(())) => {
                st.pending.clear();
                st.frames = 0;
                self.touch();
                match w.as_mut().poll_flush(&mut cx) {
                    Poll::Ready(Ok(())) => true,
                    Poll::Ready(Err(e)) => {
                        st.error = Some(e);
                        false
                    }
                    Poll::Pending => {
                        st.unflushed = true;
                        false
                    }
                }
            }
            Poll::Ready(Err(e)) => {
                st.error = Some(e);
                false
            }
            Poll::Pending => false,
        };
        st.writer = Some(w);
        if !written {
            st.handed_off = true;
            st.wake();
        }
    }

    /// The driver let go of the connection: what is queued is still
    /// written, then the connection closes.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.wake();
    }

    /// The connection is up, with this protocol version agreed: what was
    /// queued before (nothing of it written yet) is encoded again for it.
    fn set_version(&self, version: u16) {
        let mut st = self.lock();
        st.version = version;
        let Some(early) = st.early.take() else {
            return;
        };
        if version == MIN_PROTOCOL_VERSION || early.is_empty() || st.pending.sent > 0 {
            return;
        }
        let mut again = Batch::default();
        let mut frames = 0;
        for msg in early {
            if again.push(msg, self.max_frame_len, version).is_some() {
                frames += 1;
            }
        }
        st.pending = again;
        st.frames = frames;
    }

    fn install(&self, w: Writer) {
        let mut st = self.lock();
        if !st.dead {
            st.writer = Some(w);
        }
    }

    fn poll_work(&self, cx: &mut Context<'_>) -> Poll<Work> {
        let mut st = self.lock();
        if let Some(e) = st.error.take() {
            return Poll::Ready(Work::Failed(e));
        }
        let busy = !st.pending.is_empty() || st.unflushed;
        if busy || st.closed {
            if let Some(w) = st.writer.take() {
                if !busy {
                    return Poll::Ready(Work::Close(w));
                }
                let batch = std::mem::take(&mut st.pending);
                st.frames = 0;
                st.handed_off = false;
                st.unflushed = false;
                return Poll::Ready(Work::Write(w, batch));
            }
        }
        st.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// The connection's task is done writing: the socket is free again,
    /// and the batch's buffer is reused if nothing new was queued.
    fn give_back(&self, w: Writer, mut batch: Batch) {
        batch.clear();
        let mut st = self.lock();
        if st.dead {
            return;
        }
        st.writer = Some(w);
        if st.frames == 0 && st.pending.len == 0 {
            st.pending = batch;
        }
    }

    fn shut(&self) {
        let mut st = self.lock();
        st.dead = true;
        st.writer = None;
        st.pending.clear();
        st.frames = 0;
        st.waker = None;
    }
}

struct ShutOnDrop(Arc<Outbox>);

impl Drop for ShutOnDrop {
    fn drop(&mut self) {
        self.0.shut();
    }
}

/// The connection's side of its outbox: installs the write half, then
/// finishes whatever the driver could not write without blocking.
async fn write_loop(outbox: Arc<Outbox>, w: Writer) -> Closed {
    outbox.install(w);
    loop {
        match futures::future::poll_fn(|cx| outbox.poll_work(cx)).await {
            Work::Failed(e) => return Closed::Io(e),
            Work::Close(mut w) => {
                let _ = w.close().await;
                return Closed::Driver;
            }
            Work::Write(mut w, mut batch) => {
                let written = futures::future::poll_fn(|cx| batch.poll_write(&mut w, cx)).await;
                if let Err(e) = written {
                    return Closed::Io(e);
                }
                outbox.touch();
                // Written: let go of the stream chunks now rather than at
                // the next batch, which may be a while.
                batch.clear();
                if let Err(e) = w.flush().await {
                    return Closed::Io(e);
                }
                outbox.give_back(w, batch);
            }
        }
    }
}
