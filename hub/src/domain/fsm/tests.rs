//! Unit tests of the agent state machine: every transition driven by
//! events and explicit times, no actors or sockets.

use super::*;
use crate::domain::queue::testing::task;
use agentcom_protocol::TaskStatus;

fn t(ms: i64) -> Timestamp {
    Timestamp(1_800_000_000_000 + ms)
}

fn settings() -> FsmSettings {
    FsmSettings {
        heartbeat_timeout_ms: 10_000,
        accept_timeout_ms: 5_000,
        circuit_failures: 3,
        circuit_cooldown_ms: 60_000,
        stall_ms: 30_000,
        stall_kill_ms: 60_000,
        offline_alert_ms: 120_000,
    }
}

fn machine() -> AgentMachine {
    AgentMachine::new("a1", vec!["rust".into()], t(0), settings(), t(0))
}

fn held(r: &AttemptRef, status: TaskStatus, since: i64) -> Outstanding {
    Outstanding {
        attempt: r.clone(),
        agent: "a1".into(),
        status,
        since: t(since),
        timeout_s: 100,
    }
}

fn idle_hello() -> HelloFacts {
    HelloFacts {
        sidecar_version: "test".into(),
        ..Default::default()
    }
}

fn connected() -> AgentMachine {
    let mut m = machine();
    assert!(m.connect(1, idle_hello(), t(0)).is_empty());
    assert_eq!(m.state(), AgentState::Idle);
    m
}

fn working(m: &mut AgentMachine, id: &str, generation: u64, at: i64) -> AttemptRef {
    let r = AttemptRef::new(id, generation);
    m.assign(&task(id, generation), t(at)).unwrap();
    m.accepted(&r, &Verdict::Applied, t(at + 1));
    assert_eq!(m.state(), AgentState::Working);
    r
}

fn releases(fx: &[Effect]) -> Vec<(AttemptRef, String)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Release { task, reason } => Some((task.clone(), reason.clone())),
            _ => None,
        })
        .collect()
}

fn cancels(fx: &[Effect]) -> Vec<AttemptRef> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Send(HubMsg::Cancel {
                task_id,
                generation,
                ..
            }) => Some(AttemptRef::new(task_id.clone(), *generation)),
            _ => None,
        })
        .collect()
}

#[test]
fn starts_offline_and_connects_idle() {
    let m = machine();
    assert_eq!(m.state(), AgentState::Offline);
    let m = connected();
    let recent: Vec<_> = m.recent().map(|r| (r.from, r.to)).collect();
    assert_eq!(recent, [(AgentState::Offline, AgentState::Idle)]);
}

#[test]
fn assign_accept_complete_cycle() {
    let mut m = connected();
    let fx = m.assign(&task("t1", 1), t(10)).unwrap();
    assert!(
        matches!(&fx[0], Effect::Send(HubMsg::Assign { task_id, generation: 1, .. }) if task_id == "t1")
    );
    assert_eq!(m.state(), AgentState::Assigned);
    assert_eq!(
        m.assign(&task("t2", 1), t(11)),
        Err(NotAvailable(AgentState::Assigned))
    );
    let r = AttemptRef::new("t1", 1);
    m.accepted(&r, &Verdict::Applied, t(12));
    assert_eq!(m.state(), AgentState::Working);
    assert_eq!(m.holding().unwrap().deadline, Some(t(12).plus_secs(100.0)));
    m.reported(&r, Ending::Completed, &Verdict::Applied, t(20));
    assert_eq!(m.state(), AgentState::Idle);
    let states: Vec<AgentState> = m.recent().map(|r| r.to).collect();
    assert_eq!(
        states,
        [
            AgentState::Idle,
            AgentState::Assigned,
            AgentState::Working,
            AgentState::Idle
        ]
    );
}

#[test]
fn offline_agents_get_nothing() {
    let mut m = machine();
    assert_eq!(
        m.assign(&task("t", 1), t(1)),
        Err(NotAvailable(AgentState::Offline))
    );
}

#[test]
fn heartbeat_timeout_makes_offline_and_releases_at_once() {
    let mut m = connected();
    let r = working(&mut m, "t1", 1, 0);
    m.heartbeat(SidecarState::Working, Some(r.clone()), None, None, t(5_000));
    assert_eq!(m.next_deadline(), Some(t(15_000)));
    assert!(m.tick(t(14_999)).is_empty());
    let fx = m.tick(t(15_000));
    assert_eq!(m.state(), AgentState::Offline);
    assert!(fx
        .iter()
        .any(|e| matches!(e, Effect::CloseConnection { conn: 1, .. })));
    assert_eq!(releases(&fx)[0].0, r);
    assert!(m.holding().is_none());
}

#[test]
fn reconnect_within_grace_keeps_the_attempt() {
    let mut m = connected();
    let r = working(&mut m, "t1", 1, 0);
    m.disconnect(1, t(1_000));
    assert_eq!(m.state(), AgentState::Offline);
    assert_eq!(m.next_deadline(), Some(t(11_000)));
    let hello = HelloFacts {
        current_task: Some(r.clone()),
        ..idle_hello()
    };
    let fx = m.connect(2, hello, t(5_000));
    assert!(fx.is_empty(), "{fx:?}");
    assert_eq!(m.state(), AgentState::Working);
    assert_eq!(m.holding().unwrap().task, r);
}

