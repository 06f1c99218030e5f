//! `/api/state` (one snapshot, from memory only), `/metrics`, `/healthz`, and the JSON
//! 404 for unknown routes.

use std::collections::BTreeMap;

use actix_web::{web, HttpRequest, HttpResponse};
use agentcom_protocol::Timestamp;
use serde_json::json;

use crate::domain::lanes::{lane_name, LANE_COUNT};
use crate::http::auth::Reader;
use crate::http::error::HttpError;
use crate::http::AppState;

/// How many minutes of throughput the snapshot lists.
const THROUGHPUT_MINUTES: usize = 15;

pub(crate) async fn state(
    _: Reader,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    Ok(HttpResponse::Ok().json(snapshot(&state)))
}

/// The whole-hub snapshot: built from views and counters, never the store.
pub(crate) fn snapshot(state: &AppState) -> serde_json::Value {
    let now = Timestamp::now();
    let counts = state.tasks.counts();
    let lanes: BTreeMap<String, usize> = (0..LANE_COUNT)
        .map(|i| (lane_name(i), counts.lane_depth[i]))
        .collect();
    let by_status: BTreeMap<&str, usize> = counts
        .by_status
        .iter()
        .map(|(s, n)| (s.as_str(), *n))
        .collect();
    let agents: BTreeMap<&str, usize> = state
        .agents
        .counts()
        .iter()
        .map(|(s, n)| (s.as_str(), *n))
        .collect();
    // Changes per status (finished ones included): the dashboard's
    // `in_review` → `merged` stages.
    let changes: BTreeMap<&str, usize> = state
        .changes
        .counts()
        .into_iter()
        .map(|(s, n)| (s.as_str(), n))
        .collect();
    let paused_lanes: Vec<&str> = state
        .tasks
        .paused_lanes()
        .iter()
        .map(|p| p.as_str())
        .collect();
    let per_minute = state.stats.completions_per_minute(now, THROUGHPUT_MINUTES);
    let (connections, max_connections) = state.connections.open_and_limit();
    json!({
        "at": now,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": now.millis_since(state.started_at) / 1000,
        "queue": {
            "depth": lanes,
            "queued": counts.lane_depth.iter().sum::<usize>(),
            "retry_waiting": by_status.get("failed").copied().unwrap_or(0),
            "oldest_queued_at": counts.oldest_queued_at,
            "oldest_queued_age_s": counts.oldest_queued_at.map(|t| now.millis_since(t) as f64 / 1000.0),
        },
        "paused_lanes": paused_lanes,
        "usage": state.tasks.usage(now),
        "tasks": by_status,
        "tasks_total": counts.total,
        "changes": changes,
        "agents": agents,
        "connected_sidecars": state.agents.connected(),
        "assignment_latency_ms": state.stats.latency_percentiles(),
        "throughput": {
            "completed_last_minute": per_minute.first().copied().unwrap_or(0),
            "completed_per_minute": per_minute,
        },
        "stale_messages": state.stats.stale_count(),
        "store": { "syncs": state.stats.store_syncs.get(), "writes": state.stats.store_writes.get() },
        "events": { "next_id": state.events.next_id(), "subscribers": state.events.subscribers() },
        "http": {
            "connections": connections,
            "max_connections": max_connections,
            "refused_connections": state.stats.http_refused.get(),
        },
    })
}

pub(crate) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let text = crate::metrics::render(crate::metrics::Sources {
        stats: &state.stats,
        tasks: &state.tasks,
        changes: &state.changes,
        repos: &state.repos,
        agents: &state.agents,
        events: &state.events,
    });
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(text)
}

pub(crate) async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let store = state.store.clone();
    match web::block(move || store.ping()).await {
        // The whole hub serves only while it leads; a standby answers
        // from `ha`.
        Ok(Ok(())) => HttpResponse::Ok().json(json!({
            "status": "ok",
            "role": "leader",
            "term": state.term,
        })),
        Ok(Err(e)) => HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "store failing", "error": e.to_string() })),
        Err(e) => HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "unavailable", "error": e.to_string() })),
    }
}

pub(crate) async fn not_found(req: HttpRequest) -> Result<HttpResponse, HttpError> {
    Err(HttpError::not_found(format!(
        "no route {} {}",
        req.method(),
        req.path()
    )))
}
