//! A throw-away PostgreSQL server for tests: its own data directory in a
//! temporary directory, a free loopback port, TLS only (`hostssl`, a
//! server certificate for `localhost` and 127.0.0.1 from a CA made for
//! this server), trust authentication, stopped and deleted on drop. It can be stopped, restarted,
//! frozen (SIGSTOP) and thawed under a running client, so that tests can
//! take the store away from a live node or cluster.
//!
//! PostgreSQL refuses to run as root; when the tests run as root the
//! server runs as the `postgres` user (via `runuser`), otherwise as the
//! current user.

use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Set to `1` to make a missing PostgreSQL a test failure instead of a skip.
pub const REQUIRE_ENV: &str = "HEDGEROW_REQUIRE_POSTGRES";
/// Overrides where the PostgreSQL binaries (`initdb`, `pg_ctl`) are looked for.
pub const BIN_ENV: &str = "HEDGEROW_POSTGRES_BIN";

/// A running throw-away PostgreSQL server; stopped and deleted on drop.
#[derive(Debug)]
pub struct PostgresServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
    frozen: AtomicBool,
    running: AtomicBool,
    /// Extra `name=value` server settings, kept across restarts.
    settings: Vec<String>,
}

/// Who may connect: TLS over loopback only, and the Unix socket that
/// `pg_ctl` uses; a plaintext TCP client is refused. The role
/// [`PASSWORD_ROLE`] must give its password, everyone else is trusted.
const PG_HBA: &str = "local all all trust\n\
                      hostssl all hedgerow_password 127.0.0.1/32 scram-sha-256\n\
                      hostssl all all 127.0.0.1/32 trust\n\
                      hostnossl all all all reject\n";

/// The one role that logs in with a password (tests create it with
/// `CREATE ROLE`); every other role is trusted.
pub const PASSWORD_ROLE: &str = "hedgerow_password";

impl PostgresServer {
    /// Starts a server for the test `test`, or returns `None` after saying
    /// on stderr why PostgreSQL is not available here (no binaries). With
    /// [`REQUIRE_ENV`]`=1` a missing PostgreSQL panics instead. A server
    /// that is installed but fails to start always panics.
    pub fn start_for_test(test: &str) -> Option<Self> {
        Self::start_for_test_with(test, &[])
    }

