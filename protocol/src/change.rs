//! Changes (the hub's pull requests), the repositories the hub guards,
//! and a task's dossier of past attempts, as the API returns them and as
//! `assign` carries them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// What kind of work a task is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Ordinary work.
    #[default]
    Task,
    /// Review another agent's change (`metadata.change_id`); its result
    /// holds `verdict` and `notes`.
    Review,
    /// The hub's check of a newly enrolled agent (`for_agent` names it):
    /// the sidecar answers it with its self-test, no runner runs.
    Verify,
}

impl TaskKind {
    /// Whether this is the default kind (for skipping it in JSON).
    pub fn is_task(&self) -> bool {
        *self == TaskKind::Task
    }
}

/// Where a change is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeStatus {
    /// Opened from a completed attempt; being inspected and judged.
    Open,
    /// A review task is out.
    Reviewing,
    /// Waits for a person (approve or reject).
    Escalated,
    /// In its repository's merge queue.
    Merging,
    /// On main.
    Merged,
    /// A conflict, a failed check or requested changes: its task was
    /// queued again.
    SentBack,
    /// A person said no.
    Rejected,
    /// A newer attempt of the same task opened another change.
    Superseded,
}

impl ChangeStatus {
    /// Every status.
    pub const ALL: [ChangeStatus; 8] = [
        ChangeStatus::Open,
        ChangeStatus::Reviewing,
        ChangeStatus::Escalated,
        ChangeStatus::Merging,
        ChangeStatus::Merged,
        ChangeStatus::SentBack,
        ChangeStatus::Rejected,
        ChangeStatus::Superseded,
    ];

    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeStatus::Open => "open",
            ChangeStatus::Reviewing => "reviewing",
            ChangeStatus::Escalated => "escalated",
            ChangeStatus::Merging => "merging",
            ChangeStatus::Merged => "merged",
            ChangeStatus::SentBack => "sent_back",
            ChangeStatus::Rejected => "rejected",
            ChangeStatus::Superseded => "superseded",
        }
    }

    /// The status with this JSON name, if any.
    pub fn parse(s: &str) -> Option<Self> {
        ChangeStatus::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Still going somewhere: at most one live change per task.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            ChangeStatus::Open
                | ChangeStatus::Reviewing
                | ChangeStatus::Escalated
                | ChangeStatus::Merging
        )
    }
}

impl fmt::Display for ChangeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What the gate decided about a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateDecision {
    /// Straight to the merge queue.
    AutoMerge,
    /// An agent with capability `review` reviews it first.
    Review,
    /// A person decides.
    Escalate,
}

/// The gate's decision and every reason for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    /// The decision.
    pub decision: GateDecision,
    /// Why, in sentences (empty for a plain auto-merge).
    pub reasons: Vec<String>,
}

/// A reviewer's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Merge it.
    Approve,
    /// Send it back to be done again, with the notes.
    RequestChanges,
    /// A person should decide.
    Escalate,
}

/// The review of a change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    /// The review task.
    pub task_id: String,
    /// Its verdict, once given.
    #[serde(default)]
    pub verdict: Option<Verdict>,
    /// The reviewer's notes.
    #[serde(default)]
    pub notes: Option<String>,
    /// The reviewing agent, once known.
    #[serde(default)]
    pub agent_id: Option<String>,
}

/// The last run of the repository's check on a change's merge result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckRun {
    /// The check command's exit code (None: killed at its timeout, or it
    /// could not start).
    pub exit_code: Option<i32>,
    /// The end of its output.
    pub log_tail: String,
    /// How long it ran.
    pub duration_s: f64,
    /// The merge commit it ran on.
    #[serde(default)]
    pub sha: Option<String>,
}

