//! Unit tests of the queue's rules, driven without sockets or a store.

use super::*;
use crate::domain::queue::testing::fail_as_task;
use agentcom_protocol::{Blame, FailClass, Priority};

fn t(ms: i64) -> Timestamp {
    Timestamp(1_800_000_000_000 + ms)
}

fn spec(title: &str) -> NewTask {
    NewTask {
        title: title.into(),
        ..Default::default()
    }
}

fn spec_with(title: &str, priority: Priority, needs: &[&str]) -> NewTask {
    NewTask {
        title: title.into(),
        priority: Some(priority),
        needed_capabilities: Some(needs.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    }
}

fn core() -> QueueCore {
    QueueCore::new(QueueSettings {
        default_max_retries: 2,
        default_timeout_s: 60,
        retry: RetryPolicy {
            backoff_s: vec![0, 30],
        },
        keep_finished: 2,
        keep_finished_ms: 60_000,
        idempotency_ms: 120_000,
        ..QueueSettings::default()
    })
}

fn created(c: Result<Created, QueueError>) -> Task {
    match c {
        Ok(Created::New(t)) => *t,
        other => panic!("expected a new task, got {other:?}"),
    }
}

fn agent(id: &str) -> IdleAgent {
    IdleAgent::new(id, &[], 0)
}

/// Create, claim for `who` and accept: the task is working at generation 1.
fn running(q: &mut QueueCore, who: &str) -> AttemptRef {
    let task = created(q.create(spec("job"), t(0)));
    let a = q.claim(&[agent(who)], t(1));
    assert_eq!(a.len(), 1);
    let r = AttemptRef::new(task.id, a[0].task.generation);
    assert_eq!(q.accept(&r, who, t(2)), Verdict::Applied);
    r
}

fn events(q: &QueueCore, changes: &[TaskDelta], id: &str) -> Vec<String> {
    let _ = q;
    changes
        .iter()
        .filter(|c| c.task.id == id)
        .flat_map(|c| {
            c.new_history
                .iter()
                .map(|(_, h)| h.event.as_str().to_string())
        })
        .collect()
}

#[test]
fn create_fills_defaults_and_records_history() {
    let mut q = core();
    let task = created(q.create(spec("a"), t(0)));
    assert_eq!(task.status, TaskStatus::Queued);
    assert_eq!(task.generation, 0);
    assert_eq!(task.max_retries, 2);
    assert_eq!(task.timeout_s, 60);
    assert_eq!(task.priority, Priority::Normal);
    let changes = q.take_deltas();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].previous_status, None);
    assert_eq!(changes[0].history_len, 1);
    assert_eq!(changes[0].new_history[0].1.event, TaskEvent::Created);
    assert!(q.take_deltas().is_empty(), "drained");
}

#[test]
fn ids_are_unique_and_increase() {
    let mut q = core();
    let a = created(q.create(spec("a"), t(0)));
    let b = created(q.create(spec("b"), t(0)));
    let c = created(q.create(spec("c"), t(1)));
    assert!(a.id < b.id && b.id < c.id, "{} {} {}", a.id, b.id, c.id);
}

#[test]
fn idempotency_key_returns_the_first_task() {
    let mut q = core();
    let s = NewTask {
        idempotency_key: Some("k1".into()),
        ..spec("a")
    };
    let first = created(q.create(s.clone(), t(0)));
    q.take_deltas();
    match q.create(s.clone(), t(5)) {
        Ok(Created::Existing(again)) => assert_eq!(again, first.id),
        other => panic!("{other:?}"),
    }
    assert!(q.take_deltas().is_empty(), "a dedupe writes nothing");
    assert_eq!(q.len(), 1);
    // The same key for another task is a conflict, and writes nothing.
    let other = NewTask {
        description: Some("something else".into()),
        ..s
    };
    assert!(matches!(q.create(other, t(6)), Err(QueueError::Conflict(m)) if m.contains("k1")));
    assert!(q.take_deltas().is_empty());
}

fn keyed(title: &str, key: &str) -> NewTask {
    NewTask {
        idempotency_key: Some(key.into()),
        ..spec(title)
    }
}

#[test]
fn a_batch_creates_every_task_in_order_as_one_set_of_changes() {
    let mut q = core();
    let answers = q
        .create_batch(vec![spec("a"), spec("b"), keyed("c", "kc")], t(0))
        .unwrap();
    let ids: Vec<String> = answers.into_iter().map(|c| created(Ok(c)).id).collect();
    assert!(ids[0] < ids[1] && ids[1] < ids[2], "{ids:?}");
    assert_eq!(q.len(), 3);
    assert_eq!(q.queued_len(), 3);
    let changes = q.take_deltas();
    assert_eq!(changes.len(), 3, "one delta a task, drained together");
    assert!(changes
        .iter()
        .all(|c| c.write_body && c.previous_status.is_none()));
    assert_eq!(changes[2].write_key.as_deref(), Some("kc"));
    // The key counts as any create's does.
    assert!(matches!(q.create(keyed("c", "kc"), t(1)), Ok(Created::Existing(id)) if id == ids[2]));
}

#[test]
fn a_batch_answers_keys_seen_before_with_their_task() {
    let mut q = core();
    let first = created(q.create(keyed("a", "ka"), t(0)));
    q.take_deltas();
    let answers = q
        .create_batch(vec![spec("new"), keyed("a", "ka")], t(1))
        .unwrap();
    assert!(matches!(&answers[0], Created::New(t) if t.title == "new"));
    assert_eq!(answers[1], Created::Existing(first.id.clone()));
    assert_eq!(q.take_deltas().len(), 1, "only the new task is written");
    assert_eq!(q.len(), 2);
}

#[test]
fn a_key_twice_in_one_batch_with_one_body_creates_one_task() {
    let mut q = core();
    let answers = q
        .create_batch(vec![keyed("a", "k"), spec("b"), keyed("a", "k")], t(0))
        .unwrap();
    let first = match &answers[0] {
        Created::New(t) => t.id.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(answers[2], Created::Existing(first));
    assert_eq!(q.len(), 2);
    assert_eq!(q.take_deltas().len(), 2);
}

#[test]
fn a_batch_with_a_key_conflict_creates_nothing_and_names_the_task() {
    let mut q = core();
    let first = created(q.create(keyed("a", "ka"), t(0)));
    q.take_deltas();
    // A key used before for another body, at index 2.
    let err = q
        .create_batch(
            vec![spec("x"), keyed("y", "ky"), keyed("not a", "ka")],
            t(1),
        )
        .unwrap_err();
    assert_eq!(err.0, 2);
    assert!(
        matches!(&err.1, QueueError::Conflict(m) if m.contains("\"ka\"") && m.contains(&first.id)),
        "{err:?}"
    );
    assert_eq!(q.len(), 1, "nothing created");
    assert!(q.take_deltas().is_empty(), "nothing to write");
    // Nor was the batch's other key taken: it creates now.
    assert!(matches!(
        q.create(keyed("other", "ky"), t(2)),
        Ok(Created::New(_))
    ));
    q.take_deltas();
    // The same key twice in one batch with different bodies.
    let err = q
        .create_batch(vec![keyed("p", "kp"), keyed("q", "kp"), spec("z")], t(3))
        .unwrap_err();
    assert_eq!(err.0, 1);
    assert!(
        matches!(&err.1, QueueError::Conflict(m) if m.contains("tasks[0]")),
        "{err:?}"
    );
    assert_eq!(q.len(), 2);
    assert!(q.take_deltas().is_empty());
    assert!(matches!(
        q.create(keyed("q", "kp"), t(4)),
        Ok(Created::New(_))
    ));
}

#[test]
fn a_batch_keeps_run_at_and_defaults_as_a_single_create_does() {
    let mut q = core();
    let later = NewTask {
        run_at: Some(t(10_000)),
        ..spec("later")
    };
    let answers = q.create_batch(vec![later, spec("now")], t(0)).unwrap();
    let (later, now) = match (&answers[0], &answers[1]) {
        (Created::New(a), Created::New(b)) => (a, b),
        other => panic!("{other:?}"),
    };
    assert_eq!(later.not_before, Some(t(10_000)));
    assert_eq!(now.max_retries, 2);
    assert_eq!(q.queued_len(), 1, "the one with run_at waits");
    assert_eq!(q.promote_due(t(10_000)), 1);
}

#[test]
fn claim_increments_generation_and_follows_lane_order() {
    let mut q = core();
    let low: Vec<Task> = (0..3)
        .map(|i| created(q.create(spec_with(&format!("low{i}"), Priority::Low, &[]), t(i))))
        .collect();
    let urgent = created(q.create(spec_with("urgent", Priority::Urgent, &[]), t(10)));
    let got = q.claim(&[agent("a")], t(11));
    assert_eq!(got[0].task.id, urgent.id);
    assert_eq!(got[0].task.generation, 1);
    assert_eq!(got[0].task.status, TaskStatus::Assigned);
    assert_eq!(got[0].task.assigned_to.as_deref(), Some("a"));
    let next = q.claim(&[agent("b")], t(12));
    assert_eq!(next[0].task.id, low[0].id);
}

#[test]
fn a_task_for_one_agent_goes_to_it_only_and_blocks_no_one() {
    let mut q = core();
    let pinned = created(q.create(
        NewTask {
            for_agent: Some("new".into()),
            ..spec_with("verify", Priority::Urgent, &[])
        },
        t(0),
    ));
    let plain = created(q.create(spec("plain"), t(1)));
    // Another idle agent (idle longer, so first in line) is passed over for
    // the pinned task and takes the one behind it.
    let got = q.claim(&[IdleAgent::new("old", &[], 0)], t(2));
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].task.id.as_str(), got[0].agent_id.as_str()),
        (plain.id.as_str(), "old")
    );
    assert_eq!(q.get(&pinned.id).unwrap().status, TaskStatus::Queued);
    // Only its agent gets it, even with others idle longer beside it.
    let got = q.claim(
        &[
            IdleAgent::new("other", &[], 0),
            IdleAgent::new("new", &[], 5),
        ],
        t(3),
    );
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].task.id.as_str(), got[0].agent_id.as_str()),
        (pinned.id.as_str(), "new")
    );
    assert_eq!(got[0].task.for_agent.as_deref(), Some("new"));
}

