//! Several hubs on one PostgreSQL store (issue 13): one leads, the others
//! stand by — answering `/healthz` with their role, a task by its id from
//! the store, and everything else with 503 `not_leader` naming the leader —
//! and take over when the leader is
//! gone; a leader that lost its lease while frozen steps down when it
//! wakes, and its late writes are refused by the store's fence.
//!
//! Needs the test PostgreSQL (`AGENTCOM_TEST_PG_URL`, started by
//! scripts/test.sh); without it each test says it was skipped.

use std::path::Path;
use std::time::{Duration, Instant};

use agentcom_tests::hub::Hub;
use agentcom_tests::pg::{admin_url, Database};
use agentcom_tests::wait_until;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

/// The settings of every hub of a test: the one database, a short takeover.
fn shared(db: &Database) -> Vec<(&'static str, String)> {
    vec![
        ("AGENTCOM_STORE__BACKEND", "postgres".into()),
        ("AGENTCOM_STORE__URL", db.url.clone()),
        ("AGENTCOM_HA__TAKEOVER_S", "2".into()),
    ]
}

fn start(root: &Path, env: &[(&'static str, String)]) -> Hub {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Hub::start_may_stand_by(root, &env)
}

/// A second hub's data dir holding the first one's admin token, as an
/// operator copies it (the token's hash is in the shared store).
fn seed_token(root: &Path, token: &str) {
    use std::os::unix::fs::PermissionsExt;
    let data = root.join("hub").join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let file = data.join("admin.token");
    std::fs::write(&file, token).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn health(hub: &Hub) -> Value {
    let resp = hub.http().get(format!("{}/healthz", hub.url)).call();
    match resp {
        Ok(mut r) => r.body_mut().read_json().unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

fn leads(hub: &Hub) -> Option<()> {
    (health(hub)["role"] == "leader").then_some(())
}

fn create(hub: &Hub, title: &str) -> String {
    let (status, body) = hub.call("POST", "/api/tasks", Some(json!({ "title": title })));
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

#[test]
fn a_standby_takes_over_a_killed_leader_and_a_deposed_leader_steps_down() {
    if admin_url().is_none() {
        eprintln!("skipped: AGENTCOM_TEST_PG_URL is not set (scripts/test.sh starts a PostgreSQL)");
        return;
    }
    let db = Database::create();
    let env = shared(&db);
    let (ra, rb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = start(ra.path(), &env);
    assert_eq!(health(&a)["role"], "leader", "{}", health(&a));
    seed_token(rb.path(), &a.token);
    let mut b = start(rb.path(), &env);

    // B stands by and names A; it refuses writes and sidecars with the
    // leader's address.
    wait_until(
        Duration::from_secs(10),
        "the standby to name the leader",
        || (health(&b)["leader"] == json!(a.url)).then_some(()),
    );
    assert_eq!(health(&b)["role"], "standby");
    let (status, body) = b.call("POST", "/api/tasks", Some(json!({ "title": "x" })));
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "not_leader", "{body}");
    assert_eq!(body["error"]["leader"], json!(a.url), "{body}");
    let (status, body) = b.raw("GET", "/ws", None, None);
    assert_eq!(
        (status, &body["error"]["code"]),
        (503, &json!("not_leader"))
    );

    // Acknowledged by A, then A is killed: B leads, with every task.
    let ids: Vec<String> = (0..20)
        .map(|i| create(&a, &format!("before {i}")))
        .collect();
    // The standby serves a task as last committed, from the store.
    let seen = b.task(&ids[3]);
    assert_eq!(
        (&seen["title"], &seen["status"]),
        (&json!("before 3"), &json!("queued")),
        "{seen}"
    );
    assert_eq!(seen["history"][0]["event"], "created", "{seen}");
    let (status, _) = b.raw("GET", &format!("/api/tasks/{}", ids[3]), Some("wrong"), None);
    assert_eq!(status, 401, "a standby's reads need a reader's token");
    let killed = Instant::now();
    a.kill9();
    wait_until(Duration::from_secs(15), "the standby to lead", || leads(&b));
    eprintln!(
        "ha: the standby led {} ms after the leader's kill -9 (ha.takeover_s = 2)",
        killed.elapsed().as_millis()
    );
    for id in &ids {
        assert_eq!(
            b.task(id)["status"],
            "queued",
            "{id} survived the fail-over"
        );
    }
    // A comes back as a standby and names B.
    a.restart();
    wait_until(
        Duration::from_secs(10),
        "the old leader to stand by",
        || (health(&a)["role"] == "standby" && health(&a)["leader"] == json!(b.url)).then_some(()),
    );

    // B frozen longer than its lease: A takes over; B, thawed, finds
    // another term and steps down, and nothing it held is lost.
    let frozen = Pid::from_raw(b.pid().unwrap() as i32);
    kill(frozen, Signal::SIGSTOP).unwrap();
    wait_until(Duration::from_secs(15), "the standby to lead again", || {
        leads(&a)
    });
    let after = create(&a, "after the freeze");
    kill(frozen, Signal::SIGCONT).unwrap();
    wait_until(
        Duration::from_secs(15),
        "the deposed leader to exit",
        || (!b.running()).then_some(()),
    );
    let log = b.log();
    assert!(
        log.contains("stepping down") || log.contains("no longer leads"),
        "the deposed leader said why it stopped:\n{log}"
    );
    let all = a.tasks(None);
    assert_eq!(all.len(), 21, "every acknowledged task, once");
    assert!(all.iter().any(|t| t["id"] == json!(after)));
}
