//! What a node checks before it joins: that its store answers. A store
//! that never answers (a wrong URL, a wrong password, a database that is
//! not there) would otherwise leave a node running that can never lead
//! or find a leader; this room makes the process fail with the store's
//! own error instead, so a supervisor sees it and restarts or alerts.
//! It decides nothing about leases: it only reads the row once.

use std::time::{Duration, Instant};

use hedgerow::store::{LeaseStore, StoreError};

/// Reads `cluster`'s lease row until the store answers, retrying with
/// backoff (a database that starts next to the node gets `wait` to come
/// up); the last error, with what to check, once `wait` has passed, or
/// at once when the store says its row is unusable.
pub(crate) fn reach_store(
    store: &dyn LeaseStore,
    cluster: &str,
    what: &str,
    wait: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(100);
    loop {
        let error = match store.read(cluster) {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        // A corrupt row or table stays so until an operator fixes it.
        if left.is_zero() || matches!(error, StoreError::Corrupt(_)) {
            return Err(format!(
                "--store {what}: the store did not answer within {} ms: {error} (check the \
                 address, the credentials and that the database exists; --store-wait-ms sets \
                 how long to wait)",
                wait.as_millis()
            ));
        }
        tracing::warn!(%error, "the store does not answer yet; retrying");
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use hedgerow::store::{CasOutcome, LeaseRow, LeaseWrite, MemoryStore, StoreError};

    /// A store whose first `failures` reads fail with `error`.
    struct Failing {
        failures: u32,
        error: StoreError,
        reads: AtomicU32,
    }

    impl LeaseStore for Failing {
        fn read(&self, _: &str) -> Result<Option<LeaseRow>, StoreError> {
            if self.reads.fetch_add(1, Ordering::Relaxed) < self.failures {
                return Err(self.error.clone());
            }
            Ok(None)
        }
        fn compare_and_set(
            &self,
            _: &str,
            _: Option<u64>,
            _: &LeaseWrite,
        ) -> Result<CasOutcome, StoreError> {
            Err(self.error.clone())
        }
    }

    fn failing(failures: u32, error: StoreError) -> Failing {
        Failing {
            failures,
            error,
            reads: AtomicU32::new(0),
        }
    }

    #[test]
    fn a_store_that_answers_passes_at_once() {
        reach_store(&MemoryStore::new(), "c", "memory", Duration::ZERO).unwrap();
    }

    #[test]
    fn a_store_that_comes_up_within_the_wait_passes() {
        let store = failing(2, StoreError::Unavailable("refused".into()));
        reach_store(&store, "c", "postgres", Duration::from_secs(30)).unwrap();
        assert_eq!(store.reads.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_store_that_never_answers_fails_with_its_error_and_the_flag() {
        let store = failing(
            u32::MAX,
            StoreError::Unavailable("connection refused".into()),
        );
        let err = reach_store(&store, "c", "postgres", Duration::from_millis(250)).unwrap_err();
        assert!(err.contains("connection refused"), "{err}");
        assert!(
            err.contains("--store postgres") && err.contains("--store-wait-ms"),
            "{err}"
        );
        assert!(store.reads.load(Ordering::Relaxed) >= 2, "it retried");
    }

    #[test]
    fn a_corrupt_store_fails_at_once() {
        let store = failing(u32::MAX, StoreError::Corrupt("schema 9".into()));
        let err = reach_store(&store, "c", "sqlite:x", Duration::from_secs(30)).unwrap_err();
        assert!(err.contains("schema 9"), "{err}");
        assert_eq!(store.reads.load(Ordering::Relaxed), 1);
    }
}
