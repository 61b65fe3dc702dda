//! One simulated host's software: boots the real facade, records what it
//! sees (its events, what it handles, what `is_leader()` answers) and
//! carries out the runner's commands. It never judges what it records: the
//! checkers read the log once the run is over.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use hedgerow::coord::Permit;
use hedgerow::{Hedgerow, IncomingStream, Request, Watch, WatchEvent};
use hedgerow_core::{Config, LeaveReason, MemberChange};

use super::record::{lock, mix, name, Cmd, Shared, What};
use super::{CLUSTER, NODE_PORT, STORE_HOST};
use crate::check::permits::Held;
use crate::check::streams::{header, pattern_byte, Reader, Seen};
use crate::turmoil::clock::{SimHostClock, TrueTime};
use crate::turmoil::runtime::TurmoilRuntime;
use crate::turmoil::store::{StoreClient, STORE_PORT};

/// What a host's software needs; cloned into each boot.
#[derive(Clone)]
pub(super) struct HostCtx {
    pub(super) slot: usize,
    pub(super) seed: u64,
    pub(super) shared: Arc<Mutex<Shared>>,
    pub(super) clock: SimHostClock,
    pub(super) truth: TrueTime,
    pub(super) bytes: Arc<AtomicU64>,
    pub(super) boots: Arc<AtomicU64>,
    pub(super) config: Config,
    pub(super) store_timeout: Option<Duration>,
    pub(super) sample_every: Option<Duration>,
    /// Holders believe their permits until they release them, whatever
    /// their clocks and `lost()` say (a deliberately broken run).
    pub(super) broken_holders: bool,
    pub(super) tls: Option<hedgerow::Tls>,
}

/// Writes to the shared log as one process (its slot and incarnation) at
/// true time now; cloned into every handler and task the process runs.
#[derive(Clone)]
struct Recorder {
    shared: Arc<Mutex<Shared>>,
    truth: TrueTime,
    slot: usize,
    inc: u64,
}

impl Recorder {
    fn rec(&self, what: What) {
        let t = self.truth.now_ns();
        lock(&self.shared).rec(t, self.slot, self.inc, what);
    }
}

/// One boot of a host: builds and starts the node, registers it with the
/// runner, then serves until the process stops.
pub(super) async fn host_main(ctx: HostCtx) -> Result<(), Box<dyn std::error::Error>> {
    let boot = ctx.boots.fetch_add(1, Ordering::Relaxed) + 1;
    let inc = mix(ctx.seed, (ctx.slot as u64) << 20 | boot);
    let (tx, rx) = mpsc::unbounded();
    let rec = Recorder {
        shared: ctx.shared.clone(),
        truth: ctx.truth.clone(),
        slot: ctx.slot,
        inc,
    };
    let node = builder(&ctx, boot, &rec).start().await?;
    let watch = node.watch().fuse();
    register(&ctx, &node, &tx, inc);
    let holdings = Rc::new(Holdings {
        list: RefCell::default(),
        last: RefCell::default(),
        next: Cell::new(0),
        clock: ctx.clock.clone(),
        broken: ctx.broken_holders,
        rec: rec.clone(),
    });
    let host = Host {
        node,
        rec,
        sample_every: ctx.sample_every,
        holdings,
    };
    host.serve(watch, tx, rx).await
}

