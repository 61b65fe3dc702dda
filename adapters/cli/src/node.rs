//! `hedgerow node`: one member of a cluster plus its HTTP control API.
//!
//! It owns turning flags into a store, a clock and a `Config`, the built-in
//! echo handlers, the HTTP routes and the graceful stop (SIGTERM, Ctrl-C,
//! or stdin closing when `--exit-on-stdin-eof` is set). It decides nothing
//! about leases or membership: that is the library's job.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::{ArgAction, Args, ValueEnum};
use futures::channel::mpsc;
use futures::StreamExt;
use hedgerow::store::{LeaseStore, MemoryStore, PostgresStore, SqliteStore};
use hedgerow::tls::rustls::ServerConfig;
use hedgerow::{Config, Hedgerow, Tls};
use hedgerow_clock::{Clock, ClockConfig};
use serde::Serialize;
use serde_json::{json, Value};

use crate::auth::{self, Token};
use crate::coord::{self, Coord};
use crate::errors::error_response;
use crate::https::TlsListener;
use crate::metrics;
use crate::page;
use crate::{advertise, probes, startup};

/// Where the HTTP control API listens unless `--http` says otherwise, and
/// where `hedgerow kv` looks for it.
pub const DEFAULT_HTTP: &str = "127.0.0.1:7947";

