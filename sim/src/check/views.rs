//! Invariant 3: each node's view only moves forward in `(term, version)`.

use std::collections::HashMap;

use super::Violation;
use hedgerow_core::Term;

/// Last view stamp seen per node process.
#[derive(Debug, Default)]
pub struct ViewOrder {
    last: HashMap<(usize, u64), (Term, u64)>,
}

impl ViewOrder {
    /// Records a node's stamp after a step; a stamp lower than the last is
    /// a violation.
    pub fn observe(
        &mut self,
        slot: usize,
        incarnation: u64,
        stamp: (Term, u64),
        t: u64,
    ) -> Option<Violation> {
        let last = self.last.entry((slot, incarnation)).or_insert(stamp);
        if stamp < *last {
            let v = Violation {
                invariant: "3 (views are monotonic per node)",
                at_ns: t,
                what: format!(
                    "node {slot} went from view ({}, {}) back to ({}, {})",
                    last.0, last.1, stamp.0, stamp.1
                ),
                trace: Vec::new(),
            };
            return Some(v);
        }
        *last = stamp;
        None
    }
}
