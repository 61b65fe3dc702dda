//! The driver: the state that owns a [`hedgerow_core::Node`], reads the
//! clock before every call into it, feeds it transport events, timers,
//! lease results and user commands, and carries out every output. It holds
//! no protocol logic: what to send, when to write the lease and who leads
//! is the core's call.
//!
//! The driver sits behind one lock ([`DriverCell`]) and is run by whoever has
//! an input for it:
//!
//! * its **loop task** waits on every input channel and the timer, and
//!   takes what is ready in a fixed priority (store answers, finished
//!   handlers, the network, consumed stream bytes, commands, the timer),
//!   so a simulated runtime replays it deterministically;
//! * a **caller** (a `send`, a stream write), a **connection task** with a
//!   frame it just read, or a **handler task** with its result runs the
//!   driver itself, on its own thread, when the lock is free. That saves
//!   the hop to the loop task, which on a multi-threaded runtime is often
//!   a wake of another thread. Such a direct input first takes whatever
//!   its channel already holds, so one sender's inputs keep their order,
//!   and wakes the loop only when the node now wants a timer earlier than
//!   the armed one, or must stop. When the lock is busy the input goes
//!   through the channel as before.
//!
//! Handlers run on their own tasks, at most `max_handlers` at once; the
//! driver never awaits application code, so a slow handler cannot stall
//! heartbeats or the lease.

use std::collections::{BTreeMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};
use futures::future::{AbortHandle, Shared};
use futures::{FutureExt, StreamExt};
use hedgerow_clock::Clock;
use hedgerow_core::{
    duration_nanos, BroadcastHandle, ClockReading, ClockStatus, Event, Input, LeaseOp, LeaseReply,
    Message, MonoTime, Node, NodeId, Now, OpId, Output, Payload, RequestHandle, Rng, StoreError,
    StreamError, StreamId, StreamTarget, Term, TimeInterval,
};

use crate::input::{Accept, BroadcastItem, Chunk, Command, Consumed, Route};
use crate::runtime::{timeout, BoxFuture, Runtime};
use crate::store::{AsyncLeaseStore, LeaseStore};
use crate::stream::IncomingStream;
use crate::transport::{self, ConnId, NetCtx, NetEvent, Outbox, Refused};
use crate::types::{lock, BroadcastRequest, Error, LeaderGuard, Reply, Request, WatchEvent};

/// Requests and broadcasts waiting for a free handler slot beyond this are
/// refused at once ("overloaded") instead of queued.
const MAX_QUEUED_JOBS: usize = 10_000;
/// Longest the loop sleeps without looking at the clock again.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Most inputs taken in one wake before what they queued is written.
const MAX_INPUTS_PER_WAKE: usize = 256;
/// A direct input wakes the loop to re-arm its timer only when the node
/// wants to act this much earlier than the armed timer: deadlines computed
/// from two clock readings differ by a little, and a wake per `send` would
/// cost the very thread hop the direct path saves.
const TIMER_SLACK: Duration = Duration::from_millis(1);

/// The loop's armed timer.
type Timer = futures::future::Fuse<BoxFuture<'static, ()>>;

enum Job {
    Request(RequestHandle, Payload),
    Broadcast(BroadcastHandle, Payload),
}

pub(crate) enum Done {
    Request(RequestHandle, Result<Vec<u8>, String>),
    Broadcast(BroadcastHandle, Result<Vec<u8>, String>),
}

struct Conn {
    id: ConnId,
    outbox: Arc<Outbox>,
    abort: AbortHandle,
    /// `None` while a dialed connection is not up yet.
    incarnation: Option<u64>,
}

impl Drop for Conn {
    /// Letting go of a connection writes what is queued (a goodbye, a
    /// release notice) and closes it.
    fn drop(&mut self) {
        self.outbox.close();
    }
}

struct Backoff {
    failures: u32,
    until: Instant,
}

/// Answers a stream write or finish.
type Ack = oneshot::Sender<Result<(), Error>>;

#[derive(Default)]
struct OutStream {
    /// A write the send buffer could not take whole: the bytes not taken
    /// yet, and whom to tell once they are.
    pending: Option<(Payload, Ack)>,
    finish: Option<oneshot::Sender<Result<(), Error>>>,
    failed: Option<String>,
}

struct Leaving {
    deadline: Instant,
    done: oneshot::Sender<Result<(), Error>>,
    error: Option<StoreError>,
}

/// The receiving ends the driver's loop selects over.
pub(crate) struct Inbox {
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    pub(crate) net: mpsc::Receiver<NetEvent>,
    pub(crate) consumed: mpsc::UnboundedReceiver<Consumed>,
}

/// Every channel into the driver, in the loop's priority order.
struct Receivers {
    lease: mpsc::UnboundedReceiver<(OpId, Result<LeaseReply, StoreError>)>,
    app: mpsc::UnboundedReceiver<Done>,
    net: mpsc::Receiver<NetEvent>,
    consumed: mpsc::UnboundedReceiver<Consumed>,
    commands: mpsc::UnboundedReceiver<Command>,
}

/// The driver behind its lock, shared by its loop task and every direct
/// input. `None` once the driver stopped: its state (and every waiter it
/// held) is dropped then, not when the last handle goes.
pub(crate) struct DriverCell<R: Runtime> {
    driver: Mutex<Option<Driver<R>>>,
}

impl<R: Runtime> DriverCell<R> {
    pub(crate) fn new(driver: Driver<R>) -> Arc<Self> {
        Arc::new_cyclic(|me| {
            let mut driver = driver;
            driver.me = me.clone();
            DriverCell {
                driver: Mutex::new(Some(driver)),
            }
        })
    }

