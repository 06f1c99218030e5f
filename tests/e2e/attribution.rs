//! Failure attribution against the real binaries: who a failure is
//! blamed on (with the evidence in the task's history), the breaker kept
//! across a hub `kill -9`, and late results kept as candidates.

use std::time::Duration;

use agentcom_tests::hub::Hub;
use agentcom_tests::raw::RawSidecar;
use agentcom_tests::sidecar::Sidecar;
use agentcom_tests::wait_until;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

/// Timeouts shrunk for tests (heartbeat timeout 3 s, retries at once),
/// the breaker at its default of three failures.
fn fast(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env = vec![
        ("AGENTCOM_TIMEOUTS__HEARTBEAT_TIMEOUT_S", "3"),
        ("AGENTCOM_TIMEOUTS__ACCEPT_TIMEOUT_S", "2"),
        ("AGENTCOM_TIMEOUTS__SWEEP_INTERVAL_S", "1"),
        ("AGENTCOM_RETRY__BACKOFF_S", "0"),
    ];
    env.extend_from_slice(extra);
    env
}

fn id(t: &Value) -> String {
    t["id"].as_str().unwrap().to_string()
}

/// The history entries of `task` with this event.
fn entries<'a>(task: &'a Value, event: &str) -> Vec<&'a Value> {
    task["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["event"] == event)
        .collect()
}

#[test]
fn tasks_that_always_fail_die_blamed_on_the_task_and_degrade_no_agent() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &fast(&[]));
    // Titles starting with "impossible" always fail; the rest succeed.
    let runner = r#"case "$(sed -n 's/^  "title": "\(.*\)",$/\1/p' "$AGENTCOM_TASK_FILE")" in
  impossible*) echo "the tests of this task can never pass" >&2; exit 1 ;;
esac
echo '{"summary":"done"}' > "$AGENTCOM_RESULT_FILE""#;
    let agents = ["ash", "birch", "cedar"];
    let _sidecars: Vec<Sidecar> = agents
        .iter()
        .map(|a| Sidecar::start(root.path(), &hub, a, &[], runner, ""))
        .collect();
    let started = std::time::Instant::now();
    let impossible: Vec<String> = (0..2)
        .map(|i| id(&hub.submit(json!({ "title": format!("impossible {i}"), "max_retries": 5 }))))
        .collect();
    let fine: Vec<String> = (0..4)
        .map(|i| id(&hub.submit(json!({ "title": format!("fine {i}") }))))
        .collect();
    for t in &fine {
        hub.wait_status(t, "completed", T);
    }
    for t in &impossible {
        let dead = hub.wait_status(t, "dead", T);
        let last = entries(&dead, "dead");
        assert_eq!(last.len(), 1, "{dead}");
        assert_eq!(last[0]["blame"], "task", "{dead}");
        let detail = last[0]["detail"].as_str().unwrap();
        assert!(detail.contains("blamed on the task"), "{detail}");
        assert!(
            detail.contains("and before on"),
            "the evidence names the agents: {detail}"
        );
        // Dead on the second agent, with retries left: two or three
        // attempts (the first agent may have tried twice).
        let attempts = dead["attempts"].as_u64().unwrap();
        assert!((2..=3).contains(&attempts), "{dead}");
        let records = dead["dossier"]["attempts"].as_array().unwrap();
        assert_eq!(records.last().unwrap()["blame"], "task");
    }
    eprintln!(
        "always failing: both impossible tasks dead (blamed on the task) and the 4 others done {} ms after submission",
        started.elapsed().as_millis()
    );
    // The failures were absolved: no agent is degraded or counts them.
    for a in agents {
        let info = wait_until(T, &format!("{a} to count no failure"), || {
            let info = hub.agent(a);
            (info["consecutive_failures"] == 0).then_some(info)
        });
        assert_ne!(info["state"], "degraded", "{info}");
        assert!(info["degraded_until"].is_null(), "{info}");
    }
}

