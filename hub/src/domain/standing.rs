//! `Standing`: the idle agents the scheduler's claims left with the queue,
//! so that a task queued while one of them can take it is assigned in the
//! very group that queues it (decision 0018) instead of one claim later.
//!
//! The scheduler offers each idle agent in a claim; the agents a claim
//! leaves idle stand here until the scheduler withdraws them (busy,
//! offline, paused) or the next claim of everyone replaces them all. Since
//! matching is exhaustive, right after a claim no standing agent can take
//! any task left queued; the queue keeps it so by offering every task that
//! enters a lane afterwards to the standing agents at once (longest idle
//! capable first, as [`crate::domain::matching::plan`] would). Events that
//! make old queued tasks takeable at once (a lane or repository reopening)
//! break that, so they make the set unusable until the next claim of
//! everyone ([`Standing::invalidate`]).
//!
//! An agent given a task here is not the scheduler's to offer any more,
//! but the scheduler learns that only from the notice sent once the task's
//! group is durable. Each such gift is numbered; a claim says up to which
//! number its scheduler has seen notices, and an agent given a task in a
//! notice it has not seen is left out of that claim ([`Standing::offerable`]),
//! so no agent is given two tasks.
//!
//! It owns the set and those numbers only. It must never decide whether a
//! task may go to an agent beyond capabilities (the queue's rules say so,
//! through the `ok` of [`Standing::pick`]), read the clock, or know about
//! actors.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use agentcom_protocol::Timestamp;

use crate::domain::matching::IdleAgent;

/// Agents by their capabilities, each class longest idle first.
type Class = BTreeMap<(Timestamp, String), IdleAgent>;

#[derive(Debug, Default)]
pub(crate) struct Standing {
    classes: HashMap<BTreeSet<String>, Class>,
    /// Each standing agent's class and place in it.
    place: HashMap<String, (BTreeSet<String>, Timestamp)>,
    /// Agents given a task here, by the number of that gift, until the
    /// scheduler has seen its notice.
    given: HashMap<String, u64>,
    /// The number of the last gift.
    gifts: u64,
    /// No standing agent can take a task left queued (true from the first
    /// claim of everyone until something reopens old tasks).
    valid: bool,
}

impl Standing {
    /// The scheduler has seen every notice up to gift number `upto`: the
    /// agents given those tasks are its own to offer again.
    pub(crate) fn seen(&mut self, upto: u64) {
        if !self.given.is_empty() {
            self.given.retain(|_, n| *n > upto);
        }
    }

    /// Of the agents a claim offers, those the queue may match: not one
    /// given a task in a notice the scheduler has not seen.
    pub(crate) fn offerable(&self, agents: Vec<IdleAgent>) -> Vec<IdleAgent> {
        if self.given.is_empty() {
            return agents;
        }
        agents
            .into_iter()
            .filter(|a| !self.given.contains_key(&a.id))
            .collect()
    }

    /// The agents a claim left idle stand; a claim of everyone (`all`)
    /// replaces the set, and makes it usable again.
    pub(crate) fn stand(&mut self, left: impl IntoIterator<Item = IdleAgent>, all: bool) {
        if all {
            self.classes.clear();
            self.place.clear();
            self.valid = true;
        }
        for agent in left {
            self.withdraw(&agent.id);
            self.place.insert(
                agent.id.clone(),
                (agent.capabilities.clone(), agent.idle_since),
            );
            self.classes
                .entry(agent.capabilities.clone())
                .or_default()
                .insert((agent.idle_since, agent.id.clone()), agent);
        }
    }

    /// The agent is no longer idle (or no longer the queue's to match).
    pub(crate) fn withdraw(&mut self, id: &str) -> Option<IdleAgent> {
        let (caps, since) = self.place.remove(id)?;
        let class = self.classes.get_mut(&caps)?;
        let agent = class.remove(&(since, id.to_string()));
        if class.is_empty() {
            self.classes.remove(&caps);
        }
        agent
    }

    /// Tasks queued before now may have become takeable by a standing
    /// agent: match nothing here until the next claim of everyone.
    pub(crate) fn invalidate(&mut self) {
        self.valid = false;
    }

    /// Whether a task queued now may be matched here.
    pub(crate) fn usable(&self) -> bool {
        self.valid && !self.place.is_empty()
    }

    /// A standing agent by id.
    pub(crate) fn get(&self, id: &str) -> Option<&IdleAgent> {
        let (caps, since) = self.place.get(id)?;
        self.classes.get(caps)?.get(&(*since, id.to_string()))
    }

