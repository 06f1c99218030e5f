//! The merge pipeline's rules across tasks and changes: a completed
//! attempt with commits opens a change and puts its task in review; the
//! hub's measurement goes through the gate; a review task's verdict, a
//! person's approval or rejection, and the merge queue's outcome move the
//! change, and its task with it (completed when merged; queued again,
//! with the reasons in its dossier, when sent back).
//!
//! Each function mutates the [`QueueCore`] and the [`ChangeCore`] together
//! (their deltas are written in one group commit) and answers the
//! [`Effect`]s the actors must carry out: measure a change, wake a merge
//! queue, raise an alert. Pure: no I/O, no clock, no actors.

use std::collections::BTreeMap;

use agentcom_protocol::{
    AttemptRef, ChangeStatus, CheckRun, NewTask, Priority, TaskKind, TaskResult, TaskStatus,
    Timestamp, Verdict as ReviewVerdict,
};
use serde_json::{json, Map, Value};

use crate::domain::changes::{ChangeCore, ChangeError};
use crate::domain::limits;
use crate::domain::queue::{QueueCore, QueueError, Verdict};
use crate::domain::repo::RepoConfig;

/// What the actors must do after a pipeline step.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Effect {
    /// Fetch and measure a change in the hub's clone of `repo`.
    Inspect {
        repo: String,
        change_id: String,
        branch: String,
        base: String,
        head: String,
    },
    /// A change joined `repo`'s merge queue (or its merges may resume).
    MergeKick { repo: String },
    /// Remember durably (with the group that records this step) that
    /// `repo`'s main is red at `red_at`, or no longer red (`None`), so a
    /// restarted hub keeps its merges and tasks paused until a check of
    /// main passes.
    RememberHealth {
        repo: String,
        red_at: Option<String>,
    },
    /// Tell people.
    Alert {
        kind: AlertKind,
        subject: String,
        message: String,
    },
}

/// Alerts the pipeline raises are among all the hub's ([`AlertKind`]).
pub(crate) use crate::domain::alert::AlertKind;

/// Why a pipeline command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PipelineError {
    #[error(transparent)]
    Task(#[from] QueueError),
    #[error(transparent)]
    Change(#[from] ChangeError),
}

/// The pipeline's view of the hub: the two cores and the repositories.
pub(crate) struct Pipeline<'a> {
    pub queue: &'a mut QueueCore,
    pub changes: &'a mut ChangeCore,
    pub repos: &'a BTreeMap<String, RepoConfig>,
}

/// How a change's review was asked for and answered, in a review task.
const REVIEW_HOWTO: &str = "Review the change: fetch the branch from the repository, read the \
diff against its base, run what you need. Then complete this task with a result file holding \
{\"verdict\": \"approve\" | \"request_changes\" | \"escalate\", \"notes\": \"...\"}: approve merges \
it (after the repository's check), request_changes sends it back to be done again with your \
notes, escalate asks a person. Do not push anything.";