#[test]
fn an_agents_breaker_survives_a_hub_kill_9() {
    let root = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(
        root.path(),
        &fast(&[("AGENTCOM_CIRCUIT__COOLDOWN_S", "600")]),
    );
    let token = hub.add_agent("flaky", &[]);
    let mut ws = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    ws.hello("flaky");
    // Three different tasks fail on it: its own fault each time.
    for i in 0..3 {
        hub.submit(json!({ "title": format!("task {i}"), "max_retries": 0 }));
        let assign = ws.recv_type("assign", T).expect("an assignment");
        let (tid, g) = (assign["task_id"].clone(), assign["generation"].clone());
        ws.send(json!({ "type": "accept", "task_id": tid, "generation": g }));
        ws.send(json!({ "type": "fail", "task_id": tid, "generation": g,
            "error": "my model is broken", "retryable": true }));
        ws.recv_type("ack", T).expect("the failure is acknowledged");
    }
    let before = wait_until(T, "flaky to be degraded", || {
        let a = hub.agent("flaky");
        (a["state"] == "degraded").then_some(a)
    });
    assert_eq!(before["consecutive_failures"], 3);
    assert_eq!(before["degraded_reason"], "3 failures in a row");
    drop(ws);
    hub.kill9();
    hub.restart();
    let after = hub.agent("flaky");
    assert_eq!(after["consecutive_failures"], 3, "{after}");
    assert_eq!(after["degraded_until"], before["degraded_until"], "{after}");
    assert_eq!(after["degraded_reason"], "3 failures in a row");
    // Back online it is still degraded and gets nothing.
    let mut ws = RawSidecar::connect(&hub.ws_url(), &token).unwrap();
    ws.hello("flaky");
    let back = wait_until(T, "flaky to be online", || {
        let a = hub.agent("flaky");
        (a["connected"] == true).then_some(a)
    });
    assert_eq!(back["state"], "degraded", "{back}");
    hub.submit(json!({ "title": "not for flaky" }));
    assert!(ws.recv_type("assign", Duration::from_secs(2)).is_none());
}

/// Heart-beat as an idle sidecar until an assignment comes.
fn assignment_while_alive(ws: &mut RawSidecar) -> Value {
    wait_until(T, "an assignment", || {
        ws.send(json!({ "type": "heartbeat", "state": "idle" }));
        ws.recv_type("assign", Duration::from_millis(500))
    })
}

#[test]
fn a_superseded_attempts_late_result_with_a_branch_is_kept_as_a_candidate() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &fast(&[]));
    let slow_token = hub.add_agent("slow", &[]);
    let mut slow = RawSidecar::connect(&hub.ws_url(), &slow_token).unwrap();
    slow.hello("slow");
    let task = id(&hub.submit(json!({ "title": "race" })));
    let assign = slow.recv_type("assign", T).expect("slow gets it");
    assert_eq!(assign["generation"], 1);
    slow.send(json!({ "type": "accept", "task_id": task, "generation": 1 }));
    hub.wait_status(&task, "working", T);
    // slow goes silent; the hub gives the task to another agent.
    drop(slow);
    let quick_token = hub.add_agent("quick", &[]);
    let mut quick = RawSidecar::connect(&hub.ws_url(), &quick_token).unwrap();
    quick.hello("quick");
    let again = assignment_while_alive(&mut quick);
    assert_eq!(again["generation"], 2);
    quick.send(json!({ "type": "accept", "task_id": task, "generation": 2 }));
    quick
        .send(json!({ "type": "heartbeat", "state": "working", "task_id": task, "generation": 2 }));
    // slow comes back with its finished work for generation 1.
    let mut slow = RawSidecar::connect(&hub.ws_url(), &slow_token).unwrap();
    slow.hello("slow");
    slow.send(
        json!({ "type": "complete", "task_id": task, "generation": 1,
        "result": { "summary": "finished anyway", "branch": "slow/race", "head": "abc123" } }),
    );
    let t = wait_until(T, "the late result to be kept", || {
        let t = hub.task(&task);
        (t["candidates"].as_array().is_some_and(|c| !c.is_empty())).then_some(t)
    });
    let c = &t["candidates"][0];
    assert_eq!(c["generation"], 1);
    assert_eq!(c["agent_id"], "slow");
    assert_eq!(c["branch"], "slow/race");
    assert_eq!(c["head"], "abc123");
    assert_eq!(c["summary"], "finished anyway");
    assert_eq!(t["status"], "working", "the current attempt goes on: {t}");
    assert_eq!(t["assigned_to"], "quick");
    let notes = entries(&t, "stale_report");
    assert!(
        notes.iter().any(|n| n["detail"]
            .as_str()
            .unwrap()
            .contains("kept as a candidate")),
        "{t}"
    );
    // quick finishes; the candidate stays on the task.
    quick.send(
        json!({ "type": "complete", "task_id": task, "generation": 2,
        "result": { "summary": "done" } }),
    );
    let done = hub.wait_status(&task, "completed", T);
    assert_eq!(done["candidates"].as_array().unwrap().len(), 1);
}

