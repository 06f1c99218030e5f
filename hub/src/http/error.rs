//! The API's one error shape, `{"error": {"code", "message"}}` (the
//! protocol's [`ApiError`] body), with the status codes of the contract
//! (and 408 `timeout`, 415 `unsupported_media_type`, 429 `rate_limited`
//! with `Retry-After`).
//! Every route returns [`HttpError`] on failure; nothing else in the hub
//! builds an error response.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use agentcom_protocol::ApiError;

use crate::actors::messages::{CommandError, RegistryError};
use crate::domain::changes::ChangeError;
use crate::domain::queue::QueueError;
use crate::domain::validate::FieldError;

#[derive(Debug, Clone)]
pub(crate) struct HttpError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Sent as `Retry-After` (seconds), with 429.
    pub retry_after_s: Option<u64>,
}

impl HttpError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        HttpError {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed", message)
    }
    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    pub(crate) fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
    pub(crate) fn timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, "timeout", message)
    }
    pub(crate) fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }
    pub(crate) fn rate_limited(message: impl Into<String>, retry_after_s: u64) -> Self {
        HttpError {
            retry_after_s: Some(retry_after_s),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ResponseError for HttpError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        if let Some(s) = self.retry_after_s {
            res.insert_header((actix_web::http::header::RETRY_AFTER, s.to_string()));
        }
        res.json(ApiError::new(self.code, self.message.clone()))
    }
}

impl From<CommandError> for HttpError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Refused(QueueError::NotFound(id)) => {
                HttpError::not_found(format!("no task {id}"))
            }
            CommandError::Refused(QueueError::Conflict(m)) => HttpError::conflict(m),
            CommandError::ChangeRefused(ChangeError::NotFound(id)) => {
                HttpError::not_found(format!("no change {id}"))
            }
            CommandError::ChangeRefused(ChangeError::Conflict(m)) => HttpError::conflict(m),
            CommandError::Unavailable(m) => {
                HttpError::unavailable(format!("the store failed: {m}"))
            }
        }
    }
}

impl From<RegistryError> for HttpError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Exists(_) => HttpError::conflict(e.to_string()),
            RegistryError::NotFound(_) => HttpError::not_found(e.to_string()),
            RegistryError::Store(_) => HttpError::unavailable(e.to_string()),
        }
    }
}

impl From<FieldError> for HttpError {
    fn from(e: FieldError) -> Self {
        HttpError::invalid(format!("{}: {}", e.field, e.message))
    }
}

impl From<actix::MailboxError> for HttpError {
    fn from(e: actix::MailboxError) -> Self {
        HttpError::unavailable(format!("the hub is shutting down ({e})"))
    }
}
