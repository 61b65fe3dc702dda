//! Pictures of runs: a run recorded as change points ([`Recorder`],
//! [`Record`]) and drawn as one self-contained HTML page (inline CSS, SVG
//! and script, no fetch: it opens from disk), an index page for a sweep,
//! the hedgerow-vs-foca comparison as a chart in the same style, and the
//! runner's terminal output (a per-phase table, a sweep's progress).
//!
//! The pages' markup and script are the files under `sim/report/`, taken
//! in with `include_str!`; this room only fills in the data. It never
//! judges a run: the intervals and violations are the checkers'.

mod html;
mod record;
mod terminal;

pub use html::{compare_page, index_page, run_page, SweepRow};
pub use record::{Fault, FaultKind, Life, Record, Recorder};
pub use terminal::{PhaseTable, Progress};
