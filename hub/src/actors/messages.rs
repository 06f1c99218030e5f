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
//! - HTTP → queue (`CreateTask`, `CreateTasks`, `CancelTask`, `RetryTask`,
//!   `ExplainFacts`, `ApproveChange`, `RejectChange`, `PauseLane`), registry (`AddAgent`,
//!   `RevokeAgent`, `PauseAgent`, `SetVerification`, `VerificationOf`,
//!   `Lookup`);
//! - scheduler → queue (`Claim`, `OutstandingAttempts`), registry (`Lookup`),
//!   agent (`AssignTask`, `Holds`);
//! - registry → queue (`OutstandingAttempts`, to seed a restarted agent actor);
//! - agent → queue (`Report`, atomically: the agent handles nothing else
//!   until the durable answer), then registry (`SaveBreaker`, when the
//!   report changed the agent's failure record: acknowledged only once
//!   that is durable too);
//! - app → registry (`CloseAll`, at shutdown).
//!
//! The queue never waits on anyone, so every chain of waits ends there.

use std::sync::{Arc, Mutex};

use actix::prelude::*;
use agentcom_protocol::{AgentInfo, AgentState, AttemptRef, HubMsg, NewTask, SidecarMsg, Task};

use crate::domain::changes::ChangeError;
use crate::domain::explain::QueueFacts;
use crate::domain::fsm::{Breaker, HelloFacts};
use crate::domain::matching::IdleAgent;
use crate::domain::pipeline::PipelineError;
use crate::domain::queue::{
    Assignment, Created, FailReport, Judged, Outstanding, QueueError, Verdict,
};
use crate::domain::rate::MessageLimit;

/// Identifies one WebSocket connection of a sidecar (unique per hub run).
pub(crate) type ConnId = u64;

// ----- to the queue actor ------------------------------------------------------

/// Why a queue command did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The queue's rules refused it (unknown task, wrong state).
    #[error(transparent)]
    Refused(#[from] QueueError),
    /// The change rules refused it (unknown change, wrong state).
    #[error(transparent)]
    ChangeRefused(#[from] ChangeError),
    /// The change could not be made durable (the hub is exiting).
    #[error("the store failed: {0}")]
    Unavailable(String),
}

impl CommandError {
    /// The refusal of a pipeline step, as a command's.
    pub(crate) fn from_pipeline(e: PipelineError) -> Self {
        match e {
            PipelineError::Task(e) => CommandError::Refused(e),
            PipelineError::Change(e) => CommandError::ChangeRefused(e),
        }
    }
}

/// A person approves an escalated change (or one in review).
#[derive(Message)]
#[rtype(result = "Result<(), CommandError>")]
pub(crate) struct ApproveChange {
    pub id: String,
}

/// A person rejects a live change; its task is queued again (`requeue`)
/// or goes dead.
#[derive(Message)]
#[rtype(result = "Result<(), CommandError>")]
pub(crate) struct RejectChange {
    pub id: String,
    pub reason: String,
    pub requeue: bool,
}

/// Create a task (validated by the caller).
#[derive(Message)]
#[rtype(result = "Result<Created, CommandError>")]
pub struct CreateTask(pub NewTask);

/// Create a batch of tasks (each validated by the caller), all or none:
/// answered once all of them are durable (one group), in the batch's
/// order; or the index of the first task the queue refused (an
/// idempotency key's conflict), with nothing created.
#[derive(Message)]
#[rtype(result = "Result<Result<Vec<Created>, (usize, QueueError)>, CommandError>")]
pub struct CreateTasks(pub Vec<NewTask>);

/// An operator cancels a task.
#[derive(Message)]
#[rtype(result = "Result<Task, CommandError>")]
pub struct CancelTask {
    pub id: String,
    pub reason: String,
}

/// What the queue knows of a task's wait (its place in the lanes, its
/// repository's red main), for `explain`.
#[derive(Message)]
#[rtype(result = "QueueFacts")]
pub(crate) struct ExplainFacts {
    pub id: String,
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
    /// They are every idle agent the scheduler knows: a task this claim
    /// leaves queued is one no idle agent can take (see
    /// `QueueCore::offered_all`).
    pub all: bool,
    /// The last of the queue's gifts (`Given::upto`) the scheduler has
    /// seen: an agent given a task after it is left out of this claim.
    pub seen: u64,
}

/// The scheduler no longer has this agent idle: the queue must not give
/// it a task of its own accord (decision 0018).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Withdraw {
    pub id: String,
}

/// An operator pauses or resumes a priority lane (its fresh and retry
/// lanes); answered once that is durable.
#[derive(Message)]
#[rtype(result = "Result<(), CommandError>")]
pub struct PauseLane {
    pub priority: agentcom_protocol::Priority,
    pub paused: bool,
}

/// What an agent (or the hub on its behalf) says about an attempt.
#[derive(Debug, Clone)]
pub enum ReportKind {
    Accept,
    Complete(agentcom_protocol::TaskResult),
    Fail(FailReport),
}

/// Who sent a report: its sidecar, or the hub on the agent's behalf (a
/// task timeout). Only a sidecar's stale reports count as stale messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportSource {
    Sidecar,
    Hub,
}

