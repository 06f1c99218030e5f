//! Unit tests of the attempt machine: every rule driven by events and
//! explicit times, no processes, files or sockets.

use std::time::Duration;

use super::*;

fn t(ms: i64) -> Timestamp {
    Timestamp(1_800_000_000_000 + ms)
}

fn settings(mode: Mode) -> AttemptSettings {
    AttemptSettings {
        agent_id: "a1".into(),
        capabilities: vec!["rust".into()],
        sidecar_version: "test".into(),
        mode,
        runner_timeout_s: 3600,
        repos: vec!["app".into()],
        context_window_tokens: Some(128_000),
        rate_limits: RateLimits {
            exit_code: Some(75),
            default_s: 60,
        },
        cancel_command: false,
        instance_id: Some("0123456789abcdef0123456789abcdef".into()),
    }
}

use crate::testing::task;

fn r(id: &str, generation: u64) -> AttemptRef {
    AttemptRef::new(id, generation)
}

fn complete(id: &str, generation: u64) -> SidecarMsg {
    SidecarMsg::Complete {
        task_id: id.into(),
        generation,
        result: TaskResult::default(),
    }
}

fn fail(id: &str, generation: u64, error: &str) -> SidecarMsg {
    SidecarMsg::Fail {
        task_id: id.into(),
        generation,
        error: error.into(),
        retryable: true,
        class: Default::default(),
        retry_after_s: None,
        log_tail: None,
    }
}

/// A freshly started machine with nothing to recover.
fn idle(mode: Mode) -> AttemptMachine {
    let (m, plan) = AttemptMachine::recover(settings(mode), None, vec![]);
    assert!(plan.is_empty());
    m
}

/// Connected and welcomed; the resend is checked elsewhere.
fn online(m: &mut AttemptMachine) {
    m.connected();
    m.welcomed();
    assert_eq!(m.link(), Link::Welcomed);
}

/// An idle, welcomed machine.
fn online_idle(mode: Mode) -> AttemptMachine {
    let mut m = idle(mode);
    online(&mut m);
    m
}

/// Assign `id#generation` at `at` and let everything succeed up to a
/// running runner.
fn running(m: &mut AttemptMachine, id: &str, generation: u64, at: i64) -> AttemptRef {
    let a = r(id, generation);
    let fx = m.assign(a.clone(), task(id, generation), t(at));
    assert_eq!(names(&fx), ["save current"]);
    let fx = m.current_saved(Ok(()));
    assert_eq!(names(&fx), ["send accept", "start runner"]);
    assert!(m.runner_launched(&a).is_empty());
    assert_eq!(m.runner(), RunnerState::Running);
    a
}

/// Effects as short names, to check their order.
fn names(fx: &[Effect]) -> Vec<String> {
    fx.iter()
        .map(|e| match e {
            Effect::Send(msg) => format!("send {}", msg.kind()),
            Effect::SaveCurrent(_) => "save current".into(),
            Effect::ClearCurrent => "clear current".into(),
            Effect::PushOutbox(msg) => format!("push {}", msg.kind()),
            Effect::RemoveFromOutbox { kind, .. } => format!("remove {kind}"),
            Effect::StartRunner(_) => "start runner".into(),
            Effect::StopRunner { .. } => "stop runner".into(),
            Effect::CancelWoken { .. } => "cancel woken".into(),
            Effect::Push { .. } => "push branch".into(),
            Effect::KillLeftover { .. } => "kill leftover".into(),
            Effect::RunSelfTest(_) => "run selftest".into(),
            Effect::ReplaceInOutbox { new, .. } => format!("replace with {}", new.kind()),
        })
        .collect()
}

fn sent(fx: &[Effect]) -> Vec<SidecarMsg> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Send(msg) => Some(msg.clone()),
            _ => None,
        })
        .collect()
}

/// The report a finish pushes to the outbox (the only effect).
fn pushed(fx: &[Effect]) -> SidecarMsg {
    match fx {
        [Effect::PushOutbox(msg)] => msg.clone(),
        other => panic!("expected one push to the outbox, got {:?}", names(other)),
    }
}

fn fail_error(msg: &SidecarMsg) -> (&str, bool) {
    match msg {
        SidecarMsg::Fail {
            error, retryable, ..
        } => (error, *retryable),
        other => panic!("{other:?}"),
    }
}

fn idle_heartbeat() -> SidecarMsg {
    SidecarMsg::Heartbeat {
        state: SidecarState::Idle,
        task_id: None,
        generation: None,
        activity: None,
        selftest: None,
    }
}

/// A running runner not looked at yet.
fn alive() -> Activity {
    Activity {
        runner_alive: true,
        ..Activity::default()
    }
}

/// The heartbeat of a sidecar working on `a` whose runner is not running
/// and was never seen write anything.
fn working_heartbeat(a: &AttemptRef) -> SidecarMsg {
    working_heartbeat_with(a, Activity::default())
}

fn working_heartbeat_with(a: &AttemptRef, activity: Activity) -> SidecarMsg {
    SidecarMsg::Heartbeat {
        state: SidecarState::Working,
        task_id: Some(a.task_id.clone()),
        generation: Some(a.generation),
        activity: Some(activity),
        selftest: None,
    }
}

/// A woken agent's `complete` of `task_id`, saying nothing more.
fn bare_complete(task_id: &str) -> Request {
    Request::Complete {
        task_id: task_id.into(),
        summary: None,
        pr_url: None,
        branch: None,
    }
}

fn exited(code: i32) -> Outcome {
    Outcome::Exited {
        code: Some(code),
        log_tail: String::new(),
    }
}

// ----- assign ------------------------------------------------------------------------

#[test]
fn the_assignment_is_persisted_before_accept_and_the_runner_starts_after() {
    let mut m = online_idle(Mode::Exec);
    let a = r("t1", 1);
    let fx = m.assign(a.clone(), task("t1", 1), t(5));
    match fx.as_slice() {
        [Effect::SaveCurrent(c)] => {
            assert_eq!(c.attempt, a);
            assert_eq!(c.accepted_at, t(5));
            assert_eq!(c.runner_pgid, None);
        }
        other => panic!("only the save may come first, got {:?}", names(other)),
    }
    assert!(m.current().is_none(), "not held until it is on disk");
    let fx = m.current_saved(Ok(()));
    assert_eq!(names(&fx), ["send accept", "start runner"]);
    assert_eq!(
        sent(&fx),
        [SidecarMsg::Accept {
            task_id: "t1".into(),
            generation: 1
        }]
    );
    assert_eq!(m.current().map(|c| &c.attempt), Some(&a));
    assert_eq!(m.runner(), RunnerState::NotRunning, "until it is launched");
    m.runner_launched(&a);
    assert_eq!(m.runner(), RunnerState::Running);
}

#[test]
fn an_assignment_that_cannot_be_persisted_is_rejected_and_nothing_runs() {
    let mut m = online_idle(Mode::Exec);
    m.assign(r("t1", 1), task("t1", 1), t(0));
    let fx = m.current_saved(Err("disk full".into()));
    assert_eq!(
        fx,
        [Effect::Send(SidecarMsg::Reject {
            task_id: "t1".into(),
            generation: 1,
            reason: "cannot persist: disk full".into(),
        })]
    );
    assert!(m.current().is_none());
    assert_eq!(m.runner(), RunnerState::NotRunning);
    // Still free for the next one.
    assert_eq!(
        names(&m.assign(r("t2", 1), task("t2", 1), t(1))),
        ["save current"]
    );
}

#[test]
fn a_repeated_assign_of_the_held_attempt_is_accepted_again_without_a_second_runner() {
    let mut m = online_idle(Mode::Exec);
    let a = running(&mut m, "t1", 1, 0);
    let fx = m.assign(a.clone(), task("t1", 1), t(10));
    assert_eq!(
        fx,
        [Effect::Send(SidecarMsg::Accept {
            task_id: "t1".into(),
            generation: 1
        })]
    );
    assert_eq!(
        m.current().unwrap().accepted_at,
        t(0),
        "the attempt is kept"
    );
}

#[test]
fn an_assign_while_busy_is_rejected() {
    let mut m = online_idle(Mode::Exec);
    running(&mut m, "t1", 1, 0);
    let fx = m.assign(r("t2", 1), task("t2", 1), t(10));
    assert_eq!(
        fx,
        [Effect::Send(SidecarMsg::Reject {
            task_id: "t2".into(),
            generation: 1,
            reason: "busy with t1#1".into(),
        })]
    );
    assert_eq!(m.current().unwrap().attempt, r("t1", 1));
}

