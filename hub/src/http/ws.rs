//! `GET /ws`: the sidecar's WebSocket. The agent token is checked before
//! the upgrade; the connection then belongs to a new [`WsSession`] actor.

use actix::{Actor, AsyncContext};
use actix_web::{web, HttpRequest, HttpResponse};
use agentcom_protocol::MAX_FRAME_BYTES;

use crate::actors::registry::Lookup;
use crate::actors::session::WsSession;
use crate::http::error::ApiErr;
use crate::http::{auth, AppState};

pub async fn upgrade(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiErr> {
    let token = auth::presented_token(&req).ok_or_else(|| {
        ApiErr::unauthorized("missing agent token: send Authorization: Bearer <agent token>")
    })?;
    let agent_id = state
        .directory
        .agent_for(&token)
        .ok_or_else(|| ApiErr::unauthorized("invalid agent token"))?;
    let fsm = state
        .registry
        .send(Lookup {
            id: agent_id.clone(),
        })
        .await?
        .ok_or_else(|| ApiErr::unauthorized("the agent was revoked"))?;
    let (response, session, stream) = actix_ws::handle(&req, payload)
        .map_err(|e| ApiErr::bad_request(format!("not a WebSocket upgrade: {e}")))?;
    let stream = stream
        .max_frame_size(MAX_FRAME_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_FRAME_BYTES);
    let stats = state.stats.clone();
    WsSession::create(move |ctx| {
        ctx.add_stream(stream);
        WsSession::new(agent_id, fsm, session, stats, ctx)
    });
    Ok(response)
}
