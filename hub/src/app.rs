//! Starting and stopping the hub: make the process fit to serve (files it
//! creates private, the data dir 0700, the open-file limit raised, the
//! listen backlog widened), open the store, rebuild the queue and views
//! from it, start the actors and wire them, serve HTTP (HTTPS with `tls.cert_file` and `tls.key_file`)
//! within its limits (header and body timeouts, a connection limit), and
//! on SIGTERM/SIGINT (or when a caller's `until` ends: the demo) close
//! sidecar sessions, stop serving, make the store durable and return.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix::{AsyncContext, Context};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use agentcom_protocol::{Change, Task, Timestamp};
use agentcom_tls::PemFile;

use crate::actors::agent::AgentLinks;
use crate::actors::messages::CloseAll;
use crate::actors::queue::{QueueActor, QueueLinks, QueueViews, RepoLink, Retention};
use crate::actors::registry::{AgentDirectory, RegistryActor};
use crate::actors::repo::{RepoActor, RepoLinks};
use crate::actors::scheduler::{SchedulerActor, SchedulerLinks};
use crate::alerts::AlertBus;
use crate::auth::Auth;
use crate::config::{Settings, StoreBackend};
use crate::domain::changes::ChangeCore;
use crate::domain::lease::LeaseTiming;
use crate::domain::queue::QueueCore;
use crate::events::EventBus;
use crate::ha;
use crate::http::limits::{self, Connections, Guesses};
use crate::http::{self, AppState};
use crate::sessions::Sessions;
use crate::stats::Stats;
use crate::store::Store;
use crate::views::{AgentView, ChangeView, RepoView, TaskView};

/// The running actors and the state the HTTP layer shares.
pub struct Started {
    pub state: web::Data<AppState>,
    pub registry: actix::Addr<RegistryActor>,
    pub store: Store,
    /// The queue's own thread (`start_queue`), to stop before the store's
    /// last sync.
    pub queue_thread: actix::Arbiter,
}

/// Open the store the settings name: sled under `data_dir`, or the
/// PostgreSQL database at `store.url` (the data dir made, as it still
/// holds the tokens and the repositories' clones).
pub(crate) fn open_store(settings: &Settings) -> Result<Store, String> {
    match (settings.store.backend, &settings.store.url) {
        (StoreBackend::Postgres, Some(url)) => {
            std::fs::create_dir_all(&settings.data_dir)
                .map_err(|e| format!("cannot create {}: {e}", settings.data_dir.display()))?;
            Store::open_postgres(url)
                .map_err(|e| format!("cannot open the store (store.backend = \"postgres\"): {e}"))
        }
        _ => Store::open(&settings.data_dir, settings.store.cache_mb).map_err(|e| {
            format!(
                "cannot open the store in {}: {e}",
                settings.data_dir.display()
            )
        }),
    }
}

