//! Who is calling: the bearer token (or the dashboard's session cookie)
//! resolved to a role. Admin for writes; admin or viewer for reads.
//!
//! Handlers say what they need by taking an extractor: [`Admin`] or
//! [`Reader`]. A request without the right token never reaches the
//! handler's body.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};

use crate::auth::Role;
use crate::http::error::HttpError;
use crate::http::AppState;

/// Name of the dashboard's session cookie (HttpOnly, SameSite=Strict).
pub(crate) const SESSION_COOKIE: &str = "agentcom_session";

/// The token a request presents: `Authorization: Bearer …`, else the cookie.
pub(crate) fn presented_token(req: &HttpRequest) -> Option<String> {
    if let Some(h) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
        let v = h.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_string());
    }
    req.cookie(SESSION_COOKIE).map(|c| c.value().to_string())
}

fn role(req: &HttpRequest, state: &AppState) -> Result<Role, HttpError> {
    let Some(token) = presented_token(req) else {
        return Err(HttpError::unauthorized(
            "missing token: send Authorization: Bearer <token>",
        ));
    };
    if let Some(role) = state.auth.role_of(&token) {
        return Ok(role);
    }
    if state.directory.agent_for(&token).is_some() {
        return Err(HttpError::forbidden(
            "agent tokens only open the sidecar WebSocket (/ws)",
        ));
    }
    Err(HttpError::unauthorized("invalid token"))
}

fn state(req: &HttpRequest) -> Result<&AppState, HttpError> {
    req.app_data::<web::Data<AppState>>()
        .map(|d| d.get_ref())
        .ok_or_else(|| HttpError::unavailable("the hub is not ready"))
}

/// A caller that may read: the admin or a viewer token.
pub(crate) struct Reader(pub Role);

impl FromRequest for Reader {
    type Error = HttpError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(state(req).and_then(|s| role(req, s)).map(Reader))
    }
}

/// A caller with the admin token.
pub(crate) struct Admin;

impl FromRequest for Admin {
    type Error = HttpError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            state(req)
                .and_then(|s| role(req, s))
                .and_then(|role| match role {
                    Role::Admin => Ok(Admin),
                    Role::Viewer => Err(HttpError::forbidden(
                        "this token may only read; writes need the admin token",
                    )),
                }),
        )
    }
}
