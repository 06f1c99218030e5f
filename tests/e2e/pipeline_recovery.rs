//! The merge pipeline when things go wrong around it: main turned red by
//! a push that bypassed the hub (merges and the repository's tasks wait,
//! and resume by themselves once main is green again), and the hub killed
//! with `kill -9` in the middle of a merge (while the merge commit's check
//! runs; after the remote took the push but before the hub recorded it):
//! the change merges exactly once either way.
//! Real hub, real sidecars, real git: see `agentcom_tests::project`.

use std::time::{Duration, Instant};

use agentcom_tests::hub::Hub;
use agentcom_tests::project::{
    alerts, change, changes_of, repo, start_pipeline_hub, submit_repo_task, wait_change_status,
    wait_repo, Project,
};
use agentcom_tests::wait_until;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);

fn wait_green(hub: &Hub, sha: &str) -> Value {
    wait_repo(hub, "app", T, &format!("green at {sha}"), |r| {
        r["health"] == "green" && r["main_sha"] == sha && r["merges_paused"] == false
    })
}

/// Every commit on main that the hub made (its merge commits) passed its
/// check, and none of them ever failed it.
fn hub_commits_on_main_passed(p: &Project) -> usize {
    let checked = p.checked();
    let mut n = 0;
    for sha in p.main_history() {
        if p.author_of(&sha) != "agentcom@localhost" {
            continue;
        }
        n += 1;
        assert!(
            checked.contains(&(sha.clone(), true)),
            "main moved to {sha} without a passing check: {checked:?}"
        );
        assert!(
            !checked.contains(&(sha.clone(), false)),
            "main moved to {sha}, whose check failed: {checked:?}"
        );
    }
    n
}

