//! # hedgerow-core
//!
//! The sans-IO heart of hedgerow: leader election as a lease under bounded
//! clock uncertainty, leader-authored membership views, send-to-leader,
//! broadcast and streams, and the wire codec. No async, no sockets, no
//! clock reads, no threads, no randomness of its own: the driver passes
//! time in, carries [`Output`]s out, and the same inputs and seed give the
//! same outputs.
//!
//! Most users want the `hedgerow` crate, which drives this machine on
//! tokio, smol or async-std. Use this crate alone to embed hedgerow in
//! another runtime or event loop, or to simulate clusters.
//!
//! # The driver contract
//!
//! A driver owns one [`Node`] and does, in a loop:
//!
//! ```text
//! loop {
//!     let now = read_clock();                     // a Now: monotonic time + clock interval
//!     node.handle(now, input);                    // Input::Tick, Message, Lease, PeerLost
//!     while let Some(out) = node.poll() {         // drain until None, after EVERY call
//!         match out {
//!             Output::Transmit { to, addr, msg } => send(to, addr, msg),
//!             Output::Lease(op) => run_on_store(op), // answer later with Input::Lease
//!             Output::Event(ev) => tell_the_app(ev),
//!             _ => {}                              // #[non_exhaustive]
//!         }
//!     }
//!     sleep_until(node.poll_timeout());           // then handle(now, Input::Tick)
//! }
//! ```
//!
//! What each part requires:
//!
//! * **Drain after every call.** After [`Node::handle`] and after every
//!   command ([`Node::send`], [`Node::broadcast`], [`Node::reply`],
//!   [`Node::resign`], [`Node::leave`], the stream verbs, …) call
//!   [`Node::poll`] until it returns `None` (or [`Node::poll_into`], which
//!   moves them all into the driver's buffer at once). Inputs that arrive
//!   together (the frames of one read) may go in one [`Node::handle_all`],
//!   and answers in one [`Node::reply_all`]: the same as one call each,
//!   with the housekeeping run once. Outputs queue up until then;
//!   a driver that drains late only delays them, one that never drains
//!   never sends a heartbeat.
//! * **Time.** Every call takes a [`Now`]: a monotonic instant and a clock
//!   reading `[earliest, latest]` that must contain true time (ClockBound,
//!   or an operator-assumed bound marked [`ClockSource::Assumed`]). A
//!   monotonic time that goes backwards is clamped. If the clock cannot be
//!   read, pass a reading with status [`ClockStatus::Unknown`]: the node
//!   steps down rather than guess.
//! * **Timers.** [`Node::poll_timeout`] is the latest instant (on the
//!   monotonic clock) at which to call `handle(now, Input::Tick)`. Ticking
//!   early or more often is harmless.
//! * **The lease store.** Run each [`Output::Lease`] operation against the
//!   one row the cluster shares, with compare-and-set semantics exactly as
//!   [`execute_on_row`] defines them, and answer with [`Input::Lease`]
//!   carrying the same [`OpId`]. A failure or a timeout is an answer too
//!   ([`StoreError`]); never drop an operation without answering, or the
//!   node waits for it until its own store timeout. The node keeps at most
//!   one operation in flight and ignores stale answers.
//! * **Messages.** Carry each [`Output::Transmit`] to `to` (dial `addr`
//!   when not connected; `addr = None` means "reply on the connection the
//!   peer opened"). Hand received messages in with [`Input::Message`], with
//!   `from` set to the id the peer proved in its [`Hello`] handshake
//!   ([`Hello::negotiate`] checks cluster, protocol version and that the
//!   peer is not using our own id); never trust an id from a message body.
//! * **What the transport may do.** It may drop, delay, duplicate or
//!   reorder messages *between* connections: heartbeats and requests are
//!   retried, requests are deduplicated, views heal by delta or snapshot.
//!   Within one connection it must keep order and must not drop or
//!   duplicate silently: streams rely on an ordered per-peer connection
//!   and treat a gap as a reset. When a connection is lost (or the peer
//!   comes back with a new incarnation), report [`Input::PeerLost`]: the
//!   node resets the streams with that peer.
//! * **Events** ([`Output::Event`]) are for the application; requests and
//!   broadcasts delivered as events expect [`Node::reply`] /
//!   [`Node::reply_broadcast`] with the handle they came with, or the
//!   sender times out.
//!
//! `examples/custom_runtime.rs` is a complete driver: three nodes on one
//! thread, a `HashMap` as the network, a lease row in memory.
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

mod by_id;
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
mod seeded;
mod spread;
mod store;
mod stream;
mod time;
mod view;
pub mod wire;

pub use by_id::ById;
pub use bytes::Bytes;
pub use config::{Config, ConfigError, ViewSpread, DEFAULT_MAX_FRAME_LEN};
pub use decode::DecodeError;
pub use id::{Identity, InvalidId, NodeId, Term, MAX_ADDR_LEN, MAX_NODE_ID_LEN};
pub use lease::{NotLeadingReason, StepDownReason};
pub use messaging::{BroadcastError, BroadcastId, RequestId, SendError, SendReply};
pub use node::{
    BroadcastHandle, Event, Input, LeaderInfo, MetaTooLarge, Node, NodeStats, NotReadyReason,
    Output, RequestHandle, StreamTarget, Timer,
};
pub use payload::Payload;
pub use rng::Rng;
#[cfg(feature = "model-check")]
pub use seeded::SeededBug;
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
