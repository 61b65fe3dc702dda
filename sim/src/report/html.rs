//! Filling the page templates under `sim/report/` with a run's data. The
//! data goes in as JSON inside a `<script type="application/json">`
//! element, with every `<` escaped so no string can close it.

use std::fmt::Write;

use serde::Serialize;

use super::record::Record;
use crate::compare::{Convergence, MembershipTrace};

const RUN: &str = include_str!("../../report/run.html");
const INDEX: &str = include_str!("../../report/index.html");
const COMPARE: &str = include_str!("../../report/compare.html");
const STYLE: &str = include_str!("../../report/style.css");

/// JSON that is safe inside a `<script>` element.
fn embed<T: Serialize>(data: &T) -> String {
    serde_json::to_string(data)
        .unwrap_or_else(|e| unreachable!("a record is plain data: {e}"))
        .replace('<', "\\u003c")
}

/// Text safe in HTML content and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn fill(template: &str, title: &str, data: &str) -> String {
    template
        .replace("/*STYLE*/", STYLE)
        .replace("__TITLE__", &escape(title))
        .replace("__DATA__", data)
}

/// One run as a page.
pub fn run_page(record: &Record) -> String {
    let title = format!("{} seed {} ({})", record.title, record.seed, record.runner);
    fill(RUN, &title, &embed(record))
}

/// One row of a sweep's index.
#[derive(Clone, Debug)]
pub struct SweepRow {
    /// The seed.
    pub seed: u64,
    /// Whether the run passed.
    pub passed: bool,
    /// Violations found.
    pub violations: usize,
    /// Leadership intervals (one per leadership).
    pub leaderships: usize,
    /// The run's page, relative to the index.
    pub file: String,
}

/// A sweep's index: one row a seed, each linking to its page.
pub fn index_page(title: &str, rows: &[SweepRow]) -> String {
    let mut body = String::new();
    for r in rows {
        let _ = writeln!(
            body,
            "<tr class=\"{cls}\"><td>{seed}</td><td>{outcome}</td><td>{v}</td><td>{l}</td><td><a href=\"{f}\">{f}</a></td></tr>",
            cls = if r.passed { "ok" } else { "failed" },
            seed = r.seed,
            outcome = if r.passed { "ok" } else { "FAILED" },
            v = r.violations,
            l = r.leaderships,
            f = escape(&r.file),
        );
    }
    fill(INDEX, title, "").replace("__ROWS__", &body)
}

/// One system's numbers in the comparison chart.
#[derive(Serialize)]
struct SystemChart {
    name: String,
    /// `(label, at s, verdict, s)`: per mark, how the views came to agree
    /// (`after`, `overtaken` by the next step, `never`) and when.
    marks: Vec<(String, f64, &'static str, Option<f64>)>,
    bytes_mean: f64,
    bytes_max: f64,
    nodes_started: usize,
    false_reports: usize,
}

/// Membership systems run under one schedule (`compare`'s side-by-side)
/// as a chart: per mark, each system's convergence time; bytes per node
/// per second.
pub fn compare_page(title: &str, runs: &[(&str, &MembershipTrace)]) -> String {
    let systems: Vec<SystemChart> = runs
        .iter()
        .map(|(name, trace)| {
            let m = trace.metrics();
            SystemChart {
                name: name.to_string(),
                marks: m
                    .convergence
                    .iter()
                    .map(|(label, at, c)| {
                        let (verdict, d) = match c {
                            Convergence::After(d) => ("after", Some(d.as_secs_f64())),
                            Convergence::Overtaken(d) => ("overtaken", Some(d.as_secs_f64())),
                            Convergence::Never => ("never", None),
                        };
                        (label.clone(), at.as_secs_f64(), verdict, d)
                    })
                    .collect(),
                bytes_mean: m.bytes_per_node_sec_mean,
                bytes_max: m.bytes_per_node_sec_max,
                nodes_started: m.nodes_started,
                false_reports: m.false_reports,
            }
        })
        .collect();
    fill(COMPARE, title, &embed(&systems))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_cannot_close_its_script_element() {
        let r = Record {
            title: "</script><b>".into(),
            ..Record::default()
        };
        let page = run_page(&r);
        assert!(!page.contains("</script><b>"));
        assert!(
            page.contains("&lt;/script&gt;&lt;b&gt;"),
            "the title is escaped"
        );
        assert_eq!(
            page.matches("</script>").count(),
            RUN.matches("</script>").count()
        );
    }

    #[test]
    fn index_links_every_seed() {
        let rows = [1, 2].map(|seed| SweepRow {
            seed,
            passed: seed == 1,
            violations: (seed - 1) as usize,
            leaderships: 3,
            file: format!("seed-{seed}.html"),
        });
        let page = index_page("sweep", &rows);
        assert!(page.contains("href=\"seed-1.html\"") && page.contains("href=\"seed-2.html\""));
        assert!(page.contains("FAILED"));
    }
}