fn merged_events(c: &Value) -> usize {
    c["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "merged")
        .count()
}

/// A push that bypasses the hub and breaks main: the hub sees it within
/// `poll_s` and turns the repository red (`merges_paused`, a `main_red`
/// alert); a new task of the repository is not assigned and an approved
/// change does not merge while it is red. A second push that fixes main
/// turns it green again by itself: the change merges onto the fixed main
/// and the held task runs and merges. Main never pointed, by the hub's
/// doing, at a commit whose check failed.
#[test]
fn a_red_main_pauses_merges_and_tasks_until_it_is_green_again() {
    let root = tempfile::tempdir().unwrap();
    let p = Project::new(root.path());
    let hub = start_pipeline_hub(&p, 1, "auto_merge = true\ndeny_paths = [\"held/**\"]", &[]);
    let _ann = p.agent(&hub, "ann", &[]);
    let first = p.main();
    wait_green(&hub, &first);

    // A change made while main is green, waiting for a person.
    p.step("held change", "mkdir -p held && echo held > held/file");
    let held_task = submit_repo_task(&hub, "held change");
    let held = wait_change_status(&hub, &held_task, "escalated", T);
    let held_id = held["id"].as_str().unwrap().to_string();

    // --- someone pushes a broken main --------------------------------------
    let pushed_at = Instant::now();
    let broken = p.push_to_main("break main", &Project::set_line(7, "line 7 BROKEN"));
    let red = wait_repo(&hub, "app", T, "red at the broken main", |r| {
        r["main_sha"] == broken && r["health"] == "red"
    });
    let noticed = pushed_at.elapsed();
    assert!(
        noticed < Duration::from_secs(10),
        "noticed after {noticed:?}"
    );
    assert_eq!(red["merges_paused"], true, "{red}");
    let alert = alerts(&hub, "main_red")
        .into_iter()
        .find(|a| a["subject"] == "app")
        .expect("a main_red alert");
    assert!(
        alert["message"].as_str().unwrap().contains(&broken),
        "{alert}"
    );
    assert!(p.checked().contains(&(broken.clone(), false)));

    // An approved change joins the merge queue but does not merge.
    let v = hub.ok("POST", &format!("/api/changes/{held_id}/approve"), None);
    assert_eq!(v["status"], "merging", "{v}");
    // A new task of the repository is not given to the idle agent, though a
    // task queued after it (without a repository) is.
    p.step("line three", &Project::set_line(3, "three, after the fix"));
    let waiting = submit_repo_task(&hub, "line three");
    let other = hub.submit(json!({"title": "no repository"}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        hub.wait_status(&other, "completed", T)["assigned_to"],
        "ann"
    );
    // Another push, still broken: the hub has looked at main again since.
    let broken2 = p.push_to_main("still broken", "echo more >> lines.txt");
    wait_until(T, "the second broken main to be checked", || {
        p.checked()
            .contains(&(broken2.clone(), false))
            .then_some(())
    });
    wait_repo(&hub, "app", T, "red at the second broken main", |r| {
        r["main_sha"] == broken2 && r["health"] == "red"
    });
    let w = hub.task(&waiting);
    assert_eq!(w["status"], "queued", "{w}");
    assert!(w["assigned_to"].is_null(), "{w}");
    assert_eq!(w["generation"], 0, "{w}");
    assert_eq!(change(&hub, &held_id)["status"], "merging");
    assert_eq!(p.main(), broken2, "the hub moved a red main");
    let r = repo(&hub, "app");
    assert_eq!(r["queue"], json!([held_id]), "{r}");
    assert_eq!(r["merges_paused"], true, "{r}");

    // --- someone fixes it -------------------------------------------------------
    let fixed = p.push_to_main("fix main", "sed -i 's/ BROKEN//' lines.txt");
    let merged = wait_change_status(&hub, &held_task, "merged", T);
    let m1 = merged["merged_sha"].as_str().unwrap().to_string();
    assert_eq!(
        hub.wait_status(&held_task, "completed", T)["status"],
        "completed"
    );
    assert!(alerts(&hub, "main_green")
        .iter()
        .any(|a| a["subject"] == "app"));
    let done = wait_change_status(&hub, &waiting, "merged", T);
    let w = hub.wait_status(&waiting, "completed", T);
    assert_eq!(w["assigned_to"], "ann");
    let m2 = done["merged_sha"].as_str().unwrap().to_string();
    let r = wait_green(&hub, &m2);
    assert_eq!(r["queue"], json!([]), "{r}");

    // Main: the direct pushes as they were, then the two merges, each onto
    // a green main.
    assert_eq!(p.main(), m2);
    let history = p.main_history();
    assert_eq!(
        history,
        [
            m2.clone(),
            m1.clone(),
            fixed.clone(),
            broken2,
            broken,
            first
        ]
    );
    let parents = |sha: &str| -> Vec<String> {
        agentcom_tests::procs::sh(&p.remote(), &format!("git rev-list --parents -n 1 {sha}"))
            .split(' ')
            .skip(1)
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        parents(&m1),
        [fixed.clone(), held["head"].as_str().unwrap().to_string()]
    );
    assert_eq!(parents(&m2)[0], m1);
    let lines = p.main_file("lines.txt");
    assert!(lines.contains("three, after the fix") && !lines.contains("BROKEN"));
    assert_eq!(p.main_file("held/file"), "held");
    assert_eq!(hub_commits_on_main_passed(&p), 2);
}

/// The hub is killed (`kill -9`) while the check runs on the merge
/// commit, before main moved. Restarted, it merges the change again from
/// the start: merged exactly once, its task completed, nothing lost.
#[test]
fn a_hub_killed_while_the_merge_is_checked_merges_it_once_after_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let p = Project::new(root.path());
    let mut hub = start_pipeline_hub(&p, 1, "auto_merge = true", &[]);
    let _ann = p.agent(&hub, "ann", &[]);
    let first = p.main();
    wait_green(&hub, &first);

    p.hold_check();
    p.step("line four", &Project::set_line(4, "four, survived"));
    let task = submit_repo_task(&hub, "line four");
    let held_sha = p.wait_held_check(T);
    let c = wait_change_status(&hub, &task, "merging", T);
    let id = c["id"].as_str().unwrap().to_string();
    let head = c["head"].as_str().unwrap().to_string();
    // The held check is the merge commit's: main first, the change second.
    assert_ne!(held_sha, first);
    assert_eq!(p.main(), first);

    hub.kill9();
    // The killed hub's check dies with it (`PR_SET_PDEATHSIG`): it never
    // gave a verdict on the held merge commit.
    p.release_check();
    hub.restart();

    let merged = wait_change_status(&hub, &task, "merged", T);
    let sha = merged["merged_sha"].as_str().unwrap().to_string();
    assert_eq!(
        hub.wait_status(&task, "completed", T)["status"],
        "completed"
    );
    assert_eq!(p.main(), sha);
    assert_eq!(p.main_history(), [sha.clone(), first]);
    assert_eq!(p.merges_of_change(&id), vec![sha.clone()]);
    assert_eq!(p.main_children_of(&head), vec![sha.clone()]);
    assert!(p.main_file("lines.txt").contains("four, survived"));
    let all = changes_of(&hub, &task);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(merged_events(&change(&hub, &id)), 1);
    assert_eq!(merged["check"]["exit_code"], 0, "{merged}");
    assert_eq!(hub_commits_on_main_passed(&p), 1);
    wait_green(&hub, &sha);
    // The scratch checkout the killed hub left was cleared.
    let beside_clone = hub.dir.join("data").join("repos").join("app");
    let left: Vec<_> = std::fs::read_dir(&beside_clone)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("scratch-"))
        .collect();
    assert!(left.is_empty(), "scratch checkouts left: {left:?}");
}

