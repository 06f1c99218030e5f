//! Unit tests of the merge pipeline: tasks and changes moving together,
//! driven without git, actors or a store.

use super::*;
use crate::domain::gate::{GateConfig, ReviewMode};
use crate::domain::matching::IdleAgent;
use crate::domain::queue::testing::fail_as_task;
use crate::domain::queue::{Created, QueueSettings};
use crate::domain::retry::{RetryPolicy, Retryable};

fn t(ms: i64) -> Timestamp {
    Timestamp(1_800_000_000_000 + ms)
}

fn repos(review: ReviewMode, auto_merge: bool) -> BTreeMap<String, RepoConfig> {
    let gate =
        GateConfig::new(auto_merge, 5, 100, vec![], vec!["deploy/**".into()], review).unwrap();
    [(
        "app".to_string(),
        RepoConfig {
            name: "app".into(),
            url: "/srv/git/app.git".into(),
            main_branch: "main".into(),
            check_command: vec![],
            check_timeout_s: 60,
            poll_s: 30,
            gate,
        },
    )]
    .into()
}

struct World {
    q: QueueCore,
    c: ChangeCore,
    repos: BTreeMap<String, RepoConfig>,
}

impl World {
    fn new(review: ReviewMode, auto_merge: bool) -> World {
        World {
            q: QueueCore::new(QueueSettings {
                default_max_retries: 1,
                retry: RetryPolicy { backoff_s: vec![0] },
                ..QueueSettings::default()
            }),
            c: ChangeCore::new(100, 3_600_000),
            repos: repos(review, auto_merge),
        }
    }

    fn p(&mut self) -> Pipeline<'_> {
        Pipeline {
            queue: &mut self.q,
            changes: &mut self.c,
            repos: &self.repos,
        }
    }

    /// Submit a task titled `title` on `app`: its id.
    fn submit(&mut self, title: &str) -> String {
        let created = self.q.create(
            NewTask {
                title: title.into(),
                repo: Some("app".into()),
                ..Default::default()
            },
            t(0),
        );
        match created.unwrap() {
            Created::New(t) => t.id,
            Created::Existing(id) => id,
        }
    }

    /// Submit a task on `app` and have `agent` take it: working.
    fn working(&mut self, agent: &str) -> AttemptRef {
        let id = self.submit("fix it");
        self.retake(&id, agent)
    }

    fn retake(&mut self, id: &str, agent: &str) -> AttemptRef {
        let mut me = IdleAgent::new(agent, &[], 0);
        me.capabilities
            .insert(crate::domain::queue::repo_mark("app"));
        me.capabilities.insert("review".into());
        let got = self.q.claim(&[me], t(1));
        let a = got.iter().find(|a| a.task.id == id).expect("claimed");
        let r = AttemptRef::new(id, a.task.generation);
        assert_eq!(self.q.accept(&r, agent, t(2)), Verdict::Applied);
        r
    }

    fn pushed(head: &str) -> TaskResult {
        TaskResult {
            branch: Some("a1/t".into()),
            base: Some("b0".into()),
            head: Some(head.into()),
            ..Default::default()
        }
    }

    fn status(&self, id: &str) -> TaskStatus {
        self.q.get(id).unwrap().status
    }
}

#[test]
fn a_completed_attempt_with_commits_opens_a_change_and_merges() {
    let mut w = World::new(ReviewMode::None, true);
    let r = w.working("a1");
    let (v, fx) = w.p().complete(&r, "a1", World::pushed("h1"), t(3));
    assert_eq!(v, Verdict::Applied);
    assert_eq!(w.status(&r.task_id), TaskStatus::InReview);
    let change = w.c.live_for_task(&r.task_id).unwrap().clone();
    assert_eq!(
        (change.head.as_str(), change.agent_id.as_str()),
        ("h1", "a1")
    );
    assert!(
        matches!(&fx[..], [Effect::Inspect { change_id, head, .. }] if *change_id == change.id && head == "h1")
    );

    let fx = w
        .p()
        .inspected(&change.id, Ok((vec!["src/a.rs".into()], 4, 1)), t(4))
        .unwrap();
    assert_eq!(fx, [Effect::MergeKick { repo: "app".into() }]);
    assert_eq!(w.c.next_to_merge("app").unwrap().id, change.id);

    w.p()
        .merge_done(
            &change.id,
            MergeResult::Merged {
                sha: "m1".into(),
                check: None,
            },
            t(5),
        )
        .unwrap();
    assert_eq!(w.status(&r.task_id), TaskStatus::Completed);
    assert_eq!(w.c.get(&change.id).unwrap().status, ChangeStatus::Merged);
}