/// Flags of `hedgerow node`; each can also come from its `HEDGEROW_*`
/// environment variable.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// Cluster name: nodes with another name are refused, and the lease row
    /// is keyed by it.
    #[arg(long, env = "HEDGEROW_CLUSTER")]
    pub cluster: String,
    /// This node's id, unique among the live members (e.g. the pod name).
    #[arg(long, env = "HEDGEROW_ID")]
    pub id: String,
    /// Where the cluster port listens (HOST:PORT; port 0 picks a free one).
    #[arg(long, env = "HEDGEROW_LISTEN")]
    pub listen: String,
    /// The address peers dial (HOST:PORT, or :PORT for this machine's
    /// first non-loopback address); default: --listen. Must not be a
    /// wildcard address like 0.0.0.0 when other machines join.
    #[arg(long, env = "HEDGEROW_ADVERTISE")]
    pub advertise: Option<String>,
    /// The lease store every node of the cluster shares:
    /// `sqlite:PATH`, `postgres://USER@HOST:PORT/DB` (or `postgresql://…`),
    /// or `memory` (this process only: useful for a single node).
    #[arg(long, env = "HEDGEROW_STORE", value_parser = parse_store)]
    pub store: StoreSpec,
    /// A file holding the PostgreSQL password (one trailing newline
    /// ignored), so that it is in neither the URL nor the environment;
    /// it overrides a password in the URL.
    #[arg(long, env = "HEDGEROW_STORE_PASSWORD_FILE")]
    pub store_password_file: Option<PathBuf>,
    /// Where the HTTP control API listens (HOST:PORT; port 0 picks a free
    /// one). Loopback by default: it has no authentication.
    #[arg(long, env = "HEDGEROW_HTTP", default_value = DEFAULT_HTTP)]
    pub http: SocketAddr,
    /// Which clock: `auto` (ClockBound v2, then v1, then the system clock
    /// only if --clock-bound-ms is given), `clockbound`, or `system` (needs
    /// --clock-bound-ms).
    #[arg(long, env = "HEDGEROW_CLOCK", value_enum, default_value_t = ClockKind::Auto)]
    pub clock: ClockKind,
    /// The error bound you assert for the system clock, in ms. Giving it
    /// lets a system clock lead (with --clock system, or as auto's fallback).
    #[arg(long, env = "HEDGEROW_CLOCK_BOUND_MS")]
    pub clock_bound_ms: Option<u64>,
    /// Timing preset the flags below adjust: `lan` (lease 10 s), `local`
    /// (lease 2 s, for one machine), `wan` (lease 30 s).
    #[arg(long, env = "HEDGEROW_PRESET", value_enum, default_value_t = Preset::Lan)]
    pub preset: Preset,
    /// Lease duration in ms (renewed every third of it).
    #[arg(long, env = "HEDGEROW_LEASE_MS")]
    pub lease_ms: Option<u64>,
    /// Heartbeat interval in ms.
    #[arg(long, env = "HEDGEROW_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    /// Silence in ms after which the leader drops a member (and a member
    /// thinks the leader unreachable); must exceed the heartbeat.
    #[arg(long, env = "HEDGEROW_FAILURE_TIMEOUT_MS")]
    pub failure_timeout_ms: Option<u64>,
    /// How view changes reach the members: `relay[:FANOUT[:ABOVE]]`
    /// (default `relay:32:256`: pushed by the leader up to 256 members,
    /// relayed down a tree of members above), `push` (always by the
    /// leader) or `pull` (on heartbeats). Give every node the same.
    #[arg(long, env = "HEDGEROW_VIEW_SPREAD", default_value_t = hedgerow::ViewSpread::DEFAULT)]
    pub view_spread: hedgerow::ViewSpread,
    /// Whether this node may ever lead.
    #[arg(long, env = "HEDGEROW_CANDIDATE", action = ArgAction::Set, default_value_t = true)]
    pub candidate: bool,
    /// Metadata other members see for this node (UTF-8 text).
    #[arg(long, env = "HEDGEROW_META")]
    pub meta: Option<String>,
    /// How long a node waits at start for its store to answer, in ms; it
    /// exits with the store's error if it does not (a wrong URL never
    /// leaves a node running that can neither lead nor follow).
    #[arg(long, env = "HEDGEROW_STORE_WAIT_MS", default_value_t = 30_000)]
    pub store_wait_ms: u64,
    /// Leave gracefully when standard input closes, so a node started by a
    /// supervisor (the demo, the tests) never outlives it.
    #[arg(long, env = "HEDGEROW_EXIT_ON_STDIN_EOF")]
    pub exit_on_stdin_eof: bool,
    /// Mutual TLS on the cluster port. Default: on when --tls-ca,
    /// --tls-cert and --tls-key are given, off when none is; `on` without
    /// them is an error. `hedgerow certs` makes the files.
    #[arg(long, env = "HEDGEROW_TLS", value_enum)]
    pub tls: Option<Toggle>,
    /// The CA bundle (PEM) every peer's certificate must chain to.
    #[arg(long, env = "HEDGEROW_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This node's certificate (PEM); it must name
    /// `hedgerow://CLUSTER/ID`. Re-read when it changes.
    #[arg(long, env = "HEDGEROW_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, env = "HEDGEROW_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// TLS on the control API, with this node's --tls-cert and --tls-key
    /// (re-read when they change): `on` needs TLS on the cluster port.
    /// HTTPS clients check the certificate's host names, so make it with
    /// `hedgerow certs --host NAME` for every name the API is reached by.
    #[arg(long, env = "HEDGEROW_HTTP_TLS", value_enum, default_value_t = Toggle::Off)]
    pub http_tls: Toggle,
    /// A file holding the control API's bearer token: every request but
    /// the probes (/v1/live, /v1/ready) must send `Authorization: Bearer
    /// TOKEN`. Required when --http is not a loopback address.
    #[arg(long, env = "HEDGEROW_HTTP_TOKEN_FILE")]
    pub http_token_file: Option<PathBuf>,
}

/// `--tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Toggle {
    /// On.
    On,
    /// Off.
    Off,
}

/// `--clock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClockKind {
    /// ClockBound v2, then v1, then the system clock with --clock-bound-ms.
    Auto,
    /// ClockBound only; fail if no segment can be opened.
    Clockbound,
    /// The system clock with the bound given by --clock-bound-ms.
    System,
}