#[test]
fn the_runner_group_is_recorded_for_the_held_attempt_only() {
    let mut m = online_idle(Mode::Exec);
    let a = running(&mut m, "t1", 1, 0);
    assert!(
        m.runner_started(&r("t0", 1), 77, None).is_empty(),
        "not held"
    );
    match m.runner_started(&a, 4242, None).as_slice() {
        [Effect::SaveCurrent(c)] => assert_eq!(c.runner_pgid, Some(4242)),
        other => panic!("{:?}", names(other)),
    }
    // A failed save is only logged; the attempt goes on.
    assert!(m.current_saved(Err("disk full".into())).is_empty());
    assert_eq!(m.current().unwrap().runner_pgid, Some(4242));
    assert_eq!(m.runner(), RunnerState::Running);
}

// ----- finishing -----------------------------------------------------------------------

#[test]
fn the_report_is_in_the_outbox_before_the_attempt_is_cleared_then_sent() {
    let mut m = online_idle(Mode::Exec);
    let a = running(&mut m, "t1", 1, 0);
    let report = pushed(&m.runner_done(&a, exited(2), None));
    assert_eq!(fail_error(&report), ("the runner exited with code 2", true));
    assert!(
        m.current().is_some(),
        "held until the outbox has its report"
    );
    let fx = m.outbox_pushed(Ok(()));
    assert_eq!(names(&fx), ["clear current", "send fail", "send heartbeat"]);
    assert_eq!(sent(&fx), [report.clone(), idle_heartbeat()]);
    assert!(m.current().is_none());
    assert_eq!(m.runner(), RunnerState::NotRunning);
    assert_eq!(m.outbox(), [report]);
}

#[test]
fn a_report_that_cannot_be_saved_is_never_sent_and_saving_is_retried_at_each_tick() {
    let mut m = online_idle(Mode::Exec);
    let a = running(&mut m, "t1", 1, 0);
    let report = pushed(&m.runner_done(&a, exited(0), None));
    assert_eq!(report, complete("t1", 1));
    assert!(
        m.outbox_pushed(Err("disk full".into())).is_empty(),
        "nothing is sent, nothing cleared"
    );
    assert!(m.outbox().is_empty());
    assert_eq!(m.unsaved(), Some(&report));
    assert_eq!(m.current().map(|c| &c.attempt), Some(&a), "still held");
    assert_eq!(m.runner(), RunnerState::NotRunning);
    // Heartbeats say it still works on it; a reconnect resends its accept,
    // not the report.
    assert_eq!(m.heartbeat_due(), [Effect::Send(working_heartbeat(&a))]);
    m.disconnected();
    m.connected();
    assert_eq!(
        sent(&m.welcomed()),
        [
            SidecarMsg::Accept {
                task_id: "t1".into(),
                generation: 1
            },
            working_heartbeat(&a)
        ]
    );
    // Each tick tries again, for as long as it takes.
    for i in 0..3 {
        assert_eq!(pushed(&m.tick(t(1_000 * i))), report);
        assert!(m.outbox_pushed(Err("still full".into())).is_empty());
    }
    assert_eq!(pushed(&m.tick(t(10_000))), report);
    let fx = m.outbox_pushed(Ok(()));
    assert_eq!(
        names(&fx),
        ["clear current", "send complete", "send heartbeat"]
    );
    assert_eq!(sent(&fx), [report.clone(), idle_heartbeat()]);
    assert_eq!(m.outbox(), [report]);
    assert!(m.unsaved().is_none());
    assert!(m.current().is_none());
    assert!(m.tick(t(20_000)).is_empty(), "nothing left to save");
}

#[test]
fn while_its_report_waits_to_be_saved_the_attempt_ended_once() {
    let mut m = online_idle(Mode::Wake);
    let a = running(&mut m, "t1", 1, 0);
    let report = pushed(&m.runner_done(&a, exited(4), None));
    m.outbox_pushed(Err("disk full".into()));
    // A cancel only tries to save the first report again.
    assert_eq!(
        pushed(&m.cancel(a.clone(), Some("operator".into()))),
        report
    );
    m.outbox_pushed(Err("disk full".into()));
    // The woken agent cannot report over it.
    let (reply, fx) = m.control(bare_complete("t1"));
    assert!(fx.is_empty());
    assert_eq!(
        reply,
        Reply {
            ok: false,
            message: "t1#1 already ended; its report waits to be saved".into()
        }
    );
    // Nor does the wake deadline fail it again.
    assert_eq!(pushed(&m.tick(t(1_000_000_000))), report);
}

#[test]
fn an_invalid_assignment_is_rejected_and_nothing_is_saved_or_run() {
    let mut m = online_idle(Mode::Exec);
    for id in ["../../x", "/etc/x", "a/b", "-rf", "", "x\0y"] {
        let fx = m.assign(r(id, 1), task(id, 1), t(0));
        match fx.as_slice() {
            [Effect::Send(SidecarMsg::Reject {
                task_id,
                generation: 1,
                reason,
            })] => {
                assert_eq!(task_id, id);
                assert!(reason.starts_with("invalid task id"), "{reason}");
            }
            other => panic!("{id:?}: {:?}", names(other)),
        }
    }
    // A body about another attempt.
    let fx = m.assign(r("t1", 1), task("../t2", 1), t(0));
    assert!(
        matches!(&fx[..], [Effect::Send(SidecarMsg::Reject { reason, .. })] if reason.starts_with("invalid assignment")),
        "{fx:?}"
    );
    let fx = m.assign(r("t1", 2), task("t1", 1), t(0));
    assert!(
        matches!(&fx[..], [Effect::Send(SidecarMsg::Reject { reason, .. })] if reason.contains("generation 1")),
        "{fx:?}"
    );
    assert!(m.current().is_none());
    // Invalid even while busy: the reason is the id, not the attempt held.
    running(&mut m, "t1", 1, 0);
    assert!(matches!(
        &m.assign(r("../x", 1), task("../x", 1), t(0))[..],
        [Effect::Send(SidecarMsg::Reject { reason, .. })] if reason.starts_with("invalid task id")
    ));
    // Offline, nothing is sent at all.
    let mut m = idle(Mode::Exec);
    assert!(m.assign(r("../x", 1), task("../x", 1), t(0)).is_empty());
}

#[test]
fn a_result_too_large_to_send_becomes_a_final_failure_before_it_is_saved() {
    let mut m = online_idle(Mode::Exec);
    let a = running(&mut m, "t1", 1, 0);
    let poison = Value::String("\u{1}".repeat(400 * 1024));
    let report = pushed(&m.runner_done(&a, exited(0), Some(poison)));
    let (error, retryable) = fail_error(&report);
    assert!(
        error.starts_with("the result is too large to send: ")
            && error.ends_with(" bytes encoded, the limit is 1048576"),
        "{error}"
    );
    assert!(!retryable);
    assert_eq!(sent(&m.outbox_pushed(Ok(())))[0], report);
}

