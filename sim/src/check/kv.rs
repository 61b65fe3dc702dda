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
    /// Puts acknowledged to a caller that knows no origin (the facade's
    /// `kv().put`), each with a value no other put has: key, value,
    /// revision, true time of the acknowledgement.
    by_value: Vec<(String, Vec<u8>, u64, u64)>,
}

impl Puts {
    /// A put by `origin` of `key = value` was acknowledged at `revision`
    /// at true time `t`.
    pub fn acked(&mut self, origin: Origin, key: &str, value: Payload, revision: u64, t: u64) {
        self.acked.insert(origin, (key.into(), value, revision, t));
    }

    /// A put of `key = value` was acknowledged at `revision` at true time
    /// `t`, to a caller that knows no origin; `value` is one no other put
    /// of the run wrote.
    pub fn acked_value(&mut self, key: &str, value: &[u8], revision: u64, t: u64) {
        self.by_value
            .push((key.into(), value.to_vec(), revision, t));
    }

    /// How many puts were acknowledged.
    pub fn count(&self) -> usize {
        self.acked.len() + self.by_value.len()
    }

    /// A read of every revision, started at true time `start` by node
    /// `slot`, must show every put acknowledged before it started, at its
    /// revision with its value (reads go to the store from any node).
    pub fn check_read(
        &self,
        slot: usize,
        start: u64,
        seen: &[(u64, String, Vec<u8>)],
    ) -> Option<Violation> {
        let missing = self.by_value.iter().find(|(key, value, revision, t)| {
            *t < start
                && !seen
                    .iter()
                    .any(|(r, k, v)| r == revision && k == key && v == value)
        })?;
        let (key, _, revision, t) = missing;
        Some(violation(
            start,
            format!(
                "n{slot}'s read of every revision, started {} ms after the put of {key:?} \
                 was acknowledged at revision {revision}, does not show it",
                (start - t) / 1_000_000
            ),
        ))
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
        for (key, value, revision, t) in &self.by_value {
            let found = store.get_at(key, *revision);
            if found.is_none_or(|e| e.value.as_ref() != value.as_slice()) {
                return Some(violation(
                    *t,
                    format!("put of {key:?} acknowledged at revision {revision} is not in the store with its value"),
                ));
            }
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
