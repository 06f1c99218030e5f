//! `QueueCore`: every task and every rule about how a task moves.
//!
//! It owns the live tasks (queued, assigned, working, failed), the priority
//! lanes (and which priorities an operator paused: `claim` passes them
//! over, as it does a red repository's tasks), the backoff schedule of failed tasks, the idempotency keys, and
//! the rules that decide whether a report from an agent is about the
//! current attempt (task id, owner and generation all match) or stale.
//! A batch of creates is all or nothing: every idempotency key is checked
//! before any task of it is created ([`QueueCore::create_batch`]).
//! Each mutation records the task's new state and its new history entries
//! as a [`TaskDelta`]; the caller drains them with [`QueueCore::take_deltas`],
//! makes them durable, and says so with [`QueueCore::durable`].
//!
//! Memory follows the live work, not the archive: once a finished task
//! (completed, dead, cancelled) is durable, the core keeps only its head
//! (no description, metadata or result) for a while, so late and repeated
//! reports are still recognised, then forgets it (`keep_finished`,
//! `keep_finished_ms`). A finished task an operator acts on again is loaded
//! back with [`QueueCore::adopt`]. Idempotency keys outlive their finished
//! task by `idempotency_ms`.
//!
//! It must never do I/O, read the clock (time comes in as `now`), or know
//! about actors, sockets or the store. Only the queue actor holds one.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use agentcom_protocol::{
    AttemptRecord, AttemptRef, Blame, Candidate, FailClass, HistoryEntry, NewTask, Priority, Task,
    TaskEvent, TaskKind, TaskResult, TaskStatus, Timestamp,
};

use crate::domain::blame::{self, Blamed, Charge, Failure};
use crate::domain::explain::QueueFacts;
use crate::domain::lanes::{lane_priority, LaneKind, Lanes};
use crate::domain::limits;
use crate::domain::matching::{self, IdleAgent};
use crate::domain::retry::{RetryDecision, RetryPolicy, Retryable};
use crate::domain::standing::Standing;
use crate::domain::usage::{self, Usage};

/// Defaults and policy the queue applies.
#[derive(Clone, Debug)]
pub struct QueueSettings {
    pub default_max_retries: u32,
    pub default_timeout_s: u64,
    pub retry: RetryPolicy,
    /// How many durable finished tasks stay in memory (heads only).
    pub keep_finished: usize,
    /// How long a durable finished task stays in memory at most.
    pub keep_finished_ms: i64,
    /// How long an idempotency key is remembered after its task finished.
    pub idempotency_ms: i64,
    /// `scheduler.max_concurrent`: most tasks out at once (assigned or
    /// working) across the fleet; 0 is no cap.
    pub max_concurrent: usize,
    /// `budgets.agent_daily_tokens`: an agent that spent this many tokens
    /// on the current UTC day gets no new task until the next; 0 is none.
    pub agent_daily_tokens: u64,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            default_max_retries: 3,
            default_timeout_s: 7200,
            retry: RetryPolicy::default(),
            keep_finished: 10_000,
            keep_finished_ms: 3_600_000,
            idempotency_ms: 24 * 3_600_000,
            max_concurrent: 0,
            agent_daily_tokens: 0,
        }
    }
}

/// At most this many `stale_report` notes are written into one task's
/// history; later stale reports are only counted.
pub(crate) const MAX_STALE_NOTES: u32 = 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("no task {0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

/// Result of a create.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    New(Box<Task>),
    /// The idempotency key was seen before, with the same task: the id of
    /// the task it created.
    Existing(String),
}

/// An idempotency key as stored, for [`QueueCore::restore`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredKey {
    pub key: String,
    pub id: String,
    /// [`spec_digest`] of the task it created.
    pub digest: String,
    /// When that task finished, if it has.
    pub finished_at: Option<Timestamp>,
}

/// What the queue made of a report from an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It was about the current attempt and changed the task.
    Applied,
    /// A resend of a report already recorded; nothing changes.
    Duplicate,
    /// Not about the current attempt; nothing changes (beyond a history note).
    Stale(String),
}

/// The queue's answer to a report: its verdict, what it means for the
/// reporting agent, and the other agents a failure blamed on the task
/// absolves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    pub verdict: Verdict,
    pub charge: Charge,
    /// Agents whose earlier failure of this task no longer counts.
    pub absolve: Vec<String>,
}

impl Judged {
    pub(crate) fn plain(verdict: Verdict) -> Judged {
        Judged {
            verdict,
            charge: Charge::None,
            absolve: Vec::new(),
        }
    }
}

/// A failed attempt as reported (by its sidecar, or by the hub).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailReport {
    pub error: String,
    pub retryable: Retryable,
    pub class: FailClass,
    pub retry_after_s: Option<u64>,
    pub log_tail: Option<String>,
}

impl FailReport {
    /// The hub's own finding (a time-out, a stall, a lost attempt): the
    /// agent's failure, retryable.
    pub(crate) fn by_hub(error: &str) -> FailReport {
        FailReport {
            error: error.to_string(),
            retryable: Retryable::Yes,
            class: FailClass::Agent,
            retry_after_s: None,
            log_tail: None,
        }
    }
}

/// A task given to an agent by [`QueueCore::claim`].
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub agent_id: String,
    pub task: Task,
}

/// An attempt an agent holds (its task assigned or working), as the
/// stuck-work sweep and the seeding of agent actors need it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outstanding {
    pub attempt: AttemptRef,
    pub agent: String,
    pub status: TaskStatus,
    /// When the task last changed (assigned, or accepted).
    pub since: Timestamp,
    pub timeout_s: u64,
}

impl Outstanding {
    fn of(t: &Task) -> Outstanding {
        Outstanding {
            attempt: AttemptRef::new(t.id.clone(), t.generation),
            agent: t.assigned_to.clone().unwrap_or_default(),
            status: t.status,
            since: t.updated_at,
            timeout_s: t.timeout_s,
        }
    }
}

/// The outcome of a cancel: the task, and the attempt to stop if an agent held it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cancelled {
    pub task: Task,
    pub stop: Option<(String, AttemptRef)>,
}

/// A task's new state and the history entries added since the last drain.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TaskDelta {
    pub task: Task,
    pub history_len: u32,
    pub new_history: Vec<(u32, HistoryEntry)>,
    /// The status before the first change of this drain (None: created).
    pub previous_status: Option<TaskStatus>,
    /// `finished_at` before the first change of this drain.
    pub previous_finished_at: Option<Timestamp>,
    /// The description and metadata must be written (created, or loaded
    /// back from the store).
    pub write_body: bool,
    /// The result must be written (completed).
    pub write_result: bool,
    /// The idempotency key must be written (created).
    pub write_key: Option<String>,
}

struct Entry {
    task: Task,
    history_len: u32,
    /// `stale_report` notes written into the history so far.
    stale_notes: u32,
    /// Finished and durable: description, metadata and result dropped.
    light: bool,
}

#[derive(Default)]
struct Pending {
    previous_status: Option<TaskStatus>,
    previous_finished_at: Option<Timestamp>,
    entries: Vec<(u32, HistoryEntry)>,
    write_body: bool,
    write_result: bool,
    write_key: Option<String>,
}

/// What the core remembers of an idempotency key.
struct KeyEntry {
    id: String,
    digest: String,
    finished_at: Option<Timestamp>,
}

