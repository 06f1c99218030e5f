//! Several hubs on one PostgreSQL store (issue 13): a hub that does not
//! lead stands by — a small server on the hub's own listener answers
//! `/healthz` with its role and the leader, and everything else (`/ws`,
//! writes, reads) with 503 `not_leader` naming the leader's address —
//! while it asks for the lease every `poll_ms`; once it holds the lease it
//! stops standing by and the caller starts the whole hub. The leader
//! renews its lease every `renew_ms` and, when deposed or when its lease
//! may have lapsed, exits at once (status 75) so that its supervisor
//! starts it again as a standby: its sidecars reconnect to the new
//! leader, and any write it still tried is refused by the store's fence.
//!
//! The timing and when to step down are `domain::lease`'s; the lease is
//! the store's. Never decides anything about tasks or agents.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::json;

use crate::domain::lease::{after_renewal, LeaseTiming, Next, Renewal};
use crate::store::{Leader, Store};

/// This hub, as the lease names it.
#[derive(Clone, Debug)]
pub(crate) struct Me {
    /// Made once per data dir (`hub.id`), so a hub restarted after a crash
    /// is the same holder.
    pub id: String,
    /// What clients should use to reach it (`ha.advertise_url`).
    pub url: String,
}

/// This hub's id: `<data_dir>/hub.id`, made (random) on its first start.
pub(crate) fn hub_id(data_dir: &std::path::Path) -> Result<String, String> {
    let path = data_dir.join("hub.id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        _ => {
            let id = format!("hub-{}", hex::encode(rand::random::<[u8; 8]>()));
            std::fs::write(&path, &id)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(id)
        }
    }
}

/// What the standby knows of the leader, for its answers.
#[derive(Clone, Default)]
struct Known(Arc<Mutex<Option<Leader>>>);

/// What the standby serves from.
struct Standby {
    known: Known,
    store: Store,
    /// The hashes of the tokens that may read (the admin's, the viewer's).
    readers: Vec<String>,
}

impl Known {
    fn set(&self, l: Option<Leader>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = l;
    }

    /// The leading hub's address, while its lease is live.
    fn leader_url(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|l| l.live)
            .and_then(|l| l.url.clone())
    }
}

/// Stand by on `listener` until this hub leads (its term), or until
/// `stop` ends (None).
pub(crate) async fn stand_by(
    settings: &crate::config::Settings,
    store: &Store,
    me: &Me,
    timing: LeaseTiming,
    listener: &TcpListener,
    tls: Option<agentcom_tls::ServerConfig>,
    stop: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> Result<Option<i64>, String> {
    let first = {
        let (store, me) = (store.clone(), me.clone());
        web::block(move || store.try_lead(&me.id, Some(&me.url), timing.lease_ms))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    if let Some(term) = first {
        return Ok(Some(term));
    }
    let known = Known::default();
    let readers = {
        let (store, settings) = (store.clone(), settings.clone());
        web::block(move || crate::auth::reader_hashes(&settings, &store))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    let state = web::Data::new(Standby {
        known: known.clone(),
        store: store.clone(),
        readers,
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/api/tasks", web::get().to(standby_tasks))
            .route("/api/tasks/{id}", web::get().to(standby_task))
            .default_service(web::to(standby_answer))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1);
    let own = listener
        .try_clone()
        .map_err(|e| format!("cannot share the listening socket: {e}"))?;
    let server = match tls {
        Some(config) => server.listen_rustls_0_23(own, config),
        None => server.listen(own),
    }
    .map_err(|e| format!("cannot serve as a standby: {e}"))?
    .run();
    let handle = server.handle();
    let serving = actix_rt::spawn(server);
    tracing::info!(hub = %me.id, "standing by: another hub leads; this one takes over when its lease lapses");
    let outcome = loop {
        let asked = {
            let (store, me) = (store.clone(), me.clone());
            web::block(move || {
                let term = store.try_lead(&me.id, Some(&me.url), timing.lease_ms)?;
                let leader = store.leader()?;
                Ok::<_, crate::store::StoreError>((term, leader))
            })
            .await
        };
        match asked {
            Ok(Ok((Some(term), _))) => break Some(term),
            Ok(Ok((None, leader))) => known.set(leader),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "standing by: the store did not answer");
                known.set(None);
            }
            Err(e) => tracing::warn!(error = %e, "standing by: the lease check failed"),
        }
        tokio::select! {
            _ = &mut *stop => break None,
            _ = actix_rt::time::sleep(Duration::from_millis(timing.poll_ms as u64)) => {}
        }
    };
    handle.stop(false).await;
    let _ = serving.await;
    Ok(outcome)
}

impl Standby {
    /// 401 unless the request carries a reader's token.
    fn refuse(&self, req: &HttpRequest) -> Option<HttpResponse> {
        let token = req
            .headers()
            .get("Authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if token.is_some_and(|t| crate::auth::token_in(t, &self.readers)) {
            return None;
        }
        Some(HttpResponse::Unauthorized().json(json!({
            "error": { "code": "unauthorized", "message": "a reader's token is needed (Authorization: Bearer …)" }
        })))
    }
}

/// `GET /api/tasks` on a standby.
#[derive(serde::Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// `GET /api/tasks` on a standby: tasks newest first as last committed,
/// from the shared store (their heads: no description, metadata or
/// result), of one status or all, `limit` (1–1000, 100) a page after
/// `cursor`.
async fn standby_tasks(
    req: HttpRequest,
    standby: web::Data<Standby>,
    q: web::Query<ListQuery>,
) -> HttpResponse {
    use agentcom_protocol::TaskStatus;
    if let Some(refused) = standby.refuse(&req) {
        return refused;
    }
    let q = q.into_inner();
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match TaskStatus::parse(s) {
            Some(s) => Some(s),
            None => {
                return HttpResponse::UnprocessableEntity().json(json!({
                    "error": { "code": "invalid", "message": format!("status: {s:?} is not a task status") }
                }))
            }
        },
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let store = standby.store.clone();
    let mut cursor = q.cursor.filter(|c| !c.is_empty());
    let read = web::block(move || {
        // The store indexes finished statuses; live ones are picked from
        // the newest tasks a page at a time.
        let indexed = status.filter(|s| s.is_terminal());
        let mut out = Vec::new();
        loop {
            let (rows, more) = store.page(
                indexed,
                cursor.as_deref(),
                limit,
                crate::store::Fields::default(),
                |_| true,
            )?;
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
                return Ok::<_, crate::store::StoreError>((out, next));
            }
        }
    })
    .await;
    match read {
        Ok(Ok((tasks, next))) => HttpResponse::Ok()
            .insert_header(("X-AgentCom-Role", "standby"))
            .json(json!({ "tasks": tasks, "next_cursor": next })),
        Ok(Err(e)) => HttpResponse::ServiceUnavailable().json(json!({
            "error": { "code": "unavailable", "message": e.to_string() }
        })),
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({
            "error": { "code": "unavailable", "message": e.to_string() }
        })),
    }
}

