//! One-shot messaging bookkeeping: requests this node sent to the leader
//! (retries, deadlines, redirects), the leader's at-most-once table of
//! handled request ids, and broadcasts this node sent (per-member results
//! and timeouts). This room keeps state and says what is due; the node
//! decides where messages go.

use alloc::collections::{btree_map, BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::cmp::Reverse;
use core::fmt;
use core::time::Duration;

use crate::by_id::ById;
use crate::id::{NodeId, Term};
use crate::payload::Payload;
use crate::time::MonoTime;

/// Identifies a `send` of this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Identifies a `broadcast` of this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BroadcastId(pub u64);

/// The leader's answer to a `send`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendReply {
    /// The leader that handled it.
    pub leader: NodeId,
    /// The term it was handled under (its fencing token).
    pub term: Term,
    /// The handler's reply.
    pub payload: Payload,
}

/// Why a `send` failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// No leader answered before the deadline. The request may or may not
    /// have been handled (a reply may have been lost).
    Timeout,
    /// No leader was known for the whole deadline.
    NoLeader,
    /// The leader's handler failed, or the leader refused; the text says why.
    Failed(String),
    /// Too many requests outstanding at this node.
    Overloaded,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Timeout => f.write_str(
                "no reply from the leader before the deadline; the request may have been handled",
            ),
            SendError::NoLeader => f.write_str(
                "no leader known before the deadline; is a candidate running with a trusted clock?",
            ),
            SendError::Failed(why) => write!(f, "leader failed the request: {why}"),
            SendError::Overloaded => {
                f.write_str("too many requests outstanding at this node; retry later")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SendError {}

/// Why one member's part of a broadcast failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BroadcastError {
    /// The member did not answer in time.
    Timeout,
    /// The member's handler failed; the text says why.
    Failed(String),
    /// Named in [`crate::Node::broadcast_to`] but not a member of the view:
    /// nothing was sent to it.
    NotMember,
    /// The member left this node's view before it answered: it left, was
    /// declared failed, or restarted (a new incarnation). It may have
    /// handled the broadcast; no answer will come.
    Left,
}

impl fmt::Display for BroadcastError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BroadcastError::Timeout => {
                f.write_str("member did not answer before the broadcast timeout")
            }
            BroadcastError::Failed(why) => write!(f, "member's handler failed: {why}"),
            BroadcastError::NotMember => {
                f.write_str("not a member of the view: nothing was sent to it")
            }
            BroadcastError::Left => f.write_str(
                "member left the view (left, failed or restarted) before it answered; it may have handled the broadcast",
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for BroadcastError {}

/// What a request carries: the application's bytes, or a call to the
/// coordination services.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    App(Payload),
    Coord(crate::coord::CoordCall),
}

#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub(crate) body: Body,
    pub(crate) deadline: MonoTime,
    pub(crate) next_try: MonoTime,
    pub(crate) ever_sent: bool,
}

/// Requests this node sent and has no final answer for, with an index of
/// when each is next due (its next try or its deadline, whichever comes
/// first), so finding what is due costs O(log n) instead of a scan of every
/// outstanding request on each wake.
///
/// Kept in a [`ById`], not an ordered map: ids are handed out in order,
/// and the usual answer is to the oldest request; a map moved its
/// ~100-byte entries about within its nodes on every insert and removal
/// (~700 instructions a request each for start and remove).
///
/// The due index is built for what requests mostly do: go out at once,
/// are answered long before they would be tried again, and are tried
/// again (when they are) a fixed interval later. A new request waits in
/// `fresh` (due at once) for the step that sends it; a due time no earlier
/// than the last queued goes at the back of a queue, any other into a
/// heap. Entries go stale rather than being found and taken out: a
/// request answered, or tried again later, leaves its old entry behind,
/// recognised because it no longer matches the request's due time. The
/// front of the queue and the top of the heap are always live, and both
/// are rebuilt from the table once stale entries outnumber the requests
/// (O(1) a request, amortized). An ordered set's insert and removal cost
/// ~250 instructions each, four of them a request; a heap's sift as much.
#[derive(Clone, Default)]
pub(crate) struct Requests {
    next_id: u64,
    pending: ById<Outgoing>,
    /// Started and not yet taken as due, in id order.
    fresh: Vec<u64>,
    /// `(due time, id)` in due order, and the entries that came out of
    /// that order: between them (and `fresh`) every request of `pending`
    /// under its current due time, plus stale entries.
    queue: VecDeque<(MonoTime, u64)>,
    heap: BinaryHeap<Reverse<(MonoTime, u64)>>,
}

/// The requests and the next id: the index is made of them (every request
/// is due at its own time), and which of its entries are stale is not
/// state (a model checker hashes this rendering).
impl fmt::Debug for Requests {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Requests")
            .field("next_id", &self.next_id)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

/// Stale due entries [`Requests`] tolerates beyond its requests before it
/// rebuilds the index.
const STALE_SLACK: usize = 64;

impl Outgoing {
    fn due(&self) -> MonoTime {
        self.next_try.min(self.deadline)
    }
}

impl Requests {
    /// A new request, due at once (`now`).
    pub(crate) fn start(&mut self, body: Body, now: MonoTime, timeout: Duration) -> u64 {
        self.next_id += 1;
        let o = Outgoing {
            body,
            deadline: now + timeout,
            next_try: now,
            ever_sent: false,
        };
        self.pending.insert(self.next_id, o);
        self.fresh.push(self.next_id);
        self.next_id
    }

    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    pub(crate) fn contains(&self, id: u64) -> bool {
        self.pending.contains(id)
    }

