//! Membership observations that any cluster run can record, so that two
//! membership systems (hedgerow and a SWIM library such as foca) run under
//! the same schedule can be compared on the same metrics.
//!
//! A runner records, in simulated time since the start of the run:
//! * every change of the set of nodes that are actually alive (started and
//!   not yet crashed or left), one entry per change;
//! * every change of a node's view (the set of members it believes alive,
//!   itself included);
//! * every report by a node that another node failed (a "dead" verdict);
//! * the bytes each node put on the network.
//!
//! Nodes are named by their simulated host name (`"n1"`, `"n2"`, …).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A node's name: its simulated host name.
pub type NodeName = String;

/// Everything one run observed about membership.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MembershipTrace {
    /// The true live set after each change, in time order.
    pub live: Vec<(Duration, BTreeSet<NodeName>)>,
    /// `(at, node, view)`: `node`'s view changed to `view`, in time order.
    pub views: Vec<(Duration, NodeName, BTreeSet<NodeName>)>,
    /// `(at, reporter, subject)`: `reporter` declared `subject` failed.
    pub failed_reports: Vec<(Duration, NodeName, NodeName)>,
    /// Bytes each node sent over the whole run.
    pub bytes_sent: BTreeMap<NodeName, u64>,
    /// Instants where a schedule step (a wave, a crash) ended; convergence
    /// is measured from each of them.
    pub marks: Vec<(Duration, String)>,
    /// How long the run lasted in simulated time.
    pub duration: Duration,
}

/// How a cluster came to agree after a mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Convergence {
    /// Every live node's view was exactly the live set this long after the
    /// mark (zero: it already was at the mark).
    After(Duration),
    /// The live set changed again this long after the mark, before the
    /// views agreed on it: the next schedule step overtook convergence.
    Overtaken(Duration),
    /// The run ended without the views agreeing.
    Never,
}

impl std::fmt::Display for Convergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Convergence::After(d) => write!(f, "{}", secs(*d)),
            Convergence::Overtaken(d) => write!(f, "overtaken at +{}", secs(*d)),
            Convergence::Never => write!(f, "never"),
        }
    }
}

/// Membership quality measured over one [`MembershipTrace`].
#[derive(Clone, Debug, PartialEq)]
pub struct Metrics {
    /// For each mark, in order: its label, its instant, and how the views
    /// came to agree after it.
    pub convergence: Vec<(String, Duration, Convergence)>,
    /// Distinct views held by live nodes over the run.
    pub distinct_views: usize,
    /// The most groups of live nodes that did not know of each other at one
    /// instant (1 = no split). A node is in a group with every live node in
    /// its view and every live node that has it in theirs, so groups whose
    /// views overlap are one; a node alone (nobody live in its view, in
    /// nobody's view) has not joined yet and is not counted.
    pub max_groups: usize,
    /// Reports that a node failed while it was alive at that instant.
    pub false_reports: usize,
    /// Reports that a node failed after it had left the live set.
    pub true_reports: usize,
    /// Median delay from a node leaving the live set to a report of its
    /// failure, over all true reports.
    pub detection_p50: Option<Duration>,
    /// Longest such delay.
    pub detection_max: Option<Duration>,
    /// Mean over nodes of bytes sent per second of that node's live time.
    pub bytes_per_node_sec_mean: f64,
    /// Largest such rate.
    pub bytes_per_node_sec_max: f64,
    /// Nodes ever started.
    pub nodes_started: usize,
}

/// Per node, the intervals `[start, end)` in which it was in the live set
/// (`end` is the run's duration for a node still live at the end).
fn live_intervals(t: &MembershipTrace) -> BTreeMap<&str, Vec<(Duration, Duration)>> {
    let mut open: BTreeMap<&str, Duration> = BTreeMap::new();
    let mut done: BTreeMap<&str, Vec<(Duration, Duration)>> = BTreeMap::new();
    static EMPTY: BTreeSet<NodeName> = BTreeSet::new();
    let mut prev = &EMPTY;
    for (at, set) in &t.live {
        for n in set.difference(prev) {
            open.insert(n, *at);
        }
        for n in prev.difference(set) {
            if let Some(start) = open.remove(n.as_str()) {
                done.entry(n).or_default().push((start, *at));
            }
        }
        prev = set;
    }
    let end = t
        .duration
        .max(t.live.last().map_or(Duration::ZERO, |l| l.0));
    for (n, start) in open {
        done.entry(n).or_default().push((start, end));
    }
    done
}

