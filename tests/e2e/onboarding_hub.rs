//! The hub's half of the first five minutes, against the real hub over
//! real sockets, with hand-driven sidecars (`raw`): one sidecar per agent
//! (a second installation is refused, the first stays; the same one
//! reconnecting replaces itself), a failing self-test degrades the agent
//! until a heartbeat says it passes, and enrollment (the enrollment
//! token creates an agent and the hub's verification task, which only
//! that agent is given), with `/` sending a browser to the dashboard and
//! the start-up log saying where everything is.

use std::time::Duration;

use agentcom_tests::hub::Hub;
use agentcom_tests::raw::RawSidecar;
use agentcom_tests::wait_until;
use agentcom_tests::wire;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(15);

/// A hello as an idle sidecar, with `extra` fields (instance_id,
/// selftest) merged in.
fn hello_with(agent: &str, extra: Value) -> Value {
    let mut h = json!({
        "type": "hello", "protocol_version": 1, "agent_id": agent, "capabilities": [],
        "state": "idle", "current_task": null, "sidecar_version": "raw-test"
    });
    for (k, v) in extra.as_object().expect("an object") {
        h[k] = v.clone();
    }
    h
}

/// A raw sidecar for `agent` that said hello with `extra` and was
/// welcomed.
fn welcomed(hub: &Hub, token: &str, agent: &str, extra: Value) -> RawSidecar {
    let mut ws = RawSidecar::connect(&hub.ws_url(), token).expect("connects");
    ws.send(hello_with(agent, extra));
    ws.recv_type("welcome", T).expect("welcome");
    ws
}

#[test]
fn a_second_sidecar_for_one_agent_is_refused_and_the_first_stays() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    let token = hub.add_agent("a1", &[]);
    let mut first = welcomed(&hub, &token, "a1", json!({ "instance_id": "inst-a" }));
    hub.wait_agent("a1", "idle", T);

    // Another installation with the same token: refused and closed.
    let mut second =
        RawSidecar::connect(&hub.ws_url(), &token).expect("the upgrade itself is fine");
    second.send(hello_with("a1", json!({ "instance_id": "inst-b" })));
    let refused = second.recv(T).expect("an answer to the hello");
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "agent_in_use", "{refused}");
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains("agent a1 is already connected from another sidecar since")
            && message.contains("agentcom-sidecar join --id OTHER"),
        "{message}"
    );
    assert!(second.closed_within(T), "the refused connection is closed");

    // The first is told, and stays the agent's connection.
    let told = first
        .recv_type("error", T)
        .expect("the connected sidecar hears of it");
    assert_eq!(told["code"], "agent_in_use_elsewhere", "{told}");
    assert!(
        told["message"].as_str().unwrap().contains("inst-b"),
        "{told}"
    );
    let a = hub.agent("a1");
    assert_eq!(
        (a["state"].as_str(), a["connected"].as_bool()),
        (Some("idle"), Some(true))
    );
    let task = hub.submit(json!({ "title": "still mine" }));
    let assign = first
        .recv_type("assign", T)
        .expect("work still comes to the first");
    assert_eq!(assign["task_id"], task["id"]);
    let log = hub.log();
    assert!(
        log.contains("WARN") && log.contains("a second sidecar tried to connect as this agent"),
        "{log}"
    );

    // The same installation reconnecting (its old socket not yet timed
    // out) replaces its own connection, and keeps its attempt.
    let tid = task["id"].as_str().unwrap();
    first.send(json!({ "type": "accept", "task_id": tid, "generation": 1 }));
    hub.wait_status(tid, "working", T);
    let mut again = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    again.send(hello_with(
        "a1",
        json!({ "instance_id": "inst-a", "state": "working",
                "current_task": { "task_id": tid, "generation": 1 } }),
    ));
    again
        .recv_type("welcome", T)
        .expect("the same instance is welcomed");
    assert!(first.closed_within(T), "the old connection is replaced");
    hub.wait_agent("a1", "working", T);
    again.send(json!({ "type": "complete", "task_id": tid, "generation": 1,
        "result": { "summary": "done" } }));
    again.recv_type("ack", T).expect("ack");
    assert_eq!(hub.task(tid)["status"], "completed");
}

