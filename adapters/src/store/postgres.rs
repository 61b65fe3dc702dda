//! The PostgreSQL store, for groups spread over many machines. It owns one
//! lazily opened connection, driven by a private single-threaded tokio
//! runtime so the blocking [`LeaseStore`] calls work from any runtime's
//! blocking pool. The connection is closed after an idle period, so that a
//! large group whose members rarely touch the store does not hold one
//! connection per member (PostgreSQL allows 100 by default). Every call is
//! bounded in time: a dead or frozen server becomes a [`StoreError`], never
//! a hang. This module never deletes a row.
//!
//! Why tokio-postgres on a private runtime rather than the blocking
//! `postgres` crate (which wraps the same client the same way): we need a
//! client-side deadline on every call, because a frozen server or a
//! silently dropped network path leaves a query waiting forever, and no
//! server-side `statement_timeout` can end that. Owning the runtime lets us
//! put `tokio::time::timeout` around each call and drop the connection when
//! it fires.
//!
//! Why one connection and not a pool: the driver keeps at most one store
//! call in flight per node, so a second connection would only ever idle.

use std::error::Error as _;
use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, Row, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::postgres_tls::{self, SslMode};
use super::sql::{to_sql, RawRow, RawWrite, COLUMNS};
use super::LEASE_SCHEMA_VERSION;
use super::{next_version, CasOutcome, CoordStore, LeaseRow, LeaseStore, LeaseWrite, StoreError};

const SCHEMA: &str = include_str!("schema/postgres.sql");

/// How much longer than the server-side statement timeout the client
/// waits, so that a live server usually reports the timeout itself.
const CLIENT_MARGIN: Duration = Duration::from_millis(500);

/// A lease store in a PostgreSQL table.
///
/// The connection is opened on the first call, kept while calls keep
/// coming, and closed after [`idle_timeout`](PostgresStoreBuilder::idle_timeout)
/// without one (default 20 s, longer than the leader's renew interval
/// with the default 10 s lease, so the leader keeps its connection and
/// members let theirs go). A connection found dead (server restarted,
/// connection killed) is replaced on the same call when that is safe to
/// do (see below), or on the next one.
///
/// Time bounds: opening a connection (including creating the table if it
/// is missing) takes at most `connect_timeout` (default 5 s), else
/// [`StoreError::Unavailable`]; each call then takes at most
/// `statement_timeout` (default 5 s, also set on the server as the
/// session's `statement_timeout`) plus half a second, else
/// [`StoreError::Timeout`] and the connection is dropped. A call whose
/// connection turns out dead (below) may add one more connect and
/// statement to that.
///
/// A compare-and-set whose connection turns out dead is retried once on a
/// fresh connection. That is safe although the first attempt may have
/// been applied: the retry then conflicts with a row equal to the one this
/// write produces, which carries this writer's `(id, nonce)` and can only
/// be its own, and is reported as applied. (A release names no holder and
/// could in theory equal another node's release to the nanosecond; then
/// the row is exactly what this write asked for, so "applied" is still
/// what the caller needs to hear.)
///
/// TLS follows libpq's `sslmode` in the connection string: `disable`,
/// `prefer` (the default; encrypted if the server offers it, the
/// certificate unchecked), `require` (encrypted, unchecked), `verify-ca`
/// (the certificate must chain to `sslrootcert=PATH`, a PEM file) and
/// `verify-full` (and name the host connected to). Use `verify-full`
/// anywhere the network is shared. rustls on the ring provider, as the
/// cluster port.
///
/// The password may come from the connection string, or better from
/// [`password_file`](PostgresStoreBuilder::password_file) so that it
/// stays out of process lists and logs; messages never show it.
///
/// Calls must not be made from inside an async task (the store blocks on
/// its private runtime); run them on a blocking pool.
///
/// The table is created if it is missing:
///
#[doc = concat!("```sql\n", include_str!("schema/postgres.sql"), "```")]
///
/// ```no_run
/// use hedgerow::store::{LeaseStore, PostgresStore};
/// use std::time::Duration;
/// # fn main() -> Result<(), hedgerow::store::StoreError> {
/// let store = PostgresStore::builder(
///     "host=db.internal user=hedgerow dbname=hedgerow \
///      sslmode=verify-full sslrootcert=/etc/hedgerow/pg-ca.pem",
/// )
/// .password_file("/run/secrets/pg-password")
/// .connect_timeout(Duration::from_secs(2))
/// .build()?;
/// let row = store.read("web")?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PostgresStore {
    pub(super) shared: Arc<Shared>,
}