    fn lock(&self) -> MutexGuard<'_, Option<Driver<R>>> {
        self.driver.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with `input` on this thread if the driver is free, then
    /// writes what it queued; gives `input` back if the lock is busy (never
    /// waits for it) or the driver stopped.
    fn direct<T>(&self, input: T, f: impl FnOnce(&mut Driver<R>, T)) -> Result<(), T> {
        let mut slot = match self.driver.try_lock() {
            Ok(slot) => slot,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return Err(input),
        };
        let Some(driver) = slot.as_mut() else {
            return Err(input);
        };
        let span = driver.span.clone();
        let _enter = span.enter();
        f(driver, input);
        driver.after_direct();
        Ok(())
    }

    /// As [`DriverCell::direct`], after what `input`'s channel already
    /// holds (it was queued while the driver was busy): one sender's
    /// commands, or one connection's frames, keep their order.
    fn in_order<T>(
        &self,
        input: T,
        queued: fn(&mut Receivers) -> Option<T>,
        handle: fn(&mut Driver<R>, T),
    ) -> Result<(), T> {
        self.direct(input, |d, input| {
            while let Some(earlier) = queued(&mut d.rx) {
                handle(d, earlier);
            }
            handle(d, input);
        })
    }
}

impl<R: Runtime> Accept<Command> for DriverCell<R> {
    fn accept(&self, c: Command) -> Result<(), Command> {
        self.in_order(c, |rx| rx.commands.try_recv().ok(), Driver::on_command)
    }
}

impl<R: Runtime> Accept<NetEvent> for DriverCell<R> {
    fn accept(&self, e: NetEvent) -> Result<(), NetEvent> {
        self.in_order(e, |rx| rx.net.try_recv().ok(), Driver::on_net)
    }
}

impl<R: Runtime> Accept<Consumed> for DriverCell<R> {
    fn accept(&self, c: Consumed) -> Result<(), Consumed> {
        self.in_order(c, |rx| rx.consumed.try_recv().ok(), Driver::on_consumed)
    }
}

impl<R: Runtime> Accept<Done> for DriverCell<R> {
    fn accept(&self, d: Done) -> Result<(), Done> {
        self.direct(d, Driver::on_done)
    }
}

/// Runs the driver's loop task until the driver stops, shuts down, leaves,
/// or every handle is dropped. However the task ends (a runtime shutting
/// down drops it), the driver's state goes with it.
pub(crate) async fn run<R: Runtime>(cell: Arc<DriverCell<R>>) {
    struct Release<R: Runtime>(Arc<DriverCell<R>>);
    impl<R: Runtime> Drop for Release<R> {
        fn drop(&mut self) {
            let driver = self.0.lock().take();
            drop(driver);
        }
    }
    let release = Release(cell);
    let span = {
        let mut slot = release.0.lock();
        let Some(driver) = slot.as_mut() else {
            return;
        };
        let _enter = driver.span.clone().entered();
        tracing::info!(clock = %driver.clock.describe(), "node started");
        driver.input(Input::Tick);
        driver.flush();
        driver.span.clone()
    };
    let turn = futures::future::poll_fn(|cx| {
        let mut slot = release.0.lock();
        let Some(driver) = slot.as_mut() else {
            return Poll::Ready(());
        };
        if driver.poll_run(cx).is_pending() {
            return Poll::Pending;
        }
        // Stopped and closed: out of the cell before the lock goes, so no
        // direct input runs a closed driver (it would dial anew); dropped
        // outside the lock.
        let stopped = slot.take();
        drop(slot);
        drop(stopped);
        Poll::Ready(())
    });
    tracing::Instrument::instrument(turn, span.clone()).await;
    drop(release);
    let _enter = span.enter();
    tracing::info!("node stopped");
}

impl<R: Runtime> Drop for Driver<R> {
    /// However the driver ends (shutdown, leave, the runtime dropping its
    /// task), an inbound stream not finished by then was cut: its reader
    /// gets [`Error::StreamReset`]. Dropping the sender alone would end
    /// the reader's stream cleanly, as if every byte had come.
    fn drop(&mut self) {
        for tx in std::mem::take(&mut self.in_streams).into_values().flatten() {
            let _ = tx.unbounded_send(Err(
                "the receiving node stopped before the stream ended".into()
            ));
        }
    }
}

/// The lease store, as the builder was given it.
#[derive(Clone)]
pub(crate) enum Store {
    /// Calls block: they run on the runtime's blocking pool.
    Blocking(Arc<dyn LeaseStore>),
    /// Calls are futures: they run as tasks on the runtime.
    Async(Arc<dyn AsyncLeaseStore>),
}

pub(crate) type LeaderFn =
    Arc<dyn Fn(Request) -> BoxFuture<'static, Result<Vec<u8>, String>> + Send + Sync>;
pub(crate) type BroadcastFn =
    Arc<dyn Fn(BroadcastRequest) -> BoxFuture<'static, Result<Vec<u8>, String>> + Send + Sync>;
pub(crate) type StreamFn = Arc<dyn Fn(IncomingStream) -> BoxFuture<'static, ()> + Send + Sync>;

/// The application's handlers, as the builder was given them.
#[derive(Clone)]
pub(crate) struct Handlers {
    pub(crate) leader: Option<LeaderFn>,
    pub(crate) broadcast: Option<BroadcastFn>,
    pub(crate) stream: Option<StreamFn>,
    pub(crate) max_in_flight: usize,
}

/// Everything the driver is built from.
pub(crate) struct Parts<R: Runtime> {
    pub(crate) rt: R,
    pub(crate) node: Arc<Mutex<Node>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) store: Store,
    pub(crate) store_timeout: Duration,
    pub(crate) net: Arc<NetCtx>,
    pub(crate) listener: AbortHandle,
    pub(crate) handlers: Handlers,
    pub(crate) consumed: mpsc::UnboundedSender<Consumed>,
    pub(crate) seed: u64,
}

