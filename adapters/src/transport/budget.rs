//! The node's budget for frame bytes in flight: the memory that frames
//! still being read from peers hold, shared by every connection. A body
//! buffer grows only as its bytes arrive and only by what this budget
//! grants, so no peer's announced length reserves memory up front; a
//! connection that would overrun the budget waits (its socket is not
//! read, so the kernel's buffers and TCP push back on the peer).
//!
//! Connections from members of the view come first: strangers may hold at
//! most three quarters of the budget, so members always find a quarter
//! free of them. This room counts bytes and orders waiters; it never reads
//! a socket and never decides who is a member (the driver marks them).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// Bytes of frames being read, by every connection of one node together.
pub(crate) struct FrameBudget {
    limit: usize,
    /// What a stranger's connection may bring the total to.
    stranger_limit: usize,
    used: AtomicUsize,
    /// The most `used` has ever been: the attack tests' witness.
    peak: AtomicUsize,
    waiters: Mutex<Waiters>,
    /// Wakers queued in `waiters`, so giving back skips the lock when no
    /// one waits (the common case: every frame gives back).
    queued: AtomicUsize,
    /// Times a connection had to wait for bytes.
    waits: AtomicUsize,
}

#[derive(Default)]
struct Waiters {
    members: VecDeque<Waker>,
    strangers: VecDeque<Waker>,
}

impl FrameBudget {
    /// A budget of `limit` bytes.
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(FrameBudget {
            limit,
            stranger_limit: limit - limit / 4,
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            waiters: Mutex::new(Waiters::default()),
            queued: AtomicUsize::new(0),
            waits: AtomicUsize::new(0),
        })
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    pub(crate) fn waits(&self) -> usize {
        self.waits.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes if the total stays within what `member` may bring
    /// it to.
    fn try_take(&self, n: usize, member: bool) -> bool {
        let cap = if member {
            self.limit
        } else {
            self.stranger_limit
        };
        // SeqCst here, in `poll_take` and in `give_back`: a waiter queues
        // and then tries again, a giver frees and then looks for waiters;
        // one of the two must see the other.
        let mut used = self.used.load(Ordering::SeqCst);
        loop {
            let Some(after) = used.checked_add(n).filter(|after| *after <= cap) else {
                return false;
            };
            match self
                .used
                .compare_exchange_weak(used, after, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => {
                    self.peak.fetch_max(after, Ordering::Relaxed);
                    return true;
                }
                Err(now) => used = now,
            }
        }
    }

    /// Takes `n` bytes, or registers to be woken when some come back.
    fn poll_take(&self, n: usize, member: bool, cx: &mut Context<'_>) -> Poll<()> {
        if self.try_take(n, member) {
            return Poll::Ready(());
        }
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        let queue = if member {
            &mut waiters.members
        } else {
            &mut waiters.strangers
        };
        if !queue.iter().any(|w| w.will_wake(cx.waker())) {
            queue.push_back(cx.waker().clone());
            self.queued.fetch_add(1, Ordering::SeqCst);
        }
        // Again once queued: bytes given back since the first try would
        // otherwise wake no one. A waker left queued after this succeeds
        // only costs a spurious wake.
        if self.try_take(n, member) {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    fn give_back(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.used.fetch_sub(n, Ordering::SeqCst);
        if self.queued.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        let before = waiters.members.len() + waiters.strangers.len();
        // Every member first; then strangers in arrival order, as many as
        // the bytes freed could serve at the smallest step a body grows by.
        // One that finds no room queues again at the back.
        for w in waiters.members.drain(..) {
            w.wake();
        }
        let mut wake = n.div_ceil(super::BODY_STEP).max(1);
        while wake > 0 {
            let Some(w) = waiters.strangers.pop_front() else {
                break;
            };
            w.wake();
            wake -= 1;
        }
        let woken = before - waiters.members.len() - waiters.strangers.len();
        self.queued.fetch_sub(woken, Ordering::SeqCst);
    }
}

/// Bytes of the budget held by one frame being read; given back when
/// dropped, however the read ends.
pub(crate) struct Grant {
    budget: Arc<FrameBudget>,
    held: usize,
    member: bool,
}

impl Grant {
    /// Nothing held yet; `member` says whose frame it is.
    pub(crate) fn new(budget: &Arc<FrameBudget>, member: bool) -> Self {
        Grant {
            budget: budget.clone(),
            held: 0,
            member,
        }
    }

    /// Holds `total` bytes in all, waiting until the budget has them;
    /// whether it had to wait.
    pub(crate) async fn grow_to(&mut self, total: usize) -> bool {
        let Some(more) = total.checked_sub(self.held).filter(|n| *n > 0) else {
            return false;
        };
        let mut waited = false;
        futures::future::poll_fn(|cx| {
            let polled = self.budget.poll_take(more, self.member, cx);
            if polled.is_pending() && !waited {
                waited = true;
                self.budget.waits.fetch_add(1, Ordering::Relaxed);
            }
            polled
        })
        .await;
        self.held = total;
        waited
    }

    /// Gives everything back now.
    pub(crate) fn release(&mut self) {
        self.budget.give_back(std::mem::take(&mut self.held));
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker_ref;

    fn take(g: &mut Grant, total: usize) -> Poll<bool> {
        let mut cx = Context::from_waker(noop_waker_ref());
        let fut = std::pin::pin!(g.grow_to(total));
        fut.poll(&mut cx)
    }

    use std::future::Future;

    #[test]
    fn strangers_leave_a_quarter_to_members() {
        let budget = FrameBudget::new(4 * super::super::BODY_STEP);
        let step = super::super::BODY_STEP;
        let mut stranger = Grant::new(&budget, false);
        assert_eq!(take(&mut stranger, 3 * step), Poll::Ready(false));
        let mut other = Grant::new(&budget, false);
        assert!(take(&mut other, step).is_pending());
        let mut member = Grant::new(&budget, true);
        assert_eq!(take(&mut member, step), Poll::Ready(false));
        assert_eq!(budget.used(), budget.limit());
        let mut late = Grant::new(&budget, true);
        assert!(take(&mut late, 1).is_pending());
        drop(stranger);
        assert_eq!(budget.used(), step);
        assert_eq!(take(&mut late, 1), Poll::Ready(false));
        assert_eq!(budget.peak(), budget.limit());
        assert_eq!(budget.waits(), 2);
    }

    #[test]
    fn a_dropped_grant_gives_back_what_it_held() {
        let budget = FrameBudget::new(1 << 20);
        let mut g = Grant::new(&budget, true);
        assert_eq!(take(&mut g, 1000), Poll::Ready(false));
        assert_eq!(take(&mut g, 5000), Poll::Ready(false));
        assert_eq!(budget.used(), 5000);
        drop(g);
        assert_eq!(budget.used(), 0);
    }
}