#[test]
fn no_reconnect_within_grace_releases() {
    let mut m = connected();
    let r = working(&mut m, "t1", 1, 0);
    m.disconnect(1, t(1_000));
    assert!(m.tick(t(10_999)).is_empty());
    let fx = m.tick(t(11_000));
    assert_eq!(releases(&fx), [(r, "agent offline for 10s".to_string())]);
    assert_eq!(m.consecutive_failures(), 1);
}

#[test]
fn stale_disconnect_of_an_old_connection_is_ignored() {
    let mut m = connected();
    let fx = m.connect(2, idle_hello(), t(10));
    assert_eq!(
        fx,
        [Effect::CloseConnection {
            conn: 1,
            reason: "replaced by a new connection".into()
        }]
    );
    m.disconnect(1, t(11));
    assert_eq!(m.state(), AgentState::Idle);
    assert_eq!(m.conn(), Some(2));
}

#[test]
fn reconnect_without_the_task_releases_it() {
    let mut m = connected();
    let r = working(&mut m, "t1", 1, 0);
    m.disconnect(1, t(10));
    let fx = m.connect(2, idle_hello(), t(20));
    assert_eq!(releases(&fx)[0].0, r);
    assert_eq!(m.state(), AgentState::Idle);
}

#[test]
fn reconnect_with_the_result_pending_waits_for_it() {
    let mut m = connected();
    let r = working(&mut m, "t1", 1, 0);
    m.disconnect(1, t(10));
    let hello = HelloFacts {
        pending_results: vec![r.clone()],
        ..idle_hello()
    };
    assert!(m.connect(2, hello, t(20)).is_empty());
    assert_eq!(m.state(), AgentState::Working);
    m.reported(&r, Ending::Completed, &Verdict::Applied, t(21));
    assert_eq!(m.state(), AgentState::Idle);
}

#[test]
fn reconnect_working_on_something_else_is_cancelled() {
    let mut m = connected();
    let hello = HelloFacts {
        current_task: Some(AttemptRef::new("other", 4)),
        ..idle_hello()
    };
    let fx = m.connect(2, hello, t(20));
    assert_eq!(cancels(&fx), [AttemptRef::new("other", 4)]);
}

#[test]
fn heartbeat_reconciliation() {
    let mut m = connected();
    let r = working(&mut m, "t1", 1, 0);
    // Agrees: nothing to do.
    assert!(m
        .heartbeat(SidecarState::Working, Some(r.clone()), None, None, t(100))
        .is_empty());
    // Works on an attempt the hub never gave it: cancel that one.
    let fx = m.heartbeat(
        SidecarState::Working,
        Some(AttemptRef::new("t1", 0)),
        None,
        None,
        t(200),
    );
    assert_eq!(cancels(&fx), [AttemptRef::new("t1", 0)]);
    // Idle while the hub has it working: the attempt fails as retryable.
    let fx = m.heartbeat(SidecarState::Idle, None, None, None, t(300));
    assert_eq!(releases(&fx)[0].0, r);
    assert_eq!(m.state(), AgentState::Idle);
}

#[test]
fn idle_heartbeat_while_assigned_is_not_a_divergence() {
    // The assign and the heartbeat can cross on the wire.
    let mut m = connected();
    m.assign(&task("t1", 1), t(10)).unwrap();
    assert!(m
        .heartbeat(SidecarState::Idle, None, None, None, t(11))
        .is_empty());
    assert_eq!(m.state(), AgentState::Assigned);
}

#[test]
fn accept_timeout_releases_counts_a_failure_and_cancels() {
    let mut m = connected();
    m.assign(&task("t1", 1), t(0)).unwrap();
    m.heartbeat(SidecarState::Idle, None, None, None, t(4_000));
    assert_eq!(m.next_deadline(), Some(t(5_000)));
    let fx = m.tick(t(5_000));
    assert_eq!(
        releases(&fx),
        [(
            AttemptRef::new("t1", 1),
            "not accepted within 5s".to_string()
        )]
    );
    assert_eq!(cancels(&fx), [AttemptRef::new("t1", 1)]);
    assert_eq!(m.consecutive_failures(), 1);
    assert_eq!(m.state(), AgentState::Idle);
}

#[test]
fn task_timeout_fails_and_waits_for_the_sidecar_to_stop() {
    let mut m = connected();
    let r = working(&mut m, "t1", 1, 0); // accepted at 1 ms, timeout 100 s
    m.heartbeat(
        SidecarState::Working,
        Some(r.clone()),
        None,
        None,
        t(95_000),
    );
    let fx = m.tick(t(100_001));
    assert!(fx.contains(&Effect::Fail {
        task: r.clone(),
        error: "timed out after 100s".into(),
        retryable: true
    }));
    assert_eq!(cancels(&fx), std::slice::from_ref(&r));
    assert_eq!(
        m.state(),
        AgentState::Working,
        "busy until the sidecar confirms"
    );
    // Still working: the cancel is repeated.
    let fx = m.heartbeat(
        SidecarState::Working,
        Some(r.clone()),
        None,
        None,
        t(100_100),
    );
    assert_eq!(cancels(&fx), std::slice::from_ref(&r));
    // Stopped.
    assert!(m
        .heartbeat(SidecarState::Idle, None, None, None, t(100_200))
        .is_empty());
    assert_eq!(m.state(), AgentState::Idle);
}

