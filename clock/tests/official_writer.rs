//! Our v2 reader against segments written by the official
//! `clock-bound-shm` 2.0.3 writer: every field, every status, the drift
//! growth, the staleness and `void_after` rules, and a writer updating
//! while readers read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use clock_bound_shm::{ClockStatus as CbStatus, ShmWrite};
use common::*;
use hedgerow_clock::{Clock, ClockBoundClock, ClockError, SegmentVersion};
use hedgerow_core::{ClockSource, ClockStatus, MonoTime};
use nix::sys::time::TimeValLike;

/// Polls `done` every 50 ms for up to 5 s; fails the test saying `what`
/// did not happen.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A fresh segment at `path` with bound `bound_ns`, its writer, and a
/// clock reading it.
fn clock_on_fresh_segment(
    path: &std::path::Path,
    bound_ns: i64,
) -> (clock_bound_shm::ShmWriter, ClockBoundClock) {
    let writer = write_v2(
        path,
        V2 {
            bound_ns,
            ..V2::fresh()
        },
    );
    let clock = ClockBoundClock::open(path).unwrap();
    assert_eq!(clock.read_record().unwrap().bound_ns, bound_ns as u64);
    (writer, clock)
}

fn segment() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shm0");
    (dir, path)
}

#[test]
fn every_field_round_trips() {
    let (_d, path) = segment();
    let rec = V2 {
        as_of_ns: 123 * SEC + 456,
        void_after_ns: 789 * SEC + 12,
        bound_ns: 31_337,
        marker: 0xDEAD_BEEF_0000_0001,
        drift_ppb: 50_000,
        status: CbStatus::FreeRunning,
        disruption_support: true,
    };
    let _w = write_v2(&path, rec);
    let clock = ClockBoundClock::open(&path).unwrap();
    assert_eq!(clock.version(), SegmentVersion::V2);
    let r = clock.read_record().unwrap();
    assert_eq!(r.as_of, MonoTime::from_nanos(123 * SEC as u64 + 456));
    assert_eq!(r.void_after, MonoTime::from_nanos(789 * SEC as u64 + 12));
    assert_eq!(r.bound_ns, 31_337);
    assert_eq!(r.disruption_marker, 0xDEAD_BEEF_0000_0001);
    assert_eq!(r.max_drift_ppb, 50_000);
    assert_eq!(r.status, ClockStatus::FreeRunning);
    assert!(r.disruption_support);
}

#[test]
fn fresh_synchronized_reading_contains_system_time() {
    let (_d, path) = segment();
    let rec = V2::fresh();
    let _w = write_v2(&path, rec);
    let clock = ClockBoundClock::open(&path).unwrap();
    let mono_before = hedgerow_clock::monotonic_now();
    let before = real_ns();
    let now = clock.now().unwrap();
    let after = real_ns();
    assert_eq!(now.clock.status, ClockStatus::Synchronized);
    assert_eq!(now.clock.source, ClockSource::ClockBound);
    assert!(
        now.mono >= mono_before,
        "mono is CLOCK_MONOTONIC, read after the record"
    );
    let i = now.clock.interval;
    assert!(
        i.earliest <= after && before <= i.latest,
        "{i:?} vs [{before}, {after}]"
    );
    // 20 µs written, plus at most a few µs of 50 ppm drift.
    assert!((20_000..25_000).contains(&i.bound_ns()), "{}", i.bound_ns());
    assert!(clock.describe().contains("v2"), "{}", clock.describe());
}

#[test]
fn each_status_is_reported() {
    let (_d, path) = segment();
    let mut w = write_v2(&path, V2::fresh());
    let clock = ClockBoundClock::open(&path).unwrap();
    for (cb, ours) in [
        (CbStatus::Unknown, ClockStatus::Unknown),
        (CbStatus::Synchronized, ClockStatus::Synchronized),
        (CbStatus::FreeRunning, ClockStatus::FreeRunning),
        (CbStatus::Disrupted, ClockStatus::Disrupted),
    ] {
        w.write(
            &V2 {
                status: cb,
                ..V2::fresh()
            }
            .to_official(),
        );
        assert_eq!(clock.now().unwrap().clock.status, ours, "{cb:?}");
    }
}

#[test]
fn bound_grows_with_drift_since_as_of() {
    let (_d, path) = segment();
    // Written 2 s ago at 50 ppm: 100 µs of drift on top of 20 µs.
    let rec = V2 {
        as_of_ns: mono_ns() - 2 * SEC,
        ..V2::fresh()
    };
    let _w = write_v2(&path, rec);
    let clock = ClockBoundClock::open(&path).unwrap();
    let now = clock.now().unwrap();
    let elapsed = now.mono.as_nanos() as i64 - rec.as_of_ns;
    let expected = 20_000 + (elapsed as u128 * 50_000).div_ceil(1_000_000_000) as u64;
    assert_eq!(now.clock.interval.bound_ns(), expected);
    assert!(expected >= 120_000);
    assert_eq!(now.clock.status, ClockStatus::Synchronized);
}

