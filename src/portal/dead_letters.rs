//! `/portal/api/webhooks/{id}/dead-letters`: the events the team's webhook gave up on, and
//! re-sending them through the operator's replay path (`crate::dead_letters`): back onto the
//! Redis stream for the active instance when dead letters are shared in Redis, else into this
//! instance's outbox — only ever for this webhook, and only dead letters whose
//! endpoint is the team's webhook and whose event is the team's.

use super::Portal;
use crate::api::{ApiError, Team};
use crate::dead_letters::DeadLetterError;
use crate::outbox::DeadLetter;
use crate::postgres::webhooks::endpoint_id;
use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

/// The team's dead letters for webhook `id`, oldest first.
pub(super) async fn list(
    State(portal): State<Portal>,
    Team(team): Team,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (_, letters) = team_letters(&portal, team, &id).await?;
    let shown: Vec<Value> = letters
        .iter()
        .map(|l| {
            json!({
                "id": l.id,
                "eventId": l.event_id,
                "sandboxId": l.sandbox_id,
                "eventType": l.event.as_ref().and_then(|e| e.get("type")).cloned(),
                "attempts": l.attempts,
                "lastStatus": l.last_status,
                "reason": l.reason,
                "deadAt": jiff::Timestamp::from_millisecond(l.dead_at_ms).ok(),
            })
        })
        .collect();
    Ok(Json(json!({ "data": shown })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplayRequest {
    ids: Vec<u64>,
}

/// Re-sends these dead letters of the team's webhook `id`; any other id is skipped as unknown.
pub(super) async fn replay(
    State(portal): State<Portal>,
    Team(team): Team,
    Path(id): Path<String>,
    Json(request): Json<ReplayRequest>,
) -> Result<Json<Value>, ApiError> {
    if request.ids.is_empty() {
        return Err(ApiError::invalid("ids", "name at least one dead letter"));
    }
    let (endpoint, letters) = team_letters(&portal, team, &id).await?;
    let (mine, unknown): (Vec<u64>, Vec<u64>) = request
        .ids
        .iter()
        .partition(|wanted| letters.iter().any(|l| l.id == **wanted));
    let mut skipped: Vec<(u64, String)> = unknown
        .into_iter()
        .map(|id| (id, "no such dead letter".to_owned()))
        .collect();
    let replayed = if mine.is_empty() {
        Vec::new()
    } else {
        let report = portal
            .settings
            .dead_letters()
            .replay(Some(&mine), Some(&endpoint))
            .await
            .map_err(unavailable)?;
        skipped.extend(report.skipped);
        report.replayed
    };
    tracing::info!(team = %team, endpoint = %endpoint, replayed = ?replayed, skipped = skipped.len(), "portal: re-sent dead letters");
    let skipped: Vec<Value> = skipped
        .iter()
        .map(|(id, why)| json!({"id": id, "reason": why}))
        .collect();
    Ok(Json(json!({"replayed": replayed, "skipped": skipped})))
}

/// The endpoint of the team's webhook `id` and its dead letters (404 when it is not the team's).
async fn team_letters(
    portal: &Portal,
    team: Uuid,
    id: &str,
) -> Result<(String, Vec<DeadLetter>), ApiError> {
    let id = Uuid::parse_str(id).map_err(|_| ApiError::NotFound)?;
    portal
        .api
        .database
        .team_webhook(team, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let endpoint = endpoint_id(id);
    let all = portal
        .settings
        .dead_letters()
        .list()
        .await
        .map_err(unavailable)?;
    let team = team.to_string();
    let letters = all
        .into_iter()
        .filter(|l| l.endpoint.as_deref() == Some(endpoint.as_str()))
        .filter(|l| {
            l.event
                .as_ref()
                .and_then(|e| e.get("sandbox_team_id"))
                .and_then(Value::as_str)
                == Some(team.as_str())
        })
        .collect();
    Ok((endpoint, letters))
}

fn unavailable(e: DeadLetterError) -> ApiError {
    tracing::warn!(error = %e, "portal: the dead letters are unavailable");
    ApiError::Unavailable
}
