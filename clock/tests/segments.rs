//! Opening segments: v1 segments in the documented 1.x layout, version
//! detection, and each way a file can fail to be a usable segment, with
//! messages that tell the operator what to do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;

use common::*;
use hedgerow_clock::{Clock, ClockBoundClock, ClockError, SegmentVersion};
use hedgerow_core::{ClockSource, ClockStatus, MonoTime};

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn v1_segment_is_read_with_its_own_layout() {
    let d = dir();
    let path = d.path().join("shm");
    let as_of = mono_ns() - 2 * SEC;
    write_v1(&path, as_of, as_of + 1000 * SEC, 40_000, 50_000, 1);
    let clock = ClockBoundClock::open(&path).unwrap();
    assert_eq!(clock.version(), SegmentVersion::V1);
    let r = clock.read_record().unwrap();
    assert_eq!(r.as_of, MonoTime::from_nanos(as_of as u64));
    assert_eq!(
        r.void_after,
        MonoTime::from_nanos((as_of + 1000 * SEC) as u64)
    );
    assert_eq!((r.bound_ns, r.max_drift_ppb), (40_000, 50_000));
    assert_eq!((r.disruption_marker, r.disruption_support), (0, false));
    assert_eq!(r.status, ClockStatus::Synchronized);
    let before = real_ns();
    let now = clock.now().unwrap();
    let after = real_ns();
    let i = now.clock.interval;
    assert!(i.earliest <= after && before <= i.latest);
    // 2 s at 50 ppm on top of 40 µs.
    assert!(
        (140_000..150_000).contains(&i.bound_ns()),
        "{}",
        i.bound_ns()
    );
    assert_eq!(now.clock.source, ClockSource::ClockBound);
    assert!(clock.describe().contains("v1"));
}

#[test]
fn v1_statuses_and_rules() {
    let d = dir();
    let path = d.path().join("shm");
    let now = mono_ns();
    let cases = [
        (now, now + SEC, 0, ClockStatus::Unknown),
        (now, now + SEC, 2, ClockStatus::FreeRunning),
        (now - 6 * SEC, now + SEC, 1, ClockStatus::FreeRunning), // stale
        (now - 2 * SEC, now - SEC, 1, ClockStatus::Unknown),     // void
    ];
    for (as_of, void_after, status, expect) in cases {
        write_v1(&path, as_of, void_after, 1_000, 1_000, status);
        let got = ClockBoundClock::open(&path)
            .unwrap()
            .now()
            .unwrap()
            .clock
            .status;
        assert_eq!(
            got, expect,
            "as_of {as_of} void {void_after} status {status}"
        );
    }
    // v1 has no Disrupted.
    write_v1(&path, now, now + SEC, 1_000, 1_000, 3);
    let e = ClockBoundClock::open(&path).unwrap().now().unwrap_err();
    assert!(matches!(e, ClockError::Malformed { .. }), "{e}");
}

#[test]
fn a_v1_writer_mid_update_is_waited_for_then_reported() {
    let d = dir();
    let path = d.path().join("shm");
    let now = mono_ns();
    fs::write(&path, v1_bytes(3, now, now + SEC, 1, 1, 1)).unwrap();
    let e = ClockBoundClock::open(&path).unwrap().now().unwrap_err();
    assert!(matches!(e, ClockError::Busy { .. }), "{e}");
    assert!(e.to_string().contains("restart it"), "{e}");
}

