//! Send-to-leader and broadcast bookkeeping: starting them, retrying and
//! timing them out, answering them (the leader dedupes requests so a retry
//! is never handled twice), and turning replies into events. Which node
//! leads is the lease's business; this room only asks.

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use crate::id::{NodeId, Term};
use crate::messaging::{
    reply_body, Body, BroadcastError, BroadcastId, DedupeVerdict, Outgoing, RequestId, Seen,
    SendError, SendReply,
};
use crate::payload::Payload;
use crate::time::Now;
use crate::wire::{LeaderHint, Message, ReplyBody};

use super::{BroadcastHandle, Event, Node, RequestHandle};

impl Node {
    /// Starts a request to the leader (or refuses it at once when too many
    /// are outstanding).
    pub(super) fn start_request(&mut self, now: &Now, payload: impl Into<Payload>) -> RequestId {
        let timeout = self.cfg.request_timeout;
        self.start_call(now, Body::App(payload.into()), timeout)
    }

    /// Starts call `body` (a send or a coordination call), given up on
    /// after `timeout`. Past `max_outstanding` it is refused at once: its
    /// id is spent and its event says [`SendError::Overloaded`].
    pub(super) fn start_call(&mut self, now: &Now, body: Body, timeout: Duration) -> RequestId {
        if self.requests.len() < self.cfg.max_outstanding {
            return RequestId(self.requests.start(body, now.mono, timeout));
        }
        let coord = matches!(body, Body::Coord(_));
        let id = RequestId(self.requests.start(body, now.mono, Duration::ZERO));
        self.requests.remove(id.0);
        let overloaded = SendError::Overloaded;
        self.event(if coord {
            Event::Coord {
                id,
                result: Err(overloaded),
            }
        } else {
            Event::SendDone {
                id,
                result: Err(overloaded),
            }
        });
        id
    }

    /// The application's answer to a request this leader handled.
    pub(super) fn answer_request(
        &mut self,
        handle: RequestHandle,
        result: Result<Payload, String>,
    ) {
        let body = reply_body(handle.term, result);
        self.dedupe.complete(
            &(handle.from.clone(), handle.incarnation, handle.id),
            body.clone(),
        );
        self.transmit(
            handle.from,
            None,
            Message::Reply {
                id: handle.id,
                body,
            },
        );
    }

    /// Starts a broadcast to every member of the view, this node included.
    pub(super) fn start_broadcast(&mut self, now: &Now, payload: Payload) -> BroadcastId {
        let mut targets: BTreeSet<NodeId> = self.view.members().map(|m| m.id.clone()).collect();
        targets.insert(self.me.id.clone());
        self.broadcast_to_set(now, targets, payload)
    }

    /// Starts a broadcast to the members named in `to` (hedge's
    /// `OnlySendTo`); each one that is not in the view (nor this node) is
    /// answered at once with [`BroadcastError::NotMember`].
    pub(super) fn start_broadcast_to(
        &mut self,
        now: &Now,
        to: &[NodeId],
        payload: Payload,
    ) -> BroadcastId {
        let (known, unknown): (BTreeSet<NodeId>, BTreeSet<NodeId>) = to
            .iter()
            .cloned()
            .partition(|id| id == &self.me.id || self.view.get(id).is_some());
        let id = self.broadcast_to_set(now, known, payload);
        for from in unknown {
            self.event(Event::BroadcastReply {
                id,
                from,
                result: Err(BroadcastError::NotMember),
            });
        }
        if self
            .broadcasts
            .pending
            .get(&id.0)
            .is_some_and(|b| b.waiting.is_empty())
        {
            self.broadcasts.pending.remove(&id.0);
            self.event(Event::BroadcastDone { id });
        }
        id
    }

    fn broadcast_to_set(
        &mut self,
        now: &Now,
        targets: BTreeSet<NodeId>,
        payload: Payload,
    ) -> BroadcastId {
        let id = self.broadcasts.start(
            targets.clone(),
            payload.clone(),
            now.mono,
            (self.cfg.broadcast_timeout, self.cfg.request_retry_interval),
        );
        self.send_broadcast(targets, id, &payload);
        BroadcastId(id)
    }