/// Rebuild the queue and views from `store`, start the actors. Every
/// actor's address exists before any actor starts, so each gets the
/// recipients it sends to in its constructor. Must run inside an actix
/// system, on a hub that leads (`term`: its lease's, with PostgreSQL).
pub(crate) fn start(
    settings: Settings,
    store: Store,
    term: Option<i64>,
) -> Result<Started, String> {
    let settings = Arc::new(settings);
    let auth = Auth::initialise(&settings, &store).map_err(|e| e.to_string())?;

    let live: Vec<(Task, u32)> = store
        .load_live()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|s| (s.task, s.history_len))
        .collect();
    let counts = store.count_by_status().map_err(|e| e.to_string())?;
    let keys = store.load_keys().map_err(|e| e.to_string())?;
    let tasks = Arc::new(TaskView::new(live.clone(), counts));
    let mut core = QueueCore::restore(settings.queue_settings(), live, keys);
    let repos = Arc::new(settings.repo_configs().map_err(|e| e.to_string())?);
    // Mains found red before a restart stay red (merges paused, their tasks
    // held back) until a check of main passes again.
    let mut red_mains = Vec::new();
    for name in repos.keys() {
        if let Some(sha) = store.repo_red(name).map_err(|e| e.to_string())? {
            core.set_repo_paused(name, true);
            red_mains.push((name.clone(), sha));
        }
    }
    // Lanes an operator paused stay paused.
    let paused_lanes = store.paused_lanes().map_err(|e| e.to_string())?;
    for p in &paused_lanes {
        core.set_lane_paused(*p, true);
    }
    tasks.set_paused_lanes(paused_lanes);
    // The day's usage per agent (the daily token budgets) is kept.
    if let Some(json) = store.usage().map_err(|e| e.to_string())? {
        let usage = crate::domain::usage::Usage::restore(&json);
        core.set_usage(usage.clone());
        tasks.set_usage(usage);
    }
    let live_changes: Vec<(Change, u32)> = store
        .load_live_changes()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|s| (s.change, s.history_len))
        .collect();
    let change_counts = store.count_changes_by_status().map_err(|e| e.to_string())?;
    let change_view = Arc::new(ChangeView::new(live_changes.clone(), change_counts));
    let q = settings.queue_settings();
    let changes = ChangeCore::restore(q.keep_finished, q.keep_finished_ms, live_changes);
    let events = Arc::new(EventBus::new(
        settings.events.replay,
        settings.events.replay_bytes,
        settings.events.client_buffer,
    ));
    let repo_view = Arc::new(
        RepoView::new(
            repos
                .values()
                .map(|r| (r.name.clone(), r.main_branch.clone())),
        )
        .with_events(events.clone()),
    );
    for (name, sha) in &red_mains {
        repo_view.update(name, |r| {
            r.main_sha = Some(sha.clone());
            r.health = agentcom_protocol::Health::Red;
            r.merges_paused = true;
        });
    }
    let held = core.outstanding(None);
    tracing::info!(
        live = core.len(),
        total = tasks.counts().total,
        queued = core.queued_len(),
        active = held.len(),
        store = store.engine_name(),
        "queue restored from the store"
    );
    let records = store.load_agents().map_err(|e| e.to_string())?;

    let sessions = Sessions::load(store.clone(), settings.http.session_ttl_s, Timestamp::now())
        .map_err(|e| e.to_string())?;

    let stats = Arc::new(Stats::default());
    let agents = Arc::new(AgentView::default());
    let directory = Arc::new(AgentDirectory::default());

    let scheduler_ctx = Context::<SchedulerActor>::new();
    let registry_ctx = Context::<RegistryActor>::new();
    let scheduler = scheduler_ctx.address();
    let registry = registry_ctx.address();

    // One actor per guarded repository, each sending to the queue.
    let mut repo_links = BTreeMap::new();
    let mut repo_ctxs = Vec::new();
    for cfg in repos.values() {
        let ctx = Context::<RepoActor>::new();
        let addr = ctx.address();
        repo_links.insert(
            cfg.name.clone(),
            RepoLink {
                inspect: addr.clone().recipient(),
                kick: addr.recipient(),
            },
        );
        repo_ctxs.push((ctx, cfg.clone()));
    }

    let t = &settings.timeouts;
    let alerts = Arc::new(AlertBus::new(
        events.clone(),
        stats.clone(),
        &settings.alerts.webhook_urls(),
    ));
    alerts.start_webhooks();
    for (name, sha) in &red_mains {
        tracing::warn!(repo = %name, sha = %sha, "main was red when the hub stopped: merges and its tasks wait for a passing check");
        alerts.raise(
            crate::domain::alert::AlertKind::MainRed,
            name,
            &format!("main of {name} was red at {sha} when the hub stopped: merges are paused and its tasks wait until a check of main passes"),
            Timestamp::now(),
        );
    }
    let (queue, queue_thread) = start_queue(QueueActor::new(
        core,
        changes,
        repos.clone(),
        store.clone(),
        QueueViews {
            tasks: tasks.clone(),
            changes: change_view.clone(),
            repos: repo_view.clone(),
            events: events.clone(),
            alerts: alerts.clone(),
            stats: stats.clone(),
        },
        QueueLinks {
            kick: scheduler.clone().recipient(),
            given: scheduler.clone().recipient(),
            stop_attempt: registry.clone().recipient(),
            absolve: registry.clone().recipient(),
            repos: repo_links,
        },
        Retention {
            finished_ms: settings.retention.finished_ms(),
            every: Duration::from_secs(t.sweep_interval_s),
        },
    ))?;
    for (ctx, cfg) in repo_ctxs {
        ctx.run(RepoActor::new(
            cfg,
            &settings.data_dir,
            RepoLinks {
                inspected: queue.clone().recipient(),
                next: queue.clone().recipient(),
                done: queue.clone().recipient(),
                main_checked: queue.clone().recipient(),
                main_seen: queue.clone().recipient(),
            },
        ));
    }
    scheduler_ctx.run(SchedulerActor::new(
        SchedulerLinks {
            claim: queue.clone().recipient(),
            release: queue.clone().recipient(),
            outstanding: queue.clone().recipient(),
            promote_due: queue.clone().recipient(),
            lookup: registry.clone().recipient(),
            withdraw: queue.clone().recipient(),
        },
        Duration::from_secs(t.sweep_interval_s),
        (t.accept_timeout_s as i64) * 1000,
    ));
    let agent_links = Arc::new(AgentLinks {
        report: queue.clone().recipient(),
        release: queue.clone().recipient(),
        idle: scheduler.clone().recipient(),
        busy: scheduler.recipient(),
        save_breaker: registry.clone().recipient(),
        view: agents.clone(),
        events: events.clone(),
        alerts: alerts.clone(),
        heartbeat_interval_s: t.heartbeat_interval_s,
        heartbeat_timeout_s: t.heartbeat_timeout_s,
        messages_per_s: settings.limits.agent_messages_per_s,
        messages_burst: settings.limits.agent_messages_burst,
    });
    registry_ctx.run(RegistryActor::new(
        store.clone(),
        records,
        held,
        directory.clone(),
        settings.fsm_settings(),
        agent_links,
        queue.clone().recipient(),
    ));

    let state = web::Data::new(AppState {
        settings: settings.clone(),
        queue,
        registry: registry.clone(),
        tasks,
        changes: change_view,
        repos: repo_view,
        alerts,
        agents,
        directory,
        auth,
        store: store.clone(),
        events,
        stats,
        started_at: Timestamp::now(),
        term,
        sessions: Arc::new(sessions),
        guesses: Guesses::new(
            settings.limits.sign_in_per_minute,
            settings.limits.sign_in_burst,
        ),
        connections: Connections::new(settings.http.max_connections),
    });
    Ok(Started {
        state,
        registry,
        store,
        queue_thread,
    })
}

