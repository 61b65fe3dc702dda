//! The `hedgerow` command: `hedgerow node` runs one member of a cluster with
//! an HTTP control API, `hedgerow demo` runs a few of them on this machine
//! and shows a failover, `hedgerow kv` reads and writes the group's
//! key/value store through a node's API. See `adapters/CLI.md` for the user-facing
//! description.
//!
//! The binary (`src/main.rs`) only calls [`main`]; everything else lives in
//! this library so that tests can drive the same code: [`Cli`] and
//! [`Command`] are the parsed command line, [`run`] runs one, and [`client`]
//! is the small client the demo (and the black-box tests in
//! `hedgerow-tests`) speak to a node's control API with.
//!
//! This file owns the command line only (flags, env vars, logging setup);
//! what a node does lives in [`node`] (its coordination routes in
//! `coord`), the demo in [`demo`], the KV client in [`kv`]. It decides
//! nothing about leases or membership: that is the `hedgerow` library's job.
//!
//! ```no_run
//! use clap::Parser as _;
//!
//! let cli = hedgerow_cli::Cli::parse_from(["hedgerow", "demo", "--nodes", "3"]);
//! let code = hedgerow_cli::run(cli);
//! # let _ = code;
//! ```

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod advertise;
pub mod auth;
pub mod certs;
pub mod client;
mod coord;
pub mod demo;
mod errors;
pub mod https;
pub mod kv;
mod metrics;
pub mod node;
mod page;
mod probes;
mod startup;

/// Membership, leader election and send-to-leader for the instances of one
/// service.
#[derive(Debug, Parser)]
#[command(name = "hedgerow", version, about, propagate_version = true)]
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
    /// How log lines are written to stderr: `text` for people, `json` (one
    /// object a line, with the node's span fields) for log pipelines.
    #[arg(long, global = true, env = "HEDGEROW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The format of log lines (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line: level, target, fields, and the spans
    /// (`hedgerow{cluster, node, term}`, `store_op{kind}`, `request{…}`).
    Json,
}

/// The subcommands of `hedgerow`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one node of a cluster, with an HTTP control API.
    Node(Box<node::NodeArgs>),
    /// Run a few nodes on this machine and kill the leader now and then, to
    /// watch a failover.
    Demo(demo::DemoArgs),
    /// Read and write the group's key/value store through a node's HTTP
    /// control API.
    Kv(kv::KvArgs),
    /// Make a cluster CA and node certificates for mutual TLS.
    Certs(certs::CertsArgs),
}

/// The whole `hedgerow` binary: parses the process's arguments (clap exits
/// with its usage message on bad ones) and [`run`]s them.
pub fn main() -> ExitCode {
    run(Cli::parse())
}

/// Sets up logging, runs `cli`'s command and turns its outcome into the
/// process's exit code: the command's own, or 2 after printing the error
/// on stderr.
pub fn run(cli: Cli) -> ExitCode {
    init_logging(
        matches!(
            cli.command,
            Command::Demo(_) | Command::Kv(_) | Command::Certs(_)
        ),
        cli.log_format,
    );
    let result = match cli.command {
        Command::Node(args) => node::run(*args),
        Command::Demo(args) => demo::run(args),
        Command::Kv(args) => kv::run(args),
        Command::Certs(args) => certs::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hedgerow: error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Logs go to stderr as `format` says, filtered by `RUST_LOG` (default
/// `info`; the demo defaults to `warn` so that its table stays readable).
/// A second [`run`] in one process keeps the subscriber the first one
/// installed.
fn init_logging(quiet: bool, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let default = if quiet { "warn" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _already_set = match format {
        LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            builder.with_ansi(ansi).try_init()
        }
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
}
