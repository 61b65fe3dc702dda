//! How inputs reach the driver: the [`DriverCell`] that lets whoever has
//! an input run the driver on its own thread when it is free, the channels
//! its loop task waits on otherwise (with the timer, its waker, and
//! whether it must stop), and the one order the loop takes them in
//! ([`Receivers::next`]: store answers, finished handlers, the network,
//! consumed stream bytes, commands; the timer after them). What an input
//! then does is the other books' business.

use std::sync::{Arc, Mutex, MutexGuard, TryLockError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};
use futures::{FutureExt, StreamExt};
use hedgerow_core::{LeaseReply, OpId, StoreError};

use super::jobs::Done;
use super::Driver;
use crate::input::{Accept, Command, Consumed, Route};
use crate::runtime::Runtime;
use crate::transport::NetEvent;

/// A direct input wakes the loop to re-arm its timer only when the node
/// wants to act this much earlier than the armed timer: deadlines computed
/// from two clock readings differ by a little, and a wake per `send` would
/// cost the very thread hop the direct path saves.
const TIMER_SLACK: Duration = Duration::from_millis(1);

/// The loop's armed timer.
type Timer = futures::future::Fuse<crate::runtime::BoxFuture<'static, ()>>;

/// A store's answer to one operation: a lease operation's or a
/// coordination operation's.
pub(super) type LeaseAnswer = (OpId, StoreAnswer);

/// Which kind of operation a store answer is for.
pub(super) enum StoreAnswer {
    Lease(Result<LeaseReply, StoreError>),
    Coord(Result<hedgerow_core::coord::CoordReply, StoreError>),
}

/// The driver behind its lock, shared by its loop task and every direct
/// input. `None` once the driver stopped: its state (and every waiter it
/// held) is dropped then, not when the last handle goes.
pub(super) struct DriverCell<R: Runtime> {
    driver: Mutex<Option<Driver<R>>>,
}

