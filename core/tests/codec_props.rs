//! Property tests: every `Message` variant, with any field values within
//! the protocol's limits, survives encode → decode unchanged, and so do the
//! handshake frames. Values beyond the limits (long addresses, oversize
//! metadata) are refused by the decoder with a named reason, never garbled.

// Strategy helpers outside #[test] functions expect too: a failure is a
// test failure.
#![allow(clippy::expect_used)]

use hedgerow_core::wire::{
    decode_body, decode_body_shared, decode_frame, encode_frame, encode_message_split, Frame,
    Heartbeat, HeartbeatAck, LeaderHint, ReplyBody, StreamKind, ViewDelta, ViewSnapshot,
    LEN_PREFIX,
};
use hedgerow_core::{
    Bytes, Change, DecodeError, Hello, LeaveReason, Member, Message, NodeId, Payload, Term,
    DEFAULT_MAX_FRAME_LEN, MAX_ADDR_LEN,
};
use proptest::prelude::*;

fn node_id() -> impl Strategy<Value = NodeId> {
    "[a-zA-Z0-9._:/-]{1,128}".prop_map(|s| NodeId::new(s).expect("the pattern is well-formed"))
}

fn addr() -> impl Strategy<Value = String> {
    proptest::string::string_regex(".{0,64}")
        .expect("regex")
        .prop_filter("within MAX_ADDR_LEN", |s| s.len() <= MAX_ADDR_LEN)
}

fn text() -> impl Strategy<Value = String> {
    proptest::string::string_regex(".{0,40}").expect("regex")
}

fn payload() -> impl Strategy<Value = Payload> {
    proptest::collection::vec(any::<u8>(), 0..300).prop_map(Payload::from)
}

fn term() -> impl Strategy<Value = Term> {
    any::<u64>().prop_map(Term)
}

fn member() -> impl Strategy<Value = Member> {
    (node_id(), any::<u64>(), addr(), any::<u64>(), payload()).prop_map(
        |(id, incarnation, addr, meta_version, meta)| Member {
            id,
            incarnation,
            addr,
            meta_version,
            meta,
        },
    )
}

fn reason() -> impl Strategy<Value = LeaveReason> {
    prop_oneof![
        Just(LeaveReason::Left),
        Just(LeaveReason::Failed),
        Just(LeaveReason::Replaced),
        Just(LeaveReason::Unknown),
    ]
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        member().prop_map(|m| Change::Upsert(m.into())),
        (node_id(), any::<u64>(), reason()).prop_map(|(id, incarnation, reason)| {
            Change::Remove {
                id,
                incarnation,
                reason,
            }
        }),
    ]
}

fn reply_body() -> impl Strategy<Value = ReplyBody> {
    prop_oneof![
        (term(), payload()).prop_map(|(term, payload)| ReplyBody::Ok { term, payload }),
        proptest::option::of((node_id(), addr(), term())).prop_map(|h| ReplyBody::NotLeader {
            hint: h.map(|(id, addr, term)| LeaderHint { id, addr, term }),
        }),
        (term(), text()).prop_map(|(term, reason)| ReplyBody::Failed { term, reason }),
    ]
}

fn snapshot() -> impl Strategy<Value = ViewSnapshot> {
    (
        term(),
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(member().prop_map(Into::into), 0..5),
        1u32..8,
        0u32..8,
        0u32..4,
    )
        .prop_map(|(term, version, digest, members, chunks, chunk, extra)| {
            let total = members.len() as u32 + extra;
            ViewSnapshot {
                term,
                version,
                digest,
                chunk: chunk % chunks,
                chunks,
                total,
                members,
            }
        })
}

