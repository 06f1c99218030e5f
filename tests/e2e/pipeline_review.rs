//! Who decides a change the gate does not let through by itself: an agent
//! reviewing it (`review = "agent"`: approve, request changes, escalate),
//! or a person over the API (approve, reject with or without a new
//! attempt), with the API's refusals (wrong state, wrong role, bad body).
//! Real hub, real sidecars, real git: see `agentcom_tests::project`.

use std::time::Duration;

use agentcom_tests::hub::{events, Hub};
use agentcom_tests::project::{
    alerts, change, changes_of, start_pipeline_hub, submit_repo_task, wait_change_status, Project,
};
use agentcom_tests::sidecar::Sidecar;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);

/// A task with no repository and no step: done at once, commits nothing.
fn filler(hub: &Hub, title: &str) -> String {
    hub.submit(json!({ "title": title }))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn history_events(c: &Value) -> Vec<String> {
    c["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("").to_string())
        .collect()
}

/// `review = "agent"`: the review task goes to an agent with capability
/// `review` that is not the author — even when the author has it and is
/// idle — and its verdict decides: approve merges, request_changes sends
/// the task back with the notes (the next attempt sees them and does
/// better, then it is approved and merged), escalate hands the change to a
/// person with a `change_escalated` alert, and so does a verdict the hub
/// does not know.
#[test]
fn an_agent_reviews_and_its_verdict_decides() {
    let root = tempfile::tempdir().unwrap();
    let p = Project::new(root.path());
    let hub = start_pipeline_hub(
        &p,
        1,
        "auto_merge = true\nmax_files = 20\nmax_lines = 400\nreview = \"agent\"",
        &[],
    );
    // The author can review too: it must still never review its own change.
    let _ann = p.agent(&hub, "ann", &["review"]);

    // --- approve ------------------------------------------------------------
    p.step("approve: line 2", &Project::set_line(2, "two, approved"));
    let approve_task = submit_repo_task(&hub, "approve: line 2");
    let c = wait_change_status(&hub, &approve_task, "reviewing", T);
    assert_eq!(c["gate"]["decision"], "review", "{c}");
    assert_eq!(hub.task(&approve_task)["status"], "in_review");
    let review_id = c["review"]["task_id"].as_str().unwrap().to_string();
    let review = hub.task(&review_id);
    assert_eq!(review["kind"], "review", "{review}");
    assert_eq!(review["metadata"]["change_id"], c["id"], "{review}");
    assert_eq!(review["needed_capabilities"], json!(["review"]), "{review}");
    // The author is idle and able to review; a task queued after the review
    // task goes to it, and the review task does not.
    let f = filler(&hub, "filler while the review waits");
    let done = hub.wait_status(&f, "completed", T);
    assert_eq!(done["assigned_to"], "ann");
    let review = hub.task(&review_id);
    assert_eq!(review["status"], "queued", "{review}");
    assert!(review["assigned_to"].is_null(), "{review}");
    // Another reviewer arrives: it takes the review.
    let _rev = Sidecar::start(
        p.root(),
        &hub,
        "rev",
        &["review"],
        &p.reviewer_runner("rev"),
        "",
    );
    let merged = wait_change_status(&hub, &approve_task, "merged", T);
    let review = hub.wait_status(&review_id, "completed", T);
    assert_eq!(review["assigned_to"], "rev", "{review}");
    assert!(
        review["history"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["agent_id"] != "ann"),
        "the author touched its own review: {review}"
    );
    assert_eq!(merged["review"]["verdict"], "approve", "{merged}");
    assert_eq!(merged["review"]["task_id"], review_id.as_str());
    assert_eq!(hub.task(&approve_task)["status"], "completed");
    assert_eq!(p.main(), merged["merged_sha"].as_str().unwrap());
    assert!(p.main_file("lines.txt").contains("two, approved"));

    // --- request_changes, then approve --------------------------------------
    // The reviewer wants line 9 too; the step does it only once the task
    // it is given carries the reviewer's notes.
    p.step(
        "redo: line 5",
        &format!(
            "{}\nif grep -q 'please also set line 9' \"$AGENTCOM_TASK_FILE\"; then {}; fi",
            Project::set_line(5, "five, redone"),
            Project::set_line(9, "nine, as asked")
        ),
    );
    p.verdict(
        "redo: line 5",
        r#"if git --git-dir="$REMOTE" show "$HEAD:lines.txt" | grep -q 'nine, as asked'; then
  echo approve; echo 'now it is right'
else
  echo request_changes; echo 'please also set line 9'
fi"#,
    );
    // --- escalate -----------------------------------------------------------
    p.step("escalate: line 7", &Project::set_line(7, "seven, doubtful"));
    p.verdict(
        "escalate: line 7",
        "echo escalate; echo 'a person should look at line 7'",
    );
    // --- a verdict the hub does not know: a person decides -------------------
    p.step("unsure: line 3", &Project::set_line(3, "three, unsure"));
    p.verdict("unsure: line 3", "echo maybe; echo 'not sure'");
    let redo_task = submit_repo_task(&hub, "redo: line 5");
    let esc_task = submit_repo_task(&hub, "escalate: line 7");
    let unsure_task = submit_repo_task(&hub, "unsure: line 3");

    let second = wait_change_status(&hub, &redo_task, "merged", T);
    let all = changes_of(&hub, &redo_task);
    assert_eq!(all.len(), 2, "one change sent back, one merged: {all:?}");
    let first = all.iter().find(|c| c["status"] == "sent_back").unwrap();
    let first = change(&hub, first["id"].as_str().unwrap());
    assert_eq!(first["review"]["verdict"], "request_changes", "{first}");
    assert_eq!(
        first["review"]["notes"], "please also set line 9",
        "{first}"
    );
    assert!(first["merged_sha"].is_null());
    assert!(history_events(&first).contains(&"reviewed".to_string()));
    assert_eq!(second["review"]["verdict"], "approve", "{second}");
    assert!(second["generation"].as_u64() > first["generation"].as_u64());
    let redo = hub.wait_status(&redo_task, "completed", T);
    assert!(events(&redo).contains(&"sent_back".to_string()), "{redo:#}");
    let sent_back = redo["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "sent_back")
        .unwrap();
    assert!(
        sent_back["detail"]
            .as_str()
            .unwrap_or("")
            .contains("please also set line 9"),
        "the notes are not in the task's history: {sent_back}"
    );
    assert_eq!(redo["attempts"], 2, "{redo:#}");
    let lines = p.main_file("lines.txt");
    assert!(lines.contains("five, redone") && lines.contains("nine, as asked"));
    // The first attempt's head never reached main.
    let first_head = first["head"].as_str().unwrap();
    assert!(p.main_children_of(first_head).is_empty());

    let esc = wait_change_status(&hub, &esc_task, "escalated", T);
    assert_eq!(esc["review"]["verdict"], "escalate", "{esc}");
    assert_eq!(esc["review"]["notes"], "a person should look at line 7");
    assert_eq!(hub.task(&esc_task)["status"], "in_review");
    let alert = alerts(&hub, "change_escalated")
        .into_iter()
        .find(|a| a["subject"] == esc["id"])
        .unwrap_or_else(|| panic!("no change_escalated alert for {esc}"));
    assert!(
        alert["message"]
            .as_str()
            .unwrap()
            .contains("a person should look at line 7"),
        "{alert}"
    );
    assert!(!p.main_file("lines.txt").contains("seven, doubtful"));

    let unsure = wait_change_status(&hub, &unsure_task, "escalated", T);
    let unsure = change(&hub, unsure["id"].as_str().unwrap());
    assert!(
        unsure["history"].to_string().contains("no verdict"),
        "{unsure}"
    );
    assert!(alerts(&hub, "change_escalated")
        .iter()
        .any(|a| a["subject"] == unsure["id"]));

    // Every review went to rev; ann reviewed nothing.
    let mut reviewed = p.reviewed_by("rev");
    reviewed.sort();
    assert_eq!(
        reviewed,
        [
            "approve: line 2",
            "escalate: line 7",
            "redo: line 5",
            "redo: line 5",
            "unsure: line 3"
        ]
    );
    for t in hub.tasks(None) {
        if t["kind"] == "review" {
            assert_eq!(t["assigned_to"], "rev", "{t}");
        }
    }
}

/// `auto_merge = false`: every change waits for a person. Approve merges
/// it (main has it, the task completes); reject without a new attempt
/// kills the task with the reason; reject with `requeue` sends the task
/// again and it is redone. Approving or rejecting a change that does not
/// wait for a person is a 409 that changes nothing; a viewer gets 403;
/// a reason empty or over 4096 bytes is a 422.
#[test]
fn a_person_approves_and_rejects_over_the_api() {
    let root = tempfile::tempdir().unwrap();
    let p = Project::new(root.path());
    let viewer = "viewer-token-of-sixteen-or-more";
    let hub = start_pipeline_hub(
        &p,
        1,
        "auto_merge = false",
        &[("AGENTCOM_VIEWER_TOKEN", viewer)],
    );
    let _ann = p.agent(&hub, "ann", &[]);
    p.step("take it", &Project::set_line(2, "two, taken"));
    p.step("drop it", &Project::set_line(4, "four, dropped"));
    p.step("again", "n=$(ls ../again-* 2>/dev/null | wc -l); touch ../again-$n; sed -i \"6s/.*/six, try $n/\" lines.txt");
    let take = submit_repo_task(&hub, "take it");
    let drop = submit_repo_task(&hub, "drop it");
    let again = submit_repo_task(&hub, "again");
    let take_c = wait_change_status(&hub, &take, "escalated", T);
    let drop_c = wait_change_status(&hub, &drop, "escalated", T);
    let again_c = wait_change_status(&hub, &again, "escalated", T);
    assert_eq!(take_c["gate"]["decision"], "escalate", "{take_c}");
    assert!(
        take_c["gate"]["reasons"]
            .to_string()
            .contains("auto_merge is off"),
        "{take_c}"
    );
    for c in [&take_c, &drop_c, &again_c] {
        assert!(alerts(&hub, "change_escalated")
            .iter()
            .any(|a| a["subject"] == c["id"]));
    }
    let id = |c: &Value| c["id"].as_str().unwrap().to_string();
    let (take_id, drop_id, again_id) = (id(&take_c), id(&drop_c), id(&again_c));
    let before = p.main();

    // --- a viewer reads but may not decide ------------------------------------
    let (s, _) = hub.raw(
        "GET",
        &format!("/api/changes/{take_id}"),
        Some(viewer),
        None,
    );
    assert_eq!(s, 200);
    let (s, v) = hub.raw(
        "POST",
        &format!("/api/changes/{take_id}/approve"),
        Some(viewer),
        None,
    );
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["code"], "forbidden", "{v}");
    let (s, v) = hub.raw(
        "POST",
        &format!("/api/changes/{drop_id}/reject"),
        Some(viewer),
        Some(r#"{"reason":"no","requeue":false}"#),
    );
    assert_eq!(s, 403, "{v}");
    let (s, _) = hub.raw(
        "POST",
        &format!("/api/changes/{take_id}/approve"),
        None,
        None,
    );
    assert_eq!(s, 401);

    // --- bad bodies ---------------------------------------------------------
    for reason in [String::new(), "   ".into(), "x".repeat(4097)] {
        let (s, v) = hub.call(
            "POST",
            &format!("/api/changes/{drop_id}/reject"),
            Some(json!({"reason": reason, "requeue": false})),
        );
        assert_eq!(s, 422, "reason of {} bytes: {v}", reason.len());
        assert_eq!(v["error"]["code"], "invalid", "{v}");
    }
    // Exactly 4096 bytes is allowed (used below on the real rejection).
    let (s, v) = hub.raw(
        "POST",
        &format!("/api/changes/{drop_id}/reject"),
        Some(&hub.token),
        Some("{\"reason\": "),
    );
    assert_eq!(s, 400, "{v}");
    let (s, v) = hub.call("POST", "/api/changes/no-such-change/approve", None);
    assert_eq!(s, 404, "{v}");
    // None of that changed anything.
    for c in [&take_id, &drop_id, &again_id] {
        assert_eq!(change(&hub, c)["status"], "escalated");
    }
    assert_eq!(p.main(), before);

    // --- approve --------------------------------------------------------------
    let v = hub.ok("POST", &format!("/api/changes/{take_id}/approve"), None);
    assert!(
        ["merging", "merged"].contains(&v["status"].as_str().unwrap()),
        "{v}"
    );
    let merged = wait_change_status(&hub, &take, "merged", T);
    let sha = merged["merged_sha"].as_str().unwrap().to_string();
    assert_eq!(p.main(), sha);
    assert!(p.main_file("lines.txt").contains("two, taken"));
    assert_eq!(
        hub.wait_status(&take, "completed", T)["status"],
        "completed"
    );
    assert!(history_events(&change(&hub, &take_id)).contains(&"approved".to_string()));
    // Approving (or rejecting) it again: 409, nothing moves.
    let (s, v) = hub.call("POST", &format!("/api/changes/{take_id}/approve"), None);
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "conflict", "{v}");
    let (s, v) = hub.call(
        "POST",
        &format!("/api/changes/{take_id}/reject"),
        Some(json!({"reason": "too late", "requeue": true})),
    );
    assert_eq!(s, 409, "{v}");
    assert_eq!(change(&hub, &take_id)["status"], "merged");
    assert_eq!(hub.task(&take)["status"], "completed");
    assert_eq!(p.main(), sha);

    // --- reject, no new attempt ----------------------------------------------
    let reason = format!("not wanted {}", "!".repeat(4096 - 11));
    assert_eq!(reason.len(), 4096);
    let v = hub.ok(
        "POST",
        &format!("/api/changes/{drop_id}/reject"),
        Some(json!({"reason": reason, "requeue": false})),
    );
    assert_eq!(v["status"], "rejected", "{v}");
    let dropped = change(&hub, &drop_id);
    let rejected = dropped["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "rejected")
        .unwrap_or_else(|| panic!("{dropped}"));
    assert!(
        rejected["detail"]
            .as_str()
            .unwrap()
            .starts_with("not wanted"),
        "{rejected}"
    );
    let dead = hub.wait_status(&drop, "dead", T);
    assert!(
        dead["last_error"]
            .as_str()
            .unwrap()
            .starts_with("not wanted"),
        "{dead}"
    );
    assert_eq!(changes_of(&hub, &drop).len(), 1);
    assert!(!p.main_file("lines.txt").contains("four, dropped"));
    // A rejected change cannot be approved.
    let (s, v) = hub.call("POST", &format!("/api/changes/{drop_id}/approve"), None);
    assert_eq!(s, 409, "{v}");
    assert_eq!(change(&hub, &drop_id)["status"], "rejected");

    // --- reject, do it again ----------------------------------------------------
    let v = hub.ok(
        "POST",
        &format!("/api/changes/{again_id}/reject"),
        Some(json!({"reason": "try once more", "requeue": true})),
    );
    assert_eq!(v["status"], "rejected", "{v}");
    // Redone by the agent: a new change, escalated again.
    let second = wait_until_new_change(&hub, &again, &again_id, "escalated");
    let redone = hub.task(&again);
    assert_eq!(redone["status"], "in_review", "{redone}");
    assert!(
        events(&redone).contains(&"rejected".to_string()),
        "{redone:#}"
    );
    assert!(
        redone["history"].to_string().contains("try once more"),
        "{redone:#}"
    );
    assert!(second["generation"].as_u64() > again_c["generation"].as_u64());
    assert_eq!(change(&hub, &again_id)["status"], "rejected");
    hub.ok(
        "POST",
        &format!("/api/changes/{}/approve", second["id"].as_str().unwrap()),
        None,
    );
    let merged = wait_change_status(&hub, &again, "merged", T);
    assert_eq!(p.main(), merged["merged_sha"].as_str().unwrap());
    assert!(p.main_file("lines.txt").contains("six, try 1"));
    hub.wait_status(&again, "completed", T);
}

fn wait_until_new_change(hub: &Hub, task: &str, old: &str, status: &str) -> Value {
    agentcom_tests::wait_until(T, &format!("a new change of {task} to be {status}"), || {
        changes_of(hub, task)
            .into_iter()
            .find(|c| c["id"] != old && c["status"] == status)
    })
}

/// A person rejects a change (or cancels its task) while the merge queue
/// is checking its merge commit, which may be on main any moment: a 409
/// that changes nothing, and the change merges. (Before the fix the
/// reject answered 200 `rejected`, the task went dead, and the change
/// reached main anyway.) Waiting in the queue, not yet handed out, a
/// change can still be rejected (hub unit test
/// `a_change_being_merged_is_neither_rejected_nor_cancelled`).
#[test]
fn a_change_whose_merge_is_being_checked_cannot_be_rejected() {
    let root = tempfile::tempdir().unwrap();
    let p = Project::new(root.path());
    let hub = start_pipeline_hub(&p, 1, "auto_merge = true", &[]);
    let _ann = p.agent(&hub, "ann", &[]);
    let first = p.main();
    agentcom_tests::project::wait_repo(&hub, "app", T, "green", |r| {
        r["health"] == "green" && r["main_sha"] == first.as_str()
    });
    p.hold_check();
    p.step("line eight", &Project::set_line(8, "eight, kept"));
    let task = submit_repo_task(&hub, "line eight");
    p.wait_held_check(T);
    let c = wait_change_status(&hub, &task, "merging", T);
    let id = c["id"].as_str().unwrap().to_string();
    let (s, v) = hub.call(
        "POST",
        &format!("/api/changes/{id}/reject"),
        Some(json!({"reason": "changed my mind", "requeue": false})),
    );
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "conflict", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("being merged"),
        "{v}"
    );
    let (s, v) = hub.call("POST", &format!("/api/tasks/{task}/cancel"), None);
    assert_eq!(s, 409, "{v}");
    assert_eq!(change(&hub, &id)["status"], "merging");
    assert_eq!(hub.task(&task)["status"], "in_review");
    p.release_check();
    let merged = wait_change_status(&hub, &task, "merged", T);
    assert_eq!(p.main(), merged["merged_sha"].as_str().unwrap());
    assert!(p.main_file("lines.txt").contains("eight, kept"));
    hub.wait_status(&task, "completed", T);
    assert!(!history_events(&change(&hub, &id)).contains(&"rejected".to_string()));
}
