//! Reconnect delays: exponential with full jitter, capped, and when a
//! connection counts as good again.
//!
//! The n-th consecutive failure waits a uniformly random time in
//! `[0, min(cap, initial · 2ⁿ)]`, so a fleet that lost its hub at the same
//! moment does not reconnect in lockstep. Only a connection that stayed up
//! for [`PROVEN_AFTER`] after `welcome` resets the count: one the hub
//! closes right after `welcome` (say, because of what the sidecar sends
//! then) keeps the delay growing instead of retrying at once forever.
//! A refusal that cannot go away by itself (a wrong token, see
//! `refusal.rs`) waits about the cap at once: [`Backoff::refused_delay`].
//! Pure: it never sleeps, reads the clock or draws random numbers itself;
//! the caller supplies the draw and how long the connection lasted.

use std::time::Duration;

/// How long a connection must have stayed up after `welcome` to count as
/// good.
pub(crate) const PROVEN_AFTER: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, cap: Duration) -> Self {
        Backoff {
            initial,
            cap,
            failures: 0,
        }
    }

    /// The ceiling of the next delay.
    pub(crate) fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.failures.min(31));
        self.initial.saturating_mul(factor).min(self.cap)
    }

    /// Delay before the next attempt, given a uniform draw in [0, 1).
    pub(crate) fn next_delay(&mut self, draw: f64) -> Duration {
        let d = self.ceiling().mul_f64(draw.clamp(0.0, 1.0));
        self.failures = self.failures.saturating_add(1);
        d
    }

    /// Delay before the next attempt after a permanent refusal (see
    /// `refusal.rs`): the cap, less a jitter of at most a quarter of it
    /// (`draw` uniform in [0, 1)), so refused sidecars still spread out.
    /// It counts as a failure like any other.
    pub(crate) fn refused_delay(&mut self, draw: f64) -> Duration {
        let d = self.cap.mul_f64(1.0 - 0.25 * draw.clamp(0.0, 1.0));
        self.failures = self.failures.saturating_add(1);
        d
    }

    /// A connection ended; `welcomed_for` is how long it stayed up after
    /// `welcome` (None: never welcomed). One that lasted
    /// [`PROVEN_AFTER`] starts the delays again from the initial one; any
    /// other counts as one more failure when the next delay is drawn.
    pub(crate) fn connection_ended(&mut self, welcomed_for: Option<Duration>) {
        if welcomed_for.is_some_and(|d| d >= PROVEN_AFTER) {
            self.failures = 0;
        }
    }

    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let ceilings: Vec<u64> = (0..9)
            .map(|_| {
                let c = b.ceiling().as_millis() as u64;
                b.next_delay(0.5);
                c
            })
            .collect();
        assert_eq!(
            ceilings,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
    }

    #[test]
    fn full_jitter_spans_zero_to_ceiling() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        assert_eq!(b.next_delay(0.0), Duration::ZERO);
        assert_eq!(b.next_delay(0.999_999).as_millis(), 1999);
        b.connection_ended(Some(PROVEN_AFTER));
        assert_eq!(b.failures(), 0);
        assert_eq!(b.ceiling(), Duration::from_secs(1));
    }

    #[test]
    fn only_a_connection_that_stayed_up_after_welcome_resets_the_delay() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        // Welcomed, then closed at once, again and again: the delay grows.
        let mut ceilings = Vec::new();
        for _ in 0..5 {
            b.connection_ended(Some(Duration::from_millis(5)));
            ceilings.push(b.ceiling().as_millis() as u64);
            b.next_delay(0.5);
        }
        assert_eq!(ceilings, [100, 200, 400, 800, 1600]);
        // Never welcomed: no reset either.
        b.connection_ended(None);
        assert_eq!(b.failures(), 5);
        b.connection_ended(Some(PROVEN_AFTER - Duration::from_millis(1)));
        assert_eq!(b.failures(), 5);
        // Up long enough after welcome: back to the start.
        b.connection_ended(Some(PROVEN_AFTER));
        assert_eq!(b.failures(), 0);
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn a_permanent_refusal_waits_about_the_cap_at_once() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        assert_eq!(b.refused_delay(0.0), Duration::from_secs(30));
        assert_eq!(b.refused_delay(1.0), Duration::from_millis(22_500));
        assert_eq!(b.refused_delay(0.5), Duration::from_millis(26_250));
        assert_eq!(b.failures(), 3);
        // A transient failure afterwards goes on from the grown count.
        assert_eq!(b.ceiling(), Duration::from_secs(4));
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..1000 {
            b.next_delay(1.0);
        }
        assert_eq!(b.ceiling(), Duration::from_secs(60));
    }
}