/// A runner that copies its task file to `<root>/seen-<task>-<generation>`
/// and succeeds; the title `hold` waits for `<root>/release` first.
fn healthy_runner(root: &std::path::Path) -> String {
    format!(
        r#"cp "$AGENTCOM_TASK_FILE" "{root}/seen-$AGENTCOM_TASK_ID-$AGENTCOM_GENERATION"
if [ "$(sed -n 's/^  "title": "\(.*\)",$/\1/p' "$AGENTCOM_TASK_FILE")" = hold ]; then
  while [ ! -f {root}/release ]; do echo waiting; sleep 0.2; done
fi
echo '{{"summary":"done"}}' > "$AGENTCOM_RESULT_FILE""#,
        root = root.display()
    )
}

/// Milliseconds from `a` to `b` (RFC 3339 times).
fn ms(a: &Value, b: &Value) -> i64 {
    agentcom_tests::hub::millis_between(a.as_str().unwrap(), b.as_str().unwrap())
}

/// The healthy agent is kept busy (`hold`) so the faulty one gets the
/// task first; the hold ends once the fault is on record.
struct Busy {
    hold: String,
}

fn keep_busy(hub: &Hub, agent: &str) -> Busy {
    let hold = id(&hub.submit(json!({ "title": "hold" })));
    wait_until(T, "the hold to be worked on", || {
        let t = hub.task(&hold);
        (t["status"] == "working" && t["assigned_to"] == agent).then_some(())
    });
    Busy { hold }
}

impl Busy {
    fn release(self, hub: &Hub, root: &std::path::Path) {
        std::fs::write(root.join("release"), "").unwrap();
        hub.wait_status(&self.hold, "completed", T);
    }
}

#[test]
fn a_broken_environment_degrades_only_its_agent_and_uses_no_retry() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let hub = Hub::start(r, &fast(&[]));
    let healthy = Sidecar::start(r, &hub, "healthy", &[], &healthy_runner(r), "");
    let busy = keep_busy(&hub, "healthy");
    let broken = Sidecar::start(r, &hub, "broken", &[], "exit 0", "");
    // Its runner cannot be started (its interpreter is missing): the
    // self-test, which looks only for an executable file, passes, and the
    // launch fails. (A runner that is missing altogether is caught by the
    // self-test before any task: tests/e2e/onboarding_hub.rs and
    // sidecar_onboarding.rs.)
    std::fs::write(
        broken.state_dir().parent().unwrap().join("runner.sh"),
        "#!/no/such/interpreter\n",
    )
    .unwrap();
    let task = id(&hub.submit(json!({ "title": "build it", "max_retries": 0 })));
    let failed = wait_until(T, "the environment failure", || {
        let t = hub.task(&task);
        entries(&t, "failed").first().map(|e| (*e).clone())
    });
    assert_eq!(failed["agent_id"], "broken");
    assert_eq!(failed["blame"], "environment", "{failed}");
    assert!(
        failed["detail"].as_str().unwrap().contains("no retry used"),
        "{failed}"
    );
    let b = hub.wait_agent("broken", "degraded", T);
    assert!(
        b["degraded_reason"]
            .as_str()
            .unwrap()
            .starts_with("environment:"),
        "{b}"
    );
    busy.release(&hub, r);
    let done = hub.wait_status(&task, "completed", T);
    assert_eq!(done["assigned_to"], "healthy");
    assert_eq!(
        done["attempts"], 2,
        "two attempts with max_retries 0: the first was free"
    );
    assert_eq!(done["free_attempts"], 1);
    let h = hub.agent("healthy");
    assert_eq!(h["consecutive_failures"], 0);
    assert_ne!(h["state"], "degraded");
    eprintln!(
        "environment: routed around in {} ms (failure on broken -> completed on healthy, including the hold's release)",
        ms(&failed["at"], &done["finished_at"])
    );
    drop(healthy);
}