/// `--preset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// One data centre: lease 10 s, heartbeat 1 s, failure timeout 3 s.
    Lan,
    /// One machine: lease 2 s, heartbeat 200 ms, failure timeout 600 ms.
    Local,
    /// Slow links: lease 30 s, heartbeat 3 s, failure timeout 10 s.
    Wan,
}

/// A parsed `--store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// `sqlite:PATH`.
    Sqlite(String),
    /// `postgres://…` or `postgresql://…`, passed to the client as is.
    Postgres(String),
    /// `memory`.
    Memory,
}

impl std::fmt::Display for StoreSpec {
    /// The store as `--store` names it, without a PostgreSQL URL's
    /// password: fit for logs and errors.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSpec::Sqlite(path) => write!(f, "sqlite:{path}"),
            StoreSpec::Postgres(url) => f.write_str(&hedgerow::store::redacted(url)),
            StoreSpec::Memory => f.write_str("memory"),
        }
    }
}

fn parse_store(s: &str) -> Result<StoreSpec, String> {
    if s == "memory" {
        Ok(StoreSpec::Memory)
    } else if let Some(path) = s.strip_prefix("sqlite:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err("sqlite: needs a file path, e.g. sqlite:/var/lib/app/lease.db".into());
        }
        Ok(StoreSpec::Sqlite(path.to_owned()))
    } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        Ok(StoreSpec::Postgres(s.to_owned()))
    } else {
        Err(format!(
            "unknown store {s:?}: expected sqlite:PATH, postgres://USER@HOST:PORT/DB or memory"
        ))
    }
}

impl NodeArgs {
    /// The configuration the flags describe, checked.
    fn config(&self) -> Result<Config, String> {
        let mut cfg = match self.preset {
            Preset::Lan => Config::lan(self.cluster.clone()),
            Preset::Local => Config::local(self.cluster.clone()),
            Preset::Wan => Config::wan(self.cluster.clone()),
        };
        if let Some(ms) = self.lease_ms {
            cfg.lease_duration = Duration::from_millis(ms);
        }
        if let Some(ms) = self.heartbeat_ms {
            cfg.heartbeat_interval = Duration::from_millis(ms);
        }
        if let Some(ms) = self.failure_timeout_ms {
            cfg.failure_timeout = Duration::from_millis(ms);
        }
        cfg.candidate = self.candidate;
        cfg.view_spread = self.view_spread;
        // DESIGN.md "Which clocks may lead": an assumed bound leads only
        // when the operator gave one explicitly.
        cfg.lead_on_assumed_clock = self.clock_bound_ms.is_some();
        cfg.validate().map_err(|e| {
            format!("{e} (check --lease-ms, --heartbeat-ms and --failure-timeout-ms)")
        })?;
        Ok(cfg)
    }

