//! Operator controls against the real binaries: pausing (draining) an
//! agent and pausing a priority lane, through the API and the admin CLI,
//! kept across a hub `kill -9`; viewers may not use them.

use std::path::Path;
use std::time::Duration;

use agentcom_tests::hub::Hub;
use agentcom_tests::sidecar::Sidecar;
use agentcom_tests::sse::SseClient;
use agentcom_tests::wait_until;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);
const VIEWER: &str = "viewer-token-0123456789";

fn fast() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AGENTCOM_TIMEOUTS__HEARTBEAT_TIMEOUT_S", "3"),
        ("AGENTCOM_TIMEOUTS__SWEEP_INTERVAL_S", "1"),
        ("AGENTCOM_VIEWER_TOKEN", VIEWER),
    ]
}

fn id(t: &Value) -> String {
    t["id"].as_str().unwrap().to_string()
}

/// Succeeds at once, except the title `hold`, which waits for
/// `<root>/release` first.
fn runner(root: &Path) -> String {
    format!(
        r#"if [ "$(sed -n 's/^  "title": "\(.*\)",$/\1/p' "$AGENTCOM_TASK_FILE")" = hold ]; then
  while [ ! -f {root}/release ]; do sleep 0.1; done
fi
echo '{{"summary":"done"}}' > "$AGENTCOM_RESULT_FILE""#,
        root = root.display()
    )
}

fn paused_lanes(hub: &Hub) -> Value {
    hub.state()["paused_lanes"].clone()
}

/// The first event named `name` whose data satisfies `want` (among the
/// next 500).
fn sse_find(sse: &mut SseClient, name: &str, want: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..500 {
        let e = sse.next().expect("the event stream ended");
        if e.event == name {
            let data: Value = serde_json::from_str(&e.data).unwrap();
            if want(&data) {
                return data;
            }
        }
    }
    panic!("no {name} event as wanted");
}

#[test]
fn a_drained_agent_finishes_its_task_and_takes_no_other() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let hub = Hub::start(r, &fast());
    let run = runner(r);
    let _s1 = Sidecar::start(r, &hub, "a1", &[], &run, "");
    let _s2 = Sidecar::start(r, &hub, "a2", &[], &run, "");
    hub.wait_agent("a1", "idle", T);
    hub.wait_agent("a2", "idle", T);

    let hold = id(&hub.submit(json!({ "title": "hold" })));
    let held = hub.wait_status(&hold, "working", T);
    let drained = held["assigned_to"].as_str().unwrap().to_string();
    let other = if drained == "a1" { "a2" } else { "a1" };

    let mut sse = SseClient::connect(&hub, None);
    // Viewers may not; unknown agents are 404; pausing twice is fine.
    let path = format!("/api/agents/{drained}/pause");
    let (status, _) = hub.raw("POST", &path, Some(VIEWER), None);
    assert_eq!(status, 403);
    let (status, _) = hub.call("POST", "/api/agents/nobody/pause", None);
    assert_eq!(status, 404);
    for _ in 0..2 {
        let v = hub.ok("POST", &path, None);
        assert_eq!(v["paused"], true, "{v}");
    }
    let a = wait_until(T, "the agent to show paused", || {
        let a = hub.agent(&drained);
        (a["paused"] == true).then_some(a)
    });
    assert_eq!(a["state"], "working", "its state stays derived: {a}");
    // The event bus says so (the dashboard updates live).
    sse_find(&mut sse, "agent", |d| {
        d["agent"]["id"] == drained.as_str() && d["agent"]["paused"] == true
    });
    assert!(hub.metrics().contains("agentcom_agents_paused 1"));

    // Queued work goes to the other agent while the drained one works on.
    let quick: Vec<String> = (0..3)
        .map(|i| id(&hub.submit(json!({ "title": format!("quick {i}") }))))
        .collect();
    for q in &quick {
        let t = hub.wait_status(q, "completed", T);
        assert_eq!(t["assigned_to"], other, "{t}");
    }
    assert_eq!(hub.task(&hold)["status"], "working");

    // It finishes its task, and then takes no other.
    std::fs::write(r.join("release"), "").unwrap();
    hub.wait_status(&hold, "completed", T);
    let a = hub.wait_agent(&drained, "idle", T);
    assert_eq!(a["paused"], true);
    let more: Vec<String> = (0..3)
        .map(|i| id(&hub.submit(json!({ "title": format!("more {i}") }))))
        .collect();
    for q in &more {
        let t = hub.wait_status(q, "completed", T);
        assert_eq!(t["assigned_to"], other, "{t}");
    }

    // With the other one paused too, nothing runs; resuming gives the
    // drained agent work again.
    hub.ok("POST", &format!("/api/agents/{other}/pause"), None);
    wait_until(T, "the other agent to show paused", || {
        (hub.agent(other)["paused"] == true).then_some(())
    });
    let last = id(&hub.submit(json!({ "title": "last" })));
    assert_eq!(hub.task(&last)["status"], "queued");
    let (status, _) = hub.raw(
        "POST",
        &format!("/api/agents/{drained}/resume"),
        Some(VIEWER),
        None,
    );
    assert_eq!(status, 403);
    let v = hub.ok("POST", &format!("/api/agents/{drained}/resume"), None);
    assert_eq!(v["paused"], false);
    let t = hub.wait_status(&last, "completed", T);
    assert_eq!(t["assigned_to"], drained.as_str(), "{t}");
    assert_eq!(hub.agent(&drained)["paused"], false);
}

