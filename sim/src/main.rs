//! `hedgerow-sim`: runs in-process clusters and prints what a user of
//! hedgerow cares about, per seed: time to the first leader, failover time
//! after a leader crashes right after a renew (and its ratio to `lease + 2·bound`), convergence
//! after a 50-node join wave, the leader's steady-state load (bytes and
//! messages per second), and any invariant violation.
//!
//! With `--scenario NAME|FILE` it runs a chaos schedule instead (see
//! `hedgerow_sim::scenario` for the format and the built-in names) and
//! prints, per seed, violations and the convergence time after each phase.
//!
//! With `--net turmoil` the scenario runs the real facade (driver, TCP
//! transport, framing) on turmoil hosts instead (see
//! `hedgerow_sim::turmoil`), printing per seed the violations, time to the
//! first leader, failover and convergence times, and messages and bytes per
//! node per second.
//!
//! ```text
//! cargo run --release -p hedgerow-sim -- --nodes 150 --seeds 5 [--bound-ms 50] [--preset lan|local|wan]
//! cargo run --release -p hedgerow-sim -- --scenario scale-2-150-2 --seeds 5
//! cargo run --release -p hedgerow-sim -- --net turmoil --scenario scale-2-150-2 --seeds 3 [--tick-ms 10]
//! ```
//!
//! A scenario run prints one line a seed and, at the end, a table with one
//! row a `converge` phase (min, median and max over the seeds); `--verbose`
//! adds every phase's time (and, on turmoil, the time to agree after every
//! wave) to each seed's line. `--report FILE.html` (one seed) draws the run
//! as a timeline in one self-contained page; `--report-dir DIR` writes one
//! page a seed and an `index.html`. A sweep on a terminal shows its
//! progress on stderr.
//!
//! ```text
//! cargo run --release -p hedgerow-sim -- --scenario partitions --seed 3 --report run.html
//! cargo run --release -p hedgerow-sim -- --scenario scale-2-150-2 --seeds 20 --report-dir reports
//! ```
//!
//! `HEDGEROW_SEED=<seed>` replays one seed, whatever `--seed`/`--seeds` say.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use std::path::{Path, PathBuf};

use hedgerow_core::Config;
use hedgerow_sim::report::{self, PhaseTable, Progress, Record, SweepRow};
use hedgerow_sim::scenario::{self, Scenario, Step};
use hedgerow_sim::{Cluster, ClusterConfig};

struct Args {
    nodes: usize,
    seeds: u64,
    first_seed: u64,
    bound_ms: u64,
    preset: String,
    scenario: Option<String>,
    turmoil: bool,
    tick_ms: u64,
    verbose: bool,
    report: Reports,
}

/// Where run reports go.
enum Reports {
    None,
    /// One run's page.
    File(PathBuf),
    /// One page a seed plus `index.html`.
    Dir(PathBuf),
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        nodes: 20,
        seeds: 3,
        first_seed: 1,
        bound_ms: 50,
        preset: "lan".into(),
        scenario: None,
        turmoil: false,
        tick_ms: 10,
        verbose: false,
        report: Reports::None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--nodes" => a.nodes = num(value()?)? as usize,
            "--seeds" => a.seeds = num(value()?)?,
            "--seed" => {
                a.first_seed = num(value()?)?;
                a.seeds = 1;
            }
            "--bound-ms" => a.bound_ms = num(value()?)?,
            "--preset" => a.preset = value()?,
            "--scenario" => a.scenario = Some(value()?),
            "--net" => match value()?.as_str() {
                "turmoil" => a.turmoil = true,
                "inprocess" | "in-process" => a.turmoil = false,
                other => return Err(format!("--net {other:?}: use turmoil or inprocess")),
            },
            "--tick-ms" => a.tick_ms = num(value()?)?.max(1),
            "--verbose" | "-v" => a.verbose = true,
            "--report" => a.report = Reports::File(value()?.into()),
            "--report-dir" => a.report = Reports::Dir(value()?.into()),
            "-h" | "--help" => {
                return Err("usage: hedgerow-sim [--net inprocess|turmoil] [--tick-ms T] [--scenario NAME|FILE] [--nodes N] [--seeds N | --seed S] [--bound-ms B] [--preset lan|local|wan] [--report FILE.html | --report-dir DIR] [--verbose]\n\
                     built-in scenarios: scale-2-150-2, partitions, lossy, streams (see hedgerow_sim::scenario for the file format)".into())
            }
            other => return Err(format!("unknown argument {other:?}; try --help")),
        }
    }
    if let Some(seed) = std::env::var("HEDGEROW_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        a.first_seed = seed;
        a.seeds = 1;
    }
    if a.turmoil && a.scenario.is_none() {
        return Err("--net turmoil runs a scenario: add --scenario NAME|FILE".into());
    }
    let reporting = !matches!(a.report, Reports::None);
    if reporting && a.scenario.is_none() {
        return Err(
            "--report and --report-dir draw a scenario run: add --scenario NAME|FILE".into(),
        );
    }
    if matches!(a.report, Reports::File(_)) && a.seeds > 1 {
        return Err(
            "--report draws one run: add --seed S, or use --report-dir DIR for a sweep".into(),
        );
    }
    if a.nodes < 2 {
        return Err("--nodes must be at least 2".into());
    }
    Ok(a)
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let node = match args.preset.as_str() {
        "lan" => Config::lan("sim"),
        "local" => Config::local("sim"),
        "wan" => Config::wan("sim"),
        other => {
            eprintln!("unknown preset {other:?}: use lan, local or wan");
            return ExitCode::from(2);
        }
    };
    let bound = Duration::from_millis(args.bound_ms);
    if let Some(name) = &args.scenario {
        let scenario = match Scenario::load(name) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
        return if args.turmoil {
            run_turmoil(&scenario, name, &args, node, bound)
        } else {
            run_scenario(&scenario, name, &args, node, bound)
        };
    }
    run_benchmark(&args, &node, bound)
}

