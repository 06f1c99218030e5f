//! `GET /api/events`: Server-Sent Events.
//!
//! A client gets every event after the one it names in `Last-Event-ID`
//! (what the replay ring still holds; `event: resync` if some were lost),
//! then the live feed. Events already waiting are batched into one write.
//! A client that falls too far behind gets `event: lagged` and the stream
//! ends; its EventSource reconnects with its last id and catches up from the
//! ring. The hub never waits for a client.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::stream::{self, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::events::Event;
use crate::http::auth::Reader;
use crate::http::error::HttpError;
use crate::http::AppState;

/// Comment line sent when nothing happened for this long.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Most events written in one chunk.
const BATCH: usize = 256;

#[derive(Deserialize)]
pub(crate) struct EventsQuery {
    /// For clients that cannot set the header.
    last_event_id: Option<u64>,
}

fn frame(e: &Event, out: &mut String) {
    out.push_str(&format!(
        "id: {}\nevent: {}\ndata: {}\n\n",
        e.id, e.kind, e.data
    ));
}

pub(crate) async fn stream(
    _: Reader,
    req: HttpRequest,
    state: web::Data<AppState>,
    q: web::Query<EventsQuery>,
) -> Result<HttpResponse, HttpError> {
    let last = req
        .headers()
        .get("Last-Event-ID")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .or(q.last_event_id);
    let sub = state.events.subscribe(last);
    let mut head = String::from("retry: 2000\n\n");
    if sub.gap {
        head.push_str("event: resync\ndata: {\"reason\":\"some events are no longer available; reload the state\"}\n\n");
    }
    for e in &sub.missed {
        frame(e, &mut head);
    }
    let first = stream::once(async move { Ok::<_, actix_web::Error>(web::Bytes::from(head)) });
    let rest = stream::unfold(Some(sub.live), |live| async move {
        let mut live = live?;
        let mut out = String::new();
        let next = tokio::select! {
            r = live.recv() => r,
            _ = tokio::time::sleep(KEEPALIVE) => {
                return Some((Ok(web::Bytes::from_static(b": keepalive\n\n")), Some(live)));
            }
        };
        match next {
            Ok(e) => frame(&e, &mut out),
            Err(RecvError::Lagged(n)) => return Some((Ok(web::Bytes::from(lagged(n))), None)),
            Err(RecvError::Closed) => return None,
        }
        // Whatever else is already waiting goes in the same write.
        for _ in 0..BATCH {
            match live.try_recv() {
                Ok(e) => frame(&e, &mut out),
                Err(TryRecvError::Lagged(n)) => {
                    out.push_str(&lagged(n));
                    return Some((Ok(web::Bytes::from(out)), None));
                }
                Err(_) => break,
            }
        }
        Some((Ok(web::Bytes::from(out)), Some(live)))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(first.chain(rest)))
}

/// The last frame a client that fell behind gets.
fn lagged(missed: u64) -> String {
    tracing::info!(
        missed,
        "an event stream client fell behind; dropping it (it resumes from Last-Event-ID)"
    );
    format!("event: lagged\ndata: {{\"missed\":{missed}}}\n\n")
}
