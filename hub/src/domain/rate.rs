//! Rate limits as plain values: a token bucket ([`TokenBucket`]) that
//! refuses when empty (token guesses), and the per-agent message limit
//! ([`MessageLimit`]) that never refuses a message but slows the sender to
//! its rate, charging large messages more, and tells a flood from a burst.
//!
//! Time comes in as `now`; nothing here reads the clock, sleeps, or knows
//! what is being limited (frames, sign-ins): the caller decides what a
//! refusal means.

use agentcom_protocol::Timestamp;

/// A token bucket: up to `burst` at once, refilled at `per_s` a second.
#[derive(Clone, Debug)]
pub(crate) struct TokenBucket {
    burst: f64,
    per_s: f64,
    tokens: f64,
    last: Timestamp,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(per_s: f64, burst: u32, now: Timestamp) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            burst,
            per_s: per_s.max(f64::MIN_POSITIVE),
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Timestamp) {
        let elapsed_s = now.millis_since(self.last).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed_s * self.per_s).min(self.burst);
        self.last = self.last.max(now);
    }

    /// Take one token; `Err` carries how many milliseconds until one is
    /// there.
    pub(crate) fn take(&mut self, now: Timestamp) -> Result<(), u64> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - self.tokens) / self.per_s) * 1000.0).ceil() as u64)
        }
    }

    /// Whether the bucket is full (an idle client: its entry may go).
    pub(crate) fn is_full(&mut self, now: Timestamp) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// What to do with one message from an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Within the limit: handle it.
    Now,
    /// Over the limit: handle it, then read nothing more from the sidecar
    /// for `wait_ms` (its rate falls to the limit, nothing is lost). `tell`
    /// is true for the first message of a run of slowed ones, so the agent
    /// hears about it once rather than once a message.
    Slow { wait_ms: u64, tell: bool },
    /// Slowed without a pause for longer than the flood window: close the
    /// connection (the message is not handled).
    Disconnect,
}

/// A message costs one token, and one more per this many bytes.
pub(crate) const COST_BYTES: usize = 64 * 1024;

/// How many bursts' worth of time an agent may be slowed without a pause
/// before its connection is closed.
const FLOOD_FACTOR: i64 = 10;

/// The message limit of one agent: a token bucket that may go into debt
/// (a message over the limit is handled, and the next is read only once
/// the debt is paid), and the start of the current run of slowed messages.
/// A run longer than ten times the time the bucket takes to fill (at least
/// a second) is flooding, not a burst.
#[derive(Clone, Debug)]
pub(crate) struct MessageLimit {
    per_s: f64,
    burst: f64,
    tokens: f64,
    last: Timestamp,
    flood_ms: i64,
    run_since: Option<Timestamp>,
}

impl MessageLimit {
    pub(crate) fn new(per_s: u32, burst: u32, now: Timestamp) -> Self {
        let per_s = per_s.max(1);
        let burst = burst.max(1);
        MessageLimit {
            per_s: f64::from(per_s),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: now,
            flood_ms: (FLOOD_FACTOR * i64::from(burst) * 1000 / i64::from(per_s)).max(1000),
            run_since: None,
        }
    }

    /// How long a run of slowed messages may last before it is a flood.
    #[cfg(test)]
    pub(crate) fn flood_ms(&self) -> i64 {
        self.flood_ms
    }

    /// A message of `bytes` arrived at `now`.
    pub(crate) fn admit(&mut self, now: Timestamp, bytes: usize) -> Admit {
        let elapsed_s = now.millis_since(self.last).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed_s * self.per_s).min(self.burst);
        self.last = self.last.max(now);
        let cost = (1 + bytes / COST_BYTES) as f64;
        self.tokens -= cost.min(self.burst);
        if self.tokens >= 0.0 {
            self.run_since = None;
            return Admit::Now;
        }
        let since = *self.run_since.get_or_insert(now);
        if now.millis_since(since) > self.flood_ms {
            // The connection closes; a new one starts a new run (in debt).
            self.run_since = None;
            return Admit::Disconnect;
        }
        Admit::Slow {
            wait_ms: ((-self.tokens / self.per_s) * 1000.0).ceil() as u64,
            tell: since == now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp(1_000_000 + ms)
    }