impl Pipeline<'_> {
    /// An agent completed an attempt. A task on a repository with commits
    /// goes in review and its change opens; a review task's verdict moves
    /// the change it reviewed.
    pub(crate) fn complete(
        &mut self,
        attempt: &AttemptRef,
        agent: &str,
        result: TaskResult,
        now: Timestamp,
    ) -> (Verdict, Vec<Effect>) {
        let verdict = self.queue.complete(attempt, agent, result, now);
        let mut fx = Vec::new();
        if verdict != Verdict::Applied {
            return (verdict, fx);
        }
        let task = self
            .queue
            .get(&attempt.task_id)
            .expect("just completed")
            .clone();
        let r = task.result.clone().unwrap_or_default();
        if task.status == TaskStatus::InReview {
            let (branch, base, head) = (
                r.branch.clone().unwrap_or_default(),
                r.base.clone().unwrap_or_default(),
                r.head.clone().unwrap_or_default(),
            );
            let opened = self.changes.open(&task, agent, &branch, &base, &head, now);
            fx.push(Effect::Inspect {
                repo: opened.change.repo.clone(),
                change_id: opened.change.id,
                branch,
                base,
                head,
            });
        }
        if task.kind == TaskKind::Review {
            fx.extend(self.review_done(&task.id, agent, &r, now));
        }
        (verdict, fx)
    }

    /// A review task completed: its verdict moves the change.
    fn review_done(
        &mut self,
        review_task: &str,
        reviewer: &str,
        r: &TaskResult,
        now: Timestamp,
    ) -> Vec<Effect> {
        let Some(change_id) = self.review_target(review_task) else {
            return vec![];
        };
        if self.changes.get(&change_id).map(|c| c.status) != Some(ChangeStatus::Reviewing) {
            return vec![];
        }
        let notes = r
            .extra
            .get("notes")
            .and_then(Value::as_str)
            .map(|n| limits::cap_text(n, limits::MAX_ERROR_BYTES));
        let verdict = match r.extra.get("verdict").and_then(Value::as_str) {
            Some("approve") => ReviewVerdict::Approve,
            Some("request_changes") => ReviewVerdict::RequestChanges,
            Some("escalate") => ReviewVerdict::Escalate,
            other => {
                let why = format!(
                    "the review gave no verdict (verdict = {}); a person decides",
                    other.map_or("missing".to_string(), |v| format!("{v:?}"))
                );
                return self.escalate_review(&change_id, reviewer, why, now);
            }
        };
        let Ok(to) = self
            .changes
            .reviewed(&change_id, reviewer, verdict, notes.clone(), now)
        else {
            return vec![];
        };
        self.after_change_moved(
            &change_id,
            to,
            notes.unwrap_or_else(|| "changes requested".into()),
            None,
            now,
        )
    }

    fn escalate_review(
        &mut self,
        change_id: &str,
        reviewer: &str,
        why: String,
        now: Timestamp,
    ) -> Vec<Effect> {
        if self
            .changes
            .reviewed(
                change_id,
                reviewer,
                ReviewVerdict::Escalate,
                Some(why.clone()),
                now,
            )
            .is_err()
        {
            return vec![];
        }
        vec![self.escalated_alert(change_id, &why)]
    }

    /// The change a review task reviews.
    fn review_target(&self, review_task: &str) -> Option<String> {
        self.queue
            .get(review_task)?
            .metadata
            .as_ref()?
            .get("change_id")?
            .as_str()
            .map(str::to_string)
    }

    /// A task ended some other way than completing (failed for good,
    /// cancelled): a review task that will give no verdict hands its
    /// change to a person; a task in review takes its change with it.
    pub(crate) fn task_ended(&mut self, task_id: &str, now: Timestamp) -> Vec<Effect> {
        let Some(task) = self.queue.get(task_id).cloned() else {
            return vec![];
        };
        if !matches!(task.status, TaskStatus::Dead | TaskStatus::Cancelled) {
            return vec![];
        }
        if task.kind == TaskKind::Review {
            if let Some(change_id) = self.review_target(task_id) {
                if self.changes.get(&change_id).map(|c| c.status) == Some(ChangeStatus::Reviewing) {
                    let why = format!(
                        "the review task ended {} without a verdict; a person decides",
                        task.status
                    );
                    return self.escalate_review(&change_id, "hub", why, now);
                }
            }
            return vec![];
        }
        self.changes
            .task_ended(task_id, &format!("its task was {}", task.status), now);
        vec![]
    }

    /// An operator cancels a task (and its live change).
    pub(crate) fn cancel(
        &mut self,
        task_id: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(crate::domain::queue::Cancelled, Vec<Effect>), QueueError> {
        // A change being merged may be on main any moment: not now.
        self.changes
            .may_end_with_task(task_id)
            .map_err(|e| QueueError::Conflict(format!("task {task_id}: {e}")))?;
        let cancelled = self.queue.cancel(task_id, reason, now)?;
        let fx = self.task_ended(task_id, now);
        Ok((cancelled, fx))
    }

    /// The hub measured a change (or could not): through the gate.
    pub(crate) fn inspected(
        &mut self,
        change_id: &str,
        outcome: Result<(Vec<String>, u64, u64), String>,
        now: Timestamp,
    ) -> Result<Vec<Effect>, PipelineError> {
        let change = self
            .changes
            .get(change_id)
            .ok_or_else(|| ChangeError::NotFound(change_id.to_string()))?
            .clone();
        let (files, added, removed) = match outcome {
            Ok(stat) => stat,
            Err(reason) => {
                self.changes.unmeasurable(change_id, &reason, now)?;
                self.queue.send_back(
                    &change.task_id,
                    &format!("the change could not be measured: {reason}"),
                    None,
                    now,
                )?;
                return Ok(vec![]);
            }
        };
        let Some(repo) = self.repos.get(&change.repo) else {
            let why = format!("repository {} is no longer configured", change.repo);
            self.changes.unmeasurable(change_id, &why, now)?;
            self.queue.send_back(&change.task_id, &why, None, now)?;
            return Ok(vec![]);
        };
        let count = files.len() as u64;
        let gate = repo.gate.judge(&files, count, added + removed);
        let to = self
            .changes
            .judged(change_id, files, added, removed, gate.clone(), now)?;
        Ok(match to {
            ChangeStatus::Merging => vec![Effect::MergeKick { repo: change.repo }],
            ChangeStatus::Reviewing => {
                self.request_review(change_id, now)?;
                vec![]
            }
            ChangeStatus::Escalated => {
                vec![self.escalated_alert(change_id, &gate.reasons.join("; "))]
            }
            _ => vec![],
        })
    }

    /// Create the review task of a change in review.
    fn request_review(&mut self, change_id: &str, now: Timestamp) -> Result<(), PipelineError> {
        let c = self.changes.get(change_id).expect("exists").clone();
        let task = self.queue.get(&c.task_id).cloned();
        let (title, priority) = task
            .as_ref()
            .map(|t| (t.title.clone(), t.priority))
            .unwrap_or_else(|| (c.task_id.clone(), Priority::Normal));
        let url = self
            .repos
            .get(&c.repo)
            .map(|r| r.url.clone())
            .unwrap_or_default();
        let description = format!(
            "Change {} of task {} ({title}) by agent {}.\nRepository: {} ({url})\nBranch: {}\nBase: {}\nHead: {}\nFiles ({}): {}\nLines: +{} −{}\n\n{REVIEW_HOWTO}",
            c.id,
            c.task_id,
            c.agent_id,
            c.repo,
            c.branch,
            c.base,
            c.head,
            c.files_changed,
            c.files.join(", "),
            c.lines_added,
            c.lines_removed,
        );
        let mut metadata = Map::new();
        for (k, v) in [
            ("change_id", &c.id),
            ("task_id", &c.task_id),
            ("repo", &c.repo),
            ("repo_url", &url),
            ("branch", &c.branch),
            ("base", &c.base),
            ("head", &c.head),
        ] {
            metadata.insert(k.to_string(), json!(v));
        }
        let spec = NewTask {
            title: limits::cap_text(&format!("Review: {title}"), 190),
            description: Some(limits::cap_text(
                &description,
                agentcom_protocol::MAX_DESCRIPTION_BYTES - 64,
            )),
            priority: Some(priority),
            needed_capabilities: Some(vec!["review".into()]),
            metadata: Some(metadata),
            kind: Some(TaskKind::Review),
            ..Default::default()
        };
        let created = self
            .queue
            .create_excluding(spec, vec![c.agent_id.clone()], now)?;
        if let crate::domain::queue::Created::New(t) = created {
            self.changes.review_requested(change_id, &t.id, now)?;
        }
        Ok(())
    }

    /// A person approves a change: into the merge queue.
    pub(crate) fn approve(
        &mut self,
        change_id: &str,
        now: Timestamp,
    ) -> Result<Vec<Effect>, PipelineError> {
        self.changes.approve(change_id, now)?;
        let repo = self.changes.get(change_id).expect("exists").repo.clone();
        Ok(vec![Effect::MergeKick { repo }])
    }

    /// A person rejects a change: its task goes again (`requeue`) or dies.
    pub(crate) fn reject(
        &mut self,
        change_id: &str,
        reason: &str,
        requeue: bool,
        now: Timestamp,
    ) -> Result<Vec<Effect>, PipelineError> {
        let task_id = self
            .changes
            .get(change_id)
            .ok_or_else(|| ChangeError::NotFound(change_id.to_string()))?
            .task_id
            .clone();
        self.changes.reject(change_id, reason, now)?;
        if self.queue.get(&task_id).map(|t| t.status) == Some(TaskStatus::InReview) {
            self.queue.reject_change(&task_id, reason, requeue, now)?;
        }
        Ok(vec![])
    }

    /// A repository's merge queue finished with a change.
    pub(crate) fn merge_done(
        &mut self,
        change_id: &str,
        outcome: MergeResult,
        now: Timestamp,
    ) -> Result<Vec<Effect>, PipelineError> {
        let c = self
            .changes
            .get(change_id)
            .ok_or_else(|| ChangeError::NotFound(change_id.to_string()))?
            .clone();
        let mut fx = vec![Effect::MergeKick {
            repo: c.repo.clone(),
        }];
        match outcome {
            MergeResult::Merged { sha, check } => {
                self.changes.merged(change_id, &sha, check, now)?;
                if self.queue.get(&c.task_id).map(|t| t.status) == Some(TaskStatus::InReview) {
                    self.queue.change_merged(&c.task_id, &sha, now)?;
                }
            }
            MergeResult::Failed {
                event,
                reasons,
                check,
            } => {
                let log_tail = check.as_ref().map(|k| k.log_tail.clone());
                self.changes
                    .merge_failed(change_id, event, &reasons, check, now)?;
                fx.extend(self.after_change_moved(
                    change_id,
                    ChangeStatus::SentBack,
                    reasons,
                    log_tail,
                    now,
                ));
            }
        }
        Ok(fx)
    }

    /// After a change moved: wake its merge queue, send its task back,
    /// or raise an alert.
    fn after_change_moved(
        &mut self,
        change_id: &str,
        to: ChangeStatus,
        reasons: String,
        log_tail: Option<String>,
        now: Timestamp,
    ) -> Vec<Effect> {
        let Some(c) = self.changes.get(change_id).cloned() else {
            return vec![];
        };
        match to {
            ChangeStatus::Merging => vec![Effect::MergeKick { repo: c.repo }],
            ChangeStatus::SentBack => {
                if self.queue.get(&c.task_id).map(|t| t.status) == Some(TaskStatus::InReview) {
                    let _ = self.queue.send_back(&c.task_id, &reasons, log_tail, now);
                }
                vec![]
            }
            ChangeStatus::Escalated => vec![self.escalated_alert(change_id, &reasons)],
            _ => vec![],
        }
    }

    fn escalated_alert(&self, change_id: &str, why: &str) -> Effect {
        let c = self.changes.get(change_id);
        Effect::Alert {
            kind: AlertKind::ChangeEscalated,
            subject: change_id.to_string(),
            message: format!(
                "change {change_id} ({}, task {}) waits for a person: {why}",
                c.map(|c| c.branch.as_str()).unwrap_or("?"),
                c.map(|c| c.task_id.as_str()).unwrap_or("?"),
            ),
        }
    }

    /// A repository's main was checked: red pauses its merges and the
    /// assignment of its tasks; green resumes both.
    pub(crate) fn main_checked(
        &mut self,
        repo: &str,
        sha: &str,
        green: bool,
        check: Option<&CheckRun>,
    ) -> Vec<Effect> {
        let was_paused = self.queue.repo_paused(repo);
        self.queue.set_repo_paused(repo, !green);
        match (was_paused, green) {
            (false, false) => vec![
                Effect::RememberHealth {
                    repo: repo.to_string(),
                    red_at: Some(sha.to_string()),
                },
                Effect::Alert {
                    kind: AlertKind::MainRed,
                    subject: repo.to_string(),
                    message: format!(
                        "main of {repo} ({sha}) fails its check{}: merges are paused and its tasks wait",
                        check
                            .and_then(|c| c.exit_code)
                            .map(|c| format!(" (exit {c})"))
                            .unwrap_or_default()
                    ),
                },
            ],
            (true, true) => vec![
                Effect::RememberHealth {
                    repo: repo.to_string(),
                    red_at: None,
                },
                Effect::Alert {
                    kind: AlertKind::MainGreen,
                    subject: repo.to_string(),
                    message: format!("main of {repo} ({sha}) passes its check again: merges resume"),
                },
                Effect::MergeKick { repo: repo.to_string() },
            ],
            _ => vec![],
        }
    }
}

/// How a merge attempt ended, as the pipeline records it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MergeResult {
    Merged {
        sha: String,
        check: Option<CheckRun>,
    },
    /// Sent back: `event` names why (`conflict`, `check_failed`,
    /// `unmergeable`).
    Failed {
        event: &'static str,
        reasons: String,
        check: Option<CheckRun>,
    },
}

#[cfg(test)]
mod tests;
