//! Failure handling against the real binaries, with timeouts in seconds:
//! crashed sidecars and hubs, silent and inert agents, failing and hanging
//! runners, stale reports, cancellation.

use std::path::Path;
use std::time::{Duration, Instant};

use agentcom_tests::hub::{events, millis_between, Hub};
use agentcom_tests::raw::RawSidecar;
use agentcom_tests::sidecar::Sidecar;
use agentcom_tests::wait_until;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);

/// Timeouts shrunk for tests: heartbeat timeout 3 s (interval 1 s), accept
/// timeout 2 s, sweep 1 s, backoff 0 then 2 s.
fn fast(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env = vec![
        ("AGENTCOM_TIMEOUTS__HEARTBEAT_TIMEOUT_S", "3"),
        ("AGENTCOM_TIMEOUTS__ACCEPT_TIMEOUT_S", "2"),
        ("AGENTCOM_TIMEOUTS__SWEEP_INTERVAL_S", "1"),
        ("AGENTCOM_RETRY__BACKOFF_S", "0,2"),
        ("AGENTCOM_CIRCUIT__FAILURES", "10"),
    ];
    env.extend_from_slice(extra);
    env
}

/// A runner that logs `start|done <task> <generation> <agent>` to `log`,
/// sleeps `$SLEEP` seconds (per agent: `SLEEP_<agent>`), and starts a
/// grandchild whose pid it writes to `<log>.<task>.<gen>.child`.
fn runner(log: &Path, sleep_default: &str) -> String {
    format!(
        r#"log={log}
echo "start $AGENTCOM_TASK_ID $AGENTCOM_GENERATION $AGENTCOM_AGENT_ID" >> $log
eval "s=\${{SLEEP_$AGENTCOM_AGENT_ID:-{sleep_default}}}"
sleep 600 &
echo $! > $log.$AGENTCOM_TASK_ID.$AGENTCOM_GENERATION.child
sleep "$s"
kill $! 2>/dev/null
echo "done $AGENTCOM_TASK_ID $AGENTCOM_GENERATION $AGENTCOM_AGENT_ID" >> $log
printf '{{"summary":"by %s at generation %s"}}' "$AGENTCOM_AGENT_ID" "$AGENTCOM_GENERATION" > "$AGENTCOM_RESULT_FILE""#,
        log = log.display()
    )
}

