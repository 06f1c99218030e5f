//! Unit tests of the change rules, driven without git, actors or a store.

use super::*;
use crate::domain::queue::testing;
use agentcom_protocol::TaskStatus;

fn t(ms: i64) -> Timestamp {
    Timestamp(1_800_000_000_000 + ms)
}

/// A task on repository `app` in review (its attempt completed with a
/// change).
fn task(id: &str, generation: u64) -> Task {
    Task {
        repo: Some("app".into()),
        status: TaskStatus::InReview,
        attempts: 1,
        ..testing::task(id, generation)
    }
}

fn gate(decision: GateDecision) -> Gate {
    Gate {
        decision,
        reasons: vec!["because".into()],
    }
}

fn core() -> ChangeCore {
    ChangeCore::new(2, 60_000)
}

fn events(deltas: &[ChangeDelta], id: &str) -> Vec<String> {
    deltas
        .iter()
        .filter(|d| d.change.id == id)
        .flat_map(|d| d.new_history.iter().map(|(_, h)| h.event.clone()))
        .collect()
}

#[test]
fn a_change_is_opened_judged_queued_and_merged() {
    let mut c = core();
    let o = c.open(&task("t1", 1), "a1", "a1/t1", "b0", "h1", t(1));
    assert_eq!(o.superseded, None);
    let id = o.change.id.clone();
    assert_eq!(c.live_for_task("t1").unwrap().id, id);
    let to = c
        .judged(
            &id,
            vec!["src/a.rs".into()],
            3,
            1,
            gate(GateDecision::AutoMerge),
            t(2),
        )
        .unwrap();
    assert_eq!(to, ChangeStatus::Merging);
    assert_eq!(c.next_to_merge("app").unwrap().id, id);
    assert_eq!(c.next_to_merge("other"), None);
    c.merged(&id, "m1", None, t(3)).unwrap();
    assert_eq!(c.next_to_merge("app"), None);
    assert_eq!(c.live_for_task("t1"), None);
    let d = c.take_deltas();
    assert_eq!(events(&d, &id), ["opened", "gated", "merged"]);
    assert_eq!(d[0].previous_status, None);
    assert_eq!(d[0].change.merged_sha.as_deref(), Some("m1"));
    assert_eq!(d[0].change.files_changed, 1);
}

#[test]
fn a_newer_attempt_supersedes_the_live_change() {
    let mut c = core();
    let first = c
        .open(&task("t1", 1), "a1", "a1/t1", "b0", "h1", t(1))
        .change
        .id;
    c.judged(&first, vec![], 0, 0, gate(GateDecision::Escalate), t(2))
        .unwrap();
    let second = c.open(&task("t1", 2), "a2", "a2/t1", "b0", "h2", t(3));
    assert_eq!(second.superseded.as_deref(), Some(first.as_str()));
    assert_eq!(c.get(&first).unwrap().status, ChangeStatus::Superseded);
    assert_eq!(c.live_for_task("t1").unwrap().id, second.change.id);
    // The superseded one can no longer be approved.
    assert!(matches!(
        c.approve(&first, t(4)),
        Err(ChangeError::Conflict(_))
    ));
}

#[test]
fn the_merge_queue_is_first_come_per_repository() {
    let mut c = core();
    let mut ids = vec![];
    for (i, name) in ["t1", "t2", "t3"].iter().enumerate() {
        let id = c
            .open(&task(name, 1), "a1", "b", "b0", "h", t(i as i64))
            .change
            .id;
        ids.push(id);
    }
    // Judged in reverse: the queue follows when they joined it.
    for (i, id) in ids.iter().rev().enumerate() {
        c.judged(
            id,
            vec![],
            0,
            0,
            gate(GateDecision::AutoMerge),
            t(10 + i as i64),
        )
        .unwrap();
    }
    assert_eq!(
        c.merge_queue("app"),
        [ids[2].clone(), ids[1].clone(), ids[0].clone()]
    );
    c.merge_failed(&ids[2], "conflict", "src/a.rs conflicts", None, t(20))
        .unwrap();
    assert_eq!(c.next_to_merge("app").unwrap().id, ids[1]);
    assert_eq!(c.get(&ids[2]).unwrap().status, ChangeStatus::SentBack);
}

#[test]
fn reviews_approve_send_back_or_escalate() {
    for (verdict, want) in [
        (Verdict::Approve, ChangeStatus::Merging),
        (Verdict::RequestChanges, ChangeStatus::SentBack),
        (Verdict::Escalate, ChangeStatus::Escalated),
    ] {
        let mut c = core();
        let id = c.open(&task("t1", 1), "a1", "b", "b0", "h", t(1)).change.id;
        c.judged(&id, vec![], 0, 0, gate(GateDecision::Review), t(2))
            .unwrap();
        c.review_requested(&id, "r1", t(3)).unwrap();
        let got = c
            .reviewed(&id, "reviewer", verdict, Some("notes".into()), t(4))
            .unwrap();
        assert_eq!(got, want);
        let r = c.get(&id).unwrap().review.clone().unwrap();
        assert_eq!((r.task_id.as_str(), r.verdict), ("r1", Some(verdict)));
        assert_eq!(r.agent_id.as_deref(), Some("reviewer"));
    }
}

