//! Building protocol values out of fuzzer bytes. Choices lean towards values
//! the node under test knows (its leader's id and term, its view numbers,
//! its stream ids) so that inputs reach deep states, with a steady share of
//! arbitrary values so that nothing is only ever fed the plausible.

use hedgerow_core::wire::{
    Heartbeat, HeartbeatAck, LeaderHint, ReplyBody, StreamKind, ViewDelta, ViewSnapshot,
};
use hedgerow_core::{Change, LeaveReason, Member, Message, NodeId, Payload, Term};
use std::sync::Arc;

use crate::input::Unstructured;

/// Values worth choosing often.
#[derive(Clone, Debug, Default)]
pub struct Pools {
    /// Node ids (peers, the node itself, the leader).
    pub ids: Vec<NodeId>,
    /// Terms the node knows of.
    pub terms: Vec<Term>,
    /// Numbers the node knows of (versions, digests, ids, offsets).
    pub nums: Vec<u64>,
}

/// A node id: from the pool mostly, else a fresh well-formed one, else any
/// string at all (which only deserialization can produce).
pub fn node_id(u: &mut Unstructured, p: &Pools) -> NodeId {
    match u.below(16) {
        0..=12 if !p.ids.is_empty() => p.ids[u.index(p.ids.len())].clone(),
        13 => raw_node_id(u.bytes(140)),
        _ => fresh_id(u.below(64)),
    }
}

/// `m<k>`: a well-formed id outside the usual pool.
pub fn fresh_id(k: u64) -> NodeId {
    NodeId::new(format!("m{k}")).unwrap_or_else(|_| raw_node_id(b"m"))
}

/// Any bytes as a node id, bypassing `NodeId::new`'s checks the way a
/// decoded message does (the decoder checks shapes afterwards).
pub fn raw_node_id(bytes: &[u8]) -> NodeId {
    let s = String::from_utf8_lossy(bytes);
    let mut enc = Vec::with_capacity(s.len() + 2);
    let mut n = s.len();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            enc.push(b);
            break;
        }
        enc.push(b | 0x80);
    }
    enc.extend_from_slice(s.as_bytes());
    postcard::from_bytes(&enc).unwrap_or_else(|_| fresh_id(0))
}

/// A term near what the node knows, or anything.
pub fn term(u: &mut Unstructured, p: &Pools) -> Term {
    let known = |u: &mut Unstructured| {
        if p.terms.is_empty() {
            Term(0)
        } else {
            p.terms[u.index(p.terms.len())]
        }
    };
    match u.below(16) {
        0 => Term(0),
        1..=8 => known(u),
        9 | 10 => Term(known(u).0.saturating_add(1)),
        11 => Term(known(u).0.saturating_sub(1)),
        12 | 13 => Term(u.below(6)),
        14 => Term(u64::MAX),
        _ => Term(u.u64()),
    }
}

/// A number from the pool, a small one, or anything.
pub fn num(u: &mut Unstructured, p: &Pools) -> u64 {
    match u.below(16) {
        0..=6 if !p.nums.is_empty() => {
            let n = p.nums[u.index(p.nums.len())];
            match u.below(4) {
                0 => n.saturating_add(1),
                1 => n.saturating_sub(1),
                _ => n,
            }
        }
        7..=12 => u.below(8),
        13 => u64::MAX,
        _ => u.u64(),
    }
}

/// Application bytes, usually short.
pub fn payload(u: &mut Unstructured, max: usize) -> Payload {
    let len = match u.below(8) {
        0..=5 => u.index(16),
        6 => u.index(max + 1),
        _ => max,
    };
    let fill = u.u8();
    Payload::from(vec![fill; len])
}

/// A short string, sometimes long enough to break a limit.
pub fn text(u: &mut Unstructured) -> String {
    match u.below(16) {
        0 => "x".repeat(300),
        1 => String::from_utf8_lossy(u.bytes(32)).into_owned(),
        _ => format!("s{}", u.below(100)),
    }
}

/// An address, sometimes too long.
pub fn addr(u: &mut Unstructured, id: &NodeId) -> String {
    match u.below(32) {
        0 => "a".repeat(257),
        1 => String::new(),
        _ => format!("{id}:7000"),
    }
}

/// A view member.
pub fn member(u: &mut Unstructured, p: &Pools) -> Member {
    let id = node_id(u, p);
    let meta_len = if u.chance(8) { 70_000 } else { 64 };
    Member {
        addr: addr(u, &id),
        id,
        incarnation: u.below(4),
        meta_version: u.below(4),
        meta: payload(u, meta_len),
    }
}

