//! Bad input at the core's edges, one test per kind, each asserting what
//! happens: the handshake refuses strangers, the frame decoder refuses bad
//! bytes before allocating, a peer cannot claim a term, a flood of fake
//! members cannot grow a leader without bound, oversize metadata is refused.

// Helpers outside #[test] functions unwrap too: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use hedgerow_core::wire::{
    decode_body, decode_frame, encode_frame, peek_frame_len, Frame, Heartbeat, HeartbeatAck,
    ViewSnapshot, LEN_PREFIX, MAGIC,
};
use hedgerow_core::{
    CasOutcome, ClockReading, Config, DecodeError, HandshakeError, Hello, Identity, Input, LeaseOp,
    LeaseReply, LeaseRow, Member, Message, MonoTime, Node, NodeId, Now, Output, Payload, Term,
    DEFAULT_MAX_FRAME_LEN,
};

const MS: u64 = 1_000_000;
const T0: u64 = 1_767_225_600_000_000_000;

fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

fn at(ms: u64) -> Now {
    Now {
        mono: MonoTime::from_nanos(ms * MS),
        clock: ClockReading::synchronized(T0 + ms * MS, 5 * MS),
    }
}

fn node(name: &str, cfg: Config) -> Node {
    let me = Identity {
        id: id(name),
        addr: format!("{name}:7000"),
        incarnation: 1,
    };
    Node::new(cfg, me, 7).unwrap()
}

/// Drains outputs, answering lease operations from `store` honestly (when
/// `answer` says so); returns everything else.
fn drive(n: &mut Node, now: Now, store: &mut Option<LeaseRow>, answer: bool) -> Vec<Output> {
    let mut rest = Vec::new();
    let mut ops = Vec::new();
    loop {
        while let Some(o) = n.poll() {
            match o {
                Output::Lease(op) if answer => ops.push(op),
                o => rest.push(o),
            }
        }
        let Some(op) = ops.pop() else {
            return rest;
        };
        let reply = match &op {
            LeaseOp::Read { .. } => LeaseReply::Read(store.clone()),
            LeaseOp::CompareAndSet {
                expected_version,
                write,
                ..
            } => {
                let cur = store.as_ref().map(|r| r.version);
                if cur == *expected_version {
                    let row = write.clone().into_row(cur.unwrap_or(0) + 1);
                    *store = Some(row.clone());
                    LeaseReply::Cas(CasOutcome::Applied(row))
                } else {
                    LeaseReply::Cas(CasOutcome::Conflict(store.clone()))
                }
            }
        };
        n.handle(
            now,
            Input::Lease {
                op: op.id(),
                result: Ok(reply),
            },
        );
    }
}

/// Runs `n` on timers until `until_ms`, answering the store.
fn run(n: &mut Node, from_ms: u64, until_ms: u64, store: &mut Option<LeaseRow>) -> Vec<Output> {
    let mut out = Vec::new();
    let mut t = from_ms;
    n.handle(at(t), Input::Tick);
    out.extend(drive(n, at(t), store, true));
    while let Some(next) = n.poll_timeout() {
        let next_ms = next.as_nanos().div_ceil(MS).max(t);
        if next_ms > until_ms {
            break;
        }
        t = if next_ms == t { t + 1 } else { next_ms };
        n.handle(at(t), Input::Tick);
        out.extend(drive(n, at(t), store, true));
    }
    out
}

fn leader(cfg: Config) -> (Node, Option<LeaseRow>) {
    let mut store = None;
    let mut a = node("a", cfg);
    run(&mut a, 0, 100, &mut store);
    assert!(a.is_leader(&at(100)), "the only candidate leads");
    (a, store)
}

fn hb(incarnation: u64, meta: Option<Payload>, term: Term) -> Message {
    Message::Heartbeat(Heartbeat {
        term,
        incarnation,
        addr: "x:1".into(),
        meta_version: u64::from(meta.is_some()),
        meta,
        view_term: Term(0),
        view_version: 0,
        relays: true,
    })
}

// ---- the handshake ------------------------------------------------------------