#[test]
fn no_commits_or_no_repository_completes_at_once() {
    let mut w = World::new(ReviewMode::None, true);
    let r = w.working("a1");
    let nothing = TaskResult {
        no_changes: true,
        ..World::pushed("b0")
    };
    let (_, fx) = w.p().complete(&r, "a1", nothing, t(3));
    assert!(fx.is_empty());
    assert_eq!(w.status(&r.task_id), TaskStatus::Completed);
    assert!(w.c.live_for_task(&r.task_id).is_none());
}

#[test]
fn a_failed_check_sends_the_task_back_with_the_log_in_its_dossier() {
    let mut w = World::new(ReviewMode::None, true);
    let r = w.working("a1");
    w.p().complete(&r, "a1", World::pushed("h1"), t(3));
    let id = w.c.live_for_task(&r.task_id).unwrap().id.clone();
    w.p()
        .inspected(&id, Ok((vec!["a".into()], 1, 0)), t(4))
        .unwrap();
    let check = CheckRun {
        exit_code: Some(1),
        log_tail: "test foo ... FAILED".into(),
        duration_s: 1.5,
        sha: Some("m?".into()),
    };
    let fx = w
        .p()
        .merge_done(
            &id,
            MergeResult::Failed {
                event: "check_failed",
                reasons: "the check failed (exit 1)".into(),
                check: Some(check),
            },
            t(5),
        )
        .unwrap();
    assert_eq!(
        fx,
        [Effect::MergeKick { repo: "app".into() }],
        "the next one may go"
    );
    assert_eq!(w.c.get(&id).unwrap().status, ChangeStatus::SentBack);
    let task = w.q.get(&r.task_id).unwrap().clone();
    assert_eq!(
        task.status,
        TaskStatus::Queued,
        "queued again at once (backoff 0)"
    );
    let last = task.dossier.attempts.last().unwrap();
    assert_eq!(last.outcome, "sent_back");
    assert_eq!(last.log_tail.as_deref(), Some("test foo ... FAILED"));
    assert_eq!(last.head.as_deref(), Some("h1"));
    assert!(last.error.as_deref().unwrap().contains("exit 1"));

    // The second attempt is sent back too: out of retries, dead.
    let r2 = w.retake(&r.task_id, "a2");
    w.p().complete(&r2, "a2", World::pushed("h2"), t(6));
    let id2 = w.c.live_for_task(&r.task_id).unwrap().id.clone();
    w.p()
        .inspected(&id2, Ok((vec!["a".into()], 1, 0)), t(7))
        .unwrap();
    w.p()
        .merge_done(
            &id2,
            MergeResult::Failed {
                event: "conflict",
                reasons: "conflict in a".into(),
                check: None,
            },
            t(8),
        )
        .unwrap();
    assert_eq!(w.status(&r.task_id), TaskStatus::Dead);
    assert_eq!(w.q.get(&r.task_id).unwrap().dossier.attempts.len(), 2);
}

#[test]
fn the_gate_escalates_and_a_person_approves_or_rejects() {
    let mut w = World::new(ReviewMode::None, true);
    let r = w.working("a1");
    w.p().complete(&r, "a1", World::pushed("h1"), t(3));
    let id = w.c.live_for_task(&r.task_id).unwrap().id.clone();
    let fx = w
        .p()
        .inspected(&id, Ok((vec!["deploy/hub.service".into()], 1, 0)), t(4))
        .unwrap();
    assert!(
        matches!(&fx[..], [Effect::Alert { kind: AlertKind::ChangeEscalated, message, .. }] if message.contains("deploy/hub.service"))
    );
    assert_eq!(w.c.get(&id).unwrap().status, ChangeStatus::Escalated);
    assert_eq!(
        w.p().approve(&id, t(5)).unwrap(),
        [Effect::MergeKick { repo: "app".into() }]
    );

    // Another one rejected, queued again; a third rejected for good.
    for requeue in [true, false] {
        let r = w.working("a1");
        w.p().complete(&r, "a1", World::pushed("h9"), t(6));
        let id = w.c.live_for_task(&r.task_id).unwrap().id.clone();
        w.p()
            .inspected(&id, Ok((vec!["deploy/x".into()], 1, 0)), t(7))
            .unwrap();
        w.p().reject(&id, "not like this", requeue, t(8)).unwrap();
        assert_eq!(w.c.get(&id).unwrap().status, ChangeStatus::Rejected);
        let want = if requeue {
            TaskStatus::Queued
        } else {
            TaskStatus::Dead
        };
        assert_eq!(w.status(&r.task_id), want);
        w.q.cancel(&r.task_id, "tidy", t(9)).unwrap();
    }
}

