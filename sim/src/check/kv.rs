//! The coordination invariants on the KV store: every acknowledged put is
//! in the store at the revision it was acknowledged with, with its key,
//! value and origin (so every later read on any node sees it: reads go to
//! the store); no origin appears twice (no put applied twice); revisions
//! strictly increase in the log.

use std::collections::BTreeMap;

use hedgerow_core::coord::{CoordTables, Origin};
use hedgerow_core::Payload;

use super::Violation;

/// Acknowledged puts, checked against the store's log.
#[derive(Debug, Default)]
pub struct Puts {
    acked: BTreeMap<Origin, (String, Payload, u64, u64)>,
}

impl Puts {
    /// A put by `origin` of `key = value` was acknowledged at `revision`
    /// at true time `t`.
    pub fn acked(&mut self, origin: Origin, key: &str, value: Payload, revision: u64, t: u64) {
        self.acked.insert(origin, (key.into(), value, revision, t));
    }

    /// How many puts were acknowledged.
    pub fn count(&self) -> usize {
        self.acked.len()
    }

    /// The first acknowledged put the store does not hold as acknowledged,
    /// or a duplicate in the log.
    pub fn check(&self, store: &CoordTables) -> Option<Violation> {
        let log = store.changes("", 0, usize::MAX);
        let mut seen: BTreeMap<&Origin, u64> = BTreeMap::new();
        let mut last = 0;
        for e in &log {
            if e.revision <= last {
                return Some(violation(
                    0,
                    format!("revision {} after {last} in the log", e.revision),
                ));
            }
            last = e.revision;
            if let Some(first) = seen.get(&e.origin) {
                return Some(violation(
                    0,
                    format!(
                        "put {:?} applied twice, at revisions {first} and {}",
                        e.origin, e.revision
                    ),
                ));
            }
            seen.insert(&e.origin, e.revision);
        }
        for (origin, (key, value, revision, t)) in &self.acked {
            let found = store.get_at(key, *revision);
            let ok = found.is_some_and(|e| &e.origin == origin && &e.value == value);
            if !ok {
                let what = match log.iter().find(|e| &e.origin == origin) {
                    Some(e) => format!(
                        "put {origin:?} of {key:?} acknowledged at revision {revision}, stored at {} of {:?}",
                        e.revision, e.key
                    ),
                    None => format!("put {origin:?} of {key:?} acknowledged at revision {revision} is not in the store"),
                };
                return Some(violation(*t, what));
            }
        }
        None
    }
}

fn violation(at_ns: u64, what: String) -> Violation {
    Violation {
        invariant: "10 (acknowledged puts durable, applied once)",
        at_ns,
        what,
        trace: Vec::new(),
    }
}
