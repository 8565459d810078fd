//! The portal's page: HTML, CSS and JavaScript modules compiled into the binary (no build step,
//! nothing fetched from another host), served with a Content-Security-Policy that allows scripts
//! and styles from this origin only, so no inline script runs even if tenant text were ever
//! mistaken for markup (the scripts set it with `textContent` only).

use super::Portal;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

const INDEX: &str = include_str!("assets/index.html");
/// The stylesheet and script modules, by the name the page asks for.
const FILES: [(&str, &str, &str); 10] = [
    ("portal.css", "text/css", include_str!("assets/portal.css")),
    ("app.js", "text/javascript", include_str!("assets/app.js")),
    ("api.js", "text/javascript", include_str!("assets/api.js")),
    ("dom.js", "text/javascript", include_str!("assets/dom.js")),
    ("list.js", "text/javascript", include_str!("assets/list.js")),
    (
        "editor.js",
        "text/javascript",
        include_str!("assets/editor.js"),
    ),
    (
        "detail.js",
        "text/javascript",
        include_str!("assets/detail.js"),
    ),
    (
        "overview.js",
        "text/javascript",
        include_str!("assets/overview.js"),
    ),
    (
        "deliveries.js",
        "text/javascript",
        include_str!("assets/deliveries.js"),
    ),
    (
        "timeline.js",
        "text/javascript",
        include_str!("assets/timeline.js"),
    ),
];

/// Only this origin's scripts and styles; the chart is inline SVG built by script (`img-src`
/// needs nothing); no framing; nothing cached (the page changes with the binary).
const SECURITY_HEADERS: [(header::HeaderName, &str); 5] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::CACHE_CONTROL, "no-store"),
];

pub(super) fn router() -> axum::Router<Portal> {
    axum::Router::new()
        .route("/portal", get(|| async { Redirect::permanent("/portal/") }))
        .route("/portal/", get(|| async { asset("text/html", INDEX) }))
        .route("/portal/assets/{name}", get(file))
}

async fn file(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(file, _, _)| *file == name) {
        Some((_, content_type, body)) => asset(content_type, body),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let content_type = format!("{content_type}; charset=utf-8");
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    for (name, value) in SECURITY_HEADERS {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    response
}