/// Every variant, one arm each.
fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            term(),
            any::<u64>(),
            addr(),
            any::<u64>(),
            proptest::option::of(payload()),
            term(),
            any::<u64>(),
            any::<bool>()
        )
            .prop_map(
                |(term, incarnation, addr, meta_version, meta, view_term, view_version, relays)| {
                    Message::Heartbeat(Heartbeat {
                        term,
                        incarnation,
                        addr,
                        meta_version,
                        meta,
                        view_term,
                        view_version,
                        relays,
                    })
                }
            ),
        (
            term(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(term, li, vv, digest, exp, lv, ymv)| {
                Message::HeartbeatAck(HeartbeatAck {
                    term,
                    leader_incarnation: li,
                    view_version: vv,
                    digest,
                    lease_expires_ns: exp,
                    lease_version: lv,
                    your_meta_version: ymv,
                })
            }),
        (
            term(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(change(), 0..5)
        )
            .prop_map(|(term, base_version, version, digest, changes)| {
                Message::ViewDelta(std::sync::Arc::new(ViewDelta {
                    term,
                    base_version,
                    version,
                    digest,
                    changes,
                }))
            }),
        snapshot().prop_map(Message::ViewSnapshot),
        (
            term(),
            any::<u64>(),
            proptest::collection::vec(change(), 0..3),
            proptest::option::of(node_id()),
            proptest::option::of(node_id()),
            any::<u16>()
        )
            .prop_map(|(term, base_version, changes, from, until, fanout)| {
                Message::RelayDelta {
                    delta: std::sync::Arc::new(ViewDelta {
                        term,
                        base_version,
                        version: base_version.wrapping_add(1),
                        digest: 0,
                        changes,
                    }),
                    from,
                    until,
                    fanout,
                }
            }),
        (term(), any::<u64>()).prop_map(|(term, after)| Message::DeltaRequest { term, after }),
        (term(), node_id(), addr()).prop_map(|(term, id, addr)| Message::SnapshotFrom {
            term,
            id,
            addr
        }),
        term().prop_map(|term| Message::SnapshotRequest { term }),
        any::<u64>().prop_map(|incarnation| Message::Leave { incarnation }),
        (any::<u64>(), any::<u64>(), payload(), any::<u64>()).prop_map(
            |(id, incarnation, payload, settled_below)| Message::Request {
                id,
                incarnation,
                payload,
                settled_below,
            }
        ),
        (any::<u64>(), reply_body()).prop_map(|(id, body)| Message::Reply { id, body }),
        (any::<u64>(), any::<u64>(), payload(), any::<u64>()).prop_map(
            |(id, incarnation, payload, to_incarnation)| Message::Broadcast {
                id,
                incarnation,
                payload,
                to_incarnation,
            }
        ),
        (
            any::<u64>(),
            prop_oneof![payload().prop_map(Ok), text().prop_map(Err)]
        )
            .prop_map(|(id, result)| Message::BroadcastReply { id, result }),
        (
            any::<u64>(),
            prop_oneof![Just(StreamKind::ToLeader), Just(StreamKind::ToMember)],
            term()
        )
            .prop_map(|(sid, kind, term)| Message::StreamOpen { sid, kind, term }),
        (any::<u64>(), any::<u64>(), payload())
            .prop_map(|(sid, offset, data)| Message::StreamData { sid, offset, data }),
        (any::<u64>(), any::<u64>()).prop_map(|(sid, limit)| Message::StreamCredit { sid, limit }),
        (any::<u64>(), any::<u64>()).prop_map(|(sid, len)| Message::StreamEnd { sid, len }),
        (any::<u64>(), any::<bool>(), text())
            .prop_map(|(sid, yours, reason)| Message::StreamReset { sid, yours, reason }),
    ]
}

fn round_trip(frame: &Frame) -> Result<Frame, DecodeError> {
    let mut buf = Vec::new();
    encode_frame(frame, DEFAULT_MAX_FRAME_LEN, &mut buf).expect("fits the default frame");
    let (back, used) = decode_frame(&buf, DEFAULT_MAX_FRAME_LEN)?.expect("a whole frame");
    assert_eq!(used, buf.len());
    Ok(back)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_message_variant_round_trips(msg in message()) {
        let frame = Frame::Msg(msg);
        prop_assert_eq!(round_trip(&frame), Ok(frame));
    }

    #[test]
    fn hellos_and_refusals_round_trip(
        cluster in text(), id in node_id(), inc in any::<u64>(), a in addr(),
        min in any::<u16>(), max in any::<u16>(), why in text(),
    ) {
        let mut hello = Hello::new(&cluster, id, inc, &a);
        hello.min_version = min;
        hello.max_version = max;
        let frame = Frame::Hello(hello);
        prop_assert_eq!(round_trip(&frame), Ok(frame));
        let refuse = Frame::Refuse(why);
        prop_assert_eq!(round_trip(&refuse), Ok(refuse));
    }

    #[test]
    fn an_address_beyond_the_limit_is_refused_not_garbled(extra in 1usize..64, inc in any::<u64>()) {
        let hb = Message::Heartbeat(Heartbeat {
            term: Term(1),
            incarnation: inc,
            addr: "a".repeat(MAX_ADDR_LEN + extra),
            meta_version: 0,
            meta: None,
            view_term: Term(0),
            view_version: 0,
            relays: false,
        });
        prop_assert!(matches!(round_trip(&Frame::Msg(hb)), Err(DecodeError::Invalid(_))));
    }

    /// The split encoding (header, then the stream bytes written in place)
    /// puts exactly the bytes of the whole encoding on the wire, for every
    /// message and for stream chunks on both sides of the split size.
    #[test]
    fn split_encoding_is_the_same_bytes(
        msg in message(), sid in any::<u64>(), offset in any::<u64>(), len in 0usize..70_000,
    ) {
        let big = Message::StreamData { sid, offset, data: Payload::from(vec![0xa5; len]) };
        for msg in [msg, big] {
            let mut whole = Vec::new();
            encode_frame(&Frame::Msg(msg.clone()), DEFAULT_MAX_FRAME_LEN, &mut whole)
                .expect("fits the default frame");
            let mut split = Vec::new();
            let body = encode_message_split(msg, DEFAULT_MAX_FRAME_LEN, &mut split)
                .expect("fits the default frame");
            if let Some(body) = body {
                split.extend_from_slice(&body);
            }
            prop_assert_eq!(&split, &whole);
            let body = Bytes::from(whole[LEN_PREFIX..].to_vec());
            prop_assert_eq!(decode_body_shared(body), decode_body(&whole[LEN_PREFIX..]));
        }
    }

    /// Decoding stream data in place gives the same frame, or the same
    /// error, as the copying decoder on anything after the stream-data tag.
    #[test]
    fn shared_decoding_agrees_on_any_bytes(rest in proptest::collection::vec(any::<u8>(), 0..48)) {
        let mut body = vec![2u8, 11];
        body.extend_from_slice(&rest);
        prop_assert_eq!(decode_body_shared(Bytes::from(body.clone())), decode_body(&body));
    }
}

