//! The in-process harness at 1,000 / 5,000 / 10,000 members: peak memory,
//! wall time to the first leader and to convergence, and the leader's bytes
//! out per second at rest and under a 1 %/s churn (each second 1 % of the
//! members crash or leave and as many come back as new incarnations).
//!
//! `cargo run --release -p hedgerow-sim --example ten_thousand [-- SIZES…]`
//!
//! Each size runs in its own child process (the binary re-runs itself with
//! `--one N`), so each peak RSS (`VmHWM`, Linux) is that size's alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use hedgerow_sim::{Churn, Cluster, ClusterConfig};

/// Simulated seconds of rest, and of churn, measured at the leader.
const WINDOW: Duration = Duration::from_secs(10);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--one") {
        let n = args.get(1).and_then(|a| a.parse().ok()).expect("--one N");
        one(n);
        return;
    }
    let sizes: Vec<usize> = if args.is_empty() {
        vec![1000, 5000, 10_000]
    } else {
        args.iter()
            .map(|a| a.parse().expect("sizes are node counts"))
            .collect()
    };
    println!(
        "| nodes | peak RSS | first leader (wall / sim) | converged (wall / sim) \
         | leader out at rest | leader out, 1 %/s churn | churn converges (sim) | wall total |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let me = std::env::current_exe().expect("own path");
    for n in sizes {
        let out = Command::new(&me)
            .args(["--one", &n.to_string()])
            .output()
            .expect("run one size");
        let text = String::from_utf8_lossy(&out.stdout);
        match text.lines().find(|l| l.starts_with('|')) {
            Some(row) if out.status.success() => println!("{row}"),
            _ => println!(
                "| {n} | failed: {} | {} |",
                out.status,
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ),
        }
    }
}

/// One size, one row.
fn one(n: usize) {
    let start = Instant::now();
    let mut cfg = ClusterConfig::new(18);
    cfg.measure_bytes = true;
    let mut c = Cluster::with_nodes(cfg, n);
    let first = c
        .run_until_true(Duration::from_secs(30), Duration::from_millis(10), |c| {
            c.first_leader_at().is_some()
        })
        .expect("a first leader");
    let first_wall = start.elapsed();
    let conv = c
        .run_until_converged(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("{n} nodes: {:?}", c.divergence()));
    let conv_wall = start.elapsed();
    let rest = leader_rate(&mut c, |_| {});
    // 1 % of the members per second, in ten steps a second; each comes
    // back as a new incarnation a second after it went.
    let mut churn = Churn::new(n as u64, (n / 1000).max(1), 10);
    let churning = leader_rate(&mut c, |c| churn.step(c));
    churn.stop(&mut c);
    let t0 = c.now_ns();
    let settled = c
        .run_until_converged(Duration::from_secs(60))
        .map(|t| format!("{:.2} s", (t - t0) as f64 / 1e9))
        .unwrap_or_else(|| "no".into());
    c.assert_no_violations();
    println!(
        "| {n} | {} | {:.1} s / {:.0} ms | {:.1} s / {:.2} s | {} | {} | {settled} | {:.0} s |",
        peak_rss(),
        first_wall.as_secs_f64(),
        first as f64 / 1e6,
        conv_wall.as_secs_f64(),
        conv as f64 / 1e9,
        rate(rest),
        rate(churning),
        start.elapsed().as_secs_f64(),
    );
}

/// Bytes per second out of the leader over [`WINDOW`], stepping 100 ms at
/// a time and calling `each` before every step.
/// A window in which the leader changed is not a leader's rate: panics.
fn leader_rate(c: &mut Cluster, mut each: impl FnMut(&mut Cluster)) -> f64 {
    let l = c.leader().expect("a leader");
    let before = c.node(l).app.sent_bytes;
    let steps = (WINDOW.as_millis() / 100) as usize;
    for _ in 0..steps {
        each(c);
        c.run_for(Duration::from_millis(100));
    }
    assert_eq!(c.leader(), Some(l), "the leader changed during the window");
    (c.node(l).app.sent_bytes - before) as f64 / WINDOW.as_secs_f64()
}

fn rate(bytes_per_s: f64) -> String {
    if bytes_per_s >= 1e6 {
        format!("{:.2} MB/s", bytes_per_s / 1e6)
    } else {
        format!("{:.1} KB/s", bytes_per_s / 1e3)
    }
}

/// This process's peak resident set (`VmHWM`), where the system tells.
fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kb| format!("{:.2} GiB", kb as f64 / (1024.0 * 1024.0)))
        .unwrap_or_else(|| "n/a".into())
}
