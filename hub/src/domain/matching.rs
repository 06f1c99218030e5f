//! Matching queued tasks to idle agents.
//!
//! Task-centric, in lane order: the next task (by lane, then FIFO) that
//! some idle agent can do goes to the capable agent that has been idle
//! longest. A task nobody can do is skipped, never blocking those behind
//! it. Pure: it reads the lanes and returns pairs; the queue applies them.

use std::collections::BTreeSet;

use agentcom_protocol::Timestamp;

use crate::domain::lanes::{LaneKey, Lanes, Needs};

/// An agent the scheduler may give work to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdleAgent {
    pub id: String,
    pub capabilities: BTreeSet<String>,
    pub idle_since: Timestamp,
    /// The model's context window its sidecar reports, in tokens.
    pub context_window_tokens: Option<u64>,
}

impl IdleAgent {
    pub fn new(id: &str, capabilities: &[&str], idle_since: i64) -> Self {
        IdleAgent {
            id: id.to_string(),
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
            idle_since: Timestamp(idle_since),
            context_window_tokens: None,
        }
    }

    /// With a context window of `tokens`.
    pub fn with_window(mut self, tokens: u64) -> Self {
        self.context_window_tokens = Some(tokens);
        self
    }

    /// Whether a task with this context budget fits the agent's window
    /// (an agent that reports no window takes only tasks without one).
    pub fn fits(&self, budget: Option<u64>) -> bool {
        budget.is_none_or(|b| self.context_window_tokens.is_some_and(|w| w >= b))
    }

    /// Whether this agent has every needed capability.
    pub fn can_do(&self, needs: &[String]) -> bool {
        needs.iter().all(|n| self.capabilities.contains(n))
    }
}

/// One capability group of a lane with a cursor over its FIFO.
struct Cursor<'a> {
    needs: &'a Needs,
    keys: std::iter::Peekable<std::collections::btree_set::Iter<'a, LaneKey>>,
}

