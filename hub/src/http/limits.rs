//! What the HTTP face lets clients take: connections and token guesses.
//!
//! - Connections: every accepted connection takes a [`Slot`] (counted
//!   from `HttpServer::on_connect`, given back when the connection ends);
//!   one accepted beyond the limit is answered 503 in the error shape with
//!   `Connection: close` by [`guard`], whatever it asked (and [`guard`]
//!   closes any connection whose request body was left unread). The
//!   limit is the setting, but never more than the open-file limit less a
//!   reserve for the store and the runtime, so the hub cannot run out of
//!   descriptors; past a little more than that it stops accepting (the
//!   kernel's backlog holds the rest).
//! - Token guesses: a token bucket per client address ([`Guesses`]).
//!   Each failed token check (a sign-in, a bearer token) takes a token;
//!   while a client has none left every token check it makes is refused
//!   with 429 and `Retry-After` before the token is looked at, so the
//!   answer says nothing about the guess.
//!
//! Nothing here knows routes, roles or tokens.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::ResponseError;
use agentcom_protocol::Timestamp;

use crate::domain::rate::TokenBucket;
use crate::http::body::Watch;
use crate::http::error::HttpError;

/// Descriptors kept for all but client connections: the store's files,
/// the log, the runtime's own (epoll, event fds), an admin token write.
pub(crate) const FD_RESERVE: u64 = 128;

/// How many connections the hub serves at once under `open_files`.
pub(crate) fn connection_limit(setting: usize, open_files: u64) -> usize {
    let room = open_files.saturating_sub(FD_RESERVE).max(1);
    setting
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(1)
}

/// Connections each of `workers` may accept: the limit, plus room to
/// answer some with 503, spread over the workers; within the open files.
pub(crate) fn accept_per_worker(limit: usize, workers: usize) -> usize {
    let room = limit + (FD_RESERVE / 2) as usize;
    room.div_ceil(workers.max(1)).max(1)
}

/// The open connections, counted.
#[derive(Debug)]
pub(crate) struct Connections {
    open: AtomicUsize,
    limit: AtomicUsize,
}

impl Connections {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Connections {
            open: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
        })
    }

    /// Set the limit (once the open-file limit is known).
    pub(crate) fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Release);
    }

    /// A connection was accepted: its slot, admitted if within the limit.
    pub(crate) fn slot(self: &Arc<Self>) -> Slot {
        let n = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        Slot {
            admitted: n <= self.limit.load(Ordering::Acquire),
            of: self.clone(),
        }
    }

    /// Connections open now, and the limit.
    pub(crate) fn open_and_limit(&self) -> (usize, usize) {
        (
            self.open.load(Ordering::Acquire),
            self.limit.load(Ordering::Acquire),
        )
    }
}

