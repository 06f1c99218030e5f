//! Hub ⇄ sidecar messages: one JSON object per WebSocket text frame,
//! tagged by `"type"`.
//!
//! Decoding never panics: an unknown `type`, a missing field or a wrong
//! type is an `Err` from [`SidecarMsg::decode`] / [`HubMsg::decode`].

use serde::{Deserialize, Serialize};

use crate::model::{AttemptRef, Task, TaskResult};
use crate::time::Timestamp;

/// What a sidecar says it is doing, in `hello` and every `heartbeat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SidecarState {
    /// No task; ready for one.
    Idle,
    /// Holds a task (accepted, runner running or result being delivered).
    Working,
}

/// What a failure is, as the sidecar sees it (`fail.class`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailClass {
    /// The task's own failure (the runner failed at it): the default.
    #[default]
    Task,
    /// The machine: git fetch or push failed, the runner is missing or not
    /// executable, it could not be spawned, the disk is full, the
    /// sidecar's self-test fails.
    Environment,
    /// The agent session died.
    Agent,
    /// The model provider limits the agent: try again after
    /// `retry_after_s`.
    RateLimited,
}

impl FailClass {
    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailClass::Task => "task",
            FailClass::Environment => "environment",
            FailClass::Agent => "agent",
            FailClass::RateLimited => "rate_limited",
        }
    }
}

/// What the sidecar sees of the attempt it runs, in each heartbeat while
/// working: the hub notices a stall when none of it changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// The runner's process is alive.
    pub runner_alive: bool,
    /// Bytes the runner has written to its output so far.
    pub output_bytes: u64,
    /// When it last wrote output.
    #[serde(default)]
    pub last_output_at: Option<Timestamp>,
    /// When the last commit on the attempt's branch was made.
    #[serde(default)]
    pub last_commit_at: Option<Timestamp>,
}

/// One failing check of the sidecar's self-test (`agentcom-sidecar
/// selftest`, repeated by the daemon every `selftest_interval_s`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckFailure {
    /// Which check: `hub`, `token`, `runner`, `git_remote`, `state_dir`,
    /// `disk`.
    pub check: String,
    /// What it found and how to fix it, in words.
    pub detail: String,
}

/// What the sidecar's last self-test found, in `hello` and heartbeats.
/// The hub degrades an agent whose self-test fails, with the failures as
/// the reason, until one passes again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfTestStatus {
    /// Every check passed.
    pub ok: bool,
    /// The checks that failed (empty when `ok`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<CheckFailure>,
    /// When it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
}

