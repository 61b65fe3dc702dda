//! How the HTTP control API answers a failed library call: one status code
//! and one machine-readable `kind` per [`Error`], in a JSON body
//! `{"error": "<text>", "kind": "<kind>"}`. The routes of `node` and
//! `coord` share it, and the KV put counter uses the kinds as outcomes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hedgerow::coord::CoordRefusal;
use hedgerow::Error;
use serde_json::json;

/// The status code and kind `e` is answered with.
pub(crate) fn classify(e: &Error) -> (StatusCode, &'static str) {
    match e {
        Error::NoLeader => (StatusCode::SERVICE_UNAVAILABLE, "no_leader"),
        Error::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
        Error::Refused(_) => (StatusCode::BAD_GATEWAY, "refused"),
        Error::Overloaded => (StatusCode::TOO_MANY_REQUESTS, "overloaded"),
        Error::MemberLeft => (StatusCode::GONE, "member_left"),
        Error::Closed => (StatusCode::SERVICE_UNAVAILABLE, "closed"),
        // The library refuses bad input (an empty or oversize key, a limit
        // of 0) before anything is sent: the caller's mistake.
        Error::Coord(CoordRefusal::Invalid(_)) | Error::Config(_) => {
            (StatusCode::BAD_REQUEST, "invalid")
        }
        // Another limit for a semaphore in use: the caller's mistake too.
        Error::Coord(CoordRefusal::LimitConflict { .. }) => (StatusCode::CONFLICT, "refused"),
        Error::Coord(_) => (StatusCode::SERVICE_UNAVAILABLE, "store"),
        Error::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

/// `e` as a response.
pub(crate) fn error_response(e: &Error) -> Response {
    let (status, kind) = classify(e);
    problem(status, kind, &e.to_string())
}

/// A JSON error body of `kind` with `text`.
pub(crate) fn problem(status: StatusCode, kind: &str, text: &str) -> Response {
    (status, Json(json!({ "error": text, "kind": kind }))).into_response()
}
