//! `GET /events/webhooks/{id}/deliveries` (our extension; E2B Cloud has no such call): the
//! webhook's delivery attempts, newest first, with the history's `offset`, `limit`, `orderAsc`.

use super::EventsApi;
use super::auth::Team;
use super::error::ApiError;
use super::sandbox_events::page;
use crate::postgres::delivery_log::AttemptRow;
use crate::postgres::webhooks::endpoint_id;
use axum::Json;
use axum::extract::{Path, Query, State};
use std::collections::HashMap;
use uuid::Uuid;

/// The attempts to the team's webhook `id`; 404 for another team's.
pub async fn list(
    State(api): State<EventsApi>,
    Team(team): Team,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<AttemptRow>>, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let page = page(&query)?;
    if api.database.team_webhook(team, id).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    Ok(Json(
        api.database
            .endpoint_attempts(&endpoint_id(id), page)
            .await?,
    ))
}
