//! `/events/webhooks`: a team registers, lists, reads, updates and deletes its webhooks. Another
//! team's webhook is answered 404, as if it did not exist.

use super::EventsApi;
use super::auth::Team;
use super::error::ApiError;
use super::webhook_body::{WebhookFields, required};
use crate::postgres::webhooks::{CreateError, NewWebhook, Webhook, WebhookChanges};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use url::Url;
use uuid::Uuid;

/// A webhook as E2B's document returns it (`WebhookCreation`, `WebhookDetail`: `teamId`;
/// `signatureSecret` is write-only).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookView {
    id: Uuid,
    team_id: Uuid,
    name: String,
    created_at: jiff::Timestamp,
    enabled: bool,
    url: String,
    events: Vec<String>,
}

impl From<Webhook> for WebhookView {
    fn from(w: Webhook) -> Self {
        Self {
            id: w.id,
            team_id: w.team_id,
            name: w.name,
            created_at: w.created_at,
            enabled: w.enabled,
            url: w.url,
            events: w.events,
        }
    }
}

/// `POST /events/webhooks`: 201 with the new webhook.
pub async fn register(
    State(api): State<EventsApi>,
    Team(team): Team,
    body: Bytes,
) -> Result<Response, ApiError> {
    let fields = WebhookFields::parse(&body)?;
    let url = required(fields.url, "url")?;
    let new = NewWebhook {
        team_id: team,
        name: required(fields.name, "name")?,
        enabled: fields.enabled.unwrap_or(true),
        events: required(fields.events, "events")?,
        signature_secret: required(fields.signature_secret, "signatureSecret")?,
        url: reachable(&api, url).await?,
    };
    let webhook = match api
        .database
        .create_webhook(new, api.webhooks_per_team)
        .await
    {
        Ok(webhook) => webhook,
        Err(CreateError::LimitReached { limit }) => return Err(ApiError::WebhookLimit(limit)),
        Err(CreateError::Store(e)) => return Err(e.into()),
    };
    tracing::info!(webhook = %webhook.id, team = %team, "webhook registered");
    Ok((StatusCode::CREATED, Json(WebhookView::from(webhook))).into_response())
}

/// `GET /events/webhooks`: the team's webhooks.
pub async fn list(
    State(api): State<EventsApi>,
    Team(team): Team,
) -> Result<Json<Vec<WebhookView>>, ApiError> {
    let webhooks = api.database.team_webhooks(team).await?;
    Ok(Json(webhooks.into_iter().map(WebhookView::from).collect()))
}

/// `GET /events/webhooks/{id}`.
pub async fn read(
    State(api): State<EventsApi>,
    Team(team): Team,
    Path(id): Path<String>,
) -> Result<Json<WebhookView>, ApiError> {
    let id = webhook_id(&id)?;
    match api.database.team_webhook(team, id).await? {
        Some(webhook) => Ok(Json(webhook.into())),
        None => Err(ApiError::NotFound),
    }
}

/// `PATCH /events/webhooks/{id}`: replaces the fields sent; 200 with the webhook.
pub async fn update(
    State(api): State<EventsApi>,
    Team(team): Team,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<WebhookView>, ApiError> {
    let id = webhook_id(&id)?;
    let fields = WebhookFields::parse(&body)?;
    if fields.is_empty() {
        return Err(ApiError::Body(
            "send at least one of name, url, enabled, events, signatureSecret".into(),
        ));
    }
    let url = match fields.url {
        Some(url) => Some(reachable(&api, url).await?),
        None => None,
    };
    let changes = WebhookChanges {
        name: fields.name,
        url,
        enabled: fields.enabled,
        events: fields.events,
        signature_secret: fields.signature_secret,
    };
    match api.database.update_webhook(team, id, changes).await? {
        Some(webhook) => {
            tracing::info!(webhook = %webhook.id, team = %team, "webhook updated");
            Ok(Json(webhook.into()))
        }
        None => Err(ApiError::NotFound),
    }
}

/// `DELETE /events/webhooks/{id}`: 200.
pub async fn remove(
    State(api): State<EventsApi>,
    Team(team): Team,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = webhook_id(&id)?;
    if api.database.delete_webhook(team, id).await? {
        tracing::info!(webhook = %id, team = %team, "webhook deleted");
        Ok(StatusCode::OK)
    } else {
        Err(ApiError::NotFound)
    }
}

/// A webhook id that is no UUID names no webhook.
fn webhook_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound)
}

/// The URL, unless it points inside the cluster.
async fn reachable(api: &EventsApi, url: Url) -> Result<String, ApiError> {
    api.destinations
        .check_url(&url)
        .await
        .map_err(|e| ApiError::invalid("url", e.to_string()))?;
    Ok(url.to_string())
}
