//! One node on this machine, no ClockBound daemon: it leads, sends to
//! itself, broadcasts, and leaves. `cargo run -p hedgerow --example quickstart`
use std::time::Duration;

use hedgerow::clock::SystemClock;
use hedgerow::store::SqliteStore;
use hedgerow::{Config, Hedgerow};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("hedgerow-quickstart-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let node = Hedgerow::builder("quickstart", "node-1", "127.0.0.1:0")
        // Every node of the cluster shares this lease store.
        .store(SqliteStore::open(dir.join("lease.db"))?)
        // No ClockBound here: the system clock, with a bound we vouch for,
        // and leading on an assumed bound allowed explicitly.
        .clock(SystemClock::new(Duration::from_millis(50)))
        .preset(Config::local)
        .config(|c| c.lead_on_assumed_clock = true)
        .leader_handler(|req| async move { Ok(format!("handled under term {}", req.term)) })
        .broadcast_handler(|b| async move { Ok(b.payload) })
        .start()
        .await?;

    // An error naming the cause (e.g. a clock that may not lead), not a hang.
    let leader = node.wait_for_leader(Duration::from_secs(10)).await?;
    println!("{} leads under term {}", leader.id, leader.term);

    let reply = node.send("work").await?;
    println!("send: {} answered {:?}", reply.leader, reply.payload);
    for (member, answer) in node.broadcast("reload").await? {
        println!("broadcast: {member} answered {:?}", answer?);
    }

    let led = node.is_leader();
    node.leave().await?; // releases the lease, then stops
    println!("node-1 led: {led}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
