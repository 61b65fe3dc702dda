//! The `hedgerow` command: `hedgerow node` runs one member of a cluster with
//! an HTTP control API, `hedgerow demo` runs a few of them on this machine
//! and shows a failover. This file owns the command line only (flags, env
//! vars, logging setup); what a node does lives in `node.rs`, the demo in
//! `demo.rs`. See `adapters/CLI.md` for the user-facing description.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod demo;
mod http;
mod metrics;
mod node;

/// Membership, leader election and send-to-leader for the instances of one
/// service.
#[derive(Debug, Parser)]
#[command(name = "hedgerow", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one node of a cluster, with an HTTP control API.
    Node(node::NodeArgs),
    /// Run a few nodes on this machine and kill the leader now and then, to
    /// watch a failover.
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(matches!(cli.command, Command::Demo(_)));
    let result = match cli.command {
        Command::Node(args) => node::run(args),
        Command::Demo(args) => demo::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hedgerow: error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`; the demo
/// defaults to `warn` so that its table stays readable).
fn init_logging(quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if quiet { "warn" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}
