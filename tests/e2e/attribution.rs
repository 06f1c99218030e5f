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
    quick.send(json!({ "type": "heartbeat", "state": "working", "task_id": task, "generation": 2 }));
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