/// The facade for this boot: the real driver and TCP transport on turmoil,
/// the store host's client, this host's clock, and handlers that record
/// what they are given.
fn builder(ctx: &HostCtx, boot: u64, rec: &Recorder) -> hedgerow::Builder<TurmoilRuntime> {
    let me = name(ctx.slot);
    let cfg = ctx.config.clone();
    let mut b =
        hedgerow::Builder::<TurmoilRuntime>::new(CLUSTER, me.clone(), format!("{me}:{NODE_PORT}"))
            .runtime(TurmoilRuntime::new(ctx.bytes.clone()))
            .listen(format!("0.0.0.0:{NODE_PORT}"))
            .async_store(StoreClient::new(format!("{STORE_HOST}:{STORE_PORT}")))
            .clock(ctx.clock.clone())
            .config(move |c| *c = cfg)
            .seed(mix(ctx.seed ^ 0x5eed, (ctx.slot as u64) << 20 | boot))
            .incarnation(rec.inc)
            .leader_handler({
                let rec = rec.clone();
                move |req| {
                    record_handled(&rec, &req);
                    async move { Ok(req.payload) }
                }
            })
            .stream_handler({
                let rec = rec.clone();
                move |s| read_checked_stream(s, rec.clone())
            });
    if let Some(limit) = ctx.store_timeout {
        b = b.store_timeout(limit);
    }
    if let Some(tls) = &ctx.tls {
        b = b.tls(tls.clone());
    }
    b
}

/// A request this process handles as leader, keyed by its sender, the
/// sender's incarnation and the number the payload carries.
fn record_handled(rec: &Recorder, req: &Request) {
    let key = (
        req.from.clone(),
        req.incarnation,
        String::from_utf8_lossy(&req.payload)
            .parse()
            .unwrap_or(u64::MAX),
    );
    rec.rec(What::Handled {
        term: req.term,
        key,
    });
}

/// Reads an incoming checked stream to its end, recording when its header
/// arrived and, at the end, what was read and whether it ended cleanly.
async fn read_checked_stream(mut s: IncomingStream, rec: Recorder) {
    let at = rec.slot;
    let from = s.from().to_string();
    let mut r = Reader::default();
    let mut clean = true;
    while let Some(item) = s.next().await {
        let Ok(chunk) = item else {
            clean = false;
            break;
        };
        if r.chunk(&chunk) {
            let key = r.header.map_or(0, |(k, _)| k);
            rec.rec(What::Stream(Seen::Opened {
                at,
                from: from.clone(),
                key,
            }));
        }
    }
    rec.rec(What::Stream(Seen::Ended {
        at,
        from,
        key: r.header.map(|(k, _)| k),
        got: r.got,
        announced: r.header.map_or(0, |(_, n)| n),
        clean,
        bad: r.bad,
    }));
}

/// Makes a started process reachable by the runner: its handle, its
/// command channel, a `Booted` record, and the commands sent while it was
/// booting.
fn register(ctx: &HostCtx, node: &Hedgerow, tx: &mpsc::UnboundedSender<Cmd>, inc: u64) {
    let mut sh = lock(&ctx.shared);
    sh.handles.insert(ctx.slot, node.clone());
    sh.cmds.insert(ctx.slot, tx.clone());
    sh.rec(ctx.truth.now_ns(), ctx.slot, inc, What::Booted);
    for cmd in sh.pending.remove(&ctx.slot).unwrap_or_default() {
        let _ = tx.unbounded_send(cmd);
    }
}

/// A started process.
struct Host {
    node: Hedgerow,
    rec: Recorder,
    sample_every: Option<Duration>,
    holdings: Rc<Holdings>,
}

/// The permits a process holds, numbered by its acquires.
struct Holdings {
    list: RefCell<Vec<(u64, Permit)>>,
    /// What was last recorded.
    last: RefCell<Vec<Held>>,
    next: Cell<u64>,
    clock: SimHostClock,
    broken: bool,
    rec: Recorder,
}

impl Holdings {
    /// Records what the process holds, if it changed since last recorded:
    /// each permit with the true instant its belief ends (when the clock's
    /// `latest` reaches the promise the node holds now), and tells the
    /// runner which acquires hold.
    fn record(&self) {
        let params = self.clock.params();
        let now: Vec<Held> = self
            .list
            .borrow()
            .iter()
            .map(|(n, p)| {
                let end = if self.broken {
                    u64::MAX
                } else {
                    p.valid_until()
                        .map_or(0, |u| params.true_time_latest_reaches(u))
                };
                (*n, p.name().to_string(), p.token(), end)
            })
            .collect();
        if *self.last.borrow() == now {
            return;
        }
        let numbers = now.iter().map(|h| h.0).collect();
        lock(&self.rec.shared)
            .permits
            .insert(self.rec.slot, numbers);
        self.rec.rec(What::Permits(now.clone()));
        *self.last.borrow_mut() = now;
    }

