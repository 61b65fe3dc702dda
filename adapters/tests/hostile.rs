//! Hostile peers against the frame budget over real loopback TCP (tokio):
//! hundreds of connections from one address that say a valid hello,
//! announce the largest frame and send part of its body, then hold. The
//! node's budget counter never goes above the budget, the members keep
//! their heartbeats and the leader throughout, a member's broadcast still
//! gets every answer, and once the attackers leave the budget is back to
//! nothing. Then a slow body is closed by the frame timeout, a second hello
//! for one node id replaces the first, and the per-address cap refuses.
//!
//! Attackers come from 127.0.0.2 (Linux routes all of 127/8 to loopback),
//! members from 127.0.0.1. No assertion is on a duration.
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use hedgerow::runtime::{Runtime, TokioRuntime};
use hedgerow::store::MemoryStore;
use hedgerow_core::wire::{decode_frame, encode_frame, Frame};
use hedgerow_core::{Hello, NodeId};

mod support;
use support::{blocking, closed_within, local_node, tokio_runtime, wait_until};

const CLUSTER: &str = "hostile";
const BUDGET: usize = 8 << 20;
const MAX_FRAME: u32 = hedgerow_core::DEFAULT_MAX_FRAME_LEN;

/// Connects to `to` from `ip` (a port of the system's choosing).
async fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(ip.parse().unwrap(), 0))
        .unwrap();
    let s = socket.connect(to).await.unwrap().into_std().unwrap();
    s.set_nonblocking(false).unwrap();
    s
}

/// Sends a valid hello as `name` on `s` and reads the node's answer:
/// whether it answered with its own hello.
fn say_hello(s: &mut TcpStream, name: &str) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let hello = Hello::new(CLUSTER, NodeId::new(name).unwrap(), 1, "127.0.0.1:1");
    let mut buf = Vec::new();
    encode_frame(&Frame::Hello(hello), 1 << 20, &mut buf).unwrap();
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

/// `n` connections from `ip` that said hello as `name` plus their index
/// and were answered, one after the other (the node runs only so many
/// handshakes at once).
async fn greeted(
    ip: &str,
    to: SocketAddr,
    name: &str,
    n: usize,
    rt: &TokioRuntime,
) -> Vec<TcpStream> {
    let mut conns = Vec::new();
    for i in 0..n {
        let mut s = connect_from(ip, to).await;
        let name = format!("{name}{i}");
        if let Some(s) = blocking(rt, move || say_hello(&mut s, &name).then_some(s)).await {
            conns.push(s);
        }
    }
    conns
}