fn log_lines(log: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

fn alive(pid: i32) -> bool {
    // A zombie is dead for our purposes.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z"))
        .unwrap_or(false)
}

fn child_pid(log: &Path, task: &str, generation: u64) -> i32 {
    let p = log.with_file_name(format!(
        "{}.{task}.{generation}.child",
        log.file_name().unwrap().to_string_lossy()
    ));
    wait_until(T, "the runner to record its child", || {
        std::fs::read_to_string(&p).ok()?.trim().parse().ok()
    })
}

fn id(t: &Value) -> String {
    t["id"].as_str().unwrap().to_string()
}

fn history_detail(task: &Value, event: &str) -> Vec<String> {
    task["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["event"] == event)
        .map(|h| h["detail"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn a_sidecar_killed_while_working_loses_its_task_to_another_agent_and_its_old_report_is_stale() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &fast(&[]));
    let log = root.path().join("exec.log");
    let script = format!("export SLEEP_alpha=30\n{}", runner(&log, "0.2"));
    let mut alpha = Sidecar::start(root.path(), &hub, "alpha", &[], &script, "");
    hub.wait_agent("alpha", "idle", T);
    let task = hub.submit(json!({ "title": "survive a crash" }));
    hub.wait_status(&id(&task), "working", T);
    let grandchild = child_pid(&log, &id(&task), 1);
    let _beta = Sidecar::start(root.path(), &hub, "beta", &[], &script, "");
    hub.wait_agent("beta", "idle", T);

    alpha.kill9();
    let done = hub.wait_status(&id(&task), "completed", T);
    assert_eq!(done["generation"], 2);
    assert_eq!(done["assigned_to"], "beta");
    assert_eq!(done["result"]["summary"], "by beta at generation 2");
    let offline = history_detail(&done, "failed");
    assert!(
        offline.iter().any(|d| d.contains("agent offline for 3s")),
        "{offline:?}"
    );
    assert!(
        log_lines(&log, "done").iter().all(|l| !l.contains("alpha")),
        "alpha's runner never finished"
    );

    // alpha comes back: it kills what is left of its runner's group, and
    // reports the dead runner for generation 1 — stale.
    alpha.restart();
    wait_until(T, "the rest of alpha's runner group to be killed", || {
        (!alive(grandchild)).then_some(())
    });
    wait_until(T, "alpha's old report to be counted stale", || {
        (hub.state()["stale_messages"] == 1).then_some(())
    });
    let after = hub.task(&id(&task));
    assert_eq!(after["status"], "completed");
    assert_eq!(
        after["result"]["summary"], "by beta at generation 2",
        "the stale report changed nothing"
    );
    let stale: Vec<&Value> = after["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["event"] == "stale_report")
        .collect();
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0]["agent_id"], "alpha");
    assert_eq!(stale[0]["generation"], 1);
    assert_eq!(
        events(&after).iter().filter(|e| *e == "completed").count(),
        1
    );
    wait_until(T, "alpha's outbox to be acked empty", || {
        std::fs::read_dir(root.path().join("sidecar-alpha/state/outbox"))
            .ok()?
            .next()
            .is_none()
            .then_some(())
    });
    hub.wait_agent("alpha", "idle", T);
}

#[test]
fn a_hub_killed_mid_task_finishes_it_once_without_a_second_execution() {
    let root = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(root.path(), &fast(&[]));
    let log = root.path().join("exec.log");
    let _s = Sidecar::start(root.path(), &hub, "solo", &[], &runner(&log, "3"), "");
    hub.wait_agent("solo", "idle", T);
    let task = hub.submit(json!({ "title": "long job" }));
    hub.wait_status(&id(&task), "working", T);
    // No pause before the restart: kill9 has reaped the hub, so its end of
    // the sidecar's connection is already closed and the sidecar must
    // reconnect to a new process whatever the timing.
    hub.kill9();
    hub.restart();
    let done = hub.wait_status(&id(&task), "completed", T);
    assert_eq!(done["generation"], 1);
    assert_eq!(
        events(&done),
        ["created", "assigned", "accepted", "completed"]
    );
    assert_eq!(log_lines(&log, "start").len(), 1, "executed once");
    assert_eq!(log_lines(&log, "done").len(), 1);
}

#[test]
fn a_result_finished_while_the_hub_was_down_survives_a_sidecar_kill_9() {
    let root = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(root.path(), &fast(&[]));
    let log = root.path().join("exec.log");
    let mut s = Sidecar::start(root.path(), &hub, "solo", &[], &runner(&log, "1.5"), "");
    hub.wait_agent("solo", "idle", T);
    let task = hub.submit(json!({ "title": "finish in the dark" }));
    hub.wait_status(&id(&task), "working", T);
    hub.kill9();
    let outbox = root.path().join("sidecar-solo/state/outbox");
    // A finished entry: the atomic write's temp file does not count (a kill
    // before its rename loses the unsent result, and the task runs again).
    wait_until(T, "the result to wait in the outbox", || {
        std::fs::read_dir(&outbox)
            .ok()?
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .then_some(())
    });
    s.kill9();
    hub.restart();
    s.restart();
    let done = hub.wait_status(&id(&task), "completed", T);
    assert_eq!(done["generation"], 1);
    assert_eq!(done["result"]["summary"], "by solo at generation 1");
    assert_eq!(
        log_lines(&log, "start").len(),
        1,
        "delivered, not re-executed"
    );
}

#[test]
fn a_failing_runner_follows_the_backoff_ends_dead_and_retry_revives_it() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &fast(&[]));
    let fixed = root.path().join("fixed");
    let script = format!(
        "if [ -f {} ]; then echo '{{\"summary\":\"fixed\"}}' > \"$AGENTCOM_RESULT_FILE\"; exit 0; fi\necho boom >&2\nexit 1",
        fixed.display()
    );
    let _s = Sidecar::start(root.path(), &hub, "solo", &[], &script, "");
    hub.wait_agent("solo", "idle", T);
    let task = hub.submit(json!({ "title": "always fails", "max_retries": 2 }));
    let dead = hub.wait_status(&id(&task), "dead", T);
    assert_eq!(dead["attempts"], 3);
    assert_eq!(dead["generation"], 3);
    assert!(
        dead["last_error"].as_str().unwrap().contains("boom"),
        "{}",
        dead["last_error"]
    );
    assert_eq!(
        events(&dead),
        [
            "created", "assigned", "accepted", "failed", "requeued", // retry 1: immediate
            "assigned", "accepted", "failed", "requeued", // retry 2: after 2 s
            "assigned", "accepted", "dead",
        ]
    );
    let h = dead["history"].as_array().unwrap();
    let at = |i: usize| h[i]["at"].as_str().unwrap().to_string();
    assert!(
        millis_between(&at(3), &at(4)) < 1000,
        "first retry is immediate"
    );
    let second_wait = millis_between(&at(7), &at(8));
    assert!(
        (1900..4000).contains(&second_wait),
        "second retry waits the 2 s backoff, waited {second_wait} ms"
    );
    assert!(
        h[7]["detail"].as_str().unwrap().contains("retry in 2s"),
        "{}",
        h[7]
    );
    assert!(
        h[11]["detail"].as_str().unwrap().contains("out of retries"),
        "{}",
        h[11]
    );
    assert_eq!(hub.state()["tasks"]["dead"], 1);

    std::fs::write(&fixed, "").unwrap();
    let revived = hub.ok("POST", &format!("/api/tasks/{}/retry", id(&task)), None);
    assert_eq!(revived["status"], "queued");
    assert_eq!(revived["attempts"], 0);
    let done = hub.wait_status(&id(&task), "completed", T);
    assert_eq!(done["generation"], 4);
    assert_eq!(done["result"]["summary"], "fixed");
}

