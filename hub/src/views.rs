//! Read models: what the HTTP API and the dashboard read, without ever
//! waiting behind a write.
//!
//! [`TaskView`] holds the *durable* state of every live task (the queue
//! actor applies each group of changes after it is synced) with its
//! durable history length, so a history read never runs ahead of the
//! record it belongs to; and counts per status (finished ones included)
//! and lane, kept incrementally, so `/api/state` never scans anything.
//! Finished tasks are read from the store; the view says which tasks the
//! store may hold a not-yet-durable state of, so reads can skip them. [`AgentView`] holds the
//! latest [`AgentInfo`] each agent actor published. Both sit behind a `RwLock` held only for map updates
//! and copies; no I/O or await happens under it. The views never decide
//! anything: they mirror what their owners publish.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use agentcom_protocol::{
    AgentInfo, AgentState, AgentTransition, Change, ChangeStatus, Health, Priority, RepoInfo, Task,
    TaskStatus, Timestamp,
};

use crate::domain::changes::ChangeDelta;
use crate::domain::lanes::{lane_index, LaneKind, LANE_COUNT};
use crate::domain::queue::TaskDelta;
use crate::events::EventBus;
use crate::store::{Fields, Purged, Store, StoreError};

/// A live task as last made durable, and how many history entries were
/// durable with it (history is read up to there, never beyond).
#[derive(Clone)]
struct Durable {
    task: Arc<Task>,
    history_len: u32,
}

#[derive(Default)]
struct TaskIndex {
    /// Live tasks (queued, assigned, working, failed) only: finished ones
    /// are read from the store.
    live: BTreeMap<String, Durable>,
    by_status: HashMap<TaskStatus, BTreeSet<String>>,
    /// Tasks in each status, finished ones included.
    counts: BTreeMap<TaskStatus, usize>,
    lane_depth: [usize; LANE_COUNT],
    /// Queued tasks by when they entered their lane (oldest first).
    queued: BTreeSet<(i64, String)>,
    /// Tasks of the group being written: the store may already hold a
    /// state of theirs that is not durable yet.
    /// How many groups being written touch each task (a task may be in
    /// two at once: one syncing while the next is written).
    in_flight: HashMap<String, u32>,
    /// Of those, the tasks being created.
    in_flight_new: HashSet<String>,
    /// Priorities an operator paused (durably).
    paused_lanes: Vec<Priority>,
    /// What agents spent (a copy of the queue's, after each result).
    usage: crate::domain::usage::Usage,
}

/// Counts for `/api/state` and `/metrics`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct TaskCounts {
    pub by_status: BTreeMap<TaskStatus, usize>,
    pub lane_depth: [usize; LANE_COUNT],
    pub oldest_queued_at: Option<Timestamp>,
    pub total: usize,
}

/// What a read of a task may use: the durable copy in memory, the store,
/// or nothing yet (its create is not durable).
pub(crate) enum Lookup {
    Live(Arc<Task>, u32),
    InStore,
    NotYet,
}

#[derive(Default)]
pub struct TaskView {
    inner: RwLock<TaskIndex>,
}

