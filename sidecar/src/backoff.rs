//! Reconnect delays: exponential with full jitter, capped.
//!
//! The n-th consecutive failure waits a uniformly random time in
//! `[0, min(cap, initial · 2ⁿ)]`, so a fleet that lost its hub at the same
//! moment does not reconnect in lockstep. Pure: it never sleeps or draws
//! random numbers itself; the caller supplies the draw.

use std::time::Duration;

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

    /// A connection succeeded: start again from the initial delay.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
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
        b.reset();
        assert_eq!(b.failures(), 0);
        assert_eq!(b.ceiling(), Duration::from_secs(1));
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
