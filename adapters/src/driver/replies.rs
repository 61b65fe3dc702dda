//! The callers waiting on the cluster: each `send`'s reply, and each
//! broadcast's stream of per-member replies, kept by the core's id until
//! the node reports the outcome. Replies are passed on as they come; this
//! book never waits for one.

use std::collections::BTreeMap;
use std::time::Instant;

use futures::channel::{mpsc, oneshot};
use hedgerow_core::{
    BroadcastError, BroadcastId, ById, NodeId, Payload, RequestId, SendError, SendReply,
};

use crate::input::BroadcastItem;
use crate::metrics::CallMetrics;
use crate::types::{Error, Reply};

// Ordered maps: dropping the driver drops these senders, and a fixed
// order wakes their waiters in a fixed order, which keeps a simulated run
// replayable.
#[derive(Default)]
pub(super) struct Replies {
    /// Each send's caller and when it asked (for its latency).
    sends: ById<(oneshot::Sender<Result<Reply, Error>>, Instant)>,
    broadcasts: BTreeMap<u64, (mpsc::UnboundedSender<BroadcastItem>, Instant)>,
}

impl Replies {
    /// The node started send `id`; `reply` waits for its outcome.
    pub(super) fn sending(&mut self, id: RequestId, reply: oneshot::Sender<Result<Reply, Error>>) {
        self.sends.insert(id.0, (reply, Instant::now()));
    }

    pub(super) fn send_done(
        &mut self,
        id: RequestId,
        result: Result<SendReply, SendError>,
        metrics: &mut CallMetrics,
    ) {
        if let Some((tx, started)) = self.sends.remove(id.0) {
            metrics.send_done(started, &result);
            let r = result
                .map(|r| Reply {
                    leader: r.leader,
                    term: r.term,
                    payload: r.payload.into_bytes(),
                })
                .map_err(Error::from_send);
            let _ = tx.send(r);
        }
    }

    /// The node started broadcast `id`; `replies` takes each member's.
    pub(super) fn broadcasting(
        &mut self,
        id: BroadcastId,
        replies: mpsc::UnboundedSender<BroadcastItem>,
    ) {
        self.broadcasts.insert(id.0, (replies, Instant::now()));
    }

    pub(super) fn broadcast_reply(
        &mut self,
        id: BroadcastId,
        from: NodeId,
        result: Result<Payload, BroadcastError>,
    ) {
        if let Some((tx, _)) = self.broadcasts.get(&id.0) {
            let r = result
                .map(Payload::into_bytes)
                .map_err(Error::from_broadcast);
            let _ = tx.unbounded_send((from, r));
        }
    }

    /// Every member answered or timed out: the caller's stream ends.
    pub(super) fn broadcast_done(&mut self, id: BroadcastId, metrics: &CallMetrics) {
        if let Some((_, started)) = self.broadcasts.remove(&id.0) {
            metrics.broadcast_done(started);
        }
    }
}
