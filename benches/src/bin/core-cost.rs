//! Core cost in instructions. Run under callgrind twice with different
//! counts and subtract, which cancels set-up (`benches/callgrind.sh` does):
//!
//! ```text
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/core-cost heartbeat 1000 10000
//! ```
//!
//! * `core-cost heartbeat <members> <n>`: a leader with that many members
//!   is fed n heartbeats, spread over time as real members send them (so
//!   failure scans and renews happen too).
//! * `core-cost churn <members> <n>`: n times, a member joins and leaves;
//!   each is one view delta pushed to every member at the end of the batch
//!   window. Time moves on by members' heartbeats; the count fed is printed
//!   so their cost can be subtracted.
//! * `core-cost send <members> <n>`: n send rounds at the leader (a
//!   64-byte request arrives, the application answers, the reply goes out).
//! * `core-cost decode <kind> <n>`: n decodes of one frame of that kind,
//!   the way the transport decodes (`core-cost decode list` names the
//!   kinds); the samples are messages a 150-member leader really sent, plus
//!   what members send.

use std::time::Duration;

use hedgerow_benches::{heartbeat, LeaderBench};
use hedgerow_core::wire::{decode_body_shared, encode_frame, peek_frame_len, Frame, LEN_PREFIX};
use hedgerow_core::{Bytes, Message, Payload};

const MAX_FRAME: u32 = 4 << 20;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| args.get(i).and_then(|a| a.parse::<usize>().ok());
    match (args.first().map(String::as_str), num(1), num(2)) {
        (Some("heartbeat"), Some(members), Some(n)) => {
            let mut b = LeaderBench::new(members);
            for _ in 0..n {
                b.heartbeat();
            }
            println!("members {members}, heartbeats {n}, outputs {}", b.outputs);
        }
        (Some("churn"), Some(members), Some(n)) => {
            let mut b = LeaderBench::new(members);
            let window = Duration::from_millis(25);
            let fed: u64 = (0..n).map(|_| b.churn(window)).sum();
            println!("members {members}, deltas {}, heartbeats {fed}", 2 * n);
        }
        (Some("send"), Some(members), Some(n)) => {
            let mut b = LeaderBench::new(members);
            let payload = Payload::from(&[7u8; 64][..]);
            for _ in 0..n {
                b.send_round(&payload);
            }
            println!("members {members}, sends {n}, outputs {}", b.outputs);
        }
        (Some("decode"), _, n) => {
            let samples = samples();
            let kind = args.get(1).map(String::as_str).unwrap_or("list");
            let Some(frame) = samples.iter().find(|(k, _)| *k == kind).map(|(_, f)| f) else {
                let kinds: Vec<&str> = samples.iter().map(|(k, _)| *k).collect();
                println!("{}", kinds.join(" "));
                return;
            };
            // As the transport does: the length prefix first, then the
            // body from a shared buffer (stream data is sliced, not copied).
            let frame = Bytes::from(frame.clone());
            let mut ok = 0usize;
            for _ in 0..n.unwrap_or(0) {
                if let Ok(Some(len)) = peek_frame_len(&frame, MAX_FRAME) {
                    let body = frame.slice(LEN_PREFIX..LEN_PREFIX + len);
                    ok += usize::from(decode_body_shared(body).is_ok());
                }
            }
            println!("kind {kind}, bytes {}, decoded {ok}", frame.len());
        }
        _ => {
            eprintln!(
                "usage: core-cost heartbeat|churn|send <members> <n>\n       core-cost decode <kind>|list <n>"
            );
            std::process::exit(2);
        }
    }
}

/// One encoded frame of each message kind: what a 150-member leader sent
/// in a join, a leave, a send round and a snapshot request, plus what
/// members and stream senders send.
fn samples() -> Vec<(&'static str, Vec<u8>)> {
    let mut b = LeaderBench::new(150);
    b.keep_samples = true;
    b.churn(Duration::from_millis(25));
    b.send_round(&Payload::from(&[7u8; 64][..]));
    b.snapshot_request();
    let mut msgs = b.sent.clone();
    msgs.push(Message::Heartbeat(heartbeat(7)));
    msgs.push(Message::Request {
        id: 1,
        incarnation: 7,
        payload: Payload::from(&[7u8; 64][..]),
        settled_below: 1,
    });
    msgs.push(Message::Broadcast {
        id: 1,
        incarnation: 7,
        payload: Payload::from(&[7u8; 64][..]),
        to_incarnation: 0,
    });
    msgs.push(Message::BroadcastReply {
        id: 1,
        result: Ok(Payload::from(&[7u8; 64][..])),
    });
    msgs.push(Message::Leave { incarnation: 7 });
    msgs.push(Message::StreamCredit {
        sid: 1,
        limit: 1 << 20,
    });
    msgs.push(Message::StreamData {
        sid: 1,
        offset: 0,
        data: Payload::from(&[7u8; 64 << 10][..]),
    });
    msgs.into_iter()
        .map(|m| {
            let kind = m.kind();
            let mut out = Vec::new();
            encode_frame(&Frame::Msg(m), MAX_FRAME, &mut out)
                .unwrap_or_else(|e| panic!("{kind}: {e:?}"));
            (kind, out)
        })
        .collect()
}
