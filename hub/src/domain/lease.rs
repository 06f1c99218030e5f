//! Leading among several hubs, as rules over time (issue 13): how long a
//! leader's lease lasts, how often it renews it and a standby asks for it,
//! and when a leader that could not renew must stop leading. Time is
//! passed in, in milliseconds; the lease itself lives in the database
//! (`store::postgres`), whose clock decides when it lapsed.
//!
//! Never reads the clock, sleeps or touches the database.

/// The lease's timing, from `ha.takeover_s`: a standby leads within that
/// time of the leader's death — its lease lapses (`lease_ms`, 60 % of it)
/// and the standby's next try (every `poll_ms`, a tenth of it) wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LeaseTiming {
    pub lease_ms: i64,
    pub renew_ms: i64,
    pub poll_ms: i64,
}

impl LeaseTiming {
    pub(crate) fn from_takeover(takeover_s: f64) -> LeaseTiming {
        let takeover_ms = (takeover_s * 1000.0).round().max(500.0) as i64;
        let lease_ms = takeover_ms * 6 / 10;
        LeaseTiming {
            lease_ms,
            // Three tries before it lapses.
            renew_ms: (lease_ms / 3).max(100),
            poll_ms: (takeover_ms / 10).max(50),
        }
    }

    /// Whether a leader whose last successful renewal was at
    /// `renewed_at_ms` must stop leading at `now_ms`: its lease may have
    /// lapsed (a standby may lead by now). A renewal that failed (the
    /// database unreachable) is no renewal.
    pub(crate) fn lapsed(&self, renewed_at_ms: i64, now_ms: i64) -> bool {
        now_ms - renewed_at_ms >= self.lease_ms
    }
}

/// What a renewal answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Renewal {
    /// Still ours, until `lease_ms` from now.
    Renewed,
    /// Another hub holds the lease now (this one was deposed).
    Lost,
    /// The database did not answer.
    Failed(String),
}

/// What a leader does after a renewal at `now_ms`, having last renewed at
/// `renewed_at_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Lead on; the last renewal is now `renewed_at_ms`.
    Lead { renewed_at_ms: i64 },
    /// Stop leading at once, for this reason.
    StepDown(String),
}

pub(crate) fn after_renewal(
    timing: &LeaseTiming,
    renewal: Renewal,
    renewed_at_ms: i64,
    now_ms: i64,
) -> Next {
    match renewal {
        Renewal::Renewed => Next::Lead {
            renewed_at_ms: now_ms,
        },
        Renewal::Lost => {
            Next::StepDown("another hub leads now (this one's lease was taken)".into())
        }
        Renewal::Failed(e) if timing.lapsed(renewed_at_ms, now_ms) => Next::StepDown(format!(
            "the lease could not be renewed for {} ms, so another hub may lead: {e}",
            now_ms - renewed_at_ms
        )),
        Renewal::Failed(_) => Next::Lead { renewed_at_ms },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_takeover_gives_a_3_s_lease_renewed_every_second() {
        let t = LeaseTiming::from_takeover(5.0);
        assert_eq!(
            t,
            LeaseTiming {
                lease_ms: 3000,
                renew_ms: 1000,
                poll_ms: 500
            }
        );
        // A standby that polls just after the lease lapsed leads within
        // the takeover time.
        assert!(t.lease_ms + t.poll_ms <= 5000);
        // Tiny values stay workable.
        let small = LeaseTiming::from_takeover(0.1);
        assert_eq!(small.lease_ms, 300);
        assert_eq!(small.renew_ms, 100);
        assert_eq!(small.poll_ms, 50);
    }

    #[test]
    fn a_leader_steps_down_when_deposed_or_when_its_lease_may_have_lapsed() {
        let t = LeaseTiming::from_takeover(5.0);
        assert_eq!(
            after_renewal(&t, Renewal::Renewed, 0, 1000),
            Next::Lead {
                renewed_at_ms: 1000
            }
        );
        assert!(matches!(
            after_renewal(&t, Renewal::Lost, 0, 1000),
            Next::StepDown(r) if r.contains("another hub leads")
        ));
        // The database away for less than the lease: lead on, the last
        // renewal unchanged.
        assert_eq!(
            after_renewal(&t, Renewal::Failed("down".into()), 1000, 3999),
            Next::Lead {
                renewed_at_ms: 1000
            }
        );
        assert!(matches!(
            after_renewal(&t, Renewal::Failed("down".into()), 1000, 4000),
            Next::StepDown(r) if r.contains("3000 ms") && r.contains("down")
        ));
    }
}
