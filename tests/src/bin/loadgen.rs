//! `agentcom-loadgen`: measure the hub against the limit of its own store,
//! in one run on one machine, and print every figure as a ratio to that
//! limit (and to BullMQ's, when given), so the ratio is the result.
//!
//! Phases (`--phases`, comma-separated; all by default), each on a fresh
//! hub (the binaries of this build profile: run the release build):
//!
//! - `raw`: the store's own limit, without the hub — sled with the hub's
//!   settings, `--clients` producer threads, group commit (one batch, a
//!   flush and an `fdatasync` of the data file per group, as the hub's
//!   `Store::sync`): durable writes/s of one ~task-sized value, and tasks/s
//!   when each task is 4 durable writes in a row (create, assign, accept,
//!   complete); and the CPU it took, in µs a durable write.
//! - `creates`: `--clients` keep-alive HTTP clients create tasks for
//!   `--seconds`, no agent consuming: creates/s (each 201 after its task
//!   is durable) and the latency of one create. The clients are futures
//!   on one thread (awc), so the load generator takes as little of the
//!   two cores as it can; its CPU share is printed beside the figure.
//!   From the hub's and the clients' CPU a create: the cores' ceiling, the
//!   most creates/s these cores could give at that cost were latency no
//!   limit (more clients approach it), as a ratio to the raw limit.
//! - `consume`: the same clients while `--agents` agents consume — the
//!   real WebSocket protocol, each accepting and completing every
//!   assignment at once, all in one `agentcom-swarm agents` process —:
//!   creates/s and full lifecycles/s (completions) in the window, and
//!   submit → assign at an idle probe agent measured by a probe client
//!   at most every 20 ms (the probe agent alone has capability `probe`,
//!   and not `load`, which every load task needs, so it never takes one;
//!   each probe waits until the hub shows it idle, so it is idle when the
//!   probe arrives), with the probe's own `201` beside it (what is left
//!   is the push to the agent); and the cores' ceiling for lifecycles, as
//!   for creates.
//! - `latency`: the same probes with nothing else running.
//! - `million` (not in the default set): `--million` tasks created in
//!   batches of 1,000 and taken through their whole lifecycle by the
//!   agents; then the hub's RSS and store size, a restart (SIGTERM, start
//!   again) timed to serving, its RSS after, and retention at 0 days
//!   deleting them all, with the store size after.
//!
//! `--peers` first runs `bench/peers/run.sh` (BullMQ on Redis) with the
//! same window and prints every figure as a ratio to its figures too,
//! unless `--bullmq-*` give them: BullMQ's figures move within an hour on
//! this machine, so a ratio holds only for runs minutes apart.
//!
//! Prints a Markdown table for docs/benchmarks.md. `AGENTCOM_*` variables
//! are passed to the hub.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentcom_tests::group_commit;
use agentcom_tests::hub::Hub;
use agentcom_tests::procs::cpu_s;
use agentcom_tests::raw::RawSidecar;
use agentcom_tests::{poll_until, wait_until};
use serde_json::{json, Value};

struct Args {
    clients: usize,
    agents: usize,
    seconds: f64,
    body_bytes: usize,
    phases: Vec<String>,
    bullmq_creates: Option<f64>,
    bullmq_lifecycles: Option<f64>,
    /// BullMQ's creates while its workers consume (`bench/peers`).
    bullmq_consuming: Option<f64>,
    /// Run `bench/peers/run.sh` first, for the BullMQ figures not given.
    peers: bool,
    million: usize,
}

