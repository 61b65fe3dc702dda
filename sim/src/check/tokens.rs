//! Invariant 2: fencing tokens strictly increase from one leadership to the
//! next. A term belongs to one holder process; consecutive intervals of
//! different owners must carry increasing terms.

use super::leadership::Interval;
use super::Violation;

/// Checks intervals (sorted by start) for token order.
pub fn check(intervals: &[Interval]) -> Option<Violation> {
    let mut prev: Option<&Interval> = None;
    for i in intervals {
        if let Some(p) = prev {
            let same_holder =
                p.owner.slot == i.owner.slot && p.owner.incarnation == i.owner.incarnation;
            let ok = if p.owner.term == i.owner.term {
                same_holder
            } else {
                i.owner.term > p.owner.term
            };
            if !ok {
                return Some(Violation {
                    invariant: "2 (fencing tokens strictly increase)",
                    at_ns: i.start,
                    what: format!(
                        "node {} led with term {} after node {} led with term {}",
                        i.owner.slot, i.owner.term, p.owner.slot, p.owner.term
                    ),
                    trace: Vec::new(),
                });
            }
        }
        prev = Some(i);
    }
    None
}