#[test]
fn for_agent_is_part_of_what_an_idempotency_key_names() {
    let mut q = core();
    let keyed = |only: Option<&str>| NewTask {
        idempotency_key: Some("k".into()),
        for_agent: only.map(str::to_string),
        ..spec("t")
    };
    let first = created(q.create(keyed(Some("a")), t(0)));
    assert!(
        matches!(q.create(keyed(Some("a")), t(1)), Ok(Created::Existing(id)) if id == first.id)
    );
    assert!(matches!(
        q.create(keyed(Some("b")), t(2)),
        Err(QueueError::Conflict(_))
    ));
    assert!(matches!(
        q.create(keyed(None), t(3)),
        Err(QueueError::Conflict(_))
    ));
}

#[test]
fn capability_mismatch_stays_queued() {
    let mut q = core();
    let gpu = created(q.create(spec_with("gpu", Priority::Normal, &["gpu"]), t(0)));
    assert!(q.claim(&[agent("a")], t(1)).is_empty());
    assert_eq!(q.get(&gpu.id).unwrap().status, TaskStatus::Queued);
    let got = q.claim(&[IdleAgent::new("g", &["gpu"], 0)], t(2));
    assert_eq!(got[0].task.id, gpu.id);
}

#[test]
fn accept_then_complete_records_one_completion() {
    let mut q = core();
    let r = running(&mut q, "a");
    assert_eq!(q.get(&r.task_id).unwrap().attempts, 1);
    let result = TaskResult {
        summary: Some("done".into()),
        ..Default::default()
    };
    assert_eq!(q.complete(&r, "a", result.clone(), t(3)), Verdict::Applied);
    let task = q.get(&r.task_id).unwrap();
    assert_eq!(task.status, TaskStatus::Completed);
    assert_eq!(
        task.result.as_ref().unwrap().summary.as_deref(),
        Some("done")
    );
    // A resend (the ack was lost) changes nothing.
    q.take_deltas();
    assert_eq!(q.complete(&r, "a", result, t(4)), Verdict::Duplicate);
    assert!(q.take_deltas().is_empty());
}

#[test]
fn stale_generation_changes_nothing_but_is_visible() {
    let mut q = core();
    let r1 = running(&mut q, "a");
    // Agent a is lost; the attempt fails over and b gets generation 2.
    assert_eq!(q.release(&r1, "agent a offline", t(3)), Verdict::Applied);
    assert_eq!(
        q.get(&r1.task_id).unwrap().status,
        TaskStatus::Queued,
        "backoff 0 requeues at once"
    );
    let a2 = q.claim(&[agent("b")], t(4));
    assert_eq!(a2[0].task.generation, 2);
    q.take_deltas();
    // a's late completion for generation 1 is stale.
    let late = TaskResult {
        summary: Some("late".into()),
        ..Default::default()
    };
    assert!(matches!(
        q.complete(&r1, "a", late, t(5)),
        Verdict::Stale(_)
    ));
    let task = q.get(&r1.task_id).unwrap();
    assert_eq!(task.status, TaskStatus::Assigned);
    assert_eq!(task.assigned_to.as_deref(), Some("b"));
    let changes = q.take_deltas();
    assert_eq!(events(&q, &changes, &r1.task_id), ["stale_report"]);
    let detail = changes[0].new_history[0].1.detail.clone().unwrap();
    assert!(
        detail.contains("late"),
        "late result stays visible: {detail}"
    );
    // b completes generation 2; nobody can complete it again.
    let r2 = AttemptRef::new(r1.task_id.clone(), 2);
    assert_eq!(q.accept(&r2, "b", t(6)), Verdict::Applied);
    assert_eq!(
        q.complete(&r2, "b", TaskResult::default(), t(7)),
        Verdict::Applied
    );
    assert!(matches!(
        q.complete(&r2, "a", TaskResult::default(), t(8)),
        Verdict::Stale(_)
    ));
    assert!(matches!(
        fail_as_task(&mut q, &r1, "a", "x", Retryable::Yes, t(8)),
        Verdict::Stale(_)
    ));
}

#[test]
fn report_from_the_wrong_agent_is_stale() {
    let mut q = core();
    let r = running(&mut q, "a");
    assert!(matches!(
        q.complete(&r, "intruder", TaskResult::default(), t(3)),
        Verdict::Stale(_)
    ));
    assert_eq!(q.get(&r.task_id).unwrap().status, TaskStatus::Working);
}

#[test]
fn failures_follow_backoff_then_dead() {
    let mut q = core(); // max_retries 2, backoff [0, 30]
    let r = running(&mut q, "a");
    q.take_deltas();
    // attempt 1 fails: immediate retry (backoff 0) → queued in the retry lane.
    assert_eq!(
        fail_as_task(&mut q, &r, "a", "boom", Retryable::Yes, t(10)),
        Verdict::Applied
    );
    let task = q.get(&r.task_id).unwrap();
    assert_eq!(task.status, TaskStatus::Queued);
    assert_eq!(task.last_error.as_deref(), Some("boom"));
    let changes = q.take_deltas();
    assert_eq!(events(&q, &changes, &r.task_id), ["failed", "requeued"]);

    // attempt 2 fails: backoff 30 s → failed with not_before.
    let g2 = q.claim(&[agent("a")], t(11))[0].task.generation;
    let r2 = AttemptRef::new(r.task_id.clone(), g2);
    q.accept(&r2, "a", t(12));
    fail_as_task(&mut q, &r2, "a", "boom", Retryable::Yes, t(20));
    let task = q.get(&r.task_id).unwrap();
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(task.not_before, Some(t(20).plus_secs(30.0)));
    assert_eq!(q.next_due(), task.not_before);
    assert!(
        q.claim(&[agent("a")], t(21)).is_empty(),
        "not claimable during backoff"
    );
    assert_eq!(q.promote_due(t(20 + 29_999)), 0);
    assert_eq!(q.promote_due(t(20 + 30_000)), 1);
    assert_eq!(q.get(&r.task_id).unwrap().status, TaskStatus::Queued);

    // attempt 3 fails: out of retries → dead.
    let g3 = q.claim(&[agent("a")], t(40_000))[0].task.generation;
    let r3 = AttemptRef::new(r.task_id.clone(), g3);
    q.accept(&r3, "a", t(40_001));
    fail_as_task(&mut q, &r3, "a", "boom", Retryable::Yes, t(40_002));
    let task = q.get(&r.task_id).unwrap();
    assert_eq!(task.status, TaskStatus::Dead);
    assert_eq!(task.attempts, 3);
    assert_eq!(task.generation, 3);
}

