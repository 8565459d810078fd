//! The admin API's nouns: endpoints (with health), deliveries, dead letters, replay, pause and
//! resume, test events, the lease. Every write is logged with what it changed.

mod dead_letters;
mod deliveries;
mod endpoints;

use super::Admin;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

pub(super) fn router() -> axum::Router<Admin> {
    axum::Router::new()
        .route("/status", get(status))
        .route("/endpoints", get(endpoints::list))
        .route("/endpoints/{id}/pause", post(endpoints::pause))
        .route("/endpoints/{id}/resume", post(endpoints::resume))
        .route("/endpoints/{id}/test-event", post(endpoints::test_event))
        .route("/deliveries", get(deliveries::query))
        .route("/dead-letters", get(dead_letters::list))
        .route("/dead-letters/replay", post(dead_letters::replay))
        .route("/lease", get(lease))
        .route("/reconciliation", get(reconciliation))
}

/// An error as the API answers it: a status and one sentence.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

impl From<crate::outbox::OutboxError> for ApiError {
    fn from(e: crate::outbox::OutboxError) -> Self {
        Self(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

fn not_found(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, e.to_string())
}

/// The leader lease as this instance last saw it (a single instance without Redis).
fn lease_view(admin: &Admin) -> Value {
    let view = admin.leadership.view();
    let mode = if view.me.is_empty() {
        "single instance"
    } else if view.active {
        "active"
    } else {
        "standby"
    };
    json!({
        "mode": mode,
        "holder": view.holder,
        "since": view.since,
        "fence": view.fence,
        "this_instance": view.me,
        "this_instance_leads": view.active,
    })
}

async fn status(State(admin): State<Admin>) -> Result<Json<Value>, ApiError> {
    let outbox = admin.outbox.status().await?;
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "lease": lease_view(&admin),
        "components": admin.readiness.components(),
        "outbox": outbox,
        "endpoints": endpoints::health(&admin).await?,
    })))
}

async fn reconciliation(State(admin): State<Admin>) -> Json<Value> {
    match &admin.reconciliation {
        Some(report) => Json(serde_json::to_value(&*report.borrow()).expect("serializable")),
        None => Json(json!({"enabled": false})),
    }
}

async fn lease(State(admin): State<Admin>) -> Json<Value> {
    Json(lease_view(&admin))
}