    /// Every id below this one is settled here (answered or given up) and
    /// will never be sent again.
    pub(crate) fn settled_below(&self) -> u64 {
        self.pending.first_id().unwrap_or(self.next_id + 1)
    }

    pub(crate) fn get(&self, id: u64) -> Option<&Outgoing> {
        self.pending.get(id)
    }

    pub(crate) fn remove(&mut self, id: u64) -> Option<Outgoing> {
        let o = self.pending.remove(id)?;
        if let Some(i) = self.fresh.iter().position(|f| *f == id) {
            self.fresh.remove(i);
        }
        self.drop_stale();
        Some(o)
    }

    /// Sets when `id` is tried next (and whether it was ever sent),
    /// keeping the index in step.
    pub(crate) fn retry_at(&mut self, id: u64, next_try: MonoTime, sent: bool) {
        let Some(o) = self.pending.get_mut(id) else {
            return;
        };
        o.next_try = next_try;
        o.ever_sent |= sent;
        let due = o.due();
        if self.fresh.contains(&id) {
            // Still waiting to be taken: it goes in the index then.
            return;
        }
        match self.queue.back() {
            Some((last, _)) if due < *last => self.heap.push(Reverse((due, id))),
            _ => self.queue.push_back((due, id)),
        }
        if self.queue.len() + self.heap.len() > 2 * self.pending.len() + STALE_SLACK {
            self.reindex();
        }
        self.drop_stale();
    }

    pub(crate) fn next_due(&self) -> MonoTime {
        let mut next = MonoTime::MAX;
        if let Some((t, _)) = self.queue.front() {
            next = *t;
        }
        if let Some(Reverse((t, _))) = self.heap.peek() {
            next = next.min(*t);
        }
        for id in &self.fresh {
            if let Some(o) = self.pending.get(*id) {
                next = next.min(o.due());
            }
        }
        next
    }

    /// Takes the ids due at `now` out of the index, in id order (the order
    /// a scan of the whole table gave, which retries and timeouts are
    /// reported in), into `ids` (cleared first). The caller then settles
    /// each: [`Requests::retry_at`] or [`Requests::remove`], or the
    /// request is never due again.
    pub(crate) fn take_due(&mut self, now: MonoTime, ids: &mut Vec<u64>) {
        ids.clear();
        while let Some(&(t, id)) = self.queue.front() {
            if t > now {
                break;
            }
            self.queue.pop_front();
            if self.is_live(t, id) {
                ids.push(id);
            }
        }
        while let Some(&Reverse((t, id))) = self.heap.peek() {
            if t > now {
                break;
            }
            self.heap.pop();
            if self.is_live(t, id) {
                ids.push(id);
            }
        }
        // The fresh ones are due at their start (unless set to be tried
        // later), and in id order: when they are all there is, as when a
        // step sends what was just started, no sort is needed.
        let sort = !ids.is_empty();
        let pending = &self.pending;
        self.fresh.retain(|id| match pending.get(*id) {
            Some(o) if o.due() <= now => {
                ids.push(*id);
                false
            }
            Some(_) => true,
            None => false,
        });
        if sort {
            ids.sort_unstable();
            ids.dedup();
        }
        self.drop_stale();
    }

    /// Whether index entry `(t, id)` is a request's current due time.
    fn is_live(&self, t: MonoTime, id: u64) -> bool {
        self.pending.get(id).is_some_and(|o| o.due() == t)
    }

    /// Pops stale entries off the front of the queue and the top of the
    /// heap, so [`Requests::next_due`] is a live request's.
    fn drop_stale(&mut self) {
        while let Some(&(t, id)) = self.queue.front() {
            if self.is_live(t, id) {
                break;
            }
            self.queue.pop_front();
        }
        while let Some(&Reverse((t, id))) = self.heap.peek() {
            if self.is_live(t, id) {
                break;
            }
            self.heap.pop();
        }
    }

    /// The index made again from the table, without its stale entries:
    /// all of it in the queue, in due order.
    #[cold]
    fn reindex(&mut self) {
        let fresh = &self.fresh;
        let mut live: Vec<_> = self
            .pending
            .iter()
            .filter(|(id, _)| !fresh.contains(id))
            .map(|(id, o)| (o.due(), id))
            .collect();
        live.sort_unstable();
        self.queue = live.into();
        self.heap.clear();
    }

