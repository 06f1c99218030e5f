//! Scheduled tasks against the real binaries: a task with `run_at` waits,
//! `queued` with `not_before`, and is assigned when its time comes — by
//! the queue's own timer, not a sweep — also after a hub restart.

use std::time::Duration;

use agentcom_tests::hub::{millis_between, Hub};
use agentcom_tests::sidecar::Sidecar;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);

fn at_ms_from_now(ms: i64) -> String {
    agentcom_protocol::Timestamp::now()
        .plus_millis(ms)
        .to_string()
}

fn event_at(task: &Value, event: &str) -> String {
    task["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["event"] == event)
        .unwrap_or_else(|| panic!("no {event} in {task}"))["at"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_task_with_run_at_waits_and_is_assigned_when_its_time_comes() {
    let root = tempfile::tempdir().unwrap();
    // The sweep is far away: only the queue's timer can make it due.
    let mut hub = Hub::start(
        root.path(),
        &[("AGENTCOM_TIMEOUTS__SWEEP_INTERVAL_S", "600")],
    );
    let _s = Sidecar::start(
        root.path(),
        &hub,
        "solo",
        &[],
        "echo '{\"summary\":\"on time\"}' > \"$AGENTCOM_RESULT_FILE\"",
        "",
    );
    hub.wait_agent("solo", "idle", T);
    let run_at = at_ms_from_now(3_000);
    let task = hub.submit(json!({ "title": "later", "run_at": run_at }));
    let id = task["id"].as_str().unwrap().to_string();
    assert_eq!(task["status"], "queued");
    assert_eq!(task["not_before"], run_at.as_str());
    // An idle agent does not get it before its time.
    let waiting = hub.task(&id);
    assert_eq!(waiting["status"], "queued", "{waiting}");
    assert_eq!(waiting["generation"], 0);
    let done = hub.wait_status(&id, "completed", T);
    let assigned = event_at(&done, "assigned");
    let late = millis_between(&run_at, &assigned);
    assert!(
        (0..1_000).contains(&late),
        "assigned {late} ms after run_at: {done}"
    );
    event_at(&done, "due");
    eprintln!("run_at: assigned {late} ms after its time");

    // Waiting across a restart (kill -9): still waits, then runs.
    let run_at = at_ms_from_now(4_000);
    let id = hub.submit(json!({ "title": "after a crash", "run_at": run_at }))["id"]
        .as_str()
        .unwrap()
        .to_string();
    hub.kill9();
    hub.restart();
    assert_eq!(hub.task(&id)["not_before"], run_at.as_str());
    let done = hub.wait_status(&id, "completed", T);
    let late = millis_between(&run_at, &event_at(&done, "assigned"));
    assert!(
        (0..3_000).contains(&late),
        "assigned {late} ms after run_at: {done}"
    );

    // Bad times are refused with the field named.
    let (status, body) = hub.call(
        "POST",
        "/api/tasks",
        Some(json!({ "title": "x", "run_at": "tomorrow" })),
    );
    assert_eq!(status, 422, "{body}");
    let (status, body) = hub.call(
        "POST",
        "/api/tasks",
        Some(json!({ "title": "x", "run_at": "2999-01-01T00:00:00Z" })),
    );
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("run_at"), "{body}");
}