    /// The address peers dial: `--advertise`, else `--listen` unless that
    /// is a wildcard (peers cannot dial 0.0.0.0).
    fn advertise(&self) -> Result<String, String> {
        if let Some(a) = &self.advertise {
            return advertise::resolve(a);
        }
        let host = self
            .listen
            .rsplit_once(':')
            .map(|(h, _)| h.trim_matches(['[', ']']))
            .ok_or_else(|| format!("--listen {}: expected HOST:PORT", self.listen))?;
        if host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified())
        {
            return Err(format!(
                "--listen {} is a wildcard address peers cannot dial: also give --advertise \
                 HOST:PORT (this machine's address on the cluster network)",
                self.listen
            ));
        }
        Ok(self.listen.clone())
    }

    /// The TLS the flags ask for; see [`NodeArgs::tls`].
    fn tls(&self) -> Result<Option<Tls>, String> {
        let files = [
            ("--tls-ca", &self.tls_ca),
            ("--tls-cert", &self.tls_cert),
            ("--tls-key", &self.tls_key),
        ];
        let given: Vec<&str> = files
            .iter()
            .filter(|(_, f)| f.is_some())
            .map(|(n, _)| *n)
            .collect();
        match (self.tls, given.len()) {
            (Some(Toggle::Off), 0) | (None, 0) => Ok(None),
            (Some(Toggle::Off), _) => Err(format!(
                "--tls off with {}: drop those, or turn TLS on",
                given.join(", ")
            )),
            (_, 3) => match files {
                [(_, Some(ca)), (_, Some(cert)), (_, Some(key))] => {
                    Ok(Some(Tls::from_files(ca, cert, key)))
                }
                _ => Err("--tls-ca, --tls-cert and --tls-key are needed together".into()),
            },
            _ => {
                let missing: Vec<&str> = files
                    .iter()
                    .filter(|(_, f)| f.is_none())
                    .map(|(n, _)| *n)
                    .collect();
                Err(format!(
                    "TLS needs --tls-ca, --tls-cert and --tls-key; missing {} (`hedgerow certs` \
                     makes them)",
                    missing.join(", ")
                ))
            }
        }
    }

    fn clock_config(&self) -> Result<ClockConfig, String> {
        let bound = match self.clock_bound_ms {
            Some(0) => {
                return Err(
                    "--clock-bound-ms must be at least 1: a bound of 0 claims a perfect \
                            clock"
                        .into(),
                )
            }
            Some(ms) => Some(Duration::from_millis(ms)),
            None => None,
        };
        Ok(match self.clock {
            ClockKind::Auto => ClockConfig::Auto { bound },
            ClockKind::Clockbound => {
                if bound.is_some() {
                    return Err(
                        "--clock-bound-ms is for --clock system or auto; with --clock \
                                clockbound the bound comes from ClockBound"
                            .into(),
                    );
                }
                ClockConfig::ClockBound { path: None }
            }
            ClockKind::System => ClockConfig::System {
                bound: bound.ok_or(
                    "--clock system needs --clock-bound-ms N: the error bound you assert for \
                     this machine's clock",
                )?,
            },
        })
    }

    fn open_store(&self) -> Result<Box<dyn LeaseStore>, String> {
        if let (Some(_), StoreSpec::Memory | StoreSpec::Sqlite(_)) =
            (&self.store_password_file, &self.store)
        {
            return Err(format!(
                "--store-password-file is for a postgres:// store, not --store {}",
                self.store
            ));
        }
        Ok(match &self.store {
            StoreSpec::Memory => {
                tracing::warn!(
                    "--store memory keeps the lease in this process only: other processes \
                     cannot share it, so use it for a single node"
                );
                Box::new(MemoryStore::new())
            }
            StoreSpec::Sqlite(path) => Box::new(
                SqliteStore::open(path).map_err(|e| format!("--store sqlite:{path}: {e}"))?,
            ),
            StoreSpec::Postgres(url) => {
                let mut builder = PostgresStore::builder(url.clone());
                if let Some(file) = &self.store_password_file {
                    builder = builder.password_file(file);
                }
                Box::new(
                    builder
                        .build()
                        .map_err(|e| format!("--store postgres: {e}"))?,
                )
            }
        })
    }
}

/// Runs a node until SIGTERM, Ctrl-C or (with `--exit-on-stdin-eof`) the
/// end of standard input, then leaves gracefully.
pub fn run(args: NodeArgs) -> Result<ExitCode, String> {
    let config = args.config()?;
    let clock_config = args.clock_config()?;
    args.advertise()?;
    let tls = args.tls()?;
    let https = match (&tls, args.http_tls) {
        (_, Toggle::Off) => None,
        (Some(tls), Toggle::On) => Some(
            tls.https_server()
                .map_err(|e| format!("--http-tls on: {e}"))?,
        ),
        (None, Toggle::On) => {
            return Err(
                "--http-tls on serves the node's certificate: also give --tls-ca, \
                 --tls-cert and --tls-key (`hedgerow certs` makes them)"
                    .into(),
            )
        }
    };
    if tls.is_none() && !listens_on_loopback(&args.listen) {
        tracing::warn!(
            listen = %args.listen,
            "the cluster port has TLS off and listens beyond loopback: anyone who reaches it \
             can join; keep it on a private network or turn TLS on (hedgerow certs)"
        );
    }
    let token = match &args.http_token_file {
        Some(path) => Some(Arc::new(Token::from_file(path)?)),
        None if !args.http.ip().is_loopback() => {
            return Err(format!(
                "--http {} is not a loopback address: give --http-token-file FILE so that \
                 only holders of the token can drive this node",
                args.http
            ))
        }
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("could not start the async runtime: {e}"))?;
    runtime.block_on(serve(args, config, clock_config, tls, https, token))
}