#[test]
fn a_runner_that_says_not_retryable_is_dead_at_once() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &fast(&[]));
    let script = "echo '{\"error\":\"the spec is contradictory\",\"retryable\":false}' > \"$AGENTCOM_RESULT_FILE\"; exit 2";
    let _s = Sidecar::start(root.path(), &hub, "solo", &[], script, "");
    let task = hub.submit(json!({ "title": "impossible" }));
    let dead = hub.wait_status(&id(&task), "dead", T);
    assert_eq!(dead["attempts"], 1);
    assert!(dead["last_error"]
        .as_str()
        .unwrap()
        .contains("contradictory"));
}

#[test]
fn an_agent_that_never_accepts_is_timed_out_then_degraded() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(
        root.path(),
        &fast(&[
            ("AGENTCOM_CIRCUIT__FAILURES", "2"),
            ("AGENTCOM_CIRCUIT__COOLDOWN_S", "60"),
        ]),
    );
    let token = hub.add_agent("inert", &[]);
    let mut ws = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    ws.hello("inert");
    let task = hub.submit(json!({ "title": "nobody home" }));
    let started = Instant::now();
    // It keeps heart-beating (looks alive) but never accepts.
    let mut assigns = 0;
    let mut cancels = 0;
    while started.elapsed() < Duration::from_secs(8) && hub.agent("inert")["state"] != "degraded" {
        ws.send(json!({ "type": "heartbeat", "state": "idle" }));
        while let Some(m) = ws.recv(Duration::from_millis(200)) {
            match m["type"].as_str() {
                Some("assign") => assigns += 1,
                Some("cancel") => cancels += 1,
                _ => {}
            }
        }
    }
    let agent = hub.agent("inert");
    assert_eq!(agent["state"], "degraded", "{agent}");
    assert_eq!(agent["consecutive_failures"], 2);
    assert!(agent["degraded_until"].is_string());
    assert_eq!((assigns, cancels), (2, 2));
    let t = hub.task(&id(&task));
    assert_eq!(t["status"], "queued", "taken back, not failed");
    assert_eq!(t["attempts"], 0, "no attempt used");
    let released = history_detail(&t, "released");
    assert_eq!(
        released,
        ["not accepted within 2s", "not accepted within 2s"]
    );
    assert_eq!(hub.state()["agents"]["degraded"], 1);
    // While degraded it gets nothing; a working agent takes the task.
    let log = root.path().join("exec.log");
    let _s = Sidecar::start(root.path(), &hub, "worker", &[], &runner(&log, "0"), "");
    let done = hub.wait_status(&id(&task), "completed", T);
    assert_eq!(done["assigned_to"], "worker");
    assert_eq!(done["generation"], 3);
}