#[test]
fn non_retryable_failure_is_dead_at_once() {
    let mut q = core();
    let r = running(&mut q, "a");
    fail_as_task(&mut q, &r, "a", "bad input", Retryable::No, t(3));
    assert_eq!(q.get(&r.task_id).unwrap().status, TaskStatus::Dead);
}

#[test]
fn retried_tasks_wait_behind_fresh_ones() {
    let mut q = core();
    let r = running(&mut q, "a");
    fail_as_task(&mut q, &r, "a", "boom", Retryable::Yes, t(3)); // back in normal_retry
    let fresh = created(q.create(spec("fresh"), t(4)));
    let got = q.claim(&[agent("a")], t(5));
    assert_eq!(got[0].task.id, fresh.id);
    let got = q.claim(&[agent("b")], t(6));
    assert_eq!(got[0].task.id, r.task_id);
}

#[test]
fn release_of_an_unaccepted_task_keeps_its_place_and_budget() {
    let mut q = core();
    let first = created(q.create(spec("first"), t(0)));
    let second = created(q.create(spec("second"), t(1)));
    let a = q.claim(&[agent("a")], t(2));
    assert_eq!(a[0].task.id, first.id);
    let r = AttemptRef::new(first.id.clone(), 1);
    assert_eq!(q.release(&r, "accept timeout", t(3)), Verdict::Applied);
    let task = q.get(&first.id).unwrap();
    assert_eq!((task.status, task.attempts), (TaskStatus::Queued, 0));
    assert_eq!(
        q.lanes().ordered_ids(),
        [first.id.clone(), second.id.clone()]
    );
    // A second release of the same attempt is stale.
    assert!(matches!(q.release(&r, "again", t(4)), Verdict::Stale(_)));
    // Accept for the released attempt is stale too.
    assert!(matches!(q.accept(&r, "a", t(5)), Verdict::Stale(_)));
}

#[test]
fn cancel_rules() {
    let mut q = core();
    let queued = created(q.create(spec("q"), t(0)));
    let c = q.cancel(&queued.id, "operator", t(1)).unwrap();
    assert_eq!(c.task.status, TaskStatus::Cancelled);
    assert!(c.stop.is_none());
    assert!(q.lanes().is_empty());
    // Idempotent.
    assert!(q.cancel(&queued.id, "operator", t(2)).is_ok());

    let r = running(&mut q, "a");
    let c = q.cancel(&r.task_id, "operator", t(3)).unwrap();
    assert_eq!(c.stop, Some(("a".to_string(), r.clone())));
    // The agent's report afterwards changes nothing.
    assert!(matches!(
        q.complete(&r, "a", TaskResult::default(), t(4)),
        Verdict::Stale(_)
    ));
    assert_eq!(q.get(&r.task_id).unwrap().status, TaskStatus::Cancelled);

    let done = running(&mut q, "b");
    q.complete(&done, "b", TaskResult::default(), t(5));
    assert!(matches!(
        q.cancel(&done.task_id, "operator", t(6)),
        Err(QueueError::Conflict(_))
    ));
    assert!(matches!(
        q.cancel("nope", "operator", t(6)),
        Err(QueueError::NotFound(_))
    ));
}

#[test]
fn retry_revives_with_a_fresh_budget() {
    let mut q = core();
    let r = running(&mut q, "a");
    fail_as_task(&mut q, &r, "a", "bad", Retryable::No, t(3));
    assert_eq!(q.get(&r.task_id).unwrap().status, TaskStatus::Dead);
    let revived = q.retry(&r.task_id, t(4)).unwrap();
    assert_eq!((revived.status, revived.attempts), (TaskStatus::Queued, 0));
    assert!(matches!(
        q.retry(&r.task_id, t(5)),
        Err(QueueError::Conflict(_))
    ));
    let g = q.claim(&[agent("a")], t(6))[0].task.generation;
    assert_eq!(g, 2, "the generation keeps counting across revivals");
    let changes = q.take_deltas();
    assert!(events(&q, &changes, &r.task_id).contains(&"revived".to_string()));
}

#[test]
fn history_entries_carry_agent_generation_and_reason() {
    let mut q = core();
    let r = running(&mut q, "a");
    fail_as_task(&mut q, &r, "a", "compile error", Retryable::Yes, t(3));
    let changes = q.take_deltas();
    let hist: Vec<&HistoryEntry> = changes
        .iter()
        .flat_map(|c| c.new_history.iter().map(|(_, h)| h))
        .collect();
    let names: Vec<&str> = hist.iter().map(|h| h.event.as_str()).collect();
    assert_eq!(
        names,
        ["created", "assigned", "accepted", "failed", "requeued"]
    );
    let failed = hist[3];
    assert_eq!(failed.agent_id.as_deref(), Some("a"));
    assert_eq!(failed.generation, 1);
    assert_eq!(failed.from, Some(TaskStatus::Working));
    assert_eq!(failed.to, Some(TaskStatus::Failed));
    assert!(failed.detail.as_deref().unwrap().contains("compile error"));
    let seqs: Vec<u32> = changes[0].new_history.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4]);
}

#[test]
fn restore_rebuilds_lanes_backoff_and_keys() {
    let mut q = core();
    let a = created(q.create(
        NewTask {
            idempotency_key: Some("ka".into()),
            ..spec("a")
        },
        t(0),
    ));
    let b = created(q.create(spec_with("b", Priority::Urgent, &[]), t(1)));
    let got = q.claim(&[agent("x")], t(2)); // takes b (urgent) first
    assert_eq!(got[0].task.id, b.id);
    assert_eq!(
        q.accept(&AttemptRef::new(b.id.clone(), 1), "x", t(3)),
        Verdict::Applied
    );
    let stored: Vec<(Task, u32)> = q
        .tasks
        .values()
        .map(|e| (e.task.clone(), e.history_len))
        .collect();
    let keys = vec![StoredKey {
        key: "ka".into(),
        id: a.id.clone(),
        digest: spec_digest(&a),
        finished_at: None,
    }];
    let mut back = QueueCore::restore(q.settings().clone(), stored, keys);
    assert_eq!(back.len(), q.len());
    assert_eq!(back.lanes().ordered_ids(), q.lanes().ordered_ids());
    assert_eq!(back.outstanding(None).len(), 1);
    assert!(
        matches!(back.create(NewTask { idempotency_key: Some("ka".into()), ..spec("a") }, t(9)), Ok(Created::Existing(e)) if e == a.id)
    );
    // History numbering continues where it stopped.
    back.cancel(&a.id, "x", t(10)).unwrap();
    let ch = back.take_deltas();
    assert_eq!(ch[0].new_history[0].0, 1);
}

/// Finish `n` tasks (cancelled) and make them durable at `at`.
fn finish_durably(q: &mut QueueCore, n: usize, at: i64) -> Vec<String> {
    let ids: Vec<String> = (0..n)
        .map(|i| {
            let task = created(q.create(
                NewTask {
                    description: Some("long text".into()),
                    ..spec(&format!("f{i}"))
                },
                t(at),
            ));
            q.cancel(&task.id, "done with it", t(at)).unwrap();
            task.id
        })
        .collect();
    let changes = q.take_deltas();
    q.durable(&changes, t(at));
    ids
}

#[test]
fn durable_finished_tasks_keep_only_their_head_then_are_forgotten() {
    let mut q = core(); // keeps 2 finished, for 60 s
    let ids = finish_durably(&mut q, 1, 0);
    let head = q.get(&ids[0]).expect("still held");
    assert_eq!(head.description, "", "heavy fields dropped");
    assert!(q.needs_load(&ids[0]), "an operator command loads it whole");
    // More than two finished: the oldest goes.
    let more = finish_durably(&mut q, 2, 10);
    assert!(!q.holds(&ids[0]));
    assert!(q.holds(&more[0]) && q.holds(&more[1]));
    // Past 60 s the rest goes too, at the next durable group.
    let live = created(q.create(spec("live"), t(70_000)));
    let changes = q.take_deltas();
    q.durable(&changes, t(70_001));
    assert!(!q.holds(&more[0]) && !q.holds(&more[1]));
    assert!(
        q.holds(&live.id) && !q.needs_load(&live.id),
        "live tasks stay whole"
    );
}

