//! Clocks for hedgerow: where a node's [`Now`] comes from.
//!
//! A lease is safe only if every reading's interval contains true time, so
//! this crate's job is to produce honest intervals:
//!
//! * [`ClockBoundClock`] reads the bound AWS ClockBound publishes in shared
//!   memory (v2 `/var/run/clockbound/shm0` or v1 `/var/run/clockbound/shm`,
//!   paths configurable), applying the same rules as the official client.
//! * [`SystemClock`] is the system clock with a bound the operator asserts;
//!   its readings say so ([`hedgerow_core::ClockSource::Assumed`]).
//! * [`ManualClock`] is set by tests and simulators.
//! * [`ClockConfig`] picks one from configuration (`auto` = ClockBound v2,
//!   v1, then the system clock only if a bound was given, else a clock that
//!   reads Unknown so the node never leads).
//!
//! # Monotonic origin
//!
//! [`Now::mono`] of the real clocks is `CLOCK_MONOTONIC` in nanoseconds
//! (time since boot, not counting suspend), the same for every clock in
//! the process, so readings from different clocks compare; timers should
//! use [`monotonic_now`]. [`ManualClock`] has its own, caller-set origin.
//!
//! ```no_run
//! use hedgerow_clock::{Clock, ClockConfig};
//! let clock = ClockConfig::Auto { bound: None }.open()?;
//! println!("clock: {}", clock.describe());
//! let now = clock.now()?;
//! if now.clock.status.may_lead() { /* may hold a lease */ }
//! # Ok::<(), hedgerow_clock::ClockError>(())
//! ```
//!
//! # Testing
//!
//! * `cargo test -p hedgerow-clock`: the reader against segments written by
//!   the official `clock-bound-shm` 2.0.3 writer (v2) and by hand (v1).
//! * Only `shm` (the mapping) contains `unsafe`; the seqlock protocol is
//!   model-checked with loom: `RUSTFLAGS="--cfg loom" cargo test -p
//!   hedgerow-clock --release --lib seqlock::loom_model`.
//! * `clock/scripts/clockbound-e2e.sh` (root): a real chronyd pair and
//!   ClockBound 2.0.3 daemon on loopback, read through this crate.
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod clockbound;
mod error;
mod manual;
mod select;
mod seqlock;
mod shm;
mod system;

use std::sync::Arc;

pub use clockbound::{
    ClockBoundClock, Record, SegmentVersion, DEFAULT_V1_PATH, DEFAULT_V2_PATH, STALE_AFTER_NS,
};
pub use error::ClockError;
pub use hedgerow_core::Now;
pub use manual::ManualClock;
pub use select::{ClockConfig, SegmentPaths};
pub use system::SystemClock;

use hedgerow_core::MonoTime;

/// A source of [`Now`]: a monotonic instant and the interval of Unix time
/// (ns) that contains true time at that instant, with status and source.
pub trait Clock: Send + Sync {
    /// Reads the clock. An error means "no reading": the caller treats it
    /// like status Unknown (stay a member, do not lead) and logs it.
    fn now(&self) -> Result<Now, ClockError>;

    /// What this clock is, for the startup log (e.g. "ClockBound v2
    /// segment at /var/run/clockbound/shm0").
    fn describe(&self) -> String {
        "a custom clock".to_owned()
    }
}

impl<C: Clock + ?Sized> Clock for Box<C> {
    fn now(&self) -> Result<Now, ClockError> {
        (**self).now()
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Result<Now, ClockError> {
        (**self).now()
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// `CLOCK_MONOTONIC` now, the origin of the real clocks' [`Now::mono`].
pub fn monotonic_now() -> MonoTime {
    MonoTime::from_nanos(shm::monotonic_ns())
}
