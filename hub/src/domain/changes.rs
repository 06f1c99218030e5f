//! `ChangeCore`: the changes (the hub's pull requests) and every rule of
//! how one moves: opened from a completed attempt, measured, judged by
//! the gate, reviewed, approved or rejected by a person, queued for its
//! repository's merge, merged or sent back; and at most one live change
//! per task (a newer one supersedes it).
//!
//! Like [`crate::domain::queue::QueueCore`] it records each mutation as a
//! [`ChangeDelta`] for the caller to make durable, and keeps in memory the
//! live changes and, for a while, the recently finished ones. It never
//! touches tasks (the pipeline in [`crate::domain::pipeline`] moves both
//! together), and never does I/O or reads the clock.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use agentcom_protocol::{
    Change, ChangeEntry, ChangeStatus, CheckRun, Gate, GateDecision, Review, Task, Timestamp,
    Verdict,
};

/// Most changed paths a change lists (it still counts them all).
pub(crate) const MAX_FILES_LISTED: usize = 1000;

/// Why a change command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("no change {0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

/// A change's new state and the history entries added since the last drain.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ChangeDelta {
    pub change: Change,
    pub history_len: u32,
    pub new_history: Vec<(u32, ChangeEntry)>,
    /// The status before the first change of this drain (None: opened).
    pub previous_status: Option<ChangeStatus>,
}

struct Entry {
    change: Change,
    history_len: u32,
}

#[derive(Default)]
struct Pending {
    previous_status: Option<ChangeStatus>,
    entries: Vec<(u32, ChangeEntry)>,
}

/// What an opening did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Opened {
    pub change: Change,
    /// The task's earlier live change, now superseded.
    pub superseded: Option<String>,
}

pub(crate) struct ChangeCore {
    changes: HashMap<String, Entry>,
    /// Task id → its live change.
    live_by_task: HashMap<String, String>,
    /// Per repository, the changes in its merge queue by when they joined.
    merge_queue: BTreeMap<String, BTreeSet<(i64, String)>>,
    /// Per repository, the change its merge worker is merging right now:
    /// handed out, its outcome not reported yet. Such a change may reach
    /// main at any moment, so nobody may reject it (or cancel its task)
    /// meanwhile. Not durable: after a restart nothing is being merged
    /// and the worker asks again.
    in_flight: BTreeMap<String, String>,
    /// Finished changes kept in memory, by when they finished.
    finished: VecDeque<(Timestamp, String)>,
    keep_finished: usize,
    keep_finished_ms: i64,
    ids: ulid::Generator,
    dirty: BTreeMap<String, Pending>,
}

impl ChangeCore {
    pub(crate) fn new(keep_finished: usize, keep_finished_ms: i64) -> Self {
        ChangeCore {
            changes: HashMap::new(),
            live_by_task: HashMap::new(),
            merge_queue: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            finished: VecDeque::new(),
            keep_finished,
            keep_finished_ms,
            ids: ulid::Generator::new(),
            dirty: BTreeMap::new(),
        }
    }

