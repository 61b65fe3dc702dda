//! Invariant 6, streams: every stream delivers its bytes in order, none
//! twice, and the bytes are the ones sent.

use std::collections::HashMap;

use super::Violation;
use hedgerow_core::NodeId;

/// The byte at `offset` of a checked stream: a pattern both ends know,
/// from a hash of the stream and the offset's 8-byte word, so that it
/// does not repeat (a pattern that did would let a skipped or repeated
/// run of exactly one period pass, and a byte of another stream match).
pub fn pattern_byte(sid: u64, offset: u64) -> u8 {
    let mut z = sid ^ (offset >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> ((offset & 7) * 8)) as u8
}

/// Per inbound stream: the next expected offset.
#[derive(Debug, Default)]
pub struct StreamOrder {
    next: HashMap<(usize, NodeId, u64), u64>,
    /// Bytes checked.
    pub bytes: u64,
}

impl StreamOrder {
    /// Data arrived at node `slot` from `from` on stream `sid`.
    pub fn data(
        &mut self,
        slot: usize,
        from: &NodeId,
        sid: u64,
        offset: u64,
        data: &[u8],
        t: u64,
    ) -> Option<Violation> {
        let next = self.next.entry((slot, from.clone(), sid)).or_insert(0);
        let bad = |what: String| {
            Some(Violation {
                invariant: "6 (streams deliver in order, none twice)",
                at_ns: t,
                what,
                trace: Vec::new(),
            })
        };
        if offset != *next {
            return bad(format!(
                "stream {from}/{sid} at node {slot}: got offset {offset}, expected {next}"
            ));
        }
        for (i, b) in data.iter().enumerate() {
            if *b != pattern_byte(sid, offset + i as u64) {
                return bad(format!(
                    "stream {from}/{sid} at node {slot}: wrong byte at {}",
                    offset + i as u64
                ));
            }
        }
        *next += data.len() as u64;
        self.bytes += data.len() as u64;
        None
    }

    /// Bytes received in order on a stream so far.
    pub fn received(&self, slot: usize, from: &NodeId, sid: u64) -> u64 {
        self.next
            .get(&(slot, from.clone(), sid))
            .copied()
            .unwrap_or(0)
    }
}

/// Bytes before a checked stream's body, sent through the facade: its key
/// and its length (both `u64`, little-endian), so the receiver knows what
/// to expect without side channels.
pub const HEADER: usize = 16;

/// The first [`HEADER`] bytes of a checked stream.
pub fn header(key: u64, len: u64) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..8].copy_from_slice(&key.to_le_bytes());
    h[8..].copy_from_slice(&len.to_le_bytes());
    h
}

/// A checked stream's receiving end, fed the chunks as the application
/// reads them: parses the header, then checks every body byte against
/// [`pattern_byte`] at its position.
#[derive(Debug, Default)]
pub struct Reader {
    head: Vec<u8>,
    /// `(key, announced length)` once the header is in.
    pub header: Option<(u64, u64)>,
    /// Body bytes read so far.
    pub got: u64,
    /// The first wrong byte, if any.
    pub bad: Option<String>,
}

impl Reader {
    /// Takes the next chunk; true when this chunk completed the header.
    pub fn chunk(&mut self, mut data: &[u8]) -> bool {
        let mut opened = false;
        if self.header.is_none() {
            let take = (HEADER - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.head.len() < HEADER {
                return false;
            }
            let word = |r: std::ops::Range<usize>| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.head[r]);
                u64::from_le_bytes(b)
            };
            self.header = Some((word(0..8), word(8..16)));
            opened = true;
        }
        let Some((key, announced)) = self.header else {
            return opened;
        };
        if self.bad.is_none() {
            if let Some(i) = data
                .iter()
                .enumerate()
                .position(|(i, b)| *b != pattern_byte(key, self.got + i as u64))
            {
                self.bad = Some(format!("wrong byte at body offset {}", self.got + i as u64));
            }
        }
        self.got += data.len() as u64;
        if self.bad.is_none() && self.got > announced {
            self.bad = Some(format!(
                "{} bytes, more than the {announced} announced",
                self.got
            ));
        }
        opened
    }
}

/// A checked stream as the hosts of a facade-level run saw it. `from` is
/// the sender's node id, `key` the stream's key from its header, `t` true
/// time in ns.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Seen {
    /// The sender's `finish()` answered (`ok`), or a write or the opening
    /// failed (`!ok`).
    Sent {
        /// The sender.
        from: String,
        /// The stream's key.
        key: u64,
        /// Whether `finish()` answered Ok.
        ok: bool,
    },
    /// The receiving application read the header, on node `at`.
    Opened {
        /// The receiving slot.
        at: usize,
        /// The sender.
        from: String,
        /// The stream's key.
        key: u64,
    },
    /// The receiving application's stream ended on node `at`: cleanly
    /// (`clean`, no more items) or with a reset error.
    Ended {
        /// The receiving slot.
        at: usize,
        /// The sender.
        from: String,
        /// The stream's key (`None`: ended before its header was in).
        key: Option<u64>,
        /// Body bytes read.
        got: u64,
        /// The length the header announced.
        announced: u64,
        /// Ended without an error.
        clean: bool,
        /// The first wrong byte, if any.
        bad: Option<String>,
    },
}

fn violation(t: u64, what: String) -> Violation {
    Violation {
        invariant: "6 (streams deliver in order, none twice)",
        at_ns: t,
        what,
        trace: Vec::new(),
    }
}

