//! `/dead-letters`: listing and replaying them — in Redis, shared by every instance, when the
//! service uses Redis; else in this instance's outbox.

use super::{ApiError, not_found};
use crate::admin::Admin;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeadLetterParams {
    endpoint: Option<String>,
}

pub(super) async fn list(
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
pub(super) struct ReplayRequest {
    #[serde(default)]
    ids: Vec<u64>,
    #[serde(default)]
    all: bool,
    endpoint: Option<String>,
}

pub(super) async fn replay(
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
        return Ok(replay_answer(&replayed, &report.skipped));
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
    Ok(replay_answer(&report.replayed, &report.skipped))
}

/// What a replay did: the ids put back, and each one skipped with why.
fn replay_answer(replayed: &[u64], skipped: &[(u64, String)]) -> Json<Value> {
    let skipped: Vec<Value> = skipped
        .iter()
        .map(|(id, why)| json!({"id": id, "reason": why}))
        .collect();
    Json(json!({"replayed": replayed, "skipped": skipped}))
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
