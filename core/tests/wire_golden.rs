//! The wire format, byte for byte: one frame of every kind, and a request
//! as a version-1 peer gets it, against bytes pinned here. The round-trip
//! property tests (`codec_props.rs`) cannot see a change that encodes and
//! decodes the same on both ends of one build but differently from the
//! build before it, which is exactly what breaks N-1 interop in a rolling
//! deploy. A change here is a protocol change: it needs a new
//! `PROTOCOL_VERSION` and an encoding for the older peers, not new bytes.
//!
//! The pinned bytes were printed by this test run at `457dbf0`, before
//! `Message::ViewDelta` held its delta behind an `Arc`: passing here shows
//! the `Arc` is transparent on the wire. Protocol version 4 added
//! `Heartbeat::relays` (one byte at the end of the two heartbeats) and the
//! relay messages; `heartbeat_v3` is the old heartbeat's bytes, which a
//! version-3 peer is still sent. Protocol version 5 added
//! `Broadcast::to_incarnation` (one varint at the end of the broadcast);
//! `broadcast_v4` is the old broadcast's bytes, which a version-4 peer is
//! still sent. `HEDGEROW_PRINT_WIRE=1 cargo test
//! -p hedgerow-core --test wire_golden -- --nocapture` prints the table
//! this build produces.

#![allow(clippy::expect_used)]

use std::sync::Arc;

use hedgerow_core::wire::{
    decode_frame, encode_frame, encode_message_for_version, Frame, Heartbeat, HeartbeatAck,
    LeaderHint, ReplyBody, StreamKind, ViewDelta, ViewSnapshot, MAGIC,
};
use hedgerow_core::{Change, Hello, LeaveReason, Member, Message, NodeId, Payload, Term};

const MAX: u32 = 1 << 20;

fn id(s: &str) -> NodeId {
    NodeId::new(s).expect("a valid id")
}

fn member(name: &str, meta: &[u8]) -> Member {
    Member {
        id: id(name),
        incarnation: 0x0102_0304_0506,
        addr: format!("10.0.0.{}:7000", name.len()),
        meta_version: 3,
        meta: Payload::from(meta),
    }
}