#[test]
fn circuit_breaker_degrades_then_recovers_and_success_resets() {
    let mut m = connected();
    for i in 0..2 {
        let r = working(&mut m, &format!("t{i}"), 1, i * 10);
        m.reported(
            &r,
            Ending::Failed(Charge::Failure),
            &Verdict::Applied,
            t(i * 10 + 5),
        );
    }
    assert_eq!(m.consecutive_failures(), 2);
    assert_eq!(m.state(), AgentState::Idle);
    let r = working(&mut m, "t2", 1, 100);
    m.reported(
        &r,
        Ending::Failed(Charge::Failure),
        &Verdict::Applied,
        t(105),
    );
    assert_eq!(m.state(), AgentState::Degraded);
    assert_eq!(m.info().degraded_until, Some(t(105 + 60_000)));
    assert_eq!(
        m.assign(&task("t3", 1), t(200)),
        Err(NotAvailable(AgentState::Degraded))
    );
    m.heartbeat(SidecarState::Idle, None, None, None, t(59_000));
    m.heartbeat(SidecarState::Idle, None, None, None, t(60_104));
    assert_eq!(m.next_deadline(), Some(t(60_105)));
    m.tick(t(60_105));
    assert_eq!(m.state(), AgentState::Idle);
    // Half-open: one more failure trips it again; a success resets.
    let r = working(&mut m, "t4", 1, 60_200);
    m.reported(&r, Ending::Completed, &Verdict::Applied, t(60_300));
    assert_eq!(m.consecutive_failures(), 0);
}

#[test]
fn stale_failures_do_not_count() {
    let mut m = connected();
    let r = working(&mut m, "t1", 1, 0);
    m.reported(
        &r,
        Ending::Failed(Charge::Failure),
        &Verdict::Stale("generation 2".into()),
        t(10),
    );
    assert_eq!(m.consecutive_failures(), 0);
}

#[test]
fn rejection_releases_and_counts() {
    let mut m = connected();
    m.assign(&task("t1", 1), t(0)).unwrap();
    let fx = m.rejected(&AttemptRef::new("t1", 1), "busy", t(1));
    assert_eq!(releases(&fx)[0].1, "rejected by the agent: busy");
    assert_eq!(m.state(), AgentState::Idle);
    assert_eq!(m.consecutive_failures(), 1);
}

#[test]
fn operator_cancel_tells_the_sidecar_and_waits() {
    let mut m = connected();
    let r = working(&mut m, "t1", 1, 0);
    assert_eq!(
        cancels(&m.cancel_task(&r, "operator")),
        std::slice::from_ref(&r)
    );
    assert!(m
        .cancel_task(&AttemptRef::new("t1", 0), "operator")
        .is_empty());
    // The sidecar reports the killed runner; not the agent's failure.
    m.reported(
        &r,
        Ending::Failed(Charge::Failure),
        &Verdict::Stale("already cancelled".into()),
        t(5),
    );
    assert_eq!(m.state(), AgentState::Idle);
    assert_eq!(m.consecutive_failures(), 0);
}

#[test]
fn late_accept_of_a_taken_back_attempt_is_cancelled() {
    let mut m = connected();
    let r = AttemptRef::new("t1", 1);
    m.assign(&task("t1", 1), t(0)).unwrap();
    let fx = m.accepted(&r, &Verdict::Stale("taken back".into()), t(1));
    assert_eq!(cancels(&fx), [r]);
    assert_eq!(m.state(), AgentState::Working);
    assert!(m.holding().unwrap().cancelling);
}

#[test]
fn hub_restart_seed_gives_one_heartbeat_timeout_to_return() {
    let mut m = machine();
    let r = AttemptRef::new("t1", 3);
    m.seed_holding(&held(&r, TaskStatus::Working, -95_000), t(0));
    assert_eq!(m.state(), AgentState::Offline);
    assert_eq!(
        m.next_deadline(),
        Some(t(5_000)),
        "the task deadline (accepted 95 s ago, 100 s timeout) comes first"
    );
    let hello = HelloFacts {
        current_task: Some(r.clone()),
        ..idle_hello()
    };
    assert!(m.connect(1, hello, t(3_000)).is_empty());
    assert_eq!(m.state(), AgentState::Working);
    let fx = m.tick(t(5_000));
    assert!(
        fx.iter().any(|e| matches!(e, Effect::Fail { .. })),
        "the task timeout still applies after a restart"
    );
}

#[test]
fn hub_restart_seed_of_an_unaccepted_attempt_gets_an_accept_deadline() {
    let mut m = machine();
    m.seed_holding(
        &held(&AttemptRef::new("t1", 1), TaskStatus::Assigned, -50_000),
        t(0),
    );
    let hello = HelloFacts {
        current_task: Some(AttemptRef::new("t1", 1)),
        ..idle_hello()
    };
    m.connect(1, hello, t(1_000));
    assert_eq!(m.state(), AgentState::Assigned);
    assert_eq!(m.next_deadline(), Some(t(5_000)));
}