/// Whether `listen` (HOST:PORT) is a loopback address.
fn listens_on_loopback(listen: &str) -> bool {
    listen
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']))
        .is_some_and(|h| {
            h == "localhost"
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        })
}

struct App {
    node: Hedgerow,
    cluster: String,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
}

async fn serve(
    args: NodeArgs,
    config: Config,
    clock_config: ClockConfig,
    tls: Option<Tls>,
    https: Option<Arc<ServerConfig>>,
    token: Option<Arc<Token>>,
) -> Result<ExitCode, String> {
    // Opening a clock or a store may block (files, DNS): off the runtime.
    let (clock, store) = {
        let args = args.clone();
        tokio::task::spawn_blocking(move || -> Result<_, String> {
            let clock = clock_config.open().map_err(|e| format!("clock: {e}"))?;
            let store = args.open_store()?;
            let wait = Duration::from_millis(args.store_wait_ms);
            startup::reach_store(&*store, &args.cluster, &args.store.to_string(), wait)?;
            Ok((clock, store))
        })
        .await
        .map_err(|e| format!("startup task failed: {e}"))??
    };
    // Bind the control port first: a taken port fails before this node
    // joins the cluster.
    let http = tokio::net::TcpListener::bind(args.http)
        .await
        .map_err(|e| format!("--http {}: {e}", args.http))?;
    let clock_described = clock.describe();
    // Before the node starts, so its series are registered with it.
    let exporter = metrics::exporter()?;
    tokio::spawn(upkeep(exporter.clone()));
    let lease = config.lease_duration;

    // The broadcast handler reports the node's current term, so it needs
    // the node it belongs to, which exists only after start(). (This makes
    // a cycle node -> handler -> node; the node is stopped explicitly by
    // leave() or shutdown(), never by dropping handles.)
    let me: Arc<OnceLock<Hedgerow>> = Arc::new(OnceLock::new());
    let id = args.id.clone();
    let broadcast_me = me.clone();
    let broadcast_id = args.id.clone();
    let advertise = args.advertise()?;
    let mut builder = Hedgerow::builder(args.cluster.clone(), args.id.clone(), advertise);
    if let Some(tls) = tls {
        builder = builder.tls(tls);
    }
    let node = builder
        .listen(args.listen.clone())
        .store(store)
        .clock(clock)
        .config(move |c| *c = config)
        .leader_handler(move |req| {
            let reply = echo(&id, req.term.0, &req.from.to_string(), &req.payload);
            async move { Ok(reply) }
        })
        .broadcast_handler(move |b| {
            let term = broadcast_me.get().map_or(0, |n| n.term().0);
            let reply = echo(&broadcast_id, term, &b.from.to_string(), &b.payload);
            async move { Ok(reply) }
        })
        .start()
        .await
        .map_err(|e| format!("could not start the node: {e}"))?;
    let _ = me.set(node.clone());
    if let Some(meta) = &args.meta {
        node.set_meta(meta.as_bytes().to_vec())
            .await
            .map_err(|e| format!("--meta: {e}"))?;
    }

    let http_addr = http
        .local_addr()
        .map_err(|e| format!("--http {}: {e}", args.http))?;
    tracing::info!(
        id = %args.id,
        cluster = %args.cluster,
        addr = %node.addr(),
        http = %http_addr,
        http_tls = https.is_some(),
        clock = %clock_described,
        "node started"
    );
    // One machine-readable line on stdout, for supervisors (the demo, the
    // tests) that started us on port 0.
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "ready id={} addr={} http={}",
            args.id,
            node.addr(),
            http_addr
        );
        let _ = out.flush();
    }

    let app = Arc::new(App {
        node: node.clone(),
        cluster: args.cluster.clone(),
        metrics: exporter,
    });
    let routes = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/send", post(send))
        .route("/v1/broadcast", post(broadcast))
        .route("/metrics", get(metrics_text))
        .with_state(app)
        .merge(coord::routes(Arc::new(Coord::new(node.clone()))))
        .merge(page::routes(&node))
        .merge(probes::routes(node.clone()));
    // Last, over the finished router: every route above (and any added
    // before this line) needs the token.
    let routes = auth::guard(routes, token);

    let (stop_tx, mut stop_rx) = mpsc::unbounded::<&'static str>();
    watch_signals(stop_tx.clone())?;
    if args.exit_on_stdin_eof {
        watch_stdin(stop_tx.clone());
    }
    let (http_stop_tx, http_stop_rx) = futures::channel::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let stopped = async move {
            let _ = http_stop_rx.await;
        };
        match https {
            Some(config) => {
                axum::serve(TlsListener::new(http, config), routes)
                    .with_graceful_shutdown(stopped)
                    .await
            }
            None => {
                axum::serve(http, routes)
                    .with_graceful_shutdown(stopped)
                    .await
            }
        }
    });

    let why = stop_rx.next().await.unwrap_or("no more stop sources");
    tracing::info!(reason = why, "leaving the cluster");
    // Leave first (the lease is released, a successor need not wait for it
    // to expire), then stop answering HTTP.
    let limit = lease + Duration::from_secs(2);
    let code = match tokio::time::timeout(limit, node.leave()).await {
        Ok(Ok(())) => {
            tracing::info!("left gracefully");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "leave could not be confirmed; a held lease lapses on its own");
            ExitCode::SUCCESS
        }
        Err(_) => {
            tracing::warn!(
                "leave took longer than the lease; stopping anyway (a held lease lapses on its own)"
            );
            node.shutdown().await;
            ExitCode::SUCCESS
        }
    };
    let _ = http_stop_tx.send(());
    match tokio::time::timeout(Duration::from_secs(2), server).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server failed"),
        Ok(_) => {}
        Err(_) => tracing::warn!("HTTP requests still open after 2 s; exiting anyway"),
    }
    Ok(code)
}

