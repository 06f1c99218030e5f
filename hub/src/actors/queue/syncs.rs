//! The syncs the queue actor has running, oldest first, each with the
//! groups written before it began (decision 0019). It owns their order
//! and nothing else: it never touches the store or a thread.
//!
//! A sync makes durable everything written before it began, so when one
//! returns, every group of the syncs that began before it is durable too:
//! they finish with it, in the order they were written, and their own
//! sync's return later finishes nothing. A "sync" of groups that wrote
//! nothing (replies waiting their turn) makes nothing durable, so it
//! begins only when no other sync runs.

use std::collections::VecDeque;

pub(super) struct Syncs<G> {
    running: VecDeque<(u64, Vec<G>)>,
    next: u64,
    max: usize,
}

impl<G> Syncs<G> {
    /// At most `max` (≥ 1) running at once.
    pub(super) fn new(max: usize) -> Self {
        Syncs {
            running: VecDeque::new(),
            next: 0,
            max: max.max(1),
        }
    }

    /// Another sync may begin; `writes` says whether it syncs the store
    /// (its groups wrote something) or only finishes groups in turn.
    pub(super) fn can_start(&self, writes: bool) -> bool {
        self.running.len() < self.max && (writes || self.running.is_empty())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// A sync of `groups` begins: its number.
    pub(super) fn start(&mut self, groups: Vec<G>) -> u64 {
        let number = self.next;
        self.next += 1;
        self.running.push_back((number, groups));
        number
    }

    /// Sync `number` returned: the groups now durable, oldest first (its
    /// own and those of every sync that began before it and is still
    /// counted as running).
    pub(super) fn done(&mut self, number: u64) -> Vec<G> {
        let mut durable = Vec::new();
        while self.running.front().is_some_and(|(n, _)| *n <= number) {
            let (_, groups) = self.running.pop_front().expect("a front");
            durable.extend(groups);
        }
        durable
    }

    /// Every group of every running sync, oldest first (the hub is exiting).
    pub(super) fn take_all(&mut self) -> Vec<G> {
        std::mem::take(&mut self.running)
            .into_iter()
            .flat_map(|(_, groups)| groups)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_that_return_in_order_finish_their_own_groups() {
        let mut s = Syncs::new(2);
        let a = s.start(vec![1, 2]);
        assert!(s.can_start(true));
        let b = s.start(vec![3]);
        assert!(!s.can_start(true), "two at most");
        assert_eq!(s.done(a), [1, 2]);
        assert!(s.can_start(true));
        assert_eq!(s.done(b), [3]);
        assert!(s.is_empty());
    }

    #[test]
    fn a_later_sync_returning_first_finishes_the_earlier_groups_first() {
        let mut s = Syncs::new(2);
        let a = s.start(vec![1, 2]);
        let b = s.start(vec![3, 4]);
        assert_eq!(s.done(b), [1, 2, 3, 4], "oldest first, none left behind");
        assert!(s.is_empty());
        assert_eq!(s.done(a), Vec::<i32>::new(), "already finished");
        let c = s.start(vec![5]);
        assert!(c > b, "numbers keep rising");
        assert_eq!(s.done(c), [5]);
    }

    #[test]
    fn one_at_a_time_when_syncs_must_not_overlap() {
        let mut s = Syncs::new(1);
        let a = s.start(vec![1]);
        assert!(!s.can_start(true));
        assert_eq!(s.take_all(), [1]);
        assert!(s.is_empty() && s.can_start(true));
        assert_eq!(s.done(a), Vec::<i32>::new());
        assert!(Syncs::<i32>::new(0).can_start(true), "never fewer than one");
    }

    #[test]
    fn groups_that_wrote_nothing_wait_until_no_sync_runs() {
        let mut s = Syncs::new(2);
        assert!(s.can_start(false), "nothing runs: they may finish now");
        let a = s.start(vec![1]);
        assert!(
            !s.can_start(false),
            "returning at once, they would finish group 1 before its sync"
        );
        assert!(s.can_start(true));
        assert_eq!(s.done(a), [1]);
        assert!(s.can_start(false));
    }
}
