//! Scheduling inputs against the real binaries: context windows said in
//! `hello` against task budgets, daily token budgets from results'
//! `tokens_used` (and `cost_usd`, summed in `/api/state` and `/metrics`),
//! and the fleet cap `scheduler.max_concurrent` under load.

use std::path::Path;
use std::time::Duration;

use agentcom_tests::browser::Browser;
use agentcom_tests::hub::Hub;
use agentcom_tests::sidecar::Sidecar;
use agentcom_tests::wait_until;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

fn fast(more: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env = vec![
        ("AGENTCOM_TIMEOUTS__HEARTBEAT_TIMEOUT_S", "3"),
        ("AGENTCOM_TIMEOUTS__SWEEP_INTERVAL_S", "1"),
    ];
    env.extend_from_slice(more);
    env
}

fn id(t: &Value) -> String {
    t["id"].as_str().unwrap().to_string()
}

fn reasons(hub: &Hub, task: &str) -> Vec<String> {
    let why = hub.ok("GET", &format!("/api/tasks/{task}/explain"), None);
    why["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

/// Waits for `<root>/release` when the task's title is `hold`, then
/// reports `tokens_used` and `cost_usd`.
fn runner(root: &Path, tokens: u64, cost: f64) -> String {
    format!(
        r#"if [ "$(sed -n 's/^  "title": "\(.*\)",$/\1/p' "$AGENTCOM_TASK_FILE")" = hold ]; then
  while [ ! -f {root}/release ]; do sleep 0.1; done
fi
echo '{{"summary":"done","tokens_used":{tokens},"cost_usd":{cost}}}' > "$AGENTCOM_RESULT_FILE""#,
        root = root.display()
    )
}

#[test]
fn a_big_context_task_waits_for_a_big_context_agent() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let hub = Hub::start(r, &fast(&[]));
    let run = runner(r, 0, 0.0);
    let _small = Sidecar::start_with_top(
        r,
        &hub,
        "small",
        &[],
        &run,
        "context_window_tokens = 32000\n",
    );
    let _unsaid = Sidecar::start(r, &hub, "unsaid", &[], &run, "");
    hub.wait_agent("small", "idle", T);
    hub.wait_agent("unsaid", "idle", T);
    assert_eq!(hub.agent("small")["context_window_tokens"], 32000);

    let big = id(&hub.submit(json!({ "title": "big", "context_budget_tokens": 100000 })));
    // A task without a budget behind it is not blocked.
    let plain = id(&hub.submit(json!({ "title": "plain" })));
    hub.wait_status(&plain, "completed", T);
    let why = wait_until(T, "explain naming the small window", || {
        let why = reasons(&hub, &big);
        why.contains(&"Agent small's context window (32000 tokens) is smaller than the task's budget (100000).".to_string())
            .then_some(why)
    });
    assert!(
        why.iter()
            .any(|s| s.starts_with("Agent unsaid reports no context window")),
        "{why:?}"
    );
    assert_eq!(hub.task(&big)["status"], "queued");
    hub.wait_agent("small", "idle", T);
    hub.wait_agent("unsaid", "idle", T);

    let _big = Sidecar::start_with_top(
        r,
        &hub,
        "large",
        &[],
        &run,
        "context_window_tokens = 200000\n",
    );
    let done = hub.wait_status(&big, "completed", T);
    assert_eq!(done["assigned_to"], "large");
}

#[test]
fn an_agent_over_its_daily_tokens_is_skipped_while_another_takes_the_work() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let mut hub = Hub::start(
        r,
        &fast(&[("AGENTCOM_BUDGETS__AGENT_DAILY_TOKENS", "1000")]),
    );
    let run = runner(r, 1000, 0.25);
    let _spender = Sidecar::start(r, &hub, "spender", &[], &run, "");
    hub.wait_agent("spender", "idle", T);

    let first = id(&hub.submit(json!({ "title": "first" })));
    let done = hub.wait_status(&first, "completed", T);
    assert_eq!(done["assigned_to"], "spender");
    let usage = wait_until(T, "usage in /api/state", || {
        let s = hub.state();
        (s["usage"]["agents"]["spender"]["tokens"] == 1000).then(|| s["usage"].clone())
    });
    assert_eq!(usage["agents"]["spender"]["cost_usd"], 0.25);
    let day = usage["day"].as_str().unwrap();
    assert_eq!(day.len(), 10, "{day}");
    assert!(
        done["updated_at"].as_str().unwrap().starts_with(day),
        "the UTC day: {day} {done}"
    );
    let metrics = hub.metrics();
    assert!(
        metrics.contains("agentcom_tokens_total{agent=\"spender\"} 1000"),
        "{metrics}"
    );
    assert!(
        metrics.contains("agentcom_cost_usd_total{agent=\"spender\"} 0.25"),
        "{metrics}"
    );

    // The dashboard's agent card shows the day's spending and the window.
    let mut b = Browser::launch(r, 1200, 900);
    b.goto(&format!("{}/dashboard", hub.url));
    b.wait_for("!document.querySelector('#sign-in').hidden", T);
    b.eval(&format!(
        "document.querySelector('#token').value = {:?}; document.querySelector('#sign-in-form').requestSubmit(); true",
        hub.token
    ));
    let text = b.wait_for(
        "(t => t && t.includes('today 1,000 tokens · $0.25') && t)(document.querySelector('[data-agent=\"spender\"] [data-field=\"usage\"]')?.textContent)",
        T,
    );
    assert!(
        text.as_str().unwrap().contains("no context window said"),
        "{text}"
    );

    hub.wait_agent("spender", "idle", T);
    let second = id(&hub.submit(json!({ "title": "second" })));
    wait_until(T, "explain naming the spent budget", || {
        reasons(&hub, &second)
            .iter()
            .any(|s| s.starts_with("Agent spender spent its daily tokens (1000 of 1000)"))
            .then_some(())
    });
    assert_eq!(hub.task(&second)["status"], "queued");
    assert_eq!(hub.agent("spender")["state"], "idle");

    // The day's usage is kept across a hub kill -9: spender stays held.
    hub.kill9();
    hub.restart();
    let usage = hub.state()["usage"].clone();
    assert_eq!(usage["agents"]["spender"]["tokens"], 1000, "{usage}");
    hub.wait_agent("spender", "idle", T);
    wait_until(T, "explain naming the spent budget after a restart", || {
        reasons(&hub, &second)
            .iter()
            .any(|s| s.starts_with("Agent spender spent its daily tokens (1000 of 1000)"))
            .then_some(())
    });
    assert_eq!(hub.task(&second)["status"], "queued");

    let _fresh = Sidecar::start(r, &hub, "fresh", &[], &run, "");
    let done = hub.wait_status(&second, "completed", T);
    assert_eq!(done["assigned_to"], "fresh");
}

