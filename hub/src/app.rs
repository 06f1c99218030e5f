//! Starting and stopping the hub: open the store, rebuild the queue and
//! views from it, start the actors and wire them, serve HTTP (HTTPS with
//! `tls.cert_file` and `tls.key_file`), and on
//! SIGTERM/SIGINT close sidecar sessions, stop serving, make the store
//! durable and return.

use std::sync::Arc;
use std::time::Duration;

use actix::{AsyncContext, Context};
use actix_web::{web, App, HttpServer};
use agentcom_protocol::{Task, Timestamp};
use agentcom_tls::PemFile;

use crate::actors::agent::AgentLinks;
use crate::actors::messages::CloseAll;
use crate::actors::queue::{QueueActor, QueueLinks, Retention};
use crate::actors::registry::{AgentDirectory, RegistryActor};
use crate::actors::scheduler::{SchedulerActor, SchedulerLinks};
use crate::auth::Auth;
use crate::config::Settings;
use crate::domain::queue::QueueCore;
use crate::events::EventBus;
use crate::http::{self, AppState};
use crate::stats::Stats;
use crate::store::Store;
use crate::views::{AgentView, TaskView};

/// The running actors and the state the HTTP layer shares.
pub struct Started {
    pub state: web::Data<AppState>,
    pub registry: actix::Addr<RegistryActor>,
    pub store: Store,
}

/// Open the store, rebuild the queue and views, start the actors. Every
/// actor's address exists before any actor starts, so each gets the
/// recipients it sends to in its constructor. Must run inside an actix
/// system.
pub fn start(settings: Settings) -> Result<Started, String> {
    let settings = Arc::new(settings);
    let store = Store::open(&settings.data_dir, settings.store.cache_mb).map_err(|e| {
        format!(
            "cannot open the store in {}: {e}",
            settings.data_dir.display()
        )
    })?;
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
    let core = QueueCore::restore(settings.queue_settings(), live, keys);
    let held = core.outstanding(None);
    tracing::info!(
        live = core.len(),
        total = tasks.counts().total,
        queued = core.queued_len(),
        active = held.len(),
        "queue restored from the store"
    );
    let records = store.load_agents().map_err(|e| e.to_string())?;

    let events = Arc::new(EventBus::new(
        settings.events.replay,
        settings.events.client_buffer,
    ));
    let stats = Arc::new(Stats::default());
    let agents = Arc::new(AgentView::default());
    let directory = Arc::new(AgentDirectory::default());

    let queue_ctx = Context::<QueueActor>::new();
    let scheduler_ctx = Context::<SchedulerActor>::new();
    let registry_ctx = Context::<RegistryActor>::new();
    let queue = queue_ctx.address();
    let scheduler = scheduler_ctx.address();
    let registry = registry_ctx.address();

    let t = &settings.timeouts;
    queue_ctx.run(QueueActor::new(
        core,
        store.clone(),
        tasks.clone(),
        events.clone(),
        stats.clone(),
        QueueLinks {
            kick: scheduler.clone().recipient(),
            stop_attempt: registry.clone().recipient(),
        },
        Retention {
            finished_ms: settings.retention.finished_ms(),
            every: Duration::from_secs(t.sweep_interval_s),
        },
    ));
    scheduler_ctx.run(SchedulerActor::new(
        SchedulerLinks {
            claim: queue.clone().recipient(),
            release: queue.clone().recipient(),
            outstanding: queue.clone().recipient(),
            promote_due: queue.clone().recipient(),
            lookup: registry.clone().recipient(),
        },
        Duration::from_secs(t.sweep_interval_s),
        (t.accept_timeout_s as i64) * 1000,
    ));
    let agent_links = Arc::new(AgentLinks {
        report: queue.clone().recipient(),
        release: queue.clone().recipient(),
        idle: scheduler.clone().recipient(),
        busy: scheduler.recipient(),
        view: agents.clone(),
        events: events.clone(),
        heartbeat_interval_s: t.heartbeat_interval_s,
        heartbeat_timeout_s: t.heartbeat_timeout_s,
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
        agents,
        directory,
        auth,
        store: store.clone(),
        events,
        stats,
        started_at: Timestamp::now(),
    });
    Ok(Started {
        state,
        registry,
        store,
    })
}

/// Run the hub until SIGTERM/SIGINT.
pub async fn serve(settings: Settings) -> Result<(), String> {
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
    let Started {
        state,
        registry,
        store,
    } = start(settings)?;
    let server =
        HttpServer::new(move || App::new().app_data(state.clone()).configure(http::routes))
            .disable_signals()
            .shutdown_timeout(5);
    let (server, scheme) = match tls {
        Some(config) => (server.bind_rustls_0_23(&listen, config), "https"),
        None => (server.bind(&listen), "http"),
    };
    let server = server.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    for addr in server.addrs() {
        tracing::info!("listening on {scheme}://{addr}");
    }
    let server = server.run();
    let handle = server.handle();
    let serving = actix_rt::spawn(server);

    wait_for_signal().await;
    tracing::info!("stopping: closing sidecar sessions");
    let _ = registry.send(CloseAll).await;
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    handle.stop(true).await;
    let _ = serving.await;
    store
        .sync()
        .map_err(|e| format!("final store sync failed: {e}"))?;
    tracing::info!("stopped cleanly");
    Ok(())
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
