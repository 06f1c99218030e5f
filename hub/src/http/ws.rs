//! `GET /ws`: the sidecar's WebSocket. The agent token (bearer only: a
//! cookie never opens a sidecar session) is checked before the upgrade;
//! the connection then belongs to a new [`ConnectionActor`].

use std::time::Duration;

use actix::{Actor, AsyncContext};
use actix_web::{web, HttpRequest, HttpResponse};
use agentcom_protocol::MAX_FRAME_BYTES;

use crate::actors::connection::{ConnSettings, ConnectionActor};
use crate::actors::messages::Lookup;
use crate::http::error::HttpError;
use crate::http::{auth, AppState};

pub(crate) async fn upgrade(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    let token = auth::bearer(&req).ok_or_else(|| {
        HttpError::unauthorized("missing agent token: send Authorization: Bearer <agent token>")
    })?;
    let agent_id = state
        .directory
        .agent_for(&token)
        .ok_or_else(|| HttpError::unauthorized("invalid agent token"))?;
    let agent = state
        .registry
        .send(Lookup {
            id: agent_id.clone(),
        })
        .await?
        .ok_or_else(|| HttpError::unauthorized("the agent was revoked"))?;
    let (response, ws, stream) = actix_ws::handle(&req, payload)
        .map_err(|e| HttpError::bad_request(format!("not a WebSocket upgrade: {e}")))?;
    let stream = stream
        .max_frame_size(MAX_FRAME_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_FRAME_BYTES);
    let stats = state.stats.clone();
    let s = &state.settings;
    let settings = ConnSettings {
        hello_timeout: Duration::from_secs(s.timeouts.hello_timeout_s),
        messages_per_s: s.limits.agent_messages_per_s,
        messages_burst: s.limits.agent_messages_burst,
    };
    ConnectionActor::create(move |ctx| {
        ctx.add_stream(stream);
        ConnectionActor::new(agent_id, agent, settings, ws, stats, ctx)
    });
    Ok(response)
}
