//! The callers waiting on the cluster: each `send`'s reply, and each
//! broadcast's stream of per-member replies, kept by the core's id until
//! the node reports the outcome. Replies are passed on as they come; this
//! book never waits for one.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use futures::channel::{mpsc, oneshot};
use hedgerow_core::{
    BroadcastError, BroadcastId, NodeId, Payload, RequestId, SendError, SendReply,
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

/// Entries by id, for ids that mostly come in increasing order and mostly
/// go oldest first (the core numbers sends in order; their replies come
/// mostly in order): a new one goes at the back, the oldest comes off the
/// front, and a lookup is a binary search; an ordered map cost ~300
/// instructions for each insert and each removal. One removed out of
/// order leaves a hole until the holes before it go or there are more
/// holes than twice the entries left, when they are swept. Dropped in id
/// order, as an ordered map drops.
pub(super) struct ById<T> {
    /// `(id, entry)` in id order; `None` where one was removed. The first
    /// and the last slot are always entries.
    slots: VecDeque<(u64, Option<T>)>,
    live: usize,
}

/// Holes [`ById`] tolerates beyond twice its entries before a sweep.
const HOLE_SLACK: usize = 64;

impl<T> Default for ById<T> {
    fn default() -> Self {
        ById {
            slots: VecDeque::new(),
            live: 0,
        }
    }
}

impl<T> ById<T> {
    pub(super) fn insert(&mut self, id: u64, v: T) {
        match self.slots.back() {
            Some((last, _)) if *last >= id => {
                // Out of order (not how the core numbers sends): in place.
                match self.slots.binary_search_by_key(&id, |(i, _)| *i) {
                    Ok(at) => {
                        if self.slots[at].1.replace(v).is_none() {
                            self.live += 1;
                        }
                    }
                    Err(at) => {
                        self.slots.insert(at, (id, Some(v)));
                        self.live += 1;
                    }
                }
            }
            _ => {
                self.slots.push_back((id, Some(v)));
                self.live += 1;
            }
        }
    }

    pub(super) fn remove(&mut self, id: u64) -> Option<T> {
        let at = self.slots.binary_search_by_key(&id, |(i, _)| *i).ok()?;
        let v = self.slots[at].1.take()?;
        self.live -= 1;
        while self.slots.front().is_some_and(|(_, v)| v.is_none()) {
            self.slots.pop_front();
        }
        while self.slots.back().is_some_and(|(_, v)| v.is_none()) {
            self.slots.pop_back();
        }
        if self.slots.len() > 2 * self.live + HOLE_SLACK {
            self.slots.retain(|(_, v)| v.is_some());
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries come back as from an ordered map, in whatever order they
    /// are inserted and removed, and holes stay bounded.
    #[test]
    fn by_id_answers_as_an_ordered_map() {
        let mut rng = hedgerow_core::Rng::new(5);
        let mut t: ById<u64> = ById::default();
        let mut model = BTreeMap::new();
        let mut next = 1u64;
        for _ in 0..20_000 {
            match rng.below(8) {
                0 => {
                    // Now and then an id out of order, or one again.
                    let id = 1 + rng.below(next);
                    t.insert(id, id * 10);
                    model.insert(id, id * 10);
                }
                1..=4 => {
                    next += 1 + rng.below(2);
                    t.insert(next, next * 10);
                    model.insert(next, next * 10);
                }
                5 => {
                    let id = rng.below(next + 2);
                    assert_eq!(t.remove(id), model.remove(&id));
                }
                _ => {
                    // Mostly the oldest but one: holes behind the first.
                    let id = model.keys().nth(1).copied().unwrap_or(0);
                    assert_eq!(t.remove(id), model.remove(&id));
                }
            }
            assert_eq!(t.live, model.len());
            assert!(t.slots.len() <= 2 * t.live + HOLE_SLACK);
        }
        let left: Vec<u64> = t.slots.iter().filter_map(|(_, v)| *v).collect();
        assert_eq!(left, model.values().copied().collect::<Vec<_>>());
    }
}