#[test]
fn a_late_report_for_a_light_task_is_still_recognised() {
    let mut q = core();
    let r = running(&mut q, "a");
    q.complete(&r, "a", TaskResult::default(), t(5));
    let changes = q.take_deltas();
    q.durable(&changes, t(6));
    assert!(q.needs_load(&r.task_id));
    // The sidecar resends its complete after a lost ack: a duplicate.
    assert_eq!(
        q.complete(&r, "a", TaskResult::default(), t(7)),
        Verdict::Duplicate
    );
}

#[test]
fn adopt_brings_a_finished_task_back_whole_for_a_retry() {
    let mut q = core();
    let ids = finish_durably(&mut q, 3, 0); // the first is forgotten
    assert!(!q.holds(&ids[0]));
    let mut stored = created(q.create(spec("ignored"), t(1)));
    stored.id = ids[0].clone();
    stored.description = "from the store".into();
    stored.status = TaskStatus::Cancelled;
    q.take_deltas();
    q.adopt(stored, 2);
    let back = q.retry(&ids[0], t(20)).unwrap();
    assert_eq!(back.status, TaskStatus::Queued);
    assert_eq!(back.description, "from the store");
    assert_eq!(back.finished_at, None);
    let ch = q.take_deltas();
    let c = ch.iter().find(|c| c.task.id == ids[0]).unwrap();
    assert!(c.write_body, "the body is written again");
    assert_eq!(c.previous_status, Some(TaskStatus::Cancelled));
    assert_eq!(c.new_history[0].0, 2, "history continues");
    // A light task adopts the stored body but keeps its own, newer head.
    let light = &ids[2];
    let mut older = q.get(light).unwrap().clone();
    older.description = "body".into();
    older.status = TaskStatus::Queued;
    q.adopt(older, 0);
    assert_eq!(q.get(light).unwrap().status, TaskStatus::Cancelled);
    assert_eq!(q.get(light).unwrap().description, "body");
}

#[test]
fn idempotency_keys_outlive_their_task_for_a_while_only() {
    let mut q = core(); // keys kept 120 s after the task finished
    let s = NewTask {
        idempotency_key: Some("once".into()),
        ..spec("a")
    };
    let first = created(q.create(s.clone(), t(0)));
    q.cancel(&first.id, "x", t(1)).unwrap();
    let changes = q.take_deltas();
    q.durable(&changes, t(2));
    assert!(matches!(q.create(s.clone(), t(100_000)), Ok(Created::Existing(id)) if id == first.id));
    let changes = q.take_deltas();
    q.durable(&changes, t(121_002));
    assert!(
        matches!(q.create(s, t(121_003)), Ok(Created::New(_))),
        "the key was forgotten"
    );
}

#[test]
fn purged_tasks_and_their_keys_are_forgotten() {
    let mut q = core();
    let first = created(q.create(
        NewTask {
            idempotency_key: Some("p".into()),
            ..spec("a")
        },
        t(0),
    ));
    q.cancel(&first.id, "x", t(1)).unwrap();
    let changes = q.take_deltas();
    q.durable(&changes, t(2));
    q.purged(std::slice::from_ref(&first.id));
    assert!(!q.holds(&first.id));
    assert!(matches!(
        q.create(
            NewTask {
                idempotency_key: Some("p".into()),
                ..spec("a")
            },
            t(3)
        ),
        Ok(Created::New(_))
    ));
}

#[test]
fn stale_notes_are_capped_and_quote_little() {
    let mut q = core();
    let r = running(&mut q, "a");
    q.take_deltas();
    let huge = "e".repeat(100_000);
    for _ in 0..(MAX_STALE_NOTES + 10) {
        let v = fail_as_task(&mut q, &r, "intruder", &huge, Retryable::Yes, t(5));
        assert!(matches!(v, Verdict::Stale(_)));
    }
    let notes: Vec<HistoryEntry> = q
        .take_deltas()
        .into_iter()
        .flat_map(|c| c.new_history.into_iter().map(|(_, h)| h))
        .collect();
    assert_eq!(notes.len(), MAX_STALE_NOTES as usize);
    assert!(notes
        .iter()
        .all(|h| h.detail.as_deref().unwrap().len() < 2 * limits::MAX_DETAIL_BYTES));
    // The owner's real failure keeps a bounded error.
    fail_as_task(&mut q, &r, "a", &huge, Retryable::Yes, t(6));
    assert!(
        q.get(&r.task_id)
            .unwrap()
            .last_error
            .as_ref()
            .unwrap()
            .len()
            < 2 * limits::MAX_ERROR_BYTES
    );
}

mod model {
    //! Random sequences of everything that can happen to the queue (agents
    //! reporting right, late or wrong; operators; time; syncs), checking
    //! after each step the invariants the hub relies on.

    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Create {
            key: Option<u8>,
            needs_gpu: bool,
        },
        Claim {
            agent: u8,
        },
        Accept {
            task: u8,
            agent: u8,
            lag: u8,
        },
        Complete {
            task: u8,
            agent: u8,
            lag: u8,
        },
        Fail {
            task: u8,
            agent: u8,
            lag: u8,
            retryable: bool,
        },
        Release {
            task: u8,
            lag: u8,
        },
        Cancel {
            task: u8,
        },
        Retry {
            task: u8,
        },
        Wait {
            ms: u32,
        },
        Sync,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (prop::option::of(0u8..4), any::<bool>())
                .prop_map(|(key, needs_gpu)| Op::Create { key, needs_gpu }),
            (0u8..3).prop_map(|agent| Op::Claim { agent }),
            (any::<u8>(), 0u8..3, 0u8..2).prop_map(|(task, agent, lag)| Op::Accept {
                task,
                agent,
                lag
            }),
            (any::<u8>(), 0u8..3, 0u8..2).prop_map(|(task, agent, lag)| Op::Complete {
                task,
                agent,
                lag
            }),
            (any::<u8>(), 0u8..3, 0u8..2, any::<bool>()).prop_map(
                |(task, agent, lag, retryable)| Op::Fail {
                    task,
                    agent,
                    lag,
                    retryable
                }
            ),
            (any::<u8>(), 0u8..2).prop_map(|(task, lag)| Op::Release { task, lag }),
            any::<u8>().prop_map(|task| Op::Cancel { task }),
            any::<u8>().prop_map(|task| Op::Retry { task }),
            (0u32..200_000).prop_map(|ms| Op::Wait { ms }),
            Just(Op::Sync),
        ]
    }

    const AGENTS: [&str; 3] = ["a", "b", "gpu"];

    fn attempt(q: &QueueCore, ids: &[String], task: u8, lag: u8) -> Option<AttemptRef> {
        if ids.is_empty() {
            return None;
        }
        let id = &ids[task as usize % ids.len()];
        let g = q.get(id)?.generation;
        Some(AttemptRef::new(id.clone(), g.saturating_sub(lag as u64)))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn any_sequence_keeps_the_queue_consistent(ops in prop::collection::vec(op(), 1..80)) {
            let mut q = core();
            let mut now = 0i64;
            let mut ids: Vec<String> = vec![];
            let mut completions: HashMap<String, usize> = HashMap::new();
            let mut generations: HashMap<String, u64> = HashMap::new();
            for op in ops {
                now += 1;
                match op {
                    Op::Create { key, needs_gpu } => {
                        let spec = NewTask {
                            idempotency_key: key.map(|k| format!("k{k}")),
                            needed_capabilities: needs_gpu.then(|| vec!["gpu".to_string()]),
                            ..spec("t")
                        };
                        if let Ok(Created::New(t)) = q.create(spec, t(now)) {
                            ids.push(t.id);
                        }
                    }
                    Op::Claim { agent } => {
                        let caps: &[&str] = if agent == 2 { &["gpu"] } else { &[] };
                        let got = q.claim(&[IdleAgent::new(AGENTS[agent as usize], caps, 0)], t(now));
                        prop_assert!(got.len() <= 1);
                        for a in got {
                            prop_assert_eq!(a.task.status, TaskStatus::Assigned);
                            prop_assert!(a.task.needed_capabilities.iter().all(|c| caps.contains(&c.as_str())));
                        }
                    }
                    Op::Accept { task, agent, lag } => {
                        if let Some(r) = attempt(&q, &ids, task, lag) {
                            q.accept(&r, AGENTS[agent as usize], t(now));
                        }
                    }
                    Op::Complete { task, agent, lag } => {
                        if let Some(r) = attempt(&q, &ids, task, lag) {
                            q.complete(&r, AGENTS[agent as usize], TaskResult::default(), t(now));
                        }
                    }
                    Op::Fail { task, agent, lag, retryable } => {
                        if let Some(r) = attempt(&q, &ids, task, lag) {
                            fail_as_task(&mut q, &r, AGENTS[agent as usize], "x", Retryable::from(retryable), t(now));
                        }
                    }
                    Op::Release { task, lag } => {
                        if let Some(r) = attempt(&q, &ids, task, lag) {
                            q.release(&r, "taken back", t(now));
                        }
                    }
                    Op::Cancel { task } => {
                        if let Some(id) = ids.get(task as usize % ids.len().max(1)) {
                            if !q.needs_load(id) {
                                let _ = q.cancel(id, "operator", t(now));
                            }
                        }
                    }
                    Op::Retry { task } => {
                        if let Some(id) = ids.get(task as usize % ids.len().max(1)) {
                            if !q.needs_load(id) {
                                let _ = q.retry(id, t(now));
                            }
                        }
                    }
                    Op::Wait { ms } => {
                        now += ms as i64;
                        q.promote_due(t(now));
                    }
                    Op::Sync => {
                        let changes = q.take_deltas();
                        for c in &changes {
                            for (_, h) in &c.new_history {
                                if h.event == TaskEvent::Completed {
                                    *completions.entry(c.task.id.clone()).or_default() += 1;
                                }
                            }
                        }
                        q.durable(&changes, t(now));
                    }
                }
                // Invariants.
                let queued: BTreeSet<String> = q
                    .tasks
                    .values()
                    .filter(|e| e.task.status == TaskStatus::Queued)
                    .map(|e| e.task.id.clone())
                    .collect();
                let in_lanes: BTreeSet<String> = q.lanes().ordered_ids().into_iter().collect();
                prop_assert_eq!(&queued, &in_lanes, "a task is in a lane iff it is queued");
                for e in q.tasks.values() {
                    let g = generations.entry(e.task.id.clone()).or_default();
                    prop_assert!(e.task.generation >= *g, "generations never go back");
                    *g = e.task.generation;
                    prop_assert!(!e.light || e.task.status.is_terminal(), "only finished tasks are light");
                    prop_assert_eq!(e.task.finished_at.is_some(), e.task.status.is_terminal());
                    if e.task.status == TaskStatus::Failed {
                        prop_assert!(e.task.not_before.is_some());
                    }
                }
                prop_assert!(completions.values().all(|n| *n <= 1), "at most one completion per task");
            }
        }
    }
}