#[test]
fn a_hello_from_another_cluster_is_refused_with_both_names() {
    let ours = Hello::new("prod", id("a"), 1, "10.0.0.1:7000");
    let theirs = Hello::new("staging", id("b"), 2, "10.0.0.2:7000");
    let err = ours.negotiate(&theirs).unwrap_err();
    assert!(matches!(err, HandshakeError::ClusterMismatch { .. }));
    let text = err.to_string();
    assert!(text.contains("prod") && text.contains("staging"), "{text}");
    // Also after a trip through the codec, as it arrives from a socket.
    let mut buf = Vec::new();
    encode_frame(&Frame::Hello(theirs), DEFAULT_MAX_FRAME_LEN, &mut buf).unwrap();
    let Some((Frame::Hello(h), _)) = decode_frame(&buf, DEFAULT_MAX_FRAME_LEN).unwrap() else {
        panic!("a hello decodes as a hello");
    };
    assert!(matches!(
        ours.negotiate(&h),
        Err(HandshakeError::ClusterMismatch { .. })
    ));
}

#[test]
fn an_old_or_disjoint_protocol_version_is_refused_and_an_overlap_agrees() {
    let ours = Hello::new("c", id("a"), 1, "a:1");
    let (min_ours, max_ours) = (ours.min_version, ours.max_version);
    assert!(min_ours < max_ours, "this build speaks N and N-1");
    let with = |min, max| Hello {
        min_version: min,
        max_version: max,
        ..Hello::new("c", id("b"), 2, "b:1")
    };
    for (min, max) in [
        (0, min_ours - 1),
        (max_ours + 1, max_ours + 2),
        (1, 0),
        (u16::MAX, u16::MAX),
    ] {
        assert!(
            matches!(
                ours.negotiate(&with(min, max)),
                Err(HandshakeError::NoCommonVersion { .. })
            ),
            "{min}..={max}"
        );
    }
    // N-1 and N+1 peers overlapping ours agree on the highest common one.
    assert_eq!(ours.negotiate(&with(0, min_ours)), Ok(min_ours));
    assert_eq!(ours.negotiate(&with(min_ours, max_ours)), Ok(max_ours));
    assert_eq!(ours.negotiate(&with(max_ours, 9)), Ok(max_ours));
}

#[test]
fn a_hello_with_bad_magic_or_our_own_id_is_refused() {
    let ours = Hello::new("c", id("a"), 1, "a:1");
    let mut bad = Hello::new("c", id("b"), 2, "b:1");
    bad.magic = *b"HTTP";
    assert_eq!(ours.negotiate(&bad), Err(HandshakeError::BadMagic));
    let twin = Hello::new("c", id("a"), 99, "a2:1");
    assert!(matches!(
        ours.negotiate(&twin),
        Err(HandshakeError::SameId { .. })
    ));
    assert_eq!(MAGIC, *b"HGRW");
}

// ---- frames -------------------------------------------------------------------

#[test]
fn an_oversize_length_prefix_is_refused_from_the_prefix_alone() {
    // Only the four prefix bytes exist: the refusal cannot have read (or
    // allocated for) a body.
    let prefix = u32::MAX.to_be_bytes();
    let err = peek_frame_len(&prefix, DEFAULT_MAX_FRAME_LEN).unwrap_err();
    assert_eq!(
        err,
        DecodeError::TooLarge {
            len: u64::from(u32::MAX),
            max: DEFAULT_MAX_FRAME_LEN
        }
    );
    assert_eq!(decode_frame(&prefix, DEFAULT_MAX_FRAME_LEN), Err(err));
    // One byte over a small limit.
    let just_over = 1025u32.to_be_bytes();
    assert!(matches!(
        decode_frame(&just_over, 1024),
        Err(DecodeError::TooLarge { len: 1025, .. })
    ));
    // And an encoder never produces one.
    let big = Frame::Refuse("x".repeat(2000));
    let mut buf = Vec::new();
    assert!(encode_frame(&big, 1024, &mut buf).is_err());
    assert!(buf.is_empty());
}

#[test]
fn a_truncated_frame_waits_for_more_bytes_and_a_truncated_body_is_malformed() {
    // (Not a request nor a broadcast: without its last byte either is an
    // older peer's, which decodes.)
    let msg = Message::BroadcastReply {
        id: 7,
        result: Ok(Payload::from("hello")),
    };
    let mut buf = Vec::new();
    encode_frame(&Frame::Msg(msg), 1024, &mut buf).unwrap();
    for cut in 0..buf.len() {
        assert_eq!(decode_frame(&buf[..cut], 1024), Ok(None), "{cut} bytes");
    }
    let body = &buf[LEN_PREFIX..];
    assert_eq!(
        decode_body(&body[..body.len() - 1]),
        Err(DecodeError::Malformed)
    );
}

