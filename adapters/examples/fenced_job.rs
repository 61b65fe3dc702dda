//! A job only the leader runs, fenced by the lease's token: each write to
//! the downstream system carries the term it was made under, and the
//! downstream refuses a term lower than one it has seen, so a deposed
//! leader that has not noticed yet cannot overwrite its successor's work.
//! `cargo run -p hedgerow --example fenced_job`
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hedgerow::clock::SystemClock;
use hedgerow::store::SqliteStore;
use hedgerow::{Config, Hedgerow, LeaderGuard, Term};

/// The downstream system: it remembers the highest token it has seen.
#[derive(Default)]
struct Downstream {
    highest: Mutex<Option<Term>>,
}

impl Downstream {
    fn write(&self, token: Term, what: &str) -> Result<(), String> {
        let mut highest = self.highest.lock().map_err(|_| "poisoned")?;
        if highest.is_some_and(|h| token < h) {
            return Err(format!(
                "refused {what:?}: token {token} is older than {highest:?}"
            ));
        }
        *highest = Some(token);
        println!("stored {what:?} under token {token}");
        Ok(())
    }
}

/// Runs the job while `guard`'s leadership lasts, at most `rounds` times.
async fn run_job(guard: LeaderGuard, downstream: &Downstream, rounds: u32) -> Result<(), String> {
    for round in 0..rounds {
        if !guard.is_current() {
            println!("leadership under {} ended; stopping", guard.term());
            return Ok(());
        }
        downstream.write(guard.term(), &format!("batch {round}"))?;
        tokio::select! {
            _ = guard.lost() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("hedgerow-fenced-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let node = Hedgerow::builder("fenced-job", "worker-1", "127.0.0.1:0")
        .store(SqliteStore::open(dir.join("lease.db"))?)
        .clock(SystemClock::new(Duration::from_millis(50)))
        .preset(Config::local)
        .config(|c| c.lead_on_assumed_clock = true)
        .start()
        .await?;
    let downstream = Arc::new(Downstream::default());
    node.wait_for_leader(Duration::from_secs(10)).await?;
    match node.leader_guard().await {
        Some(guard) => run_job(guard, &downstream, 5).await?,
        None => println!("another node leads; this one does not run the job"),
    }
    // A write under an older token, as a deposed leader would make it:
    if let Err(why) = downstream.write(Term(0), "stale batch") {
        println!("{why}");
    }
    node.leave().await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