#[test]
fn version_can_be_required() {
    let d = dir();
    let path = d.path().join("shm");
    write_v1(&path, mono_ns(), mono_ns() + SEC, 1, 1, 1);
    assert!(ClockBoundClock::open_version(&path, SegmentVersion::V1).is_ok());
    let e = ClockBoundClock::open_version(&path, SegmentVersion::V2).unwrap_err();
    assert!(
        matches!(
            e,
            ClockError::VersionMismatch {
                expected: 2,
                found: 1,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn missing_file_asks_about_the_daemon_and_the_mount() {
    let d = dir();
    let e = ClockBoundClock::open(d.path().join("shm0")).unwrap_err();
    assert!(matches!(e, ClockError::SegmentMissing { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("daemon running") && msg.contains("mounted"),
        "{msg}"
    );
}

#[test]
fn wrong_magic_is_not_a_segment() {
    let d = dir();
    let path = d.path().join("shm0");
    let mut b = v1_bytes(2, 1, 2, 3, 4, 1);
    b[0] ^= 0xff;
    fs::write(&path, b).unwrap();
    let e = ClockBoundClock::open(&path).unwrap_err();
    assert!(matches!(e, ClockError::BadMagic { .. }), "{e}");
    assert!(e.to_string().contains("check that the path"), "{e}");
}

#[test]
fn short_and_truncated_files_are_refused() {
    let d = dir();
    let path = d.path().join("shm0");
    // Shorter than a header; then an empty file.
    for len in [10, 0] {
        fs::write(&path, &v1_bytes(2, 1, 2, 3, 4, 1)[..len]).unwrap();
        let e = ClockBoundClock::open(&path).unwrap_err();
        assert!(matches!(e, ClockError::Truncated { needed: 16, .. }), "{e}");
    }
    // A whole header but the record cut short.
    fs::write(&path, &v1_bytes(2, 1, 2, 3, 4, 1)[..40]).unwrap();
    let e = ClockBoundClock::open(&path).unwrap_err();
    assert!(
        matches!(
            e,
            ClockError::Truncated {
                len: 40,
                needed: 72,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("retry"), "{e}");
}

#[test]
fn header_segment_size_below_the_layout_is_malformed() {
    let d = dir();
    let path = d.path().join("shm");
    let mut b = v1_bytes(2, 1, 2, 3, 4, 1);
    b[8..12].copy_from_slice(&16u32.to_ne_bytes());
    fs::write(&path, b).unwrap();
    let e = ClockBoundClock::open(&path).unwrap_err();
    assert!(matches!(e, ClockError::Malformed { .. }), "{e}");
}

#[test]
fn unknown_version_is_refused_and_version_zero_is_not_ready() {
    let d = dir();
    let path = d.path().join("shm0");
    let mut b = v1_bytes(2, 1, 2, 3, 4, 1);
    b[12..14].copy_from_slice(&3u16.to_ne_bytes());
    fs::write(&path, &b).unwrap();
    let e = ClockBoundClock::open(&path).unwrap_err();
    assert!(
        matches!(e, ClockError::UnsupportedVersion { version: 3, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("upgrade hedgerow"), "{e}");

    b[12..14].copy_from_slice(&0u16.to_ne_bytes());
    fs::write(&path, &b).unwrap();
    let e = ClockBoundClock::open(&path).unwrap_err();
    assert!(matches!(e, ClockError::NotInitialized { .. }), "{e}");
}

#[test]
fn generation_zero_reads_as_not_initialized() {
    let d = dir();
    let path = d.path().join("shm");
    fs::write(&path, v1_bytes(0, 1, 2, 3, 4, 1)).unwrap();
    let clock = ClockBoundClock::open(&path).unwrap();
    let e = clock.now().unwrap_err();
    assert!(matches!(e, ClockError::NotInitialized { .. }), "{e}");
    // The daemon finishes its first write: the same mapping now reads.
    let now = mono_ns();
    fs::write(&path, v1_bytes(2, now, now + SEC, 5, 0, 1)).unwrap();
    assert_eq!(clock.now().unwrap().clock.status, ClockStatus::Synchronized);
}

#[test]
fn unreadable_file_is_an_io_error_naming_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let d = dir();
    let path = d.path().join("shm0");
    write_v1(&path, 1, 2, 3, 4, 1);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
    match ClockBoundClock::open(&path) {
        // root reads anything: nothing to check then.
        Ok(_) => {}
        Err(e) => {
            assert!(matches!(e, ClockError::Io { .. }), "{e}");
            assert!(e.to_string().contains("permission"), "{e}");
        }
    }
}
