//! The operator's window: `/metrics`, `/healthz`, `/readyz` and `/status` over HTTP.

pub mod metrics;

use crate::outbox::Outbox;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics::Metrics;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct ServerState {
    metrics: Arc<Metrics>,
    outbox: Outbox,
}

/// Serves the operator endpoints on `listener` until `shutdown`, with `extra` routes (the admin
/// API and console, when enabled) beside them.
pub async fn serve(
    listener: tokio::net::TcpListener,
    outbox: Outbox,
    extra: Option<axum::Router>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let state = ServerState {
        metrics: outbox.metrics().clone(),
        outbox,
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
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
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

async fn readyz(State(state): State<ServerState>) -> Response {
    let components = state.metrics.components();
    let ready = !components.is_empty() && components.values().all(|c| c.ready);
    let not_ready: Vec<String> = components
        .iter()
        .filter(|(_, c)| !c.ready)
        .map(|(name, c)| format!("{name}: {}", c.detail))
        .collect();
    let body =
        serde_json::json!({ "ready": ready, "components": components, "problems": not_ready });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn status(State(state): State<ServerState>) -> Response {
    match state.outbox.status().await {
        Ok(status) => axum::Json(status).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