    fn send_broadcast(&mut self, to: impl IntoIterator<Item = NodeId>, id: u64, payload: &Payload) {
        for to in to {
            let addr = self.addr_of(&to);
            let incarnation = self.me.incarnation;
            // The process the view knows (a retry must not reach its
            // successor unnoticed); this node itself, or 0 if unknown.
            let to_incarnation = if to == self.me.id {
                incarnation
            } else {
                self.view.get(&to).map_or(0, |m| m.incarnation)
            };
            let payload = payload.clone();
            let msg = Message::Broadcast {
                id,
                incarnation,
                payload,
                to_incarnation,
            };
            self.transmit(to, addr, msg);
        }
    }

    /// The application's answer to a broadcast delivered here.
    pub(super) fn answer_broadcast(
        &mut self,
        handle: BroadcastHandle,
        result: Result<Payload, String>,
    ) {
        let key = (handle.from.clone(), handle.incarnation, handle.id);
        self.seen_broadcasts.answered(&key, &result);
        self.transmit(
            handle.from,
            None,
            Message::BroadcastReply {
                id: handle.id,
                result,
            },
        );
    }

    /// `req` is `(id, incarnation, settled_below)` as the request carried
    /// them.
    pub(super) fn on_request(
        &mut self,
        now: &Now,
        from: NodeId,
        req: (u64, u64, u64),
        payload: Payload,
    ) {
        let (id, incarnation, settled_below) = req;
        if !self.lease.is_leader(now) {
            self.redirect(from, id);
            return;
        }
        let term = self.lease.claim().map_or(Term(0), |c| c.0);
        let key = (from.clone(), incarnation, id);
        match self.dedupe.check(
            key,
            settled_below,
            now.mono,
            self.cfg.dedupe_window,
            self.cfg.max_dedupe_entries,
        ) {
            DedupeVerdict::New => self.event(Event::Request {
                handle: RequestHandle {
                    from,
                    incarnation,
                    id,
                    term,
                },
                payload,
            }),
            DedupeVerdict::InProgress => {}
            DedupeVerdict::Replay(body) => self.transmit(from, None, Message::Reply { id, body }),
            DedupeVerdict::Full => self.refuse_request(
                from,
                (id, term),
                "leader overloaded: too many requests in the dedupe window",
            ),
            // Nobody waits for this answer: the sender settled the id.
            DedupeVerdict::Settled => self.refuse_request(
                from,
                (id, term),
                "a stray copy of a request its sender already settled",
            ),
        }
    }

    /// Tells the sender of request `id` that this node does not lead, and
    /// who does if it knows.
    pub(super) fn redirect(&mut self, from: NodeId, id: u64) {
        let hint = self
            .leader
            .as_ref()
            .filter(|l| l.id != self.me.id)
            .map(|l| LeaderHint {
                id: l.id.clone(),
                addr: l.addr.clone(),
                term: l.term,
            });
        self.transmit(
            from,
            None,
            Message::Reply {
                id,
                body: ReplyBody::NotLeader { hint },
            },
        );
    }

    /// Answers request `id` with a failure under `term`, unhandled.
    fn refuse_request(&mut self, to: NodeId, (id, term): (u64, Term), reason: &str) {
        let body = ReplyBody::Failed {
            term,
            reason: reason.into(),
        };
        self.transmit(to, None, Message::Reply { id, body });
    }

