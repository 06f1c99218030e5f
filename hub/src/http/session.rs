//! `/api/session`: the dashboard's sign-in. `POST {token}` (JSON only;
//! from the hub's own origin when the browser says one) checks the token
//! and opens a server-side session ([`crate::sessions`]) whose random id
//! goes into an HttpOnly, SameSite=Strict cookie (`Secure` over https)
//! that every `/api` route accepts; `GET` says who is signed in; `DELETE`
//! ends the session on the hub and clears the cookie.
//!
//! Sign-in attempts count against the client's address like any token
//! check: failures use up its allowance, and without one it gets 429.

use actix_web::cookie::{time, Cookie, SameSite};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use agentcom_protocol::Timestamp;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{hash_token, Role};
use crate::http::auth::{self, client_ip, json_content_type, same_origin, Reader, SESSION_COOKIE};
use crate::http::error::HttpError;
use crate::http::{body, AppState};

/// A sign-in body is a token; nothing bigger is read.
const MAX_SIGN_IN_BYTES: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignIn {
    token: String,
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Admin => "admin",
        Role::Viewer => "viewer",
    }
}

fn cookie(req: &HttpRequest, value: String, max_age: time::Duration) -> Cookie<'static> {
    Cookie::build(SESSION_COOKIE, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        // Secure when this connection is TLS (a forwarded-proto header
        // cannot take that away), or a proxy in front says it was https.
        .secure(auth::scheme(req) == "https")
        .max_age(max_age)
        .finish()
}

pub(crate) async fn sign_in(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, HttpError> {
    json_content_type(&req, true)?;
    if req.headers().contains_key(header::ORIGIN) {
        same_origin(&req)?;
    }
    let ip = client_ip(&req);
    state.guesses.check(ip, Timestamp::now())?;
    let s: SignIn = body::json_max(payload, &state, MAX_SIGN_IN_BYTES).await?;
    let token_sha256 = hash_token(&s.token);
    let Some(role) = state.auth.role_of_hash(&token_sha256) else {
        state.guesses.failed(ip, Timestamp::now());
        return Err(HttpError::unauthorized("invalid token"));
    };
    let sessions = state.sessions.clone();
    let (id, _) = web::block(move || sessions.create(token_sha256, Timestamp::now()))
        .await
        .map_err(|e| HttpError::unavailable(e.to_string()))?
        .map_err(|e| HttpError::unavailable(format!("the store failed: {e}")))?;
    let ttl = i64::try_from(state.settings.http.session_ttl_s).unwrap_or(i64::MAX);
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .cookie(cookie(&req, id, time::Duration::seconds(ttl)))
        .json(json!({ "role": role_name(role) })))
}

pub(crate) async fn whoami(Reader(role): Reader) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "role": role_name(role) }))
}

pub(crate) async fn sign_out(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HttpError> {
    if let Some(c) = req.cookie(SESSION_COOKIE).filter(|c| !c.value().is_empty()) {
        same_origin(&req)?;
        let sessions = state.sessions.clone();
        let id = c.value().to_string();
        web::block(move || sessions.revoke(&id))
            .await
            .map_err(|e| HttpError::unavailable(e.to_string()))?
            .map_err(|e| HttpError::unavailable(format!("the store failed: {e}")))?;
    }
    Ok(HttpResponse::Ok()
        .cookie(cookie(&req, String::new(), time::Duration::ZERO))
        .json(json!({ "signed_out": true })))
}