fn args() -> Args {
    let mut a = Args {
        clients: 64,
        agents: 200,
        seconds: 10.0,
        body_bytes: 500,
        phases: ["raw", "creates", "consume", "latency"]
            .map(String::from)
            .to_vec(),
        bullmq_creates: None,
        bullmq_lifecycles: None,
        bullmq_consuming: None,
        peers: false,
        million: 1_000_000,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = |i: usize| {
            argv.get(i + 1)
                .unwrap_or_else(|| panic!("{} needs a value", argv[i]))
                .clone()
        };
        let n = |i: usize| -> f64 {
            v(i).parse()
                .unwrap_or_else(|_| panic!("{} needs a number", argv[i]))
        };
        match argv[i].as_str() {
            "--peers" => {
                // A flag: no value follows.
                a.peers = true;
                i += 1;
                continue;
            }
            "--clients" => a.clients = n(i) as usize,
            "--agents" => a.agents = n(i) as usize,
            "--seconds" => a.seconds = n(i),
            "--body-bytes" => a.body_bytes = n(i) as usize,
            "--phases" => a.phases = v(i).split(',').map(String::from).collect(),
            "--bullmq-creates" => a.bullmq_creates = Some(n(i)),
            "--bullmq-lifecycles" => a.bullmq_lifecycles = Some(n(i)),
            "--bullmq-consuming" => a.bullmq_consuming = Some(n(i)),
            "--million" => a.million = n(i) as usize,
            "-h" | "--help" => {
                println!(
                    "agentcom-loadgen [--phases raw,creates,consume,latency] [--clients 64] [--agents 200]\n\
                     \x20                [--seconds 10] [--body-bytes 500] [--bullmq-creates N] [--bullmq-lifecycles N]\n\
                     \x20                [--bullmq-consuming N] [--peers]\n\
                     \x20                [--phases million --million 1000000]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

/// `--peers`: BullMQ's figures (creates, lifecycles, creates while its
/// workers consume), measured now by `bench/peers/run.sh` with the same
/// window. On this machine BullMQ's figures move 1.6× within an evening
/// (docs/benchmarks.md), so a ratio to them holds only for a run
/// minutes apart.
fn measure_peers(seconds: f64) -> (f64, f64, f64) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/peers/run.sh");
    eprintln!("peers: BullMQ on Redis, {script}…");
    let out = std::process::Command::new(script)
        .args(["--seconds", &seconds.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("{script} could not run: {e}"));
    assert!(out.status.success(), "{script} failed: {}", out.status);
    let table = String::from_utf8_lossy(&out.stdout);
    let figure = |label: &str| -> f64 {
        table
            .lines()
            .find(|l| l.starts_with(&format!("| {label}")))
            .and_then(|l| l.split('|').nth(2))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.replace(',', "").parse().ok())
            .unwrap_or_else(|| panic!("no {label:?} in the output of {script}:\n{table}"))
    };
    (
        figure("durable creates/s, create only"),
        figure("full lifecycles/s"),
        figure("durable creates/s while the workers consume"),
    )
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
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

/// What these cores could do at `rate` when it costs `cpu` cores (the
/// hub's and the load generator's together), were latency no limit: the
/// most that more clients could reach on this machine at this cost.
fn ceiling(rate: f64, cpu: f64) -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    cores * rate / cpu
}

// ----- the store's own limit ----------------------------------------------------------

/// Sled as the hub opens it ([`group_commit::sled`]), written by
/// `clients` producers through a group committer for `seconds`, each item
/// `writes_per_item` durable writes in a row of a `value_bytes` value.
fn raw_limit(
    clients: usize,
    seconds: f64,
    writes_per_item: usize,
    value_bytes: usize,
) -> group_commit::Limit {
    let dir = tempfile::tempdir().unwrap();
    let commit = group_commit::sled(dir.path());
    group_commit::measure(clients, seconds, writes_per_item, value_bytes, commit)
}

// ----- the hub ------------------------------------------------------------------------

/// The hub's settings for a load run: the agents' message limits raised
/// (a fake agent completes far faster than a real one), logs at warn.
fn start_hub(root: &std::path::Path) -> Hub {
    let passed: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("AGENTCOM_") && k != "AGENTCOM_ADMIN_TOKEN")
        .collect();
    let mut env: Vec<(&str, &str)> = vec![
        ("AGENTCOM_LIMITS__AGENT_MESSAGES_PER_S", "1000000"),
        ("AGENTCOM_LIMITS__AGENT_MESSAGES_BURST", "1000000"),
        ("AGENTCOM_TEST_LOG", "warn"),
    ];
    env.extend(passed.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    Hub::start(root, &env)
}

/// What every load task needs and every consuming agent has; the probe
/// agent has not, so it never takes a load task.
const LOAD: &str = "load";

/// When each probe's `assign` arrived, by task id.
type Seen = Arc<Mutex<HashMap<String, Instant>>>;

/// The probe agent: accept and complete every assignment at once, noting
/// in `seen` when each arrived.
fn probe_agent(hub_ws: String, token: String, stop: Arc<AtomicBool>, seen: Seen) {
    let mut ws = RawSidecar::connect(&hub_ws, &token).expect("connect");
    ws.hello("prober");
    let mut last_beat = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if let Some(m) = ws.recv(Duration::from_millis(100)) {
            if m["type"] == "assign" {
                let id = m["task_id"].as_str().unwrap_or_default().to_string();
                seen.lock().unwrap().insert(id, Instant::now());
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

fn description(bytes: usize) -> String {
    "lorem ipsum dolor sit amet ".repeat(bytes / 27 + 1)[..bytes].to_string()
}

/// What the creating clients saw.
struct Created {
    count: u64,
    elapsed: f64,
    latency_ms: Vec<f64>,
}

/// `clients` keep-alive clients create tasks until `deadline`, all on one
/// thread (awc on a single-threaded actix runtime, the sidecar's client),
/// so the load generator takes as little of the cores it shares with the
/// hub as it can: one thread a client cost the hub a third of its CPU in
/// thread wake-ups.
fn create_until(hub: &Hub, clients: usize, deadline: Instant, body: &str) -> Created {
    let url = format!("{}/api/tasks", hub.url);
    let auth = format!("Bearer {}", hub.token);
    let started = Instant::now();
    let latency_ms = std::thread::scope(|s| {
        s.spawn(|| {
            actix_rt::System::new().block_on(async {
                let http = awc::Client::builder()
                    .connector(awc::Connector::new().limit(clients))
                    .timeout(Duration::from_secs(60))
                    .finish();
                let each = (0..clients).map(|c| {
                    let (http, url, auth) = (http.clone(), url.as_str(), auth.as_str());
                    async move {
                        let mut lat = Vec::new();
                        let mut n = 0u64;
                        while Instant::now() < deadline {
                            let t0 = Instant::now();
                            let task =
                                json!({ "title": format!("load {c}-{n}"), "description": body, "needed_capabilities": [LOAD] });
                            let mut r = http
                                .post(url)
                                .insert_header(("Authorization", auth))
                                .send_json(&task)
                                .await
                                .expect("POST /api/tasks");
                            assert_eq!(r.status().as_u16(), 201, "create");
                            // Read to the end: only then does the
                            // connection go back to the pool (keep-alive).
                            r.body().await.expect("the answer");
                            lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                            n += 1;
                        }
                        lat
                    }
                });
                futures_util::future::join_all(each).await.concat()
            })
        })
        .join()
        .expect("a creating client failed")
    });
    Created {
        count: latency_ms.len() as u64,
        elapsed: started.elapsed().as_secs_f64(),
        latency_ms,
    }
}

/// What the probes measured, in ms: submit → the agent's `assign` frame,
/// and submit → the create's own `201` (the rest of the first is the push
/// to the agent).
struct Probes {
    assign: Vec<f64>,
    created: Vec<f64>,
}

impl Probes {
    /// "p50 …, p99 …[, max …] (N probes; their 201 p50 …, p99 …)".
    fn describe(&mut self, with_max: bool) -> String {
        let max = if with_max {
            format!(", max {:.1} ms", percentile(&mut self.assign, 1.0))
        } else {
            String::new()
        };
        format!(
            "p50 {:.1} ms, p99 {:.1} ms{max} ({} probes; their 201 p50 {:.1} ms, p99 {:.1} ms)",
            percentile(&mut self.assign, 0.5),
            percentile(&mut self.assign, 0.99),
            self.assign.len(),
            percentile(&mut self.created, 0.5),
            percentile(&mut self.created, 0.99),
        )
    }
}

/// Submit → assign at an idle probe agent, measured by this process's
/// clock: before the POST to the `assign` frame's arrival.
fn probe_until(hub: &Hub, deadline: Instant, seen: &Seen) -> Probes {
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut out = Probes {
        assign: Vec::new(),
        created: Vec::new(),
    };
    while Instant::now() < deadline {
        // The probe agent is idle at the hub before each probe: under load
        // its last probe's accept and complete take a durable step each,
        // and a probe sent before they are done measured that wait too.
        poll_until(
            Duration::from_millis(1),
            Duration::from_secs(30),
            "the probe agent to be idle",
            || (hub.agent("prober")["state"] == "idle").then_some(()),
        );
        let t0 = Instant::now();
        let mut r = http
            .post(format!("{}/api/tasks", hub.url))
            .header("Authorization", format!("Bearer {}", hub.token))
            .send_json(
                json!({ "title": "probe", "needed_capabilities": ["probe"], "priority": "urgent" }),
            )
            .expect("POST probe");
        assert_eq!(r.status(), 201);
        let v: Value = r.body_mut().read_json().unwrap();
        out.created.push(t0.elapsed().as_secs_f64() * 1000.0);
        let id = v["id"].as_str().unwrap().to_string();
        let arrived = wait_until(Duration::from_secs(30), "the probe's assign", || {
            seen.lock().unwrap().remove(&id)
        });
        out.assign
            .push(arrived.duration_since(t0).as_secs_f64() * 1000.0);
        // A probe every 20 ms at most.
        std::thread::sleep(Duration::from_millis(20));
    }
    out
}

struct Fleet {
    /// The consuming agents: one `agentcom-swarm agents` process (one
    /// thread, every agent a task on it).
    swarm: Option<std::process::Child>,
    stop: Arc<AtomicBool>,
    prober: std::thread::JoinHandle<()>,
    seen: Seen,
}

impl Fleet {
    /// `n` consuming agents (capability `load`, which every load task
    /// needs) and one probe agent (only `probe`: it never takes a load
    /// task, so it is idle when each probe arrives).
    fn start(hub: &Hub, n: usize) -> Fleet {
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Seen = Arc::new(Mutex::new(HashMap::new()));
        let swarm = (n > 0).then(|| {
            let agents: String = (0..n)
                .map(|i| {
                    let id = format!("load{i}");
                    let token = hub.add_agent(&id, &[LOAD]);
                    format!("{id} {token} {LOAD}\n")
                })
                .collect();
            let exe = std::env::current_exe()
                .expect("this program's path")
                .with_file_name("agentcom-swarm");
            let mut child = std::process::Command::new(&exe)
                .args(["agents", "--hub", &hub.ws_url(), "--agents", "-"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start {} ({e}): build it with the load generator \
                         (--bin agentcom-swarm)",
                        exe.display()
                    )
                });
            let mut stdin = child.stdin.take().expect("piped");
            stdin.write_all(agents.as_bytes()).expect("the agents");
            drop(stdin);
            child
        });
        let token = hub.add_agent("prober", &["probe"]);
        let (ws, stop2, seen2) = (hub.ws_url(), stop.clone(), seen.clone());
        let prober = std::thread::spawn(move || probe_agent(ws, token, stop2, seen2));
        wait_until(Duration::from_secs(120), "all fake agents idle", || {
            (hub.state()["agents"]["idle"].as_u64() == Some(n as u64 + 1)).then_some(())
        });
        Fleet {
            swarm,
            stop,
            prober,
            seen,
        }
    }

    /// CPU seconds the agents' process has used.
    fn cpu_s(&self) -> f64 {
        self.swarm.as_ref().map_or(0.0, |c| cpu_s(c.id()))
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(mut swarm) = self.swarm {
            let pid = nix::unistd::Pid::from_raw(swarm.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = swarm.wait();
        }
        let _ = self.prober.join();
    }
}

fn completed(hub: &Hub) -> u64 {
    hub.state()["tasks"]["completed"].as_u64().unwrap_or(0)
}

/// The hub's group commits so far, from `/metrics`: syncs, task writes,
/// and the stages' totals (groups written, seconds writing, seconds
/// syncing; groups finished, seconds from first change to durable).
#[derive(Clone, Copy, Default)]
struct Commits {
    syncs: f64,
    writes: f64,
    groups: f64,
    write_s: f64,
    sync_s: f64,
    finished: f64,
    waited_s: f64,
}

fn commits(hub: &Hub) -> Commits {
    let text = hub.metrics();
    let get = |name: &str| agentcom_tests::hub::sample(&text, name).unwrap_or(0.0);
    Commits {
        syncs: get("agentcom_store_syncs_total"),
        writes: get("agentcom_store_writes_total"),
        groups: get("agentcom_store_write_seconds_count"),
        write_s: get("agentcom_store_write_seconds_sum"),
        sync_s: get("agentcom_store_sync_seconds_sum"),
        finished: get("agentcom_store_group_latency_seconds_count"),
        waited_s: get("agentcom_store_group_latency_seconds_sum"),
    }
}

/// Group commit in a window, in words: its rate, and where a group's time
/// went (means over the window).
fn commit_rate(before: Commits, after: Commits, window: f64) -> String {
    let syncs = after.syncs - before.syncs;
    let ms = |total: f64, n: f64| 1000.0 * total / n.max(1.0);
    format!(
        "{:.0} syncs/s, {:.1} task writes per sync; a group written in {:.2} ms, \
         a sync {:.2} ms, a group durable {:.2} ms after its first change",
        syncs / window,
        (after.writes - before.writes) / syncs.max(1.0),
        ms(after.write_s - before.write_s, after.groups - before.groups),
        ms(after.sync_s - before.sync_s, syncs),
        ms(
            after.waited_s - before.waited_s,
            after.finished - before.finished
        ),
    )
}

/// Bytes under `dir`.
fn du(dir: &std::path::Path) -> u64 {
    let mut n = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => n += du(&e.path()),
                Ok(m) => n += m.len(),
                Err(_) => {}
            }
        }
    }
    n
}

/// The `million` phase.
fn million(a: &Args, body: &str, row: &mut impl FnMut(&str, String)) {
    let n = a.million;
    eprintln!("million: {n} tasks through their lifecycle…");
    let root = tempfile::tempdir().unwrap();
    let mut hub = start_hub(root.path());
    let data = hub.dir.join("data");
    let fleet = Fleet::start(&hub, a.agents);
    let started = Instant::now();
    let per_client = n.div_ceil(8);
    let pid = hub.pid().unwrap();
    let rss_seen: Arc<Mutex<Vec<(u64, f64)>>> = Arc::default();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (rss_seen, sampling, url, token) = (
            rss_seen.clone(),
            sampling.clone(),
            hub.url.clone(),
            hub.token.clone(),
        );
        std::thread::spawn(move || {
            let http: ureq::Agent = ureq::Agent::config_builder().build().into();
            let mut next = 0u64;
            while sampling.load(Ordering::Relaxed) {
                let done = http
                    .get(format!("{url}/api/state"))
                    .header("Authorization", format!("Bearer {token}"))
                    .call()
                    .ok()
                    .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
                    .and_then(|v| v["tasks"]["completed"].as_u64())
                    .unwrap_or(0);
                if done >= next {
                    rss_seen.lock().unwrap().push((done, rss_mib(pid)));
                    next = done + (n as u64 / 10).max(1);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    std::thread::scope(|s| {
        for c in 0..8 {
            let (url, token) = (hub.url.clone(), hub.token.clone());
            s.spawn(move || {
                let http: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                let mine = per_client.min(n.saturating_sub(c * per_client));
                let mut done = 0;
                while done < mine {
                    // Keep the backlog bounded: the hub's memory follows
                    // its live tasks, and this phase is about finished ones.
                    loop {
                        let mut r = http
                            .get(format!("{url}/api/state"))
                            .header("Authorization", format!("Bearer {token}"))
                            .call()
                            .expect("GET /api/state");
                        let state: Value = r.body_mut().read_json().unwrap();
                        if state["tasks"]["queued"].as_u64().unwrap_or(0) < 20_000 {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    let k = (mine - done).min(1000);
                    let tasks: Vec<Value> = (0..k)
                        .map(|i| json!({ "title": format!("million {c}-{}", done + i), "description": body, "needed_capabilities": [LOAD] }))
                        .collect();
                    let mut r = http
                        .post(format!("{url}/api/tasks/batch"))
                        .header("Authorization", format!("Bearer {token}"))
                        .send_json(json!({ "tasks": tasks }))
                        .expect("POST /api/tasks/batch");
                    assert_eq!(r.status(), 201, "batch");
                    r.body_mut().read_to_vec().unwrap();
                    done += k;
                }
            });
        }
    });
    let created_in = started.elapsed().as_secs_f64();
    wait_until(Duration::from_secs(3600), "every task to complete", || {
        (completed(&hub) >= n as u64).then_some(())
    });
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    let samples: Vec<String> = rss_seen
        .lock()
        .unwrap()
        .iter()
        .map(|(d, r)| format!("{d}: {r:.0}"))
        .collect();
    row("hub RSS (MiB) as tasks completed", samples.join(", "));
    let lifecycle_s = started.elapsed().as_secs_f64();
    fleet.stop();
    row(
        &format!(
            "{n} tasks created (batches of 1,000, at most 20,000 queued at once) and completed by {} agents",
            a.agents
        ),
        format!(
            "created in {created_in:.0} s ({:.0} /s), all completed in {lifecycle_s:.0} s ({:.0} lifecycles/s)",
            n as f64 / created_in,
            n as f64 / lifecycle_s
        ),
    );
    let rss_full = rss_mib(pid);
    hub.terminate();
    let store_full = du(&data);
    let t0 = Instant::now();
    hub.restart();
    let restart_s = t0.elapsed().as_secs_f64();
    let pid = hub.pid().unwrap();
    let counted = completed(&hub);
    let rss_restarted = rss_mib(pid);
    row(
        "hub restart with them in the store, to serving",
        format!(
            "{restart_s:.2} s (to /healthz 200; {counted} completed counted at once); RSS {rss_full:.0} MiB before, {rss_restarted:.0} MiB after"
        ),
    );
    // Retention at 0 days: every finished task goes.
    hub.terminate();
    hub.set_env("AGENTCOM_RETENTION__FINISHED_DAYS", "0");
    hub.set_env("AGENTCOM_TIMEOUTS__SWEEP_INTERVAL_S", "1");
    hub.restart();
    let t0 = Instant::now();
    wait_until(
        Duration::from_secs(3600),
        "retention to delete every task",
        || (completed(&hub) == 0).then_some(()),
    );
    let purge_s = t0.elapsed().as_secs_f64();
    hub.terminate();
    let store_after = du(&data);
    row(
        "store size",
        format!(
            "{:.0} MiB with the {n} finished tasks ({:.0} B a task); {:.0} MiB after retention deleted them all in {purge_s:.0} s",
            store_full as f64 / 1048576.0,
            store_full as f64 / n as f64,
            store_after as f64 / 1048576.0
        ),
    );
}

fn main() {
    let mut a = args();
    let phase = |p: &str| a.phases.iter().any(|x| x == p);
    let profile = if std::env::current_exe()
        .unwrap()
        .to_string_lossy()
        .contains("/release/")
    {
        "release"
    } else {
        "debug"
    };
    let body = description(a.body_bytes);
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut row = |k: &str, v: String| {
        eprintln!("  {k}: {v}");
        rows.push((k.to_string(), v));
    };
    let (mut raw_writes, mut raw_tasks) = (f64::NAN, f64::NAN);
    if a.peers {
        let (creates, lifecycles, consuming) = measure_peers(a.seconds);
        row(
            "BullMQ just before (bench/peers/run.sh): creates/s, lifecycles/s, creates/s while consuming",
            format!("{creates:.0}, {lifecycles:.0}, {consuming:.0}"),
        );
        a.bullmq_creates.get_or_insert(creates);
        a.bullmq_lifecycles.get_or_insert(lifecycles);
        a.bullmq_consuming.get_or_insert(consuming);
    }

    if phase("raw") {
        eprintln!("raw: the store's own limit…");
        let one = raw_limit(a.clients, a.seconds, 1, a.body_bytes + 300);
        raw_writes = one.items_per_s;
        row(
            "raw sled group commit + fdatasync, durable writes/s",
            format!(
                "{:.0} ({} producers, {:.0} writes per sync; CPU {:.0} %, {:.0} µs a write)",
                one.items_per_s,
                a.clients,
                one.writes_per_sync,
                100.0 * one.cpu,
                one.cpu_us_per_write
            ),
        );
        let four = raw_limit(a.clients, a.seconds, 4, a.body_bytes + 300);
        raw_tasks = four.items_per_s;
        row(
            "raw limit, tasks/s at 4 durable writes each",
            format!(
                "{:.0} ({:.0} writes per sync)",
                four.items_per_s, four.writes_per_sync
            ),
        );
    }
    let ratio = |v: f64, limit: f64| {
        if limit.is_finite() {
            format!(" = {:.0} % of the raw limit", 100.0 * v / limit)
        } else {
            String::new()
        }
    };
    let vs = |v: f64, peer: Option<f64>| match peer {
        Some(p) => format!(", {:.2}× BullMQ", v / p),
        None => String::new(),
    };

    let mut creates_only = f64::NAN;
    if phase("creates") {
        eprintln!("creates: {} clients, no agents…", a.clients);
        let root = tempfile::tempdir().unwrap();
        let hub = start_hub(root.path());
        let pid = hub.pid().unwrap();
        let cpu0 = cpu_s(pid);
        let own0 = cpu_s(std::process::id());
        let commits0 = commits(&hub);
        let deadline = Instant::now() + Duration::from_secs_f64(a.seconds);
        let mut c = create_until(&hub, a.clients, deadline, &body);
        let own = cpu_s(std::process::id()) - own0;
        let group = commit_rate(commits0, commits(&hub), c.elapsed);
        let per_s = c.count as f64 / c.elapsed;
        creates_only = per_s;
        let (hub_cpu, own) = ((cpu_s(pid) - cpu0) / c.elapsed, own / c.elapsed);
        row(
            "durable creates/s, create only",
            format!(
                "{per_s:.0}{}{} (p50 {:.1} ms, p99 {:.1} ms; hub CPU {:.0} %, clients' {:.0} %; {group})",
                ratio(per_s, raw_writes),
                vs(per_s, a.bullmq_creates),
                percentile(&mut c.latency_ms, 0.5),
                percentile(&mut c.latency_ms, 0.99),
                100.0 * hub_cpu,
                100.0 * own
            ),
        );
        let top = ceiling(per_s, hub_cpu + own);
        row(
            "the cores' ceiling for creates at this CPU cost",
            format!(
                "{top:.0}/s{}{} ({:.0} µs of the hub's CPU a create, {:.0} µs of the clients')",
                ratio(top, raw_writes),
                vs(top, a.bullmq_creates),
                1e6 * hub_cpu / per_s,
                1e6 * own / per_s
            ),
        );
        row(
            "hub RSS after the creates",
            format!("{:.0} MiB ({} tasks queued)", rss_mib(pid), c.count),
        );
    }

    if phase("consume") {
        eprintln!("consume: {} clients, {} agents…", a.clients, a.agents);
        let root = tempfile::tempdir().unwrap();
        let hub = start_hub(root.path());
        let pid = hub.pid().unwrap();
        let fleet = Fleet::start(&hub, a.agents);
        let done0 = completed(&hub);
        let cpu0 = cpu_s(pid);
        let own0 = cpu_s(std::process::id()) + fleet.cpu_s();
        let commits0 = commits(&hub);
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs_f64(a.seconds);
        let seen = fleet.seen.clone();
        let (mut probes, mut c) = std::thread::scope(|s| {
            let p = s.spawn(|| probe_until(&hub, deadline, &seen));
            let c = create_until(&hub, a.clients, deadline, &body);
            (p.join().unwrap(), c)
        });
        let window = t0.elapsed().as_secs_f64();
        let done = completed(&hub) - done0;
        let cpu = cpu_s(pid) - cpu0;
        let own = cpu_s(std::process::id()) + fleet.cpu_s() - own0;
        let group = commit_rate(commits0, commits(&hub), window);
        let creates = c.count as f64 / c.elapsed;
        let lifecycles = done as f64 / window;
        row(
            &format!("durable creates/s while {} agents consume", a.agents),
            format!(
                "{creates:.0}{}{}{} (p50 {:.1} ms, p99 {:.1} ms)",
                ratio(creates, raw_writes),
                if creates_only.is_finite() {
                    format!(", {:.0} % of create only", 100.0 * creates / creates_only)
                } else {
                    String::new()
                },
                // Against BullMQ's creates while its workers consume: its
                // create-only figure is another measure.
                vs(creates, a.bullmq_consuming),
                percentile(&mut c.latency_ms, 0.5),
                percentile(&mut c.latency_ms, 0.99),
            ),
        );
        row(
            &format!("full lifecycles/s, {} agents", a.agents),
            format!(
                "{lifecycles:.0}{}{} ({done} completed in {window:.1} s; hub CPU {:.0} %, clients' and agents' {:.0} %; {group})",
                ratio(lifecycles, raw_tasks),
                vs(lifecycles, a.bullmq_lifecycles),
                100.0 * cpu / window,
                100.0 * own / window
            ),
        );
        let top = ceiling(lifecycles, (cpu + own) / window);
        row(
            "the cores' ceiling for lifecycles at this CPU cost",
            format!(
                "{top:.0}/s{}{} ({:.0} µs of the hub's CPU a lifecycle with its create, {:.0} µs of the clients' and agents')",
                ratio(top, raw_tasks),
                vs(top, a.bullmq_lifecycles),
                1e6 * cpu / done.max(1) as f64,
                1e6 * own / done.max(1) as f64
            ),
        );
        row(
            "submit → assign at an idle agent, under that load",
            probes.describe(true),
        );
        row("hub RSS after the run", format!("{:.0} MiB", rss_mib(pid)));
        fleet.stop();
    }

    if phase("latency") {
        eprintln!("latency: probes alone…");
        let root = tempfile::tempdir().unwrap();
        let hub = start_hub(root.path());
        let fleet = Fleet::start(&hub, 0);
        let deadline = Instant::now() + Duration::from_secs_f64(a.seconds.min(5.0));
        let mut probes = probe_until(&hub, deadline, &fleet.seen);
        row(
            "submit → assign at an idle agent, nothing else running",
            probes.describe(false),
        );
        fleet.stop();
    }

    if phase("million") {
        million(&a, &body, &mut row);
    }

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "## agentcom-loadgen ({profile} build): {} clients, {} agents, {} s a phase, {}-byte descriptions\n",
        a.clients, a.agents, a.seconds, a.body_bytes
    )
    .unwrap();
    writeln!(out, "| figure | value |\n| --- | --- |").unwrap();
    for (k, v) in rows {
        writeln!(out, "| {k} | {v} |").unwrap();
    }
}