/// Announces a frame of `MAX_FRAME` bytes and sends `body` bytes of it
/// without blocking (what the socket does not take stays unsent).
fn announce_and_hold(s: &mut TcpStream, body: usize) {
    s.set_nonblocking(true).unwrap();
    let mut bytes = MAX_FRAME.to_be_bytes().to_vec();
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

#[test]
fn hostile_connections_stay_within_the_frame_budget_and_members_keep_their_leader() {
    const HOSTILE: usize = 300;
    tokio_runtime().block_on(async {
        let rt = TokioRuntime::from_context().unwrap();
        let store = MemoryStore::new();
        let a = local_node(&rt, &store, (CLUSTER, "a"), |b| {
            // The default frame timeout (10 s) frees what the attackers
            // hold; the idle timeout would close them first otherwise.
            b.frame_budget(BUDGET)
                .idle_timeout(Duration::from_secs(120))
                .max_inbound_per_ip(2 * HOSTILE)
                .max_inbound(4 * HOSTILE)
                .max_handshakes_per_ip(64)
        })
        .await;
        assert!(wait_until(&rt, Duration::from_secs(5), || a.is_leader()).await);
        let b = local_node(&rt, &store, (CLUSTER, "b"), |b| b).await;
        let c = local_node(&rt, &store, (CLUSTER, "c"), |b| b).await;
        let settled = || {
            [&a, &b, &c].iter().all(|n| {
                n.leader().map(|l| l.id).as_ref() == Some(a.id()) && n.members().len() == 3
            })
        };
        assert!(wait_until(&rt, Duration::from_secs(10), settled).await);

        // Each attacker sends 256 KiB of its 4 MiB frame: 75 MiB sent, 1.2 GB
        // claimed, against an 8 MiB budget.
        let addr = a.local_addr();
        let mut attackers = greeted("127.0.0.2", addr, "x", HOSTILE, &rt).await;
        let attackers = blocking(&rt, move || {
            for s in &mut attackers {
                announce_and_hold(s, 256 * 1024);
            }
            attackers
        })
        .await;
        assert!(
            attackers.len() >= HOSTILE * 9 / 10,
            "{} got in",
            attackers.len()
        );
        assert!(
            wait_until(&rt, Duration::from_secs(10), || a
                .transport_stats()
                .frame_budget_waits
                > 0)
            .await,
            "the attack filled the budget: {:?}",
            a.transport_stats()
        );

        // Members go on: heartbeats keep the view and the leader, and a
        // broadcast (frames both ways between members) gets every answer.
        for round in 0..3u8 {
            let replies = b.broadcast(vec![round]).await.unwrap();
            assert_eq!(replies.len(), 3, "{replies:?}");
            for (from, r) in &replies {
                assert_eq!(
                    r.as_deref().ok(),
                    Some(&[round][..]),
                    "{from}: {r:?}\n{:?}\n{:?}",
                    a.transport_stats(),
                    b.transport_stats()
                );
            }
            rt.sleep(Duration::from_millis(300)).await;
            let seen: Vec<_> = [&a, &b, &c]
                .iter()
                .map(|n| (n.leader().map(|l| l.id), n.members().len()))
                .collect();
            assert!(settled(), "a member lost the leader or a member: {seen:?}");
        }
        let during = a.transport_stats();
        assert!(
            during.frame_bytes_peak <= BUDGET,
            "peak {} over the budget {BUDGET}",
            during.frame_bytes_peak
        );
        assert!(
            during.frame_bytes_in_flight > BUDGET / 2,
            "the attackers hold the strangers' share: {during:?}"
        );

        // The attackers leave: every byte of the budget comes back. (One
        // that waits for the budget reads nothing, so it sees its peer
        // gone only at the frame timeout.)
        drop(attackers);
        assert!(
            wait_until(&rt, Duration::from_secs(40), || a
                .transport_stats()
                .frame_bytes_in_flight
                == 0)
            .await,
            "{:?}",
            a.transport_stats()
        );
        assert!(a.transport_stats().frame_bytes_peak <= BUDGET);
        assert!(settled());
    });
}

#[test]
fn slow_bodies_second_hellos_and_crowded_addresses_are_closed_and_counted() {
    tokio_runtime().block_on(async {
        let rt = TokioRuntime::from_context().unwrap();
        let store = MemoryStore::new();
        let a = local_node(&rt, &store, (CLUSTER, "a"), |b| {
            b.frame_timeout(Duration::from_millis(300))
                .max_inbound_per_ip(3)
        })
        .await;
        let addr = a.local_addr();

        // A frame started and never finished: closed by the frame timeout.
        let mut slow = greeted("127.0.0.2", addr, "slow", 1, &rt).await;
        assert_eq!(slow.len(), 1);
        let closed = blocking(&rt, move || {
            announce_and_hold(&mut slow[0], 100);
            closed_within(&mut slow[0], Duration::from_secs(10))
        })
        .await;
        assert!(closed, "a slow body is closed");
        assert_eq!(a.transport_stats().closed_slow_frame, 1);

        // A second hello for one id closes the first connection.
        let mut first = greeted("127.0.0.3", addr, "twin", 1, &rt).await;
        let second = greeted("127.0.0.3", addr, "twin", 1, &rt).await;
        assert_eq!((first.len(), second.len()), (1, 1));
        let replaced = blocking(&rt, move || {
            closed_within(&mut first[0], Duration::from_secs(10))
        })
        .await;
        assert!(replaced, "the older connection of an id is closed");
        assert_eq!(a.transport_stats().replaced_same_id, 1);

        // Three connections from one address get in; the fourth is refused
        // after its hello.
        let held = greeted("127.0.0.4", addr, "c", 3, &rt).await;
        assert_eq!(held.len(), 3);
        let fourth = greeted("127.0.0.4", addr, "d", 1, &rt).await;
        assert!(
            fourth.is_empty(),
            "the fourth connection from one address is refused"
        );
        assert_eq!(a.transport_stats().refused_per_address, 1);
    });
}