/// The default run: `args.nodes` nodes a seed through election, steady
/// load at the leader, a worst-case leader crash and a 50-node join, one
/// table row a seed.
fn run_benchmark(args: &Args, node: &Config, bound: Duration) -> ExitCode {
    let budget = node.lease_duration + bound * 2;
    println!(
        "hedgerow-sim: {} nodes, preset {} (lease {:?}, heartbeat {:?}, failure timeout {:?}), clock bound ±{:?}",
        args.nodes, args.preset, node.lease_duration, node.heartbeat_interval, node.failure_timeout, bound
    );
    println!(
        "{:>8} {:>12} {:>11} {:>12} {:>11} {:>10} {:>14} {:>10} {:>10} {:>10} {:>7}",
        "seed",
        "1st leader s",
        "failover s",
        "/(lease+2b)",
        "converge s",
        "50-join s",
        "leader out/s",
        "msgs out/s",
        "msgs in/s",
        "violations",
        "wall s"
    );
    let mut failed = false;
    for seed in args.first_seed..args.first_seed + args.seeds {
        let wall = Instant::now();
        let mut cfg = cluster_config(seed, node, bound);
        cfg.measure_bytes = true;
        let m = measure(cfg, args.nodes, node);
        print_row(seed, &m, budget, wall);
        if !m.violations.is_empty() || m.converged.is_none() || m.join.is_none() {
            failed = true;
            for v in m.violations.iter().take(3) {
                eprintln!("{v}");
            }
            eprintln!(
                "replay: cargo run --release -p hedgerow-sim -- --nodes {} --seed {seed}",
                args.nodes
            );
        }
    }
    exit_code(failed)
}

/// The cluster configuration every run of one seed starts from.
fn cluster_config(seed: u64, node: &Config, bound: Duration) -> ClusterConfig {
    let mut cfg = ClusterConfig::new(seed);
    cfg.node = node.clone();
    cfg.bound = bound;
    cfg.trace_len = 64;
    cfg
}

/// What one benchmark seed measured (times in ns of simulated time).
struct Measured {
    first: Option<u64>,
    failover: Option<u64>,
    converged: Option<u64>,
    join: Option<u64>,
    /// Bytes, messages out and messages in per second at the leader.
    load: Option<(f64, f64, f64)>,
    violations: Vec<hedgerow_sim::check::Violation>,
}

fn measure(cfg: ClusterConfig, nodes: usize, node: &Config) -> Measured {
    let mut c = Cluster::with_nodes(cfg, nodes);
    let converged = c.run_until_converged(Duration::from_secs(120));
    let first = c.first_leader_at();
    let load = c
        .leader()
        .map(|l| steady_load(&mut c, l, node.heartbeat_interval * 10));
    let failover = worst_case_failover(&mut c, node.lease_duration);
    let _ = c.run_until_converged(Duration::from_secs(120));
    let t1 = c.now_ns();
    for _ in 0..50 {
        c.add_node();
    }
    let join = c
        .run_until_converged(Duration::from_secs(120))
        .map(|t| t - t1);
    Measured {
        first,
        failover,
        converged,
        join,
        load,
        violations: c.violations(),
    }
}

