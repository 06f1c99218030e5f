//! `kill -9` of the hub never loses a task it answered 201 for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentcom_tests::hub::Hub;
use agentcom_tests::wait_until;
use serde_json::json;

#[test]
fn every_acknowledged_create_survives_kill_9() {
    let root = tempfile::tempdir().unwrap();
    let mut hub = Hub::start(root.path(), &[]);
    let mut acknowledged: Vec<String> = Vec::new();
    for cycle in 0..5 {
        let acked = Arc::new(Mutex::new(Vec::<String>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        // Writer 0 kills the hub the moment it has an answer once this is
        // set: its last acknowledged task was answered microseconds
        // before, so it must have been durable when it was answered.
        let kill = Arc::new(AtomicBool::new(false));
        let pid = nix::unistd::Pid::from_raw(hub.pid().expect("the hub runs") as i32);
        // Writers 0–3 create; writer 4 repeats one create with the same
        // idempotency key, which after the first changes nothing: a reply
        // that waits its turn behind the creates' groups and must not
        // overtake them.
        let writers: Vec<_> = (0..5)
            .map(|w| {
                let (url, token, acked, stop, kill) = (
                    hub.url.clone(),
                    hub.token.clone(),
                    acked.clone(),
                    stop.clone(),
                    kill.clone(),
                );
                std::thread::spawn(move || {
                    let http: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(5)))
                        .build()
                        .into();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let body = if w == 4 {
                            json!({ "title": "again", "idempotency_key": format!("again-{cycle}") })
                        } else {
                            json!({ "title": format!("c{cycle}-w{w}-{n}") })
                        };
                        match http
                            .post(format!("{url}/api/tasks"))
                            .header("Authorization", format!("Bearer {token}"))
                            .send_json(&body)
                        {
                            Ok(mut r) if r.status() == 201 || (w == 4 && r.status() == 200) => {
                                let v: serde_json::Value = r.body_mut().read_json().unwrap();
                                acked
                                    .lock()
                                    .unwrap()
                                    .push(v["id"].as_str().unwrap().to_string());
                                if w == 0 && kill.load(Ordering::Relaxed) {
                                    // Our child, not yet reaped: the pid is still its.
                                    let _ = nix::sys::signal::kill(
                                        pid,
                                        nix::sys::signal::Signal::SIGKILL,
                                    );
                                    stop.store(true, Ordering::Relaxed);
                                }
                            }
                            // The hub died mid-request: not acknowledged, may or may not
                            // exist. A short pause before trying again (pacing, not waiting
                            // for anything: the loop ends when told to stop).
                            _ => std::thread::sleep(Duration::from_millis(5)),
                        }
                    }
                })
            })
            .collect();
        // Let writes flow until some are acknowledged (a different number
        // each cycle, so the kill lands at a different point; the wait
        // fails the test if none are), then kill the hub in the middle of
        // them, right after an answer: the writers are still sending.
        let flowing = 20 + 15 * cycle;
        wait_until(
            Duration::from_secs(20),
            &format!("cycle {cycle}: {flowing} acknowledged creates"),
            || (acked.lock().unwrap().len() >= flowing).then_some(()),
        );
        kill.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        hub.kill9(); // reaps it (writer 0 killed it)
        let got = acked.lock().unwrap().clone();
        acknowledged.extend(got);
        hub.restart();
        let present: std::collections::HashSet<String> = hub
            .tasks(None)
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect();
        let lost: Vec<&String> = acknowledged
            .iter()
            .filter(|id| !present.contains(*id))
            .collect();
        assert!(
            lost.is_empty(),
            "cycle {cycle}: {} acknowledged task(s) lost after kill -9: {lost:?}",
            lost.len()
        );
        // Each one is intact, with its history.
        let sample = &acknowledged[acknowledged.len() / 2];
        let t = hub.task(sample);
        assert_eq!(t["status"], "queued");
        assert_eq!(t["history"][0]["event"], "created");
    }
    eprintln!(
        "durability: {} acknowledged creates across 5 kill -9 cycles, none lost",
        acknowledged.len()
    );
}

#[test]
fn concurrent_writes_share_syncs() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::start(root.path(), &[]);
    hub.submit_concurrently(8, 50, "w");
    let store = &hub.state()["store"];
    let (syncs, writes) = (
        store["syncs"].as_u64().unwrap(),
        store["writes"].as_u64().unwrap(),
    );
    assert_eq!(writes, 400, "one durable write per create");
    eprintln!("group commit: 400 creates from 8 concurrent clients made durable in {syncs} syncs");
    assert!(
        syncs < writes,
        "concurrent creates shared syncs ({syncs} syncs for {writes} writes)"
    );
}
