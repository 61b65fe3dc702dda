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
//! * The cluster port is plain TCP unless [`Builder::tls`] turns on
//!   mutual TLS ([`Tls`]); without it, it must sit on a private network
//!   (the handshake then refuses other clusters and protocol versions,
//!   nothing more).
//!
//! The quick start (`examples/quickstart.rs`, also in the README): one
//! node on this machine with no ClockBound daemon, which leads, sends to
//! itself, broadcasts and leaves.
//!
#![cfg_attr(
    all(feature = "tokio", feature = "sqlite"),
    doc = concat!("```\n", include_str!("../examples/quickstart.rs"), "```")
)]
//!
//! * A leader-only job fenced by the token: `examples/fenced_job.rs`.
//! * Other runtimes: `examples/smol.rs`, `examples/async_std.rs`
//!   (`default-features = false`); a driver of your own on
//!   `hedgerow-core` alone: that crate's `examples/custom_runtime.rs`.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `tokio` | yes | the driver on tokio |
//! | `smol`, `async-std` | no | the driver on smol or async-std (turn `default-features` off: one runtime at a time) |
//! | `sqlite` | yes | [`store::SqliteStore`], the embedded store for the processes of one machine |
//! | `postgres` | no | `store::PostgresStore`, for nodes on many machines |
//! | `conformance` | no | `store::conformance`, the suite any store must pass |
//!
//! The `hedgerow` command is the separate `hedgerow-cli` crate.
//!
//! # How a node runs
//!
//! One driver owns the core node. It sits behind a lock and runs on
//! whichever task has an input for it: its own loop task, which waits on
//! the timer and every input channel, or, when the lock is free, the task
//! making a call, the connection that read a frame or the handler that
//! finished (saving a hop to another thread). The handle's read-only
//! queries, such as [`Hedgerow::is_leader`], lock the node briefly
//! themselves. Before every call into the node the driver reads the clock
//! (a failed read becomes a reading with status Unknown, so the node steps
//! down rather than guess); it feeds the node network messages, timers,
//! store answers and your commands, and carries out what the node asks
//! for. Store calls run on the runtime's blocking
//! pool (an [`store::AsyncLeaseStore`] runs as a task instead) with a
//! timeout ([`Builder::store_timeout`]); a failure or timeout
//! reaches the node as a store error, never a panic.
//!
//! Handlers run on their own tasks, at most [`Builder::max_handlers`] at
//! once (more wait their turn), so a slow handler never delays heartbeats
//! or lease renewals. Stream handlers are bounded by the core's
//! `max_streams` and by credit flow control instead.
//!
//! # Transport
//!
//! * One persistent TCP connection per peer pair, dialed on the first
//!   message to a peer and reused for its replies. If two nodes dial each
//!   other at once both connections stay: each side sends on the first one
//!   it had and receives on both, which keeps every direction in order.
//! * A hello in each direction first: another cluster, no common protocol
//!   version or our own id is refused with a reason (logged on both sides)
//!   and the connection closed. Handshakes time out
//!   ([`Builder::handshake_timeout`]), at most
//!   [`Builder::max_handshakes`] run at once and at most
//!   [`Builder::max_handshakes_per_ip`] of them from one address.
//!   Established inbound connections are capped
//!   ([`Builder::max_inbound`]), and a connection with no bytes either way
//!   for [`Builder::idle_timeout`] is closed (links to the leader carry
//!   heartbeats; an idle link between members is dialed again when next
//!   needed).
//! * Frames are a `u32` length prefix and a postcard body; the length is
//!   checked against `max_frame_len`, and a bad frame closes only that
//!   connection. A body is read as it arrives, into a buffer that grows
//!   only by what the node's frame budget grants
//!   ([`Builder::frame_budget`], 32 MiB by default, shared by every
//!   connection; members of the view come before strangers): a
//!   connection that finds the budget full is not read until bytes come
//!   back, and a frame not complete within [`Builder::frame_timeout`] of
//!   its first byte closes its connection. After the hello, at most
//!   [`Builder::max_inbound_per_ip`] connections per address and one per
//!   node id (a newer one replaces the older). Every refusal is logged and
//!   counted in [`Hedgerow::transport_stats`]. Frames queued in one wake of
//!   the driver go out in one write, straight from the driver when the
//!   socket takes them without blocking; TCP_NODELAY is set.
//! * Each connection has a bounded send queue ([`Builder::send_queue`]):
//!   when a stuck peer fills it, new messages to it are dropped and logged
//!   (the protocol retries what matters). A failed dial backs off
//!   exponentially with jitter (50 ms to 5 s). A lost connection resets
//!   the streams with that peer.
#![deny(missing_docs)]

// One runtime at a time: the default features turn tokio on, so a second
// runtime means the defaults are still on.
#[cfg(all(feature = "tokio", any(feature = "smol", feature = "async-std")))]
compile_error!(
    "hedgerow: the `smol` and `async-std` features replace the default `tokio`: \
     depend on hedgerow with `default-features = false`, e.g. \
     `hedgerow = { version = \"0.1\", default-features = false, features = [\"smol\", \"sqlite\"] }`"
);
#[cfg(not(any(feature = "tokio", feature = "smol", feature = "async-std")))]
compile_error!(
    "hedgerow needs a runtime feature: `tokio` (in the default features), `smol` or `async-std`; \
     with `default-features = false`, add one, e.g. `features = [\"tokio\", \"sqlite\"]`"
);

mod api;
pub mod coord;
mod driver;
mod input;
pub mod metrics;
pub mod runtime;
pub mod store;
mod stream;
pub mod tls;
mod transport;
mod types;

/// The clocks (`hedgerow-clock`): ClockBound, the system clock with an
/// assumed bound, a manual clock, and [`clock::Clock`] for your own.
pub use hedgerow_clock as clock;

pub use api::{BroadcastReplies, Builder, Hedgerow, Watch};
/// The type of [`Member::meta`] as the view carries it (it derefs to
/// `[u8]`; `into_bytes()` gives a [`Bytes`]). Every other payload in this
/// API is a [`Bytes`].
pub use hedgerow_core::Payload;
pub use hedgerow_core::{
    Bytes, Config, ConfigError, InvalidId, LeaderInfo, LeaveReason, Member, MemberChange,
    MetaTooLarge, NodeId, NodeStats, NotLeadingReason, NotReadyReason, StepDownReason, Term,
    ViewSpread,
};
pub use stream::{BroadcastStream, IncomingStream, SendStream};
pub use tls::{Tls, TlsError};
/// The accepting handshake over bytes in memory, for the fuzz bodies.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub use transport::FuzzAcceptor;
pub use transport::TransportStats;
pub use types::{BroadcastRequest, Error, LeaderGuard, Reply, Request, Status, WatchEvent};