    pub(super) fn on_reply(&mut self, now: &Now, from: NodeId, id: u64, body: ReplyBody) {
        let Some(o) = self.requests.get(id) else {
            return;
        };
        if let Body::Coord(call) = &o.body {
            if !matches!(body, ReplyBody::NotLeader { .. }) {
                let call = call.clone();
                self.requests.remove(id);
                self.coord_reply(now, id, call, body);
                return;
            }
        }
        match body {
            ReplyBody::Ok { term, payload } => {
                self.requests.remove(id);
                self.event(Event::SendDone {
                    id: RequestId(id),
                    result: Ok(SendReply {
                        leader: from,
                        term,
                        payload,
                    }),
                });
            }
            ReplyBody::Failed { reason, .. } => {
                self.requests.remove(id);
                self.event(Event::SendDone {
                    id: RequestId(id),
                    result: Err(SendError::Failed(reason)),
                });
            }
            // A coordination answer to an application request: the
            // leader broke the protocol; the request gets no payload.
            ReplyBody::Coord { .. } => {
                self.requests.remove(id);
                self.event(Event::SendDone {
                    id: RequestId(id),
                    result: Err(SendError::Failed(
                        "a coordination answer to a request".into(),
                    )),
                });
            }
            ReplyBody::NotLeader { hint } => {
                // Retry soon; a hint with a higher term is checked against
                // the store before this node follows it.
                if let Some(h) = hint {
                    if h.term > self.term() {
                        self.claim(now, h.term);
                    }
                }
                if let Some(o) = self.requests.get(id) {
                    let at = o
                        .next_try
                        .min(now.mono + self.cfg.request_retry_interval / 4);
                    self.requests.retry_at(id, at, false);
                }
            }
        }
    }

    /// A broadcast arrived: delivered once per `(sender, incarnation, id)`.
    pub(super) fn on_broadcast(
        &mut self,
        now: &Now,
        from: NodeId,
        (id, incarnation, to_incarnation): (u64, u64, u64),
        payload: Payload,
    ) {
        // A copy for an earlier process of this member (it restarted,
        // and the sender's view does not show that yet): that process may
        // have handled it, so this one must not. It is not this process's
        // to answer either: the sender's part ends with `Left` once the
        // restart reaches its view (or times out), as for any member gone
        // before it answered.
        if to_incarnation != 0 && to_incarnation != self.me.incarnation {
            return;
        }
        let key = (from.clone(), incarnation, id);
        let window = self.cfg.broadcast_timeout * 2;
        let result = match self
            .seen_broadcasts
            .see(key, now.mono, window, self.cfg.max_dedupe_entries)
        {
            Seen::First => {
                let handle = BroadcastHandle {
                    from,
                    incarnation,
                    id,
                };
                self.event(Event::Broadcast { handle, payload });
                return;
            }
            // Still being handled (its answer will go when it is ready),
            // or answered beyond what is kept.
            Seen::Again(None) => return,
            // A retry whose answer was lost: the kept answer goes again,
            // the handler does not run twice.
            Seen::Again(Some(answer)) => answer.clone(),
            Seen::Full => Err(String::from(
                "member overloaded: too many broadcasts in the dedupe window",
            )),
            // A sender with a longer broadcast timeout than this member's
            // retried after this member forgot the broadcast.
            Seen::Forgotten => Err(String::from(
                "arrived after this member forgot the broadcast (twice its broadcast_timeout); it may have been handled",
            )),
        };
        self.transmit(from, None, Message::BroadcastReply { id, result });
    }

    /// A member answered one of our broadcasts.
    pub(super) fn on_broadcast_reply(
        &mut self,
        from: NodeId,
        id: u64,
        result: Result<Payload, String>,
    ) {
        self.end_part(id, from, result.map_err(BroadcastError::Failed));
    }

    /// `member` left the view (it left, was declared failed, or restarted):
    /// its part of every broadcast still waiting on it ends now with
    /// [`BroadcastError::Left`] instead of waiting out the broadcast timeout.
    /// This node's own part is never ended this way: its handler answers it.
    pub(super) fn end_broadcast_parts(&mut self, member: &NodeId) {
        if *member == self.me.id {
            return;
        }
        let waiting: Vec<u64> = self
            .broadcasts
            .pending
            .iter()
            .filter(|(_, b)| b.waiting.contains(member))
            .map(|(&id, _)| id)
            .collect();
        for id in waiting {
            self.end_part(id, member.clone(), Err(BroadcastError::Left));
        }
    }

