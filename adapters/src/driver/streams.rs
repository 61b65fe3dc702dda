//! Every stream, in both directions, as the driver plumbs it. Outbound:
//! opening to the leader or to each member, writes the send buffer cannot
//! take whole (finished when the node says the stream is writable again),
//! finishing and resetting, and failures reported to the writer. Inbound:
//! the stream handler's task per stream, its bytes passed on as they come,
//! and the credit its reader gives back. Flow control and ordering are the
//! core's; this book only connects them to the application's handles.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;

use futures::channel::{mpsc, oneshot};
use futures::FutureExt;
use hedgerow_core::wire::StreamKind;
use hedgerow_core::{NodeId, Now, Payload, StreamError, StreamId, StreamTarget};

use super::{Driver, StreamFn};
use crate::input::{Chunk, Consumed, StreamCommand};
use crate::runtime::Runtime;
use crate::stream::IncomingStream;
use crate::types::Error;

/// Answers a stream write or finish.
type Ack = oneshot::Sender<Result<(), Error>>;

#[derive(Default)]
struct OutStream {
    /// A write the send buffer could not take whole: the bytes not taken
    /// yet, and whom to tell once they are.
    pending: Option<(Payload, Ack)>,
    finish: Option<Ack>,
    failed: Option<String>,
}

// Ordered maps, for the same reason as the replies': a fixed order of
// waking waiters when the driver drops them keeps a simulated run
// replayable.
pub(super) struct Streams {
    handler: Option<StreamFn>,
    /// Where inbound streams' readers report consumed bytes (the loop's
    /// consumed channel).
    consumed: mpsc::UnboundedSender<Consumed>,
    /// This node's streams, by id.
    out: BTreeMap<u64, OutStream>,
    /// Streams to this node, by sender and its id; `None` once nobody
    /// reads it (its bytes are discarded).
    inbound: BTreeMap<(NodeId, u64), Option<mpsc::UnboundedSender<Chunk>>>,
}

impl Streams {
    pub(super) fn new(
        handler: Option<StreamFn>,
        consumed: mpsc::UnboundedSender<Consumed>,
    ) -> Self {
        Streams {
            handler,
            consumed,
            out: BTreeMap::new(),
            inbound: BTreeMap::new(),
        }
    }

    /// The driver is going: every inbound stream not finished was cut, and
    /// its reader hears so (rather than an end, as if every byte had come).
    pub(super) fn cut_inbound(&mut self) {
        for tx in std::mem::take(&mut self.inbound).into_values().flatten() {
            let _ = tx.unbounded_send(Err(
                "the receiving node stopped before the stream ended".into()
            ));
        }
    }

    /// An inbound stream ended cleanly: its reader's stream ends.
    pub(super) fn finished(&mut self, from: NodeId, sid: u64) {
        self.inbound.remove(&(from, sid));
    }

    /// The sender gave up on an inbound stream.
    pub(super) fn reset(&mut self, from: NodeId, sid: u64, reason: String) {
        if let Some(Some(tx)) = self.inbound.remove(&(from, sid)) {
            let _ = tx.unbounded_send(Err(reason));
        }
    }

    /// Every byte of outbound stream `id` and its end were sent.
    pub(super) fn sent(&mut self, id: StreamId) {
        if let Some(s) = self.out.remove(&id.0) {
            if let Some(done) = s.finish {
                let _ = done.send(Ok(()));
            }
        }
    }

    /// Outbound stream `id` failed: a waiting write or finish hears why, and
    /// so does every later one.
    pub(super) fn failed(&mut self, id: StreamId, reason: String) {
        if let Some(s) = self.out.get_mut(&id.0) {
            if let Some((_, done)) = s.pending.take() {
                let _ = done.send(Err(Error::StreamReset(reason.clone())));
            }
            if let Some(done) = s.finish.take() {
                let _ = done.send(Err(Error::StreamReset(reason.clone())));
            }
            s.failed = Some(reason);
        }
    }

    /// Keeps outbound stream `id` if the node opened it.
    fn opened(&mut self, r: &Result<StreamId, StreamError>) {
        if let Ok(id) = r {
            self.out.insert(id.0, OutStream::default());
        }
    }

    /// Whether outbound stream `id` may still be written: `Err` (with
    /// what to tell the writer) if it is unknown or failed.
    fn usable(&self, id: StreamId) -> Result<(), Error> {
        match self.out.get(&id.0).map(|s| s.failed.clone()) {
            None => Err(Error::from_stream(StreamError::Unknown)),
            Some(Some(why)) => Err(Error::StreamReset(why)),
            Some(None) => Ok(()),
        }
    }
}

