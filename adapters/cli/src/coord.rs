//! The coordination routes of the HTTP control API: the group's KV store
//! (`/v1/kv…`), and locks and semaphores held *by this node* on behalf of
//! HTTP callers (`/v1/locks…`, `/v1/semaphores…`). The node keeps each
//! granted [`Permit`] until a `DELETE` gives it back; a permit that lapsed
//! meanwhile stays listed, `valid: false, lost: true`, so the caller learns
//! of it. Nothing here decides who holds what: the library's leader does,
//! and validity always comes from a fresh [`Permit::is_valid`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use futures::FutureExt as _;
use hedgerow::coord::{KvEntry, Permit};
use hedgerow::{Error, Hedgerow};
use serde_json::{json, Value};

use crate::errors::{error_response, problem};

/// What the coordination routes share.
pub(crate) struct Coord {
    node: Hedgerow,
    held: Mutex<BTreeMap<Key, Held>>,
}

/// A held permit's key: locks and semaphores are apart, and a name may
/// have several (a semaphore's permits, or a lapsed lock still listed next
/// to its new grant); the token tells them apart, as it rises with every
/// grant of a name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    kind: Kind,
    name: String,
    token: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Lock,
    Semaphore,
}

struct Held {
    permit: Permit,
    limit: u32,
}

impl Coord {
    pub(crate) fn new(node: Hedgerow) -> Coord {
        Coord {
            node,
            held: Mutex::new(BTreeMap::new()),
        }
    }

    fn held<T>(&self, f: impl FnOnce(&mut BTreeMap<Key, Held>) -> T) -> T {
        f(&mut self.held.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The routes, on `state`.
pub(crate) fn routes(state: Arc<Coord>) -> Router {
    Router::new()
        .route("/v1/kv", get(kv_list))
        // An empty key reaches the library, which says why it is refused.
        .route("/v1/kv/", get(kv_get_empty).put(kv_put_empty))
        .route("/v1/kv/{key}", get(kv_get).put(kv_put))
        .route("/v1/kv/{key}/history", get(kv_history))
        .route("/v1/locks", get(locks_list))
        .route("/v1/locks/", post(lock_acquire_empty))
        .route("/v1/locks/{name}", post(lock_acquire).delete(lock_release))
        .route("/v1/semaphores", get(semaphores_list))
        .route("/v1/semaphores/{name}", post(semaphore_acquire))
        .route(
            "/v1/semaphores/{name}/{permit}",
            axum::routing::delete(semaphore_release),
        )
        .with_state(state)
}

/// The value of `name` in a query string, percent-decoded (`+` is taken
/// literally: clients encode it as `%2B`). The error says what is wrong.
fn query_param(query: Option<&str>, name: &str) -> Result<Option<String>, String> {
    let Some(query) = query else {
        return Ok(None);
    };
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            return percent_encoding::percent_decode_str(v)
                .decode_utf8()
                .map(|v| Some(v.into_owned()))
                .map_err(|_| format!("?{name}= is not UTF-8 once decoded"));
        }
    }
    Ok(None)
}

/// `?name=N` as a number, if given.
fn query_number(query: Option<&str>, name: &str) -> Result<Option<u64>, String> {
    query_param(query, name)?
        .map(|v| {
            v.parse()
                .map_err(|_| format!("?{name}={v}: expected a whole number"))
        })
        .transpose()
}

fn invalid(text: &str) -> Response {
    problem(StatusCode::BAD_REQUEST, "invalid", text)
}

fn not_found(text: &str) -> Response {
    problem(StatusCode::NOT_FOUND, "not_found", text)
}

/// One revision as JSON: the value as UTF-8 text when it is valid UTF-8,
/// else as base64, and `encoding` says which.
fn entry_json(e: &KvEntry) -> Value {
    let (value, encoding) = match std::str::from_utf8(&e.value) {
        Ok(text) => (text.to_owned(), "utf8"),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(&e.value),
            "base64",
        ),
    };
    json!({
        "key": e.key,
        "revision": e.revision,
        "value": value,
        "encoding": encoding,
        "term": e.term.0,
        "written_by": e.written_by.to_string(),
    })
}

async fn kv_get(
    State(c): State<Arc<Coord>>,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    get_one(&c, &key, query.as_deref()).await
}

async fn kv_get_empty(State(c): State<Arc<Coord>>, RawQuery(query): RawQuery) -> Response {
    get_one(&c, "", query.as_deref()).await
}