/// Pairs of (task id, agent id) to assign now. `open` may close a whole
/// capability group of a lane, by lane index and needs (a red
/// repository's tasks, a paused lane's, go to nobody); `eligible`
/// may refuse a particular pairing beyond capabilities (a review task is
/// never given to its change's author). A task passed over never blocks
/// those behind it. Exhaustive: no agent left free can take a task left
/// queued (the scheduler relies on it to offer a later claim only the
/// agents idle since).
pub(crate) fn plan(
    lanes: &Lanes,
    agents: &[IdleAgent],
    open: impl Fn(usize, &Needs) -> bool,
    eligible: impl Fn(&str, &IdleAgent) -> bool,
) -> Vec<(String, String)> {
    if lanes.is_empty() {
        return Vec::new();
    }
    let mut free: Vec<&IdleAgent> = agents.iter().collect();
    free.sort_by(|a, b| {
        a.idle_since
            .cmp(&b.idle_since)
            .then_with(|| a.id.cmp(&b.id))
    });
    let mut out = Vec::new();
    for (index, lane) in lanes.in_order() {
        if free.is_empty() {
            break;
        }
        let mut groups: Vec<Cursor> = lane
            .groups()
            .filter(|(needs, _)| open(index, needs))
            .map(|(needs, fifo)| Cursor {
                needs,
                keys: fifo.iter().peekable(),
            })
            .collect();
        while !free.is_empty() {
            let mut best: Option<(usize, &LaneKey)> = None;
            for (gi, g) in groups.iter_mut().enumerate() {
                let needs = g.needs;
                if let Some(k) = g.keys.peek().copied() {
                    let better = best.is_none_or(|(_, b)| k < b);
                    if better && free.iter().any(|a| a.can_do(needs)) {
                        best = Some((gi, k));
                    }
                }
            }
            let Some((gi, key)) = best else { break };
            let group = &mut groups[gi];
            group.keys.next();
            let Some(agent_pos) = free
                .iter()
                .position(|a| a.can_do(group.needs) && eligible(&key.1, a))
            else {
                continue; // no free agent may take this one: the next
            };
            let agent = free.remove(agent_pos);
            out.push((key.1.clone(), agent.id.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lanes::LaneKind;
    use agentcom_protocol::Priority;

    fn caps(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_budget_fits_only_a_window_at_least_that() {
        let small = IdleAgent::new("s", &[], 0).with_window(32_000);
        let unsaid = IdleAgent::new("u", &[], 0);
        assert!(small.fits(None) && unsaid.fits(None), "no budget: anyone");
        assert!(small.fits(Some(32_000)));
        assert!(!small.fits(Some(32_001)));
        assert!(
            !unsaid.fits(Some(1)),
            "no window said: only tasks without a budget"
        );
    }

    #[test]
    fn longest_idle_capable_agent_gets_the_first_task() {
        let mut l = Lanes::default();
        l.push("t1", Priority::Normal, LaneKind::Fresh, &[], 1);
        let agents = [
            IdleAgent::new("recent", &[], 50),
            IdleAgent::new("longest", &[], 10),
        ];
        assert_eq!(
            plan(&l, &agents, |_, _| true, |_, _| true),
            [("t1".to_string(), "longest".to_string())]
        );
    }

    #[test]
    fn capabilities_must_all_be_present() {
        let mut l = Lanes::default();
        l.push(
            "needs-py",
            Priority::Normal,
            LaneKind::Fresh,
            &caps(&["python", "git"]),
            1,
        );
        let agents = [
            IdleAgent::new("a", &["python"], 1),
            IdleAgent::new("b", &["git", "python", "rust"], 2),
        ];
        assert_eq!(
            plan(&l, &agents, |_, _| true, |_, _| true),
            [("needs-py".to_string(), "b".to_string())]
        );
    }

    #[test]
    fn a_task_nobody_can_do_does_not_block_the_lane() {
        let mut l = Lanes::default();
        l.push("gpu", Priority::Urgent, LaneKind::Fresh, &caps(&["gpu"]), 1);
        l.push("plain1", Priority::Urgent, LaneKind::Fresh, &[], 2);
        l.push("plain2", Priority::Low, LaneKind::Fresh, &[], 3);
        let agents = [IdleAgent::new("a", &[], 1), IdleAgent::new("b", &[], 2)];
        assert_eq!(
            plan(&l, &agents, |_, _| true, |_, _| true),
            [
                ("plain1".to_string(), "a".to_string()),
                ("plain2".to_string(), "b".to_string())
            ]
        );
    }

    #[test]
    fn urgent_before_low_and_fresh_before_retry() {
        let mut l = Lanes::default();
        l.push("low", Priority::Low, LaneKind::Fresh, &[], 1);
        l.push("normal-retry", Priority::Normal, LaneKind::Retry, &[], 2);
        l.push("normal", Priority::Normal, LaneKind::Fresh, &[], 3);
        l.push("urgent", Priority::Urgent, LaneKind::Fresh, &[], 4);
        let one = [IdleAgent::new("a", &[], 1)];
        assert_eq!(plan(&l, &one, |_, _| true, |_, _| true)[0].0, "urgent");
        let many: Vec<IdleAgent> = (0..4)
            .map(|i| IdleAgent::new(&format!("a{i}"), &[], i))
            .collect();
        let order: Vec<String> = plan(&l, &many, |_, _| true, |_, _| true)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(order, ["urgent", "normal", "normal-retry", "low"]);
    }

    #[test]
    fn fifo_across_capability_groups_within_a_lane() {
        let mut l = Lanes::default();
        l.push(
            "rust-late",
            Priority::Normal,
            LaneKind::Fresh,
            &caps(&["rust"]),
            30,
        );
        l.push("any-early", Priority::Normal, LaneKind::Fresh, &[], 10);
        l.push(
            "rust-mid",
            Priority::Normal,
            LaneKind::Fresh,
            &caps(&["rust"]),
            20,
        );
        let agents = [IdleAgent::new("r", &["rust"], 1)];
        assert_eq!(
            plan(&l, &agents, |_, _| true, |_, _| true)[0].0,
            "any-early"
        );
        let two = [
            IdleAgent::new("r", &["rust"], 1),
            IdleAgent::new("s", &["rust"], 2),
        ];
        let got: Vec<String> = plan(&l, &two, |_, _| true, |_, _| true)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(got, ["any-early", "rust-mid"]);
    }

    #[test]
    fn specialist_is_kept_for_the_task_only_it_can_do() {
        // The longest-idle agent is the specialist, but the first task can be
        // done by anyone: it still goes to the longest-idle capable agent,
        // which is the rule the issue states. The second task then finds the
        // remaining capable agent.
        let mut l = Lanes::default();
        l.push("plain", Priority::Normal, LaneKind::Fresh, &[], 1);
        l.push(
            "py",
            Priority::Normal,
            LaneKind::Fresh,
            &caps(&["python"]),
            2,
        );
        let agents = [
            IdleAgent::new("generalist", &["python"], 5),
            IdleAgent::new("other", &["python"], 9),
        ];
        let got = plan(&l, &agents, |_, _| true, |_, _| true);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], ("plain".to_string(), "generalist".to_string()));
        assert_eq!(got[1], ("py".to_string(), "other".to_string()));
    }

    #[test]
    fn no_agents_or_no_tasks_plans_nothing() {
        let mut l = Lanes::default();
        assert!(plan(&l, &[IdleAgent::new("a", &[], 1)], |_, _| true, |_, _| true).is_empty());
        l.push("t", Priority::Normal, LaneKind::Fresh, &[], 1);
        assert!(plan(&l, &[], |_, _| true, |_, _| true).is_empty());
    }

    #[test]
    fn a_task_no_free_agent_may_take_is_passed_over() {
        let mut l = Lanes::default();
        l.push("review-of-a", Priority::Normal, LaneKind::Fresh, &[], 1);
        l.push("next", Priority::Normal, LaneKind::Fresh, &[], 2);
        let agents = [IdleAgent::new("a", &[], 0)];
        let got = plan(
            &l,
            &agents,
            |_, _| true,
            |task, agent| !(task == "review-of-a" && agent.id == "a"),
        );
        assert_eq!(got, [("next".to_string(), "a".to_string())]);
    }

    #[test]
    fn a_closed_group_is_skipped_and_others_still_served() {
        let mut l = Lanes::default();
        l.push(
            "red-1",
            Priority::Urgent,
            LaneKind::Fresh,
            &caps(&["@repo red"]),
            1,
        );
        l.push(
            "red-2",
            Priority::Urgent,
            LaneKind::Fresh,
            &caps(&["@repo red"]),
            2,
        );
        l.push(
            "green",
            Priority::Low,
            LaneKind::Fresh,
            &caps(&["@repo green"]),
            3,
        );
        let agents = [IdleAgent::new("a", &["@repo red", "@repo green"], 0)];
        let got = plan(
            &l,
            &agents,
            |_, needs| !needs.contains(&"@repo red".to_string()),
            |_, _| true,
        );
        assert_eq!(got, [("green".to_string(), "a".to_string())]);
    }

    #[test]
    fn many_passed_over_tasks_do_not_hide_one_an_agent_may_take() {
        let mut l = Lanes::default();
        for i in 0..50 {
            l.push(
                &format!("review-{i:02}"),
                Priority::Normal,
                LaneKind::Fresh,
                &[],
                i,
            );
        }
        l.push("last", Priority::Normal, LaneKind::Fresh, &[], 99);
        let agents = [
            IdleAgent::new("author", &[], 0),
            IdleAgent::new("b", &[], 1),
        ];
        let got = plan(
            &l,
            &agents,
            |_, _| true,
            |task, agent| !(task.starts_with("review") && agent.id == "author"),
        );
        assert_eq!(
            got,
            [
                ("review-00".to_string(), "b".to_string()),
                ("last".to_string(), "author".to_string())
            ]
        );
    }

    #[test]
    fn a_closed_lane_is_skipped_and_lower_lanes_still_served() {
        let mut l = Lanes::default();
        l.push("urgent", Priority::Urgent, LaneKind::Fresh, &[], 1);
        l.push("urgent-retry", Priority::Urgent, LaneKind::Retry, &[], 2);
        l.push("low", Priority::Low, LaneKind::Fresh, &[], 3);
        let agents = [IdleAgent::new("a", &[], 0), IdleAgent::new("b", &[], 1)];
        let urgent = [
            crate::domain::lanes::lane_index(Priority::Urgent, LaneKind::Fresh),
            crate::domain::lanes::lane_index(Priority::Urgent, LaneKind::Retry),
        ];
        let got = plan(&l, &agents, |lane, _| !urgent.contains(&lane), |_, _| true);
        assert_eq!(got, [("low".to_string(), "a".to_string())]);
    }
}