#[test]
fn revoke_closes_and_releases() {
    let mut m = connected();
    let r = working(&mut m, "t1", 1, 0);
    let fx = m.revoke(t(10));
    assert!(fx.contains(&Effect::CloseConnection {
        conn: 1,
        reason: "agent revoked".into()
    }));
    assert_eq!(releases(&fx)[0].0, r);
    assert_eq!(m.state(), AgentState::Offline);
}

#[test]
fn progress_only_from_the_holder_on_its_connection_with_a_small_note() {
    let mut m = connected();
    let other = AttemptRef::new("t9", 1);
    assert_eq!(
        m.progress(1, &other, 10).unwrap_err().code(),
        "not_holder",
        "an idle agent holds nothing"
    );
    let r = working(&mut m, "t1", 3, 0);
    assert_eq!(m.progress(1, &r, 10), Ok(()));
    assert_eq!(m.progress(1, &r, MAX_PROGRESS_NOTE_BYTES), Ok(()));
    assert_eq!(
        m.progress(1, &r, MAX_PROGRESS_NOTE_BYTES + 1)
            .unwrap_err()
            .code(),
        "too_large"
    );
    assert_eq!(
        m.progress(1, &AttemptRef::new("t1", 2), 10)
            .unwrap_err()
            .code(),
        "not_holder",
        "another generation of the same task"
    );
    assert_eq!(m.progress(1, &other, 10).unwrap_err().code(), "not_holder");
    assert_eq!(
        m.progress(2, &r, 10).unwrap_err().code(),
        "not_holder",
        "not on the agent's current connection"
    );
    let before = m.info();
    let _ = m.progress(1, &r, 10);
    assert_eq!(m.info(), before, "progress changes nothing");
}

#[test]
fn hello_repos_become_marks_to_match_on_sanitised_and_bounded() {
    let mut m = machine();
    let mut claimed: Vec<String> = vec!["app".into(), "app".into(), "../etc".into(), "".into()];
    claimed.extend((0..200).map(|i| format!("r{i:03}")));
    let hello = HelloFacts {
        repos: claimed,
        ..idle_hello()
    };
    m.connect(1, hello, t(0));
    let info = m.info();
    assert_eq!(info.repos.len(), MAX_AGENT_REPOS);
    assert!(info.repos.contains(&"app".to_string()));
    assert!(!info.repos.iter().any(|r| r.contains('/') || r.is_empty()));
    let marks = m.matchable();
    assert!(marks.contains("rust"));
    assert!(marks.contains(&repo_mark("app")));
    assert!(!marks.contains(&repo_mark("../etc")));

    // The next hello replaces the list: a clone removed is no longer matched.
    m.disconnect(1, t(1));
    m.connect(2, idle_hello(), t(2));
    assert!(m.info().repos.is_empty());
    assert!(!m.matchable().contains(&repo_mark("app")));
}

fn activity(bytes: u64) -> Option<Activity> {
    Some(Activity {
        runner_alive: true,
        output_bytes: bytes,
        last_output_at: None,
        last_commit_at: None,
    })
}

/// Connected, with a heartbeat timeout long enough that only stalls
/// matter in these tests.
fn patient() -> AgentMachine {
    let s = FsmSettings {
        heartbeat_timeout_ms: 10_000_000,
        ..settings()
    };
    let mut m = AgentMachine::new("a1", vec![], t(0), s, t(0));
    m.connect(1, idle_hello(), t(0));
    m
}

fn beat(m: &mut AgentMachine, r: &AttemptRef, bytes: u64, at: i64) -> Vec<Effect> {
    m.heartbeat(
        SidecarState::Working,
        Some(r.clone()),
        activity(bytes),
        None,
        t(at),
    )
}

#[test]
fn no_activity_for_stall_s_stalls_and_activity_unstalls() {
    let mut m = patient();
    let r = working(&mut m, "t1", 1, 0);
    // Accepted at 1; the first report is the baseline, not activity.
    assert!(beat(&mut m, &r, 0, 10_000).is_empty());
    assert_eq!(m.next_deadline(), Some(t(1 + 30_000)));
    assert!(m.tick(t(29_000)).is_empty());
    let fx = m.tick(t(30_001));
    assert_eq!(
        fx,
        [Effect::Stalled {
            task: r.clone(),
            idle_s: 30
        }]
    );
    assert_eq!(m.state(), AgentState::Stalled);
    // Said once per stall, not at every tick.
    assert!(m.tick(t(31_000)).is_empty());
    // Output again: working, and the clock starts over.
    assert!(beat(&mut m, &r, 10, 40_000).is_empty());
    assert_eq!(m.state(), AgentState::Working);
    assert_eq!(m.next_deadline(), Some(t(70_000)));
    let recent: Vec<_> = m.recent().map(|x| x.to).collect();
    assert!(recent.ends_with(&[
        AgentState::Working,
        AgentState::Stalled,
        AgentState::Working
    ]));
}