fn report(class: FailClass, retry_after_s: Option<u64>) -> FailReport {
    FailReport {
        error: format!("{} trouble", class.as_str()),
        retryable: Retryable::Yes,
        class,
        retry_after_s,
        log_tail: Some("x".repeat(10_000)),
    }
}

/// The task `r` is on is claimed by `who` and accepted at `at`.
fn again(q: &mut QueueCore, r: &AttemptRef, who: &str, at: i64) -> AttemptRef {
    let a = q.claim(&[agent(who)], t(at));
    assert_eq!(a.len(), 1, "{who} gets the task again");
    let next = AttemptRef::new(r.task_id.clone(), a[0].task.generation);
    assert_eq!(q.accept(&next, who, t(at + 1)), Verdict::Applied);
    next
}

#[test]
fn a_task_failing_on_two_agents_goes_dead_blamed_on_the_task() {
    let mut q = core();
    let r = running(&mut q, "a");
    let j = q.fail(&r, "a", &report(FailClass::Task, None), t(3));
    assert_eq!((j.charge, j.absolve.len()), (Charge::Failure, 0));
    assert_eq!(q.get(&r.task_id).unwrap().status, TaskStatus::Queued);
    let r2 = again(&mut q, &r, "b", 10);
    q.take_deltas();
    let j = q.fail(&r2, "b", &report(FailClass::Task, None), t(20));
    assert_eq!(j.verdict, Verdict::Applied);
    assert_eq!(j.charge, Charge::None);
    assert_eq!(j.absolve, ["a", "b"]);
    let task = q.get(&r.task_id).unwrap();
    assert_eq!(
        task.status,
        TaskStatus::Dead,
        "retries were left, but the task is to blame"
    );
    let records = &task.dossier.attempts;
    assert_eq!(records[0].blame, Some(Blame::Agent));
    assert_eq!(records[1].blame, Some(Blame::Task));
    assert_eq!(
        records[1].log_tail.as_ref().unwrap().len(),
        8 * 1024,
        "log tail capped"
    );
    let deltas = q.take_deltas();
    let dead = deltas[0]
        .new_history
        .iter()
        .map(|(_, h)| h)
        .find(|h| h.event == TaskEvent::Dead)
        .expect("a dead entry");
    assert_eq!(dead.blame, Some(Blame::Task));
    assert!(
        dead.detail.as_ref().unwrap().contains("before on a"),
        "{dead:?}"
    );
}

#[test]
fn environment_failures_and_rate_limits_use_no_retry_and_go_again_at_once() {
    let mut q = core(); // 2 retries, backoff 0 then 30 s
    let mut r = running(&mut q, "a");
    for (i, who) in ["a", "b", "c", "d"].iter().enumerate() {
        let at = 100 * (i as i64 + 1);
        if i > 0 {
            r = again(&mut q, &r, who, at);
        }
        let class = if i % 2 == 0 {
            FailClass::Environment
        } else {
            FailClass::RateLimited
        };
        let j = q.fail(&r, who, &report(class, Some(30)), t(at + 5));
        match class {
            FailClass::Environment => {
                assert_eq!(j.charge, Charge::Environment("environment trouble".into()))
            }
            _ => assert_eq!(
                j.charge,
                Charge::HoldUntil(t(at + 5 + 30_000), "retry after 30s".into())
            ),
        }
        let task = q.get(&r.task_id).unwrap();
        assert_eq!(task.status, TaskStatus::Queued, "again at once, no backoff");
        assert_eq!(task.free_attempts, i as u32 + 1);
    }
    // Four attempts, none counted: a task failure still has its retries.
    r = again(&mut q, &r, "e", 1_000);
    q.fail(&r, "e", &report(FailClass::Task, None), t(1_005));
    let task = q.get(&r.task_id).unwrap();
    assert_eq!(task.status, TaskStatus::Queued);
    let outcomes: Vec<&str> = task
        .dossier
        .attempts
        .iter()
        .map(|a| a.outcome.as_str())
        .collect();
    assert!(outcomes.ends_with(&[
        "rate_limited",
        "environment_failed",
        "rate_limited",
        "failed"
    ]));
}

#[test]
fn a_hub_finding_is_the_agents_fault() {
    let mut q = core();
    let r = running(&mut q, "a");
    assert_eq!(
        q.release(&r, "agent offline for 90s", t(3)),
        Verdict::Applied
    );
    let task = q.get(&r.task_id).unwrap();
    let rec = task.dossier.attempts.last().unwrap();
    assert_eq!(
        (rec.outcome.as_str(), rec.blame),
        ("agent_failed", Some(Blame::Agent))
    );
}

