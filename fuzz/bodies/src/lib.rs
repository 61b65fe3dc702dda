//! # hedgerow-fuzz
//!
//! The bodies of hedgerow's fuzz targets as plain library functions, so the
//! same code runs three ways: under cargo-fuzz (`fuzz/fuzz_targets/*.rs`,
//! nightly, libFuzzer), under plain `cargo test` over the checked-in corpus
//! and a bounded random loop (`tests/`), and under the stable `fuzz-loop`
//! binary for long runs where nightly is not available.
//!
//! Each body takes arbitrary bytes and panics on a broken invariant, not
//! only on a crash inside the core:
//!
//! * [`wire`]: the frame decoder never panics, refuses oversize lengths up
//!   front, and whatever decodes re-encodes and decodes to the same frame;
//!   structured frames built from the bytes survive a round trip or are
//!   refused with a named reason.
//! * [`handshake`]: `Hello::negotiate` on arbitrary hellos (incl. malformed
//!   ids and inverted version ranges) accepts exactly when magic, cluster,
//!   versions and ids allow, and picks the highest common version.
//! * [`node`]: one `Node` fed an arbitrary sequence of messages, lease
//!   results (honest, late, lost, contradictory or for unknown ops), clock
//!   readings (malformed, untrusted, backwards) and commands, checked after
//!   every input against the core's invariants (see [`node`]).
//! * [`tls`]: the transport's accepting handshake with TLS in front (and
//!   with TLS off) on arbitrary bytes: nothing gets past mutual TLS, and a
//!   peer speaking the other language is refused with a reason.

// A fuzz body reports a broken invariant by panicking: that is what
// libFuzzer, the test harness and the loop binary catch.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod gen;
mod input;
mod node;
mod tls;
mod wire;

pub use input::Unstructured;
pub use node::node;
pub use tls::tls;
pub use wire::{handshake, wire};

/// A target body: panics when an invariant breaks.
pub type Body = fn(&[u8]);

/// The targets by name, for the loop binary and the corpus tests.
pub const TARGETS: [(&str, Body); 4] = [
    ("wire", wire),
    ("handshake", handshake),
    ("node", node),
    ("tls", tls),
];

/// The body of the target called `name`, if there is one.
pub fn target(name: &str) -> Option<Body> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// The checked-in corpus of a target (`fuzz/corpus/<target>/*`), read at
/// run time; empty when the directory is not there.
pub fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// A blind mutation step: a fresh random input, or a corpus entry with a
/// few bytes flipped, inserted, removed or spliced.
pub fn mutate(rng: &mut hedgerow_core::Rng, corpus: &[Vec<u8>], out: &mut Vec<u8>) {
    out.clear();
    if corpus.is_empty() || rng.below(4) == 0 {
        let len = rng.below(2048) as usize;
        out.extend((0..len).map(|_| rng.next_u64() as u8));
        return;
    }
    out.extend_from_slice(&corpus[rng.below(corpus.len() as u64) as usize]);
    for _ in 0..=rng.below(8) {
        let len = out.len() as u64;
        match rng.below(5) {
            0 if len > 0 => {
                let i = rng.below(len) as usize;
                out[i] = rng.next_u64() as u8;
            }
            1 => {
                let i = rng.below(len + 1) as usize;
                out.insert(i, rng.next_u64() as u8);
            }
            2 if len > 0 => {
                let i = rng.below(len) as usize;
                let n = (rng.below(16) as usize).min(out.len() - i);
                out.drain(i..i + n);
            }
            3 => {
                let other = &corpus[rng.below(corpus.len() as u64) as usize];
                let at = rng.below(other.len() as u64 + 1) as usize;
                let cut = rng.below(len + 1) as usize;
                out.truncate(cut);
                out.extend_from_slice(&other[at..]);
            }
            _ => out.extend((0..rng.below(64)).map(|_| rng.next_u64() as u8)),
        }
    }
}
