//! The orchestrator: a real hub, its agents created over HTTP, split over
//! swarm processes, and the measurements (hub RSS and CPU from /proc, the
//! hub's own counters) printed as a Markdown table.
//!
//! Owns: the run's steps and their checks (all agents idle; still idle
//! after a heartbeat timeout, heartbeats counted by the hub; every task
//! completed). Must never: judge the hub by a wall-clock assertion (it
//! reports times, it fails only when something never happens within a
//! generous deadline), or leave a swarm process or the hub running (both
//! are killed when it ends, however it ends).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentcom_tests::hub::Hub;
use serde_json::{json, Value};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// How many agents.
    #[arg(long, default_value_t = 1000)]
    scale: usize,
    /// Over how many swarm processes (each from its own 127.0.0.x).
    #[arg(long, default_value_t = 4)]
    procs: usize,
    /// Tasks to submit once all are connected (default: one per agent).
    #[arg(long)]
    tasks: Option<usize>,
    /// Concurrent clients submitting the tasks.
    #[arg(long, default_value_t = 8)]
    submitters: usize,
    /// Concurrent clients creating the agents.
    #[arg(long, default_value_t = 16)]
    creators: usize,
    /// The hub's `timeouts.heartbeat_timeout_s`; the heartbeat interval
    /// is a third of it.
    #[arg(long, default_value_t = 60)]
    heartbeat_timeout_s: u64,
    /// How long to hold everyone connected and count heartbeats (default:
    /// the heartbeat timeout and 10 s, so an agent whose heartbeats did not
    /// arrive would have gone offline).
    #[arg(long)]
    hold_s: Option<u64>,
    /// Connections each swarm process opens at once.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// The hub's open-file limit (soft and hard, set with prlimit; raising
    /// the hard limit takes CAP_SYS_RESOURCE). Default: this process's
    /// hard limit. The hub serves at most this less 128 connections.
    #[arg(long)]
    nofile: Option<u64>,
    /// Wait this long once the agents are created, before the swarm
    /// connects (time to attach a profiler to the hub).
    #[arg(long, default_value_t = 0)]
    pause_s: u64,
    /// Keep the hub's directory and the swarm logs here (default: a
    /// temporary directory, removed).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// A process's resident set and CPU time so far, from /proc.
#[derive(Clone, Copy, Debug, Default)]
struct Usage {
    rss_kib: u64,
    anon_kib: u64,
    cpu_s: f64,
}

