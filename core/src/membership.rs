//! Who is a member: the leader's roster (liveness, joins, graceful leaves,
//! failures, batching into deltas) and a member's assembly of snapshot
//! chunks. Only the lease holder authors membership; this room never
//! decides leadership and never sends (the node does).

use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;

use crate::id::{NodeId, Term, MAX_ADDR_LEN, MAX_NODE_ID_LEN};
use crate::payload::Payload;
use crate::spread::Budget;
use crate::time::MonoTime;
use crate::view::{Change, LeaveReason, Member, MemberChange, View};
use crate::wire::{Heartbeat, ViewDelta, ViewSnapshot};

#[derive(Clone, Debug)]
struct Live {
    incarnation: u64,
    /// Dropped as failed once time reaches this without a heartbeat.
    deadline: MonoTime,
    meta_version: u64,
    /// Its heartbeats say it relays deltas (protocol version 4).
    relays: bool,
    /// Its last heartbeat showed a view of this term: it can pass deltas
    /// on (a joiner still waiting for its snapshot cannot).
    holds_view: bool,
}

/// The leader's book of members (itself excluded).
#[derive(Clone, Debug)]
pub(crate) struct Roster {
    term: Term,
    live: BTreeMap<NodeId, Live>,
    pending: Vec<Change>,
    flush_at: MonoTime,
    next_scan: MonoTime,
    tombstones: BTreeMap<NodeId, (u64, MonoTime)>,
    pub(crate) last_contact: MonoTime,
    pub(crate) expect_contact: bool,
    ft: Duration,
    /// Live members not (yet) known to relay: while any is, the leader
    /// pushes every delta itself.
    legacy: usize,
    /// Members whose latest heartbeat showed the leader's current view,
    /// newest last: whom a joiner is sent to for its snapshot.
    current: VecDeque<NodeId>,
    /// Snapshots the leader sends itself when no member can, while views
    /// are relayed.
    pub(crate) served: Budget,
}

/// How many up-to-date members the roster remembers as snapshot sources.
const CURRENT: usize = 256;

impl Roster {
    /// A roster for a new term, seeded from the last known view: every
    /// member gets one failure timeout to heartbeat, except the previous
    /// holder, which is dropped at the first scan unless it heartbeats.
    pub(crate) fn new(
        term: Term,
        view: &View,
        me: &NodeId,
        previous: Option<&NodeId>,
        now: MonoTime,
        ft: Duration,
    ) -> Self {
        let mut live = BTreeMap::new();
        for m in view.members().filter(|m| &m.id != me) {
            let deadline = if Some(&m.id) == previous {
                now
            } else {
                now + ft
            };
            live.insert(
                m.id.clone(),
                Live {
                    incarnation: m.incarnation,
                    deadline,
                    meta_version: m.meta_version,
                    relays: false,
                    holds_view: true,
                },
            );
        }
        Roster {
            legacy: live.len(),
            current: VecDeque::new(),
            served: Budget::default(),
            term,
            expect_contact: !live.is_empty(),
            live,
            pending: Vec::new(),
            flush_at: MonoTime::MAX,
            next_scan: now,
            tombstones: BTreeMap::new(),
            last_contact: now,
            ft,
        }
    }

    pub(crate) fn term(&self) -> Term {
        self.term
    }

    /// Whether every live member said it relays.
    pub(crate) fn all_relay(&self) -> bool {
        self.legacy == 0
    }

    /// Whether `id`'s last heartbeat showed a view of this term (members
    /// of a new term's roster count as holding it until they heartbeat).
    pub(crate) fn holds_view(&self, id: &NodeId) -> bool {
        self.live.get(id).is_some_and(|l| l.holds_view)
    }

    /// Whether `id` is live and said it relays.
    pub(crate) fn relays(&self, id: &NodeId) -> bool {
        self.live.get(id).is_some_and(|l| l.relays)
    }

    /// `id` heartbeated with the leader's current view, or was just sent
    /// it whole: remembered while fewer than [`CURRENT`] are (a full list
    /// costs a heartbeat nothing; the gone are dropped from it when it is
    /// used; one remembered twice takes two turns).
    pub(crate) fn note_current(&mut self, id: &NodeId) {
        if self.current.len() < CURRENT {
            self.current.push_back(id.clone());
        }
    }