impl<R: Runtime> DriverCell<R> {
    pub(super) fn new(driver: Driver<R>) -> Arc<Self> {
        Arc::new_cyclic(|me| {
            let mut driver = driver;
            driver.inputs.me = me.clone();
            DriverCell {
                driver: Mutex::new(Some(driver)),
            }
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Option<Driver<R>>> {
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
        let span = driver.core.span().clone();
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
            while let Some(earlier) = queued(&mut d.inputs.rx) {
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

    /// The frames one connection read in one go, after what its channel
    /// already holds.
    fn accept_all(&self, batch: &mut Vec<NetEvent>) -> bool {
        self.direct(batch, |d, batch| {
            let earlier: Vec<NetEvent> =
                std::iter::from_fn(|| d.inputs.rx.net.try_recv().ok()).collect();
            d.on_net_all(earlier.into_iter().chain(batch.drain(..)));
        })
        .is_ok()
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

/// The receiving ends the driver's loop selects over, as the API made them.
pub(crate) struct Inbox {
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    pub(crate) net: mpsc::Receiver<NetEvent>,
    pub(crate) consumed: mpsc::UnboundedReceiver<Consumed>,
}

/// Every channel into the driver.
struct Receivers {
    lease: mpsc::UnboundedReceiver<LeaseAnswer>,
    app: mpsc::UnboundedReceiver<Done>,
    net: mpsc::Receiver<NetEvent>,
    consumed: mpsc::UnboundedReceiver<Consumed>,
    commands: mpsc::UnboundedReceiver<Command>,
}

impl Receivers {
    /// The first input ready, in the one order the loop takes inputs in,
    /// whether it polls (`cx`: registering its waker with each channel it
    /// looks at, and hearing of a closed one) or only takes what is
    /// already queued (`None`). The order is fixed so a simulated runtime
    /// replays the loop deterministically.
    fn next(&mut self, mut cx: Option<&mut Context<'_>>) -> Option<Wake> {
        if let Some(r) = self.lease.pull(cx.as_deref_mut()) {
            return Some(Wake::Lease(r));
        }
        if let Some(d) = self.app.pull(cx.as_deref_mut()) {
            return Some(Wake::App(d));
        }
        if let Some(e) = self.net.pull(cx.as_deref_mut()) {
            return Some(Wake::Net(e));
        }
        if let Some(c) = self.consumed.pull(cx.as_deref_mut()) {
            return Some(Wake::Consumed(c));
        }
        self.commands.pull(cx).map(Wake::Command)
    }
}

/// One input channel as the loop looks at it: polled with a context
/// (`Some(None)` once it is closed), else only what is queued.
trait Source {
    type Item;
    fn pull(&mut self, cx: Option<&mut Context<'_>>) -> Option<Option<Self::Item>>;
}

impl<T> Source for mpsc::UnboundedReceiver<T> {
    type Item = T;
    fn pull(&mut self, cx: Option<&mut Context<'_>>) -> Option<Option<T>> {
        match cx {
            Some(cx) => ready(self.poll_next_unpin(cx)),
            None => self.try_recv().ok().map(Some),
        }
    }
}

impl<T> Source for mpsc::Receiver<T> {
    type Item = T;
    fn pull(&mut self, cx: Option<&mut Context<'_>>) -> Option<Option<T>> {
        match cx {
            Some(cx) => ready(self.poll_next_unpin(cx)),
            None => self.try_recv().ok().map(Some),
        }
    }
}

fn ready<T>(p: Poll<T>) -> Option<T> {
    match p {
        Poll::Ready(x) => Some(x),
        Poll::Pending => None,
    }
}

/// What woke the loop: an input (`None`: its channel closed) or the timer.
pub(super) enum Wake {
    Lease(Option<LeaseAnswer>),
    App(Option<Done>),
    Net(Option<NetEvent>),
    Consumed(Option<Consumed>),
    Command(Option<Command>),
    Tick,
}

/// The loop's side of the inputs: its channels, timer and waker, and
/// whether it must stop.
pub(super) struct Inputs<R: Runtime> {
    rx: Receivers,
    /// The loop's armed timer and when it fires.
    timer: Option<(Instant, Timer)>,
    /// Wakes the loop task (a direct input that needs it to act).
    loop_waker: Option<Waker>,
    /// This driver's own [`DriverCell`], for the routes it hands out.
    me: Weak<DriverCell<R>>,
    /// The loop closes the driver and ends at its next turn.
    stop: bool,
    /// Told once the driver has closed, after a shutdown.
    shutdown: Option<oneshot::Sender<()>>,
}

impl<R: Runtime> Inputs<R> {
    pub(super) fn new(
        inbox: Inbox,
        lease: mpsc::UnboundedReceiver<LeaseAnswer>,
        app: mpsc::UnboundedReceiver<Done>,
    ) -> Self {
        Inputs {
            rx: Receivers {
                lease,
                app,
                net: inbox.net,
                consumed: inbox.consumed,
                commands: inbox.commands,
            },
            timer: None,
            loop_waker: None,
            me: Weak::new(),
            stop: false,
            shutdown: None,
        }
    }

    /// Keeps the loop task's waker, for direct inputs to wake it.
    pub(super) fn register(&mut self, cx: &Context<'_>) {
        if !self
            .loop_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            self.loop_waker = Some(cx.waker().clone());
        }
    }

    /// Arms the timer for `due` unless the armed one fires no later. A
    /// timer is armed only when the node wants to be woken earlier than
    /// the armed one would: re-arming on every wake cost two trips through
    /// the runtime's timer lock per input. A timer that fires before it is
    /// needed is one spare tick.
    pub(super) fn arm(&mut self, rt: &R, now: Instant, due: Instant) {
        if self.timer.as_ref().is_none_or(|(at, _)| due < *at) {
            let wait = due.saturating_duration_since(now);
            self.timer = Some((due, rt.sleep(wait).fuse()));
        }
    }

    /// The first input ready, in [`Receivers::next`]'s order, then the
    /// timer; registers the loop's waker with every source it looks at.
    pub(super) fn poll_next(&mut self, cx: &mut Context<'_>) -> Option<Wake> {
        if let Some(wake) = self.rx.next(Some(cx)) {
            return Some(wake);
        }
        let (_, timer) = self.timer.as_mut()?;
        if timer.poll_unpin(cx).is_pending() {
            return None;
        }
        self.timer = None;
        Some(Wake::Tick)
    }

    /// The first input ready, in [`Receivers::next`]'s order, without
    /// registering; a closed channel is left for `poll_next` to report.
    pub(super) fn try_next(&mut self) -> Option<Wake> {
        self.rx.next(None)
    }

    /// Whether the node, wanting to be woken at `due`, needs the timer
    /// re-armed: there is none, or it fires well after `due`.
    pub(super) fn timer_late(&self, due: Option<Instant>) -> bool {
        match (due, &self.timer) {
            (Some(due), Some((at, _))) => due + TIMER_SLACK < *at,
            (None, Some(_)) => false,
            (_, None) => true,
        }
    }

    pub(super) fn wake_loop(&self) {
        if let Some(w) = &self.loop_waker {
            w.wake_by_ref();
        }
    }

    /// A route into this driver for inputs that `tx` queues, for a task
    /// to hand them in on its own thread. (Not kept: the driver holding a
    /// route into its own cell would keep the cell alive.)
    pub(super) fn route<T>(&self, tx: &mpsc::UnboundedSender<T>) -> Route<T>
    where
        DriverCell<R>: Accept<T>,
    {
        let direct = self.me.upgrade().map(|d| d as Arc<dyn Accept<T>>);
        Route::new(tx.clone(), direct)
    }

    pub(super) fn must_stop(&self) -> bool {
        self.stop
    }

    pub(super) fn stop(&mut self) {
        self.stop = true;
    }

    /// Stops, and tells `done` once closed.
    pub(super) fn shut_down(&mut self, done: oneshot::Sender<()>) {
        self.shutdown = Some(done);
        self.stop = true;
    }

    /// The driver has closed: tells whoever asked it to shut down.
    pub(super) fn report_shutdown(&mut self) {
        if let Some(done) = self.shutdown.take() {
            let _ = done.send(());
        }
    }
}
