//! Who is calling: a bearer token, or the dashboard's session cookie,
//! resolved to a role. Admin for writes; admin or viewer for reads.
//!
//! Handlers say what they need by taking an extractor, first in their
//! argument list so it runs before any other: [`Admin`], [`Reader`],
//! [`Enroller`] (the enrollment token as a bearer, or the admin) or
//! [`EnrollerOrReader`]. The enrollment token has no role: it opens only
//! the enrollment routes. A request without the right credential never
//! reaches the handler's body.
//!
//! The cookie is an ambient credential (the browser adds it by itself), so
//! a request that changes state with it must come from the hub's own page:
//! its `Origin` must be the hub's (403 otherwise) and a body must be JSON
//! (415 otherwise; a cross-site form or `text/plain` fetch cannot send
//! that without a CORS preflight, which the hub never grants). A bearer
//! token is never sent by a browser on its own, so bearer requests need
//! neither and `curl -d` works. Failed token checks count against the
//! client's address ([`crate::http::limits::Guesses`]).

use std::future::{ready, Ready};
use std::net::IpAddr;

use actix_web::dev::Payload;
use actix_web::http::{header, Method};
use actix_web::{web, FromRequest, HttpRequest};
use agentcom_protocol::Timestamp;

use crate::auth::Role;
use crate::http::error::HttpError;
use crate::http::AppState;

/// Name of the dashboard's session cookie (HttpOnly, SameSite=Strict).
pub(crate) const SESSION_COOKIE: &str = "agentcom_session";

/// What a request presents.
pub(crate) enum Credential {
    /// `Authorization: Bearer …`
    Bearer(String),
    /// The session cookie's id.
    Session(String),
}

/// The bearer token of `Authorization: Bearer …`, if that is what the
/// request carries.
pub(crate) fn bearer(req: &HttpRequest) -> Option<String> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// The credential a request presents: the `Authorization` header if there
/// is one, else the session cookie.
pub(crate) fn credential(req: &HttpRequest) -> Option<Credential> {
    if req.headers().contains_key(header::AUTHORIZATION) {
        return bearer(req).map(Credential::Bearer);
    }
    req.cookie(SESSION_COOKIE)
        .map(|c| Credential::Session(c.value().to_string()))
        .filter(|c| !matches!(c, Credential::Session(id) if id.is_empty()))
}

/// The address a request came from (the peer: forwarded headers can be
/// written by anyone).
pub(crate) fn client_ip(req: &HttpRequest) -> Option<IpAddr> {
    req.peer_addr().map(|a| a.ip())
}

/// The scheme the client used: https when the connection itself is TLS,
/// else what a proxy in front says (`Forwarded`/`X-Forwarded-*`, headers a
/// browser page cannot set on a request to another origin).
pub(crate) fn scheme(req: &HttpRequest) -> String {
    if req.app_config().secure() {
        "https".into()
    } else {
        req.connection_info().scheme().to_string()
    }
}

/// The hub's own origin as the client sees it: scheme and host of the
/// request.
fn own_origin(req: &HttpRequest) -> String {
    format!("{}://{}", scheme(req), req.connection_info().host())
}

/// A request carrying the cookie that changes state must come from the
/// hub's own page.
pub(crate) fn same_origin(req: &HttpRequest) -> Result<(), HttpError> {
    let own = own_origin(req);
    match req.headers().get(header::ORIGIN).map(|o| o.to_str()) {
        Some(Ok(o)) if o.eq_ignore_ascii_case(&own) => Ok(()),
        Some(o) => Err(HttpError::forbidden(format!(
            "a request from another origin ({}) may not change anything with this hub's session cookie; this hub is {own}",
            o.unwrap_or("?")
        ))),
        None => Err(HttpError::forbidden(
            "a request that changes state with the session cookie must carry an Origin header (browsers send it); scripts use Authorization: Bearer",
        )),
    }
}

/// The request's body, if it has one, must be declared JSON.
pub(crate) fn json_content_type(req: &HttpRequest, required: bool) -> Result<(), HttpError> {
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0);
    if !has_body && !required {
        return Ok(());
    }
    let essence = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    match essence.as_deref() {
        Some("application/json") => Ok(()),
        other => Err(HttpError::unsupported_media_type(format!(
            "send the body as Content-Type: application/json (got {})",
            other.unwrap_or("none")
        ))),
    }
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn role(req: &HttpRequest, state: &AppState) -> Result<Role, HttpError> {
    let now = Timestamp::now();
    match credential(req) {
        None => Err(HttpError::unauthorized(
            "missing token: send Authorization: Bearer <token>",
        )),
        Some(Credential::Bearer(token)) => {
            let ip = client_ip(req);
            state.guesses.check(ip, now)?;
            if let Some(role) = state.auth.role_of(&token) {
                return Ok(role);
            }
            if state.directory.agent_for(&token).is_some() {
                return Err(HttpError::forbidden(
                    "agent tokens only open the sidecar WebSocket (/ws)",
                ));
            }
            if state.auth.is_enroll(&token) {
                return Err(HttpError::forbidden(
                    "the enrollment token only enrolls agents (POST /api/agents/enroll) and follows their verification (GET /api/agents/{id}/verification)",
                ));
            }
            state.guesses.failed(ip, now);
            Err(HttpError::unauthorized("invalid token"))
        }
        Some(Credential::Session(id)) => {
            let role = state
                .sessions
                .token_of(&id, now)
                .and_then(|h| state.auth.role_of_hash(&h))
                .ok_or_else(|| HttpError::unauthorized("the session has ended; sign in again"))?;
            if changes_state(req.method()) {
                same_origin(req)?;
                json_content_type(req, false)?;
            }
            Ok(role)
        }
    }
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

/// Whether the request's bearer is the enrollment token; a token check
/// like any other (refused with 429 while the address has no guesses
/// left; a wrong token is counted by the role check that follows).
fn enroll_bearer(req: &HttpRequest, state: &AppState) -> Result<bool, HttpError> {
    let Some(Credential::Bearer(token)) = credential(req) else {
        return Ok(false);
    };
    state.guesses.check(client_ip(req), Timestamp::now())?;
    Ok(state.auth.is_enroll(&token))
}

/// A caller that may enroll agents: the enrollment token (as a bearer),
/// or the admin.
pub(crate) struct Enroller;

impl FromRequest for Enroller {
    type Error = HttpError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(state(req).and_then(|s| {
            if enroll_bearer(req, s)? {
                return Ok(Enroller);
            }
            if credential(req).is_none() {
                return Err(HttpError::unauthorized(
                    "missing token: send Authorization: Bearer <the hub's enrollment token> (in <data_dir>/enroll.token on the hub, or its enroll_token setting)",
                ));
            }
            match role(req, s)? {
                Role::Admin => Ok(Enroller),
                Role::Viewer => Err(HttpError::forbidden(
                    "this token may only read; enrolling an agent needs the enrollment token",
                )),
            }
        }))
    }
}

/// A caller that may follow an enrollment: the enrollment token, or any
/// reader.
pub(crate) struct EnrollerOrReader;

impl FromRequest for EnrollerOrReader {
    type Error = HttpError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(state(req).and_then(|s| {
            if enroll_bearer(req, s)? {
                return Ok(EnrollerOrReader);
            }
            role(req, s).map(|_| EnrollerOrReader)
        }))
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
