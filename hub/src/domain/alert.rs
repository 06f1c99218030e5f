//! Alerts as rules: every kind of alert the hub raises (one list, so the
//! names live in one place), which durable task changes raise `task_dead`,
//! and how a webhook's deliveries are queued and retried ([`Outbox`],
//! [`Delivery`]).
//!
//! It never sends, sleeps or reads the clock: time comes in as `now`, and
//! the webhook actor in `alerts` does the I/O.

use std::collections::VecDeque;

use agentcom_protocol::{TaskStatus, Timestamp};

use crate::domain::queue::TaskDelta;

/// Every alert the hub raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum AlertKind {
    /// A change waits for a person (gate, review escalation).
    ChangeEscalated,
    /// A repository's main failed its check.
    MainRed,
    /// ... and passes again.
    MainGreen,
    /// A working attempt shows no activity for `timeouts.stall_s`.
    TaskStalled,
    /// A task went dead (out of retries, not retryable, blamed on it).
    TaskDead,
    /// An agent has been offline longer than `alerts.offline_after_s`.
    AgentOffline,
}

impl AlertKind {
    pub(crate) const ALL: [AlertKind; 6] = [
        AlertKind::ChangeEscalated,
        AlertKind::MainRed,
        AlertKind::MainGreen,
        AlertKind::TaskStalled,
        AlertKind::TaskDead,
        AlertKind::AgentOffline,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AlertKind::ChangeEscalated => "change_escalated",
            AlertKind::MainRed => "main_red",
            AlertKind::MainGreen => "main_green",
            AlertKind::TaskStalled => "task_stalled",
            AlertKind::TaskDead => "task_dead",
            AlertKind::AgentOffline => "agent_offline",
        }
    }
}

/// An alert to raise: kind, subject, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Raised {
    pub kind: AlertKind,
    pub subject: String,
    pub message: String,
}

/// `task_dead` for each task these durable changes moved to `dead` (once
/// per move: each history entry is in exactly one drain), with the error
/// that killed it.
pub(crate) fn dead_tasks(deltas: &[TaskDelta]) -> Vec<Raised> {
    let mut out = Vec::new();
    for d in deltas {
        for (_, h) in &d.new_history {
            if h.to != Some(TaskStatus::Dead) || h.from == Some(TaskStatus::Dead) {
                continue;
            }
            let t = &d.task;
            let why = h
                .detail
                .as_deref()
                .or(t.last_error.as_deref())
                .unwrap_or("no error given");
            let agent = h
                .agent_id
                .as_deref()
                .map(|a| format!(" (last on agent {a})"))
                .unwrap_or_default();
            out.push(Raised {
                kind: AlertKind::TaskDead,
                subject: t.id.clone(),
                message: format!(
                    "task {} \"{}\" is dead after {} attempt(s){agent}: {why}",
                    t.id, t.title, t.attempts
                ),
            });
        }
    }
    out
}

// ----- webhook delivery ------------------------------------------------------------

/// The first retry waits this long; each next one twice as long ...
pub(crate) const FIRST_RETRY_MS: i64 = 1_000;
/// ... up to this.
pub(crate) const MAX_RETRY_MS: i64 = 300_000;
/// An alert not delivered this long after its first try is given up.
pub(crate) const GIVE_UP_MS: i64 = 3_600_000;
/// Alerts waiting per webhook (behind the one being delivered).
pub(crate) const OUTBOX_CAP: usize = 1_000;

/// How long to wait after the `failures`-th failed try (1, 2, 4 … s, at
/// most [`MAX_RETRY_MS`]).
pub(crate) fn retry_delay_ms(failures: u32) -> i64 {
    let shift = failures.saturating_sub(1).min(20);
    (FIRST_RETRY_MS << shift).min(MAX_RETRY_MS)
}

/// One alert's delivery to one webhook: its tries so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivery {
    pub first_try: Timestamp,
    pub failures: u32,
}

/// What to do after a failed try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterFailure {
    /// Try again in this many milliseconds.
    RetryIn(i64),
    /// Given up: it has been failing for [`GIVE_UP_MS`].
    GiveUp,
}

impl Delivery {
    pub(crate) fn new(now: Timestamp) -> Self {
        Delivery {
            first_try: now,
            failures: 0,
        }
    }

    /// A try failed at `now`.
    pub(crate) fn failed(&mut self, now: Timestamp) -> AfterFailure {
        self.failures += 1;
        let delay = retry_delay_ms(self.failures);
        if now.millis_since(self.first_try) + delay > GIVE_UP_MS {
            AfterFailure::GiveUp
        } else {
            AfterFailure::RetryIn(delay)
        }
    }
}

/// A webhook's alerts waiting to be delivered, oldest first, at most
/// `cap`: a new one over the cap drops the oldest waiting (counted).
#[derive(Debug)]
pub(crate) struct Outbox<T> {
    waiting: VecDeque<T>,
    cap: usize,
    dropped: u64,
}

