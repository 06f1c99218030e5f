//! `/dashboard`: the live dashboard, served from files compiled into the
//! binary (no build step, nothing to install). The page signs in through
//! `/api/session` (from its form, or a sign-in link
//! `/dashboard#token=…`, whose fragment never reaches the hub) and then
//! lives on `/api/events`. `/` sends a browser to it.

use actix_web::HttpResponse;

const INDEX: &str = include_str!("../../dashboard/index.html");
const APP_JS: &str = include_str!("../../dashboard/app.js");
const STYLE: &str = include_str!("../../dashboard/style.css");

/// Task titles and results are operator/agent text: the page only ever
/// inserts them as text, and this policy forbids anything but our own files.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

fn file(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("Content-Security-Policy", CSP))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Cache-Control", "no-cache"))
        .body(body)
}

/// `/`: 307 to the dashboard.
pub(crate) async fn root() -> HttpResponse {
    HttpResponse::TemporaryRedirect()
        .insert_header(("Location", "/dashboard"))
        .finish()
}

pub(crate) async fn index() -> HttpResponse {
    file("text/html; charset=utf-8", INDEX)
}

pub(crate) async fn app_js() -> HttpResponse {
    file("text/javascript; charset=utf-8", APP_JS)
}

pub(crate) async fn style() -> HttpResponse {
    file("text/css; charset=utf-8", STYLE)
}