    /// Every outstanding request, in id order.
    #[cfg(test)]
    fn iter(&self) -> impl Iterator<Item = (u64, &Outgoing)> {
        self.pending.iter()
    }
}

#[derive(Clone, Debug)]
enum Handled {
    InProgress,
    Done(crate::wire::ReplyBody),
}

/// The leader's memory of handled requests: `(sender, incarnation, id)`
/// → reply, bounded in entries.
///
/// An entry goes when its sender says the request is settled (each
/// request carries the sender's `settled_below`: every lower id is
/// answered or given up there), or at the latest one dedupe window after
/// it was handled. The first keeps the table as small as the requests in
/// flight, however fast they come; the window alone held every request of
/// the last 10 s, which capped a leader at 10 000 requests/s with the
/// default 100 000 entries. A settled id that still turns up (a stray copy
/// on another connection) is refused, not handled again: each sender
/// incarnation's floor is kept until the sender has been quiet for a
/// window.
///
/// Kept per sender: a lookup compares the sender's id against the few
/// senders, then integers, instead of comparing ids all the way down one
/// big table (which cost thousands of instructions per request at tens of
/// thousands of entries).
/// Expiry records beyond twice the table before [`Dedupe::compact`] runs.
const ORDER_SLACK: usize = 1024;

#[derive(Clone, Debug, Default)]
pub(crate) struct Dedupe {
    by_sender: BTreeMap<NodeId, Sender>,
    order: VecDeque<(MonoTime, (NodeId, u64, u64))>,
    len: usize,
}

#[derive(Clone, Debug, Default)]
struct Sender {
    /// Each incarnation seen, in incarnation order (one, unless the
    /// sender restarted within a window).
    incarnations: Vec<Incarnation>,
    /// When the last new request of this sender came.
    last_new: MonoTime,
}

/// One incarnation of a sender: its requests by id, in an id-ordered
/// table (a sender's ids come in order and settle oldest first, so an
/// entry goes in at the back and comes off the front; an ordered map
/// cost ~400 instructions a request for the two).
#[derive(Clone, Debug)]
struct Incarnation {
    incarnation: u64,
    /// Every id below is settled at the sender.
    floor: u64,
    entries: ById<Handled>,
}

impl Sender {
    /// Where incarnation `inc` is, or would go.
    fn find(&self, inc: u64) -> Result<usize, usize> {
        self.incarnations
            .binary_search_by_key(&inc, |x| x.incarnation)
    }

    fn get(&self, inc: u64) -> Option<&Incarnation> {
        self.incarnations.get(self.find(inc).ok()?)
    }

    fn get_mut(&mut self, inc: u64) -> Option<&mut Incarnation> {
        let i = self.find(inc).ok()?;
        self.incarnations.get_mut(i)
    }

    /// Incarnation `inc`, added if it is new.
    fn incarnation(&mut self, inc: u64) -> &mut Incarnation {
        let i = self.find(inc).unwrap_or_else(|i| {
            let new = Incarnation {
                incarnation: inc,
                floor: 0,
                entries: ById::default(),
            };
            self.incarnations.insert(i, new);
            i
        });
        &mut self.incarnations[i]
    }

    fn is_empty(&self) -> bool {
        self.incarnations.iter().all(|x| x.entries.is_empty())
    }
}

impl Incarnation {
    /// Forgets the replies below the floor (settled at the sender); an
    /// entry still being handled stays until its reply (it is settled
    /// then). How many went.
    fn forget_settled(&mut self) -> usize {
        let mut gone = 0;
        // The usual case, a sender settling its oldest requests: they are
        // the first entries, taken off the front without a search.
        while let Some(id) = self.entries.first_id() {
            if id >= self.floor {
                return gone;
            }
            if !matches!(self.entries.get(id), Some(Handled::Done(_))) {
                break;
            }
            self.entries.remove(id);
            gone += 1;
        }
        // One still being handled is in the way (its sender gave up on
        // it): the answered ones behind it go one by one.
        let floor = self.floor;
        let done: Vec<u64> = self
            .entries
            .iter()
            .take_while(|(id, _)| *id < floor)
            .filter(|(_, h)| matches!(h, Handled::Done(_)))
            .map(|(id, _)| id)
            .collect();
        for id in done {
            self.entries.remove(id);
            gone += 1;
        }
        gone
    }
}

/// What to do with an incoming request.
pub(crate) enum DedupeVerdict {
    /// First time: hand it to the application.
    New,
    /// Being handled: do nothing, the reply will follow.
    InProgress,
    /// Handled already: send this reply again.
    Replay(crate::wire::ReplyBody),
    /// The table is full of live entries: refuse.
    Full,
    /// Its sender settled it already (a stray copy): refuse.
    Settled,
}

impl Dedupe {
    /// `settled_below` as the request carried it (0: nothing said).
    pub(crate) fn check(
        &mut self,
        key: (NodeId, u64, u64),
        settled_below: u64,
        now: MonoTime,
        window: Duration,
        max: usize,
    ) -> DedupeVerdict {
        self.expire(now, window);
        let (from, inc, id) = &key;
        // A known sender without cloning (and dropping) its id.
        let sender = match self.by_sender.get_mut(from) {
            Some(s) => s,
            None => self.by_sender.entry(from.clone()).or_default(),
        };
        let slot = sender.incarnation(*inc);
        if settled_below > slot.floor {
            slot.floor = settled_below;
            self.len -= slot.forget_settled();
        }
        match slot.entries.get(*id) {
            Some(Handled::InProgress) => DedupeVerdict::InProgress,
            Some(Handled::Done(body)) => DedupeVerdict::Replay(body.clone()),
            None if *id < slot.floor => DedupeVerdict::Settled,
            None if self.len >= max => DedupeVerdict::Full,
            None => {
                slot.entries.insert(*id, Handled::InProgress);
                sender.last_new = now;
                self.len += 1;
                self.order.push_back((now, key));
                // After a compaction the queue holds at most one record
                // per entry and per sender: wait for as many again.
                if self.order.len() > 2 * (self.len + self.by_sender.len()) + ORDER_SLACK {
                    self.compact();
                }
                DedupeVerdict::New
            }
        }
    }

