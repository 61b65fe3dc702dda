//! Time as the core sees it: a monotonic instant for timers and a
//! ClockBound-style interval `[earliest, latest]` (Unix nanoseconds) that
//! contains true time. The core never reads a clock; every reading comes in
//! with an input. Nothing here knows where a reading came from beyond the
//! [`ClockSource`] tag the caller attaches.

use core::ops::{Add, Sub};
use core::time::Duration;
use serde::{Deserialize, Serialize};

/// A monotonic instant in nanoseconds since an arbitrary origin chosen by
/// the driver (process start, simulator start). Only differences matter.
///
/// ```
/// use core::time::Duration;
/// use hedgerow_core::MonoTime;
/// let t = MonoTime::from_nanos(1_000);
/// assert_eq!((t + Duration::from_micros(1)).as_nanos(), 2_000);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MonoTime(u64);

impl MonoTime {
    /// The origin.
    pub const ZERO: MonoTime = MonoTime(0);
    /// The far future; used as "no deadline".
    pub const MAX: MonoTime = MonoTime(u64::MAX);

    /// An instant `nanos` after the origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        MonoTime(nanos)
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: MonoTime) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for MonoTime {
    type Output = MonoTime;
    fn add(self, d: Duration) -> MonoTime {
        MonoTime(self.0.saturating_add(duration_nanos(d)))
    }
}

impl Sub<Duration> for MonoTime {
    type Output = MonoTime;
    fn sub(self, d: Duration) -> MonoTime {
        MonoTime(self.0.saturating_sub(duration_nanos(d)))
    }
}

/// A duration in whole nanoseconds, saturating at `u64::MAX` (584 years).
pub fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// An interval of Unix time in nanoseconds that contains true time.
///
/// A well-formed interval has `earliest <= latest`; [`TimeInterval::new`]
/// refuses anything else, and the node treats a malformed reading as a
/// clock it cannot trust.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TimeInterval {
    /// True time is at or after this instant (Unix ns).
    pub earliest: u64,
    /// True time is at or before this instant (Unix ns).
    pub latest: u64,
}

impl TimeInterval {
    /// An interval, or `None` when `earliest > latest`.
    pub const fn new(earliest: u64, latest: u64) -> Option<Self> {
        if earliest <= latest {
            Some(TimeInterval { earliest, latest })
        } else {
            None
        }
    }

    /// The interval `[t - bound, t + bound]` around a point reading.
    pub fn around(t: u64, bound_ns: u64) -> Self {
        TimeInterval {
            earliest: t.saturating_sub(bound_ns),
            latest: t.saturating_add(bound_ns),
        }
    }

    /// Half the width: the error bound of the reading.
    pub fn bound_ns(&self) -> u64 {
        self.latest.saturating_sub(self.earliest) / 2
    }

    /// True when the interval is well formed.
    pub fn is_valid(&self) -> bool {
        self.earliest <= self.latest
    }
}

/// The clock status ClockBound reports, in its own numbering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ClockStatus {
    /// Nothing is known about the clock: never lead on it.
    Unknown,
    /// The clock follows its reference and the bound is fresh.
    Synchronized,
    /// The reference was lost; the bound grows with the maximum drift.
    /// The interval still contains true time, so leading stays safe.
    FreeRunning,
    /// A clock disruption (VM migration, snapshot restore) was signalled:
    /// never lead on it.
    Disrupted,
}

impl ClockStatus {
    /// Whether an interval with this status may be used to hold a lease.
    pub fn may_lead(self) -> bool {
        matches!(self, ClockStatus::Synchronized | ClockStatus::FreeRunning)
    }
}

/// Where a reading's bound comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ClockSource {
    /// A ClockBound daemon measured the bound.
    ClockBound,
    /// The system clock with an operator-given bound. Leads only when the
    /// node's configuration says so ([`crate::Config::lead_on_assumed_clock`]).
    Assumed {
        /// The configured error bound in nanoseconds.
        bound_ns: u64,
    },
}

/// One clock reading: the interval, its status and its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClockReading {
    /// The interval that contains true time.
    pub interval: TimeInterval,
    /// The status reported with it.
    pub status: ClockStatus,
    /// Where the bound comes from.
    pub source: ClockSource,
}

impl ClockReading {
    /// A synchronized ClockBound reading of `[t - bound, t + bound]`; handy
    /// in tests and simulators.
    pub fn synchronized(t: u64, bound_ns: u64) -> Self {
        ClockReading {
            interval: TimeInterval::around(t, bound_ns),
            status: ClockStatus::Synchronized,
            source: ClockSource::ClockBound,
        }
    }
}

/// What the driver passes with every input: the monotonic instant (for
/// timers) and a fresh clock reading taken at that instant (for the lease).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Now {
    /// Monotonic time of the reading.
    pub mono: MonoTime,
    /// The clock reading.
    pub clock: ClockReading,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_interval_is_refused() {
        assert!(TimeInterval::new(5, 4).is_none());
        assert_eq!(TimeInterval::new(4, 6).map(|i| i.bound_ns()), Some(1));
    }

    #[test]
    fn mono_arithmetic_saturates() {
        assert_eq!(MonoTime::MAX + Duration::from_secs(1), MonoTime::MAX);
        assert_eq!(MonoTime::ZERO - Duration::from_secs(1), MonoTime::ZERO);
    }

    #[test]
    fn only_trusted_statuses_lead() {
        assert!(ClockStatus::Synchronized.may_lead());
        assert!(ClockStatus::FreeRunning.may_lead());
        assert!(!ClockStatus::Unknown.may_lead());
        assert!(!ClockStatus::Disrupted.may_lead());
    }
}
