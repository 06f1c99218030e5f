//! Retry policy: what happens to a task after a failed attempt.
//!
//! Pure arithmetic over a task's attempt count; it never touches the
//! queue or the clock.

/// Whether a failure may go away on another attempt (the sidecar's
/// `retryable`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retryable {
    Yes,
    No,
}

impl From<bool> for Retryable {
    fn from(retryable: bool) -> Self {
        if retryable {
            Retryable::Yes
        } else {
            Retryable::No
        }
    }
}

/// Decision for a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryDecision {
    /// Queue it again after this many seconds.
    RetryAfter(u64),
    /// No retries left (or the failure is not retryable): dead-letter it.
    Dead,
}

/// Backoff schedule (`retry.backoff_s`): the n-th retry waits
/// `backoff_s[n-1]` seconds; retries past the end reuse the last entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub backoff_s: Vec<u64>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            backoff_s: vec![0, 30, 120],
        }
    }
}

impl RetryPolicy {
    /// `attempts` counts the executions started so far, the failed one
    /// included; a task may run `1 + max_retries` times.
    pub fn decide(&self, attempts: u32, max_retries: u32, retryable: Retryable) -> RetryDecision {
        if retryable == Retryable::No || attempts > max_retries {
            return RetryDecision::Dead;
        }
        let retry_no = attempts.max(1) as usize; // 1 for the first retry
        let delay = self
            .backoff_s
            .get(retry_no - 1)
            .or(self.backoff_s.last())
            .copied()
            .unwrap_or(0);
        RetryDecision::RetryAfter(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_is_immediate_then_30s_then_2min_then_dead() {
        let p = RetryPolicy::default();
        assert_eq!(p.decide(1, 3, Retryable::Yes), RetryDecision::RetryAfter(0));
        assert_eq!(
            p.decide(2, 3, Retryable::Yes),
            RetryDecision::RetryAfter(30)
        );
        assert_eq!(
            p.decide(3, 3, Retryable::Yes),
            RetryDecision::RetryAfter(120)
        );
        assert_eq!(p.decide(4, 3, Retryable::Yes), RetryDecision::Dead);
    }

    #[test]
    fn non_retryable_is_dead_at_once() {
        assert_eq!(
            RetryPolicy::default().decide(1, 3, Retryable::No),
            RetryDecision::Dead
        );
    }

    #[test]
    fn schedule_shorter_than_retries_reuses_last_delay() {
        let p = RetryPolicy {
            backoff_s: vec![1, 5],
        };
        assert_eq!(p.decide(3, 5, Retryable::Yes), RetryDecision::RetryAfter(5));
        assert_eq!(p.decide(5, 5, Retryable::Yes), RetryDecision::RetryAfter(5));
        assert_eq!(p.decide(6, 5, Retryable::Yes), RetryDecision::Dead);
        let empty = RetryPolicy { backoff_s: vec![] };
        assert_eq!(
            empty.decide(1, 1, Retryable::Yes),
            RetryDecision::RetryAfter(0)
        );
    }

    #[test]
    fn zero_retries_means_one_attempt() {
        assert_eq!(
            RetryPolicy::default().decide(1, 0, Retryable::Yes),
            RetryDecision::Dead
        );
    }
}
