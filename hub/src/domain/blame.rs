//! Blame: who a failed attempt is on, from the failure's class and the
//! task's earlier attempts (its dossier), with the evidence in words.
//!
//! - `environment` (the sidecar saw its machine fail): the agent's
//!   environment; no retry is used, the task goes again at once, the agent
//!   is degraded with the reason.
//! - `rate_limited`: the model provider; no retry used, no failure
//!   counted, the agent held back for `retry_after_s`, the task again at
//!   once.
//! - `agent` (and the hub's own findings: time-outs, stalls, lost
//!   connections): the agent; its breaker counts it.
//! - `task`: the task when another agent already failed it with class
//!   `task` (it goes `dead`, and no agent's breaker keeps counting it),
//!   or when the runner says it cannot succeed (not retryable); otherwise
//!   the agent, until another agent fails the task too.
//!
//! Free attempts are capped ([`FREE_ATTEMPTS_MAX`]) so a task that breaks
//! every machine still ends. Pure: no I/O, no clock.

use agentcom_protocol::{AttemptRecord, Blame, FailClass, Timestamp};

use crate::domain::retry::Retryable;

/// Attempts of one task that may go without using its retry budget
/// (environment failures and rate limits); beyond, they count.
pub(crate) const FREE_ATTEMPTS_MAX: u32 = 10;

/// A rate limit without `retry_after_s` holds the agent back this long.
pub(crate) const DEFAULT_RETRY_AFTER_S: u64 = 60;

/// The longest a rate limit holds an agent back.
pub(crate) const MAX_RETRY_AFTER_S: u64 = 86_400;

/// What an ended attempt means for the agent that ran it, as blame
/// judged it (the agent's machine applies it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Charge {
    /// Nothing against the agent (completed, blamed on the task, or not
    /// the current attempt).
    #[default]
    None,
    /// A failure on its breaker. For a task's own failure this stands
    /// until another agent fails the same task (then it is absolved).
    Failure,
    /// Its machine is broken: degraded at once, for the breaker's
    /// cooldown, with the reason.
    Environment(String),
    /// The model provider limits it: given nothing until then, no
    /// failure counted.
    HoldUntil(Timestamp, String),
}

/// A failed attempt, as the agent (or the hub) reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure<'a> {
    pub agent: &'a str,
    pub error: &'a str,
    pub class: FailClass,
    pub retryable: Retryable,
    pub retry_after_s: Option<u64>,
}

/// What the queue does about a failed attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Blamed {
    pub blame: Blame,
    /// What the reporting agent is charged.
    pub charge: Charge,
    /// The attempt uses no retry.
    pub free: bool,
    /// The task is dead now, whatever its budget.
    pub dead: bool,
    /// Queue it again at once (no backoff).
    pub at_once: bool,
    /// Agents whose earlier failure of this task no longer counts.
    pub absolve: Vec<String>,
    /// Why, in words.
    pub evidence: String,
}

/// Judge `f`, given the task's earlier attempts (oldest first) and how
/// many free attempts it has had.
pub(crate) fn judge(
    f: &Failure<'_>,
    earlier: &[AttemptRecord],
    free_so_far: u32,
    now: Timestamp,
) -> Blamed {
    let free_left = free_so_far < FREE_ATTEMPTS_MAX;
    let spent = |evidence: String| {
        format!("{evidence}; {FREE_ATTEMPTS_MAX} free attempts spent, so this one uses a retry")
    };
    match f.class {
        FailClass::Environment => Blamed {
            blame: Blame::Environment,
            charge: Charge::Environment(f.error.to_string()),
            free: free_left,
            dead: false,
            at_once: true,
            absolve: Vec::new(),
            evidence: {
                let e = format!("the environment of {} failed", f.agent);
                if free_left {
                    format!("{e}: no retry used, the agent is degraded")
                } else {
                    spent(e)
                }
            },
        },
        FailClass::RateLimited => {
            let after = f
                .retry_after_s
                .unwrap_or(DEFAULT_RETRY_AFTER_S)
                .clamp(1, MAX_RETRY_AFTER_S);
            let e = format!("{} is rate limited for {after}s", f.agent);
            Blamed {
                blame: Blame::RateLimit,
                charge: Charge::HoldUntil(
                    now.plus_secs(after as f64),
                    format!("retry after {after}s"),
                ),
                free: free_left,
                dead: false,
                at_once: true,
                absolve: Vec::new(),
                evidence: if free_left {
                    format!("{e}: no retry used, no failure counted")
                } else {
                    spent(e)
                },
            }
        }
        FailClass::Agent => Blamed {
            blame: Blame::Agent,
            charge: Charge::Failure,
            free: false,
            dead: false,
            at_once: false,
            absolve: Vec::new(),
            evidence: format!("the agent session of {} failed", f.agent),
        },
        FailClass::Task if f.retryable == Retryable::No => Blamed {
            blame: Blame::Task,
            charge: Charge::None,
            free: false,
            dead: true,
            at_once: false,
            absolve: Vec::new(),
            evidence: format!("{} says the task cannot succeed (not retryable)", f.agent),
        },
        FailClass::Task => {
            let failed_before: Vec<&AttemptRecord> = earlier
                .iter()
                .filter(|r| r.outcome == outcome(FailClass::Task))
                .collect();
            let others: Vec<&str> = distinct(
                failed_before
                    .iter()
                    .map(|r| r.agent_id.as_str())
                    .filter(|a| *a != f.agent),
            );
            if others.is_empty() {
                return Blamed {
                    blame: Blame::Agent,
                    charge: Charge::Failure,
                    free: false,
                    dead: false,
                    at_once: false,
                    absolve: Vec::new(),
                    evidence: format!(
                        "failed on {}; counted against the agent unless another agent fails the task too",
                        f.agent
                    ),
                };
            }
            let mut absolve: Vec<String> = others.iter().map(|a| a.to_string()).collect();
            absolve.push(f.agent.to_string());
            Blamed {
                blame: Blame::Task,
                charge: Charge::None,
                free: false,
                dead: true,
                at_once: false,
                absolve,
                evidence: format!(
                    "failed on {} and before on {}: the task is to blame, no agent's breaker counts it",
                    f.agent,
                    others.join(", ")
                ),
            }
        }
    }
}