#[test]
fn an_agent_reviews_and_is_never_the_author() {
    for (verdict, want_change, want_task) in [
        ("approve", ChangeStatus::Merging, TaskStatus::InReview),
        (
            "request_changes",
            ChangeStatus::SentBack,
            TaskStatus::Queued,
        ),
        ("escalate", ChangeStatus::Escalated, TaskStatus::InReview),
        ("maybe", ChangeStatus::Escalated, TaskStatus::InReview),
    ] {
        let mut w = World::new(ReviewMode::Agent, true);
        let r = w.working("a1");
        w.p().complete(&r, "a1", World::pushed("h1"), t(3));
        let id = w.c.live_for_task(&r.task_id).unwrap().id.clone();
        assert!(w
            .p()
            .inspected(&id, Ok((vec!["a".into()], 1, 0)), t(4))
            .unwrap()
            .is_empty());
        let review_id = w.c.get(&id).unwrap().review.clone().unwrap().task_id;
        let review = w.q.get(&review_id).unwrap().clone();
        assert_eq!(review.kind, TaskKind::Review);
        assert_eq!(review.needed_capabilities, ["review"]);
        assert_eq!(review.exclude_agents, ["a1"]);
        assert_eq!(review.metadata.as_ref().unwrap()["change_id"], id.as_str());
        assert!(review.description.contains("verdict"));
        // The author is never given its own review.
        let mut author = IdleAgent::new("a1", &["review"], 0);
        author
            .capabilities
            .insert(crate::domain::queue::repo_mark("app"));
        assert!(w
            .q
            .claim(&[author], t(5))
            .iter()
            .all(|a| a.task.id != review_id));
        let rr = w.retake(&review_id, "reviewer");
        let mut result = TaskResult::default();
        result.extra.insert("verdict".into(), json!(verdict));
        result
            .extra
            .insert("notes".into(), json!("please add a test"));
        let (_, fx) = w.p().complete(&rr, "reviewer", result, t(6));
        assert_eq!(w.c.get(&id).unwrap().status, want_change, "{verdict}");
        assert_eq!(w.status(&r.task_id), want_task, "{verdict}");
        assert_eq!(w.status(&review_id), TaskStatus::Completed);
        match want_change {
            ChangeStatus::Merging => assert_eq!(fx, [Effect::MergeKick { repo: "app".into() }]),
            ChangeStatus::Escalated => assert!(matches!(
                &fx[..],
                [Effect::Alert {
                    kind: AlertKind::ChangeEscalated,
                    ..
                }]
            )),
            _ => {
                let last =
                    w.q.get(&r.task_id)
                        .unwrap()
                        .dossier
                        .attempts
                        .last()
                        .cloned()
                        .unwrap();
                assert_eq!(last.error.as_deref(), Some("please add a test"));
            }
        }
    }
}

#[test]
fn a_review_that_dies_hands_the_change_to_a_person() {
    let mut w = World::new(ReviewMode::Agent, true);
    let r = w.working("a1");
    w.p().complete(&r, "a1", World::pushed("h1"), t(3));
    let id = w.c.live_for_task(&r.task_id).unwrap().id.clone();
    w.p()
        .inspected(&id, Ok((vec!["a".into()], 1, 0)), t(4))
        .unwrap();
    let review_id = w.c.get(&id).unwrap().review.clone().unwrap().task_id;
    let rr = w.retake(&review_id, "reviewer");
    fail_as_task(
        &mut w.q,
        &rr,
        "reviewer",
        "model unavailable",
        Retryable::No,
        t(5),
    );
    let fx = w.p().task_ended(&review_id, t(5));
    assert!(matches!(
        &fx[..],
        [Effect::Alert {
            kind: AlertKind::ChangeEscalated,
            ..
        }]
    ));
    assert_eq!(w.c.get(&id).unwrap().status, ChangeStatus::Escalated);
}

#[test]
fn cancelling_a_task_in_review_rejects_its_change() {
    let mut w = World::new(ReviewMode::None, true);
    let r = w.working("a1");
    w.p().complete(&r, "a1", World::pushed("h1"), t(3));
    let id = w.c.live_for_task(&r.task_id).unwrap().id.clone();
    w.p().cancel(&r.task_id, "not needed", t(4)).unwrap();
    assert_eq!(w.status(&r.task_id), TaskStatus::Cancelled);
    assert_eq!(w.c.get(&id).unwrap().status, ChangeStatus::Rejected);
}