/// A report about an attempt; answered with the queue's verdict (and
/// what it charges the agent) once durable.
#[derive(Message)]
#[rtype(result = "Result<Reported, CommandError>")]
pub struct Report {
    pub agent: String,
    pub attempt: AttemptRef,
    pub kind: ReportKind,
    pub source: ReportSource,
    /// The agent as it will be once this attempt ends, when it will want
    /// work then (a completion the agent's machine says leaves it free):
    /// the queue may give it its next task with the report, in the same
    /// durable step (`QueueCore::claim_next`).
    pub next: Option<IdleAgent>,
}

/// The queue's answer to a report, once durable.
#[derive(Debug)]
pub struct Reported {
    pub judged: Judged,
    /// The reporting agent's next task, assigned to it with the report
    /// (`Report::next`).
    pub next: Option<Task>,
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

/// An operator pauses (drains) or resumes an agent; answered once its
/// record says so durably.
#[derive(Message)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct PauseAgent {
    pub id: String,
    pub paused: bool,
}

/// An enrolled agent's verification task was queued: keep its id with
/// the agent; answered once durable.
#[derive(Message)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct SetVerification {
    pub id: String,
    pub task_id: String,
}

/// The agent's verification task, if it was enrolled (`NotFound` for no
/// such agent).
#[derive(Message)]
#[rtype(result = "Result<Option<String>, RegistryError>")]
pub struct VerificationOf {
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

/// A failure was blamed on the task: these agents' earlier failures of
/// it no longer count on their breakers.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AbsolveFailures {
    pub agents: Vec<String>,
    pub task_id: String,
}

/// An agent's failure record changed: keep it across restarts; answered
/// once durable.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct SaveBreaker {
    pub agent: String,
    pub breaker: Breaker,
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

/// The agent's earlier failure of this task no longer counts.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Absolve {
    pub task_id: String,
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

/// An operator paused or resumed the agent (already durable).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SetPaused {
    pub paused: bool,
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
pub(crate) struct Kick;

/// The queue gave tasks to agents a claim had left idle, in the groups
/// that queued them (decision 0018), now durable: give each to its agent,
/// as a claim's answer. Gifts are numbered; `upto` is the last one here.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Given {
    pub assignments: Vec<Assignment>,
    pub upto: u64,
}

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

// ----- to a repository actor ---------------------------------------------------

/// Measure a change: fetch its branch and compute its paths and lines
/// against main, in the hub's own clone. Answered with [`Inspected`] to
/// the queue.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Inspect {
    pub change_id: String,
    pub branch: String,
    pub base: String,
    pub head: String,
}

/// Something may be ready to merge (a change entered the merge queue, main
/// turned green, the hub started): ask the queue for the next job.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub(crate) struct MergeKick;

// ----- to the queue actor, from repository actors ------------------------------

/// A change's size as the hub measured it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Diffstat {
    /// Changed paths (all of them; the queue keeps the first 1000).
    pub files: Vec<String>,
    pub lines_added: u64,
    pub lines_removed: u64,
}

/// What a repository actor found of a change it was asked to inspect.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Inspected {
    pub change_id: String,
    /// Err: the branch is not there, its head is not the one reported, or
    /// its base is not on main — in words.
    pub outcome: Result<Diffstat, String>,
}

/// The next change this repository should merge (None: nothing waits, or
/// merges are paused).
#[derive(Message)]
#[rtype(result = "Option<MergeJob>")]
pub(crate) struct NextMerge {
    pub repo: String,
}

/// One change to merge.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MergeJob {
    pub change_id: String,
    pub task_id: String,
    pub task_title: String,
    pub agent_id: String,
    pub branch: String,
    /// The exact commit to merge (never the branch's current tip).
    pub head: String,
}

/// How a merge attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MergeOutcome {
    /// Main now points at `sha` (a merge commit whose second parent is the
    /// change's head), which passed the check (`check` None: no check
    /// configured, or it was found merged already).
    Merged {
        sha: String,
        check: Option<agentcom_protocol::CheckRun>,
    },
    /// The change does not merge cleanly onto main.
    Conflict { paths: Vec<String> },
    /// The merge result failed the check; main did not move.
    CheckFailed { check: agentcom_protocol::CheckRun },
    /// The change cannot be merged at all (its head is gone), in words.
    Unmergeable { reason: String },
}

/// A merge attempt ended; answered once the outcome is durable (the
/// repository actor takes the next job only then).
#[derive(Message)]
#[rtype(result = "Result<(), CommandError>")]
pub(crate) struct MergeDone {
    pub change_id: String,
    pub outcome: MergeOutcome,
}

/// Main's health after a check of main itself (it moved outside the hub).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MainHealth {
    Green {
        check: Option<agentcom_protocol::CheckRun>,
    },
    Red {
        check: agentcom_protocol::CheckRun,
    },
}

/// A repository actor checked main at `sha`.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct MainChecked {
    pub repo: String,
    pub sha: String,
    pub health: MainHealth,
}

/// Main's commit as a repository actor last saw it (for `GET /api/repos`).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct MainSeen {
    pub repo: String,
    pub sha: String,
}