#[test]
fn a_stall_past_stall_kill_s_fails_the_attempt_against_the_agent() {
    let mut m = patient();
    let r = working(&mut m, "t1", 1, 0);
    beat(&mut m, &r, 5, 1_000);
    beat(&mut m, &r, 5, 20_000);
    m.tick(t(30_001));
    assert_eq!(m.state(), AgentState::Stalled);
    beat(&mut m, &r, 5, 50_000);
    let fx = m.tick(t(60_001));
    assert!(
        fx.iter().any(|e| matches!(e, Effect::Fail { task, error, retryable: true } if task == &r && error.contains("stalled"))),
        "{fx:?}"
    );
    assert_eq!(cancels(&fx), std::slice::from_ref(&r));
    assert_eq!(m.consecutive_failures(), 1);
    assert!(m.holding().unwrap().cancelling);
    // Nothing more is due for it while the sidecar stops it.
    assert!(m.tick(t(90_000)).is_empty());
}

#[test]
fn a_sidecar_that_reports_no_activity_never_stalls() {
    let mut m = patient();
    let r = working(&mut m, "t1", 1, 0);
    m.heartbeat(
        SidecarState::Working,
        Some(r.clone()),
        None,
        None,
        t(40_000),
    );
    assert!(m.tick(t(90_000)).is_empty());
    assert_eq!(m.state(), AgentState::Working);
}

#[test]
fn environment_failure_degrades_at_once_with_the_reason() {
    let mut m = connected();
    let r = working(&mut m, "t1", 1, 0);
    m.reported(
        &r,
        Ending::Failed(Charge::Environment("git fetch failed".into())),
        &Verdict::Applied,
        t(10),
    );
    assert_eq!(m.state(), AgentState::Degraded);
    let info = m.info();
    assert_eq!(info.degraded_until, Some(t(10 + 60_000)));
    assert_eq!(
        info.degraded_reason.as_deref(),
        Some("environment: git fetch failed")
    );
    assert_eq!(m.consecutive_failures(), 0);
}

#[test]
fn a_rate_limit_holds_back_without_counting_and_ends_by_itself() {
    let mut m = connected();
    let r = working(&mut m, "t1", 1, 0);
    m.reported(
        &r,
        Ending::Failed(Charge::HoldUntil(t(5_000), "retry after 5s".into())),
        &Verdict::Applied,
        t(10),
    );
    assert_eq!(m.state(), AgentState::Degraded);
    assert_eq!(m.consecutive_failures(), 0);
    assert_eq!(
        m.info().degraded_reason.as_deref(),
        Some("rate limited: retry after 5s")
    );
    m.heartbeat(SidecarState::Idle, None, None, None, t(4_000));
    m.tick(t(5_000));
    assert_eq!(m.state(), AgentState::Idle);
    assert_eq!(m.info().degraded_reason, None);
}

#[test]
fn an_absolved_task_leaves_the_breaker_and_lifts_its_degradation() {
    let mut m = connected();
    for (i, id) in ["x", "y", "x"].iter().enumerate() {
        let at = i as i64 * 10;
        let r = working(&mut m, id, i as u64 + 1, at);
        m.reported(
            &r,
            Ending::Failed(Charge::Failure),
            &Verdict::Applied,
            t(at + 5),
        );
    }
    assert_eq!(m.state(), AgentState::Degraded);
    m.absolve("x", t(100));
    assert_eq!(m.consecutive_failures(), 1);
    assert_eq!(
        m.state(),
        AgentState::Idle,
        "one failure left: not degraded"
    );
    m.absolve("nothing", t(101));
    assert_eq!(m.consecutive_failures(), 1);
}

#[test]
fn the_breaker_survives_a_restart_of_the_machine() {
    let mut m = connected();
    let r = working(&mut m, "t1", 1, 0);
    m.reported(
        &r,
        Ending::Failed(Charge::Environment("disk full".into())),
        &Verdict::Applied,
        t(10),
    );
    let r = working_after_cooldown(&mut m);
    m.reported(
        &r,
        Ending::Failed(Charge::Failure),
        &Verdict::Applied,
        t(70_100),
    );
    let kept = m.breaker();
    assert_eq!(kept.failures, ["t2"]);
    let mut again = machine();
    again.restore_breaker(kept.clone(), t(70_200));
    assert_eq!(again.breaker(), kept);
    assert_eq!(again.info().consecutive_failures, 1);
}

fn working_after_cooldown(m: &mut AgentMachine) -> AttemptRef {
    m.heartbeat(SidecarState::Idle, None, None, None, t(60_000));
    m.tick(t(60_010));
    assert_eq!(m.state(), AgentState::Idle);
    working(m, "t2", 1, 70_000)
}

fn offline_alerts(fx: &[Effect]) -> Vec<(Timestamp, i64)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Offline { since, offline_s } => Some((*since, *offline_s)),
            _ => None,
        })
        .collect()
}