    /// Rebuild from the stored live changes (each with its history length).
    pub(crate) fn restore(
        keep_finished: usize,
        keep_finished_ms: i64,
        live: impl IntoIterator<Item = (Change, u32)>,
    ) -> Self {
        let mut core = ChangeCore::new(keep_finished, keep_finished_ms);
        for (change, history_len) in live {
            core.index(&change);
            core.changes.insert(
                change.id.clone(),
                Entry {
                    change,
                    history_len,
                },
            );
        }
        // The first of each merge queue is the one a worker was merging
        // when the hub stopped, if any: it may be on main already (pushed,
        // not recorded). Being merged until the worker asks again, which
        // finds it on main if it is.
        let heads: Vec<(String, String)> = core
            .merge_queue
            .iter()
            .filter_map(|(repo, q)| Some((repo.clone(), q.first()?.1.clone())))
            .collect();
        core.in_flight.extend(heads);
        core
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Change> {
        self.changes.get(id).map(|e| &e.change)
    }

    /// The task's live change, if any.
    #[cfg(test)]
    pub(crate) fn live_for_task(&self, task_id: &str) -> Option<&Change> {
        self.live_by_task.get(task_id).and_then(|id| self.get(id))
    }

    /// The live changes (for the read model at start).
    pub(crate) fn live(&self) -> impl Iterator<Item = &Change> {
        self.changes
            .values()
            .map(|e| &e.change)
            .filter(|c| c.status.is_live())
    }

    /// The next change of `repo` to merge: the one that joined its queue
    /// first.
    pub(crate) fn next_to_merge(&self, repo: &str) -> Option<&Change> {
        let (_, id) = self.merge_queue.get(repo)?.first()?;
        self.get(id)
    }

    /// The merge worker of `repo` asks for its next job, so it merges
    /// nothing now (its last job was reported or held back); `handed_out`
    /// is the change it gets, merged from now until its outcome is in or
    /// the worker asks again.
    pub(crate) fn merge_handed_out(&mut self, repo: &str, handed_out: Option<&str>) {
        match handed_out {
            Some(id) => self.in_flight.insert(repo.to_string(), id.to_string()),
            None => self.in_flight.remove(repo),
        };
    }

    /// A merge worker is merging this change right now: it may be on main
    /// at any moment.
    pub(crate) fn being_merged(&self, id: &str) -> bool {
        self.in_flight.values().any(|v| v == id)
    }

    /// Refuse to end a change a merge worker is merging right now.
    fn not_being_merged(&self, id: &str, what: &str) -> Result<(), ChangeError> {
        if self.being_merged(id) {
            return Err(ChangeError::Conflict(format!(
                "change {id} is being merged right now (its merge commit is checked and pushed to main); it cannot be {what} until that ends: try again once it is merged or sent back"
            )));
        }
        Ok(())
    }

    /// Whether the live change of a task, if any, may end now (the task is
    /// cancelled): not while it is being merged.
    pub(crate) fn may_end_with_task(&self, task_id: &str) -> Result<(), ChangeError> {
        match self.live_by_task.get(task_id) {
            Some(id) => self.not_being_merged(id, "dropped with its task"),
            None => Ok(()),
        }
    }

    /// The merge queue of `repo`, next first.
    pub(crate) fn merge_queue(&self, repo: &str) -> Vec<String> {
        self.merge_queue
            .get(repo)
            .map(|q| q.iter().map(|(_, id)| id.clone()).collect())
            .unwrap_or_default()
    }

    /// Drain the changes made since the last call.
    pub(crate) fn take_deltas(&mut self) -> Vec<ChangeDelta> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .filter_map(|(id, p)| {
                let e = self.changes.get(&id)?;
                Some(ChangeDelta {
                    change: e.change.clone(),
                    history_len: e.history_len,
                    new_history: p.entries,
                    previous_status: p.previous_status,
                })
            })
            .collect()
    }

    /// These deltas are durable: finished changes are kept in memory a
    /// while, then forgotten (they are read from the store).
    pub(crate) fn durable(&mut self, deltas: &[ChangeDelta], now: Timestamp) {
        for d in deltas {
            if !d.change.status.is_live() && d.previous_status.is_none_or(|s| s.is_live()) {
                self.finished.push_back((now, d.change.id.clone()));
            }
        }
        while let Some((at, id)) = self.finished.front().cloned() {
            let old = now.millis_since(at) > self.keep_finished_ms;
            if !old && self.finished.len() <= self.keep_finished {
                break;
            }
            self.finished.pop_front();
            let done = self.get(&id).is_some_and(|c| !c.status.is_live());
            if done && !self.dirty.contains_key(&id) {
                self.changes.remove(&id);
            }
        }
    }

