//! The contract between the coordination services and a store: the fenced
//! writes a leader asks for ([`CoordOp`]), their answers ([`CoordReply`]),
//! the rows kept ([`KvEntry`], [`PermitRow`], [`SemaphoreRow`]), and one
//! in-memory definition of what every store must do
//! ([`execute_coord`]), used by the memory store, the simulators and the
//! conformance suite. Nothing here talks to a store.
//!
//! Every write is **fenced**: it applies only if the lease row still names
//! the writer (`token = fence.token AND holder nonce = fence.nonce`), in the
//! same transaction as the write. A deposed or paused leader's write is
//! refused by the store itself, whatever that leader's clock says.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Serialize};

use crate::id::{NodeId, Term};
use crate::payload::Payload;
use crate::seeded::SeededBug;
use crate::store::{LeaseRow, OpId};

/// Schema version of the coordination tables; stores record it next to the
/// lease's so that a future layout change is detected instead of misread.
pub const COORD_SCHEMA_VERSION: u32 = 1;

/// Longest key or semaphore/lock name, in bytes.
pub const MAX_KEY_LEN: usize = 512;

/// Largest KV value, in bytes. Values travel in one frame to the leader
/// and are kept forever (the log is append-only): bulk data belongs in a
/// stream or a blob store, with its address here.
pub const MAX_VALUE_LEN: usize = 256 * 1024;

/// The lease a write is conditioned on: the writer's term and lease nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fence {
    /// The lease row's token must equal this.
    pub token: Term,
    /// The lease row's holder nonce must equal this.
    pub nonce: u64,
}

impl Fence {
    /// Whether `row` still names this fence's writer.
    pub fn holds(&self, row: Option<&LeaseRow>) -> bool {
        row.is_some_and(|r| {
            r.token == self.token && r.holder.as_ref().is_some_and(|h| h.nonce == self.nonce)
        })
    }
}

/// Who asked for a put: the dedupe key that makes a put at-most-once across
/// retries and failovers (the store refuses a second row with one origin).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Origin {
    /// The node that called `put`.
    pub node: NodeId,
    /// Its incarnation.
    pub incarnation: u64,
    /// Its request id (unique per incarnation).
    pub request: u64,
}

/// One revision of a key. Revisions are global per cluster and strictly
/// increasing in commit order, as in etcd: a watcher resumes from the last
/// revision it saw.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KvEntry {
    /// The key.
    pub key: String,
    /// The revision this put created.
    pub revision: u64,
    /// The value.
    pub value: Payload,
    /// The leader's term that wrote it.
    pub term: Term,
    /// Who asked for it.
    pub origin: Origin,
}

/// A granted permit, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PermitRow {
    /// The semaphore (or lock) name.
    pub name: String,
    /// The permit's token: strictly increasing per name (a lock's fencing
    /// token).
    pub token: u64,
    /// The holder's node id.
    pub holder: NodeId,
    /// The holder's incarnation: a restarted holder is another holder.
    pub incarnation: u64,
    /// The holder's ticket (the id of its acquire), so a retried grant is
    /// recognised instead of granted twice.
    pub ticket: u64,
    /// Unix ns (ClockBound time) until which the grant was valid when it
    /// was written. Renewals are not written: see the permit rule in
    /// ARCHITECTURE.md.
    pub expires_ns: u64,
}

/// A semaphore's settings, kept while any permit of it exists and after,
/// so its token never goes back.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SemaphoreRow {
    /// The name.
    pub name: String,
    /// How many permits may be held at once.
    pub limit: u32,
    /// The last token granted (0: none yet).
    pub last_token: u64,
}