    /// Gives back the permit of acquire `n`, if still held.
    fn release(&self, n: u64) {
        let taken = {
            let mut list = self.list.borrow_mut();
            let i = list.iter().position(|(m, _)| *m == n);
            i.map(|i| list.remove(i))
        };
        if let Some((_, p)) = taken {
            p.release();
            self.record();
        }
    }

    /// The permit of acquire `n` is lost: the process stops believing in
    /// it (unless it is deliberately broken).
    fn lost(&self, n: u64) {
        if !self.broken {
            self.list.borrow_mut().retain(|(m, _)| *m != n);
            self.record();
        }
    }
}

impl Host {
    /// Records the node's events and samples `is_leader()` after each (and
    /// every `sample_every`), and carries out commands, until the process
    /// stops or its node does.
    async fn serve(
        self,
        mut watch: futures::stream::Fuse<Watch>,
        tx: mpsc::UnboundedSender<Cmd>,
        mut rx: mpsc::UnboundedReceiver<Cmd>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let every = self.sample_every.unwrap_or(Duration::from_secs(3600));
        let mut tick = Box::pin(tokio::time::sleep(every)).fuse();
        loop {
            futures::select_biased! {
                ev = watch.next() => match ev {
                    Some(ev) => {
                        self.on_event(ev);
                        self.sample();
                    }
                    None => return Ok(()),
                },
                () = tick => {
                    if self.sample_every.is_some() {
                        self.sample();
                    }
                    self.holdings.record();
                    tick = Box::pin(tokio::time::sleep(every)).fuse();
                },
                cmd = rx.next() => match cmd {
                    Some(Cmd::Leave) => self.spawn_leave(tx.clone()),
                    Some(Cmd::Send(n)) => self.spawn_send(n),
                    Some(Cmd::Stream(key, len)) => self.spawn_stream(key, len),
                    Some(Cmd::Put(n)) => self.spawn_put(n),
                    Some(Cmd::Acquire(name, limit, wait)) => self.spawn_acquire(name, limit, wait),
                    Some(Cmd::Release(n)) => self.holdings.release(n),
                    Some(Cmd::ReadKv) => self.spawn_read_kv(),
                    Some(Cmd::Stopped) | None => {
                        while let Some(Some(ev)) = watch.next().now_or_never() {
                            self.on_event(ev);
                        }
                        return Ok(());
                    }
                },
            }
        }
    }

    fn on_event(&self, ev: WatchEvent) {
        match ev {
            WatchEvent::Elected { term } => self.rec.rec(What::Elected(term)),
            WatchEvent::SteppedDown { term, .. } => self.rec.rec(What::SteppedDown(term)),
            WatchEvent::ViewChanged { term, version, .. } => {
                let members = self
                    .node
                    .members()
                    .into_iter()
                    .map(|m| m.id.to_string())
                    .collect();
                self.rec.rec(What::View((term, version), members));
            }
            WatchEvent::Member(MemberChange::Left {
                id,
                reason: LeaveReason::Failed,
                ..
            }) => self.rec.rec(What::Failed(id.to_string())),
            _ => {}
        }
    }

    /// The API's own answer, checked against the recorded intervals.
    fn sample(&self) {
        if self.node.is_leader() {
            if let Some((term, _)) = self.node.lease_claim() {
                self.rec.rec(What::Leads(term));
            }
        }
    }

