//! The lease store as its own simulated host: a small TCP server holding
//! the rows and applying compare-and-set with the core's reference
//! [`execute_on_row`], and a client ([`StoreClient`]) that nodes use as an
//! [`AsyncLeaseStore`]. Node↔store partitions and store outages are then
//! real turmoil holds and crashes.
//!
//! The coordination side (KV, locks, semaphores) lives here too: fenced
//! writes go through the core's [`execute_coord`] against the same rows,
//! and KV reads through [`CoordTables::read`], so the semantics are the
//! one definition every store shares.
//!
//! The protocol is one request and one answer per connection, each a
//! `u32` big-endian length and a postcard body ([`Request`], [`Answer`]):
//! a call that the driver cancels at its timeout leaves no half-read
//! answer behind on a shared connection. The rows live outside the host's
//! software, so they survive a crash of the store host, as a database's
//! would.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use hedgerow::runtime::BoxFuture;
use hedgerow::store::{AsyncCoordStore, AsyncLeaseStore};
use hedgerow_core::coord::{execute_coord, CoordOp, CoordReply, CoordTables, KvEntry, KvRead};
use hedgerow_core::{
    execute_on_row, CasOutcome, LeaseOp, LeaseReply, LeaseRow, LeaseWrite, OpId, StoreError,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::clock::TrueTime;

/// Port the store host listens on.
pub const STORE_PORT: u16 = 5000;
/// Largest frame either side accepts (a KV read may answer many
/// revisions at once).
const MAX_FRAME: usize = 16 << 20;

/// A store call on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request {
    /// Read the row of a group.
    Read {
        /// The group.
        group: String,
    },
    /// Compare-and-set the row of a group.
    Cas {
        /// The group.
        group: String,
        /// The version the writer last read (`None`: insert if absent).
        expected: Option<u64>,
        /// The new row.
        write: LeaseWrite,
    },
    /// A fenced coordination write (or the permits load).
    Coord {
        /// The group.
        group: String,
        /// The operation.
        op: CoordOp,
    },
    /// A KV read.
    Kv {
        /// The group.
        group: String,
        /// The read.
        read: KvRead,
    },
}

/// The store's answer on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Answer {
    /// A read's row.
    Read(Option<LeaseRow>),
    /// The write was applied; the row as stored.
    Applied(LeaseRow),
    /// The version did not match; the row as stored.
    Conflict(Option<LeaseRow>),
    /// A coordination write's answer.
    Coord(CoordReply),
    /// A KV read's revisions.
    Kv(Vec<KvEntry>),
}

/// A write the store applied, for the checkers: the row as stored and the
/// true time (ns) at which it was applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// True time of the write, ns.
    pub at_ns: u64,
    /// The row as stored.
    pub row: LeaseRow,
}

/// The rows and the log of applied writes; shared by the store host's
/// software across restarts and by the runner.
#[derive(Debug, Default)]
pub struct StoreState {
    rows: BTreeMap<String, Option<LeaseRow>>,
    /// Every applied write, in the order applied.
    pub applied: Vec<Applied>,
    /// Calls answered.
    pub calls: u64,
    /// The coordination tables of each group.
    pub coord: BTreeMap<String, CoordTables>,
    /// Deliberately broken: puts are answered as appended but not kept
    /// (the KV checker must catch it).
    pub forget_puts: bool,
}

impl StoreState {
    fn execute(&mut self, req: Request, t: u64) -> Answer {
        self.calls += 1;
        match req {
            Request::Read { group } => Answer::Read(self.rows.get(&group).cloned().flatten()),
            Request::Cas {
                group,
                expected,
                write,
            } => {
                let row = self.rows.entry(group).or_default();
                let op = LeaseOp::CompareAndSet {
                    op: OpId(0),
                    expected_version: expected,
                    write,
                };
                match execute_on_row(row, &op) {
                    LeaseReply::Cas(CasOutcome::Applied(r)) => {
                        self.applied.push(Applied {
                            at_ns: t,
                            row: r.clone(),
                        });
                        Answer::Applied(r)
                    }
                    LeaseReply::Cas(CasOutcome::Conflict(r)) => Answer::Conflict(r),
                    LeaseReply::Read(r) => Answer::Read(r),
                }
            }
            Request::Coord { group, op } => {
                let row = self.rows.get(&group).and_then(Option::as_ref);
                let tables = self.coord.entry(group).or_default();
                if self.forget_puts && matches!(op, CoordOp::Put { .. }) {
                    return Answer::Coord(execute_coord(&mut tables.clone(), row, &op));
                }
                Answer::Coord(execute_coord(tables, row, &op))
            }
            Request::Kv { group, read } => Answer::Kv(
                self.coord
                    .get(&group)
                    .map(|t| t.read(&read))
                    .unwrap_or_default(),
            ),
        }
    }

