//! The live cluster page at `/` of the control API, and the recent
//! membership and leadership events it shows (`GET /v1/events`). The page
//! is one file (`page/live.html`: markup, style and script, no external
//! asset) that polls `/v1/status` and `/v1/events`; a token in the URL
//! fragment (`#token=…`) or typed at its prompt goes with each poll as
//! `Authorization: Bearer`, so the page works behind the control API's
//! authentication without putting the token in a URL the server logs.
//!
//! The events come from the node's [`Hedgerow::watch`] stream into a ring
//! of the last [`RECENT`] events; nothing here changes the node.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt as _;
use hedgerow::{Hedgerow, MemberChange, WatchEvent};
use serde::Serialize;

/// How many events the page can show: the ring keeps the last ones.
pub const RECENT: usize = 100;

const PAGE: &str = include_str!("../page/live.html");

/// One membership or leadership event, as the page lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EventJson {
    /// Numbered from 1 in the order this node saw them.
    pub seq: u64,
    /// Wall-clock time it was seen, ms since the Unix epoch.
    pub at_ms: u64,
    /// `joined`, `updated`, `left`, `leader`, `elected`, `stepped-down`
    /// or `view`.
    pub kind: &'static str,
    /// For people.
    pub text: String,
}

/// The last [`RECENT`] events.
#[derive(Debug, Default)]
pub struct Recent {
    ring: Mutex<(u64, VecDeque<EventJson>)>,
}

impl Recent {
    /// Keeps `kind`/`text` as the newest event, dropping the oldest past
    /// [`RECENT`].
    pub fn push(&self, kind: &'static str, text: String, at_ms: u64) {
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.0 += 1;
        let seq = ring.0;
        if ring.1.len() == RECENT {
            ring.1.pop_front();
        }
        ring.1.push_back(EventJson {
            seq,
            at_ms,
            kind,
            text,
        });
    }

    /// The events kept, oldest first.
    pub fn list(&self) -> Vec<EventJson> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.1.iter().cloned().collect()
    }
}

/// An event as the page lists it; `None` for the watch's first snapshot.
fn describe(e: &WatchEvent) -> Option<(&'static str, String)> {
    Some(match e {
        WatchEvent::Current { .. } => return None,
        WatchEvent::Member(MemberChange::Joined(m)) => {
            ("joined", format!("{} joined ({})", m.id, m.addr))
        }
        WatchEvent::Member(MemberChange::Updated(m)) => {
            ("updated", format!("{} updated ({})", m.id, m.addr))
        }
        WatchEvent::Member(MemberChange::Left { id, reason, .. }) => {
            ("left", format!("{id} left ({reason:?})"))
        }
        WatchEvent::LeaderChanged {
            leader: Some(l),
            term,
        } => ("leader", format!("{l} leads, term {term}")),
        WatchEvent::LeaderChanged { leader: None, term } => {
            ("leader", format!("no leader known (last term {term})"))
        }
        WatchEvent::Elected { term } => ("elected", format!("this node was elected, term {term}")),
        WatchEvent::SteppedDown { term, reason } => (
            "stepped-down",
            format!("this node stepped down from term {term}: {reason:?}"),
        ),
        WatchEvent::ViewChanged {
            term,
            version,
            size,
        } => ("view", format!("view {term}.{version}: {size} members")),
        _ => ("other", format!("{e:?}")),
    })
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The page's routes: `/` and `/v1/events`. Starts the task that keeps
/// the recent events; it ends when the node stops.
pub fn routes(node: &Hedgerow) -> Router {
    let recent = Arc::new(Recent::default());
    let mut watch = node.watch();
    let keep = recent.clone();
    tokio::spawn(async move {
        while let Some(e) = watch.next().await {
            if let Some((kind, text)) = describe(&e) {
                keep.push(kind, text, unix_ms());
            }
        }
    });
    Router::new()
        .route("/", get(page))
        .route("/v1/events", get(events))
        .with_state(recent)
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}

async fn events(State(recent): State<Arc<Recent>>) -> Json<Vec<EventJson>> {
    Json(recent.list())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_events_numbered_in_order() {
        let r = Recent::default();
        for i in 0..RECENT + 5 {
            r.push("view", format!("event {i}"), i as u64);
        }
        let list = r.list();
        assert_eq!(list.len(), RECENT);
        assert_eq!(list[0].seq, 6);
        assert_eq!(list[0].text, "event 5");
        assert_eq!(list.last().map(|e| e.seq), Some(RECENT as u64 + 5));
    }

    #[test]
    fn the_page_has_no_external_asset() {
        for needle in ["http://", "https://", "src=\"//", "href=\"//"] {
            assert!(!PAGE.contains(needle), "the page refers to {needle}");
        }
    }
}
