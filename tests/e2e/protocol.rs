//! The hub ⇄ sidecar protocol at `/ws`, driven by hand: authentication,
//! the assign/accept/complete/ack cycle, and bad frames that must be
//! answered with `error` while the hub stays up.

use std::time::Duration;

use agentcom_tests::hub::{event_at, events, Hub};
use agentcom_tests::raw::RawSidecar;
use agentcom_tests::wait_until;
use serde_json::json;
use tungstenite::Message;

const T: Duration = Duration::from_secs(5);

#[test]
fn the_upgrade_needs_a_valid_agent_token() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    assert_eq!(
        RawSidecar::connect(&hub.ws_url(), "not-a-token").err(),
        Some(401)
    );
    assert_eq!(
        RawSidecar::connect(&hub.ws_url(), &hub.token).err(),
        Some(401),
        "the admin token is not an agent token"
    );
    let token = hub.add_agent("a1", &[]);
    assert!(RawSidecar::connect(&hub.ws_url(), &token).is_ok());
}

#[test]
fn assign_accept_complete_ack() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    let token = hub.add_agent("a1", &["rust"]);
    let mut ws = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    let welcome = ws.hello("a1");
    assert_eq!(welcome["protocol_version"], 1);
    assert_eq!(welcome["heartbeat_interval_s"], 30);
    let t = hub.submit(json!({ "title": "do it", "needed_capabilities": ["rust"] }));
    let id = t["id"].as_str().unwrap();
    let assign = ws.recv_type("assign", T).expect("assign pushed");
    assert_eq!(assign["task_id"], id);
    assert_eq!(assign["generation"], 1);
    assert_eq!(assign["task"]["title"], "do it");
    assert_eq!(hub.agent("a1")["state"], "assigned");
    ws.send(json!({ "type": "accept", "task_id": id, "generation": 1 }));
    hub.wait_status(id, "working", T);
    assert_eq!(hub.agent("a1")["state"], "working");
    ws.send(json!({ "type": "heartbeat", "state": "working", "task_id": id, "generation": 1 }));
    ws.send(json!({ "type": "complete", "task_id": id, "generation": 1, "result": { "summary": "done", "pr_url": "https://example/pr/1" } }));
    let ack = ws.recv_type("ack", T).expect("ack");
    assert_eq!(
        ack,
        json!({ "type": "ack", "task_id": id, "generation": 1, "of": "complete" })
    );
    // The ack follows the durable record: the task is completed by now.
    let done = hub.task(id);
    assert_eq!(done["status"], "completed");
    assert_eq!(done["result"]["pr_url"], "https://example/pr/1");
    hub.wait_agent("a1", "idle", T);
    // A resend after a lost ack is acked again and changes nothing.
    ws.send(json!({ "type": "complete", "task_id": id, "generation": 1, "result": { "summary": "again" } }));
    assert_eq!(ws.recv_type("ack", T).unwrap()["task_id"], id);
    assert_eq!(hub.task(id)["result"]["summary"], "done");
    assert_eq!(hub.state()["stale_messages"], 0, "a resend is not stale");
}

#[test]
fn a_completion_brings_the_next_task_in_the_same_durable_step() {
    let root = tempfile::tempdir().unwrap();
    // No sweep or retention pass writes meanwhile.
    let hub = Hub::start(
        root.path(),
        &[("AGENTCOM_TIMEOUTS__SWEEP_INTERVAL_S", "600")],
    );
    let token = hub.add_agent("a1", &[]);
    let mut ws = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    ws.hello("a1");
    let first = hub.submit(json!({ "title": "first" }));
    let first = first["id"].as_str().unwrap();
    assert_eq!(ws.recv_type("assign", T).expect("assign")["task_id"], first);
    ws.send(json!({ "type": "accept", "task_id": first, "generation": 1 }));
    hub.wait_status(first, "working", T);
    // The next task waits: its agent is busy (and no one else is idle).
    let next = hub.submit(json!({ "title": "next" }));
    let next = next["id"].as_str().unwrap();
    assert_eq!(hub.task(next)["status"], "queued");
    let syncs = hub.metric("agentcom_store_syncs_total");
    ws.send(json!({ "type": "complete", "task_id": first, "generation": 1, "result": { "summary": "done" } }));
    let ack = ws.recv(T).expect("the ack");
    assert_eq!(
        (ack["type"].as_str(), ack["task_id"].as_str()),
        (Some("ack"), Some(first))
    );
    let assign = ws.recv(T).expect("the next assign, right after the ack");
    assert_eq!(
        (assign["type"].as_str(), assign["task_id"].as_str()),
        (Some("assign"), Some(next))
    );
    // One group made both durable: the completion and the assignment.
    assert_eq!(hub.metric("agentcom_store_syncs_total") - syncs, 1.0);
    assert_eq!(
        event_at(&hub.task(first), "completed"),
        event_at(&hub.task(next), "assigned")
    );
    // The agent went from working to assigned: never idle in between.
    assert_eq!(hub.agent("a1")["state"], "assigned");
    ws.send(json!({ "type": "accept", "task_id": next, "generation": 1 }));
    hub.wait_status(next, "working", T);
}