    #[test]
    fn a_bucket_gives_its_burst_then_refills_at_its_rate() {
        let mut b = TokenBucket::new(2.0, 3, at(0));
        for _ in 0..3 {
            assert_eq!(b.take(at(0)), Ok(()));
        }
        assert_eq!(b.take(at(0)), Err(500), "one token every 500 ms");
        assert_eq!(b.take(at(250)), Err(250));
        assert_eq!(b.take(at(500)), Ok(()));
        assert!(!b.is_full(at(500)));
        assert!(b.is_full(at(2000)), "never more than the burst");
        for _ in 0..3 {
            assert_eq!(b.take(at(2000)), Ok(()));
        }
        assert!(b.take(at(2000)).is_err());
    }

    #[test]
    fn time_going_backwards_refills_nothing() {
        let mut b = TokenBucket::new(1.0, 1, at(1000));
        assert!(b.take(at(1000)).is_ok());
        assert!(b.take(at(0)).is_err());
        assert!(b.take(at(1999)).is_err());
        assert!(b.take(at(2000)).is_ok());
    }

    /// Handle messages as the connection does: each at `at` or, if the
    /// last one asked for a pause, after it.
    fn feed(
        l: &mut MessageLimit,
        times: impl IntoIterator<Item = i64>,
        bytes: usize,
    ) -> Vec<Admit> {
        let mut paused_until = 0;
        times
            .into_iter()
            .map(|t| {
                let at_ms = t.max(paused_until);
                let a = l.admit(at(at_ms), bytes);
                if let Admit::Slow { wait_ms, .. } = a {
                    paused_until = at_ms + wait_ms as i64;
                }
                a
            })
            .collect()
    }

    #[test]
    fn messages_over_the_limit_are_slowed_to_the_rate_and_told_once_a_run() {
        let mut l = MessageLimit::new(5, 10, at(0));
        for _ in 0..10 {
            assert_eq!(l.admit(at(0), 100), Admit::Now);
        }
        assert_eq!(
            l.admit(at(0), 100),
            Admit::Slow {
                wait_ms: 200,
                tell: true
            }
        );
        assert_eq!(
            l.admit(at(200), 100),
            Admit::Slow {
                wait_ms: 200,
                tell: false
            },
            "still in the run: one message per 200 ms"
        );
        // The sender paused 600 ms: three tokens back, one of them owed.
        assert_eq!(l.admit(at(800), 100), Admit::Now);
        assert_eq!(l.admit(at(800), 100), Admit::Now);
        assert_eq!(
            l.admit(at(800), 100),
            Admit::Slow {
                wait_ms: 200,
                tell: true
            },
            "a new run"
        );
    }

    #[test]
    fn large_messages_cost_more() {
        let mut l = MessageLimit::new(10, 20, at(0));
        assert_eq!(l.admit(at(0), COST_BYTES * 16), Admit::Now, "17 tokens");
        assert_eq!(l.admit(at(0), COST_BYTES * 2), Admit::Now, "3 more: 20");
        assert!(matches!(
            l.admit(at(0), 10),
            Admit::Slow { wait_ms: 100, .. }
        ));
        // A message dearer than the burst costs the burst.
        let mut l = MessageLimit::new(10, 20, at(0));
        assert_eq!(l.admit(at(0), 1 << 30), Admit::Now);
    }

    #[test]
    fn slowed_without_a_pause_for_ten_bursts_is_a_flood() {
        // Burst 10 at 5 a second: the flood window is 20 s.
        let mut l = MessageLimit::new(5, 10, at(0));
        assert_eq!(l.flood_ms(), 20_000);
        let out = feed(&mut l, std::iter::repeat_n(0, 200), 10);
        let first_out = out.iter().position(|a| *a == Admit::Disconnect);
        // 10 at once, then 5 a second for 20 s.
        assert_eq!(first_out, Some(10 + 101), "{out:?}");
    }

    #[test]
    fn a_sender_just_over_the_rate_with_pauses_is_never_disconnected() {
        // Bursts of 15 every 3 s against 5 a second, burst 10, for ten minutes.
        let mut l = MessageLimit::new(5, 10, at(0));
        let times = (0..200).flat_map(|b| std::iter::repeat_n(b * 3000, 15));
        let out = feed(&mut l, times, 10);
        assert!(out.iter().all(|a| *a != Admit::Disconnect));
        assert!(out.iter().any(|a| matches!(a, Admit::Slow { .. })));
    }

    #[test]
    fn a_well_behaved_sidecar_is_never_slowed() {
        // One heartbeat a second, and 100 reports at once after a reconnect.
        let mut l = MessageLimit::new(50, 200, at(0));
        for i in 0..100 {
            assert_eq!(l.admit(at(5), 2000), Admit::Now, "report {i}");
        }
        for s in 1..600 {
            assert_eq!(l.admit(at(s * 1000), 300), Admit::Now);
        }
    }
}