/// Start the queue on an arbiter (a thread) of its own: every create,
/// claim and report passes through it, and on the thread of the agents,
/// the scheduler and the registry it was what limited a busy hub (that
/// thread at 100 % of a core while the other core had room).
fn start_queue(queue: QueueActor) -> Result<(actix::Addr<QueueActor>, actix::Arbiter), String> {
    let arbiter = actix::Arbiter::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let started = arbiter.spawn_fn(move || {
        let _ = tx.send(actix::Actor::start(queue));
    });
    if !started {
        return Err("cannot start the queue's thread".into());
    }
    let queue = rx
        .recv()
        .map_err(|_| "the queue's thread ended before the queue started".to_string())?;
    Ok((queue, arbiter))
}

/// Log to stderr (filtered by `RUST_LOG`, else `default`), every line
/// one event: control characters in any field are escaped.
pub fn init_logs(default: &str) {
    crate::logging::init(default);
}

/// Make the process fit to serve: every file it creates private (umask
/// 077: sled's files 0600, directories 0700), an existing data dir made
/// 0700, the soft open-file limit raised to the hard one. Returns the
/// open-file limit now in force.
fn prepare_process(data_dir: &Path) -> Result<u64, String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    use nix::sys::stat::{umask, Mode};
    use std::os::unix::fs::PermissionsExt;

    umask(Mode::from_bits_truncate(0o077));
    if let Ok(meta) = std::fs::metadata(data_dir) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700)).map_err(
                |e| {
                    format!(
                        "cannot make the data dir {} private: {e}",
                        data_dir.display()
                    )
                },
            )?;
            tracing::warn!(path = %data_dir.display(), was = format!("{mode:o}"), "the data dir was readable by others; it is now 0700");
        }
    }
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| format!("cannot read the open-file limit: {e}"))?;
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => return Ok(hard),
            Err(e) => tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit"),
        }
    }
    Ok(soft)
}