#[test]
fn a_task_past_its_timeout_is_cancelled_on_the_sidecar_and_failed_as_retryable() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &fast(&[]));
    let log = root.path().join("exec.log");
    let _s = Sidecar::start(root.path(), &hub, "solo", &[], &runner(&log, "60"), "");
    hub.wait_agent("solo", "idle", T);
    let task = hub.submit(json!({ "title": "hangs", "timeout_s": 2, "max_retries": 1 }));
    hub.wait_status(&id(&task), "working", T);
    let first_child = child_pid(&log, &id(&task), 1);
    // Attempt 1 times out, is retried (retryable), attempt 2 times out: dead.
    let dead = hub.wait_status(&id(&task), "dead", T);
    let failed = history_detail(&dead, "failed");
    assert!(failed[0].contains("timed out after 2s"), "{failed:?}");
    assert!(
        history_detail(&dead, "dead")[0].contains("timed out"),
        "{dead}"
    );
    assert_eq!(dead["attempts"], 2);
    wait_until(T, "the runner's whole group to be killed", || {
        (!alive(first_child)).then_some(())
    });
    hub.wait_agent("solo", "idle", T);
    assert!(log_lines(&log, "done").is_empty());
}

#[test]
fn cancelling_a_working_task_kills_the_runner_group_and_frees_the_agent() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &fast(&[]));
    let log = root.path().join("exec.log");
    let _s = Sidecar::start(root.path(), &hub, "solo", &[], &runner(&log, "60"), "");
    let task = hub.submit(json!({ "title": "changed my mind" }));
    hub.wait_status(&id(&task), "working", T);
    let child = child_pid(&log, &id(&task), 1);
    assert!(alive(child));
    let c = hub.ok("POST", &format!("/api/tasks/{}/cancel", id(&task)), None);
    assert_eq!(c["status"], "cancelled");
    wait_until(T, "the runner's group to be killed", || {
        (!alive(child)).then_some(())
    });
    hub.wait_agent("solo", "idle", T);
    let t = hub.task(&id(&task));
    assert_eq!(t["status"], "cancelled");
    // The sidecar reported the killed runner; it was noted, and changed nothing.
    let notes = history_detail(&t, "stale_report");
    assert!(notes.iter().any(|n| n.contains("cancelled")), "{notes:?}");
    // The agent takes new work.
    let next = hub.submit(json!({ "title": "next" }));
    hub.wait_status(&id(&next), "working", T);
}

