//! The permits this node holds, as it believes them: each is valid only
//! while a fresh reading's `latest` is below the expiry the leader
//! promised, and extended only by the leader's renewals. This room keeps
//! them and says which lapsed; the node tells the application.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use crate::time::{MonoTime, Now};

/// One permit this node holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldPermit {
    /// The semaphore or lock.
    pub name: String,
    /// Its token (a lock's fencing token).
    pub token: u64,
    /// Valid while a reading's `latest` is below this (Unix ns).
    pub expires_ns: u64,
}

/// The permits held here, by ticket (the acquire's request id).
#[derive(Clone, Debug, Default)]
pub(crate) struct Held {
    permits: BTreeMap<u64, HeldPermit>,
}

impl Held {
    pub(crate) fn granted(&mut self, ticket: u64, permit: HeldPermit) {
        let p = self.permits.entry(ticket).or_insert(permit.clone());
        p.expires_ns = p.expires_ns.max(permit.expires_ns);
    }

    /// A renewal: the listed permits are valid until `until`. Returns the
    /// listed ones this node does not hold, to be released.
    pub(crate) fn renewed(&mut self, until: u64, listed: Vec<(u64, String)>) -> Vec<(u64, String)> {
        let mut unknown = Vec::new();
        for (ticket, name) in listed {
            match self.permits.get_mut(&ticket) {
                Some(p) if p.name == name => p.expires_ns = p.expires_ns.max(until),
                _ => unknown.push((ticket, name)),
            }
        }
        unknown
    }

    pub(crate) fn get(&self, ticket: u64) -> Option<&HeldPermit> {
        self.permits.get(&ticket)
    }

    pub(crate) fn remove(&mut self, ticket: u64) -> Option<HeldPermit> {
        self.permits.remove(&ticket)
    }

    /// Whether the permit of `ticket` is valid at `now`.
    pub(crate) fn valid(&self, ticket: u64, now: &Now) -> bool {
        self.permits.get(&ticket).is_some_and(|p| {
            now.clock.interval.is_valid() && now.clock.interval.latest < p.expires_ns
        })
    }

    /// Removes and returns the permits that lapsed at `now`.
    pub(crate) fn lapsed(&mut self, now: &Now) -> Vec<(u64, HeldPermit)> {
        let gone: Vec<u64> = self
            .permits
            .iter()
            .filter(|(t, _)| !self.valid(**t, now))
            .map(|(t, _)| *t)
            .collect();
        gone.into_iter()
            .filter_map(|t| self.permits.remove(&t).map(|p| (t, p)))
            .collect()
    }

    /// Removes every permit (this node leaves).
    pub(crate) fn drain(&mut self) -> Vec<(u64, HeldPermit)> {
        core::mem::take(&mut self.permits).into_iter().collect()
    }

    /// When the first permit lapses, in monotonic time, read from `now`.
    pub(crate) fn next_lapse(&self, now: &Now) -> MonoTime {
        let latest = now.clock.interval.latest;
        self.permits
            .values()
            .map(|p| now.mono + Duration::from_nanos(p.expires_ns.saturating_sub(latest)))
            .min()
            .unwrap_or(MonoTime::MAX)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &HeldPermit)> {
        self.permits.iter().map(|(t, p)| (*t, p))
    }

    pub(crate) fn len(&self) -> usize {
        self.permits.len()
    }
}
