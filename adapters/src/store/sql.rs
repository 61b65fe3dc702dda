//! What the SQL stores share: the mapping between a lease row (and the
//! coordination tables' rows) and their columns, and how a grant is
//! decided from the rows read in its transaction. Unsigned 64-bit values
//! travel bit-for-bit through the signed 64-bit columns, except revisions
//! and tokens, which SQL orders and so stay below 2^63; everything read
//! back is validated, so a damaged or foreign row becomes a
//! `StoreError::Corrupt` and never a panic.

use hedgerow_core::{NodeId, Payload, Term, MAX_ADDR_LEN};

use super::coord::{
    CoordOp, CoordReply, KvEntry, Origin, PermitRow, SemaphoreRow, COORD_SCHEMA_VERSION,
};
use super::{Holder, LeaseRow, LeaseWrite, StoreError, LEASE_SCHEMA_VERSION};

/// Column list in the order [`RawRow`] is read, for `SELECT`s.
pub(crate) const COLUMNS: &str =
    "schema_version, holder_id, holder_nonce, holder_addr, token, expires_ns, version";

/// An unsigned value as the signed column stores it (same bits).
pub(crate) fn to_sql(value: u64) -> i64 {
    i64::from_ne_bytes(value.to_ne_bytes())
}

/// The unsigned value a signed column holds (same bits).
pub(crate) fn from_sql(value: i64) -> u64 {
    u64::from_ne_bytes(value.to_ne_bytes())
}

/// A row's columns as read, before validation.
pub(crate) struct RawRow {
    pub(crate) schema_version: i64,
    pub(crate) holder_id: Option<String>,
    pub(crate) holder_nonce: Option<i64>,
    pub(crate) holder_addr: Option<String>,
    pub(crate) token: i64,
    pub(crate) expires_ns: i64,
    pub(crate) version: i64,
}

impl RawRow {
    /// The lease row, or `Corrupt` saying what is wrong with it and where.
    pub(crate) fn decode(self, store: &str, group: &str) -> Result<LeaseRow, StoreError> {
        let corrupt = |what: String| {
            StoreError::Corrupt(format!(
                "{store}: the lease row of group {group:?} in table hedgerow_lease {what}"
            ))
        };
        if self.schema_version != i64::from(LEASE_SCHEMA_VERSION) {
            return Err(corrupt(format!(
                "has schema version {}, and this build of hedgerow reads only version \
                 {LEASE_SCHEMA_VERSION}; run the same hedgerow version on every node of the \
                 group, or move this group to a new name",
                self.schema_version
            )));
        }
        let holder = match (self.holder_id, self.holder_nonce, self.holder_addr) {
            (None, None, None) => None,
            (Some(id), Some(nonce), Some(addr)) => {
                let id = NodeId::new(id.as_str()).map_err(|why| {
                    corrupt(format!(
                        "names holder {id:?}, which is not a node id: {why}"
                    ))
                })?;
                if addr.len() > MAX_ADDR_LEN {
                    return Err(corrupt(format!(
                        "has a holder address of {} bytes (at most {MAX_ADDR_LEN})",
                        addr.len()
                    )));
                }
                Some(Holder {
                    id,
                    nonce: from_sql(nonce),
                    addr,
                })
            }
            _ => {
                return Err(corrupt(
                    "has only some of holder_id, holder_nonce, holder_addr set; \
                     all three or none must be"
                        .into(),
                ))
            }
        };
        Ok(LeaseRow {
            holder,
            token: Term(from_sql(self.token)),
            expires_ns: from_sql(self.expires_ns),
            version: from_sql(self.version),
        })
    }
}

/// A write's columns, ready to bind.
pub(crate) struct RawWrite<'a> {
    pub(crate) holder_id: Option<&'a str>,
    pub(crate) holder_nonce: Option<i64>,
    pub(crate) holder_addr: Option<&'a str>,
    pub(crate) token: i64,
    pub(crate) expires_ns: i64,
}