/// Every byte `msg` puts on the wire to a peer of `version` (a split
/// body included), or `None` if it is not encoded for that version.
fn for_version(msg: Message, version: u16) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let split =
        hedgerow_core::wire::encode_message_for_version(msg, version, 1 << 24, &mut out).ok()?;
    if let Some(body) = split {
        out.extend_from_slice(&body);
    }
    Some(out)
}

proptest! {
    /// A request encoded for a version-1 peer is the version-1 frame (the
    /// version-2 one minus `settled_below`), and it decodes here with
    /// `settled_below` 0; every other message is encoded as for version 2.
    #[test]
    fn version_1_requests_drop_only_settled_below(msg in message()) {
        let v1 = for_version(msg.clone(), 1);
        prop_assume!(v1.is_some());
        let v1 = v1.unwrap();
        let decoded = decode_frame(&v1, 1 << 24).unwrap().unwrap().0;
        let expected = match msg.clone() {
            Message::Request { id, incarnation, payload, .. } => {
                // The frame is one byte shorter than version 2's.
                let mut v2 = Vec::new();
                encode_frame(&Frame::Msg(Message::Request {
                    id, incarnation, payload: payload.clone(), settled_below: 0,
                }), 1 << 24, &mut v2).unwrap();
                prop_assert_eq!(v1.len() + 1, v2.len());
                Message::Request { id, incarnation, payload, settled_below: 0 }
            }
            // Below version 4 a heartbeat goes without `relays`.
            Message::Heartbeat(hb) => Message::Heartbeat(Heartbeat { relays: false, ..hb }),
            // Below version 5 a broadcast goes without `to_incarnation`.
            Message::Broadcast { id, incarnation, payload, .. } => {
                Message::Broadcast { id, incarnation, payload, to_incarnation: 0 }
            }
            other => other,
        };
        prop_assert_eq!(decoded, Frame::Msg(expected));
    }

    /// A broadcast for a version-4 peer is the version-5 frame of the same
    /// broadcast naming no process, without its last byte, and decodes
    /// naming none; everything else is encoded as for version 5.
    #[test]
    fn version_4_peers_get_broadcasts_without_to_incarnation(msg in message()) {
        let v4 = for_version(msg.clone(), 4);
        prop_assume!(v4.is_some());
        let v4 = v4.unwrap();
        let decoded = decode_frame(&v4, 1 << 24).unwrap().unwrap().0;
        match msg {
            Message::Broadcast { id, incarnation, payload, .. } => {
                let unnamed = Message::Broadcast { id, incarnation, payload, to_incarnation: 0 };
                let mut v5 = Vec::new();
                encode_frame(&Frame::Msg(unnamed.clone()), 1 << 24, &mut v5).unwrap();
                prop_assert_eq!(v4.len() + 1, v5.len());
                prop_assert_eq!(&v4[LEN_PREFIX..], &v5[LEN_PREFIX..v5.len() - 1]);
                prop_assert_eq!(decoded, Frame::Msg(unnamed));
            }
            other => {
                let mut v5 = Vec::new();
                if let Some(body) = encode_message_split(other.clone(), 1 << 24, &mut v5).unwrap() {
                    v5.extend_from_slice(&body);
                }
                prop_assert_eq!(&v4, &v5);
                prop_assert_eq!(decoded, Frame::Msg(other));
            }
        }
    }

    /// A heartbeat for a version-3 peer is the version-4 frame without its
    /// last byte, decodes with `relays` false, and relayed views are not
    /// encoded for it at all.
    #[test]
    fn version_3_peers_get_heartbeats_without_relays_and_no_relayed_views(msg in message()) {
        let mut v3 = Vec::new();
        let res = hedgerow_core::wire::encode_message_for_version(msg.clone(), 3, 1 << 24, &mut v3);
        match &msg {
            Message::Heartbeat(hb) => {
                let mut v4 = Vec::new();
                encode_frame(&Frame::Msg(msg.clone()), 1 << 24, &mut v4).unwrap();
                prop_assert!(res.is_ok());
                prop_assert_eq!(v3.len() + 1, v4.len());
                let decoded = decode_frame(&v3, 1 << 24).unwrap().unwrap().0;
                let expected = Heartbeat { relays: false, ..hb.clone() };
                prop_assert_eq!(decoded, Frame::Msg(Message::Heartbeat(expected)));
            }
            Message::RelayDelta { .. }
            | Message::DeltaRequest { .. }
            | Message::SnapshotFrom { .. } => {
                prop_assert!(res.is_err());
                prop_assert!(v3.is_empty());
            }
            _ => {}
        }
    }
}
