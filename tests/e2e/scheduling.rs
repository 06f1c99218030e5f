//! Scheduled tasks against the real binaries: a task with `run_at` waits,
//! `queued` with `not_before`, and is assigned when its time comes — by
//! the queue's own timer, not a sweep — also after a hub restart.

use std::time::Duration;

use agentcom_tests::hub::{event_at, millis_between, Hub};
use agentcom_tests::sidecar::Sidecar;
use serde_json::json;

const T: Duration = Duration::from_secs(20);

fn at_ms_from_now(ms: i64) -> String {
    agentcom_protocol::Timestamp::now()
        .plus_millis(ms)
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

fn reasons(hub: &Hub, id: &str) -> Vec<String> {
    let why = hub.ok("GET", &format!("/api/tasks/{id}/explain"), None);
    why["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn explain_names_what_holds_a_task() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let hub = Hub::start(r, &[]);
    hub.add_agent("gone", &["gpu"]); // never connects
    let _busy = Sidecar::start(
        r,
        &hub,
        "busy",
        &["rust"],
        &format!(
            "while [ ! -f {}/release ]; do sleep 0.05; done",
            r.display()
        ),
        "",
    );
    hub.wait_agent("busy", "idle", T);
    let first = hub.submit(json!({ "title": "first", "needed_capabilities": ["rust"] }))["id"]
        .as_str()
        .unwrap()
        .to_string();
    hub.wait_status(&first, "working", T);
    assert_eq!(
        reasons(&hub, &first),
        ["It is working on agent busy (attempt 1)."]
    );

    let second = hub.submit(json!({ "title": "second", "needed_capabilities": ["rust"] }))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let why = reasons(&hub, &second);
    assert_eq!(
        why,
        [
            format!("Agent busy is busy with task {first}."),
            "In the normal lane, 0 tasks wait ahead of it, and 0 in lanes served before.".into()
        ]
    );
    let gpu = hub.submit(json!({ "title": "render", "needed_capabilities": ["gpu"] }))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let why = reasons(&hub, &gpu);
    assert!(why[0].starts_with("Agent gone is offline"), "{why:?}");
    let cuda = hub.submit(json!({ "title": "train", "needed_capabilities": ["cuda"] }))["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(reasons(&hub, &cuda)[0], "No agent has capability cuda.");
    // The CLI submits scheduled tasks and says the same as the API.
    let later = agentcom_protocol::Timestamp::now()
        .plus_millis(3_600_000)
        .to_string();
    let submitted = hub.cli(&["task", "submit", "--title", "nightly", "--run-at", &later]);
    let nightly = submitted.split_whitespace().next().unwrap().to_string();
    assert_eq!(hub.task(&nightly)["not_before"], later.as_str());
    assert!(reasons(&hub, &nightly)[0].starts_with(&format!("It waits until {later}")));
    // The CLI says the same.
    let out = hub.cli(&["task", "why", &cuda]);
    assert!(out.contains(&format!("{cuda} is queued.")), "{out}");
    assert!(out.contains("- No agent has capability cuda."), "{out}");
    let (status, _) = hub.call("GET", "/api/tasks/NOPE/explain", None);
    assert_eq!(status, 404);
    std::fs::write(r.join("release"), "").unwrap();
    hub.wait_status(&second, "completed", T);
}
