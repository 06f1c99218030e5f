//! Read models: what the HTTP API and the dashboard read, without ever
//! waiting behind a write.
//!
//! [`TaskView`] holds the *durable* state of every task (the queue actor
//! applies each group of changes after it is synced), with counts per
//! status and lane kept incrementally, so `/api/state` never scans
//! anything, and each task's durable history length, so a history read
//! never runs ahead of the record it belongs to. [`AgentView`] holds the
//! latest [`AgentInfo`] each agent actor published. Both sit behind a `RwLock` held only for map updates
//! and copies; no I/O or await happens under it. The views never decide
//! anything: they mirror what their owners publish.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use agentcom_protocol::{AgentInfo, AgentState, Task, TaskStatus, Timestamp};

use crate::domain::lanes::{lane_index, LaneKind, LANE_COUNT};
use crate::domain::queue::Change;

/// A task as last made durable, and how many history entries were
/// durable with it (history is read up to there, never beyond).
#[derive(Clone)]
struct Durable {
    task: Arc<Task>,
    history_len: u32,
}

#[derive(Default)]
struct TaskIndex {
    tasks: BTreeMap<String, Durable>,
    by_status: HashMap<TaskStatus, BTreeSet<String>>,
    lane_depth: [usize; LANE_COUNT],
    /// Queued tasks by when they entered their lane (oldest first).
    queued: BTreeSet<(i64, String)>,
}

/// Counts for `/api/state` and `/metrics`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskCounts {
    pub by_status: BTreeMap<TaskStatus, usize>,
    pub lane_depth: [usize; LANE_COUNT],
    pub oldest_queued_at: Option<Timestamp>,
    pub total: usize,
}

#[derive(Default)]
pub struct TaskView {
    inner: RwLock<TaskIndex>,
}

impl TaskView {
    /// Mirror durable tasks, each with its durable history length (the
    /// initial load, and every synced group).
    pub fn apply<'a>(&self, tasks: impl IntoIterator<Item = (&'a Task, u32)>) {
        let mut idx = self.inner.write().unwrap_or_else(|e| e.into_inner());
        for (task, history_len) in tasks {
            if let Some(old) = idx.tasks.get(&task.id).map(|d| d.task.clone()) {
                remove_counts(&mut idx, &old);
            }
            add_counts(&mut idx, task);
            idx.tasks.insert(
                task.id.clone(),
                Durable {
                    task: Arc::new(task.clone()),
                    history_len,
                },
            );
        }
    }

    pub fn apply_changes(&self, changes: &[Change]) {
        self.apply(changes.iter().map(|c| (&c.task, c.history_len)));
    }

    pub fn get(&self, id: &str) -> Option<Arc<Task>> {
        self.get_with_history_len(id).map(|(t, _)| t)
    }

    /// The durable task and how many of its history entries are durable.
    pub fn get_with_history_len(&self, id: &str) -> Option<(Arc<Task>, u32)> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .tasks
            .get(id)
            .map(|d| (d.task.clone(), d.history_len))
    }

    /// A page of tasks, newest first, optionally of one status, starting
    /// after `cursor` (the id of the last task of the previous page).
    pub fn page(
        &self,
        status: Option<TaskStatus>,
        limit: usize,
        cursor: Option<&str>,
    ) -> (Vec<Arc<Task>>, Option<String>) {
        let idx = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(limit.min(1000));
        let mut more = false;
        let mut push = |t: &Arc<Task>| {
            if out.len() == limit {
                more = true;
                return false;
            }
            out.push(t.clone());
            true
        };
        match status {
            Some(s) => {
                let Some(ids) = idx.by_status.get(&s) else {
                    return (vec![], None);
                };
                let iter: Box<dyn Iterator<Item = &String>> = match cursor {
                    Some(c) => Box::new(
                        ids.range::<str, _>((
                            std::ops::Bound::Unbounded,
                            std::ops::Bound::Excluded(c),
                        ))
                        .rev(),
                    ),
                    None => Box::new(ids.iter().rev()),
                };
                for id in iter {
                    if !push(&idx.tasks[id].task) {
                        break;
                    }
                }
            }
            None => {
                let iter: Box<dyn Iterator<Item = (&String, &Durable)>> = match cursor {
                    Some(c) => Box::new(
                        idx.tasks
                            .range::<str, _>((
                                std::ops::Bound::Unbounded,
                                std::ops::Bound::Excluded(c),
                            ))
                            .rev(),
                    ),
                    None => Box::new(idx.tasks.iter().rev()),
                };
                for (_, d) in iter {
                    if !push(&d.task) {
                        break;
                    }
                }
            }
        }
        let next = if more {
            out.last().map(|t| t.id.clone())
        } else {
            None
        };
        (out, next)
    }

    pub fn counts(&self) -> TaskCounts {
        let idx = self.inner.read().unwrap_or_else(|e| e.into_inner());
        TaskCounts {
            by_status: TaskStatus::ALL
                .iter()
                .map(|s| (*s, idx.by_status.get(s).map_or(0, |ids| ids.len())))
                .collect(),
            lane_depth: idx.lane_depth,
            oldest_queued_at: idx.queued.first().map(|(t, _)| Timestamp(*t)),
            total: idx.tasks.len(),
        }
    }
}

