//! The core node as the driver calls it: a fresh clock reading before
//! every call in (a failed read becomes a reading with status Unknown,
//! extrapolated from the last good one, so the node steps down rather than
//! guess), when the node next wants to be woken, and the buffer its outputs
//! are carried out from. It carries out no output itself: where each one
//! goes is the driver's dispatch.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::Shared;
use hedgerow_clock::Clock;
use hedgerow_core::{
    duration_nanos, ClockReading, ClockSource, ClockStatus, Input, MonoTime, Node, Now, Output,
    Term, TimeInterval,
};

use crate::runtime::Runtime;
use crate::types::{lock, LeaderGuard};

pub(super) struct Core {
    /// Shared with the public handle's queries and every [`LeaderGuard`].
    node: Arc<Mutex<Node>>,
    clock: Arc<dyn Clock>,
    /// The last good reading, and the runtime's instant when it was taken.
    last: Option<(Now, Instant)>,
    /// When the driver started: mono time for a clock never read yet.
    started: Instant,
    clock_failing: bool,
    /// The node's outputs being carried out (kept for its allocation).
    outs: VecDeque<Output>,
    /// Inputs gathered for one call of the node (kept for its allocation).
    ins: Vec<Input>,
    /// The node's span, entered by whoever runs the driver.
    span: tracing::Span,
    /// The span's cluster and node fields, for the next term's span.
    names: (String, String),
}

impl Core {
    pub(super) fn new(
        node: Arc<Mutex<Node>>,
        clock: Arc<dyn Clock>,
        started: Instant,
        names: (String, String),
    ) -> Self {
        Core {
            node,
            clock,
            last: None,
            started,
            clock_failing: false,
            outs: VecDeque::new(),
            ins: Vec::new(),
            span: node_span(&names, None),
            names,
        }
    }

    /// The node, locked until the guard goes.
    pub(super) fn node(&self) -> MutexGuard<'_, Node> {
        lock(&self.node)
    }

    pub(super) fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The node's term is now `term`: the span of what runs from now on
    /// says so. A new span rather than `record` on the old, because
    /// tracing-subscriber's formatters append a recorded field, so every
    /// log line would carry one `term=` per term the node has seen.
    pub(super) fn term_changed(&mut self, term: Term) {
        self.span = node_span(&self.names, Some(term.0));
    }

    pub(super) fn describe_clock(&self) -> String {
        self.clock.describe()
    }

    /// A guard on leadership under `term` that ends when `lost` fires.
    pub(super) fn guard(&self, term: Term, lost: Shared<oneshot::Receiver<()>>) -> LeaderGuard {
        LeaderGuard::new(term, self.node.clone(), self.clock.clone(), lost)
    }

    /// A fresh reading; when the clock fails, a reading with status Unknown
    /// (the node steps down and does not lead) extrapolated from the last
    /// good one.
    pub(super) fn now<R: Runtime>(&mut self, rt: &R) -> Now {
        match self.clock.now() {
            Ok(now) => {
                if self.clock_failing {
                    tracing::info!("clock readable again");
                    self.clock_failing = false;
                }
                self.last = Some((now, rt.now()));
                now
            }
            Err(e) => {
                if !self.clock_failing {
                    tracing::warn!(error = %e, "cannot read the clock; this node will not lead until it can");
                    self.clock_failing = true;
                }
                self.unknown(rt.now())
            }
        }
    }

    /// The last reading taken (of this turn, when one was: every input
    /// and command takes one first), or `None` before the first. A
    /// failed read's Unknown reading is not kept here.
    pub(super) fn last_reading(&self) -> Option<Now> {
        if self.clock_failing {
            return None;
        }
        self.last.as_ref().map(|(now, _)| *now)
    }

    /// A reading with status Unknown for runtime instant `now`: the last
    /// good reading moved on by the time since, or zero time if there was
    /// none.
    fn unknown(&self, now: Instant) -> Now {
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
                MonoTime::from_nanos(duration_nanos(now.saturating_duration_since(self.started))),
                TimeInterval {
                    earliest: 0,
                    latest: 0,
                },
                ClockSource::ClockBound,
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

    /// When the node next wants to be woken, on the runtime's clock, at
    /// most `max_sleep` after the last reading (`None`: it wants no
    /// timer). Translated through the instant of the last clock reading,
    /// so it costs no new reading.
    pub(super) fn due<R: Runtime>(&self, rt: &R, max_sleep: Duration) -> Option<Instant> {
        let deadline = self.node().poll_timeout();
        match (deadline, &self.last) {
            (Some(t), Some((last, at))) => {
                let ahead = t.saturating_since(last.mono).min(max_sleep);
                Some(*at + ahead)
            }
            (Some(_), None) => Some(rt.now()),
            (None, _) => None,
        }
    }

    /// The buffer to collect outputs in (empty; one allocation reused
    /// across calls: a fresh one was an allocation per input).
    pub(super) fn take_outputs(&mut self) -> VecDeque<Output> {
        std::mem::take(&mut self.outs)
    }

    /// Moves every output the node has into `outs`.
    pub(super) fn poll_outputs(&self, outs: &mut VecDeque<Output>) {
        self.node().poll_into(outs);
    }

    /// The buffer to gather inputs for one call in (empty, reused).
    pub(super) fn take_inputs(&mut self) -> Vec<Input> {
        std::mem::take(&mut self.ins)
    }

    /// Gives the (emptied) input buffer back.
    pub(super) fn keep_inputs(&mut self, ins: Vec<Input>) {
        self.ins = ins;
    }

    /// Gives the (emptied) buffer back for the next drain.
    pub(super) fn keep_outputs(&mut self, outs: VecDeque<Output>) {
        self.outs = outs;
    }
}

/// The span of a node's work: `hedgerow{cluster, node, term}`.
fn node_span((cluster, node): &(String, String), term: Option<u64>) -> tracing::Span {
    match term {
        // No parent: made while the last one is entered, it replaces it.
        Some(term) => tracing::info_span!(parent: None, "hedgerow", %cluster, %node, term),
        None => tracing::info_span!(parent: None, "hedgerow", %cluster, %node),
    }
}
