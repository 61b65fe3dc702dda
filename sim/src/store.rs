//! The simulated lease store: one row, compare-and-set applied atomically
//! at the instant the operation arrives, its own latency, outages, a
//! per-node cut, a connection limit, and the ability to apply a write late
//! (after the caller gave up on it) to exercise the stale-renew race.

use std::time::Duration;

use hedgerow_core::coord::{execute_coord, CoordOp, CoordReply, CoordTables};
use hedgerow_core::{LeaseOp, LeaseReply, LeaseRow, StoreError};

/// Store behaviour.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreConfig {
    /// Shortest one-way latency to the store.
    pub latency_min: Duration,
    /// Longest one-way latency to the store.
    pub latency_max: Duration,
    /// How long a driver waits for an answer before reporting a timeout.
    pub op_timeout: Duration,
    /// Operations in flight at once before the store refuses more (like
    /// PostgreSQL's connection limit; default 100).
    pub max_connections: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            latency_min: Duration::from_micros(500),
            latency_max: Duration::from_millis(3),
            op_timeout: Duration::from_secs(1),
            max_connections: 100,
        }
    }
}

/// The store's row and counters.
#[derive(Debug, Default)]
pub struct SimStore {
    pub(crate) cfg: StoreConfig,
    pub(crate) row: Option<LeaseRow>,
    /// The coordination tables (KV log, semaphores, permits).
    pub(crate) coord: CoordTables,
    pub(crate) down: bool,
    pub(crate) in_flight: usize,
    /// Most operations in flight at once.
    pub peak_in_flight: usize,
    /// Operations refused for the connection limit.
    pub refused: u64,
    /// Operations executed.
    pub ops: u64,
    /// Extra one-way delay added while a spike lasts.
    pub(crate) spike: Duration,
}

impl SimStore {
    pub(crate) fn new(cfg: StoreConfig) -> Self {
        SimStore {
            cfg,
            ..SimStore::default()
        }
    }

    /// The row as stored now.
    pub fn row(&self) -> Option<&LeaseRow> {
        self.row.as_ref()
    }

    /// The coordination tables as stored now.
    pub fn coord(&self) -> &CoordTables {
        &self.coord
    }

    /// Executes one coordination operation atomically, fenced by the row.
    pub(crate) fn execute_coord(&mut self, op: &CoordOp) -> Result<CoordReply, StoreError> {
        if self.down {
            return Err(StoreError::Unavailable("store is down".into()));
        }
        self.ops += 1;
        Ok(execute_coord(&mut self.coord, self.row.as_ref(), op))
    }

    /// Executes one operation atomically.
    pub(crate) fn execute(&mut self, op: &LeaseOp) -> Result<LeaseReply, StoreError> {
        if self.down {
            return Err(StoreError::Unavailable("store is down".into()));
        }
        self.ops += 1;
        Ok(hedgerow_core::execute_on_row(&mut self.row, op))
    }
}