#[test]
fn synchronized_record_older_than_5s_reads_free_running() {
    let (_d, path) = segment();
    let _w = write_v2(
        &path,
        V2 {
            as_of_ns: mono_ns() - 6 * SEC,
            ..V2::fresh()
        },
    );
    let now = ClockBoundClock::open(&path).unwrap().now().unwrap();
    assert_eq!(now.clock.status, ClockStatus::FreeRunning);
    assert!(
        now.clock.interval.bound_ns() >= 20_000 + 300_000,
        "6 s at 50 ppm"
    );
}

#[test]
fn record_past_void_after_reads_unknown() {
    let (_d, path) = segment();
    let now = mono_ns();
    let _w = write_v2(
        &path,
        V2 {
            as_of_ns: now - 2 * SEC,
            void_after_ns: now - SEC,
            ..V2::fresh()
        },
    );
    let r = ClockBoundClock::open(&path).unwrap().now().unwrap();
    assert_eq!(r.clock.status, ClockStatus::Unknown);
    assert!(!r.clock.status.may_lead());
}

#[test]
fn record_from_the_future_is_a_causality_breach() {
    let (_d, path) = segment();
    let _w = write_v2(
        &path,
        V2 {
            as_of_ns: mono_ns() + 10 * SEC,
            ..V2::fresh()
        },
    );
    let e = ClockBoundClock::open(&path).unwrap().now().unwrap_err();
    assert!(matches!(e, ClockError::CausalityBreach { .. }), "{e}");
    assert!(
        e.to_string().contains("restart the clockbound daemon"),
        "{e}"
    );
}

#[test]
fn our_reader_agrees_with_the_official_reader() {
    let (_d, path) = segment();
    let _w = write_v2(
        &path,
        V2 {
            as_of_ns: mono_ns() - SEC,
            ..V2::fresh()
        },
    );
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let mut official = clock_bound_shm::ShmReader::new(&c).unwrap();
    // The official reader measures with CLOCK_MONOTONIC_COARSE, which may
    // lag ours by a tick: compare with a 10 ms tolerance of drift (500 ns).
    let (e, l, s) = official.snapshot().unwrap().now().unwrap();
    let ours = ClockBoundClock::open(&path).unwrap().now().unwrap();
    let official_bound = (l - e).num_nanoseconds() as u64 / 2;
    let diff = ours.clock.interval.bound_ns().abs_diff(official_bound);
    assert!(
        diff <= 500,
        "ours {} official {official_bound}",
        ours.clock.interval.bound_ns()
    );
    assert_eq!(s, CbStatus::Synchronized);
    assert_eq!(ours.clock.status, ClockStatus::Synchronized);
}