#[test]
fn a_paused_lane_holds_its_tasks_while_other_lanes_flow() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let hub = Hub::start(r, &fast());
    let _s = Sidecar::start(r, &hub, "a1", &[], &runner(r), "");
    hub.wait_agent("a1", "idle", T);
    let mut sse = SseClient::connect(&hub, None);

    let (status, _) = hub.raw("POST", "/api/lanes/urgent/pause", Some(VIEWER), None);
    assert_eq!(status, 403);
    let (status, v) = hub.call("POST", "/api/lanes/bogus/pause", None);
    assert_eq!(status, 422, "{v}");
    for _ in 0..2 {
        let v = hub.ok("POST", "/api/lanes/urgent/pause", None);
        assert_eq!(v["paused_lanes"], json!(["urgent"]), "{v}");
    }
    assert_eq!(paused_lanes(&hub), json!(["urgent"]));
    sse_find(&mut sse, "lanes", |d| {
        d["paused_lanes"] == json!(["urgent"])
    });
    assert!(hub
        .metrics()
        .contains("agentcom_lanes_paused{lane=\"urgent\"} 1"));

    let urgent: Vec<String> = (0..2)
        .map(|i| id(&hub.submit(json!({ "title": format!("urgent {i}"), "priority": "urgent" }))))
        .collect();
    let low: Vec<String> = (0..2)
        .map(|i| id(&hub.submit(json!({ "title": format!("low {i}"), "priority": "low" }))))
        .collect();
    // Low tasks, served after urgent ones, run; the urgent ones wait.
    for t in &low {
        hub.wait_status(t, "completed", T);
    }
    for t in &urgent {
        assert_eq!(hub.task(t)["status"], "queued");
    }

    let v = hub.ok("POST", "/api/lanes/urgent/resume", None);
    assert_eq!(v["paused_lanes"], json!([]), "{v}");
    for t in &urgent {
        hub.wait_status(t, "completed", T);
    }
    assert_eq!(paused_lanes(&hub), json!([]));
}

#[test]
fn pauses_set_by_the_cli_survive_a_hub_kill_9() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let mut hub = Hub::start(r, &fast());
    let _s = Sidecar::start(r, &hub, "a1", &[], &runner(r), "");
    hub.wait_agent("a1", "idle", T);

    let out = hub.cli(&["agent", "pause", "a1"]);
    assert!(out.contains("paused a1"), "{out}");
    let out = hub.cli(&["lane", "pause", "low"]);
    assert!(out.contains("paused lane low"), "{out}");
    assert!(out.contains("paused lanes: low"), "{out}");
    let list = hub.cli(&["agent", "list"]);
    assert!(list.contains("idle,paused"), "{list}");

    // Both were durable when the CLI was answered.
    hub.kill9();
    hub.restart();
    assert_eq!(paused_lanes(&hub), json!(["low"]));
    assert_eq!(hub.agent("a1")["paused"], true);
    hub.wait_agent("a1", "idle", T);

    let low = id(&hub.submit(json!({ "title": "low", "priority": "low" })));
    let normal = id(&hub.submit(json!({ "title": "normal" })));
    assert_eq!(hub.task(&normal)["status"], "queued");
    let out = hub.cli(&["agent", "resume", "a1"]);
    assert!(out.contains("resumed a1"), "{out}");
    // The agent works again, but not on the paused lane.
    hub.wait_status(&normal, "completed", T);
    assert_eq!(hub.task(&low)["status"], "queued");
    let out = hub.cli(&["lane", "resume", "low"]);
    assert!(out.contains("paused lanes: none"), "{out}");
    hub.wait_status(&low, "completed", T);

    // Resumed is kept too.
    hub.kill9();
    hub.restart();
    assert_eq!(paused_lanes(&hub), json!([]));
    assert_eq!(hub.agent("a1")["paused"], false);
}

