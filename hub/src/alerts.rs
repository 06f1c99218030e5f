//! Alerts: things a person should know now (a change waits for a person,
//! a repository's main is red, a task died, an agent is gone), kept in a
//! bounded list of recent ones for `GET /api/alerts`, published on the
//! event bus (`event: alert`) for the dashboard, counted
//! (`agentcom_alerts_total`), and POSTed to every `[[alerts.webhooks]]`.
//!
//! Each webhook has its own delivery task and a bounded outbox
//! ([`Outbox`]): raising an alert only queues it, so nothing in the hub
//! ever waits on a receiver. A webhook gets its alerts in the order they
//! were raised, one at a time; a failed try (not 2xx, or no connection) is
//! retried with backoff ([`Delivery`]) and given up after a bounded time;
//! a full outbox drops its oldest waiting alert. Every outcome is logged
//! and counted (`agentcom_webhook_deliveries_total`).
//!
//! It holds what was raised; it never decides when to raise one (the
//! domain does) and never waits for anyone to read.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentcom_protocol::Timestamp;
use serde::Serialize;
use tokio::sync::Notify;

use crate::domain::alert::{AfterFailure, AlertKind, Delivery, Outbox, OUTBOX_CAP};
use crate::events::EventBus;
use crate::stats::{AlertLabel, Stats, DELIVERED, DROPPED, RETRIED};

/// How many recent alerts are kept.
const RECENT: usize = 1000;

/// One try's time limit (connect, send, status line).
const TRY_TIMEOUT: Duration = Duration::from_secs(10);

/// One alert, as `GET /api/alerts`, the event stream and webhooks show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Alert {
    /// Its kind (`change_escalated`, `main_red`, …).
    pub alert: &'static str,
    pub at: Timestamp,
    /// What it is about (a change id, a repository, a task, an agent).
    pub subject: String,
    pub message: String,
}

/// One webhook: its URL and the alerts waiting for it.
struct Webhook {
    url: String,
    outbox: Mutex<Outbox<Alert>>,
    wake: Notify,
}

pub(crate) struct AlertBus {
    recent: Mutex<VecDeque<Alert>>,
    events: Arc<EventBus>,
    stats: Arc<Stats>,
    hooks: Vec<Arc<Webhook>>,
}

impl AlertBus {
    /// Alerts go to `webhooks` (URLs) once [`AlertBus::start_webhooks`]
    /// runs; until then they wait in each webhook's outbox.
    pub(crate) fn new(events: Arc<EventBus>, stats: Arc<Stats>, webhooks: &[String]) -> Self {
        AlertBus {
            recent: Mutex::new(VecDeque::new()),
            events,
            stats,
            hooks: webhooks
                .iter()
                .map(|url| {
                    Arc::new(Webhook {
                        url: url.clone(),
                        outbox: Mutex::new(Outbox::new(OUTBOX_CAP)),
                        wake: Notify::new(),
                    })
                })
                .collect(),
        }
    }

    /// Raise an alert.
    pub(crate) fn raise(&self, kind: AlertKind, subject: &str, message: &str, now: Timestamp) {
        let alert = Alert {
            alert: kind.as_str(),
            at: now,
            subject: subject.to_string(),
            message: message.to_string(),
        };
        tracing::warn!(alert = kind.as_str(), subject, message, "alert");
        self.stats
            .alerts
            .get_or_create(&AlertLabel {
                alert: kind.as_str(),
            })
            .inc();
        self.events.publish(
            "alert",
            serde_json::to_value(&alert).expect("alerts serialise"),
        );
        for hook in &self.hooks {
            let (gone, dropped) = {
                let mut outbox = hook.outbox.lock().unwrap_or_else(|e| e.into_inner());
                (outbox.push(alert.clone()), outbox.dropped())
            };
            if let Some(old) = gone {
                self.stats.webhook_deliveries.get_or_create(&DROPPED).inc();
                tracing::error!(webhook = %hook.url, alert = old.alert, subject = %old.subject,
                    at = %old.at, dropped_so_far = dropped,
                    "webhook outbox full: dropped its oldest undelivered alert");
            }
            hook.wake.notify_one();
        }
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

    /// Start one delivery task per webhook on the current actix arbiter.
    pub(crate) fn start_webhooks(&self) {
        if self.hooks.is_empty() {
            return;
        }
        let tls = match agentcom_tls::client_config(None) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                tracing::error!(error = %e, "no TLS for https webhooks (the system's root certificates)");
                None
            }
        };
        for hook in &self.hooks {
            tracing::info!(webhook = %hook.url, "delivering alerts to a webhook");
            actix_rt::spawn(deliver(hook.clone(), self.stats.clone(), tls.clone()));
        }
    }
}