/// Messages from a sidecar to the hub.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SidecarMsg {
    /// The first message on every connection: who the sidecar is and what
    /// it holds.
    Hello {
        /// The protocol it speaks ([`crate::PROTOCOL_VERSION`]).
        protocol_version: u32,
        /// The agent it runs for; must be the one the token belongs to.
        agent_id: String,
        /// What its config claims (the hub schedules on the registered ones).
        capabilities: Vec<String>,
        /// Whether it holds a task.
        state: SidecarState,
        /// The attempt it holds, if any.
        current_task: Option<AttemptRef>,
        /// The sidecar's version.
        sidecar_version: String,
        /// Results the sidecar still holds in its outbox (not yet acked);
        /// it sends them right after `welcome`. An extension of the
        /// contract: the hub does not treat a task listed here as lost.
        #[serde(default)]
        pending_results: Vec<AttemptRef>,
        /// The repositories it has a clone of (by the names the hub's
        /// `[[repos]]` give them); a task on a repository goes only to an
        /// agent that has it.
        #[serde(default)]
        repos: Vec<String>,
        /// The model's context window, in tokens (`context_window_tokens`
        /// in the sidecar's config); a task with `context_budget_tokens`
        /// goes only to an agent whose window is at least that. None: the
        /// agent takes only tasks without a budget.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        context_window_tokens: Option<u64>,
        /// A random id the sidecar keeps in its state dir: the same
        /// installation reconnecting replaces its own earlier connection,
        /// while another sidecar saying the same agent is refused
        /// (`error agent_in_use`) as long as this one is connected.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance_id: Option<String>,
        /// The sidecar's last self-test, if it ran one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        selftest: Option<SelfTestStatus>,
    },
    /// Sent every `heartbeat_interval_s`: the sidecar is alive, and this is
    /// what it really does.
    Heartbeat {
        /// Whether it holds a task.
        state: SidecarState,
        /// The task it works on, when working.
        #[serde(default)]
        task_id: Option<String>,
        /// The generation it works on, when working.
        #[serde(default)]
        generation: Option<u64>,
        /// What the runner has been doing, when working.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        activity: Option<Activity>,
        /// The sidecar's last self-test, if it ran one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        selftest: Option<SelfTestStatus>,
    },
    /// The sidecar took the assignment and is starting it.
    Accept {
        /// The task assigned.
        task_id: String,
        /// The generation of the assignment.
        generation: u64,
    },
    /// The sidecar will not take the assignment.
    Reject {
        /// The task assigned.
        task_id: String,
        /// The generation of the assignment.
        generation: u64,
        /// Why, in words.
        reason: String,
    },
    /// A note on how the attempt is going.
    Progress {
        /// The task worked on.
        task_id: String,
        /// The generation worked on.
        generation: u64,
        /// The note, for a person.
        note: String,
    },
    /// The attempt succeeded. Kept and sent again until the hub's `ack`.
    Complete {
        /// The task worked on.
        task_id: String,
        /// The generation worked on.
        generation: u64,
        /// What the agent reports.
        result: TaskResult,
    },
    /// The attempt failed. Kept and sent again until the hub's `ack`.
    Fail {
        /// The task worked on.
        task_id: String,
        /// The generation worked on.
        generation: u64,
        /// What went wrong, in words.
        error: String,
        /// Whether another attempt may succeed (false: the task goes
        /// `dead`).
        retryable: bool,
        /// What kind of failure it is (`task` when absent).
        #[serde(default)]
        class: FailClass,
        /// With `rate_limited`: when to try again, in seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_s: Option<u64>,
        /// The end of the runner's output (at most 8 KiB is kept).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log_tail: Option<String>,
    },
}

impl SidecarMsg {
    /// Read one text frame.
    pub fn decode(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The text frame for this message.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("sidecar messages always serialise")
    }

    /// The `type` tag, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SidecarMsg::Hello { .. } => "hello",
            SidecarMsg::Heartbeat { .. } => "heartbeat",
            SidecarMsg::Accept { .. } => "accept",
            SidecarMsg::Reject { .. } => "reject",
            SidecarMsg::Progress { .. } => "progress",
            SidecarMsg::Complete { .. } => "complete",
            SidecarMsg::Fail { .. } => "fail",
        }
    }

    /// The attempt a report is about (`accept`, `reject`, `progress`,
    /// `complete`, `fail`).
    pub fn attempt_ref(&self) -> Option<AttemptRef> {
        match self {
            SidecarMsg::Accept {
                task_id,
                generation,
            }
            | SidecarMsg::Reject {
                task_id,
                generation,
                ..
            }
            | SidecarMsg::Progress {
                task_id,
                generation,
                ..
            }
            | SidecarMsg::Complete {
                task_id,
                generation,
                ..
            }
            | SidecarMsg::Fail {
                task_id,
                generation,
                ..
            } => Some(AttemptRef::new(task_id.clone(), *generation)),
            _ => None,
        }
    }
}

/// Which report an `ack` confirms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckOf {
    /// An `accept`.
    Accept,
    /// A `complete`.
    Complete,
    /// A `fail`.
    Fail,
}

