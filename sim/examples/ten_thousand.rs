//! The in-process harness at 1,000 / 5,000 / 10,000 members: peak memory,
//! wall time to the first leader and to convergence, and the leader's bytes
//! out per second at rest and under a 1 %/s churn (each second 1 % of the
//! members crash or leave and as many come back as new incarnations).
//!
//! `cargo run --release -p hedgerow-sim --example ten_thousand [-- SIZES…]`
//!
//! `HEDGEROW_VIEW_SPREAD=push|pull|relay[:FANOUT[:ABOVE]]` picks how
//! deltas reach the members (default: the node default, relayed above
//! 256 members with fanout 32). The table then also gives the
//! busiest member's bytes out, which relaying moves load to.
//!
//! Each size runs in its own child process (the binary re-runs itself with
//! `--one N`), so each peak RSS (`VmHWM`, Linux) is that size's alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use hedgerow_core::ViewSpread;
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
    println!("view spread: {:?}", spread());
    println!(
        "| nodes | peak RSS | first leader (wall / sim) | converged (wall / sim) \
         | leader out at rest | leader out, 1 %/s churn | busiest member out, churn \
         | churn converges (sim) | wall total |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let me = std::env::current_exe().expect("own path");
    for n in sizes {
        let out = Command::new(&me)
            .args(["--one", &n.to_string()])
            .output()
            .expect("run one size");
        let text = String::from_utf8_lossy(&out.stdout);
        match text.lines().find(|l| l.starts_with('|')) {
            Some(row) if out.status.success() => {
                println!("{row}");
                let err = String::from_utf8_lossy(&out.stderr);
                if let Some(k) = err.lines().find(|l| l.starts_with("leader out by kind")) {
                    println!("  {n}: {k}");
                }
            }
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
    cfg.node.view_spread = spread();
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
    let (rest, _) = leader_rate(&mut c, |_| {});
    // 1 % of the members per second, in ten steps a second; each comes
    // back as a new incarnation a second after it went.
    let mut churn = Churn::new(n as u64, (n / 1000).max(1), 10);
    let l = c.leader().expect("a leader");
    let kinds_before = c.node(l).app.sent_bytes_by_kind.clone();
    let (churning, busiest) = leader_rate(&mut c, |c| churn.step(c));
    let mut kinds: Vec<(&str, u64)> = c
        .node(l)
        .app
        .sent_bytes_by_kind
        .iter()
        .map(|(k, v)| (*k, v - kinds_before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
    kinds.sort_by_key(|(_, v)| std::cmp::Reverse(*v));
    let kinds: Vec<String> = kinds
        .iter()
        .map(|(k, v)| format!("{k} {}", rate(*v as f64 / WINDOW.as_secs_f64())))
        .collect();
    eprintln!("leader out by kind, churn: {}", kinds.join(", "));
    churn.stop(&mut c);
    let t0 = c.now_ns();
    let settled = c
        .run_until_converged(Duration::from_secs(60))
        .map(|t| format!("{:.2} s", (t - t0) as f64 / 1e9))
        .unwrap_or_else(|| "no".into());
    c.assert_no_violations();
    println!(
        "| {n} | {} | {:.1} s / {:.0} ms | {:.1} s / {:.2} s | {} | {} | {} | {settled} | {:.0} s |",
        peak_rss(),
        first_wall.as_secs_f64(),
        first as f64 / 1e6,
        conv_wall.as_secs_f64(),
        conv as f64 / 1e9,
        rate(rest),
        rate(churning),
        rate(busiest),
        start.elapsed().as_secs_f64(),
    );
}

/// Bytes per second out of the leader over [`WINDOW`], and out of the
/// busiest other node that lived through it, stepping 100 ms at a time
/// and calling `each` before every step.
/// A window in which the leader changed is not a leader's rate: panics.
fn leader_rate(c: &mut Cluster, mut each: impl FnMut(&mut Cluster)) -> (f64, f64) {
    let l = c.leader().expect("a leader");
    let sent = |c: &Cluster| -> Vec<(u64, u64)> {
        c.nodes()
            .iter()
            .map(|n| (n.node.identity().incarnation, n.app.sent_bytes))
            .collect()
    };
    let before = sent(c);
    let steps = (WINDOW.as_millis() / 100) as usize;
    for _ in 0..steps {
        each(c);
        c.run_for(Duration::from_millis(100));
    }
    assert_eq!(c.leader(), Some(l), "the leader changed during the window");
    let after = sent(c);
    let secs = WINDOW.as_secs_f64();
    let busiest = before
        .iter()
        .zip(&after)
        .enumerate()
        .filter(|(i, (b, a))| *i != l && b.0 == a.0)
        .map(|(_, (b, a))| a.1.saturating_sub(b.1))
        .max()
        .unwrap_or(0);
    (
        (after[l].1 - before[l].1) as f64 / secs,
        busiest as f64 / secs,
    )
}

/// The spread mode `HEDGEROW_VIEW_SPREAD` asks for.
fn spread() -> ViewSpread {
    match std::env::var("HEDGEROW_VIEW_SPREAD") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|e| panic!("HEDGEROW_VIEW_SPREAD: {e}")),
        Err(_) => ViewSpread::DEFAULT,
    }
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
