//! hedge's coordination services, fenced: an append-only key/value store,
//! named locks and semaphores, on top of the lease.
//!
//! * `store`: the contract with a store, the fenced writes the leader asks
//!   for and one in-memory definition of them;
//! * `calls`: what members ask of the leader, and its answers;
//! * `leader`: what the leader decides (grants, queues, expiries, which
//!   writes to issue), one leadership at a time;
//! * `member`: the permits a node holds, valid only on a fresh reading.
//!
//! The node (`node/coord.rs`) wires them to the lease, the heartbeats and
//! the request path.

mod calls;
pub(crate) mod leader;
pub(crate) mod member;
mod store;

pub use calls::{CoordAnswer, CoordCall, CoordRefusal};
pub use member::HeldPermit;
#[cfg(feature = "model-check")]
pub use store::execute_coord_seeded;
pub use store::{
    check_name, execute_coord, CoordOp, CoordReply, CoordTables, Fence, KvEntry, KvRead, NameError,
    Origin, PermitRow, SemaphoreRow, COORD_SCHEMA_VERSION, MAX_KEY_LEN, MAX_VALUE_LEN,
};