pub(crate) struct QueueCore {
    settings: QueueSettings,
    tasks: HashMap<String, Entry>,
    lanes: Lanes,
    /// Failed tasks waiting out their backoff, by `not_before`.
    delayed: BTreeSet<(i64, String)>,
    idempotency: HashMap<String, KeyEntry>,
    /// Keys of finished tasks, by when their task finished (oldest first).
    keys_expiring: VecDeque<(Timestamp, String)>,
    /// Durable finished tasks kept in memory, by when they became durable.
    finished: VecDeque<(Timestamp, String)>,
    ids: ulid::Generator,
    dirty: BTreeMap<String, Pending>,
    /// Repositories whose main is red: their tasks are not assigned.
    paused_repos: BTreeSet<String>,
    /// Priorities an operator paused: their tasks (fresh and retry) stay
    /// queued.
    paused_lanes: BTreeSet<Priority>,
    /// The tasks out (assigned or working), for the fleet cap.
    out: BTreeSet<String>,
    /// Tokens and dollars spent per agent (see [`Usage`]).
    usage: Usage,
    /// The lanes' push count when every idle agent was last offered every
    /// queued task (see [`QueueCore::offered_all`]); none since a lane or
    /// repository reopened.
    offered: Option<u64>,
    /// The idle agents the last claims left (see [`Standing`]).
    standing: Standing,
    /// Tasks put in a lane while agents stood, not yet offered to them
    /// (see [`QueueCore::assign_standing`]).
    fresh: Vec<String>,
}

/// Whether `agent` may take `task` beyond capabilities: not excluded,
/// the agent it is for (if any), and a window that holds its budget.
fn eligible(task: &Task, agent: &IdleAgent) -> bool {
    !task.exclude_agents.contains(&agent.id)
        && task.for_agent.as_ref().is_none_or(|only| only == &agent.id)
        && agent.fits(task.context_budget_tokens)
}

/// Most late results a task keeps in `candidates`.
pub(crate) const MAX_CANDIDATES: usize = 10;

/// Most earlier attempts a task's dossier keeps.
pub(crate) const DOSSIER_ATTEMPTS: usize = 10;

/// What a lane groups a task by besides its capabilities: its repository,
/// as a mark no real capability can be (capabilities have no spaces). An
/// idle agent has the mark of each repository it has a clone of.
pub(crate) fn repo_mark(repo: &str) -> String {
    format!("@repo {repo}")
}

/// How an attempt that ended without success is written into the
/// dossier and history.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum AttemptEnd {
    /// The attempt failed (the agent said so, or the hub gave up on it),
    /// blamed as [`blame::judge`] decided.
    Failed {
        class: FailClass,
        blamed: Blamed,
        log_tail: Option<String>,
    },
    /// A person rejected its change.
    Rejected,
    /// Its change was sent back (conflict, failed check, changes
    /// requested): the task goes again, as after a failure.
    SentBack {
        log_tail: Option<String>,
        branch: Option<String>,
        head: Option<String>,
    },
}

impl QueueCore {
    pub(crate) fn new(settings: QueueSettings) -> Self {
        QueueCore {
            settings,
            tasks: HashMap::new(),
            lanes: Lanes::default(),
            delayed: BTreeSet::new(),
            idempotency: HashMap::new(),
            keys_expiring: VecDeque::new(),
            finished: VecDeque::new(),
            ids: ulid::Generator::new(),
            dirty: BTreeMap::new(),
            paused_repos: BTreeSet::new(),
            paused_lanes: BTreeSet::new(),
            out: BTreeSet::new(),
            usage: Usage::default(),
            offered: None,
            standing: Standing::default(),
            fresh: Vec::new(),
        }
    }

    /// What agents spent is this (the day's, stored, after a restart).
    pub(crate) fn set_usage(&mut self, usage: Usage) {
        self.usage = usage;
    }

    /// What agents spent, per agent and UTC day (see [`Usage`]).
    pub(crate) fn usage_state(&self) -> &Usage {
        &self.usage
    }

    /// How many tasks are out (assigned or working).
    #[cfg(test)]
    pub(crate) fn out_count(&self) -> usize {
        self.out.len()
    }

    /// Pause or resume assigning the tasks of a priority (both its fresh
    /// and its retry lane). True if that changed anything.
    pub(crate) fn set_lane_paused(&mut self, priority: Priority, paused: bool) -> bool {
        if paused {
            self.paused_lanes.insert(priority)
        } else {
            let reopened = self.paused_lanes.remove(&priority);
            if reopened {
                // Its tasks were never offered: nobody turned them down,
                // and a standing agent may take one of them now.
                self.offered = None;
                self.standing.invalidate();
            }
            reopened
        }
    }

    /// The priorities whose tasks are held back, in service order.
    pub(crate) fn paused_lanes(&self) -> Vec<Priority> {
        self.paused_lanes.iter().copied().collect()
    }

    /// Pause or resume assigning the tasks of a repository (main red or
    /// green again).
    pub(crate) fn set_repo_paused(&mut self, repo: &str, paused: bool) {
        if paused {
            self.paused_repos.insert(repo.to_string());
        } else if self.paused_repos.remove(repo) {
            self.offered = None;
            self.standing.invalidate();
        }
    }

    /// Whether a repository's tasks are held back.
    pub(crate) fn repo_paused(&self, repo: &str) -> bool {
        self.paused_repos.contains(repo)
    }

    /// What the queue knows of task `id`'s wait (for explain).
    pub(crate) fn facts(&self, id: &str, now: Timestamp) -> QueueFacts {
        let limit = self.settings.agent_daily_tokens;
        QueueFacts {
            fleet_cap: (self.settings.max_concurrent > 0
                && self.out.len() >= self.settings.max_concurrent)
                .then_some((self.settings.max_concurrent, self.out.len())),
            daily_tokens: limit,
            spent_today: self
                .usage
                .view(now)
                .agents
                .into_iter()
                .map(|(a, s)| (a, s.tokens))
                .collect(),
            place: self.lanes.place(id),
            lane_paused: self
                .get(id)
                .is_some_and(|t| self.paused_lanes.contains(&t.priority)),
            repo_red: self
                .get(id)
                .and_then(|t| t.repo.as_deref())
                .is_some_and(|r| self.repo_paused(r)),
        }
    }

    /// Rebuild from the stored live tasks (each with its history length)
    /// and the stored idempotency keys.
    pub(crate) fn restore(
        settings: QueueSettings,
        live: impl IntoIterator<Item = (Task, u32)>,
        keys: impl IntoIterator<Item = StoredKey>,
    ) -> Self {
        let mut core = QueueCore::new(settings);
        for (task, history_len) in live {
            let id = task.id.clone();
            if matches!(task.status, TaskStatus::Assigned | TaskStatus::Working) {
                core.out.insert(id.clone());
            }
            core.tasks
                .insert(id.clone(), Entry::full(task, history_len));
            core.index(&id);
        }
        let mut expiring: Vec<(Timestamp, String)> = Vec::new();
        for k in keys {
            if let Some(at) = k.finished_at {
                expiring.push((at, k.key.clone()));
            }
            core.idempotency.insert(
                k.key,
                KeyEntry {
                    id: k.id,
                    digest: k.digest,
                    finished_at: k.finished_at,
                },
            );
        }
        expiring.sort();
        core.keys_expiring = expiring.into();
        core
    }

    /// Put a finished task loaded from the store back in memory, whole, so
    /// an operator can act on it (cancel, retry). A task already held
    /// whole is left as it is.
    pub(crate) fn adopt(&mut self, task: Task, history_len: u32) {
        let id = task.id.clone();
        match self.tasks.get_mut(&id) {
            Some(e) if !e.light => return,
            // Held as a head: that head is the newest state; take only the
            // heavy fields from the store.
            Some(e) => {
                e.task.description = task.description;
                e.task.metadata = task.metadata;
                e.task.result = task.result;
                e.light = false;
            }
            None => {
                self.tasks
                    .insert(id.clone(), Entry::full(task, history_len));
            }
        }
        // Its next change rewrites the body: the store's copy may have gone
        // meanwhile (retention).
        self.pending(&id).write_body = true;
    }

    /// Whether an operator command on `id` needs the task loaded from the
    /// store first ([`QueueCore::adopt`]): it is not held whole.
    pub(crate) fn needs_load(&self, id: &str) -> bool {
        self.tasks.get(id).is_none_or(|e| e.light)
    }

    /// Whether the task is held in memory (whole or head only).
    #[cfg(test)]
    pub(crate) fn holds(&self, id: &str) -> bool {
        self.tasks.contains_key(id)
    }

