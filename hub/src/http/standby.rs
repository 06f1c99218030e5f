//! The HTTP face of a hub that stands by (`crate::ha`): `/healthz` with its
//! role and the leader; the tasks as last committed, read from the shared
//! store (`GET /api/tasks` a page at a time, `GET /api/tasks/{id}` with the
//! first page of its history), for the admin's or viewer's token; and
//! everything else — writes, `/ws`, the reads that come from the leader's
//! memory — 503 `not_leader` naming the leader. Never writes anything.

use std::sync::Mutex;

use actix_web::{web, HttpRequest, HttpResponse};
use agentcom_protocol::TaskStatus;
use serde::Deserialize;
use serde_json::json;

use crate::http::error::HttpError;
use crate::http::query::{off_thread, one_of};
use crate::store::{Fields, Leader, Store};

/// What a standby serves from.
pub(crate) struct Standby {
    /// The leader as last seen in the lease (`crate::ha` keeps it fresh).
    leader: Mutex<Option<Leader>>,
    store: Store,
    /// The hashes of the tokens that may read (the admin's, the viewer's).
    readers: Vec<String>,
}

impl Standby {
    pub(crate) fn new(store: Store, readers: Vec<String>) -> Standby {
        Standby {
            leader: Mutex::new(None),
            store,
            readers,
        }
    }

    /// The leader is now this (None: the store did not answer).
    pub(crate) fn set_leader(&self, l: Option<Leader>) {
        *self.leader.lock().unwrap_or_else(|e| e.into_inner()) = l;
    }

    /// The leading hub's address, while its lease is live.
    fn leader_url(&self) -> Option<String> {
        self.leader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|l| l.live)
            .and_then(|l| l.url.clone())
    }

    /// 401 unless the request carries a reader's token.
    fn check_reader(&self, req: &HttpRequest) -> Result<(), HttpError> {
        let token = req
            .headers()
            .get("Authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if token.is_some_and(|t| crate::auth::token_in(t, &self.readers)) {
            Ok(())
        } else {
            Err(HttpError::unauthorized(
                "a reader's token is needed (Authorization: Bearer …)",
            ))
        }
    }
}

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/tasks", web::get().to(tasks))
        .route("/api/tasks/{id}", web::get().to(task))
        .default_service(web::to(answer));
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// `GET /api/tasks`: tasks newest first as last committed (their heads:
/// no description, metadata or result), of one status or all, `limit`
/// (1–1000, 100) a page after `cursor`.
async fn tasks(
    req: HttpRequest,
    standby: web::Data<Standby>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, HttpError> {
    standby.check_reader(&req)?;
    let q = q.into_inner();
    let status = one_of(
        "status",
        q.status.as_deref(),
        TaskStatus::parse,
        &TaskStatus::ALL.map(|s| s.as_str()),
    )?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let mut cursor = q.cursor.filter(|c| !c.is_empty());
    let (tasks, next) = off_thread(standby.store.clone(), move |store| {
        // The store indexes finished statuses; live ones are picked from
        // the newest tasks a page at a time.
        let indexed = status.filter(|s| s.is_terminal());
        let mut out = Vec::new();
        loop {
            let (rows, more) =
                store.page(indexed, cursor.as_deref(), limit, Fields::default(), |_| {
                    true
                })?;
            cursor = rows.last().map(|r| r.task.id.clone());
            out.extend(
                rows.into_iter()
                    .map(|r| r.task)
                    .filter(|t| status.is_none_or(|s| t.status == s)),
            );
            if out.len() >= limit || !more {
                let next = if out.len() > limit || more {
                    out.truncate(limit);
                    out.last().map(|t| t.id.clone())
                } else {
                    None
                };
                return Ok((out, next));
            }
        }
    })
    .await?;
    Ok(HttpResponse::Ok()
        .insert_header(("X-AgentCom-Role", "standby"))
        .json(json!({ "tasks": tasks, "next_cursor": next })))
}

/// `GET /api/tasks/{id}`: the task as last committed, with the first
/// page of its history.
async fn task(
    req: HttpRequest,
    standby: web::Data<Standby>,
    id: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    standby.check_reader(&req)?;
    const HISTORY: u32 = 200;
    let id = id.into_inner();
    let wanted = id.clone();
    let found = off_thread(standby.store.clone(), move |store| {
        let Some(t) = store.task(&wanted)? else {
            return Ok(None);
        };
        let to = t.history_len.min(HISTORY);
        let history = store.history(&wanted, 0, to)?;
        Ok(Some((t, history, to)))
    })
    .await?;
    let Some((t, history, to)) = found else {
        return Err(HttpError::not_found(format!("no task {id}")));
    };
    let mut task = t.task;
    task.history = Some(history);
    let mut v = serde_json::to_value(&task).expect("tasks serialise");
    v["history_next_cursor"] = json!((to < t.history_len).then_some(to));
    Ok(HttpResponse::Ok()
        .insert_header(("X-AgentCom-Role", "standby"))
        .json(v))
}

/// `/healthz` with the role; anything else: 503 `not_leader`.
async fn answer(req: HttpRequest, standby: web::Data<Standby>) -> HttpResponse {
    let leader = standby.leader_url();
    if req.path() == "/healthz" {
        return HttpResponse::Ok().json(json!({
            "status": "ok",
            "role": "standby",
            "leader": leader,
        }));
    }
    let message = match &leader {
        Some(url) => format!("this hub stands by; the leader is {url}"),
        None => "this hub stands by and no hub leads right now; try again in a few seconds".into(),
    };
    HttpResponse::ServiceUnavailable()
        .insert_header(("Retry-After", "1"))
        .json(agentcom_protocol::NotLeader::new(message, leader))
}
