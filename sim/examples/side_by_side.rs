//! Membership under churn, hedgerow beside foca, from one scenario and seed.
//!
//! ```text
//! cargo run --release -p hedgerow-sim --example side_by_side -- \
//!     --scenario scale-2-150-2 --seed 1
//! ```
//!
//! Prints a markdown table (see `hedgerow_sim::compare::side_by_side`);
//! `--chart FILE.html` also draws it as a page (convergence per mark,
//! bytes per node per second; see `hedgerow_sim::report::compare_page`).

#[path = "support/foca_turmoil.rs"]
mod foca_turmoil;

use std::time::Duration;

use hedgerow_sim::compare::{side_by_side, MembershipTrace};
use hedgerow_sim::scenario::{Scenario, Step, Target};

struct Args {
    scenario: String,
    seed: u64,
    chart: Option<String>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        scenario: "scale-2-150-2".into(),
        seed: 1,
        chart: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--scenario" => a.scenario = value()?,
            "--chart" => a.chart = Some(value()?),
            "--seed" => {
                a.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?;
            }
            _ => {
                return Err(format!(
                    "unknown flag {flag}: use --scenario NAME|FILE --seed N [--chart FILE.html]"
                ))
            }
        }
    }
    Ok(a)
}

/// Reports whose subject was in the live set at that instant, to look into.
fn false_reports(t: &MembershipTrace) -> Vec<(Duration, String, String)> {
    t.failed_reports
        .iter()
        .filter(|(at, _, subject)| {
            let i = t.live.partition_point(|(l, _)| l <= at);
            i > 0 && t.live[i - 1].1.contains(subject)
        })
        .cloned()
        .collect()
}

/// The hosts hedgerow's run acted on for each `crash|leave|restart
/// leader` step, in step order: the k-th crash step's host is in the k-th
/// `crash` mark, and so on.
fn leader_hosts(scenario: &Scenario, t: &MembershipTrace) -> Vec<String> {
    let marks = |verb: &'static str| {
        t.marks
            .iter()
            .filter_map(move |(_, l)| l.strip_prefix(verb).map(str::to_string))
    };
    let (mut crashes, mut leaves, mut restarts) =
        (marks("crash "), marks("leave "), marks("restart "));
    let mut out = Vec::new();
    for step in &scenario.steps {
        let (host, target) = match step {
            Step::Crash(t) => (crashes.next(), t),
            Step::Leave(t) => (leaves.next(), t),
            Step::Restart(t) => (restarts.next(), t),
            _ => continue,
        };
        if let (Target::Leader, Some(h)) = (target, host) {
            out.push(h);
        }
    }
    out
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let scenario = match Scenario::load(&a.scenario) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let opts = foca_turmoil::Opts::default();
    let t0 = std::time::Instant::now();
    let hedgerow = hedgerow_sim::turmoil::run(&scenario, a.seed, &opts.mirror);
    eprintln!(
        "hedgerow: {:.1} s wall, passed: {}{}",
        t0.elapsed().as_secs_f64(),
        hedgerow.passed(),
        hedgerow
            .error
            .as_ref()
            .map_or(String::new(), |e| format!(", error: {e}"))
    );
    // foca has no leader: act on the hosts hedgerow's `leader` steps did.
    let opts = foca_turmoil::Opts {
        leader_hosts: leader_hosts(&scenario, &hedgerow.trace),
        ..opts
    };
    let t1 = std::time::Instant::now();
    let foca = foca_turmoil::run(&scenario, a.seed, &opts);
    let hosts = |t: &MembershipTrace| -> Vec<_> {
        t.live
            .iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(_, s)| s.clone())
            .collect()
    };
    eprintln!(
        "same hosts started, crashed and left in the same order: {}",
        if hosts(&hedgerow.trace) == hosts(&foca.trace) {
            "yes"
        } else {
            "NO"
        }
    );
    eprintln!("foca: {:.1} s wall", t1.elapsed().as_secs_f64());
    eprintln!(
        "foca: {} down verdicts about an earlier incarnation of a restarted host (not counted)",
        foca.stale_incarnation_reports
    );
    for s in &foca.skipped {
        eprintln!("foca: no counterpart, skipped {s}");
    }
    let table = side_by_side(&[
        ("hedgerow (turmoil, TCP)", &hedgerow.trace),
        ("foca (turmoil, UDP)", &foca.trace),
    ]);
    println!(
        "scenario `{}`, seed {}, turmoil tick {:?}\n",
        scenario.name, a.seed, opts.mirror.tick
    );
    println!("{table}");
    if let Some(path) = &a.chart {
        let title = format!("{}, seed {}: hedgerow beside foca", scenario.name, a.seed);
        let page = hedgerow_sim::report::compare_page(
            &title,
            &[
                ("hedgerow (turmoil, TCP)", &hedgerow.trace),
                ("foca (turmoil, UDP)", &foca.trace),
            ],
        );
        if let Err(e) = std::fs::write(path, page) {
            eprintln!("cannot write {path}: {e}");
            std::process::exit(1);
        }
        eprintln!("chart: {path}");
    }
    println!(
        "Mark times (@) are the first column's; a `converge` step that takes longer \
         in one run shifts that run's later marks.\n"
    );
    // `SIDE_BY_SIDE_DUMP=dir` keeps both traces, to look into a number.
    if let Some(dir) = std::env::var_os("SIDE_BY_SIDE_DUMP") {
        let dir = std::path::PathBuf::from(dir);
        for (file, t) in [
            ("hedgerow.trace", &hedgerow.trace),
            ("foca.trace", &foca.trace),
        ] {
            if let Err(e) = std::fs::write(dir.join(file), format!("{t:#?}")) {
                eprintln!("cannot write {file}: {e}");
            }
        }
    }
    for (who, t) in [("hedgerow", &hedgerow.trace), ("foca", &foca.trace)] {
        for (at, reporter, subject) in false_reports(t).iter().take(10) {
            eprintln!("{who}: false dead report at {at:?}: {reporter} said {subject} failed");
        }
    }
    println!("hedgerow config: {:?}\n", opts.mirror.config);
    println!("foca config: {:?}", foca.config);
}
