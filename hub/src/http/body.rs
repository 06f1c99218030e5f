//! Reading a JSON request body: within `http.body_timeout_s` (408 if it
//! stops coming), bounded in size (413), valid JSON (400), then the
//! expected shape (422 naming the field); a large body (a batch) is read
//! into its shape directly, without a JSON tree of it first. The
//! Content-Type is checked by the caller's extractor where it matters (a
//! cookie's writes, sign-in); with a bearer token `curl -d '{…}'` works
//! as typed.
//!
//! [`Watch`] holds every request body while its request is handled, so a
//! body left unread ends its connection after the response rather than
//! being drained for as long as the client cares to send it.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::{web, HttpMessage};
use futures_util::{Stream, StreamExt};
use serde::de::{DeserializeOwned, IgnoredAny};

use crate::http::error::HttpError;
use crate::http::AppState;

/// Largest request body accepted (a 64 KiB description plus the rest).
pub(crate) const MAX_BODY_BYTES: usize = 256 * 1024;

/// Read a JSON object of at most [`MAX_BODY_BYTES`] into `T`.
pub(crate) async fn json<T: DeserializeOwned>(
    payload: web::Payload,
    state: &AppState,
) -> Result<T, HttpError> {
    json_max(payload, state, MAX_BODY_BYTES).await
}

/// Read a JSON object of at most `max` bytes into `T`.
pub(crate) async fn json_max<T: DeserializeOwned>(
    payload: web::Payload,
    state: &AppState,
    max: usize,
) -> Result<T, HttpError> {
    let buf = body(payload, state, max).await?;
    let value: serde_json::Value = serde_json::from_slice(&buf)
        .map_err(|e| HttpError::bad_request(format!("the body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(HttpError::bad_request("the body must be a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| HttpError::invalid(e.to_string()))
}

/// Read a large JSON object of at most `max` bytes straight into `T`,
/// with no tree of it first (a `serde_json::Value` of many small objects
/// takes several times the body's size): for a batch. As with [`json`],
/// not JSON is a 400 (checked by a first pass that keeps nothing), the
/// wrong shape a 422.
pub(crate) async fn json_large<T: DeserializeOwned>(
    payload: web::Payload,
    state: &AppState,
    max: usize,
) -> Result<T, HttpError> {
    let buf = body(payload, state, max).await?;
    serde_json::from_slice::<IgnoredAny>(&buf)
        .map_err(|e| HttpError::bad_request(format!("the body is not valid JSON: {e}")))?;
    if buf.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(HttpError::bad_request("the body must be a JSON object"));
    }
    serde_json::from_slice(&buf).map_err(|e| HttpError::invalid(e.to_string()))
}

/// The whole body, within `http.body_timeout_s` and `max` bytes; not empty.
async fn body(
    payload: web::Payload,
    state: &AppState,
    max: usize,
) -> Result<web::BytesMut, HttpError> {
    let within = Duration::from_secs(state.settings.http.body_timeout_s);
    let buf = tokio::time::timeout(within, read(payload, max))
        .await
        .map_err(|_| {
            HttpError::timeout(format!(
                "the body did not arrive within {} s (http.body_timeout_s)",
                within.as_secs()
            ))
        })??;
    if buf.is_empty() {
        return Err(HttpError::bad_request(
            "the body is empty; send a JSON object",
        ));
    }
    Ok(buf)
}

async fn read(mut payload: web::Payload, max: usize) -> Result<web::BytesMut, HttpError> {
    let mut buf = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| HttpError::bad_request(format!("cannot read the body: {e}")))?;
        if buf.len() + chunk.len() > max {
            return Err(HttpError::too_large(format!(
                "the body is larger than {max} bytes"
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// A request body the hub keeps hold of while the request is handled, so
/// that one left unread (a refused request, a body that stopped coming)
/// ends the connection after the response. Without this, actix drains an
/// unread *chunked* body for as long as the client keeps sending it, with
/// no deadline: a drip of chunks would hold the connection forever.
pub(crate) struct Watch(Rc<RefCell<Watched>>);

struct Watched {
    payload: Payload,
    finished: bool,
}

/// What the handler reads in place of the request's own payload.
struct Proxy(Rc<RefCell<Watched>>);

impl Stream for Proxy {
    type Item = Result<web::Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut w = self.0.borrow_mut();
        let next = Pin::new(&mut w.payload).poll_next(cx);
        if matches!(next, Poll::Ready(None)) {
            w.finished = true;
        }
        next
    }
}

impl Watch {
    /// Watch the body of `req`, if it has one.
    pub(crate) fn body_of(req: &mut ServiceRequest) -> Option<Watch> {
        let h = req.headers();
        let has_body = h.contains_key(header::TRANSFER_ENCODING)
            || h.get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .is_some_and(|n| n > 0);
        if !has_body {
            return None;
        }
        let watched = Rc::new(RefCell::new(Watched {
            payload: req.take_payload(),
            finished: false,
        }));
        let proxy: Pin<Box<dyn Stream<Item = Result<web::Bytes, PayloadError>>>> =
            Box::pin(Proxy(watched.clone()));
        req.set_payload(Payload::from(proxy));
        Some(Watch(watched))
    }

    /// The response, holding the body until it is sent if it was not read
    /// to its end (actix then closes the connection instead of draining).
    pub(crate) fn keep_until_sent(self, res: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
        if self.0.borrow().finished {
            return res;
        }
        res.map_body(|_, body| {
            BoxBody::new(Holding {
                body,
                _unread: self,
            })
        })
    }
}

/// A response body that holds an unread request body until it is sent.
struct Holding {
    body: BoxBody,
    _unread: Watch,
}

impl MessageBody for Holding {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<web::Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}
