//! Who is calling: the bearer token (or the dashboard's session cookie)
//! resolved to a role. Admin for writes; admin or viewer for reads.

use actix_web::HttpRequest;

use crate::auth::Role;
use crate::http::error::HttpError;
use crate::http::AppState;

/// Name of the dashboard's session cookie (HttpOnly, SameSite=Strict).
pub const SESSION_COOKIE: &str = "agentcom_session";

/// The token a request presents: `Authorization: Bearer …`, else the cookie.
pub fn presented_token(req: &HttpRequest) -> Option<String> {
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

/// Require a token that may read.
pub fn reader(req: &HttpRequest, state: &AppState) -> Result<Role, HttpError> {
    role(req, state)
}

/// Require the admin token.
pub fn admin(req: &HttpRequest, state: &AppState) -> Result<(), HttpError> {
    match role(req, state)? {
        Role::Admin => Ok(()),
        Role::Viewer => Err(HttpError::forbidden(
            "this token may only read; writes need the admin token",
        )),
    }
}
