//! The TCP transport: dialing, accepting, the hello handshake, framing and
//! per-connection read and write loops. Each connection is one task that
//! reads frames into the driver's event channel and writes the frames the
//! driver queued for it, coalescing everything queued into one write.
//!
//! This room moves frames; it never interprets a protocol message, never
//! decides where a message goes (the driver does) and never touches the
//! node. Anything a peer sends that breaks the framing closes that
//! connection with a logged reason; the node keeps running.

use std::io::IoSlice;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use futures::future::{AbortHandle, Abortable, Either};
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use futures::{SinkExt, StreamExt};
use hedgerow_core::wire::{
    decode_body_shared, encode_frame, encode_message_split, peek_frame_len, Frame, LEN_PREFIX,
    SPLIT_AT,
};
use hedgerow_core::{Bytes, Hello, Message, NodeId, Payload};

use crate::runtime::{timeout, Runtime};

/// Identifies one connection for the driver's bookkeeping.
pub(crate) type ConnId = u64;

/// Largest batch of queued frames coalesced into one write.
const MAX_BATCH: usize = 256 * 1024;
/// Bytes read ahead of the current frame on an established connection.
const READ_AHEAD: usize = 16 * 1024;
/// Largest hello accepted. A hello is a few hundred bytes; reading it under
/// the full frame limit would let each of the bounded handshakes pin
/// megabytes before anyone is known.
const MAX_HELLO_LEN: u32 = 16 * 1024;

/// What connection tasks tell the driver.
pub(crate) enum NetEvent {
    /// A handshake succeeded; `tx` queues frames for this connection.
    Up {
        conn: ConnId,
        peer: NodeId,
        incarnation: u64,
        /// Set for inbound connections (dialed ones were registered with
        /// their queue at dial time).
        inbound: Option<(mpsc::Sender<Message>, AbortHandle)>,
    },
    /// A message arrived.
    Msg {
        conn: ConnId,
        peer: NodeId,
        msg: Message,
    },
    /// A connection ended (or a dial failed before it was up).
    Down {
        conn: ConnId,
        peer: NodeId,
        was_up: bool,
        reason: String,
    },
}

/// What every connection task shares.
pub(crate) struct NetCtx {
    pub(crate) hello: Hello,
    pub(crate) max_frame_len: u32,
    pub(crate) handshake_timeout: Duration,
    pub(crate) max_handshakes: usize,
    pub(crate) send_queue: usize,
    pub(crate) events: mpsc::Sender<NetEvent>,
    /// Buffers for big frame bodies, shared by every connection.
    bodies: Arc<BodyPool>,
    next_conn: AtomicU64,
    handshakes: AtomicUsize,
}

impl NetCtx {
    pub(crate) fn new(
        hello: Hello,
        max_frame_len: u32,
        handshake_timeout: Duration,
        max_handshakes: usize,
        send_queue: usize,
        events: mpsc::Sender<NetEvent>,
    ) -> Self {
        NetCtx {
            hello,
            max_frame_len,
            handshake_timeout,
            max_handshakes,
            send_queue,
            events,
            bodies: BodyPool::new(),
            next_conn: AtomicU64::new(1),
            handshakes: AtomicUsize::new(0),
        }
    }

