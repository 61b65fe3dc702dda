//! Per-node simulated clocks: each reading is `[t + offset - bound,
//! t + offset + bound]` around true time `t`, so it contains true time as
//! long as `|offset| <= bound`. A run may set `|offset| > bound` on purpose
//! to show the leadership checker catches what a broken bound causes.

use hedgerow_core::{ClockReading, ClockSource, ClockStatus, MonoTime, Now, TimeInterval};

/// Unix time at simulated true time zero (2026-01-01), so readings look real.
pub const EPOCH_NS: u64 = 1_767_225_600_000_000_000;

/// One node's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimClock {
    /// Offset of the centre of the interval from true time, ns.
    pub offset_ns: i64,
    /// Half-width of the interval, ns.
    pub bound_ns: u64,
    /// Status reported with every reading.
    pub status: ClockStatus,
    /// Report the bound as operator-assumed (a system clock) instead of
    /// ClockBound-measured.
    pub assumed: bool,
}

impl SimClock {
    /// The reading at true time `t` (ns since the simulation start).
    pub fn now(&self, t: u64) -> Now {
        let centre = (EPOCH_NS + t).saturating_add_signed(self.offset_ns);
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
        let t = i128::from(unix_ns)
            - i128::from(EPOCH_NS)
            - i128::from(self.offset_ns)
            - i128::from(self.bound_ns);
        t.clamp(0, i128::from(u64::MAX)) as u64
    }

    /// Whether readings contain true time.
    pub fn is_honest(&self) -> bool {
        self.offset_ns.unsigned_abs() <= self.bound_ns
    }
}