/// One frame of every kind, with field values that take more than one
/// byte where a field is a varint, and every enum variant at least once.
fn frames() -> Vec<(&'static str, Frame)> {
    let hint = LeaderHint {
        id: id("leader-1"),
        addr: "10.0.0.9:7000".into(),
        term: Term(300),
    };
    let msg = |name, m| (name, Frame::Msg(m));
    vec![
        (
            "hello",
            Frame::Hello(Hello {
                magic: MAGIC,
                min_version: 1,
                max_version: 2,
                cluster_id: "prod-eu".into(),
                node_id: id("pod-7"),
                incarnation: u64::MAX,
                addr: "[::1]:7946".into(),
            }),
        ),
        ("refuse", Frame::Refuse("cluster id mismatch".into())),
        msg(
            "heartbeat",
            Message::Heartbeat(Heartbeat {
                term: Term(7),
                incarnation: 1 << 40,
                addr: "10.0.0.2:7000".into(),
                meta_version: 2,
                meta: Some(Payload::from(&b"zone=a"[..])),
                view_term: Term(7),
                view_version: 129,
                relays: true,
            }),
        ),
        msg(
            "heartbeat_no_meta",
            Message::Heartbeat(Heartbeat {
                term: Term(0),
                incarnation: 1,
                addr: "h:1".into(),
                meta_version: 0,
                meta: None,
                view_term: Term(0),
                view_version: 0,
                relays: false,
            }),
        ),
        msg(
            "heartbeat_ack_meta",
            Message::HeartbeatAck(HeartbeatAck {
                term: Term(7),
                leader_incarnation: 99,
                view_version: 129,
                digest: 1,
                lease_expires_ns: 2,
                lease_version: 3,
                your_meta_version: Some(300),
            }),
        ),
        msg(
            "reply_no_hint",
            Message::Reply {
                id: 1003,
                body: ReplyBody::NotLeader { hint: None },
            },
        ),
        msg(
            "heartbeat_ack",
            Message::HeartbeatAck(HeartbeatAck {
                term: Term(7),
                leader_incarnation: 99,
                view_version: 129,
                digest: 0xdead_beef_0bad_f00d,
                lease_expires_ns: 1_763_900_000_000_000_000,
                lease_version: 42,
                your_meta_version: None,
            }),
        ),
        msg(
            "view_delta",
            Message::ViewDelta(Arc::new(ViewDelta {
                term: Term(7),
                base_version: 128,
                version: 129,
                digest: 17,
                changes: vec![
                    Change::Upsert(member("pod-8", b"").into()),
                    Change::Remove {
                        id: id("pod-3"),
                        incarnation: 5,
                        reason: LeaveReason::Failed,
                    },
                    Change::Remove {
                        id: id("pod-4"),
                        incarnation: 6,
                        reason: LeaveReason::Replaced,
                    },
                    Change::Remove {
                        id: id("pod-5"),
                        incarnation: 7,
                        reason: LeaveReason::Left,
                    },
                    Change::Remove {
                        id: id("pod-6"),
                        incarnation: 8,
                        reason: LeaveReason::Unknown,
                    },
                ],
            })),
        ),
        msg(
            "view_snapshot",
            Message::ViewSnapshot(ViewSnapshot {
                term: Term(7),
                version: 129,
                digest: 17,
                chunk: 1,
                chunks: 2,
                total: 3,
                members: vec![
                    member("pod-1", b"m").into(),
                    member("pod-22", b"zone=b").into(),
                ],
            }),
        ),
        msg(
            "snapshot_request",
            Message::SnapshotRequest { term: Term(7) },
        ),
        msg("leave", Message::Leave { incarnation: 300 }),
        msg(
            "request",
            Message::Request {
                id: 1000,
                incarnation: 77,
                payload: Payload::from(&b"ping"[..]),
                settled_below: 990,
            },
        ),
        msg(
            "reply_ok",
            Message::Reply {
                id: 1000,
                body: ReplyBody::Ok {
                    term: Term(7),
                    payload: Payload::from(&b"pong"[..]),
                },
            },
        ),
        msg(
            "reply_not_leader",
            Message::Reply {
                id: 1001,
                body: ReplyBody::NotLeader { hint: Some(hint) },
            },
        ),
        msg(
            "reply_failed",
            Message::Reply {
                id: 1002,
                body: ReplyBody::Failed {
                    term: Term(7),
                    reason: "overloaded".into(),
                },
            },
        ),
        msg(
            "broadcast",
            Message::Broadcast {
                id: 5,
                incarnation: 77,
                payload: Payload::from(&b"all"[..]),
                to_incarnation: 9,
            },
        ),
        msg(
            "broadcast_reply_ok",
            Message::BroadcastReply {
                id: 5,
                result: Ok(Payload::from(&b"ok"[..])),
            },
        ),
        msg(
            "broadcast_reply_err",
            Message::BroadcastReply {
                id: 5,
                result: Err("handler failed".into()),
            },
        ),
        msg(
            "stream_open",
            Message::StreamOpen {
                sid: 3,
                kind: StreamKind::ToLeader,
                term: Term(7),
            },
        ),
        msg(
            "stream_open_member",
            Message::StreamOpen {
                sid: 4,
                kind: StreamKind::ToMember,
                term: Term(0),
            },
        ),
        msg(
            "stream_data",
            Message::StreamData {
                sid: 3,
                offset: 65_536,
                data: Payload::from(&b"chunk"[..]),
            },
        ),
        msg(
            "stream_credit",
            Message::StreamCredit {
                sid: 3,
                limit: 1 << 20,
            },
        ),
        msg(
            "stream_end",
            Message::StreamEnd {
                sid: 3,
                len: 70_000,
            },
        ),
        msg("stream_done", Message::StreamDone { sid: 3 }),
        msg(
            "resigned",
            Message::Resigned {
                term: Term(7),
                expires_ns: 1_763_900_000_000_000_000,
                version: 43,
            },
        ),
        msg(
            "stream_reset",
            Message::StreamReset {
                sid: 3,
                yours: true,
                reason: "gone".into(),
            },
        ),
        msg(
            "relay_delta",
            Message::RelayDelta {
                delta: Arc::new(ViewDelta {
                    term: Term(7),
                    base_version: 128,
                    version: 129,
                    digest: 17,
                    changes: vec![Change::Remove {
                        id: id("pod-3"),
                        incarnation: 5,
                        reason: LeaveReason::Failed,
                    }],
                }),
                from: Some(id("pod-1")),
                until: None,
                fanout: 300,
            },
        ),
        msg(
            "delta_request",
            Message::DeltaRequest {
                term: Term(7),
                after: 128,
            },
        ),
        msg(
            "snapshot_from",
            Message::SnapshotFrom {
                term: Term(7),
                id: id("pod-9"),
                addr: "10.0.0.9:7000".into(),
            },
        ),
    ]
}

