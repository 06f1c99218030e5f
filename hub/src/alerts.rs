//! Alerts: things a person should know now (a change waits for a person,
//! a repository's main is red), kept in a bounded list of recent ones for
//! `GET /api/alerts` and published on the event bus (`event: alert`) for
//! the dashboard.
//!
//! It holds what was raised; it never decides when to raise one (the
//! domain does) and never waits for anyone to read.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use agentcom_protocol::Timestamp;
use serde::Serialize;

use crate::events::EventBus;

/// How many recent alerts are kept.
const RECENT: usize = 1000;

/// One alert, as `GET /api/alerts` and the event stream show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Alert {
    /// Its kind (`change_escalated`, `main_red`, …).
    pub alert: String,
    pub at: Timestamp,
    /// What it is about (a change id, a repository, a task, an agent).
    pub subject: String,
    pub message: String,
}

pub(crate) struct AlertBus {
    recent: Mutex<VecDeque<Alert>>,
    events: Arc<EventBus>,
}

impl AlertBus {
    pub(crate) fn new(events: Arc<EventBus>) -> Self {
        AlertBus {
            recent: Mutex::new(VecDeque::new()),
            events,
        }
    }

    /// Raise an alert.
    pub(crate) fn raise(&self, kind: &str, subject: &str, message: &str, now: Timestamp) {
        let alert = Alert {
            alert: kind.to_string(),
            at: now,
            subject: subject.to_string(),
            message: message.to_string(),
        };
        tracing::warn!(alert = kind, subject, message, "alert");
        self.events.publish(
            "alert",
            serde_json::to_value(&alert).expect("alerts serialise"),
        );
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        r.push_front(alert);
        r.truncate(RECENT);
    }

    /// Recent alerts, newest first.
    pub(crate) fn recent(&self, limit: usize) -> Vec<Alert> {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .take(limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_alerts_newest_first_and_on_the_event_stream() {
        let events = Arc::new(EventBus::new(100, 1 << 20, 16));
        let bus = AlertBus::new(events.clone());
        let mut sub = events.subscribe(None).live;
        bus.raise("main_red", "app", "main fails", Timestamp(1));
        bus.raise("change_escalated", "c1", "waits", Timestamp(2));
        let r = bus.recent(10);
        assert_eq!(r[0].alert, "change_escalated");
        assert_eq!(r[1].subject, "app");
        assert_eq!(sub.try_recv().unwrap().kind, "alert");
    }
}