#[test]
fn a_superseded_attempts_late_result_with_a_branch_is_kept_as_a_candidate() {
    let mut q = core();
    let r1 = running(&mut q, "a");
    q.release(&r1, "agent a offline", t(3));
    let r2 = again(&mut q, &r1, "b", 4);
    let late = TaskResult {
        summary: Some("done after all".into()),
        branch: Some("a/job".into()),
        head: Some("abc".into()),
        ..Default::default()
    };
    assert!(matches!(
        q.complete(&r1, "a", late.clone(), t(10)),
        Verdict::Stale(_)
    ));
    let task = q.get(&r1.task_id).unwrap();
    assert_eq!(task.candidates.len(), 1);
    let c = &task.candidates[0];
    assert_eq!(
        (c.generation, c.agent_id.as_str(), c.branch.as_str()),
        (1, "a", "a/job")
    );
    assert_eq!(
        task.assigned_to.as_deref(),
        Some("b"),
        "the current attempt goes on"
    );
    // A resend is a duplicate; another agent cannot plant one.
    assert_eq!(
        q.complete(&r1, "a", late.clone(), t(11)),
        Verdict::Duplicate
    );
    assert!(matches!(
        q.complete(&r1, "intruder", late.clone(), t(12)),
        Verdict::Stale(_)
    ));
    let without_branch = TaskResult::default();
    assert!(matches!(
        q.complete(&r1, "a", without_branch, t(13)),
        Verdict::Duplicate
    ));
    assert_eq!(q.get(&r1.task_id).unwrap().candidates.len(), 1);
    assert_eq!(q.accept(&r2, "b", t(14)), Verdict::Duplicate);
}

#[test]
fn a_task_with_run_at_waits_then_joins_its_lane_when_due() {
    let mut q = core();
    let mut s = spec("later");
    s.run_at = Some(t(10_000));
    let task = created(q.create(s, t(0)));
    assert_eq!(task.status, TaskStatus::Queued);
    assert_eq!(task.not_before, Some(t(10_000)));
    assert_eq!(q.next_due(), Some(t(10_000)));
    assert!(
        q.claim(&[agent("a")], t(9_999)).is_empty(),
        "not before its time"
    );
    assert_eq!(q.promote_due(t(9_999)), 0);
    q.take_deltas();
    assert_eq!(q.promote_due(t(10_000)), 1);
    let deltas = q.take_deltas();
    assert_eq!(events(&q, &deltas, &task.id), ["due"]);
    let due = q.get(&task.id).unwrap();
    assert_eq!((due.status, due.not_before), (TaskStatus::Queued, None));
    let a = q.claim(&[agent("a")], t(10_001));
    assert_eq!(a.len(), 1);
    // A time already past is now; a restart keeps a waiting task waiting.
    let mut past = spec("past");
    past.run_at = Some(t(5));
    let past = created(q.create(past, t(20_000)));
    assert_eq!(past.not_before, None);
    let mut s = spec("after a restart");
    s.run_at = Some(t(50_000));
    let waiting = created(q.create(s, t(20_000)));
    let live: Vec<(Task, u32)> = vec![(q.get(&waiting.id).unwrap().clone(), 1)];
    let back = QueueCore::restore(q.settings().clone(), live, vec![]);
    assert_eq!(back.next_due(), Some(t(50_000)));
}

#[test]
fn a_paused_lane_holds_its_tasks_while_other_lanes_flow() {
    let mut q = core();
    let urgent = created(q.create(spec_with("urgent", Priority::Urgent, &[]), t(0)));
    let low = created(q.create(spec_with("low", Priority::Low, &[]), t(1)));
    assert!(q.set_lane_paused(Priority::Urgent, true));
    assert!(!q.set_lane_paused(Priority::Urgent, true), "idempotent");
    assert_eq!(q.paused_lanes(), [Priority::Urgent]);
    let got = q.claim(&[agent("a"), agent("b")], t(2));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].task.id, low.id);
    assert_eq!(q.get(&urgent.id).unwrap().status, TaskStatus::Queued);
    assert!(q.set_lane_paused(Priority::Urgent, false));
    assert!(q.paused_lanes().is_empty());
    let got = q.claim(&[agent("b")], t(3));
    assert_eq!(got[0].task.id, urgent.id);
}

#[test]
fn a_paused_lane_holds_its_retried_tasks_too() {
    let mut q = core();
    let r = running(&mut q, "a");
    assert!(matches!(
        fail_as_task(&mut q, &r, "a", "boom", Retryable::Yes, t(5)),
        Verdict::Applied
    ));
    q.promote_due(t(10));
    assert_eq!(q.get(&r.task_id).unwrap().status, TaskStatus::Queued);
    q.set_lane_paused(Priority::Normal, true);
    assert!(q.claim(&[agent("b")], t(11)).is_empty());
    q.set_lane_paused(Priority::Normal, false);
    assert_eq!(q.claim(&[agent("b")], t(12))[0].task.id, r.task_id);
}

// ----- context windows, daily tokens, the fleet cap ---------------------------------------

fn budgeted(q: &mut QueueCore, title: &str, budget: u64) -> Task {
    created(q.create(
        NewTask {
            title: title.into(),
            context_budget_tokens: Some(budget),
            ..Default::default()
        },
        t(0),
    ))
}

#[test]
fn a_budgeted_task_goes_only_to_an_agent_whose_window_holds_it() {
    let mut q = core();
    let big = budgeted(&mut q, "big", 100_000);
    let small = created(q.create(spec("small"), t(1)));
    // The small agent (and one that reports no window) pass the big task
    // over, and it does not block the one behind it.
    let got = q.claim(
        &[
            IdleAgent::new("small", &[], 0).with_window(32_000),
            IdleAgent::new("unsaid", &[], 5),
        ],
        t(2),
    );
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].task.id.as_str(), got[0].agent_id.as_str()),
        (small.id.as_str(), "small")
    );
    assert!(q
        .claim(&[IdleAgent::new("unsaid", &[], 5)], t(3))
        .is_empty());
    assert_eq!(q.get(&big.id).unwrap().status, TaskStatus::Queued);
    // A window exactly the budget is enough.
    let got = q.claim(&[IdleAgent::new("big", &[], 9).with_window(100_000)], t(4));
    assert_eq!(got[0].task.id, big.id);
}

