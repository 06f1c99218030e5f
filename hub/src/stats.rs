//! Hub-wide counters and recent samples, updated where things happen and
//! read by `/api/state` (and `/metrics`).
//!
//! Everything here is an observation: atomics and short bounded windows,
//! never consulted by the scheduling logic.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use agentcom_protocol::Timestamp;
use serde::Serialize;

/// How many recent assignment latencies the percentiles are taken over.
const LATENCY_WINDOW: usize = 10_000;
/// How far back throughput is kept.
const THROUGHPUT_WINDOW_MS: i64 = 15 * 60 * 1000;

#[derive(Default)]
pub struct Stats {
    pub stale_messages: AtomicU64,
    pub ws_messages_in: AtomicU64,
    pub ws_messages_out: AtomicU64,
    pub ws_bytes_in: AtomicU64,
    pub ws_bytes_out: AtomicU64,
    pub ws_bad_frames: AtomicU64,
    latencies_ms: Mutex<VecDeque<i64>>,
    completions: Mutex<VecDeque<Timestamp>>,
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

impl Stats {
    pub fn stale(&self) {
        self.stale_messages.fetch_add(1, Ordering::Relaxed);
    }

    pub fn message_in(&self, bytes: usize) {
        self.ws_messages_in.fetch_add(1, Ordering::Relaxed);
        self.ws_bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn message_out(&self, bytes: usize) {
        self.ws_messages_out.fetch_add(1, Ordering::Relaxed);
        self.ws_bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn assignment_latency(&self, ms: i64) {
        let mut l = self.latencies_ms.lock().unwrap_or_else(|e| e.into_inner());
        l.push_back(ms.max(0));
        while l.len() > LATENCY_WINDOW {
            l.pop_front();
        }
    }

    pub fn completed(&self, at: Timestamp) {
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
        s.completed(now.plus_millis(-30_000));
        s.completed(now.plus_millis(-90_000));
        s.completed(now.plus_millis(-100_000));
        assert_eq!(s.completions_per_minute(now, 3), [1, 2, 0]);
    }
}