#[test]
fn a_failing_selftest_degrades_the_agent_until_a_heartbeat_says_it_passes() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    let token = hub.add_agent("sick", &["rust"]);
    let mut ws = welcomed(
        &hub,
        &token,
        "sick",
        json!({ "instance_id": "inst-s", "selftest": { "ok": false, "failures": [
            { "check": "runner", "detail": "/opt/agent is not executable" },
            { "check": "disk", "detail": "12 MB free in the state dir" }
        ] } }),
    );
    let agent = hub.wait_agent("sick", "degraded", T);
    let reason =
        "self-test failing: runner: /opt/agent is not executable; disk: 12 MB free in the state dir";
    assert_eq!(agent["degraded_reason"], reason, "{agent}");
    assert_eq!(agent["connected"], true);

    let task = hub.submit(json!({ "title": "needs rust", "needed_capabilities": ["rust"] }));
    let id = task["id"].as_str().unwrap();
    let why = hub.ok("GET", &format!("/api/tasks/{id}/explain"), None);
    assert_eq!(why["status"], "queued", "{why}");
    let reasons: Vec<&str> = why["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        reasons.contains(&"Agent sick is degraded: its sidecar's self-test fails (runner: /opt/agent is not executable; disk: 12 MB free in the state dir); it takes work again once a self-test passes."),
        "{reasons:?}"
    );
    assert_eq!(hub.task(id)["status"], "queued");

    // A heartbeat without a status changes nothing; one that passes ends it.
    ws.send(json!({ "type": "heartbeat", "state": "idle" }));
    ws.send(json!({ "type": "heartbeat", "state": "idle", "selftest": { "ok": true } }));
    let assign = ws
        .recv_type("assign", T)
        .expect("the task comes once it passes");
    assert_eq!(assign["task_id"], id);
    let agent = hub.wait_agent("sick", "assigned", T);
    assert!(agent["degraded_reason"].is_null(), "{agent}");
}