impl TaskView {
    /// Start from the store: the live tasks and the count of every status.
    pub(crate) fn new(
        live: impl IntoIterator<Item = (Task, u32)>,
        counts: BTreeMap<TaskStatus, usize>,
    ) -> Self {
        let view = TaskView::default();
        {
            let mut idx = view.write();
            idx.counts = counts;
            for (task, history_len) in live {
                add_live(&mut idx, task, history_len);
            }
        }
        view
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, TaskIndex> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, TaskIndex> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A group of changes is about to be written (not yet durable).
    pub(crate) fn begin(&self, changes: &[TaskDelta]) {
        let mut idx = self.write();
        for c in changes {
            *idx.in_flight.entry(c.task.id.clone()).or_default() += 1;
            if c.previous_status.is_none() {
                idx.in_flight_new.insert(c.task.id.clone());
            }
        }
    }

    /// Mirror a group of changes once durable.
    pub(crate) fn apply_deltas(&self, changes: &[TaskDelta]) {
        let mut idx = self.write();
        for c in changes {
            let id = &c.task.id;
            if let Some(old) = idx.live.remove(id) {
                remove_live(&mut idx, &old.task);
            }
            if let Some(prev) = c.previous_status {
                let n = idx.counts.entry(prev).or_default();
                *n = n.saturating_sub(1);
            }
            *idx.counts.entry(c.task.status).or_default() += 1;
            if !c.task.status.is_terminal() {
                add_live(&mut idx, c.task.clone(), c.history_len);
            }
            uncount(&mut idx.in_flight, id);
            idx.in_flight_new.remove(id);
        }
    }

    /// Retention deleted these finished tasks.
    pub(crate) fn purged(&self, purged: &[Purged]) {
        let mut idx = self.write();
        for p in purged {
            let n = idx.counts.entry(p.status).or_default();
            *n = n.saturating_sub(1);
        }
    }

    /// Where to read task `id` from.
    pub(crate) fn lookup(&self, id: &str) -> Lookup {
        let idx = self.read();
        match idx.live.get(id) {
            Some(d) => Lookup::Live(d.task.clone(), d.history_len),
            None if idx.in_flight_new.contains(id) => Lookup::NotYet,
            None => Lookup::InStore,
        }
    }

    /// The durable live task, if `id` is live.
    pub(crate) fn live(&self, id: &str) -> Option<Arc<Task>> {
        self.read().live.get(id).map(|d| d.task.clone())
    }

    /// Whether a store read of `id` may show a state that is not durable.
    pub(crate) fn in_flight(&self, id: &str) -> bool {
        self.read().in_flight.contains_key(id)
    }

    /// A page of live tasks of one (live) status, newest first, after
    /// `cursor` (the id of the last task of the previous page).
    pub(crate) fn page_live(
        &self,
        status: TaskStatus,
        limit: usize,
        cursor: Option<&str>,
    ) -> (Vec<Arc<Task>>, Option<String>) {
        let idx = self.read();
        let Some(ids) = idx.by_status.get(&status) else {
            return (vec![], None);
        };
        let upper = match cursor {
            Some(c) => std::ops::Bound::Excluded(c),
            None => std::ops::Bound::Unbounded,
        };
        let mut out = Vec::with_capacity(limit.min(1000));
        let mut more = false;
        for id in ids
            .range::<str, _>((std::ops::Bound::Unbounded, upper))
            .rev()
        {
            if out.len() == limit {
                more = true;
                break;
            }
            out.push(idx.live[id].task.clone());
        }
        let next = if more {
            out.last().map(|t| t.id.clone())
        } else {
            None
        };
        (out, next)
    }

    /// The priorities whose lanes are paused, as last made durable.
    pub(crate) fn paused_lanes(&self) -> Vec<Priority> {
        self.read().paused_lanes.clone()
    }

    /// The paused priorities are now (durably) these.
    pub(crate) fn set_paused_lanes(&self, lanes: Vec<Priority>) {
        self.write().paused_lanes = lanes;
    }

    /// What agents spent is now this.
    pub(crate) fn set_usage(&self, usage: crate::domain::usage::Usage) {
        self.write().usage = usage;
    }

    /// The day's usage as stored (to tell whether it changed).
    pub(crate) fn usage_today_json(&self) -> String {
        self.read().usage.today_json()
    }

    /// What agents spent on the UTC day of `now`.
    pub(crate) fn usage(&self, now: Timestamp) -> crate::domain::usage::UsageView {
        self.read().usage.view(now)
    }

    /// What agents spent since the hub started, per agent.
    pub(crate) fn usage_totals(&self) -> BTreeMap<String, crate::domain::usage::Spent> {
        self.read().usage.totals().clone()
    }

    pub(crate) fn counts(&self) -> TaskCounts {
        let idx = self.read();
        TaskCounts {
            by_status: TaskStatus::ALL
                .iter()
                .map(|s| (*s, idx.counts.get(s).copied().unwrap_or(0)))
                .collect(),
            lane_depth: idx.lane_depth,
            oldest_queued_at: idx.queued.first().map(|(t, _)| Timestamp(*t)),
            total: idx.counts.values().sum(),
        }
    }
}

/// Reads of tasks that see durable state only: live tasks from the view,
/// finished ones from the store, skipping what the store holds of a group
/// not yet durable. Its methods read the store: call them off the actor
/// and HTTP threads (`web::block`).
#[derive(Clone)]
pub(crate) struct TaskReader {
    pub view: Arc<TaskView>,
    pub store: Store,
}

impl TaskReader {
    /// One task, with its durable history length; None if it does not
    /// exist (or its create is not durable yet).
    pub(crate) fn task(&self, id: &str, fields: Fields) -> Result<Option<(Task, u32)>, StoreError> {
        match self.view.lookup(id) {
            Lookup::Live(t, len) => Ok(Some((with_fields((*t).clone(), fields), len))),
            Lookup::NotYet => Ok(None),
            Lookup::InStore => Ok(self.store.task(id)?.map(|s| {
                let t = with_fields(s.task, fields);
                (t, s.history_len)
            })),
        }
    }

