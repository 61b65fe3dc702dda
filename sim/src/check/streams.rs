//! Invariant 6, streams: every stream delivers its bytes in order, none
//! twice, and the bytes are the ones sent.

use std::collections::HashMap;

use super::Violation;
use hedgerow_core::NodeId;

/// The byte at `offset` of a checked stream: a pattern both ends know.
pub fn pattern_byte(sid: u64, offset: u64) -> u8 {
    (offset.wrapping_mul(31).wrapping_add(sid.wrapping_mul(7)) % 251) as u8
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
