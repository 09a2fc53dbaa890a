//! The operators' endpoints, without a token (a scraper and a kubelet carry none; they show counts, never
//! an order or a resident): `GET /metrics` (Prometheus' text format, see [`crate::metrics`]), `GET /healthz`
//! (200 while the process serves and its core is sound: restart it otherwise) and `GET /readyz` (200 only
//! while the core is subscribed to the broker and its store takes writes: send it traffic only then).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::state::Api;

pub fn routes(api: Api) -> Router {
    Router::new().route("/metrics", get(metrics)).route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(api)
}

fn unavailable(why: String) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({ "status": "unavailable", "why": why }))).into_response()
}

async fn metrics(State(api): State<Api>) -> Response {
    let core = match api.lock() {
        Ok(c) => c,
        Err(e) => return unavailable(e.1),
    };
    let fallback = crate::ingest::IngestCounters::default();
    let ingest = api.progress().map_or(&fallback, |p| &p.counters);
    let body = crate::metrics::render(&core, ingest);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}

async fn healthz(State(api): State<Api>) -> Response {
    if let Err(e) = api.lock() {
        return unavailable(e.1);
    }
    if let Some(p) = api.progress()
        && !p.counters.running.load(std::sync::atomic::Ordering::Relaxed)
    {
        return unavailable("the ingest loop has stopped".into());
    }
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

async fn readyz(State(api): State<Api>) -> Response {
    let core = match api.lock() {
        Ok(c) => c,
        Err(e) => return unavailable(e.1),
    };
    let Some(p) = api.progress() else { return unavailable("no ingest: this core takes no broker traffic".into()) };
    match crate::metrics::ready(&core, &p.counters) {
        Ok(()) => axum::Json(serde_json::json!({ "status": "ready" })).into_response(),
        Err(why) => unavailable(why),
    }
}
