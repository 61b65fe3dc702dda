//! PostgreSQL's coordination side: the KV revisions, semaphores and
//! permits beside `hedgerow_lease`, on the store's one connection and
//! private runtime, with the lease calls' deadlines and error
//! classification. Every write is one READ COMMITTED transaction (a put's
//! is pipelined: one round trip) that first locks the group's lease row
//! `FOR SHARE` and checks it names the writer: a takeover's `UPDATE` of that row then waits until the fenced
//! write commits, so the write is ordered before any takeover, and one
//! that comes after a takeover sees the new row and is refused. Writers
//! of one group then take a transaction advisory lock on the group, so
//! `max(revision) + 1` and a grant's count are decided one at a time.
//! What to write is exactly `execute_coord`'s rule (the grant's through
//! `sql::plan_grant`); this module never deletes a revision or a
//! semaphore.

use std::sync::atomic::Ordering;

use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use super::coord::{
    CoordOp, CoordReply, CoordStore, KvEntry, PermitRow, SemaphoreRow, COORD_SCHEMA_VERSION,
};
use super::postgres::{chain, decode, Conn, Failure, PostgresStore, Shared};
use super::sql::{
    changes_bounds, next_ordered, ordered, plan_grant, to_sql, RawCoordRow, RawKv, RawPermit,
    RawSemaphore, COLUMNS, KV_COLUMNS, PERMIT_COLUMNS, SEMAPHORE_COLUMNS,
};
use super::StoreError;
use hedgerow_core::coord::{Fence, Origin};

const SCHEMA: &str = include_str!("schema/postgres_coord.sql");

/// The coordination schema version as its INTEGER column holds it.
fn schema_version() -> i32 {
    i32::try_from(COORD_SCHEMA_VERSION).unwrap_or(i32::MAX)
}

/// Server errors that mean a table does not have the layout we create.
/// (A unique violation is not one: under the group's lock only a writer
/// outside hedgerow causes it, and it stays Unavailable, worth a retry.)
const LAYOUT: [SqlState; 4] = [
    SqlState::UNDEFINED_TABLE,
    SqlState::UNDEFINED_COLUMN,
    SqlState::DATATYPE_MISMATCH,
    SqlState::CHECK_VIOLATION,
];

impl Shared {
    fn describe(&self) -> String {
        format!("PostgreSQL lease store {}", self.target)
    }

    /// A layout error named for the coordination tables (the lease
    /// calls' classification names only `hedgerow_lease`).
    fn coord_layout(&self, op: &str, failure: Failure) -> Failure {
        let Failure::Pg(e) = &failure else {
            return failure;
        };
        match e.as_db_error() {
            Some(db) if LAYOUT.contains(db.code()) => Failure::Store(StoreError::Corrupt(format!(
                "{} ({op}): {}: {}; tables hedgerow_kv, hedgerow_semaphores, hedgerow_permits \
                 and hedgerow_lease must have the layout this build of hedgerow creates",
                self.describe(),
                db.severity(),
                db.message()
            ))),
            _ => failure,
        }
    }

    /// A row that does not read as expected, as `Corrupt`.
    fn unreadable(&self, group: &str, table: &str, e: &tokio_postgres::Error) -> Failure {
        Failure::Store(StoreError::Corrupt(format!(
            "{}: a row of group {group:?} in table {table} does not read as this build of \
             hedgerow expects ({}); check the table's layout",
            self.describe(),
            chain(e)
        )))
    }

    /// Creates the coordination tables if they are missing, once per
    /// store. Looks first (a role without CREATE rights can use tables an
    /// operator made); a concurrent creator's win is no failure.
    async fn ensure_coord_tables(&self, client: &Client) -> Result<(), Failure> {
        if self.coord_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        for _ in 0..3 {
            let row = client
                .query_one(
                    "SELECT to_regclass('hedgerow_kv') IS NOT NULL \
                     AND to_regclass('hedgerow_semaphores') IS NOT NULL \
                     AND to_regclass('hedgerow_permits') IS NOT NULL \
                     AND to_regclass('hedgerow_kv_by_key') IS NOT NULL",
                    &[],
                )
                .await?;
            if row.try_get::<_, bool>(0)? {
                self.coord_ready.store(true, Ordering::Release);
                return Ok(());
            }
            if let Err(e) = client.batch_execute(SCHEMA).await {
                let raced = [
                    SqlState::UNIQUE_VIOLATION,
                    SqlState::DUPLICATE_TABLE,
                    SqlState::DUPLICATE_OBJECT,
                ];
                if !e.code().is_some_and(|code| raced.contains(code)) {
                    return Err(e.into());
                }
            }
        }
        Err(Failure::Store(StoreError::Unavailable(format!(
            "{}: the coordination tables were still missing after creating them three times",
            self.describe()
        ))))
    }

