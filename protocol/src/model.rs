//! The task and agent models as the HTTP API returns them and as the
//! `assign` message carries them.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::change::{Dossier, TaskKind};
use crate::time::Timestamp;

/// Scheduling priority; lanes are served urgent > high > normal > low.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Served before everything else.
    Urgent,
    /// Served after urgent work.
    High,
    /// The default.
    #[default]
    Normal,
    /// Served when nothing more pressing waits.
    Low,
}

impl Priority {
    /// All priorities, most urgent first.
    pub const ALL: [Priority; 4] = [
        Priority::Urgent,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];

    /// 0 for urgent … 3 for low.
    pub fn rank(self) -> usize {
        self as usize
    }

    /// The JSON name (`urgent`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Urgent => "urgent",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// The priority with this JSON name, if any (case-sensitive).
    pub fn parse(s: &str) -> Option<Self> {
        Priority::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Waiting in a lane for an agent.
    Queued,
    /// Pushed to an agent, not yet accepted.
    Assigned,
    /// Accepted by an agent and running.
    Working,
    /// Its agent finished with commits: its change is being judged and
    /// merged; `completed` once the change merges.
    #[serde(rename = "in_review")]
    InReview,
    /// Done: its agent completed it (and its change merged, for a task
    /// on a repository).
    Completed,
    /// Failed, waiting out its backoff (`not_before`) before it is queued again.
    Failed,
    /// Out of retries: the dead-letter list.
    Dead,
    /// Stopped by an operator.
    Cancelled,
}

impl TaskStatus {
    /// Every status, in the order of a task's usual life.
    pub const ALL: [TaskStatus; 8] = [
        TaskStatus::Queued,
        TaskStatus::Assigned,
        TaskStatus::Working,
        TaskStatus::InReview,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Dead,
        TaskStatus::Cancelled,
    ];

    /// The JSON name (`queued`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Assigned => "assigned",
            TaskStatus::Working => "working",
            TaskStatus::InReview => "in_review",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Dead => "dead",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// The status with this JSON name, if any.
    pub fn parse(s: &str) -> Option<Self> {
        TaskStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// An agent holds the task (assigned or working).
    pub fn is_active(self) -> bool {
        matches!(self, TaskStatus::Assigned | TaskStatus::Working)
    }

    /// Nothing will happen to the task unless an operator revives it.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Dead | TaskStatus::Cancelled
        )
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What an agent reports when it finishes. Known fields are typed; any
/// other field the runner writes is kept in `extra`.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct TaskResult {
    /// What was done, for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The branch the work was pushed to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The pull request opened for the work, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr_url: Option<String>,
    /// The main commit the branch was made from (a repository task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The branch's last commit, as pushed (a repository task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    /// The runner made no commit beyond the base: nothing to merge.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_changes: bool,
    /// Tokens the agent spent on the attempt, if it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_used: Option<u64>,
    /// Every other field of the result, as written.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What happened to a task, as its history and the event stream name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskEvent {
    /// Submitted; queued in its lane.
    Created,
    /// Given to an agent (a new generation).
    Assigned,
    /// The agent accepted the assignment and started working.
    Accepted,
    /// The agent finished the attempt successfully (and, on a repository,
    /// its change merged).
    Completed,
    /// The agent finished with commits: a change was opened for review.
    InReview,
    /// Its change was sent back (conflict, failed check, changes
    /// requested): queued again for a new attempt.
    SentBack,
    /// A person rejected its change.
    Rejected,
    /// The attempt failed; the task waits out its backoff.
    Failed,
    /// Backoff over: queued again.
    Requeued,
    /// Out of retries (or not retryable): the dead-letter list.
    Dead,
    /// An operator cancelled it.
    Cancelled,
    /// An operator revived a dead, failed or cancelled task.
    Revived,
    /// The hub took an attempt back before it was accepted.
    Released,
    /// A report about an attempt that is no longer current, ignored.
    StaleReport,
    /// Its `run_at` came: it joins its lane.
    Due,
}

impl TaskEvent {
    /// Every event, in the order of a task's usual life.
    pub const ALL: [TaskEvent; 15] = [
        TaskEvent::Created,
        TaskEvent::Due,
        TaskEvent::Assigned,
        TaskEvent::Accepted,
        TaskEvent::InReview,
        TaskEvent::SentBack,
        TaskEvent::Rejected,
        TaskEvent::Completed,
        TaskEvent::Failed,
        TaskEvent::Requeued,
        TaskEvent::Dead,
        TaskEvent::Cancelled,
        TaskEvent::Revived,
        TaskEvent::Released,
        TaskEvent::StaleReport,
    ];

    /// The JSON name (`stale_report`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskEvent::Created => "created",
            TaskEvent::Assigned => "assigned",
            TaskEvent::Accepted => "accepted",
            TaskEvent::Completed => "completed",
            TaskEvent::Failed => "failed",
            TaskEvent::Requeued => "requeued",
            TaskEvent::Dead => "dead",
            TaskEvent::Cancelled => "cancelled",
            TaskEvent::Revived => "revived",
            TaskEvent::Released => "released",
            TaskEvent::StaleReport => "stale_report",
            TaskEvent::InReview => "in_review",
            TaskEvent::SentBack => "sent_back",
            TaskEvent::Rejected => "rejected",
            TaskEvent::Due => "due",
        }
    }
}

