//! `ClockConfig::open_with`: each branch of the selection policy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use hedgerow_clock::{ClockConfig, ClockError, SegmentPaths};
use hedgerow_core::{ClockSource, ClockStatus};

fn paths(d: &tempfile::TempDir) -> SegmentPaths {
    SegmentPaths {
        v2: d.path().join("shm0"),
        v1: d.path().join("shm"),
    }
}

fn fresh_v1(p: &SegmentPaths) {
    let now = mono_ns();
    write_v1(&p.v1, now, now + 1000 * SEC, 1_000, 1_000, 1);
}

#[test]
fn auto_prefers_v2() {
    let d = tempfile::tempdir().unwrap();
    let p = paths(&d);
    let _w = write_v2(&p.v2, V2::fresh());
    fresh_v1(&p);
    let c = ClockConfig::Auto {
        bound: Some(Duration::from_millis(5)),
    }
    .open_with(&p)
    .unwrap();
    assert!(c.describe().contains("v2"), "{}", c.describe());
    let r = c.now().unwrap().clock;
    assert_eq!(
        (r.status, r.source),
        (ClockStatus::Synchronized, ClockSource::ClockBound)
    );
}

#[test]
fn auto_falls_back_to_v1() {
    let d = tempfile::tempdir().unwrap();
    let p = paths(&d);
    fresh_v1(&p);
    let c = ClockConfig::Auto { bound: None }.open_with(&p).unwrap();
    assert!(c.describe().contains("v1"), "{}", c.describe());
    assert_eq!(c.now().unwrap().clock.status, ClockStatus::Synchronized);
}

#[test]
fn auto_with_a_bound_falls_back_to_the_assumed_system_clock() {
    let d = tempfile::tempdir().unwrap();
    let c = ClockConfig::Auto {
        bound: Some(Duration::from_millis(5)),
    }
    .open_with(&paths(&d))
    .unwrap();
    let r = c.now().unwrap().clock;
    assert_eq!(
        r.source,
        ClockSource::Assumed {
            bound_ns: 5_000_000
        }
    );
    assert_eq!(r.status, ClockStatus::Synchronized);
    let why = c.describe();
    assert!(
        why.contains("assumed") && why.contains("--clock-bound-ms"),
        "{why}"
    );
}

#[test]
fn auto_without_a_bound_never_leads_until_a_segment_appears() {
    let d = tempfile::tempdir().unwrap();
    let p = paths(&d);
    let c = ClockConfig::Auto { bound: None }.open_with(&p).unwrap();
    let r = c.now().unwrap().clock;
    assert_eq!(r.status, ClockStatus::Unknown);
    assert!(!r.status.may_lead());
    let why = c.describe();
    assert!(
        why.contains("no ClockBound segment") && why.contains("no --clock-bound-ms"),
        "{why}"
    );

    // The daemon starts later: the clock picks the segment up (it looks
    // again at most once a second).
    let _w = write_v2(&p.v2, V2::fresh());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let w = V2::fresh();
        let _ = write_v2(&p.v2, w);
        if c.now().unwrap().clock.status == ClockStatus::Synchronized {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "segment never picked up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(c.describe().contains("v2"), "{}", c.describe());
}

#[test]
fn clockbound_with_a_path_opens_that_path() {
    let d = tempfile::tempdir().unwrap();
    let elsewhere = d.path().join("mounted-here");
    let _w = write_v2(&elsewhere, V2::fresh());
    let c = ClockConfig::ClockBound {
        path: Some(elsewhere.clone()),
    }
    .open_with(&paths(&d))
    .unwrap();
    assert!(c.describe().contains("mounted-here"), "{}", c.describe());
    let e = ClockConfig::ClockBound {
        path: Some(d.path().join("nope")),
    }
    .open_with(&paths(&d))
    .err()
    .unwrap();
    assert!(matches!(e, ClockError::SegmentMissing { .. }), "{e}");
}

#[test]
fn clockbound_without_a_segment_is_an_error_not_a_fallback() {
    let d = tempfile::tempdir().unwrap();
    let e = ClockConfig::ClockBound { path: None }
        .open_with(&paths(&d))
        .err()
        .unwrap();
    assert!(matches!(e, ClockError::NoSegmentFound { .. }), "{e}");
    assert!(e.to_string().contains("start the clockbound daemon"), "{e}");
    // A broken v1 file explains more than a missing v2 one.
    std::fs::write(d.path().join("shm"), b"not a segment at all, too").unwrap();
    let e = ClockConfig::ClockBound { path: None }
        .open_with(&paths(&d))
        .err()
        .unwrap();
    assert!(matches!(e, ClockError::BadMagic { .. }), "{e}");
}

#[test]
fn system_is_the_assumed_clock() {
    let c = ClockConfig::System {
        bound: Duration::from_micros(300),
    }
    .open()
    .unwrap();
    let r = c.now().unwrap().clock;
    assert_eq!(r.source, ClockSource::Assumed { bound_ns: 300_000 });
    assert_eq!(r.interval.bound_ns(), 300_000);
}