    /// A page of tasks, newest first, of one status or all, after `cursor`.
    pub(crate) fn page(
        &self,
        status: Option<TaskStatus>,
        limit: usize,
        cursor: Option<&str>,
        fields: Fields,
    ) -> Result<(Vec<Task>, Option<String>), StoreError> {
        if let Some(s) = status.filter(|s| !s.is_terminal()) {
            let (tasks, next) = self.view.page_live(s, limit, cursor);
            let tasks = tasks
                .into_iter()
                .map(|t| with_fields((*t).clone(), fields))
                .collect();
            return Ok((tasks, next));
        }
        let view = &self.view;
        // A live task is shown as the view holds it (durable); any other
        // task the group being written touches is skipped until durable.
        let (rows, more) =
            self.store
                .page(status, cursor, limit, fields, |id| match view.live(id) {
                    Some(t) => status.is_none_or(|s| t.status == s),
                    None => !view.in_flight(id),
                })?;
        let tasks: Vec<Task> = rows
            .into_iter()
            .map(|r| match view.live(&r.task.id) {
                Some(t) => with_fields((*t).clone(), fields),
                None => r.task,
            })
            .collect();
        let next = if more {
            tasks.last().map(|t| t.id.clone())
        } else {
            None
        };
        Ok((tasks, next))
    }
}

/// One group fewer touches `id`.
fn uncount(in_flight: &mut HashMap<String, u32>, id: &str) {
    if let Some(n) = in_flight.get_mut(id) {
        *n -= 1;
        if *n == 0 {
            in_flight.remove(id);
        }
    }
}

/// The task with only the heavy fields `fields` asks for.
fn with_fields(mut t: Task, fields: Fields) -> Task {
    if !fields.description_and_metadata {
        t.description = String::new();
        t.metadata = None;
    }
    if !fields.result {
        t.result = None;
    }
    t
}

fn add_live(idx: &mut TaskIndex, task: Task, history_len: u32) {
    idx.by_status
        .entry(task.status)
        .or_default()
        .insert(task.id.clone());
    if task.status == TaskStatus::Queued {
        idx.lane_depth[lane_index(task.priority, LaneKind::of(&task))] += 1;
        idx.queued
            .insert((task.queued_at.unwrap_or(task.created_at).0, task.id.clone()));
    }
    idx.live.insert(
        task.id.clone(),
        Durable {
            task: Arc::new(task),
            history_len,
        },
    );
}

fn remove_live(idx: &mut TaskIndex, t: &Task) {
    if let Some(ids) = idx.by_status.get_mut(&t.status) {
        ids.remove(&t.id);
    }
    if t.status == TaskStatus::Queued {
        let lane = lane_index(t.priority, LaneKind::of(t));
        idx.lane_depth[lane] = idx.lane_depth[lane].saturating_sub(1);
        idx.queued
            .remove(&(t.queued_at.unwrap_or(t.created_at).0, t.id.clone()));
    }
}

/// The durable state of every live change (open, reviewing, escalated,
/// merging) and counts of changes per status; finished changes are read
/// from the store, like finished tasks.
#[derive(Default)]
pub(crate) struct ChangeView {
    inner: RwLock<ChangeIndex>,
}

#[derive(Default)]
struct ChangeIndex {
    live: BTreeMap<String, (Arc<Change>, u32)>,
    counts: BTreeMap<ChangeStatus, usize>,
    /// How many groups being written touch each change.
    in_flight: HashMap<String, u32>,
}

impl ChangeView {
    pub(crate) fn new(
        live: impl IntoIterator<Item = (Change, u32)>,
        counts: BTreeMap<ChangeStatus, usize>,
    ) -> Self {
        let v = ChangeView::default();
        {
            let mut idx = v.inner.write().unwrap_or_else(|e| e.into_inner());
            idx.counts = counts;
            for (c, len) in live {
                idx.live.insert(c.id.clone(), (Arc::new(c), len));
            }
        }
        v
    }

