//! Handler jobs: each request this node gets as leader and each broadcast
//! it gets as a member is a call of the application's handler, polled once
//! where the driver runs and, if it did not answer at once, run on as a
//! task of its own, at most `max_handlers` at once (more wait in a bounded
//! queue, beyond which they are refused as overloaded). A handler's answer,
//! or its panic, goes back to the node as the reply. The driver never
//! awaits a handler: work a handler does before its first wait runs on the
//! driver's turn, so a handler that computes long before answering should
//! wait first (on `spawn_blocking`, a channel, a yield).

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll};

use futures::channel::mpsc;
use futures::task::noop_waker_ref;
use futures::FutureExt;
use hedgerow_core::{BroadcastHandle, Bytes, Payload, RequestHandle};

use super::{BroadcastFn, Driver, Handlers, LeaderFn};
use crate::runtime::{BoxFuture, Runtime};
use crate::types::{BroadcastRequest, Request};

/// Requests and broadcasts waiting for a free handler slot beyond this are
/// refused at once ("overloaded") instead of queued.
const MAX_QUEUED_JOBS: usize = 10_000;

/// A handler call the node asked for.
pub(super) enum Job {
    Request(RequestHandle, Payload),
    Broadcast(BroadcastHandle, Payload),
}

/// A handler call's answer, on its way back to the node.
pub(crate) enum Done {
    Request(RequestHandle, Result<Bytes, String>),
    Broadcast(BroadcastHandle, Result<Bytes, String>),
}

pub(super) struct Jobs {
    leader: Option<LeaderFn>,
    broadcast: Option<BroadcastFn>,
    max_in_flight: usize,
    in_flight: usize,
    queued: VecDeque<Job>,
    /// Requests answered and not yet handed to the node: the drain hands
    /// them over in one call (`Node::reply_all`) before it looks for
    /// outputs again, so the requests of one read are answered together.
    answered: Vec<(RequestHandle, Result<Payload, String>)>,
    /// Where finished calls report (the loop's app channel).
    finished: mpsc::UnboundedSender<Done>,
}

impl Jobs {
    pub(super) fn new(handlers: &Handlers, finished: mpsc::UnboundedSender<Done>) -> Self {
        Jobs {
            leader: handlers.leader.clone(),
            broadcast: handlers.broadcast.clone(),
            max_in_flight: handlers.max_in_flight,
            in_flight: 0,
            queued: VecDeque::new(),
            answered: Vec::new(),
            finished,
        }
    }

    fn has_slot(&self) -> bool {
        self.in_flight < self.max_in_flight
    }
}

impl<R: Runtime> Driver<R> {
    /// Runs `job` now if a slot is free, else queues or refuses it.
    pub(super) fn job(&mut self, job: Job) {
        if self.jobs.has_slot() {
            self.start_job(job);
        } else if self.jobs.queued.len() < MAX_QUEUED_JOBS {
            self.jobs.queued.push_back(job);
        } else {
            let why = "overloaded: too many handler calls waiting".to_string();
            self.finish_job(match job {
                Job::Request(h, _) => Done::Request(h, Err(why)),
                Job::Broadcast(h, _) => Done::Broadcast(h, Err(why)),
            });
        }
    }

