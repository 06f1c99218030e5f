//! Memory follows the live work, not the archive: finished tasks are
//! served from the store, lists carry no heavy fields unless asked,
//! history comes in pages, and retention deletes what is old enough —
//! against the real hub binary.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agentcom_tests::hub::{events, Hub};
use agentcom_tests::raw::quick_agent;
use agentcom_tests::wait_until;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

/// The hub process's resident memory, in KiB.
fn rss_kib(hub: &Hub) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", hub.pid().unwrap())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Submit `n` tasks with a description of `size` bytes from 4 clients and
/// have 4 fake agents (named after `round`) complete them all.
fn run_big_tasks(hub: &Hub, n: usize, size: usize, round: &str) {
    let stop = Arc::new(AtomicBool::new(false));
    let already = hub.state()["tasks"]["completed"].as_u64().unwrap() as usize;
    let agents: Vec<_> = (0..4)
        .map(|i| {
            let id = format!("quick-{round}{i}");
            let token = hub.add_agent(&id, &[]);
            quick_agent(
                &hub.ws_url(),
                &token,
                &id,
                json!({ "summary": "ok" }),
                stop.clone(),
            )
        })
        .collect();
    let description = "d".repeat(size);
    std::thread::scope(|s| {
        for c in 0..4 {
            let description = &description;
            s.spawn(move || {
                for i in 0..n / 4 {
                    hub.submit(
                        json!({ "title": format!("big {c}-{i}"), "description": description }),
                    );
                }
            });
        }
    });
    wait_until(Duration::from_secs(120), "every task to complete", || {
        (hub.state()["tasks"]["completed"] == already + n).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    let done: usize = agents.into_iter().map(|a| a.join().unwrap()).sum();
    assert_eq!(done, n);
}

/// Finding 10: ~100 KB of hub memory per finished task with a 30 KB
/// description (every task was kept in memory twice, with its
/// description), and 8 concurrent `?limit=1000` lists added 277 MiB.
#[test]
fn finished_tasks_live_in_the_store_and_lists_carry_no_descriptions() {
    let root = tempfile::tempdir().unwrap();
    // A small page cache and event ring (bounded on their own), so that
    // what the hub keeps per task shows.
    let hub = Hub::start(
        root.path(),
        &[
            ("AGENTCOM_STORE__CACHE_MB", "8"),
            ("AGENTCOM_EVENTS__REPLAY", "100"),
        ],
    );
    // A first round warms the allocator and the page cache up; the second
    // shows what each further finished task costs.
    let n = 1000;
    run_big_tasks(&hub, n, 30 * 1024, "a");
    let before = rss_kib(&hub);
    run_big_tasks(&hub, n, 30 * 1024, "b");
    let after = rss_kib(&hub);
    let per_task = (after.saturating_sub(before) * 1024) / n as u64;
    eprintln!(
        "hub RSS {before} KiB → {after} KiB over {n} more finished 30 KB tasks: {per_task} B/task"
    );
    // Those descriptions are 30 MB (the hub used to keep each twice, over
    // 60 KB per task): the memory kept per finished task is now a fraction
    // of one description.
    assert!(
        per_task < 20 * 1024,
        "{per_task} bytes of hub memory per finished task"
    );

    // Lists: heads only unless asked; 8 clients listing 1000 at once.
    let page = hub.ok("GET", "/api/tasks?limit=1000&status=completed", None);
    let tasks = page["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1000);
    assert!(tasks
        .iter()
        .all(|t| t.get("description").is_none() && t.get("result").is_none()));
    let full = hub.ok("GET", "/api/tasks?limit=2&fields=description,result", None);
    assert_eq!(
        full["tasks"][0]["description"].as_str().map(str::len),
        Some(30 * 1024)
    );
    assert_eq!(full["tasks"][0]["result"]["summary"], "ok");
    let listing = rss_kib(&hub);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..3 {
                    let p = hub.ok("GET", "/api/tasks?limit=1000", None);
                    assert_eq!(p["tasks"].as_array().unwrap().len(), 1000);
                }
            });
        }
    });
    let listed = rss_kib(&hub);
    eprintln!("8 clients × 3 lists of 1000: RSS {listing} KiB → {listed} KiB");
    assert!(
        listed.saturating_sub(listing) < 64 * 1024,
        "lists grew the hub by {} KiB",
        listed - listing
    );
    // A finished task is still whole when asked for by id.
    let one = tasks[0]["id"].as_str().unwrap();
    let t = hub.task(one);
    assert_eq!(t["description"].as_str().map(str::len), Some(30 * 1024));
    assert_eq!(events(&t), ["created", "assigned", "accepted", "completed"]);
}

#[test]
fn history_comes_in_pages_and_finished_tasks_survive_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(root.path(), &[]);
    run_big_tasks(&hub, 4, 10, "a");
    let id = hub.tasks(Some("completed"))[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let first = hub.ok("GET", &format!("/api/tasks/{id}?history_limit=3"), None);
    assert_eq!(events(&first), ["created", "assigned", "accepted"]);
    let next = first["history_next_cursor"].as_u64().expect("more history");
    let second = hub.ok(
        "GET",
        &format!("/api/tasks/{id}?history_limit=3&history_cursor={next}"),
        None,
    );
    assert_eq!(events(&second), ["completed"]);
    assert_eq!(second["history_next_cursor"], Value::Null);
    let (s, b) = hub.call("GET", &format!("/api/tasks/{id}?history_limit=0"), None);
    assert_eq!((s, b["error"]["code"].as_str()), (422, Some("invalid")));

    hub.kill9();
    hub.restart();
    let state = hub.state();
    assert_eq!(state["tasks"]["completed"], 4);
    assert_eq!(state["tasks_total"], 4);
    let t = hub.task(&id);
    assert_eq!(t["status"], "completed");
    assert_eq!(events(&t).len(), 4);
    assert_eq!(hub.tasks(None).len(), 4);
}

#[test]
fn retention_deletes_finished_tasks_and_keeps_live_ones() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(
        root.path(),
        &[
            ("AGENTCOM_RETENTION__FINISHED_DAYS", "0"),
            ("AGENTCOM_TIMEOUTS__SWEEP_INTERVAL_S", "1"),
        ],
    );
    let live = hub.submit(json!({ "title": "nobody can do this", "needed_capabilities": ["gpu"] }));
    let gone = hub.submit(json!({ "title": "cancelled at once" }));
    let gone_id = gone["id"].as_str().unwrap();
    hub.ok("POST", &format!("/api/tasks/{gone_id}/cancel"), None);
    assert_eq!(hub.state()["tasks"]["cancelled"], 1);
    // Gone from the store, then counted as gone once its deletion is
    // durable (a read may see the deletion a moment before the counts do).
    wait_until(T, "retention to delete the finished task", || {
        let (s, _) = hub.call("GET", &format!("/api/tasks/{gone_id}"), None);
        (s == 404 && hub.state()["tasks"]["cancelled"] == 0).then_some(())
    });
    let state = hub.state();
    assert_eq!(state["tasks"]["cancelled"], 0);
    assert_eq!(state["tasks"]["queued"], 1);
    assert_eq!(state["tasks_total"], 1);
    assert_eq!(hub.tasks(None).len(), 1);
    // A deleted task can no longer be revived; the live one is untouched.
    let (s, _) = hub.call("POST", &format!("/api/tasks/{gone_id}/retry"), None);
    assert_eq!(s, 404);
    assert_eq!(hub.task(live["id"].as_str().unwrap())["status"], "queued");
}
