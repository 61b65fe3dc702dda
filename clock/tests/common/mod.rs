//! Helpers shared by the integration tests: segments written by the
//! official `clock-bound-shm` 2.0.3 writer (v2) and by hand in the
//! documented v1 layout (no released daemon still writes v1 for us).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;

use clock_bound_shm::{ClockErrorBound, ClockStatus as CbStatus, ShmWrite, ShmWriter};
use nix::sys::time::TimeSpec;

pub const SEC: i64 = 1_000_000_000;

/// Our monotonic now, in ns, as i64.
pub fn mono_ns() -> i64 {
    hedgerow_clock::monotonic_now().as_nanos() as i64
}

pub fn ts(ns: i64) -> TimeSpec {
    TimeSpec::new(ns.div_euclid(SEC), ns.rem_euclid(SEC))
}

/// A v2 record in the official writer's type.
#[derive(Clone, Copy, Debug)]
pub struct V2 {
    pub as_of_ns: i64,
    pub void_after_ns: i64,
    pub bound_ns: i64,
    pub marker: u64,
    pub drift_ppb: u32,
    pub status: CbStatus,
    pub disruption_support: bool,
}

impl V2 {
    /// A fresh synchronized record, as_of now, void after 1000 s (as the
    /// 2.0.3 daemon writes it).
    pub fn fresh() -> Self {
        let now = mono_ns();
        V2 {
            as_of_ns: now,
            void_after_ns: now + 1000 * SEC,
            bound_ns: 20_000,
            marker: 0,
            drift_ppb: 50_000,
            status: CbStatus::Synchronized,
            disruption_support: false,
        }
    }

    pub fn to_official(self) -> ClockErrorBound {
        ClockErrorBound::new(
            ts(self.as_of_ns),
            ts(self.void_after_ns),
            self.bound_ns,
            self.marker,
            self.drift_ppb,
            self.status,
            self.disruption_support,
        )
    }
}

/// Writes `rec` with the official writer (creating the segment if needed)
/// and returns the writer for further updates.
pub fn write_v2(path: &Path, rec: V2) -> ShmWriter {
    let mut w = ShmWriter::new(path).expect("official writer");
    w.write(&rec.to_official());
    w
}

/// The bytes of a v1 segment (ClockBound 1.x layout, PROTOCOL.md v1).
pub fn v1_bytes(
    gen: u16,
    as_of_ns: i64,
    void_after_ns: i64,
    bound: i64,
    drift: u32,
    status: i32,
) -> Vec<u8> {
    let mut b = Vec::with_capacity(72);
    b.extend_from_slice(&0x414D_5A4Eu32.to_ne_bytes());
    b.extend_from_slice(&0x4342_0200u32.to_ne_bytes());
    b.extend_from_slice(&72u32.to_ne_bytes());
    b.extend_from_slice(&1u16.to_ne_bytes());
    b.extend_from_slice(&gen.to_ne_bytes());
    for ns in [as_of_ns, void_after_ns] {
        b.extend_from_slice(&ns.div_euclid(SEC).to_ne_bytes());
        b.extend_from_slice(&ns.rem_euclid(SEC).to_ne_bytes());
    }
    b.extend_from_slice(&bound.to_ne_bytes());
    b.extend_from_slice(&drift.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes()); // reserved
    b.extend_from_slice(&status.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes()); // padding
    assert_eq!(b.len(), 72);
    b
}

pub fn write_v1(
    path: &Path,
    as_of_ns: i64,
    void_after_ns: i64,
    bound: i64,
    drift: u32,
    status: i32,
) {
    fs::write(
        path,
        v1_bytes(2, as_of_ns, void_after_ns, bound, drift, status),
    )
    .unwrap();
}

/// Unix time now from the system clock, ns.
pub fn real_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}