    /// A group is about to be written.
    pub(crate) fn begin(&self, deltas: &[ChangeDelta]) {
        let mut idx = self.inner.write().unwrap_or_else(|e| e.into_inner());
        for d in deltas {
            *idx.in_flight.entry(d.change.id.clone()).or_default() += 1;
        }
    }

    /// Mirror a durable group.
    pub(crate) fn apply(&self, deltas: &[ChangeDelta]) {
        let mut idx = self.inner.write().unwrap_or_else(|e| e.into_inner());
        for d in deltas {
            let c = &d.change;
            if let Some(prev) = d.previous_status {
                let n = idx.counts.entry(prev).or_default();
                *n = n.saturating_sub(1);
            }
            *idx.counts.entry(c.status).or_default() += 1;
            if c.status.is_live() {
                idx.live
                    .insert(c.id.clone(), (Arc::new(c.clone()), d.history_len));
            } else {
                idx.live.remove(&c.id);
            }
            uncount(&mut idx.in_flight, &c.id);
        }
    }

    /// Retention deleted these changes (of the given statuses).
    pub(crate) fn purged(&self, statuses: &[ChangeStatus]) {
        let mut idx = self.inner.write().unwrap_or_else(|e| e.into_inner());
        for s in statuses {
            let n = idx.counts.entry(*s).or_default();
            *n = n.saturating_sub(1);
        }
    }

    /// The durable live change `id`, with its history length.
    pub(crate) fn live(&self, id: &str) -> Option<(Arc<Change>, u32)> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .live
            .get(id)
            .cloned()
    }

    /// The live changes, newest first.
    pub(crate) fn live_all(&self) -> Vec<Arc<Change>> {
        let idx = self.inner.read().unwrap_or_else(|e| e.into_inner());
        idx.live.values().rev().map(|(c, _)| c.clone()).collect()
    }

    pub(crate) fn in_flight(&self, id: &str) -> bool {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .in_flight
            .contains_key(id)
    }

    pub(crate) fn counts(&self) -> BTreeMap<ChangeStatus, usize> {
        let idx = self.inner.read().unwrap_or_else(|e| e.into_inner());
        ChangeStatus::ALL
            .iter()
            .map(|s| (*s, idx.counts.get(s).copied().unwrap_or(0)))
            .collect()
    }
}

/// Reads of changes that see durable state only (like [`TaskReader`]):
/// live changes from the view, finished ones from the store, skipping a
/// change whose first write is not durable yet. Call off the actor and
/// HTTP threads.
#[derive(Clone)]
pub(crate) struct ChangeReader {
    pub view: Arc<ChangeView>,
    pub store: Store,
}

impl ChangeReader {
    /// One change with its durable history length.
    pub(crate) fn change(&self, id: &str) -> Result<Option<(Change, u32)>, StoreError> {
        if let Some((c, len)) = self.view.live(id) {
            return Ok(Some(((*c).clone(), len)));
        }
        if self.view.in_flight(id) {
            return Ok(None);
        }
        Ok(self.store.change(id)?.map(|s| (s.change, s.history_len)))
    }

