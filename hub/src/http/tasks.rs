//! `/api/tasks`: create, list, show (with history), cancel, retry.

use actix_web::{web, HttpResponse};
use agentcom_protocol::{NewTask, TaskPage, TaskStatus};
use serde::Deserialize;

use crate::actors::messages::{CancelTask, CreateTask, RetryTask};
use crate::domain::queue::Created;
use crate::domain::validate;
use crate::http::auth::{Admin, Reader};
use crate::http::error::HttpError;
use crate::http::{body, AppState};

pub(crate) async fn create(
    _: Admin,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, HttpError> {
    let spec: NewTask = body::json(payload).await?;
    validate::new_task(&spec)?;
    Ok(match state.queue.send(CreateTask(spec)).await?? {
        Created::New(task) => HttpResponse::Created().json(task),
        Created::Existing(task) => HttpResponse::Ok().json(task),
    })
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

pub(crate) async fn list(
    _: Reader,
    state: web::Data<AppState>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, HttpError> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(TaskStatus::parse(s).ok_or_else(|| {
            HttpError::invalid(format!(
                "status: {s:?} is not one of {}",
                TaskStatus::ALL.map(|s| s.as_str()).join(", ")
            ))
        })?),
    };
    let limit = match q.limit.as_deref() {
        None | Some("") => 100,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return Err(HttpError::invalid(format!(
                    "limit: {l:?} must be a number from 1 to 1000"
                )))
            }
        },
    };
    let (tasks, next_cursor) =
        state
            .tasks
            .page(status, limit, q.cursor.as_deref().filter(|c| !c.is_empty()));
    Ok(HttpResponse::Ok().json(TaskPage {
        tasks: tasks.iter().map(|t| (**t).clone()).collect(),
        next_cursor,
    }))
}

pub(crate) async fn show(
    _: Reader,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let Some((task, history_len)) = state.tasks.get_with_history_len(&id) else {
        return Err(HttpError::not_found(format!("no task {id}")));
    };
    let store = state.store.clone();
    let task_id = task.id.clone();
    let history = web::block(move || store.history(&task_id, history_len))
        .await
        .map_err(|e| HttpError::unavailable(e.to_string()))?
        .map_err(|e| HttpError::unavailable(e.to_string()))?;
    let mut task = (*task).clone();
    task.history = Some(history);
    Ok(HttpResponse::Ok().json(task))
}

pub(crate) async fn cancel(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let task = state
        .queue
        .send(CancelTask {
            id: id.into_inner(),
            reason: "cancelled by operator".into(),
        })
        .await??;
    Ok(HttpResponse::Ok().json(task))
}

pub(crate) async fn retry(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let task = state
        .queue
        .send(RetryTask {
            id: id.into_inner(),
        })
        .await??;
    Ok(HttpResponse::Ok().json(task))
}