    /// The standing agent idle longest that has every one of `needs` and
    /// that `ok` accepts.
    pub(crate) fn pick(
        &self,
        needs: &[String],
        ok: impl Fn(&IdleAgent) -> bool,
    ) -> Option<&IdleAgent> {
        self.classes
            .iter()
            .filter(|(caps, _)| needs.iter().all(|n| caps.contains(n)))
            .filter_map(|(_, class)| class.iter().find(|(_, a)| ok(a)))
            .min_by(|(a, _), (b, _)| a.cmp(b))
            .map(|(_, agent)| agent)
    }

    /// The queue gave `id` a task: it stands no more, and is left out of
    /// claims until the scheduler has seen the notice. The gift's number.
    pub(crate) fn give(&mut self, id: &str) -> u64 {
        self.withdraw(id);
        self.gifts += 1;
        self.given.insert(id.to_string(), self.gifts);
        self.gifts
    }

    /// The number of the last gift.
    pub(crate) fn gifts(&self) -> u64 {
        self.gifts
    }

    pub(crate) fn len(&self) -> usize {
        self.place.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(agents: &[IdleAgent]) -> Vec<&str> {
        agents.iter().map(|a| a.id.as_str()).collect()
    }

    fn needs(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn nothing_is_usable_before_a_claim_of_everyone() {
        let mut s = Standing::default();
        s.stand([IdleAgent::new("a", &[], 1)], false);
        assert!(
            !s.usable(),
            "a partial claim alone says nothing of the queue"
        );
        s.stand([IdleAgent::new("a", &[], 1)], true);
        assert!(s.usable());
        s.invalidate();
        assert!(!s.usable(), "until the next claim of everyone");
        s.stand(vec![], true);
        assert!(!s.usable(), "nobody stands");
    }

    #[test]
    fn the_capable_agent_idle_longest_is_picked() {
        let mut s = Standing::default();
        s.stand(
            [
                IdleAgent::new("recent-rust", &["rust"], 30),
                IdleAgent::new("plain", &[], 10),
                IdleAgent::new("old-rust", &["rust", "git"], 20),
            ],
            true,
        );
        assert_eq!(s.pick(&[], |_| true).unwrap().id, "plain");
        assert_eq!(s.pick(&needs(&["rust"]), |_| true).unwrap().id, "old-rust");
        assert_eq!(
            s.pick(&needs(&["rust"]), |a| a.id != "old-rust")
                .unwrap()
                .id,
            "recent-rust",
            "one `ok` refuses is passed over"
        );
        assert!(s.pick(&needs(&["gpu"]), |_| true).is_none());
    }

    #[test]
    fn a_claim_of_everyone_replaces_the_set_and_a_partial_one_adds() {
        let mut s = Standing::default();
        s.stand(
            [IdleAgent::new("a", &[], 1), IdleAgent::new("b", &[], 2)],
            true,
        );
        s.stand([IdleAgent::new("c", &[], 3)], false);
        assert_eq!(s.len(), 3);
        // Idle again with other capabilities: one entry, the new one.
        s.stand([IdleAgent::new("a", &["py"], 4)], false);
        assert_eq!(s.len(), 3);
        assert!(s.get("a").unwrap().capabilities.contains("py"));
        s.stand([IdleAgent::new("c", &[], 3)], true);
        assert_eq!(s.len(), 1);
        assert!(s.get("a").is_none() && s.get("c").is_some());
        assert!(s.withdraw("c").is_some());
        assert!(s.withdraw("c").is_none());
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn an_agent_given_a_task_is_left_out_of_claims_until_its_notice_is_seen() {
        let mut s = Standing::default();
        s.stand(
            [IdleAgent::new("a", &[], 1), IdleAgent::new("b", &[], 2)],
            true,
        );
        let first = s.give("a");
        let second = s.give("b");
        assert!(second > first);
        assert!(s.get("a").is_none(), "it stands no more");
        let offered = || vec![IdleAgent::new("a", &[], 1), IdleAgent::new("b", &[], 2)];
        assert!(
            s.offerable(offered()).is_empty(),
            "a claim sent before the notices arrived offers neither"
        );
        s.seen(first);
        assert_eq!(ids(&s.offerable(offered())), ["a"]);
        s.seen(second);
        assert_eq!(ids(&s.offerable(offered())), ["a", "b"]);
    }
}