    /// Changes newest first, of one status or all, of one repository or
    /// all, at most `limit`.
    pub(crate) fn list(
        &self,
        status: Option<ChangeStatus>,
        repo: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        let of_repo = |c: &Change| repo.is_none_or(|r| c.repo == r);
        if let Some(s) = status.filter(|s| s.is_live()) {
            return Ok(self
                .view
                .live_all()
                .into_iter()
                .filter(|c| c.status == s && of_repo(c))
                .take(limit)
                .map(|c| (*c).clone())
                .collect());
        }
        let view = &self.view;
        let rows = self.store.change_page(status, limit, |c| {
            let shown = match view.live(&c.id) {
                Some((live, _)) => status.is_none_or(|s| live.status == s),
                None => !view.in_flight(&c.id),
            };
            shown && of_repo(c)
        })?;
        Ok(rows
            .into_iter()
            .map(|r| match view.live(&r.change.id) {
                Some((c, _)) => (*c).clone(),
                None => r.change,
            })
            .collect())
    }
}

/// What `GET /api/repos` shows of each repository, as its owners publish
/// it (the queue actor: health, paused, merge queue; repository actors:
/// main's commit).
/// Each change of an entry goes out on the event bus (`event: repo`,
/// `{"repo": {…}}`) when one is attached, for the dashboard.
#[derive(Default)]
pub(crate) struct RepoView {
    inner: RwLock<BTreeMap<String, RepoInfo>>,
    events: Option<Arc<EventBus>>,
}

impl RepoView {
    pub(crate) fn new(repos: impl IntoIterator<Item = (String, String)>) -> Self {
        let v = RepoView::default();
        {
            let mut m = v.inner.write().unwrap_or_else(|e| e.into_inner());
            for (name, main_branch) in repos {
                m.insert(
                    name.clone(),
                    RepoInfo {
                        name,
                        main_branch,
                        main_sha: None,
                        health: Health::Unknown,
                        merges_paused: false,
                        queue: vec![],
                    },
                );
            }
        }
        v
    }

    /// Publish every change of an entry on `events`.
    pub(crate) fn with_events(mut self, events: Arc<EventBus>) -> Self {
        self.events = Some(events);
        self
    }

    /// Change one repository's entry (and say so, if it changed: under
    /// the lock, so the events come in the order of the changes;
    /// publishing never blocks).
    pub(crate) fn update(&self, repo: &str, f: impl FnOnce(&mut RepoInfo)) {
        let mut m = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let Some(r) = m.get_mut(repo) else { return };
        let before = r.clone();
        f(r);
        if let Some(events) = self.events.as_ref().filter(|_| *r != before) {
            events.publish("repo", serde_json::json!({ "repo": &*r }));
        }
    }

    pub(crate) fn all(&self) -> Vec<RepoInfo> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// The latest published state of every agent.
#[derive(Default)]
pub struct AgentView {
    inner: RwLock<BTreeMap<String, AgentInfo>>,
}

impl AgentView {
    /// The agent is now `info` (its `recent` is ignored: the view keeps the
    /// transitions appended by [`AgentView::push_recent`]).
    pub fn publish(&self, mut info: AgentInfo) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = inner.get_mut(&info.id) {
            info.recent = std::mem::take(&mut old.recent);
        } else {
            info.recent = Vec::new();
        }
        inner.insert(info.id.clone(), info);
    }

