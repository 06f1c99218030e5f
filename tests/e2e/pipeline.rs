//! The merge pipeline end to end, with real git everywhere: a bare remote
//! with a real check, the real hub guarding it, real sidecars whose
//! runners commit. A completed repository task opens a change; the hub
//! measures it, the gate judges it, the merge queue merges it onto main
//! after the check passed on the exact merge commit.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use agentcom_tests::hub::{events, parse_ms, Hub};
use agentcom_tests::project::{self, Project};
use agentcom_tests::sidecar::Sidecar;
use agentcom_tests::wait_until;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);

#[test]
fn a_completed_repository_task_is_merged_after_its_check_passes() {
    let root = tempfile::tempdir().unwrap();
    let p = Project::new(root.path());
    let hub = project::start_pipeline_hub(&p, 1, "auto_merge = true", &[]);
    let _s = p.agent(&hub, "ann", &[]);
    p.step("line three", &Project::set_line(3, "three, by ann"));
    let id = hub.submit(json!({"title": "line three", "repo": "app"}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let change = project::wait_change_status(&hub, &id, "merged", T);
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
    let fleet = agents.iter().map(|a| p.agent(hub, a, &[])).collect();
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
    let hub = project::start_pipeline_hub(&p, 1, "auto_merge = true", &[]);
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
    let moved = project::wait_change_status(&hub, &quick, "merged", T)["merged_sha"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(p.main(), moved);
    p.raise("slow-go");

    let c = project::wait_change_status(&hub, &slow, "merged", T);
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
    let hub = project::start_pipeline_hub(&p, 1, "auto_merge = true", &[]);
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

    let first = project::wait_change_status(&hub, &id, "sent_back", T);
    let first = project::change(&hub, first["id"].as_str().unwrap());
    assert_eq!(first["base"], base.as_str());
    assert_eq!(last_event(&first), "conflict", "{first}");
    let why = first["history"].as_array().unwrap().last().unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(why.contains("conflicts with main in: lines.txt"), "{why}");

    let second = project::wait_change_status(&hub, &id, "merged", T);
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

#[test]
fn main_moving_during_the_check_refuses_the_push_and_the_change_merges_again_onto_the_new_main() {
    let root = tempfile::tempdir().unwrap();
    let p = Project::new(root.path());
    let hub = project::start_pipeline_hub(&p, 1, "auto_merge = true", &[]);
    let _fleet = start_fleet(&p, &hub, &["ann"]);
    let initial = p.main();
    // The change's tree makes its check wait for the test.
    p.step(
        "held",
        &format!(
            "touch hold-check\n{}",
            Project::set_line(7, "seven, checked slowly")
        ),
    );
    let id = submit(&hub, json!({"title": "held", "repo": "app"}));
    wait_until(T, "the check of the merge to be running", || {
        p.raised("check-held").then_some(())
    });
    // The hub's merge commit is being checked; main moves meanwhile.
    let moved = p.push_to_main(
        "a person edits line two",
        &Project::set_line(2, "two, by a person"),
    );
    p.raise("check-go");

    let c = project::wait_change_status(&hub, &id, "merged", T);
    let task = hub.wait_status(&id, "completed", T);
    let merged = c["merged_sha"].as_str().unwrap();
    // Merged again, onto the main that moved, and checked again.
    assert_eq!(p.main_history(), [merged, moved.as_str(), initial.as_str()]);
    assert_eq!(
        p.parents(merged),
        [moved.as_str(), c["head"].as_str().unwrap()]
    );
    let lines = p.file_at(merged, "lines.txt");
    assert!(lines.contains("two, by a person"), "{lines}");
    assert!(lines.contains("seven, checked slowly"), "{lines}");
    assert_eq!(c["check"]["sha"], merged, "{c}");
    // What was checked, in order: main at start, the first merge commit
    // (passed, but main had moved: never pushed), the person's main, the
    // second merge commit.
    let checked = p.checked();
    let shas: Vec<&str> = checked.iter().map(|(s, _)| s.as_str()).collect();
    assert!(checked.iter().all(|(_, pass)| *pass), "{checked:?}");
    assert_eq!(shas.len(), 4, "{checked:?}");
    assert_eq!(
        [shas[0], shas[2], shas[3]],
        [initial.as_str(), moved.as_str(), merged],
        "{checked:?}"
    );
    assert!(
        !p.main_history().iter().any(|h| h == shas[1]),
        "{checked:?}"
    );
    // Not the change's fault: no send back, one attempt.
    let c = project::change(&hub, c["id"].as_str().unwrap());
    let history: Vec<&str> = c["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["opened", "gated", "merged"], "{c}");
    assert_eq!(task["generation"], 1, "{task}");
}

#[test]
fn a_change_cannot_be_rejected_nor_its_task_cancelled_while_its_merge_is_under_way() {
    let root = tempfile::tempdir().unwrap();
    let p = Project::new(root.path());
    let hub = project::start_pipeline_hub(&p, 1, "auto_merge = true", &[]);
    let _fleet = start_fleet(&p, &hub, &["ann"]);
    p.step(
        "contested",
        &format!(
            "touch hold-check\n{}",
            Project::set_line(4, "four, contested")
        ),
    );
    let id = submit(&hub, json!({"title": "contested", "repo": "app"}));
    wait_until(T, "the check of the merge to be running", || {
        p.raised("check-held").then_some(())
    });
    // The merge commit is being checked and may be pushed any moment: a
    // person's no would be recorded while main holds the change.
    let c = project::wait_change_status(&hub, &id, "merging", T);
    let change_id = c["id"].as_str().unwrap();
    let (status, body) = hub.call(
        "POST",
        &format!("/api/changes/{change_id}/reject"),
        Some(json!({"reason": "not this", "requeue": false})),
    );
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .to_string()
            .contains("being merged"),
        "{body}"
    );
    let (status, body) = hub.call("POST", &format!("/api/tasks/{id}/cancel"), None);
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .to_string()
            .contains("being merged"),
        "{body}"
    );
    p.raise("check-go");

    let c = project::wait_change_status(&hub, &id, "merged", T);
    assert_eq!(hub.wait_status(&id, "completed", T)["status"], "completed");
    assert_eq!(p.main(), c["merged_sha"].as_str().unwrap());
    assert!(p.main_file("lines.txt").contains("four, contested"));
}

/// What a task of the fleet run does, and so how it must end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Rewrites line 1 wholesale: conflicts with every other hot change
    /// merged since its base, merges when redone on the new main.
    Hot,
    /// Edits its own line of `lines.txt` (3, 5, 7 or 9): never conflicts.
    Line,
    /// Adds its own file under `notes/`.
    Note,
    /// Adds BROKEN on its first attempt; reads the failed check in its
    /// dossier on the retry and fixes it.
    Fragile,
    /// Always adds BROKEN: sent back until its retries are spent, dead.
    Doomed,
    /// Touches a denied path: escalated, waits for a person.
    Denied,
}

struct Planned {
    id: String,
    title: String,
    kind: Kind,
}

/// The median and the largest of some durations in ms.
fn median_max(mut ms: Vec<i64>) -> (i64, i64) {
    ms.sort_unstable();
    (ms[ms.len() / 2], *ms.last().unwrap())
}

/// Issue 9's "done when": three agents, twenty tasks on one repository,
/// conflicts, failing checks and a denied path; every task ends as the
/// gate and the check decide, main holds each merge once and only ever
/// pointed at checked commits, and no task ever had two live changes.
#[test]
fn a_fleet_of_three_agents_merges_twenty_tasks_through_the_queue() {
    let root = tempfile::tempdir().unwrap();
    let p = Project::new(root.path());
    let hub = project::start_pipeline_hub(
        &p,
        1,
        "auto_merge = true\ndeny_paths = [\"deploy/**\"]",
        &[],
    );
    let agents = ["ann", "bob", "cat"];
    let _fleet = start_fleet(&p, &hub, &agents);
    let initial = p.main();

    // Each task: its title, what its step does, its priority and retry
    // budget. A hot task is sent back at most once for each other hot
    // change that merged (its retry starts from a main holding it), so 10
    // retries always suffice; the doomed one has 1 (two failed checks).
    let mut plan: Vec<(String, Kind, String, &str, u32)> = Vec::new();
    for k in 1..=6 {
        // The first three (high) hold each other at a barrier, so all
        // three work from the same main: two of them must conflict.
        let step = format!(
            "{}\n{}",
            p.barrier_step("hot", 3),
            Project::set_line(1, &format!("line 1, by hot {k}"))
        );
        let priority = if k <= 3 { "high" } else { "normal" };
        plan.push((format!("hot {k}"), Kind::Hot, step, priority, 10));
    }
    for n in [3, 5, 7, 9] {
        let step = Project::set_line(n, &format!("line {n}, edited"));
        plan.push((format!("line {n}"), Kind::Line, step, "normal", 10));
    }
    for x in ["a", "b", "c", "d", "e", "f", "g"] {
        let step = format!("mkdir -p notes && echo 'note {x}' > notes/{x}.txt");
        plan.push((format!("note {x}"), Kind::Note, step, "normal", 10));
    }
    plan.push((
        "fragile".into(),
        Kind::Fragile,
        "mkdir -p notes\nif grep -q 'found BROKEN' \"$AGENTCOM_TASK_FILE\"; then echo 'fragile, fixed' > notes/fragile.txt; else echo 'fragile: BROKEN' > notes/fragile.txt; fi".into(),
        "normal",
        10,
    ));
    plan.push((
        "doomed".into(),
        Kind::Doomed,
        "mkdir -p notes && echo 'doomed: BROKEN' > notes/doomed.txt".into(),
        "normal",
        1,
    ));
    plan.push((
        "deploy".into(),
        Kind::Denied,
        "mkdir -p deploy && echo 'replicas = 3' > deploy/app.toml".into(),
        "normal",
        10,
    ));
    assert_eq!(plan.len(), 20);

    let started = Instant::now();
    let planned: Vec<Planned> = plan
        .into_iter()
        .map(|(title, kind, step, priority, max_retries)| {
            p.step(&title, &step);
            let id = submit(
                &hub,
                json!({"title": title, "repo": "app", "priority": priority, "max_retries": max_retries}),
            );
            Planned { id, title, kind }
        })
        .collect();

    // Until every task has ended as it must, every listing of the changes
    // shows at most one live change per task.
    let mut polls = 0;
    let mut last_summary = String::new();
    wait_until(
        Duration::from_secs(120),
        "every task of the fleet to end",
        || {
            let changes = project::changes(&hub);
            project::assert_one_live_change_per_task(&changes);
            polls += 1;
            let live: BTreeMap<String, String> = changes
                .iter()
                .filter(|c| project::LIVE.contains(&c["status"].as_str().unwrap()))
                .map(|c| {
                    (
                        c["task_id"].as_str().unwrap().to_string(),
                        c["status"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            let tasks = hub.tasks(None);
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for pl in &planned {
                let t = tasks.iter().find(|t| t["id"] == pl.id.as_str()).unwrap();
                *counts.entry(t["status"].as_str().unwrap()).or_default() += 1;
            }
            let summary = format!("{counts:?}");
            if summary != last_summary {
                eprintln!("fleet [{:.1}s] {summary}", started.elapsed().as_secs_f64());
                last_summary = summary;
            }
            let ended = planned.iter().all(|pl| {
                let t = tasks.iter().find(|t| t["id"] == pl.id.as_str()).unwrap();
                match t["status"].as_str().unwrap() {
                    "completed" | "dead" => true,
                    "in_review" => live.get(&pl.id).map(String::as_str) == Some("escalated"),
                    _ => false,
                }
            });
            ended.then_some(())
        },
    );
    let elapsed = started.elapsed();

    // The end state, with histories.
    let listed = project::changes(&hub);
    project::assert_one_live_change_per_task(&listed);
    let by_task = project::by_task(&listed);
    let full: BTreeMap<String, Value> = listed
        .iter()
        .map(|c| {
            let id = c["id"].as_str().unwrap().to_string();
            (id.clone(), project::change(&hub, &id))
        })
        .collect();
    let alerts = hub.ok("GET", "/api/alerts", None);

    let mut merged: Vec<Value> = Vec::new();
    let mut in_review_to_completed = Vec::new();
    let mut failed_outright: Vec<String> = Vec::new();
    for pl in &planned {
        let task = hub.task(&pl.id);
        let status = task["status"].as_str().unwrap();
        let cs: Vec<&Value> = by_task
            .get(&pl.id)
            .map(|cs| {
                cs.iter()
                    .map(|c| &full[c["id"].as_str().unwrap()])
                    .collect()
            })
            .unwrap_or_default();
        let what = format!("{} ({:?}): {task}\nchanges: {cs:?}", pl.title, pl.kind);
        let statuses: Vec<&str> = cs.iter().map(|c| c["status"].as_str().unwrap()).collect();
        // Attempts that ended without a change (the sidecar or the runner
        // failed): counted, and shown below.
        let attempts = task["dossier"]["attempts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let failed_here: Vec<String> = attempts
            .iter()
            .filter(|a| a["outcome"] != "sent_back")
            .map(|a| format!("{}: {} ({})", pl.title, a["outcome"], a["error"]))
            .collect();
        failed_outright.extend(failed_here.iter().cloned());
        let endings: Vec<String> = cs.iter().map(|c| last_event(c)).collect();

        // No two live changes, by the changes' own histories either: each
        // left its live statuses before the task's next change opened.
        for w in cs.windows(2) {
            let (_, ended) = project::live_span(w[0]);
            let (opened, _) = project::live_span(w[1]);
            assert!(
                ended.is_some_and(|e| e <= opened),
                "two live changes at once: {what}"
            );
        }
        // A task leaves review once for each change sent back, with the
        // change's reasons: queued again (`sent_back`), or `dead` when
        // that was its last retry.
        let left_review: Vec<&Value> = task["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["from"] == "in_review" && e["event"] != "completed")
            .collect();
        let changes_sent_back: Vec<&&Value> =
            cs.iter().filter(|c| c["status"] == "sent_back").collect();
        assert_eq!(left_review.len(), changes_sent_back.len(), "{what}");
        for (e, c) in left_review.iter().zip(&changes_sent_back) {
            let reason = c["history"].as_array().unwrap().last().unwrap()["detail"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(
                e["detail"].as_str().unwrap().contains(&reason),
                "the task's history names its change's reasons: {what}"
            );
        }
        let last_left = left_review.last().map(|e| e["event"].as_str().unwrap());
        assert!(
            left_review[..left_review.len().saturating_sub(1)]
                .iter()
                .all(|e| e["event"] == "sent_back"),
            "{what}"
        );

        match pl.kind {
            Kind::Hot | Kind::Line | Kind::Note | Kind::Fragile => {
                assert_eq!(status, "completed", "{what}");
                assert_eq!(statuses.last(), Some(&"merged"), "{what}");
                assert!(matches!(last_left, None | Some("sent_back")), "{what}");
                assert!(
                    statuses[..statuses.len() - 1]
                        .iter()
                        .all(|s| *s == "sent_back"),
                    "{what}"
                );
                let failed: Vec<&String> = endings[..endings.len() - 1].iter().collect();
                match pl.kind {
                    Kind::Hot => assert!(failed.iter().all(|e| *e == "conflict"), "{what}"),
                    Kind::Fragile => assert_eq!(failed, ["check_failed"], "{what}"),
                    _ => assert!(failed.is_empty(), "{what}"),
                }
                let m = cs.last().unwrap();
                merged.push((*m).clone());
                let completed = at_of(&task, |e| e["event"] == "completed").unwrap();
                let in_review = task["history"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|e| e["event"] == "in_review")
                    .map(|e| parse_ms(e["at"].as_str().unwrap()))
                    .filter(|at| *at <= completed)
                    .max()
                    .unwrap();
                in_review_to_completed.push(completed - in_review);
            }
            Kind::Doomed => {
                // Two attempts (max_retries 1), each sent back by its
                // failed check — unless the sidecar failed one outright.
                assert_eq!(status, "dead", "{what}");
                assert_eq!(
                    events(&task).last().map(String::as_str),
                    Some("dead"),
                    "{what}"
                );
                assert_eq!(attempts.len(), 2, "{what}");
                assert_eq!(cs.len() + failed_here.len(), 2, "{what}");
                assert!(!cs.is_empty(), "{what}");
                assert!(statuses.iter().all(|s| *s == "sent_back"), "{what}");
                assert!(endings.iter().all(|e| e == "check_failed"), "{what}");
            }
            Kind::Denied => {
                assert_eq!(status, "in_review", "{what}");
                assert_eq!(statuses, ["escalated"], "{what}");
                let gate = &cs[0]["gate"];
                assert_eq!(gate["decision"], "escalate", "{what}");
                assert!(
                    gate["reasons"].to_string().contains("deploy/app.toml"),
                    "{what}"
                );
                let id = cs[0]["id"].as_str().unwrap();
                assert!(
                    alerts["alerts"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|a| a["alert"] == "change_escalated" && a["subject"] == id),
                    "an alert names the escalated change: {alerts}"
                );
            }
        }
    }

    // Main's first-parent history: the initial commit, then each merged
    // change's merge commit once, in the order they merged, each a merge
    // of the main before it with the change's head.
    let mut history = p.main_history();
    history.reverse();
    assert_eq!(history[0], initial);
    merged.sort_by_key(|c| at_of(c, |e| e["event"] == "merged").unwrap());
    let merged_shas: Vec<&str> = merged
        .iter()
        .map(|c| c["merged_sha"].as_str().unwrap())
        .collect();
    assert_eq!(history[1..], merged_shas[..], "each merge once, in order");
    for (i, c) in merged.iter().enumerate() {
        assert_eq!(
            p.parents(merged_shas[i]),
            [history[i].as_str(), c["head"].as_str().unwrap()],
            "{c}"
        );
    }
    // Main only ever pointed at commits whose check passed (nobody but the
    // hub moved it here): each was checked, none failed.
    let checked = p.checked();
    for sha in &history {
        assert!(
            checked.contains(&(sha.clone(), true)),
            "{sha} was checked and passed: {checked:?}"
        );
        assert!(
            !checked.contains(&(sha.clone(), false)),
            "{sha} failed a check: {checked:?}"
        );
    }
    // Every failed check was on a merge commit that never reached main.
    for c in full.values().filter(|c| last_event(c) == "check_failed") {
        let sha = c["check"]["sha"].as_str().unwrap().to_string();
        assert!(checked.contains(&(sha.clone(), false)), "{c}");
        assert!(!history.contains(&sha), "{c}");
    }
    let lines = p.main_file("lines.txt");
    for n in [3, 5, 7, 9] {
        assert!(lines.contains(&format!("line {n}, edited")), "{lines}");
    }
    assert_eq!(p.main_file("notes/fragile.txt"), "fragile, fixed");

    // The figures.
    let mut sent_back: BTreeMap<String, usize> = BTreeMap::new();
    for c in full.values().filter(|c| c["status"] == "sent_back") {
        *sent_back.entry(last_event(c)).or_default() += 1;
    }
    // Time in the merge queue, and the merge lane's busy time: the queue
    // merges one change at a time, so a change's service is from when it
    // could start (it was queued and the one before it was done) to its
    // outcome.
    let mut spans: Vec<(i64, i64)> = full.values().flat_map(project::merging_spans).collect();
    spans.sort_by_key(|&(_, left)| left);
    let in_queue_ms: i64 = spans.iter().map(|(e, l)| l - e).sum();
    let mut lane_ms = 0;
    let mut lane_free = 0;
    for (entered, left) in &spans {
        lane_ms += left - entered.max(&lane_free);
        lane_free = *left;
    }
    let check_s: f64 = full
        .values()
        .filter_map(|c| c["check"]["duration_s"].as_f64())
        .sum();
    let (median, max) = median_max(in_review_to_completed.clone());
    eprintln!(
        "fleet: {} tasks, {} changes ({} merged), {} attempts failed outright, {} listings of the changes checked, done in {:.1}s",
        planned.len(),
        full.len(),
        merged.len(),
        failed_outright.len(),
        polls,
        elapsed.as_secs_f64()
    );
    eprintln!("fleet: in_review → completed: median {median} ms, max {max} ms");
    eprintln!("fleet: sent back: {sent_back:?}");
    for f in &failed_outright {
        eprintln!("fleet: failed outright: {f}");
    }
    eprintln!(
        "fleet: checks of changes {:.2}s: {:.0}% of the merge lane's {:.2}s busy, {:.0}% of {:.2}s changes spent in merging",
        check_s,
        100.0 * check_s * 1000.0 / lane_ms as f64,
        lane_ms as f64 / 1000.0,
        100.0 * check_s * 1000.0 / in_queue_ms as f64,
        in_queue_ms as f64 / 1000.0,
    );
    assert!(
        sent_back.get("conflict").copied().unwrap_or(0) >= 2,
        "{sent_back:?}"
    );
    assert_eq!(
        sent_back.get("check_failed").copied(),
        Some(3),
        "{sent_back:?}"
    );
    assert_eq!(
        sent_back.len(),
        2,
        "only conflicts and failed checks: {sent_back:?}"
    );
}

/// The time of the first history entry of `v` matching `f`.
fn at_of(v: &Value, f: impl Fn(&Value) -> bool) -> Option<i64> {
    v["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| f(e))
        .map(|e| parse_ms(e["at"].as_str().unwrap()))
}
