//! The chaos run: 200 tasks, 3 sidecars, and for a minute the hub and the
//! sidecars are `kill -9`ed at random moments. At the end every task is
//! completed, exactly once in its history, by an execution that really ran;
//! the executions beyond one per task are counted and reported.
//!
//! `AGENTCOM_CHAOS_SEED` replays a run; `AGENTCOM_CHAOS_SECONDS` changes
//! its length (default 60).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentcom_tests::chaos::{check_exactly_once, kill_a_sidecar, runner, submitter, Rng};
use agentcom_tests::hub::Hub;
use agentcom_tests::sidecar::Sidecar;
use agentcom_tests::wait_until;

const TASKS: usize = 200;

#[test]
fn chaos_every_task_completes_exactly_once() {
    let (mut rng, seed) = Rng::from_env();
    let seconds: u64 = std::env::var("AGENTCOM_CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    eprintln!("chaos: seed {seed} (AGENTCOM_CHAOS_SEED={seed} replays it), {seconds} s of kills");
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
        std::thread::spawn(move || submitter(vec![url], token, TASKS, ids, pace))
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
            kill_a_sidecar(&mut rng, &mut sidecars);
            sidecar_kills += 1;
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
    let tally = check_exactly_once(&ids, &log, |id| hub.task(id));
    let extra = tally.executions - TASKS;
    let state = hub.state();
    eprintln!(
        "chaos: {TASKS} tasks, 3 sidecars, {hub_kills} hub kill -9, {sidecar_kills} sidecar kill -9 over {:.0} s; \
         {TASKS}/{TASKS} completed, each exactly once in its history; {} executions started \
         ({extra} beyond one per task; {} tasks ran to the end more than once); \
         {} tasks needed more than one assignment (max generation {}); {} stale reports noted; \
         stale_messages {}; total {:.0} s",
        chaos_done.as_secs_f64(),
        tally.executions,
        tally.finished_twice,
        tally.retried,
        tally.max_generation,
        tally.stale_reports,
        state["stale_messages"],
        total_time.as_secs_f64(),
    );
    assert!(
        hub_kills > 0 && sidecar_kills > 0,
        "the run killed both kinds of process"
    );
}
