//! The hub under agent-sized and hostile input, against the real binary:
//! each test reproduces a finding of the hardening review and shows it
//! fixed.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agentcom_tests::hub::Hub;
use agentcom_tests::raw::{quick_agent, RawSidecar};
use agentcom_tests::wait_until;
use agentcom_tests::wire;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);
/// For answers that come at once (a frame, a close).
const SOON: Duration = Duration::from_secs(5);

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Two connected agents: `holder` (with `capability`) working on a task
/// only it can take, and `other`; the task's id.
fn holder_and_other(hub: &Hub, capability: &str) -> (RawSidecar, RawSidecar, String) {
    let holder_token = hub.add_agent("holder", &[capability]);
    let other_token = hub.add_agent("other", &[]);
    let mut holder = RawSidecar::connect(&hub.ws_url(), &holder_token).unwrap();
    holder.hello("holder");
    let mut other = RawSidecar::connect(&hub.ws_url(), &other_token).unwrap();
    other.hello("other");
    hub.wait_agent("other", "idle", T);
    let id = hold_a_task(hub, &mut holder, capability);
    (holder, other, id)
}

/// Give an agent an attempt: submit a task only it can take, accept it.
fn hold_a_task(hub: &Hub, ws: &mut RawSidecar, capability: &str) -> String {
    let t = hub.submit(json!({ "title": "held", "needed_capabilities": [capability] }));
    let id = t["id"].as_str().unwrap().to_string();
    let a = ws.recv_type("assign", SOON).expect("assign");
    assert_eq!(a["task_id"], id.as_str());
    ws.send(json!({ "type": "accept", "task_id": id, "generation": 1 }));
    hub.wait_status(&id, "working", T);
    id
}

/// Finding 1: tasks with the largest allowed fields (a 64 KiB description
/// and 16 KiB of metadata), created by several clients while agents
/// complete them, made the hub exit (code 70) within ~100 creates: its
/// sync opened sled's blob files while sled removed them.
#[test]
fn thousands_of_largest_tasks_while_agents_complete_them_never_stop_the_hub() {
    let root = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(root.path(), &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let agents: Vec<_> = (0..3)
        .map(|i| {
            let id = format!("quick{i}");
            let token = hub.add_agent(&id, &[]);
            quick_agent(
                &hub.ws_url(),
                &token,
                &id,
                json!({ "summary": "done" }),
                stop.clone(),
            )
        })
        .collect();
    for i in 0..3 {
        hub.wait_agent(&format!("quick{i}"), "idle", T);
    }
    let description = "d".repeat(64 * 1024);
    // As much metadata as allowed: 16 KiB of JSON.
    let metadata: serde_json::Map<String, Value> = (0..16)
        .map(|k| (format!("k{k:02}"), Value::String("m".repeat(1010))))
        .collect();
    assert!(serde_json::to_vec(&metadata).unwrap().len() <= 16 * 1024);
    let (clients, per_client) = (4, 500);
    let created = Arc::new(AtomicUsize::new(0));
    std::thread::scope(|s| {
        for c in 0..clients {
            let (hub, description, metadata, created) = (&hub, &description, &metadata, &created);
            s.spawn(move || {
                for i in 0..per_client {
                    let (status, body) = hub.call(
                        "POST",
                        "/api/tasks",
                        Some(
                            json!({ "title": format!("big {c}-{i}"), "description": description,
                            "metadata": metadata }),
                        ),
                    );
                    assert_eq!(status, 201, "create {c}-{i}: {body}");
                    created.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let total = clients * per_client;
    assert_eq!(created.load(Ordering::Relaxed), total);
    wait_until(
        Duration::from_secs(120),
        "every big task to complete",
        || (hub.state()["tasks"]["completed"] == total).then_some(()),
    );
    stop.store(true, Ordering::Relaxed);
    let done: usize = agents.into_iter().map(|a| a.join().unwrap()).sum();
    assert_eq!(done, total, "each task completed once");
    assert!(hub.running(), "the hub is still running:\n{}", hub.log());
    let one = hub.tasks(Some("completed"));
    assert!(one
        .iter()
        .all(|t| t["description"].as_str().map(str::len) == Some(64 * 1024)));
}

/// Finding 9: an agent wrote unbounded text into another agent's task by
/// sending stale reports (60 of 200 KB made its GET 11 MB).
#[test]
fn stale_reports_from_another_agent_keep_a_task_small() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    let (_holder, mut other, id) = holder_and_other(&hub, "s");
    let error = "e".repeat(200 * 1000);
    for _ in 0..60 {
        other.send(json!({ "type": "fail", "task_id": id, "generation": 1, "error": error, "retryable": true }));
        other.recv_type("ack", T).expect("a stale report is acked");
    }
    let (status, _) = hub.call("GET", &format!("/api/tasks/{id}"), None);
    assert_eq!(status, 200);
    let text = wire::request(
        hub.port,
        "GET",
        &format!("/api/tasks/{id}"),
        &[("Authorization", &format!("Bearer {}", hub.token))],
        None,
    )
    .body;
    assert!(
        text.len() < 64 * 1024,
        "the task's GET is {} bytes",
        text.len()
    );
    let t = hub.task(&id);
    assert_eq!(t["status"], "working");
    assert_eq!(hub.state()["stale_messages"], 60);
}

/// Finding 11: `admin.token` ended up 0644 when a stale `admin.tmp` existed.
#[test]
fn a_stale_admin_tmp_does_not_make_the_admin_token_readable() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("hub").join("data");
    std::fs::create_dir_all(&data).unwrap();
    let tmp = data.join("admin.tmp");
    std::fs::write(&tmp, "stale\n").unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    let hub = Hub::start(root.path(), &[]);
    assert_eq!(mode(&data.join("admin.token")), 0o600);
    assert_eq!(hub.raw("GET", "/api/state", Some(&hub.token), None).0, 200);
}

/// Finding 11: an idempotency key reused with a different body silently
/// returned the first task; it is a conflict.
#[test]
fn an_idempotency_key_reused_with_another_body_is_a_conflict() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    let first = hub.submit(json!({ "title": "once", "idempotency_key": "k1" }));
    let (s, again) = hub.call(
        "POST",
        "/api/tasks",
        Some(json!({ "title": "once", "idempotency_key": "k1" })),
    );
    assert_eq!((s, &again["id"]), (200, &first["id"]));
    let (s, b) = hub.call(
        "POST",
        "/api/tasks",
        Some(json!({ "title": "other", "idempotency_key": "k1" })),
    );
    assert_eq!(s, 409, "{b}");
    assert_eq!(b["error"]["code"], "conflict");
    assert_eq!(hub.tasks(None).len(), 1);
}