/// Options for [`PostgresStore`]; see [`PostgresStore::builder`]. Its
/// `Debug` shows the connection string with any password in it masked.
#[derive(Clone)]
pub struct PostgresStoreBuilder {
    config: String,
    connect_timeout: Duration,
    statement_timeout: Duration,
    idle_timeout: Duration,
    password: Option<Password>,
}

/// Where the password comes from, if not from the connection string.
#[derive(Clone)]
enum Password {
    Bytes(Vec<u8>),
    File(std::path::PathBuf),
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Password::Bytes(_) => f.write_str("Bytes(***)"),
            Password::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

impl std::fmt::Debug for PostgresStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStoreBuilder")
            .field("config", &redacted(&self.config))
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("password", &self.password)
            .finish()
    }
}

/// A PostgreSQL connection string (URI or `key=value` form) with every
/// password in it, `user:SECRET@` or `password=SECRET` (quoted or not),
/// as `***`: fit for logs and error messages.
///
/// ```
/// use hedgerow::store::redacted;
/// assert_eq!(redacted("postgres://app:s3cret@db/lease"), "postgres://app:***@db/lease");
/// assert_eq!(redacted("host=db password=s3cret"), "host=db password=***");
/// ```
pub fn redacted(config: &str) -> String {
    let mut out = String::with_capacity(config.len());
    let mut rest = config;
    if let Some((scheme, after)) = config.split_once("://") {
        let authority = &after[..after.find(['/', '?']).unwrap_or(after.len())];
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if let Some((user, _)) = userinfo.split_once(':') {
                out.push_str(scheme);
                out.push_str("://");
                out.push_str(user);
                out.push_str(":***");
                rest = &after[userinfo.len()..];
            }
        }
    }
    while let Some(at) = rest.find("password=") {
        let (head, tail) = rest.split_at(at + "password=".len());
        out.push_str(head);
        out.push_str("***");
        let end = match tail.strip_prefix('\'') {
            // A quoted value ends at the first quote not escaped.
            Some(quoted) => {
                let mut escaped = false;
                quoted
                    .char_indices()
                    .find(|&(_, c)| {
                        let close = c == '\'' && !escaped;
                        escaped = c == '\\' && !escaped;
                        close
                    })
                    .map_or(tail.len(), |(i, _)| i + 2)
            }
            None => tail.find([' ', '&', '\t', '\n']).unwrap_or(tail.len()),
        };
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

impl PostgresStoreBuilder {
    /// The password to log in with, overriding one in the connection
    /// string.
    pub fn password(mut self, password: impl Into<Vec<u8>>) -> Self {
        self.password = Some(Password::Bytes(password.into()));
        self
    }

    /// Reads the password from the file at `path` (one trailing newline
    /// dropped), overriding one in the connection string: when the store
    /// is built, where a missing or unreadable file fails
    /// [`build`](Self::build), and again for every new connection, so a
    /// rotated Kubernetes Secret is used from the next connection on (the
    /// password read before is kept while the file cannot be read).
    pub fn password_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.password = Some(Password::File(path.into()));
        self
    }

    /// The longest opening a connection may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The longest one call may take on an open connection, enforced by
    /// the server and, half a second later, by the client (default 5 s).
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// How long an unused connection stays open (default 20 s).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// The store. Connects to nothing yet; fails if the connection string
    /// cannot be parsed, the `sslrootcert` or password file cannot be
    /// read, or the store's runtime cannot be started.
    pub fn build(self) -> Result<PostgresStore, StoreError> {
        let invalid = |why: String| {
            StoreError::Unavailable(format!(
                "PostgreSQL lease store: the connection string is invalid: {why}"
            ))
        };
        let (rest, tls_options) = postgres_tls::split_options(&self.config).map_err(invalid)?;
        let mut config: Config = rest
            .parse()
            .map_err(|e: tokio_postgres::Error| invalid(chain(&e)))?;
        config.connect_timeout(self.connect_timeout);
        config.ssl_mode(tls_options.mode.negotiation());
        if config.get_application_name().is_none() {
            config.application_name("hedgerow");
        }
        let target = describe(&config);
        let tls = postgres_tls::client_config(&tls_options).map_err(|why| {
            StoreError::Unavailable(format!("PostgreSQL lease store {target}: {why}"))
        })?;
        let mut password_file = None;
        match self.password {
            None => {}
            Some(Password::Bytes(password)) => {
                config.password(password);
            }
            Some(Password::File(path)) => {
                let password = read_password(&path).map_err(|e| {
                    StoreError::Unavailable(format!("PostgreSQL lease store {target}: {e}"))
                })?;
                config.password(password);
                password_file = Some(path);
            }
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "PostgreSQL lease store {target}: could not start its I/O runtime: {e}"
                ))
            })?;
        let shared = Arc::new(Shared {
            config,
            password_file,
            last_password: Mutex::new(None),
            tls: Connector(MakeRustlsConnect::new(tls)),
            ssl_mode: tls_options.mode,
            target,
            connect_timeout: self.connect_timeout,
            statement_timeout: self.statement_timeout,
            idle_timeout: self.idle_timeout,
            runtime: PrivateRuntime(Some(runtime)),
            state: Mutex::new(State {
                conn: None,
                closed: false,
            }),
            wake_closer: Condvar::new(),
            coord_ready: AtomicBool::new(false),
        });
        let closer = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("hedgerow-pg-idle".into())
            .spawn(move || closer.close_idle_connections())
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "PostgreSQL lease store {}: could not start its idle-connection thread: {e}",
                    shared.target
                ))
            })?;
        Ok(PostgresStore { shared })
    }
}

