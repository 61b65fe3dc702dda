//! Streams: ordered byte flows between two nodes with credit-based flow
//! control. A receiver grants credit up to what its application has
//! consumed plus a window, so a slow receiver slows the sender and both
//! sides' memory stays bounded (sender: its send buffer; receiver: one
//! window). Streams ride on the ordered per-peer connection; a gap or a
//! write past the credit resets the stream rather than deliver out of
//! order. This room keeps the books; the node sends the frames.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::id::NodeId;
use crate::payload::Payload;
use crate::wire::{Message, StreamKind, INITIAL_STREAM_CREDIT};

/// Identifies a stream this node opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(pub u64);

/// Why a stream operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamError {
    /// No leader is known to open a stream to.
    NoLeader,
    /// The stream does not exist (finished, reset, or never opened).
    Unknown,
    /// Too many streams are open.
    TooMany,
    /// The stream was finished; no more writes.
    Finished,
    /// The stream was reset; the text says why.
    Reset(String),
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::NoLeader => f.write_str("no leader known to open a stream to"),
            StreamError::Unknown => f.write_str("no such stream (finished, reset or never opened)"),
            StreamError::TooMany => {
                f.write_str("too many open streams; finish some or raise max_streams")
            }
            StreamError::Finished => f.write_str("stream already finished"),
            StreamError::Reset(why) => write!(f, "stream was reset: {why}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for StreamError {}

/// Below this size a buffered piece is merged (copied) with the pieces
/// after it into one frame, so a stream of small writes does not become a
/// stream of small frames; pieces this big or bigger go out as they are,
/// without a copy.
const MERGE_BELOW: usize = 16 * 1024;

#[derive(Clone, Debug)]
pub(crate) struct SendStream {
    pub(crate) peer: NodeId,
    pub(crate) addr: Option<String>,
    /// The application's writes, shared rather than copied, in order.
    buffer: VecDeque<Payload>,
    /// Total bytes in `buffer`.
    buffered: usize,
    sent: u64,
    limit: u64,
    finishing: bool,
    ended: bool,
    blocked: bool,
}

impl SendStream {
    /// The next frame's data, at most `n > 0` bytes with `n <= buffered`:
    /// a slice of the front write when it is big enough (no copy), else
    /// the small writes at the front merged into one buffer.
    fn take(&mut self, n: usize) -> Payload {
        let Some(front) = self.buffer.front_mut() else {
            return Payload::default();
        };
        let data = if front.len() >= n || front.len() >= MERGE_BELOW {
            let piece = front.split_to(n);
            if front.is_empty() {
                self.buffer.pop_front();
            }
            piece
        } else {
            // Merge small pieces only: a big one after them goes out on its
            // own, so one small write cannot misalign every later frame
            // and make each of them a copy.
            let mut merged = Vec::with_capacity(n);
            while let Some(front) = self.buffer.front_mut() {
                let want = n - merged.len();
                if want == 0 || (!merged.is_empty() && front.len() >= MERGE_BELOW) {
                    break;
                }
                let piece = front.split_to(want);
                merged.extend_from_slice(&piece);
                if front.is_empty() {
                    self.buffer.pop_front();
                }
            }
            Payload::from(merged)
        };
        self.buffered -= data.len();
        data
    }
}

#[derive(Clone, Debug)]
pub(crate) struct RecvStream {
    expected: u64,
    consumed: u64,
    granted: u64,
    end: Option<u64>,
}

/// All streams of a node.
#[derive(Clone, Debug, Default)]
pub(crate) struct Streams {
    next_sid: u64,
    pub(crate) sending: BTreeMap<u64, SendStream>,
    pub(crate) receiving: BTreeMap<(NodeId, u64), RecvStream>,
}

/// What a receive step means for the application.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    Data { offset: u64, data: Payload },
    Finished,
    Reset(String),
    Nothing,
}

impl Streams {
    pub(crate) fn open_count(&self) -> usize {
        self.sending.len() + self.receiving.len()
    }

    pub(crate) fn open(&mut self, peer: NodeId, addr: Option<String>) -> u64 {
        self.next_sid += 1;
        self.sending.insert(
            self.next_sid,
            SendStream {
                peer,
                addr,
                buffer: VecDeque::new(),
                buffered: 0,
                sent: 0,
                limit: u64::from(INITIAL_STREAM_CREDIT),
                finishing: false,
                ended: false,
                blocked: false,
            },
        );
        self.next_sid
    }