#[test]
fn offline_alert_once_per_offline_period() {
    let mut m = connected();
    m.disconnect(1, t(1_000));
    assert_eq!(m.next_deadline(), Some(t(121_000)));
    assert!(offline_alerts(&m.tick(t(120_999))).is_empty());
    assert_eq!(offline_alerts(&m.tick(t(121_000))), [(t(1_000), 120)]);
    assert_eq!(
        m.next_deadline(),
        None,
        "raised once, nothing more to wait for"
    );
    assert!(offline_alerts(&m.tick(t(500_000))).is_empty());
    // Back, then gone again: a new period, a new alert.
    m.connect(2, idle_hello(), t(600_000));
    m.disconnect(2, t(601_000));
    assert_eq!(offline_alerts(&m.tick(t(721_000))), [(t(601_000), 120)]);
}

#[test]
fn coming_back_in_time_raises_nothing() {
    let mut m = connected();
    m.disconnect(1, t(1_000));
    m.connect(2, idle_hello(), t(60_000));
    assert_eq!(m.next_deadline(), Some(t(70_000)), "only the heartbeat");
    m.heartbeat(SidecarState::Idle, None, None, None, t(65_000));
    assert!(offline_alerts(&m.tick(t(121_000))).is_empty());
}

#[test]
fn a_heartbeat_timeout_starts_the_offline_period_too() {
    let mut m = connected();
    let fx = m.tick(t(10_000));
    assert!(fx
        .iter()
        .any(|e| matches!(e, Effect::CloseConnection { .. })));
    assert_eq!(offline_alerts(&m.tick(t(130_000))), [(t(10_000), 120)]);
}

#[test]
fn never_connected_since_start_raises_no_offline_alert() {
    let mut m = machine();
    assert_eq!(m.next_deadline(), None);
    assert!(offline_alerts(&m.tick(t(10_000_000))).is_empty());
    // Revoked while away: nothing either.
    let mut m = connected();
    m.disconnect(1, t(1_000));
    m.revoke(t(2_000));
    assert!(offline_alerts(&m.tick(t(500_000))).is_empty());
}

#[test]
fn an_agent_holding_work_across_a_restart_is_expected_back() {
    let mut m = machine();
    let r = AttemptRef {
        task_id: "t1".into(),
        generation: 1,
    };
    m.seed_holding(&held(&r, TaskStatus::Working, 0), t(0));
    let fx = m.tick(t(120_000));
    assert_eq!(offline_alerts(&fx), [(t(0), 120)]);
}

#[test]
fn a_paused_agent_drains_its_attempt_and_takes_no_other() {
    let mut m = connected();
    let r = working(&mut m, "t1", 1, 10);
    assert!(m.set_paused(true));
    assert!(!m.set_paused(true), "pausing twice changes nothing");
    assert!(m.info().paused);
    // The attempt it holds runs on.
    assert_eq!(m.state(), AgentState::Working);
    m.reported(&r, Ending::Completed, &Verdict::Applied, t(20));
    // Its state stays derived; it is just not offered work.
    assert_eq!(m.state(), AgentState::Idle);
    assert!(!m.wants_work());
    assert_eq!(
        m.assign(&task("t2", 1), t(21)),
        Err(NotAvailable(AgentState::Idle))
    );
    assert!(m.set_paused(false));
    assert!(m.wants_work() && !m.info().paused);
    m.assign(&task("t2", 1), t(22)).unwrap();
    assert_eq!(m.state(), AgentState::Assigned);
}

#[test]
fn only_an_idle_unpaused_agent_wants_work() {
    let mut m = machine();
    assert!(!m.wants_work(), "offline");
    let mut m2 = connected();
    assert!(m2.wants_work());
    working(&mut m2, "t1", 1, 1);
    assert!(!m2.wants_work(), "working");
    m.set_paused(true);
    m.connect(1, idle_hello(), t(5));
    assert_eq!(m.state(), AgentState::Idle);
    assert!(!m.wants_work(), "paused before it connected");
}

#[test]
fn hello_context_window_is_kept_until_the_next_hello() {
    let mut m = machine();
    let hello = HelloFacts {
        context_window_tokens: Some(200_000),
        ..idle_hello()
    };
    m.connect(1, hello, t(0));
    assert_eq!(m.info().context_window_tokens, Some(200_000));
    assert_eq!(m.context_window_tokens(), Some(200_000));
    m.disconnect(1, t(1));
    m.connect(2, idle_hello(), t(2));
    assert_eq!(
        m.info().context_window_tokens,
        None,
        "a sidecar that says none"
    );
}

fn hello_from(instance: Option<&str>) -> HelloFacts {
    HelloFacts {
        instance_id: instance.map(str::to_string),
        ..idle_hello()
    }
}

fn refusals(fx: &[Effect]) -> Vec<(u64, &'static str, String)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Refuse {
                conn,
                code,
                message,
            } => Some((*conn, *code, message.clone())),
            _ => None,
        })
        .collect()
}

fn errors_sent(fx: &[Effect]) -> Vec<(String, String)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Send(HubMsg::Error { code, message }) => Some((code.clone(), message.clone())),
            _ => None,
        })
        .collect()
}

fn failing(checks: &[(&str, &str)]) -> SelfTestStatus {
    SelfTestStatus {
        ok: false,
        failures: checks
            .iter()
            .map(|(c, d)| agentcom_protocol::CheckFailure {
                check: c.to_string(),
                detail: d.to_string(),
            })
            .collect(),
        at: None,
    }
}