#[test]
fn concurrent_writer_never_yields_a_torn_record() {
    // Record k has every field derived from k; a torn copy mixes two k's.
    // (The official writer stores the record with plain writes while we
    // load atomically; across processes, as in production, that is fine,
    // and here it exercises the same seqlock on real memory.)
    fn rec(k: i64) -> V2 {
        V2 {
            as_of_ns: k * SEC + k % SEC,
            void_after_ns: (k + 1000) * SEC + k % SEC,
            bound_ns: k,
            marker: k as u64,
            drift_ppb: (k % 1_000_000) as u32,
            status: CbStatus::Synchronized,
            disruption_support: k % 2 == 0,
        }
    }
    let (_d, path) = segment();
    let mut w = write_v2(&path, rec(1));
    let done = Arc::new(AtomicBool::new(false));
    let total_reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (path, done, total) = (path.clone(), done.clone(), total_reads.clone());
            thread::spawn(move || {
                let clock = ClockBoundClock::open(&path).unwrap();
                let (mut reads, mut last) = (0u64, 0u64);
                while !done.load(Ordering::Relaxed) {
                    total.fetch_add(1, Ordering::Relaxed);
                    // A writer that never pauses (the daemon writes about
                    // once a second) can keep a reader from ever seeing a
                    // still sequence within its attempts on a loaded
                    // 2-core machine: `Busy` is the honest answer then,
                    // and a torn record is what must never come back.
                    let r = match clock.read_record() {
                        Ok(r) => r,
                        Err(ClockError::Busy { .. }) => continue,
                        Err(e) => panic!("read failed: {e}"),
                    };
                    let k = r.bound_ns;
                    let expect = rec(k as i64);
                    assert_eq!(r.as_of.as_nanos(), expect.as_of_ns as u64, "torn at {k}");
                    assert_eq!(
                        r.void_after.as_nanos(),
                        expect.void_after_ns as u64,
                        "torn at {k}"
                    );
                    assert_eq!(r.disruption_marker, k, "torn at {k}");
                    assert_eq!(r.max_drift_ppb, expect.drift_ppb, "torn at {k}");
                    assert_eq!(
                        r.disruption_support, expect.disruption_support,
                        "torn at {k}"
                    );
                    assert!(k >= last, "went back from {last} to {k}");
                    last = k;
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    // Keep writing until the readers have done 200k reads between them
    // (or 5 s pass on a loaded machine), so reads overlap writes.
    let start = std::time::Instant::now();
    let mut k = 1;
    while total_reads.load(Ordering::Relaxed) < 200_000 && start.elapsed().as_secs() < 5 {
        k += 1;
        w.write(&rec(k).to_official());
    }
    done.store(true, Ordering::Relaxed);
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(
        reads >= 1_000 && k > 1_000,
        "too little overlap: {reads} reads, {k} writes"
    );
}

#[test]
fn a_replaced_segment_file_is_followed() {
    // The operator stops the daemon, deletes its segment, starts it again:
    // a new file (new inode) appears at the same path.
    let (_d, path) = segment();
    let old = write_v2(
        &path,
        V2 {
            as_of_ns: mono_ns() - 6 * SEC,
            ..V2::fresh()
        },
    );
    let clock = ClockBoundClock::open(&path).unwrap();
    assert_eq!(clock.now().unwrap().clock.status, ClockStatus::FreeRunning);
    drop(old);
    std::fs::remove_file(&path).unwrap();
    let _new = write_v2(&path, V2::fresh());
    eventually("never followed the new file", || {
        clock.now().unwrap().clock.status == ClockStatus::Synchronized
    });
}

#[test]
fn a_segment_wiped_and_rewritten_in_place_is_read_fresh() {
    // The official writer wipes a segment it finds unusable with
    // `File::create`, which truncates the same inode and writes it again.
    // A reader that holds the old mapping must see the new contents once
    // the writer is done: first "not initialised" (generation 0 after the
    // wipe), then the new record. No read happens while the file is short:
    // touching a mapped page past the end of a truncated file is SIGBUS,
    // for this reader as for the official one (see the module docs).
    use std::os::unix::fs::MetadataExt;
    let (_d, path) = segment();
    let (old, clock) = clock_on_fresh_segment(&path, 1_000);
    let inode = std::fs::metadata(&path).unwrap().ino();
    drop(old);

    // Make the segment unusable, as a crashed writer might leave it, so
    // the next writer wipes it; then that writer's first record.
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let mut w = clock_bound_shm::ShmWriter::new(&path).expect("official writer wipes");
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode, "same inode");
    assert!(
        matches!(clock.now(), Err(ClockError::NotInitialized { .. })),
        "a wiped segment reads as not initialised: {:?}",
        clock.now()
    );
    w.write(
        &V2 {
            bound_ns: 2_000,
            ..V2::fresh()
        }
        .to_official(),
    );
    assert_eq!(clock.read_record().unwrap().bound_ns, 2_000);
    assert_eq!(clock.now().unwrap().clock.status, ClockStatus::Synchronized);
}

#[test]
fn a_removed_segment_reads_as_missing_until_a_new_one_is_written() {
    // The daemon stops and its segment is removed (a restart that cleans
    // up, a host reboot): the mapped file lives on as an orphan, whose
    // last record would still read as fresh for seconds. The clock must
    // stop trusting it at its next look at the path, then follow the
    // daemon's new file without being reopened.
    let (_d, path) = segment();
    let old = write_v2(&path, V2::fresh());
    let clock = ClockBoundClock::open(&path).unwrap();
    assert_eq!(clock.now().unwrap().clock.status, ClockStatus::Synchronized);
    drop(old);
    std::fs::remove_file(&path).unwrap();
    eventually("still reading the removed segment", || match clock.now() {
        Err(ClockError::SegmentMissing { .. }) => true,
        Ok(_) => false,
        Err(e) => panic!("unexpected error: {e}"),
    });
    assert!(clock.is_detached());
    assert!(clock.describe().contains("gone"), "{}", clock.describe());

    let _new = write_v2(
        &path,
        V2 {
            bound_ns: 7_000,
            ..V2::fresh()
        },
    );
    eventually("never followed the new segment", || clock.now().is_ok());
    assert!(!clock.is_detached());
    assert_eq!(clock.read_record().unwrap().bound_ns, 7_000);
    assert_eq!(clock.now().unwrap().clock.status, ClockStatus::Synchronized);
}

#[test]
fn a_fresh_segment_replaced_by_a_new_file_is_followed_within_a_second_or_so() {
    // A daemon restarted quickly: the old record is still fresh (no 5 s
    // staleness yet), but another file is at the path. Its record wins.
    let (_d, path) = segment();
    let (old, clock) = clock_on_fresh_segment(&path, 1_000);
    drop(old);
    let staging = path.with_extension("new");
    let _new = write_v2(
        &staging,
        V2 {
            bound_ns: 3_000,
            ..V2::fresh()
        },
    );
    std::fs::rename(&staging, &path).unwrap();
    eventually("kept reading the replaced file", || {
        clock.now().unwrap();
        clock.read_record().unwrap().bound_ns == 3_000
    });
}