#[test]
fn exit_zero_reports_what_the_result_file_held() {
    let mut m = online_idle(Mode::Exec);
    let a = running(&mut m, "t1", 1, 0);
    let report = pushed(&m.runner_done(
        &a,
        exited(0),
        Some(serde_json::json!({"summary": "did it"})),
    ));
    match report {
        SidecarMsg::Complete { result, .. } => {
            assert_eq!(result.summary.as_deref(), Some("did it"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_runner_of_an_attempt_no_longer_held_is_ignored() {
    let mut m = online_idle(Mode::Exec);
    let a = running(&mut m, "t1", 1, 0);
    assert!(m.runner_done(&r("t0", 3), exited(1), None).is_empty());
    assert_eq!(m.runner(), RunnerState::Running);
    assert_eq!(m.current().unwrap().attempt, a);
}

#[test]
fn while_offline_a_report_only_goes_to_the_outbox_and_is_resent_after_welcome() {
    let mut m = online_idle(Mode::Exec);
    let a = running(&mut m, "t1", 1, 0);
    m.disconnected();
    let report = pushed(&m.runner_done(&a, exited(0), None));
    assert_eq!(names(&m.outbox_pushed(Ok(()))), ["clear current"]);
    let hello = m.connected();
    match sent(&hello).as_slice() {
        [SidecarMsg::Hello {
            state,
            current_task,
            pending_results,
            ..
        }] => {
            assert_eq!(*state, SidecarState::Idle);
            assert_eq!(*current_task, None);
            assert_eq!(pending_results, std::slice::from_ref(&a));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sent(&m.welcomed()), [report, idle_heartbeat()]);
}

// ----- reconnecting ----------------------------------------------------------------------

#[test]
fn after_welcome_the_held_accept_then_the_outbox_oldest_first_then_a_heartbeat() {
    let (mut m, plan) = AttemptMachine::recover(
        settings(Mode::Exec),
        None,
        vec![complete("t1", 1), fail("t2", 4, "boom")],
    );
    assert!(plan.is_empty());
    online(&mut m);
    let a = running(&mut m, "t3", 2, 0);
    m.disconnected();
    assert_eq!(m.link(), Link::Down);
    match sent(&m.connected()).as_slice() {
        [SidecarMsg::Hello {
            agent_id,
            capabilities,
            state,
            current_task,
            pending_results,
            sidecar_version,
            ..
        }] => {
            assert_eq!(agent_id, "a1");
            assert_eq!(*capabilities, ["rust"]);
            assert_eq!(*state, SidecarState::Working);
            assert_eq!(current_task.as_ref(), Some(&a));
            assert_eq!(*pending_results, [r("t1", 1), r("t2", 4)]);
            assert_eq!(sidecar_version, "test");
        }
        other => panic!("{other:?}"),
    }
    assert!(m.heartbeat_due().is_empty(), "no heartbeat before welcome");
    assert_eq!(
        sent(&m.welcomed()),
        [
            SidecarMsg::Accept {
                task_id: "t3".into(),
                generation: 2
            },
            complete("t1", 1),
            fail("t2", 4, "boom"),
            working_heartbeat_with(&a, alive()),
        ]
    );
    assert_eq!(
        m.heartbeat_due(),
        [Effect::Send(working_heartbeat_with(&a, alive()))]
    );
}

#[test]
fn an_idle_sidecar_resends_only_a_heartbeat() {
    let mut m = idle(Mode::Exec);
    m.connected();
    assert_eq!(sent(&m.welcomed()), [idle_heartbeat()]);
}

// ----- cancel ------------------------------------------------------------------------------

#[test]
fn a_stale_cancel_is_ignored() {
    let mut m = online_idle(Mode::Exec);
    assert!(m.cancel(r("t1", 1), None).is_empty(), "nothing held");
    let a = running(&mut m, "t1", 2, 0);
    assert!(m.cancel(r("t1", 1), Some("old".into())).is_empty());
    assert!(m.cancel(r("t9", 2), Some("other".into())).is_empty());
    assert_eq!(m.runner(), RunnerState::Running);
    assert_eq!(m.current().unwrap().attempt, a);
}

#[test]
fn a_cancel_stops_the_running_runner_and_its_end_is_the_report() {
    let mut m = online_idle(Mode::Exec);
    let a = running(&mut m, "t1", 1, 0);
    let fx = m.cancel(a.clone(), Some("operator".into()));
    assert_eq!(
        fx,
        [Effect::StopRunner {
            attempt: a.clone(),
            reason: "operator".into()
        }]
    );
    assert_eq!(m.runner(), RunnerState::Stopping);
    let report = pushed(&m.runner_done(
        &a,
        Outcome::Cancelled {
            reason: "operator".into(),
            log_tail: String::new(),
        },
        None,
    ));
    assert_eq!(fail_error(&report), ("cancelled: operator", true));
}

#[test]
fn a_cancel_without_a_runner_fails_the_attempt_at_once() {
    let mut m = online_idle(Mode::Exec);
    let a = r("t1", 1);
    m.assign(a.clone(), task("t1", 1), t(0));
    // The accept could not be sent: the runner was never launched.
    m.current_saved(Ok(()));
    let report = pushed(&m.cancel(a.clone(), None));
    assert_eq!(
        fail_error(&report),
        ("cancelled: cancelled by the hub", true)
    );
    assert_eq!(
        names(&m.outbox_pushed(Ok(()))),
        ["clear current", "send fail", "send heartbeat"]
    );
}

#[test]
fn a_second_cancel_while_the_runner_stops_fails_the_attempt_at_once() {
    let mut m = online_idle(Mode::Exec);
    let a = running(&mut m, "t1", 1, 0);
    assert_eq!(names(&m.cancel(a.clone(), None)), ["stop runner"]);
    let report = pushed(&m.cancel(a.clone(), Some("again".into())));
    assert_eq!(fail_error(&report), ("cancelled: again", true));
    m.outbox_pushed(Ok(()));
    // The stopped runner's end comes later and changes nothing.
    assert!(m
        .runner_done(
            &a,
            Outcome::Cancelled {
                reason: "x".into(),
                log_tail: String::new(),
            },
            None
        )
        .is_empty());
    assert_eq!(m.outbox().len(), 1);
}

// ----- ack -----------------------------------------------------------------------------------

#[test]
fn an_ack_removes_the_report_once_it_is_deleted_from_disk() {
    let (mut m, _) = AttemptMachine::recover(
        settings(Mode::Exec),
        None,
        vec![complete("t1", 1), fail("t2", 1, "x")],
    );
    online(&mut m);
    let fx = m.ack(r("t1", 1), AckOf::Complete);
    assert_eq!(
        fx,
        [Effect::RemoveFromOutbox {
            attempt: r("t1", 1),
            kind: "complete"
        }]
    );
    assert!(m.outbox_acked(Ok(true)).is_empty());
    assert_eq!(m.outbox(), [fail("t2", 1, "x")]);
    // Deleting failed: it stays, and is resent after the next welcome.
    m.ack(r("t2", 1), AckOf::Fail);
    m.outbox_acked(Err("read-only".into()));
    assert_eq!(m.outbox(), [fail("t2", 1, "x")]);
    // An ack for something the disk did not have changes nothing.
    m.ack(r("t2", 1), AckOf::Accept);
    m.outbox_acked(Ok(false));
    assert_eq!(m.outbox().len(), 1);
}

// ----- wake mode --------------------------------------------------------------------------

#[test]
fn wake_mode_exit_zero_keeps_waiting_for_the_agent() {
    let mut m = online_idle(Mode::Wake);
    let a = running(&mut m, "t1", 1, 0);
    assert!(m.runner_done(&a, exited(0), None).is_empty());
    assert_eq!(m.current().unwrap().attempt, a);
    assert_eq!(m.runner(), RunnerState::NotRunning);
    assert_eq!(m.heartbeat_due(), [Effect::Send(working_heartbeat(&a))]);
}

#[test]
fn wake_mode_a_failing_wake_command_is_the_report() {
    let mut m = online_idle(Mode::Wake);
    let a = running(&mut m, "t1", 1, 0);
    let report = pushed(&m.runner_done(&a, exited(3), None));
    assert_eq!(fail_error(&report).0, "the runner exited with code 3");
}

#[test]
fn wake_mode_the_agent_reports_through_the_control_socket() {
    let mut m = online_idle(Mode::Wake);
    let a = running(&mut m, "t1", 1, 0);
    m.runner_done(&a, exited(0), None);
    let (reply, fx) = m.control(Request::Complete {
        task_id: "t1".into(),
        summary: Some("done".into()),
        pr_url: None,
        branch: Some("a1/t1".into()),
    });
    assert_eq!(
        reply,
        Reply {
            ok: true,
            message: "reported t1#1".into()
        }
    );
    match pushed(&fx) {
        SidecarMsg::Complete {
            task_id,
            generation: 1,
            result,
        } => {
            assert_eq!(task_id, "t1");
            assert_eq!(result.summary.as_deref(), Some("done"));
            assert_eq!(result.branch.as_deref(), Some("a1/t1"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        names(&m.outbox_pushed(Ok(()))),
        ["clear current", "send complete", "send heartbeat"]
    );
}

#[test]
fn wake_mode_a_report_while_the_wake_command_runs_stops_it() {
    let mut m = online_idle(Mode::Wake);
    let a = running(&mut m, "t1", 1, 0);
    let (reply, fx) = m.control(Request::Fail {
        task_id: "t1".into(),
        error: "bad spec".into(),
        retryable: false,
        class: FailClass::Task,
        retry_after_s: None,
        log_tail: None,
    });
    assert!(reply.ok);
    assert_eq!(names(&fx), ["stop runner", "push fail"]);
    assert_eq!(
        fx[0],
        Effect::StopRunner {
            attempt: a,
            reason: "the agent reported".into()
        }
    );
    assert_eq!(
        fx[1],
        Effect::PushOutbox(SidecarMsg::Fail {
            task_id: "t1".into(),
            generation: 1,
            error: "bad spec".into(),
            retryable: false,
            class: Default::default(),
            retry_after_s: None,
            log_tail: None,
        })
    );
}

#[test]
fn control_requests_about_another_task_are_refused_and_status_says_what_is_held() {
    let mut m = online_idle(Mode::Wake);
    let (reply, fx) = m.control(bare_complete("t1"));
    assert!(fx.is_empty());
    assert_eq!(
        reply,
        Reply {
            ok: false,
            message: "this sidecar holds no task (asked about t1)".into()
        }
    );
    assert_eq!(
        m.control(Request::Status).0.message,
        "idle; 0 report(s) waiting for the hub"
    );
    running(&mut m, "t1", 1, 0);
    let (reply, fx) = m.control(Request::Fail {
        task_id: "t2".into(),
        error: "x".into(),
        retryable: true,
        class: FailClass::Task,
        retry_after_s: None,
        log_tail: None,
    });
    assert!(fx.is_empty());
    assert_eq!(
        reply,
        Reply {
            ok: false,
            message: "this sidecar works on t1#1, not t2".into()
        }
    );
    assert_eq!(
        m.control(Request::Status).0,
        Reply {
            ok: true,
            message: "working on t1#1; 0 report(s) waiting for the hub".into()
        }
    );
}

#[test]
fn wake_mode_an_agent_that_never_reports_fails_at_its_deadline() {
    let mut m = online_idle(Mode::Wake);
    let a = running(&mut m, "t1", 1, 1_000);
    // The wake command still runs: its own timeout covers it.
    assert!(m.tick(t(1_000_000)).is_empty());
    m.runner_done(&a, exited(0), None);
    // min(runner 3600 s, task 100 s) after the accept.
    assert_eq!(m.wake_deadline(), Some(t(101_000)));
    assert!(m.tick(t(101_000)).is_empty());
    let report = pushed(&m.tick(t(101_001)));
    assert_eq!(
        fail_error(&report),
        ("the woken agent did not report within 100s", true)
    );
    let fx = m.outbox_pushed(Ok(()));
    assert_eq!(sent(&fx), [report, idle_heartbeat()]);
    assert_eq!(m.heartbeat_due(), [Effect::Send(idle_heartbeat())]);
}

#[test]
fn exec_mode_has_no_wake_deadline() {
    let mut m = online_idle(Mode::Exec);
    let a = running(&mut m, "t1", 1, 0);
    m.cancel(a, None);
    assert_eq!(m.wake_deadline(), None);
    assert!(m
        .tick(t(Duration::from_secs(86_400).as_millis() as i64))
        .is_empty());
}

// ----- shutdown ------------------------------------------------------------------------------

#[test]
fn shutdown_stops_a_running_runner_only() {
    let mut m = online_idle(Mode::Exec);
    assert!(m.shutdown().is_empty());
    let a = running(&mut m, "t1", 1, 0);
    assert_eq!(
        m.shutdown(),
        [Effect::StopRunner {
            attempt: a.clone(),
            reason: "the sidecar is stopping".into()
        }]
    );
    // Already told to stop (by the hub, or just now): nothing more to do.
    assert!(m.shutdown().is_empty());
}

// ----- repository tasks ----------------------------------------------------------------------

const BASE: &str = "ba5eba5eba5eba5eba5eba5eba5eba5eba5eba5e";

/// Task `id` on repository `app` (this sidecar's).
fn repo_task(id: &str, generation: u64) -> Task {
    let mut body = task(id, generation);
    body.repo = Some("app".into());
    body
}

fn branch_of(id: &str) -> Prepared {
    Prepared {
        branch: format!("a1/{id}"),
        base: BASE.into(),
    }
}

/// Assign `body` and let everything succeed up to a running runner, on
/// `branch` if one was prepared.
fn running_with(m: &mut AttemptMachine, body: Task, branch: Option<Prepared>) -> AttemptRef {
    let a = r(&body.id, body.generation);
    assert_eq!(names(&m.assign(a.clone(), body, t(0))), ["save current"]);
    assert_eq!(
        names(&m.current_saved(Ok(()))),
        ["send accept", "start runner"]
    );
    m.runner_launched(&a);
    match m.runner_started(&a, 4242, branch.clone()).as_slice() {
        [Effect::SaveCurrent(c)] => assert_eq!(c.branch, branch),
        other => panic!("{:?}", names(other)),
    }
    assert!(m.current_saved(Ok(())).is_empty());
    a
}

/// A repository task whose runner runs on its prepared branch.
fn running_repo(m: &mut AttemptMachine, id: &str, generation: u64) -> AttemptRef {
    running_with(m, repo_task(id, generation), Some(branch_of(id)))
}

fn push_of(a: &AttemptRef) -> Effect {
    Effect::Push {
        attempt: a.clone(),
        branch: format!("a1/{}", a.task_id),
        base: BASE.into(),
    }
}

/// A push that went through: `commits` beyond the base, head `feed`
/// (none: the base, and nothing pushed).
fn push_ok(commits: u64) -> Result<Pushed, PushFailed> {
    let head = if commits == 0 { BASE } else { "feed" };
    Ok(Pushed {
        head: head.into(),
        commits,
    })
}

fn completed_result(msg: &SidecarMsg) -> &TaskResult {
    match msg {
        SidecarMsg::Complete { result, .. } => result,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_repository_task_completes_only_after_its_branch_is_pushed() {
    let mut m = online_idle(Mode::Exec);
    let a = running_repo(&mut m, "t1", 1);
    // The runner's word on the branch is not taken.
    let file = serde_json::json!({"summary": "did it", "branch": "main", "head": "0000", "no_changes": true});
    let fx = m.runner_done(&a, exited(0), Some(file));
    assert_eq!(fx, [push_of(&a)], "the push and nothing else");
    assert!(m.outbox().is_empty());
    assert!(m.is_pushing());
    assert_eq!(m.heartbeat_due(), [Effect::Send(working_heartbeat(&a))]);
    let report = pushed(&m.pushed(&a, push_ok(2)));
    let result = completed_result(&report);
    assert_eq!(result.summary.as_deref(), Some("did it"));
    assert_eq!(result.branch.as_deref(), Some("a1/t1"));
    assert_eq!(result.base.as_deref(), Some(BASE));
    assert_eq!(result.head.as_deref(), Some("feed"));
    assert!(!result.no_changes);
    assert!(
        m.current().is_some(),
        "held until the outbox has the report"
    );
    let fx = m.outbox_pushed(Ok(()));
    assert_eq!(
        names(&fx),
        ["clear current", "send complete", "send heartbeat"]
    );
    assert_eq!(sent(&fx)[0], report);
    assert!(!m.is_pushing());
}

#[test]
fn a_branch_without_commits_completes_with_no_changes() {
    let mut m = online_idle(Mode::Exec);
    let a = running_repo(&mut m, "t1", 1);
    assert_eq!(m.runner_done(&a, exited(0), None), [push_of(&a)]);
    let report = pushed(&m.pushed(&a, push_ok(0)));
    let result = completed_result(&report);
    assert!(result.no_changes);
    assert_eq!(result.branch.as_deref(), Some("a1/t1"));
    assert_eq!(result.base.as_deref(), Some(BASE));
    assert_eq!(result.head.as_deref(), Some(BASE));
}

#[test]
fn a_failed_push_is_a_retryable_failure_naming_what_git_said() {
    let mut m = online_idle(Mode::Exec);
    let a = running_repo(&mut m, "t1", 1);
    m.runner_done(&a, exited(0), None);
    let report = pushed(&m.pushed(
        &a,
        Err("git push failed: ! [rejected] a1/t1 -> a1/t1 (stale info)".into()),
    ));
    assert_eq!(
        fail_error(&report),
        (
            "pushing the task branch a1/t1 failed: git push failed: ! [rejected] a1/t1 -> a1/t1 (stale info)",
            true
        )
    );
    assert_eq!(
        names(&m.outbox_pushed(Ok(()))),
        ["clear current", "send fail", "send heartbeat"]
    );
}

#[test]
fn a_failed_runner_of_a_repository_task_pushes_nothing() {
    let mut m = online_idle(Mode::Exec);
    let a = running_repo(&mut m, "t1", 1);
    let report = pushed(&m.runner_done(&a, exited(1), None));
    assert_eq!(fail_error(&report), ("the runner exited with code 1", true));
    assert!(!m.is_pushing());
}

#[test]
fn a_task_without_a_repository_completes_as_before_on_its_branch() {
    let mut m = online_idle(Mode::Exec);
    let a = running_with(&mut m, task("t1", 1), Some(branch_of("t1")));
    let file = serde_json::json!({"summary": "pushed it myself", "branch": "a1/t1"});
    let report = pushed(&m.runner_done(&a, exited(0), Some(file)));
    let result = completed_result(&report);
    assert_eq!(result.branch.as_deref(), Some("a1/t1"));
    assert_eq!(result.base, None, "the sidecar says nothing of it");
    assert!(!m.is_pushing());
}

#[test]
fn a_repository_task_that_succeeds_without_a_prepared_branch_fails_retryably() {
    let mut m = online_idle(Mode::Exec);
    let a = running_with(&mut m, repo_task("t1", 1), None);
    let report = pushed(&m.runner_done(&a, exited(0), None));
    assert_eq!(
        fail_error(&report),
        (
            "the task's git branch was never prepared, so there is nothing to push",
            true
        )
    );
}

#[test]
fn a_cancel_while_pushing_fails_the_attempt_at_once_and_the_push_is_ignored() {
    let mut m = online_idle(Mode::Exec);
    let a = running_repo(&mut m, "t1", 1);
    m.runner_done(&a, exited(0), None);
    // A stale cancel changes nothing.
    assert!(m.cancel(r("t1", 0), None).is_empty());
    assert!(m.is_pushing());
    let report = pushed(&m.cancel(a.clone(), Some("operator".into())));
    assert_eq!(fail_error(&report), ("cancelled: operator", true));
    assert!(!m.is_pushing());
    assert_eq!(
        names(&m.outbox_pushed(Ok(()))),
        ["clear current", "send fail", "send heartbeat"]
    );
    // The push ends later: nothing more is reported.
    let late = m.pushed(&a, push_ok(1));
    assert!(late.is_empty());
    assert_eq!(m.outbox(), [report]);
}

#[test]
fn while_its_branch_is_pushed_the_attempt_is_held_and_reported_once() {
    let mut m = online_idle(Mode::Exec);
    let a = running_repo(&mut m, "t1", 1);
    m.runner_done(&a, exited(0), None);
    assert!(m.ending());
    // Busy for other work; the same assignment is accepted again.
    assert!(matches!(
        &m.assign(r("t2", 1), repo_task("t2", 1), t(5))[..],
        [Effect::Send(SidecarMsg::Reject { reason, .. })] if reason == "busy with t1#1"
    ));
    assert_eq!(
        names(&m.assign(a.clone(), repo_task("t1", 1), t(5))),
        ["send accept"]
    );
    // Nothing else reports it: not the agent, a late runner end, a tick.
    let (reply, fx) = m.control(bare_complete("t1"));
    assert!(fx.is_empty());
    assert_eq!(
        reply,
        Reply {
            ok: false,
            message: "t1#1 already succeeded; the sidecar is pushing its branch".into()
        }
    );
    assert!(m.runner_done(&a, exited(1), None).is_empty());
    assert!(m.tick(t(1_000_000_000)).is_empty());
    assert!(m.shutdown().is_empty(), "no runner to stop");
    assert_eq!(
        m.control(Request::Status).0.message,
        "working on t1#1 (pushing its branch); 0 report(s) waiting for the hub"
    );
    // The outcome of another attempt's push is not this one's.
    assert!(m.pushed(&r("t1", 0), push_ok(1)).is_empty());
    assert!(m.is_pushing());
    // Offline meanwhile: the report goes to the outbox, sent after welcome.
    m.disconnected();
    pushed(&m.pushed(&a, Err("no network".into())));
    assert_eq!(names(&m.outbox_pushed(Ok(()))), ["clear current"]);
    assert!(!m.ending());
}

#[test]
fn wake_mode_the_agents_complete_pushes_the_branch_before_completing() {
    let mut m = online_idle(Mode::Wake);
    let a = running_repo(&mut m, "t1", 1);
    assert!(m.runner_done(&a, exited(0), None).is_empty(), "woken");
    let (reply, fx) = m.control(Request::Complete {
        task_id: "t1".into(),
        summary: Some("done".into()),
        pr_url: None,
        branch: Some("mine".into()),
    });
    assert_eq!(
        reply,
        Reply {
            ok: true,
            message: "reported t1#1: the sidecar pushes branch a1/t1 and then completes it".into()
        }
    );
    assert_eq!(fx, [push_of(&a)]);
    // The agent reported: its deadline no longer applies.
    assert_eq!(m.wake_deadline(), None);
    assert!(m.tick(t(1_000_000_000)).is_empty());
    let report = pushed(&m.pushed(&a, push_ok(1)));
    let result = completed_result(&report);
    assert_eq!(result.summary.as_deref(), Some("done"));
    assert_eq!(result.branch.as_deref(), Some("a1/t1"));
    assert_eq!(result.head.as_deref(), Some("feed"));
}

#[test]
fn wake_mode_a_complete_while_the_wake_command_runs_stops_it_and_pushes() {
    let mut m = online_idle(Mode::Wake);
    let a = running_repo(&mut m, "t1", 1);
    let (reply, fx) = m.control(bare_complete("t1"));
    assert!(reply.ok);
    assert_eq!(names(&fx), ["stop runner", "push branch"]);
    assert_eq!(m.runner(), RunnerState::Stopping);
    // The stopped wake command's end is not the report.
    let fx = m.runner_done(
        &a,
        Outcome::Cancelled {
            reason: "the agent reported".into(),
            log_tail: String::new(),
        },
        None,
    );
    assert!(fx.is_empty());
    assert_eq!(m.runner(), RunnerState::NotRunning);
    let report = pushed(&m.pushed(&a, push_ok(1)));
    assert_eq!(completed_result(&report).head.as_deref(), Some("feed"));
}

#[test]
fn wake_mode_a_fail_from_the_agent_pushes_nothing() {
    let mut m = online_idle(Mode::Wake);
    let a = running_repo(&mut m, "t1", 1);
    m.runner_done(&a, exited(0), None);
    let (reply, fx) = m.control(Request::Fail {
        task_id: "t1".into(),
        error: "stuck".into(),
        retryable: true,
        class: FailClass::Task,
        retry_after_s: None,
        log_tail: None,
    });
    assert!(reply.ok);
    assert_eq!(fail_error(&pushed(&fx)), ("stuck", true));
}

#[test]
fn a_task_on_a_repository_this_sidecar_lacks_is_rejected_before_anything_is_saved() {
    let mut m = online_idle(Mode::Exec);
    let reject_reason = |fx: Vec<Effect>| match fx.as_slice() {
        [Effect::Send(SidecarMsg::Reject {
            task_id, reason, ..
        })] => {
            assert_eq!(task_id, "t1");
            reason.clone()
        }
        other => panic!("{:?}", names(other)),
    };
    let mut other = task("t1", 1);
    other.repo = Some("other".into());
    assert_eq!(
        reject_reason(m.assign(r("t1", 1), other.clone(), t(0))),
        "this sidecar has no clone of repository other (it has: app)"
    );
    let mut hostile = task("t1", 1);
    hostile.repo = Some("../../etc".into());
    assert!(reject_reason(m.assign(r("t1", 1), hostile, t(0)))
        .starts_with("invalid repository name \"../../etc\""));
    assert!(m.current().is_none());
    // A sidecar without a repository takes none.
    let mut bare = AttemptMachine::recover(
        AttemptSettings {
            repos: vec![],
            ..settings(Mode::Exec)
        },
        None,
        vec![],
    )
    .0;
    online(&mut bare);
    let fx = bare.assign(r("t1", 1), repo_task("t1", 1), t(0));
    assert_eq!(
        reject_reason(fx),
        "this sidecar has no clone of repository app (it has: none)"
    );
    // Its own repository, and no repository at all, are taken.
    assert_eq!(
        names(&m.assign(r("t1", 1), repo_task("t1", 1), t(0))),
        ["save current"]
    );
    assert_eq!(
        names(&bare.assign(r("t2", 1), task("t2", 1), t(0))),
        ["save current"]
    );
}

#[test]
fn hello_names_the_repositories_of_this_sidecar() {
    let mut m = idle(Mode::Exec);
    match sent(&m.connected()).as_slice() {
        [SidecarMsg::Hello { repos, .. }] => assert_eq!(*repos, ["app"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn hello_tells_the_context_window() {
    let mut m = idle(Mode::Exec);
    match sent(&m.connected()).as_slice() {
        [SidecarMsg::Hello {
            context_window_tokens,
            ..
        }] => assert_eq!(*context_window_tokens, Some(128_000)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_hello_says_the_instance_id() {
    let mut m = idle(Mode::Exec);
    for _ in 0..2 {
        match sent(&m.connected()).as_slice() {
            [SidecarMsg::Hello { instance_id, .. }] => assert_eq!(
                instance_id.as_deref(),
                Some("0123456789abcdef0123456789abcdef")
            ),
            other => panic!("{other:?}"),
        }
        m.disconnected();
    }
}

// ----- recovery ------------------------------------------------------------------------------

fn held(id: &str, generation: u64, pgid: Option<i32>) -> Current {
    Current {
        attempt: r(id, generation),
        body: task(id, generation),
        accepted_at: t(0),
        runner_pgid: pgid,
        branch: None,
    }
}

#[test]
fn recovery_forgets_an_attempt_whose_report_is_in_the_outbox() {
    let (mut m, plan) = AttemptMachine::recover(
        settings(Mode::Exec),
        Some(held("t1", 1, Some(4242))),
        vec![complete("t1", 1)],
    );
    assert_eq!(plan, [Effect::ClearCurrent]);
    assert!(m.current().is_none());
    assert_eq!(m.outbox(), [complete("t1", 1)]);
    m.connected();
    assert_eq!(sent(&m.welcomed()), [complete("t1", 1), idle_heartbeat()]);
}

#[test]
fn recovery_replaces_a_report_too_large_to_send_and_forgets_an_invalid_attempt() {
    let huge = SidecarMsg::Complete {
        task_id: "t1".into(),
        generation: 1,
        result: TaskResult {
            summary: Some("\u{1}".repeat(400 * 1024)),
            ..Default::default()
        },
    };
    let (mut m, plan) = AttemptMachine::recover(
        settings(Mode::Exec),
        Some(held("../../x", 1, Some(4242))),
        vec![huge.clone(), complete("t2", 1)],
    );
    assert_eq!(names(&plan), ["replace with fail", "clear current"]);
    let Effect::ReplaceInOutbox { old, new } = &plan[0] else {
        unreachable!()
    };
    assert_eq!(old, &huge);
    assert!(fail_error(new)
        .0
        .starts_with("the result is too large to send"));
    assert!(m.current().is_none(), "the invalid attempt is forgotten");
    m.connected();
    assert_eq!(
        sent(&m.welcomed()),
        [new.clone(), complete("t2", 1), idle_heartbeat()]
    );
}

#[test]
fn recovery_reports_an_attempt_without_a_result_as_a_retryable_failure() {
    let died = "the runner died when the sidecar stopped unexpectedly";
    // The agent's session died with the sidecar: the agent's failure.
    let died_fail = match fail("t2", 3, died) {
        SidecarMsg::Fail {
            task_id,
            generation,
            error,
            retryable,
            ..
        } => SidecarMsg::Fail {
            task_id,
            generation,
            error,
            retryable,
            class: FailClass::Agent,
            retry_after_s: None,
            log_tail: None,
        },
        other => panic!("{other:?}"),
    };
    let (m, plan) = AttemptMachine::recover(
        settings(Mode::Exec),
        Some(held("t2", 3, Some(4242))),
        vec![complete("t1", 1)],
    );
    assert_eq!(
        plan,
        [
            Effect::KillLeftover {
                pgid: 4242,
                task_id: "t2".into()
            },
            Effect::PushOutbox(died_fail.clone()),
            Effect::ClearCurrent,
        ]
    );
    assert!(m.current().is_none());
    assert_eq!(m.outbox(), [complete("t1", 1), died_fail]);
    // A runner that never started left no group to kill.
    let (_, plan) =
        AttemptMachine::recover(settings(Mode::Exec), Some(held("t2", 3, None)), vec![]);
    assert_eq!(names(&plan), ["push fail", "clear current"]);
}

// ----- failure classes -------------------------------------------------------------------

/// The class, retry_after_s and log tail of a `fail`.
fn class_of(msg: &SidecarMsg) -> (FailClass, Option<u64>, Option<&str>) {
    match msg {
        SidecarMsg::Fail {
            class,
            retry_after_s,
            log_tail,
            ..
        } => (*class, *retry_after_s, log_tail.as_deref()),
        other => panic!("{other:?}"),
    }
}

fn exited_saying(code: i32, log_tail: &str) -> Outcome {
    Outcome::Exited {
        code: Some(code),
        log_tail: log_tail.into(),
    }
}

#[test]
fn a_failing_runner_is_the_tasks_failure_with_its_log_tail() {
    let mut m = online_idle(Mode::Exec);
    let a = running(&mut m, "t1", 1, 0);
    let report = pushed(&m.runner_done(&a, exited_saying(1, "error: it broke"), None));
    assert_eq!(
        class_of(&report),
        (FailClass::Task, None, Some("error: it broke"))
    );
}

#[test]
fn a_runner_that_cannot_be_started_is_the_environments_failure() {
    let mut m = online_idle(Mode::Exec);
    let a = running(&mut m, "t1", 1, 0);
    let why = "cannot start \"/opt/agent\": Permission denied (os error 13)";
    let report = pushed(&m.runner_done(&a, Outcome::SpawnFailed(why.into()), None));
    assert_eq!(class_of(&report), (FailClass::Environment, None, Some(why)));
    assert_eq!(fail_error(&report), (why, true));
    // So is a branch that could not be prepared, or a disk that is full.
    let mut m = online_idle(Mode::Exec);
    let a = running_repo(&mut m, "t2", 1);
    let why = "preparing the git branch failed: git fetch --prune origin failed: fatal: '/gone/remote.git' does not appear to be a git repository";
    let report = pushed(&m.runner_done(&a, Outcome::SpawnFailed(why.into()), None));
    assert_eq!(class_of(&report), (FailClass::Environment, None, Some(why)));
    let mut m = online_idle(Mode::Exec);
    let a = running(&mut m, "t3", 1, 0);
    let why = "cannot write tasks/t3-1/task.json: No space left on device (os error 28)";
    let report = pushed(&m.runner_done(&a, Outcome::SpawnFailed(why.into()), None));
    assert_eq!(class_of(&report).0, FailClass::Environment);
}

#[test]
fn a_failed_push_is_the_environments_failure_with_gits_words_as_its_tail() {
    let mut m = online_idle(Mode::Exec);
    let a = running_repo(&mut m, "t1", 1);
    m.runner_done(&a, exited(0), None);
    let report = pushed(&m.pushed(&a, Err("git push failed: fatal: unable to access".into())));
    assert_eq!(
        class_of(&report),
        (
            FailClass::Environment,
            None,
            Some("pushing the task branch a1/t1 failed: git push failed: fatal: unable to access")
        )
    );
}

#[test]
fn a_branch_the_runner_deleted_is_the_tasks_failure_not_the_machines() {
    let mut m = online_idle(Mode::Exec);
    let a = running_repo(&mut m, "t1", 1);
    m.runner_done(&a, exited(0), None);
    let gone = PushFailed {
        message: "the task branch a1/t1 no longer exists in the clone".into(),
        branch_gone: true,
    };
    let report = pushed(&m.pushed(&a, Err(gone)));
    assert_eq!(class_of(&report).0, FailClass::Task);
    assert_eq!(
        fail_error(&report),
        (
            "pushing the task branch a1/t1 failed: the task branch a1/t1 no longer exists in the clone",
            true
        )
    );
}

#[test]
fn a_rate_limited_runner_is_reported_rate_limited_with_its_wait() {
    // By its exit code (75 in these settings): the default wait.
    let mut m = online_idle(Mode::Exec);
    let a = running(&mut m, "t1", 1, 0);
    let report = pushed(&m.runner_done(&a, exited_saying(75, "429 Too Many Requests"), None));
    assert_eq!(
        class_of(&report),
        (
            FailClass::RateLimited,
            Some(60),
            Some("429 Too Many Requests")
        )
    );
    // By its result file, even with exit 0 on a repository task: nothing
    // is pushed, the wait is the runner's.
    let mut m = online_idle(Mode::Exec);
    let a = running_repo(&mut m, "t2", 1);
    let file = serde_json::json!({"rate_limited": true, "retry_after_s": 300});
    let report = pushed(&m.runner_done(&a, exited(0), Some(file)));
    assert!(!m.is_pushing());
    assert_eq!(class_of(&report), (FailClass::RateLimited, Some(300), None));
    // In wake mode, a wake command that says so is the report.
    let mut m = online_idle(Mode::Wake);
    let a = running(&mut m, "t3", 1, 0);
    let file = serde_json::json!({"rate_limited": true});
    let report = pushed(&m.runner_done(&a, exited(0), Some(file)));
    assert_eq!(class_of(&report).1, Some(60));
}

fn agent_fail(class: FailClass, retry_after_s: Option<u64>, log_tail: Option<&str>) -> Request {
    Request::Fail {
        task_id: "t1".into(),
        error: "no luck".into(),
        retryable: true,
        class,
        retry_after_s,
        log_tail: log_tail.map(str::to_string),
    }
}

#[test]
fn wake_mode_the_agent_names_the_class_and_the_wait_and_bad_ones_are_refused() {
    let mut m = online_idle(Mode::Wake);
    let a = running(&mut m, "t1", 1, 0);
    m.runner_done(&a, exited(0), None);
    for (req, said) in [
        (
            agent_fail(FailClass::Task, Some(30), None),
            "retry_after_s goes only with class rate_limited, not task",
        ),
        (
            agent_fail(FailClass::RateLimited, Some(86_401), None),
            "retry_after_s must be at most 86400 (a day), not 86401",
        ),
    ] {
        let (reply, fx) = m.control(req);
        assert_eq!(
            reply,
            Reply {
                ok: false,
                message: said.into()
            }
        );
        assert!(fx.is_empty());
        assert_eq!(m.current().map(|c| &c.attempt), Some(&a), "still held");
    }
    let (reply, fx) = m.control(agent_fail(FailClass::RateLimited, None, Some("slow down")));
    assert!(reply.ok, "{reply:?}");
    assert_eq!(
        class_of(&pushed(&fx)),
        (FailClass::RateLimited, Some(60), Some("slow down")),
        "the default wait"
    );

    let mut m = online_idle(Mode::Wake);
    let a = running(&mut m, "t1", 1, 0);
    m.runner_done(&a, exited(0), None);
    let (_, fx) = m.control(agent_fail(FailClass::RateLimited, Some(900), None));
    assert_eq!(
        class_of(&pushed(&fx)),
        (FailClass::RateLimited, Some(900), None)
    );

    let mut m = online_idle(Mode::Wake);
    let a = running(&mut m, "t1", 1, 0);
    m.runner_done(&a, exited(0), None);
    let long = "x".repeat(20_000);
    let (_, fx) = m.control(agent_fail(FailClass::Environment, None, Some(&long)));
    let report = pushed(&fx);
    let (class, wait, tail) = class_of(&report);
    assert_eq!((class, wait), (FailClass::Environment, None));
    assert_eq!(tail.unwrap().len(), 8 * 1024, "cut to 8 KiB");
}

#[test]
fn wake_mode_an_agent_that_never_reports_is_the_agents_failure() {
    let mut m = online_idle(Mode::Wake);
    let a = running(&mut m, "t1", 1, 0);
    m.runner_done(&a, exited(0), None);
    let report = pushed(&m.tick(t(200_000)));
    assert_eq!(class_of(&report), (FailClass::Agent, None, None));
}

// ----- activity in heartbeats ---------------------------------------------------------

fn heartbeat_activity(m: &AttemptMachine) -> Option<Activity> {
    match m.heartbeat_due().as_slice() {
        [Effect::Send(SidecarMsg::Heartbeat { activity, .. })] => activity.clone(),
        other => panic!("{:?}", names(other)),
    }
}

#[test]
fn heartbeats_say_what_the_runner_is_doing() {
    let mut m = online_idle(Mode::Exec);
    assert_eq!(heartbeat_activity(&m), None, "idle: no activity");
    assert_eq!(m.probe(), None);
    let a = running_with(&mut m, repo_task("t1", 1), Some(branch_of("t1")));
    assert_eq!(
        m.probe(),
        Some(Probe {
            attempt: a.clone(),
            pgid: Some(4242),
            branch: Some(branch_of("t1")),
        })
    );
    // Nothing written yet.
    m.output_seen(&a, true, 0, Some(t(5)), t(10));
    assert_eq!(heartbeat_activity(&m), Some(alive()));
    // It writes: the size and the file's time.
    m.output_seen(&a, true, 120, Some(t(20)), t(30));
    let seen = heartbeat_activity(&m).unwrap();
    assert_eq!(
        (seen.runner_alive, seen.output_bytes, seen.last_output_at),
        (true, 120, Some(t(20)))
    );
    // Unchanged size: the time stays, whatever the file's time says.
    m.output_seen(&a, true, 120, Some(t(40)), t(50));
    assert_eq!(heartbeat_activity(&m).unwrap().last_output_at, Some(t(20)));
    // Grown, without a file time: when the sidecar saw it.
    m.output_seen(&a, true, 300, None, t(60));
    let seen = heartbeat_activity(&m).unwrap();
    assert_eq!((seen.output_bytes, seen.last_output_at), (300, Some(t(60))));
    // A commit on its branch.
    m.commit_seen(&a, Some(t(55)));
    assert_eq!(heartbeat_activity(&m).unwrap().last_commit_at, Some(t(55)));
    // Reports about another attempt change nothing.
    m.output_seen(&r("other", 1), true, 9_999, None, t(70));
    m.commit_seen(&r("other", 1), None);
    let seen = heartbeat_activity(&m).unwrap();
    assert_eq!((seen.output_bytes, seen.last_commit_at), (300, Some(t(55))));
    // Its group gone: not alive.
    m.output_seen(&a, false, 300, None, t(80));
    assert!(!heartbeat_activity(&m).unwrap().runner_alive);
}

#[test]
fn the_runner_is_not_alive_once_it_ended_and_a_new_attempt_starts_afresh() {
    let mut m = online_idle(Mode::Wake);
    let a = running(&mut m, "t1", 1, 0);
    m.output_seen(&a, true, 50, Some(t(1)), t(2));
    // The wake command exited; the last look (alive) is stale.
    m.runner_done(&a, exited(0), None);
    let seen = heartbeat_activity(&m).unwrap();
    assert!(!seen.runner_alive);
    assert_eq!(seen.output_bytes, 50);
    let (_, fx) = m.control(bare_complete("t1"));
    m.outbox_pushed(Ok(()));
    assert!(!fx.is_empty());
    assert_eq!(heartbeat_activity(&m), None);
    let b = running(&mut m, "t2", 1, 0);
    assert_eq!(heartbeat_activity(&m), Some(alive()));
    m.output_seen(&b, true, 0, None, t(3));
    assert_eq!(heartbeat_activity(&m).unwrap().output_bytes, 0);
}

#[test]
fn wake_mode_a_cancel_runs_the_cancel_command_for_the_woken_agent() {
    let mut s = settings(Mode::Wake);
    s.cancel_command = true;
    let (mut m, _) = AttemptMachine::recover(s, None, vec![]);
    online(&mut m);
    let a = running(&mut m, "t1", 1, 0);
    // The wake command exited; the woken agent works on.
    assert!(m.runner_done(&a, exited(0), None).is_empty());
    let fx = m.cancel(a.clone(), Some("operator".into()));
    assert_eq!(names(&fx)[0], "cancel woken");
    match &fx[0] {
        Effect::CancelWoken { current, reason } => {
            assert_eq!(
                (current.attempt.clone(), reason.as_str()),
                (a.clone(), "operator")
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(
        names(&fx).contains(&"push fail".to_string()),
        "{:?}",
        names(&fx)
    );
    // Without a cancel command only the wake command's group is stopped.
    let mut m = online_idle(Mode::Wake);
    let a = running(&mut m, "t2", 1, 0);
    assert!(m.runner_done(&a, exited(0), None).is_empty());
    assert!(!names(&m.cancel(a, None)).contains(&"cancel woken".to_string()));
}

// ----- the self-test and verification tasks ----------------------------------------------

use crate::selftest::{Check, CheckResult, Report};

fn check(check: Check, ok: bool, detail: &str) -> CheckResult {
    CheckResult {
        check,
        ok,
        detail: detail.into(),
    }
}

/// Every local check passing.
fn passing() -> Report {
    Report {
        results: vec![
            check(Check::Runner, true, "/bin/run is executable"),
            check(Check::StateDir, true, "/s is writable"),
            check(Check::Disk, true, "9.0 GiB free (40%) for state_dir"),
        ],
    }
}

/// The runner missing, the rest passing.
fn no_runner() -> Report {
    let mut r = passing();
    r.results[0] = check(
        Check::Runner,
        false,
        "runner.command[0] /bin/run does not exist: install the runner there",
    );
    r
}

fn verify_task(id: &str, generation: u64) -> Task {
    Task {
        kind: TaskKind::Verify,
        ..task(id, generation)
    }
}

fn hello_selftest(m: &mut AttemptMachine) -> Option<SelfTestStatus> {
    match sent(&m.connected()).as_slice() {
        [SidecarMsg::Hello { selftest, .. }] => selftest.clone(),
        other => panic!("{other:?}"),
    }
}

fn heartbeat_selftest(msg: &SidecarMsg) -> Option<SelfTestStatus> {
    match msg {
        SidecarMsg::Heartbeat { selftest, .. } => selftest.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_last_selftest_goes_in_hello_and_every_heartbeat_failures_only() {
    let mut m = idle(Mode::Exec);
    assert_eq!(hello_selftest(&mut m), None, "none ran yet");
    m.disconnected();
    assert!(
        m.selftest_done(None, Ok(no_runner()), t(5)).is_empty(),
        "offline: nothing sent"
    );
    let status = hello_selftest(&mut m).expect("the status in hello");
    assert!(!status.ok);
    assert_eq!(status.at, Some(t(5)));
    assert_eq!(status.failures.len(), 1);
    assert_eq!(status.failures[0].check, "runner");
    assert!(status.failures[0].detail.contains("install the runner"));
    m.welcomed();
    let hb = sent(&m.heartbeat_due());
    assert_eq!(heartbeat_selftest(&hb[0]), Some(status.clone()));
    // Working: the heartbeat carries it too.
    let a = running(&mut m, "t1", 1, 0);
    let hb = sent(&m.heartbeat_due());
    assert_eq!(heartbeat_selftest(&hb[0]), Some(status));
    let _ = a;
}

#[test]
fn a_change_of_findings_sends_a_heartbeat_at_once_and_the_same_ones_do_not() {
    let mut m = online_idle(Mode::Exec);
    // Nothing yet counts as passing: a first pass is no news.
    assert!(m.selftest_done(None, Ok(passing()), t(1)).is_empty());
    // Failing now: the hub learns at once.
    let fx = m.selftest_done(None, Ok(no_runner()), t(2));
    assert_eq!(names(&fx), ["send heartbeat"]);
    let status = heartbeat_selftest(&sent(&fx)[0]).unwrap();
    assert!(!status.ok && status.at == Some(t(2)));
    // The same failure later: only the periodic heartbeats say it.
    assert!(m.selftest_done(None, Ok(no_runner()), t(3)).is_empty());
    let hb = sent(&m.heartbeat_due());
    assert_eq!(heartbeat_selftest(&hb[0]).unwrap().at, Some(t(3)));
    // Another failure: news again.
    let mut other = no_runner();
    other.results[2] = check(Check::Disk, false, "only 10 MiB free");
    assert_eq!(
        names(&m.selftest_done(None, Ok(other), t(4))),
        ["send heartbeat"]
    );
    // Passing again: news.
    let fx = m.selftest_done(None, Ok(passing()), t(5));
    let status = heartbeat_selftest(&sent(&fx)[0]).unwrap();
    assert!(status.ok && status.failures.is_empty());
    // A run that could not run changes nothing.
    assert!(m
        .selftest_done(None, Err("crashed".into()), t(6))
        .is_empty());
    assert_eq!(
        heartbeat_selftest(&sent(&m.heartbeat_due())[0]).unwrap().at,
        Some(t(5))
    );
}

#[test]
fn before_welcome_a_change_waits_for_the_heartbeat_after_welcome() {
    let mut m = idle(Mode::Exec);
    m.connected();
    assert!(m.selftest_done(None, Ok(no_runner()), t(1)).is_empty());
    let fx = m.welcomed();
    assert_eq!(names(&fx), ["send heartbeat"]);
    assert!(!heartbeat_selftest(&sent(&fx)[0]).unwrap().ok);
}

#[test]
fn a_verification_task_is_persisted_then_accepted_then_answered_by_the_selftest_not_a_runner() {
    let mut m = online_idle(Mode::Exec);
    let a = r("v1", 1);
    let fx = m.assign(a.clone(), verify_task("v1", 1), t(0));
    assert_eq!(names(&fx), ["save current"], "persisted before accept");
    assert!(m.current().is_none());
    let fx = m.current_saved(Ok(()));
    assert_eq!(names(&fx), ["send accept", "run selftest"]);
    assert_eq!(fx[1], Effect::RunSelfTest(a.clone()));
    assert_eq!(m.runner(), RunnerState::NotRunning, "no runner");
    assert!(m.current().is_some());
    // Heartbeats meanwhile say working on it.
    assert_eq!(
        sent(&m.heartbeat_due()),
        [working_heartbeat_with(&a, Activity::default())]
    );
    // The report is in the outbox before the attempt is cleared.
    let report = pushed(&m.selftest_done(Some(&a), Ok(passing()), t(9)));
    assert!(
        m.current().is_some(),
        "held until the outbox has its report"
    );
    match &report {
        SidecarMsg::Complete { result, .. } => {
            assert_eq!(
                result.summary.as_deref(),
                Some("self-test passed: 3 checks")
            );
            assert!(result.branch.is_none() && result.head.is_none());
            let checks = &result.extra["selftest"];
            assert_eq!(checks.as_array().unwrap().len(), 3);
            assert_eq!(checks[0]["check"], "runner");
            assert_eq!(checks[0]["ok"], true);
            assert_eq!(checks[0]["detail"], "/bin/run is executable");
            assert_eq!(checks[2]["check"], "disk");
        }
        other => panic!("{other:?}"),
    }
    let fx = m.outbox_pushed(Ok(()));
    assert_eq!(
        names(&fx),
        ["clear current", "send complete", "send heartbeat"]
    );
    assert!(m.current().is_none());
    assert_eq!(m.outbox(), [report]);
    // The heartbeat after it carries the findings.
    assert!(heartbeat_selftest(&sent(&fx)[1]).unwrap().ok);
}

#[test]
fn a_verification_task_with_a_failing_check_fails_retryably_as_the_environments() {
    let mut m = online_idle(Mode::Wake);
    let a = r("v1", 1);
    m.assign(a.clone(), verify_task("v1", 1), t(0));
    assert_eq!(
        names(&m.current_saved(Ok(()))),
        ["send accept", "run selftest"]
    );
    assert_eq!(m.wake_deadline(), None, "no woken agent to wait for");
    assert!(m.tick(t(1_000_000_000)).is_empty());
    // A woken agent's report does not answer it.
    let (reply, fx) = m.control(bare_complete("v1"));
    assert!(
        !reply.ok && reply.message.contains("verification task"),
        "{}",
        reply.message
    );
    assert!(fx.is_empty());
    let report = pushed(&m.selftest_done(Some(&a), Ok(no_runner()), t(2)));
    let (class, wait, tail) = class_of(&report);
    assert_eq!((class, wait), (FailClass::Environment, None));
    let (error, retryable) = fail_error(&report);
    assert!(retryable);
    assert_eq!(
        error,
        "self-test failed: runner: runner.command[0] /bin/run does not exist: install the runner there"
    );
    assert_eq!(tail, Some(error));
    // A self-test that could not run fails it the same way.
    m.outbox_pushed(Ok(()));
    let b = r("v2", 1);
    m.assign(b.clone(), verify_task("v2", 1), t(3));
    m.current_saved(Ok(()));
    let report = pushed(&m.selftest_done(Some(&b), Err("it crashed".into()), t(4)));
    assert_eq!(class_of(&report).0, FailClass::Environment);
    assert_eq!(
        fail_error(&report),
        ("the self-test could not run: it crashed", true)
    );
}

#[test]
fn a_cancelled_verification_fails_at_once_and_its_late_selftest_only_updates_the_status() {
    let mut m = online_idle(Mode::Exec);
    let a = r("v1", 1);
    m.assign(a.clone(), verify_task("v1", 1), t(0));
    m.current_saved(Ok(()));
    let report = pushed(&m.cancel(a.clone(), Some("operator".into())));
    assert_eq!(fail_error(&report), ("cancelled: operator", true));
    m.outbox_pushed(Ok(()));
    let fx = m.selftest_done(Some(&a), Ok(no_runner()), t(1));
    assert_eq!(
        names(&fx),
        ["send heartbeat"],
        "only the news of the findings"
    );
    assert_eq!(m.outbox().len(), 1);
    // A periodic self-test while a verification runs does not answer it.
    let b = r("v2", 1);
    m.assign(b.clone(), verify_task("v2", 1), t(2));
    m.current_saved(Ok(()));
    assert!(m.selftest_done(None, Ok(no_runner()), t(3)).is_empty());
    assert!(m.current().is_some(), "still waiting for its own run");
}

#[test]
fn recovery_reports_a_verification_the_sidecar_died_in_as_the_environments() {
    let mut held = held("v1", 1, None);
    held.body.kind = TaskKind::Verify;
    let (m, plan) = AttemptMachine::recover(settings(Mode::Exec), Some(held), vec![]);
    assert_eq!(names(&plan), ["push fail", "clear current"]);
    let (class, _, _) = class_of(&m.outbox()[0]);
    assert_eq!(class, FailClass::Environment);
    assert_eq!(
        fail_error(&m.outbox()[0]),
        (
            "the sidecar stopped before the self-test of this verification task ended",
            true
        )
    );
}