impl<'a> RawWrite<'a> {
    pub(crate) fn new(write: &'a LeaseWrite) -> Self {
        let holder = write.holder.as_ref();
        RawWrite {
            holder_id: holder.map(|h| h.id.as_str()),
            holder_nonce: holder.map(|h| to_sql(h.nonce)),
            holder_addr: holder.map(|h| h.addr.as_str()),
            token: to_sql(write.token.0),
            expires_ns: to_sql(write.expires_ns),
        }
    }
}

/// Columns of `hedgerow_kv` in the order [`RawKv`] is read.
pub(crate) const KV_COLUMNS: &str = "schema_version, key, revision, value, term, origin_node, \
     origin_incarnation, origin_request";

/// Columns of `hedgerow_semaphores` in the order [`RawSemaphore`] is read.
pub(crate) const SEMAPHORE_COLUMNS: &str = "schema_version, name, permit_limit, last_token";

/// Columns of `hedgerow_permits` in the order [`RawPermit`] is read.
pub(crate) const PERMIT_COLUMNS: &str =
    "schema_version, name, token, holder_id, holder_incarnation, ticket, expires_ns";

/// A revision or token as its ordered column holds it: positive, below
/// 2^63, so that SQL's order is the numbers' order.
pub(crate) fn ordered(value: u64) -> Option<i64> {
    i64::try_from(value).ok().filter(|v| *v > 0)
}

/// The next revision or token after `last` (0: none yet), or `Corrupt`
/// once the column's range is used up, which only a damaged table reaches.
pub(crate) fn next_ordered(
    store: &str,
    group: &str,
    what: &str,
    last: i64,
) -> Result<i64, StoreError> {
    match last.checked_add(1) {
        Some(next) if last >= 0 => Ok(next),
        _ => Err(StoreError::Corrupt(format!(
            "{store}: the last {what} of group {group:?} is {last}, and no next one fits the \
             column (revisions and tokens stay below 2^63); only a damaged table gets there: \
             restore it from a backup"
        ))),
    }
}

/// Says what is wrong with a coordination row, and where.
fn coord_corrupt(store: &str, group: &str, table: &str, what: String) -> StoreError {
    StoreError::Corrupt(format!(
        "{store}: a row of group {group:?} in table {table} {what}"
    ))
}

fn check_coord_version(
    store: &str,
    group: &str,
    table: &str,
    version: i64,
) -> Result<(), StoreError> {
    if version == i64::from(COORD_SCHEMA_VERSION) {
        return Ok(());
    }
    Err(coord_corrupt(
        store,
        group,
        table,
        format!(
            "has schema version {version}, and this build of hedgerow reads only version \
             {COORD_SCHEMA_VERSION}; run the same hedgerow version on every node of the group"
        ),
    ))
}

fn ordered_column(
    store: &str,
    group: &str,
    table: &str,
    what: &str,
    value: i64,
) -> Result<u64, StoreError> {
    if value > 0 {
        return Ok(from_sql(value));
    }
    Err(coord_corrupt(
        store,
        group,
        table,
        format!("has {what} {value}; it must be positive"),
    ))
}

fn node_column(store: &str, group: &str, table: &str, id: String) -> Result<NodeId, StoreError> {
    NodeId::new(id.as_str()).map_err(|why| {
        coord_corrupt(
            store,
            group,
            table,
            format!("names node {id:?}, which is not a node id: {why}"),
        )
    })
}

/// A coordination row as read, validated into what it stands for.
pub(crate) trait RawCoordRow {
    /// What the row stands for.
    type Row;
    /// The row, or `Corrupt` saying what is wrong with it.
    fn decode(self, store: &str, group: &str) -> Result<Self::Row, StoreError>;
}

/// `kv_changes`' bounds as the columns hold them; `None` when no revision
/// can come after `after` (revisions stay below 2^63).
pub(crate) fn changes_bounds(after: u64, limit: usize) -> Option<(i64, i64)> {
    let after = i64::try_from(after).ok()?;
    Some((after, i64::try_from(limit).unwrap_or(i64::MAX)))
}

