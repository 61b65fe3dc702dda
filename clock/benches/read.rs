//! One clock reading: our ClockBound reader vs the official
//! `clock-bound-client` 2.0.3, both on a v2 segment the official writer
//! made in a temp dir, plus the system clock (`SystemClock` and bare
//! `SystemTime::now`) as the baseline.
//!
//! `cargo bench -p hedgerow-clock --bench read -- --measurement-time 2 --warm-up-time 1`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use clock_bound_client::ClockBoundClient;
use clock_bound_shm::{ClockErrorBound, ClockStatus, ShmWrite, ShmWriter};
use criterion::{criterion_group, criterion_main, Criterion};
use hedgerow_clock::{Clock, ClockBoundClock, SystemClock};
use nix::sys::time::TimeSpec;

fn read(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shm0");
    let mono = hedgerow_clock::monotonic_now().as_nanos() as i64;
    let ts = |ns: i64| TimeSpec::new(ns / 1_000_000_000, ns % 1_000_000_000);
    let mut writer = ShmWriter::new(&path).unwrap();
    writer.write(&ClockErrorBound::new(
        ts(mono),
        ts(mono + 1_000 * 1_000_000_000),
        20_000,
        0,
        50_000,
        ClockStatus::Synchronized,
        false,
    ));

    let ours = ClockBoundClock::open(&path).unwrap();
    c.bench_function("hedgerow ClockBoundClock::now (v2)", |b| {
        b.iter(|| black_box(ours.now().unwrap()))
    });

    let mut official = ClockBoundClient::new_with_path(path.to_str().unwrap()).unwrap();
    c.bench_function("clock-bound-client 2.0.3 now", |b| {
        b.iter(|| black_box(official.now().unwrap()))
    });

    let system = SystemClock::new(Duration::from_millis(1));
    c.bench_function("hedgerow SystemClock::now", |b| {
        b.iter(|| black_box(system.now().unwrap()))
    });
    c.bench_function("std SystemTime::now", |b| {
        b.iter(|| black_box(SystemTime::now()))
    });
}

criterion_group!(benches, read);
criterion_main!(benches);
