//! Stream plumbing: opening, writing, finishing and resetting our streams,
//! accepting and delivering a peer's, and the credit that paces both. The
//! per-stream bookkeeping is `crate::stream`'s; this room turns it into
//! frames and events, and never buffers beyond the configured limits.

use alloc::string::{String, ToString};

use crate::id::{NodeId, Term};
use crate::payload::Payload;
use crate::stream::{kind_accepted, Incoming, StreamError, StreamId};
use crate::time::Now;
use crate::wire::{Message, StreamKind};

use super::{Event, Node, StreamTarget};

impl Node {
    /// Opens a stream to `target` (refused when too many are open, or when
    /// no leader is known for a stream to it).
    pub(super) fn open_stream_to(&mut self, target: StreamTarget) -> Result<StreamId, StreamError> {
        if self.streams.open_count() >= self.cfg.max_streams {
            return Err(StreamError::TooMany);
        }
        let (peer, addr, kind, term) = match target {
            StreamTarget::Leader => {
                let l = self.leader.as_ref().ok_or(StreamError::NoLeader)?;
                (
                    l.id.clone(),
                    Some(l.addr.clone()),
                    StreamKind::ToLeader,
                    l.term,
                )
            }
            StreamTarget::Member(id) => {
                let addr = self.addr_of(&id);
                (id, addr, StreamKind::ToMember, self.term())
            }
        };
        let sid = self.streams.open(peer.clone(), addr.clone());
        self.transmit(peer, addr, Message::StreamOpen { sid, kind, term });
        Ok(StreamId(sid))
    }

    /// Buffers `data` for one of our streams and sends what credit allows.
    pub(super) fn write_stream(
        &mut self,
        id: StreamId,
        data: Payload,
    ) -> Result<usize, StreamError> {
        let n = self
            .streams
            .write(id.0, data, self.cfg.stream_send_buffer)?;
        self.flush_stream(id.0);
        Ok(n)
    }

    /// Ends one of our streams after its buffered bytes.
    pub(super) fn finish_stream(&mut self, id: StreamId) -> Result<(), StreamError> {
        self.streams.finish(id.0)?;
        self.flush_stream(id.0);
        Ok(())
    }

    /// Abandons one of our streams and tells the peer.
    pub(super) fn reset_stream(&mut self, id: StreamId, reason: &str) {
        if let Some(s) = self.streams.reset_sending(id.0) {
            self.transmit(
                s.peer,
                s.addr,
                Message::StreamReset {
                    sid: id.0,
                    yours: false,
                    reason: reason.into(),
                },
            );
        }
    }

    /// The application consumed `n` bytes of an inbound stream.
    pub(super) fn grant_credit(&mut self, from: &NodeId, sid: u64, n: usize) {
        if let Some(limit) = self
            .streams
            .consumed(from, sid, n as u64, self.cfg.stream_window)
        {
            self.transmit(from.clone(), None, Message::StreamCredit { sid, limit });
        }
    }

    /// A peer opens a stream: accepted (with more credit than the initial
    /// when configured) or reset at once with the reason.
    pub(super) fn on_stream_open(
        &mut self,
        now: &Now,
        from: NodeId,
        sid: u64,
        (kind, term): (StreamKind, Term),
    ) {
        let leading =
            self.lease.is_leader(now) && term == self.lease.claim().map_or(Term(0), |c| c.0);
        let reason = if !kind_accepted(kind, leading) {
            Some("not leader")
        } else if self.streams.open_count() >= self.cfg.max_streams {
            Some("too many streams")
        } else if !self.streams.accept(from.clone(), sid) {
            Some("stream id reused")
        } else {
            None
        };
        if let Some(r) = reason {
            let reset = Message::StreamReset {
                sid,
                yours: true,
                reason: r.to_string(),
            };
            self.transmit(from, None, reset);
            return;
        }
        let initial = crate::wire::INITIAL_STREAM_CREDIT;
        if self.cfg.stream_window > initial {
            if let Some(limit) = self.streams.consumed(&from, sid, 0, self.cfg.stream_window) {
                self.transmit(from.clone(), None, Message::StreamCredit { sid, limit });
            }
        }
        self.event(Event::StreamOpened { from, sid, kind });
    }

    /// Bytes of a peer's stream.
    pub(super) fn on_stream_data(&mut self, from: NodeId, sid: u64, offset: u64, data: Payload) {
        match self.streams.receive(&from, sid, offset, data) {
            Incoming::Data { offset, data } => self.event(Event::StreamData {
                from,
                sid,
                offset,
                data,
            }),
            Incoming::Reset(reason) => self.reset_inbound(from, sid, reason),
            Incoming::Finished | Incoming::Nothing => {}
        }
    }

    /// A peer's stream ends at `len`.
    pub(super) fn on_stream_end(&mut self, from: NodeId, sid: u64, len: u64) {
        match self.streams.end(&from, sid, len) {
            Incoming::Finished => {
                self.transmit(from.clone(), None, Message::StreamDone { sid });
                self.event(Event::StreamFinished { from, sid });
            }
            Incoming::Reset(reason) => self.reset_inbound(from, sid, reason),
            _ => {}
        }
    }

    /// The receiver confirmed one of our streams in full.
    pub(super) fn on_stream_done(&mut self, from: &NodeId, sid: u64) {
        if self.streams.done(from, sid) {
            self.event(Event::StreamSent { id: StreamId(sid) });
        }
    }

    /// The receiver grants one of our streams more credit.
    pub(super) fn on_stream_credit(&mut self, from: &NodeId, sid: u64, limit: u64) {
        if self.streams.credit(from, sid, limit) {
            self.flush_stream(sid);
        }
    }

    /// A peer abandons a stream: one of ours (`yours`) or one of its own.
    pub(super) fn on_stream_reset(&mut self, from: NodeId, sid: u64, yours: bool, reason: String) {
        if yours {
            if self
                .streams
                .sending
                .get(&sid)
                .is_some_and(|s| s.peer == from)
            {
                self.streams.reset_sending(sid);
                self.event(Event::StreamFailed {
                    id: StreamId(sid),
                    reason,
                });
            }
        } else if self.streams.reset_receiving(&from, sid) {
            self.event(Event::StreamReset { from, sid, reason });
        }
    }

    fn reset_inbound(&mut self, from: NodeId, sid: u64, reason: String) {
        self.transmit(
            from.clone(),
            None,
            Message::StreamReset {
                sid,
                yours: true,
                reason: reason.clone(),
            },
        );
        self.event(Event::StreamReset { from, sid, reason });
    }

    fn flush_stream(&mut self, sid: u64) {
        let f = self
            .streams
            .flush(sid, self.cfg.stream_chunk, self.cfg.stream_send_buffer);
        if let Some((peer, addr)) = f.peer {
            for m in f.frames {
                self.transmit(peer.clone(), addr.clone(), m);
            }
        }
        if f.writable {
            self.event(Event::StreamWritable { id: StreamId(sid) });
        }
    }

    pub(super) fn on_peer_lost(&mut self, peer: &NodeId) {
        let (out, inb) = self.streams.drop_peer(peer);
        for sid in out {
            self.event(Event::StreamFailed {
                id: StreamId(sid),
                reason: "connection to peer lost".into(),
            });
        }
        for sid in inb {
            self.event(Event::StreamReset {
                from: peer.clone(),
                sid,
                reason: "connection to peer lost".into(),
            });
        }
    }
}
