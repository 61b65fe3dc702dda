//! The public API: [`Hedgerow`], its [`Builder`], and the streams of
//! watch events and broadcast replies. Everything here talks to the driver
//! through [`Commands`], except the read-only queries, which ask the node
//! directly (under a short lock) with a fresh clock reading. The values it
//! hands out live in `types`, the stream handles in `stream`.

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use futures::Stream;
use hedgerow_clock::Clock;
use hedgerow_core::{
    Bytes, Config, Hello, Identity, LeaderInfo, Member, Node, NodeId, NodeStats, Term,
};

use crate::driver::{self, Handlers};
use crate::input::{BroadcastItem, Command, Commands, StreamCommand};
use crate::runtime::{BoxFuture, Runtime};
use crate::store::{AsyncLeaseStore, LeaseStore};
use crate::stream::{BroadcastStream, IncomingStream, SendStream};
use crate::tls::{Tls, TlsContext};
use crate::transport::{self, NetCtx, TransportStats};
use crate::types::{
    lock, BroadcastRequest, Error, LeaderGuard, Reply, Request, Status, WatchEvent,
};

/// Membership and leadership changes as they happen (see [`WatchEvent`]),
/// starting with [`WatchEvent::Current`], the state when the watch began.
/// Events are dropped (with a warning) while this stream is not read and
/// its buffer of 1024 is full. It ends when the node stops.
#[derive(Debug)]
pub struct Watch(mpsc::Receiver<WatchEvent>);

impl Stream for Watch {
    type Item = WatchEvent;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchEvent>> {
        Pin::new(&mut self.0).poll_next(cx)
    }
}

/// The replies to a broadcast as they arrive, one per member (a timeout is
/// an [`Error::Timeout`] item, a member that left the view before it
/// answered an [`Error::MemberLeft`] one); ends when every member answered,
/// left or timed out.
#[derive(Debug)]
pub struct BroadcastReplies(mpsc::UnboundedReceiver<BroadcastItem>);

impl Stream for BroadcastReplies {
    type Item = (NodeId, Result<Bytes, Error>);
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.0).poll_next(cx)
    }
}

/// A running hedgerow node: membership, leader election and messaging
/// among the instances of one service.
///
/// Clones are handles to the same node. It runs until [`Hedgerow::leave`]
/// or [`Hedgerow::shutdown`], or until every handle (and every open
/// [`SendStream`]) is dropped.
///
/// ```
/// # #[cfg(feature = "tokio")]
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use hedgerow::{clock::SystemClock, store::MemoryStore, Config, Hedgerow};
///
/// let node = Hedgerow::builder("orders", "web-1", "127.0.0.1:0")
///     .store(MemoryStore::new())
///     .clock(SystemClock::new(Duration::from_millis(1)))
///     .preset(Config::local)
///     .config(|c| c.lead_on_assumed_clock = true) // a system clock is not ClockBound
///     .leader_handler(|req| async move { Ok(req.payload) }) // echo
///     .start()
///     .await?;
/// node.wait_for_leader(Duration::from_secs(5)).await?;
/// let reply = node.send("ping").await?;
/// assert_eq!(reply.payload, "ping");
/// node.shutdown().await;
/// # Ok::<(), hedgerow::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Hedgerow {
    node: Arc<Mutex<Node>>,
    clock: Arc<dyn Clock>,
    /// The transport, for its counters.
    net: Arc<NetCtx>,
    commands: Commands,
    id: NodeId,
    addr: String,
    local_addr: SocketAddr,
    /// The runtime's sleep, for the waits with a timeout.
    sleep: Sleep,
}

type Sleep = Arc<dyn Fn(Duration) -> BoxFuture<'static, ()> + Send + Sync>;

