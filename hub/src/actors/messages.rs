//! The messages that cross the hub's actors, grouped by the actor that
//! receives them, and the handles (bundles of `Recipient`s) they carry.
//!
//! Every actor module imports this one and no other actor module (the
//! registry, which creates agent actors, also imports `agent`), so the
//! actors form no import cycle: an actor holds the `Recipient<M>`s of the
//! messages it sends, handed to it in its constructor, never the `Addr` of
//! another actor's type. This module holds shapes only: no behaviour.
//!
//! Who waits on whom (only these `send().await`s exist, so no cycle of
//! waiting can form; everything else is `do_send`):
//! - HTTP → queue (`CreateTask`, `CancelTask`, `RetryTask`), registry
//!   (`AddAgent`, `RevokeAgent`, `Lookup`);
//! - scheduler → queue (`Claim`, `OutstandingAttempts`), registry (`Lookup`),
//!   agent (`AssignTask`, `Holds`);
//! - registry → queue (`OutstandingAttempts`, to seed a restarted agent actor);
//! - agent → queue (`Report`, atomically: the agent handles nothing else
//!   until the durable answer);
//! - app → registry (`CloseAll`, at shutdown).
//!
//! The queue never waits on anyone, so every chain of waits ends there.

use std::sync::{Arc, Mutex};

use actix::prelude::*;
use agentcom_protocol::{AgentInfo, AgentState, AttemptRef, HubMsg, NewTask, SidecarMsg, Task};

use crate::domain::fsm::HelloFacts;
use crate::domain::matching::IdleAgent;
use crate::domain::queue::{Assignment, Created, Outstanding, QueueError, Verdict};
use crate::domain::rate::MessageLimit;
use crate::domain::retry::Retryable;

/// Identifies one WebSocket connection of a sidecar (unique per hub run).
pub(crate) type ConnId = u64;

// ----- to the queue actor ------------------------------------------------------

/// Why a queue command did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The queue's rules refused it (unknown task, wrong state).
    #[error(transparent)]
    Refused(#[from] QueueError),
    /// The change could not be made durable (the hub is exiting).
    #[error("the store failed: {0}")]
    Unavailable(String),
}

/// Create a task (validated by the caller).
#[derive(Message)]
#[rtype(result = "Result<Created, CommandError>")]
pub struct CreateTask(pub NewTask);

/// An operator cancels a task.
#[derive(Message)]
#[rtype(result = "Result<Task, CommandError>")]
pub struct CancelTask {
    pub id: String,
    pub reason: String,
}

/// An operator revives a dead, failed or cancelled task.
#[derive(Message)]
#[rtype(result = "Result<Task, CommandError>")]
pub struct RetryTask {
    pub id: String,
}

/// Assign queued tasks to these idle agents; answered once durable.
#[derive(Message)]
#[rtype(result = "Result<Vec<Assignment>, CommandError>")]
pub struct Claim {
    pub agents: Vec<IdleAgent>,
}

/// What an agent (or the hub on its behalf) says about an attempt.
#[derive(Debug, Clone)]
pub enum ReportKind {
    Accept,
    Complete(agentcom_protocol::TaskResult),
    Fail { error: String, retryable: Retryable },
}

/// Who sent a report: its sidecar, or the hub on the agent's behalf (a
/// task timeout). Only a sidecar's stale reports count as stale messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportSource {
    Sidecar,
    Hub,
}

/// A report about an attempt; answered with the queue's verdict once durable.
#[derive(Message)]
#[rtype(result = "Result<Verdict, CommandError>")]
pub struct Report {
    pub agent: String,
    pub attempt: AttemptRef,
    pub kind: ReportKind,
    pub source: ReportSource,
}

/// Take an attempt back from its agent.
#[derive(Message)]
#[rtype(result = "Result<Verdict, CommandError>")]
pub struct Release {
    pub attempt: AttemptRef,
    pub reason: String,
}

/// The attempts agents hold (of one agent, or all), for the stuck-work
/// sweep and for seeding a restarted agent actor.
#[derive(Message)]
#[rtype(result = "Vec<Outstanding>")]
pub struct OutstandingAttempts {
    pub agent: Option<String>,
}

/// Queue the failed tasks whose backoff has ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PromoteDue;

// ----- to the registry actor ---------------------------------------------------

/// Why a registry command did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("agent {0} already exists")]
    Exists(String),
    #[error("no agent {0}")]
    NotFound(String),
    #[error("the store failed: {0}")]
    Store(String),
}

/// Create an agent; answers its info and its token (shown once).
#[derive(Message)]
#[rtype(result = "Result<(AgentInfo, String), RegistryError>")]
pub struct AddAgent {
    pub id: String,
    pub capabilities: Vec<String>,
}

/// Revoke an agent's token and drop its connection.
#[derive(Message)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct RevokeAgent {
    pub id: String,
}

/// The running actor of an agent, if the agent exists.
#[derive(Message)]
#[rtype(result = "Option<AgentHandle>")]
pub struct Lookup {
    pub id: String,
}

/// An attempt was cancelled: tell its agent.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopAttempt {
    pub agent: String,
    pub attempt: AttemptRef,
    pub reason: String,
}

/// The hub is stopping: close every connection.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseAll;

// ----- to an agent actor -------------------------------------------------------

/// What others may send to one agent's actor, and the agent's message
/// limit, which every connection of the agent draws on before it parses a
/// frame (so the limit is the agent's, however many connections it opens).
#[derive(Clone)]
pub struct AgentHandle {
    pub attach: Recipient<Attach>,
    pub connect: Recipient<Connect>,
    pub disconnect: Recipient<Disconnect>,
    pub from_sidecar: Recipient<FromSidecar>,
    pub holds: Recipient<Holds>,
    pub(crate) limit: Arc<Mutex<MessageLimit>>,
}

/// A connection for this agent opened (before any `hello`): the agent
/// actor can close it (revocation, shutdown) from now on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Attach {
    pub conn: ConnId,
    pub link: ConnLink,
}

/// A connection's sidecar said `hello`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect {
    pub conn: ConnId,
    pub link: ConnLink,
    pub hello: HelloFacts,
}

/// A connection ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub conn: ConnId,
}

/// Any message a connection received after `hello`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FromSidecar {
    pub conn: ConnId,
    pub msg: SidecarMsg,
}

/// The scheduler gives the agent an attempt; `Err` carries the state that
/// prevented it.
#[derive(Message)]
#[rtype(result = "Result<(), AgentState>")]
pub struct AssignTask {
    pub task: Task,
}

/// The attempt was cancelled; tell the sidecar to stop.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct CancelAttempt {
    pub attempt: AttemptRef,
    pub reason: String,
}

/// Does the agent hold this attempt?
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Holds {
    pub attempt: AttemptRef,
}

/// The agent was revoked: close, release, stop.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Revoke;

/// Close the connection (hub shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Shutdown;

// ----- to the scheduler actor --------------------------------------------------

/// Something changed that may allow a match.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct Kick;

/// An agent became idle (or its idle record changed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AgentIdle {
    pub agent: IdleAgent,
    pub assign: Recipient<AssignTask>,
}

/// An agent is no longer idle.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AgentBusy {
    pub id: String,
}

// ----- to a connection actor ---------------------------------------------------

/// What an agent actor may send to one of its connections.
#[derive(Clone)]
pub struct ConnLink {
    pub push: Recipient<Push>,
    pub close: Recipient<CloseConn>,
}

/// Send this frame to the sidecar.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Push(pub HubMsg);

/// Close the connection (Close frame 1000 with this reason).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CloseConn {
    pub reason: String,
}
