//! Per-host ClockBound-style clocks over simulated true time: the same
//! [`SimClock`] model as the in-process harness (an offset that starts
//! inside the bound and drifts, turning back at its edge; or, on purpose, a
//! fixed offset outside it), read at turmoil's simulated time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hedgerow_clock::{Clock, ClockError};
use hedgerow_core::Now;

use crate::SimClock;

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

/// One host's clock, shared with the runner (which may change its status
/// mid-run: `clock unknown`).
#[derive(Clone, Debug)]
pub struct SimHostClock {
    params: Arc<Mutex<SimClock>>,
    truth: TrueTime,
}

impl SimHostClock {
    /// A clock with `params` over `truth`.
    pub fn new(params: SimClock, truth: TrueTime) -> Self {
        SimHostClock {
            params: Arc::new(Mutex::new(params)),
            truth,
        }
    }

    /// The current parameters.
    pub fn params(&self) -> SimClock {
        *self.params.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the parameters (status, offset) from now on.
    pub fn set(&self, params: SimClock) {
        *self.params.lock().unwrap_or_else(|p| p.into_inner()) = params;
    }
}

impl Clock for SimHostClock {
    fn now(&self) -> Result<Now, ClockError> {
        Ok(self.params().now(self.truth.now_ns()))
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
    use crate::EPOCH_NS;

    #[test]
    fn a_host_clock_reads_its_model_at_simulated_time() {
        let truth = TrueTime::default();
        let model = SimClock {
            drift_ppb: 50_000,
            ..SimClock::fixed(40_000_000, 50_000_000)
        };
        let clock = SimHostClock::new(model, truth.clone());
        for t in [0, 1_000_000_000, 600_000_000_000, 3_600_000_000_000] {
            truth.set_ns(t);
            let i = clock.now().unwrap().clock.interval;
            assert_eq!(i, model.now(t).clock.interval);
            assert!(
                i.earliest <= EPOCH_NS + t && EPOCH_NS + t <= i.latest,
                "{t}"
            );
        }
    }
}
