//! The chaos run: 200 tasks, 3 sidecars, and for a minute the hub and the
//! sidecars are `kill -9`ed at random moments. At the end every task is
//! completed, exactly once in its history, by an execution that really ran;
//! the executions beyond one per task are counted and reported.
//!
//! `AGENTCOM_CHAOS_SEED` replays a run; `AGENTCOM_CHAOS_SECONDS` changes
//! its length (default 60).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentcom_tests::hub::Hub;
use agentcom_tests::sidecar::Sidecar;
use agentcom_tests::wait_until;
use serde_json::{json, Value};

const TASKS: usize = 200;

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

/// Each task sleeps (n % 10) / 10 s, logging `start` and `done` lines.
fn runner(log: &Path) -> String {
    format!(
        r#"log={log}
n=$(sed -n 's/^  "title": "chaos \([0-9]*\)",$/\1/p' "$AGENTCOM_TASK_FILE")
echo "start $AGENTCOM_TASK_ID $AGENTCOM_GENERATION $AGENTCOM_AGENT_ID" >> $log
sleep 0.$(( n % 10 ))
echo "done $AGENTCOM_TASK_ID $AGENTCOM_GENERATION $AGENTCOM_AGENT_ID" >> $log
printf '{{"summary":"%s %s"}}' "$AGENTCOM_AGENT_ID" "$AGENTCOM_GENERATION" > "$AGENTCOM_RESULT_FILE""#,
        log = log.display()
    )
}

/// Submit the tasks at a steady pace, each with an idempotency key, retrying
/// through hub outages exactly as a careful client would.
fn submitter(url: String, token: String, ids: Arc<Mutex<BTreeMap<usize, String>>>, pace: Duration) {
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(3)))
        .build()
        .into();
    for n in 0..TASKS {
        let body =
            json!({ "title": format!("chaos {n}"), "idempotency_key": format!("chaos-{n}") });
        loop {
            let sent = http
                .post(format!("{url}/api/tasks"))
                .header("Authorization", format!("Bearer {token}"))
                .send_json(&body);
            if let Ok(mut r) = sent {
                if r.status() == 201 || r.status() == 200 {
                    let v: Value = r.body_mut().read_json().unwrap();
                    ids.lock()
                        .unwrap()
                        .insert(n, v["id"].as_str().unwrap().to_string());
                    break;
                }
            }
            // The hub is down or busy: try again shortly (a client's retry).
            std::thread::sleep(Duration::from_millis(100));
        }
        // Pacing the load on purpose: tasks keep arriving during the chaos.
        std::thread::sleep(pace);
    }
}

