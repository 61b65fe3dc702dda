//! Leader RSS under hostile connections, for BENCHMARKS.md: for each
//! `hedgerow` binary given (say one built before the frame budget and one
//! after) and each connection count, a node leads alone on a fresh SQLite
//! file, that many connections from `--sources` loopback addresses say a
//! valid hello, announce a 4 MiB frame and send `--body-kib` of it, and
//! hold. Prints one markdown table: idle RSS, peak RSS while they hold,
//! whether the node still led and answered `/v1/status`, and RSS 15 s after
//! they closed.
//!
//! ```text
//! cargo run --release -p hedgerow-tests --bin hostile-rss-bench -- \
//!     --bin before=/path/to/old/hedgerow --bin after=target/release/hedgerow \
//!     --counts 0,100,1000,2000 --sources 1 --body-kib 256
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use hedgerow_tests::hostile::{attack, open_files_limit, rss_kib, Attack};
use hedgerow_tests::{status, temp_dir, wait_until, NodeCommand};

const CLUSTER: &str = "rss-bench";

struct Args {
    bins: Vec<(String, String)>,
    counts: Vec<usize>,
    sources: usize,
    body_kib: usize,
    settle: Duration,
}

fn args() -> Args {
    let mut a = Args {
        bins: Vec::new(),
        counts: vec![0, 100, 1000, 2000],
        sources: 1,
        body_kib: 256,
        settle: Duration::from_secs(15),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--bin" => {
                let (name, path) = value.split_once('=').expect("--bin NAME=PATH");
                a.bins.push((name.to_owned(), path.to_owned()));
            }
            "--counts" => a.counts = value.split(',').map(|n| n.parse().unwrap()).collect(),
            "--sources" => a.sources = value.parse().unwrap(),
            "--body-kib" => a.body_kib = value.parse().unwrap(),
            "--settle-s" => a.settle = Duration::from_secs(value.parse().unwrap()),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(!a.bins.is_empty(), "give at least one --bin NAME=PATH");
    a
}

struct Row {
    idle: u64,
    held: usize,
    peak: u64,
    led: bool,
    answered: bool,
    after: u64,
}

fn measure(bin: &str, count: usize, a: &Args) -> Row {
    let dir = temp_dir();
    let store = format!("sqlite:{}", dir.path().join("lease.db").display());
    let node = NodeCommand::new(Path::new(bin), CLUSTER, "leader", &store)
        .args(["--clock", "system", "--clock-bound-ms", "5"])
        // The lan preset, with a failure timeout (and so an idle timeout,
        // three times it) long enough that the attackers are not closed
        // as idle while they hold.
        .args(["--preset", "lan", "--failure-timeout-ms", "5000"])
        .start(Duration::from_secs(20))
        .unwrap_or_else(|why| panic!("{why}"));
    let leads = || status(node.http).is_some_and(|s| s["is_leader"].as_bool() == Some(true));
    assert!(wait_until(
        Duration::from_secs(10),
        Duration::from_millis(50),
        leads
    ));
    std::thread::sleep(Duration::from_millis(500));
    let pid = node.process.id();
    let idle = rss_kib(pid).unwrap_or(0);
    let held = attack(
        node.addr,
        Attack {
            cluster: CLUSTER,
            connections: count,
            sources: a.sources,
            body: a.body_kib * 1024,
        },
    );
    let mut peak = idle;
    let (mut led, mut answered) = (true, true);
    for _ in 0..30 {
        peak = peak.max(rss_kib(pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..5 {
        let st = status(node.http);
        answered &= st.is_some();
        led &= st.is_some_and(|s| s["is_leader"].as_bool() == Some(true));
        peak = peak.max(rss_kib(pid).unwrap_or(0));
    }
    let took = held.len();
    drop(held);
    std::thread::sleep(a.settle);
    let after = rss_kib(pid).unwrap_or(0);
    Row {
        idle,
        held: took,
        peak,
        led,
        answered,
        after,
    }
}

fn mb(kib: u64) -> String {
    format!("{:.0} MB", kib as f64 / 1024.0)
}

fn main() {
    let a = args();
    let files = open_files_limit().unwrap_or(1024);
    let most = a.counts.iter().copied().max().unwrap_or(0) as u64;
    assert!(
        files > 2 * most + 200,
        "open files limit {files} is too low for {most} connections (run `ulimit -n {}` first)",
        2 * most + 200
    );
    println!(
        "| binary | hostile connections ({} source address(es), {} KiB of body each) | taken | idle RSS | peak RSS | led and answered /v1/status | RSS {} s after they closed |",
        a.sources,
        a.body_kib,
        a.settle.as_secs()
    );
    println!("|---|---|---|---|---|---|---|");
    for count in &a.counts {
        for (name, bin) in &a.bins {
            let r = measure(bin, *count, &a);
            println!(
                "| {name} | {count} | {} | {} | {} | {} | {} |",
                r.held,
                mb(r.idle),
                mb(r.peak),
                if r.led && r.answered { "yes" } else { "no" },
                mb(r.after)
            );
        }
    }
}
