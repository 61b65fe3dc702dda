//! Targets 1 and 2: the frame codec and the handshake.

use hedgerow_core::wire::{
    decode_body, decode_frame, encode_frame, peek_frame_len, Frame, LEN_PREFIX, MAGIC,
    MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use hedgerow_core::{
    DecodeError, HandshakeError, Hello, NodeId, DEFAULT_MAX_FRAME_LEN, MAX_ADDR_LEN,
};

use crate::gen::{self, Pools};
use crate::input::Unstructured;

fn max_len(selector: u8) -> u32 {
    match selector % 4 {
        0 => DEFAULT_MAX_FRAME_LEN,
        1 => 1024,
        2 => 64,
        _ => 1 << 16,
    }
}

/// Whatever decodes must re-encode and decode to the same frame, with the
/// same length accounting.
fn round_trip(frame: &Frame, max: u32) {
    let mut buf = vec![0xAA];
    let before = buf.clone();
    match encode_frame(frame, max, &mut buf) {
        Ok(()) => {}
        Err(e) => {
            assert_eq!(
                buf, before,
                "a failed encode must leave the buffer as it was"
            );
            panic!("a decoded frame failed to re-encode within the limit it decoded under: {e}");
        }
    }
    let enc = &buf[1..];
    let len = peek_frame_len(enc, max).expect("re-encoded prefix is acceptable");
    assert_eq!(len, Some(enc.len() - LEN_PREFIX));
    let (again, used) = decode_frame(enc, max)
        .expect("re-encoded frame decodes")
        .expect("re-encoded frame is complete");
    assert_eq!(used, enc.len());
    assert_eq!(&again, frame, "decode(encode(f)) != f");
    // Every strict prefix is incomplete, never an error or a frame.
    for cut in [0, 1, LEN_PREFIX - 1, LEN_PREFIX, enc.len() - 1] {
        if cut < enc.len() {
            assert_eq!(
                decode_frame(&enc[..cut], max),
                Ok(None),
                "prefix of {cut} bytes"
            );
        }
    }
}

/// Target 1: `peek_frame_len`, `decode_frame` and `decode_body` on arbitrary
/// bytes never panic and agree with each other; what decodes round-trips.
/// From the same bytes, a structured frame is built, encoded and decoded:
/// it comes back equal, or the decoder names the limit it breaks.
pub fn wire(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let max = max_len(sel);
    if sel & 0x80 == 0 {
        raw_bytes(rest, max);
    } else {
        structured(rest, max);
    }
}

fn raw_bytes(buf: &[u8], max: u32) {
    let peeked = peek_frame_len(buf, max);
    match &peeked {
        Ok(None) => assert!(buf.len() < LEN_PREFIX),
        Ok(Some(len)) => assert!(*len > 0 && *len <= max as usize),
        Err(DecodeError::Empty) => assert_eq!(buf.get(..4), Some(&[0u8; 4][..])),
        Err(DecodeError::TooLarge { len, max: m }) => assert!(*len > u64::from(*m) && *m == max),
        Err(e) => panic!("peek_frame_len returned {e:?}"),
    }
    let decoded = decode_frame(buf, max);
    match (&peeked, &decoded) {
        (Err(p), Err(d)) => assert_eq!(p, d, "peek and decode disagree"),
        (Err(_), Ok(_)) => panic!("decode_frame accepted what peek_frame_len refused"),
        (Ok(None), r) => assert_eq!(r, &Ok(None)),
        (Ok(Some(len)), Ok(None)) => assert!(buf.len() < LEN_PREFIX + len),
        (Ok(Some(len)), Ok(Some((frame, used)))) => {
            assert_eq!(*used, LEN_PREFIX + len);
            assert_eq!(decode_body(&buf[LEN_PREFIX..*used]).as_ref(), Ok(frame));
            round_trip(frame, max);
        }
        (Ok(Some(len)), Err(e)) => {
            assert!(buf.len() >= LEN_PREFIX + len);
            assert!(
                matches!(
                    e,
                    DecodeError::Malformed | DecodeError::TrailingBytes | DecodeError::Invalid(_)
                ),
                "body error {e:?}"
            );
            let _ = e.to_string();
        }
    }
    // The body decoder alone, on the same bytes.
    if let Ok(frame) = decode_body(buf) {
        if buf.len() <= max as usize {
            round_trip(&frame, max);
        }
    }
}

fn structured(data: &[u8], max: u32) {
    let mut u = Unstructured::new(data);
    let pools = Pools {
        ids: vec![id("a"), id("b")],
        terms: vec![hedgerow_core::Term(1), hedgerow_core::Term(7)],
        nums: vec![0, 1, 1 << 20],
    };
    let frame = match u.below(8) {
        0 => Frame::Hello(hello(&mut u)),
        1 => Frame::Refuse(gen::text(&mut u)),
        _ => Frame::Msg(gen::message(&mut u, &pools)),
    };
    let mut buf = Vec::new();
    match encode_frame(&frame, max, &mut buf) {
        Err(_) => assert!(
            buf.is_empty(),
            "a failed encode must leave the buffer as it was"
        ),
        Ok(()) => match decode_frame(&buf, max) {
            Ok(Some((back, used))) => {
                assert_eq!(used, buf.len());
                assert_eq!(back, frame, "decode(encode(f)) != f");
            }
            Ok(None) => panic!("a whole encoded frame decoded as incomplete"),
            Err(DecodeError::Invalid(_)) => {}
            Err(e) => panic!("an encoded frame failed to decode: {e:?}"),
        },
    }
}

fn id(s: &str) -> NodeId {
    NodeId::new(s).expect("test id")
}

fn hello(u: &mut Unstructured) -> Hello {
    let versions = |u: &mut Unstructured| match u.below(4) {
        0 => u.u16(),
        _ => u.below(4) as u16,
    };
    let node_id = match u.below(8) {
        0 => gen::raw_node_id(u.bytes(140)),
        1 => id("a"),
        _ => id("b"),
    };
    Hello {
        magic: if u.chance(240) {
            MAGIC
        } else {
            [u.u8(), b'G', b'R', b'W']
        },
        min_version: versions(u),
        max_version: versions(u),
        cluster_id: match u.below(8) {
            0 => String::from_utf8_lossy(u.bytes(8)).into_owned(),
            1 => "other".into(),
            _ => "c1".into(),
        },
        node_id,
        incarnation: u.u64(),
        addr: if u.chance(16) {
            "x".repeat(MAX_ADDR_LEN + u.index(2))
        } else {
            "10.0.0.2:7000".into()
        },
    }
}

/// Target 2: `Hello::negotiate` on arbitrary hellos, and arbitrary hello
/// bytes through the decoder. A hello is accepted exactly when its magic,
/// cluster, versions, id and address allow; the agreed version is the
/// highest both speak; well-formed peers agree on it from both sides.
pub fn handshake(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let ours = if u.chance(200) {
        Hello::new("c1", id("a"), 1, "10.0.0.1:7000")
    } else {
        hello(&mut u)
    };
    let theirs = hello(&mut u);
    check_negotiate(&ours, &theirs);
    check_negotiate(&theirs, &ours);
    // Arbitrary bytes as a hello body (a peer's first frame).
    let rest = u.rest();
    for body in [rest, &hello_prefix(rest)] {
        if let Ok(Frame::Hello(h)) = decode_body(body) {
            assert!(h.node_id.is_well_formed() && h.addr.len() <= MAX_ADDR_LEN);
            check_negotiate(&ours, &h);
            round_trip(&Frame::Hello(h), DEFAULT_MAX_FRAME_LEN);
        }
    }
}

/// The bytes after a Hello tag and the magic, so random tails reach the
/// hello's fields.
fn hello_prefix(rest: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(&MAGIC);
    v.extend_from_slice(rest);
    v
}

fn check_negotiate(ours: &Hello, peer: &Hello) {
    let result = ours.negotiate(peer);
    if let Err(e) = &result {
        let _ = e.to_string();
    }
    let low = ours.min_version.max(peer.min_version);
    let high = ours.max_version.min(peer.max_version);
    let well_formed = peer.node_id.is_well_formed() && peer.addr.len() <= MAX_ADDR_LEN;
    let acceptable = peer.magic == MAGIC
        && peer.cluster_id == ours.cluster_id
        && low <= high
        && peer.node_id != ours.node_id
        && well_formed;
    match &result {
        Ok(v) => {
            assert!(acceptable, "accepted {peer:?} against {ours:?}");
            assert_eq!(*v, high, "not the highest common version");
            assert!((ours.min_version..=ours.max_version).contains(v));
            assert!((peer.min_version..=peer.max_version).contains(v));
            // A well-formed pair agrees from both sides.
            if ours.magic == MAGIC
                && ours.node_id.is_well_formed()
                && ours.addr.len() <= MAX_ADDR_LEN
            {
                assert_eq!(peer.negotiate(ours), Ok(*v), "asymmetric handshake");
            }
        }
        Err(e) => {
            assert!(!acceptable, "refused an acceptable hello: {e}");
            match e {
                HandshakeError::BadMagic => assert_ne!(peer.magic, MAGIC),
                HandshakeError::ClusterMismatch { .. } => {
                    assert_ne!(peer.cluster_id, ours.cluster_id)
                }
                HandshakeError::NoCommonVersion { .. } => assert!(low > high),
                HandshakeError::SameId { .. } => assert_eq!(peer.node_id, ours.node_id),
                HandshakeError::Malformed => assert!(!well_formed),
                other => panic!("unexpected refusal {other:?}"),
            }
        }
    }
    // This build always speaks its own range.
    let me = Hello::new(&ours.cluster_id, id("zz"), 0, "x:1");
    assert_eq!(
        (me.min_version, me.max_version),
        (MIN_PROTOCOL_VERSION, PROTOCOL_VERSION)
    );
}
