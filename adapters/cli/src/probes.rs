//! The probe routes a supervisor (Kubernetes, a load balancer) asks:
//! `GET /v1/live` (the node's driver runs) and `GET /v1/ready` (the node
//! has joined a live leader's view, or leads). They answer from the
//! library's [`Hedgerow::status`]; this room decides nothing, it only
//! turns the library's answer into a status code and a JSON body. They
//! carry no secrets and stay outside any authentication layer, so a
//! kubelet can ask them without a token.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hedgerow::Hedgerow;
use serde_json::json;

/// The paths this room serves, for a layer that must leave them open.
pub(crate) const PROBE_PATHS: [&str; 2] = ["/v1/live", "/v1/ready"];

/// `/v1/live` and `/v1/ready` for `node`.
pub(crate) fn routes(node: Hedgerow) -> Router {
    Router::new()
        .route(PROBE_PATHS[0], get(live))
        .route(PROBE_PATHS[1], get(ready))
        .with_state(Arc::new(node))
}

/// 200 while the driver runs; 503 once it stopped (the process is about
/// to exit, or something ended the driver: restart it).
async fn live(State(node): State<Arc<Hedgerow>>) -> Response {
    if node.is_running() {
        (StatusCode::OK, Json(json!({ "live": true }))).into_response()
    } else {
        let reason = "the node's driver stopped";
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "live": false, "reason": reason })),
        )
            .into_response()
    }
}

/// 200 once the node is in a live leader's view (or leads); 503 with the
/// library's reason otherwise.
async fn ready(State(node): State<Arc<Hedgerow>>) -> Response {
    let status = node.status();
    let leader = status.leader.as_ref().map(|l| l.id.to_string());
    if status.is_ready() {
        let body = json!({ "ready": true, "leader": leader, "is_leader": status.is_leader });
        return (StatusCode::OK, Json(body)).into_response();
    }
    let reason = match status.not_ready {
        Some(why) => why.to_string(),
        None => "the node's driver stopped".to_owned(),
    };
    let body = json!({ "ready": false, "reason": reason, "leader": leader });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}