/// Messages from the hub to a sidecar.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HubMsg {
    /// The answer to a good `hello`: the connection is the agent's.
    Welcome {
        /// The protocol the hub speaks.
        protocol_version: u32,
        /// How often the sidecar should send a heartbeat, in seconds.
        heartbeat_interval_s: u64,
        /// After this long without a heartbeat the hub counts the agent offline.
        #[serde(default)]
        heartbeat_timeout_s: Option<u64>,
        /// The hub's version.
        #[serde(default)]
        hub_version: Option<String>,
    },
    /// Work for the agent: one attempt of a task.
    Assign {
        /// The task.
        task_id: String,
        /// The new generation of this assignment.
        generation: u64,
        /// The whole task.
        task: Box<Task>,
    },
    /// Stop working on this attempt.
    Cancel {
        /// The task.
        task_id: String,
        /// The generation to stop.
        generation: u64,
        /// Why, in words.
        #[serde(default)]
        reason: Option<String>,
    },
    /// The hub has durably recorded a report, or found it stale: the
    /// sidecar may forget it.
    Ack {
        /// The task reported on.
        task_id: String,
        /// The generation reported on.
        generation: u64,
        /// Which report.
        of: AckOf,
    },
    /// A frame the hub could not use, and why. The connection stays up,
    /// except after a wrong protocol version, a `hello` for another agent
    /// or a frame too large, when a Close follows.
    Error {
        /// A stable, machine-readable code such as `bad_message`.
        code: String,
        /// A sentence for a person.
        message: String,
    },
}

impl HubMsg {
    /// Read one text frame.
    pub fn decode(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The text frame for this message.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("hub messages always serialise")
    }