/// One connection's place; given back when the connection ends.
#[derive(Debug)]
pub(crate) struct Slot {
    admitted: bool,
    of: Arc<Connections>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.of.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Middleware on every request: a connection accepted over the limit
/// gets 503 and is closed; a request body left unread (refused, or one
/// that stopped coming) closes its connection after the response.
pub(crate) async fn guard(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let watch = Watch::body_of(&mut req);
    let admitted = req.conn_data::<Slot>().is_none_or(|s| s.admitted);
    let res = if admitted {
        next.call(req).await?.map_into_boxed_body()
    } else {
        if let Some(state) = req.app_data::<actix_web::web::Data<crate::http::AppState>>() {
            state.stats.http_refused.inc();
        }
        let mut res = HttpError::unavailable(
            "the hub is at its connection limit (http.max_connections); try again shortly",
        )
        .error_response();
        res.head_mut()
            .set_connection_type(actix_web::http::ConnectionType::Close);
        req.into_response(res)
    };
    Ok(match watch {
        Some(w) => w.keep_until_sent(res),
        None => res,
    })
}

/// Most client addresses tracked at once; past it, those with a full
/// bucket are forgotten (they have nothing against them).
const MAX_CLIENTS: usize = 10_000;

/// Failed token checks per client address.
pub(crate) struct Guesses {
    per_minute: u32,
    burst: u32,
    clients: Mutex<HashMap<IpAddr, TokenBucket>>,
}

impl Guesses {
    pub(crate) fn new(per_minute: u32, burst: u32) -> Self {
        Guesses {
            per_minute,
            burst,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn bucket(&self, now: Timestamp) -> TokenBucket {
        TokenBucket::new(f64::from(self.per_minute) / 60.0, self.burst, now)
    }

    /// May `ip` have a token checked now? 429 with `Retry-After` if not.
    pub(crate) fn check(&self, ip: Option<IpAddr>, now: Timestamp) -> Result<(), HttpError> {
        let Some(ip) = ip.map(client_key) else {
            return Ok(());
        };
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let Some(b) = clients.get_mut(&ip) else {
            return Ok(());
        };
        // Peek: take a token and give it back.
        let mut probe = b.clone();
        match probe.take(now) {
            Ok(()) => Ok(()),
            Err(wait_ms) => Err(too_many(wait_ms)),
        }
    }

    /// `ip` presented a token that is not valid.
    pub(crate) fn failed(&self, ip: Option<IpAddr>, now: Timestamp) {
        let Some(ip) = ip.map(client_key) else { return };
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.len() >= MAX_CLIENTS && !clients.contains_key(&ip) {
            clients.retain(|_, b| !b.is_full(now));
            if clients.len() >= MAX_CLIENTS {
                tracing::warn!(client = %ip, "too many addresses with failed token checks to track another");
                return;
            }
        }
        let fresh = self.bucket(now);
        let b = clients.entry(ip).or_insert(fresh);
        if b.take(now).is_err() {
            tracing::warn!(client = %ip, "token guesses from this address are being refused (limits.sign_in_per_minute)");
        }
    }
}

/// The key of a client address: an IPv4 address, or an IPv6 address's
/// /64 (one host usually has a whole /64 to pick from).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
        },
    }
}

fn too_many(wait_ms: u64) -> HttpError {
    let secs = wait_ms.div_ceil(1000).max(1);
    HttpError::rate_limited(
        format!(
            "too many failed sign-ins or invalid tokens from this address; try again in {secs} s"
        ),
        secs,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_limit_stays_within_the_open_files() {
        assert_eq!(connection_limit(10_000, 65_536), 10_000);
        assert_eq!(connection_limit(10_000, 1024), 1024 - FD_RESERVE as usize);
        assert_eq!(connection_limit(10_000, 256), 128);
        assert_eq!(connection_limit(10_000, 100), 1, "never zero");
        assert_eq!(accept_per_worker(128, 2), 96);
        assert_eq!(accept_per_worker(1, 4), 17);
    }

    #[test]
    fn slots_are_counted_and_given_back() {
        let c = Connections::new(2);
        let a = c.slot();
        let b = c.slot();
        let over = c.slot();
        assert!(a.admitted && b.admitted && !over.admitted);
        assert_eq!(c.open_and_limit(), (3, 2));
        drop(a);
        drop(over);
        assert!(c.slot().admitted, "a place came free");
        drop(b);
        assert_eq!(c.open_and_limit(), (0, 2));
        c.set_limit(0);
        assert!(!c.slot().admitted);
    }

    #[test]
    fn failed_guesses_use_up_an_address_and_refill() {
        let g = Guesses::new(60, 3);
        let ip: Option<IpAddr> = Some("10.0.0.1".parse().unwrap());
        let other: Option<IpAddr> = Some("10.0.0.2".parse().unwrap());
        let t0 = Timestamp(1_000_000);
        for _ in 0..3 {
            assert!(g.check(ip, t0).is_ok());
            g.failed(ip, t0);
        }
        let e = g.check(ip, t0).unwrap_err();
        assert_eq!(e.status.as_u16(), 429);
        assert_eq!(e.retry_after_s, Some(1));
        assert!(g.check(other, t0).is_ok(), "per address");
        assert!(g.check(ip, t0.plus_millis(1000)).is_ok(), "one a second");
        assert!(g.check(None, t0).is_ok());
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        for _ in 0..3 {
            g.failed(Some(a), t0);
        }
        assert!(g.check(Some(b), t0).is_err(), "one /64 is one client");
    }
}
