//! Seeing the fleet: the event stream, the state snapshot and the
//! Prometheus scrape, against a real hub and sidecars.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use agentcom_tests::hub::Hub;
use agentcom_tests::raw::quick_agent;
use agentcom_tests::sidecar::Sidecar;
use agentcom_tests::sse::{SseClient, SseEvent};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);
const QUICK: &str = r#"echo '{"summary":"ok"}' > "$AGENTCOM_RESULT_FILE""#;

/// Read events on a thread; they arrive on the channel.
fn listen(hub: &Hub, after: Option<u64>) -> mpsc::Receiver<SseEvent> {
    let client = SseClient::connect(hub, after);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for e in client {
            if tx.send(e).is_err() {
                return;
            }
        }
    });
    rx
}

/// Events until `until` matches one (inclusive).
fn collect(
    rx: &mpsc::Receiver<SseEvent>,
    mut until: impl FnMut(&SseEvent, &Value) -> bool,
) -> Vec<(SseEvent, Value)> {
    let deadline = Instant::now() + T;
    let mut out = Vec::new();
    while Instant::now() < deadline {
        let Ok(e) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let v: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
        let stop = until(&e, &v);
        out.push((e, v));
        if stop {
            return out;
        }
    }
    panic!("the expected event did not come; got {} events", out.len());
}

