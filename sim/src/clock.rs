//! Per-node simulated clocks: each reading is `[t + offset(t) - bound,
//! t + offset(t) + bound]` around true time `t`, so it contains true time
//! as long as `|offset(t)| <= bound`. The offset drifts at the clock's rate
//! error (crystal oscillators: tens of ppm) and turns back at the edge of
//! the bound, as a clock disciplined by chrony would, so an honest clock
//! stays honest while its error keeps moving. A run may set
//! `|offset| > bound` on purpose (with no drift) to show the leadership
//! checker catches what a broken bound causes.

use hedgerow_core::{ClockReading, ClockSource, ClockStatus, MonoTime, Now, TimeInterval};

/// Unix time at simulated true time zero (2026-01-01), so readings look real.
pub const EPOCH_NS: u64 = 1_767_225_600_000_000_000;

/// One node's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimClock {
    /// Offset of the centre of the interval from true time at true time
    /// `since_ns`, ns.
    pub offset_ns: i64,
    /// Rate error in parts per billion: the offset moves this many ns per
    /// second of true time, turning back at `±bound`.
    pub drift_ppb: i64,
    /// True time (ns since start) at which the offset was `offset_ns`.
    pub since_ns: u64,
    /// Half-width of the interval, ns.
    pub bound_ns: u64,
    /// Status reported with every reading.
    pub status: ClockStatus,
    /// Report the bound as operator-assumed (a system clock) instead of
    /// ClockBound-measured.
    pub assumed: bool,
}

impl SimClock {
    /// A clock with a fixed offset, no drift, Synchronized.
    pub fn fixed(offset_ns: i64, bound_ns: u64) -> Self {
        SimClock {
            offset_ns,
            drift_ppb: 0,
            since_ns: 0,
            bound_ns,
            status: ClockStatus::Synchronized,
            assumed: false,
        }
    }

    /// The offset at true time `t`: drifting from `offset_ns` at
    /// `drift_ppb`, reflected back inside `±bound` (a triangle wave). A
    /// clock outside its bound or without drift keeps its offset.
    pub fn offset_at(&self, t: u64) -> i64 {
        let bound = i128::from(self.bound_ns);
        let start = i128::from(self.offset_ns);
        if self.drift_ppb == 0 || bound == 0 || start.abs() > bound {
            return self.offset_ns;
        }
        let dt = i128::from(t.saturating_sub(self.since_ns));
        let moved = start + bound + dt * i128::from(self.drift_ppb) / 1_000_000_000;
        let span = 2 * bound;
        let p = moved.rem_euclid(2 * span);
        let folded = if p <= span { p } else { 2 * span - p };
        (folded - bound) as i64
    }

    /// The reading at true time `t` (ns since the simulation start).
    pub fn now(&self, t: u64) -> Now {
        let centre = (EPOCH_NS + t).saturating_add_signed(self.offset_at(t));
        Now {
            mono: MonoTime::from_nanos(t),
            clock: ClockReading {
                interval: TimeInterval::around(centre, self.bound_ns),
                status: self.status,
                source: if self.assumed {
                    ClockSource::Assumed {
                        bound_ns: self.bound_ns,
                    }
                } else {
                    ClockSource::ClockBound
                },
            },
        }
    }

    /// The first true time (ns since start) at which this clock's `latest`
    /// reaches `unix_ns`: when a leader with that expiry stops believing.
    pub fn true_time_latest_reaches(&self, unix_ns: u64) -> u64 {
        let latest = |t: u64| {
            i128::from(EPOCH_NS)
                + i128::from(t)
                + i128::from(self.offset_at(t))
                + i128::from(self.bound_ns)
        };
        // `latest` strictly increases with true time (drift is far below
        // one second per second), so the first instant is a binary search.
        let target = i128::from(unix_ns);
        let (mut lo, mut hi) = (0u64, u64::MAX / 4);
        if latest(lo) >= target {
            return 0;
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if latest(mid) >= target {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
    }

    /// Whether readings contain true time at every instant.
    pub fn is_honest(&self) -> bool {
        self.offset_ns.unsigned_abs() <= self.bound_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn drift_moves_the_offset_and_turns_back_at_the_bound() {
        let c = SimClock {
            drift_ppb: 50_000, // 50 ppm: 50 µs per second
            ..SimClock::fixed(0, 1_000_000)
        };
        assert_eq!(c.offset_at(0), 0);
        assert_eq!(c.offset_at(10 * S), 500_000);
        assert_eq!(c.offset_at(20 * S), 1_000_000);
        assert_eq!(c.offset_at(30 * S), 500_000, "turned back at +bound");
        assert_eq!(c.offset_at(60 * S), -1_000_000, "and at -bound");
        for t in (0..200).map(|k| k * S / 3) {
            assert!(c.offset_at(t).unsigned_abs() <= c.bound_ns);
            let now = c.now(t);
            assert!(now.clock.interval.earliest <= EPOCH_NS + t);
            assert!(now.clock.interval.latest >= EPOCH_NS + t);
        }
    }

    #[test]
    fn latest_reaches_an_instant_exactly_once() {
        let c = SimClock {
            drift_ppb: -40_000,
            since_ns: 3 * S,
            ..SimClock::fixed(20_000_000, 50_000_000)
        };
        for target in [EPOCH_NS + 5 * S, EPOCH_NS + 77 * S + 123] {
            let t = c.true_time_latest_reaches(target);
            assert!(c.now(t).clock.interval.latest >= target);
            assert!(c.now(t - 1).clock.interval.latest < target);
        }
    }

    #[test]
    fn a_broken_clock_keeps_its_offset() {
        let c = SimClock {
            drift_ppb: 50_000,
            ..SimClock::fixed(-150, 50)
        };
        assert!(!c.is_honest());
        assert_eq!(c.offset_at(100 * S), -150);
    }
}