/// A `hedgerow_kv` row as read, before validation.
pub(crate) struct RawKv {
    pub(crate) schema_version: i64,
    pub(crate) key: String,
    pub(crate) revision: i64,
    pub(crate) value: Vec<u8>,
    pub(crate) term: i64,
    pub(crate) origin_node: String,
    pub(crate) origin_incarnation: i64,
    pub(crate) origin_request: i64,
}

impl RawCoordRow for RawKv {
    type Row = KvEntry;

    fn decode(self, store: &str, group: &str) -> Result<KvEntry, StoreError> {
        let table = "hedgerow_kv";
        check_coord_version(store, group, table, self.schema_version)?;
        Ok(KvEntry {
            key: self.key,
            revision: ordered_column(store, group, table, "revision", self.revision)?,
            value: Payload::from(self.value),
            term: Term(from_sql(self.term)),
            origin: Origin {
                node: node_column(store, group, table, self.origin_node)?,
                incarnation: from_sql(self.origin_incarnation),
                request: from_sql(self.origin_request),
            },
        })
    }
}

/// A `hedgerow_semaphores` row as read, before validation.
pub(crate) struct RawSemaphore {
    pub(crate) schema_version: i64,
    pub(crate) name: String,
    pub(crate) limit: i64,
    pub(crate) last_token: i64,
}

impl RawCoordRow for RawSemaphore {
    type Row = SemaphoreRow;

    fn decode(self, store: &str, group: &str) -> Result<SemaphoreRow, StoreError> {
        let table = "hedgerow_semaphores";
        check_coord_version(store, group, table, self.schema_version)?;
        let limit = u32::try_from(self.limit).map_err(|_| {
            coord_corrupt(
                store,
                group,
                table,
                format!("has permit_limit {}, outside 0..=2^32-1", self.limit),
            )
        })?;
        if self.last_token < 0 {
            return Err(coord_corrupt(
                store,
                group,
                table,
                format!(
                    "has last_token {}; it must not be negative",
                    self.last_token
                ),
            ));
        }
        Ok(SemaphoreRow {
            name: self.name,
            limit,
            last_token: from_sql(self.last_token),
        })
    }
}

/// A `hedgerow_permits` row as read, before validation.
pub(crate) struct RawPermit {
    pub(crate) schema_version: i64,
    pub(crate) name: String,
    pub(crate) token: i64,
    pub(crate) holder_id: String,
    pub(crate) holder_incarnation: i64,
    pub(crate) ticket: i64,
    pub(crate) expires_ns: i64,
}

impl RawCoordRow for RawPermit {
    type Row = PermitRow;

    fn decode(self, store: &str, group: &str) -> Result<PermitRow, StoreError> {
        let table = "hedgerow_permits";
        check_coord_version(store, group, table, self.schema_version)?;
        Ok(PermitRow {
            name: self.name,
            token: ordered_column(store, group, table, "token", self.token)?,
            holder: node_column(store, group, table, self.holder_id)?,
            incarnation: from_sql(self.holder_incarnation),
            ticket: from_sql(self.ticket),
            expires_ns: from_sql(self.expires_ns),
        })
    }
}

/// What a grant writes, decided from the rows its transaction read, as
/// `execute_coord` decides it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct GrantPlan {
    /// The semaphore row to insert or update, if it changes (a new
    /// semaphore is stored even when the grant is refused as full).
    pub(crate) semaphore: Option<SemaphoreRow>,
    /// The permit to insert.
    pub(crate) permit: Option<PermitRow>,
    /// The answer.
    pub(crate) reply: CoordReply,
}

