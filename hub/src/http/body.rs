//! Reading a JSON request body: bounded in size (413), valid JSON (400),
//! then the expected shape (422 naming the field). The Content-Type is not
//! required, so `curl -d '{…}'` works as typed.

use actix_web::web;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::http::error::HttpError;

/// Largest request body accepted (a 64 KiB description plus the rest).
pub(crate) const MAX_BODY_BYTES: usize = 256 * 1024;

pub(crate) async fn json<T: DeserializeOwned>(mut payload: web::Payload) -> Result<T, HttpError> {
    let mut buf = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| HttpError::bad_request(format!("cannot read the body: {e}")))?;
        if buf.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(HttpError::too_large(format!(
                "the body is larger than {MAX_BODY_BYTES} bytes"
            )));
        }
        buf.extend_from_slice(&chunk);
    }
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
