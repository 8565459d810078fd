//! `/endpoints`: each configured endpoint with its health, pausing and resuming it, and a test
//! event sent to it now.

use super::{ApiError, not_found};
use crate::admin::Admin;
use crate::deliver::format;
use crate::deliver::http::WebhookClient;
use crate::deliver::journal::Attempted;
use crate::event::Lifecycle;
use crate::util::time::now_ms;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// One endpoint with its health, as the console shows it.
#[derive(Serialize)]
pub(super) struct EndpointHealth {
    id: String,
    url: String,
    format: String,
    events: String,
    paused: bool,
    backlog: u64,
    oldest_pending_age_s: Option<i64>,
    oldest_last_error: Option<String>,
    success_5m: crate::deliver::journal::SuccessRate,
    success_60m: crate::deliver::journal::SuccessRate,
}

pub(super) async fn health(admin: &Admin) -> Result<Vec<EndpointHealth>, ApiError> {
    let status = admin.outbox.status().await?;
    let now = now_ms();
    Ok(admin
        .endpoints
        .iter()
        .map(|e| {
            let id = &e.config.id;
            let backlog = status.endpoints.iter().find(|b| &b.endpoint == id);
            EndpointHealth {
                id: id.clone(),
                url: e.url_shown.clone(),
                format: e.config.format.to_string(),
                events: e.config.events.to_string(),
                paused: admin.controls.is_paused(id),
                backlog: backlog.map_or(0, |b| b.depth),
                oldest_pending_age_s: backlog
                    .and_then(|b| b.oldest_appended_at_ms)
                    .map(|t| ((now - t) / 1000).max(0)),
                oldest_last_error: backlog.and_then(|b| b.oldest_last_error.clone()),
                success_5m: admin.journal.success_rate(id, 5),
                success_60m: admin.journal.success_rate(id, 60),
            }
        })
        .collect())
}

pub(super) async fn list(State(admin): State<Admin>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"endpoints": health(&admin).await?})))
}

async fn set_paused(admin: &Admin, id: &str, paused: bool) -> Result<Json<Value>, ApiError> {
    let changed = admin.controls.set_paused(id, paused).map_err(not_found)?;
    let saved = serde_json::to_vec(&admin.controls.paused()).expect("a list of ids serializes");
    admin
        .outbox
        .save_state(crate::deliver::control::STATE_KEY, saved)
        .await?;
    let backlog = admin
        .outbox
        .status()
        .await?
        .endpoints
        .iter()
        .find(|b| b.endpoint == id)
        .map_or(0, |b| b.depth);
    tracing::info!(
        target: "admin",
        endpoint = id,
        paused,
        changed,
        backlog,
        "admin: endpoint {}",
        if paused { "paused (its events wait in the outbox)" } else { "resumed" }
    );
    Ok(Json(
        json!({"endpoint": id, "paused": paused, "changed": changed, "backlog": backlog}),
    ))
}

pub(super) async fn pause(
    State(admin): State<Admin>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_paused(&admin, &id, true).await
}

pub(super) async fn resume(
    State(admin): State<Admin>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_paused(&admin, &id, false).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct TestEventRequest {
    /// Lifecycle label; `kill` by default.
    event: Option<String>,
    sandbox_id: Option<String>,
    team_id: Option<String>,
}

/// Sends one signed test event straight to the endpoint (not through the outbox, so the answer
/// comes back now) and shows it in the live feed.
pub(super) async fn test_event(
    State(admin): State<Admin>,
    Path(id): Path<String>,
    body: Option<Json<TestEventRequest>>,
) -> Result<Json<Value>, ApiError> {
    let endpoint = admin
        .endpoints
        .iter()
        .find(|e| e.config.id == id)
        .ok_or_else(|| not_found(format!("no endpoint {id:?} is configured")))?;
    let request = body.map(|Json(b)| b).unwrap_or_default();
    let label = request.event.unwrap_or_else(|| "kill".into());
    let lifecycle = Lifecycle::from_label(&label);
    if matches!(lifecycle, Lifecycle::Unknown(_)) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("{label:?} is not one of create, kill, pause, resume, update, checkpoint"),
        ));
    }
    let event = crate::deliver::probe::test_event(
        lifecycle,
        request
            .sandbox_id
            .as_deref()
            .unwrap_or("e2b-webhook-emitter-test"),
        request
            .team_id
            .as_deref()
            .unwrap_or("00000000-0000-0000-0000-000000000000"),
        "admin-test-event",
    )
    .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let config = &endpoint.config;
    let signed = format::render(
        config.format,
        &event,
        &config.identity(),
        &config.secrets,
        1,
        jiff::Timestamp::now(),
    );
    let client = WebhookClient::for_endpoint(config)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let attempt = client.post(&config.url, &signed).await;
    let delivered = attempt.outcome.is_delivered();
    let describe = attempt.outcome.describe();
    let latency_ms = attempt.elapsed.as_millis() as u64;
    admin.journal.record(Attempted {
        endpoint: config.id.clone(),
        event_id: event.id().to_owned(),
        sandbox_id: event.sandbox_id().to_owned(),
        label: event.lifecycle.label().to_owned(),
        outcome: if delivered { "delivered" } else { "rejected" },
        status: attempt.outcome.status(),
        attempt: 1,
        latency_ms,
        error: (!delivered).then(|| describe.clone()),
        test: true,
        exchange: None,
    });
    tracing::info!(target: "admin", endpoint = %config.id, event_id = event.id(), label = %label, result = %describe, "admin: sent a test event");
    Ok(Json(json!({
        "endpoint": config.id,
        "event_id": event.id(),
        "delivered": delivered,
        "status": attempt.outcome.status(),
        "result": describe,
        "latency_ms": latency_ms,
    })))
}
