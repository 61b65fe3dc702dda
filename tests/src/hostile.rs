//! Hostile peers and memory readings for the process-level tests and the
//! RSS benchmark: connections that say a valid hello, announce the largest
//! frame and send part of its body, then hold; and a process's resident
//! memory read from `/proc`.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use hedgerow_core::wire::{decode_frame, encode_frame, Frame};
use hedgerow_core::{Hello, NodeId, DEFAULT_MAX_FRAME_LEN};

/// What one hostile connection does after its hello.
#[derive(Clone, Copy, Debug)]
pub struct Attack {
    /// Cluster id the hello names (the node's, so it is accepted).
    pub cluster: &'static str,
    /// Connections to open.
    pub connections: usize,
    /// Source addresses, `127.0.0.2` up, the connections spread over them.
    pub sources: usize,
    /// Body bytes sent of the announced maximum-size frame.
    pub body: usize,
}

/// Opens `attack.connections` hostile connections to `to`, one after the
/// other (a node runs only so many handshakes at once), each from one of
/// `attack.sources` loopback addresses; returns the ones the node took.
pub fn attack(to: SocketAddr, attack: Attack) -> Vec<TcpStream> {
    let rt = crate::tokio_runtime();
    let mut held = Vec::new();
    for i in 0..attack.connections {
        let src = Ipv4Addr::new(127, 0, 0, 2 + (i % attack.sources.max(1)) as u8);
        let Some(mut s) = rt.block_on(connect_from(IpAddr::V4(src), to)) else {
            continue;
        };
        if !say_hello(&mut s, attack.cluster, &format!("hostile-{i}")) {
            continue;
        }
        announce_and_send(&mut s, attack.body);
        held.push(s);
    }
    held
}

async fn connect_from(ip: IpAddr, to: SocketAddr) -> Option<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(ip, 0)).ok()?;
    let s = socket.connect(to).await.ok()?.into_std().ok()?;
    s.set_nonblocking(false).ok()?;
    Some(s)
}

/// Sends a valid hello as `name`; whether the node answered with its own.
fn say_hello(s: &mut TcpStream, cluster: &str, name: &str) -> bool {
    let Ok(id) = NodeId::new(name) else {
        return false;
    };
    let hello = Hello::new(cluster, id, 1, "127.0.0.1:1");
    let mut buf = Vec::new();
    if encode_frame(&Frame::Hello(hello), 1 << 20, &mut buf).is_err() {
        return false;
    }
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    if s.write_all(&buf).is_err() {
        return false;
    }
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match decode_frame(&got, 1 << 20) {
            Ok(Some((Frame::Hello(_), _))) => return true,
            Ok(Some(_)) | Err(_) => return false,
            Ok(None) => {}
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Announces a frame of the default maximum length and sends `body`
/// bytes of it without blocking (what the socket does not take stays
/// unsent).
fn announce_and_send(s: &mut TcpStream, body: usize) {
    let _ = s.set_nonblocking(true);
    let mut bytes = DEFAULT_MAX_FRAME_LEN.to_be_bytes().to_vec();
    bytes.resize(4 + body, 0);
    let mut at = 0;
    while at < bytes.len() {
        match s.write(&bytes[at..]) {
            Ok(n) => at += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

/// Resident memory of process `pid` in KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// This process's soft limit on open files (`/proc/self/limits`).
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}
