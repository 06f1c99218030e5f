//! Several hubs on one PostgreSQL store (issue 13): a hub that does not
//! lead stands by — a small server on the hub's own listener
//! (`http::standby`: its role, the tasks from the shared store, 503
//! `not_leader` naming the leader for the rest) — while it asks for the
//! lease every `poll_ms` and tells that server who leads; once it holds the lease it
//! stops standing by and the caller starts the whole hub. The leader
//! renews its lease every `renew_ms` and, when deposed or when its lease
//! may have lapsed, exits at once (status 75) so that its supervisor
//! starts it again as a standby: its sidecars reconnect to the new
//! leader, and any write it still tried is refused by the store's fence.
//!
//! The timing and when to step down are `domain::lease`'s; the lease is
//! the store's. Never decides anything about tasks or agents.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpServer};

use crate::domain::lease::{after_renewal, LeaseTiming, Next, Renewal};
use crate::http::standby::{self, Standby};
use crate::store::Store;

/// This hub, as the lease names it.
#[derive(Clone, Debug)]
pub(crate) struct Me {
    /// Made once per data dir (`hub.id`), so a hub restarted after a crash
    /// is the same holder.
    pub id: String,
    /// What clients should use to reach it (`ha.advertise_url`).
    pub url: String,
}

/// This hub's id: `<data_dir>/hub.id`, made (random) on its first start.
pub(crate) fn hub_id(data_dir: &std::path::Path) -> Result<String, String> {
    let path = data_dir.join("hub.id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        _ => {
            let id = format!("hub-{}", hex::encode(rand::random::<[u8; 8]>()));
            std::fs::write(&path, &id)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(id)
        }
    }
}

/// Stand by on `listener` until this hub leads (its term), or until
/// `stop` ends (None).
pub(crate) async fn stand_by(
    settings: &crate::config::Settings,
    store: &Store,
    me: &Me,
    timing: LeaseTiming,
    listener: &TcpListener,
    tls: Option<agentcom_tls::ServerConfig>,
    stop: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> Result<Option<i64>, String> {
    let first = {
        let (store, me) = (store.clone(), me.clone());
        web::block(move || store.try_lead(&me.id, Some(&me.url), timing.lease_ms))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    if let Some(term) = first {
        return Ok(Some(term));
    }
    let readers = {
        let (store, settings) = (store.clone(), settings.clone());
        web::block(move || crate::auth::reader_hashes(&settings, &store))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    let standby = web::Data::new(Standby::new(store.clone(), readers));
    let state = standby.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .configure(standby::routes)
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1);
    let own = listener
        .try_clone()
        .map_err(|e| format!("cannot share the listening socket: {e}"))?;
    let server = match tls {
        Some(config) => server.listen_rustls_0_23(own, config),
        None => server.listen(own),
    }
    .map_err(|e| format!("cannot serve as a standby: {e}"))?
    .run();
    let handle = server.handle();
    let serving = actix_rt::spawn(server);
    tracing::info!(hub = %me.id, "standing by: another hub leads; this one takes over when its lease lapses");
    let outcome = loop {
        let asked = {
            let (store, me) = (store.clone(), me.clone());
            web::block(move || {
                let term = store.try_lead(&me.id, Some(&me.url), timing.lease_ms)?;
                let leader = store.leader()?;
                Ok::<_, crate::store::StoreError>((term, leader))
            })
            .await
        };
        match asked {
            Ok(Ok((Some(term), _))) => break Some(term),
            Ok(Ok((None, leader))) => standby.set_leader(leader),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "standing by: the store did not answer");
                standby.set_leader(None);
            }
            Err(e) => tracing::warn!(error = %e, "standing by: the lease check failed"),
        }
        tokio::select! {
            _ = &mut *stop => break None,
            _ = actix_rt::time::sleep(Duration::from_millis(timing.poll_ms as u64)) => {}
        }
    };
    handle.stop(false).await;
    let _ = serving.await;
    Ok(outcome)
}

/// Renew the lease of `term` every `renew_ms` for as long as the hub runs;
/// exit the process (75) when this hub must stop leading.
pub(crate) fn keep_leading(store: Store, me: Me, term: i64, timing: LeaseTiming) {
    actix_rt::spawn(async move {
        let started = Instant::now();
        let ms = |at: Instant| at.duration_since(started).as_millis() as i64;
        let mut renewed_at = 0i64;
        loop {
            actix_rt::time::sleep(Duration::from_millis(timing.renew_ms as u64)).await;
            let renewal = {
                let (store, id) = (store.clone(), me.id.clone());
                match web::block(move || store.renew_lead(&id, term, timing.lease_ms)).await {
                    Ok(Ok(true)) => Renewal::Renewed,
                    Ok(Ok(false)) => Renewal::Lost,
                    Ok(Err(e)) => Renewal::Failed(e.to_string()),
                    Err(e) => Renewal::Failed(e.to_string()),
                }
            };
            match after_renewal(&timing, renewal, renewed_at, ms(Instant::now())) {
                Next::Lead { renewed_at_ms } => renewed_at = renewed_at_ms,
                Next::StepDown(reason) => {
                    tracing::error!(
                        term,
                        reason = %reason,
                        "stepping down: exiting so that a supervisor starts this hub again as a standby"
                    );
                    std::process::exit(75);
                }
            }
        }
    });
}