#[test]
fn the_event_stream_carries_every_transition_in_order_and_resumes_after_an_id() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    let rx = listen(&hub, None);
    let _s = Sidecar::start(root.path(), &hub, "solo", &[], QUICK, "");
    hub.wait_agent("solo", "idle", T);
    let t = hub.submit(json!({ "title": "watched" }));
    let id = t["id"].as_str().unwrap().to_string();
    let mut completed = false;
    let events = collect(&rx, |e, v| {
        completed |= e.event == "task"
            && v["task"]["id"] == id.as_str()
            && v["transition"]["event"] == "completed";
        completed && e.event == "agent" && v["agent"]["state"] == "idle"
    });

    let ids: Vec<u64> = events
        .iter()
        .map(|(e, _)| e.id.expect("every event has an id"))
        .collect();
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "ids increase by one: {ids:?}"
    );
    let task_steps: Vec<String> = events
        .iter()
        .filter(|(e, v)| e.event == "task" && v["task"]["id"] == id.as_str())
        .map(|(_, v)| v["transition"]["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(task_steps, ["created", "assigned", "accepted", "completed"]);
    let agent_states: Vec<String> = events
        .iter()
        .filter(|(e, _)| e.event == "agent")
        .map(|(_, v)| v["agent"]["state"].as_str().unwrap().to_string())
        .collect();
    assert!(
        agent_states.ends_with(&["assigned".into(), "working".into(), "idle".into()]),
        "{agent_states:?}"
    );
    let (_, done) = events
        .iter()
        .rev()
        .find(|(e, _)| e.event == "task")
        .unwrap();
    assert!(
        done["task"].get("description").is_none(),
        "events carry no descriptions"
    );
    assert_eq!(done["transition"]["generation"], 1);
    assert_eq!(done["transition"]["agent_id"], "solo");

    // A client that reconnects with Last-Event-ID misses nothing.
    let last = *ids.last().unwrap();
    drop(rx);
    let t2 = hub.submit(json!({ "title": "while away" }));
    hub.wait_status(t2["id"].as_str().unwrap(), "completed", T);
    let rx = listen(&hub, Some(last));
    let first = rx.recv_timeout(T).expect("replayed events");
    assert_eq!(first.id, Some(last + 1));
    let v: Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!(v["task"]["id"], t2["id"]);
    assert_eq!(v["transition"]["event"], "created");
}

#[test]
fn a_slow_client_is_dropped_without_slowing_the_hub_and_resumes() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[("AGENTCOM_EVENTS__CLIENT_BUFFER", "32")]);
    // A client that stops reading after its first event, and one that
    // keeps reading all along.
    let mut slow = SseClient::connect(&hub, None);
    let reading = listen(&hub, None);
    let first = hub.submit(json!({ "title": "first" }));
    let e = slow.next().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&e.data).unwrap()["task"]["id"],
        first["id"]
    );
    let first_event = e.id.unwrap();
    // An agent completes 300 tasks, each with a 60 KB result (events of
    // completions carry it): ~18 MB of events, far more than the slow
    // client's buffer (32 events) and its socket's buffers hold. Every
    // create is answered 201 (`submit` checks) and every task completes
    // while the slow client holds its connection unread.
    let stop = Arc::new(AtomicBool::new(false));
    let token = hub.add_agent("quick", &[]);
    let result = json!({ "summary": "r".repeat(60_000) });
    let agent = quick_agent(&hub.ws_url(), &token, "quick", result, stop.clone());
    let mut tasks = vec![first["id"].as_str().unwrap().to_string()];
    for i in 0..300 {
        let t = hub.submit(json!({ "title": format!("t{i}") }));
        tasks.push(t["id"].as_str().unwrap().to_string());
    }
    agentcom_tests::wait_until(T, "every task to complete", || {
        (hub.state()["tasks"]["completed"] == 301).then_some(())
    });
    hub.wait_agent("quick", "idle", T);
    stop.store(true, Ordering::Relaxed);
    assert_eq!(agent.join().unwrap(), 301);
    let state = hub.state();
    let last_event = state["events"]["next_id"].as_u64().unwrap() - 1;
    // The stalled client is still subscribed: publishing simply went past
    // it (its stream learns that it lagged when it runs again).
    assert_eq!(state["events"]["subscribers"], 2);

    // Publishing never waited for the slow client: the reading client got
    // every event, numbered without a gap, every task's completion among
    // them, while the slow one still reads nothing.
    let got = collect(&reading, |e, _| e.id == Some(last_event));
    let ids: Vec<u64> = got.iter().map(|(e, _)| e.id.unwrap()).collect();
    assert_eq!(ids, (first_event..=last_event).collect::<Vec<_>>());
    assert_eq!(completions(&got), tasks, "every completion, in order");

    // Reading again: what was buffered, then `lagged`, then the end.
    let mut slow_got = vec![(e.clone(), Value::Null)];
    let mut last_id = first_event;
    let mut missed = None;
    for ev in slow.by_ref() {
        if ev.event == "lagged" {
            let v: Value = serde_json::from_str(&ev.data).unwrap();
            missed = v["missed"].as_u64();
            continue;
        }
        assert!(missed.is_none(), "the stream ends after `lagged`: {ev:?}");
        assert_eq!(ev.id, Some(last_id + 1), "no gap before the drop");
        last_id = ev.id.unwrap();
        let v = serde_json::from_str(&ev.data).unwrap_or(Value::Null);
        slow_got.push((ev, v));
    }
    let missed = missed.expect("the slow client was told it lagged and dropped");
    assert!(
        missed > 0 && last_id < last_event,
        "it fell behind: {missed} missed, read up to {last_id}"
    );

    // It resumes from the replay ring with nothing lost: every event after
    // the last it read, up to the last one, without a `resync`.
    let resumed = listen(&hub, Some(last_id));
    let rest = collect(&resumed, |e, _| e.id == Some(last_event));
    for (e, _) in &rest {
        assert_ne!(e.event, "resync");
        assert_eq!(e.id, Some(last_id + 1), "replayed without a gap");
        last_id = e.id.unwrap();
    }
    slow_got.extend(rest);
    assert_eq!(
        completions(&slow_got),
        tasks,
        "the slow client saw every completion once, in order"
    );
}

