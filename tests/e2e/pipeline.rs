//! The merge pipeline end to end, with real git everywhere: a bare remote
//! with a real check, the real hub guarding it, real sidecars whose
//! runners commit. A completed repository task opens a change; the hub
//! measures it, the gate judges it, the merge queue merges it onto main
//! after the check passed on the exact merge commit.

use std::time::Duration;

use agentcom_tests::hub::Hub;
use agentcom_tests::project::Project;
use agentcom_tests::sidecar::Sidecar;
use agentcom_tests::wait_until;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);

fn start_hub(p: &Project, gate: &str) -> Hub {
    let (k, v) = p.hub_env();
    Hub::start_with_config(
        p.root(),
        &p.hub_toml(1, gate),
        &[(k.as_str(), v.as_str()), ("AGENTCOM_RETRY__BACKOFF_S", "0")],
    )
}

/// The task's change once it is `status`.
fn wait_change(hub: &Hub, task: &str, status: &str) -> Value {
    wait_until(
        T,
        &format!("the change of task {task} to be {status}"),
        || {
            let list = hub.ok("GET", "/api/changes?limit=1000", None);
            list["changes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["task_id"] == task && c["status"] == status)
                .cloned()
        },
    )
}

#[test]
fn a_completed_repository_task_is_merged_after_its_check_passes() {
    let root = tempfile::tempdir().unwrap();
    let p = Project::new(root.path());
    let hub = start_hub(&p, "auto_merge = true");
    let _s = Sidecar::start(
        p.root(),
        &hub,
        "ann",
        &[],
        &p.runner(),
        &p.git_section("ann"),
    );
    p.step("line three", &Project::set_line(3, "three, by ann"));
    let id = hub.submit(json!({"title": "line three", "repo": "app"}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let change = wait_change(&hub, &id, "merged");
    let task = hub.wait_status(&id, "completed", T);
    assert_eq!(change["files"], json!(["lines.txt"]), "{change}");
    assert_eq!(change["lines_added"], 1);
    assert_eq!(change["lines_removed"], 1);
    let merged = change["merged_sha"].as_str().unwrap();
    assert_eq!(p.main(), merged);
    assert!(p.main_file("lines.txt").contains("three, by ann"));
    assert_eq!(change["check"]["exit_code"], 0, "{change}");
    assert!(p.checked().contains(&(merged.to_string(), true)));
    assert_eq!(task["status"], "completed");
}
