//! `/api/changes` (list, show with history, approve, reject), `/api/repos`
//! and `/api/alerts`: the merge pipeline as people see and steer it.

use actix_web::{web, HttpResponse};
use agentcom_protocol::{ChangeList, ChangeStatus};
use serde::Deserialize;
use serde_json::json;

use crate::actors::messages::{ApproveChange, RejectChange};
use crate::domain::limits::MAX_REASON_BYTES;
use crate::http::auth::{Admin, Reader};
use crate::http::error::HttpError;
use crate::http::query::{number, off_thread, one_of};
use crate::http::{body, AppState};
use crate::store::StoreError;
use crate::views::ChangeReader;

/// Most history entries a change's answer carries (a change has a few
/// dozen at most: each is a move between statuses or a check run).
const HISTORY_MAX: u32 = 1000;

/// Run a read of changes (view and store) off the HTTP thread.
async fn read<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&ChangeReader) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, HttpError> {
    let reader = ChangeReader {
        view: state.changes.clone(),
        store: state.store.clone(),
    };
    off_thread(reader, f).await
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    status: Option<String>,
    repo: Option<String>,
    limit: Option<String>,
}

pub(crate) async fn list(
    _: Reader,
    state: web::Data<AppState>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, HttpError> {
    let status = one_of(
        "status",
        q.status.as_deref(),
        ChangeStatus::parse,
        &ChangeStatus::ALL.map(|s| s.as_str()),
    )?;
    let repo = q.repo.clone().filter(|r| !r.is_empty());
    if let Some(r) = &repo {
        if !state.settings.repos.iter().any(|c| &c.name == r) {
            return Err(HttpError::invalid(format!(
                "repo: {r:?} is not a repository this hub guards"
            )));
        }
    }
    let limit = number("limit", q.limit.as_deref(), 100usize, 1..=1000)?;
    let changes = read(&state, move |r| r.list(status, repo.as_deref(), limit)).await?;
    Ok(HttpResponse::Ok().json(ChangeList { changes }))
}

pub(crate) async fn show(
    _: Reader,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let id = id.into_inner();
    let wanted = id.clone();
    let found = read(&state, move |r| {
        let Some((mut change, len)) = r.change(&wanted)? else {
            return Ok(None);
        };
        // Only as far as is durable; the newest entries if there are many.
        let from = len.saturating_sub(HISTORY_MAX);
        change.history = Some(r.store.change_history(&change.id, from, len)?);
        Ok(Some(change))
    })
    .await?;
    match found {
        Some(change) => Ok(HttpResponse::Ok().json(change)),
        None => Err(HttpError::not_found(format!("no change {id}"))),
    }
}

/// An escalated change (or one a reviewer holds) goes to the merge queue.
pub(crate) async fn approve(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let id = id.into_inner();
    state.queue.send(ApproveChange { id: id.clone() }).await??;
    shown(&state, id).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    reason: String,
    #[serde(default)]
    requeue: bool,
}

/// A person says no: `rejected`, the task queued again or dead.
pub(crate) async fn reject(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, HttpError> {
    let b: RejectBody = body::json(payload, &state).await?;
    let reason = b.reason.trim();
    if reason.is_empty() || reason.len() > MAX_REASON_BYTES {
        return Err(HttpError::invalid(format!(
            "reason: must be 1 to {MAX_REASON_BYTES} bytes (the agent that does the task again reads it)"
        )));
    }
    let id = id.into_inner();
    state
        .queue
        .send(RejectChange {
            id: id.clone(),
            reason: reason.to_string(),
            requeue: b.requeue,
        })
        .await??;
    shown(&state, id).await
}

/// The change as it is now durable, after a command.
async fn shown(state: &AppState, id: String) -> Result<HttpResponse, HttpError> {
    let wanted = id.clone();
    match read(state, move |r| r.change(&wanted)).await? {
        Some((change, _)) => Ok(HttpResponse::Ok().json(change)),
        None => Err(HttpError::not_found(format!("no change {id}"))),
    }
}

/// The repositories the hub guards: main's commit and health, whether
/// merges are paused, the merge queue.
pub(crate) async fn repos(
    _: Reader,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    Ok(HttpResponse::Ok().json(json!({ "repos": state.repos.all() })))
}

#[derive(Deserialize)]
pub(crate) struct AlertsQuery {
    limit: Option<String>,
}

/// Recent alerts, newest first (since the hub started).
pub(crate) async fn alerts(
    _: Reader,
    state: web::Data<AppState>,
    q: web::Query<AlertsQuery>,
) -> Result<HttpResponse, HttpError> {
    let limit = number("limit", q.limit.as_deref(), 100usize, 1..=1000)?;
    Ok(HttpResponse::Ok().json(json!({ "alerts": state.alerts.recent(limit) })))
}
