//! What a new embedder meets first: a node that cannot lead says why (in
//! `status()` and in `wait_for_leader`'s error) instead of waiting
//! forever; `watch()` starts with the current state; `resign` returns once
//! the release is stored; a bad address or configuration names the field.
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt;
use hedgerow::clock::SystemClock;
use hedgerow::store::{LeaseStore, MemoryStore};
use hedgerow::{Builder, Config, Error, Hedgerow, NotLeadingReason, WatchEvent};

mod support;

fn builder(store: &MemoryStore, lead: bool) -> Builder<hedgerow::runtime::TokioRuntime> {
    Hedgerow::builder("first-use", "n1", "127.0.0.1:0")
        .store(store.clone())
        .clock(SystemClock::new(Duration::from_millis(1)))
        .preset(Config::local)
        .config(move |c| c.lead_on_assumed_clock = lead)
}

#[test]
fn a_node_whose_clock_may_not_lead_says_so() {
    support::tokio_runtime().block_on(async {
        let node = builder(&MemoryStore::new(), false).start().await.unwrap();
        let status = node.status();
        assert!(!status.is_leader);
        assert_eq!(
            status.not_leading,
            Some(NotLeadingReason::AssumedClockNotAllowed)
        );
        assert!(status.not_leading.is_some_and(NotLeadingReason::is_lasting));
        let e = node
            .wait_for_leader(Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::NoLeaderWithin {
                    this_node: Some(NotLeadingReason::AssumedClockNotAllowed),
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("cannot lead"), "{e}");
        node.shutdown().await;
        let r = node.wait_for_leader(Duration::from_secs(5)).await;
        assert!(matches!(r, Err(Error::Closed)), "{r:?}");
    });
}

#[test]
fn watch_starts_with_the_current_state() {
    support::tokio_runtime().block_on(async {
        let node = builder(&MemoryStore::new(), true).start().await.unwrap();
        let leader = node.wait_for_leader(Duration::from_secs(10)).await.unwrap();
        assert_eq!(&leader.id, node.id());
        let first = node.watch().next().await;
        let Some(WatchEvent::Current {
            leader, is_leader, ..
        }) = first
        else {
            panic!("the first event is the current state, got {first:?}");
        };
        assert!(is_leader);
        assert_eq!(leader.map(|l| l.id), Some(node.id().clone()));
        node.shutdown().await;
        let mut after = node.watch();
        assert!(after.next().await.is_none(), "a stopped node's watch ends");
    });
}

#[test]
fn resign_returns_once_the_release_is_stored() {
    support::tokio_runtime().block_on(async {
        let store = MemoryStore::new();
        let node = builder(&store, true).start().await.unwrap();
        node.wait_for_leader(Duration::from_secs(10)).await.unwrap();
        assert!(node.is_leader());
        node.resign().await.unwrap();
        let row = store.read("first-use").unwrap().expect("a lease row");
        assert_eq!(row.holder, None, "the release is in the store");
        assert!(!node.is_leader());
        assert_eq!(node.status().not_leading, Some(NotLeadingReason::Resigned));
        // Not leading: returns at once, and the node is still running.
        node.resign().await.unwrap();
        node.leave().await.unwrap();
        let r = node.resign().await;
        assert!(matches!(r, Err(Error::Closed)), "{r:?}");
    });
}

#[test]
fn start_errors_name_what_is_wrong() {
    support::tokio_runtime().block_on(async {
        let store = MemoryStore::new();
        let listen = builder(&store, true).listen("nonsense");
        let advertise = Hedgerow::builder("first-use", "n1", "web-1").store(store.clone());
        for (b, field) in [(listen, "listen"), (advertise, "advertise")] {
            let e = b.start().await.unwrap_err();
            assert!(
                matches!(&e, Error::Address { field: f, .. } if *f == field),
                "{e:?}"
            );
        }

        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let e = builder(&store, true)
            .listen(addr)
            .start()
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Bind {
                    field: "listen",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(std::error::Error::source(&e).is_some());

        let e = builder(&store, true)
            .config(|c| c.heartbeat_interval = Duration::ZERO)
            .start()
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid configuration: heartbeat_interval must be positive"
        );

        let e = Hedgerow::builder("first-use", "n1", "127.0.0.1:0")
            .start()
            .await
            .unwrap_err();
        assert!(matches!(e, Error::NoStore), "{e:?}");
    });
}
