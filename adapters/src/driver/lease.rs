//! The lease store as the driver uses it: each operation the node asks
//! for runs off the driver (on the blocking pool, or as a task for an
//! async store) under the store timeout, and its answer comes back as an
//! input; a graceful leave waits here for its release to be answered.
//! What to write and when is the node's call; a failure or timeout reaches
//! it as a store error, never a panic.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};
use hedgerow_core::{CasOutcome, Input, LeaseOp, LeaseReply, NodeId, OpId, StoreError};

use hedgerow_core::coord::{CoordOp, CoordReply, KvEntry};

use crate::input::KvRead;
use crate::metrics::{StoreKind, StoreMetrics, StoreOutcome, StoreTimer};

use super::inputs::{LeaseAnswer, StoreAnswer};
use super::Driver;
use crate::runtime::{timeout, BoxFuture, Runtime};
use crate::store::{AsyncLeaseStore, LeaseStore};
use crate::types::Error;

/// The lease store, as the builder was given it.
#[derive(Clone)]
pub(crate) enum Store {
    /// Calls block: they run on the runtime's blocking pool.
    Blocking(Arc<dyn LeaseStore>),
    /// Calls are futures: they run as tasks on the runtime.
    Async(Arc<dyn AsyncLeaseStore>),
}

/// A resign or graceful leave waiting for the lease's release to be
/// stored; every caller waiting hears the same result.
struct Leaving {
    deadline: Instant,
    done: Vec<oneshot::Sender<Result<(), Error>>>,
    error: Option<StoreError>,
    /// A leave is among them: the driver stops once the release settles.
    stop: bool,
}

pub(super) struct Lease {
    store: Store,
    /// The lease's key in the store: the cluster's name.
    group: String,
    timeout: Duration,
    /// Where store calls send their answers (the loop's lease channel).
    answers: mpsc::UnboundedSender<LeaseAnswer>,
    /// The operation in flight, if any, and the `(nonce, token)` it
    /// writes as this node's holder (to tell a renew once it applies).
    pending: Option<(OpId, Option<(u64, u64)>)>,
    leaving: Option<Leaving>,
    /// This node's id, and the `(nonce, token)` of its last write as
    /// holder that applied: a write repeating it is a renew.
    me: NodeId,
    held: Option<(u64, u64)>,
    metrics: StoreMetrics,
}

impl Lease {
    pub(super) fn new(
        store: Store,
        (group, me): (String, NodeId),
        timeout: Duration,
        answers: mpsc::UnboundedSender<LeaseAnswer>,
        metrics: StoreMetrics,
    ) -> Self {
        Lease {
            store,
            group,
            timeout,
            answers,
            pending: None,
            leaving: None,
            me,
            held: None,
            metrics,
        }
    }

    /// What kind of call `op` is, for its metrics, and the `(nonce,
    /// token)` it writes as this node's holder.
    fn classify(&self, op: &LeaseOp) -> (StoreKind, Option<(u64, u64)>) {
        let LeaseOp::CompareAndSet { write, .. } = op else {
            return (StoreKind::Read, None);
        };
        let mine = write
            .holder
            .as_ref()
            .filter(|h| h.id == self.me)
            .map(|h| (h.nonce, write.token.0));
        let renew = mine.is_some() && mine == self.held;
        let kind = if renew {
            StoreKind::Renew
        } else {
            StoreKind::CasOther
        };
        (kind, mine)
    }

    /// Runs `op` on the store; its answer (or a timeout) comes back on the
    /// lease channel.
    pub(super) fn call<R: Runtime>(&mut self, rt: &R, op: LeaseOp) {
        let id = op.id();
        let (kind, mine) = self.classify(&op);
        self.pending = Some((id, mine));
        let timer = self.metrics.start(kind);
        let (tx, rx) = oneshot::channel();
        let group = self.group.clone();
        match self.store.clone() {
            Store::Blocking(store) => rt.spawn_blocking(Box::new(move || {
                let _ = tx.send(call_blocking(store.as_ref(), &group, &op));
            })),
            Store::Async(store) => rt.spawn(call_async(store, group, op, tx)),
        }
        let answers = self.answers.clone();
        await_answer(rt, self.timeout, rx, timer, lease_outcome, move |result| {
            let _ = answers.unbounded_send((id, StoreAnswer::Lease(result)));
        });
    }