impl fmt::Display for TaskEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One transition in a task's life, kept in its history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When it happened.
    pub at: Timestamp,
    /// What happened.
    pub event: TaskEvent,
    /// The task's status before (`None` for `created`).
    pub from: Option<TaskStatus>,
    /// The task's status after.
    pub to: Option<TaskStatus>,
    /// The agent involved, if any.
    pub agent_id: Option<String>,
    /// The generation the event is about.
    pub generation: u64,
    /// Why, in words (an error, a reason, a retry delay), if there is more
    /// to say.
    pub detail: Option<String>,
    /// For an attempt that failed: who is to blame (the evidence is in
    /// `detail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blame: Option<Blame>,
}

/// Who a failed attempt is blamed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Blame {
    /// The task itself (it failed on two different agents): it goes
    /// `dead` and no agent's breaker counts it.
    Task,
    /// The agent (time-outs, stalls, lost connections; a task failure
    /// until another agent fails the task too): its breaker counts it.
    Agent,
    /// The agent's machine: no retry used; the agent is degraded.
    Environment,
    /// The model provider's rate limit: no retry used, no failure
    /// counted; the agent is held back.
    RateLimit,
}

impl Blame {
    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Blame::Task => "task",
            Blame::Agent => "agent",
            Blame::Environment => "environment",
            Blame::RateLimit => "rate_limit",
        }
    }
}

impl fmt::Display for Blame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A late result kept: a `complete` from a superseded generation that
/// carried a branch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The superseded generation.
    pub generation: u64,
    /// Its agent.
    pub agent_id: String,
    /// The branch it pushed.
    pub branch: String,
    /// The main commit it branched from.
    #[serde(default)]
    pub base: Option<String>,
    /// The branch's commit.
    #[serde(default)]
    pub head: Option<String>,
    /// Its summary, if it gave one.
    #[serde(default)]
    pub summary: Option<String>,
    /// When it arrived.
    pub at: Timestamp,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A task as the API returns it and as `assign` carries it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// The hub's id for the task (a ULID).
    pub id: String,
    /// What the task is, in one line.
    pub title: String,
    /// The full instructions; empty (and left out) when none were given
    /// or a read did not ask for them.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Which lane it waits in.
    pub priority: Priority,
    /// Capabilities an agent must all have to be given it (sorted, no
    /// repeats).
    #[serde(default)]
    pub needed_capabilities: Vec<String>,
    /// The repository the task is about, if any.
    #[serde(default)]
    pub repo: Option<String>,
    /// The key its create was made with, if any.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// How many times the task may be retried after a failed attempt.
    pub max_retries: u32,
    /// How long one attempt may run before it is cancelled and failed.
    pub timeout_s: u64,
    /// The context the task needs, in tokens, if the submitter said.
    #[serde(default)]
    pub context_budget_tokens: Option<u64>,
    /// The submitter's JSON object, kept as given (left out when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// Where the task is in its life.
    pub status: TaskStatus,
    /// 0 until first assigned; every assignment increments it.
    pub generation: u64,
    /// Executions started (accepted by an agent) within the current retry budget.
    pub attempts: u32,
    /// The agent of the latest assignment, kept once the task ends.
    pub assigned_to: Option<String>,
    /// When it was submitted.
    pub created_at: Timestamp,
    /// When its status last changed.
    pub updated_at: Timestamp,
    /// When the task (re)entered its lane; orders the lane FIFO.
    #[serde(default)]
    pub queued_at: Option<Timestamp>,
    /// When the current (or last) attempt was accepted and started working.
    #[serde(default)]
    pub started_at: Option<Timestamp>,
    /// While `failed`: when its backoff ends and it is queued again.
    pub not_before: Option<Timestamp>,
    /// When the task last became completed, dead or cancelled (None while
    /// it is live); retention counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// What the agent reported, once completed.
    pub result: Option<TaskResult>,
    /// The error of the latest failed attempt, if any.
    pub last_error: Option<String>,
    /// What kind of work it is (`task` unless said otherwise).
    #[serde(default, skip_serializing_if = "TaskKind::is_task")]
    pub kind: TaskKind,
    /// What earlier attempts left for the next one.
    #[serde(default, skip_serializing_if = "Dossier::is_empty")]
    pub dossier: Dossier,
    /// Agents this task is never given to (a review's author).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_agents: Vec<String>,
    /// The only agent this task is given to (an enrolled agent's
    /// verification task, or a submitter's choice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_agent: Option<String>,
    /// Attempts that used no retry (blamed on the environment or a rate
    /// limit): the retry budget counts `attempts` minus these.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub free_attempts: u32,
    /// Late results kept: superseded attempts that completed with a
    /// branch (newest last, the last few).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<Candidate>,
    /// Transitions, oldest first (a page of them): only in
    /// `GET /api/tasks/{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<HistoryEntry>>,
}