#[test]
fn a_zero_length_frame_is_refused() {
    assert_eq!(decode_frame(&[0, 0, 0, 0], 1024), Err(DecodeError::Empty));
    assert_eq!(
        peek_frame_len(&[0, 0, 0, 0, 1, 2], 1024),
        Err(DecodeError::Empty)
    );
}

#[test]
fn garbage_bytes_are_refused_without_panicking() {
    let garbage: [&[u8]; 5] = [
        &[0xff; 16],
        &[0x02, 0x7f, 0xff, 0xff, 0xff, 0xff, 0x0f],
        b"GET / HTTP/1.1\r\n\r\n",
        &[0x00],
        &[
            0x02, 0x06, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ],
    ];
    for g in garbage {
        assert!(decode_body(g).is_err(), "{g:?}");
        let mut framed = (g.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(g);
        assert!(decode_frame(&framed, 1024).is_err(), "{g:?}");
    }
    // A valid frame with a byte left over is refused too.
    let mut buf = Vec::new();
    encode_frame(&Frame::Refuse("no".into()), 1024, &mut buf).unwrap();
    buf.push(0);
    let len = (buf.len() - LEN_PREFIX) as u32;
    buf[..LEN_PREFIX].copy_from_slice(&len.to_be_bytes());
    assert_eq!(decode_frame(&buf, 1024), Err(DecodeError::TrailingBytes));
}

#[test]
fn a_snapshot_member_with_oversize_metadata_is_refused_by_the_decoder() {
    let member = Member {
        id: id("m"),
        incarnation: 1,
        addr: "m:1".into(),
        meta_version: 1,
        meta: Payload::from(vec![0; 64 * 1024 + 1]),
    };
    let snap = Message::ViewSnapshot(ViewSnapshot {
        term: Term(1),
        version: 1,
        digest: 0,
        chunk: 0,
        chunks: 1,
        total: 1,
        members: vec![member.into()],
    });
    let mut buf = Vec::new();
    encode_frame(&Frame::Msg(snap), DEFAULT_MAX_FRAME_LEN, &mut buf).unwrap();
    assert!(matches!(
        decode_frame(&buf, DEFAULT_MAX_FRAME_LEN),
        Err(DecodeError::Invalid(_))
    ));
}

// ---- terms ---------------------------------------------------------------------

#[test]
fn a_higher_term_from_a_non_leader_is_checked_in_the_store_and_not_followed() {
    let mut store = None;
    let (mut a, s) = leader(Config::lan("c"));
    store = s.or(store);
    drop(a.poll());
    // b follows a at term 1.
    let mut b = node("b", Config::lan("c"));
    run(&mut b, 0, 50, &mut store);
    assert_eq!(
        b.leader().map(|l| (l.id.as_str(), l.term)),
        Some(("a", Term(1)))
    );
    let view_before = b.view().stamp();
    // c, not the leader, claims term 5 with an ack and a snapshot.
    let claim = HeartbeatAck {
        term: Term(5),
        leader_incarnation: 9,
        view_version: 3,
        digest: 1,
        lease_expires_ns: u64::MAX,
        lease_version: 99,
        your_meta_version: None,
    };
    let t = 60;
    b.handle(
        at(t),
        Input::Message {
            from: id("c"),
            msg: Message::HeartbeatAck(claim),
        },
    );
    b.handle(
        at(t),
        Input::Message {
            from: id("c"),
            msg: Message::ViewSnapshot(ViewSnapshot {
                term: Term(5),
                version: 3,
                digest: 1,
                chunk: 0,
                chunks: 1,
                total: 1,
                members: vec![],
            }),
        },
    );
    let mut outs = drive(&mut b, at(t), &mut store, false);
    // The claim makes b read the store (after a short jitter), nothing more.
    let mut read = None;
    let mut now_ms = t;
    for _ in 0..100 {
        read = outs.iter().find_map(|o| match o {
            Output::Lease(op @ LeaseOp::Read { .. }) => Some(op.clone()),
            _ => None,
        });
        assert!(
            !outs
                .iter()
                .any(|o| matches!(o, Output::Lease(LeaseOp::CompareAndSet { .. }))),
            "a claim never makes a member write the lease"
        );
        if read.is_some() {
            break;
        }
        now_ms = b
            .poll_timeout()
            .map_or(now_ms + 1, |d| d.as_nanos().div_ceil(MS).max(now_ms + 1));
        b.handle(at(now_ms), Input::Tick);
        outs = drive(&mut b, at(now_ms), &mut store, false);
    }
    let read = read.expect("a higher term makes the node read the store");
    // The store still names a at term 1: b stays with a.
    b.handle(
        at(now_ms),
        Input::Lease {
            op: read.id(),
            result: Ok(LeaseReply::Read(store.clone())),
        },
    );
    drive(&mut b, at(now_ms), &mut store, true);
    assert_eq!(
        b.leader().map(|l| (l.id.as_str(), l.term)),
        Some(("a", Term(1)))
    );
    assert!(b.view().stamp() <= (Term(1), u64::MAX) && b.view().stamp() >= view_before);
    assert_eq!(
        b.term(),
        Term(1),
        "an unconfirmed claim does not raise the term"
    );
}

// ---- membership ------------------------------------------------------------------

#[test]
fn a_flood_of_fake_members_stops_at_max_members() {
    let mut cfg = Config::lan("c");
    cfg.max_members = 1000;
    let (mut a, mut store) = leader(cfg);
    let t = 200;
    let mut acked = 0;
    for i in 0..10_000 {
        a.handle(
            at(t),
            Input::Message {
                from: id(&format!("fake{i}")),
                msg: hb(1, None, Term(1)),
            },
        );
        acked += drive(&mut a, at(t), &mut store, true)
            .iter()
            .filter(|o| {
                matches!(
                    o,
                    Output::Transmit {
                        msg: Message::HeartbeatAck(_),
                        ..
                    }
                )
            })
            .count();
    }
    assert_eq!(acked, 1000, "only members within the cap get an answer");
    let t = t + 100; // past the batch window: the joins are applied
    a.handle(at(t), Input::Tick);
    drive(&mut a, at(t), &mut store, true);
    assert!(a.is_leader(&at(t)));
    assert_eq!(a.view().len(), 1001, "the leader plus max_members");
    // A member inside the cap keeps being answered; a restart rejoins.
    a.handle(
        at(t),
        Input::Message {
            from: id("fake1"),
            msg: hb(2, None, Term(1)),
        },
    );
    let outs = drive(&mut a, at(t), &mut store, true);
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Transmit {
            msg: Message::HeartbeatAck(_),
            ..
        }
    )));
    // Once they fail, the room is free again.
    let later = t + Duration::from_secs(5).as_millis() as u64;
    run(&mut a, t, later, &mut store);
    assert!(a.is_leader(&at(later)));
    assert_eq!(
        a.view().len(),
        1,
        "silent fakes are dropped after the failure timeout"
    );
}