/// Steady-state load at the leader `l` over `span`: bytes, messages out
/// and messages in per second.
fn steady_load(c: &mut Cluster, l: usize, span: Duration) -> (f64, f64, f64) {
    let a = &c.node(l).app;
    let before = (a.sent_bytes, a.sent_msgs, a.recv_msgs);
    c.run_for(span);
    let a = &c.node(l).app;
    let s = span.as_secs_f64();
    (
        (a.sent_bytes - before.0) as f64 / s,
        (a.sent_msgs - before.1) as f64 / s,
        (a.recv_msgs - before.2) as f64 / s,
    )
}

/// The worst case: crash the leader right after a renew; how long until
/// another leads (`None`: not within four leases).
fn worst_case_failover(c: &mut Cluster, lease: Duration) -> Option<u64> {
    let version = c.store().row().map_or(0, |r| r.version);
    c.run_until_true(lease, Duration::from_millis(1), |c| {
        c.store().row().map_or(0, |r| r.version) > version
    });
    let t0 = c.now_ns();
    if let Some(l) = c.leader() {
        c.crash(l);
    }
    c.run_until_true(lease * 4, Duration::from_millis(1), |c| {
        c.leader().is_some()
    })
    .map(|t| t - t0)
}

fn print_row(seed: u64, m: &Measured, budget: Duration, wall: Instant) {
    let cell = |v: Option<u64>| v.map_or("never".to_string(), |x| format!("{:.3}", secs(x)));
    let load = m.load;
    println!(
        "{:>8} {:>12} {:>11} {:>12} {:>11} {:>10} {:>14} {:>10} {:>10} {:>10} {:>7.2}",
        seed,
        cell(m.first),
        cell(m.failover),
        m.failover.map_or("-".into(), |f| format!(
            "{:.3}",
            f as f64 / budget.as_nanos() as f64
        )),
        cell(m.converged),
        cell(m.join),
        load.map_or("-".into(), |l| format!("{:.1} KB", l.0 / 1000.0)),
        load.map_or("-".into(), |l| format!("{:.0}", l.1)),
        load.map_or("-".into(), |l| format!("{:.0}", l.2)),
        m.violations.len(),
        wall.elapsed().as_secs_f64()
    );
}

fn run_scenario(
    scenario: &Scenario,
    name: &str,
    args: &Args,
    node: Config,
    bound: Duration,
) -> ExitCode {
    println!(
        "hedgerow-sim: scenario {} ({} steps), preset {}, clock bound ±{bound:?}",
        scenario.name,
        scenario.steps.len(),
        args.preset
    );
    let labels: Vec<String> = scenario
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Converge(_)))
        .map(Step::label)
        .collect();
    let mut sweep = Sweep::new(args);
    for seed in args.first_seed..args.first_seed + args.seeds {
        let wall = Instant::now();
        let mut cfg = cluster_config(seed, &node, bound);
        cfg.record = sweep.records();
        let (out, cluster) = scenario::run_with(scenario, cfg);
        let phases: Vec<(String, Option<Duration>)> = labels
            .iter()
            .cloned()
            .zip(out.converge.iter().copied())
            .collect();
        sweep.progress.clear();
        let never = phases.iter().filter(|p| p.1.is_none()).count();
        println!(
            "seed {seed}: {} ({} violations, {never} of {} phases did not converge), first leader {}, simulated {:.0} s, {} events, wall {:.2} s",
            if out.passed() { "ok" } else { "FAILED" },
            out.violations.len(),
            phases.len(),
            out.first_leader.map_or("never".into(), |d| format!("{:.3} s", d.as_secs_f64())),
            out.end.as_secs_f64(),
            out.events,
            wall.elapsed().as_secs_f64()
        );
        if args.verbose {
            let conv: Vec<String> = out
                .converge
                .iter()
                .map(|c| c.map_or("never".into(), |d| format!("{:.2}", d.as_secs_f64())))
                .collect();
            println!("  converged after each phase [{}] s", conv.join(", "));
        }
        if !out.passed() {
            for v in out.violations.iter().take(3) {
                eprintln!("{v}");
            }
            if let Some(d) = &out.divergence {
                eprintln!("not converged: {d}");
            }
            eprintln!(
                "replay: cargo run --release -p hedgerow-sim -- --scenario {name} --seed {seed}"
            );
        }
        let record = cluster.record().map(|mut r| {
            r.title = scenario.name.clone();
            r.passed = out.passed();
            r
        });
        if let Err(e) = sweep.seed_done(seed, out.passed(), phases, record) {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    }
    sweep.finish(&scenario.name)
}