fn sign_in(b: &mut agentcom_tests::browser::Browser, token: &str) {
    b.eval(&format!(
        "document.querySelector('#token').value = {token:?}; document.querySelector('#sign-in-form').requestSubmit(); true"
    ));
    b.wait_for("!document.querySelector('#app').hidden && document.querySelector('#live-status').classList.contains('on')", T);
}

#[test]
fn the_dashboard_pauses_and_resumes_an_agent_and_a_lane() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let hub = Hub::start(r, &fast());
    let _s = Sidecar::start(r, &hub, "a1", &[], &runner(r), "");
    hub.wait_agent("a1", "idle", T);

    let mut b = agentcom_tests::browser::Browser::launch(r, 1400, 1000);
    b.goto(&format!("{}/dashboard", hub.url));
    b.wait_for("!document.querySelector('#sign-in').hidden", T);
    sign_in(&mut b, &hub.token);
    let agent = "document.querySelector('[data-agent=\"a1\"]')";
    let lane = "document.querySelector('[data-lane-control=\"low\"]')";
    b.wait_for(&format!("{agent}?.dataset.state === 'idle'"), T);

    b.eval(&format!(
        "{agent}.querySelector('button[data-action=\"pause\"]').click(); true"
    ));
    b.wait_for(&format!("{agent}.dataset.paused === 'true' && !!{agent}.querySelector('button[data-action=\"resume\"]')"), T);
    assert_eq!(hub.agent("a1")["paused"], true);
    b.eval(&format!(
        "{lane}.querySelector('button[data-action=\"pause\"]').click(); true"
    ));
    b.wait_for(
        &format!("!!{lane}.querySelector('button[data-action=\"resume\"]')"),
        T,
    );
    assert_eq!(paused_lanes(&hub), json!(["low"]));

    // A change made elsewhere shows up live (the event bus).
    hub.ok("POST", "/api/lanes/urgent/pause", None);
    b.wait_for(
        "!!document.querySelector('[data-lane-control=\"urgent\"] button[data-action=\"resume\"]')",
        T,
    );

    // A viewer sees them and cannot press them.
    b.eval("document.querySelector('#sign-out').click(); true");
    b.wait_for("!document.querySelector('#sign-in').hidden", T);
    sign_in(&mut b, VIEWER);
    b.wait_for(
        &format!("!!{agent}?.querySelector('button[data-action=\"resume\"]')"),
        T,
    );
    assert_eq!(
        b.eval(&format!(
            "{agent}.querySelector('button[data-action=\"resume\"]').disabled"
        )),
        json!(true)
    );
    assert_eq!(
        b.eval(&format!("{lane}.querySelector('button').disabled")),
        json!(true)
    );
    b.eval("document.querySelector('#sign-out').click(); true");
    b.wait_for("!document.querySelector('#sign-in').hidden", T);

    // The admin resumes both from the page.
    sign_in(&mut b, &hub.token);
    b.wait_for(
        &format!("!!{agent}?.querySelector('button[data-action=\"resume\"]')"),
        T,
    );
    b.eval(&format!(
        "{agent}.querySelector('button[data-action=\"resume\"]').click(); true"
    ));
    b.wait_for(&format!("{agent}.dataset.paused === 'false'"), T);
    b.eval(&format!(
        "{lane}.querySelector('button[data-action=\"resume\"]').click(); true"
    ));
    b.wait_for(
        &format!("!!{lane}.querySelector('button[data-action=\"pause\"]')"),
        T,
    );
    assert_eq!(hub.agent("a1")["paused"], false);
    assert_eq!(paused_lanes(&hub), json!(["urgent"]));
}
