//! `/api/agents`: create (token shown once), list, show, revoke; enroll
//! (the enrollment token creates an agent and the hub queues its
//! verification task) and that verification's standing.

use actix_web::{web, HttpResponse};
use agentcom_protocol::{
    AgentCreated, AgentInfo, AgentList, AgentState, Enrolled, NewAgent, NewTask, Priority,
    TaskKind, Verification,
};

use crate::actors::messages::{
    AddAgent, CancelTask, CreateTask, RegistryError, RevokeAgent, SetVerification, VerificationOf,
};
use crate::domain::queue::Created;
use crate::domain::validate;
use crate::http::auth::{Admin, Enroller, EnrollerOrReader, Reader};
use crate::http::error::HttpError;
use crate::http::query::off_thread;
use crate::http::{body, AppState};
use crate::store::Fields;
use crate::views::TaskReader;

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

/// Read a [`NewAgent`], check its id and capabilities, and add it
/// through the registry (durable when answered): the agent and its token,
/// or the registry's refusal.
async fn add(
    state: &web::Data<AppState>,
    payload: web::Payload,
) -> Result<Result<(AgentInfo, String), RegistryError>, HttpError> {
    let new: NewAgent = body::json(payload, state).await?;
    validate::agent_id(&new.id)?;
    for c in &new.capabilities {
        validate::capability("capabilities", c)?;
    }
    Ok(state
        .registry
        .send(AddAgent {
            id: new.id,
            capabilities: new.capabilities,
        })
        .await?)
}

pub(crate) async fn create(
    _: Admin,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, HttpError> {
    let (agent, token) = add(&state, payload).await??;
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
    let verify = state
        .registry
        .send(VerificationOf { id: id.to_string() })
        .await?
        .ok()
        .flatten();
    state
        .registry
        .send(RevokeAgent { id: id.to_string() })
        .await??;
    // Its verification task, if still to run, would wait for it forever
    // (a finished one refuses the cancel, and stays as it is).
    if let Some(task) = verify {
        let _ = state
            .queue
            .send(CancelTask {
                id: task,
                reason: format!("agent {id} was revoked"),
            })
            .await;
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "id": id.as_str(), "revoked": true })))
}

/// How long the hub's verification task may run, in seconds.
const VERIFY_TIMEOUT_S: u64 = 120;
/// How often it is tried again (a sidecar still starting, a self-test
/// that failed and was fixed).
const VERIFY_MAX_RETRIES: u32 = 5;

/// `POST /api/agents/enroll`: the enrollment token (or the admin) creates
/// the agent as `POST /api/agents` does and, before answering, queues its
/// verification task (kind `verify`, for this agent only) and keeps its id
/// with the agent, each durable.
pub(crate) async fn enroll(
    _: Enroller,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, HttpError> {
    let (agent, token) = add(&state, payload).await?.map_err(|e| match e {
        RegistryError::Exists(id) => HttpError::conflict(format!(
            "agent {id} already exists: revoke it first with `agentcom-hub agent revoke {id}`, or choose another --id"
        )),
        other => other.into(),
    })?;
    let id = agent.id.clone();
    let unverified = |what: String| {
        tracing::error!(agent = %id, "enrolled, but {what}");
        HttpError::unavailable(format!(
            "agent {id} was created but {what}; revoke it (`agentcom-hub agent revoke {id}`) and enroll again"
        ))
    };
    let spec = NewTask {
        title: format!("Verify agent {id}"),
        description: Some(format!(
            "The hub's check of the newly enrolled agent {id}: its sidecar answers with its self-test."
        )),
        priority: Some(Priority::Urgent),
        kind: Some(TaskKind::Verify),
        for_agent: Some(id.clone()),
        timeout_s: Some(VERIFY_TIMEOUT_S),
        max_retries: Some(VERIFY_MAX_RETRIES),
        idempotency_key: Some(format!("verify:{id}:{}", agent.created_at.0)),
        ..Default::default()
    };
    let task_id = match state.queue.send(CreateTask(spec)).await {
        Ok(Ok(Created::New(task))) => task.id,
        Ok(Ok(Created::Existing(task_id))) => task_id,
        Ok(Err(e)) => {
            return Err(unverified(format!(
                "its verification task was not queued: {e}"
            )))
        }
        Err(e) => {
            return Err(unverified(format!(
                "its verification task was not queued: {e}"
            )))
        }
    };
    match state
        .registry
        .send(SetVerification {
            id: id.clone(),
            task_id: task_id.clone(),
        })
        .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(unverified(format!(
                "its verification task {task_id} was not kept with it: {e}"
            )))
        }
        Err(e) => {
            return Err(unverified(format!(
                "its verification task {task_id} was not kept with it: {e}"
            )))
        }
    }
    tracing::info!(agent = %id, task = %task_id, "agent enrolled; its verification task is queued");
    Ok(HttpResponse::Created().json(Enrolled {
        id: agent.id,
        token,
        capabilities: agent.capabilities,
        verification_task: task_id,
    }))
}

/// `GET /api/agents/{id}/verification`: how the enrolled agent's
/// verification task stands (404 for an agent that has none).
pub(crate) async fn verification(
    _: EnrollerOrReader,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, HttpError> {
    let id = id.into_inner();
    let task_id = state
        .registry
        .send(VerificationOf { id: id.clone() })
        .await??
        .ok_or_else(|| {
            HttpError::not_found(format!(
                "agent {id} has no verification task (only enrolled agents have one)"
            ))
        })?;
    let reader = TaskReader {
        view: state.tasks.clone(),
        store: state.store.clone(),
    };
    let wanted = task_id.clone();
    let (task, _) = off_thread(reader, move |r| r.task(&wanted, Fields::ALL))
        .await?
        .ok_or_else(|| {
            HttpError::not_found(format!(
                "agent {id}'s verification task {task_id} is gone (deleted by retention)"
            ))
        })?;
    let agent = state.agents.get(&id);
    Ok(HttpResponse::Ok().json(Verification {
        agent_id: id,
        task_id,
        status: task.status,
        agent_state: agent.as_ref().map_or(AgentState::Offline, |a| a.state),
        connected: agent.as_ref().is_some_and(|a| a.connected),
        degraded_reason: agent
            .as_ref()
            .filter(|a| a.state == AgentState::Degraded)
            .and_then(|a| a.degraded_reason.clone()),
        result: task.result,
        last_error: task.last_error,
    }))
}
