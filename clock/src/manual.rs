//! [`ManualClock`]: a clock whose every field the test or simulator sets,
//! shared between clones.
//!
//! It owns a small piece of shared state and must never read a real clock.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hedgerow_core::{
    duration_nanos, ClockReading, ClockSource, ClockStatus, MonoTime, Now, TimeInterval,
};

use crate::{Clock, ClockError};

#[derive(Debug, Clone, Copy)]
struct State {
    true_ns: u64,
    offset_ns: i64,
    bound_ns: u64,
    status: ClockStatus,
    source: ClockSource,
    mono: MonoTime,
}

/// A clock under the caller's control. Clones share one state, so a test
/// keeps a handle while the node under test owns another.
///
/// The reading is `[t + offset - bound, t + offset + bound]` where `t` is
/// the true time: an offset larger than the bound makes a clock that lies,
/// which is how tests break the lease's assumption on purpose.
///
/// ```
/// use std::time::Duration;
/// use hedgerow_clock::{Clock, ManualClock};
/// use hedgerow_core::ClockStatus;
/// let clock = ManualClock::new(1_000_000_000, 1_000);
/// let handle = clock.clone();
/// handle.advance(Duration::from_secs(1));
/// handle.set_status(ClockStatus::FreeRunning);
/// let now = clock.now()?;
/// assert_eq!(now.clock.interval.earliest, 2_000_000_000 - 1_000);
/// assert_eq!(now.mono.as_nanos(), 1_000_000_000);
/// assert_eq!(now.clock.status, ClockStatus::FreeRunning);
/// # Ok::<(), hedgerow_clock::ClockError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    state: Arc<Mutex<State>>,
}

impl ManualClock {
    /// A synchronized ClockBound-sourced clock at true Unix time
    /// `true_ns`, with error bound `bound_ns`, no offset, monotonic time 0.
    pub fn new(true_ns: u64, bound_ns: u64) -> Self {
        ManualClock {
            state: Arc::new(Mutex::new(State {
                true_ns,
                offset_ns: 0,
                bound_ns,
                status: ClockStatus::Synchronized,
                source: ClockSource::ClockBound,
                mono: MonoTime::ZERO,
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is plain data, valid even if a holder panicked.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves true time and monotonic time forward by `d`.
    pub fn advance(&self, d: Duration) {
        let mut s = self.state();
        s.true_ns = s.true_ns.saturating_add(duration_nanos(d));
        s.mono = s.mono + d;
    }

    /// Sets true Unix time (monotonic time is left alone).
    pub fn set_true_time(&self, true_ns: u64) {
        self.state().true_ns = true_ns;
    }

    /// Sets how far the clock's centre is from true time.
    pub fn set_offset(&self, offset_ns: i64) {
        self.state().offset_ns = offset_ns;
    }

    /// Sets the error bound.
    pub fn set_bound(&self, bound_ns: u64) {
        self.state().bound_ns = bound_ns;
    }

    /// Sets the reported status.
    pub fn set_status(&self, status: ClockStatus) {
        self.state().status = status;
    }

    /// Sets the reported source.
    pub fn set_source(&self, source: ClockSource) {
        self.state().source = source;
    }

    /// Sets monotonic time.
    pub fn set_mono(&self, mono: MonoTime) {
        self.state().mono = mono;
    }

    /// True Unix time now, ns.
    pub fn true_time(&self) -> u64 {
        self.state().true_ns
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Result<Now, ClockError> {
        let s = *self.state();
        let centre = s.true_ns.saturating_add_signed(s.offset_ns);
        Ok(Now {
            mono: s.mono,
            clock: ClockReading {
                interval: TimeInterval::around(centre, s.bound_ns),
                status: s.status,
                source: s.source,
            },
        })
    }

    fn describe(&self) -> String {
        "manual clock (tests and simulators only)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn clones_share_state_and_offset_moves_the_interval() {
        let a = ManualClock::new(10_000, 100);
        let b = a.clone();
        b.set_offset(-500);
        b.set_bound(50);
        b.set_source(ClockSource::Assumed { bound_ns: 50 });
        let r = a.now().unwrap().clock;
        assert_eq!((r.interval.earliest, r.interval.latest), (9_450, 9_550));
        assert!(
            !(r.interval.earliest..=r.interval.latest).contains(&a.true_time()),
            "an offset beyond the bound makes a lying clock"
        );
        assert_eq!(r.source, ClockSource::Assumed { bound_ns: 50 });
        b.set_true_time(20_000);
        b.set_mono(MonoTime::from_nanos(7));
        let n = a.now().unwrap();
        assert_eq!(n.clock.interval.earliest, 19_450);
        assert_eq!(n.mono, MonoTime::from_nanos(7));
    }
}