    /// Runs a coordination operation on the store's coordination side (a
    /// lease-only store has none: answered as [`StoreError::Unsupported`]);
    /// its answer comes back on the lease channel.
    pub(super) fn call_coord<R: Runtime>(&mut self, rt: &R, op: CoordOp) {
        let id = op.id();
        let answers = self.answers.clone();
        let timer = self.metrics.start(coord_kind(&op));
        let group = self.group.clone();
        let deliver = move |result: Result<CoordReply, StoreError>| {
            if let Err(e) = &result {
                tracing::warn!(error = %e, "coordination store operation failed");
            }
            let _ = answers.unbounded_send((id, StoreAnswer::Coord(result)));
        };
        match self.store.clone() {
            Store::Blocking(store) => {
                let call = move || -> Result<CoordReply, StoreError> {
                    let coord = store.coord().ok_or(StoreError::Unsupported)?;
                    coord.execute(&group, &op)
                };
                blocking_call(rt, self.timeout, call, timer, deliver);
            }
            Store::Async(store) => {
                let call = async move {
                    let coord = store.coord().ok_or(StoreError::Unsupported)?;
                    coord.execute(&group, &op).await
                };
                async_call(rt, self.timeout, call, timer, deliver);
            }
        }
    }

    /// Runs a KV read on the store's coordination side, off the driver,
    /// under the store timeout.
    pub(super) fn read_kv<R: Runtime>(
        &self,
        rt: &R,
        read: KvRead,
        reply: oneshot::Sender<Result<Vec<KvEntry>, Error>>,
    ) {
        let timer = self.metrics.start(StoreKind::KvRead);
        let group = self.group.clone();
        let deliver = move |result: Result<Vec<KvEntry>, StoreError>| {
            let _ = reply.send(result.map_err(Error::Store));
        };
        match self.store.clone() {
            Store::Blocking(store) => {
                let call = move || {
                    let coord = store.coord().ok_or(StoreError::Unsupported)?;
                    coord.kv_read(&group, &read)
                };
                blocking_call(rt, self.timeout, call, timer, deliver);
            }
            Store::Async(store) => {
                let call = async move {
                    let coord = store.coord().ok_or(StoreError::Unsupported)?;
                    coord.kv_read(&group, &read).await
                };
                async_call(rt, self.timeout, call, timer, deliver);
            }
        }
    }

    /// Notes the answer to `op` before the node hears it.
    fn answered(&mut self, op: OpId, result: &Result<LeaseReply, StoreError>) {
        if let Some((pending, mine)) = self.pending {
            if pending == op {
                self.pending = None;
                if let Ok(LeaseReply::Cas(CasOutcome::Applied(_))) = result {
                    self.held = mine;
                }
            }
        }
        if let Err(e) = result {
            tracing::warn!(error = %e, "lease store operation failed");
            if let Some(l) = &mut self.leaving {
                l.error = Some(e.clone());
            }
        }
    }

    /// A resign (`stop` false) or graceful leave (`stop` true), asked
    /// for at runtime instant `now`: `done` hears how the release went,
    /// or that it was not answered in time.
    pub(super) fn release(
        &mut self,
        now: Instant,
        done: oneshot::Sender<Result<(), Error>>,
        stop: bool,
    ) {
        let deadline = now + self.timeout + Duration::from_millis(100);
        let l = self.leaving.get_or_insert_with(|| Leaving {
            deadline,
            done: Vec::new(),
            error: None,
            stop: false,
        });
        l.deadline = l.deadline.max(deadline);
        l.done.push(done);
        l.stop |= stop;
    }

    pub(super) fn is_leaving(&self) -> bool {
        self.leaving.is_some()
    }

    /// When a leave in progress gives up waiting.
    pub(super) fn leave_deadline(&self) -> Option<Instant> {
        self.leaving.as_ref().map(|l| l.deadline)
    }

    /// Answers the callers of a resign or leave once the release is
    /// stored (or given up on); true when a leave so finished and the
    /// driver must stop.
    pub(super) fn leave_finished<R: Runtime>(&mut self, rt: &R) -> bool {
        let Some(l) = &self.leaving else {
            return false;
        };
        let timed_out = rt.now() >= l.deadline;
        if self.pending.is_some() && !timed_out {
            return false;
        }
        if let Some(l) = self.leaving.take() {
            let result = match (l.error, timed_out && self.pending.is_some()) {
                (Some(e), _) => Err(e),
                (None, true) => Err(StoreError::Timeout),
                (None, false) => Ok(()),
            };
            for done in l.done {
                let _ = done.send(result.clone().map_err(Error::Store));
            }
            return l.stop;
        }
        false
    }
}

/// Runs the blocking store call `call` on the runtime's blocking pool and
/// hands its outcome to `deliver`, as [`await_answer`] does.
fn blocking_call<R: Runtime, T: Send + 'static>(
    rt: &R,
    limit: Duration,
    call: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    metrics: StoreTimer,
    deliver: impl FnOnce(Result<T, StoreError>) + Send + 'static,
) {
    let (tx, rx) = oneshot::channel();
    rt.spawn_blocking(Box::new(move || {
        let _ = tx.send(call());
    }));
    await_answer(rt, limit, rx, metrics, plain_outcome, deliver);
}