/// Decides `grant` (a [`CoordOp::Grant`]; anything else plans nothing)
/// given the semaphore's stored row and the permits of its name.
pub(crate) fn plan_grant(
    store: &str,
    group: &str,
    grant: &CoordOp,
    stored: Option<SemaphoreRow>,
    held: &[PermitRow],
) -> Result<GrantPlan, StoreError> {
    let CoordOp::Grant {
        name,
        limit,
        holder,
        incarnation,
        ticket,
        expires_ns,
        ..
    } = grant
    else {
        return Err(StoreError::Unavailable(format!(
            "{store}: a {} was planned as a grant; this is a bug in hedgerow",
            grant.kind()
        )));
    };
    let plan = |semaphore, permit, reply| -> Result<GrantPlan, StoreError> {
        Ok(GrantPlan {
            semaphore,
            permit,
            reply,
        })
    };
    if let Some(p) = held
        .iter()
        .find(|p| &p.holder == holder && p.incarnation == *incarnation && p.ticket == *ticket)
    {
        return plan(None, None, CoordReply::Granted { token: p.token });
    }
    let count = u32::try_from(held.len()).unwrap_or(u32::MAX);
    let (mut sem, mut changed) = match stored {
        Some(sem) => (sem, false),
        None => (
            SemaphoreRow {
                name: name.clone(),
                limit: *limit,
                last_token: 0,
            },
            true,
        ),
    };
    if sem.limit != *limit {
        if count > 0 {
            return plan(None, None, CoordReply::LimitConflict { stored: sem.limit });
        }
        sem.limit = *limit;
        changed = true;
    }
    if count >= sem.limit {
        return plan(
            changed.then_some(sem),
            None,
            CoordReply::Full { held: count },
        );
    }
    // A decoded row's last token is below 2^63; -1 makes a foreign one
    // refused rather than wrapped.
    let last = i64::try_from(sem.last_token).unwrap_or(-1);
    let token = from_sql(next_ordered(store, group, "token", last)?);
    sem.last_token = token;
    let permit = PermitRow {
        name: name.clone(),
        token,
        holder: holder.clone(),
        incarnation: *incarnation,
        ticket: *ticket,
        expires_ns: *expires_ns,
    };
    plan(Some(sem), Some(permit), CoordReply::Granted { token })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_values_survive_the_signed_column() {
        for v in [
            0,
            1,
            i64::MAX as u64,
            (i64::MAX as u64) + 1,
            u64::MAX - 1,
            u64::MAX,
        ] {
            assert_eq!(from_sql(to_sql(v)), v);
        }
        assert_eq!(to_sql(u64::MAX), -1);
    }

    fn raw() -> RawRow {
        RawRow {
            schema_version: i64::from(LEASE_SCHEMA_VERSION),
            holder_id: Some("node-a".into()),
            holder_nonce: Some(-1),
            holder_addr: Some("10.0.0.1:7000".into()),
            token: -1,
            expires_ns: 5,
            version: 7,
        }
    }

    #[test]
    fn a_good_row_decodes() {
        let row = raw().decode("test", "g");
        let holder = row.as_ref().ok().and_then(|r| r.holder.clone());
        assert_eq!(holder.map(|h| h.nonce), Some(u64::MAX));
        assert_eq!(row.map(|r| (r.token, r.version)), Ok((Term(u64::MAX), 7)));
    }

    #[test]
    fn a_foreign_schema_version_is_refused_with_advice() {
        let mut r = raw();
        r.schema_version = 2;
        match r.decode("test", "g") {
            Err(StoreError::Corrupt(why)) => {
                assert!(why.contains("schema version 2"), "{why}");
                assert!(why.contains("same hedgerow version"), "{why}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn damaged_holders_are_refused_not_misread() {
        let mut partial = raw();
        partial.holder_addr = None;
        assert!(matches!(
            partial.decode("t", "g"),
            Err(StoreError::Corrupt(_))
        ));
        let mut bad_id = raw();
        bad_id.holder_id = Some(String::new());
        assert!(matches!(
            bad_id.decode("t", "g"),
            Err(StoreError::Corrupt(_))
        ));
        let mut long_addr = raw();
        long_addr.holder_addr = Some("x".repeat(MAX_ADDR_LEN + 1));
        assert!(matches!(
            long_addr.decode("t", "g"),
            Err(StoreError::Corrupt(_))
        ));
    }
}
