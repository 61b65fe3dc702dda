//! Invariant 1: at most one node believes it is leader at any true
//! instant, checked on exact leadership intervals. A node's belief starts
//! when it processes its winning write and ends at the first true instant
//! its clock's `latest` reaches the expiry, or when it steps down, crashes
//! or its clock turns untrusted, whichever comes first.

use super::Violation;
use hedgerow_core::Term;

/// Who led: a node slot, its incarnation, and the term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner {
    /// Node slot in the cluster.
    pub slot: usize,
    /// The process's incarnation.
    pub incarnation: u64,
    /// The term held.
    pub term: Term,
}

/// One leadership interval in true time, `[start, end)` ns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    /// Who.
    pub owner: Owner,
    /// Start (true ns).
    pub start: u64,
    /// End (true ns), exclusive.
    pub end: u64,
}

/// Collects intervals and checks them for overlap.
#[derive(Debug, Default)]
pub struct Leadership {
    open: Vec<(Owner, u64, u64)>,
    closed: Vec<Interval>,
}

impl Leadership {
    /// The node's claim is `(term, expires)` and its belief, by its clock,
    /// ends at true time `end_by_clock`. Called after every step of a node.
    pub fn observe(
        &mut self,
        slot: usize,
        incarnation: u64,
        claim: Option<Term>,
        end_by_clock: u64,
        t: u64,
    ) {
        let pos = self.open.iter().position(|(o, _, _)| o.slot == slot);
        match (pos, claim) {
            (Some(i), Some(term))
                if self.open[i].0.term == term && self.open[i].0.incarnation == incarnation =>
            {
                // A renew moves the end forward; a closed belief can't reopen
                // without a new write, which `start` handles.
                self.open[i].2 = end_by_clock;
            }
            (Some(i), other) => {
                let (owner, start, end) = self.open.remove(i);
                self.close(owner, start, end.min(t));
                if let Some(term) = other {
                    self.open.push((
                        Owner {
                            slot,
                            incarnation,
                            term,
                        },
                        t,
                        end_by_clock,
                    ));
                }
            }
            (None, Some(term)) => self.open.push((
                Owner {
                    slot,
                    incarnation,
                    term,
                },
                t,
                end_by_clock,
            )),
            (None, None) => {}
        }
    }

    /// The node stopped believing at `t` (crash, untrusted clock).
    pub fn end(&mut self, slot: usize, t: u64) {
        if let Some(i) = self.open.iter().position(|(o, _, _)| o.slot == slot) {
            let (owner, start, end) = self.open.remove(i);
            self.close(owner, start, end.min(t));
        }
    }

    fn close(&mut self, owner: Owner, start: u64, end: u64) {
        if end > start {
            self.closed.push(Interval { owner, start, end });
        }
    }

    /// All intervals, open ones cut at `t`.
    pub fn intervals(&self, t: u64) -> Vec<Interval> {
        let mut all = self.closed.clone();
        for (owner, start, end) in &self.open {
            let end = (*end).min(t.max(*start + 1));
            if end > *start {
                all.push(Interval {
                    owner: *owner,
                    start: *start,
                    end,
                });
            }
        }
        all.sort_by_key(|i| (i.start, i.end));
        all
    }

    /// Who believes it leads at `t`.
    pub fn leaders_at(&self, t: u64) -> Vec<Owner> {
        self.intervals(u64::MAX)
            .into_iter()
            .filter(|i| i.start <= t && t < i.end)
            .map(|i| i.owner)
            .collect()
    }

    /// The first overlap between two different owners, if any.
    pub fn check(&self, t: u64) -> Option<Violation> {
        let all = self.intervals(t);
        let mut reach: Option<Interval> = None;
        for i in all {
            if let Some(r) = reach {
                if i.start < r.end && r.owner != i.owner {
                    return Some(Violation {
                        invariant: "1 (at most one leader per true instant)",
                        at_ns: i.start,
                        what: format!(
                            "node {} (term {}) led [{}, {}) ns while node {} (term {}) led [{}, {}) ns",
                            r.owner.slot, r.owner.term, r.start, r.end, i.owner.slot, i.owner.term, i.start, i.end
                        ),
                        trace: Vec::new(),
                    });
                }
                if i.end > r.end {
                    reach = Some(i);
                }
            } else {
                reach = Some(i);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_of_two_owners_is_caught_and_handover_is_not() {
        let mut l = Leadership::default();
        l.observe(0, 1, Some(Term(1)), 100, 0);
        l.observe(0, 1, None, 0, 50);
        l.observe(1, 1, Some(Term(2)), 200, 50);
        assert!(l.check(300).is_none(), "back-to-back is fine");
        l.observe(2, 1, Some(Term(3)), 400, 150);
        assert!(l.check(300).is_some());
    }
}