    pub(crate) fn complete(&mut self, key: &(NodeId, u64, u64), body: crate::wire::ReplyBody) {
        let (from, inc, id) = key;
        let Some(slot) = self.by_sender.get_mut(from).and_then(|s| s.get_mut(*inc)) else {
            return;
        };
        if *id < slot.floor {
            // Its sender gave up on it meanwhile: nothing to replay.
            if slot.entries.remove(*id).is_some() {
                self.len -= 1;
            }
        } else if let Some(entry) = slot.entries.get_mut(*id) {
            *entry = Handled::Done(body);
        }
    }

    /// Drops the expiry records of settled entries, which otherwise stay
    /// until their window ends: at a steady rate the queue held every
    /// request of the last window whatever `max` said. Runs when the
    /// queue is twice what it keeps, so it costs O(1) per request
    /// amortized.
    fn compact(&mut self) {
        let senders = &self.by_sender;
        self.order.retain(|(_, (from, inc, id))| {
            senders
                .get(from)
                .and_then(|s| s.get(*inc))
                .is_some_and(|x| x.entries.contains(*id))
        });
        // A sender with nothing left keeps its floors until it has been
        // quiet for a window: one record at its last new request lets
        // `expire` forget it then (the key, id 0, is never a request's).
        for (from, s) in &self.by_sender {
            if s.is_empty() {
                self.order.push_back((s.last_new, (from.clone(), 0, 0)));
            }
        }
    }

    fn expire(&mut self, now: MonoTime, window: Duration) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_since(*at) <= window {
                break;
            }
            let Some((_, key)) = self.order.pop_front() else {
                break;
            };
            let (from, inc, id) = &key;
            let Some(sender) = self.by_sender.get_mut(from) else {
                continue;
            };
            let slot = sender.get_mut(*inc);
            match slot.as_ref().and_then(|x| x.entries.get(*id)) {
                Some(Handled::Done(_)) => {
                    if let Some(x) = slot {
                        x.entries.remove(*id);
                    }
                    self.len -= 1;
                }
                // An entry still in progress stays: its reply is owed.
                Some(Handled::InProgress) => {
                    self.order.push_back((now, key));
                    break;
                }
                // Forgotten already (settled).
                None => {}
            }
            if sender.is_empty() && now.saturating_since(sender.last_new) > window {
                self.by_sender.remove(from);
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[derive(Clone, Debug)]
pub(crate) struct OutgoingBroadcast {
    pub(crate) waiting: BTreeSet<NodeId>,
    pub(crate) deadline: MonoTime,
    /// When the members still waited on are sent the broadcast again.
    pub(crate) next_try: MonoTime,
    /// Sends so far to the members still waited on (the first included).
    pub(crate) tries: u32,
    pub(crate) payload: Payload,
}

impl OutgoingBroadcast {
    fn due(&self) -> MonoTime {
        self.next_try.min(self.deadline)
    }
}

/// Broadcasts this node sent and still waits on.
#[derive(Clone, Debug, Default)]
pub(crate) struct Broadcasts {
    next_id: u64,
    pub(crate) pending: BTreeMap<u64, OutgoingBroadcast>,
}

impl Broadcasts {
    /// A broadcast sent now, retried from `now + retry` and given up on at
    /// `now + timeout`.
    pub(crate) fn start(
        &mut self,
        targets: BTreeSet<NodeId>,
        payload: Payload,
        now: MonoTime,
        (timeout, retry): (Duration, Duration),
    ) -> u64 {
        self.next_id += 1;
        self.pending.insert(
            self.next_id,
            OutgoingBroadcast {
                waiting: targets,
                deadline: now + timeout,
                next_try: now + retry,
                tries: 1,
                payload,
            },
        );
        self.next_id
    }

    pub(crate) fn next_due(&self) -> MonoTime {
        self.pending
            .values()
            .map(OutgoingBroadcast::due)
            .min()
            .unwrap_or(MonoTime::MAX)
    }

    /// The broadcasts due now: past their deadline or their next try.
    pub(crate) fn due(&self, now: MonoTime) -> Vec<u64> {
        due(&self.pending, |b| b.due() <= now)
    }
}

/// Replies a member keeps for broadcasts it answered, so that a retry
/// whose first answer was lost is answered again: at most this many bytes
/// of them (a reply beyond it is not kept, and such a retry goes
/// unanswered, as it would without the cache).
pub(crate) const BROADCAST_REPLY_CACHE_BYTES: usize = 4 << 20;

/// What a member answered to a broadcast it handled.
pub(crate) type BroadcastAnswer = Result<Payload, String>;

/// Receiver-side memory of broadcasts seen, so a duplicated or retried
/// message is handled once, and the answer (while kept) sent again.
#[derive(Clone, Debug, Default)]
pub(crate) struct SeenBroadcasts {
    seen: BTreeMap<(NodeId, u64, u64), Option<BroadcastAnswer>>,
    order: VecDeque<(MonoTime, (NodeId, u64, u64))>,
    cached: usize,
    /// Per sender incarnation, the highest broadcast id forgotten: a
    /// sender numbers its broadcasts in order, so an id at or below it
    /// that is not remembered is a retry (or a copy) of one forgotten, which
    /// may have been handled, and is refused, never delivered again.
    floors: BTreeMap<(NodeId, u64), u64>,
}

/// [`SeenBroadcasts::see`]'s verdict.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Seen<'a> {
    /// Not seen within the window: deliver it.
    First,
    /// Seen: the answer if it is known and kept, else `None` (still being
    /// handled, or not kept).
    Again(Option<&'a BroadcastAnswer>),
    /// New, but as many keys as allowed are still within the window:
    /// refuse it rather than forget a key a retry may still carry.
    Full,
    /// At or below the highest id forgotten for its sender incarnation:
    /// it may have been handled, and is not handled again.
    Forgotten,
}

fn answer_bytes(a: &BroadcastAnswer) -> usize {
    match a {
        Ok(p) => p.len(),
        Err(why) => why.len(),
    }
}

impl SeenBroadcasts {
    /// Whether `key` was seen within the window, remembering it if not.
    pub(crate) fn see(
        &mut self,
        key: (NodeId, u64, u64),
        now: MonoTime,
        window: Duration,
        max: usize,
    ) -> Seen<'_> {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_since(*at) <= window {
                break;
            }
            if let Some((_, k)) = self.order.pop_front() {
                if let Some(Some(a)) = self.seen.remove(&k) {
                    self.cached -= answer_bytes(&a);
                }
                let (from, incarnation, id) = k;
                let floor = self.floors.entry((from, incarnation)).or_insert(id);
                *floor = (*floor).max(id);
            }
        }
        // One floor per sender incarnation is small; past `max` of them
        // (senders restarting for a very long time without leaving the
        // view) the first in order goes.
        while self.floors.len() > max {
            self.floors.pop_first();
        }
        let full = self.order.len() >= max;
        let floor = self.floors.get(&(key.0.clone(), key.1)).copied();
        match self.seen.entry(key) {
            btree_map::Entry::Occupied(e) => Seen::Again(e.into_mut().as_ref()),
            btree_map::Entry::Vacant(e) if floor.is_some_and(|f| e.key().2 <= f) => Seen::Forgotten,
            btree_map::Entry::Vacant(_) if full => Seen::Full,
            btree_map::Entry::Vacant(e) => {
                self.order.push_back((now, e.key().clone()));
                e.insert(None);
                Seen::First
            }
        }
    }