/// Take the listen address, before anything is started or written (the
/// admin token, the store): each way it can fail is one clear line naming
/// the fix; `change` says how to choose another address (the flags and
/// settings of the command that asked).
pub fn bind(listen: &str, change: &str) -> Result<std::net::TcpListener, String> {
    use std::io::ErrorKind;
    use std::net::ToSocketAddrs;
    if listen.to_socket_addrs().is_err() {
        return Err(format!(
            "{listen:?} is not an address to listen on: write HOST:PORT, e.g. 127.0.0.1:4000 \
             (or 0.0.0.0:4000 for every interface), {change}"
        ));
    }
    std::net::TcpListener::bind(listen).map_err(|e| match e.kind() {
        ErrorKind::AddrInUse => format!(
            "cannot listen on {listen}: the address is in use. Another process (another hub?) \
             holds it: stop it, or choose another address {change}"
        ),
        ErrorKind::AddrNotAvailable => format!(
            "cannot listen on {listen}: it is not an address of this machine. Listen on \
             127.0.0.1:PORT, 0.0.0.0:PORT or one of this machine's own addresses, {change}"
        ),
        ErrorKind::PermissionDenied => format!(
            "cannot listen on {listen}: permission denied (ports below 1024 need root or \
             CAP_NET_BIND_SERVICE). Choose a port from 1024 up, e.g. 4000, {change}"
        ),
        _ => format!("cannot listen on {listen}: {e}; choose another address {change}"),
    })
}

/// Let the kernel queue up to `SOMAXCONN` (4096) connections not yet
/// accepted, not the 128 std listens with: thousands of sidecars
/// reconnecting at once (a hub restarted under 20,000 agents) overflow
/// 128, and each handshake dropped waits a second or more to be retried.
/// The kernel caps it at `net.core.somaxconn`.
fn widen_backlog(listener: &std::net::TcpListener) {
    use nix::sys::socket::{listen, Backlog};
    if let Err(e) = listen(listener, Backlog::MAXCONN) {
        tracing::warn!(error = %e, "cannot widen the listen backlog; it stays at 128");
    }
}

/// The data dir can be used: a directory this user can write, or a path
/// where one can be made. Checked before anything is bound or written,
/// so a wrong `--data-dir` is one clear line.
fn check_data_dir(dir: &Path) -> Result<(), String> {
    use nix::unistd::{access, AccessFlags};
    let change = "choose another with --data-dir or AGENTCOM_DATA_DIR";
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(format!(
            "the data dir {} is a file, not a directory: {change} (a missing directory is made)",
            dir.display()
        )),
        Ok(_) => access(dir, AccessFlags::W_OK | AccessFlags::X_OK).map_err(|e| {
            format!(
                "the data dir {} is not writable by this user ({e}): {change}, or fix its owner",
                dir.display()
            )
        }),
        Err(_) => {
            // The nearest folder that exists must take a new directory.
            let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
            let parent = absolute
                .ancestors()
                .skip(1)
                .find(|a| a.exists())
                .unwrap_or(Path::new("/"));
            if !parent.is_dir() {
                return Err(format!(
                    "cannot make the data dir {}: {} is a file, not a directory: {change}",
                    dir.display(),
                    parent.display()
                ));
            }
            access(parent, AccessFlags::W_OK | AccessFlags::X_OK).map_err(|e| {
                format!(
                    "cannot make the data dir {}: {} is not writable by this user ({e}): {change}",
                    dir.display(),
                    parent.display()
                )
            })
        }
    }
}