impl PostgresStore {
    /// Options for a store reached with `config`, a libpq-style connection
    /// string (`host=… port=… user=… dbname=…` or `postgresql://…`).
    pub fn builder(config: impl Into<String>) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            config: config.into(),
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(20),
            password: None,
        }
    }

    /// Whether the store holds an open connection right now.
    pub fn is_connected(&self) -> bool {
        self.shared.lock().conn.is_some()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // The idle-connection thread closes the connection and exits; doing
        // it here would block, and a store may be dropped inside a task.
        self.shared.lock().closed = true;
        self.shared.wake_closer.notify_all();
    }
}

#[derive(Debug)]
pub(super) struct Shared {
    config: Config,
    /// Read again for every new connection, so a rotated Secret is used
    /// once the server has the new password; the last password read is
    /// kept for when the file cannot be read.
    password_file: Option<std::path::PathBuf>,
    last_password: Mutex<Option<Vec<u8>>>,
    tls: Connector,
    ssl_mode: SslMode,
    /// Where the store points, for messages (never the password).
    pub(super) target: String,
    connect_timeout: Duration,
    statement_timeout: Duration,
    idle_timeout: Duration,
    runtime: PrivateRuntime,
    state: Mutex<State>,
    /// Wakes the idle-connection thread: a connection opened or the store
    /// was dropped.
    wake_closer: Condvar,
    /// Whether this store made sure the coordination tables exist.
    pub(super) coord_ready: AtomicBool,
}

/// The TLS connector (rustls' configuration shows nothing useful in
/// `Debug`).
struct Connector(MakeRustlsConnect);

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connector")
    }
}

#[derive(Debug)]
struct State {
    conn: Option<Conn>,
    closed: bool,
}

#[derive(Debug)]
pub(super) struct Conn {
    pub(super) client: Client,
    task: JoinHandle<()>,
    read: Statement,
    insert: Statement,
    update: Statement,
    /// The coordination put's statements, prepared on the first put (the
    /// tables may not exist before).
    pub(super) put: std::sync::OnceLock<super::postgres_coord::PutStatements>,
    last_used: Instant,
}

