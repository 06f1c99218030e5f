//! The priority lanes: which queued task is next.
//!
//! Eight lanes, served in this order: urgent, urgent-retry, high,
//! high-retry, normal, normal-retry, low, low-retry. A retried task waits
//! behind fresh tasks of its priority, so a failing batch cannot starve new
//! work. Inside a lane, tasks are FIFO by the time they (re)entered the
//! queue, grouped by their set of needed capabilities so that matching can
//! skip a whole group no idle agent can serve without scanning it.
//!
//! Lanes hold only ids and ordering keys; the tasks themselves belong to
//! [`crate::domain::queue::QueueCore`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use agentcom_protocol::Priority;

/// Number of lanes (4 priorities × fresh/retry).
pub(crate) const LANE_COUNT: usize = 8;

/// A sorted, de-duplicated list of needed capabilities.
pub(crate) type Needs = Vec<String>;

/// Ordering key inside a lane: when the task entered it, then its id.
pub(crate) type LaneKey = (i64, String);

/// Which of its priority's two lanes a queued task waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LaneKind {
    /// Never failed in its current retry budget.
    Fresh,
    /// Queued again after a failed attempt: waits behind fresh tasks.
    Retry,
}

impl LaneKind {
    /// The lane kind of a task, from its attempts.
    pub(crate) fn of(task: &agentcom_protocol::Task) -> LaneKind {
        if task.is_retry() {
            LaneKind::Retry
        } else {
            LaneKind::Fresh
        }
    }
}

/// Lane index of a priority and lane kind.
pub(crate) fn lane_index(priority: Priority, kind: LaneKind) -> usize {
    priority.rank() * 2 + usize::from(kind == LaneKind::Retry)
}

/// The priority a lane serves.
pub(crate) fn lane_priority(index: usize) -> Priority {
    Priority::ALL[index / 2]
}

/// Human name of a lane, e.g. `normal` or `normal_retry`.
pub(crate) fn lane_name(index: usize) -> String {
    let p = lane_priority(index);
    if index % 2 == 1 {
        format!("{}_retry", p.as_str())
    } else {
        p.as_str().to_string()
    }
}

/// Normalise a capability list into a [`Needs`] key.
pub(crate) fn needs_key(needed: &[String]) -> Needs {
    let set: BTreeSet<&String> = needed.iter().collect();
    set.into_iter().cloned().collect()
}

/// Where a queued task waits (see [`Lanes::place`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Place {
    pub lane: usize,
    pub ahead_in_lane: usize,
    pub in_earlier_lanes: usize,
}

#[derive(Debug, Default)]
pub(crate) struct Lane {
    groups: BTreeMap<Needs, BTreeSet<LaneKey>>,
    len: usize,
}

impl Lane {
    /// The capability groups of this lane, each with its FIFO of tasks.
    pub(crate) fn groups(&self) -> impl Iterator<Item = (&Needs, &BTreeSet<LaneKey>)> {
        self.groups.iter()
    }
}

/// Where a queued task sits.
#[derive(Debug)]
struct Position {
    lane: usize,
    needs: Needs,
    queued_at: i64,
    /// The count of pushes when it was put there (see [`Lanes::pushes`]).
    push: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Lanes {
    lanes: [Lane; LANE_COUNT],
    /// Where each queued task sits, so it can be removed by id.
    position: HashMap<String, Position>,
    /// Tasks put in a lane so far (each push counted, a move too).
    pushes: u64,
}

impl Lanes {
    /// Put a task in its lane. A task already queued is moved.
    pub(crate) fn push(
        &mut self,
        id: &str,
        priority: Priority,
        kind: LaneKind,
        needed: &[String],
        queued_at: i64,
    ) {
        self.remove(id);
        let lane = lane_index(priority, kind);
        let needs = needs_key(needed);
        self.lanes[lane]
            .groups
            .entry(needs.clone())
            .or_default()
            .insert((queued_at, id.to_string()));
        self.lanes[lane].len += 1;
        self.pushes += 1;
        self.position.insert(
            id.to_string(),
            Position {
                lane,
                needs,
                queued_at,
                push: self.pushes,
            },
        );
    }

    /// How many tasks were put in a lane so far: a mark that tells the
    /// tasks queued before a moment (see [`Lanes::pushed_by`]) from those
    /// queued after it.
    pub(crate) fn pushes(&self) -> u64 {
        self.pushes
    }

