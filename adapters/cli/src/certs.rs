//! `hedgerow certs`: a cluster CA and node certificates in a directory,
//! so TLS is on in two commands (this one, then `hedgerow node` with
//! `--tls-ca`, `--tls-cert`, `--tls-key`). The certificates themselves
//! are the library's (`hedgerow::tls::ClusterCa`); this file owns the
//! files: names, permissions, reusing a CA key already there.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use hedgerow::tls::ClusterCa;

/// Flags of `hedgerow certs`.
#[derive(Debug, Clone, Args)]
pub struct CertsArgs {
    /// Cluster name the certificates are for (`hedgerow node --cluster`).
    #[arg(long, env = "HEDGEROW_CLUSTER")]
    pub cluster: String,
    /// Directory to write into (created if missing). A `ca.key` already
    /// there is reused, so running again adds nodes to the same CA.
    #[arg(long, default_value = "hedgerow-certs")]
    pub out: PathBuf,
    /// A host name (DNS, wildcard like `*.hedgerow.prod.svc`, or IP
    /// address) the node certificates also name, so that HTTPS clients
    /// of a control API started with `--http-tls on` accept them; give
    /// it once per name. Default: the loopback names.
    #[arg(long = "host", value_name = "NAME", default_values_t = LOOPBACK_HOSTS.map(String::from))]
    pub hosts: Vec<String>,
    /// Node ids to make certificates for (`hedgerow node --id`).
    #[arg(required = true)]
    pub nodes: Vec<String>,
}

/// The host names a node certificate carries unless `--host` says
/// otherwise: a control API reached on this machine.
pub const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The files `hedgerow certs` writes for `node` in `dir`: certificate
/// and key.
pub fn node_files(dir: &Path, node: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{node}.pem")),
        dir.join(format!("{node}.key")),
    )
}

/// The CA certificate `hedgerow certs` writes in `dir`.
pub fn ca_file(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}

/// Writes a CA (unless one is there) and a certificate per node, also
/// naming each of `hosts`, into `dir`; what it wrote, one path a line.
pub fn write(
    cluster: &str,
    dir: &Path,
    nodes: &[String],
    hosts: &[String],
) -> Result<Vec<PathBuf>, String> {
    for n in nodes {
        if n.is_empty() || n.contains(['/', '\\']) || n.starts_with('.') {
            return Err(format!(
                "node id {n:?} cannot name a file: no '/', no leading '.'"
            ));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let mut wrote = Vec::new();
    let key_path = dir.join("ca.key");
    let ca = match std::fs::read_to_string(&key_path) {
        Ok(key) => ClusterCa::from_key_pem(cluster, &key)
            .map_err(|e| format!("{}: {e}", key_path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let ca = ClusterCa::new(cluster).map_err(|e| e.to_string())?;
            save(&key_path, &ca.key_pem(), true)?;
            save(&ca_file(dir), &ca.cert_pem(), false)?;
            wrote.extend([ca_file(dir), key_path.clone()]);
            ca
        }
        Err(e) => return Err(format!("{}: {e}", key_path.display())),
    };
    for n in nodes {
        let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let cert = ca
            .node_with_hosts(n, &hosts)
            .map_err(|e| format!("node {n}: {e}"))?;
        let (cert_path, key_path) = node_files(dir, n);
        save(&cert_path, &cert.cert_pem, false)?;
        save(&key_path, &cert.key_pem, true)?;
        wrote.extend([cert_path, key_path]);
    }
    Ok(wrote)
}

/// Writes `text` to `path` through a temporary file and a rename, so a
/// node re-reading it never sees half a file; keys readable by the owner
/// only.
fn save(path: &Path, text: &str, secret: bool) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = opts
        .open(&tmp)
        .map_err(|e| format!("write {}: {e}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("write {}: {e}", path.display()))
}

/// Runs `hedgerow certs`.
pub fn run(args: CertsArgs) -> Result<ExitCode, String> {
    let wrote = write(&args.cluster, &args.out, &args.nodes, &args.hosts)?;
    let mut out = std::io::stdout().lock();
    for p in &wrote {
        let _ = writeln!(out, "wrote {}", p.display());
    }
    let first = &args.nodes[0];
    let (cert, key) = node_files(&args.out, first);
    let _ = writeln!(
        out,
        "start a node with: hedgerow node --cluster {} --id {first} --tls-ca {} --tls-cert {} \
         --tls-key {} ...\nthe certificates also name {} for HTTPS on the control API \
         (--http-tls on)\nkeep ca.key off the nodes; run again with more ids to add nodes",
        args.cluster,
        ca_file(&args.out).display(),
        cert.display(),
        key.display(),
        args.hosts.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_second_run_adds_nodes_to_the_same_ca() {
        let dir = std::env::temp_dir().join(format!("hedgerow-certs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write("shop", &dir, &["a".into()], &[]).unwrap();
        let ca_before = std::fs::read(ca_file(&dir)).unwrap();
        let wrote = write("shop", &dir, &["b".into()], &["localhost".into()]).unwrap();
        assert_eq!(wrote.len(), 2, "only b's files: {wrote:?}");
        assert_eq!(std::fs::read(ca_file(&dir)).unwrap(), ca_before);
        // b's certificate, from the CA made again from its key, is
        // trusted by a node holding the first run's files: b joins a.
        let tls = |n: &str| {
            let (cert, key) = node_files(&dir, n);
            hedgerow::Tls::from_files(ca_file(&dir), cert, key)
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let store = hedgerow::store::MemoryStore::new();
        let start = |n: &str| {
            hedgerow::Hedgerow::builder("shop", n, "127.0.0.1:0")
                .tls(tls(n))
                .store(store.clone())
                .clock(hedgerow_clock::SystemClock::new(Duration::from_millis(5)))
                .config(|c| {
                    *c = hedgerow::Config::local(c.cluster.clone());
                    c.lead_on_assumed_clock = true;
                })
                .start()
        };
        let joined = rt.block_on(async {
            let a = start("a").await.unwrap();
            let b = start("b").await.unwrap();
            for _ in 0..2000 {
                if a.members().len() == 2 && b.leader().is_some() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            false
        });
        assert!(joined, "b did not join a over TLS");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn node_ids_that_cannot_name_a_file_are_refused() {
        let dir = std::env::temp_dir();
        assert!(write("shop", &dir, &["../x".into()], &[]).is_err());
    }
}
