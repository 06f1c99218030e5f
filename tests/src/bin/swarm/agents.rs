//! One swarm process: the agents of a file, each a task on one
//! single-threaded tokio runtime, connected from a chosen local address.
//!
//! Owns: the connections, each agent's protocol loop (hello, welcome,
//! heartbeats at the welcome's interval, accept + complete of every
//! assignment, reconnect after a pause when the hub drops it), and the
//! process's counts, printed as JSON lines; on SIGTERM, SIGINT or
//! `--max-run-s`, a Close frame on every connection. Must never: hold
//! more than a few KiB per agent (small tungstenite buffers,
//! `serde_json::Value` only for the frame in hand), spin, or run unbounded
//! (`--max-run-s`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The hub's WebSocket address (ws://127.0.0.1:PORT/ws).
    #[arg(long)]
    hub: String,
    /// The agents: `id token` on each line, then the capabilities it
    /// registered with, comma-separated, if any; `-` reads them from stdin.
    #[arg(long)]
    agents: PathBuf,
    /// Local addresses to connect from (comma-separated, e.g. 127.0.0.2),
    /// taken in turn: each gives its own range of ephemeral ports.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1")]
    source: Vec<IpAddr>,
    /// At most this many connections being opened (TCP + upgrade + hello
    /// until welcome) at once.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Print the counts every this many seconds.
    #[arg(long, default_value_t = 2)]
    report_every: u64,
    /// Stop after this many seconds whatever happens.
    #[arg(long, default_value_t = 3600)]
    max_run_s: u64,
}

/// What the process saw, for its JSON lines.
#[derive(Default)]
struct Counts {
    /// Connections open now (TCP + upgrade done).
    connected: AtomicU64,
    /// Connections welcomed now.
    welcomed: AtomicU64,
    /// The heartbeat interval the hub asked for (last welcome).
    interval_s: AtomicU64,
    heartbeats: AtomicU64,
    assigned: AtomicU64,
    /// `complete`s sent.
    completed: AtomicU64,
    acks: AtomicU64,
    pings: AtomicU64,
    /// `error` frames from the hub.
    error_frames: AtomicU64,
    /// Connections that could not be opened (refused upgrade, TCP error).
    connect_errors: AtomicU64,
    /// Welcomed connections that ended.
    disconnects: AtomicU64,
    /// Microseconds from the process start to the last first welcome.
    last_first_welcome_us: AtomicU64,
}

struct Agent {
    id: String,
    token: String,
    /// What its `hello` says (the agent's registered capabilities).
    capabilities: Vec<String>,
}

/// What every agent task shares.
struct Shared {
    url: String,
    hub: SocketAddr,
    sources: Vec<IpAddr>,
    counts: Counts,
    /// Tasks completed per agent (by index).
    done: Vec<AtomicU32>,
    /// Whether each agent was ever welcomed.
    welcomed_once: Vec<AtomicU32>,
    connecting: Semaphore,
    started: Instant,
    /// Errors printed so far (only the first few are).
    printed: AtomicU64,
    /// Set when the process stops: every agent closes its connection.
    stop: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    fn note(&self, what: std::fmt::Arguments<'_>) {
        if self.printed.fetch_add(1, Ordering::Relaxed) < 20 {
            eprintln!("agentcom-swarm: {what}");
        }
    }

    fn report(&self, last: bool) -> Value {
        let c = &self.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let done: Vec<u32> = self
            .done
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .collect();
        json!({
            "agents": self.done.len(),
            "connected": get(&c.connected),
            "welcomed": get(&c.welcomed),
            "ever_welcomed": self.welcomed_once.iter().filter(|w| w.load(Ordering::Relaxed) > 0).count(),
            "interval_s": get(&c.interval_s),
            "heartbeats": get(&c.heartbeats),
            "assigned": get(&c.assigned),
            "completed": get(&c.completed),
            "acks": get(&c.acks),
            "pings": get(&c.pings),
            "error_frames": get(&c.error_frames),
            "connect_errors": get(&c.connect_errors),
            "disconnects": get(&c.disconnects),
            "agents_with_work": done.iter().filter(|d| **d > 0).count(),
            "max_per_agent": done.iter().max().copied().unwrap_or(0),
            "all_welcomed_ms": get(&c.last_first_welcome_us) / 1000,
            "rss_kib": rss_kib(),
            "t_ms": self.started.elapsed().as_millis() as u64,
            "final": last,
        })
    }
}

/// This process's resident set, from /proc.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn read_agents(path: &PathBuf) -> Vec<Agent> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).expect("agents on stdin")
    } else {
        std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut w = l.split_whitespace();
            match (w.next(), w.next(), w.next()) {
                (Some(id), Some(token), caps) => Agent {
                    id: id.to_string(),
                    token: token.to_string(),
                    capabilities: caps
                        .map(|c| c.split(',').map(str::to_string).collect())
                        .unwrap_or_default(),
                },
                _ => panic!("an agents line is `id token [capabilities]`, not {l:?}"),
            }
        })
        .collect()
}

