//! Per-host ClockBound-style clocks over simulated true time. A reading at
//! true time `t` is `[t + offset(t) - bound, t + offset(t) + bound]`, where
//! the offset starts somewhere inside the bound and drifts at a constant
//! rate, clamped to `cap`; with `cap <= bound` every reading contains true
//! time. A broken clock has `cap > bound` and an offset outside its bound,
//! on purpose, so the leadership checker has something to catch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hedgerow_clock::{Clock, ClockError};
use hedgerow_core::{ClockReading, ClockSource, ClockStatus, MonoTime, Now, TimeInterval};

use crate::EPOCH_NS;

/// Simulated true time in ns since the start of the run. Inside a host it
/// is turmoil's `sim_elapsed()` (exact within a step); outside one (the
/// runner between steps) it is the last value the runner stored.
#[derive(Clone, Debug, Default)]
pub struct TrueTime(Arc<AtomicU64>);

impl TrueTime {
    /// True time now, ns.
    pub fn now_ns(&self) -> u64 {
        match turmoil::sim_elapsed() {
            Some(d) => u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            None => self.0.load(Ordering::Relaxed),
        }
    }

    /// Stores the time the runner stepped the simulation to.
    pub fn set_ns(&self, t: u64) {
        self.0.store(t, Ordering::Relaxed);
    }
}

/// How one host's clock errs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockParams {
    /// Offset of the interval's centre from true time at `t = 0`, ns.
    pub offset_ns: i64,
    /// Drift of the offset, ns per second of true time (parts per billion).
    pub drift_ppb: i64,
    /// Largest `|offset|` the drift reaches, ns.
    pub cap_ns: u64,
    /// Half-width of the interval, ns.
    pub bound_ns: u64,
    /// Status reported with every reading.
    pub status: ClockStatus,
}

impl ClockParams {
    /// An honest clock: offset and drift keep `|offset| <= bound`.
    pub fn honest(offset_ns: i64, drift_ppb: i64, bound_ns: u64) -> Self {
        let cap = bound_ns;
        ClockParams {
            offset_ns: offset_ns.clamp(-(cap as i64), cap as i64),
            drift_ppb,
            cap_ns: cap,
            bound_ns,
            status: ClockStatus::Synchronized,
        }
    }

    /// A broken clock: its centre sits `offset_ns` from true time, whatever
    /// its bound says.
    pub fn broken(offset_ns: i64, bound_ns: u64) -> Self {
        ClockParams {
            offset_ns,
            drift_ppb: 0,
            cap_ns: offset_ns.unsigned_abs(),
            bound_ns,
            status: ClockStatus::Synchronized,
        }
    }

    /// The offset at true time `t` ns.
    pub fn offset_at(&self, t: u64) -> i64 {
        let drifted =
            i128::from(self.offset_ns) + i128::from(self.drift_ppb) * i128::from(t) / 1_000_000_000;
        let cap = i128::from(self.cap_ns);
        drifted.clamp(-cap, cap) as i64
    }

    /// The reading at true time `t` ns.
    pub fn reading(&self, t: u64) -> Now {
        let centre = (EPOCH_NS + t).saturating_add_signed(self.offset_at(t));
        Now {
            mono: MonoTime::from_nanos(t),
            clock: ClockReading {
                interval: TimeInterval::around(centre, self.bound_ns),
                status: self.status,
                source: ClockSource::ClockBound,
            },
        }
    }

    /// Whether every reading contains true time.
    pub fn is_honest(&self) -> bool {
        self.cap_ns <= self.bound_ns && self.offset_ns.unsigned_abs() <= self.bound_ns
    }

    /// The first true time (ns) at which this clock's `latest` reaches
    /// `unix_ns`. `latest` never decreases in `t` (|drift| < 1 s/s), so a
    /// binary search finds it exactly.
    pub fn true_time_latest_reaches(&self, unix_ns: u64) -> u64 {
        let latest = |t: u64| self.reading(t).clock.interval.latest;
        if latest(0) >= unix_ns {
            return 0;
        }
        let (mut lo, mut hi) = (0u64, 1u64 << 50);
        if latest(hi) < unix_ns {
            return hi;
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if latest(mid) >= unix_ns {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
    }
}

/// One host's clock, shared with the runner (which may change its status
/// mid-run: `clock unknown`).
#[derive(Clone, Debug)]
pub struct SimHostClock {
    params: Arc<Mutex<ClockParams>>,
    truth: TrueTime,
}

impl SimHostClock {
    /// A clock with `params` over `truth`.
    pub fn new(params: ClockParams, truth: TrueTime) -> Self {
        SimHostClock {
            params: Arc::new(Mutex::new(params)),
            truth,
        }
    }

    /// The current parameters.
    pub fn params(&self) -> ClockParams {
        *self.params.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the parameters (status, offset) from now on.
    pub fn set(&self, params: ClockParams) {
        *self.params.lock().unwrap_or_else(|p| p.into_inner()) = params;
    }
}

impl Clock for SimHostClock {
    fn now(&self) -> Result<Now, ClockError> {
        Ok(self.params().reading(self.truth.now_ns()))
    }

    fn describe(&self) -> String {
        let p = self.params();
        format!(
            "simulated ClockBound clock (offset {} ns, drift {} ppb, bound {} ns, {:?})",
            p.offset_ns, p.drift_ppb, p.bound_ns, p.status
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn honest_readings_contain_true_time_and_the_inverse_is_exact() {
        let p = ClockParams::honest(40_000_000, 50_000, 50_000_000);
        for t in [0, 1_000_000_000, 600_000_000_000, 3_600_000_000_000] {
            let i = p.reading(t).clock.interval;
            assert!(
                i.earliest <= EPOCH_NS + t && EPOCH_NS + t <= i.latest,
                "{t}"
            );
        }
        let target = EPOCH_NS + 10_000_000_000;
        let t = p.true_time_latest_reaches(target);
        assert!(p.reading(t).clock.interval.latest >= target);
        assert!(p.reading(t - 1).clock.interval.latest < target);
        assert!(!ClockParams::broken(200_000_000, 50_000_000).is_honest());
    }
}
