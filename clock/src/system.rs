//! [`SystemClock`]: the system clock with an error bound the operator
//! asserts, for hosts without ClockBound (demos, tests, laptops).
//!
//! It owns nothing but the configured bound. It must never present its
//! readings as measured: the source is always
//! [`ClockSource::Assumed`], so the node leads on it only when its
//! configuration says so explicitly.

use std::time::Duration;

use hedgerow_core::{
    duration_nanos, ClockReading, ClockSource, ClockStatus, MonoTime, Now, TimeInterval,
};

use crate::clockbound::realtime_ns;
use crate::{shm, Clock, ClockError};

/// The system clock, trusted to be within `bound` of true time.
///
/// ```
/// use std::time::Duration;
/// use hedgerow_clock::{Clock, SystemClock};
/// use hedgerow_core::ClockSource;
/// let clock = SystemClock::new(Duration::from_millis(5));
/// let now = clock.now()?;
/// assert_eq!(now.clock.source, ClockSource::Assumed { bound_ns: 5_000_000 });
/// assert_eq!(now.clock.interval.bound_ns(), 5_000_000);
/// # Ok::<(), hedgerow_clock::ClockError>(())
/// ```
#[derive(Debug, Clone)]
pub struct SystemClock {
    bound_ns: u64,
    why: Option<String>,
}

impl SystemClock {
    /// A system clock with the assumed error bound `bound`. Logs a warning
    /// (once, here) that the bound is assumed, not measured.
    pub fn new(bound: Duration) -> Self {
        Self::with_reason(bound, None)
    }

    /// As [`SystemClock::new`], with the reason it was chosen (auto
    /// selection) folded into the log line and the description.
    pub(crate) fn with_reason(bound: Duration, why: Option<String>) -> Self {
        let bound_ns = duration_nanos(bound);
        tracing::warn!(
            bound_ns,
            reason = why.as_deref().unwrap_or("configured"),
            "using the system clock with an ASSUMED error bound; leases are only as safe as \
             this bound: if the clock is ever off by more, two nodes can lead at once"
        );
        SystemClock { bound_ns, why }
    }

    /// The assumed bound in nanoseconds.
    pub fn bound_ns(&self) -> u64 {
        self.bound_ns
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Result<Now, ClockError> {
        let real = realtime_ns()?;
        let mono = shm::monotonic_ns();
        Ok(Now {
            mono: MonoTime::from_nanos(mono),
            clock: ClockReading {
                interval: TimeInterval::around(real, self.bound_ns),
                status: ClockStatus::Synchronized,
                source: ClockSource::Assumed {
                    bound_ns: self.bound_ns,
                },
            },
        })
    }

    fn describe(&self) -> String {
        let base = format!(
            "system clock with an assumed error bound of {:?} (not measured)",
            Duration::from_nanos(self.bound_ns)
        );
        match &self.why {
            Some(why) => format!("{base}: {why}"),
            None => base,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn interval_is_system_time_plus_minus_bound() {
        let c = SystemClock::new(Duration::from_micros(250));
        let before = realtime_ns().unwrap();
        let now = c.now().unwrap();
        let after = realtime_ns().unwrap();
        let centre = now.clock.interval.earliest + 250_000;
        assert!(before <= centre && centre <= after);
        assert_eq!(now.clock.interval.bound_ns(), 250_000);
        assert_eq!(now.clock.status, ClockStatus::Synchronized);
        assert!(c.describe().contains("assumed"));
    }
}
