//! The API's one error shape, `{"error": {"code", "message"}}`, with the
//! status codes of the contract. Every route returns [`ApiErr`] on failure;
//! nothing else in the hub builds an error response.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use agentcom_protocol::ApiError;

use crate::actors::queue::QueueFailure;
use crate::actors::registry::RegistryError;
use crate::domain::validate::FieldError;

#[derive(Debug, Clone)]
pub struct ApiErr {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiErr {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiErr {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl std::fmt::Display for ApiErr {
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

impl ResponseError for ApiErr {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(ApiError::new(self.code, self.message.clone()))
    }
}

impl From<QueueFailure> for ApiErr {
    fn from(e: QueueFailure) -> Self {
        match e {
            QueueFailure::NotFound(id) => ApiErr::not_found(format!("no task {id}")),
            QueueFailure::Conflict(m) => ApiErr::conflict(m),
            QueueFailure::Store(m) => ApiErr::unavailable(format!("the store failed: {m}")),
        }
    }
}

impl From<RegistryError> for ApiErr {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Exists(_) => ApiErr::conflict(e.to_string()),
            RegistryError::NotFound(_) => ApiErr::not_found(e.to_string()),
            RegistryError::Store(_) => ApiErr::unavailable(e.to_string()),
        }
    }
}

impl From<FieldError> for ApiErr {
    fn from(e: FieldError) -> Self {
        ApiErr::invalid(format!("{}: {}", e.field, e.message))
    }
}

impl From<actix::MailboxError> for ApiErr {
    fn from(e: actix::MailboxError) -> Self {
        ApiErr::unavailable(format!("the hub is shutting down ({e})"))
    }
}