/// One transition of a change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeEntry {
    /// When.
    pub at: Timestamp,
    /// What happened (`opened`, `inspected`, `gated`, `review_requested`,
    /// `reviewed`, `approved`, `rejected`, `queued`, `check_passed`,
    /// `check_failed`, `conflict`, `main_moved`, `merged`, `sent_back`,
    /// `superseded`).
    pub event: String,
    /// The status before.
    pub from: Option<ChangeStatus>,
    /// The status after.
    pub to: Option<ChangeStatus>,
    /// Details, in words.
    pub detail: Option<String>,
}

/// A change: the hub's pull request for one attempt's branch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Its id.
    pub id: String,
    /// The task it is the work of.
    pub task_id: String,
    /// The repository.
    pub repo: String,
    /// The agent whose attempt it is.
    pub agent_id: String,
    /// That attempt's generation.
    pub generation: u64,
    /// The branch pushed.
    pub branch: String,
    /// The main commit the agent branched from.
    pub base: String,
    /// The branch's commit to merge.
    pub head: String,
    /// Changed paths, as the hub computed them (at most 1000 listed).
    #[serde(default)]
    pub files: Vec<String>,
    /// How many paths changed (may exceed `files.len()`).
    #[serde(default)]
    pub files_changed: u64,
    /// Lines added, as the hub computed them.
    #[serde(default)]
    pub lines_added: u64,
    /// Lines removed, as the hub computed them.
    #[serde(default)]
    pub lines_removed: u64,
    /// Where it is.
    pub status: ChangeStatus,
    /// The gate's decision, once judged.
    #[serde(default)]
    pub gate: Option<Gate>,
    /// The review, if one was asked for.
    #[serde(default)]
    pub review: Option<Review>,
    /// The last check run.
    #[serde(default)]
    pub check: Option<CheckRun>,
    /// The merge commit on main, once merged.
    #[serde(default)]
    pub merged_sha: Option<String>,
    /// When it was opened.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// Its transitions, oldest first: only in `GET /api/changes/{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<ChangeEntry>>,
}

/// Answer to `GET /api/changes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeList {
    /// The changes, newest first.
    pub changes: Vec<Change>,
}

/// Whether a repository's main passes its check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// The last check of main passed.
    Green,
    /// The last check of main failed: merges pause, its tasks wait.
    Red,
    /// Not checked yet.
    Unknown,
}

/// A repository the hub guards, as `GET /api/repos` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RepoInfo {
    /// Its name (tasks name it in `repo`).
    pub name: String,
    /// Its main branch.
    pub main_branch: String,
    /// Main's commit as last seen.
    pub main_sha: Option<String>,
    /// Main's health.
    pub health: Health,
    /// Merges wait (main is red).
    pub merges_paused: bool,
    /// The changes in its merge queue, next first.
    pub queue: Vec<String>,
}

/// How an earlier attempt of a task ended, as the next attempt sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The attempt's generation.
    pub generation: u64,
    /// Its agent.
    pub agent_id: String,
    /// How it ended (`failed`, `timed_out`, `released`, `sent_back`,
    /// `rejected`, `completed`, …).
    pub outcome: String,
    /// Who is to blame, when known.
    #[serde(default)]
    pub blame: Option<crate::Blame>,
    /// The error or reasons, in words.
    #[serde(default)]
    pub error: Option<String>,
    /// The end of the relevant log (the check's, for a failed check).
    #[serde(default)]
    pub log_tail: Option<String>,
    /// The branch it pushed, if any.
    #[serde(default)]
    pub branch: Option<String>,
    /// The branch's commit, if any.
    #[serde(default)]
    pub head: Option<String>,
    /// When it ended.
    pub at: Timestamp,
}

/// What a new attempt of a task is told of the ones before it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Dossier {
    /// Earlier attempts, oldest first (the most recent few).
    pub attempts: Vec<AttemptRecord>,
}

impl Dossier {
    /// Nothing recorded yet (for skipping it in JSON).
    pub fn is_empty(&self) -> bool {
        self.attempts.is_empty()
    }
}
