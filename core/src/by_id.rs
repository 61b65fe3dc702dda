//! A table of entries by `u64` id, for ids handed out in increasing order
//! and mostly retired oldest first: the core's outstanding requests, a
//! driver's callers waiting on them. Nothing protocol is decided here.

use alloc::collections::VecDeque;

/// Entries by id, for ids that mostly come in increasing order and mostly
/// go oldest first. A new one goes at the back, the oldest comes off the
/// front, and a lookup is a binary search; an ordered map moved its
/// entries about within its nodes on every insert and removal (~300 to
/// ~700 instructions each, by entry size). One removed out of order
/// leaves a hole until the holes before it go or there are more holes
/// than twice the entries left, when they are swept (O(1) a removal,
/// amortized), so the table holds at most about three times its entries.
/// Dropped and iterated in id order, as an ordered map is.
///
/// ```
/// use hedgerow_core::ById;
/// let mut t = ById::default();
/// t.insert(1, "a");
/// t.insert(2, "b");
/// t.insert(3, "c");
/// assert_eq!(t.remove(2), Some("b"));
/// assert_eq!(t.first_id(), Some(1));
/// assert_eq!(t.iter().collect::<Vec<_>>(), [(1, &"a"), (3, &"c")]);
/// ```
#[derive(Clone)]
pub struct ById<T> {
    /// `(id, entry)` in id order; `None` where one was removed. The first
    /// and the last slot are always entries.
    slots: VecDeque<(u64, Option<T>)>,
    live: usize,
}

/// Holes [`ById`] tolerates beyond twice its entries before a sweep.
pub(crate) const HOLE_SLACK: usize = 64;

/// The entries, as an ordered map shows them: where the holes are is not
/// the table's state (a model checker hashes this rendering).
impl<T: core::fmt::Debug> core::fmt::Debug for ById<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<T> Default for ById<T> {
    fn default() -> Self {
        ById {
            slots: VecDeque::new(),
            live: 0,
        }
    }
}

impl<T> ById<T> {
    /// Entries held.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Puts `v` under `id`, replacing what was there; cheapest when `id`
    /// is above every id held.
    pub fn insert(&mut self, id: u64, v: T) {
        match self.slots.back() {
            Some((last, _)) if *last >= id => {
                // Out of order: in place.
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

    /// Where entry `id` is, if it is held. Ids handed out one after
    /// another sit as many slots from the first as their ids are apart
    /// (a hole keeps its slot), so that slot is looked at first; a binary
    /// search, when it is not there.
    #[inline]
    fn slot(&self, id: u64) -> Option<usize> {
        let first = self.slots.front()?.0;
        // Ids only grow along the slots, so `id` sits at most `id - first`
        // slots in: when that slot holds it, no search.
        let guess = usize::try_from(id.checked_sub(first)?).ok()?;
        let at = match self.slots.get(guess) {
            Some((i, v)) if *i == id => return v.is_some().then_some(guess),
            // Past the last slot with no gap before it: not held (the
            // common case of a new id), no search.
            None if self.slots.len() as u64 == self.slots.back()?.0 - first + 1 => return None,
            _ => self.slot_search(id)?,
        };
        self.slots[at].1.is_some().then_some(at)
    }

    /// Where `id` is among the slots, by binary search.
    #[cold]
    fn slot_search(&self, id: u64) -> Option<usize> {
        if self.slots.back()?.0 < id {
            return None;
        }
        self.slots.binary_search_by_key(&id, |(i, _)| *i).ok()
    }

    /// Whether `id` is held.
    pub fn contains(&self, id: u64) -> bool {
        self.slot(id).is_some()
    }

    /// The entry under `id`.
    pub fn get(&self, id: u64) -> Option<&T> {
        self.slots[self.slot(id)?].1.as_ref()
    }

    /// The entry under `id`, to change.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        let at = self.slot(id)?;
        self.slots[at].1.as_mut()
    }

    /// The lowest id held.
    pub fn first_id(&self) -> Option<u64> {
        // The first slot is always an entry.
        self.slots.front().map(|(id, _)| *id)
    }

    /// Takes the entry under `id` out.
    pub fn remove(&mut self, id: u64) -> Option<T> {
        let at = self.slot(id)?;
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

    /// Every entry, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.slots
            .iter()
            .filter_map(|(id, v)| v.as_ref().map(|v| (*id, v)))
    }

    /// Slots held, holes included (for the bound's tests).
    #[cfg(test)]
    pub(crate) fn slots(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use alloc::vec::Vec;

    /// Entries come back as from an ordered map, in whatever order they
    /// are inserted and removed, and holes stay bounded.
    #[test]
    fn by_id_answers_as_an_ordered_map() {
        let mut rng = crate::rng::Rng::new(5);
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
            assert_eq!(t.len(), model.len());
            assert!(t.slots() <= 2 * t.len() + HOLE_SLACK);
        }
        let left: Vec<u64> = t.iter().map(|(_, v)| *v).collect();
        assert_eq!(left, model.values().copied().collect::<Vec<_>>());
    }
}
