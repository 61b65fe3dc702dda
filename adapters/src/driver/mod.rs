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
//!   takes what is ready in one fixed priority order (`inputs` defines
//!   it), so a simulated runtime replays it deterministically;
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
//! A handler is polled once where the driver runs: one that answers
//! without waiting is answered in the same step (no task, no hop back);
//! one that waits runs on as a task of its own, at most `max_handlers` at
//! once. The driver never awaits application code, so a handler waiting
//! on I/O cannot stall heartbeats or the lease (one that computes for long
//! before its first wait can: `Builder::leader_handler` says so).
//!
//! The driver's state is kept in books, a room each:
//!
//! * `node`: the core node, the clock read before every call into it,
//!   and the buffer its outputs are carried out from;
//! * `inputs`: the cell, the input channels and the order they are taken
//!   in, the loop's timer and waker, and whether it must stop;
//! * `peers`: connections, dialing and its backoff, one write per wake;
//! * `lease`: the store's calls and answers, and a graceful leave;
//! * `jobs`: request and broadcast handler calls;
//! * `replies`: the callers waiting on a send or a broadcast;
//! * `streams`: every stream, in both directions;
//! * `watch`: the `watch()` streams and the signal leader guards share.
//!
//! This file is the loop and the dispatch: which book an input, an output
//! or an event goes to.

mod coord;
mod inputs;
mod jobs;
mod lease;
mod node;
mod peers;
mod replies;
mod streams;
mod watch;

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::future::AbortHandle;
use hedgerow_clock::Clock;
use hedgerow_core::{Bytes, Event, Input, MemberChange, Node, Now, Output};

pub(crate) use inputs::Inbox;
pub(crate) use lease::Store;

use crate::input::{Accept, Command, Commands, Consumed, Route};
use crate::metrics::{CallMetrics, EventMetrics, NodeMetrics, Published, Snapshot};
use crate::runtime::{BoxFuture, Runtime};
use crate::stream::IncomingStream;
use crate::transport::{NetCtx, NetEvent};
use crate::types::{lock, BroadcastRequest, Error, Request, WatchEvent};
use inputs::{DriverCell, Inputs, Wake};
use jobs::{Job, Jobs};
use lease::Lease;
use node::Core;
use peers::Peers;
use replies::Replies;
use streams::Streams;
use watch::Watchers;

/// Longest the loop sleeps without looking at the clock again.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Most inputs taken in one wake before what they queued is written.
const MAX_INPUTS_PER_WAKE: usize = 256;

pub(crate) type LeaderFn =
    Arc<dyn Fn(Request) -> BoxFuture<'static, Result<Bytes, String>> + Send + Sync>;
pub(crate) type BroadcastFn =
    Arc<dyn Fn(BroadcastRequest) -> BoxFuture<'static, Result<Bytes, String>> + Send + Sync>;
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

/// The driver's books. They drop in this order when the driver goes, and
/// the waiters their senders hold are woken in it: keep it fixed, or a
/// simulated run no longer replays.
struct Driver<R: Runtime> {
    rt: R,
    /// The core node and the clock read before every call into it.
    core: Core,
    /// Connections to peers.
    peers: Peers,
    /// The lease store's calls, and a graceful leave.
    lease: Lease,
    /// Where inputs come from, and whether the loop must stop.
    inputs: Inputs<R>,
    /// Handler calls running and waiting for a slot.
    jobs: Jobs,
    /// Callers waiting on a send or a broadcast.
    replies: Replies,
    /// Callers waiting on a put or an acquire, and the permits held.
    coord: coord::CoordBook,
    /// Streams in both directions.
    streams: Streams,
    /// `watch()` streams and the leader guards' signal.
    watch: Watchers,
    /// The series published from the node's and the transport's counters.
    published: Published,
    /// Leadership and membership events, by reason.
    events: EventMetrics,
    /// Sends, broadcasts, streams and puts: latencies and outcomes.
    calls: CallMetrics,
}

impl<R: Runtime> Drop for Driver<R> {
    /// However the driver ends (shutdown, leave, the runtime dropping its
    /// task), an inbound stream not finished by then was cut: its reader
    /// gets [`Error::StreamReset`]. Dropping the sender alone would end
    /// the reader's stream cleanly, as if every byte had come.
    fn drop(&mut self) {
        self.streams.cut_inbound();
    }
}