/// Run the hub until SIGTERM/SIGINT.
pub async fn serve(settings: Settings) -> Result<(), String> {
    serve_until(settings, None, async {
        wait_for_signal().await;
        Ok(())
    })
    .await
}

/// Run the hub on `listener` (`None`: bind `settings.listen` now) until `until` ends, then stop as on a signal:
/// `until` runs once the hub serves, and its error is returned after the
/// hub stopped cleanly.
pub async fn serve_until(
    settings: Settings,
    listener: Option<std::net::TcpListener>,
    until: impl std::future::Future<Output = Result<(), String>>,
) -> Result<(), String> {
    let mut settings = settings;
    // Absolute once, here: git runs in folders under it, and the logs say
    // where the tokens are wherever the reader stands.
    settings.data_dir = std::path::absolute(&settings.data_dir).map_err(|e| {
        format!(
            "cannot tell where the data dir {} is: {e}",
            settings.data_dir.display()
        )
    })?;
    check_data_dir(&settings.data_dir)?;
    let listen = settings.listen.clone();
    // Read the certificate and key before anything else, so a bad file
    // stops the start with its name and nothing half-started.
    let tls = match settings.tls.files() {
        Some((cert, key)) => {
            let config = agentcom_tls::server_config(
                PemFile::new("tls.cert_file", cert),
                PemFile::new("tls.key_file", key),
            )
            .map_err(|e| format!("TLS: {e}"))?;
            tracing::info!(cert_file = %cert.display(), key_file = %key.display(), "TLS on: serving HTTPS and WSS");
            Some(config)
        }
        None => None,
    };
    // Take the address before anything is started or written (the admin
    // token, the store): a busy port is one clear line, nothing else.
    let listener = match listener {
        Some(l) => l,
        None => bind(&listen, "with --listen or AGENTCOM_LISTEN")?,
    };
    widen_backlog(&listener);
    let open_files = prepare_process(&settings.data_dir)?;
    let http_settings = settings.http.clone();
    let store = open_store(&settings)?;
    let mut until = std::pin::pin!(until);
    // With PostgreSQL several hubs may share the store: lead, or stand by
    // until the leader is gone.
    let mut lead = None;
    if store.shared() {
        let me = ha::Me {
            id: ha::hub_id(&settings.data_dir)?,
            url: settings.ha.advertise_url.clone().unwrap_or_else(|| {
                let scheme = if tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{listen}")
            }),
        };
        let timing = LeaseTiming::from_takeover(settings.ha.takeover_s);
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
        let mut stop = std::pin::pin!(async {
            let _ = rx.await;
        });
        // `until` ending while standing by stops the standby.
        let mut tx = Some(tx);
        let waited = {
            let standing = ha::stand_by(
                &settings,
                &store,
                &me,
                timing,
                &listener,
                tls.clone(),
                &mut stop,
            );
            let mut standing = std::pin::pin!(standing);
            tokio::select! {
                r = &mut standing => r,
                outcome = &mut until => {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Ok(()));
                    }
                    let _ = standing.await;
                    return outcome;
                }
            }
        };
        let Some(term) = waited? else {
            return Ok(());
        };
        tracing::info!(hub = %me.id, term, url = %me.url, "leading: this hub holds the lease");
        ha::keep_leading(store.clone(), me.clone(), term, timing);
        lead = Some((me, term));
    }
    let Started {
        state,
        registry,
        store,
        queue_thread,
    } = start(settings, store, lead.as_ref().map(|(_, t)| *t))?;
    let max_connections = limits::connection_limit(http_settings.max_connections, open_files);
    state.connections.set_limit(max_connections);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    tracing::info!(
        open_files,
        max_connections,
        header_timeout_s = http_settings.header_timeout_s,
        body_timeout_s = http_settings.body_timeout_s,
        "limits"
    );
    if max_connections < http_settings.max_connections {
        tracing::warn!(
            open_files,
            max_connections,
            "the open-file limit caps http.max_connections; raise LimitNOFILE (ulimit -n) to serve more"
        );
    }
    let (admin_at, enroll_at) = (state.auth.admin_at.clone(), state.auth.enroll_at.clone());
    let slots = state.connections.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(from_fn(limits::guard))
            .configure(http::routes)
    })
    .on_connect(move |conn, ext| {
        http::ws::remember_socket(conn, ext);
        ext.insert(slots.slot());
    })
    .workers(workers)
    .max_connections(limits::accept_per_worker(max_connections, workers))
    .client_request_timeout(Duration::from_secs(http_settings.header_timeout_s))
    .disable_signals()
    .shutdown_timeout(5);
    let (server, scheme) = match tls {
        Some(config) => (server.listen_rustls_0_23(listener, config), "https"),
        None => (server.listen(listener), "http"),
    };
    let server = server.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    for addr in server.addrs() {
        tracing::info!("listening on {scheme}://{addr}");
    }
    if let Some(addr) = server.addrs().first() {
        tracing::info!("dashboard: {}", dashboard_url(scheme, *addr));
    }
    tracing::info!("admin token: {admin_at}");
    tracing::info!("enrollment token: {enroll_at}");
    let server = server.run();
    let handle = server.handle();
    let serving = actix_rt::spawn(server);

    let outcome = until.await;
    tracing::info!("stopping: closing sidecar sessions");
    let _ = registry.send(CloseAll).await;
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    handle.stop(true).await;
    let _ = serving.await;
    // The queue stops (a group it is writing or syncing finishes) before
    // the last sync and before a leader steps down: nothing it does, a
    // sweep or a promotion, is written after them.
    queue_thread.stop();
    if queue_thread.join().is_err() {
        tracing::warn!("the queue's thread panicked while stopping");
    }
    store
        .sync()
        .map_err(|e| format!("final store sync failed: {e}"))?;
    if let Some((me, term)) = &lead {
        // A standby takes over at once rather than when the lease lapses.
        if let Err(e) = store.step_down(&me.id, *term) {
            tracing::warn!(error = %e, "could not give up the lease; a standby takes over when it lapses");
        }
    }
    tracing::info!("stopped cleanly");
    outcome
}

