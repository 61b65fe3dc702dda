//! One checker per invariant of the design. Each records what it needs as
//! the run goes and reports the first violation with the simulated time and
//! a short trace of the events that led there; the run adds its seed.

pub mod broadcasts;
pub mod convergence;
pub mod kv;
pub mod leadership;
pub mod permits;
pub mod requests;
pub mod streams;
pub mod tokens;
pub mod views;

use std::fmt;

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant (1–7 of DESIGN.md) and its name.
    pub invariant: &'static str,
    /// Simulated true time in ns since the start.
    pub at_ns: u64,
    /// What went wrong.
    pub what: String,
    /// The events just before it.
    pub trace: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "violation of {} at t={:.3}s: {}",
            self.invariant,
            self.at_ns as f64 / 1e9,
            self.what
        )?;
        for line in &self.trace {
            writeln!(f, "    {line}")?;
        }
        Ok(())
    }
}