fn run_turmoil(
    scenario: &Scenario,
    name: &str,
    args: &Args,
    node: Config,
    bound: Duration,
) -> ExitCode {
    let mut sweep = Sweep::new(args);
    let opts = hedgerow_sim::turmoil::TurmoilOptions {
        tick: Duration::from_millis(args.tick_ms),
        config: node,
        bound,
        record: sweep.records(),
        ..Default::default()
    };
    println!(
        "hedgerow-sim: scenario {} ({} steps) on turmoil (real driver and TCP transport, tick {:?}), preset {}, clock bound ±{bound:?}",
        scenario.name,
        scenario.steps.len(),
        opts.tick,
        args.preset
    );
    for seed in args.first_seed..args.first_seed + args.seeds {
        let mut report = hedgerow_sim::turmoil::run(scenario, seed, &opts);
        sweep.progress.clear();
        print!("{}", report.summary());
        if args.verbose {
            print!("{}", report.details());
        }
        if !report.passed() {
            eprintln!(
                "replay: HEDGEROW_SEED={seed} cargo run --release -p hedgerow-sim -- --net turmoil --scenario {name} --tick-ms {}",
                args.tick_ms
            );
        }
        let record = report.record.take().map(|mut r| {
            r.title = scenario.name.clone();
            r
        });
        let phases = std::mem::take(&mut report.converge);
        if let Err(e) = sweep.seed_done(seed, report.passed(), phases, record) {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    }
    sweep.finish(&scenario.name)
}

/// A sweep in progress: the phase table, the progress line, the reports
/// written so far, and whether any seed failed.
struct Sweep<'a> {
    args: &'a Args,
    table: PhaseTable,
    progress: Progress,
    rows: Vec<SweepRow>,
    done: u64,
    failed: bool,
}

impl<'a> Sweep<'a> {
    fn new(args: &'a Args) -> Self {
        Sweep {
            args,
            table: PhaseTable::default(),
            progress: Progress::new(args.seeds),
            rows: Vec::new(),
            done: 0,
            failed: false,
        }
    }

    /// Whether runs must record for a report.
    fn records(&self) -> bool {
        !matches!(self.args.report, Reports::None)
    }

    /// One seed finished: its phases go in the table, its record (if
    /// any) to its page.
    fn seed_done(
        &mut self,
        seed: u64,
        passed: bool,
        phases: Vec<(String, Option<Duration>)>,
        record: Option<Record>,
    ) -> Result<(), String> {
        self.failed |= !passed;
        self.table.add(phases);
        if let Some(r) = record {
            let path = match &self.args.report {
                Reports::None => None,
                Reports::File(f) => Some(f.clone()),
                Reports::Dir(d) => {
                    std::fs::create_dir_all(d)
                        .map_err(|e| format!("cannot create --report-dir {}: {e}", d.display()))?;
                    Some(d.join(format!("seed-{seed}.html")))
                }
            };
            if let Some(path) = path {
                write(&path, &report::run_page(&r))?;
                self.rows.push(SweepRow {
                    seed,
                    passed: r.passed,
                    violations: r.violations.len(),
                    leaderships: r.leaderships(),
                    file: format!("seed-{seed}.html"),
                });
                if matches!(self.args.report, Reports::File(_)) {
                    println!("report: {}", path.display());
                }
            }
        }
        self.done += 1;
        self.progress.show(self.done);
        Ok(())
    }

    /// The phase table, the sweep's index, and the exit code.
    fn finish(self, title: &str) -> ExitCode {
        self.progress.clear();
        print!("{}", self.table.render());
        if let Reports::Dir(d) = &self.args.report {
            let index = d.join("index.html");
            let page =
                report::index_page(&format!("{title}: {} seeds", self.rows.len()), &self.rows);
            if let Err(e) = write(&index, &page) {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
            println!("reports: {}", index.display());
        }
        exit_code(self.failed)
    }
}

fn write(path: &Path, page: &str) -> Result<(), String> {
    std::fs::write(path, page).map_err(|e| format!("cannot write report {}: {e}", path.display()))
}

/// Failure if any seed failed.
fn exit_code(failed: bool) -> ExitCode {
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