#[test]
fn heartbeats_reconcile_divergent_state() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &fast(&[]));
    let token = hub.add_agent("raw", &[]);
    let mut ws = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    ws.hello("raw");
    let task = hub.submit(json!({ "title": "diverge" }));
    let a = ws.recv_type("assign", T).unwrap();
    ws.send(json!({ "type": "accept", "task_id": a["task_id"], "generation": 1 }));
    hub.wait_status(&id(&task), "working", T);
    // The sidecar says it is idle: the hub fails the attempt as retryable.
    ws.send(json!({ "type": "heartbeat", "state": "idle" }));
    let again = ws
        .recv_type("assign", T)
        .expect("requeued and offered again");
    assert_eq!(again["generation"], 2);
    let t = hub.task(&id(&task));
    assert!(
        history_detail(&t, "failed")[0].contains("sidecar reports idle"),
        "{t}"
    );
    ws.send(json!({ "type": "accept", "task_id": again["task_id"], "generation": 2 }));
    hub.wait_status(&id(&task), "working", T);
    // The sidecar works on something the hub never gave it: cancel that.
    ws.send(
        json!({ "type": "heartbeat", "state": "working", "task_id": "BOGUS", "generation": 7 }),
    );
    let cancel = ws.recv_type("cancel", T).expect("cancel");
    assert_eq!(
        (cancel["task_id"].as_str(), cancel["generation"].as_u64()),
        (Some("BOGUS"), Some(7))
    );
    assert_eq!(
        hub.task(&id(&task))["status"],
        "working",
        "the real attempt is untouched"
    );
}

#[test]
fn stale_generations_change_nothing_are_acked_and_counted() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &fast(&[]));
    let token = hub.add_agent("raw", &[]);
    let mut ws = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    ws.hello("raw");
    let task = hub.submit(json!({ "title": "generations" }));
    let tid = id(&task);
    ws.recv_type("assign", T).unwrap();
    ws.send(json!({ "type": "accept", "task_id": tid, "generation": 1 }));
    hub.wait_status(&tid, "working", T);
    ws.send(json!({ "type": "complete", "task_id": tid, "generation": 0, "result": { "summary": "from the past" } }));
    let ack = ws.recv_type("ack", T).expect("stale complete is acked");
    assert_eq!(
        (ack["generation"].as_u64(), ack["of"].as_str()),
        (Some(0), Some("complete"))
    );
    ws.send(json!({ "type": "fail", "task_id": tid, "generation": 5, "error": "from the future", "retryable": true }));
    assert_eq!(ws.recv_type("ack", T).unwrap()["of"], "fail");
    ws.send(json!({ "type": "accept", "task_id": tid, "generation": 9 }));
    assert_eq!(ws.recv_type("ack", T).unwrap()["of"], "accept");
    assert_eq!(ws.recv_type("cancel", T).unwrap()["generation"], 9);
    let t = hub.task(&tid);
    assert_eq!(t["status"], "working");
    assert_eq!(t["generation"], 1);
    assert_eq!(hub.state()["stale_messages"], 3);
    assert_eq!(history_detail(&t, "stale_report").len(), 3);
    ws.send(json!({ "type": "complete", "task_id": tid, "generation": 1, "result": { "summary": "real" } }));
    ws.recv_type("ack", T).unwrap();
    let done = hub.task(&tid);
    assert_eq!(done["status"], "completed");
    assert_eq!(done["result"]["summary"], "real");
}

