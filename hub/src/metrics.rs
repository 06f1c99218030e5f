//! `/metrics`: the hub in the Prometheus text format.
//!
//! Each scrape builds a registry: the counters and histograms [`Stats`]
//! keeps (clones share their values), plus gauges read from the views at
//! that moment. Names follow Prometheus conventions: an `agentcom_` prefix,
//! base units (`_seconds`, `_bytes`), `_total` on counters.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::domain::lanes::{lane_name, LANE_COUNT};
use crate::events::EventBus;
use crate::stats::Stats;
use crate::views::{AgentView, ChangeView, RepoView, TaskView};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LaneLabel {
    lane: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RepoLabel {
    repo: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentLabel {
    agent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// The views one scrape reads.
pub(crate) struct Sources<'a> {
    pub(crate) stats: &'a Stats,
    pub(crate) tasks: &'a TaskView,
    pub(crate) changes: &'a ChangeView,
    pub(crate) repos: &'a RepoView,
    pub(crate) agents: &'a AgentView,
    pub(crate) events: &'a EventBus,
}

/// Render one scrape.
pub(crate) fn render(src: Sources<'_>) -> String {
    let Sources {
        stats,
        tasks,
        changes,
        repos,
        agents,
        events,
    } = src;
    let mut reg = Registry::with_prefix("agentcom");

    let counts = tasks.counts();
    let depth = Family::<LaneLabel, Gauge>::default();
    for i in 0..LANE_COUNT {
        depth
            .get_or_create(&LaneLabel { lane: lane_name(i) })
            .set(counts.lane_depth[i] as i64);
    }
    reg.register(
        "queue_depth",
        "Queued tasks per lane (a priority, or its retry lane)",
        depth,
    );

    let by_status = Family::<StatusLabel, Gauge>::default();
    for (status, n) in &counts.by_status {
        by_status
            .get_or_create(&StatusLabel {
                status: status.as_str(),
            })
            .set(*n as i64);
    }
    reg.register("tasks", "Tasks by status", by_status);

    let change_status = Family::<StatusLabel, Gauge>::default();
    for (status, n) in changes.counts() {
        change_status
            .get_or_create(&StatusLabel {
                status: status.as_str(),
            })
            .set(n as i64);
    }
    reg.register("changes", "Changes by status", change_status);
    let red = Family::<RepoLabel, Gauge>::default();
    let merge_queue = Family::<RepoLabel, Gauge>::default();
    for r in repos.all() {
        let label = RepoLabel {
            repo: r.name.clone(),
        };
        red.get_or_create(&label)
            .set(i64::from(r.health == agentcom_protocol::Health::Red));
        merge_queue.get_or_create(&label).set(r.queue.len() as i64);
    }
    reg.register(
        "repo_main_red",
        "1 while the repository's main fails its check (its merges and tasks wait)",
        red,
    );
    reg.register(
        "merge_queue_depth",
        "Changes in the repository's merge queue",
        merge_queue,
    );

    let oldest = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    if let Some(t) = counts.oldest_queued_at {
        oldest.set(agentcom_protocol::Timestamp::now().millis_since(t).max(0) as f64 / 1000.0);
    }
    reg.register_with_unit(
        "oldest_queued_age",
        "Age of the oldest queued task (0 when none)",
        Unit::Seconds,
        oldest,
    );

    let by_state = Family::<StateLabel, Gauge>::default();
    for (state, n) in agents.counts() {
        by_state
            .get_or_create(&StateLabel {
                state: state.as_str(),
            })
            .set(n as i64);
    }
    reg.register("agents", "Agents by state", by_state);
    let connected = Gauge::<i64>::default();
    connected.set(agents.connected() as i64);
    reg.register(
        "connected_sidecars",
        "Sidecars with an open WebSocket",
        connected,
    );
    let paused = Gauge::<i64>::default();
    paused.set(agents.paused() as i64);
    reg.register(
        "agents_paused",
        "Agents an operator paused (they take no new task)",
        paused,
    );
    // One series per agent that spent something (agents are bounded by
    // the registry).
    let tokens = Family::<AgentLabel, prometheus_client::metrics::counter::Counter>::default();
    let cost = Family::<
        AgentLabel,
        prometheus_client::metrics::counter::Counter<f64, std::sync::atomic::AtomicU64>,
    >::default();
    for (agent, spent) in tasks.usage_totals() {
        let label = AgentLabel { agent };
        tokens.get_or_create(&label).inc_by(spent.tokens);
        cost.get_or_create(&label).inc_by(spent.cost_usd);
    }
    reg.register(
        "tokens",
        "Tokens agents said their results used (tokens_used), since the hub started",
        tokens,
    );
    reg.register(
        "cost_usd",
        "Dollars agents said their results cost (cost_usd), since the hub started",
        cost,
    );

    let paused_lanes = tasks.paused_lanes();
    let lanes_paused = Family::<LaneLabel, Gauge>::default();
    for p in agentcom_protocol::Priority::ALL {
        lanes_paused
            .get_or_create(&LaneLabel {
                lane: p.as_str().to_string(),
            })
            .set(i64::from(paused_lanes.contains(&p)));
    }
    reg.register(
        "lanes_paused",
        "1 while an operator has paused the priority (its tasks stay queued)",
        lanes_paused,
    );

    reg.register(
        "tasks_created",
        "Tasks created",
        stats.tasks_created.clone(),
    );
    reg.register(
        "tasks_completed",
        "Tasks completed",
        stats.tasks_completed.clone(),
    );
    reg.register(
        "attempt_failures",
        "Attempts that ended in failure",
        stats.attempt_failures.clone(),
    );
    reg.register(
        "retries",
        "Failed tasks queued again after their backoff",
        stats.retries.clone(),
    );
    reg.register(
        "tasks_dead",
        "Tasks moved to the dead-letter list",
        stats.tasks_dead.clone(),
    );
    reg.register(
        "changes_merged",
        "Changes merged into main",
        stats.changes_merged.clone(),
    );
    reg.register(
        "changes_sent_back",
        "Changes sent back to be done again (conflict, failed check, changes requested)",
        stats.changes_sent_back.clone(),
    );
    reg.register("alerts", "Alerts raised, by kind", stats.alerts.clone());
    reg.register(
        "webhook_deliveries",
        "Alert webhook tries: delivered (2xx), retried (failed, tried again), dropped (given up or pushed out of a full queue)",
        stats.webhook_deliveries.clone(),
    );
    reg.register(
        "stale_messages",
        "Sidecar reports about an attempt that is not current",
        stats.stale_messages.clone(),
    );
    reg.register(
        "protocol_messages",
        "WebSocket protocol messages",
        stats.ws_messages.clone(),
    );
    reg.register_with_unit(
        "protocol",
        "WebSocket protocol payload",
        Unit::Bytes,
        stats.ws_bytes.clone(),
    );
    reg.register(
        "protocol_refused_frames",
        "Frames refused with an error",
        stats.ws_bad_frames.clone(),
    );
    reg.register(
        "protocol_rate_limited_messages",
        "Sidecar messages dropped over their agent's rate limit",
        stats.ws_rate_limited.clone(),
    );
    reg.register(
        "http_refused_connections",
        "HTTP connections answered 503 over the connection limit",
        stats.http_refused.clone(),
    );
    reg.register(
        "store_syncs",
        "Group commits made durable (flush + fdatasync)",
        stats.store_syncs.clone(),
    );
    reg.register(
        "store_writes",
        "Task changes made durable by those syncs",
        stats.store_writes.clone(),
    );
    reg.register_with_unit(
        "store_write",
        "Time to write one group commit into the store (before its sync)",
        Unit::Seconds,
        stats.store_write_time.clone(),
    );
    reg.register_with_unit(
        "store_sync",
        "Time of one sync (everything written so far made durable)",
        Unit::Seconds,
        stats.store_sync_time.clone(),
    );
    reg.register_with_unit(
        "store_group_latency",
        "Time from a group's first change to the group durable and answered",
        Unit::Seconds,
        stats.store_group_latency.clone(),
    );
    reg.register(
        "store_group_changes",
        "Task and change writes per group commit",
        stats.store_group_changes.clone(),
    );
    reg.register(
        "agents_standing",
        "Idle agents a task queued now is assigned to in its own durable step",
        stats.agents_standing.clone(),
    );
    reg.register_with_unit(
        "assignment_latency",
        "Time from entering the queue to being assigned",
        Unit::Seconds,
        stats.assignment_latency.clone(),
    );
    reg.register_with_unit(
        "task_duration",
        "Time from accept to completion",
        Unit::Seconds,
        stats.task_duration.clone(),
    );
    reg.register_with_unit(
        "change_merge_time",
        "Time from a change opening to its merge into main",
        Unit::Seconds,
        stats.change_merge_time.clone(),
    );

    // Coordination overhead: protocol traffic per completed task.
    let (messages, bytes) = stats.protocol_totals();
    let completed = stats.tasks_completed.get();
    let per_msgs = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    let per_bytes = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    if completed > 0 {
        per_msgs.set(messages as f64 / completed as f64);
        per_bytes.set(bytes as f64 / completed as f64);
    }
    reg.register(
        "protocol_messages_per_completed_task",
        "Protocol messages (both directions, heartbeats included) per completed task",
        per_msgs,
    );
    reg.register_with_unit(
        "protocol_payload_per_completed_task",
        "Protocol payload (both directions) per completed task",
        Unit::Bytes,
        per_bytes,
    );

    let subscribers = Gauge::<i64>::default();
    subscribers.set(events.subscribers() as i64);
    reg.register(
        "event_subscribers",
        "Clients reading /api/events",
        subscribers,
    );

    let mut out = String::new();
    encode(&mut out, &reg).expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_conventional_names() {
        let stats = Stats::default();
        stats.message_in(100);
        stats.completed(agentcom_protocol::Timestamp::now(), Some(1500));
        let repos = RepoView::new([("app".to_string(), "main".to_string())]);
        repos.update("app", |r| {
            r.health = agentcom_protocol::Health::Red;
            r.queue = vec!["c1".into(), "c2".into()];
        });
        stats.changes_merged.inc();
        stats.change_merge_time.observe(3.0);
        let tasks = TaskView::default();
        tasks.set_paused_lanes(vec![agentcom_protocol::Priority::High]);
        let mut usage = crate::domain::usage::Usage::default();
        usage.record(
            "a1",
            crate::domain::usage::Spent {
                tokens: 1200,
                cost_usd: 0.5,
            },
            agentcom_protocol::Timestamp::now(),
        );
        tasks.set_usage(usage);
        let text = render(Sources {
            stats: &stats,
            tasks: &tasks,
            changes: &ChangeView::default(),
            repos: &repos,
            agents: &AgentView::default(),
            events: &EventBus::new(10, 1 << 20, 10),
        });
        for needle in [
            "agentcom_queue_depth{lane=\"urgent_retry\"} 0",
            "agentcom_tasks{status=\"queued\"} 0",
            "# TYPE agentcom_tasks_completed counter",
            "agentcom_tasks_completed_total 1",
            "agentcom_protocol_bytes_total{direction=\"in\"} 100",
            "agentcom_task_duration_seconds_bucket{le=\"2.0\"} 1",
            "agentcom_protocol_messages_per_completed_task 1.0",
            "agentcom_changes{status=\"merging\"} 0",
            "agentcom_changes_merged_total 1",
            "agentcom_change_merge_time_seconds_bucket{le=\"4.0\"} 1",
            "agentcom_repo_main_red{repo=\"app\"} 1",
            "agentcom_merge_queue_depth{repo=\"app\"} 2",
            "agentcom_alerts_total{alert=\"agent_offline\"} 0",
            "agentcom_webhook_deliveries_total{result=\"dropped\"} 0",
            "agentcom_agents_paused 0",
            "agentcom_lanes_paused{lane=\"high\"} 1",
            "# TYPE agentcom_tokens counter",
            "agentcom_tokens_total{agent=\"a1\"} 1200",
            "agentcom_cost_usd_total{agent=\"a1\"} 0.5",
            "agentcom_lanes_paused{lane=\"low\"} 0",
            "# EOF",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }
}