/// Raise the open-file limit to fit `need` sockets (root may raise the
/// hard limit too).
fn fit_open_files(need: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let want = need.max(soft);
    if want > soft {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, want, hard.max(want))
            .or_else(|_| setrlimit(Resource::RLIMIT_NOFILE, hard, hard));
    }
}

pub(crate) fn run(args: Args) {
    // Started by an orchestrator: go when it goes.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
    let agents = read_agents(&args.agents);
    fit_open_files(agents.len() as u64 + 256);
    let url = args.hub.clone();
    let authority = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("--hub must be ws://HOST:PORT/ws, not {url}"));
    let hub: SocketAddr = authority
        .parse()
        .unwrap_or_else(|_| panic!("--hub must name an IP address and port, not {authority}"));
    let shared = Arc::new(Shared {
        url,
        hub,
        sources: args.source.clone(),
        counts: Counts::default(),
        done: (0..agents.len()).map(|_| AtomicU32::new(0)).collect(),
        welcomed_once: (0..agents.len()).map(|_| AtomicU32::new(0)).collect(),
        connecting: Semaphore::new(args.connect_concurrency.max(1)),
        started: Instant::now(),
        printed: AtomicU64::new(0),
        stop: tokio::sync::watch::channel(false).0,
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        for (i, a) in agents.into_iter().enumerate() {
            tokio::spawn(agent(i, a, shared.clone()));
        }
        let every = Duration::from_secs(args.report_every.max(1));
        let mut tick = tokio::time::interval(every);
        let deadline = tokio::time::sleep(Duration::from_secs(args.max_run_s));
        tokio::pin!(deadline);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        loop {
            tokio::select! {
                _ = tick.tick() => println!("{}", shared.report(false)),
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                _ = &mut deadline => break,
            }
        }
        // Close politely (a Close frame each, answered by the hub), for at
        // most 5 s, then count.
        shared.stop.send_replace(true);
        let closing = Instant::now();
        while shared.counts.connected.load(Ordering::Relaxed) > 0
            && closing.elapsed() < Duration::from_secs(5)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("{}", shared.report(true));
    });
    // Dropping the runtime drops every agent's socket: the hub sees them
    // close.
    drop(rt);
}

/// A small spread of `0..n` from the agent's index (golden-ratio
/// hashing), so heartbeats and reconnects do not come in waves.
fn spread(i: usize, n: u64) -> u64 {
    ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) % n.max(1)
}

/// One agent, for as long as the process runs: connect, then serve the
/// connection; after it ends, pause and connect again.
async fn agent(i: usize, a: Agent, s: Arc<Shared>) {
    let mut failures: u32 = 0;
    let mut stop = s.stop.subscribe();
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        let opened = {
            let _permit = s.connecting.acquire().await.expect("never closed");
            open(i, &a, &s).await
        };
        match opened {
            Ok((ws, interval)) => {
                failures = 0;
                if serve(i, ws, interval, &s).await {
                    return;
                }
                s.counts.disconnects.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                s.counts.connect_errors.fetch_add(1, Ordering::Relaxed);
                s.note(format_args!("{}: {e}", a.id));
            }
        }
        // 1 s, 2 s, … up to 30 s, spread over agents.
        let base = 1000u64 << failures.min(5);
        let pause = base.min(30_000) + spread(i, 1000);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(pause)) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

/// Resolves once the process stops (at once if it already has).
async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

type Ws = WebSocketStream<TcpStream>;

