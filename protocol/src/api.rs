//! HTTP API bodies that both the hub and its clients (the admin CLI,
//! tests) read or write, and the one error shape every failing route
//! returns: `{"error": {"code": "...", "message": "..."}}`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::change::TaskKind;
use crate::model::{AgentInfo, AgentState, Priority, Task, TaskResult, TaskStatus};
use crate::Timestamp;

/// Longest task title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest task description, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 64 * 1024;
/// Largest task metadata object, in bytes of JSON.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Largest result the hub keeps, in bytes of JSON; a larger one is cut
/// down to its known fields (see the hub's `domain::limits`).
pub const MAX_RESULT_BYTES: usize = 64 * 1024;

/// Body of `POST /api/tasks`. Unknown fields are refused so that a typo
/// (`needs` for `needed_capabilities`) is an error, not a silent default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTask {
    /// What the task is, in one line (1–200 characters).
    pub title: String,
    /// The full instructions (at most 64 KiB); empty when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Which lane the task waits in; `normal` when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Capabilities an agent must all have to be given the task; none when
    /// not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed_capabilities: Option<Vec<String>>,
    /// The repository the task is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// A client's key for the create: a second create with the same key
    /// answers the task the first one made (200) instead of a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// How many times the task may be retried after a failed attempt; the
    /// hub's `retry.max_retries` when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// How long one attempt may run, in seconds; the hub's
    /// `timeouts.task_timeout_s` when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    /// The context the task needs, in tokens, if the submitter knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_budget_tokens: Option<u64>,
    /// Any JSON object the submitter wants kept with the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// `task` (default) or `review` (`verify` is the hub's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<TaskKind>,
    /// Only this agent is given the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_agent: Option<String>,
    /// Not before then (RFC 3339): the task waits, `queued` with
    /// `not_before`, and joins its lane when the time comes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<Timestamp>,
}

/// Most tasks one `POST /api/tasks/batch` creates.
pub const MAX_BATCH_TASKS: usize = 1_000;
/// Largest body of `POST /api/tasks/batch`, in bytes: room for 1,000
/// tasks of about 64 KiB each (a single create's body may be 256 KiB).
pub const MAX_BATCH_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Body of `POST /api/tasks/batch`: 1 to [`MAX_BATCH_TASKS`] tasks, each
/// as `POST /api/tasks` takes it, created all together or not at all.
/// A task that does not parse is named by its index (`tasks[17]: …`), and
/// reading stops at the first task over the limit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTaskBatch {
    /// The tasks, in the order the answer keeps.
    #[serde(deserialize_with = "batch_tasks")]
    pub tasks: Vec<NewTask>,
}

/// The `tasks` of a [`NewTaskBatch`]: each task's parse error names its
/// index; more than [`MAX_BATCH_TASKS`] is an error as soon as it is seen.
fn batch_tasks<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<NewTask>, D::Error> {
    struct Tasks;
    impl<'de> serde::de::Visitor<'de> for Tasks {
        type Value = Vec<NewTask>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "an array of 1 to {MAX_BATCH_TASKS} tasks")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            use serde::de::Error;
            let mut out: Vec<NewTask> =
                Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_BATCH_TASKS));
            loop {
                let i = out.len();
                let next = seq
                    .next_element::<NewTask>()
                    .map_err(|e| A::Error::custom(format_args!("tasks[{i}]: {e}")))?;
                let Some(task) = next else {
                    return Ok(out);
                };
                if i == MAX_BATCH_TASKS {
                    return Err(A::Error::custom(format_args!(
                        "tasks: at most {MAX_BATCH_TASKS} tasks in one batch; split it"
                    )));
                }
                out.push(task);
            }
        }
    }
    d.deserialize_seq(Tasks)
}

/// Answer to `POST /api/tasks/batch` (201 when it created any task, 200
/// when every task's idempotency key was seen before).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TasksCreated {
    /// One task for each of the batch's, in its order, as `GET /api/tasks`
    /// lists it (no `description`, `metadata` or `result`): the new task,
    /// or the one an earlier create with its idempotency key made.
    pub tasks: Vec<Task>,
    /// How many tasks this batch created.
    pub created: usize,
    /// How many answered a task made before (by an earlier create, or
    /// earlier in this batch) with the same idempotency key and body.
    pub existing: usize,
}

/// Body of `POST /api/agents`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAgent {
    /// The agent's name, unique on the hub.
    pub id: String,
    /// What the agent can do; tasks are matched on these.
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// Answer to `POST /api/agents`: the only time the token is shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentCreated {
    /// The new agent's name.
    pub id: String,
    /// The agent's token for `/ws`; the hub keeps only its hash.
    pub token: String,
    /// The capabilities registered for the agent.
    pub capabilities: Vec<String>,
    /// The agent as `GET /api/agents/{id}` shows it.
    pub agent: AgentInfo,
}

/// Answer to `POST /api/agents/enroll` (body [`NewAgent`], the
/// enrollment token as the bearer): the agent's token, shown only here,
/// and the verification task the hub queued for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Enrolled {
    /// The new agent's name.
    pub id: String,
    /// The agent's token for `/ws`; the hub keeps only its hash.
    pub token: String,
    /// The capabilities registered for the agent.
    pub capabilities: Vec<String>,
    /// The task (kind `verify`, for this agent only) whose completion
    /// proves the agent's sidecar is connected and passes its self-test.
    pub verification_task: String,
}

