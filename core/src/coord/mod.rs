//! hedge's coordination services, fenced: an append-only key/value store,
//! named locks and semaphores. The store contract (what a leader writes,
//! always fenced by its lease in the same transaction) is in `store`.

mod store;

pub use store::{
    check_name, execute_coord, CoordOp, CoordReply, CoordTables, Fence, KvEntry, NameError, Origin,
    PermitRow, SemaphoreRow, COORD_SCHEMA_VERSION, MAX_KEY_LEN,
};
