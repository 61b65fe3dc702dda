//! The transport's connection limits over real loopback TCP (tokio): a
//! peer that completes its hello and then goes silent is closed by the
//! idle timeout, while links between members that fall idle are closed
//! and dialed again without losing a broadcast; established inbound
//! connections are capped; and one source address flooding handshakes
//! holds at most its per-address share of the slots, so a joiner from
//! another address still gets in during the flood.
//!
//! The flood comes from 127.0.0.2 (Linux routes all of 127/8 to the
//! loopback interface), the joiner from 127.0.0.1. Timeouts are short and
//! everything is bounded: about ten seconds in all.
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hedgerow::runtime::{Runtime, TokioRuntime};
use hedgerow::store::MemoryStore;
use hedgerow::Builder;
use hedgerow_core::wire::{decode_frame, encode_frame, Frame};
use hedgerow_core::{Hello, NodeId};

mod support;
use support::{blocking, closed_within, local_node, tokio_runtime, wait_until};

const CLUSTER: &str = "limits";

fn hello_bytes(name: &str) -> Vec<u8> {
    let hello = Hello::new(CLUSTER, NodeId::new(name).unwrap(), 1, "127.0.0.1:1");
    let mut buf = Vec::new();
    encode_frame(&Frame::Hello(hello), 1 << 20, &mut buf).unwrap();
    buf
}