/// The hub is killed (`kill -9`) after the remote took its push of the
/// merge commit but before the hub heard back (a `post-receive` hook holds
/// the push): main moved, the queue never recorded it. Restarted, the hub
/// finds the change already on main and records it merged as that
/// commit; it never merges it a second time, and until it has looked
/// nobody can reject the change (before the fix a reject in that window
/// answered `rejected` and killed the task of a change on main).
#[test]
fn a_hub_killed_after_its_push_recognises_the_merge_after_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let p = Project::new(root.path());
    let mut hub = start_pipeline_hub(&p, 1, "auto_merge = false", &[]);
    let _ann = p.agent(&hub, "ann", &[]);
    let first = p.main();
    wait_green(&hub, &first);
    p.step("line five", &Project::set_line(5, "five, pushed once"));
    let task = submit_repo_task(&hub, "line five");
    let c = wait_change_status(&hub, &task, "escalated", T);
    let id = c["id"].as_str().unwrap().to_string();
    let head = c["head"].as_str().unwrap().to_string();

    p.hold_pushes_to_main();
    hub.ok("POST", &format!("/api/changes/{id}/approve"), None);
    let pushed = p.wait_held_push(T);
    // The remote took it; the hub has not recorded it.
    assert_eq!(p.main(), pushed);
    assert_eq!(change(&hub, &id)["status"], "merging");
    assert_eq!(hub.task(&task)["status"], "in_review");

    hub.kill9();
    p.release_pushes();
    // The restarted hub first checks main (held here) before it gets to
    // its merge queue: meanwhile the change, already on main, cannot be
    // rejected.
    p.hold_check();
    hub.restart();
    assert_eq!(p.wait_held_check(T), pushed);
    let (s, v) = hub.call(
        "POST",
        &format!("/api/changes/{id}/reject"),
        Some(json!({"reason": "too late", "requeue": false})),
    );
    assert_eq!(s, 409, "{v}");
    assert_eq!(change(&hub, &id)["status"], "merging");
    p.release_check();

    let merged = wait_change_status(&hub, &task, "merged", T);
    assert_eq!(merged["merged_sha"], pushed.as_str(), "{merged}");
    assert_eq!(
        hub.wait_status(&task, "completed", T)["status"],
        "completed"
    );
    assert_eq!(p.main(), pushed);
    assert_eq!(p.main_history(), [pushed.clone(), first]);
    assert_eq!(p.merges_of_change(&id), vec![pushed.clone()]);
    assert_eq!(p.main_children_of(&head), vec![pushed.clone()]);
    assert_eq!(changes_of(&hub, &task).len(), 1);
    let full = change(&hub, &id);
    assert_eq!(merged_events(&full), 1, "{full}");
    assert_eq!(hub_commits_on_main_passed(&p), 1);
    // Main stays where it is: the restarted hub knows it as green.
    wait_green(&hub, &pushed);
    assert_eq!(p.main_history().len(), 2);
}