    /// Forget changes the store deleted with their task (retention).
    pub(crate) fn purged(&mut self, task_ids: &[String]) {
        let gone: BTreeSet<&String> = task_ids.iter().collect();
        self.changes
            .retain(|_, e| e.change.status.is_live() || !gone.contains(&e.change.task_id));
    }

    // ----- transitions ------------------------------------------------------

    /// Open a change for an attempt's pushed branch. The task's earlier
    /// live change, if any, is superseded.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open(
        &mut self,
        task: &Task,
        agent: &str,
        branch: &str,
        base: &str,
        head: &str,
        now: Timestamp,
    ) -> Opened {
        let superseded = self.live_by_task.get(&task.id).cloned();
        if let Some(old) = &superseded {
            self.finish(
                old,
                ChangeStatus::Superseded,
                "superseded",
                Some(format!(
                    "a newer attempt (generation {}) opened another change",
                    task.generation
                )),
                now,
            );
        }
        let id = self.new_id(now);
        let change = Change {
            id: id.clone(),
            task_id: task.id.clone(),
            repo: task.repo.clone().unwrap_or_default(),
            agent_id: agent.to_string(),
            generation: task.generation,
            branch: branch.to_string(),
            base: base.to_string(),
            head: head.to_string(),
            files: vec![],
            files_changed: 0,
            lines_added: 0,
            lines_removed: 0,
            status: ChangeStatus::Open,
            gate: None,
            review: None,
            check: None,
            merged_sha: None,
            created_at: now,
            updated_at: now,
            history: None,
        };
        self.changes.insert(
            id.clone(),
            Entry {
                change,
                history_len: 0,
            },
        );
        self.dirty.insert(id.clone(), Pending::default());
        self.live_by_task.insert(task.id.clone(), id.clone());
        self.record(
            &id,
            "opened",
            None,
            Some(ChangeStatus::Open),
            Some(format!("{branch} at {head}, from {base}")),
            now,
        );
        Opened {
            change: self.get(&id).expect("just opened").clone(),
            superseded,
        }
    }

    /// The hub measured the change; the gate decided. Auto-merge: into the
    /// merge queue; review: waiting for a review task; escalate: waiting for
    /// a person.
    pub(crate) fn judged(
        &mut self,
        id: &str,
        files: Vec<String>,
        lines_added: u64,
        lines_removed: u64,
        gate: Gate,
        now: Timestamp,
    ) -> Result<ChangeStatus, ChangeError> {
        self.expect(id, &[ChangeStatus::Open])?;
        let files_changed = files.len() as u64;
        {
            let c = self.change_mut(id);
            c.files = files.into_iter().take(MAX_FILES_LISTED).collect();
            c.files_changed = files_changed;
            c.lines_added = lines_added;
            c.lines_removed = lines_removed;
            c.gate = Some(gate.clone());
        }
        let to = match gate.decision {
            GateDecision::AutoMerge => ChangeStatus::Merging,
            GateDecision::Review => ChangeStatus::Reviewing,
            GateDecision::Escalate => ChangeStatus::Escalated,
        };
        let detail = format!(
            "{files_changed} files, +{lines_added} −{lines_removed}: {}",
            gate.reasons.join("; ")
        );
        self.set_status(id, to, "gated", Some(detail), now);
        Ok(to)
    }

    /// The change could not be measured (its branch is gone or moved, its
    /// base is not on main): sent back.
    pub(crate) fn unmeasurable(
        &mut self,
        id: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), ChangeError> {
        self.expect(id, &[ChangeStatus::Open])?;
        self.finish(
            id,
            ChangeStatus::SentBack,
            "sent_back",
            Some(reason.to_string()),
            now,
        );
        Ok(())
    }

    /// The review task for a change in review.
    pub(crate) fn review_requested(
        &mut self,
        id: &str,
        review_task: &str,
        now: Timestamp,
    ) -> Result<(), ChangeError> {
        self.expect(id, &[ChangeStatus::Reviewing])?;
        self.change_mut(id).review = Some(Review {
            task_id: review_task.to_string(),
            verdict: None,
            notes: None,
            agent_id: None,
        });
        self.record(
            id,
            "review_requested",
            Some(ChangeStatus::Reviewing),
            Some(ChangeStatus::Reviewing),
            Some(format!("review task {review_task}")),
            now,
        );
        Ok(())
    }

    /// A reviewer's verdict: approve → merge queue; request changes → sent
    /// back; escalate → a person.
    pub(crate) fn reviewed(
        &mut self,
        id: &str,
        reviewer: &str,
        verdict: Verdict,
        notes: Option<String>,
        now: Timestamp,
    ) -> Result<ChangeStatus, ChangeError> {
        self.expect(id, &[ChangeStatus::Reviewing])?;
        if let Some(r) = self.change_mut(id).review.as_mut() {
            r.verdict = Some(verdict);
            r.notes = notes.clone();
            r.agent_id = Some(reviewer.to_string());
        }
        let detail = format!(
            "{reviewer}: {}{}",
            match verdict {
                Verdict::Approve => "approve",
                Verdict::RequestChanges => "request_changes",
                Verdict::Escalate => "escalate",
            },
            notes.map(|n| format!(" — {n}")).unwrap_or_default()
        );
        let to = match verdict {
            Verdict::Approve => {
                self.set_status(id, ChangeStatus::Merging, "reviewed", Some(detail), now);
                ChangeStatus::Merging
            }
            Verdict::RequestChanges => {
                self.finish(id, ChangeStatus::SentBack, "reviewed", Some(detail), now);
                ChangeStatus::SentBack
            }
            Verdict::Escalate => {
                self.set_status(id, ChangeStatus::Escalated, "reviewed", Some(detail), now);
                ChangeStatus::Escalated
            }
        };
        Ok(to)
    }

    /// A person approves an escalated change: into the merge queue. (A
    /// change under review waits for its reviewer, or a person rejects it.)
    pub(crate) fn approve(&mut self, id: &str, now: Timestamp) -> Result<(), ChangeError> {
        self.expect(id, &[ChangeStatus::Escalated])?;
        self.set_status(
            id,
            ChangeStatus::Merging,
            "approved",
            Some("approved by an operator".into()),
            now,
        );
        Ok(())
    }

    /// A person rejects a live change.
    pub(crate) fn reject(
        &mut self,
        id: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), ChangeError> {
        self.expect(
            id,
            &[
                ChangeStatus::Open,
                ChangeStatus::Reviewing,
                ChangeStatus::Escalated,
                ChangeStatus::Merging,
            ],
        )?;
        self.not_being_merged(id, "rejected")?;
        self.finish(
            id,
            ChangeStatus::Rejected,
            "rejected",
            Some(reason.to_string()),
            now,
        );
        Ok(())
    }

    /// The merge queue merged it.
    pub(crate) fn merged(
        &mut self,
        id: &str,
        sha: &str,
        check: Option<CheckRun>,
        now: Timestamp,
    ) -> Result<(), ChangeError> {
        self.expect(id, &[ChangeStatus::Merging])?;
        {
            let c = self.change_mut(id);
            c.merged_sha = Some(sha.to_string());
            if check.is_some() {
                c.check = check;
            }
        }
        self.finish(
            id,
            ChangeStatus::Merged,
            "merged",
            Some(format!("main is now {sha}")),
            now,
        );
        Ok(())
    }

    /// The merge queue could not merge it (a conflict, a failed check, its
    /// head gone): sent back with the reasons.
    pub(crate) fn merge_failed(
        &mut self,
        id: &str,
        event: &str,
        reasons: &str,
        check: Option<CheckRun>,
        now: Timestamp,
    ) -> Result<(), ChangeError> {
        self.expect(id, &[ChangeStatus::Merging])?;
        if check.is_some() {
            self.change_mut(id).check = check;
        }
        self.finish(
            id,
            ChangeStatus::SentBack,
            event,
            Some(reasons.to_string()),
            now,
        );
        Ok(())
    }

    /// The task is gone (cancelled): its live change goes with it.
    pub(crate) fn task_ended(
        &mut self,
        task_id: &str,
        reason: &str,
        now: Timestamp,
    ) -> Option<String> {
        let id = self.live_by_task.get(task_id).cloned()?;
        self.finish(
            &id,
            ChangeStatus::Rejected,
            "rejected",
            Some(reason.to_string()),
            now,
        );
        Some(id)
    }

    // ----- internals ----------------------------------------------------------

    fn new_id(&mut self, now: Timestamp) -> String {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(now.0.max(0) as u64);
        match self.ids.generate_from_datetime(at) {
            Ok(u) => u,
            Err(overflow) => overflow.commit_overflow_increment(),
        }
        .to_string()
    }

    fn expect(&self, id: &str, allowed: &[ChangeStatus]) -> Result<(), ChangeError> {
        let c = self
            .get(id)
            .ok_or_else(|| ChangeError::NotFound(id.to_string()))?;
        if allowed.contains(&c.status) {
            Ok(())
        } else {
            Err(ChangeError::Conflict(format!(
                "change {id} is {}; this needs it {}",
                c.status,
                allowed
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )))
        }
    }

    fn change_mut(&mut self, id: &str) -> &mut Change {
        self.pending(id);
        &mut self.changes.get_mut(id).expect("change exists").change
    }

    fn pending(&mut self, id: &str) -> &mut Pending {
        let status = self.changes[id].change.status;
        self.dirty.entry(id.to_string()).or_insert_with(|| Pending {
            previous_status: Some(status),
            entries: vec![],
        })
    }

    /// Keep the indexes (live by task, merge queues) in step with a status.
    fn index(&mut self, c: &Change) {
        if c.status.is_live() {
            self.live_by_task.insert(c.task_id.clone(), c.id.clone());
        }
        if c.status == ChangeStatus::Merging {
            self.merge_queue
                .entry(c.repo.clone())
                .or_default()
                .insert((c.updated_at.0, c.id.clone()));
        }
    }

    fn unindex(&mut self, c: &Change) {
        if c.status != ChangeStatus::Merging {
            self.in_flight.retain(|_, id| id != &c.id);
        }
        if self.live_by_task.get(&c.task_id) == Some(&c.id) && !c.status.is_live() {
            self.live_by_task.remove(&c.task_id);
        }
        if let Some(q) = self.merge_queue.get_mut(&c.repo) {
            q.retain(|(_, id)| id != &c.id);
        }
    }

    fn set_status(
        &mut self,
        id: &str,
        to: ChangeStatus,
        event: &str,
        detail: Option<String>,
        now: Timestamp,
    ) {
        let from = self.get(id).map(|c| c.status);
        {
            let c = self.change_mut(id);
            c.status = to;
            c.updated_at = now;
        }
        let c = self.get(id).expect("exists").clone();
        self.unindex(&c);
        self.index(&c);
        self.record(id, event, from, Some(to), detail, now);
    }

    fn finish(
        &mut self,
        id: &str,
        to: ChangeStatus,
        event: &str,
        detail: Option<String>,
        now: Timestamp,
    ) {
        debug_assert!(!to.is_live());
        self.set_status(id, to, event, detail, now);
    }

    fn record(
        &mut self,
        id: &str,
        event: &str,
        from: Option<ChangeStatus>,
        to: Option<ChangeStatus>,
        detail: Option<String>,
        now: Timestamp,
    ) {
        let entry = ChangeEntry {
            at: now,
            event: event.to_string(),
            from,
            to,
            detail,
        };
        let e = self.changes.get_mut(id).expect("change exists");
        let seq = e.history_len;
        e.history_len += 1;
        self.pending(id).entries.push((seq, entry));
    }
}

#[cfg(test)]
mod tests;