impl<T> Outbox<T> {
    pub(crate) fn new(cap: usize) -> Self {
        Outbox {
            waiting: VecDeque::new(),
            cap: cap.max(1),
            dropped: 0,
        }
    }

    /// Queue `item`; the oldest waiting one if it had to go.
    pub(crate) fn push(&mut self, item: T) -> Option<T> {
        let gone = if self.waiting.len() >= self.cap {
            self.dropped += 1;
            self.waiting.pop_front()
        } else {
            None
        };
        self.waiting.push_back(item);
        gone
    }

    /// The next alert to deliver, in the order they were raised.
    pub(crate) fn next(&mut self) -> Option<T> {
        self.waiting.pop_front()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// How many were dropped for want of room.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentcom_protocol::{HistoryEntry, Task, TaskEvent};

    #[test]
    fn names_are_unique_and_snake_case() {
        let names: std::collections::BTreeSet<_> =
            AlertKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), AlertKind::ALL.len());
        assert!(names.contains("agent_offline") && names.contains("task_dead"));
    }

    #[test]
    fn retries_back_off_doubling_to_five_minutes() {
        let delays: Vec<i64> = (1..=12).map(retry_delay_ms).collect();
        assert_eq!(&delays[..5], &[1_000, 2_000, 4_000, 8_000, 16_000]);
        assert_eq!(retry_delay_ms(9), 256_000);
        assert_eq!(retry_delay_ms(10), 300_000);
        assert_eq!(retry_delay_ms(u32::MAX), 300_000);
    }

    #[test]
    fn a_delivery_is_given_up_after_an_hour_of_failures() {
        let t0 = Timestamp(1_000_000);
        let mut d = Delivery::new(t0);
        let mut now = t0;
        let mut tries = 1;
        while let AfterFailure::RetryIn(ms) = d.failed(now) {
            assert!(ms <= MAX_RETRY_MS);
            now = now.plus_millis(ms);
            tries += 1;
        }
        assert!(
            now.millis_since(t0) <= GIVE_UP_MS,
            "never waits past the bound"
        );
        assert!(now.millis_since(t0) > GIVE_UP_MS - MAX_RETRY_MS);
        assert!((15..30).contains(&tries), "{tries} tries");
    }

    #[test]
    fn a_full_outbox_drops_the_oldest_and_keeps_order() {
        let mut o = Outbox::new(3);
        for i in 1..=3 {
            assert_eq!(o.push(i), None);
        }
        assert_eq!(o.push(4), Some(1));
        assert_eq!(o.push(5), Some(2));
        assert_eq!((o.len(), o.dropped()), (3, 2));
        assert_eq!(
            std::iter::from_fn(|| o.next()).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
    }

    fn delta(to: TaskStatus, from: Option<TaskStatus>, detail: Option<&str>) -> TaskDelta {
        let mut task: Task = serde_json::from_value(serde_json::json!({
            "id": "t1", "title": "build", "description": "", "priority": "normal",
            "needed_capabilities": [], "max_retries": 0, "timeout_s": 60,
            "status": to.as_str(), "generation": 1, "attempts": 1,
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"
        }))
        .expect("a task");
        task.last_error = Some("boom".into());
        TaskDelta {
            task,
            history_len: 2,
            new_history: vec![(
                1,
                HistoryEntry {
                    at: Timestamp(5),
                    event: TaskEvent::Dead,
                    from,
                    to: Some(to),
                    agent_id: Some("a1".into()),
                    generation: 1,
                    detail: detail.map(str::to_string),
                    blame: None,
                },
            )],
            previous_status: from,
            previous_finished_at: None,
            write_body: false,
            write_result: false,
            write_key: None,
        }
    }

    #[test]
    fn a_task_moving_to_dead_raises_task_dead_once_with_its_error() {
        let fx = dead_tasks(&[delta(
            TaskStatus::Dead,
            Some(TaskStatus::Working),
            Some("exit 1 (not retryable after 1 attempt(s))"),
        )]);
        assert_eq!(fx.len(), 1);
        assert_eq!(
            (fx[0].kind, fx[0].subject.as_str()),
            (AlertKind::TaskDead, "t1")
        );
        assert!(fx[0].message.contains("exit 1"), "{}", fx[0].message);
        assert!(fx[0].message.contains("a1"), "{}", fx[0].message);
        let fx = dead_tasks(&[delta(TaskStatus::Dead, Some(TaskStatus::Working), None)]);
        assert!(fx[0].message.contains("boom"), "falls back to last_error");
        assert!(
            dead_tasks(&[delta(TaskStatus::Failed, Some(TaskStatus::Working), None)]).is_empty()
        );
    }
}