/// Runs the async store call `call` as a task of its own and hands its
/// outcome to `deliver`, as [`await_answer`] does: the async twin of
/// [`blocking_call`].
fn async_call<R: Runtime, T: Send + 'static>(
    rt: &R,
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    metrics: StoreTimer,
    deliver: impl FnOnce(Result<T, StoreError>) + Send + 'static,
) {
    let (tx, rx) = oneshot::channel();
    rt.spawn(until_cancelled(tx, call));
    await_answer(rt, limit, rx, metrics, plain_outcome, deliver);
}

/// Waits, as a task of its own, for a store call's answer on `rx` under
/// the store timeout `limit`, and hands `deliver` the call's result,
/// [`StoreError::Timeout`], or [`StoreError::Unavailable`] when the call
/// panicked (its sender dropped unanswered). Every store call's answer
/// passes here, so here it is timed (`metrics`, its outcome told by
/// `outcome`) and given its span.
fn await_answer<R: Runtime, T: Send + 'static>(
    rt: &R,
    limit: Duration,
    rx: oneshot::Receiver<Result<T, StoreError>>,
    metrics: StoreTimer,
    outcome: fn(&Result<T, StoreError>) -> StoreOutcome,
    deliver: impl FnOnce(Result<T, StoreError>) + Send + 'static,
) {
    let timer = rt.clone();
    let span = tracing::debug_span!("store_op", kind = metrics.kind().label());
    let wait = async move {
        let result = match timeout(&timer, limit, rx).await {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(StoreError::Unavailable(
                "the store call panicked; see the log".into(),
            )),
            None => Err(StoreError::Timeout),
        };
        let how = outcome(&result);
        tracing::debug!(outcome = ?how, "store operation answered");
        metrics.finish(how);
        deliver(result);
    };
    rt.spawn(Box::pin(tracing::Instrument::instrument(wait, span)));
}

/// A lease call's outcome: a compare-and-set that lost is a conflict.
fn lease_outcome(result: &Result<LeaseReply, StoreError>) -> StoreOutcome {
    match result {
        Ok(LeaseReply::Cas(CasOutcome::Conflict(_))) => StoreOutcome::Conflict,
        Ok(_) => StoreOutcome::Ok,
        Err(e) => StoreOutcome::of_error(e),
    }
}

/// Any other call's outcome: answered, or how it failed.
fn plain_outcome<T>(result: &Result<T, StoreError>) -> StoreOutcome {
    match result {
        Ok(_) => StoreOutcome::Ok,
        Err(e) => StoreOutcome::of_error(e),
    }
}

/// The metrics kind of a coordination operation.
fn coord_kind(op: &CoordOp) -> StoreKind {
    match op {
        CoordOp::Put { .. } => StoreKind::Put,
        CoordOp::Grant { .. } => StoreKind::Grant,
        CoordOp::Free { .. } => StoreKind::Free,
        CoordOp::LoadPermits { .. } => StoreKind::LoadPermits,
    }
}

fn call_blocking(
    store: &dyn LeaseStore,
    group: &str,
    op: &LeaseOp,
) -> Result<LeaseReply, StoreError> {
    match op {
        LeaseOp::Read { .. } => store.read(group).map(LeaseReply::Read),
        LeaseOp::CompareAndSet {
            expected_version,
            write,
            ..
        } => store
            .compare_and_set(group, *expected_version, write)
            .map(LeaseReply::Cas),
    }
}

/// The call as a task of its own.
fn call_async(
    store: Arc<dyn AsyncLeaseStore>,
    group: String,
    op: LeaseOp,
    tx: oneshot::Sender<Result<LeaseReply, StoreError>>,
) -> BoxFuture<'static, ()> {
    until_cancelled(tx, async move {
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
    })
}

/// An async store call as a task of its own, its result sent on `tx`.
/// When the timeout gives up, dropping the receiver does not stop the
/// task, so the call is raced against the receiver's cancellation to end
/// with the timeout.
fn until_cancelled<T: Send + 'static>(
    mut tx: oneshot::Sender<Result<T, StoreError>>,
    call: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
) -> BoxFuture<'static, ()> {
    Box::pin(async move {
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
    })
}

impl<R: Runtime> Driver<R> {
    /// The store answered (or timed out): the node hears it.
    pub(super) fn on_lease(&mut self, op: OpId, answer: StoreAnswer) {
        match answer {
            StoreAnswer::Lease(result) => {
                self.lease.answered(op, &result);
                self.input(Input::Lease { op, result });
            }
            StoreAnswer::Coord(result) => self.input(Input::Coord { op, result }),
        }
    }
}