/// TCP from this agent's source address, the upgrade with its token,
/// hello, and the welcome's heartbeat interval.
async fn open(i: usize, a: &Agent, s: &Shared) -> Result<(Ws, u64), String> {
    let source = s.sources[i % s.sources.len()];
    let socket = match s.hub {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| format!("socket: {e}"))?;
    socket
        .bind(SocketAddr::new(source, 0))
        .map_err(|e| format!("bind {source}: {e}"))?;
    let tcp = socket
        .connect(s.hub)
        .await
        .map_err(|e| format!("connect {} from {source}: {e}", s.hub))?;
    let _ = tcp.set_nodelay(true);
    let mut req = s
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("request: {e}"))?;
    req.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", a.token)
            .parse()
            .map_err(|_| "a token that is not a header value".to_string())?,
    );
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(req, tcp, Some(config))
        .await
        .map_err(|e| match e {
            WsError::Http(r) => format!("upgrade refused: {}", r.status()),
            e => format!("upgrade: {e}"),
        })?;
    s.counts.connected.fetch_add(1, Ordering::Relaxed);
    let hello = json!({
        "type": "hello", "protocol_version": 1, "agent_id": a.id, "capabilities": a.capabilities,
        "state": "idle", "current_task": null, "sidecar_version": "agentcom-swarm"
    });
    let welcome = async {
        ws.send(Message::text(hello.to_string()))
            .await
            .map_err(|e| format!("hello: {e}"))?;
        while let Some(frame) = ws.next().await {
            match frame.map_err(|e| format!("before welcome: {e}"))? {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).map_err(|e| format!("{e}: {t}"))?;
                    match v["type"].as_str() {
                        Some("welcome") => return Ok(v["heartbeat_interval_s"].as_u64()),
                        Some("error") => {
                            s.counts.error_frames.fetch_add(1, Ordering::Relaxed);
                            return Err(format!("error before welcome: {t}"));
                        }
                        _ => {}
                    }
                }
                Message::Ping(_) => {
                    s.counts.pings.fetch_add(1, Ordering::Relaxed);
                }
                Message::Close(c) => return Err(format!("closed before welcome: {c:?}")),
                _ => {}
            }
        }
        Err("the connection ended before welcome".to_string())
    };
    let interval = match tokio::time::timeout(Duration::from_secs(60), welcome).await {
        Ok(Ok(Some(n))) => n.max(1),
        Ok(Ok(None)) => 30,
        Ok(Err(e)) => {
            s.counts.connected.fetch_sub(1, Ordering::Relaxed);
            return Err(e);
        }
        Err(_) => {
            s.counts.connected.fetch_sub(1, Ordering::Relaxed);
            return Err("no welcome within 60 s".into());
        }
    };
    s.counts.welcomed.fetch_add(1, Ordering::Relaxed);
    s.counts.interval_s.store(interval, Ordering::Relaxed);
    if s.welcomed_once[i].swap(1, Ordering::Relaxed) == 0 {
        let us = s.started.elapsed().as_micros() as u64;
        s.counts
            .last_first_welcome_us
            .fetch_max(us, Ordering::Relaxed);
    }
    Ok((ws, interval))
}

/// A welcomed connection until it ends: heartbeats (the first at a spread
/// offset), assignments accepted and completed at once, acks and pings
/// counted; when the process stops, a Close frame and the hub's answer
/// (true).
async fn serve(i: usize, mut ws: Ws, interval_s: u64, s: &Shared) -> bool {
    let mut stop = s.stop.subscribe();
    let period = Duration::from_secs(interval_s);
    let first = Duration::from_millis(spread(i, interval_s * 1000));
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + first, period);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let heartbeat = json!({ "type": "heartbeat", "state": "idle" }).to_string();
    let ended = loop {
        tokio::select! {
            _ = stopped(&mut stop) => {
                let _ = ws.close(None).await;
                // Read until the hub's Close answers ours.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
                break "stopped".to_string();
            }
            _ = beat.tick() => {
                if let Err(e) = ws.send(Message::text(heartbeat.clone())).await {
                    break format!("heartbeat: {e}");
                }
                s.counts.heartbeats.fetch_add(1, Ordering::Relaxed);
            }
            frame = ws.next() => {
                let text = match frame {
                    None => break "the hub closed the connection".to_string(),
                    Some(Err(e)) => break format!("read: {e}"),
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Ping(_))) => {
                        // tungstenite queued the pong; it goes out with
                        // the next read or write.
                        s.counts.pings.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Some(Ok(Message::Close(c))) => break format!("the hub closed: {c:?}"),
                    Some(Ok(_)) => continue,
                };
                match reply(&text, s) {
                    Ok(Some((accept, complete))) => {
                        let sent = async {
                            ws.feed(Message::text(accept)).await?;
                            ws.send(Message::text(complete)).await
                        };
                        if let Err(e) = sent.await {
                            break format!("report: {e}");
                        }
                        s.counts.completed.fetch_add(1, Ordering::Relaxed);
                        s.done[i].fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(None) => {}
                    Err(e) => s.note(format_args!("agent {i}: {e}")),
                }
            }
        }
    };
    s.counts.connected.fetch_sub(1, Ordering::Relaxed);
    s.counts.welcomed.fetch_sub(1, Ordering::Relaxed);
    if ended == "stopped" {
        return true;
    }
    s.note(format_args!("agent {i}: {ended}"));
    false
}

/// What to answer a frame: `accept` and `complete` for an assignment.
fn reply(text: &str, s: &Shared) -> Result<Option<(String, String)>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("{e}: {text}"))?;
    match v["type"].as_str() {
        Some("assign") => {
            s.counts.assigned.fetch_add(1, Ordering::Relaxed);
            let (t, g) = (&v["task_id"], &v["generation"]);
            Ok(Some((
                json!({ "type": "accept", "task_id": t, "generation": g }).to_string(),
                json!({ "type": "complete", "task_id": t, "generation": g,
                        "result": { "summary": "done" } })
                .to_string(),
            )))
        }
        Some("ack") => {
            s.counts.acks.fetch_add(1, Ordering::Relaxed);
            Ok(None)
        }
        Some("error") => {
            s.counts.error_frames.fetch_add(1, Ordering::Relaxed);
            Err(format!("error frame: {text}"))
        }
        _ => Ok(None),
    }
}