    /// Leaves in the background, then tells `serve` to stop.
    fn spawn_leave(&self, tx: mpsc::UnboundedSender<Cmd>) {
        let (node, rec) = (self.node.clone(), self.rec.clone());
        tokio::task::spawn_local(async move {
            let ok = node.leave().await.is_ok();
            rec.rec(What::Left(ok));
            let _ = tx.unbounded_send(Cmd::Stopped);
        });
    }

    /// Sends `n` to the leader in the background and records the reply.
    fn spawn_send(&self, n: u64) {
        let (node, rec) = (self.node.clone(), self.rec.clone());
        tokio::task::spawn_local(async move {
            let what = match node.send(n.to_string().into_bytes()).await {
                Ok(reply) => What::SendOk {
                    leader: reply.leader,
                    term: reply.term,
                    key: (node.id().clone(), rec.inc, n),
                },
                Err(e) => What::SendFailed(e.to_string()),
            };
            rec.rec(what);
        });
    }

    /// Writes a checked stream to the leader in the background and records
    /// whether `finish()` answered Ok.
    fn spawn_stream(&self, key: u64, len: u64) {
        let (node, rec) = (self.node.clone(), self.rec.clone());
        tokio::task::spawn_local(async move {
            let ok = send_checked_stream(&node, key, len).await.is_ok();
            let from = node.id().to_string();
            rec.rec(What::Stream(Seen::Sent { from, key, ok }));
        });
    }
}

impl Host {
    /// Puts `n` (as its decimal digits) under `k/<n mod 16>` in the
    /// background and records the answer.
    fn spawn_put(&self, n: u64) {
        let (node, rec) = (self.node.clone(), self.rec.clone());
        tokio::task::spawn_local(async move {
            let key = format!("k/{}", n % 16);
            let value = n.to_string().into_bytes();
            let what = match node.kv().put(&key, value.clone()).await {
                Ok(revision) => What::PutOk {
                    key,
                    value,
                    revision,
                },
                Err(e) => What::PutFailed(e.to_string()),
            };
            rec.rec(what);
        });
    }

    /// Waits up to `wait` for a permit of `name` in the background; a
    /// granted one is held (and recorded) until released or lost.
    fn spawn_acquire(&self, name: String, limit: u32, wait: Duration) {
        let (node, holdings) = (self.node.clone(), self.holdings.clone());
        self.rec.rec(What::Asked(name.clone(), limit));
        let n = holdings.next.get() + 1;
        holdings.next.set(n);
        tokio::task::spawn_local(async move {
            match node.semaphore(&name, limit).acquire_timeout(wait).await {
                Ok(permit) => {
                    let lost = permit.lost();
                    holdings.list.borrow_mut().push((n, permit));
                    holdings.record();
                    lost.await;
                    holdings.lost(n);
                }
                Err(e) => holdings.rec.rec(What::AcquireFailed(e.to_string())),
            }
        });
    }

    /// Reads every KV revision in the background and records them.
    fn spawn_read_kv(&self) {
        let (node, rec) = (self.node.clone(), self.rec.clone());
        tokio::task::spawn_local(async move {
            let start = rec.truth.now_ns();
            if let Ok(all) = node.kv().changes("", 0, usize::MAX).await {
                let seen = all
                    .into_iter()
                    .map(|e| (e.revision, e.key, e.value.to_vec()))
                    .collect();
                rec.rec(What::KvSeen(start, seen));
            }
        });
    }
}

/// Writes a checked stream (its header, then `len` pattern bytes in
/// chunks of at most 16 KiB) to the leader and finishes it.
async fn send_checked_stream(node: &Hedgerow, key: u64, len: u64) -> Result<(), hedgerow::Error> {
    let mut s = node.send_stream().await?;
    s.write_all(header(key, len).to_vec()).await?;
    let mut at = 0;
    while at < len {
        let n = (len - at).min(16 * 1024);
        let chunk: Vec<u8> = (at..at + n).map(|o| pattern_byte(key, o)).collect();
        s.write_all(chunk).await?;
        at += n;
    }
    s.finish().await
}
