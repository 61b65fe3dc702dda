//! Turmoil runs of the real facade: the driver, the TCP transport and its
//! framing, each node on its own simulated host (`n1`, `n2`, …) over
//! turmoil's network, the lease store as its own host (`store`) so that
//! node↔store partitions and store outages are real network events, and a
//! ClockBound-style clock per host.
//!
//! * [`runtime`]: the facade's `Runtime` over turmoil (local tasks, paused
//!   tokio time, turmoil TCP through the `futures` I/O traits).
//! * [`clock`]: per-host clocks around simulated true time with offsets and
//!   drift inside the bound, statuses, and a deliberately broken clock.
//! * [`store`]: the store host (rows, CAS with the core's
//!   `execute_on_row`) and the nodes' async client.
//! * [`runner`]: runs a [`crate::scenario::Scenario`] and reports
//!   violations, timings and a [`crate::compare::MembershipTrace`].
//!
//! ```no_run
//! use hedgerow_sim::scenario::Scenario;
//! use hedgerow_sim::turmoil::{run, TurmoilOptions};
//! let s = Scenario::load("scale-2-150-2").unwrap();
//! let report = run(&s, 42, &TurmoilOptions::default());
//! print!("{}", report.summary());
//! assert!(report.passed());
//! ```

pub mod clock;
pub mod runner;
pub mod runtime;
pub mod store;

pub use runner::{run, TurmoilOptions, TurmoilReport};
