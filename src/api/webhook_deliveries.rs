//! `GET /events/webhooks/{id}/deliveries` and `GET /events/webhooks/{id}/stats`, as E2B's
//! document defines them: the webhook's delivery attempts grouped by event, newest first and
//! cursor-paged, and their counts and durations over a range in buckets. A webhook of another
//! team, or an id that is no UUID, is not found (404).

mod params;
mod shape;

use super::EventsApi;
use super::auth::Team;
use super::error::ApiError;
use crate::postgres::webhooks::{Webhook, endpoint_id};
use axum::Json;
use axum::extract::{Path, Query, State};
use params::Params;
use shape::{DeliveriesPayload, StatsPayload};
use uuid::Uuid;

/// A page of the attempts to the team's webhook `id`.
pub async fn list(
    State(api): State<EventsApi>,
    Team(team): Team,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<DeliveriesPayload>, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let request = params::page_request(&Params(query))?;
    let webhook = team_webhook(&api, team, id).await?;
    let page = api
        .database
        .delivery_page(&endpoint_id(id), &request)
        .await?;
    Ok(Json(DeliveriesPayload::new(&webhook, page)))
}

/// The stats of the team's webhook `id` over `start`/`end`.
pub async fn stats(
    State(api): State<EventsApi>,
    Team(team): Team,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<StatsPayload>, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let range = params::stats_range(&Params(query), jiff::Timestamp::now())?;
    team_webhook(&api, team, id).await?;
    let stats = api
        .database
        .delivery_stats(&endpoint_id(id), range.start, range.end, range.width)
        .await?;
    Ok(Json(stats.into()))
}

async fn team_webhook(api: &EventsApi, team: Uuid, id: Uuid) -> Result<Webhook, ApiError> {
    api.database
        .team_webhook(team, id)
        .await?
        .ok_or(ApiError::NotFound)
}
