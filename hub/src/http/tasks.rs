//! `/api/tasks`: create (one, or a batch of up to 1,000 all or none),
//! list, show (with history), cancel, retry.

use std::collections::HashMap;

use actix_web::{web, HttpResponse};
use agentcom_protocol::{
    NewTask, NewTaskBatch, Task, TaskStatus, Timestamp, MAX_BATCH_BODY_BYTES, MAX_BATCH_TASKS,
};
use serde::Deserialize;
use serde_json::json;

use crate::actors::messages::{
    CancelTask, CommandError, CreateTask, CreateTasks, ExplainFacts, RetryTask,
};
use crate::domain::explain;
use crate::domain::queue::Created;
use crate::domain::validate::{self, FieldError};
use crate::http::auth::{Admin, Reader};
use crate::http::error::HttpError;
use crate::http::query::{number, off_thread, one_of};
use crate::http::{body, AppState};
use crate::store::{Fields, StoreError};
use crate::views::TaskReader;

pub(crate) async fn create(
    _: Admin,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, HttpError> {
    let spec: NewTask = body::json(payload, &state).await?;
    check(&spec, &state, Timestamp::now())?;
    Ok(match state.queue.send(CreateTask(spec)).await?? {
        Created::New(task) => HttpResponse::Created().json(task),
        Created::Existing(id) => {
            let (task, _) = read(&state, move |r| r.task(&id, Fields::ALL))
                .await?
                .ok_or_else(|| HttpError::not_found("the task of this idempotency key is gone"))?;
            HttpResponse::Ok().json(task)
        }
    })
}

/// What every create checks of one task before the queue sees it: its
/// fields, its `run_at`, and that its repository is one this hub guards.
fn check(spec: &NewTask, state: &AppState, now: Timestamp) -> Result<(), FieldError> {
    validate::new_task(spec)?;
    if let Some(at) = spec.run_at {
        validate::run_at(at, now)?;
    }
    if let Some(repo) = &spec.repo {
        if !state.settings.repos.iter().any(|r| &r.name == repo) {
            let known: Vec<&str> = state
                .settings
                .repos
                .iter()
                .map(|r| r.name.as_str())
                .collect();
            return Err(FieldError {
                field: "repo".into(),
                message: format!(
                    "{repo:?} is not a repository this hub guards (configured: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            });
        }
    }
    Ok(())
}

/// `POST /api/tasks/batch`: 1 to 1,000 tasks, each checked as `create`
/// checks one, created all together (one group commit) or not at all; the
/// first bad task is named by its index. Answered once every task is
/// durable, in the batch's order, each task as a list shows it.
pub(crate) async fn create_batch(
    _: Admin,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, HttpError> {
    // More than MAX_BATCH_TASKS is refused while the body is read.
    let batch: NewTaskBatch = body::json_large(payload, &state, MAX_BATCH_BODY_BYTES).await?;
    if batch.tasks.is_empty() {
        return Err(HttpError::invalid(format!(
            "tasks: a batch has 1 to {MAX_BATCH_TASKS} tasks, not none"
        )));
    }
    let now = Timestamp::now();
    for (i, spec) in batch.tasks.iter().enumerate() {
        check(spec, &state, now)
            .map_err(|e| HttpError::invalid(format!("tasks[{i}].{}: {}", e.field, e.message)))?;
    }
    let answers = match state.queue.send(CreateTasks(batch.tasks)).await?? {
        Ok(answers) => answers,
        Err((i, refused)) => {
            let e = HttpError::from(CommandError::Refused(refused));
            return Err(HttpError {
                message: format!(
                    "tasks[{i}]: {}; no task of the batch was created",
                    e.message
                ),
                ..e
            });
        }
    };
    // Each answer as a list shows it; a key seen earlier in the batch
    // answers that task, one seen before the batch is read (durable).
    let mut shown_tasks: Vec<Option<serde_json::Value>> = Vec::with_capacity(answers.len());
    let mut new_at: HashMap<String, usize> = HashMap::new();
    let mut before: Vec<(usize, String)> = Vec::new();
    for (i, answer) in answers.into_iter().enumerate() {
        shown_tasks.push(match answer {
            Created::New(task) => {
                new_at.insert(task.id.clone(), i);
                Some(shown(&task, Fields::default()))
            }
            Created::Existing(id) => match new_at.get(&id) {
                Some(&j) => shown_tasks[j].clone(),
                None => {
                    before.push((i, id));
                    None
                }
            },
        });
    }
    let created = new_at.len();
    let existing = shown_tasks.len() - created;
    let found = read(&state, move |r| {
        before
            .into_iter()
            .map(|(i, id)| Ok((i, id.clone(), r.task(&id, Fields::default())?)))
            .collect::<Result<Vec<_>, StoreError>>()
    })
    .await?;
    for (i, id, task) in found {
        let Some((task, _)) = task else {
            return Err(HttpError::not_found(format!(
                "tasks[{i}]: task {id} of its idempotency key is gone (the batch's other tasks were created)"
            )));
        };
        shown_tasks[i] = Some(shown(&task, Fields::default()));
    }
    let body = json!({ "tasks": shown_tasks, "created": created, "existing": existing });
    Ok(if created > 0 {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

/// Run a read of tasks (view and store) off the HTTP thread.
async fn read<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&TaskReader) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, HttpError> {
    let reader = TaskReader {
        view: state.tasks.clone(),
        store: state.store.clone(),
    };
    off_thread(reader, f).await
}

/// `fields=description,metadata,result`: the heavy fields a list includes.
fn parse_fields(fields: Option<&str>) -> Result<Fields, HttpError> {
    let mut out = Fields::default();
    for f in fields
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
    {
        match f {
            "description" | "metadata" => out.description_and_metadata = true,
            "result" => out.result = true,
            other => {
                return Err(HttpError::invalid(format!(
                    "fields: {other:?} is not one of description, metadata, result"
                )))
            }
        }
    }
    Ok(out)
}

/// A task as JSON without the heavy fields that were not asked for.
fn shown(task: &Task, fields: Fields) -> serde_json::Value {
    let mut v = serde_json::to_value(task).expect("tasks serialise");
    if let Some(o) = v.as_object_mut() {
        if !fields.description_and_metadata {
            o.remove("description");
            o.remove("metadata");
        }
        if !fields.result {
            o.remove("result");
        }
    }
    v
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    fields: Option<String>,
}

pub(crate) async fn list(
    _: Reader,
    state: web::Data<AppState>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, HttpError> {
    let status = one_of(
        "status",
        q.status.as_deref(),
        TaskStatus::parse,
        &TaskStatus::ALL.map(|s| s.as_str()),
    )?;
    let limit = number("limit", q.limit.as_deref(), 100usize, 1..=1000)?;
    let fields = parse_fields(q.fields.as_deref())?;
    let cursor = q.cursor.clone().filter(|c| !c.is_empty());
    let (tasks, next_cursor) = read(&state, move |r| {
        r.page(status, limit, cursor.as_deref(), fields)
    })
    .await?;
    let tasks: Vec<serde_json::Value> = tasks.iter().map(|t| shown(t, fields)).collect();
    Ok(HttpResponse::Ok().json(json!({ "tasks": tasks, "next_cursor": next_cursor })))
}

#[derive(Deserialize)]
pub(crate) struct ShowQuery {
    history_limit: Option<String>,
    history_cursor: Option<String>,
}

/// Most history entries one answer carries by default.
const HISTORY_PAGE: u32 = 200;

pub(crate) async fn show(
    _: Reader,
    state: web::Data<AppState>,
    id: web::Path<String>,
    q: web::Query<ShowQuery>,
) -> Result<HttpResponse, HttpError> {
    let limit = number(
        "history_limit",
        q.history_limit.as_deref(),
        HISTORY_PAGE,
        1..=1000,
    )?;
    let from = number(
        "history_cursor",
        q.history_cursor.as_deref(),
        0u32,
        0..=u32::MAX,
    )?;
    let id = id.into_inner();
    let wanted = id.clone();
    let found = read(&state, move |r| {
        let Some((mut task, len)) = r.task(&wanted, Fields::ALL)? else {
            return Ok(None);
        };
        let to = from.saturating_add(limit).min(len);
        task.history = Some(r.store.history(&task.id, from.min(to), to)?);
        Ok(Some((task, (to < len).then_some(to))))
    })
    .await?;
    let Some((task, next)) = found else {
        return Err(HttpError::not_found(format!("no task {id}")));
    };
    let mut v = serde_json::to_value(&task).expect("tasks serialise");
    v["history_next_cursor"] = json!(next);
    Ok(HttpResponse::Ok().json(v))
}

/// `GET /api/tasks/{id}/explain`: why the task is not running, in
/// sentences.
pub(crate) async fn explain(
    _: Reader,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let id = id.into_inner();
    let wanted = id.clone();
    let found = read(&state, move |r| {
        Ok(r.task(&wanted, Fields::ALL)?.map(|(t, _)| t))
    })
    .await?;
    let Some(task) = found else {
        return Err(HttpError::not_found(format!("no task {id}")));
    };
    let facts = state.queue.send(ExplainFacts { id: id.clone() }).await?;
    let agents = state.agents.all();
    let reasons = explain::explain(&task, &facts, &agents, Timestamp::now());
    Ok(HttpResponse::Ok().json(json!({ "id": id, "status": task.status, "reasons": reasons })))
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