    /// Buffers as much of `data` as fits (sharing it, not copying);
    /// returns how much was taken.
    pub(crate) fn write(
        &mut self,
        sid: u64,
        mut data: Payload,
        max_buffer: usize,
    ) -> Result<usize, StreamError> {
        let s = self.sending.get_mut(&sid).ok_or(StreamError::Unknown)?;
        if s.finishing {
            return Err(StreamError::Finished);
        }
        let room = max_buffer.saturating_sub(s.buffered);
        let offered = data.len();
        let n = room.min(offered);
        if n > 0 {
            s.buffer.push_back(data.split_to(n));
            s.buffered += n;
        }
        if n < offered {
            s.blocked = true;
        }
        Ok(n)
    }

    pub(crate) fn finish(&mut self, sid: u64) -> Result<(), StreamError> {
        let s = self.sending.get_mut(&sid).ok_or(StreamError::Unknown)?;
        s.finishing = true;
        Ok(())
    }

    /// Frames a sender may put on the wire now, within credit and chunk
    /// size; returns `(peer, addr, message)` triples and the ids that became
    /// writable again or completed.
    pub(crate) fn flush(&mut self, sid: u64, chunk: usize, max_buffer: usize) -> Flushed {
        let mut out = Flushed::default();
        let Some(s) = self.sending.get_mut(&sid) else {
            return out;
        };
        while s.buffered > 0 && s.sent < s.limit {
            let allowed = usize::try_from(s.limit - s.sent).unwrap_or(usize::MAX);
            let n = allowed.min(chunk).min(s.buffered);
            let data = s.take(n);
            let taken = data.len();
            out.frames.push(Message::StreamData {
                sid,
                offset: s.sent,
                data,
            });
            s.sent += taken as u64;
        }
        if s.blocked && s.buffered < max_buffer / 2 {
            s.blocked = false;
            out.writable = true;
        }
        if s.finishing && s.buffered == 0 && !s.ended {
            // The stream stays until the receiver confirms delivery.
            out.frames.push(Message::StreamEnd { sid, len: s.sent });
            s.ended = true;
        }
        out.peer = Some((s.peer.clone(), s.addr.clone()));
        out
    }