    /// Agent `id` made these transitions (oldest first); the view keeps
    /// the last `keep`.
    pub fn push_recent(&self, id: &str, transitions: &[AgentTransition], keep: usize) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = inner.get_mut(id) {
            a.recent.extend_from_slice(transitions);
            let over = a.recent.len().saturating_sub(keep);
            a.recent.drain(..over);
        }
    }

    pub fn remove(&self, id: &str) {
        self.inner
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    pub fn get(&self, id: &str) -> Option<AgentInfo> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    pub fn all(&self) -> Vec<AgentInfo> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn counts(&self) -> BTreeMap<AgentState, usize> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut out: BTreeMap<AgentState, usize> =
            AgentState::ALL.iter().map(|s| (*s, 0)).collect();
        for a in inner.values() {
            *out.entry(a.state).or_default() += 1;
        }
        out
    }

    /// How many agents an operator paused.
    pub fn paused(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|a| a.paused)
            .count()
    }

    pub fn connected(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|a| a.connected)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::matching::IdleAgent;
    use crate::domain::queue::{Created, QueueCore, QueueSettings};
    use agentcom_protocol::{NewTask, Priority};

    fn now(ms: i64) -> Timestamp {
        Timestamp(1_800_000_000_000 + ms)
    }

    #[test]
    fn counts_follow_changes_and_live_pages_go_newest_first() {
        let mut q = QueueCore::new(QueueSettings::default());
        let view = TaskView::default();
        let mut ids = vec![];
        for i in 0..5 {
            let p = if i == 4 {
                Priority::Urgent
            } else {
                Priority::Normal
            };
            if let Ok(Created::New(t)) = q.create(
                NewTask {
                    title: format!("t{i}"),
                    priority: Some(p),
                    ..Default::default()
                },
                now(i),
            ) {
                ids.push(t.id);
            }
        }
        let changes = q.take_deltas();
        view.begin(&changes);
        assert!(matches!(view.lookup(&ids[0]), Lookup::NotYet));
        view.apply_deltas(&changes);
        assert!(matches!(view.lookup(&ids[0]), Lookup::Live(..)));
        let c = view.counts();
        assert_eq!(c.by_status[&TaskStatus::Queued], 5);
        assert_eq!(
            c.lane_depth[lane_index(Priority::Normal, LaneKind::Fresh)],
            4
        );
        assert_eq!(c.oldest_queued_at, Some(now(0)));

        q.claim(&[IdleAgent::new("a", &[], 0)], now(10));
        q.cancel(&ids[3], "x", now(11)).unwrap();
        view.apply_deltas(&q.take_deltas());
        let c = view.counts();
        assert_eq!(c.by_status[&TaskStatus::Queued], 3);
        assert_eq!(c.by_status[&TaskStatus::Assigned], 1);
        assert_eq!(c.by_status[&TaskStatus::Cancelled], 1);
        assert_eq!(c.total, 5);
        assert_eq!(
            c.lane_depth[lane_index(Priority::Urgent, LaneKind::Fresh)],
            0
        );
        assert!(
            matches!(view.lookup(&ids[3]), Lookup::InStore),
            "finished tasks are read from the store"
        );

        let (page, next) = view.page_live(TaskStatus::Queued, 2, None);
        assert_eq!(
            page.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
            [ids[2].clone(), ids[1].clone()]
        );
        let (page2, next2) = view.page_live(TaskStatus::Queued, 2, next.as_deref());
        assert_eq!(
            page2.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
            [ids[0].clone()]
        );
        assert_eq!(next2, None, "last page");
        view.purged(&[Purged {
            id: ids[3].clone(),
            status: TaskStatus::Cancelled,
            changes: vec![],
        }]);
        assert_eq!(view.counts().by_status[&TaskStatus::Cancelled], 0);
    }

    #[test]
    fn a_repository_entry_that_changes_goes_out_as_a_repo_event() {
        let events = Arc::new(EventBus::new(100, 1 << 20, 16));
        let view =
            RepoView::new([("app".to_string(), "main".to_string())]).with_events(events.clone());
        let mut sub = events.subscribe(None).live;
        view.update("app", |r| r.main_sha = Some("abc".into()));
        view.update("app", |r| r.main_sha = Some("abc".into())); // no change, no event
        view.update("nope", |r| r.merges_paused = true); // not guarded
        view.update("app", |r| r.health = Health::Red);
        let first = sub.try_recv().unwrap();
        assert_eq!(first.kind, "repo");
        let v: serde_json::Value = serde_json::from_str(&first.data).unwrap();
        assert_eq!(v["repo"]["name"], "app");
        assert_eq!(v["repo"]["main_sha"], "abc");
        let second: serde_json::Value =
            serde_json::from_str(&sub.try_recv().unwrap().data).unwrap();
        assert_eq!(second["repo"]["health"], "red");
        assert!(sub.try_recv().is_err());
    }
}