    pub(crate) fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id).map(|e| &e.task)
    }

    /// Tasks held in memory: live ones and recently finished heads.
    pub(crate) fn len(&self) -> usize {
        self.tasks.len()
    }

    pub(crate) fn queued_len(&self) -> usize {
        self.lanes.len()
    }

    #[cfg(test)]
    pub(crate) fn lanes(&self) -> &Lanes {
        &self.lanes
    }

    /// The attempts agents hold (of `agent` only, when given), for seeding
    /// agent actors and for the stuck-work sweep.
    pub(crate) fn outstanding(&self, agent: Option<&str>) -> Vec<Outstanding> {
        self.tasks
            .values()
            .map(|e| &e.task)
            .filter(|t| t.status.is_active())
            .filter(|t| agent.is_none_or(|a| t.assigned_to.as_deref() == Some(a)))
            .map(Outstanding::of)
            .collect()
    }

    /// When the earliest backoff or `run_at` ends, if any task waits.
    pub(crate) fn next_due(&self) -> Option<Timestamp> {
        self.delayed.first().map(|(t, _)| Timestamp(*t))
    }

    /// Drain the changes made since the last call.
    pub(crate) fn take_deltas(&mut self) -> Vec<TaskDelta> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .filter_map(|(id, pending)| {
                let e = self.tasks.get(&id)?;
                Some(TaskDelta {
                    task: e.task.clone(),
                    history_len: e.history_len,
                    new_history: pending.entries,
                    previous_status: pending.previous_status,
                    previous_finished_at: pending.previous_finished_at,
                    write_body: pending.write_body,
                    write_result: pending.write_result,
                    write_key: pending.write_key,
                })
            })
            .collect()
    }

    /// These changes are durable: finished tasks among them keep only
    /// their head in memory from now on, and the oldest finished tasks and
    /// expired idempotency keys are forgotten.
    pub(crate) fn durable(&mut self, changes: &[TaskDelta], now: Timestamp) {
        for c in changes {
            let id = &c.task.id;
            if self.dirty.contains_key(id) {
                continue; // changed again meanwhile; its next drain decides
            }
            let Some(e) = self.tasks.get_mut(id) else {
                continue;
            };
            if !e.task.status.is_terminal() {
                continue;
            }
            if !e.light {
                e.light = true;
                e.task.description = String::new();
                e.task.metadata = None;
                e.task.result = None;
                self.finished.push_back((now, id.clone()));
            }
            if let (Some(key), Some(at)) = (&e.task.idempotency_key, e.task.finished_at) {
                if let Some(k) = self.idempotency.get_mut(key) {
                    if k.finished_at != Some(at) {
                        k.finished_at = Some(at);
                        self.keys_expiring.push_back((at, key.clone()));
                    }
                }
            }
        }
        self.forget(now);
    }

    /// The store deleted these finished tasks (retention).
    pub(crate) fn purged(&mut self, ids: &[String]) {
        for id in ids {
            if self.tasks.get(id).is_some_and(|e| e.light) {
                self.tasks.remove(id);
            }
        }
        let gone: BTreeSet<&String> = ids.iter().collect();
        self.idempotency.retain(|_, k| !gone.contains(&k.id));
    }

    /// Drop finished heads past `keep_finished` / `keep_finished_ms`, and
    /// idempotency keys whose task finished over `idempotency_ms` ago.
    fn forget(&mut self, now: Timestamp) {
        let s = &self.settings;
        while let Some((at, id)) = self.finished.front().cloned() {
            let old = now.millis_since(at) > s.keep_finished_ms;
            if !old && self.finished.len() <= s.keep_finished {
                break;
            }
            self.finished.pop_front();
            let still_light = self.tasks.get(&id).is_some_and(|e| e.light);
            if still_light && !self.dirty.contains_key(&id) {
                self.tasks.remove(&id);
            }
        }
        while let Some((at, key)) = self.keys_expiring.front().cloned() {
            if now.millis_since(at) <= s.idempotency_ms {
                break;
            }
            self.keys_expiring.pop_front();
            if self
                .idempotency
                .get(&key)
                .is_some_and(|k| k.finished_at == Some(at))
            {
                self.idempotency.remove(&key);
            }
        }
    }

    /// The ids held in memory (retention never deletes those).
    pub(crate) fn held_ids(&self) -> BTreeSet<String> {
        self.tasks.keys().cloned().collect()
    }

    // ----- operator operations -------------------------------------------

    /// Create a task (validated by the caller), or name the task an earlier
    /// create with the same idempotency key made. The same key with a
    /// different task is a conflict.
    pub(crate) fn create(&mut self, spec: NewTask, now: Timestamp) -> Result<Created, QueueError> {
        self.create_excluding(spec, Vec::new(), now)
    }

    /// As [`QueueCore::create`], for a task never to be given to these
    /// agents (a review task is never its change's author's).
    pub(crate) fn create_excluding(
        &mut self,
        spec: NewTask,
        exclude_agents: Vec<String>,
        now: Timestamp,
    ) -> Result<Created, QueueError> {
        let task = self.build(spec, exclude_agents, now);
        let digest = task.idempotency_key.as_ref().map(|_| spec_digest(&task));
        if let (Some(key), Some(digest)) = (&task.idempotency_key, &digest) {
            if let Some(k) = self.idempotency.get(key) {
                return if &k.digest == digest {
                    Ok(Created::Existing(k.id.clone()))
                } else {
                    Err(key_conflict(key, &k.id))
                };
            }
        }
        Ok(Created::New(Box::new(self.insert(task, digest, now))))
    }

    /// Create every task of a batch (each validated by the caller), or
    /// none: every idempotency key is checked first, against the keys
    /// known and those earlier in the batch, and only when all pass are
    /// the tasks created (so their changes are staged together and made
    /// durable by one group). The answers come in the batch's order: a
    /// task whose key was seen before answers that task
    /// ([`Created::Existing`]; a key repeated in the batch with the same
    /// body answers the batch's first task of that key). The first
    /// refused task is named by its index.
    pub(crate) fn create_batch(
        &mut self,
        specs: Vec<NewTask>,
        now: Timestamp,
    ) -> Result<Vec<Created>, (usize, QueueError)> {
        let tasks: Vec<Task> = specs
            .into_iter()
            .map(|spec| self.build(spec, Vec::new(), now))
            .collect();
        // Each task's digest when it has a key, and the id it answers when
        // that key was seen before.
        let mut digests: Vec<Option<String>> = Vec::with_capacity(tasks.len());
        let mut existing: Vec<Option<String>> = vec![None; tasks.len()];
        let mut first_of: HashMap<&str, usize> = HashMap::new();
        for (i, task) in tasks.iter().enumerate() {
            let Some(key) = task.idempotency_key.as_deref() else {
                digests.push(None);
                continue;
            };
            let digest = spec_digest(task);
            if let Some(k) = self.idempotency.get(key) {
                if k.digest != digest {
                    return Err((i, key_conflict(key, &k.id)));
                }
                existing[i] = Some(k.id.clone());
            } else if let Some(&j) = first_of.get(key) {
                if digests[j].as_deref() != Some(digest.as_str()) {
                    return Err((
                        i,
                        QueueError::Conflict(format!(
                            "idempotency key {key:?} is also tasks[{j}]'s, with a different body"
                        )),
                    ));
                }
                existing[i] = Some(tasks[j].id.clone());
            } else {
                first_of.insert(key, i);
            }
            digests.push(Some(digest));
        }
        let mut out = Vec::with_capacity(tasks.len());
        for ((task, digest), seen) in tasks.into_iter().zip(digests).zip(existing) {
            out.push(match seen {
                Some(id) => Created::Existing(id),
                None => Created::New(Box::new(self.insert(task, digest, now))),
            });
        }
        Ok(out)
    }

    /// A new task from what a create asked for, with the defaults
    /// applied and a fresh id; not yet in the queue.
    fn build(&mut self, spec: NewTask, exclude_agents: Vec<String>, now: Timestamp) -> Task {
        let id = self.new_id(now);
        // A time already past is now.
        let waits_until = spec.run_at.filter(|at| *at > now);
        let mut needed = spec.needed_capabilities.unwrap_or_default();
        needed.sort();
        needed.dedup();
        Task {
            id,
            title: spec.title,
            description: spec.description.unwrap_or_default(),
            priority: spec.priority.unwrap_or_default(),
            needed_capabilities: needed,
            repo: spec.repo,
            idempotency_key: spec.idempotency_key,
            max_retries: spec
                .max_retries
                .unwrap_or(self.settings.default_max_retries),
            timeout_s: spec.timeout_s.unwrap_or(self.settings.default_timeout_s),
            context_budget_tokens: spec.context_budget_tokens,
            metadata: spec.metadata,
            status: TaskStatus::Queued,
            generation: 0,
            attempts: 0,
            assigned_to: None,
            created_at: now,
            updated_at: now,
            queued_at: Some(now),
            started_at: None,
            not_before: waits_until,
            finished_at: None,
            kind: spec.kind.unwrap_or_default(),
            dossier: Default::default(),
            free_attempts: 0,
            candidates: Vec::new(),
            exclude_agents,
            for_agent: spec.for_agent,
            result: None,
            last_error: None,
            history: None,
        }
    }

    /// Put a task [`QueueCore::build`] made into the queue (its key, whose
    /// `digest` is given, not yet known): its lane, its key, its history.
    fn insert(&mut self, task: Task, digest: Option<String>, now: Timestamp) -> Task {
        let id = task.id.clone();
        let key = task.idempotency_key.clone();
        if let (Some(key), Some(digest)) = (&key, digest) {
            self.idempotency.insert(
                key.clone(),
                KeyEntry {
                    id: id.clone(),
                    digest,
                    finished_at: None,
                },
            );
        }
        let waits_until = task.not_before;
        self.tasks.insert(id.clone(), Entry::full(task, 0));
        self.dirty.insert(
            id.clone(),
            Pending {
                previous_status: None,
                write_body: true,
                write_key: key,
                ..Default::default()
            },
        );
        self.record(
            &id,
            TaskEvent::Created,
            None,
            Some(TaskStatus::Queued),
            None,
            waits_until.map(|at| format!("waits until {at} (run_at)")),
            now,
        );
        self.index(&id);
        self.get(&id).expect("just inserted").clone()
    }

    /// Cancel a task. An agent holding it must be told to stop (`stop`).
    pub(crate) fn cancel(
        &mut self,
        id: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<Cancelled, QueueError> {
        let task = self
            .get(id)
            .ok_or_else(|| QueueError::NotFound(id.to_string()))?;
        match task.status {
            TaskStatus::Completed => {
                return Err(QueueError::Conflict(format!(
                    "task {id} is completed and cannot be cancelled"
                )))
            }
            TaskStatus::Cancelled => {
                return Ok(Cancelled {
                    task: task.clone(),
                    stop: None,
                })
            }
            _ => {}
        }
        let stop = task.status.is_active().then(|| {
            (
                task.assigned_to.clone().unwrap_or_default(),
                AttemptRef::new(id, task.generation),
            )
        });
        let agent = stop.as_ref().map(|(a, _)| a.clone());
        self.unindex(id);
        self.set_status(
            id,
            TaskStatus::Cancelled,
            TaskEvent::Cancelled,
            agent.as_deref(),
            Some(reason.to_string()),
            now,
        );
        Ok(Cancelled {
            task: self.get(id).expect("exists").clone(),
            stop,
        })
    }

    /// Revive a dead, failed or cancelled task with a fresh retry budget.
    pub(crate) fn retry(&mut self, id: &str, now: Timestamp) -> Result<Task, QueueError> {
        let task = self
            .get(id)
            .ok_or_else(|| QueueError::NotFound(id.to_string()))?;
        if !matches!(
            task.status,
            TaskStatus::Dead | TaskStatus::Failed | TaskStatus::Cancelled
        ) {
            return Err(QueueError::Conflict(format!(
                "task {id} is {} and only dead, failed or cancelled tasks can be retried",
                task.status
            )));
        }
        let detail = format!("revived by operator after {} attempt(s)", task.attempts);
        self.unindex(id);
        {
            let t = self.task_mut(id);
            t.attempts = 0;
            t.not_before = None;
            t.queued_at = Some(now);
            t.finished_at = None;
        }
        self.set_status(
            id,
            TaskStatus::Queued,
            TaskEvent::Revived,
            None,
            Some(detail),
            now,
        );
        self.index(id);
        Ok(self.get(id).expect("exists").clone())
    }

    // ----- scheduling -----------------------------------------------------

    /// Assign queued tasks to idle agents (see [`matching::plan`]). Each
    /// assignment increments the task's generation. A task for one agent
    /// (`for_agent`) goes to that agent only, never holding up the tasks
    /// behind it.
    /// An agent that spent its day's tokens gets nothing; a task with a
    /// context budget goes only to an agent whose window holds it; no more
    /// than `max_concurrent` tasks are out at once.
    pub(crate) fn claim(&mut self, agents: &[IdleAgent], now: Timestamp) -> Vec<Assignment> {
        self.claim_where(agents, None, now)
    }

    /// The scheduler's claim: [`QueueCore::claim`] for the agents it
    /// offers, except one given a task by [`QueueCore::assign_standing`]
    /// in a notice the scheduler had not seen (`seen`: the last gift it
    /// had); the agents it leaves idle stand. A claim of everyone (`all`)
    /// also marks the tasks it leaves queued as offered to every idle
    /// agent ([`QueueCore::offered_all`]) and replaces the standing set.
    pub(crate) fn claim_offered(
        &mut self,
        agents: Vec<IdleAgent>,
        all: bool,
        seen: u64,
        now: Timestamp,
    ) -> Vec<Assignment> {
        self.standing.seen(seen);
        let agents = self.standing.offerable(agents);
        let got = self.claim(&agents, now);
        if all {
            self.offered_all();
        }
        let taken: BTreeSet<&str> = got.iter().map(|a| a.agent_id.as_str()).collect();
        let left: Vec<IdleAgent> = agents
            .iter()
            .filter(|a| !taken.contains(a.id.as_str()))
            .cloned()
            .collect();
        self.standing.stand(left, all);
        got
    }

    /// The scheduler says an agent is no longer idle.
    pub(crate) fn withdraw(&mut self, agent: &str) {
        self.standing.withdraw(agent);
    }

    /// Offer the tasks put in a lane since the last call to the standing
    /// agents, in service order, each to the capable agent idle longest
    /// that may take it (as a claim would: right after a claim no
    /// standing agent can take a task left queued, so a new task is the
    /// only one they may). Each assignment is numbered
    /// ([`QueueCore::last_gift`]); its agent is left out of claims until
    /// the scheduler has seen it. None under a fleet cap (a claim shares
    /// out the places), or while the standing set is unusable.
    pub(crate) fn assign_standing(&mut self, now: Timestamp) -> Vec<Assignment> {
        let fresh = std::mem::take(&mut self.fresh);
        if fresh.is_empty() || !self.standing.usable() || self.settings.max_concurrent > 0 {
            return Vec::new();
        }
        let mut keys: Vec<(usize, i64, String)> = fresh
            .into_iter()
            .filter_map(|id| {
                let (lane, at, _) = self.lanes.key(&id)?;
                Some((lane, at, id))
            })
            .collect();
        keys.sort();
        keys.dedup();
        let limit = self.settings.agent_daily_tokens;
        let mut out = Vec::new();
        for (lane, _, id) in keys {
            let Some((_, _, needs)) = self.lanes.key(&id) else {
                continue;
            };
            if !self.lane_open(lane, needs) {
                continue;
            }
            let Some(entry) = self.tasks.get(&id) else {
                continue;
            };
            let task = &entry.task;
            let ok = |a: &IdleAgent| {
                eligible(task, a) && !(limit > 0 && self.usage.over(&a.id, limit, now))
            };
            let agent = match &task.for_agent {
                Some(only) => self.standing.get(only).filter(|a| a.can_do(needs) && ok(a)),
                None => self.standing.pick(needs, ok),
            };
            let Some(agent) = agent.map(|a| a.id.clone()) else {
                continue;
            };
            self.standing.give(&agent);
            out.push(self.assign(&id, agent, now));
            if !self.standing.usable() {
                break;
            }
        }
        out
    }

    /// How many agents stand.
    pub(crate) fn standing_len(&self) -> usize {
        self.standing.len()
    }

    /// The number of the last task [`QueueCore::assign_standing`] gave.
    pub(crate) fn last_gift(&self) -> u64 {
        self.standing.gifts()
    }

    /// Every idle agent was just offered every queued task (the claim
    /// that ran offered them all): a task left queued now is one no idle
    /// agent can take. [`QueueCore::claim_next`] may give such a task to
    /// an agent whose attempt ends.
    pub(crate) fn offered_all(&mut self) {
        self.offered = Some(self.lanes.pushes());
    }

    /// The next task for an agent whose attempt ends now (its completion
    /// staged just before), so that the assignment is made durable with
    /// the completion instead of one step later. Only a task every idle
    /// agent was offered and turned down (queued by the last
    /// [`QueueCore::offered_all`], in a lane open since), so it goes to
    /// no one the matching rule prefers: a task queued since waits for
    /// the scheduler's claim. None under a fleet cap (the place the
    /// completion frees goes to the longest idle agent), else as
    /// [`QueueCore::claim`] for this agent alone.
    pub(crate) fn claim_next(&mut self, agent: &IdleAgent, now: Timestamp) -> Option<Task> {
        let mark = self.offered?;
        if self.settings.max_concurrent > 0 {
            return None;
        }
        self.claim_where(std::slice::from_ref(agent), Some(mark), now)
            .pop()
            .map(|a| a.task)
    }

    /// [`QueueCore::claim`], only of the tasks pushed into their lanes by
    /// `pushed_by` when given.
    fn claim_where(
        &mut self,
        agents: &[IdleAgent],
        pushed_by: Option<u64>,
        now: Timestamp,
    ) -> Vec<Assignment> {
        let cap = self.settings.max_concurrent;
        if cap > 0 && self.out.len() >= cap {
            return Vec::new();
        }
        let limit = self.settings.agent_daily_tokens;
        let within: Vec<IdleAgent>;
        let agents = if limit > 0 {
            within = agents
                .iter()
                .filter(|a| !self.usage.over(&a.id, limit, now))
                .cloned()
                .collect();
            &within[..]
        } else {
            agents
        };
        let tasks = &self.tasks;
        let lanes = &self.lanes;
        let pairs = matching::plan(
            &self.lanes,
            agents,
            |lane, needs| self.lane_open(lane, needs),
            |task_id, agent| {
                pushed_by.is_none_or(|mark| lanes.pushed_by(task_id, mark))
                    && tasks.get(task_id).is_some_and(|e| eligible(&e.task, agent))
            },
        );
        let room = if cap > 0 {
            cap - self.out.len()
        } else {
            usize::MAX
        };
        let mut pairs = pairs;
        pairs.truncate(room);
        pairs
            .into_iter()
            .map(|(task_id, agent_id)| self.assign(&task_id, agent_id, now))
            .collect()
    }

    /// Whether the tasks of this lane and capability group may be
    /// assigned (its priority not paused, its repository's main not red).
    fn lane_open(&self, lane: usize, needs: &[String]) -> bool {
        !self.paused_lanes.contains(&lane_priority(lane))
            && !self
                .paused_repos
                .iter()
                .any(|r| needs.contains(&repo_mark(r)))
    }

    /// Give queued task `task_id` to `agent_id`: a new generation.
    fn assign(&mut self, task_id: &str, agent_id: String, now: Timestamp) -> Assignment {
        self.lanes.remove(task_id);
        {
            let t = self.task_mut(task_id);
            t.generation += 1;
            t.assigned_to = Some(agent_id.clone());
            t.not_before = None;
        }
        self.set_status(
            task_id,
            TaskStatus::Assigned,
            TaskEvent::Assigned,
            Some(&agent_id),
            None,
            now,
        );
        Assignment {
            agent_id,
            task: self.get(task_id).expect("exists").clone(),
        }
    }

    /// Move failed tasks whose backoff has ended, and scheduled tasks
    /// whose `run_at` came, into their lane.
    pub(crate) fn promote_due(&mut self, now: Timestamp) -> usize {
        let due: Vec<String> = self
            .delayed
            .iter()
            .take_while(|(t, _)| *t <= now.0)
            .map(|(_, id)| id.clone())
            .collect();
        for id in &due {
            if self.get(id).map(|t| t.status) == Some(TaskStatus::Queued) {
                self.unindex(id);
                {
                    let t = self.task_mut(id);
                    t.not_before = None;
                    t.queued_at = Some(now);
                }
                self.record(
                    id,
                    TaskEvent::Due,
                    Some(TaskStatus::Queued),
                    Some(TaskStatus::Queued),
                    None,
                    Some("run_at reached".into()),
                    now,
                );
                self.index(id);
            } else {
                self.requeue_after_failure(id, now);
            }
        }
        due.len()
    }

    // ----- reports about an attempt -----------------------------------------

    /// The agent accepted the attempt: assigned → working.
    pub(crate) fn accept(&mut self, attempt: &AttemptRef, agent: &str, now: Timestamp) -> Verdict {
        match self.check(attempt, agent) {
            Check::Current(TaskStatus::Assigned) => {
                let t = self.task_mut(&attempt.task_id);
                t.attempts += 1;
                t.started_at = Some(now);
                self.set_status(
                    &attempt.task_id,
                    TaskStatus::Working,
                    TaskEvent::Accepted,
                    Some(agent),
                    None,
                    now,
                );
                Verdict::Applied
            }
            Check::Current(_) => Verdict::Duplicate,
            Check::Ended => Verdict::Stale("the attempt has already ended".into()),
            Check::Stale(why) => self.stale(attempt, agent, "accept", why, now),
        }
    }

    /// The agent finished the attempt successfully. At most one completion
    /// is ever recorded per task.
    pub(crate) fn complete(
        &mut self,
        attempt: &AttemptRef,
        agent: &str,
        result: TaskResult,
        now: Timestamp,
    ) -> Verdict {
        match self.check(attempt, agent) {
            Check::Current(status) => {
                let result = limits::cap_result(result);
                let spent = usage::spent_by(&result);
                let summary = result
                    .summary
                    .as_deref()
                    .map(|s| limits::cap_text(s, limits::MAX_DETAIL_BYTES));
                let review = opens_review(self.get(&attempt.task_id).expect("exists"), &result);
                {
                    let t = self.task_mut(&attempt.task_id);
                    if status == TaskStatus::Assigned {
                        t.attempts += 1;
                        t.started_at = Some(now);
                    }
                    t.result = Some(result);
                }
                self.usage.record(agent, spent, now);
                self.pending(&attempt.task_id).write_result = true;
                let (to, event) = if review {
                    (TaskStatus::InReview, TaskEvent::InReview)
                } else {
                    (TaskStatus::Completed, TaskEvent::Completed)
                };
                self.set_status(&attempt.task_id, to, event, Some(agent), summary, now);
                Verdict::Applied
            }
            Check::Ended
                if matches!(
                    self.get(&attempt.task_id).map(|t| t.status),
                    Some(TaskStatus::Completed | TaskStatus::InReview)
                ) =>
            {
                Verdict::Duplicate
            }
            Check::Ended => {
                let why = format!(
                    "the attempt had already ended ({})",
                    self.get(&attempt.task_id).expect("exists").status
                );
                self.late_result(attempt, agent, &result, why, now)
            }
            Check::Stale(why) => self.late_result(attempt, agent, &result, why, now),
        }
    }

    /// A `complete` for an attempt that is no longer current: noted, and
    /// kept in the task's `candidates` when it carries a branch and comes
    /// from the agent that held that generation.
    fn late_result(
        &mut self,
        attempt: &AttemptRef,
        agent: &str,
        result: &TaskResult,
        why: String,
        now: Timestamp,
    ) -> Verdict {
        let Some(t) = self.get(&attempt.task_id) else {
            return Verdict::Stale(why);
        };
        if t.candidates
            .iter()
            .any(|c| c.generation == attempt.generation && c.agent_id == agent)
        {
            return Verdict::Duplicate;
        }
        let held_it = (t.generation == attempt.generation
            && t.assigned_to.as_deref() == Some(agent))
            || t.dossier
                .attempts
                .iter()
                .any(|r| r.generation == attempt.generation && r.agent_id == agent);
        let result = limits::cap_result(result.clone());
        let keep = held_it && attempt.generation <= t.generation;
        let detail = match (&result.branch, keep) {
            (Some(branch), true) => {
                let candidate = Candidate {
                    generation: attempt.generation,
                    agent_id: agent.to_string(),
                    branch: branch.clone(),
                    base: result.base.clone(),
                    head: result.head.clone(),
                    summary: result
                        .summary
                        .as_deref()
                        .map(|s| limits::cap_text(s, limits::MAX_DETAIL_BYTES)),
                    at: now,
                };
                let t = self.task_mut(&attempt.task_id);
                t.candidates.push(candidate);
                let extra = t.candidates.len().saturating_sub(MAX_CANDIDATES);
                t.candidates.drain(..extra);
                format!(
                    "{why}; late result kept as a candidate (branch {branch}): {}",
                    late_summary(&result)
                )
            }
            _ => format!("{why}; late result: {}", late_summary(&result)),
        };
        self.stale(attempt, agent, "complete", detail, now)
    }

    /// The agent's attempt failed. Retryable failures with attempts left
    /// wait out their backoff (`failed`) and are queued again; the rest are
    /// dead.
    pub(crate) fn fail(
        &mut self,
        attempt: &AttemptRef,
        agent: &str,
        report: &FailReport,
        now: Timestamp,
    ) -> Judged {
        let error = report.error.as_str();
        let retryable = report.retryable;
        let verdict = match self.check(attempt, agent) {
            Check::Current(status) => {
                if status == TaskStatus::Assigned {
                    self.task_mut(&attempt.task_id).attempts += 1;
                }
                let blamed = self.blame(&attempt.task_id, agent, report, now);
                let judged = Judged {
                    verdict: Verdict::Applied,
                    charge: blamed.charge.clone(),
                    absolve: blamed.absolve.clone(),
                };
                let ending = AttemptEnd::Failed {
                    class: report.class,
                    blamed,
                    log_tail: report.log_tail.clone(),
                };
                self.end_attempt(&attempt.task_id, Some(agent), error, retryable, ending, now);
                return judged;
            }
            Check::Ended => {
                let t = self.get(&attempt.task_id).expect("exists");
                let kept = limits::cap_text(error, limits::MAX_ERROR_BYTES);
                if t.last_error.as_deref() == Some(kept.as_str())
                    && t.status != TaskStatus::Completed
                {
                    Verdict::Duplicate
                } else {
                    let why = format!(
                        "the attempt had already ended ({}); late failure: {}",
                        t.status,
                        limits::cap_text(error, limits::MAX_DETAIL_BYTES)
                    );
                    self.stale(attempt, agent, "fail", why, now)
                }
            }
            Check::Stale(why) => self.stale(
                attempt,
                agent,
                "fail",
                format!(
                    "{why}; late failure: {}",
                    limits::cap_text(error, limits::MAX_DETAIL_BYTES)
                ),
                now,
            ),
        };
        Judged::plain(verdict)
    }

    /// The hub takes an attempt back from its agent (agent gone, accept
    /// timeout, reject, divergence). Never accepted: the task goes back to
    /// its place in the lane and no attempt is used. Already working: it is
    /// a retryable failure of that attempt.
    pub(crate) fn release(
        &mut self,
        attempt: &AttemptRef,
        reason: &str,
        now: Timestamp,
    ) -> Verdict {
        let Some(t) = self.get(&attempt.task_id) else {
            return Verdict::Stale("unknown task".into());
        };
        if t.generation != attempt.generation || !t.status.is_active() {
            return Verdict::Stale(format!(
                "task is {} at generation {}",
                t.status, t.generation
            ));
        }
        let agent = t.assigned_to.clone();
        match t.status {
            TaskStatus::Assigned => {
                self.set_status(
                    &attempt.task_id,
                    TaskStatus::Queued,
                    TaskEvent::Released,
                    agent.as_deref(),
                    Some(reason.to_string()),
                    now,
                );
                self.index(&attempt.task_id);
            }
            _ => self.fail_current(&attempt.task_id, agent.as_deref(), reason, now),
        }
        Verdict::Applied
    }

    // ----- the merge pipeline -------------------------------------------------

    /// A task in review: its change merged (as `sha`); the task is done.
    pub(crate) fn change_merged(
        &mut self,
        id: &str,
        sha: &str,
        now: Timestamp,
    ) -> Result<(), QueueError> {
        self.expect_in_review(id)?;
        let agent = self.get(id).and_then(|t| t.assigned_to.clone());
        self.set_status(
            id,
            TaskStatus::Completed,
            TaskEvent::Completed,
            agent.as_deref(),
            Some(format!("its change merged as {sha}")),
            now,
        );
        Ok(())
    }

    /// A task in review: its change was sent back (`reasons`); the task
    /// goes again as after a failed attempt (backoff, retry budget, dead
    /// when spent), with the reasons and the log in its dossier. Not the
    /// agent's failure: the agent's record is not the queue's business.
    pub(crate) fn send_back(
        &mut self,
        id: &str,
        reasons: &str,
        log_tail: Option<String>,
        now: Timestamp,
    ) -> Result<(), QueueError> {
        self.expect_in_review(id)?;
        let (agent, branch, head) = {
            let t = self.get(id).expect("exists");
            let r = t.result.as_ref();
            (
                t.assigned_to.clone(),
                r.and_then(|r| r.branch.clone()),
                r.and_then(|r| r.head.clone()),
            )
        };
        let ending = AttemptEnd::SentBack {
            log_tail: log_tail.map(|l| limits::cap_text(&l, limits::MAX_ERROR_BYTES)),
            branch,
            head,
        };
        self.end_attempt(id, agent.as_deref(), reasons, Retryable::Yes, ending, now);
        Ok(())
    }

    /// A person rejected a task's change: queued again (`requeue`), in the
    /// retry lane and whatever its budget, or dead.
    pub(crate) fn reject_change(
        &mut self,
        id: &str,
        reason: &str,
        requeue: bool,
        now: Timestamp,
    ) -> Result<(), QueueError> {
        self.expect_in_review(id)?;
        let agent = self.get(id).and_then(|t| t.assigned_to.clone());
        let error = limits::cap_text(reason, limits::MAX_ERROR_BYTES);
        self.task_mut(id).last_error = Some(error.clone());
        self.note_attempt(id, agent.as_deref(), &error, &AttemptEnd::Rejected, now);
        let detail = format!(
            "change rejected: {}",
            limits::cap_text(reason, limits::MAX_DETAIL_BYTES)
        );
        if requeue {
            self.set_status(
                id,
                TaskStatus::Queued,
                TaskEvent::Rejected,
                agent.as_deref(),
                Some(detail),
                now,
            );
            {
                let t = self.task_mut(id);
                t.queued_at = Some(now);
                t.not_before = None;
            }
            self.index(id);
        } else {
            self.set_status(
                id,
                TaskStatus::Dead,
                TaskEvent::Rejected,
                agent.as_deref(),
                Some(detail),
                now,
            );
        }
        Ok(())
    }

    fn expect_in_review(&self, id: &str) -> Result<(), QueueError> {
        let t = self
            .get(id)
            .ok_or_else(|| QueueError::NotFound(id.to_string()))?;
        if t.status == TaskStatus::InReview {
            Ok(())
        } else {
            Err(QueueError::Conflict(format!(
                "task {id} is {}, not in_review",
                t.status
            )))
        }
    }

    /// Write how an attempt ended into the task's dossier (the last
    /// [`DOSSIER_ATTEMPTS`] are kept).
    fn note_attempt(
        &mut self,
        id: &str,
        agent: Option<&str>,
        error: &str,
        ending: &AttemptEnd,
        now: Timestamp,
    ) {
        let generation = self.get(id).map(|t| t.generation).unwrap_or(0);
        let (outcome, blame, log_tail, branch, head) = match ending {
            AttemptEnd::Failed {
                class,
                blamed,
                log_tail,
            } => (
                blame::outcome(*class),
                Some(blamed.blame),
                log_tail
                    .as_deref()
                    .map(|l| limits::tail_text(l, limits::MAX_LOG_TAIL_BYTES)),
                None,
                None,
            ),
            AttemptEnd::Rejected => ("rejected", None, None, None, None),
            AttemptEnd::SentBack {
                log_tail,
                branch,
                head,
            } => (
                "sent_back",
                None,
                log_tail.clone(),
                branch.clone(),
                head.clone(),
            ),
        };
        let record = AttemptRecord {
            generation,
            agent_id: agent.unwrap_or_default().to_string(),
            outcome: outcome.to_string(),
            blame,
            error: Some(limits::cap_text(error, limits::MAX_DETAIL_BYTES)),
            log_tail,
            branch,
            head,
            at: now,
        };
        let t = self.task_mut(id);
        t.dossier.attempts.push(record);
        let extra = t.dossier.attempts.len().saturating_sub(DOSSIER_ATTEMPTS);
        t.dossier.attempts.drain(..extra);
    }

    /// Who the failure `report` of `agent`'s current attempt of `id` is on.
    fn blame(&self, id: &str, agent: &str, report: &FailReport, now: Timestamp) -> Blamed {
        let t = self.get(id).expect("exists");
        blame::judge(
            &Failure {
                agent,
                error: &report.error,
                class: report.class,
                retryable: report.retryable,
                retry_after_s: report.retry_after_s,
            },
            &t.dossier.attempts,
            t.free_attempts,
            now,
        )
    }

    // ----- internals --------------------------------------------------------

    fn new_id(&mut self, now: Timestamp) -> String {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(now.0.max(0) as u64);
        let ulid = match self.ids.generate_from_datetime(at) {
            Ok(u) => u,
            Err(overflow) => overflow.commit_overflow_increment(),
        };
        ulid.to_string()
    }

    /// The task, to change it: its pending change is begun first, so the
    /// change records the state from before.
    fn task_mut(&mut self, id: &str) -> &mut Task {
        self.pending(id);
        &mut self.tasks.get_mut(id).expect("task exists").task
    }

    fn check(&self, attempt: &AttemptRef, agent: &str) -> Check {
        let Some(t) = self.get(&attempt.task_id) else {
            return Check::Stale("unknown task".into());
        };
        if t.generation != attempt.generation {
            return Check::Stale(format!("task is at generation {}", t.generation));
        }
        if t.assigned_to.as_deref() != Some(agent) {
            return Check::Stale(format!(
                "generation {} belongs to {}",
                t.generation,
                t.assigned_to.as_deref().unwrap_or("nobody")
            ));
        }
        if t.status.is_active() {
            Check::Current(t.status)
        } else {
            Check::Ended
        }
    }

    fn stale(
        &mut self,
        attempt: &AttemptRef,
        agent: &str,
        kind: &str,
        why: String,
        now: Timestamp,
    ) -> Verdict {
        let noted = self
            .tasks
            .get_mut(&attempt.task_id)
            .filter(|e| e.stale_notes < MAX_STALE_NOTES)
            .map(|e| e.stale_notes += 1)
            .is_some();
        if noted {
            let detail = format!(
                "{kind} from {agent} for generation {} ignored: {why}",
                attempt.generation
            );
            let status = self.get(&attempt.task_id).map(|t| t.status);
            self.record_at_generation(
                &attempt.task_id,
                TaskEvent::StaleReport,
                status,
                status,
                Some(agent),
                Some(detail),
                attempt.generation,
                now,
            );
        }
        Verdict::Stale(why)
    }

    /// The hub gave up on the current attempt (lost, not confirmed): the
    /// agent's fault.
    fn fail_current(&mut self, id: &str, agent: Option<&str>, error: &str, now: Timestamp) {
        let report = FailReport::by_hub(error);
        let blamed = self.blame(id, agent.unwrap_or_default(), &report, now);
        let ending = AttemptEnd::Failed {
            class: report.class,
            blamed,
            log_tail: None,
        };
        self.end_attempt(id, agent, error, Retryable::Yes, ending, now)
    }

    /// An attempt ended without success: note it in the dossier, then
    /// retry after the backoff while the budget lasts, else dead.
    fn end_attempt(
        &mut self,
        id: &str,
        agent: Option<&str>,
        error: &str,
        retryable: Retryable,
        ending: AttemptEnd,
        now: Timestamp,
    ) {
        let (attempts, max_retries) = {
            let t = self.get(id).expect("exists");
            (t.attempts, t.max_retries)
        };
        let error = &limits::cap_text(error, limits::MAX_ERROR_BYTES);
        let mut detail_error = limits::cap_text(error, limits::MAX_DETAIL_BYTES);
        self.task_mut(id).last_error = Some(error.to_string());
        let (blame, free, dead, at_once) = match &ending {
            AttemptEnd::Failed { blamed, .. } => {
                detail_error = format!("{detail_error} [{}: {}]", blamed.blame, blamed.evidence);
                (Some(blamed.blame), blamed.free, blamed.dead, blamed.at_once)
            }
            _ => (None, false, false, false),
        };
        if free {
            self.task_mut(id).free_attempts += 1;
        }
        let free_attempts = self.get(id).map_or(0, |t| t.free_attempts);
        let decision = if dead {
            RetryDecision::Dead
        } else {
            match self.settings.retry.decide(
                attempts.saturating_sub(free_attempts),
                max_retries,
                retryable,
            ) {
                RetryDecision::RetryAfter(_) if at_once => RetryDecision::RetryAfter(0),
                d => d,
            }
        };
        self.note_attempt(id, agent, error, &ending, now);
        let failed_event = match ending {
            AttemptEnd::Failed { .. } | AttemptEnd::Rejected => TaskEvent::Failed,
            AttemptEnd::SentBack { .. } => TaskEvent::SentBack,
        };
        match decision {
            RetryDecision::RetryAfter(delay_s) => {
                let not_before = now.plus_secs(delay_s as f64);
                self.task_mut(id).not_before = Some(not_before);
                let detail = if free {
                    format!("{detail_error} (no retry used; again at once)")
                } else {
                    format!(
                        "{detail_error} (attempt {} of {}; retry in {delay_s}s)",
                        attempts.saturating_sub(free_attempts),
                        max_retries + 1
                    )
                };
                self.set_status(
                    id,
                    TaskStatus::Failed,
                    failed_event,
                    agent,
                    Some(detail),
                    now,
                );
                self.blame_last_entry(id, blame);
                if delay_s == 0 {
                    self.requeue_after_failure(id, now);
                } else {
                    self.index(id);
                }
            }
            RetryDecision::Dead => {
                let why = if dead {
                    "blamed on the task"
                } else if retryable == Retryable::Yes {
                    "out of retries"
                } else {
                    "not retryable"
                };
                let detail = format!("{detail_error} ({why} after {attempts} attempt(s))");
                self.set_status(
                    id,
                    TaskStatus::Dead,
                    TaskEvent::Dead,
                    agent,
                    Some(detail),
                    now,
                );
                self.blame_last_entry(id, blame);
            }
        }
    }

    /// The history entry just recorded for `id` names who is to blame.
    fn blame_last_entry(&mut self, id: &str, blame: Option<Blame>) {
        if blame.is_some() {
            if let Some((_, entry)) = self.pending(id).entries.last_mut() {
                entry.blame = blame;
            }
        }
    }

    fn requeue_after_failure(&mut self, id: &str, now: Timestamp) {
        self.unindex(id);
        {
            let t = self.task_mut(id);
            t.not_before = None;
            t.queued_at = Some(now);
        }
        self.set_status(
            id,
            TaskStatus::Queued,
            TaskEvent::Requeued,
            None,
            Some("backoff elapsed".into()),
            now,
        );
        self.index(id);
    }

    /// Put a task into the lane or backoff set its status calls for.
    fn index(&mut self, id: &str) {
        let t = &self.tasks[id].task;
        match t.status {
            TaskStatus::Queued if t.not_before.is_some() => {
                let at = t.not_before.expect("some").0;
                self.delayed.insert((at, id.to_string()));
            }
            TaskStatus::Queued => {
                let at = t.queued_at.unwrap_or(t.created_at).0;
                let mut needs = t.needed_capabilities.clone();
                if let Some(repo) = &t.repo {
                    needs.push(repo_mark(repo));
                }
                self.lanes.push(id, t.priority, LaneKind::of(t), &needs, at);
                if self.standing.usable() {
                    self.fresh.push(id.to_string());
                }
            }
            TaskStatus::Failed => {
                let at = t.not_before.unwrap_or(t.updated_at).0;
                self.delayed.insert((at, id.to_string()));
            }
            _ => {}
        }
    }

    fn unindex(&mut self, id: &str) {
        self.lanes.remove(id);
        if let Some(t) = self.get(id) {
            if let Some(nb) = t.not_before {
                let key = (nb.0, id.to_string());
                self.delayed.remove(&key);
            }
        }
    }

    fn set_status(
        &mut self,
        id: &str,
        to: TaskStatus,
        event: TaskEvent,
        agent: Option<&str>,
        detail: Option<String>,
        now: Timestamp,
    ) {
        let from = self.get(id).map(|t| t.status);
        {
            let t = self.task_mut(id);
            t.status = to;
            t.updated_at = now;
            if to.is_terminal() {
                t.finished_at = Some(now);
            }
        }
        if matches!(to, TaskStatus::Assigned | TaskStatus::Working) {
            self.out.insert(id.to_string());
        } else {
            self.out.remove(id);
        }
        self.record(id, event, from, Some(to), agent, detail, now);
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        id: &str,
        event: TaskEvent,
        from: Option<TaskStatus>,
        to: Option<TaskStatus>,
        agent: Option<&str>,
        detail: Option<String>,
        now: Timestamp,
    ) {
        let generation = self.get(id).map(|t| t.generation).unwrap_or(0);
        self.record_at_generation(id, event, from, to, agent, detail, generation, now);
    }

    #[allow(clippy::too_many_arguments)]
    fn record_at_generation(
        &mut self,
        id: &str,
        event: TaskEvent,
        from: Option<TaskStatus>,
        to: Option<TaskStatus>,
        agent: Option<&str>,
        detail: Option<String>,
        generation: u64,
        now: Timestamp,
    ) {
        let entry = HistoryEntry {
            at: now,
            event,
            from,
            to,
            agent_id: agent.map(str::to_string),
            generation,
            detail,
            blame: None,
        };
        let e = self.tasks.get_mut(id).expect("task exists");
        let seq = e.history_len;
        e.history_len += 1;
        self.pending(id).entries.push((seq, entry));
    }

    /// This drain's pending change of `id`, begun with the task's state
    /// before it (for the store's indexes). The task must be held.
    fn pending(&mut self, id: &str) -> &mut Pending {
        let t = &self.tasks[id].task;
        let (status, finished_at) = (t.status, t.finished_at);
        self.dirty.entry(id.to_string()).or_insert_with(|| Pending {
            previous_status: Some(status),
            previous_finished_at: finished_at,
            ..Default::default()
        })
    }
}

