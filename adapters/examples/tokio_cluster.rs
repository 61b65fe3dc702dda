//! Three nodes in one tokio process sharing a SQLite lease: wait for the
//! full view, broadcast to it, then the leader leaves and another takes
//! over. Prints how long the hand-over took.
//! `cargo run -p hedgerow --example tokio_cluster`
use std::time::{Duration, Instant};

use hedgerow::clock::SystemClock;
use hedgerow::store::SqliteStore;
use hedgerow::{Config, Hedgerow};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("hedgerow-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        let node = Hedgerow::builder("tokio-cluster", name, "127.0.0.1:0")
            .store(SqliteStore::open(dir.join("lease.db"))?)
            .clock(SystemClock::new(Duration::from_millis(5)))
            .preset(Config::local)
            .config(|c| c.lead_on_assumed_clock = true)
            .broadcast_handler(move |b| async move {
                Ok(format!(
                    "{name} got {}",
                    String::from_utf8_lossy(&b.payload)
                ))
            })
            .start()
            .await?;
        nodes.push(node);
    }
    let leader = nodes[0].wait_for_leader(Duration::from_secs(10)).await?;
    println!("{} leads under term {}", leader.id, leader.term);

    // A broadcast goes to the view as it is: wait until it holds all three.
    nodes[0]
        .wait_for_members(3, Duration::from_secs(10))
        .await?;
    for (member, answer) in nodes[0].broadcast("hello").await? {
        println!("{member}: {:?}", answer?);
    }

    let (gone, rest): (Vec<_>, Vec<_>) = nodes.into_iter().partition(|n| *n.id() == leader.id);
    let left = Instant::now();
    for node in &gone {
        node.leave().await?;
    }
    let next = loop {
        let found = rest[0].wait_for_leader(Duration::from_secs(10)).await?;
        if found.id != leader.id {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    println!(
        "{} took over under term {} {:?} after the leave",
        next.id,
        next.term,
        left.elapsed()
    );
    for node in &rest {
        node.leave().await?;
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