#[test]
fn an_agent_that_spent_its_days_tokens_gets_nothing_until_the_next_utc_day() {
    let mut q = QueueCore::new(QueueSettings {
        agent_daily_tokens: 1_000,
        ..QueueSettings::default()
    });
    let first = created(q.create(spec("first"), t(0)));
    let a = q.claim(&[agent("a")], t(1));
    let r = AttemptRef::new(first.id, a[0].task.generation);
    let result: TaskResult =
        serde_json::from_str(r#"{"tokens_used": 1000, "cost_usd": 0.5}"#).unwrap();
    assert_eq!(q.complete(&r, "a", result, t(2)), Verdict::Applied);
    let view = q.usage_state().view(t(3));
    assert_eq!(view.agents["a"].tokens, 1_000);
    assert_eq!(view.agents["a"].cost_usd, 0.5);
    let second = created(q.create(spec("second"), t(3)));
    assert!(q.claim(&[agent("a")], t(4)).is_empty(), "a is over");
    assert_eq!(q.facts(&second.id, t(4)).spent_today["a"], 1_000);
    let got = q.claim(&[agent("a"), agent("b")], t(5));
    assert_eq!(got[0].agent_id, "b", "another agent takes the work");
    // The next UTC day, a works again.
    let third = created(q.create(spec("third"), t(6)));
    let tomorrow = Timestamp((t(0).0 / 86_400_000 + 1) * 86_400_000);
    let got = q.claim(&[agent("a")], tomorrow);
    assert_eq!(got[0].task.id, third.id);
}

#[test]
fn the_fleet_cap_bounds_the_tasks_out_at_once() {
    let mut q = QueueCore::new(QueueSettings {
        max_concurrent: 2,
        ..QueueSettings::default()
    });
    let ids: Vec<String> = (0..5)
        .map(|i| created(q.create(spec(&format!("t{i}")), t(i))).id)
        .collect();
    let agents: Vec<IdleAgent> = (0..4)
        .map(|i| IdleAgent::new(&format!("a{i}"), &[], i))
        .collect();
    let got = q.claim(&agents, t(10));
    assert_eq!(got.len(), 2);
    assert_eq!(q.out_count(), 2);
    assert!(
        q.claim(&agents[2..], t(11)).is_empty(),
        "the cap is reached"
    );
    let facts = q.facts(&ids[4], t(11));
    assert_eq!(facts.fleet_cap, Some((2, 2)));
    // Working still counts; completing frees a place.
    let r = AttemptRef::new(got[0].task.id.clone(), got[0].task.generation);
    assert_eq!(q.accept(&r, &got[0].agent_id, t(12)), Verdict::Applied);
    assert!(q.claim(&agents[2..], t(13)).is_empty());
    assert_eq!(
        q.complete(&r, &got[0].agent_id, TaskResult::default(), t(14)),
        Verdict::Applied
    );
    assert_eq!(q.claim(&agents[2..], t(15)).len(), 1);
    assert_eq!(q.out_count(), 2);
}

#[test]
fn an_ending_attempt_takes_only_a_task_every_idle_agent_turned_down() {
    let mut q = core();
    let gpu = created(q.create(spec_with("gpu", Priority::Normal, &["gpu"]), t(0)));
    // Nothing was offered yet: the scheduler's claim decides.
    assert_eq!(q.claim_next(&IdleAgent::new("a", &["gpu"], 5), t(1)), None);
    // Every idle agent (b, without a GPU) was offered the GPU task.
    assert!(q.claim(&[IdleAgent::new("b", &[], 0)], t(2)).is_empty());
    q.offered_all();
    // Queued since: b may take it, and b waits longer than a.
    let plain = created(q.create(spec("plain"), t(3)));
    let next = q.claim_next(&IdleAgent::new("a", &["gpu"], 5), t(4));
    let next = next.expect("the GPU task b turned down");
    assert_eq!(next.id, gpu.id);
    assert_eq!(next.status, TaskStatus::Assigned);
    assert_eq!(next.assigned_to.as_deref(), Some("a"));
    assert_eq!(next.generation, 1);
    // The plain task was never offered to b: not given to c as it ends.
    assert_eq!(q.claim_next(&agent("c"), t(5)), None);
    assert_eq!(q.get(&plain.id).unwrap().status, TaskStatus::Queued);
    // Once offered to all, it may go to an agent whose attempt ends.
    q.offered_all();
    assert_eq!(
        q.claim_next(&agent("c"), t(6)).map(|t| t.id),
        Some(plain.id)
    );
}

#[test]
fn a_reopened_lane_or_repository_ends_what_was_turned_down() {
    let mut q = core();
    q.set_lane_paused(Priority::Low, true);
    let low = created(q.create(spec_with("low", Priority::Low, &[]), t(0)));
    assert!(q.claim(&[agent("b")], t(1)).is_empty());
    q.offered_all();
    // Closed when offered: nobody turned it down.
    q.set_lane_paused(Priority::Low, false);
    assert_eq!(q.claim_next(&agent("a"), t(2)), None);
    q.offered_all();
    assert_eq!(q.claim_next(&agent("a"), t(3)).map(|t| t.id), Some(low.id));

    let mut q = core();
    q.set_repo_paused("r", true);
    let fix = created(q.create(
        NewTask {
            repo: Some("r".into()),
            ..spec("fix")
        },
        t(0),
    ));
    let with_clone = |id: &str, since: i64| IdleAgent::new(id, &[&repo_mark("r")], since);
    assert!(q.claim(&[with_clone("b", 0)], t(1)).is_empty());
    q.offered_all();
    // Main green again: b never turned the task down.
    q.set_repo_paused("r", false);
    assert_eq!(q.claim_next(&with_clone("a", 5), t(2)), None);
    q.offered_all();
    q.set_repo_paused("r", false); // still green: nothing reopened
    assert_eq!(
        q.claim_next(&with_clone("a", 5), t(3)).map(|t| t.id),
        Some(fix.id)
    );
}

#[test]
fn under_a_fleet_cap_an_ending_attempt_takes_nothing() {
    let mut q = QueueCore::new(QueueSettings {
        max_concurrent: 2,
        ..QueueSettings::default()
    });
    created(q.create(spec("x"), t(0)));
    q.offered_all();
    assert_eq!(q.claim_next(&agent("a"), t(1)), None);
}

// ----- standing agents (decision 0018) ---------------------------------------

/// A claim of everyone that leaves `agents` idle: they stand.
fn stand(q: &mut QueueCore, agents: &[IdleAgent], at: i64) {
    let got = q.claim_offered(agents.to_vec(), true, q.last_gift(), t(at));
    assert!(got.is_empty(), "nothing was queued for them");
    q.take_deltas();
}

#[test]
fn a_task_queued_while_an_agent_stands_is_assigned_in_its_own_changes() {
    let mut q = core();
    stand(
        &mut q,
        &[
            IdleAgent::new("recent", &[], 20),
            IdleAgent::new("longest", &[], 10),
        ],
        0,
    );
    let task = created(q.create(spec("now"), t(1)));
    let given = q.assign_standing(t(1));
    assert_eq!(given.len(), 1);
    assert_eq!(
        given[0].agent_id, "longest",
        "the capable agent idle longest"
    );
    assert_eq!(given[0].task.id, task.id);
    assert_eq!(given[0].task.generation, 1);
    assert_eq!(q.last_gift(), 1);
    // One record to write: created and assigned in one delta.
    let changes = q.take_deltas();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].previous_status, None);
    assert_eq!(changes[0].task.status, TaskStatus::Assigned);
    assert_eq!(events(&q, &changes, &task.id), ["created", "assigned"]);
    // Offered once: the next call has nothing new.
    assert!(q.assign_standing(t(2)).is_empty());
    // The other agent still stands; the given one does not.
    created(q.create(spec("next"), t(3)));
    let next = q.assign_standing(t(3));
    assert_eq!(next[0].agent_id, "recent");
    created(q.create(spec("waits"), t(4)));
    assert!(q.assign_standing(t(4)).is_empty(), "nobody stands now");
    assert_eq!(q.queued_len(), 1);
}

#[test]
fn an_agent_given_a_task_is_not_claimed_for_until_the_scheduler_saw_it() {
    let mut q = core();
    stand(&mut q, &[agent("a")], 0);
    created(q.create(spec("one"), t(1)));
    assert_eq!(q.assign_standing(t(1)).len(), 1);
    let gift = q.last_gift();
    created(q.create(spec("two"), t(2)));
    // A claim sent before the scheduler had the notice still offers a.
    assert!(q
        .claim_offered(vec![agent("a")], true, gift - 1, t(3))
        .is_empty());
    assert_eq!(q.queued_len(), 1, "a was not given a second task");
    // Once the scheduler has seen it, a is its own again (idle again
    // after its task, say).
    let got = q.claim_offered(vec![agent("a")], true, gift, t(4));
    assert_eq!(got.len(), 1);
}