pub(crate) struct Driver<R: Runtime> {
    rt: R,
    node: Arc<Mutex<Node>>,
    clock: Arc<dyn Clock>,
    store: Store,
    group: String,
    store_timeout: Duration,
    net: Arc<NetCtx>,
    listener: AbortHandle,
    peers: BTreeMap<NodeId, Vec<Conn>>,
    /// Outboxes this wake queued frames in, flushed once at its end.
    unflushed: Vec<Arc<Outbox>>,
    /// Wakes of the loop so far (for [`Outbox::flush`]).
    wakes: u64,
    backoff: BTreeMap<NodeId, Backoff>,
    rng: Rng,
    last: Option<(Now, Instant)>,
    started: Instant,
    clock_failing: bool,
    lease_tx: mpsc::UnboundedSender<(OpId, Result<LeaseReply, StoreError>)>,
    lease_pending: Option<OpId>,
    handlers: Handlers,
    app_tx: mpsc::UnboundedSender<Done>,
    rx: Receivers,
    /// The node's outputs being carried out (kept for its allocation).
    outs: Vec<Output>,
    /// The loop's armed timer and when it fires.
    timer: Option<(Instant, Timer)>,
    /// Wakes the loop task (a direct input that needs it to act).
    loop_waker: Option<Waker>,
    /// This driver's own [`DriverCell`], for the routes it hands out.
    me: Weak<DriverCell<R>>,
    span: tracing::Span,
    in_flight: usize,
    queued: VecDeque<Job>,
    consumed_tx: mpsc::UnboundedSender<Consumed>,
    // Ordered maps throughout: dropping the driver drops these senders,
    // and a fixed order wakes their waiters in a fixed order, which keeps
    // a simulated run replayable.
    sends: BTreeMap<u64, oneshot::Sender<Result<Reply, Error>>>,
    broadcasts: BTreeMap<u64, mpsc::UnboundedSender<BroadcastItem>>,
    out_streams: BTreeMap<u64, OutStream>,
    in_streams: BTreeMap<(NodeId, u64), Option<mpsc::UnboundedSender<Chunk>>>,
    watchers: Vec<mpsc::Sender<WatchEvent>>,
    /// The signal every [`LeaderGuard`] of the current term shares; fired
    /// (by dropping the sender) when the node steps down or stops.
    guard: Option<(Term, oneshot::Sender<()>, Shared<oneshot::Receiver<()>>)>,
    leaving: Option<Leaving>,
    shutdown: Option<oneshot::Sender<()>>,
    stop: bool,
}

enum Wake {
    Lease(Option<(OpId, Result<LeaseReply, StoreError>)>),
    App(Option<Done>),
    Net(Option<NetEvent>),
    Consumed(Option<Consumed>),
    Command(Option<Command>),
    Tick,
}

impl<R: Runtime> Driver<R> {
    pub(crate) fn new(p: Parts<R>, inbox: Inbox) -> Self {
        let (lease_tx, lease_rx) = mpsc::unbounded();
        let (app_tx, app_rx) = mpsc::unbounded();
        let (group, me) = {
            let node = lock(&p.node);
            (node.config().cluster.clone(), node.identity().id.clone())
        };
        let started = p.rt.now();
        Driver {
            rt: p.rt,
            node: p.node,
            clock: p.clock,
            store: p.store,
            group,
            store_timeout: p.store_timeout,
            net: p.net,
            listener: p.listener,
            peers: BTreeMap::new(),
            unflushed: Vec::new(),
            wakes: 0,
            backoff: BTreeMap::new(),
            rng: Rng::new(p.seed),
            last: None,
            started,
            clock_failing: false,
            lease_tx,
            lease_pending: None,
            handlers: p.handlers,
            app_tx,
            rx: Receivers {
                lease: lease_rx,
                app: app_rx,
                net: inbox.net,
                consumed: inbox.consumed,
                commands: inbox.commands,
            },
            outs: Vec::new(),
            timer: None,
            loop_waker: None,
            me: Weak::new(),
            span: tracing::info_span!("hedgerow", node = %me),
            in_flight: 0,
            queued: VecDeque::new(),
            consumed_tx: p.consumed,
            sends: BTreeMap::new(),
            broadcasts: BTreeMap::new(),
            out_streams: BTreeMap::new(),
            in_streams: BTreeMap::new(),
            watchers: Vec::new(),
            guard: None,
            leaving: None,
            shutdown: None,
            stop: false,
        }
    }