impl Task {
    /// The lane a queued task waits in: retried tasks wait behind new ones.
    pub fn is_retry(&self) -> bool {
        self.attempts > 0
    }
}

/// States of an agent as the hub sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentState {
    /// No sidecar connected.
    Offline,
    /// Connected and free for a task.
    Idle,
    /// A task was pushed to it and not yet accepted.
    Assigned,
    /// Working on an accepted task.
    Working,
    /// Failed too often in a row (`circuit.failures`), its environment is
    /// broken, or the model provider limits it: given nothing until
    /// `degraded_until` (`degraded_reason` says why).
    Degraded,
    /// Holds a working attempt whose activity (output, commits, the
    /// runner's life) has not changed for `timeouts.stall_s`.
    Stalled,
}

impl AgentState {
    /// Every state.
    pub const ALL: [AgentState; 6] = [
        AgentState::Offline,
        AgentState::Idle,
        AgentState::Assigned,
        AgentState::Working,
        AgentState::Degraded,
        AgentState::Stalled,
    ];

    /// The JSON name (`offline`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Offline => "offline",
            AgentState::Idle => "idle",
            AgentState::Assigned => "assigned",
            AgentState::Working => "working",
            AgentState::Degraded => "degraded",
            AgentState::Stalled => "stalled",
        }
    }
}

impl fmt::Display for AgentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A task and the generation of its assignment: the identity of one
/// attempt. Every message about an attempt carries both.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttemptRef {
    /// The task.
    pub task_id: String,
    /// The assignment of it (1 for the first).
    pub generation: u64,
}

impl AttemptRef {
    /// The attempt `generation` of task `task_id`.
    pub fn new(task_id: impl Into<String>, generation: u64) -> Self {
        AttemptRef {
            task_id: task_id.into(),
            generation,
        }
    }
}

impl fmt::Display for AttemptRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.task_id, self.generation)
    }
}

/// One recent transition of an agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentTransition {
    /// When it happened.
    pub at: Timestamp,
    /// The state before.
    pub from: AgentState,
    /// The state after.
    pub to: AgentState,
    /// Why, in words.
    pub reason: String,
}

/// An agent as the API returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// The agent's name.
    pub id: String,
    /// Its state as the hub sees it.
    pub state: AgentState,
    /// The capabilities registered for it (scheduling uses these).
    pub capabilities: Vec<String>,
    /// The repositories its sidecar said it has a clone of (a task on a
    /// repository goes only to an agent with a clone of it).
    #[serde(default)]
    pub repos: Vec<String>,
    /// Whether its sidecar has a WebSocket open.
    pub connected: bool,
    /// The attempt the hub says it holds, if any.
    pub current_task: Option<AttemptRef>,
    /// When the hub last heard a heartbeat (or `hello`) from its sidecar.
    pub last_heartbeat_at: Option<Timestamp>,
    /// Attempts in a row it failed, lost or did not accept in time; a
    /// completed one resets it.
    pub consecutive_failures: u32,
    /// While degraded: when it may get work again.
    pub degraded_until: Option<Timestamp>,
    /// While degraded: why (the breaker, its environment, a rate limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded_reason: Option<String>,
    /// When the agent entered its current state.
    pub state_since: Timestamp,
    /// When the agent was added.
    pub created_at: Timestamp,
    /// The version its sidecar said in its last `hello`.
    #[serde(default)]
    pub sidecar_version: Option<String>,
    /// Recent transitions, newest last.
    #[serde(default)]
    pub recent: Vec<AgentTransition>,
    /// Paused by an operator: it gets no new task (its current one runs
    /// on). Its `state` stays as derived.
    #[serde(default)]
    pub paused: bool,
    /// The context window its sidecar said in its last `hello`, in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window_tokens: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_order_is_urgent_first() {
        let mut ps = vec![
            Priority::Low,
            Priority::Urgent,
            Priority::Normal,
            Priority::High,
        ];
        ps.sort();
        assert_eq!(ps, Priority::ALL.to_vec());
        assert_eq!(Priority::parse("high"), Some(Priority::High));
        assert_eq!(Priority::parse("HIGH"), None);
    }

    #[test]
    fn result_keeps_unknown_fields() {
        let r: TaskResult =
            serde_json::from_str(r#"{"summary":"ok","pr_url":"u","files_changed":3}"#).unwrap();
        assert_eq!(r.summary.as_deref(), Some("ok"));
        assert_eq!(r.extra.get("files_changed"), Some(&Value::from(3)));
        let back = serde_json::to_value(&r).unwrap();
        assert_eq!(back["files_changed"], 3);
    }

    #[test]
    fn event_names_round_trip() {
        for e in TaskEvent::ALL {
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(json, format!("\"{}\"", e.as_str()));
            assert_eq!(serde_json::from_str::<TaskEvent>(&json).unwrap(), e);
        }
    }

    #[test]
    fn status_strings_round_trip() {
        for s in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(s.as_str()), Some(s));
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
    }
}