/// The dashboard's address as a person on this machine opens it (a hub
/// listening on every address is reached on the loopback one).
fn dashboard_url(scheme: &str, addr: std::net::SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!(
        "{scheme}://{}/dashboard",
        std::net::SocketAddr::new(ip, addr.port())
    )
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

/// `agentcom-hub store copy`: everything of the store at `from` copied into
/// the new store at `to` (each a data dir or a `postgres://` URL); the
/// summary printed.
pub fn copy_store(from: &str, to: &str) -> Result<String, String> {
    let open = |place: &str| {
        let store = if place.starts_with("postgres://") || place.starts_with("postgresql://") {
            Store::open_postgres(place)
        } else {
            Store::open(Path::new(place), 64)
        };
        store.map_err(|e| {
            let shown = if place.contains("://") {
                "the database"
            } else {
                place
            };
            format!("cannot open the store in {shown}: {e} (is a hub still running on it? stop it first)")
        })
    };
    let source = open(from)?;
    let dest = open(to)?;
    let c = source.copy_into(&dest).map_err(|e| e.to_string())?;
    Ok(format!(
        "copied {} task entries, {} agents, {} sessions and {} hub values from the {} store to the {} store",
        c.tasks,
        c.agents,
        c.sessions,
        c.meta,
        source.engine_name(),
        dest.engine_name()
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_dashboard_url_is_one_a_browser_here_opens() {
        let url = |a: &str| super::dashboard_url("http", a.parse().unwrap());
        assert_eq!(url("127.0.0.1:4000"), "http://127.0.0.1:4000/dashboard");
        assert_eq!(url("0.0.0.0:4000"), "http://127.0.0.1:4000/dashboard");
        assert_eq!(url("[::]:4000"), "http://[::1]:4000/dashboard");
        assert_eq!(url("10.1.2.3:80"), "http://10.1.2.3:80/dashboard");
    }
}