    fn start_job(&mut self, job: Job) {
        // A child of the node's span (entered by whoever runs the driver).
        let span = match &job {
            Job::Request(h, _) => {
                tracing::debug_span!("request", from = %h.from, id = h.id, term = h.term.0)
            }
            Job::Broadcast(h, _) => tracing::debug_span!("broadcast", from = %h.from, id = h.id),
        };
        let (call, caller) = match self.call(job) {
            Ok(x) => x,
            Err(refused) => return self.finish_job(refused),
        };
        let Ok(mut fut) = call else {
            return self.finish_job(caller.done(Err(PANICKED.to_string())));
        };
        // One poll here first: a handler that answers without waiting (an
        // echo, a lookup) is answered in this very step, its reply queued
        // with whatever else this wake writes, with no task spawned, no
        // wake of it and no second turn of the driver. A handler that
        // waits goes on on a task of its own; the waker of this poll is a
        // no-op, and the task's first poll registers its own. Only the
        // handler's code up to its first wait runs here, as its closure
        // already does. The handler's own future is polled, not a wrapper
        // around it: one allocation per request less when it answers.
        let polled = {
            let _enter = span.enter();
            let mut cx = Context::from_waker(noop_waker_ref());
            std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)))
        };
        match polled {
            Ok(Poll::Ready(r)) => return self.finish_job(caller.done(r)),
            Err(_) => return self.finish_job(caller.done(Err(PANICKED.to_string()))),
            Ok(Poll::Pending) => {}
        }
        self.jobs.in_flight += 1;
        // Finished on the handler's task when the driver is free: the
        // reply is written from there, without a hop to the loop.
        let finished = self.inputs.route(&self.jobs.finished);
        let run = async move {
            let r = match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(r) => r,
                Err(_) => Err(PANICKED.to_string()),
            };
            let _ = finished.send(caller.done(r));
        };
        self.rt
            .spawn(Box::pin(tracing::Instrument::instrument(run, span)));
    }

    /// The handler's call for `job` (`Err` if calling it panicked) and
    /// whom its answer goes to, or the refusal when no handler is set.
    fn call(&mut self, job: Job) -> Result<(HandlerCall, Caller), Done> {
        match job {
            Job::Request(handle, payload) => {
                let Some(h) = self.jobs.leader.clone() else {
                    let why = "no leader handler is set on the leader".to_string();
                    return Err(Done::Request(handle, Err(why)));
                };
                let req = Request {
                    from: handle.from.clone(),
                    incarnation: handle.incarnation,
                    id: handle.id,
                    term: handle.term,
                    payload: payload.into_bytes(),
                    guard: self.guard_for(handle.term),
                };
                let call = std::panic::catch_unwind(AssertUnwindSafe(|| h(req)));
                Ok((call, Caller::Request(handle)))
            }
            Job::Broadcast(handle, payload) => {
                let Some(h) = self.jobs.broadcast.clone() else {
                    let why = "no broadcast handler is set on this member".to_string();
                    return Err(Done::Broadcast(handle, Err(why)));
                };
                let req = BroadcastRequest {
                    from: handle.from.clone(),
                    id: handle.id,
                    payload: payload.into_bytes(),
                };
                let call = std::panic::catch_unwind(AssertUnwindSafe(|| h(req)));
                Ok((call, Caller::Broadcast(handle)))
            }
        }
    }

    /// Hands a handler's answer to the node: a broadcast's at once, a
    /// request's with the others of this drain ([`Driver::answer_jobs`]).
    fn finish_job(&mut self, done: Done) {
        match done {
            Done::Request(h, r) => self.jobs.answered.push((h, r.map(Payload::from))),
            Done::Broadcast(h, r) => {
                let now = self.now();
                self.core
                    .node()
                    .reply_broadcast(now, h, r.map(Payload::from));
            }
        }
    }

    /// Hands the node every request answer not yet handed over, in one
    /// call on one clock reading. The drain calls it before each look for
    /// outputs, so no answer waits past the drain that made it.
    pub(super) fn answer_jobs(&mut self) {
        if self.jobs.answered.is_empty() {
            return;
        }
        let now = self.now();
        let mut node = self.core.node();
        node.reply_all(now, self.jobs.answered.drain(..));
    }

    /// A handler call finished: its answer goes out, and its slot to the
    /// next job waiting.
    pub(super) fn on_done(&mut self, done: Done) {
        self.jobs.in_flight = self.jobs.in_flight.saturating_sub(1);
        self.finish_job(done);
        while self.jobs.has_slot() {
            let Some(job) = self.jobs.queued.pop_front() else {
                break;
            };
            self.start_job(job);
        }
        self.drain();
    }
}

/// What a handler's panic answers.
const PANICKED: &str = "the handler panicked";

/// A handler's future, or the panic of calling it.
type HandlerCall = std::thread::Result<BoxFuture<'static, Result<Bytes, String>>>;

/// Whom a handler's answer goes back to.
enum Caller {
    Request(RequestHandle),
    Broadcast(BroadcastHandle),
}

impl Caller {
    fn done(self, r: Result<Bytes, String>) -> Done {
        match self {
            Caller::Request(h) => Done::Request(h, r),
            Caller::Broadcast(h) => Done::Broadcast(h, r),
        }
    }
}
