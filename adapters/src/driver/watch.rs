//! What the application follows of membership and leadership: the
//! `watch()` streams (each starting with the current state, then each
//! event offered to every one, dropped with a
//! warning for one that is not read), and the signal every
//! [`LeaderGuard`] of the current term shares, fired when the node steps
//! down or stops. It never blocks on a slow watcher.

use futures::channel::{mpsc, oneshot};
use futures::future::Shared;
use futures::FutureExt;
use hedgerow_core::{NodeId, Now, StepDownReason, Term};

use super::Driver;
use crate::runtime::Runtime;
use crate::types::{LeaderGuard, WatchEvent};

#[derive(Default)]
pub(super) struct Watchers {
    watchers: Vec<mpsc::Sender<WatchEvent>>,
    /// The signal every [`LeaderGuard`] of the current term shares; fired
    /// (by dropping the sender) when the node steps down or stops.
    guard: Option<(Term, oneshot::Sender<()>, Shared<oneshot::Receiver<()>>)>,
}

impl Watchers {
    pub(super) fn add(&mut self, tx: mpsc::Sender<WatchEvent>) {
        self.watchers.push(tx);
    }

    /// Offers `ev` to every watcher still there.
    pub(super) fn notify(&mut self, ev: WatchEvent) {
        self.watchers.retain_mut(|w| match w.try_send(ev.clone()) {
            Ok(()) => true,
            Err(e) if e.is_full() => {
                tracing::warn!("a watch() stream is not read; dropping an event for it");
                true
            }
            Err(_) => false,
        });
    }

    pub(super) fn elected(&mut self, term: Term) {
        tracing::info!(%term, "elected leader");
        self.notify(WatchEvent::Elected { term });
    }

    /// This node stopped leading under `term`: its guards' signal fires.
    pub(super) fn stepped_down(&mut self, term: Term, reason: StepDownReason) {
        tracing::info!(%term, ?reason, "stepped down");
        if self.guard.as_ref().is_some_and(|g| g.0 <= term) {
            self.guard = None;
        }
        self.notify(WatchEvent::SteppedDown { term, reason });
    }

    pub(super) fn leader_changed(&mut self, leader: Option<NodeId>, term: Term) {
        tracing::info!(leader = ?leader.as_ref().map(|l| l.as_str()), %term, "leader changed");
        self.notify(WatchEvent::LeaderChanged { leader, term });
    }

    /// The node stops: every guard's signal fires.
    pub(super) fn end_guard(&mut self) {
        self.guard = None;
    }

    /// The signal for leadership under `term`, which this node holds now:
    /// the current one if it is for `term`, else a new one.
    fn signal(&mut self, term: Term) -> Shared<oneshot::Receiver<()>> {
        match &self.guard {
            Some((t, _, rx)) if *t == term => rx.clone(),
            _ => {
                let (tx, rx) = oneshot::channel();
                let rx = rx.shared();
                self.guard = Some((term, tx, rx.clone()));
                rx
            }
        }
    }
}

impl<R: Runtime> Driver<R> {
    /// A new watcher: it hears the state as of `now` first, then every
    /// change, with nothing in between (the driver makes both).
    pub(super) fn watch_from_now(&mut self, now: &Now, mut tx: mpsc::Sender<WatchEvent>) {
        let current = {
            let node = self.core.node();
            WatchEvent::Current {
                leader: node.leader().cloned(),
                is_leader: node.is_leader(now),
                members: node.view().members().cloned().collect(),
                view: node.view().stamp(),
            }
        };
        // A fresh channel has room; a dropped receiver needs no watcher.
        if tx.try_send(current).is_ok() {
            self.watch.add(tx);
        }
    }

    /// A guard on leadership under `term`: live if this node leads under
    /// it as of this turn's reading (the one its request was handled
    /// with; the guard reads the clock afresh whenever it is asked),
    /// already lost otherwise.
    pub(super) fn guard_for(&mut self, term: Term) -> LeaderGuard {
        let now = match self.core.last_reading() {
            Some(now) => now,
            None => self.now(),
        };
        let leads = {
            let node = self.core.node();
            node.is_leader(&now) && node.lease_claim().map(|c| c.0) == Some(term)
        };
        let lost = if leads {
            self.watch.signal(term)
        } else {
            oneshot::channel::<()>().1.shared()
        };
        self.core.guard(term, lost)
    }

    /// A guard on this node's leadership if it leads as of `now`.
    pub(super) fn guard_if_leading(&mut self, now: &Now) -> Option<LeaderGuard> {
        let claim = {
            let node = self.core.node();
            node.lease_claim().filter(|_| node.is_leader(now))
        };
        claim.map(|(term, _)| self.guard_for(term))
    }
}