#[test]
fn a_person_approves_or_rejects_only_live_changes() {
    let mut c = core();
    let id = c.open(&task("t1", 1), "a1", "b", "b0", "h", t(1)).change.id;
    assert!(
        matches!(c.approve(&id, t(2)), Err(ChangeError::Conflict(_))),
        "open: not yet judged"
    );
    c.judged(&id, vec![], 0, 0, gate(GateDecision::Escalate), t(2))
        .unwrap();
    c.approve(&id, t(3)).unwrap();
    assert_eq!(c.get(&id).unwrap().status, ChangeStatus::Merging);
    c.reject(&id, "no", t(4)).unwrap();
    assert_eq!(c.get(&id).unwrap().status, ChangeStatus::Rejected);
    assert!(matches!(
        c.reject(&id, "again", t(5)),
        Err(ChangeError::Conflict(_))
    ));
    assert!(matches!(
        c.approve("nope", t(5)),
        Err(ChangeError::NotFound(_))
    ));
}

#[test]
fn finished_changes_are_forgotten_after_a_while_and_restore_keeps_the_queue() {
    let mut c = core(); // keeps 2 finished, for 60 s
    let mut merging = vec![];
    for i in 0..4 {
        let id = c
            .open(&task(&format!("t{i}"), 1), "a1", "b", "b0", "h", t(i))
            .change
            .id;
        c.judged(&id, vec![], 0, 0, gate(GateDecision::AutoMerge), t(10 + i))
            .unwrap();
        merging.push(id);
    }
    for id in &merging[..3] {
        c.merged(id, "m", None, t(20)).unwrap();
    }
    let d = c.take_deltas();
    c.durable(&d, t(21));
    assert!(
        c.get(&merging[0]).is_none(),
        "the oldest finished is forgotten"
    );
    assert!(c.get(&merging[2]).is_some());
    // A restart from the live changes keeps the merge queue.
    let live: Vec<(Change, u32)> = c.live().map(|ch| (ch.clone(), 3)).collect();
    let back = ChangeCore::restore(2, 60_000, live);
    assert_eq!(back.next_to_merge("app").unwrap().id, merging[3]);
    assert_eq!(back.live_for_task("t3").unwrap().id, merging[3]);
}

#[test]
fn a_cancelled_task_takes_its_live_change_with_it() {
    let mut c = core();
    let id = c.open(&task("t1", 1), "a1", "b", "b0", "h", t(1)).change.id;
    assert_eq!(
        c.task_ended("t1", "task cancelled", t(2)).as_deref(),
        Some(id.as_str())
    );
    assert_eq!(c.get(&id).unwrap().status, ChangeStatus::Rejected);
    assert_eq!(c.task_ended("t1", "again", t(3)), None);
}

#[test]
fn after_a_restart_the_first_of_each_merge_queue_may_be_on_main_already() {
    let mut c = core();
    let mut merging = vec![];
    for (i, task_id) in ["t1", "t2"].iter().enumerate() {
        let id = c
            .open(&task(task_id, 1), "a1", "b", "b0", "h", t(i as i64 * 10))
            .change
            .id;
        c.judged(
            &id,
            vec![],
            0,
            0,
            gate(GateDecision::AutoMerge),
            t(i as i64 * 10 + 1),
        )
        .unwrap();
        merging.push(id);
    }
    let escalated = c
        .open(&task("t3", 1), "a1", "b", "b0", "h", t(30))
        .change
        .id;
    c.judged(
        &escalated,
        vec![],
        0,
        0,
        gate(GateDecision::Escalate),
        t(31),
    )
    .unwrap();
    let live: Vec<(Change, u32)> = c.live().map(|ch| (ch.clone(), 3)).collect();
    // The hub restarts: the worker may have pushed the first one before
    // it died; nobody may reject it until the worker has looked.
    let mut c = ChangeCore::restore(2, 60_000, live);
    assert!(c.being_merged(&merging[0]));
    assert!(!c.being_merged(&merging[1]));
    assert!(matches!(
        c.reject(&merging[0], "no", t(40)),
        Err(ChangeError::Conflict(m)) if m.contains("being merged")
    ));
    c.reject(&merging[1], "no", t(41)).unwrap();
    c.reject(&escalated, "no", t(42)).unwrap();
    // The worker asks again: it is handed out (and found on main, or merged).
    c.merge_handed_out("app", None);
    c.reject(&merging[0], "no", t(43)).unwrap();
}

#[test]
fn only_an_escalated_change_can_be_approved() {
    let mut c = core();
    let id = c
        .open(&task("t9", 1), "a1", "a1/t9", "b0", "h9", t(1))
        .change
        .id;
    assert!(c.approve(&id, t(2)).is_err());
    assert_eq!(c.get(&id).unwrap().status, ChangeStatus::Open);
}
