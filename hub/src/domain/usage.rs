//! What agents spent: `tokens_used` and `cost_usd` from their results,
//! summed per agent for the current UTC day (what `budgets.agent_daily_tokens`
//! is checked against, shown in `/api/state`) and since the hub started
//! (the `/metrics` counters).
//!
//! It lives in the queue, which sees every result and decides every claim.
//! The day's sums are stored (as [`Usage::today_json`]) with the result
//! that changed them, so a restart keeps them; the totals are counters and
//! start again at zero.
//! Pure: time is passed in. Agents are bounded by the registry, so the maps
//! are too.

use std::collections::BTreeMap;

use agentcom_protocol::{TaskResult, Timestamp};
use serde::{Deserialize, Serialize};

const DAY_MS: i64 = 86_400_000;

/// Tokens and dollars.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Spent {
    pub tokens: u64,
    pub cost_usd: f64,
}

/// Per agent, today and since start.
#[derive(Clone, Debug, Default)]
pub(crate) struct Usage {
    /// The UTC day `today` is about (days since the epoch).
    day: i64,
    today: BTreeMap<String, Spent>,
    total: BTreeMap<String, Spent>,
}

/// `/api/state`'s `usage`: `{"day": "2026-11-25", "agents": {id: spent}}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct UsageView {
    pub day: String,
    pub agents: BTreeMap<String, Spent>,
}

/// What a result says it cost: `tokens_used`, and `cost_usd` from its
/// other fields (a finite, non-negative number, else nothing).
pub(crate) fn spent_by(result: &TaskResult) -> Spent {
    Spent {
        tokens: result.tokens_used.unwrap_or(0),
        cost_usd: result
            .extra
            .get("cost_usd")
            .and_then(|v| v.as_f64())
            .filter(|c| c.is_finite() && *c >= 0.0)
            .unwrap_or(0.0),
    }
}

fn day_of(now: Timestamp) -> i64 {
    now.0.div_euclid(DAY_MS)
}