    /// [`start_for_test`](Self::start_for_test) with extra server settings
    /// as `name=value`, e.g. `max_connections=20` to see what a group does
    /// when the server refuses connections.
    pub fn start_for_test_with(test: &str, settings: &[&str]) -> Option<Self> {
        let Some(bin) = find_binaries() else {
            let why = format!(
                "no PostgreSQL binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin or \
                 ${BIN_ENV}; install PostgreSQL (e.g. the postgresql package)"
            );
            if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
                panic!("{test}: {REQUIRE_ENV}=1 but {why}");
            }
            // Straight to stderr: the test harness captures eprintln! of a
            // passing test, and a skip must be seen.
            let _ = writeln!(std::io::stderr(), "skipping {test}: {why}");
            return None;
        };
        match Self::start(&bin, settings) {
            Ok(server) => Some(server),
            Err(why) => panic!("{test}: could not start a throw-away PostgreSQL: {why}"),
        }
    }

    /// Initializes and starts a server with the binaries in `bin` and the
    /// extra `name=value` settings.
    pub fn start(bin: &Path, settings: &[&str]) -> Result<Self, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let as_postgres = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        let dir = temp_base(as_postgres).join(format!(
            "hedgerow-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let server = PostgresServer {
            bin: bin.to_path_buf(),
            dir,
            port: free_port()?,
            as_postgres,
            frozen: AtomicBool::new(false),
            running: AtomicBool::new(false),
            settings: settings.iter().map(|s| s.to_string()).collect(),
        };
        if as_postgres {
            check(
                "chown",
                Command::new("chown")
                    .arg("postgres:")
                    .arg(&server.dir)
                    .output(),
            )?;
        }
        server.run(
            "initdb",
            &[
                "-D",
                &server.data().to_string_lossy(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        server.write_tls_files()?;
        server.start_again()?;
        Ok(server)
    }

    /// The CA, the server's certificate and key (0600, owned by the user
    /// the server runs as, as PostgreSQL insists) and `pg_hba.conf`.
    fn write_tls_files(&self) -> Result<(), String> {
        let ca = crate::tls::ClusterCa::new("hedgerow-test-postgres")
            .map_err(|e| format!("make the test CA: {e}"))?;
        let cert = ca
            .server(&["localhost", "127.0.0.1"])
            .map_err(|e| format!("make the server certificate: {e}"))?;
        let files = [
            (self.ca_path(), ca.cert_pem(), 0o644),
            (self.dir.join("server.crt"), cert.cert_pem, 0o644),
            (self.dir.join("server.key"), cert.key_pem, 0o600),
            (self.data().join("pg_hba.conf"), PG_HBA.to_string(), 0o600),
        ];
        for (path, text, mode) in files {
            std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("chmod {}: {e}", path.display()))?;
            if self.as_postgres {
                check(
                    "chown",
                    Command::new("chown").arg("postgres:").arg(&path).output(),
                )?;
            }
        }
        Ok(())
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A libpq-style connection string for database `postgres` as user
    /// `postgres`, over TLS with the server's certificate checked
    /// (`sslmode=verify-full`, `sslrootcert=` [`ca_path`](Self::ca_path)).
    pub fn connection_string(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=verify-full \
             sslrootcert='{}'",
            self.port,
            self.ca_path().display()
        )
    }

    /// [`connection_string`](Self::connection_string) as a `postgres://`
    /// URL, the form `hedgerow node --store` takes.
    pub fn url(&self) -> String {
        let ca: String = self
            .ca_path()
            .to_string_lossy()
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' => {
                    char::from(b).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect();
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={ca}",
            self.port
        )
    }

    /// The PEM file of the CA that signed the server's certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// Runs `sql` with `psql` (for tests that tamper with the table).
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        let out = self.run(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-Atc",
                sql,
            ],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m
    /// immediate`); its data stays for [`start_again`](Self::start_again).
    pub fn stop(&self) -> Result<(), String> {
        self.thaw()?;
        if self.running.swap(false, Ordering::SeqCst) {
            self.run(
                "pg_ctl",
                &[
                    "-D",
                    &self.data().to_string_lossy(),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
            )?;
        }
        Ok(())
    }

    /// Starts the (stopped) server again on the same port and data.
    pub fn start_again(&self) -> Result<(), String> {
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} -c fsync=off \
             -c full_page_writes=off -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            self.port,
            self.dir.display(),
            self.dir.join("server.crt").display(),
            self.dir.join("server.key").display(),
        );
        for setting in &self.settings {
            options.push_str(" -c ");
            options.push_str(setting);
        }
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().to_string_lossy(),
                "-l",
                &self.dir.join("server.log").to_string_lossy(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .map_err(|e| format!("{e}\nserver log:\n{}", self.log()))?;
        self.running.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Freezes every server process (SIGSTOP): connections stay open but
    /// nothing answers, as with a hung host. Undo with [`thaw`](Self::thaw).
    pub fn freeze(&self) -> Result<(), String> {
        let pids = self.pids()?;
        self.signal("-STOP", &pids)?;
        self.frozen.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Resumes a frozen server (SIGCONT).
    pub fn thaw(&self) -> Result<(), String> {
        if self.frozen.swap(false, Ordering::SeqCst) {
            let pids = self.pids()?;
            self.signal("-CONT", &pids)?;
        }
        Ok(())
    }

    /// The server's log so far (to explain a failure).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The postmaster and its children.
    fn pids(&self) -> Result<Vec<u32>, String> {
        let pid_file = self.data().join("postmaster.pid");
        let text = std::fs::read_to_string(&pid_file)
            .map_err(|e| format!("read {}: {e}", pid_file.display()))?;
        let postmaster: u32 = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| format!("no pid in {}", pid_file.display()))?;
        let mut pids = vec![postmaster];
        let entries = std::fs::read_dir("/proc").map_err(|e| format!("read /proc: {e}"))?;
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // The command name may hold spaces and parentheses; the fields
            // after its closing parenthesis are state, then the parent pid.
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if parent == Some(postmaster) {
                pids.push(pid);
            }
        }
        Ok(pids)
    }

    fn signal(&self, signal: &str, pids: &[u32]) -> Result<(), String> {
        let mut command = Command::new("kill");
        command.arg(signal);
        for pid in pids {
            command.arg(pid.to_string());
        }
        check("kill", command.output()).map(drop)
    }

    /// Runs one of the server's binaries, as `postgres` when we are root.
    fn run(&self, program: &str, args: &[&str]) -> Result<Output, String> {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        command.args(args).current_dir(&self.dir);
        check(program, command.output())
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn check(what: &str, output: std::io::Result<Output>) -> Result<Output, String> {
    let output = output.map_err(|e| format!("{what}: {e}"))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// The directory holding `initdb` and `pg_ctl`: [`BIN_ENV`], else the
/// newest `/usr/lib/postgresql/<version>/bin`.
fn find_binaries() -> Option<PathBuf> {
    let usable = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Ok(dir) = std::env::var(BIN_ENV) {
        let dir = PathBuf::from(dir);
        return usable(&dir).then_some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| usable(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir)
}

/// Where the server's directory goes: the temp dir, unless the server runs
/// as `postgres` and cannot reach it (a TMPDIR under a private home), in
/// which case the system-wide /tmp.
fn temp_base(as_postgres: bool) -> PathBuf {
    let base = std::env::temp_dir();
    let reachable = base
        .ancestors()
        .all(|dir| std::fs::metadata(dir).is_ok_and(|m| m.mode() & 0o001 != 0));
    if as_postgres && !reachable {
        PathBuf::from("/tmp")
    } else {
        base
    }
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("find a free port: {e}"))
}
