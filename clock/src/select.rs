//! Choosing a clock from configuration: [`ClockConfig`] and the clock that
//! `auto` falls back to when it has neither a segment nor a bound.
//!
//! This module owns the selection policy of DESIGN.md "Which clocks may
//! lead": ClockBound v2, then v1, then the system clock *only* with an
//! operator-given bound, otherwise a clock that reads Unknown. It must
//! never invent a bound, and never pick an assumed clock silently.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use hedgerow_core::{ClockReading, ClockSource, ClockStatus, MonoTime, Now, TimeInterval};

use crate::clockbound::{ClockBoundClock, SegmentVersion};
use crate::{shm, Clock, ClockError, SystemClock};

/// How often a clock without a segment looks for one again.
const RETRY_EVERY_NS: u64 = 1_000_000_000;

/// Which clock a node uses (`--clock auto|clockbound|system`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClockConfig {
    /// ClockBound v2, then v1; then the system clock if `bound` is given
    /// (`--clock-bound-ms`), else a clock that reads Unknown (the node is a
    /// member that never leads) and keeps looking for a segment.
    Auto {
        /// The assumed bound for the system-clock fallback.
        bound: Option<Duration>,
    },
    /// ClockBound only: the segment at `path` (version detected), or the
    /// default v2 then v1 paths. An error if none can be opened.
    ClockBound {
        /// The segment path, for pods that mount it elsewhere.
        path: Option<PathBuf>,
    },
    /// The system clock with an assumed bound.
    System {
        /// The assumed error bound.
        bound: Duration,
    },
}

/// The default segment paths `Auto` and `ClockBound { path: None }` try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentPaths {
    /// The v2 segment (`/var/run/clockbound/shm0`).
    pub v2: PathBuf,
    /// The v1 segment (`/var/run/clockbound/shm`).
    pub v1: PathBuf,
}

impl Default for SegmentPaths {
    fn default() -> Self {
        SegmentPaths {
            v2: SegmentVersion::V2.default_path().to_owned(),
            v1: SegmentVersion::V1.default_path().to_owned(),
        }
    }
}

impl SegmentPaths {
    /// Opens v2, else v1. On failure returns both errors.
    fn open(&self) -> Result<ClockBoundClock, (ClockError, ClockError)> {
        let v2 = match ClockBoundClock::open_version(&self.v2, SegmentVersion::V2) {
            Ok(c) => return Ok(c),
            Err(e) => e,
        };
        match ClockBoundClock::open_version(&self.v1, SegmentVersion::V1) {
            Ok(c) => Ok(c),
            Err(v1) => Err((v2, v1)),
        }
    }

    /// The one error that best explains why neither opened.
    fn explain(&self, v2: ClockError, v1: ClockError) -> ClockError {
        match (&v2, &v1) {
            (ClockError::SegmentMissing { .. }, ClockError::SegmentMissing { .. }) => {
                ClockError::NoSegmentFound {
                    v2: self.v2.clone(),
                    v1: self.v1.clone(),
                }
            }
            // A file that exists but is broken says more than a missing one.
            (ClockError::SegmentMissing { .. }, _) => v1,
            _ => v2,
        }
    }
}

impl ClockConfig {
    /// Opens the configured clock at the default segment paths. Use
    /// [`Clock::describe`] on the result to log what was picked.
    ///
    /// ```
    /// use std::time::Duration;
    /// use hedgerow_clock::{Clock, ClockConfig};
    /// let clock = ClockConfig::System { bound: Duration::from_millis(2) }.open()?;
    /// assert!(clock.describe().starts_with("system clock"));
    /// # Ok::<(), hedgerow_clock::ClockError>(())
    /// ```
    pub fn open(&self) -> Result<Box<dyn Clock>, ClockError> {
        self.open_with(&SegmentPaths::default())
    }

    /// As [`ClockConfig::open`], looking for segments at `paths`.
    pub fn open_with(&self, paths: &SegmentPaths) -> Result<Box<dyn Clock>, ClockError> {
        let clock: Box<dyn Clock> = match self {
            ClockConfig::System { bound } => Box::new(SystemClock::new(*bound)),
            ClockConfig::ClockBound { path: Some(path) } => Box::new(ClockBoundClock::open(path)?),
            ClockConfig::ClockBound { path: None } => {
                Box::new(paths.open().map_err(|(v2, v1)| paths.explain(v2, v1))?)
            }
            ClockConfig::Auto { bound } => match paths.open() {
                Ok(c) => Box::new(c),
                Err((v2, v1)) => {
                    let why = paths.explain(v2, v1);
                    match bound {
                        Some(bound) => Box::new(SystemClock::with_reason(
                            *bound,
                            Some(format!(
                                "auto fell back to it because --clock-bound-ms was given and \
                                 ClockBound is unusable: {why}"
                            )),
                        )),
                        None => Box::new(AwaitingClockBound::new(paths.clone(), why)),
                    }
                }
            },
        };
        tracing::info!(clock = %clock.describe(), "clock selected");
        Ok(clock)
    }
}

/// `auto` without a bound and without a segment: every reading is Unknown
/// (the node is a member that never leads) until a segment appears at one
/// of the default paths, from then on it reads that segment. Looks again
/// at most once a second.
#[derive(Debug)]
struct AwaitingClockBound {
    paths: SegmentPaths,
    why: String,
    found: OnceLock<ClockBoundClock>,
    last_try: Mutex<u64>,
}

impl AwaitingClockBound {
    fn new(paths: SegmentPaths, why: ClockError) -> Self {
        let why =
            format!("{why}; and no --clock-bound-ms was given, so no assumed bound may replace it");
        tracing::warn!(
            reason = %why,
            "no usable clock bound: this node stays a member but will never lead until a \
             ClockBound segment appears"
        );
        AwaitingClockBound {
            paths,
            why,
            found: OnceLock::new(),
            last_try: Mutex::new(shm::monotonic_ns()),
        }
    }

    fn look_again(&self, mono: u64) -> Option<&ClockBoundClock> {
        let mut last = self.last_try.lock().unwrap_or_else(PoisonError::into_inner);
        if mono.saturating_sub(*last) < RETRY_EVERY_NS {
            return None;
        }
        *last = mono;
        let clock = self.paths.open().ok()?;
        tracing::info!(segment = %clock.path().display(), "ClockBound segment appeared; using it");
        Some(self.found.get_or_init(|| clock))
    }
}

impl Clock for AwaitingClockBound {
    fn now(&self) -> Result<Now, ClockError> {
        if let Some(c) = self.found.get() {
            return c.now();
        }
        let mono = shm::monotonic_ns();
        if let Some(c) = self.look_again(mono) {
            return c.now();
        }
        // Nothing is known about true time: the widest interval, so no
        // comparison against a lease expiry can come out in our favour.
        Ok(Now {
            mono: MonoTime::from_nanos(mono),
            clock: ClockReading {
                interval: TimeInterval {
                    earliest: 0,
                    latest: u64::MAX,
                },
                status: ClockStatus::Unknown,
                source: ClockSource::ClockBound,
            },
        })
    }

    fn describe(&self) -> String {
        match self.found.get() {
            Some(c) => c.describe(),
            None => format!(
                "no clock bound (readings are Unknown, never leads): {}",
                self.why
            ),
        }
    }
}
