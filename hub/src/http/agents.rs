//! `/api/agents`: create (token shown once), list, show, revoke.

use actix_web::{web, HttpResponse};
use agentcom_protocol::{AgentCreated, AgentList, NewAgent};

use crate::actors::messages::{AddAgent, RevokeAgent};
use crate::domain::validate;
use crate::http::auth::{Admin, Reader};
use crate::http::error::HttpError;
use crate::http::{body, AppState};

pub(crate) async fn list(_: Reader, state: web::Data<AppState>) -> Result<HttpResponse, HttpError> {
    Ok(HttpResponse::Ok().json(AgentList {
        agents: state.agents.all(),
    }))
}

pub(crate) async fn show(
    _: Reader,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let agent = state
        .agents
        .get(&id)
        .ok_or_else(|| HttpError::not_found(format!("no agent {id}")))?;
    Ok(HttpResponse::Ok().json(agent))
}

pub(crate) async fn create(
    _: Admin,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, HttpError> {
    let new: NewAgent = body::json(payload, &state).await?;
    validate::agent_id(&new.id)?;
    for c in &new.capabilities {
        validate::capability("capabilities", c)?;
    }
    let (agent, token) = state
        .registry
        .send(AddAgent {
            id: new.id,
            capabilities: new.capabilities,
        })
        .await??;
    Ok(HttpResponse::Created().json(AgentCreated {
        id: agent.id.clone(),
        token,
        capabilities: agent.capabilities.clone(),
        agent,
    }))
}

pub(crate) async fn revoke(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    state
        .registry
        .send(RevokeAgent { id: id.to_string() })
        .await??;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "id": id.as_str(), "revoked": true })))
}