    /// Ends `from`'s part of broadcast `id` with `result`, if it is still
    /// waited on, and the broadcast with it when it was the last.
    fn end_part(&mut self, id: u64, from: NodeId, result: Result<Payload, BroadcastError>) {
        let Some(b) = self.broadcasts.pending.get_mut(&id) else {
            return;
        };
        if !b.waiting.remove(&from) {
            return;
        }
        let done = b.waiting.is_empty();
        self.event(Event::BroadcastReply {
            id: BroadcastId(id),
            from,
            result,
        });
        if done {
            self.broadcasts.pending.remove(&id);
            self.event(Event::BroadcastDone {
                id: BroadcastId(id),
            });
        }
    }

    pub(super) fn step_requests(&mut self, now: &Now) {
        if self.requests.next_due() > now.mono {
            return;
        }
        let mut due = core::mem::take(&mut self.due_scratch);
        self.requests.take_due(now.mono, &mut due);
        for &id in &due {
            let Some(o) = self.requests.get(id) else {
                continue;
            };
            if o.deadline <= now.mono {
                let err = if o.ever_sent {
                    SendError::Timeout
                } else {
                    SendError::NoLeader
                };
                if let Some(Outgoing {
                    body: Body::Coord(call),
                    ..
                }) = self.requests.remove(id)
                {
                    self.coord_gave_up(now, id, call, err);
                } else {
                    self.event(Event::SendDone {
                        id: RequestId(id),
                        result: Err(err),
                    });
                }
                continue;
            }
            let to = self
                .leader
                .as_ref()
                .map(|l| (l.id.clone(), (l.id != self.me.id).then(|| l.addr.clone())));
            match to {
                Some((leader, addr)) => {
                    let body = o.body.clone();
                    self.requests
                        .retry_at(id, now.mono + self.cfg.request_retry_interval, true);
                    let incarnation = self.me.incarnation;
                    let msg = match body {
                        Body::App(payload) => Message::Request {
                            id,
                            incarnation,
                            payload,
                            settled_below: self.requests.settled_below(),
                        },
                        Body::Coord(call) => Message::Coord {
                            id,
                            incarnation,
                            call,
                        },
                    };
                    self.transmit(leader, addr, msg);
                }
                None => {
                    let at = now.mono + self.cfg.request_retry_interval / 4;
                    self.requests.retry_at(id, at, false);
                }
            }
        }
        self.due_scratch = due;
    }

    pub(super) fn step_broadcasts(&mut self, now: &Now) {
        if self.broadcasts.next_due() > now.mono {
            return;
        }
        for id in self.broadcasts.due(now.mono) {
            let Some(b) = self.broadcasts.pending.get_mut(&id) else {
                continue;
            };
            if b.deadline <= now.mono {
                let waiting = core::mem::take(&mut b.waiting);
                self.broadcasts.pending.remove(&id);
                for from in waiting {
                    self.event(Event::BroadcastReply {
                        id: BroadcastId(id),
                        from,
                        result: Err(BroadcastError::Timeout),
                    });
                }
                self.event(Event::BroadcastDone {
                    id: BroadcastId(id),
                });
                continue;
            }
            // Members not heard from get it again, backing off (1, 2, 4, 8,
            // then 16 retry intervals apart) so that a slow handler is not
            // flooded; the receiver hands a retry of an answered broadcast
            // its kept answer, and never runs the handler twice.
            let backoff = self.cfg.request_retry_interval * (1 << b.tries.min(4));
            b.tries += 1;
            b.next_try = (now.mono + backoff).min(b.deadline);
            let payload = b.payload.clone();
            let again: Vec<NodeId> = b
                .waiting
                .iter()
                .filter(|m| **m != self.me.id)
                .cloned()
                .collect();
            self.send_broadcast(again, id, &payload);
        }
    }
}