fn add_counts(idx: &mut TaskIndex, t: &Task) {
    idx.by_status
        .entry(t.status)
        .or_default()
        .insert(t.id.clone());
    if t.status == TaskStatus::Queued {
        idx.lane_depth[lane_index(t.priority, LaneKind::of(t))] += 1;
        idx.queued
            .insert((t.queued_at.unwrap_or(t.created_at).0, t.id.clone()));
    }
}

fn remove_counts(idx: &mut TaskIndex, t: &Task) {
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

/// The latest published state of every agent.
#[derive(Default)]
pub struct AgentView {
    inner: RwLock<BTreeMap<String, AgentInfo>>,
}

impl AgentView {
    pub fn publish(&self, info: AgentInfo) {
        self.inner
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(info.id.clone(), info);
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
    fn counts_follow_changes_and_pages_go_newest_first() {
        let mut q = QueueCore::new(QueueSettings::default());
        let view = TaskView::default();
        let mut ids = vec![];
        for i in 0..5 {
            let p = if i == 4 {
                Priority::Urgent
            } else {
                Priority::Normal
            };
            if let Created::New(t) = q.create(
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
        view.apply_changes(&q.take_changes());
        let c = view.counts();
        assert_eq!(c.by_status[&TaskStatus::Queued], 5);
        assert_eq!(
            c.lane_depth[lane_index(Priority::Normal, LaneKind::Fresh)],
            4
        );
        assert_eq!(c.oldest_queued_at, Some(now(0)));

        q.claim(&[IdleAgent::new("a", &[], 0)], now(10));
        view.apply_changes(&q.take_changes());
        let c = view.counts();
        assert_eq!(c.by_status[&TaskStatus::Queued], 4);
        assert_eq!(c.by_status[&TaskStatus::Assigned], 1);
        assert_eq!(
            c.lane_depth[lane_index(Priority::Urgent, LaneKind::Fresh)],
            0
        );

        let (page, next) = view.page(None, 2, None);
        assert_eq!(
            page.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
            [ids[4].clone(), ids[3].clone()]
        );
        let (page2, next2) = view.page(None, 2, next.as_deref());
        assert_eq!(
            page2.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
            [ids[2].clone(), ids[1].clone()]
        );
        let (page3, next3) = view.page(None, 2, next2.as_deref());
        assert_eq!(page3.len(), 1);
        assert_eq!(next3, None, "last page");
        let (queued, _) = view.page(Some(TaskStatus::Queued), 10, None);
        assert_eq!(queued.len(), 4);
        assert!(view.page(Some(TaskStatus::Dead), 10, None).0.is_empty());
    }
}
