//! # hedgerow
//!
//! Membership and leader election for the instances of one service, built
//! on a lease in a shared store that stays safe under bounded clock
//! uncertainty, plus send-to-leader, broadcast and streams between them.
//! This crate is the facade over the sans-IO [`hedgerow_core`]: one driver
//! ([`Hedgerow`]) runs a node over an async runtime ([`runtime`]) with a
//! TCP transport, and the lease lives in a [`store`].
//!
//! * Runtimes are features: `tokio` (default), `smol`, `async-std`
//!   (discontinued upstream; smol and async-std share the async-io path).
//! * Stores: [`store::MemoryStore`] (tests, one process), SQLite (default)
//!   and PostgreSQL.
//! * The cluster port must sit on a private network: there is no
//!   encryption or authentication yet (a handshake refuses other clusters
//!   and protocol versions, nothing more).
//!
//! ```no_run
//! # #[cfg(all(feature = "tokio", feature = "sqlite"))]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use hedgerow::Hedgerow;
//! use hedgerow::store::SqliteStore;
//! use futures::StreamExt;
//!
//! let node = Hedgerow::builder("orders", "web-1", "10.0.0.5:7946")
//!     .listen("0.0.0.0:7946")
//!     .store(SqliteStore::open("/var/lib/orders/lease.db")?)
//!     .leader_handler(|req| async move { Ok(format!("handled under term {}", req.term).into_bytes()) })
//!     .broadcast_handler(|b| async move { Ok(b.payload) })
//!     .start()
//!     .await?;
//! let mut changes = node.watch();
//! if node.is_leader() { /* do leader work, fenced by node.term() */ }
//! let reply = node.send(b"work".to_vec()).await?;
//! let replies = node.broadcast(b"reload".to_vec()).await;
//! while let Some(change) = changes.next().await { println!("{change:?}"); }
//! node.leave().await?;
//! # Ok(()) }
//! ```
//!
//! Handlers run on their own tasks, a bounded number at once, so a slow
//! handler never delays heartbeats or lease renewals.
#![deny(missing_docs)]

mod api;
mod driver;
pub mod runtime;
pub mod store;
mod transport;

pub use api::{
    BroadcastReplies, BroadcastRequest, BroadcastStream, Builder, Error, Hedgerow, IncomingStream,
    Reply, Request, SendStream, Watch, WatchEvent,
};
pub use hedgerow_core::{Config, LeaderInfo, Member, NodeId, NodeStats, Term};
