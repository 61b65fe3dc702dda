//! Broadcasts are delivered at most once: a receiver process (one slot,
//! one incarnation) hands the application each broadcast, named by its
//! sender, the sender's incarnation and its id, once, however often the
//! network duplicated or the sender retried it. A restarted receiver is a
//! new process and may see a broadcast again.

use std::collections::HashSet;

use super::Violation;
use hedgerow_core::NodeId;

/// A broadcast as a receiver saw it: `(receiver slot, receiver
/// incarnation, sender, sender incarnation, id)`.
type Delivery = (usize, u64, NodeId, u64, u64);

/// Records every delivery and flags the second of one.
#[derive(Debug, Default)]
pub struct BroadcastOnce {
    seen: HashSet<Delivery>,
    /// Deliveries recorded.
    pub deliveries: u64,
}

impl BroadcastOnce {
    /// Process `(slot, incarnation)` was handed broadcast `id` of
    /// `(from, from_incarnation)` at true time `t`.
    pub fn delivered(
        &mut self,
        (slot, incarnation): (usize, u64),
        from: &NodeId,
        from_incarnation: u64,
        id: u64,
        t: u64,
    ) -> Option<Violation> {
        self.deliveries += 1;
        let key = (slot, incarnation, from.clone(), from_incarnation, id);
        if self.seen.insert(key) {
            return None;
        }
        Some(Violation {
            invariant: "6 (a broadcast is delivered once per receiver process)",
            at_ns: t,
            what: format!(
                "node {slot} (incarnation {incarnation}) was handed broadcast {id} of \
                 {from} (incarnation {from_incarnation}) a second time"
            ),
            trace: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_is_flagged_and_a_new_process_or_sender_is_not() {
        let mut c = BroadcastOnce::default();
        let s = NodeId::new("s").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.delivered((1, 7), &s, 3, 9, 0), None);
        // Another receiver, a restarted receiver, a restarted sender, another id.
        assert_eq!(c.delivered((2, 7), &s, 3, 9, 0), None);
        assert_eq!(c.delivered((1, 8), &s, 3, 9, 0), None);
        assert_eq!(c.delivered((1, 7), &s, 4, 9, 0), None);
        assert_eq!(c.delivered((1, 7), &s, 3, 10, 0), None);
        let v = c.delivered((1, 7), &s, 3, 9, 5);
        assert!(
            v.as_ref().is_some_and(|v| v.what.contains("second time")),
            "{v:?}"
        );
        assert_eq!(c.deliveries, 6);
    }
}
