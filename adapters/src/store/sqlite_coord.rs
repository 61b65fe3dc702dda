//! SQLite's coordination side: the KV revisions, semaphores and permits
//! in the lease's file. Every write is one `BEGIN IMMEDIATE` transaction
//! that reads the group's lease row first and writes only if it still
//! names the writer, so the fence and the write are one atomic step
//! across every process sharing the file. What to write is exactly
//! `execute_coord`'s rule (the grant's through `sql::plan_grant`); this
//! module never deletes a revision or a semaphore.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};

use super::coord::{
    CoordOp, CoordReply, CoordStore, KvEntry, PermitRow, SemaphoreRow, COORD_SCHEMA_VERSION,
};
use super::sql::{
    changes_bounds, from_sql, next_ordered, ordered, plan_grant, to_sql, RawCoordRow, RawKv,
    RawPermit, RawSemaphore, KV_COLUMNS, PERMIT_COLUMNS, SEMAPHORE_COLUMNS,
};
use super::sqlite::{read_row, SqliteStore};
use super::StoreError;

const SCHEMA: &str = include_str!("schema/sqlite_coord.sql");

/// Why a coordination call failed: SQLite said no, or a row was bad.
enum Failure {
    Sql(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Sql(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

impl SqliteStore {
    /// Runs `call` on the connection once the coordination tables exist,
    /// and says what went wrong in the store's terms.
    fn coord_call<T>(
        &self,
        op: &str,
        call: impl FnOnce(&Self, &mut Connection) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let result = self
            .ensure_coord_tables(&mut conn)
            .and_then(|()| call(self, &mut conn));
        result.map_err(|failure| match failure {
            Failure::Store(e) => e,
            Failure::Sql(e) => self.coord_fail(op, &e),
        })
    }

    /// Creates the coordination tables if they are missing, once per
    /// handle, in a write transaction, retrying a busy database within
    /// the busy timeout (a busy answer can come at once, e.g. while
    /// another process recovers the WAL).
    fn ensure_coord_tables(&self, conn: &mut Connection) -> Result<(), Failure> {
        if self.coord_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let started = Instant::now();
        loop {
            let attempt = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .and_then(|tx| {
                    tx.execute_batch(SCHEMA)?;
                    tx.commit()
                });
            match attempt {
                Ok(()) => {
                    self.coord_ready.store(true, Ordering::Release);
                    return Ok(());
                }
                Err(e) if is_busy(&e) && started.elapsed() < self.busy_timeout => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A SQLite error as a `StoreError`; a layout error names the
    /// coordination tables, not only the lease table.
    fn coord_fail(&self, op: &str, e: &rusqlite::Error) -> StoreError {
        let damaged_file = matches!(
            e,
            rusqlite::Error::SqliteFailure(err, _)
                if matches!(err.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
        );
        match self.fail(op, e) {
            StoreError::Corrupt(_) if !damaged_file => StoreError::Corrupt(format!(
                "{} ({op}): {e}; tables hedgerow_kv, hedgerow_semaphores, hedgerow_permits and \
                 hedgerow_lease must have the layout this build of hedgerow creates",
                self.describe()
            )),
            other => other,
        }
    }

    /// One fenced write (or the permits' load) in one transaction.
    fn execute_coord_tx(
        &self,
        conn: &mut Connection,
        group: &str,
        op: &CoordOp,
    ) -> Result<CoordReply, Failure> {
        let store = self.describe();
        // IMMEDIATE: the write lock first, so nothing changes the lease row
        // between the fence check and the write.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let fence = match op {
            CoordOp::Put { fence, .. }
            | CoordOp::Grant { fence, .. }
            | CoordOp::Free { fence, .. } => Some(fence),
            CoordOp::LoadPermits { .. } => None,
        };
        if let Some(fence) = fence {
            let lease = read_row(&tx, group)?
                .map(|raw| raw.decode(&store, group))
                .transpose()?;
            if !fence.holds(lease.as_ref()) {
                return Ok(CoordReply::Fenced);
            }
        }
        let reply = match op {
            CoordOp::LoadPermits { .. } => CoordReply::Permits {
                semaphores: semaphores(&tx, &store, group, None)?,
                permits: permits(&tx, &store, group, None)?,
            },
            CoordOp::Put {
                fence,
                origin,
                key,
                value,
                ..
            } => {
                let existing: Option<i64> = tx
                    .prepare_cached(
                        "SELECT revision FROM hedgerow_kv WHERE group_name = ?1 AND \
                         origin_node = ?2 AND origin_incarnation = ?3 AND origin_request = ?4",
                    )?
                    .query_row(
                        params![
                            group,
                            origin.node.as_str(),
                            to_sql(origin.incarnation),
                            to_sql(origin.request)
                        ],
                        |row| row.get(0),
                    )
                    .optional()?;
                match existing {
                    Some(revision) if revision > 0 => CoordReply::Duplicate {
                        revision: from_sql(revision),
                    },
                    Some(revision) => {
                        return Err(StoreError::Corrupt(format!(
                            "{store}: a row of group {group:?} in table hedgerow_kv has revision \
                             {revision}; it must be positive"
                        ))
                        .into())
                    }
                    None => {
                        let last: i64 = tx
                            .prepare_cached(
                                "SELECT coalesce(max(revision), 0) FROM hedgerow_kv \
                                 WHERE group_name = ?1",
                            )?
                            .query_row([group], |row| row.get(0))?;
                        let revision = next_ordered(&store, group, "revision", last)?;
                        tx.prepare_cached(
                            "INSERT INTO hedgerow_kv (group_name, revision, schema_version, key, \
                             value, term, origin_node, origin_incarnation, origin_request) \
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                        )?
                        .execute(params![
                            group,
                            revision,
                            COORD_SCHEMA_VERSION,
                            key,
                            value.as_slice(),
                            to_sql(fence.token.0),
                            origin.node.as_str(),
                            to_sql(origin.incarnation),
                            to_sql(origin.request)
                        ])?;
                        CoordReply::Put {
                            revision: from_sql(revision),
                        }
                    }
                }
            }
            CoordOp::Grant { name, .. } => {
                let stored = semaphores(&tx, &store, group, Some(name))?.pop();
                let held = permits(&tx, &store, group, Some(name))?;
                let plan = plan_grant(&store, group, op, stored, &held)?;
                if let Some(sem) = &plan.semaphore {
                    tx.prepare_cached(
                        "INSERT INTO hedgerow_semaphores (group_name, name, schema_version, \
                         permit_limit, last_token) VALUES (?1, ?2, ?3, ?4, ?5) \
                         ON CONFLICT (group_name, name) DO UPDATE SET \
                         permit_limit = excluded.permit_limit, last_token = excluded.last_token",
                    )?
                    .execute(params![
                        group,
                        sem.name,
                        COORD_SCHEMA_VERSION,
                        sem.limit,
                        to_sql(sem.last_token)
                    ])?;
                }
                if let Some(permit) = &plan.permit {
                    tx.prepare_cached(
                        "INSERT INTO hedgerow_permits (group_name, name, token, schema_version, \
                         holder_id, holder_incarnation, ticket, expires_ns) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )?
                    .execute(params![
                        group,
                        permit.name,
                        to_sql(permit.token),
                        COORD_SCHEMA_VERSION,
                        permit.holder.as_str(),
                        to_sql(permit.incarnation),
                        to_sql(permit.ticket),
                        to_sql(permit.expires_ns)
                    ])?;
                }
                plan.reply
            }
            CoordOp::Free { name, token, .. } => {
                tx.prepare_cached(
                    "DELETE FROM hedgerow_permits WHERE group_name = ?1 AND name = ?2 \
                     AND token = ?3",
                )?
                .execute(params![group, name, to_sql(*token)])?;
                CoordReply::Freed
            }
        };
        tx.commit()?;
        Ok(reply)
    }

    /// The KV rows `sql` selects (its `WHERE` and `ORDER` after the
    /// columns), validated.
    fn kv_rows(
        &self,
        op: &str,
        group: &str,
        sql: &str,
        bind: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<KvEntry>, StoreError> {
        self.coord_call(op, |store, conn| {
            let sql = format!("SELECT {KV_COLUMNS} FROM hedgerow_kv k {sql}");
            select(conn, &store.describe(), group, &sql, bind, read_kv)
        })
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(err, _)
            if matches!(err.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// The rows `sql` selects, read by `read` and validated.
fn select<R: RawCoordRow>(
    conn: &Connection,
    store: &str,
    group: &str,
    sql: &str,
    params: impl rusqlite::Params,
    read: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<R>,
) -> Result<Vec<R::Row>, Failure> {
    let raws = conn
        .prepare_cached(sql)?
        .query_map(params, read)?
        .collect::<rusqlite::Result<Vec<R>>>()?;
    Ok(raws
        .into_iter()
        .map(|raw| raw.decode(store, group))
        .collect::<Result<_, _>>()?)
}

fn read_kv(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawKv> {
    Ok(RawKv {
        schema_version: row.get(0)?,
        key: row.get(1)?,
        revision: row.get(2)?,
        value: row.get(3)?,
        term: row.get(4)?,
        origin_node: row.get(5)?,
        origin_incarnation: row.get(6)?,
        origin_request: row.get(7)?,
    })
}

/// The semaphores of `group` (only `name`'s, if given), by name.
fn semaphores(
    conn: &Connection,
    store: &str,
    group: &str,
    name: Option<&str>,
) -> Result<Vec<SemaphoreRow>, Failure> {
    let sql = format!(
        "SELECT {SEMAPHORE_COLUMNS} FROM hedgerow_semaphores \
         WHERE group_name = ?1 AND (?2 IS NULL OR name = ?2) ORDER BY name"
    );
    select(conn, store, group, &sql, params![group, name], |row| {
        Ok(RawSemaphore {
            schema_version: row.get(0)?,
            name: row.get(1)?,
            limit: row.get(2)?,
            last_token: row.get(3)?,
        })
    })
}

/// The permits of `group` (only `name`'s, if given), by name and token.
fn permits(
    conn: &Connection,
    store: &str,
    group: &str,
    name: Option<&str>,
) -> Result<Vec<PermitRow>, Failure> {
    let sql = format!(
        "SELECT {PERMIT_COLUMNS} FROM hedgerow_permits \
         WHERE group_name = ?1 AND (?2 IS NULL OR name = ?2) ORDER BY name, token"
    );
    select(conn, store, group, &sql, params![group, name], |row| {
        Ok(RawPermit {
            schema_version: row.get(0)?,
            name: row.get(1)?,
            token: row.get(2)?,
            holder_id: row.get(3)?,
            holder_incarnation: row.get(4)?,
            ticket: row.get(5)?,
            expires_ns: row.get(6)?,
        })
    })
}

/// `key` starts with the blob bound as `?n`, compared bytewise (SQLite's
/// string functions stop at a NUL; blobs do not).
fn has_prefix(n: u8) -> String {
    format!("substr(CAST(key AS BLOB), 1, length(?{n})) = ?{n}")
}

impl CoordStore for SqliteStore {
    fn execute(&self, group: &str, op: &CoordOp) -> Result<CoordReply, StoreError> {
        self.coord_call(op.kind(), |store, conn| {
            store.execute_coord_tx(conn, group, op)
        })
    }

    fn kv_get(&self, group: &str, key: &str) -> Result<Option<KvEntry>, StoreError> {
        let rows = self.kv_rows(
            "kv_get",
            group,
            "WHERE group_name = ?1 AND key = ?2 ORDER BY revision DESC LIMIT 1",
            &[&group, &key],
        )?;
        Ok(rows.into_iter().next())
    }

    fn kv_get_at(
        &self,
        group: &str,
        key: &str,
        revision: u64,
    ) -> Result<Option<KvEntry>, StoreError> {
        let Some(revision) = ordered(revision) else {
            return Ok(None);
        };
        let rows = self.kv_rows(
            "kv_get_at",
            group,
            "WHERE group_name = ?1 AND revision = ?2 AND key = ?3",
            &[&group, &revision, &key],
        )?;
        Ok(rows.into_iter().next())
    }

    fn kv_history(&self, group: &str, key: &str) -> Result<Vec<KvEntry>, StoreError> {
        self.kv_rows(
            "kv_history",
            group,
            "WHERE group_name = ?1 AND key = ?2 ORDER BY revision",
            &[&group, &key],
        )
    }

    fn kv_list(&self, group: &str, prefix: &str) -> Result<Vec<KvEntry>, StoreError> {
        self.kv_rows(
            "kv_list",
            group,
            &format!(
                "WHERE group_name = ?1 AND {} AND revision = (SELECT max(revision) \
                 FROM hedgerow_kv l WHERE l.group_name = ?1 AND l.key = k.key) ORDER BY key",
                has_prefix(2)
            ),
            &[&group, &prefix.as_bytes()],
        )
    }

    fn kv_changes(
        &self,
        group: &str,
        prefix: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<KvEntry>, StoreError> {
        let Some((after, limit)) = changes_bounds(after, limit) else {
            return Ok(Vec::new());
        };
        self.kv_rows(
            "kv_changes",
            group,
            &format!(
                "WHERE group_name = ?1 AND revision > ?2 AND {} ORDER BY revision LIMIT ?4",
                has_prefix(3)
            ),
            &[&group, &after, &prefix.as_bytes(), &limit],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::coord::{Fence, Origin};
    use crate::store::{LeaseStore, LeaseWrite};
    use hedgerow_core::{Holder, NodeId, OpId, Payload, Term};

    fn node(id: &str) -> NodeId {
        NodeId::new(id).unwrap_or_else(|e| panic!("{id}: {e}"))
    }

    /// A store whose group `g` is leased to `l` with token 1, nonce 5.
    fn leased() -> (tempfile::TempDir, SqliteStore, Fence) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let store =
            SqliteStore::open(dir.path().join("lease.db")).unwrap_or_else(|e| panic!("open: {e}"));
        let write = LeaseWrite {
            holder: Some(Holder {
                id: node("l"),
                nonce: 5,
                addr: "x".into(),
            }),
            token: Term(1),
            expires_ns: 1,
        };
        assert!(store.compare_and_set("g", None, &write).is_ok());
        let fence = Fence {
            token: Term(1),
            nonce: 5,
        };
        (dir, store, fence)
    }

    fn raw(store: &SqliteStore, sql: &str) {
        store
            .lock()
            .execute_batch(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn put(fence: Fence, request: u64) -> CoordOp {
        CoordOp::Put {
            op: OpId(request),
            fence,
            origin: Origin {
                node: node("m"),
                incarnation: 1,
                request,
            },
            key: "k".into(),
            value: Payload::from(&b"v"[..]),
        }
    }

    fn grant(fence: Fence) -> CoordOp {
        CoordOp::Grant {
            op: OpId(1),
            fence,
            name: "s".into(),
            limit: 2,
            holder: node("h"),
            incarnation: 1,
            ticket: 1,
            expires_ns: 1,
        }
    }

    fn corrupt<T: std::fmt::Debug>(what: &str, result: Result<T, StoreError>, says: &str) {
        match result {
            Err(StoreError::Corrupt(why)) => assert!(why.contains(says), "{what}: {why}"),
            other => panic!("{what}: expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn damaged_rows_are_refused_not_misread() {
        let (_dir, store, fence) = leased();
        assert_eq!(
            store.execute("g", &put(fence, 1)),
            Ok(CoordReply::Put { revision: 1 })
        );
        assert_eq!(
            store.execute("g", &grant(fence)),
            Ok(CoordReply::Granted { token: 1 })
        );
        raw(&store, "UPDATE hedgerow_kv SET schema_version = 2");
        corrupt("kv of schema 2", store.kv_get("g", "k"), "schema version 2");
        raw(
            &store,
            "UPDATE hedgerow_kv SET schema_version = 1, origin_node = ''",
        );
        corrupt(
            "kv of an empty origin",
            store.kv_history("g", "k"),
            "node id",
        );
        raw(&store, "UPDATE hedgerow_permits SET holder_id = ''");
        corrupt(
            "a permit of no holder",
            store.execute("g", &grant(fence)),
            "node id",
        );
        raw(
            &store,
            "UPDATE hedgerow_permits SET holder_id = 'h'; \
             UPDATE hedgerow_semaphores SET permit_limit = -1",
        );
        let load = CoordOp::LoadPermits { op: OpId(1) };
        corrupt(
            "a negative limit",
            store.execute("g", &load),
            "permit_limit -1",
        );
        raw(&store, "UPDATE hedgerow_semaphores SET permit_limit = 2");
        assert!(matches!(
            store.execute("g", &load),
            Ok(CoordReply::Permits { .. })
        ));
    }

    #[test]
    fn revisions_and_tokens_stop_at_the_end_of_their_range() {
        let (_dir, store, fence) = leased();
        raw(
            &store,
            &format!(
                "{SCHEMA} INSERT INTO hedgerow_kv VALUES ('g', {}, 1, 'k', x'00', 1, 'm', 1, 0); \
                 INSERT INTO hedgerow_semaphores VALUES ('g', 's', 1, 2, {})",
                i64::MAX,
                i64::MAX
            ),
        );
        corrupt(
            "the last revision",
            store.execute("g", &put(fence, 1)),
            "below 2^63",
        );
        corrupt(
            "the last token",
            store.execute("g", &grant(fence)),
            "below 2^63",
        );
        assert_eq!(store.kv_history("g", "k").map(|h| h.len()), Ok(1));
        // The retry of the stored put is still recognised.
        assert_eq!(
            store.execute("g", &put(fence, 0)),
            Ok(CoordReply::Duplicate {
                revision: i64::MAX.unsigned_abs()
            })
        );
    }

    #[test]
    fn a_foreign_lease_row_is_reported_not_taken_as_a_fence() {
        let (_dir, store, fence) = leased();
        raw(&store, "UPDATE hedgerow_lease SET schema_version = 2");
        corrupt(
            "the fence",
            store.execute("g", &put(fence, 1)),
            "schema version 2",
        );
    }

    #[test]
    fn coord_tables_of_another_layout_are_reported() {
        let (_dir, store, fence) = leased();
        raw(&store, "CREATE TABLE hedgerow_kv (group_name TEXT)");
        corrupt("put", store.execute("g", &put(fence, 1)), "hedgerow_kv");
        corrupt("get", store.kv_get("g", "k"), "layout");
    }

    #[test]
    fn keys_with_nul_bytes_and_prefixes_compare_bytewise() {
        let (_dir, store, fence) = leased();
        for (request, key) in ["a\0b", "a\0c", "a", "ab"].iter().enumerate() {
            let mut op = put(fence, request as u64);
            if let CoordOp::Put { key: k, .. } = &mut op {
                *k = (*key).into();
            }
            assert!(matches!(
                store.execute("g", &op),
                Ok(CoordReply::Put { .. })
            ));
        }
        let listed = store.kv_list("g", "a\0").unwrap_or_default();
        let keys: Vec<&str> = listed.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["a\0b", "a\0c"]);
        assert_eq!(store.kv_changes("g", "a\0", 0, 10).map(|c| c.len()), Ok(2));
    }
}