    /// The `type` tag, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            HubMsg::Welcome { .. } => "welcome",
            HubMsg::Assign { .. } => "assign",
            HubMsg::Cancel { .. } => "cancel",
            HubMsg::Ack { .. } => "ack",
            HubMsg::Error { .. } => "error",
        }
    }

    /// An `error` frame.
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        HubMsg::Error {
            code: code.to_string(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Priority, TaskStatus};
    use crate::time::Timestamp;

    fn sample_task() -> Task {
        Task {
            id: "01J0000000000000000000000A".into(),
            title: "write 1".into(),
            description: "d".into(),
            priority: Priority::High,
            needed_capabilities: vec!["rust".into()],
            repo: None,
            idempotency_key: Some("k".into()),
            max_retries: 3,
            timeout_s: 60,
            context_budget_tokens: Some(1000),
            metadata: None,
            status: TaskStatus::Assigned,
            generation: 2,
            attempts: 1,
            assigned_to: Some("a1".into()),
            created_at: Timestamp(1),
            updated_at: Timestamp(2),
            queued_at: Some(Timestamp(1)),
            started_at: None,
            not_before: None,
            finished_at: None,
            kind: Default::default(),
            dossier: Default::default(),
            exclude_agents: Vec::new(),
            for_agent: None,
            free_attempts: 0,
            candidates: Vec::new(),
            result: None,
            last_error: None,
            history: None,
        }
    }

    fn all_sidecar_msgs() -> Vec<SidecarMsg> {
        vec![
            SidecarMsg::Hello {
                protocol_version: 1,
                agent_id: "a1".into(),
                capabilities: vec!["rust".into()],
                state: SidecarState::Working,
                current_task: Some(AttemptRef::new("t", 3)),
                sidecar_version: "0.1.0".into(),
                pending_results: vec![AttemptRef::new("u", 1)],
                repos: vec!["app".into()],
                context_window_tokens: Some(200_000),
                instance_id: None,
                selftest: None,
            },
            SidecarMsg::Heartbeat {
                state: SidecarState::Idle,
                task_id: None,
                generation: None,
                activity: None,
                selftest: None,
            },
            SidecarMsg::Accept {
                task_id: "t".into(),
                generation: 1,
            },
            SidecarMsg::Reject {
                task_id: "t".into(),
                generation: 1,
                reason: "busy".into(),
            },
            SidecarMsg::Progress {
                task_id: "t".into(),
                generation: 1,
                note: "half".into(),
            },
            SidecarMsg::Complete {
                task_id: "t".into(),
                generation: 1,
                result: TaskResult {
                    summary: Some("done".into()),
                    ..Default::default()
                },
            },
            SidecarMsg::Fail {
                task_id: "t".into(),
                generation: 1,
                error: "boom".into(),
                retryable: true,
                class: Default::default(),
                retry_after_s: None,
                log_tail: None,
            },
        ]
    }

    fn all_hub_msgs() -> Vec<HubMsg> {
        vec![
            HubMsg::Welcome {
                protocol_version: 1,
                heartbeat_interval_s: 30,
                heartbeat_timeout_s: Some(90),
                hub_version: Some("0.1.0".into()),
            },
            HubMsg::Assign {
                task_id: "t".into(),
                generation: 2,
                task: Box::new(sample_task()),
            },
            HubMsg::Cancel {
                task_id: "t".into(),
                generation: 2,
                reason: Some("operator".into()),
            },
            HubMsg::Ack {
                task_id: "t".into(),
                generation: 2,
                of: AckOf::Complete,
            },
            HubMsg::error("bad_frame", "not JSON"),
        ]
    }

    #[test]
    fn every_sidecar_message_round_trips() {
        for m in all_sidecar_msgs() {
            let text = m.encode();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["type"], m.kind(), "{text}");
            assert_eq!(SidecarMsg::decode(&text).unwrap(), m);
        }
    }

    #[test]
    fn every_hub_message_round_trips() {
        for m in all_hub_msgs() {
            let text = m.encode();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["type"], m.kind(), "{text}");
            assert_eq!(HubMsg::decode(&text).unwrap(), m);
        }
    }

    #[test]
    fn contract_examples_decode() {
        let hello = r#"{"type":"hello","protocol_version":1,"agent_id":"loash","capabilities":["rust","git"],
                        "state":"idle","current_task":null,"sidecar_version":"0.1.0"}"#;
        match SidecarMsg::decode(hello).unwrap() {
            SidecarMsg::Hello {
                pending_results,
                current_task,
                ..
            } => {
                assert!(pending_results.is_empty());
                assert!(current_task.is_none());
            }
            other => panic!("{other:?}"),
        }
        let hb = r#"{"type":"heartbeat","state":"working","task_id":"t","generation":4}"#;
        assert_eq!(
            SidecarMsg::decode(hb).unwrap(),
            SidecarMsg::Heartbeat {
                state: SidecarState::Working,
                task_id: Some("t".into()),
                generation: Some(4),
                activity: None,
                selftest: None,
            }
        );
        let ack = r#"{"type":"ack","task_id":"t","generation":4,"of":"complete"}"#;
        assert!(matches!(
            HubMsg::decode(ack).unwrap(),
            HubMsg::Ack {
                of: AckOf::Complete,
                ..
            }
        ));
    }

    #[test]
    fn unknown_type_is_an_error_not_a_panic() {
        let err = SidecarMsg::decode(r#"{"type":"teleport","task_id":"t"}"#).unwrap_err();
        assert!(err.to_string().contains("teleport"), "{err}");
        assert!(HubMsg::decode(r#"{"type":"teleport"}"#).is_err());
    }

    #[test]
    fn missing_fields_are_errors() {
        let err = SidecarMsg::decode(r#"{"type":"accept","task_id":"t"}"#).unwrap_err();
        assert!(err.to_string().contains("generation"), "{err}");
        assert!(SidecarMsg::decode(r#"{"task_id":"t","generation":1}"#).is_err());
        assert!(
            SidecarMsg::decode(r#"{"type":"fail","task_id":"t","generation":1,"error":"x"}"#)
                .is_err()
        );
        assert!(HubMsg::decode(r#"{"type":"assign","task_id":"t","generation":1}"#).is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        for text in [
            "",
            "not json",
            "[]",
            "42",
            "{\"type\":7}",
            "{\"type\":\"accept\",\"task_id\":1,\"generation\":1}",
        ] {
            assert!(SidecarMsg::decode(text).is_err(), "{text}");
            assert!(HubMsg::decode(text).is_err(), "{text}");
        }
    }
}
