//! Membership views: the leader-authored list of members with a
//! `(term, version)` stamp and a digest. This room applies deltas and
//! snapshots and reports what changed; it never decides who is a member
//! (the leader's roster does) and never sends anything.

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::borrow::Borrow;
use core::cmp::Ordering;
use core::fmt;
use serde::{Deserialize, Serialize};

use crate::decode::DecodeError;
use crate::id::{NodeId, Term, MAX_ADDR_LEN};
use crate::payload::Payload;

/// One member as the view records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Node id.
    pub id: NodeId,
    /// Incarnation: a known id with a new incarnation is a leave plus a join.
    pub incarnation: u64,
    /// Advertised address.
    pub addr: String,
    /// Metadata version.
    pub meta_version: u64,
    /// Application metadata (bounded by the leader's `max_meta_len`).
    pub meta: Payload,
}

impl Member {
    pub(crate) fn check_shape(&self) -> Result<(), DecodeError> {
        if !self.id.is_well_formed() || self.addr.len() > MAX_ADDR_LEN {
            return Err(DecodeError::Invalid("member id or address"));
        }
        if self.meta.len() > 64 * 1024 {
            return Err(DecodeError::Invalid("member metadata too large"));
        }
        Ok(())
    }

    fn digest(&self) -> u64 {
        let mut h = Fnv::new();
        h.write(self.id.as_str().as_bytes());
        h.write(&[0xff]);
        h.write(&self.incarnation.to_le_bytes());
        h.write(&self.meta_version.to_le_bytes());
        h.write(self.addr.as_bytes());
        h.finish()
    }
}

/// Why a member left the view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaveReason {
    /// It said goodbye.
    Left,
    /// The leader stopped hearing from it.
    Failed,
    /// It restarted (a new incarnation replaced it).
    Replaced,
    /// Learned from a snapshot: gone, reason not known here.
    Unknown,
}

/// One change inside a delta.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// Add or replace a member. Shared (`Arc`, encoded as the member
    /// itself): every view that applies the change holds this one record.
    Upsert(Arc<Member>),
    /// Remove a member (only if its incarnation matches).
    Remove {
        /// Node id.
        id: NodeId,
        /// The incarnation removed.
        incarnation: u64,
        /// Why.
        reason: LeaveReason,
    },
}

impl Change {
    pub(crate) fn check_shape(&self) -> Result<(), DecodeError> {
        match self {
            Change::Upsert(m) => m.check_shape(),
            Change::Remove { id, .. } if !id.is_well_formed() => {
                Err(DecodeError::Invalid("member id"))
            }
            Change::Remove { .. } => Ok(()),
        }
    }
}

/// What a view change meant for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// A member appeared.
    Joined(Member),
    /// A member's metadata or address changed.
    Updated(Member),
    /// A member went away.
    Left {
        /// Its id.
        id: NodeId,
        /// Its incarnation.
        incarnation: u64,
        /// Why, where known.
        reason: LeaveReason,
    },
}

/// A leader-authored view.
///
/// Members are held as shared records (`Arc<Member>`), the same ones the
/// delta or snapshot that brought them carries: in one process that runs
/// many nodes (the simulator) every view of a member is one allocation,
/// and a view costs a pointer per member. Equality, order and iteration
/// are those of the members themselves, by id.
#[derive(Clone, Default)]
pub struct View {
    term: Term,
    version: u64,
    members: BTreeSet<Entry>,
    digest: u64,
}

impl PartialEq for View {
    fn eq(&self, o: &Self) -> bool {
        self.stamp() == o.stamp()
            && self.digest == o.digest
            && self.members.len() == o.members.len()
            && self.members().eq(o.members())
    }
}
impl Eq for View {}

/// A view's member record, ordered, compared and found by id alone (a view
/// holds one record per id); [`View`]'s equality compares whole records.
#[derive(Clone)]
struct Entry(Arc<Member>);

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        self.0.id == o.0.id
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        self.0.id.cmp(&o.0.id)
    }
}
impl Borrow<NodeId> for Entry {
    fn borrow(&self) -> &NodeId {
        &self.0.id
    }
}

