//! `/api/session`: the dashboard's sign-in. `POST {token}` checks the token
//! and sets it in an HttpOnly, SameSite=Strict cookie that every `/api`
//! route accepts; `GET` says who is signed in; `DELETE` signs out.

use actix_web::cookie::{time, Cookie, SameSite};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::auth::Role;
use crate::http::auth::{Reader, SESSION_COOKIE};
use crate::http::error::HttpError;
use crate::http::{body, AppState};

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
        .secure(req.app_config().secure() || req.connection_info().scheme() == "https")
        .max_age(max_age)
        .finish()
}

pub(crate) async fn sign_in(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, HttpError> {
    let s: SignIn = body::json(payload).await?;
    let role = state
        .auth
        .role_of(&s.token)
        .ok_or_else(|| HttpError::unauthorized("invalid token"))?;
    Ok(HttpResponse::Ok()
        .cookie(cookie(
            &req,
            s.token.trim().to_string(),
            time::Duration::hours(12),
        ))
        .json(json!({ "role": role_name(role) })))
}

pub(crate) async fn whoami(Reader(role): Reader) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "role": role_name(role) }))
}

pub(crate) async fn sign_out(req: HttpRequest) -> HttpResponse {
    HttpResponse::Ok()
        .cookie(cookie(&req, String::new(), time::Duration::ZERO))
        .json(json!({ "signed_out": true }))
}