    /// The coordination tables of `group` (empty if it never wrote any).
    pub fn tables(&self, group: &str) -> CoordTables {
        self.coord.get(group).cloned().unwrap_or_default()
    }
}

async fn read_frame<S: AsyncReadExt + Unpin>(s: &mut S) -> std::io::Result<Vec<u8>> {
    let len = s.read_u32().await? as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is over the limit"),
        ));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    Ok(body)
}

async fn write_frame<S: AsyncWriteExt + Unpin>(s: &mut S, body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    s.write_u32(len).await?;
    s.write_all(body).await?;
    s.flush().await
}

/// The store host's software: accepts connections on [`STORE_PORT`] and
/// answers one call on each. Runs until the host is crashed.
pub async fn serve(
    state: Arc<Mutex<StoreState>>,
    truth: TrueTime,
) -> Result<(), Box<dyn std::error::Error>> {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", STORE_PORT)).await?;
    loop {
        let (mut s, _) = listener.accept().await?;
        let state = state.clone();
        let truth = truth.clone();
        tokio::task::spawn_local(async move {
            let Ok(body) = read_frame(&mut s).await else {
                return;
            };
            let answer = match postcard::from_bytes::<Request>(&body) {
                Ok(req) => {
                    let t = truth.now_ns();
                    state
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .execute(req, t)
                }
                Err(_) => return,
            };
            if let Ok(bytes) = postcard::to_allocvec(&answer) {
                let _ = write_frame(&mut s, &bytes).await;
            }
        });
    }
}

/// A node's client of the store host (`store:5000`), as an
/// [`AsyncLeaseStore`]: one connection per call.
#[derive(Clone, Debug)]
pub struct StoreClient {
    addr: String,
}

impl StoreClient {
    /// A client of the store at `addr` (`host:port`).
    pub fn new(addr: impl Into<String>) -> Self {
        StoreClient { addr: addr.into() }
    }

    async fn call(&self, req: Request) -> Result<Answer, StoreError> {
        let unavailable = |e: std::io::Error| StoreError::Unavailable(e.to_string());
        let mut s = turmoil::net::TcpStream::connect(self.addr.as_str())
            .await
            .map_err(unavailable)?;
        let body =
            postcard::to_allocvec(&req).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        write_frame(&mut s, &body).await.map_err(unavailable)?;
        let answer = read_frame(&mut s).await.map_err(unavailable)?;
        postcard::from_bytes(&answer).map_err(|e| StoreError::Corrupt(e.to_string()))
    }
}

impl AsyncLeaseStore for StoreClient {
    fn read<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<Option<LeaseRow>, StoreError>> {
        Box::pin(async move {
            match self
                .call(Request::Read {
                    group: group.into(),
                })
                .await?
            {
                Answer::Read(r) => Ok(r),
                other => Err(StoreError::Corrupt(format!("a read got {other:?}"))),
            }
        })
    }

    fn compare_and_set<'a>(
        &'a self,
        group: &'a str,
        expected_version: Option<u64>,
        write: &'a LeaseWrite,
    ) -> BoxFuture<'a, Result<CasOutcome, StoreError>> {
        Box::pin(async move {
            let req = Request::Cas {
                group: group.into(),
                expected: expected_version,
                write: write.clone(),
            };
            match self.call(req).await? {
                Answer::Applied(r) => Ok(CasOutcome::Applied(r)),
                Answer::Conflict(r) => Ok(CasOutcome::Conflict(r)),
                other => Err(StoreError::Corrupt(format!("a write got {other:?}"))),
            }
        })
    }

    fn coord(&self) -> Option<&dyn AsyncCoordStore> {
        Some(self)
    }
}

impl AsyncCoordStore for StoreClient {
    fn execute<'a>(
        &'a self,
        group: &'a str,
        op: &'a CoordOp,
    ) -> BoxFuture<'a, Result<CoordReply, StoreError>> {
        Box::pin(async move {
            let req = Request::Coord {
                group: group.into(),
                op: op.clone(),
            };
            match self.call(req).await? {
                Answer::Coord(reply) => Ok(reply),
                other => Err(StoreError::Corrupt(format!(
                    "a coordination write got {other:?}"
                ))),
            }
        })
    }

    fn kv_read<'a>(
        &'a self,
        group: &'a str,
        read: &'a KvRead,
    ) -> BoxFuture<'a, Result<Vec<KvEntry>, StoreError>> {
        Box::pin(async move {
            let req = Request::Kv {
                group: group.into(),
                read: read.clone(),
            };
            match self.call(req).await? {
                Answer::Kv(entries) => Ok(entries),
                other => Err(StoreError::Corrupt(format!("a KV read got {other:?}"))),
            }
        })
    }
}