/// A fenced write (or a read) the leader's coordination services ask for.
/// Answer with [`crate::Input::Coord`] carrying the same [`OpId`].
/// Serializable, for a store reached over a wire (the simulator's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordOp {
    /// Append `value` as a new revision of `key`, unless a row with
    /// `origin` exists (then answer with that row's revision).
    Put {
        /// The operation id to answer with.
        op: OpId,
        /// The lease the write is conditioned on.
        fence: Fence,
        /// The dedupe key.
        origin: Origin,
        /// The key.
        key: String,
        /// The value.
        value: Payload,
    },
    /// Grant a permit of `name` to `holder`: create the semaphore row with
    /// `limit` if missing (or change its limit while no permit is held),
    /// refuse if the stored limit differs or `limit` permits are held,
    /// else store a permit with token `last_token + 1`. A permit with the
    /// same `(name, holder, incarnation, ticket)` is answered as granted
    /// again with its token.
    Grant {
        /// The operation id to answer with.
        op: OpId,
        /// The lease the write is conditioned on.
        fence: Fence,
        /// The semaphore.
        name: String,
        /// Its limit, as the caller asked.
        limit: u32,
        /// The holder.
        holder: NodeId,
        /// Its incarnation.
        incarnation: u64,
        /// Its ticket.
        ticket: u64,
        /// The grant's expiry (Unix ns).
        expires_ns: u64,
    },
    /// Delete the permit `(name, token)` (absent counts as deleted).
    Free {
        /// The operation id to answer with.
        op: OpId,
        /// The lease the write is conditioned on.
        fence: Fence,
        /// The semaphore.
        name: String,
        /// The permit's token.
        token: u64,
    },
    /// Read every semaphore and permit (a new leader does, before granting).
    LoadPermits {
        /// The operation id to answer with.
        op: OpId,
    },
}

impl CoordOp {
    /// The operation's id.
    pub fn id(&self) -> OpId {
        match self {
            CoordOp::Put { op, .. }
            | CoordOp::Grant { op, .. }
            | CoordOp::Free { op, .. }
            | CoordOp::LoadPermits { op } => *op,
        }
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            CoordOp::Put { .. } => "kv_put",
            CoordOp::Grant { .. } => "permit_grant",
            CoordOp::Free { .. } => "permit_free",
            CoordOp::LoadPermits { .. } => "permits_load",
        }
    }
}

/// What a store answers to a [`CoordOp`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordReply {
    /// The lease row no longer names the writer: nothing was written.
    Fenced,
    /// A put was appended at this revision.
    Put {
        /// The new revision.
        revision: u64,
    },
    /// A put with this origin had been appended already, at this revision.
    Duplicate {
        /// The existing revision.
        revision: u64,
    },
    /// The permit was granted (or had been, for a retried grant).
    Granted {
        /// Its token.
        token: u64,
    },
    /// `limit` permits of the semaphore are held already.
    Full {
        /// How many are held.
        held: u32,
    },
    /// The semaphore exists with another limit and permits are held.
    LimitConflict {
        /// The stored limit.
        stored: u32,
    },
    /// The permit is gone.
    Freed,
    /// Every semaphore and permit.
    Permits {
        /// The semaphores.
        semaphores: Vec<SemaphoreRow>,
        /// The permits.
        permits: Vec<PermitRow>,
    },
}

/// A KV read, which any node makes on the store directly (no leader hop).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvRead {
    /// The latest revision of a key.
    Get(String),
    /// A key at a revision.
    GetAt(String, u64),
    /// Every revision of a key, oldest first.
    History(String),
    /// The latest revision of each key with a prefix, by key.
    List(String),
    /// Revisions after a revision of keys with a prefix, oldest first, at
    /// most so many.
    Changes(String, u64, usize),
}

/// The coordination tables of one cluster, in memory: the definition of
/// what every store does, and the reads any node makes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoordTables {
    /// Every revision, in revision order.
    log: Vec<KvEntry>,
    /// Revision of each origin's put.
    origins: BTreeMap<Origin, u64>,
    semaphores: BTreeMap<String, SemaphoreRow>,
    /// Permits by `(name, token)`.
    permits: BTreeMap<(String, u64), PermitRow>,
}

impl CoordTables {
    /// The latest revision of `key`.
    pub fn get(&self, key: &str) -> Option<&KvEntry> {
        self.log.iter().rev().find(|e| e.key == key)
    }

    /// The revision `revision` of `key`, if that revision is of that key.
    pub fn get_at(&self, key: &str, revision: u64) -> Option<&KvEntry> {
        let i = self
            .log
            .binary_search_by_key(&revision, |e| e.revision)
            .ok()?;
        self.log.get(i).filter(|e| e.key == key)
    }

    /// Every revision of `key`, oldest first.
    pub fn history(&self, key: &str) -> Vec<KvEntry> {
        self.log.iter().filter(|e| e.key == key).cloned().collect()
    }