/// The replayed state of a trace: the live set and each node's view.
#[derive(Default)]
struct Replay<'a> {
    live: BTreeSet<&'a str>,
    views: BTreeMap<&'a str, BTreeSet<&'a str>>,
}

impl<'a> Replay<'a> {
    fn agreed(&self) -> bool {
        self.live
            .iter()
            .all(|n| self.views.get(n).is_some_and(|v| *v == self.live))
    }

    /// Connected groups of live nodes, linked by who is in whose view;
    /// a node alone (nobody live in its view, in nobody's view) has not
    /// joined and is no group.
    fn groups(&self) -> usize {
        let live: Vec<&str> = self.live.iter().copied().collect();
        let index: BTreeMap<&str, usize> = live.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let mut parent: Vec<usize> = (0..live.len()).collect();
        fn root(p: &mut [usize], mut i: usize) -> usize {
            while p[i] != i {
                p[i] = p[p[i]];
                i = p[i];
            }
            i
        }
        for (i, n) in live.iter().enumerate() {
            for m in self.views.get(n).into_iter().flatten() {
                if let Some(&j) = index.get(m) {
                    let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                    parent[a] = b;
                }
            }
        }
        let mut size = vec![0usize; live.len()];
        for i in 0..live.len() {
            size[root(&mut parent, i)] += 1;
        }
        size.iter().filter(|&&n| n >= 2).count()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    Some(sorted[i])
}

/// One instant of a replayed trace: when, whether every live view was the
/// live set after it, and whether the live set changed at it.
type InstantVerdict = (Duration, bool, bool);

impl MembershipTrace {
    /// Measures the trace. Events at the same instant are applied together
    /// before anything is judged at that instant.
    pub fn metrics(&self) -> Metrics {
        let mut distinct: BTreeSet<BTreeSet<&str>> = BTreeSet::new();
        let mut max_groups = 0;
        let instants = self.replay(|state| {
            for n in &state.live {
                if let Some(v) = state.views.get(n) {
                    if !distinct.contains(v) {
                        distinct.insert(v.clone());
                    }
                }
            }
            max_groups = max_groups.max(state.groups());
        });
        let distinct_views = distinct.len();
        let intervals = live_intervals(self);
        let (false_reports, latencies) = self.judge_failure_reports(&intervals);
        let rates = self.byte_rates(&intervals);
        Metrics {
            convergence: self.convergence_at_marks(&instants),
            distinct_views,
            max_groups,
            false_reports,
            true_reports: latencies.len(),
            detection_p50: percentile(&latencies, 0.5),
            detection_max: latencies.last().copied(),
            bytes_per_node_sec_mean: if rates.is_empty() {
                0.0
            } else {
                rates.iter().sum::<f64>() / rates.len() as f64
            },
            bytes_per_node_sec_max: rates.iter().copied().fold(0.0, f64::max),
            nodes_started: intervals.len(),
        }
    }

    /// For each mark: how the views came to agree after it (what
    /// [`MembershipTrace::metrics`] reports as `convergence`, without the
    /// whole-run measures).
    pub fn convergence(&self) -> Vec<(String, Duration, Convergence)> {
        self.convergence_at_marks(&self.replay(|_| {}))
    }