    /// A live, relaying member other than `not` that was up to date and
    /// has heartbeated within `fresh` of `now`, taking turns among them;
    /// the gone and the silent (crashed, most likely, and not yet dropped)
    /// are forgotten on the way, which makes room for others.
    pub(crate) fn snapshot_source(
        &mut self,
        not: &NodeId,
        now: MonoTime,
        fresh: Duration,
    ) -> Option<NodeId> {
        for _ in 0..self.current.len() {
            let id = self.current.pop_front()?;
            let heard = self
                .live
                .get(&id)
                .filter(|l| l.relays)
                .map(|l| l.deadline - self.ft);
            if heard.is_none_or(|at| now.saturating_since(at) > fresh) {
                continue;
            }
            self.current.push_back(id.clone());
            if &id != not {
                return Some(id);
            }
        }
        None
    }

    /// `live`'s insert and remove, keeping the count of members not known
    /// to relay.
    fn insert_live(&mut self, id: NodeId, l: Live) {
        self.legacy += usize::from(!l.relays);
        if let Some(old) = self.live.insert(id, l) {
            self.legacy -= usize::from(!old.relays);
        }
    }

    fn remove_live(&mut self, id: &NodeId) -> Option<Live> {
        let gone = self.live.remove(id)?;
        self.legacy -= usize::from(!gone.relays);
        Some(gone)
    }

    fn change(&mut self, c: Change, now: MonoTime, batch: Duration) {
        if self.pending.is_empty() {
            self.flush_at = now + batch;
        }
        self.pending.push(c);
    }

    /// A heartbeat from `from`. Returns the metadata version the leader
    /// holds for it (for the ack), or `None` if the heartbeat was ignored
    /// (a stale incarnation that already left, or a new id while the roster
    /// holds `max_members`).
    pub(crate) fn heard(
        &mut self,
        from: &NodeId,
        hb: &Heartbeat,
        now: MonoTime,
        batch: Duration,
        max_meta: usize,
        max_members: usize,
    ) -> Option<Option<u64>> {
        if let Some((inc, until)) = self.tombstones.get(from) {
            if *inc == hb.incarnation && now < *until {
                return None;
            }
        }
        if !self.live.contains_key(from) && self.live.len() >= max_members {
            return None;
        }
        self.last_contact = now;
        self.expect_contact = true;
        let meta_ok = hb.meta.as_ref().filter(|m| m.len() <= max_meta);
        let member = |meta_version: u64, meta: Payload| Member {
            id: from.clone(),
            incarnation: hb.incarnation,
            addr: hb.addr.clone(),
            meta_version,
            meta,
        };
        match self.live.get_mut(from) {
            Some(l) if l.incarnation == hb.incarnation => {
                l.deadline = now + self.ft;
                l.holds_view = hb.view_term == self.term;
                if l.relays != hb.relays {
                    l.relays = hb.relays;
                    if hb.relays {
                        self.legacy -= 1;
                    } else {
                        self.legacy += 1;
                    }
                }
                match meta_ok {
                    Some(meta) if hb.meta_version > l.meta_version => {
                        l.meta_version = hb.meta_version;
                        let m = member(hb.meta_version, meta.clone());
                        self.change(Change::Upsert(Arc::new(m)), now, batch);
                    }
                    _ => {}
                }
                Some(Some(self.live[from].meta_version))
            }
            other => {
                if let Some(old) = other {
                    let old_inc = old.incarnation;
                    self.tombstones
                        .insert(from.clone(), (old_inc, now + batch * 100));
                    self.change(
                        Change::Remove {
                            id: from.clone(),
                            incarnation: old_inc,
                            reason: LeaveReason::Replaced,
                        },
                        now,
                        batch,
                    );
                }
                let (version, meta) = match meta_ok {
                    Some(meta) => (hb.meta_version, meta.clone()),
                    None => (0, Payload::default()),
                };
                self.insert_live(
                    from.clone(),
                    Live {
                        incarnation: hb.incarnation,
                        deadline: now + self.ft,
                        meta_version: version,
                        relays: hb.relays,
                        holds_view: hb.view_term == self.term,
                    },
                );
                self.change(Change::Upsert(Arc::new(member(version, meta))), now, batch);
                Some(Some(version))
            }
        }
    }