    /// The latest revision of every key starting with `prefix`, by key.
    pub fn list(&self, prefix: &str) -> Vec<KvEntry> {
        let mut latest: BTreeMap<&str, &KvEntry> = BTreeMap::new();
        for e in self.log.iter().filter(|e| e.key.starts_with(prefix)) {
            latest.insert(&e.key, e);
        }
        latest.into_values().cloned().collect()
    }

    /// Revisions after `after` of keys starting with `prefix`, oldest
    /// first, at most `limit` of them (how a watcher catches up).
    pub fn changes(&self, prefix: &str, after: u64, limit: usize) -> Vec<KvEntry> {
        let start = self.log.partition_point(|e| e.revision <= after);
        self.log[start..]
            .iter()
            .filter(|e| e.key.starts_with(prefix))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Answers `read` as [`KvRead`]'s variants say.
    pub fn read(&self, read: &KvRead) -> Vec<KvEntry> {
        match read {
            KvRead::Get(key) => self.get(key).cloned().into_iter().collect(),
            KvRead::GetAt(key, rev) => self.get_at(key, *rev).cloned().into_iter().collect(),
            KvRead::History(key) => self.history(key),
            KvRead::List(prefix) => self.list(prefix),
            KvRead::Changes(prefix, after, limit) => self.changes(prefix, *after, *limit),
        }
    }

    /// The newest revision (0: none).
    pub fn revision(&self) -> u64 {
        self.log.last().map_or(0, |e| e.revision)
    }

    /// Every stored permit, by name then token.
    pub fn permits(&self) -> impl Iterator<Item = &PermitRow> {
        self.permits.values()
    }

    /// Every stored semaphore, by name.
    pub fn semaphores(&self) -> impl Iterator<Item = &SemaphoreRow> {
        self.semaphores.values()
    }
}

/// What every store does with `op`, atomically, given the lease row at
/// that moment: the one definition of the fenced writes.
///
/// ```
/// use hedgerow_core::coord::{execute_coord, CoordOp, CoordReply, CoordTables, Fence, Origin};
/// use hedgerow_core::{Holder, LeaseRow, NodeId, OpId, Payload, Term};
/// let a = NodeId::new("a").unwrap();
/// let lease = LeaseRow { holder: Some(Holder { id: a.clone(), nonce: 7, addr: "x".into() }), token: Term(3), expires_ns: 9, version: 1 };
/// let mut t = CoordTables::default();
/// let origin = Origin { node: a.clone(), incarnation: 1, request: 1 };
/// let put = |fence| CoordOp::Put { op: OpId(1), fence, origin: origin.clone(), key: "k".into(), value: Payload::from(vec![1]) };
/// // A deposed leader (term 2) is refused; the leader's put lands once.
/// assert_eq!(execute_coord(&mut t, Some(&lease), &put(Fence { token: Term(2), nonce: 7 })), CoordReply::Fenced);
/// assert_eq!(execute_coord(&mut t, Some(&lease), &put(Fence { token: Term(3), nonce: 7 })), CoordReply::Put { revision: 1 });
/// assert_eq!(execute_coord(&mut t, Some(&lease), &put(Fence { token: Term(3), nonce: 7 })), CoordReply::Duplicate { revision: 1 });
/// ```
pub fn execute_coord(
    tables: &mut CoordTables,
    lease: Option<&LeaseRow>,
    op: &CoordOp,
) -> CoordReply {
    execute(tables, lease, op, None)
}

/// [`execute_coord`] with a deliberate store bug, or none: for the model
/// checker's tests that each property catches the bug it is there for.
#[cfg(feature = "model-check")]
pub fn execute_coord_seeded(
    tables: &mut CoordTables,
    lease: Option<&LeaseRow>,
    op: &CoordOp,
    bug: Option<SeededBug>,
) -> CoordReply {
    execute(tables, lease, op, bug)
}

fn execute(
    tables: &mut CoordTables,
    lease: Option<&LeaseRow>,
    op: &CoordOp,
    bug: Option<SeededBug>,
) -> CoordReply {
    let fenced = |fence: &Fence| !fence.holds(lease);
    match op {
        CoordOp::LoadPermits { .. } => CoordReply::Permits {
            semaphores: tables.semaphores.values().cloned().collect(),
            permits: tables.permits.values().cloned().collect(),
        },
        CoordOp::Put { fence, .. } | CoordOp::Grant { fence, .. } | CoordOp::Free { fence, .. }
            if fenced(fence) =>
        {
            CoordReply::Fenced
        }
        CoordOp::Put {
            fence,
            origin,
            key,
            value,
            ..
        } => {
            if let Some(&revision) = tables.origins.get(origin) {
                return CoordReply::Duplicate { revision };
            }
            let revision = tables.revision() + 1;
            tables.origins.insert(origin.clone(), revision);
            tables.log.push(KvEntry {
                key: key.clone(),
                revision,
                value: value.clone(),
                term: fence.token,
                origin: origin.clone(),
            });
            CoordReply::Put { revision }
        }
        CoordOp::Grant {
            name,
            limit,
            holder,
            incarnation,
            ticket,
            expires_ns,
            ..
        } => {
            let held: Vec<&PermitRow> = tables
                .permits
                .range((name.clone(), 0)..=(name.clone(), u64::MAX))
                .map(|(_, p)| p)
                .collect();
            if let Some(p) = held.iter().find(|p| {
                &p.holder == holder && p.incarnation == *incarnation && p.ticket == *ticket
            }) {
                return CoordReply::Granted { token: p.token };
            }
            let count = held.len() as u32;
            let sem = tables
                .semaphores
                .entry(name.clone())
                .or_insert_with(|| SemaphoreRow {
                    name: name.clone(),
                    limit: *limit,
                    last_token: 0,
                });
            if sem.limit != *limit {
                if count > 0 {
                    return CoordReply::LimitConflict { stored: sem.limit };
                }
                sem.limit = *limit;
            }
            if count >= sem.limit {
                return CoordReply::Full { held: count };
            }
            let token = sem.last_token + 1;
            if bug != Some(SeededBug::GrantKeepsLastToken) {
                sem.last_token = token;
            }
            tables.permits.insert(
                (name.clone(), token),
                PermitRow {
                    name: name.clone(),
                    token,
                    holder: holder.clone(),
                    incarnation: *incarnation,
                    ticket: *ticket,
                    expires_ns: *expires_ns,
                },
            );
            CoordReply::Granted { token }
        }
        CoordOp::Free { name, token, .. } => {
            tables.permits.remove(&(name.clone(), *token));
            CoordReply::Freed
        }
    }
}

/// A key or name the services refuse.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameError {
    /// Empty.
    Empty,
    /// Longer than [`MAX_KEY_LEN`].
    TooLong {
        /// Its length.
        len: usize,
    },
    /// Contains a NUL character, which PostgreSQL's `TEXT` cannot hold.
    Nul,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => f.write_str("an empty key or name"),
            NameError::TooLong { len } => {
                write!(f, "a key or name of {len} bytes exceeds {MAX_KEY_LEN}")
            }
            NameError::Nul => f.write_str("a key or name with a NUL character"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for NameError {}

/// Checks a key, semaphore or lock name.
pub fn check_name(name: &str) -> Result<(), NameError> {
    match name.len() {
        0 => Err(NameError::Empty),
        len if len > MAX_KEY_LEN => Err(NameError::TooLong { len }),
        _ if name.contains('\0') => Err(NameError::Nul),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Holder;

    fn lease(token: u64, nonce: u64) -> LeaseRow {
        LeaseRow {
            holder: Some(Holder {
                id: NodeId::new("lead").unwrap(),
                nonce,
                addr: "x".into(),
            }),
            token: Term(token),
            expires_ns: 100,
            version: 1,
        }
    }

    fn grant(fence: Fence, name: &str, limit: u32, holder: &str, ticket: u64) -> CoordOp {
        CoordOp::Grant {
            op: OpId(1),
            fence,
            name: name.into(),
            limit,
            holder: NodeId::new(holder).unwrap(),
            incarnation: 1,
            ticket,
            expires_ns: 50,
        }
    }

    const F: Fence = Fence {
        token: Term(2),
        nonce: 9,
    };

    #[test]
    fn a_grant_past_the_limit_is_refused_and_tokens_only_grow() {
        let row = lease(2, 9);
        let mut t = CoordTables::default();
        let r = |t: &mut CoordTables, op| execute_coord(t, Some(&row), &op);
        assert_eq!(
            r(&mut t, grant(F, "s", 2, "a", 1)),
            CoordReply::Granted { token: 1 }
        );
        assert_eq!(
            r(&mut t, grant(F, "s", 2, "b", 1)),
            CoordReply::Granted { token: 2 }
        );
        assert_eq!(
            r(&mut t, grant(F, "s", 2, "c", 1)),
            CoordReply::Full { held: 2 }
        );
        // A retried grant is the same grant.
        assert_eq!(
            r(&mut t, grant(F, "s", 2, "a", 1)),
            CoordReply::Granted { token: 1 }
        );
        assert_eq!(
            r(&mut t, grant(F, "s", 3, "c", 1)),
            CoordReply::LimitConflict { stored: 2 }
        );
        let free = |token| CoordOp::Free {
            op: OpId(2),
            fence: F,
            name: "s".into(),
            token,
        };
        assert_eq!(r(&mut t, free(1)), CoordReply::Freed);
        assert_eq!(r(&mut t, free(1)), CoordReply::Freed);
        assert_eq!(
            r(&mut t, grant(F, "s", 2, "c", 1)),
            CoordReply::Granted { token: 3 }
        );
        assert_eq!(r(&mut t, free(2)), CoordReply::Freed);
        assert_eq!(r(&mut t, free(3)), CoordReply::Freed);
        // With nothing held the limit may change; the token still grows.
        assert_eq!(
            r(&mut t, grant(F, "s", 1, "d", 1)),
            CoordReply::Granted { token: 4 }
        );
    }

    #[test]
    fn every_write_is_refused_once_the_lease_moved() {
        let mut t = CoordTables::default();
        for row in [None, Some(lease(3, 9)), Some(lease(2, 8))] {
            assert_eq!(
                execute_coord(&mut t, row.as_ref(), &grant(F, "s", 1, "a", 1)),
                CoordReply::Fenced
            );
            let free = CoordOp::Free {
                op: OpId(1),
                fence: F,
                name: "s".into(),
                token: 1,
            };
            assert_eq!(
                execute_coord(&mut t, row.as_ref(), &free),
                CoordReply::Fenced
            );
        }
        assert_eq!(t, CoordTables::default());
        let mut released = lease(2, 9);
        released.holder = None;
        assert_eq!(
            execute_coord(&mut t, Some(&released), &grant(F, "s", 1, "a", 1)),
            CoordReply::Fenced
        );
    }

    #[test]
    fn reads_see_revisions_in_order() {
        let row = lease(2, 9);
        let mut t = CoordTables::default();
        for (i, key) in ["a/1", "b", "a/2", "a/1"].iter().enumerate() {
            let op = CoordOp::Put {
                op: OpId(1),
                fence: F,
                origin: Origin {
                    node: NodeId::new("m").unwrap(),
                    incarnation: 1,
                    request: i as u64,
                },
                key: (*key).into(),
                value: Payload::from(alloc::vec![i as u8]),
            };
            assert_eq!(
                execute_coord(&mut t, Some(&row), &op),
                CoordReply::Put {
                    revision: i as u64 + 1
                }
            );
        }
        assert_eq!(t.get("a/1").unwrap().revision, 4);
        assert_eq!(t.get_at("a/1", 1).unwrap().value[..], [0]);
        assert!(t.get_at("a/1", 2).is_none());
        assert_eq!(t.history("a/1").len(), 2);
        let listed: Vec<u64> = t.list("a/").iter().map(|e| e.revision).collect();
        assert_eq!(listed, [4, 3]);
        let since: Vec<u64> = t.changes("a/", 1, 10).iter().map(|e| e.revision).collect();
        assert_eq!(since, [3, 4]);
        assert_eq!(t.changes("", 0, 2).len(), 2);
    }

    #[test]
    fn names_are_bounded() {
        assert_eq!(check_name(""), Err(NameError::Empty));
        assert_eq!(check_name("a\0b"), Err(NameError::Nul));
        assert!(check_name(&"x".repeat(MAX_KEY_LEN)).is_ok());
        assert!(matches!(
            check_name(&"x".repeat(MAX_KEY_LEN + 1)),
            Err(NameError::TooLong { .. })
        ));
    }
}