async fn get_one(c: &Coord, key: &str, query: Option<&str>) -> Response {
    if key.is_empty() {
        return invalid("the key is empty: keys are 1 to 512 bytes");
    }
    let rev = match query_number(query, "rev") {
        Ok(rev) => rev,
        Err(why) => return invalid(&why),
    };
    let kv = c.node.kv();
    let found = match rev {
        Some(rev) => kv.get_at(key, rev).await,
        None => kv.get(key).await,
    };
    match found {
        Ok(Some(e)) => Json(entry_json(&e)).into_response(),
        Ok(None) => match rev {
            Some(rev) => not_found(&format!("no revision {rev} of key {key:?}")),
            None => not_found(&format!("no key {key:?}")),
        },
        Err(e) => error_response(&e),
    }
}

async fn kv_put(State(c): State<Arc<Coord>>, Path(key): Path<String>, body: Bytes) -> Response {
    put_one(&c, &key, body).await
}

async fn kv_put_empty(State(c): State<Arc<Coord>>, body: Bytes) -> Response {
    put_one(&c, "", body).await
}

async fn put_one(c: &Coord, key: &str, body: Bytes) -> Response {
    // The library counts the put (`hedgerow_kv_puts_total`).
    match c.node.kv().put(key, body.to_vec()).await {
        Ok(revision) => Json(json!({ "key": key, "revision": revision })).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn kv_list(State(c): State<Arc<Coord>>, RawQuery(query): RawQuery) -> Response {
    let prefix = match query_param(query.as_deref(), "prefix") {
        Ok(p) => p.unwrap_or_default(),
        Err(why) => return invalid(&why),
    };
    match c.node.kv().list(&prefix).await {
        Ok(entries) => {
            let entries: Vec<Value> = entries.iter().map(entry_json).collect();
            Json(json!({ "prefix": prefix, "entries": entries })).into_response()
        }
        Err(e) => error_response(&e),
    }
}

async fn kv_history(State(c): State<Arc<Coord>>, Path(key): Path<String>) -> Response {
    match c.node.kv().history(&key).await {
        Ok(revisions) if revisions.is_empty() => not_found(&format!("no key {key:?}")),
        Ok(revisions) => {
            let revisions: Vec<Value> = revisions.iter().map(entry_json).collect();
            Json(json!({ "key": key, "revisions": revisions })).into_response()
        }
        Err(e) => error_response(&e),
    }
}

/// Asks for a permit of `name` (limit `limit`), waiting up to `?wait_ms=`
/// (0, the default: only if one is free now), and keeps it.
async fn acquire(c: &Coord, kind: Kind, name: &str, limit: u32, query: Option<&str>) -> Response {
    let wait_ms = match query_number(query, "wait_ms") {
        Ok(n) => n.unwrap_or(0),
        Err(why) => return invalid(&why),
    };
    let semaphore = c.node.semaphore(name, limit);
    let granted = if wait_ms == 0 {
        semaphore.try_acquire().await
    } else {
        match semaphore
            .acquire_timeout(Duration::from_millis(wait_ms))
            .await
        {
            Ok(p) => Ok(Some(p)),
            Err(Error::Timeout) => Ok(None),
            Err(e) => Err(e),
        }
    };
    let permit = match granted {
        Ok(Some(p)) => p,
        Ok(None) => {
            let what = match kind {
                Kind::Lock => format!("lock {name:?} is held"),
                Kind::Semaphore => format!("all {limit} permits of semaphore {name:?} are held"),
            };
            let waited = if wait_ms == 0 {
                String::new()
            } else {
                format!(" (waited {wait_ms} ms)")
            };
            return problem(StatusCode::CONFLICT, "busy", &format!("{what}{waited}"));
        }
        Err(e) => return error_response(&e),
    };
    let held = Held { permit, limit };
    let body = held_json(kind, name, &held);
    let key = Key {
        kind,
        name: name.to_owned(),
        token: held.permit.token(),
    };
    c.held(|h| h.insert(key, held));
    Json(body).into_response()
}

/// A held permit as JSON; `valid` from a fresh reading, `lost` once the
/// permit's lost signal fired.
fn held_json(kind: Kind, name: &str, held: &Held) -> Value {
    let p = &held.permit;
    let lost = p.lost().now_or_never().is_some();
    let mut v = json!({
        "name": name,
        "token": p.token(),
        "valid_until_ns": p.valid_until(),
        "valid": p.is_valid(),
        "lost": lost,
    });
    if kind == Kind::Semaphore {
        v["permit"] = p.token().into();
        v["limit"] = held.limit.into();
    }
    v
}

fn list(c: &Coord, kind: Kind) -> Response {
    let entries: Vec<Value> = c.held(|h| {
        h.iter()
            .filter(|(k, _)| k.kind == kind)
            .map(|(k, held)| held_json(kind, &k.name, held))
            .collect()
    });
    let field = match kind {
        Kind::Lock => "locks",
        Kind::Semaphore => "permits",
    };
    Json(json!({ field: entries })).into_response()
}

async fn lock_acquire(
    State(c): State<Arc<Coord>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    acquire(&c, Kind::Lock, &name, 1, query.as_deref()).await
}

async fn lock_acquire_empty(State(c): State<Arc<Coord>>, RawQuery(query): RawQuery) -> Response {
    acquire(&c, Kind::Lock, "", 1, query.as_deref()).await
}

/// Gives back every permit this node holds of lock `name` (one, or a
/// lapsed one next to a newer grant).
async fn lock_release(State(c): State<Arc<Coord>>, Path(name): Path<String>) -> Response {
    let released: Vec<Held> = c.held(|h| {
        let keys: Vec<Key> = h
            .keys()
            .filter(|k| k.kind == Kind::Lock && k.name == name)
            .cloned()
            .collect();
        keys.iter().filter_map(|k| h.remove(k)).collect()
    });
    if released.is_empty() {
        return not_found(&format!("this node holds no lock {name:?}"));
    }
    let tokens: Vec<u64> = released.iter().map(|h| h.permit.token()).collect();
    for held in released {
        held.permit.release();
    }
    Json(json!({ "name": name, "released": tokens })).into_response()
}

async fn locks_list(State(c): State<Arc<Coord>>) -> Response {
    list(&c, Kind::Lock)
}

async fn semaphores_list(State(c): State<Arc<Coord>>) -> Response {
    list(&c, Kind::Semaphore)
}

async fn semaphore_acquire(
    State(c): State<Arc<Coord>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let limit = match query_number(query.as_deref(), "limit") {
        Ok(Some(n)) => n,
        Ok(None) => return invalid("?limit=N is required: the semaphore's number of permits"),
        Err(why) => return invalid(&why),
    };
    let Ok(limit) = u32::try_from(limit) else {
        return invalid(&format!("?limit={limit}: at most {}", u32::MAX));
    };
    acquire(&c, Kind::Semaphore, &name, limit, query.as_deref()).await
}

async fn semaphore_release(
    State(c): State<Arc<Coord>>,
    Path((name, permit)): Path<(String, String)>,
) -> Response {
    let Ok(token) = permit.parse::<u64>() else {
        return invalid(&format!(
            "permit {permit:?}: expected the number POST returned"
        ));
    };
    let key = Key {
        kind: Kind::Semaphore,
        name: name.clone(),
        token,
    };
    match c.held(|h| h.remove(&key)) {
        Some(held) => {
            held.permit.release();
            Json(json!({ "name": name, "released": [token] })).into_response()
        }
        None => not_found(&format!(
            "this node holds no permit {token} of semaphore {name:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_decoded_and_bad_numbers_refused() {
        let q = Some("prefix=cfg%2Fa%2Bb&rev=7&x");
        assert_eq!(
            query_param(q, "prefix").unwrap().as_deref(),
            Some("cfg/a+b")
        );
        assert_eq!(query_number(q, "rev").unwrap(), Some(7));
        assert_eq!(query_number(q, "wait_ms").unwrap(), None);
        assert_eq!(query_param(q, "x").unwrap().as_deref(), Some(""));
        let bad = query_number(Some("rev=-1"), "rev").unwrap_err();
        assert!(bad.contains("whole number"), "{bad}");
        assert!(query_param(Some("prefix=%FF"), "prefix").is_err());
    }

    #[test]
    fn values_are_text_when_utf8_and_base64_otherwise() {
        let mut e = KvEntry {
            key: "k".into(),
            revision: 3,
            value: "grün".as_bytes().to_vec().into(),
            term: hedgerow::Term(2),
            written_by: hedgerow::NodeId::new("n1").unwrap(),
        };
        let v = entry_json(&e);
        assert_eq!(
            (v["value"].as_str(), v["encoding"].as_str()),
            (Some("grün"), Some("utf8"))
        );
        assert_eq!(v["written_by"], "n1");
        e.value = vec![0xff, 0x00, 0x41].into();
        let v = entry_json(&e);
        assert_eq!(
            (v["value"].as_str(), v["encoding"].as_str()),
            (Some("/wBB"), Some("base64"))
        );
    }
}