/// What this build's bytes must be, as lowercase hex, length prefix
/// included.
const PINNED: &[(&str, &str)] = &[
    ("hello", "0000002a004847525701020770726f642d657505706f642d37ffffffffffffffffff010a5b3a3a315d3a37393436"),
    ("refuse", "000000150113636c7573746572206964206d69736d61746368"),
    ("heartbeat", "000000240200078080808080200d31302e302e302e323a373030300201067a6f6e653d6107810101"),
    ("heartbeat_no_meta", "0000000d0200000103683a310000000000"),
    ("heartbeat_ack_meta", "0000000c02010763810101020301ac02"),
    ("reply_no_hint", "000000060207eb070100"),
    ("heartbeat_ack", "0000001b0201076381018de0b7ddf0ddefd6de018080bfbac5b6a8bd182a00"),
    ("view_delta", "0000004a0202078001810111050005706f642d38868a9098a0200d31302e302e302e353a3730303003000105706f642d3305010105706f642d3406020105706f642d3507000105706f642d360803"),
    ("view_snapshot", "0000004a0203078101110102030205706f642d31868a9098a0200d31302e302e302e353a3730303003016d06706f642d3232868a9098a0200d31302e302e302e363a3730303003067a6f6e653d62"),
    ("snapshot_request", "00000003020407"),
    ("leave", "000000040205ac02"),
    ("request", "0000000c0206e8074d0470696e67de07"),
    ("reply_ok", "0000000b0207e807000704706f6e67"),
    ("reply_not_leader", "0000001f0207e9070101086c65616465722d310d31302e302e302e393a37303030ac02"),
    ("reply_failed", "000000110207ea0702070a6f7665726c6f61646564"),
    ("broadcast", "000000090208054d03616c6c09"),
    ("broadcast_reply_ok", "0000000702090500026f6b"),
    ("broadcast_reply_err", "00000013020905010e68616e646c6572206661696c6564"),
    ("stream_open", "00000005020a030007"),
    ("stream_open_member", "00000005020a040100"),
    ("stream_data", "0000000c020b03808004056368756e6b"),
    ("stream_credit", "00000006020c03808040"),
    ("stream_end", "00000006020d03f0a204"),
    ("stream_done", "00000003020e03"),
    ("resigned", "0000000d020f078080bfbac5b6a8bd182b"),
    ("stream_reset", "000000090210030104676f6e65"),
    ("relay_delta", "0000001c0213078001810111010105706f642d3305010105706f642d3100ac02"),
    ("delta_request", "000000050214078001"),
    ("snapshot_from", "0000001702150705706f642d390d31302e302e302e393a37303030"),
    ("request_v1", "0000000a0206e8074d0470696e67"),
    ("heartbeat_v3", "000000230200078080808080200d31302e302e302e323a373030300201067a6f6e653d61078101"),
    ("broadcast_v4", "000000080208054d03616c6c"),
];

