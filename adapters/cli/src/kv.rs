//! `hedgerow kv get|put|list|history`: the group's key/value store through
//! a running node's HTTP control API (`--node HOST:PORT`). It prints the
//! node's JSON answer on stdout; on an error answer it prints the status
//! and the node's error on stderr and exits 1 (2 when the node cannot be
//! reached). It owns the command line and the request paths only; what a
//! put or a read means is the node's (and the library's) business.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::auth::Token;
use crate::client::{request_to, HttpsTrust};
use crate::node::{Toggle, DEFAULT_HTTP};

/// Flags of `hedgerow kv`.
#[derive(Debug, Clone, Args)]
pub struct KvArgs {
    /// The node's HTTP control API (its `--http`), as HOST:PORT.
    #[arg(long, env = "HEDGEROW_NODE", default_value = DEFAULT_HTTP, global = true)]
    pub node: String,
    /// Whether the node serves its API over TLS (its `--http-tls`); `on`
    /// needs --tls-ca, and --node must use a name its certificate
    /// carries (`hedgerow certs --host`).
    #[arg(long, env = "HEDGEROW_HTTP_TLS", value_enum, default_value_t = Toggle::Off, global = true)]
    pub http_tls: Toggle,
    /// The cluster's CA bundle (its `--tls-ca`), which the node's
    /// certificate must chain to.
    #[arg(long, env = "HEDGEROW_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
    /// How long to wait for the node's answer, in ms (a put may wait for a
    /// failover).
    #[arg(long, default_value_t = 30_000, global = true)]
    pub timeout_ms: u64,
    /// The node's control API token file (its `--http-token-file`).
    #[arg(long, env = "HEDGEROW_HTTP_TOKEN_FILE", global = true)]
    pub http_token_file: Option<std::path::PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub action: KvAction,
}

/// The `hedgerow kv` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum KvAction {
    /// The latest revision of KEY (or revision --rev).
    Get {
        /// The key.
        key: String,
        /// A revision of KEY instead of the latest.
        #[arg(long)]
        rev: Option<u64>,
    },
    /// Appends VALUE (UTF-8 text) as a new revision of KEY; prints the
    /// revision.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// The latest revision of every key starting with --prefix.
    List {
        /// The key prefix (default: every key).
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Every revision of KEY, oldest first.
    History {
        /// The key.
        key: String,
    },
}

/// Everything but RFC 3986's unreserved characters is escaped, so a key
/// with `/`, `?` or `%` stays one path segment or one query value.
const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn escape(s: &str) -> String {
    utf8_percent_encode(s, ESCAPED).to_string()
}

/// The method, path and body `action` sends.
fn plan(action: &KvAction) -> (&'static str, String, Vec<u8>) {
    match action {
        KvAction::Get { key, rev: None } => ("GET", format!("/v1/kv/{}", escape(key)), vec![]),
        KvAction::Get {
            key,
            rev: Some(rev),
        } => ("GET", format!("/v1/kv/{}?rev={rev}", escape(key)), vec![]),
        KvAction::Put { key, value } => (
            "PUT",
            format!("/v1/kv/{}", escape(key)),
            value.as_bytes().to_vec(),
        ),
        KvAction::List { prefix } => ("GET", format!("/v1/kv?prefix={}", escape(prefix)), vec![]),
        KvAction::History { key } => ("GET", format!("/v1/kv/{}/history", escape(key)), vec![]),
    }
}

/// Runs one `hedgerow kv` subcommand.
pub fn run(args: KvArgs) -> Result<ExitCode, String> {
    let (method, path, body) = plan(&args.action);
    let timeout = Duration::from_millis(args.timeout_ms);
    let auth = match &args.http_token_file {
        Some(path) => Some(Token::from_file(path)?.header_value()),
        None => None,
    };
    let trust = match (args.http_tls, &args.tls_ca) {
        (Toggle::Off, _) => None,
        (Toggle::On, Some(ca)) => {
            Some(HttpsTrust::from_file(ca).map_err(|e| format!("--tls-ca {e}"))?)
        }
        (Toggle::On, None) => {
            return Err(
                "--http-tls on needs --tls-ca: the cluster's CA bundle, which the \
                        node's certificate must chain to"
                    .into(),
            )
        }
    };
    let sent = request_to(
        &args.node,
        trust.as_ref(),
        method,
        &path,
        &body,
        timeout,
        auth.as_deref(),
    );
    let (status, answer) = sent.map_err(|e| {
        format!(
            "no answer from the node at {} ({method} {path}): {e}",
            args.node
        )
    })?;
    let text = String::from_utf8_lossy(&answer);
    if (200..300).contains(&status) {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", text.trim_end()).map_err(|e| format!("stdout: {e}"))?;
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "hedgerow: error: HTTP {status} from {method} {path}: {}",
        text.trim_end()
    );
    Ok(ExitCode::from(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_one_path_segment_and_prefixes_one_query_value() {
        let get = KvAction::Get {
            key: "cfg/a b?%".into(),
            rev: Some(4),
        };
        assert_eq!(plan(&get).1, "/v1/kv/cfg%2Fa%20b%3F%25?rev=4");
        let list = KvAction::List {
            prefix: "a+b&c".into(),
        };
        assert_eq!(plan(&list).1, "/v1/kv?prefix=a%2Bb%26c");
        let put = KvAction::Put {
            key: "k-1.x_y~".into(),
            value: "v".into(),
        };
        assert_eq!(plan(&put), ("PUT", "/v1/kv/k-1.x_y~".into(), b"v".to_vec()));
        let history = KvAction::History { key: "k".into() };
        assert_eq!(plan(&history).1, "/v1/kv/k/history");
    }
}