    /// A graceful leave.
    pub(crate) fn left(
        &mut self,
        from: &NodeId,
        incarnation: u64,
        now: MonoTime,
        batch: Duration,
        ft: Duration,
    ) {
        if self
            .live
            .get(from)
            .is_some_and(|l| l.incarnation == incarnation)
        {
            self.remove_live(from);
            self.tombstones
                .insert(from.clone(), (incarnation, now + ft * 2));
            self.change(
                Change::Remove {
                    id: from.clone(),
                    incarnation,
                    reason: LeaveReason::Left,
                },
                now,
                batch,
            );
            if self.live.is_empty() {
                self.expect_contact = false;
            }
        }
    }

    /// Drops members silent for longer than `ft`.
    pub(crate) fn scan(&mut self, now: MonoTime, ft: Duration, batch: Duration) {
        if now < self.next_scan {
            return;
        }
        let failed: Vec<(NodeId, u64)> = self
            .live
            .iter()
            .filter(|(_, l)| now >= l.deadline)
            .map(|(id, l)| (id.clone(), l.incarnation))
            .collect();
        for (id, incarnation) in failed {
            self.remove_live(&id);
            self.change(
                Change::Remove {
                    id,
                    incarnation,
                    reason: LeaveReason::Failed,
                },
                now,
                batch,
            );
        }
        self.tombstones.retain(|_, (_, until)| *until > now);
        let first = self.live.values().map(|l| l.deadline).min();
        self.next_scan = match first {
            // Not more often than every ft/8: scans are O(members), and
            // heartbeats keep pushing the earliest deadline out.
            Some(t) => t.max(now + ft / 8),
            None => now + ft,
        };
    }

    pub(crate) fn next_due(&self) -> MonoTime {
        self.flush_at.min(self.next_scan)
    }

    /// Applies the batched changes to `view` once the batch window has
    /// passed, returning the delta to push and what changed.
    pub(crate) fn flush(
        &mut self,
        now: MonoTime,
        view: &mut View,
    ) -> Option<(ViewDelta, Vec<MemberChange>)> {
        if self.pending.is_empty() || now < self.flush_at {
            return None;
        }
        self.flush_at = MonoTime::MAX;
        let base = view.version();
        let changes = core::mem::take(&mut self.pending);
        let mut effects = Vec::new();
        for c in changes.iter().cloned() {
            if let Some(e) = view.apply(c) {
                effects.push(e);
            }
        }
        view.set_stamp(self.term, base + 1);
        Some((
            ViewDelta {
                term: self.term,
                base_version: base,
                version: base + 1,
                digest: view.digest(),
                changes,
            },
            effects,
        ))
    }
}

/// How many members fit one snapshot chunk with room to spare in a frame,
/// whatever the member count.
pub(crate) fn members_per_chunk(max_frame_len: u32, max_meta_len: usize) -> usize {
    let per_member = MAX_NODE_ID_LEN + MAX_ADDR_LEN + max_meta_len + 48;
    ((max_frame_len as usize / 2) / per_member).max(1)
}

/// Splits a view into snapshot chunks.
pub(crate) fn snapshot_chunks(view: &View, per_chunk: usize) -> Vec<ViewSnapshot> {
    let members: Vec<Arc<Member>> = view.shared_members().cloned().collect();
    let total = members.len() as u32;
    let chunks = members.len().div_ceil(per_chunk).max(1);
    let mut out = Vec::with_capacity(chunks);
    let mut iter = members.into_iter();
    for chunk in 0..chunks {
        out.push(ViewSnapshot {
            term: view.term(),
            version: view.version(),
            digest: view.digest(),
            chunk: chunk as u32,
            chunks: chunks as u32,
            total,
            members: iter.by_ref().take(per_chunk).collect(),
        });
    }
    out
}

/// A member's collection of snapshot chunks for one `(term, version)`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Assembly {
    stamp: Option<(Term, u64, u64)>,
    chunks: u32,
    got: BTreeMap<u32, Vec<Arc<Member>>>,
}

