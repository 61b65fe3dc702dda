//! # hedgerow-sim
//!
//! Deterministic simulation for hedgerow. This crate holds the in-process
//! harness: many [`hedgerow_core::Node`]s over a simulated network (delay,
//! drop, duplicate, reorder, partitions), a simulated lease store (CAS,
//! latency, outages, a connection limit, late-applied writes) and per-node
//! clocks whose intervals contain true time with offsets inside the bound.
//! Everything derives from one seed; a failing seed prints itself and
//! replays with `HEDGEROW_SEED=<seed>`.
//!
//! ```
//! use std::time::Duration;
//! use hedgerow_sim::{Cluster, ClusterConfig};
//! let mut c = Cluster::with_nodes(ClusterConfig::new(7), 3);
//! c.run_for(Duration::from_secs(5));
//! assert!(c.leader().is_some());
//! c.assert_no_violations();
//! ```

pub mod check;
mod churn;
mod clock;
mod cluster;
pub mod compare;
mod net;
pub mod report;
pub mod scenario;
mod seeds;
mod store;
pub mod turmoil;

pub use churn::Churn;
pub use clock::{SimClock, EPOCH_NS};
pub use cluster::{AppLog, BroadcastResult, Cluster, ClusterConfig, SimNode};
pub use net::NetConfig;
pub use seeds::{seeds, turmoil_seeds, Seeds};
pub use store::{SimStore, StoreConfig};
