//! Reading a JSON request body: within `http.body_timeout_s` (408 if it
//! stops coming), bounded in size (413), valid JSON (400), then the
//! expected shape (422 naming the field). The Content-Type is checked by
//! the caller's extractor where it matters (a cookie's writes, sign-in);
//! with a bearer token `curl -d '{…}'` works as typed.

use std::time::Duration;

use actix_web::web;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

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
    let value: serde_json::Value = serde_json::from_slice(&buf)
        .map_err(|e| HttpError::bad_request(format!("the body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(HttpError::bad_request("the body must be a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| HttpError::invalid(e.to_string()))
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