    /// True the first time a key is seen within the window.
    #[cfg(test)]
    pub(crate) fn first(
        &mut self,
        key: (NodeId, u64, u64),
        now: MonoTime,
        window: Duration,
        max: usize,
    ) -> bool {
        self.see(key, now, window, max) == Seen::First
    }

    /// `sender` left the view: its incarnations' broadcasts will not be
    /// retried, so their floors go.
    pub(crate) fn forget_sender(&mut self, sender: &NodeId) {
        self.floors.retain(|(from, _), _| from != sender);
    }

    /// The application answered `key`: keep the answer for a retry, while
    /// the key is remembered and the answers kept stay within
    /// [`BROADCAST_REPLY_CACHE_BYTES`].
    pub(crate) fn answered(&mut self, key: &(NodeId, u64, u64), answer: &BroadcastAnswer) {
        let size = answer_bytes(answer);
        if self.cached + size > BROADCAST_REPLY_CACHE_BYTES {
            return;
        }
        if let Some(slot @ None) = self.seen.get_mut(key) {
            *slot = Some(answer.clone());
            self.cached += size;
        }
    }
}

/// A helper for tests and drivers: the reply body a handler result maps to.
pub(crate) fn reply_body(term: Term, result: Result<Payload, String>) -> crate::wire::ReplyBody {
    match result {
        Ok(payload) => crate::wire::ReplyBody::Ok { term, payload },
        Err(reason) => crate::wire::ReplyBody::Failed { term, reason },
    }
}