#[test]
fn oversize_metadata_is_refused_locally_and_dropped_from_a_heartbeat() {
    let cfg = Config::lan("c");
    let max = cfg.max_meta_len;
    let (mut a, mut store) = leader(cfg);
    let err = a.set_meta(at(150), vec![0u8; max + 1]).unwrap_err();
    assert_eq!((err.len, err.max), (max + 1, max));
    assert!(a.set_meta(at(150), vec![0u8; max]).is_ok());
    // A member's heartbeat with oversize metadata joins it without the bytes.
    a.handle(
        at(160),
        Input::Message {
            from: id("m"),
            msg: hb(1, Some(Payload::from(vec![1; max + 1])), Term(1)),
        },
    );
    drive(&mut a, at(160), &mut store, true);
    a.handle(at(200), Input::Tick);
    drive(&mut a, at(200), &mut store, true);
    let m = a.view().get(&id("m")).expect("the member joined");
    assert!(m.meta.is_empty(), "oversize metadata is not stored");
}

// ---- requests -------------------------------------------------------------------

/// Hands `a` `msg` from node `s` and returns what it put out.
fn from_s(a: &mut Node, now: Now, store: &mut Option<LeaseRow>, msg: Message) -> Vec<Output> {
    let from = id("s");
    a.handle(now, Input::Message { from, msg });
    drive(a, now, store, true)
}

/// The leader's outputs for request `id` of sender `s` (incarnation 1)
/// that says everything below `settled_below` is settled: the requests
/// handed to the application and the failures sent back.
fn request_to(
    a: &mut Node,
    now: Now,
    store: &mut Option<LeaseRow>,
    (id, settled_below): (u64, u64),
) -> (Vec<hedgerow_core::RequestHandle>, Vec<String>) {
    let msg = Message::Request {
        id,
        incarnation: 1,
        payload: Payload::from("x"),
        settled_below,
    };
    let mut handled = Vec::new();
    let mut refused = Vec::new();
    for o in from_s(a, now, store, msg) {
        match o {
            Output::Event(hedgerow_core::Event::Request { handle, .. }) => handled.push(handle),
            Output::Transmit {
                msg:
                    Message::Reply {
                        body: hedgerow_core::wire::ReplyBody::Failed { reason, .. },
                        ..
                    },
                ..
            } => refused.push(reason),
            _ => {}
        }
    }
    (handled, refused)
}