/// The store's runtime; shut down without blocking, so that the last
/// reference may go anywhere, inside an async task too.
#[derive(Debug)]
struct PrivateRuntime(Option<Runtime>);

impl PrivateRuntime {
    fn block_on<F: Future>(&self, future: F) -> Result<F::Output, StoreError> {
        match &self.0 {
            Some(runtime) => Ok(runtime.block_on(future)),
            None => Err(StoreError::Unavailable(
                "PostgreSQL lease store is shutting down".into(),
            )),
        }
    }

    /// `future` with a deadline. The timer must be made inside the
    /// runtime, hence the async block.
    fn block_on_within<F: Future>(
        &self,
        limit: Duration,
        future: F,
    ) -> Result<Result<F::Output, tokio::time::error::Elapsed>, StoreError> {
        self.block_on(async { tokio::time::timeout(limit, future).await })
    }
}

impl Drop for PrivateRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Why one attempt of a call failed.
pub(super) enum Failure {
    Pg(tokio_postgres::Error),
    TimedOut,
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Pg(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

impl Failure {
    /// The connection died under the call (server restarted, connection
    /// killed): a fresh connection may well succeed.
    fn connection_lost(&self) -> bool {
        let Failure::Pg(e) = self else { return false };
        e.is_closed()
            || e.source().is_some_and(|s| s.is::<std::io::Error>())
            || matches!(
                e.code(),
                Some(&SqlState::ADMIN_SHUTDOWN) | Some(&SqlState::CRASH_SHUTDOWN)
            )
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if something did, the
        // state (an optional connection) is still whole.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `attempt` on the connection, opening one if there is none. A
    /// failure drops the connection; if it was an old connection that
    /// turned out dead, `attempt` runs once more on a fresh one (and is
    /// told so).
    pub(super) fn call<T>(
        &self,
        op: &str,
        attempt: impl Fn(&Self, &Conn, bool) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        let mut state = self.lock();
        let mut retry = false;
        loop {
            let reused = state.conn.is_some();
            let conn = match &mut state.conn {
                Some(conn) => conn,
                conn @ None => {
                    let fresh = self.connect(op)?;
                    self.wake_closer.notify_all();
                    conn.insert(fresh)
                }
            };
            match attempt(self, conn, retry) {
                Ok(value) => {
                    conn.last_used = Instant::now();
                    return Ok(value);
                }
                Err(failure) => {
                    if let Some(conn) = state.conn.take() {
                        self.close(conn);
                    }
                    if reused && !retry && failure.connection_lost() {
                        tracing::debug!(target = %self.target, op, "lease store connection was dead; reconnecting");
                        retry = true;
                        continue;
                    }
                    let error = self.classify(op, failure);
                    tracing::debug!(target = %self.target, op, %error, "lease store call failed");
                    return Err(error);
                }
            }
        }
    }

    /// Opens a connection, sets its session timeouts, creates the table if
    /// it is missing and prepares the statements, all within the connect
    /// timeout.
    fn connect(&self, op: &str) -> Result<Conn, StoreError> {
        let config = self.connect_config();
        let opened = self.runtime.block_on_within(self.connect_timeout, async {
            let (client, connection) = config.connect(self.tls.0.clone()).await?;
            let task = tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %chain(&e), "lease store connection ended");
                }
            });
            match prepare(&client, self.statement_timeout).await {
                Ok((read, insert, update)) => Ok(Conn {
                    client,
                    task,
                    read,
                    insert,
                    update,
                    put: std::sync::OnceLock::new(),
                    last_used: Instant::now(),
                }),
                Err(e) => {
                    task.abort();
                    Err(e)
                }
            }
        })?;
        match opened {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(self.classify(&format!("{op}, connecting"), Failure::Pg(e))),
            Err(_elapsed) => Err(StoreError::Unavailable(format!(
                "PostgreSQL lease store {} ({op}): could not connect within {:?}; check that the \
                 server is up and reachable",
                self.target, self.connect_timeout
            ))),
        }
    }

    /// The configuration a new connection logs in with: the password
    /// file as it is now, or the last password read if it cannot be read.
    fn connect_config(&self) -> std::borrow::Cow<'_, Config> {
        let Some(path) = &self.password_file else {
            return std::borrow::Cow::Borrowed(&self.config);
        };
        let mut last = self.last_password.lock().unwrap_or_else(|p| p.into_inner());
        match read_password(path) {
            Ok(password) => *last = Some(password),
            Err(e) => tracing::warn!(
                store = %self.target,
                error = %e,
                "lease store: logging in with the password read before"
            ),
        }
        match &*last {
            Some(password) => {
                let mut config = self.config.clone();
                config.password(password.clone());
                std::borrow::Cow::Owned(config)
            }
            None => std::borrow::Cow::Borrowed(&self.config),
        }
    }

    /// Ends a connection politely, without waiting on a server that does
    /// not answer.
    fn close(&self, conn: Conn) {
        let Conn {
            client, mut task, ..
        } = conn;
        drop(client);
        if let Ok(Err(_elapsed)) = self
            .runtime
            .block_on_within(Duration::from_millis(500), &mut task)
        {
            task.abort();
        }
    }

    /// Runs `future` on the runtime within the client-side deadline.
    pub(super) fn run<T>(
        &self,
        future: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        match self
            .runtime
            .block_on_within(self.statement_timeout + CLIENT_MARGIN, future)?
        {
            Ok(result) => result,
            Err(_elapsed) => Err(Failure::TimedOut),
        }
    }

    /// The idle-connection thread: closes the connection once it has gone
    /// unused for the idle timeout, and everything when the store is
    /// dropped.
    fn close_idle_connections(&self) {
        let mut state = self.lock();
        loop {
            if state.closed {
                if let Some(conn) = state.conn.take() {
                    self.close(conn);
                }
                return;
            }
            let wait = match &state.conn {
                Some(conn) => {
                    let idle = conn.last_used.elapsed();
                    if idle >= self.idle_timeout {
                        if let Some(conn) = state.conn.take() {
                            tracing::debug!(target = %self.target, "closing idle lease store connection");
                            self.close(conn);
                        }
                        continue;
                    }
                    self.idle_timeout - idle
                }
                None => Duration::from_secs(3600),
            };
            state = match self.wake_closer.wait_timeout(state, wait) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    fn classify(&self, op: &str, failure: Failure) -> StoreError {
        let at = format!("PostgreSQL lease store {} ({op})", self.target);
        let e = match failure {
            Failure::Store(e) => return e,
            Failure::TimedOut => return StoreError::Timeout,
            Failure::Pg(e) => e,
        };
        let Some(db) = e.as_db_error() else {
            if let Some(tls) = postgres_tls::tls_failure(&e) {
                return StoreError::Unavailable(format!(
                    "{at}: TLS with the server failed ({tls}); with sslmode={} the server's \
                     certificate must {}",
                    self.ssl_mode.name(),
                    match self.ssl_mode {
                        SslMode::VerifyFull =>
                            "chain to sslrootcert and name the host in the connection string",
                        SslMode::VerifyCa => "chain to sslrootcert",
                        _ => "be usable for TLS",
                    }
                ));
            }
            if e.is_closed() {
                return StoreError::Unavailable(format!(
                    "{at}: the connection was closed; the next call opens a new one"
                ));
            }
            return StoreError::Unavailable(format!("{at}: {}", chain(&e)));
        };
        let code = db.code();
        let text = format!("{}: {}", db.severity(), db.message());
        if *code == SqlState::QUERY_CANCELED {
            StoreError::Timeout
        } else if *code == SqlState::TOO_MANY_CONNECTIONS {
            StoreError::Unavailable(format!(
                "{at}: the server refused the connection ({text}); raise max_connections, put a \
                 pooler in front of the server, or make fewer nodes candidates"
            ))
        } else if [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
        ]
        .contains(code)
        {
            StoreError::Unavailable(format!(
                "{at}: the server is shutting down or starting up ({text})"
            ))
        } else if [
            SqlState::UNDEFINED_TABLE,
            SqlState::UNDEFINED_COLUMN,
            SqlState::DATATYPE_MISMATCH,
            SqlState::CHECK_VIOLATION,
        ]
        .contains(code)
        {
            StoreError::Corrupt(format!(
                "{at}: {text}; table hedgerow_lease does not have the layout this build of \
                 hedgerow creates"
            ))
        } else {
            StoreError::Unavailable(format!("{at}: {text} (SQLSTATE {})", code.code()))
        }
    }
}

/// Sets the session's timeouts, creates the table if it is missing, and
/// prepares the three statements every call uses.
async fn prepare(
    client: &Client,
    statement_timeout: Duration,
) -> Result<(Statement, Statement, Statement), tokio_postgres::Error> {
    client
        .batch_execute(&format!(
            "SET statement_timeout = {}",
            statement_timeout.as_millis().max(1)
        ))
        .await?;
    // Look before creating: a role without CREATE rights can still use a
    // table an operator made, and concurrent CREATE TABLE IF NOT EXISTS
    // can fail on PostgreSQL's catalog even though the table then exists.
    let exists: Option<String> = client
        .query_one("SELECT to_regclass('hedgerow_lease')::text", &[])
        .await?
        .try_get(0)?;
    if exists.is_none() {
        if let Err(e) = client.batch_execute(SCHEMA).await {
            let raced = [
                SqlState::UNIQUE_VIOLATION,
                SqlState::DUPLICATE_TABLE,
                SqlState::DUPLICATE_OBJECT,
            ];
            if !e.code().is_some_and(|code| raced.contains(code)) {
                return Err(e);
            }
        }
    }
    let read = client
        .prepare(&format!(
            "SELECT {COLUMNS} FROM hedgerow_lease WHERE name = $1"
        ))
        .await?;
    let insert = client
        .prepare(
            "INSERT INTO hedgerow_lease (name, schema_version, holder_id, holder_nonce, \
             holder_addr, token, expires_ns, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (name) DO NOTHING",
        )
        .await?;
    let update = client
        .prepare(
            "UPDATE hedgerow_lease SET holder_id = $3, holder_nonce = $4, holder_addr = $5, \
             token = $6, expires_ns = $7, version = $8 \
             WHERE name = $1 AND version = $2 AND schema_version = $9",
        )
        .await?;
    Ok((read, insert, update))
}

/// The password in `path`, without one trailing newline (a Secret's
/// file usually ends in one).
fn read_password(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let mut password = std::fs::read(path)
        .map_err(|e| format!("cannot read the password file {}: {e}", path.display()))?;
    if password.ends_with(b"\n") {
        password.pop();
        if password.ends_with(b"\r") {
            password.pop();
        }
    }
    Ok(password)
}

pub(super) fn schema_version() -> i32 {
    i32::try_from(LEASE_SCHEMA_VERSION).unwrap_or(i32::MAX)
}

pub(super) fn decode(row: &Row) -> Result<RawRow, tokio_postgres::Error> {
    Ok(RawRow {
        schema_version: i64::from(row.try_get::<_, i32>(0)?),
        holder_id: row.try_get(1)?,
        holder_nonce: row.try_get(2)?,
        holder_addr: row.try_get(3)?,
        token: row.try_get(4)?,
        expires_ns: row.try_get(5)?,
        version: row.try_get(6)?,
    })
}

impl Shared {
    async fn read_row(&self, conn: &Conn, group: &str) -> Result<Option<LeaseRow>, Failure> {
        let Some(row) = conn.client.query_opt(&conn.read, &[&group]).await? else {
            return Ok(None);
        };
        let raw = decode(&row).map_err(|e| {
            StoreError::Corrupt(format!(
                "PostgreSQL lease store {}: the lease row of group {group:?} does not read as \
                 this build of hedgerow expects ({}); check the layout of table hedgerow_lease",
                self.target,
                chain(&e)
            ))
        })?;
        Ok(Some(raw.decode(
            &format!("PostgreSQL lease store {}", self.target),
            group,
        )?))
    }

    async fn cas(
        &self,
        conn: &Conn,
        group: &str,
        expected_version: Option<u64>,
        write: &LeaseWrite,
        retry: bool,
    ) -> Result<CasOutcome, Failure> {
        let version = match next_version(group, expected_version) {
            Ok(v) => v,
            // Only a row at u64::MAX can match; anything else conflicts.
            Err(e) => {
                let current = self.read_row(conn, group).await?;
                if current.as_ref().map(|r| r.version) != expected_version {
                    return Ok(CasOutcome::Conflict(current));
                }
                return Err(e.into());
            }
        };
        let w = RawWrite::new(write);
        let changed = match expected_version {
            None => {
                conn.client
                    .execute(
                        &conn.insert,
                        &[
                            &group,
                            &schema_version(),
                            &w.holder_id,
                            &w.holder_nonce,
                            &w.holder_addr,
                            &w.token,
                            &w.expires_ns,
                            &to_sql(version),
                        ],
                    )
                    .await?
            }
            Some(expected) => {
                conn.client
                    .execute(
                        &conn.update,
                        &[
                            &group,
                            &to_sql(expected),
                            &w.holder_id,
                            &w.holder_nonce,
                            &w.holder_addr,
                            &w.token,
                            &w.expires_ns,
                            &to_sql(version),
                            &schema_version(),
                        ],
                    )
                    .await?
            }
        };
        let mine = write.clone().into_row(version);
        if changed == 1 {
            return Ok(CasOutcome::Applied(mine));
        }
        let current = self.read_row(conn, group).await?;
        if retry && current.as_ref() == Some(&mine) {
            // The attempt on the dead connection was applied after all.
            return Ok(CasOutcome::Applied(mine));
        }
        Ok(CasOutcome::Conflict(current))
    }
}

impl LeaseStore for PostgresStore {
    fn read(&self, group: &str) -> Result<Option<LeaseRow>, StoreError> {
        self.shared.call("read", |shared, conn, _retry| {
            shared.run(shared.read_row(conn, group))
        })
    }

    fn compare_and_set(
        &self,
        group: &str,
        expected_version: Option<u64>,
        write: &LeaseWrite,
    ) -> Result<CasOutcome, StoreError> {
        self.shared.call("compare-and-set", |shared, conn, retry| {
            shared.run(shared.cas(conn, group, expected_version, write, retry))
        })
    }

    /// The coordination tables, in the same database (`postgres_coord.rs`).
    fn coord(&self) -> Option<&dyn CoordStore> {
        Some(self)
    }
}

/// Where a configuration points: hosts, ports and database, no secrets.
fn describe(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    format!(
        "{}:{}/{}",
        if hosts.is_empty() {
            "localhost".into()
        } else {
            hosts.join(",")
        },
        if ports.is_empty() {
            "5432".into()
        } else {
            ports.join(",")
        },
        config.get_dbname().or(config.get_user()).unwrap_or("")
    )
}

/// An error with its causes, which tokio-postgres keeps out of `Display`.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_builder_never_shows_a_password_from_its_connection_string() {
        for (config, shown) in [
            (
                "postgres://app:s3cret@db:5432/lease?sslmode=verify-full",
                "postgres://app:***@db:5432/lease?sslmode=verify-full",
            ),
            (
                "postgresql://app:p@ss@db/lease?password=other&sslmode=require",
                "postgresql://app:***@db/lease?password=***&sslmode=require",
            ),
            ("postgres://app@db/lease", "postgres://app@db/lease"),
            (
                "host=db user=app password=s3cret dbname=lease",
                "host=db user=app password=*** dbname=lease",
            ),
            (
                r"host=db password='it\'s secret' user=app",
                "host=db password=*** user=app",
            ),
            ("host=db password=", "host=db password=***"),
        ] {
            assert_eq!(redacted(config), shown, "{config}");
        }
        let debug = format!(
            "{:?}",
            PostgresStore::builder("postgres://app:s3cret@db/lease")
        );
        assert!(!debug.contains("s3cret"), "{debug}");
        let debug = format!("{:?}", PostgresStore::builder("h").password("s3cret"));
        assert!(!debug.contains("s3cret"), "{debug}");
    }
}
