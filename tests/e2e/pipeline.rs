//! The merge pipeline end to end, with real git everywhere: a bare remote
//! with a real check, the real hub guarding it, real sidecars whose
//! runners commit. A completed repository task opens a change; the hub
//! measures it, the gate judges it, the merge queue merges it onto main
//! after the check passed on the exact merge commit.

use std::time::Duration;

use agentcom_tests::hub::{events, Hub};
use agentcom_tests::project::{self, Project};
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

/// Start a sidecar for each agent, each with its own clone, and wait until
/// all are idle.
fn start_fleet(p: &Project, hub: &Hub, agents: &[&str]) -> Vec<Sidecar> {
    let fleet = agents
        .iter()
        .map(|a| Sidecar::start(p.root(), hub, a, &[], &p.runner(), &p.git_section(a)))
        .collect();
    for a in agents {
        hub.wait_agent(a, "idle", T);
    }
    fleet
}

fn submit(hub: &Hub, body: Value) -> String {
    hub.submit(body)["id"].as_str().unwrap().to_string()
}

/// The last event of a change's history (how it left `merging`: `merged`,
/// `conflict`, `check_failed`, …).
fn last_event(change: &Value) -> String {
    change["history"].as_array().unwrap().last().unwrap()["event"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_non_conflicting_change_merges_onto_a_main_that_moved_during_its_attempt() {
    let root = tempfile::tempdir().unwrap();
    let p = Project::new(root.path());
    let hub = start_hub(&p, "auto_merge = true");
    let _fleet = start_fleet(&p, &hub, &["ann", "bob"]);
    p.step(
        "slow",
        &format!(
            "{}\n{}\n{}",
            p.raise_step("slow-working"),
            p.await_step("slow-go"),
            Project::set_line(9, "nine, by the slow one")
        ),
    );
    p.step("quick", &Project::set_line(3, "three, by the quick one"));
    let base = p.main();
    let slow = submit(&hub, json!({"title": "slow", "repo": "app"}));
    wait_until(T, "the slow runner to be working", || {
        p.raised("slow-working").then_some(())
    });
    // Main moves under the slow attempt: another agent's change merges.
    let quick = submit(&hub, json!({"title": "quick", "repo": "app"}));
    let moved = wait_change(&hub, &quick, "merged")["merged_sha"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(p.main(), moved);
    p.raise("slow-go");

    let c = wait_change(&hub, &slow, "merged");
    let task = hub.wait_status(&slow, "completed", T);
    assert_eq!(c["base"], base.as_str(), "branched before main moved: {c}");
    let merged = c["merged_sha"].as_str().unwrap();
    assert_eq!(p.main(), merged);
    assert_eq!(
        p.parents(merged),
        [moved.as_str(), c["head"].as_str().unwrap()],
        "a merge of the change onto the moved main"
    );
    let lines = p.file_at(merged, "lines.txt");
    assert!(lines.contains("three, by the quick one"), "{lines}");
    assert!(lines.contains("nine, by the slow one"), "{lines}");
    assert!(p.checked().contains(&(merged.to_string(), true)));
    assert_eq!(task["generation"], 1, "done in one attempt: {task}");
    assert!(!events(&task).contains(&"sent_back".to_string()));
    let all = project::changes(&hub);
    assert_eq!(project::by_task(&all)[&slow].len(), 1, "{all:?}");
}

#[test]
fn a_conflicting_change_on_a_stale_base_is_sent_back_then_redone_on_the_new_main() {
    let root = tempfile::tempdir().unwrap();
    let p = Project::new(root.path());
    let hub = start_hub(&p, "auto_merge = true");
    let _fleet = start_fleet(&p, &hub, &["ann"]);
    // The step rewrites line 5 wholesale: a conflict with anyone who
    // changed it since the base; on the new main, it merges.
    p.step(
        "clash",
        &format!(
            "{}\n{}\n{}",
            p.raise_step("clash-working"),
            p.await_step("clash-go"),
            Project::set_line(5, "five, by the agent")
        ),
    );
    let base = p.main();
    let id = submit(&hub, json!({"title": "clash", "repo": "app"}));
    wait_until(T, "the clash runner to be working", || {
        p.raised("clash-working").then_some(())
    });
    // A person pushes straight to main while the runner works.
    let moved = p.push_to_main(
        "a person edits line five",
        &Project::set_line(5, "five, by a person"),
    );
    p.raise("clash-go");

    let first = wait_change(&hub, &id, "sent_back");
    let first = project::change(&hub, first["id"].as_str().unwrap());
    assert_eq!(first["base"], base.as_str());
    assert_eq!(last_event(&first), "conflict", "{first}");
    let why = first["history"].as_array().unwrap().last().unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(why.contains("conflicts with main in: lines.txt"), "{why}");

    let second = wait_change(&hub, &id, "merged");
    let task = hub.wait_status(&id, "completed", T);
    assert_eq!(
        second["base"],
        moved.as_str(),
        "redone on the new main: {second}"
    );
    assert!(second["generation"].as_u64() > first["generation"].as_u64());
    let merged = second["merged_sha"].as_str().unwrap();
    assert_eq!(p.main(), merged);
    assert_eq!(
        p.parents(merged),
        [moved.as_str(), second["head"].as_str().unwrap()]
    );
    assert_eq!(
        p.main_file("lines.txt").lines().nth(4),
        Some("five, by the agent")
    );
    // The person's push was checked by the hub before anything merged
    // onto it; the merge commit passed too.
    let checked = p.checked();
    assert!(checked.contains(&(moved.clone(), true)), "{checked:?}");
    assert!(checked.contains(&(merged.to_string(), true)), "{checked:?}");
    // The task's history says why it went again; its agent is not blamed.
    let sent_back: Vec<&Value> = task["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "sent_back")
        .collect();
    assert_eq!(sent_back.len(), 1, "{task}");
    assert!(
        sent_back[0]["detail"]
            .as_str()
            .unwrap()
            .contains("conflicts with main in: lines.txt"),
        "{task}"
    );
    assert_eq!(
        task["dossier"]["attempts"][0]["outcome"], "sent_back",
        "{task}"
    );
    assert_eq!(hub.agent("ann")["consecutive_failures"], 0);
    assert_eq!(project::by_task(&project::changes(&hub))[&id].len(), 2);
}