    /// The receiver confirmed the whole stream; true if it was ours and ended.
    pub(crate) fn done(&mut self, peer: &NodeId, sid: u64) -> bool {
        match self.sending.get(&sid) {
            Some(s) if &s.peer == peer && s.ended => {
                self.sending.remove(&sid);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn credit(&mut self, peer: &NodeId, sid: u64, limit: u64) -> bool {
        match self.sending.get_mut(&sid) {
            Some(s) if &s.peer == peer => {
                s.limit = s.limit.max(limit);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn accept(&mut self, peer: NodeId, sid: u64) -> bool {
        if self.receiving.contains_key(&(peer.clone(), sid)) {
            return false;
        }
        self.receiving.insert(
            (peer, sid),
            RecvStream {
                expected: 0,
                consumed: 0,
                granted: u64::from(INITIAL_STREAM_CREDIT),
                end: None,
            },
        );
        true
    }

    pub(crate) fn receive(
        &mut self,
        peer: &NodeId,
        sid: u64,
        offset: u64,
        data: Payload,
    ) -> Incoming {
        let key = (peer.clone(), sid);
        let Some(r) = self.receiving.get_mut(&key) else {
            return Incoming::Nothing;
        };
        let end = offset.saturating_add(data.len() as u64);
        if end <= r.expected {
            return Incoming::Nothing; // a duplicate
        }
        if r.end.is_some() {
            // The application was told the stream finished: nothing may
            // follow, whatever the peer sends.
            self.receiving.remove(&key);
            return Incoming::Reset(String::from("data after the end of the stream"));
        }
        if offset != r.expected {
            let expected = r.expected;
            self.receiving.remove(&key);
            return Incoming::Reset(alloc::format!(
                "gap in stream: expected offset {expected}, got {offset}"
            ));
        }
        if end > r.granted {
            self.receiving.remove(&key);
            return Incoming::Reset(String::from("sender exceeded its credit"));
        }
        r.expected = end;
        Incoming::Data { offset, data }
    }

    pub(crate) fn end(&mut self, peer: &NodeId, sid: u64, len: u64) -> Incoming {
        let key = (peer.clone(), sid);
        let Some(r) = self.receiving.get_mut(&key) else {
            return Incoming::Nothing;
        };
        if len != r.expected {
            let expected = r.expected;
            self.receiving.remove(&key);
            return Incoming::Reset(alloc::format!(
                "stream ended at {len} but {expected} bytes arrived"
            ));
        }
        r.end = Some(len);
        if r.consumed >= len {
            self.receiving.remove(&key);
        }
        Incoming::Finished
    }

    /// The application consumed `n` more bytes; returns a new credit limit
    /// to send when the window has opened by half or more.
    pub(crate) fn consumed(&mut self, peer: &NodeId, sid: u64, n: u64, window: u32) -> Option<u64> {
        let key = (peer.clone(), sid);
        let r = self.receiving.get_mut(&key)?;
        r.consumed = r.consumed.saturating_add(n).min(r.expected);
        if r.end.is_some_and(|e| r.consumed >= e) {
            self.receiving.remove(&key);
            return None;
        }
        let target = r.consumed + u64::from(window);
        if target >= r.granted + u64::from(window / 2)
            || r.granted < target && r.granted == u64::from(INITIAL_STREAM_CREDIT)
        {
            r.granted = target;
            return Some(target);
        }
        None
    }

    /// Bytes delivered to the application and not yet consumed.
    pub(crate) fn unconsumed(&self, peer: &NodeId, sid: u64) -> Option<u64> {
        self.receiving
            .get(&(peer.clone(), sid))
            .map(|r| r.expected - r.consumed)
    }

    /// Bytes buffered at the sender.
    pub(crate) fn buffered(&self, sid: u64) -> Option<usize> {
        self.sending.get(&sid).map(|s| s.buffered)
    }

    /// Drops every stream with `peer`; returns (outbound sids, inbound sids).
    pub(crate) fn drop_peer(&mut self, peer: &NodeId) -> (Vec<u64>, Vec<u64>) {
        let out: Vec<u64> = self
            .sending
            .iter()
            .filter(|(_, s)| &s.peer == peer)
            .map(|(k, _)| *k)
            .collect();
        for sid in &out {
            self.sending.remove(sid);
        }
        let inb: Vec<u64> = self
            .receiving
            .keys()
            .filter(|(p, _)| p == peer)
            .map(|(_, s)| *s)
            .collect();
        for sid in &inb {
            self.receiving.remove(&(peer.clone(), *sid));
        }
        (out, inb)
    }

    pub(crate) fn reset_sending(&mut self, sid: u64) -> Option<SendStream> {
        self.sending.remove(&sid)
    }

    pub(crate) fn reset_receiving(&mut self, peer: &NodeId, sid: u64) -> bool {
        self.receiving.remove(&(peer.clone(), sid)).is_some()
    }
}

/// What a flush produced.
#[derive(Debug, Default)]
pub(crate) struct Flushed {
    pub(crate) frames: Vec<Message>,
    pub(crate) peer: Option<(NodeId, Option<String>)>,
    pub(crate) writable: bool,
}

/// Which kind a stream opened to a node has.
pub(crate) fn kind_accepted(kind: StreamKind, is_leader: bool) -> bool {
    match kind {
        StreamKind::ToLeader => is_leader,
        StreamKind::ToMember => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> NodeId {
        NodeId::new("p").unwrap()
    }

    #[test]
    fn sender_stops_at_credit_and_resumes_on_more() {
        let mut s = Streams::default();
        let sid = s.open(peer(), None);
        let data = alloc::vec![7u8; 200 * 1024];
        let took = s.write(sid, Payload::from(data.clone()), 1 << 20).unwrap();
        assert_eq!(took, data.len());
        let f = s.flush(sid, 16 * 1024, 1 << 20);
        let sent: usize = f
            .frames
            .iter()
            .map(|m| match m {
                Message::StreamData { data, .. } => data.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(sent, INITIAL_STREAM_CREDIT as usize);
        assert!(s.credit(&peer(), sid, 128 * 1024));
        let f = s.flush(sid, 16 * 1024, 1 << 20);
        assert_eq!(f.frames.len(), 4);
    }

    /// (offset from `base`, length) of each data frame's bytes.
    fn frame_spans(f: &Flushed, base: *const u8) -> Vec<(usize, usize)> {
        f.frames
            .iter()
            .filter_map(|m| match m {
                Message::StreamData { data, .. } => {
                    Some((data.as_ptr() as usize - base as usize, data.len()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn big_writes_are_framed_without_a_copy() {
        let mut s = Streams::default();
        let sid = s.open(peer(), None);
        assert!(s.credit(&peer(), sid, 1 << 20));
        let data = Payload::from(alloc::vec![3u8; 100 * 1024]);
        let base = data.as_ptr();
        assert_eq!(s.write(sid, data, 1 << 20).unwrap(), 100 * 1024);
        let f = s.flush(sid, 64 * 1024, 1 << 20);
        // Both frames point into the application's own buffer.
        assert_eq!(
            frame_spans(&f, base),
            [(0, 64 * 1024), (64 * 1024, 36 * 1024)]
        );
    }

    #[test]
    fn small_writes_are_merged_without_misaligning_a_big_one() {
        let mut s = Streams::default();
        let sid = s.open(peer(), None);
        assert!(s.credit(&peer(), sid, 1 << 20));
        for _ in 0..10 {
            s.write(sid, Payload::from(&[1u8; 100]), 1 << 20).unwrap();
        }
        let big = Payload::from(alloc::vec![2u8; 64 * 1024]);
        let base = big.as_ptr();
        s.write(sid, big, 1 << 20).unwrap();
        let f = s.flush(sid, 64 * 1024, 1 << 20);
        let lens: Vec<usize> = frame_spans(&f, core::ptr::null())
            .iter()
            .map(|x| x.1)
            .collect();
        assert_eq!(
            lens,
            [1000, 64 * 1024],
            "ten small writes in one frame, then the big one"
        );
        assert_eq!(
            frame_spans(&f, base)[1],
            (0, 64 * 1024),
            "the big one is not copied"
        );
    }

    #[test]
    fn write_pushes_back_when_buffer_full() {
        let mut s = Streams::default();
        let sid = s.open(peer(), None);
        assert_eq!(s.write(sid, Payload::from(&[0; 100]), 60).unwrap(), 60);
        assert_eq!(s.write(sid, Payload::from(&[0; 100]), 60).unwrap(), 0);
    }

    #[test]
    fn data_after_the_end_resets_instead_of_being_delivered() {
        // Found by the node fuzz target: a peer that sent StreamEnd and then
        // more bytes had them delivered after StreamFinished.
        let mut s = Streams::default();
        assert!(s.accept(peer(), 1));
        let ten = Payload::from(alloc::vec![1; 10]);
        assert!(matches!(
            s.receive(&peer(), 1, 0, ten.clone()),
            Incoming::Data { .. }
        ));
        assert_eq!(s.end(&peer(), 1, 10), Incoming::Finished);
        assert!(matches!(s.receive(&peer(), 1, 10, ten), Incoming::Reset(_)));
        assert_eq!(s.unconsumed(&peer(), 1), None, "the stream is gone");
    }

    #[test]
    fn receiver_resets_on_gap_and_on_credit_overrun() {
        let mut s = Streams::default();
        assert!(s.accept(peer(), 1));
        assert_eq!(
            s.receive(&peer(), 1, 0, Payload::from(alloc::vec![1; 10])),
            Incoming::Data {
                offset: 0,
                data: Payload::from(alloc::vec![1; 10])
            }
        );
        assert_eq!(
            s.receive(&peer(), 1, 0, Payload::from(alloc::vec![1; 10])),
            Incoming::Nothing
        );
        assert!(matches!(
            s.receive(&peer(), 1, 20, Payload::from(alloc::vec![1; 10])),
            Incoming::Reset(_)
        ));
        assert!(s.accept(peer(), 2));
        let big = Payload::from(alloc::vec![0; INITIAL_STREAM_CREDIT as usize + 1]);
        assert!(matches!(s.receive(&peer(), 2, 0, big), Incoming::Reset(_)));
    }
}
