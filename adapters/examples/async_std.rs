//! A node on async-std, watching its own election: build with
//! `default-features = false` and the `async-std` feature (async-std is
//! discontinued upstream; it shares smol's async-io path here).
//! `cargo run -p hedgerow --no-default-features --features async-std --example async_std`
use std::time::Duration;

use futures::StreamExt;
use hedgerow::clock::SystemClock;
use hedgerow::runtime::AsyncStdRuntime;
use hedgerow::store::MemoryStore;
use hedgerow::{Builder, Config, WatchEvent};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    async_std::task::block_on(async {
        // The runtime named explicitly (the builder would find it too).
        let node = Builder::<AsyncStdRuntime>::new("async-std-example", "node-1", "127.0.0.1:0")
            .store(MemoryStore::new())
            .clock(SystemClock::new(Duration::from_millis(50)))
            .preset(Config::local)
            .config(|c| c.lead_on_assumed_clock = true)
            .start()
            .await?;
        let mut events = node.watch();
        // The first event is the state as the watch began.
        while let Some(event) = events.next().await {
            println!("{event:?}");
            if let WatchEvent::Elected { term } = event {
                println!("elected under term {term}");
                break;
            }
        }
        node.leave().await?;
        Ok(())
    })
}
