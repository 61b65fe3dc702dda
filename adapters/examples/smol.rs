//! One node on smol: build with `default-features = false` and the `smol`
//! feature. `cargo run -p hedgerow --no-default-features --features smol --example smol`
use std::time::Duration;

use hedgerow::clock::SystemClock;
use hedgerow::store::MemoryStore;
use hedgerow::{Config, Hedgerow};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    smol::block_on(async {
        // `Hedgerow::builder` runs on smol's global executor when `smol` is
        // the only runtime feature.
        let node = Hedgerow::builder("smol-example", "node-1", "127.0.0.1:0")
            .store(MemoryStore::new()) // one process only; use SQLite or PostgreSQL across processes
            .clock(SystemClock::new(Duration::from_millis(50)))
            .preset(Config::local)
            .config(|c| c.lead_on_assumed_clock = true)
            .leader_handler(|req| async move { Ok(req.payload) })
            .start()
            .await?;
        let leader = node.wait_for_leader(Duration::from_secs(10)).await?;
        let reply = node.send("ping over smol").await?;
        println!(
            "{} (term {}) echoed {:?}",
            leader.id, leader.term, reply.payload
        );
        node.leave().await?;
        Ok(())
    })
}
