//! Moving a hub's store (`agentcom-hub store copy`, docs/operations.md):
//! a sled hub's tasks — a body large enough that sled kept it in a file
//! of its own, a finished task —, its agent and its admin token go into an
//! empty PostgreSQL database; the same hub (its data dir) then runs on
//! PostgreSQL with all of it. A second copy into the now full database is
//! refused. Needs the test PostgreSQL (`AGENTCOM_TEST_PG_URL`).

use std::process::Command;

use agentcom_tests::hub::Hub;
use agentcom_tests::pg::{admin_url, Database};
use agentcom_tests::procs::bin;
use serde_json::json;

#[test]
fn a_sled_hub_moves_to_postgresql_with_everything() {
    if admin_url().is_none() {
        eprintln!("skipped: AGENTCOM_TEST_PG_URL is not set (scripts/test.sh starts a PostgreSQL)");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(root.path(), &[("AGENTCOM_STORE__BACKEND", "sled")]);
    hub.add_agent("a1", &["rust"]);
    let big = "x".repeat(9000);
    let big_id = hub.submit(json!({ "title": "big", "description": big }))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let done_id = hub.submit(json!({ "title": "small" }))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = hub.call("POST", &format!("/api/tasks/{done_id}/cancel"), None);
    assert_eq!(status, 200);
    let values = hub.dir.join("data").join("values");
    assert!(
        std::fs::read_dir(&values).map(|d| d.count()).unwrap_or(0) > 0,
        "sled kept the large body in a file of its own"
    );
    assert_eq!(hub.terminate(), Some(0));

    let db = Database::create();
    let copy = || {
        Command::new(bin("agentcom-hub"))
            .args(["store", "copy", "--from"])
            .arg(hub.dir.join("data"))
            .args(["--to", &db.url])
            .output()
            .unwrap()
    };
    let out = copy();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("1 agents") && said.contains("from the sled store to the postgres store"),
        "{said}"
    );
    let again = copy();
    assert!(
        !again.status.success(),
        "a second copy into a full database is refused"
    );
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("already holds tasks or agents"), "{err}");

    // The same hub, its store now in PostgreSQL.
    hub.set_env("AGENTCOM_STORE__BACKEND", "postgres");
    hub.set_env("AGENTCOM_STORE__URL", &db.url);
    hub.restart();
    assert!(
        hub.log().contains("store=\"postgres\"") || hub.log().contains("store=postgres"),
        "the hub says which store it restored from"
    );
    let t = hub.task(&big_id);
    assert_eq!(
        t["description"].as_str().map(str::len),
        Some(9000),
        "the large body came along"
    );
    assert_eq!(t["status"], "queued");
    assert_eq!(hub.task(&done_id)["status"], "cancelled");
    assert_eq!(hub.agent("a1")["capabilities"], json!(["rust"]));
    assert_eq!(hub.tasks(None).len(), 2);
}