impl Entry {
    fn full(task: Task, history_len: u32) -> Entry {
        Entry {
            task,
            history_len,
            stale_notes: 0,
            light: false,
        }
    }
}

/// Whether a completed attempt opens a change: a task on a repository
/// whose result names a pushed branch with commits beyond its base.
pub(crate) fn opens_review(task: &Task, result: &TaskResult) -> bool {
    task.repo.is_some()
        && task.kind == TaskKind::Task
        && !result.no_changes
        && result.branch.is_some()
        && result.head.is_some()
        && result.base.is_some()
        && result.head != result.base
}

/// A late result's summary, short enough for a history note.
fn late_summary(result: &TaskResult) -> String {
    limits::cap_text(
        result.summary.as_deref().unwrap_or("(no summary)"),
        limits::MAX_DETAIL_BYTES,
    )
}

/// An idempotency key already used for another task with a different
/// body.
fn key_conflict(key: &str, id: &str) -> QueueError {
    QueueError::Conflict(format!(
        "idempotency key {key:?} was used for task {id} with a different body"
    ))
}

/// A digest of what a create asked for (after defaults), to tell a repeat
/// of the same create from another task reusing its idempotency key.
pub(crate) fn spec_digest(t: &Task) -> String {
    use sha2::{Digest, Sha256};
    let mut spec = serde_json::json!([
        t.title,
        t.description,
        t.priority,
        t.needed_capabilities,
        t.repo,
        t.max_retries,
        t.timeout_s,
        t.context_budget_tokens,
        t.metadata,
    ]);
    // Only when set, so the digests kept before `for_agent` existed
    // still match a repeat of their create.
    if let (Some(only), Some(parts)) = (&t.for_agent, spec.as_array_mut()) {
        parts.push(serde_json::json!({ "for_agent": only }));
    }
    hex::encode(Sha256::digest(spec.to_string().as_bytes()))
}