#[test]
fn a_change_being_merged_is_neither_rejected_nor_cancelled() {
    let mut w = World::new(ReviewMode::None, true);
    let r = w.working("a1");
    w.p().complete(&r, "a1", World::pushed("h1"), t(3));
    let id = w.c.live_for_task(&r.task_id).unwrap().id.clone();
    w.p()
        .inspected(&id, Ok((vec!["a".into()], 1, 0)), t(4))
        .unwrap();
    // Waiting in the merge queue, not handed out: a person may still say no.
    assert!(!w.c.being_merged(&id));
    // The worker takes it: its merge commit may reach main any moment.
    w.c.merge_handed_out("app", Some(&id));
    assert!(w.c.being_merged(&id));
    let err = w.p().reject(&id, "no", false, t(5)).unwrap_err();
    assert!(
        matches!(&err, PipelineError::Change(ChangeError::Conflict(m)) if m.contains("being merged")),
        "{err:?}"
    );
    let err = w.p().cancel(&r.task_id, "no", t(5)).unwrap_err();
    assert!(
        matches!(&err, QueueError::Conflict(m) if m.contains("being merged")),
        "{err:?}"
    );
    assert_eq!(w.c.get(&id).unwrap().status, ChangeStatus::Merging);
    assert_eq!(w.status(&r.task_id), TaskStatus::InReview);
    // The worker asks again (its job was held back, main being red): the
    // change waits in the queue again and may be rejected.
    w.c.merge_handed_out("app", None);
    w.p().reject(&id, "no after all", false, t(6)).unwrap();
    assert_eq!(w.c.get(&id).unwrap().status, ChangeStatus::Rejected);
    assert_eq!(w.status(&r.task_id), TaskStatus::Dead);

    // Its outcome reported: no longer being merged.
    let r = w.working("a1");
    w.p().complete(&r, "a1", World::pushed("h2"), t(7));
    let id = w.c.live_for_task(&r.task_id).unwrap().id.clone();
    w.p()
        .inspected(&id, Ok((vec!["a".into()], 1, 0)), t(8))
        .unwrap();
    w.c.merge_handed_out("app", Some(&id));
    w.p()
        .merge_done(
            &id,
            MergeResult::Failed {
                event: "conflict",
                reasons: "conflicts".into(),
                check: None,
            },
            t(9),
        )
        .unwrap();
    assert!(!w.c.being_merged(&id));
}

#[test]
fn a_red_main_holds_its_tasks_back_until_green() {
    let mut w = World::new(ReviewMode::None, true);
    let fx = w.p().main_checked("app", "bad", false, None);
    assert!(
        matches!(
            &fx[..],
            [Effect::RememberHealth { repo, red_at: Some(sha) }, Effect::Alert {
                kind: AlertKind::MainRed,
                ..
            }] if repo == "app" && sha == "bad"
        ),
        "{fx:?}"
    );
    assert!(
        w.p().main_checked("app", "bad2", false, None).is_empty(),
        "one alert while red, nothing new to remember"
    );
    let id = w.submit("x");
    let mut a = IdleAgent::new("a1", &[], 0);
    a.capabilities
        .insert(crate::domain::queue::repo_mark("app"));
    assert!(
        w.q.claim(std::slice::from_ref(&a), t(1)).is_empty(),
        "held back while red"
    );
    let fx = w.p().main_checked("app", "fixed", true, None);
    assert!(fx.contains(&Effect::MergeKick { repo: "app".into() }));
    assert!(fx.contains(&Effect::RememberHealth {
        repo: "app".into(),
        red_at: None
    }));
    assert_eq!(w.q.claim(&[a], t(2))[0].task.id, id);
    assert!(
        w.p().main_checked("app", "fixed2", true, None).is_empty(),
        "green stays green: nothing to remember"
    );
}

#[test]
fn a_restarted_hub_keeps_a_red_main_red_until_a_check_passes() {
    // What the hub remembered: app's main was red. Restored paused, a
    // second red check changes nothing (no second alert); a green one
    // resumes and forgets.
    let mut w = World::new(ReviewMode::None, true);
    w.q.set_repo_paused("app", true);
    assert!(w.p().main_checked("app", "bad", false, None).is_empty());
    let fx = w.p().main_checked("app", "good", true, None);
    assert!(fx.contains(&Effect::RememberHealth {
        repo: "app".into(),
        red_at: None
    }));
    assert!(fx.iter().any(|e| matches!(
        e,
        Effect::Alert {
            kind: AlertKind::MainGreen,
            ..
        }
    )));
    assert!(!w.q.repo_paused("app"));
}