/// Builds the driver, lets the transport's connections and the public
/// handles hand it inputs on their own threads, and spawns its loop task.
/// The handles' route for `commands` comes back.
pub(crate) fn start<R: Runtime>(
    parts: Parts<R>,
    inbox: Inbox,
    commands: mpsc::UnboundedSender<Command>,
) -> Commands {
    let rt = parts.rt.clone();
    let net = parts.net.clone();
    let cell = DriverCell::new(Driver::new(parts, inbox));
    let frames: Arc<dyn Accept<NetEvent>> = cell.clone();
    net.set_inputs(Arc::downgrade(&frames));
    let commands = Route::new(commands, Some(cell.clone() as Arc<dyn Accept<Command>>));
    rt.spawn(Box::pin(run(cell)));
    commands
}

/// Runs the driver's loop task until the driver stops, shuts down, leaves,
/// or every handle is dropped. However the task ends (a runtime shutting
/// down drops it), the driver's state goes with it.
async fn run<R: Runtime>(cell: Arc<DriverCell<R>>) {
    struct Release<R: Runtime>(Arc<DriverCell<R>>);
    impl<R: Runtime> Drop for Release<R> {
        fn drop(&mut self) {
            let driver = self.0.lock().take();
            drop(driver);
        }
    }
    let release = Release(cell);
    // The node's span is entered on every poll, not fixed once: it is a
    // new span when the term changes (`Core::term_changed`).
    let mut span = {
        let mut slot = release.0.lock();
        let Some(driver) = slot.as_mut() else {
            return;
        };
        let _enter = driver.core.span().clone().entered();
        tracing::info!(clock = %driver.core.describe_clock(), "node started");
        driver.input(Input::Tick);
        driver.flush();
        driver.core.span().clone()
    };
    let turn = futures::future::poll_fn(|cx| {
        let mut slot = release.0.lock();
        let Some(driver) = slot.as_mut() else {
            return Poll::Ready(());
        };
        if span != *driver.core.span() {
            span = driver.core.span().clone();
        }
        let _enter = span.enter();
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
    turn.await;
    drop(release);
    let _enter = span.enter();
    tracing::info!("node stopped");
}

impl<R: Runtime> Driver<R> {
    fn new(p: Parts<R>, inbox: Inbox) -> Self {
        let (lease_tx, lease_rx) = mpsc::unbounded();
        let (app_tx, app_rx) = mpsc::unbounded();
        let (group, me) = {
            let node = lock(&p.node);
            (node.config().cluster.clone(), node.identity().id.clone())
        };
        let started = p.rt.now();
        let m = NodeMetrics::new(&group, me.as_str());
        Driver {
            core: Core::new(p.node, p.clock, started, (group.clone(), me.to_string())),
            peers: Peers::new(p.net, p.listener, p.seed, m.traffic),
            lease: Lease::new(p.store, (group, me), p.store_timeout, lease_tx, m.store),
            inputs: Inputs::new(inbox, lease_rx, app_rx),
            jobs: Jobs::new(&p.handlers, app_tx),
            replies: Replies::default(),
            coord: Default::default(),
            streams: Streams::new(p.handlers.stream, p.consumed),
            watch: Watchers::default(),
            published: m.published,
            events: m.events,
            calls: m.calls,
            rt: p.rt,
        }
    }

    /// One turn of the loop task: takes what is ready (in priority
    /// order) and carries it out, until nothing is; `Ready` once the
    /// driver has stopped.
    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.inputs.register(cx);
        loop {
            if self.inputs.must_stop() || self.lease.leave_finished(&self.rt) {
                self.close();
                return Poll::Ready(());
            }
            let now = self.rt.now();
            let due = self
                .due()
                .map_or(now + MAX_SLEEP, |d| d.min(now + MAX_SLEEP));
            self.inputs.arm(&self.rt, now, due);
            let Some(wake) = self.inputs.poll_next(cx) else {
                return Poll::Pending;
            };
            self.on_wake(wake);
            // Take whatever else is ready now, in the same priority order,
            // before writing anything: one wake, one write per connection.
            // Bounded so timers and the flush are never put off for long. A
            // closed channel is left to `poll_next` to report.
            for _ in 0..MAX_INPUTS_PER_WAKE {
                if self.inputs.must_stop() {
                    break;
                }
                let Some(ready) = self.inputs.try_next() else {
                    break;
                };
                self.on_wake(ready);
            }
            self.flush();
            self.publish_metrics(now);
        }
    }

    /// Publishes the node's and the transport's counters if a second has
    /// passed since the last time or an event asked for it.
    fn publish_metrics(&mut self, now: Instant) {
        if !self.published.due(now) {
            return;
        }
        let reading = self.now();
        let snapshot = {
            let node = self.core.node();
            let view = node.view();
            Snapshot {
                term: node.term(),
                is_leader: node.is_leader(&reading),
                members: view.len(),
                view: view.stamp(),
                stale: node.view_is_stale(),
                node: node.stats(),
                net: self.peers.stats(),
            }
        };
        self.published.publish(now, &snapshot);
    }

    /// After a direct input: writes what it queued, and wakes the loop if
    /// it must stop, is leaving (it watches the deadline), or the node now
    /// wants a timer well before the armed one.
    fn after_direct(&mut self) {
        self.flush();
        if self.published.is_dirty() {
            self.publish_metrics(self.rt.now());
        }
        let wake_loop = self.inputs.must_stop() || self.lease.is_leaving() || {
            let due = self.due();
            self.inputs.timer_late(due)
        };
        if wake_loop {
            self.inputs.wake_loop();
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
                self.inputs.stop();
            }
            Wake::Tick => self.input(Input::Tick),
            Wake::Lease(None) | Wake::App(None) | Wake::Net(None) | Wake::Consumed(None) => {
                self.inputs.stop();
            }
        }
    }

    /// Writes what this wake queued, one write per connection.
    fn flush(&mut self) {
        self.peers.flush();
    }

    fn close(&mut self) {
        self.flush();
        self.peers.stop_listening();
        self.watch.end_guard();
        // Dropping the queues lets each connection flush what is queued
        // (a goodbye, a release notice) and close.
        self.peers.disconnect();
        self.inputs.report_shutdown();
    }

    /// When the node next wants to be woken, on the runtime's clock
    /// (`None`: not before [`MAX_SLEEP`]), or a leave's deadline if that
    /// comes first.
    fn due(&mut self) -> Option<Instant> {
        let due = self.core.due(&self.rt, MAX_SLEEP);
        match (self.lease.leave_deadline(), due) {
            (Some(l), Some(due)) => Some(due.min(l)),
            (Some(l), None) => Some(l),
            (None, due) => due,
        }
    }

    /// A fresh clock reading (see [`Core::now`]).
    fn now(&mut self) -> Now {
        self.core.now(&self.rt)
    }

    fn input(&mut self, input: Input) {
        let now = self.now();
        self.core.node().handle(now, input);
        self.drain();
    }

    /// Every input of `inputs` (left empty) in one call of the node, on
    /// one clock reading.
    fn input_all(&mut self, inputs: &mut Vec<Input>) {
        if inputs.is_empty() {
            return;
        }
        let now = self.now();
        self.core.node().handle_all(now, inputs.drain(..));
        self.drain();
    }

    /// Carries out outputs until the node has none left. Carrying one out
    /// may call the node again (a reply, a write); those outputs are
    /// collected on the next round rather than by recursion.
    fn drain(&mut self) {
        let mut outs = self.core.take_outputs();
        loop {
            self.answer_jobs();
            self.core.poll_outputs(&mut outs);
            if outs.is_empty() {
                self.core.keep_outputs(outs);
                return;
            }
            while let Some(out) = outs.pop_front() {
                match out {
                    Output::Transmit { to, addr, msg } => {
                        self.peers.transmit(&self.rt, to, addr, msg)
                    }
                    Output::Lease(op) => self.lease.call(&self.rt, op),
                    Output::Coord(op) => self.lease.call_coord(&self.rt, op),
                    Output::Event(e) => self.on_event(e),
                    other => {
                        tracing::debug!(?other, "ignoring an output this driver does not know")
                    }
                }
            }
        }
    }

    /// Hands each event to the book it is about.
    fn on_event(&mut self, e: Event) {
        match e {
            Event::Elected { term } => {
                self.term_changed(term);
                tracing::info!(term = term.0, "elected");
                self.watch.elected(term);
            }
            Event::SteppedDown { term, reason } => {
                self.published.touch();
                self.events.stepped_down(&reason);
                tracing::info!(term = term.0, ?reason, "stepped down");
                self.watch.stepped_down(term, reason);
            }
            Event::LeaderChanged { leader, term } => {
                self.term_changed(term);
                self.watch.leader_changed(leader, term);
            }
            Event::Member(c) => {
                match &c {
                    MemberChange::Joined(m) => self.peers.mark_member(&m.id),
                    MemberChange::Left { reason, .. } => self.events.member_left(reason),
                    MemberChange::Updated(_) => {}
                }
                self.watch.notify(WatchEvent::Member(c));
            }
            Event::ViewChanged {
                term,
                version,
                size,
            } => {
                self.published.touch();
                self.watch.notify(WatchEvent::ViewChanged {
                    term,
                    version,
                    size,
                });
            }
            Event::Request { handle, payload } => self.job(Job::Request(handle, payload)),
            Event::Broadcast { handle, payload } => self.job(Job::Broadcast(handle, payload)),
            Event::SendDone { id, result } => self.replies.send_done(id, result, &mut self.calls),
            Event::BroadcastReply { id, from, result } => {
                self.calls.broadcast_reply(&result);
                self.replies.broadcast_reply(id, from, result)
            }
            Event::BroadcastDone { id } => self.replies.broadcast_done(id, &self.calls),
            Event::StreamOpened { from, sid, kind } => self.stream_opened(from, sid, kind),
            Event::StreamData {
                from, sid, data, ..
            } => self.stream_data(from, sid, data),
            Event::StreamFinished { from, sid } => self.streams.finished(from, sid),
            Event::StreamReset { from, sid, reason } => self.streams.reset(from, sid, reason),
            Event::StreamWritable { id } => self.stream_writable(id),
            Event::StreamSent { id } => self.streams.sent(id),
            Event::StreamFailed { id, reason } => self.streams.failed(id, reason),
            Event::Coord { id, result } => self.coord_done(id, result),
            Event::PermitLost { ticket, .. } => self.permit_lost(ticket),
            other => tracing::debug!(?other, "ignoring an event this driver does not know"),
        }
    }

    /// The node's term is now `term`: its span says so, and the gauges
    /// are published soon.
    fn term_changed(&mut self, term: hedgerow_core::Term) {
        self.core.term_changed(term);
        self.published.touch();
    }

    /// Carries out a command from the public handles, with one clock
    /// reading for all it asks of the node.
    fn on_command(&mut self, c: Command) {
        let now = self.now();
        match c {
            Command::Send { payload, reply } => {
                let id = self.core.node().send(now, payload);
                self.replies.sending(id, reply);
            }
            Command::Broadcast {
                payload,
                to,
                replies,
            } => {
                let id = match to {
                    Some(to) => self.core.node().broadcast_to(now, &to, payload),
                    None => self.core.node().broadcast(now, payload),
                };
                self.replies.broadcasting(id, replies);
            }
            Command::Stream(c) => self.on_stream_command(now, c),
            Command::SetMeta { meta, done } => {
                let r = self.core.node().set_meta(now, meta);
                let _ = done.send(r.map_err(Error::MetaTooLarge));
            }
            Command::Watch(tx) => self.watch_from_now(&now, tx),
            Command::Guard { reply } => {
                let guard = self.guard_if_leading(&now);
                let _ = reply.send(guard);
            }
            Command::Resign { done } => {
                self.core.node().resign(now);
                self.lease.release(self.rt.now(), done, false);
            }
            Command::Leave { done } => {
                self.core.node().leave(now);
                self.lease.release(self.rt.now(), done, true);
            }
            Command::Shutdown { done } => self.inputs.shut_down(done),
            Command::Coord(c) => self.on_coord_command(now, c),
        }
        self.drain();
    }
}
