//! Core cost in instructions: run under callgrind twice with different
//! heartbeat counts and subtract, which cancels set-up:
//!
//! ```text
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/core-cost 1000 10000
//! ```
//!
//! `core-cost <members> <heartbeats>` builds a leader with that many
//! members, then feeds it that many heartbeats (spread over time as real
//! members would send them, so failure scans and renews happen too).

use hedgerow_benches::LeaderBench;

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let (Some(Ok(members)), Some(Ok(heartbeats))) = (args.next(), args.next()) else {
        eprintln!("usage: core-cost <members> <heartbeats>");
        std::process::exit(2);
    };
    let mut b = LeaderBench::new(members);
    for _ in 0..heartbeats {
        b.heartbeat();
    }
    println!(
        "members {members}, heartbeats {heartbeats}, outputs {}, view {}",
        b.outputs,
        b.node.view().len()
    );
}