/// Connects, sends a valid hello and returns the node's first frame with
/// the connection (blocking; the read gives up after `wait`).
fn hello_then_silence(addr: SocketAddr, name: &str, wait: Duration) -> (Option<Frame>, TcpStream) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(&hello_bytes(name)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Ok(Some((frame, _))) = decode_frame(&got, 1 << 20) {
            return (Some(frame), s);
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return (None, s),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn silent_peers_are_closed_as_idle_and_idle_member_links_are_dialed_again() {
    const IDLE: Duration = Duration::from_millis(500);
    tokio_runtime().block_on(async {
        let rt = TokioRuntime::from_context().unwrap();
        let store = MemoryStore::new();
        let a = local_node(&rt, &store, (CLUSTER, "a"), |b| b.idle_timeout(IDLE)).await;
        assert!(wait_until(&rt, Duration::from_secs(5), || a.is_leader()).await);
        let b = local_node(&rt, &store, (CLUSTER, "b"), |b| b.idle_timeout(IDLE)).await;
        let c = local_node(&rt, &store, (CLUSTER, "c"), |b| b.idle_timeout(IDLE)).await;
        let all = [&a, &b, &c];
        let settled = || {
            all.iter().all(|n| {
                n.leader().map(|l| l.id).as_ref() == Some(a.id()) && n.members().len() == 3
            })
        };
        assert!(wait_until(&rt, Duration::from_secs(5), settled).await);

        // A peer that says hello and then nothing: answered, then closed
        // once it has been silent for the idle timeout (checked once per
        // period, so within two).
        let addr = a.local_addr();
        let started = Instant::now();
        let closed = blocking(&rt, move || {
            let (frame, s) = hello_then_silence(addr, "mute", Duration::from_secs(2));
            assert!(matches!(frame, Some(Frame::Hello(_))), "{frame:?}");
            closed_within(&mut { s }, IDLE * 4)
        })
        .await;
        let took = started.elapsed();
        assert!(closed, "a silent peer is closed");
        assert!(
            took >= IDLE.mul_f32(0.9) && took < IDLE * 3,
            "closed by the idle timeout, after {took:?}"
        );

        // b broadcasts: b dials c. Then the b–c link carries nothing for
        // several idle periods and is closed; the next broadcast dials
        // again and every member answers.
        for round in 0..2 {
            let replies = b.broadcast(vec![round]).await.expect("broadcast");
            assert_eq!(replies.len(), 3, "{replies:?}");
            for (from, r) in &replies {
                assert_eq!(r.as_deref().ok(), Some(&[round][..]), "{from}: {r:?}");
            }
            rt.sleep(IDLE * 3).await;
        }

        // Links to the leader carry heartbeats and were never idle.
        assert!(settled(), "nobody lost the leader or a member");
        for n in all {
            n.shutdown().await;
        }
    });
}

#[test]
fn established_inbound_connections_are_capped() {
    tokio_runtime().block_on(async {
        let rt = TokioRuntime::from_context().unwrap();
        let store = MemoryStore::new();
        let a = local_node(&rt, &store, (CLUSTER, "a"), |b| b.max_inbound(2)).await;
        assert!(wait_until(&rt, Duration::from_secs(5), || a.is_leader()).await);
        let addr = a.local_addr();
        let wait = Duration::from_secs(2);

        let (first, second, third) = blocking(&rt, move || {
            let first = hello_then_silence(addr, "p1", wait);
            let second = hello_then_silence(addr, "p2", wait);
            let third = hello_then_silence(addr, "p3", wait);
            (first, second, third)
        })
        .await;
        assert!(matches!(first.0, Some(Frame::Hello(_))));
        assert!(matches!(second.0, Some(Frame::Hello(_))));
        match &third.0 {
            Some(Frame::Refuse(why)) => assert!(why.contains("too many connections"), "{why}"),
            other => panic!("the third peer is refused, got {other:?}"),
        }

        // One leaves: its place is free again.
        drop(first);
        rt.sleep(Duration::from_millis(200)).await;
        let again = blocking(&rt, move || hello_then_silence(addr, "p4", wait)).await;
        assert!(matches!(again.0, Some(Frame::Hello(_))), "{:?}", again.0);
        drop((second, third, again));
        assert!(a.is_leader());
        a.shutdown().await;
    });
}

#[test]
fn one_address_flooding_handshakes_cannot_lock_out_a_joiner() {
    const PER_IP: usize = 4;
    const SLOTS: usize = 8;
    const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(800);
    tokio_runtime().block_on(async {
        let rt = TokioRuntime::from_context().unwrap();
        let store = MemoryStore::new();
        let limits = |b: Builder<TokioRuntime>| {
            b.max_handshakes(SLOTS)
                .max_handshakes_per_ip(PER_IP)
                .handshake_timeout(HANDSHAKE_TIMEOUT)
        };
        let a = local_node(&rt, &store, (CLUSTER, "a"), limits).await;
        assert!(wait_until(&rt, Duration::from_secs(5), || a.is_leader()).await);
        let addr = a.local_addr();

        // A sustained flood from 127.0.0.2: silent connections, each
        // replaced as soon as it is closed, far more than every slot.
        let (stop, stopped) = futures::channel::oneshot::channel::<()>();
        let attacker = tokio::spawn(async move {
            let mut held: Vec<tokio::net::TcpStream> = Vec::new();
            let mut opened = 0usize;
            let mut max_open_after_grace = 0usize;
            let flood = async {
                loop {
                    while held.len() < 4 * SLOTS {
                        let sock = tokio::net::TcpSocket::new_v4().unwrap();
                        sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
                        if let Ok(s) = sock.connect(addr).await {
                            held.push(s);
                            opened += 1;
                        }
                    }
                    // Long enough for the node to accept and close
                    // whatever is over its limits, far short of the
                    // handshake timeout.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    // Drop what the node closed; count what it keeps.
                    let mut buf = [0u8; 64];
                    held.retain(|s| {
                        matches!(s.try_read(&mut buf), Err(ref e) if e.kind() == ErrorKind::WouldBlock)
                    });
                    max_open_after_grace = max_open_after_grace.max(held.len());
                }
            };
            {
                futures::pin_mut!(flood);
                let _ = futures::future::select(flood, stopped).await;
            }
            (opened, max_open_after_grace)
        });

        rt.sleep(Duration::from_millis(300)).await;
        let joined_at = Instant::now();
        let b = local_node(&rt, &store, (CLUSTER, "b"), limits).await;
        let joined = wait_until(&rt, Duration::from_secs(5), || {
            b.leader().map(|l| l.id).as_ref() == Some(a.id()) && a.members().len() == 2
        })
        .await;
        let took = joined_at.elapsed();
        let _ = stop.send(());
        let (opened, kept) = attacker.await.unwrap();
        assert!(joined, "the joiner got in during the flood");
        assert!(opened > 4 * SLOTS, "the flood was sustained ({opened} opened)");
        assert!(
            kept <= PER_IP,
            "one address held at most its {PER_IP} handshake slots, held {kept}"
        );
        assert!(took < Duration::from_secs(5), "joined after {took:?}");
        assert!(a.is_leader());
        b.shutdown().await;
        a.shutdown().await;
    });
}