/// Answer to `GET /api/agents/{id}/verification` (the enrollment token,
/// or any reader's): how the agent's verification task stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// The agent.
    pub agent_id: String,
    /// Its verification task.
    pub task_id: String,
    /// The task's status (`completed`: verified).
    pub status: TaskStatus,
    /// The agent's state on the hub.
    pub agent_state: AgentState,
    /// Whether its sidecar is connected.
    pub connected: bool,
    /// Why the agent is degraded, if it is (a failing self-test, say).
    #[serde(default)]
    pub degraded_reason: Option<String>,
    /// The verification's result, once completed (the self-test's
    /// summary).
    #[serde(default)]
    pub result: Option<TaskResult>,
    /// The task's last error, if an attempt failed.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// Answer to `GET /api/tasks`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskPage {
    /// This page of tasks, newest first.
    pub tasks: Vec<Task>,
    /// The `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Answer to `GET /api/agents`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentList {
    /// Every known agent.
    pub agents: Vec<AgentInfo>,
}

/// The body of every error answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong.
    pub error: ErrorBody,
}

/// The inside of an [`ApiError`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable, machine-readable code such as `not_found`.
    pub code: String,
    /// A sentence for a person.
    pub message: String,
}

impl ApiError {
    /// An error body with this code and message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            error: ErrorBody {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

/// The error code of a hub that does not lead: of several hubs on one
/// database, a standby answers `/ws` and every write with 503 and this
/// code (see [`NotLeader`]).
pub const NOT_LEADER: &str = "not_leader";

/// A standby hub's 503 answer: `{"error": {"code": "not_leader",
/// "message": "…", "leader": URL|null}}`, naming the hub that leads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotLeader {
    /// What the standby says.
    pub error: NotLeaderBody,
}

/// The inside of a [`NotLeader`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotLeaderBody {
    /// [`NOT_LEADER`].
    pub code: String,
    /// A sentence for a person.
    #[serde(default)]
    pub message: String,
    /// The leading hub's base URL (`http://host:port` or `https://…`, no
    /// path); None (null) when no hub leads right now.
    #[serde(default)]
    pub leader: Option<String>,
}

impl NotLeader {
    /// A standby's answer naming `leader`.
    pub fn new(message: impl Into<String>, leader: Option<String>) -> Self {
        NotLeader {
            error: NotLeaderBody {
                code: NOT_LEADER.to_string(),
                message: message.into(),
                leader,
            },
        }
    }

    /// `body` read as a standby's answer; None if it is not one (another
    /// code, another shape, not JSON).
    pub fn parse(body: &[u8]) -> Option<NotLeader> {
        serde_json::from_slice::<NotLeader>(body)
            .ok()
            .filter(|n| n.error.code == NOT_LEADER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_task_defaults_and_typos() {
        let t: NewTask = serde_json::from_str(r#"{"title":"x"}"#).unwrap();
        assert_eq!(t.title, "x");
        assert!(t.priority.is_none());
        let err = serde_json::from_str::<NewTask>(r#"{"title":"x","needs":["a"]}"#).unwrap_err();
        assert!(err.to_string().contains("needs"), "{err}");
        assert!(serde_json::from_str::<NewTask>(r#"{"description":"no title"}"#).is_err());
        assert!(serde_json::from_str::<NewTask>(r#"{"title":"x","priority":"asap"}"#).is_err());
    }

    #[test]
    fn a_batch_names_the_task_that_does_not_parse_and_stops_at_the_limit() {
        let b: NewTaskBatch =
            serde_json::from_str(r#"{"tasks":[{"title":"a"},{"title":"b","priority":"low"}]}"#)
                .unwrap();
        assert_eq!(b.tasks.len(), 2);
        assert_eq!(b.tasks[1].priority, Some(Priority::Low));
        let err = serde_json::from_str::<NewTaskBatch>(
            r#"{"tasks":[{"title":"a"},{"title":"b"},{"title":"c","needs":[]}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("tasks[2]: unknown field `needs`"), "{err}");
        assert_eq!(err.matches(" at line ").count(), 1, "{err}");
        let err = serde_json::from_str::<NewTaskBatch>(r#"{"tasks":[],"extra":1}"#).unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");
        let over = format!(
            r#"{{"tasks":[{}]}}"#,
            vec![r#"{"title":"x"}"#; MAX_BATCH_TASKS + 1].join(",")
        );
        let err = serde_json::from_str::<NewTaskBatch>(&over).unwrap_err();
        assert!(err.to_string().contains("at most 1000 tasks"), "{err}");
        let just = format!(
            r#"{{"tasks":[{}]}}"#,
            vec![r#"{"title":"x"}"#; MAX_BATCH_TASKS].join(",")
        );
        assert_eq!(
            serde_json::from_str::<NewTaskBatch>(&just)
                .unwrap()
                .tasks
                .len(),
            MAX_BATCH_TASKS
        );
    }

    #[test]
    fn error_shape() {
        let e = ApiError::new("not_found", "no task 7");
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"error": {"code": "not_found", "message": "no task 7"}})
        );
    }

    #[test]
    fn a_standby_names_the_leader_or_none() {
        let n = NotLeader::new("standby", Some("http://127.0.0.1:4001".into()));
        assert_eq!(
            serde_json::to_value(&n).unwrap(),
            serde_json::json!({"error": {"code": "not_leader", "message": "standby", "leader": "http://127.0.0.1:4001"}})
        );
        let body = br#"{"error":{"code":"not_leader","message":"m","leader":null}}"#;
        assert_eq!(NotLeader::parse(body).unwrap().error.leader, None);
        let body = br#"{"error":{"code":"not_leader"}}"#;
        assert_eq!(NotLeader::parse(body), Some(NotLeader::new("", None)));
        // Another error, or no JSON: not a standby's answer.
        assert_eq!(
            NotLeader::parse(br#"{"error":{"code":"busy","message":"m","leader":"http://x"}}"#),
            None
        );
        assert_eq!(NotLeader::parse(b"Service Unavailable"), None);
    }
}