fn passing() -> SelfTestStatus {
    SelfTestStatus {
        ok: true,
        ..Default::default()
    }
}

#[test]
fn a_second_sidecar_is_refused_while_the_first_is_connected() {
    let mut m = machine();
    assert!(m.connect(1, hello_from(Some("inst-a")), t(0)).is_empty());
    let r = working(&mut m, "t1", 1, 10);
    let before = m.info();
    let intruder = HelloFacts {
        selftest: Some(failing(&[("disk", "full")])),
        ..hello_from(Some("inst-b"))
    };
    let fx = m.connect(2, intruder, t(5_000));
    let refused = refusals(&fx);
    assert_eq!(refused.len(), 1, "{fx:?}");
    let (conn, code, message) = &refused[0];
    assert_eq!((*conn, *code), (2, "agent_in_use"));
    assert!(
        message.contains(&format!(
            "agent a1 is already connected from another sidecar since {}",
            t(0)
        )) && message.contains("agentcom-sidecar join --id OTHER"),
        "{message}"
    );
    let told = errors_sent(&fx);
    assert_eq!(told.len(), 1, "the connected sidecar is told: {fx:?}");
    assert_eq!(told[0].0, "agent_in_use_elsewhere");
    assert!(told[0].1.contains("inst-b"), "{}", told[0].1);
    assert_eq!(fx.len(), 2, "nothing else: {fx:?}");
    // Nothing about the agent changed: its connection, its attempt, its
    // state (the intruder's failing self-test is not taken either).
    assert_eq!(m.conn(), Some(1));
    assert_eq!(m.holding().unwrap().task, r);
    assert_eq!(m.info(), before);
    // The refused connection closing changes nothing either.
    assert!(m.disconnect(2, t(5_001)).is_empty());
    assert_eq!(m.state(), AgentState::Working);
}

#[test]
fn the_same_installation_reconnecting_replaces_its_connection() {
    let mut m = machine();
    m.connect(1, hello_from(Some("inst-a")), t(0));
    let r = working(&mut m, "t1", 1, 10);
    let hello = HelloFacts {
        current_task: Some(r.clone()),
        ..hello_from(Some("inst-a"))
    };
    let fx = m.connect(2, hello, t(1_000));
    assert_eq!(
        fx,
        [Effect::CloseConnection {
            conn: 1,
            reason: "replaced by a new connection".into()
        }]
    );
    assert_eq!(m.conn(), Some(2));
    assert_eq!(m.holding().unwrap().task, r);
}

#[test]
fn without_an_instance_id_on_either_side_a_new_connection_replaces() {
    for (first, second) in [(Some("inst-a"), None), (None, Some("inst-b")), (None, None)] {
        let mut m = machine();
        m.connect(1, hello_from(first), t(0));
        let fx = m.connect(2, hello_from(second), t(100));
        assert!(refusals(&fx).is_empty(), "{first:?} then {second:?}");
        assert_eq!(m.conn(), Some(2), "{first:?} then {second:?}");
    }
    // The id of the connection that replaced counts from then on.
    let mut m = machine();
    m.connect(1, hello_from(None), t(0));
    m.connect(2, hello_from(Some("inst-b")), t(100));
    let fx = m.connect(3, hello_from(Some("inst-c")), t(200));
    assert_eq!(refusals(&fx)[0].0, 3);
    assert_eq!(m.conn(), Some(2));
}

#[test]
fn a_connection_silent_past_its_heartbeat_timeout_does_not_hold_the_agent() {
    let mut m = machine();
    m.connect(1, hello_from(Some("inst-a")), t(0));
    // Its heartbeat timeout (10 s) is over, the tick has not run yet.
    let fx = m.connect(2, hello_from(Some("inst-b")), t(10_000));
    assert!(refusals(&fx).is_empty(), "{fx:?}");
    assert_eq!(m.conn(), Some(2));
    // Once offline, anyone may connect.
    m.disconnect(2, t(10_001));
    m.connect(3, hello_from(Some("inst-c")), t(10_002));
    assert_eq!(m.conn(), Some(3));
}

