//! The operator's window: `/metrics`, `/healthz`, `/readyz` and `/status` over HTTP.
//!
//! `/healthz` and `/metrics` are open (Nomad and Prometheus need them); `/readyz` answers a status
//! code and component names to anyone, details (addresses, errors) with the admin token only;
//! `/status` needs the admin token.

pub mod listen;
pub mod logs;
pub mod otlp;

use crate::admin::auth::{self, AdminToken, Admission};
use crate::health::Readiness;
use crate::leadership::Leadership;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use axum::extract::Request;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct ServerState {
    metrics: Arc<Metrics>,
    readiness: Readiness,
    outbox: Outbox,
    admin: Option<AdminToken>,
    leadership: Leadership,
}

/// What the operator endpoints show: the outbox (its metrics on `/metrics`, its status on
/// `/status`), the components' readiness (`/readyz`) and the lease.
pub struct OpsView {
    /// The outbox.
    pub outbox: Outbox,
    /// Every component's readiness.
    pub readiness: Readiness,
    /// Who holds the leader lease.
    pub leadership: Leadership,
    /// The admin token: details on `/readyz`, and `/status`; none turns them off.
    pub admin: Option<AdminToken>,
}

/// Serves the operator endpoints on `listener` until `shutdown`, with `extra` routes (the admin
/// API and console, when enabled) beside them.
pub async fn serve(
    listener: tokio::net::TcpListener,
    view: OpsView,
    extra: Option<axum::Router>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let state = ServerState {
        metrics: view.outbox.metrics().clone(),
        readiness: view.readiness,
        outbox: view.outbox,
        admin: view.admin,
        leadership: view.leadership,
    };
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics_page))
        .route(
            "/healthz",
            axum::routing::get(|| async { axum::Json(serde_json::json!({"alive": true})) }),
        )
        .route("/readyz", axum::routing::get(readyz))
        .route("/status", axum::routing::get(status))
        .with_state(state)
        .merge(extra.unwrap_or_default());
    // The port is reachable from the network: a slowloris must not starve Nomad's check.
    let limits = listen::ConnectionLimits {
        max_connections: 256,
        ..listen::ConnectionLimits::default()
    };
    listen::serve(listener, app, limits, shutdown.cancelled_owned()).await
}

async fn metrics_page(State(state): State<ServerState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn readyz(State(state): State<ServerState>, request: Request) -> Response {
    let components = state.readiness.components();
    let ready = !components.is_empty() && components.values().all(|c| c.ready);
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if admission(&state, &request) == Some(Admission::Admitted) {
        let problems: Vec<String> = components
            .iter()
            .filter(|(_, c)| !c.ready)
            .map(|(name, c)| format!("{name}: {}", c.detail))
            .collect();
        let body =
            serde_json::json!({ "ready": ready, "components": components, "problems": problems });
        return (code, axum::Json(body)).into_response();
    }
    // Without the token: names and short fixed reasons only, never an address or an error text.
    let problems: Vec<String> = components
        .iter()
        .filter(|(_, c)| !c.ready)
        .map(|(name, c)| format!("{name}: {}", c.summary))
        .collect();
    let bare: serde_json::Map<String, serde_json::Value> = components
        .iter()
        .map(|(name, c)| ((*name).to_owned(), serde_json::json!({ "ready": c.ready })))
        .collect();
    let body = serde_json::json!({ "ready": ready, "components": bare, "problems": problems });
    (code, axum::Json(body)).into_response()
}

/// The outbox's status, and who holds the leader lease (`lease`).
async fn status(State(state): State<ServerState>, request: Request) -> Response {
    match admission(&state, &request) {
        Some(Admission::Admitted) => {}
        Some(refused) => {
            return auth::refusal(
                refused,
                "/status needs the header Authorization: Bearer <ADMIN_TOKEN>",
            );
        }
        None => return unconfigured("/status"),
    }
    match state.outbox.status().await {
        Ok(status) => {
            let mut body = serde_json::to_value(status).unwrap_or_default();
            body["lease"] = serde_json::to_value(state.leadership.view()).unwrap_or_default();
            axum::Json(body).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// What the request's credentials got it; `None` when no admin token is configured.
fn admission(state: &ServerState, request: &Request) -> Option<Admission> {
    state
        .admin
        .as_ref()
        .map(|token| token.admit(request.headers(), auth::peer(request)))
}

/// The answer to a request that needs the admin token when none is configured.
fn unconfigured(what: &str) -> Response {
    let message =
        format!("{what} needs the admin token; set ADMIN_TOKEN on the service to enable it");
    (
        StatusCode::FORBIDDEN,
        axum::Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}