    pub(crate) fn next_conn(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum Closed {
    Io(std::io::Error),
    Protocol(String),
    Eof,
    Driver,
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Closed::Io(e) => write!(f, "i/o error: {e}"),
            Closed::Protocol(why) => f.write_str(why),
            Closed::Eof => f.write_str("peer closed the connection"),
            Closed::Driver => f.write_str("closed by this node"),
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

/// Reads one frame, checking the announced length before allocating.
/// Bodies of [`SPLIT_AT`] bytes or more are read into a buffer from
/// `pool` (when given), which the decoded stream data then shares.
async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
    pool: Option<&Arc<BodyPool>>,
) -> Result<Frame, Closed> {
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
    let body = match pool {
        Some(pool) if len >= SPLIT_AT => {
            let mut buf = pool.take(len);
            r.read_exact(&mut buf.bytes).await.map_err(Closed::Io)?;
            Bytes::from_owner(buf)
        }
        _ => {
            let mut body = vec![0u8; len];
            r.read_exact(&mut body).await.map_err(Closed::Io)?;
            Bytes::from(body)
        }
    };
    // Shared, so stream data is handed on as a slice of this buffer.
    decode_body_shared(body).map_err(|e| Closed::Protocol(e.to_string()))
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

    /// A buffer of exactly `len` bytes (contents unspecified).
    fn take(self: &Arc<Self>, len: usize) -> PooledBody {
        let reused = if len <= POOL_BUFFER_MAX {
            self.free.lock().ok().and_then(|mut free| free.pop())
        } else {
            None
        };
        let mut bytes = reused.unwrap_or_default();
        // A reused buffer only shrinks or grows its initialized length:
        // no zeroing of bytes that are about to be overwritten anyway.
        bytes.resize(len, 0);
        PooledBody {
            bytes,
            pool: self.clone(),
        }
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
/// connection with frames from `queue`. Spawned by the driver.
pub(crate) fn spawn_dial<R: Runtime>(
    rt: &R,
    ctx: Arc<NetCtx>,
    conn: ConnId,
    peer: NodeId,
    addr: String,
    queue: mpsc::Receiver<Message>,
) -> AbortHandle {
    let (abort, reg) = AbortHandle::new_pair();
    let rt2 = rt.clone();
    let task = async move {
        let mut events = ctx.events.clone();
        let limit = ctx.handshake_timeout;
        let dialed = timeout(&rt2, limit, dial_handshake(&rt2, &ctx, &peer, addr.clone())).await;
        let (stream, incarnation) = match dialed {
            Some(Ok(x)) => x,
            failed => {
                let reason = match failed {
                    Some(Err(e)) => e.to_string(),
                    _ => "connect or handshake timed out".to_string(),
                };
                tracing::debug!(%peer, %addr, %reason, "dial failed");
                let _ = events
                    .send(NetEvent::Down {
                        conn,
                        peer,
                        was_up: false,
                        reason,
                    })
                    .await;
                return;
            }
        };
        let up = NetEvent::Up {
            conn,
            peer: peer.clone(),
            incarnation,
            inbound: None,
        };
        if events.send(up).await.is_err() {
            return;
        }
        run(stream, ctx, conn, peer, queue).await;
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
) -> Result<(R::Stream, u64), Closed> {
    let mut s = rt.connect(addr).await.map_err(Closed::Io)?;
    write_frame(&mut s, &Frame::Hello(ctx.hello.clone()), ctx.max_frame_len).await?;
    match read_frame(&mut s, MAX_HELLO_LEN.min(ctx.max_frame_len), None).await? {
        Frame::Hello(h) => {
            if let Err(e) = ctx.hello.negotiate(&h) {
                return Err(Closed::Protocol(format!("handshake refused by us: {e}")));
            }
            if &h.node_id != expected {
                return Err(Closed::Protocol(format!(
                    "expected node {expected} at that address, found {}",
                    h.node_id
                )));
            }
            Ok((s, h.incarnation))
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
            if ctx.handshakes.load(Ordering::Relaxed) >= ctx.max_handshakes {
                tracing::warn!(%from, limit = ctx.max_handshakes, "too many handshakes in progress; closing new connection");
                drop(stream);
                continue;
            }
            ctx.handshakes.fetch_add(1, Ordering::Relaxed);
            let (conn_abort, conn_reg) = AbortHandle::new_pair();
            let ctx2 = ctx.clone();
            let rt3 = rt2.clone();
            let conn = ctx.next_conn();
            let task = async move {
                let limit = ctx2.handshake_timeout;
                let shaken = timeout(&rt3, limit, accept_handshake(&ctx2, stream)).await;
                ctx2.handshakes.fetch_sub(1, Ordering::Relaxed);
                let (stream, hello) = match shaken {
                    Some(Ok(x)) => x,
                    Some(Err(e)) => {
                        tracing::info!(%from, reason = %e, "inbound handshake failed");
                        return;
                    }
                    None => {
                        tracing::info!(%from, "inbound handshake timed out");
                        return;
                    }
                };
                let (tx, rx) = mpsc::channel(ctx2.send_queue);
                let up = NetEvent::Up {
                    conn,
                    peer: hello.node_id.clone(),
                    incarnation: hello.incarnation,
                    inbound: Some((tx, conn_abort)),
                };
                let mut events = ctx2.events.clone();
                if events.send(up).await.is_err() {
                    return;
                }
                run(stream, ctx2, conn, hello.node_id, rx).await;
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
    ctx: &NetCtx,
    mut s: S,
) -> Result<(S, Hello), Closed> {
    let max = ctx.max_frame_len;
    let hello = match read_frame(&mut s, MAX_HELLO_LEN.min(max), None).await? {
        Frame::Hello(h) => h,
        _ => {
            let why = hedgerow_core::HandshakeError::NotHello.to_string();
            let _ = write_frame(&mut s, &Frame::Refuse(why.clone()), max).await;
            return Err(Closed::Protocol(why));
        }
    };
    if let Err(e) = ctx.hello.negotiate(&hello) {
        let why = e.to_string();
        tracing::warn!(peer = %hello.node_id, addr = %hello.addr, reason = %why, "refusing peer");
        let _ = write_frame(&mut s, &Frame::Refuse(why.clone()), max).await;
        let _ = s.close().await;
        return Err(Closed::Protocol(why));
    }
    write_frame(&mut s, &Frame::Hello(ctx.hello.clone()), max).await?;
    Ok((s, hello))
}

/// Runs an established connection until either direction ends, then tells
/// the driver.
async fn run<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    ctx: Arc<NetCtx>,
    conn: ConnId,
    peer: NodeId,
    queue: mpsc::Receiver<Message>,
) {
    let (r, w) = stream.split();
    let max = ctx.max_frame_len;
    // A small read-ahead: it gathers small frames in few reads, while
    // most of a big frame's body is read straight into its own buffer
    // rather than through this one.
    let reader = read_loop(
        BufReader::with_capacity(READ_AHEAD, r),
        max,
        ctx.bodies.clone(),
        conn,
        peer.clone(),
        ctx.events.clone(),
    );
    let writer = write_loop(w, max, queue);
    let closed = match futures::future::select(Box::pin(reader), Box::pin(writer)).await {
        Either::Left((c, _)) | Either::Right((c, _)) => c,
    };
    match &closed {
        Closed::Protocol(why) => tracing::warn!(%peer, reason = %why, "closing connection"),
        other => tracing::debug!(%peer, reason = %other, "connection closed"),
    }
    let mut events = ctx.events.clone();
    let down = NetEvent::Down {
        conn,
        peer,
        was_up: true,
        reason: closed.to_string(),
    };
    let _ = events.send(down).await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut r: R,
    max: u32,
    bodies: Arc<BodyPool>,
    conn: ConnId,
    peer: NodeId,
    mut events: mpsc::Sender<NetEvent>,
) -> Closed {
    loop {
        let frame = match read_frame(&mut r, max, Some(&bodies)).await {
            Ok(f) => f,
            Err(c) => return c,
        };
        let msg = match frame {
            Frame::Msg(m) => m,
            Frame::Hello(_) => return Closed::Protocol("second hello on one connection".into()),
            Frame::Refuse(why) => return Closed::Protocol(format!("peer refused: {why}")),
        };
        // Awaiting here pushes back on the peer through TCP when the driver
        // is busy, instead of buffering without bound.
        if events
            .send(NetEvent::Msg {
                conn,
                peer: peer.clone(),
                msg,
            })
            .await
            .is_err()
        {
            return Closed::Driver;
        }
    }
}

/// Frames queued for one write: encoded bytes, with the bytes of big
/// stream chunks kept aside (shared, not copied) and written in place by a
/// vectored write.
struct Batch {
    /// Every frame's encoded bytes except the chunks kept aside.
    head: Vec<u8>,
    /// Chunks kept aside, each with the length of `head` it follows.
    bodies: Vec<(usize, Payload)>,
    /// Bytes in `head` and `bodies` together.
    len: usize,
}

impl Batch {
    fn push(&mut self, msg: Message, max: u32) {
        let before = self.head.len();
        match encode_message_split(msg, max, &mut self.head) {
            Ok(body) => {
                self.len += self.head.len() - before;
                if let Some(body) = body {
                    self.len += body.len();
                    self.bodies.push((self.head.len(), body));
                }
            }
            Err(e) => tracing::warn!(error = %e, "dropping a message that cannot be framed"),
        }
    }

    fn clear(&mut self) {
        self.head.clear();
        self.bodies.clear();
        self.len = 0;
        if self.head.capacity() > 4 * MAX_BATCH {
            self.head = Vec::with_capacity(64 * 1024);
        }
    }

    /// Writes everything, in order, with as few system calls as the
    /// stream allows.
    async fn write_to<W: AsyncWrite + Unpin>(&self, w: &mut W) -> std::io::Result<()> {
        let mut slices = Vec::with_capacity(2 * self.bodies.len() + 1);
        let mut at = 0;
        for (end, body) in &self.bodies {
            slices.push(IoSlice::new(&self.head[at..*end]));
            slices.push(IoSlice::new(body));
            at = *end;
        }
        slices.push(IoSlice::new(&self.head[at..]));
        slices.retain(|s| !s.is_empty());
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            let n = w.write_vectored(slices).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut slices, n);
        }
        Ok(())
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    max: u32,
    mut queue: mpsc::Receiver<Message>,
) -> Closed {
    let mut batch = Batch {
        head: Vec::with_capacity(64 * 1024),
        bodies: Vec::new(),
        len: 0,
    };
    loop {
        let Some(first) = queue.next().await else {
            // The driver dropped the queue: flush what is there and close.
            let _ = w.close().await;
            return Closed::Driver;
        };
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            batch.push(msg, max);
            if batch.len < MAX_BATCH {
                next = queue.try_recv().ok();
            }
        }
        if batch.len == 0 {
            continue;
        }
        if let Err(e) = batch.write_to(&mut w).await {
            return Closed::Io(e);
        }
        // Written: let go of the stream chunks now rather than at the next
        // batch, which may be a while.
        batch.clear();
        if let Err(e) = w.flush().await {
            return Closed::Io(e);
        }
    }
}