impl<R: Runtime> Driver<R> {
    /// A stream command from a handle, with the reading its command came
    /// with.
    pub(super) fn on_stream_command(&mut self, now: Now, c: StreamCommand) {
        match c {
            StreamCommand::Open { reply } => {
                let r = self.core.node().open_stream(now, StreamTarget::Leader);
                self.streams.opened(&r);
                let _ = reply.send(r.map_err(Error::from_stream));
            }
            StreamCommand::OpenBroadcast { reply } => {
                let legs = self.open_legs(now);
                let _ = reply.send(legs);
            }
            StreamCommand::Write { id, data, done } => match self.streams.usable(id) {
                Ok(()) => self.write(id, data, done),
                Err(e) => {
                    let _ = done.send(Err(e));
                }
            },
            StreamCommand::Finish { id, done } => self.finish(now, id, done),
            StreamCommand::Reset { id, reason } => {
                if self.streams.out.remove(&id.0).is_some() {
                    self.core.node().stream_reset(now, id, &reason);
                }
            }
        }
    }

    /// One stream to each member of the view, this node included.
    fn open_legs(&mut self, now: Now) -> Vec<(NodeId, Result<StreamId, Error>)> {
        let mut targets: Vec<NodeId> = {
            let node = self.core.node();
            node.view().members().map(|m| m.id.clone()).collect()
        };
        let me = self.core.node().identity().id.clone();
        if !targets.contains(&me) {
            targets.push(me);
        }
        let mut legs = Vec::new();
        for id in targets {
            let r = self
                .core
                .node()
                .open_stream(now, StreamTarget::Member(id.clone()));
            self.streams.opened(&r);
            legs.push((id, r.map_err(Error::from_stream)));
        }
        legs
    }

    /// Ends stream `id`; `done` hears once everything was sent.
    fn finish(&mut self, now: Now, id: StreamId, done: Ack) {
        if let Err(e) = self.streams.usable(id) {
            // A failed stream is done with (an unknown one was never kept).
            self.streams.out.remove(&id.0);
            let _ = done.send(Err(e));
            return;
        }
        let r = self.core.node().stream_finish(now, id);
        match r {
            Ok(()) => {
                if let Some(s) = self.streams.out.get_mut(&id.0) {
                    s.finish = Some(done);
                }
            }
            Err(e) => {
                let _ = done.send(Err(Error::from_stream(e)));
            }
        }
    }

    /// Hands as much of `data` to the node as the send buffer takes; the
    /// rest waits for the stream to be writable again.
    fn write(&mut self, id: StreamId, mut data: Payload, done: Ack) {
        let now = self.now();
        // The node keeps what it takes shared with `data`: no copy.
        let r = self.core.node().stream_write(now, id, data.clone());
        match r {
            Ok(n) => {
                self.calls.stream_out(n);
                data.split_to(n);
                if data.is_empty() {
                    let _ = done.send(Ok(()));
                } else if let Some(s) = self.streams.out.get_mut(&id.0) {
                    s.pending = Some((data, done));
                }
            }
            Err(e) => {
                let _ = done.send(Err(Error::from_stream(e)));
            }
        }
    }

    /// Outbound stream `id` has room again: the write waiting on it goes on.
    pub(super) fn stream_writable(&mut self, id: StreamId) {
        let pending = self
            .streams
            .out
            .get_mut(&id.0)
            .and_then(|s| s.pending.take());
        if let Some((data, done)) = pending {
            self.write(id, data, done);
        }
    }

    /// A peer opened a stream to this node: the stream handler gets it on
    /// a task of its own (or its bytes are discarded if there is none).
    pub(super) fn stream_opened(&mut self, from: NodeId, sid: u64, kind: StreamKind) {
        let tx = match &self.streams.handler {
            Some(h) => {
                let (tx, rx) = mpsc::unbounded();
                let credit = self.inputs.route(&self.streams.consumed);
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
        self.streams.inbound.insert((from, sid), tx);
    }

    /// Bytes of an inbound stream: to its reader, or (nobody reading)
    /// consumed at once so the sender is not held up.
    pub(super) fn stream_data(&mut self, from: NodeId, sid: u64, data: Payload) {
        let key = (from, sid);
        let n = data.len();
        let delivered = match self.streams.inbound.get_mut(&key) {
            Some(Some(tx)) => {
                if tx.unbounded_send(Ok(data.into_bytes())).is_ok() {
                    self.calls.stream_in(n);
                    true
                } else {
                    // The handler dropped the stream: discard the rest.
                    self.streams.inbound.insert(key.clone(), None);
                    false
                }
            }
            _ => false,
        };
        if !delivered {
            let now = self.now();
            self.core.node().stream_consumed(now, &key.0, key.1, n);
        }
    }

    /// An inbound stream's reader took `c.n` bytes: the sender gets the
    /// credit back.
    pub(super) fn on_consumed(&mut self, c: Consumed) {
        let now = self.now();
        self.core.node().stream_consumed(now, &c.from, c.sid, c.n);
        self.drain();
    }
}