#[test]
fn a_sidecar_that_reconnects_within_the_heartbeat_timeout_keeps_its_task() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &fast(&[]));
    let token = hub.add_agent("raw", &[]);
    let mut ws = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    ws.hello("raw");
    let task = hub.submit(json!({ "title": "blip" }));
    let tid = id(&task);
    ws.recv_type("assign", T).unwrap();
    ws.send(json!({ "type": "accept", "task_id": tid, "generation": 1 }));
    hub.wait_status(&tid, "working", T);
    drop(ws);
    hub.wait_agent("raw", "offline", T);
    // Away for a while on purpose (real time, a third of the 3 s the hub
    // allows): the blip this test is about.
    std::thread::sleep(Duration::from_secs(1));
    let mut ws = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    ws.send(json!({
        "type": "hello", "protocol_version": 1, "agent_id": "raw", "capabilities": [],
        "state": "working", "current_task": { "task_id": tid, "generation": 1 }, "sidecar_version": "raw"
    }));
    ws.recv_type("welcome", T).unwrap();
    let agent = hub.wait_agent("raw", "working", T);
    assert_eq!(agent["current_task"]["task_id"], tid.as_str());
    // Well past the heartbeat timeout, still its attempt: 4 s of real time
    // on purpose, heart-beating as a live sidecar does.
    for _ in 0..5 {
        ws.send(
            json!({ "type": "heartbeat", "state": "working", "task_id": tid, "generation": 1 }),
        );
        std::thread::sleep(Duration::from_millis(800));
    }
    ws.send(json!({ "type": "complete", "task_id": tid, "generation": 1, "result": {} }));
    ws.recv_type("ack", T).unwrap();
    let done = hub.task(&tid);
    assert_eq!(done["generation"], 1);
    assert_eq!(
        events(&done),
        ["created", "assigned", "accepted", "completed"]
    );
}

#[test]
fn a_silent_sidecar_goes_offline_and_its_task_is_requeued_with_a_new_generation() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &fast(&[]));
    let token = hub.add_agent("raw", &[]);
    let mut ws = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    ws.hello("raw");
    let task = hub.submit(json!({ "title": "silence" }));
    let tid = id(&task);
    ws.recv_type("assign", T).unwrap();
    ws.send(json!({ "type": "accept", "task_id": tid, "generation": 1 }));
    hub.wait_status(&tid, "working", T);
    // The connection stays open but says nothing (a hung machine).
    let started = Instant::now();
    hub.wait_agent("raw", "offline", T);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(2500),
        "offline after the 3 s heartbeat timeout, not {waited:?}"
    );
    assert!(ws.closed_within(T), "the hub closed the silent connection");
    let t = hub.wait_status(&tid, "queued", T);
    assert!(
        history_detail(&t, "failed")[0].contains("no heartbeat for 3s"),
        "{t}"
    );
    // The next agent gets it as generation 2.
    let log = root.path().join("exec.log");
    let _s = Sidecar::start(root.path(), &hub, "next", &[], &runner(&log, "0"), "");
    let done = hub.wait_status(&tid, "completed", T);
    assert_eq!(done["generation"], 2);
}

#[test]
fn after_a_hub_restart_an_agent_that_does_not_come_back_loses_its_task() {
    let root = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(root.path(), &fast(&[]));
    let log = root.path().join("exec.log");
    let script = format!("export SLEEP_gone=30\n{}", runner(&log, "0.2"));
    let mut gone = Sidecar::start(root.path(), &hub, "gone", &[], &script, "");
    hub.wait_agent("gone", "idle", T);
    let task = hub.submit(json!({ "title": "orphaned by two crashes" }));
    hub.wait_status(&id(&task), "working", T);
    hub.kill9();
    gone.kill9();
    hub.restart();
    // The restarted hub still knows who held it, and at which generation.
    let held = hub.task(&id(&task));
    assert_eq!(
        (
            held["status"].as_str(),
            held["assigned_to"].as_str(),
            held["generation"].as_u64()
        ),
        (Some("working"), Some("gone"), Some(1))
    );
    assert_eq!(
        hub.agent("gone")["current_task"]["task_id"],
        id(&task).as_str()
    );
    let _next = Sidecar::start(root.path(), &hub, "next", &[], &script, "");
    let done = hub.wait_status(&id(&task), "completed", T);
    assert_eq!(done["generation"], 2);
    assert_eq!(done["assigned_to"], "next");
    assert!(
        history_detail(&done, "failed")
            .iter()
            .any(|d| d.contains("agent offline for 3s")),
        "{done}"
    );
}