#[test]
fn enrollment_creates_the_agent_and_a_verification_task_only_it_receives() {
    let root = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(
        root.path(),
        &[("AGENTCOM_VIEWER_TOKEN", "viewer-token-0123456789")],
    );
    let data = hub.dir.join("data");
    let enroll_file = data.join("enroll.token");
    let enroll =
        std::fs::read_to_string(&enroll_file).expect("enroll.token written on first start");
    let enroll = enroll.trim();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&enroll_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    // The start-up log says where to go and where the tokens are.
    let log = hub.log();
    for line in [
        format!("dashboard: http://127.0.0.1:{}/dashboard", hub.port),
        format!("admin token: {}", data.join("admin.token").display()),
        format!("enrollment token: {}", enroll_file.display()),
    ] {
        assert!(log.contains(&line), "{line:?} not in the log:\n{log}");
    }
    assert!(
        !log.contains(enroll) && !log.contains(hub.token.as_str()),
        "no token in the log"
    );

    // `/` sends a browser to the dashboard.
    let root_reply = wire::request(hub.port, "GET", "/", &[], None);
    assert_eq!(root_reply.status, 307);
    assert_eq!(root_reply.header("location"), Some("/dashboard"));

    // Another idle agent able to do anything the verification needs.
    let other_token = hub.add_agent("other", &["rust"]);
    let mut other = welcomed(&hub, &other_token, "other", json!({}));
    hub.wait_agent("other", "idle", T);

    let body = json!({ "id": "new1", "capabilities": ["rust"] }).to_string();
    let enroll_as =
        |token: Option<&str>, body: &str| hub.raw("POST", "/api/agents/enroll", token, Some(body));
    assert_eq!(enroll_as(None, &body).0, 401);
    assert_eq!(enroll_as(Some("acm_enroll_wrong0123456789"), &body).0, 401);
    assert_eq!(enroll_as(Some("viewer-token-0123456789"), &body).0, 403);
    assert_eq!(
        enroll_as(Some(&other_token), &body).0,
        403,
        "an agent token"
    );
    let (status, bad) = enroll_as(
        Some(enroll),
        &json!({ "id": "Bad Id", "capabilities": [] }).to_string(),
    );
    assert_eq!(status, 422, "{bad}");
    let (status, bad) = enroll_as(
        Some(enroll),
        &json!({ "id": "ok", "capabilities": ["a,b"] }).to_string(),
    );
    assert_eq!(status, 422, "{bad}");
    // The enrollment token opens nothing else.
    assert_eq!(hub.raw("GET", "/api/tasks", Some(enroll), None).0, 403);
    assert_eq!(
        hub.raw("POST", "/api/agents", Some(enroll), Some(&body)).0,
        403
    );

    let (status, enrolled) = enroll_as(Some(enroll), &body);
    assert_eq!(status, 201, "{enrolled}");
    assert_eq!(enrolled["id"], "new1");
    assert_eq!(enrolled["capabilities"], json!(["rust"]));
    let agent_token = enrolled["token"].as_str().unwrap().to_string();
    let vid = enrolled["verification_task"].as_str().unwrap().to_string();
    let (status, again) = enroll_as(Some(enroll), &body);
    assert_eq!(status, 409, "{again}");
    assert!(
        again["error"]["message"].as_str().unwrap().contains(
            "revoke it first with `agentcom-hub agent revoke new1`, or choose another --id"
        ),
        "{again}"
    );

    // The verification task is the hub's own, queued for new1 only.
    let task = hub.task(&vid);
    assert_eq!(task["kind"], "verify", "{task}");
    assert_eq!(task["for_agent"], "new1");
    assert_eq!(task["title"], "Verify agent new1");
    assert_eq!(task["priority"], "urgent");
    assert_eq!(
        (task["timeout_s"].as_u64(), task["max_retries"].as_u64()),
        (Some(120), Some(5))
    );
    assert_eq!(task["status"], "queued");
    let v = hub.raw("GET", "/api/agents/new1/verification", Some(enroll), None);
    assert_eq!(v.0, 200, "{}", v.1);
    assert_eq!(
        (
            v.1["task_id"].as_str(),
            v.1["status"].as_str(),
            v.1["connected"].as_bool(),
            v.1["agent_state"].as_str()
        ),
        (
            Some(vid.as_str()),
            Some("queued"),
            Some(false),
            Some("offline")
        )
    );
    let why = hub.ok("GET", &format!("/api/tasks/{vid}/explain"), None);
    let reasons = why["reasons"].to_string();
    assert!(
        reasons.contains("Only agent new1 may take it")
            && reasons.contains("Agent new1 is offline"),
        "{reasons}"
    );
    assert_eq!(
        hub.raw("GET", "/api/agents/other/verification", Some(enroll), None)
            .0,
        404
    );
    assert_eq!(
        hub.raw("GET", "/api/agents/nobody/verification", Some(enroll), None)
            .0,
        404
    );
    assert_eq!(
        hub.raw(
            "GET",
            "/api/agents/new1/verification",
            Some("viewer-token-0123456789"),
            None
        )
        .0,
        200
    );

    // The enrolled agent's sidecar connects with its new token: the
    // verification comes to it, and it answers.
    let mut new1 = welcomed(
        &hub,
        &agent_token,
        "new1",
        json!({ "instance_id": "inst-n" }),
    );
    let assign = new1.recv_type("assign", T).expect("the verification task");
    assert_eq!(assign["task_id"], vid.as_str());
    assert_eq!(assign["task"]["kind"], "verify");
    new1.send(json!({ "type": "accept", "task_id": vid, "generation": 1 }));
    new1.send(json!({ "type": "complete", "task_id": vid, "generation": 1,
        "result": { "summary": "self-test passed: 6 checks" } }));
    new1.recv_type("ack", T).expect("ack");
    let v = wait_until(T, "the verification to be completed", || {
        let v = hub
            .raw("GET", "/api/agents/new1/verification", Some(enroll), None)
            .1;
        (v["status"] == "completed").then_some(v)
    });
    assert_eq!(v["result"]["summary"], "self-test passed: 6 checks");
    assert_eq!(
        (v["connected"].as_bool(), v["agent_state"].as_str()),
        (Some(true), Some("idle"))
    );
    // Only new1 ever had it; the other idle agent never heard of it.
    let task = hub.task(&vid);
    assert_eq!(
        (task["generation"].as_u64(), task["assigned_to"].as_str()),
        (Some(1), Some("new1"))
    );
    assert!(other
        .recv_type("assign", Duration::from_millis(300))
        .is_none());

    // Submitters cannot make verify tasks, and for_agent names an agent.
    let (status, e) = hub.call(
        "POST",
        "/api/tasks",
        Some(json!({ "title": "v", "kind": "verify" })),
    );
    assert_eq!(status, 422, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("verify tasks are the hub's own"),
        "{e}"
    );
    let (status, _) = hub.call(
        "POST",
        "/api/tasks",
        Some(json!({ "title": "v", "for_agent": "Not/An/Id" })),
    );
    assert_eq!(status, 422);

    // The admin token enrolls too; revoking an agent cancels a
    // verification still to run.
    let (status, second) = hub.raw(
        "POST",
        "/api/agents/enroll",
        Some(&hub.token),
        Some(&json!({ "id": "new2", "capabilities": [] }).to_string()),
    );
    assert_eq!(status, 201, "{second}");
    let v2 = second["verification_task"].as_str().unwrap().to_string();
    hub.ok("DELETE", "/api/agents/new2", None);
    assert_eq!(hub.task(&v2)["status"], "cancelled");

    // Kept across a restart: the verification, the enrollment token.
    drop(new1);
    drop(other);
    hub.kill9();
    hub.restart();
    let v = hub.raw("GET", "/api/agents/new1/verification", Some(enroll), None);
    assert_eq!(
        (v.0, v.1["status"].as_str()),
        (200, Some("completed")),
        "{}",
        v.1
    );
    assert_eq!(
        std::fs::read_to_string(&enroll_file).unwrap().trim(),
        enroll
    );
}