/// Checks what the hosts saw, in time order, through the public API:
///
/// * every byte a receiver read is the byte sent at that position;
/// * a stream that ends cleanly at a receiver has every byte it announced
///   (a reset is an error the application sees; a short clean end would be
///   silent loss);
/// * a stream whose `finish()` answered Ok was read whole by a receiver,
///   unless the receiver that had it crashed, restarted or left after
///   opening it (`lost_after(slot, t)`) without recording an end: its
///   bytes had reached that process, which is all `finish()` promises. (A
///   receiver that dies after `StreamDone` but before its handler read the
///   header leaves no `Opened` and would be reported; in turmoil a handler
///   reads within the same step.)
pub fn check_delivery(
    seen: &[(u64, Seen)],
    lost_after: impl Fn(usize, u64) -> bool,
) -> Vec<Violation> {
    let mut out = Vec::new();
    for (t, s) in seen {
        match s {
            Seen::Ended {
                at,
                from,
                key,
                got,
                announced,
                clean,
                bad,
            } => {
                let shown = key.map_or("?".to_string(), |k| k.to_string());
                let name = format!("stream {from}/{shown} at n{at}");
                if let Some(bad) = bad {
                    out.push(violation(*t, format!("{name}: {bad}")));
                } else if *clean && (key.is_none() || got != announced) {
                    out.push(violation(
                        *t,
                        format!("{name} ended cleanly after {got} of {announced} bytes"),
                    ));
                }
            }
            Seen::Sent {
                from,
                key,
                ok: true,
            } => {
                let whole = seen.iter().any(|(_, e)| {
                    matches!(e, Seen::Ended { from: f, key: Some(k), got, announced, clean: true, bad: None, .. }
                        if f == from && k == key && got == announced)
                });
                // A receiver that recorded an end (a reset, a short read)
                // is not excused by dying later: it saw the stream cut.
                let ended = seen.iter().any(|(_, e)| {
                    matches!(e, Seen::Ended { from: f, key: Some(k), .. } if f == from && k == key)
                });
                let lost = !ended
                    && seen.iter().any(|(t2, e)| {
                        matches!(e, Seen::Opened { at, from: f, key: k } if f == from && k == key && lost_after(*at, *t2))
                    });
                if !whole && !lost {
                    out.push(violation(
                        *t,
                        format!("stream {from}/{key}: finish() answered Ok, but no receiver read it whole"),
                    ));
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(key: u64, from: u64, n: u64) -> Vec<u8> {
        (from..from + n).map(|o| pattern_byte(key, o)).collect()
    }

    #[test]
    fn the_reader_checks_the_header_and_every_byte_across_chunks() {
        let mut r = Reader::default();
        let h = header(9, 600);
        assert!(!r.chunk(&h[..5]));
        let mut rest = h[5..].to_vec();
        rest.extend(body(9, 0, 300));
        assert!(r.chunk(&rest));
        assert_eq!(r.header, Some((9, 600)));
        r.chunk(&body(9, 300, 300));
        assert_eq!((r.got, r.bad.as_deref()), (600, None));

        // One chunk delivered twice.
        let mut r = Reader::default();
        r.chunk(&h);
        r.chunk(&body(9, 0, 100));
        r.chunk(&body(9, 0, 100));
        assert_eq!(r.bad.as_deref(), Some("wrong byte at body offset 100"));
    }

    fn ended(got: u64, clean: bool) -> Seen {
        Seen::Ended {
            at: 2,
            from: "n1".into(),
            key: Some(5),
            got,
            announced: 1000,
            clean,
            bad: None,
        }
    }

    #[test]
    fn silent_loss_is_caught_and_a_loud_failure_is_not_a_violation() {
        let sent_ok = Seen::Sent {
            from: "n1".into(),
            key: 5,
            ok: true,
        };
        let opened = Seen::Opened {
            at: 2,
            from: "n1".into(),
            key: 5,
        };
        let never = |_: usize, _: u64| false;
        // Whole: fine.
        assert!(check_delivery(
            &[
                (1, opened.clone()),
                (2, ended(1000, true)),
                (3, sent_ok.clone())
            ],
            never
        )
        .is_empty());
        // A clean end short of the length: silent loss.
        assert_eq!(check_delivery(&[(1, ended(600, true))], never).len(), 1);
        // A reset part way, and the sender told so: loud, fine.
        let failed = Seen::Sent {
            from: "n1".into(),
            key: 5,
            ok: false,
        };
        assert!(check_delivery(&[(1, ended(600, false)), (2, failed)], never).is_empty());
        // Ok at the sender, yet nobody read it whole.
        assert_eq!(
            check_delivery(
                &[
                    (1, opened.clone()),
                    (2, ended(600, false)),
                    (3, sent_ok.clone())
                ],
                never
            )
            .len(),
            1
        );
        // ... unless the receiver crashed after opening it.
        let crashed = |slot: usize, _: u64| slot == 2;
        assert!(check_delivery(&[(1, opened.clone()), (3, sent_ok.clone())], crashed).is_empty());
        // ... but not when it recorded the stream cut before dying.
        assert_eq!(
            check_delivery(
                &[(1, opened), (2, ended(600, false)), (3, sent_ok)],
                crashed
            )
            .len(),
            1
        );
    }

    #[test]
    fn more_bytes_than_announced_and_a_shifted_run_are_caught() {
        let h = header(4, 100);
        let mut r = Reader::default();
        r.chunk(&h);
        r.chunk(&body(4, 0, 150));
        assert!(
            r.bad.as_deref().is_some_and(|b| b.contains("more than")),
            "{:?}",
            r.bad
        );
        // The pattern does not repeat: a run skipped at any length shows.
        for skip in [1u64, 8, 251, 4096] {
            let mut r = Reader::default();
            r.chunk(&header(4, 10_000));
            r.chunk(&body(4, 0, 100));
            r.chunk(&body(4, 100 + skip, 100));
            assert!(r.bad.is_some(), "a skip of {skip} bytes passed");
        }
    }
}
