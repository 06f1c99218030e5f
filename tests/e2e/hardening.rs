//! The hub under agent-sized and hostile input, against the real binary:
//! each test reproduces a finding of the hardening review and shows it
//! fixed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agentcom_tests::hub::Hub;
use agentcom_tests::raw::quick_agent;
use agentcom_tests::wait_until;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

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