impl fmt::Debug for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("View")
            .field("term", &self.term)
            .field("version", &self.version)
            .field("members", &DebugMembers(&self.members))
            .field("digest", &self.digest)
            .finish()
    }
}

/// The members as `{id: member}`, as the map they used to be printed from.
struct DebugMembers<'a>(&'a BTreeSet<Entry>);

impl fmt::Debug for DebugMembers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|e| (&e.0.id, &*e.0)))
            .finish()
    }
}

impl View {
    /// An empty view at `(0, 0)`.
    pub fn new() -> Self {
        View::default()
    }

    /// The authoring leader's term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The version within the term.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// `(term, version)`, ordered.
    pub fn stamp(&self) -> (Term, u64) {
        (self.term, self.version)
    }

    /// Order-independent digest of the members (ids, incarnations,
    /// metadata versions, addresses).
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// Members by id.
    pub fn members(&self) -> impl ExactSizeIterator<Item = &Member> + Clone {
        self.members.iter().map(|e| &*e.0)
    }

    /// Members by id, as the shared records the view holds.
    pub(crate) fn shared_members(&self) -> impl ExactSizeIterator<Item = &Arc<Member>> + Clone {
        self.members.iter().map(|e| &e.0)
    }

    /// Members with an id in `[from, until)` (`None`: unbounded), by id.
    pub(crate) fn range<'a>(
        &'a self,
        from: Option<&NodeId>,
        until: Option<&NodeId>,
    ) -> impl Iterator<Item = &'a Member> + 'a {
        use core::ops::Bound;
        let lo = from.map_or(Bound::Unbounded, Bound::Included);
        let hi = until.map_or(Bound::Unbounded, Bound::Excluded);
        // An empty or reversed range (a garbled relay message) is empty,
        // never a panic.
        let valid = match (from, until) {
            (Some(a), Some(b)) => a < b,
            _ => true,
        };
        valid
            .then(|| self.members.range::<NodeId, _>((lo, hi)))
            .into_iter()
            .flatten()
            .map(|e| &*e.0)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// One member.
    pub fn get(&self, id: &NodeId) -> Option<&Member> {
        self.members.get(id).map(|e| &*e.0)
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.members.contains(id)
    }

    /// Position of `id` among the members in id order, for staggering.
    pub fn rank_of(&self, id: &NodeId) -> Option<usize> {
        // Counting the members below `id` compares no ids on the way
        // (every member runs this at every view change).
        self.contains(id)
            .then(|| self.members.range::<NodeId, _>(..id).count())
    }

    pub(crate) fn set_stamp(&mut self, term: Term, version: u64) {
        self.term = term;
        self.version = version;
    }

    /// Applies one change, returning what it meant.
    pub(crate) fn apply(&mut self, change: Change) -> Option<MemberChange> {
        match change {
            Change::Upsert(m) => {
                self.digest ^= m.digest();
                match self.members.replace(Entry(m.clone())) {
                    None => Some(MemberChange::Joined(Arc::unwrap_or_clone(m))),
                    Some(Entry(old)) => {
                        self.digest ^= old.digest();
                        if old.incarnation != m.incarnation {
                            Some(MemberChange::Joined(Arc::unwrap_or_clone(m)))
                        } else if old != m {
                            Some(MemberChange::Updated(Arc::unwrap_or_clone(m)))
                        } else {
                            None
                        }
                    }
                }
            }
            Change::Remove {
                id,
                incarnation,
                reason,
            } => {
                let matches = self
                    .members
                    .get(&id)
                    .is_some_and(|e| e.0.incarnation == incarnation);
                if !matches {
                    return None;
                }
                let old = self.members.take(&id)?;
                self.digest ^= old.0.digest();
                Some(MemberChange::Left {
                    id,
                    incarnation,
                    reason,
                })
            }
        }
    }

    /// Replaces the whole membership, returning the changes a member
    /// would have seen. A replaced incarnation shows as a leave then a join.
    pub(crate) fn replace(
        &mut self,
        term: Term,
        version: u64,
        members: Vec<Arc<Member>>,
    ) -> Vec<MemberChange> {
        let mut changes = Vec::new();
        // The last record of an id wins, as a map built from the list would.
        let mut next = BTreeSet::new();
        for m in members {
            next.replace(Entry(m));
        }
        for Entry(old) in &self.members {
            let id = &old.id;
            match next.get(id).map(|e: &Entry| &e.0) {
                Some(new) if new.incarnation == old.incarnation => {
                    if new != old {
                        changes.push(MemberChange::Updated((**new).clone()));
                    }
                }
                Some(_) => changes.push(MemberChange::Left {
                    id: id.clone(),
                    incarnation: old.incarnation,
                    reason: LeaveReason::Replaced,
                }),
                None => changes.push(MemberChange::Left {
                    id: id.clone(),
                    incarnation: old.incarnation,
                    reason: LeaveReason::Unknown,
                }),
            }
        }
        for Entry(new) in &next {
            if self
                .members
                .get(&new.id)
                .is_none_or(|old| old.0.incarnation != new.incarnation)
            {
                changes.push(MemberChange::Joined((**new).clone()));
            }
        }
        core::mem::swap(&mut self.members, &mut next);
        self.digest = self.members.iter().fold(0, |d, e| d ^ e.0.digest());
        self.term = term;
        self.version = version;
        changes
    }
}

