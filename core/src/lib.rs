//! # hedgerow-core
//!
//! The sans-IO heart of hedgerow: leader election as a lease under bounded
//! clock uncertainty, leader-authored membership views, send-to-leader,
//! broadcast and streams, and the wire codec. No async, no sockets, no
//! clock reads, no threads, no randomness of its own: the driver passes
//! time in, carries [`Output`]s out, and the same inputs and seed give the
//! same outputs.
//!
//! ```
//! use hedgerow_core::*;
//! let me = Identity { id: NodeId::new("a").unwrap(), addr: "127.0.0.1:7000".into(), incarnation: 1 };
//! let mut node = Node::new(Config::local("demo"), me, 42).unwrap();
//! let now = Now { mono: MonoTime::from_nanos(0), clock: ClockReading::synchronized(1_700_000_000_000_000_000, 1_000_000) };
//! node.handle(now, Input::Tick);
//! // The node first reads the lease row, after a small start-up jitter.
//! let wake = node.poll_timeout().unwrap();
//! node.handle(Now { mono: wake, ..now }, Input::Tick);
//! assert!(matches!(node.poll(), Some(Output::Lease(LeaseOp::Read { .. }))));
//! ```
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(missing_docs)]

extern crate alloc;

mod config;
pub mod coord;
mod decode;
mod id;
mod lease;
mod membership;
mod messaging;
mod node;
mod payload;
mod rng;
mod store;
mod stream;
mod time;
mod view;
pub mod wire;

pub use bytes::Bytes;
pub use config::{Config, ConfigError, DEFAULT_MAX_FRAME_LEN};
pub use decode::DecodeError;
pub use id::{Identity, InvalidId, NodeId, Term, MAX_ADDR_LEN, MAX_NODE_ID_LEN};
pub use lease::{NotLeadingReason, StepDownReason};
pub use messaging::{BroadcastError, BroadcastId, RequestId, SendError, SendReply};
pub use node::{
    BroadcastHandle, Event, Input, LeaderInfo, MetaTooLarge, Node, NodeStats, Output,
    RequestHandle, StreamTarget, Timer,
};
pub use payload::Payload;
pub use rng::Rng;
pub use store::{
    execute_on_row, CasOutcome, Holder, LeaseOp, LeaseReply, LeaseRow, LeaseWrite, OpId,
    StoreError, LEASE_SCHEMA_VERSION,
};
pub use stream::{StreamError, StreamId};
pub use time::{
    duration_nanos, ClockReading, ClockSource, ClockStatus, MonoTime, Now, TimeInterval,
};
pub use view::{Change, LeaveReason, Member, MemberChange, View};
pub use wire::{EncodeError, HandshakeError, Hello, Message};