/// The dossier's `outcome` for an attempt that failed with `class`.
pub(crate) fn outcome(class: FailClass) -> &'static str {
    match class {
        FailClass::Task => "failed",
        FailClass::Agent => "agent_failed",
        FailClass::Environment => "environment_failed",
        FailClass::RateLimited => "rate_limited",
    }
}

fn distinct<'a>(it: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for a in it {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> Timestamp {
        Timestamp(1_800_000_000_000 + ms)
    }

    fn failure(agent: &str, class: FailClass) -> Failure<'_> {
        Failure {
            agent,
            error: "boom",
            class,
            retryable: Retryable::Yes,
            retry_after_s: None,
        }
    }

    fn record(agent: &str, class: FailClass) -> AttemptRecord {
        AttemptRecord {
            generation: 1,
            agent_id: agent.into(),
            outcome: outcome(class).into(),
            blame: None,
            error: None,
            log_tail: None,
            branch: None,
            head: None,
            at: t(0),
        }
    }

    #[test]
    fn a_first_task_failure_counts_against_the_agent() {
        let b = judge(&failure("a", FailClass::Task), &[], 0, t(0));
        assert_eq!(b.blame, Blame::Agent);
        assert_eq!(b.charge, Charge::Failure);
        assert!(!b.dead && !b.free && !b.at_once);
        assert!(
            b.evidence.contains("unless another agent"),
            "{}",
            b.evidence
        );
    }

    #[test]
    fn the_same_agent_failing_again_is_still_the_agent() {
        let b = judge(
            &failure("a", FailClass::Task),
            &[record("a", FailClass::Task)],
            0,
            t(0),
        );
        assert_eq!(b.blame, Blame::Agent);
        assert!(!b.dead);
    }

    #[test]
    fn a_task_failing_on_two_agents_is_the_tasks_fault_and_absolves_both() {
        let earlier = [
            record("a", FailClass::Task),
            record("c", FailClass::Agent),
            record("a", FailClass::Task),
        ];
        let b = judge(&failure("b", FailClass::Task), &earlier, 0, t(0));
        assert_eq!(b.blame, Blame::Task);
        assert_eq!(b.charge, Charge::None);
        assert!(b.dead);
        assert_eq!(b.absolve, ["a", "b"]);
        assert!(b.evidence.contains("before on a"), "{}", b.evidence);
    }

    #[test]
    fn other_agents_failures_of_other_kinds_do_not_make_it_the_tasks_fault() {
        let earlier = [
            record("c", FailClass::Agent),
            record("d", FailClass::Environment),
            record("e", FailClass::RateLimited),
        ];
        let b = judge(&failure("b", FailClass::Task), &earlier, 0, t(0));
        assert_eq!(b.blame, Blame::Agent);
        assert!(!b.dead);
    }

    #[test]
    fn not_retryable_is_the_tasks_fault_without_a_charge() {
        let mut f = failure("a", FailClass::Task);
        f.retryable = Retryable::No;
        let b = judge(&f, &[], 0, t(0));
        assert_eq!(
            (b.blame, b.charge, b.dead),
            (Blame::Task, Charge::None, true)
        );
    }

    #[test]
    fn environment_uses_no_retry_and_degrades_the_agent() {
        let b = judge(&failure("a", FailClass::Environment), &[], 0, t(0));
        assert_eq!(b.blame, Blame::Environment);
        assert_eq!(b.charge, Charge::Environment("boom".into()));
        assert!(b.free && b.at_once && !b.dead);
    }

    #[test]
    fn a_rate_limit_holds_the_agent_back_for_the_given_time_bounded() {
        let mut f = failure("a", FailClass::RateLimited);
        f.retry_after_s = Some(30);
        let b = judge(&f, &[], 0, t(0));
        assert_eq!(b.blame, Blame::RateLimit);
        assert_eq!(
            b.charge,
            Charge::HoldUntil(t(30_000), "retry after 30s".into())
        );
        assert!(b.free && b.at_once);
        f.retry_after_s = None;
        let b = judge(&f, &[], 0, t(0));
        assert_eq!(
            b.charge,
            Charge::HoldUntil(t(60_000), "retry after 60s".into())
        );
        f.retry_after_s = Some(u64::MAX);
        let b = judge(&f, &[], 0, t(0));
        assert!(matches!(b.charge, Charge::HoldUntil(until, _) if until == t(86_400_000)));
    }

    #[test]
    fn free_attempts_run_out() {
        let b = judge(
            &failure("a", FailClass::Environment),
            &[],
            FREE_ATTEMPTS_MAX,
            t(0),
        );
        assert!(!b.free);
        assert!(b.evidence.contains("uses a retry"), "{}", b.evidence);
    }

    #[test]
    fn an_agent_failure_counts_against_the_agent() {
        let b = judge(&failure("a", FailClass::Agent), &[], 0, t(0));
        assert_eq!((b.blame, b.charge), (Blame::Agent, Charge::Failure));
    }
}
