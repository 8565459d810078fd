//! The admin API's nouns: endpoints (with health), deliveries, dead letters, replay, pause and
//! resume, test events, the lease. Every write is logged with what it changed.

use super::Admin;
use crate::deliver::format;
use crate::deliver::http::WebhookClient;
use crate::deliver::journal::{Attempted, DeliveryQuery};
use crate::event::Lifecycle;
use crate::util::time::now_ms;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Most deliveries one page returns.
const MAX_PAGE: usize = 500;

pub(super) fn router() -> axum::Router<Admin> {
    axum::Router::new()
        .route("/status", get(status))
        .route("/endpoints", get(endpoints))
        .route("/endpoints/{id}/pause", post(pause))
        .route("/endpoints/{id}/resume", post(resume))
        .route("/endpoints/{id}/test-event", post(test_event))
        .route("/deliveries", get(deliveries))
        .route("/dead-letters", get(dead_letters))
        .route("/dead-letters/replay", post(replay))
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

/// One endpoint with its health, as the console shows it.
#[derive(Serialize)]
struct EndpointHealth {
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

async fn endpoint_health(admin: &Admin) -> Result<Vec<EndpointHealth>, ApiError> {
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
        "components": admin.outbox.metrics().components(),
        "outbox": outbox,
        "endpoints": endpoint_health(&admin).await?,
    })))
}

async fn endpoints(State(admin): State<Admin>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"endpoints": endpoint_health(&admin).await?})))
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

async fn pause(
    State(admin): State<Admin>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_paused(&admin, &id, true).await
}

async fn resume(
    State(admin): State<Admin>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_paused(&admin, &id, false).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TestEventRequest {
    /// Lifecycle label; `kill` by default.
    event: Option<String>,
    sandbox_id: Option<String>,
    team_id: Option<String>,
}

/// Sends one signed test event straight to the endpoint (not through the outbox, so the answer
/// comes back now) and shows it in the live feed.
async fn test_event(
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
    let client = WebhookClient::new(config.timeout, config.response_body_limit)
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveriesParams {
    endpoint: Option<String>,
    sandbox: Option<String>,
    event_id: Option<String>,
    outcome: Option<String>,
    /// RFC 3339 time or ms since the epoch.
    since: Option<String>,
    until: Option<String>,
    cursor: Option<u64>,
    limit: Option<usize>,
}

fn time_param(name: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .map(|v| {
            DeliveryQuery::parse_time(v).ok_or_else(|| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("{name}: an RFC 3339 time or milliseconds since the epoch"),
                )
            })
        })
        .transpose()
}

async fn deliveries(
    State(admin): State<Admin>,
    Query(p): Query<DeliveriesParams>,
) -> Result<Json<Value>, ApiError> {
    if let Some(outcome) = &p.outcome
        && !["delivered", "retry", "dead", "rejected"].contains(&outcome.as_str())
    {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "outcome: delivered, retry, dead or rejected (a failed test event)".into(),
        ));
    }
    let query = DeliveryQuery {
        endpoint: p.endpoint,
        sandbox_id: p.sandbox,
        event_id: p.event_id,
        outcome: p.outcome,
        since_ms: time_param("since", p.since.as_deref())?,
        until_ms: time_param("until", p.until.as_deref())?,
        before: p.cursor,
        limit: p.limit.unwrap_or(100).min(MAX_PAGE),
    };
    Ok(Json(
        serde_json::to_value(admin.journal.query(&query)).expect("serializable"),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLetterParams {
    endpoint: Option<String>,
}

async fn dead_letters(
    State(admin): State<Admin>,
    Query(p): Query<DeadLetterParams>,
) -> Result<Json<Value>, ApiError> {
    let all = match &admin.shared_dead_letters {
        Some(redis) => shared(redis).await?.list().await.map_err(unavailable)?,
        None => admin.outbox.dead_letters().await?,
    };
    let letters: Vec<_> = all
        .into_iter()
        .filter(|d| {
            p.endpoint
                .as_deref()
                .is_none_or(|e| d.endpoint.as_deref() == Some(e))
        })
        .collect();
    Ok(Json(json!({"dead_letters": letters})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    #[serde(default)]
    ids: Vec<u64>,
    #[serde(default)]
    all: bool,
    endpoint: Option<String>,
}

async fn replay(
    State(admin): State<Admin>,
    Json(request): Json<ReplayRequest>,
) -> Result<Json<Value>, ApiError> {
    // Exactly one of the two: a list of ids, or everything.
    if request.all != request.ids.is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "give either \"ids\": [..] or \"all\": true".into(),
        ));
    }
    if let Some(endpoint) = &request.endpoint
        && !admin.endpoints.iter().any(|e| &e.config.id == endpoint)
    {
        return Err(not_found(format!("no endpoint {endpoint:?} is configured")));
    }
    let ids = (!request.all).then_some(request.ids);
    if let Some(redis) = &admin.shared_dead_letters {
        // Back onto the stream, for the endpoint each failed for: the active instance delivers.
        let report = shared(redis)
            .await?
            .replay(ids.as_deref(), request.endpoint.as_deref())
            .await
            .map_err(unavailable)?;
        tracing::info!(
            target: "admin",
            requested = ?ids,
            endpoint = ?request.endpoint,
            replayed = ?report.replayed,
            skipped = report.skipped.len(),
            "admin: replayed dead letters onto the stream, for the active instance"
        );
        let replayed: Vec<u64> = report.replayed.iter().map(|(id, _)| *id).collect();
        let skipped: Vec<Value> = report
            .skipped
            .iter()
            .map(|(id, why)| json!({"id": id, "reason": why}))
            .collect();
        return Ok(Json(json!({"replayed": replayed, "skipped": skipped})));
    }
    let report = admin
        .outbox
        .replay_dead_letters(ids.clone(), request.endpoint.clone())
        .await?;
    tracing::info!(
        target: "admin",
        requested = ?ids,
        endpoint = ?request.endpoint,
        replayed = ?report.replayed,
        skipped = report.skipped.len(),
        "admin: replayed dead letters into the outbox"
    );
    let skipped: Vec<Value> = report
        .skipped
        .iter()
        .map(|(id, why)| json!({"id": id, "reason": why}))
        .collect();
    Ok(Json(
        json!({"replayed": report.replayed, "skipped": skipped}),
    ))
}

/// The shared dead letters in Redis.
async fn shared(
    redis: &crate::source::redis::RedisSettings,
) -> Result<crate::source::redis::SharedDeadLetters, ApiError> {
    crate::source::redis::SharedDeadLetters::connect(redis)
        .await
        .map_err(unavailable)
}

fn unavailable(e: crate::source::redis::RedisSourceError) -> ApiError {
    ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}