#[test]
fn a_task_submitted_at_an_idle_agent_is_assigned_in_its_own_durable_step() {
    let root = tempfile::tempdir().unwrap();
    // No sweep or retention pass writes meanwhile.
    let hub = Hub::start(
        root.path(),
        &[("AGENTCOM_TIMEOUTS__SWEEP_INTERVAL_S", "600")],
    );
    let token = hub.add_agent("a1", &["rust"]);
    let mut ws = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    ws.hello("a1");
    let standing = || hub.metric("agentcom_agents_standing");
    // Idle, and the scheduler's claim has left it with the queue.
    wait_until(T, "a1 to stand with the queue", || {
        (standing() == 1.0).then_some(())
    });
    let syncs = hub.metric("agentcom_store_syncs_total");
    let task = hub.submit(json!({ "title": "at once", "needed_capabilities": ["rust"] }));
    let id = task["id"].as_str().unwrap();
    let assign = ws.recv_type("assign", T).expect("assign pushed");
    assert_eq!(assign["task_id"], id);
    assert_eq!(assign["generation"], 1);
    // One group made both durable: the create and the assignment.
    assert_eq!(hub.metric("agentcom_store_syncs_total") - syncs, 1.0);
    assert_eq!(events(&hub.task(id)), ["created", "assigned"]);
    assert_eq!(hub.agent("a1")["state"], "assigned");
    assert_eq!(standing(), 0.0, "given a task, it stands no more");
    ws.send(json!({ "type": "accept", "task_id": id, "generation": 1 }));
    hub.wait_status(id, "working", T);
    ws.send(json!({ "type": "complete", "task_id": id, "generation": 1, "result": { "summary": "done" } }));
    assert_eq!(ws.recv_type("ack", T).unwrap()["task_id"], id);
    // Idle again, it stands again; gone, it is withdrawn, and a task
    // submitted then waits for an agent instead of going to it.
    wait_until(T, "a1 to stand again", || (standing() == 1.0).then_some(()));
    drop(ws);
    hub.wait_agent("a1", "offline", T);
    wait_until(T, "a1 to be withdrawn", || {
        (standing() == 0.0).then_some(())
    });
    let waits = hub.submit(json!({ "title": "waits" }));
    let waits = waits["id"].as_str().unwrap();
    assert_eq!(hub.task(waits)["status"], "queued");
    let mut ws = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    ws.hello("a1");
    assert_eq!(ws.recv_type("assign", T).expect("assign")["task_id"], waits);
}

#[test]
fn bad_frames_get_an_error_and_the_connection_stays() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    let token = hub.add_agent("a1", &[]);
    let mut ws = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    ws.send(json!({ "type": "heartbeat", "state": "idle" }));
    assert_eq!(ws.recv_type("error", T).unwrap()["code"], "hello_first");
    ws.send_raw(Message::text("this is not json")).unwrap();
    assert_eq!(ws.recv_type("error", T).unwrap()["code"], "bad_message");
    ws.send(json!({ "type": "teleport" }));
    let e = ws.recv_type("error", T).unwrap();
    assert_eq!(e["code"], "bad_message");
    assert!(e["message"].as_str().unwrap().contains("teleport"), "{e}");
    ws.send(json!({ "type": "accept", "task_id": "x" }));
    assert!(ws.recv_type("error", T).unwrap()["message"]
        .as_str()
        .unwrap()
        .contains("generation"));
    ws.send_raw(Message::binary(vec![1u8, 2, 3])).unwrap();
    assert_eq!(ws.recv_type("error", T).unwrap()["code"], "bad_message");
    // Still connected: hello works.
    ws.hello("a1");
    hub.wait_agent("a1", "idle", T);
    ws.send(json!({ "type": "hello", "protocol_version": 1, "agent_id": "a1", "capabilities": [], "state": "idle", "current_task": null, "sidecar_version": "x" }));
    assert_eq!(ws.recv_type("error", T).unwrap()["code"], "duplicate_hello");
}

#[test]
fn an_oversized_frame_is_refused_and_the_hub_stays_up() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    let token = hub.add_agent("big", &[]);
    let other_token = hub.add_agent("other", &[]);
    let mut other = RawSidecar::connect(&hub.ws_url(), &other_token).unwrap();
    other.hello("other");
    let mut ws = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    ws.hello("big");
    let huge = format!(
        r#"{{"type":"progress","task_id":"t","generation":1,"note":"{}"}}"#,
        "x".repeat(1024 * 1024 + 10)
    );
    let _ = ws.send_raw(Message::text(huge));
    let e = ws
        .recv_type("error", T)
        .expect("error frame before the close");
    assert_eq!(e["code"], "frame_too_large");
    assert!(ws.closed_within(T));
    // The hub and the other session are fine.
    let (s, _) = hub.raw("GET", "/healthz", None, None);
    assert_eq!(s, 200);
    other.send(json!({ "type": "heartbeat", "state": "idle" }));
    let t = hub.submit(json!({ "title": "still works" }));
    let a = other
        .recv_type("assign", T)
        .expect("the other agent still gets work");
    assert_eq!(a["task_id"], t["id"]);
    // The refused agent reconnects normally.
    let mut again = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    again.hello("big");
}

#[test]
fn hello_must_name_this_agent_and_speak_this_protocol() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    let token = hub.add_agent("me", &[]);
    hub.add_agent("someone-else", &[]);
    let mut ws = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    ws.send(json!({ "type": "hello", "protocol_version": 1, "agent_id": "someone-else", "capabilities": [], "state": "idle", "current_task": null, "sidecar_version": "x" }));
    assert_eq!(ws.recv_type("error", T).unwrap()["code"], "wrong_agent");
    assert!(ws.closed_within(T));
    let mut ws = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    ws.send(json!({ "type": "hello", "protocol_version": 99, "agent_id": "me", "capabilities": [], "state": "idle", "current_task": null, "sidecar_version": "x" }));
    assert_eq!(
        ws.recv_type("error", T).unwrap()["code"],
        "protocol_version"
    );
    assert!(ws.closed_within(T));
    assert_eq!(hub.agent("me")["state"], "offline");
}