impl fmt::Debug for Hedgerow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedgerow")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Hedgerow {
    /// Starts building a node of `cluster` named `id` (unique among live
    /// instances, e.g. the pod name) that peers reach at `advertise_addr`
    /// (`host:port`; port 0 means "the port the listener gets").
    #[cfg(any(feature = "tokio", feature = "smol", feature = "async-std"))]
    pub fn builder(
        cluster: impl Into<String>,
        id: impl Into<String>,
        advertise_addr: impl Into<String>,
    ) -> Builder<crate::runtime::DefaultRuntime> {
        Builder::new(cluster, id, advertise_addr)
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// The address peers reach this node at.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The members of the current view (this node included once it has
    /// joined a leader's view).
    pub fn members(&self) -> Vec<Member> {
        lock(&self.node).view().members().cloned().collect()
    }

    /// The current view's `(authoring leader's term, version)` stamp; it
    /// only grows, so a monitor can tell an old view from a new one.
    pub fn view_stamp(&self) -> (Term, u64) {
        lock(&self.node).view().stamp()
    }

    /// Counters for metrics (messages sent and received, store operations,
    /// elections won, leader changes seen).
    pub fn stats(&self) -> NodeStats {
        lock(&self.node).stats()
    }

    /// What the transport counted: refused and closed connections by
    /// reason, and the frame budget's use.
    pub fn transport_stats(&self) -> TransportStats {
        self.net.stats()
    }

    /// Whether the view may be out of date (no leader known, or the leader
    /// has not answered for a failure timeout).
    pub fn view_is_stale(&self) -> bool {
        lock(&self.node).view_is_stale()
    }

    /// The leader this node follows (itself when leading), if known.
    pub fn leader(&self) -> Option<LeaderInfo> {
        lock(&self.node).leader().cloned()
    }

    /// Whether this node leads right now, from a fresh clock reading
    /// against its stored lease expiry: a process paused past its lease
    /// answers `false` the moment it resumes. `false` when the clock cannot
    /// be read.
    pub fn is_leader(&self) -> bool {
        self.try_is_leader().unwrap_or(false)
    }

    /// As [`Hedgerow::is_leader`], saying when the clock cannot be read.
    pub fn try_is_leader(&self) -> Result<bool, Error> {
        let now = self.clock.now().map_err(Error::Clock)?;
        Ok(lock(&self.node).is_leader(&now))
    }

    /// Where this node stands, read at once: whether it leads and, if
    /// not, why ([`Status::not_leading`]), the leader it follows, the
    /// view and the clock.
    ///
    /// ```
    /// # #[cfg(feature = "tokio")]
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// use hedgerow::{clock::SystemClock, store::MemoryStore, Hedgerow, NotLeadingReason};
    ///
    /// // A system clock without `lead_on_assumed_clock`: a member that can never lead.
    /// let node = Hedgerow::builder("orders", "web-1", "127.0.0.1:0")
    ///     .store(MemoryStore::new())
    ///     .clock(SystemClock::new(Duration::from_millis(1)))
    ///     .start()
    ///     .await?;
    /// let status = node.status();
    /// assert_eq!(status.not_leading, Some(NotLeadingReason::AssumedClockNotAllowed));
    /// assert!(status.to_string().contains("lead_on_assumed_clock"), "{status}");
    /// node.shutdown().await;
    /// # Ok::<(), hedgerow::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn status(&self) -> Status {
        let now = self.clock.now();
        let node = lock(&self.node);
        let (is_leader, not_leading, not_ready) = match &now {
            Ok(now) => (
                node.is_leader(now),
                node.not_leading_reason(now),
                node.not_ready_reason(now),
            ),
            Err(_) => (
                false,
                Some(hedgerow_core::NotLeadingReason::ClockUntrusted),
                node.not_ready_reason(&unreadable_clock()),
            ),
        };
        Status {
            id: self.id.clone(),
            running: self.is_running(),
            is_leader,
            not_leading,
            not_ready,
            leader: node.leader().cloned(),
            term: node.term(),
            members: node.view().members().count(),
            view: node.view().stamp(),
            view_is_stale: node.view_is_stale(),
            clock: self.clock.describe(),
        }
    }

    /// Whether this node's driver still runs: `false` once it stopped
    /// ([`Hedgerow::leave`], [`Hedgerow::shutdown`], every handle dropped,
    /// or its task ended). What a liveness probe asks.
    pub fn is_running(&self) -> bool {
        !self.commands.is_closed()
    }

    /// Waits until a leader is known (this node or another) and returns
    /// it; [`Error::NoLeaderWithin`] after `timeout`, saying why this node
    /// did not lead itself, and [`Error::Closed`] if the node stops first.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<LeaderInfo, Error> {
        use futures::StreamExt;
        let mut watch = self.watch();
        let wait = async {
            loop {
                if let Some(leader) = self.leader() {
                    return Ok(leader);
                }
                if watch.next().await.is_none() {
                    return Err(Error::Closed);
                }
            }
        };
        match self.within(timeout, wait).await {
            Some(r) => r,
            None => Err(Error::NoLeaderWithin {
                waited: timeout,
                this_node: self.status().not_leading,
            }),
        }
    }

    /// Waits until the view holds at least `n` members (this node
    /// included) and returns them; [`Error::Timeout`] after `timeout`,
    /// [`Error::Closed`] if the node stops first. A broadcast goes to the
    /// view as it is when called, so right after start call this first to
    /// reach the peers you expect.
    pub async fn wait_for_members(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Member>, Error> {
        use futures::StreamExt;
        let mut watch = self.watch();
        let wait = async {
            loop {
                let members = self.members();
                if members.len() >= n {
                    return Ok(members);
                }
                if watch.next().await.is_none() {
                    return Err(Error::Closed);
                }
            }
        };
        self.within(timeout, wait)
            .await
            .unwrap_or(Err(Error::Timeout))
    }

    /// Runs `fut`, giving up after `limit` on the node's runtime.
    async fn within<T>(&self, limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
        use futures::future::{select, Either};
        let fut = std::pin::pin!(fut);
        match select(fut, (self.sleep)(limit)).await {
            Either::Left((v, _)) => Some(v),
            Either::Right(((), _)) => None,
        }
    }

    /// This node's own lease claim `(term, expires_ns)` as of its last
    /// successful write, if it holds one; it may already have lapsed
    /// ([`Hedgerow::is_leader`] says). For monitors and simulators that
    /// check leadership intervals against true time.
    pub fn lease_claim(&self) -> Option<(Term, u64)> {
        lock(&self.node).lease_claim()
    }

    /// This process's incarnation (random per start).
    pub fn incarnation(&self) -> u64 {
        lock(&self.node).identity().incarnation
    }

    /// A guard on this node's leadership if it leads now (see
    /// [`LeaderGuard`]); `None` otherwise.
    pub async fn leader_guard(&self) -> Option<LeaderGuard> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Guard { reply }).ok()?;
        rx.await.ok().flatten()
    }

    /// The highest term confirmed to this node: the leader's fencing token.
    pub fn term(&self) -> Term {
        lock(&self.node).term()
    }

    /// Membership and leadership changes: first [`WatchEvent::Current`],
    /// the state now, then every change from it. The stream ends when the
    /// node stops (at once if it already has).
    pub fn watch(&self) -> Watch {
        let (tx, rx) = mpsc::channel(1024);
        let _ = self.commands.send(Command::Watch(tx));
        Watch(rx)
    }

    /// Sends `payload` to the leader and waits for its handler's reply,
    /// retrying (same request id) across redirects and failovers until the
    /// configured `request_timeout`.
    pub async fn send(&self, payload: impl Into<Bytes>) -> Result<Reply, Error> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Send {
            payload: payload.into(),
            reply,
        })?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Sends `payload` to every member of the view as this node knows it
    /// at the call (this node included) and collects one result per member;
    /// [`Error::Closed`] if the node has stopped.
    ///
    /// The view is the one of the call: right after start it may hold only
    /// this node, or none (no leader yet), and members that join later do
    /// not get this broadcast. To reach the peers you expect, wait for them
    /// first with [`Hedgerow::wait_for_members`].
    ///
    /// Each member's handler runs once: a member not heard from is sent the
    /// broadcast again (from `request_retry_interval` on, backing off) until
    /// `broadcast_timeout`, and a member answers a retry with the answer it
    /// already gave. A member that leaves the view first (it left, was
    /// declared failed, or restarted) gets [`Error::MemberLeft`] at once:
    /// it may have handled the broadcast.
    pub async fn broadcast(
        &self,
        payload: impl Into<Bytes>,
    ) -> Result<Vec<(NodeId, Result<Bytes, Error>)>, Error> {
        use futures::StreamExt;
        Ok(self.broadcast_each(payload)?.collect().await)
    }

    /// As [`Hedgerow::broadcast`], handing out each reply as it arrives.
    pub fn broadcast_each(&self, payload: impl Into<Bytes>) -> Result<BroadcastReplies, Error> {
        let (replies, rx) = mpsc::unbounded();
        self.command(Command::Broadcast {
            payload: payload.into(),
            to: None,
            replies,
        })?;
        Ok(BroadcastReplies(rx))
    }

    /// As [`Hedgerow::broadcast`], to the members named in `to` only
    /// (hedge's `OnlySendTo`). Each id that is not in this node's view gets
    /// its own `Err` (nothing was sent to it), never a silent gap.
    pub async fn broadcast_to(
        &self,
        to: &[NodeId],
        payload: impl Into<Bytes>,
    ) -> Result<Vec<(NodeId, Result<Bytes, Error>)>, Error> {
        use futures::StreamExt;
        let (replies, rx) = mpsc::unbounded();
        self.command(Command::Broadcast {
            payload: payload.into(),
            to: Some(to.to_vec()),
            replies,
        })?;
        Ok(BroadcastReplies(rx).collect().await)
    }

    /// Opens a stream to the leader (its stream handler reads it).
    pub async fn send_stream(&self) -> Result<SendStream, Error> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Stream(StreamCommand::Open { reply }))?;
        let id = rx.await.map_err(|_| Error::Closed)??;
        Ok(SendStream::new(id, None, self.commands.clone()))
    }

    /// Opens a stream to every member of the current view, this node
    /// included (each member's stream handler reads its leg).
    pub async fn broadcast_stream(&self) -> Result<BroadcastStream, Error> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Stream(StreamCommand::OpenBroadcast { reply }))?;
        let mut legs = Vec::new();
        let mut failed = Vec::new();
        for (to, r) in rx.await.map_err(|_| Error::Closed)? {
            match r {
                Ok(id) => legs.push(SendStream::new(id, Some(to), self.commands.clone())),
                Err(e) => failed.push((to, e)),
            }
        }
        Ok(BroadcastStream::new(legs, failed))
    }

    /// Sets this node's metadata (at most `max_meta_len` bytes); members
    /// see it in the view after the next heartbeat.
    pub async fn set_meta(&self, meta: impl Into<Bytes>) -> Result<(), Error> {
        let (done, rx) = oneshot::channel();
        self.command(Command::SetMeta {
            meta: meta.into(),
            done,
        })?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Releases the lease now if held (e.g. before a rolling deploy
    /// replaces this instance), waits for the release to be stored, and
    /// stays out of the race for one lease duration; the node stays a
    /// member. Like [`Hedgerow::leave`], an [`Error::Store`] says the
    /// release could not be confirmed (the lease then lapses on its own).
    /// Returns at once when this node does not lead.
    pub async fn resign(&self) -> Result<(), Error> {
        let (done, rx) = oneshot::channel();
        self.command(Command::Resign { done })?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Leaves the group gracefully: releases the lease if held, tells the
    /// leader, waits for the release to be stored, then stops. An
    /// [`Error::Store`] says the release could not be confirmed (the lease
    /// then lapses on its own).
    ///
    /// A successor takes over once it has heard of the release, not at
    /// once. Members in the leader's view hear the leader's notice and
    /// race for the row, staggered by rank; a node not yet in the view
    /// learns of it only when it next reads the row, after a failure
    /// timeout. Measured with `examples/tokio_cluster.rs` (three nodes in
    /// one process, `Config::local`, SQLite, 5 runs each): 14–23 ms from
    /// `leave` to the successor's election once the view held all three,
    /// 606–618 ms right after the first election, before the others had
    /// joined (the failure timeout, 600 ms); after a
    /// [`Hedgerow::shutdown`] the successor waits for the lease to expire.
    pub async fn leave(&self) -> Result<(), Error> {
        let (done, rx) = oneshot::channel();
        self.command(Command::Leave { done })?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Stops at once, without a goodbye: connections close and a held
    /// lease is left to lapse (another node takes over after it expires).
    /// Prefer [`Hedgerow::leave`] for a planned stop.
    pub async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.command(Command::Shutdown { done }).is_ok() {
            let _ = rx.await;
        }
    }

    pub(crate) fn command(&self, c: Command) -> Result<(), Error> {
        self.commands.send(c)
    }

    /// `f` on the node at a fresh clock reading.
    pub(crate) fn at_now<T>(
        &self,
        f: impl FnOnce(&Node, &hedgerow_core::Now) -> T,
    ) -> Result<T, Error> {
        let now = self.clock.now().map_err(Error::Clock)?;
        Ok(f(&lock(&self.node), &now))
    }
}

/// A reading that says nothing: for the queries that need one when the
/// clock cannot be read. Its status is Unknown, so no lease is valid at it.
fn unreadable_clock() -> hedgerow_core::Now {
    use hedgerow_core::{ClockReading, ClockSource, ClockStatus, MonoTime, Now, TimeInterval};
    Now {
        mono: MonoTime::ZERO,
        clock: ClockReading {
            interval: TimeInterval {
                earliest: 0,
                latest: 0,
            },
            status: ClockStatus::Unknown,
            source: ClockSource::ClockBound,
        },
    }
}

type ConfigTweak = Box<dyn FnOnce(&mut Config) + Send>;

/// Sets up a [`Hedgerow`] node; see [`Hedgerow::builder`].
pub struct Builder<R: Runtime> {
    cluster: String,
    id: String,
    advertise: String,
    listen: Option<String>,
    store: Option<driver::Store>,
    clock: Option<Arc<dyn Clock>>,
    preset: fn(String) -> Config,
    tweak: Option<ConfigTweak>,
    handlers: Handlers,
    runtime: Option<R>,
    seed: Option<u64>,
    incarnation: Option<u64>,
    store_timeout: Option<Duration>,
    handshake_timeout: Duration,
    max_handshakes: usize,
    max_handshakes_per_ip: usize,
    max_inbound: Option<usize>,
    idle_timeout: Option<Duration>,
    send_queue: usize,
    frame_budget: usize,
    frame_timeout: Duration,
    max_inbound_per_ip: usize,
    tls: Option<Tls>,
}

impl<R: Runtime> fmt::Debug for Builder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("cluster", &self.cluster)
            .field("id", &self.id)
            .field("advertise", &self.advertise)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> Builder<R> {
    /// A builder for runtime `R` (found from the calling context unless
    /// given with [`Builder::runtime`]).
    pub fn new(
        cluster: impl Into<String>,
        id: impl Into<String>,
        advertise_addr: impl Into<String>,
    ) -> Self {
        Builder {
            cluster: cluster.into(),
            id: id.into(),
            advertise: advertise_addr.into(),
            listen: None,
            store: None,
            clock: None,
            preset: Config::lan,
            tweak: None,
            handlers: Handlers {
                leader: None,
                broadcast: None,
                stream: None,
                max_in_flight: 64,
            },
            runtime: None,
            seed: None,
            incarnation: None,
            store_timeout: None,
            handshake_timeout: Duration::from_secs(5),
            max_handshakes: 64,
            max_handshakes_per_ip: 8,
            max_inbound: None,
            idle_timeout: None,
            send_queue: 256,
            frame_budget: 32 << 20,
            frame_timeout: Duration::from_secs(10),
            max_inbound_per_ip: 64,
            tls: None,
        }
    }

    /// Mutual TLS on the cluster port: every peer must show a certificate
    /// from `tls`'s CA that names a node of this cluster, and the node id
    /// its hello claims; peers without TLS are refused (and told why).
    /// Off by default: then the port must sit on a private network.
    ///
    /// ```no_run
    /// # #[cfg(feature = "tokio")]
    /// # async fn f() -> Result<(), hedgerow::Error> {
    /// let node = hedgerow::Hedgerow::builder("shop", "n1", "10.0.0.1:7000")
    ///     .tls(hedgerow::Tls::from_files("certs/ca.pem", "certs/n1.pem", "certs/n1.key"))
    ///     .store(hedgerow::store::MemoryStore::new())
    ///     .start()
    ///     .await?;
    /// # drop(node); Ok(()) }
    /// ```
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Runs on `runtime` instead of the default one.
    pub fn runtime<R2: Runtime>(self, runtime: R2) -> Builder<R2> {
        Builder {
            cluster: self.cluster,
            id: self.id,
            advertise: self.advertise,
            listen: self.listen,
            store: self.store,
            clock: self.clock,
            preset: self.preset,
            tweak: self.tweak,
            handlers: self.handlers,
            runtime: Some(runtime),
            seed: self.seed,
            incarnation: self.incarnation,
            store_timeout: self.store_timeout,
            handshake_timeout: self.handshake_timeout,
            max_handshakes: self.max_handshakes,
            max_handshakes_per_ip: self.max_handshakes_per_ip,
            max_inbound: self.max_inbound,
            idle_timeout: self.idle_timeout,
            send_queue: self.send_queue,
            frame_budget: self.frame_budget,
            frame_timeout: self.frame_timeout,
            max_inbound_per_ip: self.max_inbound_per_ip,
            tls: self.tls,
        }
    }

    /// Where to listen (`host:port`); default: the advertised address.
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = Some(addr.into());
        self
    }

    /// The lease store every node of the cluster shares (required).
    pub fn store(mut self, store: impl LeaseStore + 'static) -> Self {
        self.store = Some(driver::Store::Blocking(Arc::new(store)));
        self
    }

    /// A lease store whose calls are futures (see
    /// [`AsyncLeaseStore`](crate::store::AsyncLeaseStore)), instead of
    /// [`Builder::store`]; the driver runs its calls as tasks on the
    /// runtime, with the same timeout.
    pub fn async_store(mut self, store: impl AsyncLeaseStore + 'static) -> Self {
        self.store = Some(driver::Store::Async(Arc::new(store)));
        self
    }

    /// The clock (default: ClockBound if its segment exists, else a clock
    /// that never leads; see [`ClockConfig`](crate::clock::ClockConfig)).
    /// Without a ClockBound daemon, name the system clock and the bound
    /// you vouch for, and allow leading on it:
    /// `.clock(hedgerow::clock::SystemClock::new(bound))` and
    /// `.config(|c| c.lead_on_assumed_clock = true)`;
    /// [`Hedgerow::status`] says when a node cannot lead.
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// The timings to start from: [`Config::lan`] (the default),
    /// [`Config::local`] (one machine: tests, demos) or [`Config::wan`].
    /// [`Builder::config`] then adjusts them.
    ///
    /// ```
    /// # #[cfg(feature = "tokio")] {
    /// use hedgerow::{Config, Hedgerow};
    /// let builder = Hedgerow::builder("orders", "web-1", "127.0.0.1:0").preset(Config::local);
    /// # }
    /// ```
    pub fn preset(mut self, preset: fn(String) -> Config) -> Self {
        self.preset = preset;
        self
    }

    /// Adjusts the node configuration (starts from the [`Builder::preset`],
    /// `Config::lan(cluster)` unless set; the cluster id itself cannot be
    /// changed here).
    pub fn config(mut self, tweak: impl FnOnce(&mut Config) + Send + 'static) -> Self {
        self.tweak = Some(Box::new(tweak));
        self
    }

    /// Answers [`Hedgerow::send`]s while this node leads. `Err` goes back
    /// to the sender as [`Error::Refused`].
    ///
    /// The handler's future is polled once on the node's own turn: an
    /// answer ready without waiting (an echo, a lookup in memory) goes out
    /// in the same step, with no task spawned for it; one that waits runs
    /// on as a task of its own. Work it does before its first wait holds
    /// the node up meanwhile, so a handler that computes or blocks for
    /// long should wait first (a `spawn_blocking`, a channel).
    pub fn leader_handler<F, Fut, B>(mut self, handler: F) -> Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<B, String>> + Send + 'static,
        B: Into<Bytes>,
    {
        use futures::FutureExt;
        self.handlers.leader = Some(Arc::new(move |r| {
            Box::pin(handler(r).map(|r| r.map(Into::into)))
        }));
        self
    }

    /// Answers broadcasts (this node's own included). Polled as
    /// [`Builder::leader_handler`]'s is.
    pub fn broadcast_handler<F, Fut, B>(mut self, handler: F) -> Self
    where
        F: Fn(BroadcastRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<B, String>> + Send + 'static,
        B: Into<Bytes>,
    {
        use futures::FutureExt;
        self.handlers.broadcast = Some(Arc::new(move |r| {
            Box::pin(handler(r).map(|r| r.map(Into::into)))
        }));
        self
    }

    /// Reads streams sent to this node. Without one, their bytes are
    /// discarded (and a warning logged).
    pub fn stream_handler<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(IncomingStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.handlers.stream = Some(Arc::new(move |s| Box::pin(handler(s))));
        self
    }

    /// Most request and broadcast handler calls running at once (default
    /// 64); more wait their turn. Stream handlers are bounded by the
    /// core's `max_streams` instead.
    pub fn max_handlers(mut self, n: usize) -> Self {
        self.handlers.max_in_flight = n.max(1);
        self
    }

    /// How long a store call may take before the node treats it as failed
    /// (default: the renew interval, a third of the lease).
    pub fn store_timeout(mut self, limit: Duration) -> Self {
        self.store_timeout = Some(limit);
        self
    }

    /// How long a connect plus handshake may take (default 5 s).
    pub fn handshake_timeout(mut self, limit: Duration) -> Self {
        self.handshake_timeout = limit;
        self
    }

    /// Most inbound handshakes in progress at once (default 64).
    pub fn max_handshakes(mut self, n: usize) -> Self {
        self.max_handshakes = n.max(1);
        self
    }

    /// Most inbound handshakes in progress at once from one IP address
    /// (default 8), so one address cannot hold every handshake slot and
    /// keep joiners out.
    pub fn max_handshakes_per_ip(mut self, n: usize) -> Self {
        self.max_handshakes_per_ip = n.max(1);
        self
    }

    /// Most established inbound connections at once (default: the
    /// config's `max_members` plus 64). Beyond it a new peer is refused
    /// with a reason after its hello.
    pub fn max_inbound(mut self, n: usize) -> Self {
        self.max_inbound = Some(n.max(1));
        self
    }

    /// A connection with no bytes in either direction for this long is
    /// closed (it is checked once per period, so closing takes up to twice
    /// this). Default: three times the config's failure timeout. Links to
    /// the leader carry heartbeats and acks every heartbeat interval, so
    /// only dead, half-open or silent peers and idle links between members
    /// are closed; the latter are dialed again when next needed (an
    /// inbound stream on one is reset, as on any lost connection).
    pub fn idle_timeout(mut self, limit: Duration) -> Self {
        self.idle_timeout = Some(limit);
        self
    }

    /// Messages queued per peer connection before new ones are dropped
    /// (default 256; the protocol retries what matters).
    pub fn send_queue(mut self, n: usize) -> Self {
        self.send_queue = n.max(1);
        self
    }

    /// Bytes of frames being read from peers that this node holds at once,
    /// all connections together (default 32 MiB; at least twice the
    /// config's `max_frame_len`). A frame's buffer grows only as its bytes
    /// arrive, by what this budget grants; a connection that finds it full
    /// is not read until bytes come back (TCP pushes back on the peer).
    /// Members of the view come first: strangers may hold at most three
    /// quarters of it. See [`Hedgerow::transport_stats`].
    pub fn frame_budget(mut self, bytes: usize) -> Self {
        self.frame_budget = bytes;
        self
    }

    /// Longest a frame may take from its first byte to its last, waiting
    /// for the frame budget included (default 10 s); a slower one closes
    /// its connection with a logged reason.
    pub fn frame_timeout(mut self, limit: Duration) -> Self {
        self.frame_timeout = limit;
        self
    }

    /// Most established inbound connections from one IP address (default
    /// 64); beyond it a peer is refused with a reason after its hello.
    /// One node id has at most one inbound connection: a newer hello for
    /// it closes the older connection.
    pub fn max_inbound_per_ip(mut self, n: usize) -> Self {
        self.max_inbound_per_ip = n.max(1);
        self
    }

    /// Seeds the node's randomness (jitter), for reproducible runs.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Sets the incarnation instead of drawing a random one. Only for
    /// simulations that replay a run (feature `testing`): two processes
    /// with one id and one incarnation are indistinguishable to the
    /// cluster.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn incarnation(mut self, incarnation: u64) -> Self {
        self.incarnation = Some(incarnation);
        self
    }

    /// Binds the listener and starts the node's driver.
    pub async fn start(self) -> Result<Hedgerow, Error> {
        let rt = self
            .runtime
            .or_else(R::from_context)
            .ok_or(Error::NoRuntime)?;
        let id = NodeId::new(self.id).map_err(Error::InvalidId)?;
        let store = self.store.ok_or(Error::NoStore)?;
        let clock = match self.clock {
            Some(c) => c,
            None => default_clock()?,
        };
        let config = node_config(self.cluster, self.preset, self.tweak)?;
        check_address("advertise", &self.advertise)?;
        let (field, listen) = match self.listen {
            Some(l) => ("listen", l),
            None => ("advertise", self.advertise.clone()),
        };
        check_address(field, &listen)?;
        let listener = rt
            .bind(listen.clone())
            .await
            .map_err(|source| Error::Bind {
                field,
                addr: listen,
                source,
            })?;
        let local_addr = R::local_addr(&listener).map_err(Error::Io)?;
        let addr = match self.advertise.rsplit_once(':') {
            Some((host, "0")) => format!("{host}:{}", local_addr.port()),
            _ => self.advertise,
        };
        let incarnation = self.incarnation.unwrap_or_else(random_u64);
        let seed = self.seed.unwrap_or_else(random_u64);
        let identity = Identity {
            id: id.clone(),
            addr: addr.clone(),
            incarnation,
        };
        let store_timeout = self.store_timeout.unwrap_or(config.renew_interval());
        let hello = Hello::new(&config.cluster, id.clone(), incarnation, &addr);
        let max_frame_len = config.max_frame_len;
        if self.frame_budget < 2 * max_frame_len as usize {
            return Err(Error::Config(hedgerow_core::ConfigError(
                "frame_budget must be at least twice max_frame_len, or a stranger's largest \
                 frame could never be read",
            )));
        }
        let limits = transport::Limits {
            handshake_timeout: self.handshake_timeout,
            max_handshakes: self.max_handshakes,
            max_handshakes_per_ip: self.max_handshakes_per_ip,
            max_inbound: self
                .max_inbound
                .unwrap_or(config.max_members.saturating_add(64)),
            idle_timeout: self
                .idle_timeout
                .unwrap_or(config.failure_timeout.saturating_mul(3)),
            send_queue: self.send_queue,
            frame_budget: self.frame_budget,
            frame_timeout: self.frame_timeout,
            max_inbound_per_ip: self.max_inbound_per_ip,
        };
        let node = Node::new(config, identity, seed).map_err(Error::Config)?;
        let node = Arc::new(Mutex::new(node));
        let (net_tx, net_rx) = mpsc::channel(1024);
        let tls = match self.tls {
            Some(tls) => {
                Some(TlsContext::new(tls, &hello.cluster_id, id.as_str()).map_err(Error::Tls)?)
            }
            None => None,
        };
        let net = Arc::new(NetCtx::new(hello, max_frame_len, limits, tls, net_tx));
        let listener = transport::spawn_listener(&rt, net.clone(), listener);
        let net_stats = net.clone();
        let (cmd_tx, cmd_rx) = mpsc::unbounded();
        let (consumed_tx, consumed_rx) = mpsc::unbounded();
        let inbox = driver::Inbox {
            commands: cmd_rx,
            net: net_rx,
            consumed: consumed_rx,
        };
        let sleeper = rt.clone();
        let sleep: Sleep = Arc::new(move |d| sleeper.sleep(d));
        let parts = driver::Parts {
            rt,
            node: node.clone(),
            clock: clock.clone(),
            store,
            store_timeout,
            net,
            listener,
            handlers: self.handlers,
            consumed: consumed_tx,
            seed: seed ^ 0x9e37_79b9_7f4a_7c15,
        };
        let commands = driver::start(parts, inbox, cmd_tx);
        Ok(Hedgerow {
            sleep,
            node,
            clock,
            net: net_stats,
            commands,
            id,
            addr,
            local_addr,
        })
    }
}

/// The clock when none was given: ClockBound if its segment exists, else
/// one that never leads.
fn default_clock() -> Result<Arc<dyn Clock>, Error> {
    let clock = hedgerow_clock::ClockConfig::Auto { bound: None }
        .open()
        .map_err(Error::Clock)?;
    Ok(Arc::from(clock))
}

/// `addr` must be `host:port` with a numeric port; `field` names the
/// builder argument it came from.
fn check_address(field: &'static str, addr: &str) -> Result<(), Error> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(Error::Address {
            field,
            addr: addr.to_owned(),
        }),
    }
}

/// The node configuration for `cluster`: the preset with the builder's
/// tweak applied (the cluster id itself cannot be changed), validated.
fn node_config(
    cluster: String,
    preset: fn(String) -> Config,
    tweak: Option<ConfigTweak>,
) -> Result<Config, Error> {
    let mut config = preset(cluster.clone());
    if let Some(tweak) = tweak {
        tweak(&mut config);
    }
    config.cluster = cluster;
    config.validate().map_err(Error::Config)?;
    Ok(config)
}

/// A random number from the standard library's per-process hash keys and
/// the time, for incarnations and seeds (no extra dependency needed).
fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(t);
    h.finish()
}