/// FNV-1a, 64 bit: a stable hash for digests (no randomness, no std).
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        // Mix so that XOR-combining member digests does not cancel
        // structure shared by similar ids.
        let mut z = self.0;
        z = (z ^ (z >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        z ^ (z >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn member(id: &str, inc: u64) -> Arc<Member> {
        Arc::new(Member {
            id: NodeId::new(id).unwrap(),
            incarnation: inc,
            addr: "a:1".into(),
            meta_version: 0,
            meta: Payload::default(),
        })
    }

    #[test]
    fn digest_is_order_independent_and_tracks_changes() {
        let mut a = View::new();
        a.apply(Change::Upsert(member("x", 1)));
        a.apply(Change::Upsert(member("y", 1)));
        let mut b = View::new();
        b.apply(Change::Upsert(member("y", 1)));
        b.apply(Change::Upsert(member("x", 1)));
        assert_eq!(a.digest(), b.digest());
        b.apply(Change::Upsert(member("x", 2)));
        assert_ne!(a.digest(), b.digest());
        let mut c = View::new();
        c.replace(Term(1), 1, vec![member("x", 2), member("y", 1)]);
        assert_eq!(b.digest(), c.digest());
    }

    #[test]
    fn rank_is_the_position_in_id_order_of_members_only() {
        let mut v = View::new();
        for id in ["c", "a", "d", "b"] {
            v.apply(Change::Upsert(member(id, 1)));
        }
        let rank = |id: &str| v.rank_of(&NodeId::new(id).unwrap());
        assert_eq!(
            ["a", "b", "c", "d"].map(rank),
            [Some(0), Some(1), Some(2), Some(3)]
        );
        assert_eq!(rank("bb"), None);
        assert_eq!(rank("e"), None);
    }

    #[test]
    fn remove_needs_matching_incarnation() {
        let mut v = View::new();
        v.apply(Change::Upsert(member("x", 2)));
        let stale = Change::Remove {
            id: NodeId::new("x").unwrap(),
            incarnation: 1,
            reason: LeaveReason::Left,
        };
        assert_eq!(v.apply(stale), None);
        assert!(v.contains(&NodeId::new("x").unwrap()));
    }

    #[test]
    fn replace_reports_restart_as_leave_and_join() {
        let mut v = View::new();
        v.replace(Term(1), 1, vec![member("x", 1), member("y", 1)]);
        let changes = v.replace(Term(2), 1, vec![member("x", 2)]);
        assert!(changes.contains(&MemberChange::Joined((*member("x", 2)).clone())));
        assert!(changes
            .iter()
            .any(|c| matches!(c, MemberChange::Left { id, .. } if id.as_str() == "y")));
        assert!(changes.iter().any(|c| matches!(
            c,
            MemberChange::Left {
                reason: LeaveReason::Replaced,
                ..
            }
        )));
    }
}
