//! Hub-wide counters, histograms and recent samples, updated where things
//! happen and read by `/api/state` and `/metrics`.
//!
//! Counters and histograms are prometheus-client metrics (atomic, cheap to
//! clone into a scrape's registry); the short windows behind the state
//! snapshot's percentiles and throughput sit beside them. Everything here
//! is an observation, never consulted by the scheduling logic.

use std::collections::VecDeque;
use std::sync::Mutex;

use agentcom_protocol::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use serde::Serialize;

/// How many recent assignment latencies the percentiles are taken over.
const LATENCY_WINDOW: usize = 10_000;
/// How far back throughput is kept.
const THROUGHPUT_WINDOW_MS: i64 = 15 * 60 * 1000;

/// `direction="in"` (sidecar → hub) or `"out"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Direction {
    pub direction: &'static str,
}

/// `alert="task_dead"`, … (every kind listed from the start).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabel {
    pub alert: &'static str,
}

/// `result="delivered"`, `"retried"` or `"dropped"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryResult {
    pub result: &'static str,
}

pub(crate) const DELIVERED: DeliveryResult = DeliveryResult {
    result: "delivered",
};
pub(crate) const RETRIED: DeliveryResult = DeliveryResult { result: "retried" };
pub(crate) const DROPPED: DeliveryResult = DeliveryResult { result: "dropped" };

pub struct Stats {
    pub tasks_created: Counter,
    pub tasks_completed: Counter,
    /// Attempts that ended in failure (hub- or sidecar-reported).
    pub attempt_failures: Counter,
    /// Failed tasks queued again after their backoff.
    pub retries: Counter,
    pub tasks_dead: Counter,
    pub stale_messages: Counter,
    /// Changes merged into main.
    pub changes_merged: Counter,
    /// Changes sent back (conflict, failed check, changes requested).
    pub changes_sent_back: Counter,
    pub ws_messages: Family<Direction, Counter>,
    pub ws_bytes: Family<Direction, Counter>,
    pub ws_bad_frames: Counter,
    /// Sidecar messages dropped over their agent's rate limit.
    pub ws_rate_limited: Counter,
    /// HTTP connections answered 503 over the connection limit.
    pub http_refused: Counter,
    /// Group commits made durable (flush + fdatasync).
    pub store_syncs: Counter,
    /// Task changes written by those syncs.
    pub store_writes: Counter,
    // A group commit's stages, so an operator can tell a slow disk from a
    // busy hub (docs/operations.md).
    /// Writing one group into the store (not yet durable), seconds.
    pub store_write_time: Histogram,
    /// One sync (everything written so far made durable), seconds.
    pub store_sync_time: Histogram,
    /// A group's first change staged → the group durable and answered:
    /// the longest any change of it waited, seconds.
    pub store_group_latency: Histogram,
    /// Task and change writes per group written.
    pub store_group_changes: Histogram,
    /// Idle agents standing with the queue (decision 0018).
    pub agents_standing: Gauge,
    /// Queued → assigned, seconds.
    pub assignment_latency: Histogram,
    /// Accepted → completed, seconds.
    pub task_duration: Histogram,
    /// A change opened → merged into main, seconds.
    pub change_merge_time: Histogram,
    /// Alerts raised, by kind.
    pub alerts: Family<AlertLabel, Counter>,
    /// Webhook tries: delivered (2xx), retried (failed, tried again),
    /// dropped (given up, or pushed out of a full queue).
    pub webhook_deliveries: Family<DeliveryResult, Counter>,
    latencies_ms: Mutex<VecDeque<i64>>,
    completions: Mutex<VecDeque<Timestamp>>,
}

impl Default for Stats {
    fn default() -> Self {
        let s = Stats {
            tasks_created: Counter::default(),
            tasks_completed: Counter::default(),
            attempt_failures: Counter::default(),
            retries: Counter::default(),
            tasks_dead: Counter::default(),
            stale_messages: Counter::default(),
            changes_merged: Counter::default(),
            changes_sent_back: Counter::default(),
            ws_messages: Family::default(),
            ws_bytes: Family::default(),
            ws_bad_frames: Counter::default(),
            ws_rate_limited: Counter::default(),
            http_refused: Counter::default(),
            store_syncs: Counter::default(),
            store_writes: Counter::default(),
            // 50 µs … ~1.6 s
            store_write_time: Histogram::new(exponential_buckets(0.00005, 2.0, 16)),
            store_sync_time: Histogram::new(exponential_buckets(0.00005, 2.0, 16)),
            store_group_latency: Histogram::new(exponential_buckets(0.00005, 2.0, 16)),
            // 1 … 4,096
            store_group_changes: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            agents_standing: Gauge::default(),
            // 0.5 ms … ~16 s
            assignment_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            // 1 s … ~9 h
            task_duration: Histogram::new(exponential_buckets(1.0, 2.0, 16)),
            // 0.25 s … ~2.3 h
            change_merge_time: Histogram::new(exponential_buckets(0.25, 2.0, 16)),
            alerts: Family::default(),
            webhook_deliveries: Family::default(),
            latencies_ms: Mutex::new(VecDeque::new()),
            completions: Mutex::new(VecDeque::new()),
        };
        // Both directions exist from the start, so a scrape always lists them.
        for d in [&IN, &OUT] {
            drop(s.ws_messages.get_or_create(d));
            drop(s.ws_bytes.get_or_create(d));
        }
        for k in crate::domain::alert::AlertKind::ALL {
            drop(s.alerts.get_or_create(&AlertLabel { alert: k.as_str() }));
        }
        for r in [&DELIVERED, &RETRIED, &DROPPED] {
            drop(s.webhook_deliveries.get_or_create(r));
        }
        s
    }
}

