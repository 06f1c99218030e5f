//! The HTTP API against a real hub: status codes, the error shape, auth,
//! pagination, idempotency, agents, and the admin CLI.

use std::process::Command;
use std::time::Duration;

use agentcom_tests::hub::{events, Hub};
use agentcom_tests::pg;
use agentcom_tests::procs::bin;
use agentcom_tests::raw::RawSidecar;
use serde_json::{json, Value};

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[test]
fn errors_have_one_shape_and_the_right_status() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(
        root.path(),
        &[("AGENTCOM_VIEWER_TOKEN", "viewer-token-0123456789")],
    );
    let admin = hub.token.clone();

    // 401: no token, a wrong token.
    let (s, b) = hub.raw("GET", "/api/tasks", None, None);
    assert_error(s, &b, 401, "unauthorized");
    let (s, b) = hub.raw("POST", "/api/tasks", Some("nope"), Some(r#"{"title":"x"}"#));
    assert_error(s, &b, 401, "unauthorized");
    // 403: the viewer may read, not write; an agent token is not for the API.
    let (s, _) = hub.raw("GET", "/api/tasks", Some("viewer-token-0123456789"), None);
    assert_eq!(s, 200);
    let (s, b) = hub.raw(
        "POST",
        "/api/tasks",
        Some("viewer-token-0123456789"),
        Some(r#"{"title":"x"}"#),
    );
    assert_error(s, &b, 403, "forbidden");
    let agent_token = hub.add_agent("a1", &[]);
    let (s, b) = hub.raw("GET", "/api/tasks", Some(&agent_token), None);
    assert_error(s, &b, 403, "forbidden");
    // 400: not JSON, not an object, empty.
    for bad in ["{\"title\":", "[1,2]", ""] {
        let (s, b) = hub.raw("POST", "/api/tasks", Some(&admin), Some(bad));
        assert_error(s, &b, 400, "malformed");
    }
    // 422: fields out of range, unknown fields, wrong types.
    for bad in [
        json!({ "title": "" }),
        json!({ "title": "x".repeat(201) }),
        json!({ "title": "x", "priority": "asap" }),
        json!({ "title": "x", "needs": ["rust"] }),
        json!({ "title": "x", "timeout_s": 0 }),
        json!({ "title": 7 }),
        json!({ "description": "no title" }),
    ] {
        let (s, b) = hub.call("POST", "/api/tasks", Some(bad.clone()));
        assert_error(s, &b, 422, "invalid");
    }
    let (s, b) = hub.call(
        "POST",
        "/api/tasks",
        Some(json!({ "title": "x", "description": "d".repeat(64 * 1024 + 1) })),
    );
    assert_error(s, &b, 422, "invalid");
    // 413: a body far over the limit.
    let huge = format!(
        r#"{{"title":"x","description":"{}"}}"#,
        "d".repeat(300 * 1024)
    );
    let (s, b) = hub.raw("POST", "/api/tasks", Some(&admin), Some(&huge));
    assert_error(s, &b, 413, "too_large");
    // 404: unknown ids and routes.
    for path in ["/api/tasks/NOPE", "/api/agents/nope", "/api/nothing"] {
        let (s, b) = hub.call("GET", path, None);
        assert_error(s, &b, 404, "not_found");
    }
    let (s, b) = hub.call("POST", "/api/tasks/NOPE/cancel", None);
    assert_error(s, &b, 404, "not_found");
    let (s, b) = hub.call("DELETE", "/api/agents/nope", None);
    assert_error(s, &b, 404, "not_found");
    // 409: retry of a queued task; a second agent with the same id.
    let t = hub.submit(json!({ "title": "queued" }));
    let (s, b) = hub.call(
        "POST",
        &format!("/api/tasks/{}/retry", t["id"].as_str().unwrap()),
        None,
    );
    assert_error(s, &b, 409, "conflict");
    let (s, b) = hub.call("POST", "/api/agents", Some(json!({ "id": "a1" })));
    assert_error(s, &b, 409, "conflict");
    let (s, b) = hub.call("POST", "/api/agents", Some(json!({ "id": "Bad Name" })));
    assert_error(s, &b, 422, "invalid");
    // 422 on list parameters.
    let (s, b) = hub.call("GET", "/api/tasks?status=sleeping", None);
    assert_error(s, &b, 422, "invalid");
    let (s, b) = hub.call("GET", "/api/tasks?limit=1001", None);
    assert_error(s, &b, 422, "invalid");
    // Nothing above broke anything.
    let (s, _) = hub.raw("GET", "/healthz", None, None);
    assert_eq!(s, 200);
}

#[test]
fn create_show_list_cancel_retry_and_idempotency() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    let body = json!({
        "title": "Fix the login bug", "description": "see issue 12", "priority": "high",
        "needed_capabilities": ["rust", "git", "rust"],
        "idempotency_key": "issue-12", "max_retries": 1, "timeout_s": 600,
        "context_budget_tokens": 50000, "metadata": { "issue": 12 }
    });
    let (s, t) = hub.call("POST", "/api/tasks", Some(body.clone()));
    assert_eq!(s, 201);
    let id = t["id"].as_str().unwrap().to_string();
    for (k, v) in [
        ("status", json!("queued")),
        ("generation", json!(0)),
        ("attempts", json!(0)),
        ("priority", json!("high")),
        ("max_retries", json!(1)),
        ("timeout_s", json!(600)),
    ] {
        assert_eq!(t[k], v, "{k}");
    }
    assert_eq!(t["needed_capabilities"], json!(["git", "rust"]));
    assert_eq!(t["metadata"]["issue"], 12);
    assert!(t["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        t["created_at"].as_str().unwrap().len(),
        "2026-11-23T10:00:00.123Z".len()
    );
    // A repository the hub does not guard is refused (none are configured here).
    let (s, b) = hub.call(
        "POST",
        "/api/tasks",
        Some(json!({ "title": "x", "repo": "app" })),
    );
    assert_error(s, &b, 422, "invalid");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"app\" is not a repository"),
        "{b}"
    );
    // Same key: 200 with the same task, nothing new.
    let (s, again) = hub.call("POST", "/api/tasks", Some(body));
    assert_eq!(s, 200);
    assert_eq!(again["id"], id.as_str());
    // Show has the history.
    let shown = hub.task(&id);
    assert_eq!(events(&shown), ["created"]);
    assert_eq!(shown["history"][0]["to"], "queued");
    // Pagination, newest first.
    let more: Vec<String> = (0..5)
        .map(|i| {
            hub.submit(json!({ "title": format!("t{i}") }))["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let page1 = hub.ok("GET", "/api/tasks?limit=4", None);
    let ids1: Vec<&str> = page1["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids1,
        [&more[4], &more[3], &more[2], &more[1]].map(|s| s.as_str())
    );
    let cursor = page1["next_cursor"].as_str().unwrap();
    let page2 = hub.ok("GET", &format!("/api/tasks?limit=4&cursor={cursor}"), None);
    let ids2: Vec<&str> = page2["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids2, [more[0].as_str(), id.as_str()]);
    assert!(page2["next_cursor"].is_null());
    // Cancel, cancel again (idempotent), retry revives, filters follow.
    let c = hub.ok("POST", &format!("/api/tasks/{id}/cancel"), None);
    assert_eq!(c["status"], "cancelled");
    assert_eq!(
        hub.ok("POST", &format!("/api/tasks/{id}/cancel"), None)["status"],
        "cancelled"
    );
    assert_eq!(hub.tasks(Some("cancelled")).len(), 1);
    let r = hub.ok("POST", &format!("/api/tasks/{id}/retry"), None);
    assert_eq!(r["status"], "queued");
    assert_eq!(events(&hub.task(&id)), ["created", "cancelled", "revived"]);
    assert_eq!(hub.tasks(Some("queued")).len(), 6);
}

#[test]
fn agents_tokens_are_shown_once_and_revoke_drops_the_connection() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    let (s, created) = hub.call(
        "POST",
        "/api/agents",
        Some(json!({ "id": "loash", "capabilities": ["rust", "git"] })),
    );
    assert_eq!(s, 201);
    let token = created["token"].as_str().unwrap().to_string();
    assert_eq!(created["capabilities"], json!(["git", "rust"]));
    let list = hub.ok("GET", "/api/agents", None);
    assert_eq!(list["agents"][0]["id"], "loash");
    assert_eq!(list["agents"][0]["state"], "offline");
    assert!(
        !list.to_string().contains(&token),
        "the token is never shown again"
    );
    // Only its hash is stored: not in sled's files, nor in any row of the
    // hub's PostgreSQL database (as text, or as bytes shown in hex).
    match hub.store_url() {
        None => {
            let store = std::fs::read_dir(hub.dir.join("data/sled")).unwrap();
            for f in store.flatten() {
                if f.path().is_file() {
                    let bytes = std::fs::read(f.path()).unwrap();
                    assert!(
                        !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                        "token in plain text in {}",
                        f.path().display()
                    );
                }
            }
        }
        Some(url) => {
            let rows = pg::dump_text(url);
            let hex: String = token.bytes().map(|b| format!("{b:02x}")).collect();
            assert!(
                !rows.contains(&token) && !rows.contains(&hex),
                "token in plain text in the database"
            );
        }
    }
    let mut ws = RawSidecar::connect(&hub.ws_url(), &token).expect("agent token opens /ws");
    ws.hello("loash");
    hub.wait_agent("loash", "idle", Duration::from_secs(5));
    hub.ok("DELETE", "/api/agents/loash", None);
    assert!(
        ws.closed_within(Duration::from_secs(5)),
        "revoke drops the connection"
    );
    assert_eq!(
        RawSidecar::connect(&hub.ws_url(), &token).err(),
        Some(401),
        "the token no longer opens /ws"
    );
    assert!(hub.ok("GET", "/api/agents", None)["agents"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn admin_cli_adds_agents_and_manages_tasks() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    let cli = |args: &[&str]| hub.cli(args);
    let config = cli(&[
        "agent",
        "add",
        "loash",
        "--capabilities",
        "rust,git",
        "--state-dir",
        "/tmp/x",
    ]);
    assert!(
        config.contains(&format!("hub_url = \"ws://127.0.0.1:{}/ws\"", hub.port)),
        "{config}"
    );
    assert!(config.contains("token = \"acm_agent_"), "{config}");
    assert!(
        config.contains("capabilities = [\"git\", \"rust\"]"),
        "{config}"
    );
    let listed = cli(&["agent", "list"]);
    assert!(
        listed.contains("loash") && listed.contains("offline"),
        "{listed}"
    );
    let submitted = cli(&[
        "task",
        "submit",
        "--title",
        "From the CLI",
        "--priority",
        "urgent",
        "--needs",
        "rust",
    ]);
    let id = submitted.split_whitespace().next().unwrap().to_string();
    assert!(submitted.contains("queued"), "{submitted}");
    let t = hub.task(&id);
    assert_eq!(t["priority"], "urgent");
    assert_eq!(t["needed_capabilities"], json!(["rust"]));
    assert!(cli(&["task", "list"]).contains(&id));
    let shown: Value = serde_json::from_str(&cli(&["task", "show", &id, "--json"])).unwrap();
    assert_eq!(shown["history"][0]["event"], "created");
    assert!(cli(&["task", "cancel", &id]).contains("cancelled"));
    assert!(cli(&["task", "retry", &id]).contains("queued"));
    assert!(cli(&["agent", "revoke", "loash"]).contains("revoked"));
    // A wrong token is a clear error, not a crash.
    let out = Command::new(bin("agentcom-hub"))
        .args(["task", "list", "--hub", &hub.url])
        .env("AGENTCOM_ADMIN_TOKEN", "wrong")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unauthorized"));
}

#[test]
fn sigterm_stops_cleanly_with_exit_0_and_keeps_everything() {
    let root = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(root.path(), &[]);
    let t = hub.submit(json!({ "title": "keep me" }));
    assert_eq!(hub.terminate(), Some(0), "{}", hub.log());
    hub.restart();
    assert_eq!(hub.task(t["id"].as_str().unwrap())["status"], "queued");
}