/// A webhook's delivery loop: the oldest waiting alert until it is
/// delivered or given up, then the next.
async fn deliver(
    hook: Arc<Webhook>,
    stats: Arc<Stats>,
    tls: Option<Arc<agentcom_tls::ClientConfig>>,
) {
    let mut connector = awc::Connector::new().timeout(TRY_TIMEOUT);
    if let Some(tls) = tls {
        connector = connector.rustls_0_23(tls);
    }
    let client = awc::Client::builder()
        .connector(connector)
        .timeout(TRY_TIMEOUT)
        .finish();
    loop {
        let next = hook.outbox.lock().unwrap_or_else(|e| e.into_inner()).next();
        let Some(alert) = next else {
            hook.wake.notified().await;
            continue;
        };
        let body = serde_json::to_vec(&alert).expect("alerts serialise");
        let mut delivery = Delivery::new(Timestamp::now());
        loop {
            let tried = client
                .post(&hook.url)
                .insert_header(("Content-Type", "application/json"))
                .send_body(body.clone())
                .await;
            let why = match tried {
                Ok(resp) if resp.status().is_success() => {
                    stats.webhook_deliveries.get_or_create(&DELIVERED).inc();
                    tracing::info!(webhook = %hook.url, alert = alert.alert, subject = %alert.subject,
                        tries = delivery.failures + 1, "alert delivered");
                    break;
                }
                Ok(resp) => format!("answered {}", resp.status()),
                Err(e) => e.to_string(),
            };
            match delivery.failed(Timestamp::now()) {
                AfterFailure::RetryIn(ms) => {
                    stats.webhook_deliveries.get_or_create(&RETRIED).inc();
                    tracing::warn!(webhook = %hook.url, alert = alert.alert, subject = %alert.subject,
                        error = %why, retry_in_ms = ms, "alert not delivered; retrying");
                    tokio::time::sleep(Duration::from_millis(ms as u64)).await;
                }
                AfterFailure::GiveUp => {
                    stats.webhook_deliveries.get_or_create(&DROPPED).inc();
                    tracing::error!(webhook = %hook.url, alert = alert.alert, subject = %alert.subject,
                        error = %why, tries = delivery.failures, "alert given up: not delivered within the bound");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_alerts_newest_first_and_on_the_event_stream() {
        let events = Arc::new(EventBus::new(100, 1 << 20, 16));
        let stats = Arc::new(Stats::default());
        let bus = AlertBus::new(events.clone(), stats.clone(), &[]);
        let mut sub = events.subscribe(None).live;
        bus.raise(AlertKind::MainRed, "app", "main fails", Timestamp(1));
        bus.raise(AlertKind::ChangeEscalated, "c1", "waits", Timestamp(2));
        let r = bus.recent(10);
        assert_eq!(r[0].alert, "change_escalated");
        assert_eq!(r[1].subject, "app");
        assert_eq!(sub.try_recv().unwrap().kind, "alert");
        let counted = stats
            .alerts
            .get_or_create(&AlertLabel { alert: "main_red" })
            .get();
        assert_eq!(counted, 1);
    }

    #[test]
    fn raising_only_queues_for_each_webhook() {
        let events = Arc::new(EventBus::new(100, 1 << 20, 16));
        let stats = Arc::new(Stats::default());
        let bus = AlertBus::new(
            events,
            stats,
            &["http://127.0.0.1:9/a".into(), "http://127.0.0.1:9/b".into()],
        );
        bus.raise(AlertKind::TaskDead, "t1", "dead", Timestamp(1));
        for hook in &bus.hooks {
            assert_eq!(hook.outbox.lock().unwrap().len(), 1);
        }
    }
}
