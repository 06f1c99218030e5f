//! What the chaos runs share (`e2e/chaos.rs`: one hub; `e2e/ha.rs`: two
//! hubs on one PostgreSQL): a seeded random source, the runner that logs
//! every execution, a submitter that retries through outages, and the
//! check that every task completed exactly once, by a real execution.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

/// xorshift64*: small, seeded, reproducible.
pub struct Rng(pub u64);

impl Rng {
    /// Seeded from `AGENTCOM_CHAOS_SEED`, else the clock (printed by the
    /// caller so a run can be replayed).
    pub fn from_env() -> (Rng, u64) {
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
        (Rng(seed), seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

/// Kill one of `sidecars` at random with `kill -9`, leave it down for up
/// to two seconds (a random outage, in real time on purpose), and start it
/// again.
pub fn kill_a_sidecar(rng: &mut Rng, sidecars: &mut [crate::sidecar::Sidecar]) {
    let i = rng.below(sidecars.len() as u64) as usize;
    sidecars[i].kill9();
    std::thread::sleep(rng.millis(0, 2000));
    sidecars[i].restart();
}

/// A runner for task `chaos N`: sleeps (N % 10) / 10 s, logging `start`
/// and `done` lines to `log`, and answers with its agent and generation.
pub fn runner(log: &Path) -> String {
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

/// Submit `count` tasks `chaos N` at a steady pace, each with an
/// idempotency key, retrying through outages exactly as a careful client
/// would: on no answer or anything but 201/200 it tries the next of
/// `urls` shortly after. Acknowledged ids go into `ids` by N.
pub fn submitter(
    urls: Vec<String>,
    token: String,
    count: usize,
    ids: Arc<Mutex<BTreeMap<usize, String>>>,
    pace: Duration,
) {
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(3)))
        .build()
        .into();
    let mut at = 0;
    for n in 0..count {
        let body =
            json!({ "title": format!("chaos {n}"), "idempotency_key": format!("chaos-{n}") });
        loop {
            let sent = http
                .post(format!("{}/api/tasks", urls[at % urls.len()]))
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
            // That hub is down, busy or standing by: the next, shortly.
            at += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        // Pacing the load on purpose: tasks keep arriving during the chaos.
        std::thread::sleep(pace);
    }
}

/// What the check found beyond "every task completed exactly once".
pub struct Tally {
    /// Executions started, over all tasks.
    pub executions: usize,
    /// Tasks whose runner finished more than once.
    pub finished_twice: usize,
    /// Tasks that needed more than one assignment, and the most any did.
    pub retried: usize,
    pub max_generation: u64,
    pub stale_reports: usize,
}

/// Every task of `ids` is completed, with exactly one completion in its
/// history, and its recorded result came from an execution that really
/// ran (the runner's `log`) on the agent and generation the task names.
pub fn check_exactly_once(ids: &[String], log: &Path, task: impl Fn(&str) -> Value) -> Tally {
    let text = std::fs::read_to_string(log).unwrap();
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
    for id in ids {
        let t = task(id);
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
    Tally {
        executions: starts.values().sum(),
        finished_twice: done_count.values().filter(|n| **n > 1).count(),
        retried: generations.iter().filter(|g| **g > 1).count(),
        max_generation: generations.iter().copied().max().unwrap_or(0),
        stale_reports,
    }
}