enum Check {
    /// The report is about the current attempt, which is in this status.
    Current(TaskStatus),
    /// Right task, owner and generation, but the attempt has ended.
    Ended,
    /// About some other attempt.
    Stale(String),
}

#[cfg(test)]
mod tests;

/// Helpers for the domain's tests.
#[cfg(test)]
pub(crate) mod testing {
    use agentcom_protocol::{AttemptRef, FailClass, Priority, Task, TaskStatus, Timestamp};

    use super::{FailReport, QueueCore, Verdict};
    use crate::domain::retry::Retryable;

    /// A task-class failure reported by `agent` (the verdict only).
    pub(crate) fn fail_as_task(
        q: &mut QueueCore,
        r: &AttemptRef,
        agent: &str,
        error: &str,
        retryable: Retryable,
        now: Timestamp,
    ) -> Verdict {
        let report = FailReport {
            error: error.to_string(),
            retryable,
            class: FailClass::Task,
            retry_after_s: None,
            log_tail: None,
        };
        q.fail(r, agent, &report, now).verdict
    }

    /// Task `id` assigned to agent `a1` at `generation` (its other fields
    /// plain), for tests of the rules that take a task as it is.
    pub(crate) fn task(id: &str, generation: u64) -> Task {
        Task {
            id: id.into(),
            title: "x".into(),
            description: String::new(),
            priority: Priority::Normal,
            needed_capabilities: vec![],
            repo: None,
            idempotency_key: None,
            max_retries: 3,
            timeout_s: 100,
            context_budget_tokens: None,
            metadata: None,
            status: TaskStatus::Assigned,
            generation,
            attempts: 0,
            assigned_to: Some("a1".into()),
            created_at: Timestamp(1_800_000_000_000),
            updated_at: Timestamp(1_800_000_000_000),
            queued_at: None,
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
}
