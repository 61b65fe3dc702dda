//! What `hedgerow-sim` prints on a terminal besides its per-seed lines: a
//! table with one row a `converge` phase over every seed of a sweep, and
//! a progress line (seed i of n, elapsed, ETA) for long sweeps.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::time::{Duration, Instant};

/// How long each `converge` phase took, over the seeds of a sweep.
#[derive(Debug, Default)]
pub struct PhaseTable {
    /// Phase labels in order, each with its times (`None`: it did not
    /// converge) from every seed so far.
    phases: Vec<(String, Vec<Option<Duration>>)>,
}

impl PhaseTable {
    /// One seed's phases, in order.
    pub fn add(&mut self, phases: impl IntoIterator<Item = (String, Option<Duration>)>) {
        for (i, (label, took)) in phases.into_iter().enumerate() {
            if self.phases.len() <= i {
                self.phases.push((label, Vec::new()));
            }
            self.phases[i].1.push(took);
        }
    }

    /// The table: phase, label, then min, median and max over the seeds
    /// that converged, and how many did not.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if self.phases.is_empty() {
            return s;
        }
        let width = self
            .phases
            .iter()
            .map(|p| p.0.len())
            .max()
            .unwrap_or(0)
            .max(5);
        let _ = writeln!(
            s,
            "{:>5}  {:<width$}  {:>9} {:>9} {:>9} {:>6}",
            "phase", "step", "min s", "median s", "max s", "never"
        );
        for (i, (label, times)) in self.phases.iter().enumerate() {
            let mut done: Vec<Duration> = times.iter().flatten().copied().collect();
            done.sort();
            let cell =
                |d: Option<&Duration>| d.map_or("-".into(), |d| format!("{:.3}", d.as_secs_f64()));
            let _ = writeln!(
                s,
                "{:>5}  {:<width$}  {:>9} {:>9} {:>9} {:>6}",
                i + 1,
                label,
                cell(done.first()),
                cell(done.get(done.len() / 2)),
                cell(done.last()),
                times.len() - done.len()
            );
        }
        s
    }
}

/// A progress line on stderr, shown only when stderr is a terminal.
#[derive(Debug)]
pub struct Progress {
    total: u64,
    start: Instant,
    on: bool,
}

impl Progress {
    /// Progress over `total` seeds, starting now.
    pub fn new(total: u64) -> Self {
        Progress {
            total,
            start: Instant::now(),
            on: total > 1 && std::io::stderr().is_terminal(),
        }
    }

    /// Clears the line before other output.
    pub fn clear(&self) {
        if self.on {
            eprint!("\r\x1b[K");
        }
    }

    /// `done` seeds of the total are finished.
    pub fn show(&self, done: u64) {
        if !self.on {
            return;
        }
        let elapsed = self.start.elapsed();
        eprint!("\r\x1b[K{}", line(done, self.total, elapsed));
        let _ = std::io::stderr().flush();
    }
}

/// `seed 3 of 10, 12 s elapsed, ETA 28 s`.
fn line(done: u64, total: u64, elapsed: Duration) -> String {
    let eta = if done == 0 {
        "ETA -".to_string()
    } else {
        let left = elapsed.as_secs_f64() / done as f64 * total.saturating_sub(done) as f64;
        format!("ETA {left:.0} s")
    };
    format!(
        "seed {} of {total} done, {:.0} s elapsed, {eta}",
        done,
        elapsed.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_summarises_each_phase_over_the_seeds() {
        let mut t = PhaseTable::default();
        let s = Duration::from_secs;
        t.add([
            ("converge within 10s".into(), Some(s(1))),
            ("heal".into(), None),
        ]);
        t.add([
            ("converge within 10s".into(), Some(s(3))),
            ("heal".into(), Some(s(2))),
        ]);
        t.add([
            ("converge within 10s".into(), Some(s(2))),
            ("heal".into(), None),
        ]);
        let out = t.render();
        let rows: Vec<&str> = out.lines().collect();
        assert_eq!(rows.len(), 3, "{out}");
        let cells: Vec<&str> = rows[1].split_whitespace().collect();
        assert_eq!(
            cells[cells.len() - 4..],
            ["1.000", "2.000", "3.000", "0"],
            "{out}"
        );
        assert!(
            rows[2].trim_end().ends_with('2'),
            "two seeds never converged: {out}"
        );
    }

    #[test]
    fn eta_scales_with_what_is_left() {
        assert_eq!(
            line(2, 6, Duration::from_secs(10)),
            "seed 2 of 6 done, 10 s elapsed, ETA 20 s"
        );
        assert!(line(0, 6, Duration::ZERO).ends_with("ETA -"));
    }
}
