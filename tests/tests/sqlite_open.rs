//! Processes started together on a new SQLite file, as a compose file or
//! a set of systemd units starts them: five `hedgerow node`s a few
//! milliseconds apart, twenty rounds, each on a fresh file. None may exit
//! (opening the file races for the WAL switch and the table's creation),
//! and in every round all five agree on one leader.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use hedgerow_tests::{agreement, log_tails, one_at_a_time, status, temp_dir, Node, NodeCommand};

const HEDGEROW: &str = env!("CARGO_BIN_EXE_hedgerow-under-test");
const ROUNDS: usize = 20;
const NODES: usize = 5;
/// Between two starts within a round.
const APART: Duration = Duration::from_millis(3);

#[test]
fn five_processes_opening_a_fresh_file_together_all_start_and_agree() {
    let _serial = one_at_a_time();
    for round in 0..ROUNDS {
        let dir = temp_dir();
        let store = format!("sqlite:{}", dir.path().join("lease.db").display());
        let starts: Vec<_> = (0..NODES)
            .map(|i| {
                let id = format!("n{i}");
                let log = File::create(dir.path().join(format!("{id}.log"))).unwrap();
                let command = NodeCommand::new(Path::new(HEDGEROW), "open-race", &id, &store)
                    .args(["--clock", "system", "--clock-bound-ms", "5"])
                    .args(["--preset", "local", "--lease-ms", "1500"])
                    .args(["--heartbeat-ms", "100", "--failure-timeout-ms", "400"])
                    .env("RUST_LOG", "info")
                    .log_to(log);
                std::thread::sleep(APART);
                std::thread::spawn(move || command.start(Duration::from_secs(30)))
            })
            .collect();
        let nodes: Vec<Node> = starts
            .into_iter()
            .map(|s| {
                s.join().unwrap().unwrap_or_else(|why| {
                    panic!(
                        "round {round}: a node did not start: {why}\n{}",
                        log_tails(dir.path(), 20)
                    )
                })
            })
            .collect();
        let want: BTreeSet<String> = nodes.iter().map(|n| n.id.clone()).collect();
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let last: Vec<_> = nodes.iter().map(|n| status(n.http)).collect();
            if agreement(&last, &want, 0).is_some() {
                break;
            }
            assert!(
                Instant::now() < end,
                "round {round}: no agreement on one leader; last statuses: {last:#?}\n{}",
                log_tails(dir.path(), 20)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