/// The bytes pinned for `name`, as lowercase hex.
fn pinned(name: &str) -> &'static str {
    PINNED
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, h)| *h)
        .unwrap_or_else(|| panic!("no pinned bytes for {name}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn encoded(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(frame, MAX, &mut out).expect("encodes");
    out
}

/// The sample `name` as a peer of protocol `version` gets it.
fn for_version(name: &str, version: u16) -> Vec<u8> {
    let Some((_, Frame::Msg(msg))) = frames().into_iter().find(|(k, _)| *k == name) else {
        panic!("the {name} sample is missing");
    };
    let mut out = Vec::new();
    let split = encode_message_for_version(msg, version, MAX, &mut out).expect("encodes");
    assert!(split.is_none());
    out
}

/// The request frame as a version-1 peer gets it.
fn v1_request() -> Vec<u8> {
    for_version("request", 1)
}

#[test]
fn every_frame_is_the_pinned_bytes_and_decodes_back() {
    let frames = frames();
    if std::env::var_os("HEDGEROW_PRINT_WIRE").is_some() {
        for (name, f) in &frames {
            println!("    (\"{name}\", \"{}\"),", hex(&encoded(f)));
        }
        println!("    (\"request_v1\", \"{}\"),", hex(&v1_request()));
        println!(
            "    (\"heartbeat_v3\", \"{}\"),",
            hex(&for_version("heartbeat", 3))
        );
        println!(
            "    (\"broadcast_v4\", \"{}\"),",
            hex(&for_version("broadcast", 4))
        );
    }
    assert_eq!(
        frames.len() + 3,
        PINNED.len(),
        "one pinned encoding per sample, the v1 request, the v3 heartbeat and the v4 broadcast"
    );
    for (name, frame) in &frames {
        let bytes = encoded(frame);
        let pinned = pinned(name);
        assert_eq!(hex(&bytes), pinned, "{name}: the encoding changed");
        let (back, used) = decode_frame(&bytes, MAX)
            .expect("decodes")
            .expect("complete");
        assert_eq!(used, bytes.len(), "{name}");
        assert_eq!(&back, frame, "{name}: decoded differently");
    }
}

#[test]
fn a_version_1_request_is_the_pinned_bytes() {
    let pinned = pinned("request_v1");
    let bytes = v1_request();
    assert_eq!(hex(&bytes), pinned);
    // A v1 frame decodes here as the request with nothing settled.
    let Some((Frame::Msg(Message::Request { settled_below, .. }), _)) =
        decode_frame(&bytes, MAX).expect("decodes")
    else {
        panic!("not a request");
    };
    assert_eq!(settled_below, 0);
}

#[test]
fn a_version_3_heartbeat_is_the_bytes_version_3_sent_and_does_not_relay() {
    let pinned = pinned("heartbeat_v3");
    // The bytes a version-3 build pinned for this heartbeat, unchanged.
    let bytes = for_version("heartbeat", 3);
    assert_eq!(hex(&bytes), pinned);
    let Some((Frame::Msg(Message::Heartbeat(hb)), _)) = decode_frame(&bytes, MAX).expect("decodes")
    else {
        panic!("not a heartbeat");
    };
    assert!(!hb.relays, "a version-3 member is never asked to relay");
    assert_eq!(hb.view_version, 129);
    // Relayed views are never encoded for a version-3 peer.
    for name in ["relay_delta", "delta_request", "snapshot_from"] {
        let Some((_, Frame::Msg(msg))) = frames().into_iter().find(|(k, _)| *k == name) else {
            panic!("the {name} sample is missing");
        };
        let err =
            encode_message_for_version(msg, 3, MAX, &mut Vec::new()).expect_err("not in version 3");
        assert!(err.to_string().contains("version 4"), "{err}");
    }
}

#[test]
fn a_version_4_broadcast_is_the_bytes_version_4_sent_and_names_no_process() {
    let pinned = pinned("broadcast_v4");
    // The bytes a version-4 build pinned for this broadcast, unchanged.
    let bytes = for_version("broadcast", 4);
    assert_eq!(hex(&bytes), pinned);
    let Some((
        Frame::Msg(Message::Broadcast {
            id,
            to_incarnation,
            payload,
            ..
        }),
        used,
    )) = decode_frame(&bytes, MAX).expect("decodes")
    else {
        panic!("not a broadcast");
    };
    assert_eq!(used, bytes.len());
    assert_eq!((id, to_incarnation), (5, 0), "0: the sender does not say");
    assert_eq!(payload, Payload::from(&b"all"[..]));
}
