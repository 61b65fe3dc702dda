//! Headless Chromium for the tests that look at pages: the simulator's
//! run reports and the live page at `/` of `hedgerow node --http`.
//!
//! Debian's `chromium` (or `HEDGEROW_CHROMIUM=<path>`) runs with a fresh
//! profile and every background service off, so nothing leaves
//! localhost. [`Chromium::dump_dom`] loads a page, lets its script run
//! and prints the DOM; [`Chromium::screenshot`] saves a PNG; and
//! [`Chromium::open`] keeps a page open over the DevTools protocol (a
//! WebSocket on loopback) so a test can read it while the world changes
//! under it. Where Chromium is missing, [`Chromium::find`] says so and the
//! test skips, except under `CI=true`, where that fails.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{temp_dir, Process, TempDir};

/// The flags every run gets: headless, no sandbox (CI runs as root), and
/// no network of its own.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--mute-audio",
];

/// A Chromium binary to run pages in.
#[derive(Debug)]
pub struct Chromium {
    path: PathBuf,
}

impl Chromium {
    /// `HEDGEROW_CHROMIUM`, else `/usr/bin/chromium`. Missing: `None`
    /// after saying so on stderr, or a panic when `CI=true` (CI installs
    /// it, see `.ci/run`).
    pub fn find(test: &str) -> Option<Chromium> {
        let path = std::env::var_os("HEDGEROW_CHROMIUM")
            .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
        if path.exists() {
            return Some(Chromium { path });
        }
        let why = format!(
            "{test}: no Chromium at {} (apt-get install chromium, or set HEDGEROW_CHROMIUM)",
            path.display()
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{why}; CI must run the browser tests");
        }
        eprintln!("skipped {why}");
        None
    }

