//! `/dead-letters`: listing and replaying them, wherever the service keeps them
//! ([`crate::dead_letters`]).

use super::{ApiError, not_found};
use crate::admin::Admin;
use crate::dead_letters::DeadLetterError;
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
    let all = admin.dead_letters().list().await?;
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
    let store = admin.dead_letters();
    let report = store
        .replay(ids.as_deref(), request.endpoint.as_deref())
        .await?;
    tracing::info!(
        target: "admin",
        requested = ?ids,
        endpoint = ?request.endpoint,
        replayed = ?report.replayed,
        skipped = report.skipped.len(),
        "admin: replayed dead letters {}",
        store.replayed_to()
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

impl From<DeadLetterError> for ApiError {
    fn from(e: DeadLetterError) -> Self {
        match e {
            DeadLetterError::Outbox(e) => e.into(),
            DeadLetterError::Shared(e) => ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
}