#[test]
fn the_fleet_cap_holds_under_load() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    // A sweep every minute: a finished task must free its place at once,
    // not at the next sweep.
    let hub = Hub::start(
        r,
        &[
            ("AGENTCOM_SCHEDULER__MAX_CONCURRENT", "2"),
            ("AGENTCOM_TIMEOUTS__SWEEP_INTERVAL_S", "60"),
        ],
    );
    let run = runner(r, 10, 0.0);
    let _s: Vec<Sidecar> = (0..4)
        .map(|i| Sidecar::start(r, &hub, &format!("a{i}"), &[], &run, ""))
        .collect();
    for i in 0..4 {
        hub.wait_agent(&format!("a{i}"), "idle", T);
    }
    let ids: Vec<String> = (0..10)
        .map(|_| id(&hub.submit(json!({ "title": "hold" }))))
        .collect();
    let out = |hub: &Hub| -> u64 {
        let s = hub.state();
        let n = s["tasks"]["assigned"].as_u64().unwrap_or(0)
            + s["tasks"]["working"].as_u64().unwrap_or(0);
        assert!(n <= 2, "more than the cap out at once: {s}");
        n
    };
    wait_until(T, "two tasks working", || {
        let s = hub.state();
        (out(&hub) == 2 && s["tasks"]["working"] == 2).then_some(())
    });
    let queued = hub.tasks(Some("queued"));
    assert_eq!(queued.len(), 8);
    let why = reasons(&hub, &id(&queued[0]));
    assert!(
        why.contains(
            &"The fleet cap (scheduler.max_concurrent = 2) is reached: 2 tasks are out."
                .to_string()
        ),
        "{why:?}"
    );
    // Two agents stay idle while the cap holds.
    let idle = hub.state()["agents"]["idle"].as_u64().unwrap_or(0);
    assert_eq!(idle, 2);

    std::fs::write(r.join("release"), "").unwrap();
    wait_until(T, "all ten completed, never more than two out", || {
        out(&hub);
        let done = ids
            .iter()
            .filter(|t| hub.task(t)["status"] == "completed")
            .count();
        (done == ids.len()).then_some(())
    });
}