#[test]
fn standing_agents_get_only_what_they_may_take() {
    let mut q = core();
    stand(
        &mut q,
        &[
            IdleAgent::new("plain", &[], 0),
            IdleAgent::new("gpu", &["gpu"], 5),
            IdleAgent::new("small", &[], 1).with_window(1_000),
        ],
        0,
    );
    // Capabilities.
    let g = created(q.create(spec_with("g", Priority::Normal, &["gpu"]), t(1)));
    // Exclusions and one agent's own task.
    let not_plain = created(q.create_excluding(spec("x"), vec!["plain".into()], t(2)));
    let for_gpu = created(q.create(
        NewTask {
            for_agent: Some("nobody".into()),
            ..spec("for nobody")
        },
        t(3),
    ));
    let nobody_can = created(q.create(spec_with("tpu", Priority::Normal, &["tpu"]), t(4)));
    let given = q.assign_standing(t(5));
    let pairs: Vec<(&str, &str)> = given
        .iter()
        .map(|a| (a.task.id.as_str(), a.agent_id.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [(g.id.as_str(), "gpu"), (not_plain.id.as_str(), "small")]
    );
    assert_eq!(q.get(&for_gpu.id).unwrap().status, TaskStatus::Queued);
    assert_eq!(q.get(&nobody_can.id).unwrap().status, TaskStatus::Queued);
    // A context budget the only one left cannot hold, then one it can.
    let big = created(q.create(
        NewTask {
            context_budget_tokens: Some(50_000),
            ..spec("big")
        },
        t(6),
    ));
    assert!(q.assign_standing(t(6)).is_empty());
    assert_eq!(q.get(&big.id).unwrap().status, TaskStatus::Queued);
    created(q.create(spec("any"), t(7)));
    assert_eq!(q.assign_standing(t(7))[0].agent_id, "plain");
}

#[test]
fn a_withdrawn_agent_is_given_nothing() {
    let mut q = core();
    stand(&mut q, &[agent("a")], 0);
    q.withdraw("a");
    created(q.create(spec("x"), t(1)));
    assert!(q.assign_standing(t(1)).is_empty());
}

#[test]
fn nothing_stands_before_a_claim_of_everyone_under_a_cap_or_after_a_lane_reopens() {
    // A partial claim alone: the queue may hold tasks its agents can take
    // that no claim of everyone offered them yet.
    let mut q = core();
    q.claim_offered(vec![agent("a")], false, 0, t(0));
    created(q.create(spec("x"), t(1)));
    assert!(q.assign_standing(t(1)).is_empty());

    // A fleet cap: the claim shares the places out.
    let mut q = QueueCore::new(QueueSettings {
        max_concurrent: 2,
        ..QueueSettings::default()
    });
    stand(&mut q, &[agent("a")], 0);
    created(q.create(spec("x"), t(1)));
    assert!(q.assign_standing(t(1)).is_empty());

    // A lane reopens: its older task comes first, by the next claim.
    let mut q = core();
    q.set_lane_paused(Priority::Low, true);
    let old = created(q.create(spec_with("old", Priority::Low, &[]), t(0)));
    stand(&mut q, &[agent("a")], 1);
    q.set_lane_paused(Priority::Low, false);
    let new = created(q.create(spec_with("new", Priority::Low, &[]), t(2)));
    assert!(q.assign_standing(t(2)).is_empty(), "new must not pass old");
    let got = q.claim_offered(vec![agent("a")], true, q.last_gift(), t(3));
    assert_eq!(got[0].task.id, old.id);
    assert_eq!(q.get(&new.id).unwrap().status, TaskStatus::Queued);
}

#[test]
fn a_requeued_task_goes_to_a_standing_agent_too() {
    let mut q = core();
    let task = created(q.create(spec("x"), t(0)));
    let got = q.claim_offered(vec![agent("a")], true, 0, t(1));
    stand(&mut q, &[agent("b")], 2);
    let attempt = AttemptRef::new(task.id.clone(), got[0].task.generation);
    q.release(&attempt, "a went away", t(3));
    let given = q.assign_standing(t(3));
    assert_eq!(given.len(), 1);
    assert_eq!(given[0].agent_id, "b");
    assert_eq!(given[0].task.generation, 2);
}

/// The queue's standing agents with a model of the scheduler around them:
/// whatever the order of idleness, claims, creates and the queue's
/// notices arriving late, no agent is ever given two tasks, and every
/// task out is either held by its agent or on its way to it.
mod standing_with_a_scheduler {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[derive(Clone, Debug)]
    enum Op {
        /// The agent's actor says it is idle (if it holds nothing).
        Idle(u8),
        /// It goes offline or is paused: the scheduler withdraws it.
        Busy(u8),
        /// The scheduler claims: for everyone, or for the newly idle.
        Claim {
            all: bool,
        },
        Create {
            gpu: bool,
            normal: bool,
        },
        /// The oldest of the queue's notices reaches the scheduler.
        Deliver,
        /// An agent holding a task accepts and completes it.
        Finish(u8),
        /// An operator pauses or resumes the low lane.
        Low {
            paused: bool,
        },
        Sync,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..3).prop_map(Op::Idle),
            (0u8..3).prop_map(Op::Busy),
            any::<bool>().prop_map(|all| Op::Claim { all }),
            (any::<bool>(), any::<bool>()).prop_map(|(gpu, normal)| Op::Create { gpu, normal }),
            Just(Op::Deliver),
            Just(Op::Deliver),
            (0u8..3).prop_map(Op::Finish),
            any::<bool>().prop_map(|paused| Op::Low { paused }),
            Just(Op::Sync),
        ]
    }

    const AGENTS: [&str; 3] = ["a", "b", "gpu"];

    /// The scheduler, and each agent's actor, as far as the queue sees.
    #[derive(Default)]
    struct World {
        idle: BTreeMap<String, IdleAgent>,
        unseen: BTreeSet<String>,
        seen: u64,
        notices: VecDeque<(Vec<Assignment>, u64)>,
        holds: HashMap<String, AttemptRef>,
    }

    impl World {
        /// As `SchedulerActor::deliver`: to an agent still idle, else back.
        fn deliver(&mut self, q: &mut QueueCore, assignments: Vec<Assignment>, now: i64) {
            for a in assignments {
                let attempt = AttemptRef::new(a.task.id.clone(), a.task.generation);
                if self.idle.remove(&a.agent_id).is_some() {
                    self.unseen.remove(&a.agent_id);
                    let before = self.holds.insert(a.agent_id.clone(), attempt);
                    assert!(before.is_none(), "{} given a second task", a.agent_id);
                } else {
                    q.release(&attempt, "no longer idle", t(now));
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        #[test]
        fn no_agent_is_given_two_tasks_and_none_is_lost(ops in prop::collection::vec(op(), 1..120)) {
            let mut q = core();
            let mut w = World::default();
            let mut now = 0i64;
            for op in ops {
                now += 1;
                match op {
                    Op::Idle(i) => {
                        let id = AGENTS[i as usize];
                        if !w.holds.contains_key(id) && !w.idle.contains_key(id) {
                            let caps: &[&str] = if i == 2 { &["gpu"] } else { &[] };
                            w.idle.insert(id.to_string(), IdleAgent::new(id, caps, now));
                            w.unseen.insert(id.to_string());
                        }
                    }
                    Op::Busy(i) => {
                        let id = AGENTS[i as usize];
                        if w.idle.remove(id).is_some() {
                            w.unseen.remove(id);
                            q.withdraw(id);
                        }
                    }
                    Op::Claim { all } => {
                        let offered: Vec<IdleAgent> = w
                            .idle
                            .values()
                            .filter(|a| all || w.unseen.contains(&a.id))
                            .cloned()
                            .collect();
                        w.unseen.clear();
                        let got = q.claim_offered(offered, all, w.seen, t(now));
                        w.deliver(&mut q, got, now);
                    }
                    Op::Create { gpu, normal } => {
                        let spec = NewTask {
                            needed_capabilities: gpu.then(|| vec!["gpu".to_string()]),
                            priority: Some(if normal { Priority::Normal } else { Priority::Low }),
                            ..spec("t")
                        };
                        created(q.create(spec, t(now)));
                    }
                    Op::Deliver => {
                        if let Some((assignments, upto)) = w.notices.pop_front() {
                            w.seen = w.seen.max(upto);
                            w.deliver(&mut q, assignments, now);
                        }
                    }
                    Op::Finish(i) => {
                        let id = AGENTS[i as usize];
                        if let Some(attempt) = w.holds.remove(id) {
                            prop_assert_eq!(q.accept(&attempt, id, t(now)), Verdict::Applied);
                            prop_assert_eq!(q.complete(&attempt, id, TaskResult::default(), t(now)), Verdict::Applied);
                        }
                    }
                    Op::Low { paused } => {
                        q.set_lane_paused(Priority::Low, paused);
                    }
                    Op::Sync => {
                        let changes = q.take_deltas();
                        q.durable(&changes, t(now));
                    }
                }
                // As the queue actor's commit: tasks just queued go to
                // standing agents, told to the scheduler later.
                let given = q.assign_standing(t(now));
                if !given.is_empty() {
                    w.notices.push_back((given, q.last_gift()));
                }
                // Invariants: each task out is held by its agent or on its
                // way to it; no agent has two.
                let mut out: HashMap<String, usize> = HashMap::new();
                for e in q.tasks.values().filter(|e| e.task.status.is_active()) {
                    let agent = e.task.assigned_to.clone().expect("an agent");
                    *out.entry(agent.clone()).or_default() += 1;
                    let attempt = AttemptRef::new(e.task.id.clone(), e.task.generation);
                    let held = w.holds.get(&agent) == Some(&attempt);
                    let coming = w.notices.iter().any(|(a, _)| {
                        a.iter().any(|a| a.task.id == e.task.id && a.agent_id == agent)
                    });
                    prop_assert!(held || coming, "task {} out to {} is neither held nor on its way", e.task.id, agent);
                }
                prop_assert!(out.values().all(|n| *n <= 1), "an agent has two tasks out: {:?}", out);
            }
        }
    }
}
