//! # hedgerow-core
//!
//! The sans-IO heart of hedgerow: leader election as a lease under bounded
//! clock uncertainty, leader-authored membership views, send-to-leader,
//! broadcast and streams, and the wire codec. No async, no sockets, no
//! clock reads, no threads, no randomness of its own.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(missing_docs)]

extern crate alloc;

mod id;
mod rng;
mod store;
mod time;

pub use id::{Identity, InvalidId, NodeId, Term, MAX_ADDR_LEN, MAX_NODE_ID_LEN};
pub use rng::Rng;
pub use store::{
    CasOutcome, Holder, LeaseOp, LeaseReply, LeaseRow, LeaseWrite, OpId, StoreError,
    LEASE_SCHEMA_VERSION,
};
pub use time::{duration_nanos, ClockReading, ClockSource, ClockStatus, MonoTime, Now, TimeInterval};