    fn command(&self, profile: &Path) -> Command {
        let mut c = Command::new(&self.path);
        c.args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.display()))
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[String]) -> Output {
        let profile = temp_dir();
        let out = self
            .command(profile.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.path.display()));
        assert!(
            out.status.success(),
            "chromium {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The DOM of `url` once its script has had `budget_ms` of virtual
    /// time (timers run, fetches are waited for).
    pub fn dump_dom(&self, url: &str, budget_ms: u64) -> String {
        let out = self.run(&[
            format!("--virtual-time-budget={budget_ms}"),
            "--dump-dom".into(),
            url.into(),
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A PNG of `url` at `width`×`height` once its script has run.
    pub fn screenshot(&self, url: &str, png: &Path, (width, height): (u32, u32)) {
        self.run(&[
            "--virtual-time-budget=5000".into(),
            "--hide-scrollbars".into(),
            format!("--window-size={width},{height}"),
            format!("--screenshot={}", png.display()),
            url.into(),
        ]);
        let len = std::fs::metadata(png).map_or(0, |m| m.len());
        assert!(
            len > 1000,
            "no screenshot at {} ({len} bytes)",
            png.display()
        );
    }

    /// `url` open in a browser that stays up: read it with
    /// [`Page::eval`] as it changes.
    pub fn open(&self, url: &str) -> Page {
        let profile = temp_dir();
        let process = Process::spawn(
            self.command(profile.path())
                .args([
                    "--remote-debugging-address=127.0.0.1",
                    "--remote-debugging-port=0",
                ])
                .arg(url)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let port_file = profile.path().join("DevToolsActivePort");
        let port = wait_for(Duration::from_secs(30), || {
            let text = std::fs::read_to_string(&port_file).ok()?;
            text.lines().next()?.trim().parse::<u16>().ok()
        })
        .unwrap_or_else(|| panic!("chromium wrote no DevToolsActivePort in 30 s"));
        let devtools = SocketAddr::from(([127, 0, 0, 1], port));
        let ws_path = wait_for(Duration::from_secs(30), || page_socket(devtools))
            .unwrap_or_else(|| panic!("chromium listed no page on {devtools} in 30 s"));
        let ws = WebSocket::connect(devtools, &ws_path);
        Page {
            ws,
            next_id: 0,
            _process: process,
            _profile: profile,
        }
    }
}

/// Polls `f` every 100 ms until it gives a value or `limit` passes.
fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `GET path` from DevTools' HTTP endpoint, which keeps the connection
/// open whatever the request says: the body is read by its length.
fn devtools_get(devtools: SocketAddr, path: &str) -> Option<Value> {
    let mut stream = TcpStream::connect_timeout(&devtools, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let ask = format!("GET {path} HTTP/1.1\r\nHost: {devtools}\r\n\r\n");
    stream.write_all(ask.as_bytes()).ok()?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).ok()?;
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            }
        }
    }
    if !status.contains(" 200 ") {
        return None;
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

/// The DevTools WebSocket path of the first page target.
fn page_socket(devtools: SocketAddr) -> Option<String> {
    let list = devtools_get(devtools, "/json/list")?;
    let url = list.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"]
        .as_str()?
        .to_owned();
    let rest = url.strip_prefix("ws://")?;
    Some(rest[rest.find('/')?..].to_owned())
}

/// A page kept open over the DevTools protocol; the browser is killed on
/// drop.
pub struct Page {
    ws: WebSocket,
    next_id: u64,
    _process: Process,
    _profile: TempDir,
}

impl Page {
    /// The value of the JavaScript expression `js` in the page (JSON).
    pub fn eval(&mut self, js: &str) -> Value {
        self.try_eval(js)
            .unwrap_or_else(|e| panic!("evaluating {js:?} failed: {e}"))
    }

    /// The value of `js`, or what it threw (the page may still be loading).
    pub fn try_eval(&mut self, js: &str) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let call = json!({
            "id": id,
            "method": "Runtime.evaluate",
            "params": {"expression": js, "returnByValue": true},
        });
        self.ws.send(&call.to_string());
        loop {
            let msg: Value = serde_json::from_str(&self.ws.recv())
                .unwrap_or_else(|e| panic!("DevTools sent something that is not JSON: {e}"));
            if msg["id"] != id {
                continue;
            }
            if let Some(e) = msg.get("error").or(msg["result"].get("exceptionDetails")) {
                return Err(e.to_string());
            }
            return Ok(msg["result"]["result"]["value"].clone());
        }
    }

    /// Evaluates `js` every 200 ms until `done` holds for its value or
    /// `limit` passes (a throw counts as not yet: the page may be
    /// loading); the last value or error, and whether it held.
    pub fn wait(
        &mut self,
        js: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> (Value, bool) {
        let end = Instant::now() + limit;
        loop {
            let v = self.try_eval(js).unwrap_or_else(Value::String);
            if done(&v) {
                return (v, true);
            }
            if Instant::now() >= end {
                return (v, false);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The least of a WebSocket client that the DevTools protocol needs: text
/// frames, masked as a client must, over one loopback connection.
struct WebSocket {
    stream: BufReader<TcpStream>,
}

impl WebSocket {
    fn connect(addr: SocketAddr, path: &str) -> WebSocket {
        let mut stream = TcpStream::connect(addr).expect("connect to DevTools");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("a read timeout");
        let hello = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: aGVkZ2Vyb3ctdGVzdHMtMQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream
            .write_all(hello.as_bytes())
            .expect("send the upgrade");
        let mut stream = BufReader::new(stream);
        let mut status = String::new();
        stream.read_line(&mut status).expect("the upgrade's answer");
        assert!(
            status.contains(" 101 "),
            "DevTools refused the WebSocket: {status}"
        );
        loop {
            let mut line = String::new();
            stream.read_line(&mut line).expect("the upgrade's headers");
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        WebSocket { stream }
    }

    fn send(&mut self, text: &str) {
        let body = text.as_bytes();
        let mask = [0x5a, 0x17, 0xc3, 0x42];
        let mut frame = vec![0x81];
        match body.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= usize::from(u16::MAX) => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(body.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream
            .get_mut()
            .write_all(&frame)
            .expect("send to DevTools");
    }

    /// The next text message (fragments joined; pings ignored).
    fn recv(&mut self) -> String {
        let mut message = Vec::new();
        loop {
            let mut head = [0u8; 2];
            self.stream
                .read_exact(&mut head)
                .expect("a frame from DevTools");
            let len = match head[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    self.stream.read_exact(&mut b).expect("a frame length");
                    u64::from(u16::from_be_bytes(b))
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.stream.read_exact(&mut b).expect("a frame length");
                    u64::from_be_bytes(b)
                }
                n => u64::from(n),
            };
            let mut body = vec![0u8; usize::try_from(len).expect("a frame that fits")];
            self.stream.read_exact(&mut body).expect("a frame body");
            match head[0] & 0x0f {
                0x8 => panic!("DevTools closed the WebSocket"),
                0x9 | 0xa => continue,
                _ => message.extend_from_slice(&body),
            }
            if head[0] & 0x80 != 0 {
                return String::from_utf8_lossy(&message).into_owned();
            }
        }
    }
}