#[test]
fn a_stray_copy_of_a_settled_request_is_refused_not_handled_again() {
    let (mut a, mut store) = leader(Config::lan("c"));
    let (handled, _) = request_to(&mut a, at(110), &mut store, (1, 1));
    assert_eq!(handled.len(), 1, "request 1 is handled");
    a.reply(at(111), handled[0].clone(), Ok(Payload::from("r1")));
    drive(&mut a, at(111), &mut store, true);
    // Request 2 says 1 is settled: the leader may forget 1.
    let (handled, _) = request_to(&mut a, at(120), &mut store, (2, 2));
    assert_eq!(handled.len(), 1, "request 2 is handled");
    // A copy of 1 turns up late (another connection, a retry in flight):
    // refused with a reason, never handed to the application again.
    let (handled, refused) = request_to(&mut a, at(130), &mut store, (1, 1));
    assert!(handled.is_empty(), "a settled request was handled twice");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].contains("settled"), "{refused:?}");
}

/// Hands `a` broadcast `id` from `s`; returns the broadcasts delivered and
/// the replies sent back.
fn broadcast_to(
    a: &mut Node,
    now: Now,
    store: &mut Option<LeaseRow>,
    id: u64,
) -> (
    Vec<hedgerow_core::BroadcastHandle>,
    Vec<Result<Payload, String>>,
) {
    broadcast_for(a, now, store, (id, 0))
}

/// As [`broadcast_to`], for the process `to_incarnation` of `a` (0: the
/// sender does not say).
fn broadcast_for(
    a: &mut Node,
    now: Now,
    store: &mut Option<LeaseRow>,
    (id, to_incarnation): (u64, u64),
) -> (
    Vec<hedgerow_core::BroadcastHandle>,
    Vec<Result<Payload, String>>,
) {
    let msg = Message::Broadcast {
        id,
        incarnation: 1,
        payload: Payload::from("x"),
        to_incarnation,
    };
    let mut delivered = Vec::new();
    let mut replies = Vec::new();
    for o in from_s(a, now, store, msg) {
        match o {
            Output::Event(hedgerow_core::Event::Broadcast { handle, .. }) => delivered.push(handle),
            Output::Transmit {
                msg: Message::BroadcastReply { result, .. },
                ..
            } => replies.push(result),
            _ => {}
        }
    }
    (delivered, replies)
}

#[test]
fn a_broadcast_flood_is_refused_past_the_key_bound_and_retries_get_the_kept_answer() {
    let cfg = Config {
        max_dedupe_entries: 50,
        ..Config::lan("c")
    };
    let (mut a, mut store) = leader(cfg);
    let (delivered, _) = broadcast_to(&mut a, at(110), &mut store, 1);
    assert_eq!(delivered.len(), 1);
    a.reply_broadcast(at(111), delivered[0].clone(), Ok(Payload::from("done")));
    drive(&mut a, at(111), &mut store, true);
    // The answer was lost on the way: a retry gets it again, unhandled.
    let (delivered, replies) = broadcast_to(&mut a, at(200), &mut store, 1);
    assert!(delivered.is_empty(), "a retry ran the handler again");
    assert_eq!(replies, vec![Ok(Payload::from("done"))]);
    // A flood fills the key table; past it new broadcasts are refused,
    // none is forgotten within the window.
    for id in 2..=50 {
        assert_eq!(broadcast_to(&mut a, at(300), &mut store, id).0.len(), 1);
    }
    let (delivered, replies) = broadcast_to(&mut a, at(300), &mut store, 51);
    assert!(delivered.is_empty());
    assert_eq!(replies.len(), 1);
    assert!(
        matches!(&replies[0], Err(why) if why.contains("overloaded")),
        "{replies:?}"
    );
    let (delivered, replies) = broadcast_to(&mut a, at(400), &mut store, 1);
    assert!(
        delivered.is_empty(),
        "a key was forgotten within its window"
    );
    assert_eq!(replies, vec![Ok(Payload::from("done"))]);
}