    /// Replays the live-set and view changes instant by instant, showing
    /// `look` the state after each instant, and returns each instant's
    /// verdict.
    fn replay<'a>(&'a self, mut look: impl FnMut(&Replay<'a>)) -> Vec<InstantVerdict> {
        enum Ev<'a> {
            Live(&'a BTreeSet<NodeName>),
            View(&'a str, &'a BTreeSet<NodeName>),
        }
        // Live changes sort before view changes at the same instant; both
        // are applied before the instant is judged, so the order only
        // matters between two entries of the same kind, which keep theirs.
        let mut events: Vec<(Duration, Ev<'_>)> = self
            .live
            .iter()
            .map(|(at, s)| (*at, Ev::Live(s)))
            .chain(self.views.iter().map(|(at, n, v)| (*at, Ev::View(n, v))))
            .collect();
        events.sort_by_key(|(at, _)| *at);

        let mut instants: Vec<InstantVerdict> = Vec::new();
        let mut state = Replay::default();
        let mut i = 0;
        while i < events.len() {
            let at = events[i].0;
            let mut live_changed = false;
            while i < events.len() && events[i].0 == at {
                match &events[i].1 {
                    Ev::Live(s) => {
                        state.live = s.iter().map(String::as_str).collect();
                        live_changed = true;
                    }
                    Ev::View(n, v) => {
                        state
                            .views
                            .insert(n, v.iter().map(String::as_str).collect());
                    }
                }
                i += 1;
            }
            look(&state);
            instants.push((at, state.agreed(), live_changed));
        }
        instants
    }

    /// For each mark: how the views came to agree after it.
    fn convergence_at_marks(
        &self,
        instants: &[InstantVerdict],
    ) -> Vec<(String, Duration, Convergence)> {
        self.marks
            .iter()
            .map(|(m, label)| {
                // The state at the mark is the one after the last instant
                // at or before it.
                let k = instants.partition_point(|(at, ..)| at <= m);
                // Before the first event nobody is live: trivially agreed.
                let verdict = if k == 0 || instants[k - 1].1 {
                    Convergence::After(Duration::ZERO)
                } else {
                    instants[k..]
                        .iter()
                        .find_map(|&(at, agreed, live_changed)| {
                            if live_changed {
                                Some(Convergence::Overtaken(at - *m))
                            } else {
                                agreed.then(|| Convergence::After(at - *m))
                            }
                        })
                        .unwrap_or(Convergence::Never)
                };
                (label.clone(), *m, verdict)
            })
            .collect()
    }

    /// Failure reports about a node that was live at the time are false;
    /// the others are true, each detected this long (sorted) after its
    /// subject stopped.
    fn judge_failure_reports(
        &self,
        intervals: &BTreeMap<&str, Vec<(Duration, Duration)>>,
    ) -> (usize, Vec<Duration>) {
        let mut false_reports = 0;
        let mut latencies = Vec::new();
        for (at, _reporter, subject) in &self.failed_reports {
            let spans = intervals
                .get(subject.as_str())
                .map_or(&[][..], Vec::as_slice);
            if spans.iter().any(|(s, e)| s <= at && at < e) {
                false_reports += 1;
            } else if let Some((_, end)) = spans.iter().rev().find(|(_, e)| e <= at) {
                latencies.push(*at - *end);
            } else {
                // Never live before the report: nothing to detect.
                false_reports += 1;
            }
        }
        latencies.sort();
        (false_reports, latencies)
    }

    /// Bytes each node sent per second of its own life.
    fn byte_rates(&self, intervals: &BTreeMap<&str, Vec<(Duration, Duration)>>) -> Vec<f64> {
        intervals
            .iter()
            .filter_map(|(n, spans)| {
                let live: Duration = spans.iter().map(|(s, e)| *e - *s).sum();
                let bytes = self.bytes_sent.get(*n).copied().unwrap_or(0);
                (!live.is_zero()).then(|| bytes as f64 / live.as_secs_f64())
            })
            .collect()
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn opt_secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "–".into(), secs)
}

/// A markdown table with one column per named trace: convergence after
/// each mark (marks are matched by position; a label that differs from the
/// first trace's is shown next to the value), then the whole-run metrics.
pub fn side_by_side(runs: &[(&str, &MembershipTrace)]) -> String {
    use std::fmt::Write;
    let metrics: Vec<Metrics> = runs.iter().map(|(_, t)| t.metrics()).collect();
    let each = |f: &dyn Fn(&Metrics) -> String| metrics.iter().map(f).collect::<Vec<_>>();
    let mut out = String::new();
    let mut row = |name: &str, cells: Vec<String>| {
        let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
    };
    row("metric", runs.iter().map(|(n, _)| n.to_string()).collect());
    row("---", runs.iter().map(|_| "---".to_string()).collect());
    row(
        "simulated duration",
        runs.iter().map(|(_, t)| secs(t.duration)).collect(),
    );
    row("nodes started", each(&|m| m.nodes_started.to_string()));
    for (label, cells) in convergence_rows(&metrics) {
        row(&format!("views = live set after {label}"), cells);
    }
    row(
        "marks converged before the next step",
        each(&|m| {
            let ok = m
                .convergence
                .iter()
                .filter(|(.., c)| matches!(c, Convergence::After(_)))
                .count();
            format!("{ok} of {}", m.convergence.len())
        }),
    );
    row(
        "distinct views (live nodes)",
        each(&|m| m.distinct_views.to_string()),
    );
    row(
        "max disjoint groups at once",
        each(&|m| m.max_groups.to_string()),
    );
    row(
        "false \"dead\" reports",
        each(&|m| m.false_reports.to_string()),
    );
    row(
        "true \"dead\" reports",
        each(&|m| m.true_reports.to_string()),
    );
    row(
        "detection latency p50 / max",
        each(&|m| {
            format!(
                "{} / {}",
                opt_secs(m.detection_p50),
                opt_secs(m.detection_max)
            )
        }),
    );
    row(
        "bytes/node/s mean / max",
        each(&|m| {
            format!(
                "{:.0} / {:.0}",
                m.bytes_per_node_sec_mean, m.bytes_per_node_sec_max
            )
        }),
    );
    out
}

/// One row a mark, matched by position: its label (from the first run)
/// and each run's verdict, with the run's own label where it differs.
fn convergence_rows(metrics: &[Metrics]) -> Vec<(String, Vec<String>)> {
    let marks = metrics
        .iter()
        .map(|m| m.convergence.len())
        .max()
        .unwrap_or(0);
    let first = metrics.first();
    (0..marks)
        .map(|k| {
            let label = first.and_then(|m| m.convergence.get(k)).map_or_else(
                || format!("mark {}", k + 1),
                |(l, at, _)| format!("{l} @ {}", secs(*at)),
            );
            let cells = metrics
                .iter()
                .map(|m| match m.convergence.get(k) {
                    None => "–".into(),
                    Some((l, _, c))
                        if first.and_then(|f| f.convergence.get(k)).map(|f| &f.0) != Some(l) =>
                    {
                        format!("{c} ({l})")
                    }
                    Some((_, _, c)) => c.to_string(),
                })
                .collect();
            (label, cells)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<NodeName> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// a runs alone, b joins at 1 s and is seen by both by 2 s; b crashes
    /// at 5 s and a notices at 8 s. a once wrongly reports b at 1.2 s.
    fn join_then_crash() -> MembershipTrace {
        MembershipTrace {
            live: vec![
                (ms(0), set(&["a"])),
                (ms(1000), set(&["a", "b"])),
                (ms(5000), set(&["a"])),
            ],
            views: vec![
                (ms(0), "a".into(), set(&["a"])),
                (ms(1000), "b".into(), set(&["b"])),
                (ms(1500), "a".into(), set(&["a", "b"])),
                (ms(2000), "b".into(), set(&["a", "b"])),
                (ms(8000), "a".into(), set(&["a"])),
            ],
            failed_reports: vec![
                (ms(1200), "a".into(), "b".into()),
                (ms(8000), "a".into(), "b".into()),
            ],
            bytes_sent: [("a".to_string(), 1000), ("b".to_string(), 400)].into(),
            marks: vec![(ms(1000), "join".into()), (ms(5000), "crash".into())],
            duration: ms(10_000),
        }
    }

    #[test]
    fn convergence_reports_and_rates() {
        let m = join_then_crash().metrics();
        assert_eq!(
            m.convergence,
            vec![
                ("join".into(), ms(1000), Convergence::After(ms(1000))),
                ("crash".into(), ms(5000), Convergence::After(ms(3000))),
            ]
        );
        assert_eq!(m.false_reports, 1);
        assert_eq!(m.true_reports, 1);
        assert_eq!(m.detection_p50, Some(ms(3000)));
        assert_eq!(m.detection_max, Some(ms(3000)));
        // {a}, {b}, {a, b}.
        assert_eq!(m.distinct_views, 3);
        assert_eq!(m.max_groups, 1);
        // a: 1000 B over 10 s; b: 400 B over 4 s.
        assert!((m.bytes_per_node_sec_mean - 100.0).abs() < 1e-9);
        assert!((m.bytes_per_node_sec_max - 100.0).abs() < 1e-9);
        assert_eq!(m.nodes_started, 2);
    }

    #[test]
    fn a_change_before_agreement_overtakes_and_the_end_is_never() {
        let mut t = join_then_crash();
        // b crashes before a has seen it join.
        t.live[2].0 = ms(1200);
        t.views.retain(|(at, ..)| *at < ms(1500));
        t.failed_reports.clear();
        t.marks = vec![(ms(1000), "join".into()), (ms(1200), "crash".into())];
        let m = t.metrics();
        assert_eq!(m.convergence[0].2, Convergence::Overtaken(ms(200)));
        // a's view {a} is the live set again from 1.2 s.
        assert_eq!(m.convergence[1].2, Convergence::After(Duration::ZERO));
        // A mark nothing follows and that was never agreed on.
        t.views.push((ms(1300), "a".into(), set(&["a", "b"])));
        t.marks = vec![(ms(1300), "late".into())];
        assert_eq!(t.metrics().convergence[0].2, Convergence::Never);
    }

    #[test]
    fn a_mark_that_changes_nothing_does_not_end_the_wait() {
        // A `run` mark right after the crash leaves the live set as it
        // is: the crash is still measured to the agreement at 8 s.
        let mut t = join_then_crash();
        t.marks.push((ms(5100), "run 100ms".into()));
        let m = t.metrics();
        assert_eq!(m.convergence[1].2, Convergence::After(ms(3000)));
        assert_eq!(m.convergence[2].2, Convergence::After(ms(2900)));
        assert_eq!(t.convergence(), m.convergence);
    }

    #[test]
    fn two_halves_that_do_not_know_each_other_are_two_groups() {
        let all = set(&["a", "b", "c", "d", "e"]);
        let mut t = MembershipTrace {
            live: vec![(ms(0), all.clone())],
            duration: ms(1000),
            ..Default::default()
        };
        for n in ["a", "b"] {
            t.views.push((ms(10), n.into(), set(&["a", "b"])));
        }
        for n in ["c", "d"] {
            t.views.push((ms(10), n.into(), set(&["c", "d"])));
        }
        // e has not joined yet: not a group of its own.
        t.views.push((ms(10), "e".into(), set(&["e"])));
        t.views.push((ms(500), "a".into(), all.clone()));
        let m = t.metrics();
        assert_eq!(m.max_groups, 2);
        assert_eq!(m.distinct_views, 4);
    }

    #[test]
    fn views_that_overlap_are_one_group() {
        // x and z do not know each other, but both know y, which has just
        // restarted and knows nobody yet: one group, not two.
        let t = MembershipTrace {
            live: vec![(ms(0), set(&["x", "y", "z"]))],
            views: vec![
                (ms(0), "x".into(), set(&["x", "y"])),
                (ms(0), "z".into(), set(&["z", "y"])),
                (ms(0), "y".into(), set(&["y"])),
            ],
            duration: ms(10),
            ..Default::default()
        };
        assert_eq!(t.metrics().max_groups, 1);
    }

    #[test]
    fn table_has_a_column_per_run_and_a_row_per_mark() {
        let t = join_then_crash();
        let table = side_by_side(&[("x", &t), ("y", &t)]);
        assert!(table.starts_with("| metric | x | y |"), "{table}");
        assert!(
            table.contains("| views = live set after join @ 1.00 s | 1.00 s | 1.00 s |"),
            "{table}"
        );
        assert!(
            table.contains("| false \"dead\" reports | 1 | 1 |"),
            "{table}"
        );
        assert!(
            table.contains("| marks converged before the next step | 2 of 2 | 2 of 2 |"),
            "{table}"
        );
    }
}