/// The ids of the tasks whose `completed` transition is among `events`.
fn completions(events: &[(SseEvent, Value)]) -> Vec<String> {
    events
        .iter()
        .filter(|(e, v)| e.event == "task" && v["transition"]["event"] == "completed")
        .map(|(_, v)| v["task"]["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_state_snapshot_has_lanes_statuses_agents_latency_and_throughput() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    let _s = Sidecar::start(root.path(), &hub, "solo", &["shell"], QUICK, "");
    hub.wait_agent("solo", "idle", T);
    for i in 0..3 {
        let t = hub.submit(json!({ "title": format!("done{i}") }));
        hub.wait_status(t["id"].as_str().unwrap(), "completed", T);
    }
    // Idle before the task that waits, so the snapshot's agent count is
    // settled (the last completion turns the agent idle just after).
    hub.wait_agent("solo", "idle", T);
    hub.submit(json!({ "title": "waits", "needed_capabilities": ["gpu"], "priority": "high" }));
    // Its age in the snapshot grows with real time.
    let s = agentcom_tests::wait_until(T, "the queued task to be 0.2 s old", || {
        let s = hub.state();
        (s["queue"]["oldest_queued_age_s"].as_f64()? >= 0.2).then_some(s)
    });
    assert_eq!(s["queue"]["depth"]["high"], 1);
    for lane in [
        "urgent",
        "urgent_retry",
        "high_retry",
        "normal",
        "normal_retry",
        "low",
        "low_retry",
    ] {
        assert_eq!(s["queue"]["depth"][lane], 0, "{lane}");
    }
    assert_eq!(s["queue"]["queued"], 1);
    assert_eq!(s["tasks"]["completed"], 3);
    assert_eq!(s["tasks"]["queued"], 1);
    assert_eq!(s["agents"]["idle"], 1);
    assert_eq!(s["connected_sidecars"], 1);
    assert_eq!(s["assignment_latency_ms"]["samples"], 3);
    assert!(s["assignment_latency_ms"]["p50_ms"].is_number());
    assert_eq!(s["throughput"]["completed_last_minute"], 3);
    assert_eq!(
        s["throughput"]["completed_per_minute"]
            .as_array()
            .unwrap()
            .len(),
        15
    );
    assert_eq!(s["stale_messages"], 0);
}

/// Parse a scrape with the official Prometheus Python client's parsers.
fn parse(text: &str) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/parse_metrics.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parsers refused the scrape (pip install prometheus-client; ./scripts/test.sh does):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sample(fams: &Value, family: &str, name: &str, labels: Value) -> f64 {
    let f = fams
        .get(family)
        .unwrap_or_else(|| panic!("no family {family}"));
    f["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s[0] == name && s[1] == labels)
        .unwrap_or_else(|| panic!("no sample {name} {labels} in {family}: {f}"))[2]
        .as_f64()
        .unwrap()
}

#[test]
fn metrics_parse_with_a_prometheus_parser_and_count_the_right_things() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    let script = r#"if grep -q '"title": "bad"' "$AGENTCOM_TASK_FILE"; then echo '{"retryable":false}' > "$AGENTCOM_RESULT_FILE"; exit 1; fi
echo '{"summary":"ok"}' > "$AGENTCOM_RESULT_FILE""#;
    let _s = Sidecar::start(root.path(), &hub, "solo", &[], script, "");
    hub.wait_agent("solo", "idle", T);
    for title in ["a", "b"] {
        let t = hub.submit(json!({ "title": title }));
        hub.wait_status(t["id"].as_str().unwrap(), "completed", T);
    }
    let bad = hub.submit(json!({ "title": "bad" }));
    hub.wait_status(bad["id"].as_str().unwrap(), "dead", T);
    hub.submit(
        json!({ "title": "queued", "priority": "urgent", "needed_capabilities": ["nobody"] }),
    );

    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = http.get(format!("{}/metrics", hub.url)).call().unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.body_mut().read_to_string().unwrap();
    let parsed = parse(&text);
    for fams in [&parsed["openmetrics"], &parsed["text"]] {
        assert_eq!(
            sample(
                fams,
                "agentcom_queue_depth",
                "agentcom_queue_depth",
                json!({ "lane": "urgent" })
            ),
            1.0
        );
        assert_eq!(
            sample(
                fams,
                "agentcom_tasks",
                "agentcom_tasks",
                json!({ "status": "completed" })
            ),
            2.0
        );
        assert_eq!(
            sample(
                fams,
                "agentcom_tasks",
                "agentcom_tasks",
                json!({ "status": "dead" })
            ),
            1.0
        );
        assert_eq!(
            sample(
                fams,
                "agentcom_agents",
                "agentcom_agents",
                json!({ "state": "idle" })
            ),
            1.0
        );
        assert_eq!(
            sample(
                fams,
                "agentcom_connected_sidecars",
                "agentcom_connected_sidecars",
                json!({})
            ),
            1.0
        );
    }
    let om = &parsed["openmetrics"];
    assert_eq!(om["agentcom_tasks_completed"]["type"], "counter");
    assert_eq!(
        sample(
            om,
            "agentcom_tasks_completed",
            "agentcom_tasks_completed_total",
            json!({})
        ),
        2.0
    );
    assert_eq!(
        sample(
            om,
            "agentcom_tasks_dead",
            "agentcom_tasks_dead_total",
            json!({})
        ),
        1.0
    );
    assert_eq!(
        sample(
            om,
            "agentcom_stale_messages",
            "agentcom_stale_messages_total",
            json!({})
        ),
        0.0
    );
    assert_eq!(
        om["agentcom_assignment_latency_seconds"]["type"],
        "histogram"
    );
    assert_eq!(
        sample(
            om,
            "agentcom_assignment_latency_seconds",
            "agentcom_assignment_latency_seconds_count",
            json!({})
        ),
        3.0
    );
    assert_eq!(
        sample(
            om,
            "agentcom_task_duration_seconds",
            "agentcom_task_duration_seconds_count",
            json!({})
        ),
        2.0
    );
    let msgs = sample(
        om,
        "agentcom_protocol_messages",
        "agentcom_protocol_messages_total",
        json!({ "direction": "in" }),
    );
    assert!(
        msgs >= 9.0,
        "hello + 3 × (accept + result) + heartbeats: {msgs}"
    );
    let per_task = sample(
        om,
        "agentcom_protocol_messages_per_completed_task",
        "agentcom_protocol_messages_per_completed_task",
        json!({}),
    );
    assert!(per_task > 0.0);
    let bytes = sample(
        om,
        "agentcom_protocol_payload_per_completed_task_bytes",
        "agentcom_protocol_payload_per_completed_task_bytes",
        json!({}),
    );
    eprintln!("coordination overhead: {per_task:.1} protocol messages and {bytes:.0} bytes per completed task");
}

#[test]
fn the_store_times_each_stage_of_its_group_commits() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    // Each create is answered once its group is durable, so each one is
    // written, synced and finished before the next is sent.
    for i in 0..5 {
        hub.submit(json!({ "title": format!("t{i}") }));
    }
    let m = hub.metrics();
    let get = |name: &str| {
        agentcom_tests::hub::sample(&m, name).unwrap_or_else(|| panic!("no {name} in:\n{m}"))
    };
    // Every sync that made something durable is timed.
    let syncs = get("agentcom_store_syncs_total");
    assert!(syncs >= 5.0, "one sync a create at least: {syncs}");
    assert_eq!(get("agentcom_store_sync_seconds_count"), syncs);
    // Every group that wrote is timed, with its size: the five tasks'
    // records are among its writes.
    let groups = get("agentcom_store_write_seconds_count");
    assert!(groups >= 5.0, "{groups}");
    assert_eq!(get("agentcom_store_group_changes_count"), groups);
    assert!(get("agentcom_store_group_changes_sum") >= 5.0);
    // A group is answered after it is written and then synced: what its
    // changes waited covers both stages.
    let (write, sync) = (
        get("agentcom_store_write_seconds_sum"),
        get("agentcom_store_sync_seconds_sum"),
    );
    assert!(write > 0.0 && sync > 0.0, "write {write} s, sync {sync} s");
    let waited = get("agentcom_store_group_latency_seconds_sum");
    assert!(
        waited >= write + sync,
        "staged → durable {waited} s, write {write} s + sync {sync} s"
    );
    assert!(get("agentcom_store_group_latency_seconds_count") >= groups);
}