impl Assembly {
    /// Adds a chunk; returns the whole member list once complete.
    pub(crate) fn add(
        &mut self,
        s: ViewSnapshot,
        max_members: usize,
    ) -> Option<(Term, u64, u64, Vec<Arc<Member>>)> {
        let stamp = (s.term, s.version, s.digest);
        if self.stamp != Some(stamp) || self.chunks != s.chunks {
            self.stamp = Some(stamp);
            self.chunks = s.chunks;
            self.got.clear();
        }
        if s.total as usize > max_members {
            return None;
        }
        self.got.insert(s.chunk, s.members);
        if self.got.len() as u32 != self.chunks {
            return None;
        }
        let members: Vec<Arc<Member>> = core::mem::take(&mut self.got)
            .into_values()
            .flatten()
            .collect();
        self.stamp = None;
        Some((stamp.0, stamp.1, stamp.2, members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap_or_else(|_| unreachable!())
    }

    fn hb(incarnation: u64, relays: bool) -> Heartbeat {
        Heartbeat {
            term: Term(1),
            incarnation,
            addr: "a:1".into(),
            meta_version: 0,
            meta: None,
            view_term: Term(1),
            view_version: 0,
            relays,
        }
    }

    const FT: Duration = Duration::from_secs(3);
    const BATCH: Duration = Duration::from_millis(20);

    fn heard(r: &mut Roster, who: &str, inc: u64, relays: bool, at: u64) {
        let now = MonoTime::from_nanos(at);
        r.heard(&id(who), &hb(inc, relays), now, BATCH, 512, 100);
    }

    #[test]
    fn one_member_that_does_not_relay_keeps_the_leader_pushing_until_it_goes() {
        let me = id("leader");
        let mut r = Roster::new(Term(1), &View::new(), &me, None, MonoTime::ZERO, FT);
        assert!(r.all_relay(), "nobody to push to");
        heard(&mut r, "a", 1, true, 1);
        heard(&mut r, "b", 1, false, 2);
        assert!(!r.all_relay(), "b speaks version 3");
        heard(&mut r, "b", 1, true, 3);
        assert!(r.all_relay(), "b upgraded its heartbeats");
        heard(&mut r, "b", 2, false, 4);
        assert!(!r.all_relay(), "b came back as an older build");
        r.left(&id("b"), 2, MonoTime::from_nanos(5), BATCH, FT);
        assert!(r.all_relay(), "b left");
        heard(&mut r, "c", 1, false, 6);
        r.scan(MonoTime::from_nanos(6) + FT, FT, BATCH);
        assert!(r.all_relay(), "c failed");
    }

    #[test]
    fn a_new_term_pushes_until_every_member_has_said_it_relays() {
        let me = id("leader");
        let mut view = View::new();
        for name in ["a", "b"] {
            view.apply(Change::Upsert(Arc::new(Member {
                id: id(name),
                incarnation: 1,
                addr: "a:1".into(),
                meta_version: 0,
                meta: Payload::default(),
            })));
        }
        let mut r = Roster::new(Term(2), &view, &me, None, MonoTime::ZERO, FT);
        assert!(!r.all_relay());
        heard(&mut r, "a", 1, true, 1);
        assert!(!r.all_relay());
        heard(&mut r, "b", 1, true, 2);
        assert!(r.all_relay());
    }

    #[test]
    fn snapshot_sources_take_turns_and_skip_the_asker_and_the_gone() {
        let me = id("leader");
        let mut r = Roster::new(Term(1), &View::new(), &me, None, MonoTime::ZERO, FT);
        for (i, who) in ["a", "b", "c"].iter().enumerate() {
            heard(&mut r, who, 1, true, i as u64);
            r.note_current(&id(who));
        }
        let (t, fresh) = (MonoTime::from_nanos(10), Duration::from_secs(2));
        assert_eq!(r.snapshot_source(&id("a"), t, fresh), Some(id("b")));
        assert_eq!(r.snapshot_source(&id("a"), t, fresh), Some(id("c")));
        r.left(&id("b"), 1, MonoTime::from_nanos(9), BATCH, FT);
        assert_eq!(r.snapshot_source(&id("c"), t, fresh), Some(id("a")));
        assert_eq!(r.snapshot_source(&id("x"), t, fresh), Some(id("c")));
        assert_eq!(
            r.snapshot_source(&id("x"), t, fresh),
            Some(id("a")),
            "b is forgotten"
        );
        // Silent for longer than `fresh`: crashed, most likely.
        let later = MonoTime::from_nanos(10) + Duration::from_millis(2500);
        heard(&mut r, "c", 1, true, later.as_nanos());
        assert_eq!(r.snapshot_source(&id("x"), later, fresh), Some(id("c")));
        assert_eq!(
            r.snapshot_source(&id("x"), later, fresh),
            Some(id("c")),
            "a is forgotten"
        );
        r.note_current(&id("a"));
        assert_eq!(r.current.len(), 2, "room for a again");
    }
}