#[test]
fn chaos_every_task_completes_exactly_once() {
    let seed: u64 = std::env::var("AGENTCOM_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let seconds: u64 = std::env::var("AGENTCOM_CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    eprintln!("chaos: seed {seed} (AGENTCOM_CHAOS_SEED={seed} replays it), {seconds} s of kills");
    let mut rng = Rng(seed);
    let started = Instant::now();

    let root = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(
        root.path(),
        &[
            ("AGENTCOM_TIMEOUTS__HEARTBEAT_TIMEOUT_S", "2"),
            ("AGENTCOM_TIMEOUTS__ACCEPT_TIMEOUT_S", "2"),
            ("AGENTCOM_TIMEOUTS__SWEEP_INTERVAL_S", "1"),
            ("AGENTCOM_RETRY__MAX_RETRIES", "100"),
            ("AGENTCOM_RETRY__BACKOFF_S", "0"),
            ("AGENTCOM_CIRCUIT__FAILURES", "5"),
            ("AGENTCOM_CIRCUIT__COOLDOWN_S", "2"),
        ],
    );
    let log = root.path().join("executions.log");
    let mut sidecars: Vec<Sidecar> = ["s1", "s2", "s3"]
        .iter()
        .map(|id| Sidecar::start(root.path(), &hub, id, &[], &runner(&log), ""))
        .collect();

    let ids = Arc::new(Mutex::new(BTreeMap::new()));
    let pace = Duration::from_millis(seconds * 1000 * 2 / 3 / TASKS as u64);
    let submit = {
        let (url, token, ids) = (hub.url.clone(), hub.token.clone(), ids.clone());
        std::thread::spawn(move || submitter(url, token, ids, pace))
    };

    let (mut hub_kills, mut sidecar_kills) = (0, 0);
    let chaos_end = Instant::now() + Duration::from_secs(seconds);
    // The sleeps below are the chaos itself: random moments to kill at, and
    // random outages, in real time on purpose.
    while Instant::now() < chaos_end {
        std::thread::sleep(rng.millis(500, 2500));
        if rng.below(4) == 0 {
            hub.kill9();
            hub_kills += 1;
            std::thread::sleep(rng.millis(100, 1500));
            hub.restart();
        } else {
            let i = rng.below(sidecars.len() as u64) as usize;
            sidecars[i].kill9();
            sidecar_kills += 1;
            std::thread::sleep(rng.millis(0, 2000));
            sidecars[i].restart();
        }
    }
    let chaos_done = started.elapsed();
    submit.join().unwrap();
    let ids: Vec<String> = ids.lock().unwrap().values().cloned().collect();
    assert_eq!(ids.len(), TASKS);
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        TASKS,
        "one task per idempotency key"
    );

    // Everything is up again: all tasks must complete.
    wait_until(
        Duration::from_secs(180),
        "every chaos task to complete",
        || (hub.tasks(Some("completed")).len() == TASKS).then_some(()),
    );
    let total_time = started.elapsed();

    // Exactly one completion in each history, matching a real execution.
    let text = std::fs::read_to_string(&log).unwrap();
    let mut starts: HashMap<String, usize> = HashMap::new();
    let mut dones: HashSet<(String, String, String)> = HashSet::new();
    let mut done_count: HashMap<String, usize> = HashMap::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.len() != 4 {
            continue;
        }
        match parts[0] {
            "start" => *starts.entry(parts[1].to_string()).or_default() += 1,
            "done" => {
                dones.insert((
                    parts[1].to_string(),
                    parts[2].to_string(),
                    parts[3].to_string(),
                ));
                *done_count.entry(parts[1].to_string()).or_default() += 1;
            }
            _ => {}
        }
    }
    let mut stale_reports = 0;
    let mut generations = Vec::new();
    for id in &ids {
        let t = hub.task(id);
        assert_eq!(t["status"], "completed", "{t}");
        let hist = t["history"].as_array().unwrap();
        let completions = hist.iter().filter(|h| h["event"] == "completed").count();
        assert_eq!(
            completions, 1,
            "task {id} completed {completions} times in its history"
        );
        stale_reports += hist.iter().filter(|h| h["event"] == "stale_report").count();
        let (agent, generation) = {
            let s = t["result"]["summary"].as_str().unwrap();
            let (a, g) = s.split_once(' ').unwrap();
            (a.to_string(), g.to_string())
        };
        assert_eq!(t["assigned_to"].as_str(), Some(agent.as_str()));
        assert_eq!(t["generation"].to_string(), generation);
        assert!(
            dones.contains(&(id.clone(), generation.clone(), agent.clone())),
            "task {id}: the recorded result came from a real run"
        );
        generations.push(t["generation"].as_u64().unwrap());
    }
    let executions: usize = starts.values().sum();
    let extra = executions - TASKS;
    let finished_twice = done_count.values().filter(|n| **n > 1).count();
    let retried = generations.iter().filter(|g| **g > 1).count();
    let state = hub.state();
    eprintln!(
        "chaos: {TASKS} tasks, 3 sidecars, {hub_kills} hub kill -9, {sidecar_kills} sidecar kill -9 over {:.0} s; \
         {TASKS}/{TASKS} completed, each exactly once in its history; {executions} executions started \
         ({extra} beyond one per task; {finished_twice} tasks ran to the end more than once); \
         {retried} tasks needed more than one assignment (max generation {}); {stale_reports} stale reports noted; \
         stale_messages {}; total {:.0} s",
        chaos_done.as_secs_f64(),
        generations.iter().max().unwrap(),
        state["stale_messages"],
        total_time.as_secs_f64(),
    );
    assert!(
        hub_kills > 0 && sidecar_kills > 0,
        "the run killed both kinds of process"
    );
}