    /// Runs `body` in one transaction of `isolation` on `conn`, the
    /// tables made sure of first. A failure leaves the transaction open;
    /// the caller's `call` then drops the connection, which ends it.
    async fn in_transaction<T>(
        &self,
        conn: &Conn,
        isolation: &str,
        body: impl std::future::Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        self.ensure_coord_tables(&conn.client).await?;
        conn.client
            .batch_execute(&format!("BEGIN ISOLATION LEVEL {isolation}"))
            .await?;
        let value = body.await?;
        conn.client.batch_execute("COMMIT").await?;
        Ok(value)
    }

    async fn execute_coord_tx(
        &self,
        conn: &Conn,
        group: &str,
        op: &CoordOp,
    ) -> Result<CoordReply, Failure> {
        let client = &conn.client;
        let store = self.describe();
        let fence = match op {
            CoordOp::Put { fence, .. }
            | CoordOp::Grant { fence, .. }
            | CoordOp::Free { fence, .. } => Some(fence),
            // Not a write: no fence, no lock; the snapshot is the caller's.
            CoordOp::LoadPermits { .. } => None,
        };
        if let Some(fence) = fence {
            let lease = client
                .query_opt(
                    &format!("SELECT {COLUMNS} FROM hedgerow_lease WHERE name = $1 FOR SHARE"),
                    &[&group],
                )
                .await?;
            let lease = match lease {
                None => None,
                Some(row) => {
                    let raw =
                        decode(&row).map_err(|e| self.unreadable(group, "hedgerow_lease", &e))?;
                    Some(raw.decode(&store, group)?)
                }
            };
            if !fence.holds(lease.as_ref()) {
                return Ok(CoordReply::Fenced);
            }
            // One writer of this group at a time, until commit.
            client
                .execute(
                    "SELECT pg_advisory_xact_lock(hashtext('hedgerow_coord'), hashtext($1))",
                    &[&group],
                )
                .await?;
        }
        Ok(match op {
            // One statement of its own: see `put`.
            CoordOp::Put {
                fence,
                origin,
                key,
                value,
                ..
            } => return self.put(conn, group, fence, origin, key, value).await,
            CoordOp::Grant { name, .. } => {
                let stored = self.semaphores(client, group, Some(name)).await?.pop();
                let held = self.permits(client, group, Some(name)).await?;
                let plan = plan_grant(&store, group, op, stored, &held)?;
                if let Some(sem) = &plan.semaphore {
                    client
                        .execute(
                            "INSERT INTO hedgerow_semaphores (group_name, name, schema_version, \
                             permit_limit, last_token) VALUES ($1, $2, $3, $4, $5) \
                             ON CONFLICT (group_name, name) DO UPDATE SET \
                             permit_limit = EXCLUDED.permit_limit, \
                             last_token = EXCLUDED.last_token",
                            &[
                                &group,
                                &sem.name.as_str(),
                                &schema_version(),
                                &i64::from(sem.limit),
                                &to_sql(sem.last_token),
                            ],
                        )
                        .await?;
                }
                if let Some(permit) = &plan.permit {
                    client
                        .execute(
                            "INSERT INTO hedgerow_permits (group_name, name, token, \
                             schema_version, holder_id, holder_incarnation, ticket, expires_ns) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                            &[
                                &group,
                                &permit.name.as_str(),
                                &to_sql(permit.token),
                                &schema_version(),
                                &permit.holder.as_str(),
                                &to_sql(permit.incarnation),
                                &to_sql(permit.ticket),
                                &to_sql(permit.expires_ns),
                            ],
                        )
                        .await?;
                }
                plan.reply
            }
            CoordOp::Free { name, token, .. } => {
                client
                    .execute(
                        "DELETE FROM hedgerow_permits WHERE group_name = $1 AND name = $2 \
                         AND token = $3",
                        &[&group, &name.as_str(), &to_sql(*token)],
                    )
                    .await?;
                CoordReply::Freed
            }
            CoordOp::LoadPermits { .. } => CoordReply::Permits {
                semaphores: self.semaphores(client, group, None).await?,
                permits: self.permits(client, group, None).await?,
            },
        })
    }

    /// `rows` of `table`, read by `read` and validated.
    /// A fenced put as one pipelined transaction: `BEGIN`, the lease row
    /// read `FOR SHARE`, the group's advisory lock and the insert at
    /// `max(revision) + 1` (both only where the row matches the fence,
    /// the insert only if the origin is new), sent together on statements
    /// prepared once per connection; then `COMMIT` once the row is read
    /// and found to be the fence's, or `ROLLBACK`. Two round trips where
    /// the transaction took seven. The locks come in the other writes'
    /// order (lease row, then advisory lock), and each statement takes its
    /// snapshot after the locks before it, so `max(revision)` sees every
    /// committed put.
    async fn put(
        &self,
        conn: &Conn,
        group: &str,
        fence: &Fence,
        origin: &Origin,
        key: &str,
        value: &[u8],
    ) -> Result<CoordReply, Failure> {
        self.ensure_coord_tables(&conn.client).await?;
        let st = match conn.put.get() {
            Some(st) => st,
            None => {
                let st = PutStatements::prepare(&conn.client).await?;
                conn.put.get_or_init(|| st)
            }
        };
        let client = &conn.client;
        let (token, nonce) = (to_sql(fence.token.0), to_sql(fence.nonce));
        let lease_version = super::postgres::schema_version();
        let (incarnation, request) = (to_sql(origin.incarnation), to_sql(origin.request));
        let node = origin.node.as_str();
        let version = schema_version();
        let name: [&(dyn ToSql + Sync); 1] = [&group];
        let held: [&(dyn ToSql + Sync); 4] = [&group, &token, &nonce, &lease_version];
        let insert: [&(dyn ToSql + Sync); 10] = [
            &group,
            &token,
            &nonce,
            &lease_version,
            &node,
            &incarnation,
            &request,
            &version,
            &key,
            &value,
        ];
        // Each request goes out when its future is first polled, in this
        // order; the server runs them one after another.
        let (begin, lease, locked, row) = futures::join!(
            client.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED"),
            client.query_opt(&st.lease, &name),
            client.execute(&st.lock, &held),
            client.query_one(&st.insert, &insert),
        );
        let (_, lease, _, row) = (begin?, lease?, locked?, row?);
        let verdict = self.put_verdict(group, fence, lease.as_ref(), &row);
        let end = if verdict.as_ref().is_ok_and(|r| *r != CoordReply::Fenced) {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        client.batch_execute(end).await?;
        verdict
    }

    /// What the pipelined put did, judged from the lease row it read and
    /// the insert's answer: `(existing revision, inserted revision, last
    /// revision before)`.
    fn put_verdict(
        &self,
        group: &str,
        fence: &Fence,
        lease: Option<&Row>,
        row: &Row,
    ) -> Result<CoordReply, Failure> {
        let store = self.describe();
        let lease = match lease {
            None => None,
            Some(row) => {
                let raw = decode(row).map_err(|e| self.unreadable(group, "hedgerow_lease", &e))?;
                Some(raw.decode(&store, group)?)
            }
        };
        if !fence.holds(lease.as_ref()) {
            return Ok(CoordReply::Fenced);
        }
        let unreadable = |e| self.unreadable(group, "hedgerow_kv", &e);
        let existing: Option<i64> = row.try_get(0).map_err(unreadable)?;
        let inserted: Option<i64> = row.try_get(1).map_err(unreadable)?;
        let last: i64 = row.try_get(2).map_err(unreadable)?;
        let positive = |revision: i64| {
            u64::try_from(revision)
                .ok()
                .filter(|r| *r > 0)
                .ok_or_else(|| {
                    Failure::Store(StoreError::Corrupt(format!(
                        "{store}: a row of group {group:?} in table hedgerow_kv has revision \
                     {revision}; it must be positive"
                    )))
                })
        };
        match (existing, inserted) {
            (Some(revision), _) => Ok(CoordReply::Duplicate {
                revision: positive(revision)?,
            }),
            (None, Some(revision)) => Ok(CoordReply::Put {
                revision: positive(revision)?,
            }),
            // Only a last revision with no next one stops the insert.
            (None, None) => {
                next_ordered(&store, group, "revision", last)?;
                Err(Failure::Store(StoreError::Unavailable(format!(
                    "{store}: a put of group {group:?} under a held fence neither found its \
                     origin nor inserted"
                ))))
            }
        }
    }

    fn decode_rows<R: RawCoordRow>(
        &self,
        group: &str,
        table: &str,
        rows: &[Row],
        read: impl Fn(&Row) -> Result<R, tokio_postgres::Error>,
    ) -> Result<Vec<R::Row>, Failure> {
        let store = self.describe();
        rows.iter()
            .map(|row| {
                let raw = read(row).map_err(|e| self.unreadable(group, table, &e))?;
                Ok(raw.decode(&store, group)?)
            })
            .collect()
    }

    /// The semaphores of `group` (only `name`'s, if given), by name.
    async fn semaphores(
        &self,
        client: &Client,
        group: &str,
        name: Option<&str>,
    ) -> Result<Vec<SemaphoreRow>, Failure> {
        let sql = format!(
            "SELECT {SEMAPHORE_COLUMNS} FROM hedgerow_semaphores WHERE group_name = $1 \
             AND ($2::text IS NULL OR name = $2) ORDER BY name"
        );
        let rows = client.query(&sql, &[&group, &name]).await?;
        self.decode_rows(group, "hedgerow_semaphores", &rows, |row| {
            Ok(RawSemaphore {
                schema_version: i64::from(row.try_get::<_, i32>(0)?),
                name: row.try_get(1)?,
                limit: row.try_get(2)?,
                last_token: row.try_get(3)?,
            })
        })
    }

    /// The permits of `group` (only `name`'s, if given), by name and token.
    async fn permits(
        &self,
        client: &Client,
        group: &str,
        name: Option<&str>,
    ) -> Result<Vec<PermitRow>, Failure> {
        let sql = format!(
            "SELECT {PERMIT_COLUMNS} FROM hedgerow_permits WHERE group_name = $1 \
             AND ($2::text IS NULL OR name = $2) ORDER BY name, token"
        );
        let rows = client.query(&sql, &[&group, &name]).await?;
        self.decode_rows(group, "hedgerow_permits", &rows, |row| {
            Ok(RawPermit {
                schema_version: i64::from(row.try_get::<_, i32>(0)?),
                name: row.try_get(1)?,
                token: row.try_get(2)?,
                holder_id: row.try_get(3)?,
                holder_incarnation: row.try_get(4)?,
                ticket: row.try_get(5)?,
                expires_ns: row.try_get(6)?,
            })
        })
    }

    /// The KV rows `sql` selects (all after `SELECT`, the columns in
    /// [`KV_COLUMNS`]' order), validated.
    async fn kv_rows(
        &self,
        conn: &Conn,
        group: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<KvEntry>, Failure> {
        self.ensure_coord_tables(&conn.client).await?;
        let rows = conn.client.query(&format!("SELECT {sql}"), params).await?;
        self.decode_rows(group, "hedgerow_kv", &rows, |row| {
            Ok(RawKv {
                schema_version: i64::from(row.try_get::<_, i32>(0)?),
                key: row.try_get(1)?,
                revision: row.try_get(2)?,
                value: row.try_get(3)?,
                term: row.try_get(4)?,
                origin_node: row.try_get(5)?,
                origin_incarnation: row.try_get(6)?,
                origin_request: row.try_get(7)?,
            })
        })
    }
}

impl PostgresStore {
    fn kv_query(
        &self,
        op: &str,
        group: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<KvEntry>, StoreError> {
        self.shared.call(op, |shared, conn, _retry| {
            shared
                .run(shared.kv_rows(conn, group, sql, params))
                .map_err(|f| shared.coord_layout(op, f))
        })
    }
}

impl CoordStore for PostgresStore {
    /// Retried once on a fresh connection if the old one turns out dead:
    /// safe although the first attempt may have committed, because a put
    /// is recognised by its origin, a grant by its ticket, and a free of
    /// a freed permit is a free.
    fn execute(&self, group: &str, op: &CoordOp) -> Result<CoordReply, StoreError> {
        // A load reads semaphores and permits in one snapshot.
        let isolation = match op {
            CoordOp::LoadPermits { .. } => "REPEATABLE READ READ ONLY",
            _ => "READ COMMITTED",
        };
        self.shared.call(op.kind(), |shared, conn, _retry| {
            let result = match op {
                CoordOp::Put {
                    fence,
                    origin,
                    key,
                    value,
                    ..
                } => shared.run(shared.put(conn, group, fence, origin, key, value)),
                _ => shared.run(shared.in_transaction(
                    conn,
                    isolation,
                    shared.execute_coord_tx(conn, group, op),
                )),
            };
            result.map_err(|f| shared.coord_layout(op.kind(), f))
        })
    }

    fn kv_get(&self, group: &str, key: &str) -> Result<Option<KvEntry>, StoreError> {
        let rows = self.kv_query(
            "kv_get",
            group,
            &format!(
                "{KV_COLUMNS} FROM hedgerow_kv WHERE group_name = $1 AND key = $2 \
                 ORDER BY revision DESC LIMIT 1"
            ),
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
        let rows = self.kv_query(
            "kv_get_at",
            group,
            &format!(
                "{KV_COLUMNS} FROM hedgerow_kv WHERE group_name = $1 AND revision = $2 \
                 AND key = $3"
            ),
            &[&group, &revision, &key],
        )?;
        Ok(rows.into_iter().next())
    }

    fn kv_history(&self, group: &str, key: &str) -> Result<Vec<KvEntry>, StoreError> {
        self.kv_query(
            "kv_history",
            group,
            &format!(
                "{KV_COLUMNS} FROM hedgerow_kv WHERE group_name = $1 AND key = $2 \
                 ORDER BY revision"
            ),
            &[&group, &key],
        )
    }

    fn kv_list(&self, group: &str, prefix: &str) -> Result<Vec<KvEntry>, StoreError> {
        // DISTINCT ON keeps each key's first row in the order given: its
        // latest revision. Keys are COLLATE "C": bytewise, as elsewhere.
        self.kv_query(
            "kv_list",
            group,
            &format!(
                "DISTINCT ON (key) {KV_COLUMNS} FROM hedgerow_kv WHERE group_name = $1 \
                 AND left(key, length($2)) = $2 ORDER BY key, revision DESC"
            ),
            &[&group, &prefix],
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
        self.kv_query(
            "kv_changes",
            group,
            &format!(
                "{KV_COLUMNS} FROM hedgerow_kv WHERE group_name = $1 AND revision > $2 \
                 AND left(key, length($3)) = $3 ORDER BY revision LIMIT $4"
            ),
            &[&group, &after, &prefix, &limit],
        )
    }
}

/// The statements of a fenced put, prepared once per connection. The
/// lock and the insert repeat the fence's condition (`$1` group, `$2`
/// token, `$3` holder nonce, `$4` lease schema version), so a fenced put
/// locks and writes nothing.
#[derive(Debug)]
pub(super) struct PutStatements {
    lease: Statement,
    lock: Statement,
    insert: Statement,
}

impl PutStatements {
    async fn prepare(client: &Client) -> Result<Self, tokio_postgres::Error> {
        const HELD: &str = "SELECT 1 FROM hedgerow_lease WHERE name = $1 AND token = $2 \
                            AND holder_nonce = $3 AND schema_version = $4";
        const LAST: &str =
            "SELECT coalesce(max(revision), 0) FROM hedgerow_kv WHERE group_name = $1";
        let lease = format!("SELECT {COLUMNS} FROM hedgerow_lease WHERE name = $1 FOR SHARE");
        let lock = format!(
            "SELECT pg_advisory_xact_lock(hashtext('hedgerow_coord'), hashtext($1)) \
             WHERE EXISTS ({HELD})"
        );
        // $5..$7 the origin, $8 the coordination schema version, $9 key,
        // $10 value. The outer SELECT's snapshot is the statement's: `last`
        // is the revision before this insert.
        let insert = format!(
            "WITH existing AS ( \
                 SELECT revision FROM hedgerow_kv WHERE group_name = $1 AND \
                 origin_node = $5 AND origin_incarnation = $6 AND origin_request = $7 \
             ), inserted AS ( \
                 INSERT INTO hedgerow_kv (group_name, revision, schema_version, key, \
                     value, term, origin_node, origin_incarnation, origin_request) \
                 SELECT $1, ({LAST}) + 1, $8, $9, $10, $2, $5, $6, $7 \
                 WHERE NOT EXISTS (SELECT 1 FROM existing) AND EXISTS ({HELD}) \
                     AND ({LAST}) < 9223372036854775807 \
                 RETURNING revision \
             ) \
             SELECT (SELECT revision FROM existing), (SELECT revision FROM inserted), ({LAST})"
        );
        let (lease, lock, insert) = futures::try_join!(
            client.prepare(&lease),
            client.prepare(&lock),
            client.prepare(&insert),
        )?;
        Ok(PutStatements {
            lease,
            lock,
            insert,
        })
    }
}