/// `YYYY-MM-DD` of a day since the epoch (civil from days, proleptic
/// Gregorian).
pub(crate) fn day_name(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

impl Usage {
    /// Add what `agent` spent on a result at `now`.
    pub(crate) fn record(&mut self, agent: &str, spent: Spent, now: Timestamp) {
        if spent.tokens == 0 && spent.cost_usd == 0.0 {
            return;
        }
        self.roll(now);
        for map in [&mut self.today, &mut self.total] {
            let e = map.entry(agent.to_string()).or_default();
            e.tokens = e.tokens.saturating_add(spent.tokens);
            e.cost_usd += spent.cost_usd;
        }
    }

    fn roll(&mut self, now: Timestamp) {
        let day = day_of(now);
        if day != self.day {
            self.day = day;
            self.today.clear();
        }
    }

    /// Tokens `agent` spent on the UTC day of `now`.
    pub(crate) fn tokens_today(&self, agent: &str, now: Timestamp) -> u64 {
        if day_of(now) != self.day {
            return 0;
        }
        self.today.get(agent).map_or(0, |s| s.tokens)
    }

    /// Whether `agent` spent its day's tokens (`limit` 0: no limit).
    pub(crate) fn over(&self, agent: &str, limit: u64, now: Timestamp) -> bool {
        limit > 0 && self.tokens_today(agent, now) >= limit
    }

    /// The day of `now`, per agent.
    pub(crate) fn view(&self, now: Timestamp) -> UsageView {
        let day = day_of(now);
        UsageView {
            day: day_name(day),
            agents: if day == self.day {
                self.today.clone()
            } else {
                BTreeMap::new()
            },
        }
    }

    /// The current day's sums, to store (`{"day", "agents"}`, the day in
    /// days since the epoch).
    pub(crate) fn today_json(&self) -> String {
        serde_json::json!({ "day": self.day, "agents": self.today }).to_string()
    }

    /// Back from [`Usage::today_json`] after a restart (the totals start
    /// at zero, as counters do); anything unreadable is an empty day.
    pub(crate) fn restore(json: &str) -> Usage {
        #[derive(Deserialize)]
        struct Stored {
            day: i64,
            agents: BTreeMap<String, Spent>,
        }
        match serde_json::from_str::<Stored>(json) {
            Ok(s) => Usage {
                day: s.day,
                today: s.agents,
                total: BTreeMap::new(),
            },
            Err(_) => Usage::default(),
        }
    }

    /// Since the hub started, per agent (the `/metrics` counters).
    pub(crate) fn totals(&self) -> &BTreeMap<String, Spent> {
        &self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: i64, ms: i64) -> Timestamp {
        Timestamp(day * DAY_MS + ms)
    }

    fn spent(tokens: u64, cost_usd: f64) -> Spent {
        Spent { tokens, cost_usd }
    }

    #[test]
    fn days_are_named_in_utc() {
        assert_eq!(day_name(0), "1970-01-01");
        assert_eq!(day_name(20_417), "2025-11-25");
        assert_eq!(day_name(11_016), "2000-02-29");
        assert_eq!(day_name(-1), "1969-12-31");
    }

    #[test]
    fn spending_sums_per_agent_and_day_and_a_new_day_starts_at_zero() {
        let mut u = Usage::default();
        u.record("a1", spent(100, 0.5), at(10, 1_000));
        u.record("a1", spent(50, 0.25), at(10, 2_000));
        u.record("a2", spent(7, 0.0), at(10, 3_000));
        assert_eq!(u.tokens_today("a1", at(10, 5_000)), 150);
        let v = u.view(at(10, 5_000));
        assert_eq!(v.agents["a1"], spent(150, 0.75));
        assert_eq!(v.agents["a2"], spent(7, 0.0));
        // The next UTC day: today is empty, the totals stay.
        assert_eq!(u.tokens_today("a1", at(11, 0)), 0);
        assert!(u.view(at(11, 0)).agents.is_empty());
        u.record("a1", spent(1, 0.0), at(11, 10));
        assert_eq!(u.tokens_today("a1", at(11, 20)), 1);
        assert_eq!(u.totals()["a1"], spent(151, 0.75));
    }

    #[test]
    fn an_agent_is_over_when_its_day_reaches_the_limit() {
        let mut u = Usage::default();
        u.record("a1", spent(99, 0.0), at(3, 0));
        assert!(!u.over("a1", 100, at(3, 1)));
        u.record("a1", spent(1, 0.0), at(3, 2));
        assert!(u.over("a1", 100, at(3, 3)));
        assert!(!u.over("a1", 0, at(3, 3)), "0 is no limit");
        assert!(!u.over("a1", 100, at(4, 0)), "until the next UTC day");
        assert!(!u.over("a2", 100, at(3, 3)));
    }

    #[test]
    fn the_day_survives_a_restart_through_its_json() {
        let mut u = Usage::default();
        u.record("a1", spent(40, 0.5), at(7, 0));
        let back = Usage::restore(&u.today_json());
        assert_eq!(back.tokens_today("a1", at(7, 9)), 40);
        assert_eq!(back.view(at(7, 9)).agents["a1"], spent(40, 0.5));
        assert!(back.totals().is_empty(), "counters start again");
        assert_eq!(Usage::restore("garbage").tokens_today("a1", at(7, 9)), 0);
    }

    #[test]
    fn cost_is_read_from_the_results_other_fields() {
        let r: TaskResult =
            serde_json::from_str(r#"{"tokens_used": 12, "cost_usd": 0.03}"#).unwrap();
        assert_eq!(spent_by(&r), spent(12, 0.03));
        let bad: TaskResult = serde_json::from_str(r#"{"cost_usd": -1}"#).unwrap();
        assert_eq!(spent_by(&bad), spent(0, 0.0));
        let text: TaskResult = serde_json::from_str(r#"{"cost_usd": "lots"}"#).unwrap();
        assert_eq!(spent_by(&text), spent(0, 0.0));
    }
}