fn watch_signals(stop: mpsc::UnboundedSender<&'static str>) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| format!("could not watch SIGTERM: {e}"))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| format!("could not watch SIGINT: {e}"))?;
    let on_term = stop.clone();
    tokio::spawn(async move {
        if term.recv().await.is_some() {
            let _ = on_term.unbounded_send("SIGTERM");
        }
    });
    tokio::spawn(async move {
        if int.recv().await.is_some() {
            let _ = stop.unbounded_send("SIGINT");
        }
    });
    Ok(())
}

/// A thread (stdin is blocking) that reports the end of standard input.
fn watch_stdin(stop: mpsc::UnboundedSender<&'static str>) {
    let spawned = std::thread::Builder::new()
        .name("stdin-watch".into())
        .spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            let _ = stop.unbounded_send("standard input closed");
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not watch standard input; --exit-on-stdin-eof is off");
    }
}

/// What the built-in handlers answer: who handled it, under which term,
/// and the request's bytes back (UTF-8, invalid sequences replaced).
fn echo(me: &str, term: u64, from: &str, payload: &[u8]) -> Vec<u8> {
    json!({
        "handled_by": me,
        "term": term,
        "from": from,
        "echo": String::from_utf8_lossy(payload),
    })
    .to_string()
    .into_bytes()
}