fn usage(pid: u32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    Usage {
        rss_kib: field("VmRSS:"),
        anon_kib: field("RssAnon:"),
        cpu_s: agentcom_tests::procs::cpu_s(pid),
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn messages_in(hub: &Hub) -> f64 {
    agentcom_tests::hub::sample(
        &hub.metrics(),
        "agentcom_protocol_messages_total{direction=\"in\"}",
    )
    .unwrap_or(f64::NAN)
}

/// The swarm processes and the last report line of each.
struct Swarm {
    children: Vec<Child>,
    latest: Vec<Arc<Mutex<Value>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Swarm {
    fn start(files: &[PathBuf], ws: &str, concurrency: usize, max_run_s: u64, dir: &Path) -> Self {
        let exe = std::env::current_exe().expect("this program's path");
        let mut swarm = Swarm {
            children: Vec::new(),
            latest: Vec::new(),
            readers: Vec::new(),
        };
        for (k, file) in files.iter().enumerate() {
            // 127.0.0.2, .3, …: each process its own ephemeral ports.
            let source = format!("127.0.0.{}", 2 + k % 250);
            let log = std::fs::File::create(dir.join(format!("swarm-{k}.log"))).expect("log");
            let mut child = Command::new(&exe)
                .args(["agents", "--hub", ws, "--source", &source, "--agents"])
                .arg(file)
                .args(["--connect-concurrency", &concurrency.to_string()])
                .args(["--report-every", "1", "--max-run-s", &max_run_s.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log)
                .spawn()
                .expect("start a swarm process");
            let out = child.stdout.take().expect("piped");
            let latest = Arc::new(Mutex::new(Value::Null));
            let into = latest.clone();
            swarm.readers.push(std::thread::spawn(move || {
                for line in std::io::BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        *into.lock().unwrap() = v;
                    }
                }
            }));
            swarm.children.push(child);
            swarm.latest.push(latest);
        }
        swarm
    }

    /// The sum of a count over the processes' last reports.
    fn sum(&self, key: &str) -> u64 {
        self.latest
            .iter()
            .map(|l| l.lock().unwrap()[key].as_u64().unwrap_or(0))
            .sum()
    }

    fn max(&self, key: &str) -> u64 {
        self.latest
            .iter()
            .map(|l| l.lock().unwrap()[key].as_u64().unwrap_or(0))
            .max()
            .unwrap_or(0)
    }

    /// SIGTERM each, wait for its final line.
    fn stop(&mut self) {
        for c in &self.children {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        for c in &mut self.children {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Create `n` agents from `clients` concurrent clients; (id, token) in order.
fn create_agents(hub: &Hub, n: usize, clients: usize) -> Vec<(String, String)> {
    let width = n.to_string().len();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let out = Mutex::new(vec![(String::new(), String::new()); n]);
    std::thread::scope(|scope| {
        for _ in 0..clients.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let id = format!("swarm-{i:0width$}");
                let v = hub.ok(
                    "POST",
                    "/api/agents",
                    Some(json!({ "id": id, "capabilities": [] })),
                );
                let token = v["token"].as_str().expect("a token").to_string();
                out.lock().unwrap()[i] = (id, token);
            });
        }
    });
    out.into_inner().unwrap()
}

/// Ask `f` every `every` until it answers, or panic after `timeout`
/// (the hub's snapshot counts 20,000 agents: not every 50 ms).
fn poll<T>(timeout: Duration, every: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(every);
    }
}

fn idle_agents(hub: &Hub) -> (u64, u64) {
    let s = hub.state();
    (
        s["agents"]["idle"].as_u64().unwrap_or(0),
        s["connected_sidecars"].as_u64().unwrap_or(0),
    )
}

/// Some agents' `last_heartbeat_at`.
fn last_heartbeats(hub: &Hub, ids: &[String]) -> Vec<Value> {
    ids.iter()
        .map(|id| hub.agent(id)["last_heartbeat_at"].clone())
        .collect()
}

pub(crate) fn run(a: Args) {
    let scale = a.scale.max(1);
    let procs = a.procs.clamp(1, scale);
    let tasks = a.tasks.unwrap_or(scale);
    let hold_s = a.hold_s.unwrap_or(a.heartbeat_timeout_s + 10);
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let root = a.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&root).expect("the run's directory");
    let say = |what: &str| eprintln!("agentcom-swarm: {what}");

    // The hub: room for every agent and some HTTP clients; heartbeats that
    // really flow during the hold; quiet logs. AGENTCOM_* variables given
    // to the orchestrator pass to the hub and win.
    let max_connections = (scale + 1024).to_string();
    let timeout = a.heartbeat_timeout_s.to_string();
    let mut env: Vec<(String, String)> = vec![
        ("AGENTCOM_HTTP__MAX_CONNECTIONS".into(), max_connections),
        ("AGENTCOM_TIMEOUTS__HEARTBEAT_TIMEOUT_S".into(), timeout),
        ("RUST_LOG".into(), "warn".into()),
    ];
    for (k, v) in std::env::vars() {
        if k.starts_with("AGENTCOM_") && k != "AGENTCOM_ADMIN_TOKEN" && k != "AGENTCOM_SKIP_BUILD" {
            env.retain(|(e, _)| *e != k);
            env.push((k, v));
        }
    }
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let nofile = a.nofile.unwrap_or_else(|| {
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(65_536, |(_, hard)| hard)
    });
    // The hub serves at most its open-file limit less 128 connections;
    // the agents and the run's own HTTP clients must fit.
    let clients = a.creators.max(a.submitters) as u64 + 8;
    let room = nofile.saturating_sub(128);
    assert!(
        scale as u64 + clients <= room,
        "the hub serves at most {room} connections under an open-file limit of {nofile}: \
         {scale} agents and {clients} HTTP clients do not fit. Raise --nofile (beyond this \
         shell's hard limit it takes CAP_SYS_RESOURCE) or lower --scale"
    );
    let mut hub = Hub::start_with_nofile(&root, &env_refs, nofile, nofile);
    let pid = hub.pid().expect("the hub's pid");
    std::thread::sleep(Duration::from_secs(1));
    let idle = usage(pid);
    say(&format!(
        "hub {} (pid {pid}) up: RSS {} MiB",
        hub.url,
        mib(idle.rss_kib)
    ));

    // The agents, created over HTTP: each one a durable write.
    let t = Instant::now();
    let agents = create_agents(&hub, scale, a.creators);
    let created_in = t.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let created = usage(pid);
    say(&format!(
        "{scale} agents created in {:.1} s; hub RSS {} MiB",
        created_in.as_secs_f64(),
        mib(created.rss_kib)
    ));

    if a.pause_s > 0 {
        say(&format!("pausing {} s before connecting", a.pause_s));
        std::thread::sleep(Duration::from_secs(a.pause_s));
    }

    // Split over the swarm processes.
    let per = scale.div_ceil(procs);
    let files: Vec<PathBuf> = agents
        .chunks(per)
        .enumerate()
        .map(|(k, chunk)| {
            let path = root.join(format!("swarm-{k}.agents"));
            let text: String = chunk.iter().map(|(id, t)| format!("{id} {t}\n")).collect();
            std::fs::write(&path, text).expect("an agents file");
            path
        })
        .collect();
    // Long enough for the whole run, bounded all the same.
    let max_run_s = 1800 + hold_s;
    let t = Instant::now();
    let mut swarm = Swarm::start(
        &files,
        &hub.ws_url(),
        a.connect_concurrency,
        max_run_s,
        &root,
    );
    let mut last_print = Instant::now();
    poll(
        Duration::from_secs(1200),
        Duration::from_millis(250),
        "every agent idle at the hub",
        || {
            let (idle_now, connected) = idle_agents(&hub);
            if last_print.elapsed() > Duration::from_secs(5) {
                last_print = Instant::now();
                say(&format!(
                    "connecting: {idle_now} idle, {connected} sidecars connected, swarm: {} welcomed, {} connect errors; hub RSS {} MiB",
                    swarm.sum("welcomed"),
                    swarm.sum("connect_errors"),
                    mib(usage(pid).rss_kib)
                ));
            }
            (idle_now == scale as u64).then_some(())
        },
    );
    let connect_all = t.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let connected = usage(pid);
    let swarm_rss_connected = swarm.sum("rss_kib");
    say(&format!(
        "all {scale} idle after {:.1} s; hub RSS {} MiB",
        connect_all.as_secs_f64(),
        mib(connected.rss_kib)
    ));

    // Hold: heartbeats only. Counted by the hub (messages in), by the
    // swarm (sent), and seen on sampled agents' last_heartbeat_at; every
    // agent must still be idle after more than a heartbeat timeout.
    let interval_s = swarm.max("interval_s");
    let step = (scale / 20).max(1);
    let sample: Vec<String> = agents
        .iter()
        .step_by(step)
        .map(|(id, _)| id.clone())
        .collect();
    let beats_before = last_heartbeats(&hub, &sample);
    let (m0, s0, c0, t0) = (
        messages_in(&hub),
        swarm.sum("heartbeats"),
        usage(pid).cpu_s,
        Instant::now(),
    );
    say(&format!(
        "holding {hold_s} s (heartbeat every {interval_s} s, timeout {} s)",
        a.heartbeat_timeout_s
    ));
    let mut fewest_idle = scale as u64;
    while t0.elapsed() < Duration::from_secs(hold_s) {
        std::thread::sleep(Duration::from_secs(5));
        fewest_idle = fewest_idle.min(idle_agents(&hub).0);
    }
    let (m1, s1, c1, held) = (
        messages_in(&hub),
        swarm.sum("heartbeats"),
        usage(pid).cpu_s,
        t0.elapsed(),
    );
    let beats_after = last_heartbeats(&hub, &sample);
    let moved = beats_before
        .iter()
        .zip(&beats_after)
        .filter(|(b, a)| b != a && !a.is_null())
        .count();
    let (idle_after, connected_after) = idle_agents(&hub);
    let after_hold = usage(pid);
    let hub_beats_per_s = (m1 - m0) / held.as_secs_f64();
    let swarm_beats_per_s = (s1 - s0) as f64 / held.as_secs_f64();
    let hold_cpu = (c1 - c0) / held.as_secs_f64() * 100.0;
    say(&format!(
        "held {:.0} s: hub saw {hub_beats_per_s:.0} messages/s, the swarm sent {swarm_beats_per_s:.0} heartbeats/s; {moved}/{} sampled agents' last_heartbeat_at moved; {idle_after} idle (fewest {fewest_idle}); hub CPU {hold_cpu:.1} % of a core",
        held.as_secs_f64(),
        sample.len()
    ));
    assert_eq!(
        idle_after, scale as u64,
        "every agent must still be idle after the hold"
    );
    // Over a whole interval every agent sent one (a shorter hold only
    // reports).
    assert!(
        held < Duration::from_secs(interval_s + 2) || moved == sample.len(),
        "heartbeats must reach every sampled agent ({moved} of {} did)",
        sample.len()
    );

    // Tasks: all submitted, all completed.
    let before = hub.state();
    let done_before = before["tasks"]["completed"].as_u64().unwrap_or(0);
    let (c2, t2) = (usage(pid).cpu_s, Instant::now());
    let submitters = a.submitters.max(1);
    let per_client = tasks.div_ceil(submitters);
    let total = (per_client * submitters) as u64;
    hub.submit_concurrently(submitters, per_client, "swarm");
    let submitted_in = t2.elapsed();
    poll(
        Duration::from_secs(1200),
        Duration::from_millis(250),
        "every task completed",
        || {
            let s = hub.state();
            (s["tasks"]["completed"].as_u64().unwrap_or(0) >= done_before + total).then_some(())
        },
    );
    let tasks_in = t2.elapsed();
    let task_cpu = (usage(pid).cpu_s - c2) / tasks_in.as_secs_f64() * 100.0;
    std::thread::sleep(Duration::from_secs(2));
    let after_tasks = usage(pid);
    let lat = hub.state()["assignment_latency_ms"].clone();
    say(&format!(
        "{total} tasks completed in {:.1} s",
        tasks_in.as_secs_f64()
    ));

    let welcomed_now = swarm.sum("welcomed");
    swarm.stop();
    let s = |k: &str| swarm.sum(k);
    let with_work = s("agents_with_work");
    let max_per_agent = swarm.max("max_per_agent");
    let swarm_rss_max = swarm.max("rss_kib");
    let (connect_errors, error_frames, disconnects) =
        (s("connect_errors"), s("error_frames"), s("disconnects"));
    let completed_by_swarm = s("completed");
    let exit = hub.terminate();

    let n = scale as f64;
    let per_agent = (connected.rss_kib - idle.rss_kib) as f64 / n;
    let per_conn = connected.rss_kib.saturating_sub(created.rss_kib) as f64 / n;
    let per_record = created.rss_kib.saturating_sub(idle.rss_kib) as f64 / n;
    let profile = if std::env::current_exe()
        .map(|p| p.to_string_lossy().contains("/release/"))
        .unwrap_or(false)
    {
        "release"
    } else {
        "debug"
    };
    println!(
        "## agentcom-swarm: {} agents over {procs} swarm processes ({profile} build)\n",
        thousands(scale as u64)
    );
    println!("| measure | value |\n| --- | --- |");
    println!(
        "| agents created (`POST /api/agents`, {} clients, each durable) | {} in {:.1} s ({:.0} /s) |",
        a.creators,
        thousands(scale as u64),
        created_in.as_secs_f64(),
        n / created_in.as_secs_f64()
    );
    println!(
        "| time to connect all (swarm start → all idle at the hub; {} at once per process) | {:.1} s ({:.0} /s) |",
        a.connect_concurrency,
        connect_all.as_secs_f64(),
        n / connect_all.as_secs_f64()
    );
    println!(
        "| hub RSS: no agents / agents created / all connected / after the hold / after the tasks | {} / {} / {} / {} / {} MiB |",
        mib(idle.rss_kib),
        mib(created.rss_kib),
        mib(connected.rss_kib),
        mib(after_hold.rss_kib),
        mib(after_tasks.rss_kib)
    );
    println!(
        "| hub RSS per connected agent (all connected − no agents) | **{per_agent:.1} KiB** (record and actor {per_record:.1}, connection {per_conn:.1}) |"
    );
    println!(
        "| of which anonymous memory, all connected | {} MiB |",
        mib(connected.anon_kib)
    );
    println!(
        "| heartbeats seen by the hub (messages in, {:.0} s hold) | {hub_beats_per_s:.0} /s (expected {:.0} /s: every {interval_s} s each; swarm sent {swarm_beats_per_s:.0} /s) |",
        held.as_secs_f64(),
        n / interval_s.max(1) as f64
    );
    println!(
        "| still idle after the hold (> heartbeat timeout {} s) | {idle_after} of {scale} (fewest seen {fewest_idle}); {moved}/{} sampled agents' `last_heartbeat_at` moved; {connected_after} sidecars connected |",
        a.heartbeat_timeout_s,
        sample.len()
    );
    println!("| hub CPU while holding (heartbeats only) | {hold_cpu:.1} % of one core |");
    println!(
        "| tasks ({submitters} submitting clients) | {} completed in {:.1} s ({:.0} /s; submitted at {:.0} /s); hub CPU {task_cpu:.0} % of one core |",
        thousands(total),
        tasks_in.as_secs_f64(),
        total as f64 / tasks_in.as_secs_f64(),
        total as f64 / submitted_in.as_secs_f64()
    );
    println!(
        "| assignments spread | {} agents completed at least one (max {max_per_agent} on one agent); queued → assigned p50 {} ms, p99 {} ms |",
        thousands(with_work),
        lat["p50_ms"],
        lat["p99_ms"]
    );
    println!(
        "| swarm | {} welcomed at the end (then closed politely), {} completes sent, {connect_errors} connect errors, {error_frames} error frames, {disconnects} dropped connections; RSS {} MiB in all when connected (largest process {} MiB at the end) |",
        thousands(welcomed_now),
        thousands(completed_by_swarm),
        mib(swarm_rss_connected),
        mib(swarm_rss_max)
    );
    println!(
        "| hub exit | {} |",
        exit.map_or("killed after 15 s".to_string(), |c| format!("code {c}"))
    );
    drop(swarm);
    drop(hub);
}
