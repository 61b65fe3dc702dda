//! The simulated network: per-message latency drawn from a range, drop and
//! duplicate probabilities, directional cuts between nodes and between a
//! node and the store, and optional FIFO links (a TCP connection's order).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use hedgerow_core::Rng;

/// Network behaviour.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConfig {
    /// Shortest one-way latency.
    pub latency_min: Duration,
    /// Longest one-way latency.
    pub latency_max: Duration,
    /// Probability a message is lost.
    pub drop: f64,
    /// Probability a message is delivered twice.
    pub duplicate: f64,
    /// Keep per-link order (as one TCP connection does). Without it,
    /// latency jitter reorders messages.
    pub fifo: bool,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            latency_min: Duration::from_micros(200),
            latency_max: Duration::from_millis(2),
            drop: 0.0,
            duplicate: 0.0,
            fifo: true,
        }
    }
}

/// Link state of a run.
#[derive(Debug, Default)]
pub(crate) struct Net {
    pub(crate) cfg: NetConfig,
    cut: BTreeSet<(usize, usize)>,
    last_arrival: HashMap<(usize, usize), u64>,
}

impl Net {
    pub(crate) fn new(cfg: NetConfig) -> Self {
        Net {
            cfg,
            ..Net::default()
        }
    }

    pub(crate) fn cut(&mut self, a: usize, b: usize) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    pub(crate) fn cut_one_way(&mut self, from: usize, to: usize) {
        self.cut.insert((from, to));
    }

    pub(crate) fn heal(&mut self) {
        self.cut.clear();
    }

    pub(crate) fn heal_node(&mut self, n: usize) {
        self.cut.retain(|(a, b)| *a != n && *b != n);
    }

    pub(crate) fn is_cut(&self, from: usize, to: usize) -> bool {
        self.cut.contains(&(from, to))
    }

    pub(crate) fn latency(&self, rng: &mut Rng) -> u64 {
        let lo = self.cfg.latency_min.as_nanos() as u64;
        let hi = (self.cfg.latency_max.as_nanos() as u64).max(lo);
        lo + rng.below(hi - lo + 1)
    }

    /// Arrival times for one message sent at `t` (empty: lost).
    pub(crate) fn arrivals(&mut self, from: usize, to: usize, t: u64, rng: &mut Rng) -> Vec<u64> {
        if self.is_cut(from, to) || rng.chance(self.cfg.drop) {
            return Vec::new();
        }
        let copies = if rng.chance(self.cfg.duplicate) { 2 } else { 1 };
        let mut out = Vec::with_capacity(copies);
        for _ in 0..copies {
            let mut at = t + self.latency(rng);
            if self.cfg.fifo {
                let last = self.last_arrival.entry((from, to)).or_insert(0);
                at = at.max(*last);
                *last = at;
            }
            out.push(at);
        }
        out
    }

    pub(crate) fn forget_links_of(&mut self, n: usize) {
        self.last_arrival.retain(|(a, b), _| *a != n && *b != n);
    }
}