#[derive(Serialize)]
struct Status {
    id: String,
    cluster: String,
    addr: String,
    term: u64,
    leader: Option<String>,
    leader_addr: Option<String>,
    is_leader: bool,
    view_term: u64,
    view_version: u64,
    view_stale: bool,
    members: Vec<MemberJson>,
}

#[derive(Serialize)]
struct MemberJson {
    id: String,
    addr: String,
    /// UTF-8, invalid sequences replaced by U+FFFD.
    meta: String,
}

async fn status(State(app): State<Arc<App>>) -> Json<Status> {
    let node = &app.node;
    let leader = node.leader();
    let (view_term, view_version) = node.view_stamp();
    let mut members: Vec<MemberJson> = node
        .members()
        .into_iter()
        .map(|m| MemberJson {
            id: m.id.to_string(),
            addr: m.addr,
            meta: String::from_utf8_lossy(m.meta.as_slice()).into_owned(),
        })
        .collect();
    members.sort_by(|a, b| a.id.cmp(&b.id));
    Json(Status {
        id: node.id().to_string(),
        cluster: app.cluster.clone(),
        addr: node.addr().to_owned(),
        term: node.term().0,
        leader: leader.as_ref().map(|l| l.id.to_string()),
        leader_addr: leader.map(|l| l.addr),
        is_leader: node.is_leader(),
        view_term: view_term.0,
        view_version,
        view_stale: node.view_is_stale(),
        members,
    })
}

async fn send(State(app): State<Arc<App>>, body: Bytes) -> Response {
    match app.node.send(body).await {
        Ok(reply) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            reply.payload,
        )
            .into_response(),
        Err(e) => error_response(&e),
    }
}

async fn broadcast(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let mut replies = match app.node.broadcast(body).await {
        Ok(replies) => replies,
        Err(e) => return error_response(&e),
    };
    replies.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    let replies: Vec<Value> = replies
        .into_iter()
        .map(|(id, result)| match result {
            Ok(bytes) => json!({ "id": id.to_string(), "ok": as_json(&bytes), "error": null }),
            Err(e) => json!({ "id": id.to_string(), "ok": null, "error": e.to_string() }),
        })
        .collect();
    Json(json!({ "replies": replies })).into_response()
}

/// A reply as JSON if it is JSON (the built-in handlers' are), else as a
/// string.
fn as_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// Drains the exporter's histogram samples now and then (it keeps them
/// until then), for as long as the node runs.
async fn upkeep(handle: metrics_exporter_prometheus::PrometheusHandle) {
    loop {
        tokio::time::sleep(metrics::UPKEEP_EVERY).await;
        handle.run_upkeep();
    }
}

