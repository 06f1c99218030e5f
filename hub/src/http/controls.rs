//! Operator controls: pause (drain) and resume an agent or a priority
//! lane. Admin only; each answers once the new setting is durable, and
//! repeating one is harmless.

use actix_web::{web, HttpResponse};
use agentcom_protocol::Priority;
use serde_json::json;

use crate::actors::messages::{PauseAgent, PauseLane};
use crate::http::auth::Admin;
use crate::http::error::HttpError;
use crate::http::AppState;

async fn agent(state: &AppState, id: String, paused: bool) -> Result<HttpResponse, HttpError> {
    state
        .registry
        .send(PauseAgent {
            id: id.clone(),
            paused,
        })
        .await??;
    Ok(HttpResponse::Ok().json(json!({ "id": id, "paused": paused })))
}

pub(crate) async fn pause_agent(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    agent(&state, id.into_inner(), true).await
}

pub(crate) async fn resume_agent(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    agent(&state, id.into_inner(), false).await
}

async fn lane(state: &AppState, name: &str, paused: bool) -> Result<HttpResponse, HttpError> {
    let priority = Priority::parse(name).ok_or_else(|| {
        HttpError::invalid(format!(
            "no priority {name:?}: one of urgent, high, normal, low"
        ))
    })?;
    state.queue.send(PauseLane { priority, paused }).await??;
    let paused_lanes: Vec<&str> = state
        .tasks
        .paused_lanes()
        .iter()
        .map(|p| p.as_str())
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "priority": priority.as_str(),
        "paused": paused,
        "paused_lanes": paused_lanes,
    })))
}

pub(crate) async fn pause_lane(
    _: Admin,
    state: web::Data<AppState>,
    priority: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    lane(&state, &priority, true).await
}

pub(crate) async fn resume_lane(
    _: Admin,
    state: web::Data<AppState>,
    priority: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    lane(&state, &priority, false).await
}