    /// Whether a queued task entered its lane by the time the count of
    /// pushes was `mark` (and stayed since).
    pub(crate) fn pushed_by(&self, id: &str, mark: u64) -> bool {
        self.position.get(id).is_some_and(|p| p.push <= mark)
    }

    /// Take a task out of its lane; false if it was not queued.
    pub(crate) fn remove(&mut self, id: &str) -> bool {
        let Some(Position {
            lane,
            needs,
            queued_at,
            ..
        }) = self.position.remove(id)
        else {
            return false;
        };
        let l = &mut self.lanes[lane];
        if let Some(group) = l.groups.get_mut(&needs) {
            group.remove(&(queued_at, id.to_string()));
            if group.is_empty() {
                l.groups.remove(&needs);
            }
        }
        l.len -= 1;
        true
    }

    /// A queued task's lane, the time it entered it, and its needs.
    pub(crate) fn key(&self, id: &str) -> Option<(usize, i64, &Needs)> {
        self.position
            .get(id)
            .map(|p| (p.lane, p.queued_at, &p.needs))
    }

    /// Where a queued task waits: its lane, how many tasks wait ahead of it
    /// in that lane (any capabilities) and in the lanes served before it.
    pub(crate) fn place(&self, id: &str) -> Option<Place> {
        let Position {
            lane, queued_at, ..
        } = self.position.get(id)?;
        let key = (*queued_at, id.to_string());
        let ahead_in_lane = self.lanes[*lane]
            .groups
            .values()
            .map(|g| g.range(..key.clone()).count())
            .sum();
        let in_earlier_lanes = self.lanes[..*lane].iter().map(|l| l.len).sum();
        Some(Place {
            lane: *lane,
            ahead_in_lane,
            in_earlier_lanes,
        })
    }

    /// The lanes in service order.
    pub(crate) fn in_order(&self) -> impl Iterator<Item = (usize, &Lane)> {
        self.lanes.iter().enumerate()
    }

    #[cfg(test)]
    pub(crate) fn depth(&self, lane: usize) -> usize {
        self.lanes[lane].len
    }

    pub(crate) fn len(&self) -> usize {
        self.position.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.position.is_empty()
    }

    /// Every queued id in service order (for tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn ordered_ids(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.len());
        for lane in &self.lanes {
            let mut keys: Vec<&LaneKey> = lane.groups.values().flatten().collect();
            keys.sort();
            out.extend(keys.into_iter().map(|(_, id)| id.clone()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_order_is_priority_then_fresh_before_retry_then_fifo() {
        let mut l = Lanes::default();
        l.push("low1", Priority::Low, LaneKind::Fresh, &[], 1);
        l.push("norm-retry", Priority::Normal, LaneKind::Retry, &[], 0);
        l.push("norm2", Priority::Normal, LaneKind::Fresh, &[], 5);
        l.push(
            "norm1",
            Priority::Normal,
            LaneKind::Fresh,
            &["b".into(), "a".into()],
            3,
        );
        l.push("urgent", Priority::Urgent, LaneKind::Fresh, &[], 9);
        assert_eq!(
            l.ordered_ids(),
            ["urgent", "norm1", "norm2", "norm-retry", "low1"]
        );
        assert_eq!(l.depth(lane_index(Priority::Normal, LaneKind::Fresh)), 2);
        assert_eq!(l.depth(lane_index(Priority::Normal, LaneKind::Retry)), 1);
    }

    #[test]
    fn remove_and_move() {
        let mut l = Lanes::default();
        l.push("a", Priority::Normal, LaneKind::Fresh, &[], 1);
        l.push("b", Priority::Normal, LaneKind::Fresh, &["x".into()], 2);
        assert!(l.remove("a"));
        assert!(!l.remove("a"));
        l.push("b", Priority::High, LaneKind::Fresh, &["x".into()], 2);
        assert_eq!(l.len(), 1);
        assert_eq!(l.depth(lane_index(Priority::Normal, LaneKind::Fresh)), 0);
        assert_eq!(l.depth(lane_index(Priority::High, LaneKind::Fresh)), 1);
    }

    #[test]
    fn needs_are_normalised() {
        assert_eq!(
            needs_key(&["b".into(), "a".into(), "b".into()]),
            vec!["a".to_string(), "b".to_string()]
        );
        assert_eq!(lane_name(0), "urgent");
        assert_eq!(lane_name(7), "low_retry");
    }
}