/// Main moves under a merge: while the check runs on the merge commit
/// (onto the old main), someone pushes a broken main. The checked merge
/// commit is never pushed (the push is a compare-and-swap); the hub merges
/// again onto the new main, finds it red, and holds the change (not blamed:
/// it is not sent back) until a fixing push turns main green; then it
/// merges onto the fixed main.
#[test]
fn a_merge_whose_main_moved_is_redone_onto_the_new_main() {
    let root = tempfile::tempdir().unwrap();
    let p = Project::new(root.path());
    let hub = start_pipeline_hub(&p, 1, "auto_merge = true", &[]);
    let _ann = p.agent(&hub, "ann", &[]);
    let first = p.main();
    wait_green(&hub, &first);

    p.hold_check();
    p.step("line two", &Project::set_line(2, "two, merged late"));
    let task = submit_repo_task(&hub, "line two");
    let stale = p.wait_held_check(T);
    let c = wait_change_status(&hub, &task, "merging", T);
    let id = c["id"].as_str().unwrap().to_string();
    let head = c["head"].as_str().unwrap().to_string();
    let broken = p.push_to_main("break main", &Project::set_line(9, "line 9 BROKEN"));
    p.release_check();

    wait_repo(&hub, "app", T, "red at the pushed main", |r| {
        r["main_sha"] == broken && r["health"] == "red"
    });
    assert!(p.checked().contains(&(stale.clone(), true)));
    assert!(p.checked().contains(&(broken.clone(), false)));
    // Held, not blamed: still in the merge queue, its task still in review.
    let now = change(&hub, &id);
    assert_eq!(now["status"], "merging", "{now}");
    assert_eq!(hub.task(&task)["status"], "in_review");
    assert_eq!(p.main(), broken);

    let fixed = p.push_to_main("fix main", "sed -i 's/ BROKEN//' lines.txt");
    let merged = wait_change_status(&hub, &task, "merged", T);
    let sha = merged["merged_sha"].as_str().unwrap().to_string();
    assert_ne!(
        sha, stale,
        "the merge commit checked onto the old main was pushed"
    );
    assert_eq!(
        p.main_history(),
        [sha.clone(), fixed.clone(), broken, first]
    );
    let parents =
        agentcom_tests::procs::sh(&p.remote(), &format!("git rev-list --parents -n 1 {sha}"));
    assert_eq!(parents, format!("{sha} {fixed} {head}"));
    assert_eq!(changes_of(&hub, &task).len(), 1);
    assert_eq!(merged_events(&change(&hub, &id)), 1);
    assert_eq!(hub.wait_status(&task, "completed", T)["attempts"], 1);
    assert_eq!(hub_commits_on_main_passed(&p), 1);
}

/// The hub is killed while main is red and restarted: until its first
/// check of main (held here) says otherwise, main is still red to it — the
/// repository's new tasks are not assigned and merges stay paused; once a
/// fixing push is checked green, the task runs and merges. (Before the fix
/// a restarted hub forgot: `health: unknown`, `merges_paused: false`, and
/// the task went to an agent to be built on the broken main.)
#[test]
fn a_red_main_stays_red_across_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let p = Project::new(root.path());
    let mut hub = start_pipeline_hub(&p, 1, "auto_merge = true", &[]);
    let _ann = p.agent(&hub, "ann", &[]);
    let first = p.main();
    wait_green(&hub, &first);
    let broken = p.push_to_main("break main", &Project::set_line(7, "line 7 BROKEN"));
    wait_repo(&hub, "app", T, "red", |r| {
        r["main_sha"] == broken && r["health"] == "red"
    });

    hub.kill9();
    p.hold_check();
    hub.restart();
    // The restarted hub re-checks main (held): meanwhile it is not green.
    assert_eq!(p.wait_held_check(T), broken);
    let r = repo(&hub, "app");
    assert_eq!(r["health"], "red", "{r}");
    assert_eq!(r["main_sha"], broken.as_str(), "{r}");
    assert_eq!(r["merges_paused"], true, "{r}");
    // The new hub says so too.
    assert!(alerts(&hub, "main_red")
        .iter()
        .any(|a| a["subject"] == "app"));
    p.step("line three", &Project::set_line(3, "three, after the fix"));
    let waiting = submit_repo_task(&hub, "line three");
    let other = hub.submit(json!({"title": "no repository"}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        hub.wait_status(&other, "completed", T)["assigned_to"],
        "ann"
    );
    let w = hub.task(&waiting);
    assert_eq!(w["status"], "queued", "{w}");
    assert!(w["assigned_to"].is_null(), "{w}");

    p.release_check();
    wait_repo(&hub, "app", T, "red again after the check", |r| {
        r["main_sha"] == broken && r["health"] == "red"
    });
    assert!(alerts(&hub, "main_red")
        .iter()
        .any(|a| a["subject"] == "app"));
    assert_eq!(hub.task(&waiting)["status"], "queued");
    let fixed = p.push_to_main("fix main", "sed -i 's/ BROKEN//' lines.txt");
    let merged = wait_change_status(&hub, &waiting, "merged", T);
    let sha = merged["merged_sha"].as_str().unwrap().to_string();
    assert_eq!(p.main_history(), [sha, fixed, broken, first]);
    assert_eq!(hub_commits_on_main_passed(&p), 1);
}
