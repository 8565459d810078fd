//! The console page at `/`: static HTML, JS and CSS compiled into the binary (no build step). The
//! page holds no data; everything it shows comes from the admin API with the login cookie.

use super::Admin;
use super::auth;
use axum::Form;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use std::net::SocketAddr;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// Scripts and styles only from this origin, no framing, nothing cached.
const SECURITY_HEADERS: [(header::HeaderName, &str); 5] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::CACHE_CONTROL, "no-store"),
];

pub(super) fn router() -> axum::Router<Admin> {
    axum::Router::new()
        .route("/", get(|| page("text/html; charset=utf-8", INDEX)))
        .route(
            "/console.js",
            get(|| page("text/javascript; charset=utf-8", SCRIPT)),
        )
        .route(
            "/console.css",
            get(|| page("text/css; charset=utf-8", STYLE)),
        )
        .route("/login", post(login))
        .route("/logout", post(logout))
}

async fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    for (name, value) in SECURITY_HEADERS {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    response
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

/// Starts a console session (an `HttpOnly`, `SameSite=Strict` cookie) when the form carries the
/// admin token; an address that failed too often is turned away without the token being checked.
async fn login(
    State(admin): State<Admin>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<Login>,
) -> Response {
    if admin.token.throttled(peer.ip()).is_some() {
        return Redirect::to("/?throttled").into_response();
    }
    if !admin.token.matches(form.token.trim()) {
        admin.token.failed(peer.ip());
        tracing::warn!(target: "admin", "admin: console login refused");
        return Redirect::to("/?denied").into_response();
    }
    tracing::info!(target: "admin", "admin: console login");
    (
        [(header::SET_COOKIE, admin.token.login_cookie())],
        Redirect::to("/"),
    )
        .into_response()
}

async fn logout() -> Response {
    (
        [(header::SET_COOKIE, auth::logout_cookie())],
        Redirect::to("/"),
    )
        .into_response()
}