async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    let text = app.metrics.render();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        node: NodeArgs,
    }

    fn parse(extra: &[&str]) -> Result<NodeArgs, clap::Error> {
        let mut argv = vec![
            "x",
            "--cluster",
            "c",
            "--id",
            "a",
            "--listen",
            "127.0.0.1:0",
        ];
        argv.extend_from_slice(extra);
        Wrap::try_parse_from(argv).map(|w| w.node)
    }

    #[test]
    fn stores_parse_and_bad_ones_say_what_is_expected() {
        assert_eq!(parse_store("memory"), Ok(StoreSpec::Memory));
        assert_eq!(
            parse_store("sqlite:/tmp/x.db"),
            Ok(StoreSpec::Sqlite("/tmp/x.db".into()))
        );
        assert!(matches!(
            parse_store("postgresql://u@h/db"),
            Ok(StoreSpec::Postgres(_))
        ));
        let err = parse_store("mysql://h").unwrap_err();
        assert!(err.contains("expected sqlite:PATH"), "{err}");
        assert!(parse_store("sqlite:").is_err());
        let err = parse(&["--store", "redis://x"]).unwrap_err().to_string();
        assert!(err.contains("unknown store"), "{err}");
    }

    #[test]
    fn a_store_names_itself_without_its_password() {
        let pg = parse_store("postgres://app:s3cret@db:5432/leases").unwrap();
        assert_eq!(pg.to_string(), "postgres://app:***@db:5432/leases");
        let pg = parse_store("postgresql://app@db/leases?sslmode=require").unwrap();
        assert_eq!(pg.to_string(), "postgresql://app@db/leases?sslmode=require");
        let pg = parse_store("postgres://app@db/leases?password=s3cret&sslmode=require").unwrap();
        assert_eq!(
            pg.to_string(),
            "postgres://app@db/leases?password=***&sslmode=require"
        );
        assert_eq!(
            parse_store("sqlite:/x.db").unwrap().to_string(),
            "sqlite:/x.db"
        );
    }

    #[test]
    fn a_store_password_file_must_exist_and_is_for_postgres_only() {
        let open_err = |extra: &[&str]| match parse(extra).unwrap().open_store() {
            Ok(_) => panic!("{extra:?} opened a store"),
            Err(e) => e,
        };
        let err = open_err(&[
            "--store",
            "postgres://app@db.invalid/leases?sslmode=require",
            "--store-password-file",
            "no-such-dir/pg-password",
        ]);
        assert!(
            err.contains("--store postgres") && err.contains("no-such-dir/pg-password"),
            "{err}"
        );
        let err = open_err(&["--store", "memory", "--store-password-file", "pw"]);
        assert!(err.contains("for a postgres:// store"), "{err}");
    }

    #[test]
    fn an_assumed_clock_leads_only_with_an_explicit_bound() {
        let args = parse(&["--store", "memory", "--clock", "system"]).unwrap();
        assert!(args
            .clock_config()
            .unwrap_err()
            .contains("--clock-bound-ms"));
        let args = parse(&["--store", "memory", "--clock", "auto"]).unwrap();
        assert_eq!(
            args.clock_config().unwrap(),
            ClockConfig::Auto { bound: None }
        );
        assert!(!args.config().unwrap().lead_on_assumed_clock);
        let args = parse(&["--store", "memory", "--clock-bound-ms", "5"]).unwrap();
        assert!(args.config().unwrap().lead_on_assumed_clock);
        let args = parse(&["--store", "memory", "--clock-bound-ms", "0"]).unwrap();
        assert!(args.clock_config().is_err());
    }

    #[test]
    fn a_wildcard_listen_address_needs_an_advertised_one() {
        let mut args = parse(&["--store", "memory"]).unwrap();
        assert_eq!(args.advertise().unwrap(), "127.0.0.1:0");
        args.listen = "0.0.0.0:7946".into();
        assert!(args.advertise().unwrap_err().contains("--advertise"));
        args.listen = "[::]:7946".into();
        assert!(args.advertise().is_err());
        args.advertise = Some("10.0.0.5:7946".into());
        assert_eq!(args.advertise().unwrap(), "10.0.0.5:7946");
    }

    #[test]
    fn timing_flags_override_the_preset_and_bad_relations_are_named() {
        let args = parse(&[
            "--store",
            "memory",
            "--preset",
            "local",
            "--lease-ms",
            "900",
            "--candidate",
            "false",
        ])
        .unwrap();
        let cfg = args.config().unwrap();
        assert_eq!(cfg.lease_duration, Duration::from_millis(900));
        assert_eq!(cfg.heartbeat_interval, Duration::from_millis(200));
        assert!(!cfg.candidate);
        let args = parse(&[
            "--store",
            "memory",
            "--heartbeat-ms",
            "500",
            "--failure-timeout-ms",
            "400",
        ])
        .unwrap();
        let err = args.config().unwrap_err();
        assert!(err.contains("failure_timeout"), "{err}");
    }
}
