//! The task and agent models as the HTTP API returns them and as the
//! `assign` message carries them.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::time::Timestamp;

/// Scheduling priority; lanes are served urgent > high > normal > low.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Urgent,
    High,
    #[default]
    Normal,
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

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Urgent => "urgent",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

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
    Completed,
    /// Failed, waiting out its backoff (`not_before`) before it is queued again.
    Failed,
    /// Out of retries: the dead-letter list.
    Dead,
    Cancelled,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 7] = [
        TaskStatus::Queued,
        TaskStatus::Assigned,
        TaskStatus::Working,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Dead,
        TaskStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Assigned => "assigned",
            TaskStatus::Working => "working",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Dead => "dead",
            TaskStatus::Cancelled => "cancelled",
        }
    }

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_used: Option<u64>,
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
    /// The agent finished the attempt successfully.
    Completed,
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
}

impl TaskEvent {
    /// Every event, in the order of a task's usual life.
    pub const ALL: [TaskEvent; 11] = [
        TaskEvent::Created,
        TaskEvent::Assigned,
        TaskEvent::Accepted,
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
    pub at: Timestamp,
    /// What happened.
    pub event: TaskEvent,
    pub from: Option<TaskStatus>,
    pub to: Option<TaskStatus>,
    pub agent_id: Option<String>,
    pub generation: u64,
    pub detail: Option<String>,
}

/// A task as the API returns it and as `assign` carries it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub priority: Priority,
    #[serde(default)]
    pub needed_capabilities: Vec<String>,
    #[serde(default)]
    pub repo: Option<String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// How many times the task may be retried after a failed attempt.
    pub max_retries: u32,
    /// How long one attempt may run before it is cancelled and failed.
    pub timeout_s: u64,
    #[serde(default)]
    pub context_budget_tokens: Option<u64>,
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    pub status: TaskStatus,
    /// 0 until first assigned; every assignment increments it.
    pub generation: u64,
    /// Executions started (accepted by an agent) within the current retry budget.
    pub attempts: u32,
    pub assigned_to: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// When the task (re)entered its lane; orders the lane FIFO.
    #[serde(default)]
    pub queued_at: Option<Timestamp>,
    /// When the current (or last) attempt was accepted and started working.
    #[serde(default)]
    pub started_at: Option<Timestamp>,
    pub not_before: Option<Timestamp>,
    /// When the task last became completed, dead or cancelled (None while
    /// it is live); retention counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    pub result: Option<TaskResult>,
    pub last_error: Option<String>,
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
    Offline,
    Idle,
    Assigned,
    Working,
    Degraded,
}

impl AgentState {
    pub const ALL: [AgentState; 5] = [
        AgentState::Offline,
        AgentState::Idle,
        AgentState::Assigned,
        AgentState::Working,
        AgentState::Degraded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Offline => "offline",
            AgentState::Idle => "idle",
            AgentState::Assigned => "assigned",
            AgentState::Working => "working",
            AgentState::Degraded => "degraded",
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
    pub task_id: String,
    pub generation: u64,
}

impl AttemptRef {
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
    pub at: Timestamp,
    pub from: AgentState,
    pub to: AgentState,
    pub reason: String,
}

/// An agent as the API returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub id: String,
    pub state: AgentState,
    pub capabilities: Vec<String>,
    pub connected: bool,
    pub current_task: Option<AttemptRef>,
    pub last_heartbeat_at: Option<Timestamp>,
    pub consecutive_failures: u32,
    pub degraded_until: Option<Timestamp>,
    /// When the agent entered its current state.
    pub state_since: Timestamp,
    pub created_at: Timestamp,
    #[serde(default)]
    pub sidecar_version: Option<String>,
    /// Recent transitions, newest last.
    #[serde(default)]
    pub recent: Vec<AgentTransition>,
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
