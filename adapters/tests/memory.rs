//! The conformance suite against the in-process store, plus what only
//! the memory store promises: its failure and latency switches.

use std::time::{Duration, Instant};

use hedgerow::store::conformance::{self, write_by, Harness};
use hedgerow::store::{CasOutcome, LeaseStore, MemoryStore, StoreError};

struct Memory(MemoryStore);

impl Harness for Memory {
    type Store = MemoryStore;

    fn open(&self) -> MemoryStore {
        self.0.clone()
    }

    fn take_down(&self) {
        self.0.set_unavailable(true);
    }

    fn bring_back(&self) {
        self.0.set_unavailable(false);
    }

    fn down_deadline(&self) -> Duration {
        Duration::from_millis(100)
    }
}

#[test]
fn conformance() {
    conformance::run_all(&Memory(MemoryStore::new()));
}

#[test]
fn store_down_is_an_error_then_recovers() {
    conformance::store_down_is_an_error_then_recovers(&Memory(MemoryStore::new()));
}

#[test]
fn coord_conformance() {
    conformance::run_coord(&Memory(MemoryStore::new()));
}

#[test]
fn coord_store_down_is_an_error_then_recovers() {
    conformance::coord_store_down_is_an_error_then_recovers(&Memory(MemoryStore::new()));
}

/// The coordination calls wait out the latency and fail while the store
/// is unavailable, like the lease calls.
#[test]
fn coord_calls_obey_the_switches() {
    use hedgerow::store::coord::{CoordOp, CoordReply};
    let store = MemoryStore::new();
    let coord = store.coord().unwrap_or_else(|| panic!("no coord side"));
    store.set_unavailable(true);
    let load = CoordOp::LoadPermits {
        op: hedgerow_core::OpId(1),
    };
    assert!(matches!(
        coord.execute("g", &load),
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        coord.kv_get("g", "k"),
        Err(StoreError::Unavailable(_))
    ));
    store.set_unavailable(false);
    store.set_latency(Duration::from_millis(200));
    let started = Instant::now();
    assert!(matches!(
        coord.execute("g", &load),
        Ok(CoordReply::Permits { .. })
    ));
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[test]
fn an_unavailable_store_changes_nothing() {
    let store = MemoryStore::new();
    store.set_unavailable(true);
    assert!(matches!(
        store.compare_and_set("g", None, &write_by("a", 1, 1, 1)),
        Err(StoreError::Unavailable(_))
    ));
    store.set_unavailable(false);
    assert_eq!(store.read("g"), Ok(None));
}

/// Trap 1 with a really slow store: the renew is sent first but applied
/// after a takeover based on the same row, and loses.
#[test]
fn a_renew_applied_late_loses_to_the_takeover() {
    let store = MemoryStore::new();
    let held = match store.compare_and_set("g", None, &write_by("leader", 1, 1, 10)) {
        Ok(CasOutcome::Applied(row)) => row,
        other => panic!("seed: {other:?}"),
    };
    store.set_latency(Duration::from_millis(300));
    let renew = std::thread::spawn({
        let store = store.clone();
        move || store.compare_and_set("g", Some(held.version), &write_by("leader", 1, 1, 20))
    });
    // The renew is on its way (its delay is fixed when it is sent); the
    // store gets fast again and the takeover overtakes it.
    std::thread::sleep(Duration::from_millis(50));
    store.set_latency(Duration::ZERO);
    let started = Instant::now();
    let takeover = store.compare_and_set("g", Some(held.version), &write_by("taker", 2, 2, 30));
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "the takeover was not fast"
    );
    let renew = renew
        .join()
        .unwrap_or_else(|_| panic!("renew thread panicked"));
    let won = match takeover {
        Ok(CasOutcome::Applied(row)) => row,
        other => panic!("takeover: {other:?}"),
    };
    assert_eq!(renew, Ok(CasOutcome::Conflict(Some(won.clone()))));
    assert_eq!(store.read("g"), Ok(Some(won)));
}
