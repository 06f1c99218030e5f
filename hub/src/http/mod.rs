//! The HTTP face of the hub: routes, and the state they share.
//!
//! Handlers are thin: check the caller, parse and validate input, then
//! either read a view (never waiting behind a write) or send one message to
//! an actor and shape its answer. No scheduling or task rule lives here.
//!
//! - [`tasks`] — `/api/tasks…` (with `/api/tasks/batch`)
//! - [`changes`] — `/api/changes…`, `/api/repos`, `/api/alerts`
//! - [`agents`] — `/api/agents…` (with `/api/agents/enroll` and an agent's
//!   `verification`)
//! - [`controls`] — pause and resume an agent or a lane
//! - [`status`] — `/api/state`, `/healthz`, `/metrics`
//! - [`events`] — `/api/events` (Server-Sent Events)
//! - [`session`], [`dashboard`] — the dashboard's sign-in and its files
//! - [`ws`] — the sidecar WebSocket upgrade at `/ws`
//! - [`auth`], [`body`], [`error`] — who calls, what they sent, how we refuse.
//! - [`limits`] — connections (503 over the limit) and token guesses (429).

pub(crate) mod agents;
pub(crate) mod auth;
pub(crate) mod body;
pub(crate) mod changes;
pub(crate) mod controls;
pub(crate) mod dashboard;
pub(crate) mod error;
pub(crate) mod events;
pub(crate) mod limits;
pub(crate) mod query;
pub(crate) mod session;
pub(crate) mod standby;
pub(crate) mod status;
pub(crate) mod tasks;
pub(crate) mod ws;

use std::sync::Arc;

use actix::Addr;
use actix_web::web;
use agentcom_protocol::Timestamp;

use crate::actors::queue::QueueActor;
use crate::actors::registry::{AgentDirectory, RegistryActor};
use crate::alerts::AlertBus;
use crate::auth::Auth;
use crate::config::Settings;
use crate::events::EventBus;
use crate::http::error::HttpError;
use crate::http::limits::{Connections, Guesses};
use crate::sessions::Sessions;
use crate::stats::Stats;
use crate::store::Store;
use crate::views::{AgentView, ChangeView, RepoView, TaskView};

/// Everything a handler may use.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub queue: Addr<QueueActor>,
    pub registry: Addr<RegistryActor>,
    pub tasks: Arc<TaskView>,
    pub(crate) changes: Arc<ChangeView>,
    pub(crate) repos: Arc<RepoView>,
    pub(crate) alerts: Arc<AlertBus>,
    pub agents: Arc<AgentView>,
    pub directory: Arc<AgentDirectory>,
    pub auth: Auth,
    pub store: Store,
    pub events: Arc<EventBus>,
    pub stats: Arc<Stats>,
    pub started_at: Timestamp,
    /// The lease's term while this hub leads several (PostgreSQL).
    pub term: Option<i64>,
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) guesses: Guesses,
    pub(crate) connections: Arc<Connections>,
}

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    // A query string that does not parse is a 400 in the error shape (and
    // the role extractor, first in every handler, has run by then).
    cfg.app_data(web::QueryConfig::default().error_handler(|e, _| {
        HttpError::bad_request(format!("the query string is not valid: {e}")).into()
    }))
    .service(
        web::scope("/api")
            .route("/tasks", web::post().to(tasks::create))
            .route("/tasks", web::get().to(tasks::list))
            // Before `/tasks/{id}`, guarded by its method at the resource
            // (as `/agents/enroll` is).
            .service(
                web::resource("/tasks/batch")
                    .guard(actix_web::guard::Post())
                    .route(web::post().to(tasks::create_batch)),
            )
            .route("/tasks/{id}", web::get().to(tasks::show))
            .route("/tasks/{id}/cancel", web::post().to(tasks::cancel))
            .route("/tasks/{id}/explain", web::get().to(tasks::explain))
            .route("/tasks/{id}/retry", web::post().to(tasks::retry))
            .route("/changes", web::get().to(changes::list))
            .route("/changes/{id}", web::get().to(changes::show))
            .route("/changes/{id}/approve", web::post().to(changes::approve))
            .route("/changes/{id}/reject", web::post().to(changes::reject))
            .route("/repos", web::get().to(changes::repos))
            .route("/alerts", web::get().to(changes::alerts))
            .route("/agents", web::get().to(agents::list))
            .route("/agents", web::post().to(agents::create))
            // Before `/agents/{id}`, guarded by its method at the resource
            // so a GET of an agent named `enroll` still finds it.
            .service(
                web::resource("/agents/enroll")
                    .guard(actix_web::guard::Post())
                    .route(web::post().to(agents::enroll)),
            )
            .route("/agents/{id}", web::get().to(agents::show))
            .route("/agents/{id}", web::delete().to(agents::revoke))
            .route(
                "/agents/{id}/verification",
                web::get().to(agents::verification),
            )
            .route("/agents/{id}/pause", web::post().to(controls::pause_agent))
            .route(
                "/agents/{id}/resume",
                web::post().to(controls::resume_agent),
            )
            .route(
                "/lanes/{priority}/pause",
                web::post().to(controls::pause_lane),
            )
            .route(
                "/lanes/{priority}/resume",
                web::post().to(controls::resume_lane),
            )
            .route("/state", web::get().to(status::state))
            .route("/events", web::get().to(events::stream))
            .route("/session", web::post().to(session::sign_in))
            .route("/session", web::get().to(session::whoami))
            .route("/session", web::delete().to(session::sign_out)),
    )
    .route("/", web::get().to(dashboard::root))
    .route("/healthz", web::get().to(status::healthz))
    .route("/metrics", web::get().to(status::metrics))
    .route("/dashboard", web::get().to(dashboard::index))
    .route("/dashboard/", web::get().to(dashboard::index))
    .route("/dashboard/app.js", web::get().to(dashboard::app_js))
    .route("/dashboard/style.css", web::get().to(dashboard::style))
    .route("/ws", web::get().to(ws::upgrade))
    .default_service(web::to(status::not_found));
}