#[test]
fn a_retry_after_the_member_forgot_a_broadcast_is_refused_not_handled_again() {
    // This member remembers broadcasts for 2 s (twice its timeout); a
    // sender with a longer timeout retries one still unanswered (a slow
    // handler) after that.
    let cfg = Config {
        broadcast_timeout: std::time::Duration::from_secs(1),
        ..Config::lan("c")
    };
    let (mut a, mut store) = leader(cfg);
    let (delivered, _) = broadcast_to(&mut a, at(110), &mut store, 1);
    assert_eq!(delivered.len(), 1);
    let (delivered, replies) = broadcast_to(&mut a, at(2_500), &mut store, 1);
    assert!(
        delivered.is_empty(),
        "a forgotten broadcast was handled again"
    );
    assert_eq!(replies.len(), 1);
    assert!(
        matches!(&replies[0], Err(why) if why.contains("forgot")),
        "{replies:?}"
    );
    // The sender's next broadcasts still go through.
    assert_eq!(broadcast_to(&mut a, at(2_600), &mut store, 2).0.len(), 1);
}

#[test]
fn inputs_handled_together_come_out_as_when_handled_one_by_one() {
    let requests = |ids: std::ops::Range<u64>| {
        ids.map(|n| Input::Message {
            from: id("s"),
            msg: Message::Request {
                id: n,
                incarnation: 1,
                payload: Payload::from("x"),
                settled_below: 0,
            },
        })
        .collect::<Vec<_>>()
    };
    let (mut one, mut store1) = leader(Config::lan("c"));
    let (mut all, mut store2) = leader(Config::lan("c"));
    let mut by_one = Vec::new();
    for input in requests(1..5) {
        one.handle(at(110), input);
        by_one.extend(drive(&mut one, at(110), &mut store1, true));
    }
    all.handle_all(at(110), requests(1..5));
    let by_all = drive(&mut all, at(110), &mut store2, true);
    assert_eq!(by_all, by_one, "the same outputs, in the same order");
    // Answered together or one by one: the same replies.
    let handles = |outs: &[Output]| {
        outs.iter()
            .filter_map(|o| match o {
                Output::Event(hedgerow_core::Event::Request { handle, .. }) => Some(handle.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let mut replies_one = Vec::new();
    for h in handles(&by_one) {
        one.reply(at(111), h, Ok(Payload::from("r")));
        replies_one.extend(drive(&mut one, at(111), &mut store1, true));
    }
    let answers = handles(&by_all)
        .into_iter()
        .map(|h| (h, Ok(Payload::from("r"))));
    all.reply_all(at(111), answers);
    let replies_all = drive(&mut all, at(111), &mut store2, true);
    assert_eq!(replies_all.len(), 4, "{replies_all:?}");
    assert_eq!(replies_all, replies_one);
}

#[test]
fn a_broadcast_for_another_process_of_this_member_is_neither_handled_nor_answered() {
    // `a` is incarnation 1. The sender's view still shows the process
    // before a restart (7 here), which may have handled this broadcast
    // already: this process must not handle it again, nor answer for the
    // process it was for (the sender's part ends when the restart reaches
    // its view).
    let (mut a, mut store) = leader(Config::lan("c"));
    let (delivered, replies) = broadcast_for(&mut a, at(110), &mut store, (1, 7));
    assert!(delivered.is_empty(), "handled by a process it was not for");
    assert!(
        replies.is_empty(),
        "answered for another process: {replies:?}"
    );
    // For this process, or from a sender that does not say: handled.
    assert_eq!(
        broadcast_for(&mut a, at(120), &mut store, (2, 1)).0.len(),
        1
    );
    assert_eq!(
        broadcast_for(&mut a, at(130), &mut store, (3, 0)).0.len(),
        1
    );
}

#[test]
fn a_broadcast_names_the_process_of_each_member_it_is_for() {
    let (mut a, mut store) = leader(Config::lan("c"));
    let term = a.term();
    from_s(&mut a, at(110), &mut store, hb(5, None, term));
    run(&mut a, 110, 1_000, &mut store);
    assert!(a.view().contains(&id("s")), "s joined");
    a.broadcast(at(1_000), Payload::from("x"));
    let named: Vec<u64> = drive(&mut a, at(1_000), &mut store, true)
        .into_iter()
        .filter_map(|o| match o {
            Output::Transmit {
                to,
                msg: Message::Broadcast { to_incarnation, .. },
                ..
            } if to == id("s") => Some(to_incarnation),
            _ => None,
        })
        .collect();
    assert_eq!(named, vec![5], "the copy names the process the view holds");
}