#[test]
fn a_rate_limited_agent_is_held_back_and_the_task_done_elsewhere() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let hub = Hub::start(r, &fast(&[]));
    let _healthy = Sidecar::start(r, &hub, "healthy", &[], &healthy_runner(r), "");
    let busy = keep_busy(&hub, "healthy");
    let _limited = Sidecar::start(
        r,
        &hub,
        "limited",
        &[],
        r#"echo '{"rate_limited": true, "retry_after_s": 120, "error": "429 from the model provider"}' > "$AGENTCOM_RESULT_FILE"; exit 1"#,
        "",
    );
    let task = id(&hub.submit(json!({ "title": "write docs", "max_retries": 0 })));
    let failed = wait_until(T, "the rate limit", || {
        let t = hub.task(&task);
        entries(&t, "failed").first().map(|e| (*e).clone())
    });
    assert_eq!(failed["agent_id"], "limited");
    assert_eq!(failed["blame"], "rate_limit", "{failed}");
    let l = hub.wait_agent("limited", "degraded", T);
    assert_eq!(l["consecutive_failures"], 0, "no failure counted: {l}");
    assert_eq!(l["degraded_reason"], "rate limited: retry after 120s");
    let held_for = ms(&failed["at"], &l["degraded_until"]);
    assert!(
        (119_000..=121_000).contains(&held_for),
        "held for {held_for} ms"
    );
    busy.release(&hub, r);
    let done = hub.wait_status(&task, "completed", T);
    assert_eq!(done["assigned_to"], "healthy");
    assert_eq!(done["attempts"], 2);
    eprintln!(
        "rate limit: routed around in {} ms (rate limited -> completed elsewhere, including the hold's release)",
        ms(&failed["at"], &done["finished_at"])
    );
}

#[test]
fn a_silent_runner_stalls_and_its_task_completes_elsewhere_with_the_stall_in_its_dossier() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let hub = Hub::start(
        r,
        &fast(&[
            ("AGENTCOM_TIMEOUTS__STALL_S", "2"),
            ("AGENTCOM_TIMEOUTS__STALL_KILL_S", "4"),
        ]),
    );
    let _healthy = Sidecar::start(r, &hub, "healthy", &[], &healthy_runner(r), "");
    let busy = keep_busy(&hub, "healthy");
    // Alive, heart-beating, and doing nothing at all.
    let _hung = Sidecar::start(r, &hub, "hung", &[], "exec sleep 600", "");
    let task = id(&hub.submit(json!({ "title": "refactor" })));
    hub.wait_status(&task, "working", T);
    let stalled = wait_until(T, "hung to be stalled", || {
        let a = hub.agent("hung");
        (a["state"] == "stalled").then_some(a)
    });
    let alerts = hub.ok("GET", "/api/alerts", None);
    assert!(
        alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["alert"] == "task_stalled" && a["subject"] == task.as_str()),
        "{alerts}"
    );
    assert_eq!(
        hub.state()["agents"]["stalled"],
        1,
        "stalled in the state counts"
    );
    // The healthy agent is free before the stalled attempt is given up,
    // so the task goes to it, not back to the silent one.
    busy.release(&hub, r);
    let failed = wait_until(T, "the stalled attempt to be failed", || {
        let t = hub.task(&task);
        entries(&t, "failed").first().map(|e| (*e).clone())
    });
    assert_eq!(failed["agent_id"], "hung");
    assert_eq!(failed["blame"], "agent");
    assert!(
        failed["detail"].as_str().unwrap().contains("stalled"),
        "{failed}"
    );
    let done = hub.wait_status(&task, "completed", T);
    assert_eq!(done["assigned_to"], "healthy");
    // What the next runner saw: the stalled attempt in its dossier.
    let seen =
        std::fs::read_to_string(r.join(format!("seen-{task}-{}", done["generation"]))).unwrap();
    let seen: Value = serde_json::from_str(&seen).unwrap();
    let records = seen["dossier"]["attempts"].as_array().expect("a dossier");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["agent_id"], "hung");
    assert_eq!(records[0]["blame"], "agent");
    assert!(records[0]["error"].as_str().unwrap().contains("stalled"));
    eprintln!(
        "stall: stalled after {} ms, routed around in {} ms (stall kill -> completed elsewhere); the next runner's dossier: {}",
        ms(&done["history"].as_array().unwrap().iter().find(|h| h["event"] == "accepted").unwrap()["at"], &stalled["state_since"]),
        ms(&failed["at"], &done["finished_at"]),
        seen["dossier"]
    );
}