    /// One turn of the loop task: takes what is ready (in priority
    /// order) and carries it out, until nothing is; `Ready` once the
    /// driver has stopped.
    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self
            .loop_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            self.loop_waker = Some(cx.waker().clone());
        }
        loop {
            if self.stop || self.leave_finished() {
                self.close();
                return Poll::Ready(());
            }
            // A timer is armed only when the node wants to be woken earlier
            // than the armed one would: re-arming on every wake cost two
            // trips through the runtime's timer lock per input. A timer
            // that fires before it is needed is one spare tick.
            let now = self.rt.now();
            let due = self
                .due()
                .map_or(now + MAX_SLEEP, |d| d.min(now + MAX_SLEEP));
            if self.timer.as_ref().is_none_or(|(at, _)| due < *at) {
                let wait = due.saturating_duration_since(now);
                self.timer = Some((due, self.rt.sleep(wait).fuse()));
            }
            let Some(wake) = self.poll_wake(cx) else {
                return Poll::Pending;
            };
            if matches!(wake, Wake::Tick) {
                self.timer = None;
            }
            self.on_wake(wake);
            // Take whatever else is ready now, in the same priority order,
            // before writing anything: one wake, one write per connection.
            // Bounded so timers and the flush are never put off for long. A
            // closed channel is left to `poll_wake` to report.
            for _ in 0..MAX_INPUTS_PER_WAKE {
                if self.stop {
                    break;
                }
                let Some(ready) = self.try_wake() else {
                    break;
                };
                self.on_wake(ready);
            }
            self.flush();
        }
    }

    /// The first input ready, in priority order, registering the loop's
    /// waker with every source that has none.
    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Option<Wake> {
        let rx = &mut self.rx;
        if let Poll::Ready(r) = rx.lease.poll_next_unpin(cx) {
            return Some(Wake::Lease(r));
        }
        if let Poll::Ready(d) = rx.app.poll_next_unpin(cx) {
            return Some(Wake::App(d));
        }
        if let Poll::Ready(e) = rx.net.poll_next_unpin(cx) {
            return Some(Wake::Net(e));
        }
        if let Poll::Ready(c) = rx.consumed.poll_next_unpin(cx) {
            return Some(Wake::Consumed(c));
        }
        if let Poll::Ready(c) = rx.commands.poll_next_unpin(cx) {
            return Some(Wake::Command(c));
        }
        let (_, timer) = self.timer.as_mut()?;
        timer.poll_unpin(cx).is_ready().then_some(Wake::Tick)
    }

    /// The first input ready, in priority order, without registering.
    fn try_wake(&mut self) -> Option<Wake> {
        let rx = &mut self.rx;
        if let Ok(r) = rx.lease.try_recv() {
            Some(Wake::Lease(Some(r)))
        } else if let Ok(d) = rx.app.try_recv() {
            Some(Wake::App(Some(d)))
        } else if let Ok(e) = rx.net.try_recv() {
            Some(Wake::Net(Some(e)))
        } else if let Ok(c) = rx.consumed.try_recv() {
            Some(Wake::Consumed(Some(c)))
        } else if let Ok(c) = rx.commands.try_recv() {
            Some(Wake::Command(Some(c)))
        } else {
            None
        }
    }

    /// After a direct input: writes what it queued, and wakes the loop if
    /// it must stop, is leaving (it watches the deadline), or the node now
    /// wants a timer well before the armed one.
    fn after_direct(&mut self) {
        self.flush();
        let wake_loop = self.stop
            || self.leaving.is_some()
            || match (self.due(), &self.timer) {
                (Some(due), Some((at, _))) => due + TIMER_SLACK < *at,
                (None, Some(_)) => false,
                (_, None) => true,
            };
        if wake_loop {
            if let Some(w) = &self.loop_waker {
                w.wake_by_ref();
            }
        }
    }

    fn on_wake(&mut self, wake: Wake) {
        match wake {
            Wake::Lease(Some((op, result))) => self.on_lease(op, result),
            Wake::App(Some(done)) => self.on_done(done),
            Wake::Net(Some(e)) => self.on_net(e),
            Wake::Consumed(Some(c)) => self.on_consumed(c),
            Wake::Command(Some(c)) => self.on_command(c),
            Wake::Command(None) => {
                tracing::info!("every handle was dropped; stopping");
                self.stop = true;
            }
            Wake::Tick => self.input(Input::Tick),
            Wake::Lease(None) | Wake::App(None) | Wake::Net(None) | Wake::Consumed(None) => {
                self.stop = true;
            }
        }
    }

    /// A route into this driver for inputs that `tx` queues, for a task
    /// to hand them in on its own thread. (Not kept: the driver holding a
    /// route into its own cell would keep the cell alive.)
    fn route<T>(&self, tx: &mpsc::UnboundedSender<T>) -> Route<T>
    where
        DriverCell<R>: Accept<T>,
    {
        let direct = self.me.upgrade().map(|d| d as Arc<dyn Accept<T>>);
        Route::new(tx.clone(), direct)
    }

    fn on_consumed(&mut self, c: Consumed) {
        let now = self.now();
        lock(&self.node).stream_consumed(now, &c.from, c.sid, c.n);
        self.drain();
    }

    /// Writes what this wake queued, one write per connection.
    fn flush(&mut self) {
        self.wakes += 1;
        for outbox in self.unflushed.drain(..) {
            outbox.flush(self.wakes);
        }
    }

    fn close(&mut self) {
        self.flush();
        self.listener.abort();
        self.guard = None;
        // Dropping the queues lets each connection flush what is queued
        // (a goodbye, a release notice) and close.
        self.peers.clear();
        if let Some(done) = self.shutdown.take() {
            let _ = done.send(());
        }
    }

    /// True once a graceful leave has released the lease (or given up).
    fn leave_finished(&mut self) -> bool {
        let Some(l) = &self.leaving else {
            return false;
        };
        let timed_out = self.rt.now() >= l.deadline;
        if self.lease_pending.is_some() && !timed_out {
            return false;
        }
        if let Some(l) = self.leaving.take() {
            let result = match (l.error, timed_out && self.lease_pending.is_some()) {
                (Some(e), _) => Err(Error::Store(e)),
                (None, true) => Err(Error::Store(StoreError::Timeout)),
                (None, false) => Ok(()),
            };
            let _ = l.done.send(result);
        }
        true
    }

    /// When the node next wants to be woken, on the runtime's clock
    /// (`None`: not before [`MAX_SLEEP`]). Translated through the instant
    /// of the last clock reading, so it costs no new reading.
    fn due(&mut self) -> Option<Instant> {
        let deadline = lock(&self.node).poll_timeout();
        let due = match (deadline, &self.last) {
            (Some(t), Some((last, at))) => {
                let ahead = t.saturating_since(last.mono).min(MAX_SLEEP);
                Some(*at + ahead)
            }
            (Some(_), None) => Some(self.rt.now()),
            (None, _) => None,
        };
        match (&self.leaving, due) {
            (Some(l), Some(due)) => Some(due.min(l.deadline)),
            (Some(l), None) => Some(l.deadline),
            (None, due) => due,
        }
    }

    /// A fresh reading; when the clock fails, a reading with status Unknown
    /// (the node steps down and does not lead) extrapolated from the last
    /// good one.
    fn now(&mut self) -> Now {
        match self.clock.now() {
            Ok(now) => {
                if self.clock_failing {
                    tracing::info!("clock readable again");
                    self.clock_failing = false;
                }
                self.last = Some((now, self.rt.now()));
                now
            }
            Err(e) => {
                if !self.clock_failing {
                    tracing::warn!(error = %e, "cannot read the clock; this node will not lead until it can");
                    self.clock_failing = true;
                }
                let now = self.rt.now();
                let (mono, interval, source) = match &self.last {
                    Some((last, at)) => {
                        let el = duration_nanos(now.saturating_duration_since(*at));
                        let i = last.clock.interval;
                        (
                            last.mono + Duration::from_nanos(el),
                            TimeInterval {
                                earliest: i.earliest.saturating_add(el),
                                latest: i.latest.saturating_add(el),
                            },
                            last.clock.source,
                        )
                    }
                    None => (
                        MonoTime::from_nanos(duration_nanos(
                            now.saturating_duration_since(self.started),
                        )),
                        TimeInterval {
                            earliest: 0,
                            latest: 0,
                        },
                        hedgerow_core::ClockSource::ClockBound,
                    ),
                };
                Now {
                    mono,
                    clock: ClockReading {
                        interval,
                        status: ClockStatus::Unknown,
                        source,
                    },
                }
            }
        }
    }

    fn input(&mut self, input: Input) {
        let now = self.now();
        lock(&self.node).handle(now, input);
        self.drain();
    }

    /// Carries out outputs until the node has none left. Carrying one out
    /// may call the node again (a reply, a write); those outputs are
    /// collected on the next round rather than by recursion.
    fn drain(&mut self) {
        // One buffer reused across calls: a fresh one was an allocation
        // per input.
        let mut outs = std::mem::take(&mut self.outs);
        loop {
            {
                let mut node = lock(&self.node);
                outs.extend(std::iter::from_fn(|| node.poll()));
            }
            if outs.is_empty() {
                self.outs = outs;
                return;
            }
            for out in outs.drain(..) {
                match out {
                    Output::Transmit { to, addr, msg } => self.transmit(to, addr, msg),
                    Output::Lease(op) => self.lease(op),
                    Output::Event(e) => self.on_event(e),
                    other => {
                        tracing::debug!(?other, "ignoring an output this driver does not know")
                    }
                }
            }
        }
    }

    // ---- transport --------------------------------------------------------------

    fn transmit(&mut self, to: NodeId, addr: Option<String>, msg: Message) {
        if let Some(conn) = self.peers.get(&to).and_then(|c| c.first()) {
            match conn.outbox.push(msg, self.wakes + 1) {
                Ok(()) => {
                    let outbox = conn.outbox.clone();
                    self.mark_unflushed(outbox);
                }
                Err(Refused::Full(msg)) => {
                    let kind = msg.kind();
                    tracing::warn!(peer = %to, kind, "send queue to peer is full; dropping the message");
                }
                // The connection is going down; its Down event follows.
                Err(Refused::Closed) => {}
            }
            return;
        }
        let Some(addr) = addr else {
            tracing::debug!(peer = %to, kind = msg.kind(), "no connection to answer on; dropping");
            return;
        };
        let now = self.rt.now();
        if self.backoff.get(&to).is_some_and(|b| now < b.until) {
            tracing::trace!(peer = %to, "peer in reconnect backoff; dropping");
            return;
        }
        let outbox = Outbox::new(self.net.max_frame_len, self.net.limits.send_queue);
        let _ = outbox.push(msg, self.wakes + 1);
        let id = self.net.next_conn();
        tracing::debug!(peer = %to, %addr, "dialing");
        let abort = transport::spawn_dial(
            &self.rt,
            self.net.clone(),
            id,
            to.clone(),
            addr,
            outbox.clone(),
        );
        self.peers.entry(to).or_default().push(Conn {
            id,
            outbox,
            abort,
            incarnation: None,
        });
    }

    fn mark_unflushed(&mut self, outbox: Arc<Outbox>) {
        if !self
            .unflushed
            .last()
            .is_some_and(|o| Arc::ptr_eq(o, &outbox))
        {
            self.unflushed.push(outbox);
        }
    }

    fn on_net(&mut self, e: NetEvent) {
        match e {
            NetEvent::Up {
                conn,
                peer,
                incarnation,
                inbound,
            } => {
                let conns = self.peers.entry(peer.clone()).or_default();
                // Another incarnation means the peer restarted: whatever is
                // left of the old process's connections is dead.
                let before = conns.len();
                conns.retain(|c| {
                    let stale = c.incarnation.is_some_and(|i| i != incarnation);
                    if stale {
                        c.abort.abort();
                    }
                    !stale
                });
                let lost = conns.len() != before;
                match inbound {
                    Some((outbox, abort)) => conns.push(Conn {
                        id: conn,
                        outbox,
                        abort,
                        incarnation: Some(incarnation),
                    }),
                    None => {
                        if let Some(c) = conns.iter_mut().find(|c| c.id == conn) {
                            c.incarnation = Some(incarnation);
                        }
                        self.backoff.remove(&peer);
                    }
                }
                tracing::debug!(%peer, conn, "connection up");
                if lost {
                    self.input(Input::PeerLost { peer });
                }
            }
            NetEvent::Msg { conn, peer, msg } => {
                let known = self
                    .peers
                    .get(&peer)
                    .is_some_and(|c| c.iter().any(|c| c.id == conn));
                if known {
                    self.input(Input::Message { from: peer, msg });
                }
            }
            NetEvent::Down {
                conn,
                peer,
                was_up,
                reason,
            } => {
                let mut removed = false;
                if let Some(conns) = self.peers.get_mut(&peer) {
                    let before = conns.len();
                    conns.retain(|c| c.id != conn);
                    removed = conns.len() != before;
                    if conns.is_empty() {
                        self.peers.remove(&peer);
                    }
                }
                if !removed {
                    return;
                }
                if !was_up {
                    self.back_off(&peer);
                }
                tracing::debug!(%peer, conn, %reason, "connection down");
                self.input(Input::PeerLost { peer });
            }
        }
    }

    /// Exponential backoff with jitter before the next dial to `peer`:
    /// 50 ms doubling to 5 s, times a random factor in [0.5, 1.5).
    fn back_off(&mut self, peer: &NodeId) {
        let failures = self.backoff.get(peer).map_or(0, |b| b.failures) + 1;
        let base = Duration::from_millis(50)
            .saturating_mul(1 << failures.min(7))
            .min(Duration::from_secs(5));
        let factor = 500 + self.rng.below(1000);
        let delay = base * u32::try_from(factor).unwrap_or(1000) / 1000;
        let until = self.rt.now() + delay;
        self.backoff
            .insert(peer.clone(), Backoff { failures, until });
    }

    // ---- store ------------------------------------------------------------------

    fn lease(&mut self, op: LeaseOp) {
        let id = op.id();
        self.lease_pending = Some(id);
        let (tx, rx) = oneshot::channel();
        let group = self.group.clone();
        match self.store.clone() {
            Store::Blocking(store) => self.rt.spawn_blocking(Box::new(move || {
                let result = match &op {
                    LeaseOp::Read { .. } => store.read(&group).map(LeaseReply::Read),
                    LeaseOp::CompareAndSet {
                        expected_version,
                        write,
                        ..
                    } => store
                        .compare_and_set(&group, *expected_version, write)
                        .map(LeaseReply::Cas),
                };
                let _ = tx.send(result);
            })),
            // The call runs as its own task; when the timeout below gives
            // up, dropping `rx` does not stop it, so it is raced against
            // the receiver's cancellation to end with the timeout.
            Store::Async(store) => self.rt.spawn(Box::pin(async move {
                let mut tx = tx;
                let call = async {
                    match &op {
                        LeaseOp::Read { .. } => store.read(&group).await.map(LeaseReply::Read),
                        LeaseOp::CompareAndSet {
                            expected_version,
                            write,
                            ..
                        } => store
                            .compare_and_set(&group, *expected_version, write)
                            .await
                            .map(LeaseReply::Cas),
                    }
                };
                let result = {
                    let call = std::pin::pin!(call);
                    let cancelled = std::pin::pin!(tx.cancellation());
                    match futures::future::select(call, cancelled).await {
                        futures::future::Either::Left((result, _)) => Some(result),
                        futures::future::Either::Right(_) => None,
                    }
                };
                if let Some(result) = result {
                    let _ = tx.send(result);
                }
            })),
        }
        let rt = self.rt.clone();
        let limit = self.store_timeout;
        let answers = self.lease_tx.clone();
        self.rt.spawn(Box::pin(async move {
            let result = match timeout(&rt, limit, rx).await {
                Some(Ok(r)) => r,
                Some(Err(_)) => Err(StoreError::Unavailable(
                    "the store call panicked; see the log".into(),
                )),
                None => Err(StoreError::Timeout),
            };
            let _ = answers.unbounded_send((id, result));
        }));
    }

    fn on_lease(&mut self, op: OpId, result: Result<LeaseReply, StoreError>) {
        if self.lease_pending == Some(op) {
            self.lease_pending = None;
        }
        if let Err(e) = &result {
            tracing::warn!(error = %e, "lease store operation failed");
            if let Some(l) = &mut self.leaving {
                l.error = Some(e.clone());
            }
        }
        self.input(Input::Lease { op, result });
    }

    // ---- application ------------------------------------------------------------

    fn notify(&mut self, ev: WatchEvent) {
        self.watchers.retain_mut(|w| match w.try_send(ev.clone()) {
            Ok(()) => true,
            Err(e) if e.is_full() => {
                tracing::warn!("a watch() stream is not read; dropping an event for it");
                true
            }
            Err(_) => false,
        });
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Elected { term } => {
                tracing::info!(%term, "elected leader");
                self.notify(WatchEvent::Elected { term });
            }
            Event::SteppedDown { term, reason } => {
                tracing::info!(%term, ?reason, "stepped down");
                if self.guard.as_ref().is_some_and(|g| g.0 <= term) {
                    self.guard = None;
                }
                self.notify(WatchEvent::SteppedDown { term, reason });
            }
            Event::LeaderChanged { leader, term } => {
                tracing::info!(leader = ?leader.as_ref().map(|l| l.as_str()), %term, "leader changed");
                self.notify(WatchEvent::LeaderChanged { leader, term });
            }
            Event::Member(c) => self.notify(WatchEvent::from(c)),
            Event::ViewChanged {
                term,
                version,
                size,
            } => self.notify(WatchEvent::ViewChanged {
                term,
                version,
                size,
            }),
            Event::Request { handle, payload } => self.job(Job::Request(handle, payload)),
            Event::SendDone { id, result } => {
                if let Some(tx) = self.sends.remove(&id.0) {
                    let r = result
                        .map(|r| Reply {
                            leader: r.leader,
                            term: r.term,
                            payload: r.payload.into_vec(),
                        })
                        .map_err(Error::from_send);
                    let _ = tx.send(r);
                }
            }
            Event::Broadcast { handle, payload } => self.job(Job::Broadcast(handle, payload)),
            Event::BroadcastReply { id, from, result } => {
                if let Some(tx) = self.broadcasts.get(&id.0) {
                    let r = result.map(Payload::into_vec).map_err(Error::from_broadcast);
                    let _ = tx.unbounded_send((from, r));
                }
            }
            Event::BroadcastDone { id } => {
                self.broadcasts.remove(&id.0);
            }
            Event::StreamOpened { from, sid, kind } => {
                let tx = match &self.handlers.stream {
                    Some(h) => {
                        let (tx, rx) = mpsc::unbounded();
                        let credit = self.route(&self.consumed_tx);
                        let s = IncomingStream::new(from.clone(), sid, kind, rx, credit);
                        let fut = h(s);
                        self.rt.spawn(Box::pin(async move {
                            if AssertUnwindSafe(fut).catch_unwind().await.is_err() {
                                tracing::error!("a stream handler panicked");
                            }
                        }));
                        Some(tx)
                    }
                    None => {
                        tracing::warn!(%from, sid, "stream opened but no stream handler is set; discarding its bytes");
                        None
                    }
                };
                self.in_streams.insert((from, sid), tx);
            }
            Event::StreamData {
                from, sid, data, ..
            } => {
                let key = (from, sid);
                let n = data.len();
                let delivered = match self.in_streams.get_mut(&key) {
                    Some(Some(tx)) => {
                        if tx.unbounded_send(Ok(data.into_bytes())).is_ok() {
                            true
                        } else {
                            // The handler dropped the stream: discard the rest.
                            self.in_streams.insert(key.clone(), None);
                            false
                        }
                    }
                    _ => false,
                };
                if !delivered {
                    let now = self.now();
                    lock(&self.node).stream_consumed(now, &key.0, key.1, n);
                }
            }
            Event::StreamFinished { from, sid } => {
                self.in_streams.remove(&(from, sid));
            }
            Event::StreamReset { from, sid, reason } => {
                if let Some(Some(tx)) = self.in_streams.remove(&(from, sid)) {
                    let _ = tx.unbounded_send(Err(reason));
                }
            }
            Event::StreamWritable { id } => {
                let pending = self
                    .out_streams
                    .get_mut(&id.0)
                    .and_then(|s| s.pending.take());
                if let Some((data, done)) = pending {
                    self.write(id, data, done);
                }
            }
            Event::StreamSent { id } => {
                if let Some(s) = self.out_streams.remove(&id.0) {
                    if let Some(done) = s.finish {
                        let _ = done.send(Ok(()));
                    }
                }
            }
            Event::StreamFailed { id, reason } => {
                if let Some(s) = self.out_streams.get_mut(&id.0) {
                    if let Some((_, done)) = s.pending.take() {
                        let _ = done.send(Err(Error::StreamReset(reason.clone())));
                    }
                    if let Some(done) = s.finish.take() {
                        let _ = done.send(Err(Error::StreamReset(reason.clone())));
                    }
                    s.failed = Some(reason);
                }
            }
            other => tracing::debug!(?other, "ignoring an event this driver does not know"),
        }
    }

    fn job(&mut self, job: Job) {
        if self.in_flight < self.handlers.max_in_flight {
            self.start_job(job);
        } else if self.queued.len() < MAX_QUEUED_JOBS {
            self.queued.push_back(job);
        } else {
            let why = "overloaded: too many handler calls waiting".to_string();
            self.finish_job(match job {
                Job::Request(h, _) => Done::Request(h, Err(why)),
                Job::Broadcast(h, _) => Done::Broadcast(h, Err(why)),
            });
        }
    }

    fn start_job(&mut self, job: Job) {
        let fut = match job {
            Job::Request(handle, payload) => match self.handlers.leader.clone() {
                Some(h) => {
                    let req = Request {
                        from: handle.from.clone(),
                        incarnation: handle.incarnation,
                        id: handle.id,
                        term: handle.term,
                        payload: payload.into_vec(),
                        guard: self.guard_for(handle.term),
                    };
                    let call = std::panic::catch_unwind(AssertUnwindSafe(|| h(req)));
                    run_handler(call, move |r| Done::Request(handle, r))
                }
                None => {
                    let why = "no leader handler is set on the leader".to_string();
                    return self.finish_job(Done::Request(handle, Err(why)));
                }
            },
            Job::Broadcast(handle, payload) => match self.handlers.broadcast.clone() {
                Some(h) => {
                    let req = BroadcastRequest {
                        from: handle.from.clone(),
                        id: handle.id,
                        payload: payload.into_vec(),
                    };
                    let call = std::panic::catch_unwind(AssertUnwindSafe(|| h(req)));
                    run_handler(call, move |r| Done::Broadcast(handle, r))
                }
                None => {
                    let why = "no broadcast handler is set on this member".to_string();
                    return self.finish_job(Done::Broadcast(handle, Err(why)));
                }
            },
        };
        self.in_flight += 1;
        // Finished on the handler's task when the driver is free: the
        // reply is written from there, without a hop to the loop.
        let finished = self.route(&self.app_tx);
        self.rt.spawn(Box::pin(async move {
            let _ = finished.send(fut.await);
        }));
    }

    /// A guard on leadership under `term`: live if this node leads under
    /// it now, already lost otherwise.
    fn guard_for(&mut self, term: Term) -> LeaderGuard {
        let now = self.now();
        let leads = {
            let node = lock(&self.node);
            node.is_leader(&now) && node.lease_claim().map(|c| c.0) == Some(term)
        };
        let lost = if leads {
            match &self.guard {
                Some((t, _, rx)) if *t == term => rx.clone(),
                _ => {
                    let (tx, rx) = oneshot::channel();
                    let rx = rx.shared();
                    self.guard = Some((term, tx, rx.clone()));
                    rx
                }
            }
        } else {
            oneshot::channel::<()>().1.shared()
        };
        LeaderGuard::new(term, self.node.clone(), self.clock.clone(), lost)
    }

    fn finish_job(&mut self, done: Done) {
        let now = self.now();
        let mut node = lock(&self.node);
        match done {
            Done::Request(h, r) => node.reply(now, h, r.map(Payload::from)),
            Done::Broadcast(h, r) => node.reply_broadcast(now, h, r.map(Payload::from)),
        }
    }

    fn on_done(&mut self, done: Done) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.finish_job(done);
        while self.in_flight < self.handlers.max_in_flight {
            let Some(job) = self.queued.pop_front() else {
                break;
            };
            self.start_job(job);
        }
        self.drain();
    }

    fn write(&mut self, id: StreamId, mut data: Payload, done: Ack) {
        let now = self.now();
        // The node keeps what it takes shared with `data`: no copy.
        let r = lock(&self.node).stream_write(now, id, data.clone());
        match r {
            Ok(n) => {
                data.split_to(n);
                if data.is_empty() {
                    let _ = done.send(Ok(()));
                } else if let Some(s) = self.out_streams.get_mut(&id.0) {
                    s.pending = Some((data, done));
                }
            }
            Err(e) => {
                let _ = done.send(Err(Error::from_stream(e)));
            }
        }
    }

    fn on_command(&mut self, c: Command) {
        let now = self.now();
        match c {
            Command::Send { payload, reply } => {
                let id = lock(&self.node).send(now, payload);
                self.sends.insert(id.0, reply);
            }
            Command::Broadcast { payload, replies } => {
                let id = lock(&self.node).broadcast(now, payload);
                self.broadcasts.insert(id.0, replies);
            }
            Command::OpenStream { reply } => {
                let r = lock(&self.node).open_stream(now, StreamTarget::Leader);
                if let Ok(id) = r {
                    self.out_streams.insert(id.0, OutStream::default());
                }
                let _ = reply.send(r.map_err(Error::from_stream));
            }
            Command::OpenBroadcastStream { reply } => {
                let mut targets: Vec<NodeId> = {
                    let node = lock(&self.node);
                    node.view().members().map(|m| m.id.clone()).collect()
                };
                let me = lock(&self.node).identity().id.clone();
                if !targets.contains(&me) {
                    targets.push(me);
                }
                let mut legs = Vec::new();
                for id in targets {
                    let r = lock(&self.node).open_stream(now, StreamTarget::Member(id.clone()));
                    if let Ok(sid) = r {
                        self.out_streams.insert(sid.0, OutStream::default());
                    }
                    legs.push((id, r.map_err(Error::from_stream)));
                }
                let _ = reply.send(legs);
            }
            Command::Write { id, data, done } => {
                match self.out_streams.get(&id.0).map(|s| s.failed.clone()) {
                    None => {
                        let _ = done.send(Err(Error::from_stream(StreamError::Unknown)));
                    }
                    Some(Some(why)) => {
                        let _ = done.send(Err(Error::StreamReset(why)));
                    }
                    Some(None) => self.write(id, data, done),
                }
            }
            Command::Finish { id, done } => {
                match self.out_streams.get(&id.0).map(|s| s.failed.clone()) {
                    None => {
                        let _ = done.send(Err(Error::from_stream(StreamError::Unknown)));
                    }
                    Some(Some(why)) => {
                        self.out_streams.remove(&id.0);
                        let _ = done.send(Err(Error::StreamReset(why)));
                    }
                    Some(None) => {
                        let r = lock(&self.node).stream_finish(now, id);
                        match r {
                            Ok(()) => {
                                if let Some(s) = self.out_streams.get_mut(&id.0) {
                                    s.finish = Some(done);
                                }
                            }
                            Err(e) => {
                                let _ = done.send(Err(Error::from_stream(e)));
                            }
                        }
                    }
                }
            }
            Command::Reset { id, reason } => {
                if self.out_streams.remove(&id.0).is_some() {
                    lock(&self.node).stream_reset(now, id, &reason);
                }
            }
            Command::SetMeta { meta, done } => {
                let r = lock(&self.node).set_meta(now, meta);
                let _ = done.send(r.map_err(|e| Error::Config(e.to_string())));
            }
            Command::Watch(tx) => self.watchers.push(tx),
            Command::Guard { reply } => {
                let claim = {
                    let node = lock(&self.node);
                    node.lease_claim().filter(|_| node.is_leader(&now))
                };
                let guard = claim.map(|(term, _)| self.guard_for(term));
                let _ = reply.send(guard);
            }
            Command::Resign => lock(&self.node).resign(now),
            Command::Leave { done } => {
                lock(&self.node).leave(now);
                let deadline = self.rt.now() + self.store_timeout + Duration::from_millis(100);
                self.leaving = Some(Leaving {
                    deadline,
                    done,
                    error: None,
                });
            }
            Command::Shutdown { done } => {
                self.shutdown = Some(done);
                self.stop = true;
            }
        }
        self.drain();
    }
}

fn run_handler(
    call: std::thread::Result<BoxFuture<'static, Result<Vec<u8>, String>>>,
    wrap: impl FnOnce(Result<Vec<u8>, String>) -> Done + Send + 'static,
) -> BoxFuture<'static, Done> {
    Box::pin(async move {
        let r = match call {
            Ok(fut) => match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(r) => r,
                Err(_) => Err("the handler panicked".to_string()),
            },
            Err(_) => Err("the handler panicked".to_string()),
        };
        wrap(r)
    })
}
