//! `agentcom-loadgen`: measure the hub under load.
//!
//! Starts a real hub (the binaries of this build profile: run it with
//! `cargo run --release -p agentcom-tests --bin agentcom-loadgen`), connects
//! `--agents` fake agents over the real WebSocket protocol (they accept and
//! complete each assignment at once, so the hub is what is measured), and
//! runs two phases:
//!
//! 1. latency: `--probes` tasks submitted one at a time while agents are
//!    idle; created → assigned from each task's history, and submit →
//!    completed as the client sees it;
//! 2. throughput: `--tasks` tasks from `--submitters` concurrent clients;
//!    creates/s, completions/s, group commit (syncs per write), events/s on
//!    an `/api/events` reader, protocol messages per task, hub memory.
//!
//! Prints a Markdown summary (for docs/benchmarks.md). `AGENTCOM_*`
//! variables are passed to the hub (`AGENTCOM_EVENTS__REPLAY=100`, …).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentcom_tests::hub::{millis_between, Hub};
use agentcom_tests::raw::RawSidecar;
use agentcom_tests::sse::SseClient;
use agentcom_tests::wait_until;
use serde_json::{json, Value};

struct Args {
    agents: usize,
    tasks: usize,
    submitters: usize,
    probes: usize,
}

fn args() -> Args {
    let mut a = Args {
        agents: 50,
        tasks: 5000,
        submitters: 8,
        probes: 200,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = || {
            argv.get(i + 1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{} needs a number", argv[i]))
        };
        match argv[i].as_str() {
            "--agents" => a.agents = v(),
            "--tasks" => a.tasks = v(),
            "--submitters" => a.submitters = v(),
            "--probes" => a.probes = v(),
            "-h" | "--help" => {
                println!("agentcom-loadgen [--agents N] [--tasks N] [--submitters N] [--probes N]");
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

/// A fake agent: accept and complete every assignment at once.
fn fake_agent(hub_ws: String, id: String, token: String, stop: Arc<AtomicBool>) {
    let mut ws = RawSidecar::connect(&hub_ws, &token).expect("connect");
    ws.hello(&id);
    let mut last_beat = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Some(m) = ws.recv(Duration::from_millis(200)) {
            if m["type"] == "assign" {
                let (t, g) = (m["task_id"].clone(), m["generation"].clone());
                ws.send(json!({ "type": "accept", "task_id": t, "generation": g }));
                ws.send(json!({ "type": "complete", "task_id": t, "generation": g, "result": { "summary": "done" } }));
            }
        }
        if last_beat.elapsed() > Duration::from_secs(10) {
            ws.send(json!({ "type": "heartbeat", "state": "idle" }));
            last_beat = Instant::now();
        }
    }
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn main() {
    let a = args();
    let root = tempfile::tempdir().unwrap();
    // Hub settings pass through: AGENTCOM_* variables set for this run.
    let passed: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("AGENTCOM_") && k != "AGENTCOM_ADMIN_TOKEN")
        .collect();
    let mut env: Vec<(&str, &str)> = passed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.push(("AGENTCOM_TEST_LOG", "warn"));
    let hub = Hub::start(root.path(), &env);
    let pid = hub.pid().unwrap();
    let rss_idle = rss_mib(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let agents: Vec<_> = (0..a.agents)
        .map(|i| {
            let id = format!("load{i}");
            let token = hub.add_agent(&id, &[]);
            let (ws, stop) = (hub.ws_url(), stop.clone());
            std::thread::spawn(move || fake_agent(ws, id, token, stop))
        })
        .collect();
    wait_until(Duration::from_secs(60), "all fake agents idle", || {
        (hub.state()["agents"]["idle"].as_u64() == Some(a.agents as u64)).then_some(())
    });
    let rss_connected = rss_mib(pid);

    // Phase 1: latency with idle agents.
    let mut assign_ms = Vec::new();
    let mut e2e_ms = Vec::new();
    for n in 0..a.probes {
        let t = hub.submit(json!({ "title": format!("probe {n}") }));
        let id = t["id"].as_str().unwrap().to_string();
        let done = wait_until(Duration::from_secs(10), "a probe to complete", || {
            let v = hub.task(&id);
            (v["status"] == "completed").then_some(v)
        });
        let h = done["history"].as_array().unwrap();
        let at = |ev: &str| {
            h.iter().find(|x| x["event"] == ev).unwrap()["at"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assign_ms.push(millis_between(&at("created"), &at("assigned")) as f64);
        e2e_ms.push(millis_between(&at("created"), &at("completed")) as f64);
    }

    // Phase 2: throughput.
    let before = hub.state();
    let events = Arc::new(AtomicU64::new(0));
    {
        let (client, events, stop) = (SseClient::connect(&hub, None), events.clone(), stop.clone());
        std::thread::spawn(move || {
            for _ in client {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                events.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let started = Instant::now();
    let per = a.tasks / a.submitters;
    hub.submit_concurrently(a.submitters, per, "load");
    let submitted_in = started.elapsed();
    let total = (per * a.submitters + a.probes) as u64;
    wait_until(Duration::from_secs(600), "all tasks to complete", || {
        (hub.state()["tasks"]["completed"].as_u64() == Some(total)).then_some(())
    });
    let all_done = started.elapsed();
    let after = hub.state();
    let rss_loaded = rss_mib(pid);
    let http: ureq::Agent = ureq::Agent::config_builder().build().into();
    let scrape = http
        .get(format!("{}/metrics", hub.url))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    stop.store(true, Ordering::Relaxed);

    let n = (per * a.submitters) as f64;
    let syncs =
        after["store"]["syncs"].as_u64().unwrap() - before["store"]["syncs"].as_u64().unwrap();
    let writes =
        after["store"]["writes"].as_u64().unwrap() - before["store"]["writes"].as_u64().unwrap();
    let lat: &Value = &after["assignment_latency_ms"];
    let profile = if std::env::current_exe()
        .unwrap()
        .to_string_lossy()
        .contains("/release/")
    {
        "release"
    } else {
        "debug"
    };
    println!(
        "## agentcom-loadgen: {} fake agents, {} tasks from {} clients ({profile} build)\n",
        a.agents,
        per * a.submitters,
        a.submitters
    );
    println!("| measure | value |\n| --- | --- |");
    println!("| created → assigned, idle agents (history, {} probes) | p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms |", a.probes,
        percentile(&mut assign_ms, 0.5), percentile(&mut assign_ms, 0.99), percentile(&mut assign_ms, 1.0));
    println!("| created → completed, idle agents (history: assign, accept, complete, all durable) | p50 {:.0} ms, p99 {:.0} ms |",
        percentile(&mut e2e_ms, 0.5), percentile(&mut e2e_ms, 0.99));
    println!(
        "| creates (201, durable) | {:.0} /s |",
        n / submitted_in.as_secs_f64()
    );
    println!(
        "| completions, end to end | {:.0} /s ({} tasks in {:.1} s) |",
        n / all_done.as_secs_f64(),
        per * a.submitters,
        all_done.as_secs_f64()
    );
    println!(
        "| group commit | {writes} task writes in {syncs} syncs ({:.1} writes per sync) |",
        writes as f64 / syncs.max(1) as f64
    );
    println!(
        "| queued → assigned under load (last 10k) | p50 {} ms, p99 {} ms |",
        lat["p50_ms"], lat["p99_ms"]
    );
    println!(
        "| events on one /api/events reader | {} in {:.1} s ({:.0} /s) |",
        events.load(Ordering::Relaxed),
        all_done.as_secs_f64(),
        events.load(Ordering::Relaxed) as f64 / all_done.as_secs_f64()
    );
    println!(
        "| protocol messages per completed task | {:.1} ({:.0} bytes) |",
        metric(&scrape, "agentcom_protocol_messages_per_completed_task"),
        metric(
            &scrape,
            "agentcom_protocol_payload_per_completed_task_bytes"
        )
    );
    println!("| hub RSS: idle / {} agents connected / after the run | {rss_idle:.1} / {rss_connected:.1} / {rss_loaded:.1} MiB |", a.agents);
    for h in agents {
        let _ = h.join();
    }
}