/// Collects into a vector, for callers that want all due ids at once.
pub(crate) fn due<K: Copy, V>(map: &BTreeMap<K, V>, mut is_due: impl FnMut(&V) -> bool) -> Vec<K> {
    map.iter()
        .filter(|(_, v)| is_due(v))
        .map(|(k, _)| *k)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> (NodeId, u64, u64) {
        (NodeId::new("s").unwrap(), 1, n)
    }

    /// The due index answers exactly what a scan of every outstanding
    /// request would, through starts, retries (to a later, an earlier or
    /// the same due time), removals and takes of what is due, and its
    /// stale entries stay bounded.
    #[test]
    fn request_due_index_matches_a_full_scan() {
        let mut rng = crate::rng::Rng::new(7);
        let mut r = Requests::default();
        let at = |n: u64| MonoTime::from_nanos(n);
        let mut taken = Vec::new();
        for step in 0..20_000u64 {
            let now = at(step * 10);
            match rng.below(5) {
                0 | 1 => {
                    let timeout = Duration::from_nanos(rng.below(2_000));
                    r.start(Body::App(Payload::default()), now, timeout);
                }
                2 => {
                    let id = rng.below(r.next_id + 1);
                    r.retry_at(id, at(step * 10 + rng.below(1_000)), rng.below(2) == 0);
                }
                3 => {
                    let id = rng.below(r.next_id + 1);
                    r.remove(id);
                }
                _ => {
                    // What the node does with what is due: try it again
                    // later or give it up, each taken id once.
                    let scanned: Vec<u64> = r
                        .iter()
                        .filter(|(_, o)| o.due() <= now)
                        .map(|(id, _)| id)
                        .collect();
                    r.take_due(now, &mut taken);
                    assert_eq!(taken, scanned);
                    for &id in &taken {
                        if rng.below(2) == 0 {
                            r.retry_at(id, at(step * 10 + 1 + rng.below(1_000)), true);
                        } else {
                            r.remove(id);
                        }
                    }
                }
            }
            let scan_min = r.iter().map(|(_, o)| o.due()).min();
            assert_eq!(r.next_due(), scan_min.unwrap_or(MonoTime::MAX));
            // Every request is in the index under its due time, and the
            // queue is in due order.
            for (id, o) in r.iter() {
                let queued = r.queue.contains(&(o.due(), id));
                let heaped = r.heap.iter().any(|Reverse(e)| *e == (o.due(), id));
                assert!(r.fresh.contains(&id) || queued || heaped);
            }
            assert!(r
                .queue
                .iter()
                .zip(r.queue.iter().skip(1))
                .all(|(a, b)| a.0 <= b.0));
            assert!(r.queue.len() + r.heap.len() <= 2 * r.len() + STALE_SLACK + 1);
        }
    }

    /// The request table answers as an ordered map of the requests
    /// outstanding would, whatever order they are answered in, and its
    /// holes stay bounded by the requests left.
    #[test]
    fn requests_answer_as_an_ordered_map_in_any_order() {
        let mut rng = crate::rng::Rng::new(11);
        let mut r = Requests::default();
        let mut model: BTreeMap<u64, MonoTime> = BTreeMap::new();
        let t = MonoTime::from_nanos(0);
        for step in 0..20_000u64 {
            // Bursts of starts, then answers mostly in order, some not;
            // one early request stays outstanding throughout.
            if rng.below(3) != 0 || model.is_empty() {
                let timeout = Duration::from_nanos(1 + rng.below(1_000));
                let id = r.start(Body::App(Payload::default()), t, timeout);
                model.insert(id, t + timeout);
            } else {
                let id = match rng.below(4) {
                    0 => 2 + rng.below(r.next_id),
                    // The oldest but request 1 (0: none, never an id).
                    _ => model.keys().nth(1).copied().unwrap_or(0),
                };
                assert_eq!(r.remove(id).map(|o| o.deadline), model.remove(&id));
            }
            assert_eq!(r.len(), model.len());
            let first = model.keys().next().copied();
            assert_eq!(
                r.settled_below(),
                first.unwrap_or(r.next_id + 1),
                "step {step}"
            );
            let probe = 1 + rng.below(r.next_id + 1);
            assert_eq!(r.contains(probe), model.contains_key(&probe));
            assert_eq!(r.get(probe).map(|o| o.deadline), model.get(&probe).copied());
            assert!(r.pending.slots() <= 2 * r.len() + crate::by_id::HOLE_SLACK);
        }
        assert!(r.contains(1), "the early request is outstanding still");
    }

    #[test]
    fn seen_broadcasts_pass_each_key_once_per_window() {
        let mut seen = SeenBroadcasts::default();
        let w = Duration::from_secs(10);
        let t0 = MonoTime::from_nanos(0);
        assert!(seen.first(key(1), t0, w, 10), "first copy passes");
        assert!(!seen.first(key(1), t0, w, 10), "a duplicate is held back");
        let later = t0 + Duration::from_secs(9);
        assert!(!seen.first(key(1), later, w, 10), "still within the window");
        // Another id, another incarnation of the sender, another sender.
        assert!(seen.first(key(2), later, w, 10));
        let restarted = (NodeId::new("s").unwrap(), 2, 1);
        assert!(seen.first(restarted, later, w, 10));
        assert!(seen.first((NodeId::new("t").unwrap(), 1, 1), later, w, 10));
        // A window after it was first seen, the key is forgotten, and a
        // copy of it (or of an older id) is refused, not delivered again;
        // a newer id still passes.
        let after = t0 + Duration::from_secs(11);
        assert_eq!(seen.see(key(1), after, w, 10), Seen::Forgotten);
        assert_eq!(seen.see(key(0), after, w, 10), Seen::Forgotten);
        assert!(seen.first(key(3), after, w, 10));
        // Once the sender leaves the view, its floors go.
        seen.forget_sender(&NodeId::new("s").unwrap());
        assert!(seen.first(key(1), after, w, 10));
    }

    #[test]
    fn seen_broadcasts_stay_within_their_bound() {
        let mut seen = SeenBroadcasts::default();
        let w = Duration::from_secs(10);
        let t0 = MonoTime::from_nanos(0);
        for n in 0..100 {
            assert!(seen.first(key(n), t0, w, 100));
        }
        // Full of keys still within the window: a new one is refused, and
        // none is forgotten (a retry of it would run the handler again).
        for n in 100..1_000 {
            assert_eq!(seen.see(key(n), t0, w, 100), Seen::Full);
        }
        assert_eq!(seen.seen.len(), 100);
        assert_eq!(seen.seen.len(), seen.order.len());
        assert_eq!(seen.see(key(0), t0, w, 100), Seen::Again(None));
        // Once the window passes there is room again.
        let after = t0 + Duration::from_secs(11);
        assert!(seen.first(key(1_000), after, w, 100));
        assert_eq!(seen.seen.len(), 1);
    }

    #[test]
    fn seen_broadcasts_keep_answers_for_retries_within_a_byte_bound() {
        let mut seen = SeenBroadcasts::default();
        let w = Duration::from_secs(10);
        let t0 = MonoTime::from_nanos(0);
        assert_eq!(seen.see(key(1), t0, w, 10), Seen::First);
        assert_eq!(seen.see(key(1), t0, w, 10), Seen::Again(None), "in hand");
        let ok: BroadcastAnswer = Ok(Payload::from("done"));
        seen.answered(&key(1), &ok);
        assert_eq!(seen.see(key(1), t0, w, 10), Seen::Again(Some(&ok)));
        // A second answer (a handler answering twice) does not replace it.
        seen.answered(&key(1), &Err("late".into()));
        assert_eq!(seen.see(key(1), t0, w, 10), Seen::Again(Some(&ok)));
        // An answer for a key not remembered is not kept.
        seen.answered(&key(7), &ok);
        assert_eq!(seen.cached, 4);
        // Past the byte bound an answer is not kept; the key still is.
        let big: BroadcastAnswer = Ok(Payload::from(vec![0u8; BROADCAST_REPLY_CACHE_BYTES]));
        assert_eq!(seen.see(key(2), t0, w, 10), Seen::First);
        seen.answered(&key(2), &big);
        assert_eq!(seen.see(key(2), t0, w, 10), Seen::Again(None));
        assert_eq!(seen.cached, 4);
        // Forgetting a key gives its bytes back.
        let after = t0 + Duration::from_secs(11);
        assert_eq!(seen.see(key(3), after, w, 10), Seen::First);
        assert_eq!(seen.cached, 0);
        assert_eq!(seen.see(key(1), after, w, 10), Seen::Forgotten);
    }

    #[test]
    fn dedupe_replays_within_window_and_forgets_after() {
        let mut d = Dedupe::default();
        let w = Duration::from_secs(10);
        let t0 = MonoTime::from_nanos(0);
        assert!(matches!(d.check(key(7), 0, t0, w, 10), DedupeVerdict::New));
        assert!(matches!(
            d.check(key(7), 0, t0, w, 10),
            DedupeVerdict::InProgress
        ));
        d.complete(&key(7), reply_body(Term(1), Ok(Payload::from("r"))));
        assert!(matches!(
            d.check(key(7), 0, t0 + Duration::from_secs(5), w, 10),
            DedupeVerdict::Replay(_)
        ));
        let later = t0 + Duration::from_secs(11);
        assert!(matches!(
            d.check(key(7), 0, later, w, 10),
            DedupeVerdict::New
        ));
    }

    #[test]
    fn dedupe_refuses_when_full_instead_of_forgetting() {
        let mut d = Dedupe::default();
        let w = Duration::from_secs(10);
        let t0 = MonoTime::from_nanos(0);
        for i in 0..3 {
            assert!(matches!(d.check(key(i), 0, t0, w, 3), DedupeVerdict::New));
        }
        assert!(matches!(d.check(key(9), 0, t0, w, 3), DedupeVerdict::Full));
        assert_eq!(d.len(), 3);
    }

    #[test]
    fn new_incarnation_is_a_new_request() {
        let mut d = Dedupe::default();
        let w = Duration::from_secs(10);
        let t0 = MonoTime::from_nanos(0);
        let old = (NodeId::new("s").unwrap(), 1, 7);
        let new = (NodeId::new("s").unwrap(), 2, 7);
        assert!(matches!(
            d.check(old.clone(), 0, t0, w, 10),
            DedupeVerdict::New
        ));
        d.complete(&old, reply_body(Term(1), Ok(Payload::from("old"))));
        assert!(matches!(d.check(new, 0, t0, w, 10), DedupeVerdict::New));
    }

    #[test]
    fn settled_requests_are_forgotten_and_stray_copies_refused() {
        let mut d = Dedupe::default();
        let w = Duration::from_secs(10);
        let t0 = MonoTime::from_nanos(0);
        let body = || reply_body(Term(1), Ok(Payload::from("r")));
        assert!(matches!(d.check(key(1), 1, t0, w, 10), DedupeVerdict::New));
        d.complete(&key(1), body());
        assert_eq!(d.len(), 1);
        // The sender got its reply: request 2 says everything below 2 is
        // settled, and the table forgets 1.
        assert!(matches!(d.check(key(2), 2, t0, w, 10), DedupeVerdict::New));
        assert_eq!(d.len(), 1);
        // A stray copy of 1 (say, on a connection that went down) is
        // refused, not handled a second time, although its entry is gone.
        assert!(matches!(
            d.check(key(1), 1, t0 + Duration::from_secs(9), w, 10),
            DedupeVerdict::Settled
        ));
        // A retry of 2, still outstanding at the sender, is in progress.
        assert!(matches!(
            d.check(key(2), 2, t0, w, 10),
            DedupeVerdict::InProgress
        ));
    }

    /// Settling forgets exactly the finished replies below the floor of
    /// that incarnation, also when the oldest entries are another
    /// incarnation's or still being handled (the front of the table is
    /// not the settled part then).
    #[test]
    fn settling_skips_other_incarnations_and_unfinished_entries() {
        let mut d = Dedupe::default();
        let w = Duration::from_secs(10);
        let t0 = MonoTime::from_nanos(0);
        let body = || reply_body(Term(1), Ok(Payload::from("r")));
        let k = |inc: u64, id: u64| (NodeId::new("s").unwrap(), inc, id);
        assert!(matches!(d.check(k(1, 1), 0, t0, w, 10), DedupeVerdict::New));
        d.complete(&k(1, 1), body());
        for id in 1..=3 {
            assert!(matches!(
                d.check(k(2, id), 0, t0, w, 10),
                DedupeVerdict::New
            ));
        }
        d.complete(&k(2, 2), body());
        d.complete(&k(2, 3), body());
        // Incarnation 2 settled everything below 4; its request 1 is still
        // being handled here.
        assert!(matches!(d.check(k(2, 4), 4, t0, w, 10), DedupeVerdict::New));
        assert_eq!(d.len(), 3);
        assert!(matches!(
            d.check(k(2, 2), 4, t0, w, 10),
            DedupeVerdict::Settled
        ));
        assert!(matches!(
            d.check(k(2, 3), 4, t0, w, 10),
            DedupeVerdict::Settled
        ));
        assert!(matches!(
            d.check(k(2, 1), 4, t0, w, 10),
            DedupeVerdict::InProgress
        ));
        assert!(matches!(
            d.check(k(1, 1), 0, t0, w, 10),
            DedupeVerdict::Replay(_)
        ));
        // Its reply settles it at once. Then the front of the table is
        // incarnation 1's reply, which incarnation 2 settling leaves alone
        // while it forgets its own reply 4 behind it.
        d.complete(&k(2, 1), body());
        assert_eq!(d.len(), 2);
        d.complete(&k(2, 4), body());
        assert!(matches!(d.check(k(2, 5), 5, t0, w, 10), DedupeVerdict::New));
        assert_eq!(d.len(), 2);
        assert!(matches!(
            d.check(k(1, 1), 0, t0, w, 10),
            DedupeVerdict::Replay(_)
        ));
    }

    #[test]
    fn sustained_settled_traffic_keeps_the_table_small() {
        let mut d = Dedupe::default();
        let w = Duration::from_secs(10);
        let body = || reply_body(Term(1), Ok(Payload::from("r")));
        // 100 000 requests/s for 3 s, 8 in flight at a time, against a
        // 1 000-entry table: the window alone would have filled it within
        // 10 ms.
        for n in 1..=300_000u64 {
            let now = MonoTime::from_nanos(n * 10_000);
            let settled = n.saturating_sub(8).max(1);
            assert!(
                matches!(d.check(key(n), settled, now, w, 1_000), DedupeVerdict::New),
                "request {n} refused with {} entries",
                d.len()
            );
            d.complete(&key(n), body());
        }
        assert!(d.len() <= 9, "{} entries", d.len());
        // The expiry queue is bounded by the table too, not by the rate.
        assert!(
            d.order.len() <= 2 * (d.len() + d.by_sender.len()) + ORDER_SLACK + 1,
            "{} expiry records",
            d.order.len()
        );
    }

    #[test]
    fn a_handler_finishing_after_its_sender_gave_up_leaves_nothing() {
        let mut d = Dedupe::default();
        let w = Duration::from_secs(10);
        let t0 = MonoTime::from_nanos(0);
        assert!(matches!(d.check(key(1), 1, t0, w, 10), DedupeVerdict::New));
        // The sender timed out on 1 and moved on while it was handled.
        assert!(matches!(d.check(key(2), 2, t0, w, 10), DedupeVerdict::New));
        assert_eq!(d.len(), 2);
        d.complete(&key(1), reply_body(Term(1), Ok(Payload::from("late"))));
        assert_eq!(d.len(), 1);
        assert!(matches!(
            d.check(key(1), 2, t0, w, 10),
            DedupeVerdict::Settled
        ));
    }

    #[test]
    fn a_sender_whose_records_were_compacted_is_still_forgotten_when_quiet() {
        let mut d = Dedupe::default();
        let w = Duration::from_secs(10);
        let t0 = MonoTime::from_nanos(0);
        let body = || reply_body(Term(1), Ok(Payload::from("r")));
        let a = |id| (NodeId::new("a").unwrap(), 1, id);
        let b = |id| (NodeId::new("b").unwrap(), 1, id);
        // `a`'s request 1 is being handled when its request 2 (saying 1
        // is settled) is refused by a full table; 1 then completes and is
        // dropped as settled: `a` has no entries, only expiry records.
        assert!(matches!(d.check(a(1), 1, t0, w, 2), DedupeVerdict::New));
        assert!(matches!(d.check(b(1), 1, t0, w, 2), DedupeVerdict::New));
        assert!(matches!(d.check(a(2), 2, t0, w, 2), DedupeVerdict::Full));
        d.complete(&a(1), body());
        d.complete(&b(1), body());
        // `b` keeps sending; compaction drops `a`'s records.
        for n in 2..=3_000u64 {
            assert!(matches!(d.check(b(n), n, t0, w, 10), DedupeVerdict::New));
            d.complete(&b(n), body());
        }
        assert!(d.order.len() < 2_000, "{} records", d.order.len());
        // A window later `a` is forgotten all the same.
        let later = t0 + Duration::from_secs(11);
        assert!(matches!(
            d.check(b(3_001), 3_001, later, w, 10),
            DedupeVerdict::New
        ));
        assert!(!d.by_sender.contains_key(&a(1).0));
    }

    #[test]
    fn a_sender_quiet_for_a_window_is_forgotten_whole() {
        let mut d = Dedupe::default();
        let w = Duration::from_secs(10);
        let t0 = MonoTime::from_nanos(0);
        assert!(matches!(d.check(key(1), 1, t0, w, 10), DedupeVerdict::New));
        d.complete(&key(1), reply_body(Term(1), Ok(Payload::from("r"))));
        assert!(matches!(d.check(key(2), 2, t0, w, 10), DedupeVerdict::New));
        d.complete(&key(2), reply_body(Term(1), Ok(Payload::from("r"))));
        let later = t0 + Duration::from_secs(11);
        let other = (NodeId::new("other").unwrap(), 1, 1);
        assert!(matches!(
            d.check(other, 1, later, w, 10),
            DedupeVerdict::New
        ));
        assert!(!d.by_sender.contains_key(&key(1).0));
    }
}
