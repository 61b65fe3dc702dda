//! The coordination invariants on permits: at no true instant do more
//! nodes believe they hold a permit of a semaphore than its limit, and a
//! lock's (limit 1) tokens strictly increase from one holder to the next.
//! Checked on exact intervals, like leadership: a holder's belief starts
//! when it first holds the permit after a step and ends at the first true
//! instant its clock's `latest` reaches the promised expiry, or when it
//! releases, loses it, crashes or restarts, whichever comes first.

use std::collections::BTreeMap;

use super::Violation;

/// Who holds: slot, incarnation, ticket.
type Key = (usize, u64, u64);

/// One holder's belief, `[start, end)` in true ns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PermitInterval {
    /// The semaphore or lock.
    pub name: String,
    /// The permit's token.
    pub token: u64,
    /// The holder's slot.
    pub slot: usize,
    /// Start (true ns).
    pub start: u64,
    /// End (true ns), exclusive.
    pub end: u64,
}

/// One permit as a node holds it after a step: ticket, name, token, and
/// the true instant its belief ends by its clock.
pub type Held = (u64, String, u64, u64);

/// Collects permit intervals and checks them.
#[derive(Debug, Default)]
pub struct Permits {
    open: BTreeMap<Key, PermitInterval>,
    closed: Vec<PermitInterval>,
    limits: BTreeMap<String, u32>,
    /// Permits granted, for reports.
    pub grants: u64,
}

impl Permits {
    /// A caller asked for `name` with `limit` (the smallest limit asked for
    /// counts: the services refuse mixed limits while any is held).
    pub fn limit(&mut self, name: &str, limit: u32) {
        let l = self.limits.entry(name.into()).or_insert(limit);
        *l = (*l).min(limit);
    }

    /// What node `slot` (incarnation `inc`) holds after a step at `t`.
    pub fn observe(&mut self, slot: usize, inc: u64, held: Vec<Held>, t: u64) {
        let gone: Vec<Key> = self
            .open
            .keys()
            .filter(|k| k.0 == slot && !held.iter().any(|h| (slot, inc, h.0) == **k))
            .copied()
            .collect();
        for k in gone {
            self.close(k, t);
        }
        for (ticket, name, token, end) in held {
            let key = (slot, inc, ticket);
            match self.open.get_mut(&key) {
                Some(i) => i.end = i.end.max(end),
                None if end > t => {
                    self.grants += 1;
                    self.open.insert(
                        key,
                        PermitInterval {
                            name,
                            token,
                            slot,
                            start: t,
                            end,
                        },
                    );
                }
                None => {}
            }
        }
    }

    /// Whether node `slot` has an open interval.
    pub fn holds_any(&self, slot: usize) -> bool {
        self.open.keys().any(|k| k.0 == slot)
    }

    /// Node `slot` stopped believing anything at `t` (crash, exit).
    pub fn end(&mut self, slot: usize, t: u64) {
        let keys: Vec<Key> = self.open.keys().filter(|k| k.0 == slot).copied().collect();
        for k in keys {
            self.close(k, t);
        }
    }

    fn close(&mut self, key: Key, t: u64) {
        if let Some(mut i) = self.open.remove(&key) {
            i.end = i.end.min(t);
            if i.end > i.start {
                self.closed.push(i);
            }
        }
    }

    /// Every interval, open ones cut at `t`, by start.
    pub fn intervals(&self, t: u64) -> Vec<PermitInterval> {
        let mut all = self.closed.clone();
        for i in self.open.values() {
            let end = i.end.min(t.max(i.start + 1));
            all.push(PermitInterval { end, ..i.clone() });
        }
        all.sort_by_key(|i| (i.start, i.end));
        all
    }

    /// The first instant more holders than the limit believed, or a lock
    /// token that did not increase, if any.
    pub fn check(&self, t: u64) -> Option<Violation> {
        let mut by_name: BTreeMap<&str, Vec<PermitInterval>> = BTreeMap::new();
        let all = self.intervals(t);
        for i in &all {
            by_name.entry(&i.name).or_default().push(i.clone());
        }
        for (name, list) in by_name {
            let limit = self.limits.get(name).copied().unwrap_or(1) as usize;
            let mut edges: Vec<(u64, i32, usize)> = Vec::new();
            for (n, i) in list.iter().enumerate() {
                edges.push((i.start, 1, n));
                edges.push((i.end, -1, n));
            }
            // Ends before starts at one instant: `[start, end)`.
            edges.sort_by_key(|e| (e.0, e.1));
            let mut holding: Vec<usize> = Vec::new();
            for (at, step, n) in edges {
                if step < 0 {
                    holding.retain(|h| *h != n);
                    continue;
                }
                holding.push(n);
                if holding.len() > limit {
                    let who: Vec<String> = holding
                        .iter()
                        .map(|h| {
                            let i = &list[*h];
                            format!("node {} token {} [{}, {})", i.slot, i.token, i.start, i.end)
                        })
                        .collect();
                    return Some(Violation {
                        invariant: "8 (permits held <= limit per true instant)",
                        at_ns: at,
                        what: format!(
                            "{} holders of {name:?} (limit {limit}): {}",
                            holding.len(),
                            who.join(", ")
                        ),
                        trace: Vec::new(),
                    });
                }
            }
            if limit == 1 {
                for w in list.windows(2) {
                    if w[1].token <= w[0].token {
                        return Some(Violation {
                            invariant: "9 (lock tokens strictly increase)",
                            at_ns: w[1].start,
                            what: format!(
                                "lock {name:?}: node {} got token {} after node {} held token {}",
                                w[1].slot, w[1].token, w[0].slot, w[0].token
                            ),
                            trace: Vec::new(),
                        });
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_holders_of_a_lock_at_once_are_caught() {
        let mut p = Permits::default();
        p.limit("l", 1);
        p.observe(0, 1, vec![(1, "l".into(), 1, 100)], 10);
        p.observe(1, 1, vec![(1, "l".into(), 2, 200)], 50);
        let v = p.check(300).expect("overlap");
        assert!(v.invariant.starts_with("8"), "{v}");
    }

    #[test]
    fn back_to_back_holders_are_fine_and_a_falling_token_is_caught() {
        let mut p = Permits::default();
        p.limit("l", 1);
        p.observe(0, 1, vec![(1, "l".into(), 5, 100)], 10);
        p.observe(0, 1, vec![], 40);
        p.observe(1, 1, vec![(1, "l".into(), 6, 200)], 40);
        assert_eq!(p.check(300), None);
        p.observe(1, 1, vec![], 210);
        p.observe(2, 1, vec![(1, "l".into(), 6, 400)], 220);
        let v = p.check(500).expect("token");
        assert!(v.invariant.starts_with("9"), "{v}");
    }

    #[test]
    fn a_semaphore_allows_its_limit() {
        let mut p = Permits::default();
        p.limit("s", 2);
        p.observe(0, 1, vec![(1, "s".into(), 1, 100)], 10);
        p.observe(1, 1, vec![(1, "s".into(), 2, 100)], 20);
        assert_eq!(p.check(150), None);
        p.observe(2, 1, vec![(1, "s".into(), 3, 100)], 30);
        assert!(p.check(150).is_some());
    }
}