/// A delta change.
pub fn change(u: &mut Unstructured, p: &Pools) -> Change {
    if u.chance(160) {
        Change::Upsert(Arc::new(member(u, p)))
    } else {
        Change::Remove {
            id: node_id(u, p),
            incarnation: u.below(4),
            reason: match u.below(4) {
                0 => LeaveReason::Left,
                1 => LeaveReason::Failed,
                2 => LeaveReason::Replaced,
                _ => LeaveReason::Unknown,
            },
        }
    }
}

fn list<T>(u: &mut Unstructured, max: usize, mut f: impl FnMut(&mut Unstructured) -> T) -> Vec<T> {
    let n = u.index(max + 1);
    (0..n).map(|_| f(u)).collect()
}

/// Any protocol message, its fields leaning on the pools.
pub fn message(u: &mut Unstructured, p: &Pools) -> Message {
    match u.below(18) {
        0 => {
            let id = node_id(u, p);
            Message::Heartbeat(Heartbeat {
                term: term(u, p),
                incarnation: u.below(4),
                addr: addr(u, &id),
                meta_version: u.below(5),
                meta: u.chance(128).then(|| payload(u, 600)),
                view_term: term(u, p),
                view_version: num(u, p),
                relays: u.chance(128),
            })
        }
        1 => Message::HeartbeatAck(HeartbeatAck {
            term: term(u, p),
            leader_incarnation: u.below(4),
            view_version: num(u, p),
            digest: num(u, p),
            lease_expires_ns: num(u, p),
            lease_version: num(u, p),
            your_meta_version: u.chance(128).then(|| u.below(5)),
        }),
        2 => Message::ViewDelta(std::sync::Arc::new(ViewDelta {
            term: term(u, p),
            base_version: num(u, p),
            version: num(u, p),
            digest: num(u, p),
            changes: list(u, 6, |u| change(u, p)),
        })),
        3 => {
            let members = list(u, 6, |u| Arc::new(member(u, p)));
            let (chunk, chunks, total) = if u.chance(192) {
                (0, 1, members.len() as u32)
            } else {
                (u.below(4) as u32, u.below(4) as u32, u.below(10) as u32)
            };
            Message::ViewSnapshot(ViewSnapshot {
                term: term(u, p),
                version: num(u, p),
                digest: num(u, p),
                chunk,
                chunks,
                total,
                members,
            })
        }
        4 => Message::SnapshotRequest { term: term(u, p) },
        5 => Message::Leave {
            incarnation: u.below(4),
        },
        6 => Message::Request {
            id: num(u, p),
            incarnation: u.below(4),
            payload: payload(u, 1024),
            settled_below: num(u, p),
        },
        7 => Message::Reply {
            id: num(u, p),
            body: match u.below(3) {
                0 => ReplyBody::Ok {
                    term: term(u, p),
                    payload: payload(u, 64),
                },
                1 => ReplyBody::NotLeader {
                    hint: u.chance(160).then(|| {
                        let id = node_id(u, p);
                        LeaderHint {
                            addr: addr(u, &id),
                            id,
                            term: term(u, p),
                        }
                    }),
                },
                _ => ReplyBody::Failed {
                    term: term(u, p),
                    reason: text(u),
                },
            },
        },
        8 => Message::Broadcast {
            id: num(u, p),
            incarnation: u.below(4),
            payload: payload(u, 256),
            to_incarnation: u.below(4),
        },
        9 => Message::BroadcastReply {
            id: num(u, p),
            result: if u.chance(192) {
                Ok(payload(u, 64))
            } else {
                Err(text(u))
            },
        },
        10 => Message::StreamOpen {
            sid: num(u, p),
            kind: if u.chance(128) {
                StreamKind::ToLeader
            } else {
                StreamKind::ToMember
            },
            term: term(u, p),
        },
        11 => Message::StreamData {
            sid: num(u, p),
            offset: num(u, p),
            data: payload(u, 80 * 1024),
        },
        12 => Message::StreamCredit {
            sid: num(u, p),
            limit: num(u, p),
        },
        13 => Message::StreamEnd {
            sid: num(u, p),
            len: num(u, p),
        },
        14 => Message::RelayDelta {
            delta: std::sync::Arc::new(ViewDelta {
                term: term(u, p),
                base_version: num(u, p),
                version: num(u, p),
                digest: num(u, p),
                changes: list(u, 6, |u| change(u, p)),
            }),
            from: u.chance(160).then(|| node_id(u, p)),
            until: u.chance(160).then(|| node_id(u, p)),
            fanout: u.below(400) as u16,
        },
        15 => Message::DeltaRequest {
            term: term(u, p),
            after: num(u, p),
        },
        16 => {
            let id = node_id(u, p);
            Message::SnapshotFrom {
                term: term(u, p),
                addr: addr(u, &id),
                id,
            }
        }
        _ => Message::StreamReset {
            sid: num(u, p),
            yours: u.chance(128),
            reason: text(u),
        },
    }
}