#[test]
fn a_failing_selftest_degrades_until_one_passes() {
    let mut m = machine();
    let hello = HelloFacts {
        selftest: Some(failing(&[
            ("runner", "/opt/agent is not executable"),
            ("disk", "12 MB free"),
        ])),
        ..idle_hello()
    };
    assert!(m.connect(1, hello, t(0)).is_empty());
    let reason = "self-test failing: runner: /opt/agent is not executable; disk: 12 MB free";
    assert_eq!(m.state(), AgentState::Degraded);
    assert!(!m.wants_work());
    assert_eq!(
        m.assign(&task("t1", 1), t(1)),
        Err(NotAvailable(AgentState::Degraded))
    );
    let info = m.info();
    assert_eq!(info.degraded_reason.as_deref(), Some(reason));
    assert_eq!(info.degraded_until, None, "not time-based");
    assert_eq!(
        m.recent().last().unwrap().reason,
        format!("sidecar connected; {reason}")
    );
    // Not on the breaker: nothing of it is kept across restarts.
    assert_eq!(m.breaker(), Breaker::default());
    // Heartbeats without a status, and time, change nothing.
    m.heartbeat(SidecarState::Idle, None, None, None, t(5_000));
    m.tick(t(9_000));
    assert_eq!(m.state(), AgentState::Degraded);
    // Another failure replaces the reason.
    m.heartbeat(
        SidecarState::Idle,
        None,
        None,
        Some(&failing(&[("disk", "3 MB free")])),
        t(8_000),
    );
    assert_eq!(
        m.info().degraded_reason.as_deref(),
        Some("self-test failing: disk: 3 MB free")
    );
    // A passing one ends it.
    m.heartbeat(SidecarState::Idle, None, None, Some(&passing()), t(9_000));
    assert_eq!(m.state(), AgentState::Idle);
    assert!(m.wants_work());
    assert_eq!(m.info().degraded_reason, None);
    assert_eq!(m.recent().last().unwrap().reason, "self-test passes");
    // A hello can say it too, either way.
    m.disconnect(1, t(9_500));
    let hello = HelloFacts {
        selftest: Some(failing(&[("git_remote", "unreachable")])),
        ..idle_hello()
    };
    m.connect(2, hello, t(9_600));
    assert_eq!(m.state(), AgentState::Degraded);
    m.disconnect(2, t(9_700));
    let hello = HelloFacts {
        selftest: Some(passing()),
        ..idle_hello()
    };
    m.connect(3, hello, t(9_800));
    assert_eq!(m.state(), AgentState::Idle);
}

#[test]
fn an_old_sidecar_without_a_selftest_changes_nothing() {
    let mut m = machine();
    let hello = HelloFacts {
        selftest: Some(failing(&[("disk", "full")])),
        ..idle_hello()
    };
    m.connect(1, hello, t(0));
    m.disconnect(1, t(10));
    m.connect(2, idle_hello(), t(20));
    assert_eq!(
        m.state(),
        AgentState::Degraded,
        "a hello without a status keeps the last one"
    );
    let mut fresh = connected();
    fresh.heartbeat(SidecarState::Idle, None, None, None, t(5));
    assert_eq!(fresh.state(), AgentState::Idle);
}

#[test]
fn a_failing_selftest_lets_the_attempt_it_holds_finish() {
    let mut m = connected();
    let r = working(&mut m, "t1", 1, 0);
    m.heartbeat(
        SidecarState::Working,
        Some(r.clone()),
        None,
        Some(&failing(&[("disk", "full")])),
        t(100),
    );
    assert_eq!(m.state(), AgentState::Working, "the attempt runs on");
    m.reported(&r, Ending::Completed, &Verdict::Applied, t(200));
    assert_eq!(m.state(), AgentState::Degraded);
    assert!(!m.wants_work());
}

#[test]
fn a_failing_selftest_and_the_breaker_both_show() {
    let mut m = connected();
    let r = working(&mut m, "t1", 1, 0);
    m.reported(
        &r,
        Ending::Failed(Charge::Environment("disk full".into())),
        &Verdict::Applied,
        t(10),
    );
    m.heartbeat(
        SidecarState::Idle,
        None,
        None,
        Some(&failing(&[("disk", "full")])),
        t(20),
    );
    assert_eq!(
        m.info().degraded_reason.as_deref(),
        Some("self-test failing: disk: full; also environment: disk full")
    );
    // The breaker's cooldown ends; the self-test still fails.
    m.heartbeat(SidecarState::Idle, None, None, None, t(60_000));
    m.tick(t(60_010));
    assert_eq!(m.state(), AgentState::Degraded);
    assert_eq!(
        m.breaker().degraded_reason,
        None,
        "the breaker never holds the self-test"
    );
    m.heartbeat(SidecarState::Idle, None, None, Some(&passing()), t(60_020));
    assert_eq!(m.state(), AgentState::Idle);
}

#[test]
fn free_once_completed_is_what_a_completion_would_leave() {
    let mut m = connected();
    let r = working(&mut m, "t1", 1, 10);
    assert!(m.free_once_completed(&r, t(20)));
    assert!(
        !m.free_once_completed(&AttemptRef::new("t1", 2), t(20)),
        "not the attempt it holds"
    );
    assert_eq!(m.state(), AgentState::Working, "asking changes nothing");
    // Paused by an operator: it wants no work after.
    m.set_paused(true);
    assert!(!m.free_once_completed(&r, t(20)));
    m.set_paused(false);
    // A self-test failing meanwhile leaves it degraded.
    let failing_now = failing(&[("disk", "3 MB free")]);
    m.heartbeat(
        SidecarState::Working,
        Some(r.clone()),
        None,
        Some(&failing_now),
        t(30),
    );
    assert!(!m.free_once_completed(&r, t(40)));
    m.heartbeat(
        SidecarState::Working,
        Some(r.clone()),
        None,
        Some(&passing()),
        t(50),
    );
    assert!(m.free_once_completed(&r, t(60)));
    m.reported(&r, Ending::Completed, &Verdict::Applied, t(60));
    assert!(m.wants_work());
}