/// `GET /api/tasks/{id}` on a standby: the task as last committed, read
/// from the shared store (with the first page of its history), for the
/// admin or viewer token.
async fn standby_task(
    req: HttpRequest,
    standby: web::Data<Standby>,
    id: web::Path<String>,
) -> HttpResponse {
    if let Some(refused) = standby.refuse(&req) {
        return refused;
    }
    const HISTORY: u32 = 200;
    let store = standby.store.clone();
    let id = id.into_inner();
    let wanted = id.clone();
    let read = web::block(move || {
        let Some(t) = store.task(&wanted)? else {
            return Ok(None);
        };
        let to = t.history_len.min(HISTORY);
        let history = store.history(&wanted, 0, to)?;
        Ok::<_, crate::store::StoreError>(Some((t, history, to)))
    })
    .await;
    match read {
        Ok(Ok(Some((t, history, to)))) => {
            let mut task = t.task;
            task.history = Some(history);
            let mut v = serde_json::to_value(&task).unwrap_or_default();
            v["history_next_cursor"] = json!((to < t.history_len).then_some(to));
            HttpResponse::Ok()
                .insert_header(("X-AgentCom-Role", "standby"))
                .json(v)
        }
        Ok(Ok(None)) => HttpResponse::NotFound().json(json!({
            "error": { "code": "not_found", "message": format!("no task {id}") }
        })),
        Ok(Err(e)) => HttpResponse::ServiceUnavailable().json(json!({
            "error": { "code": "unavailable", "message": e.to_string() }
        })),
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({
            "error": { "code": "unavailable", "message": e.to_string() }
        })),
    }
}

async fn standby_answer(req: HttpRequest, standby: web::Data<Standby>) -> HttpResponse {
    let leader = standby.known.leader_url();
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

/// Renew the lease of `term` every `renew_ms` for as long as the hub runs;
/// exit the process (75) when this hub must stop leading.
pub(crate) fn keep_leading(store: Store, me: Me, term: i64, timing: LeaseTiming) {
    actix_rt::spawn(async move {
        let started = Instant::now();
        let ms = |at: Instant| at.duration_since(started).as_millis() as i64;
        let mut renewed_at = 0i64;
        loop {
            actix_rt::time::sleep(Duration::from_millis(timing.renew_ms as u64)).await;
            let renewal = {
                let (store, id) = (store.clone(), me.id.clone());
                match web::block(move || store.renew_lead(&id, term, timing.lease_ms)).await {
                    Ok(Ok(true)) => Renewal::Renewed,
                    Ok(Ok(false)) => Renewal::Lost,
                    Ok(Err(e)) => Renewal::Failed(e.to_string()),
                    Err(e) => Renewal::Failed(e.to_string()),
                }
            };
            match after_renewal(&timing, renewal, renewed_at, ms(Instant::now())) {
                Next::Lead { renewed_at_ms } => renewed_at = renewed_at_ms,
                Next::StepDown(reason) => {
                    tracing::error!(
                        term,
                        reason = %reason,
                        "stepping down: exiting so that a supervisor starts this hub again as a standby"
                    );
                    std::process::exit(75);
                }
            }
        }
    });
}