/// Percentiles of recent assignment latencies (queued → assigned), in ms.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub samples: usize,
    pub p50_ms: Option<i64>,
    pub p90_ms: Option<i64>,
    pub p99_ms: Option<i64>,
    pub max_ms: Option<i64>,
}

pub(crate) const IN: Direction = Direction { direction: "in" };
pub(crate) const OUT: Direction = Direction { direction: "out" };

impl Stats {
    pub fn stale(&self) {
        self.stale_messages.inc();
    }

    pub fn stale_count(&self) -> u64 {
        self.stale_messages.get()
    }

    pub fn message_in(&self, bytes: usize) {
        self.ws_messages.get_or_create(&IN).inc();
        self.ws_bytes.get_or_create(&IN).inc_by(bytes as u64);
    }

    pub fn message_out(&self, bytes: usize) {
        self.ws_messages.get_or_create(&OUT).inc();
        self.ws_bytes.get_or_create(&OUT).inc_by(bytes as u64);
    }

    /// Protocol messages and bytes, both directions.
    pub fn protocol_totals(&self) -> (u64, u64) {
        // One guard at a time: a family's guard holds its lock.
        let read =
            |f: &Family<Direction, Counter>, d: &Direction| f.get(d).map(|c| c.get()).unwrap_or(0);
        let m = read(&self.ws_messages, &IN) + read(&self.ws_messages, &OUT);
        let b = read(&self.ws_bytes, &IN) + read(&self.ws_bytes, &OUT);
        (m, b)
    }

    pub fn assignment_latency(&self, ms: i64) {
        let ms = ms.max(0);
        self.assignment_latency.observe(ms as f64 / 1000.0);
        let mut l = self.latencies_ms.lock().unwrap_or_else(|e| e.into_inner());
        l.push_back(ms);
        while l.len() > LATENCY_WINDOW {
            l.pop_front();
        }
    }

    /// A task completed at `at` after working `duration_ms` (if known).
    pub fn completed(&self, at: Timestamp, duration_ms: Option<i64>) {
        self.tasks_completed.inc();
        if let Some(d) = duration_ms {
            self.task_duration.observe(d.max(0) as f64 / 1000.0);
        }
        let mut c = self.completions.lock().unwrap_or_else(|e| e.into_inner());
        c.push_back(at);
        while c
            .front()
            .is_some_and(|t| at.millis_since(*t) > THROUGHPUT_WINDOW_MS)
        {
            c.pop_front();
        }
    }

    pub fn latency_percentiles(&self) -> Percentiles {
        let mut v: Vec<i64> = self
            .latencies_ms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        if v.is_empty() {
            return Percentiles::default();
        }
        v.sort_unstable();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Percentiles {
            samples: v.len(),
            p50_ms: Some(at(0.5)),
            p90_ms: Some(at(0.9)),
            p99_ms: Some(at(0.99)),
            max_ms: v.last().copied(),
        }
    }

    /// Completions in each of the last `minutes` whole minutes, newest first.
    pub fn completions_per_minute(&self, now: Timestamp, minutes: usize) -> Vec<usize> {
        let c = self.completions.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = vec![0; minutes];
        for t in c.iter() {
            let age = now.millis_since(*t);
            if age >= 0 {
                let bucket = (age / 60_000) as usize;
                if bucket < minutes {
                    out[bucket] += 1;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_over_samples() {
        let s = Stats::default();
        assert_eq!(s.latency_percentiles().samples, 0);
        for ms in 1..=100 {
            s.assignment_latency(ms);
        }
        let p = s.latency_percentiles();
        assert_eq!((p.samples, p.p50_ms, p.max_ms), (100, Some(51), Some(100)));
        assert_eq!(p.p99_ms, Some(99));
    }

    #[test]
    fn throughput_buckets_by_minute() {
        let s = Stats::default();
        let now = Timestamp(10_000_000);
        s.completed(now.plus_millis(-30_000), None);
        s.completed(now.plus_millis(-90_000), Some(5));
        s.completed(now.plus_millis(-100_000), None);
        assert_eq!(s.completions_per_minute(now, 3), [1, 2, 0]);
        assert_eq!(s.tasks_completed.get(), 3);
    }

    #[test]
    fn protocol_totals_add_both_directions() {
        let s = Stats::default();
        s.message_in(10);
        s.message_out(30);
        s.message_out(5);
        assert_eq!(s.protocol_totals(), (3, 45));
    }
}
