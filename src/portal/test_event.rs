//! `POST /portal/api/webhooks/{id}/test`: one signed test event straight to the team's webhook,
//! as its deliveries are made (E2B Cloud's format, its secret, the URL guard checked again when
//! connecting), and the answer shown at once: status, time, the first bytes of the body. Not
//! through the outbox, so it is neither retried nor counted in the webhook's delivery log.
//! `POST /portal/api/check-url`: the URL guard's verdict before a webhook is saved.

use super::Portal;
use crate::api::{ApiError, Team};
use crate::deliver::format::{self, EndpointIdentity, WireFormat};
use crate::deliver::http::WebhookClient;
use crate::deliver::sign::{SecretSet, SignatureEncoding};
use crate::event::Lifecycle;
use crate::postgres::webhooks::endpoint_id;
use crate::util::secret::Secret;
use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

/// Bytes of the answer's body the page shows.
const SHOWN_BODY_BYTES: usize = 512;
/// The sandbox id a test event names, so a receiver can tell it from a real one.
const TEST_SANDBOX: &str = "e2b-webhook-emitter-test";

/// Sends a test event of the webhook's first subscribed type.
pub(super) async fn send(
    State(portal): State<Portal>,
    Team(team): Team,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let database = &portal.api.database;
    let webhook = database
        .team_webhook(team, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    // The secret is opened as deliveries open it.
    let registration = database.team_registration(team, id).await?.ok_or_else(|| {
        ApiError::invalid("enabled", "enable the webhook to send it a test event")
    })?;
    let event_type = webhook
        .events
        .first()
        .cloned()
        .unwrap_or_else(|| "sandbox.lifecycle.created".into());
    let event = crate::deliver::probe::test_event(
        Lifecycle::from_type(&event_type),
        TEST_SANDBOX,
        &team.to_string(),
        "portal-test-event",
    )
    .map_err(|e| ApiError::invalid("events", e.to_string()))?;
    let secrets = SecretSet::from_secrets(vec![Secret::new(registration.signature_secret)])
        .map_err(|e| ApiError::invalid("signatureSecret", e))?;
    let identity = EndpointIdentity {
        id: endpoint_id(id),
        webhook_id: id,
        signature_encoding: SignatureEncoding::default(),
    };
    let signed = format::render(
        WireFormat::E2bCloud,
        &event,
        &identity,
        &secrets,
        1,
        jiff::Timestamp::now(),
    );
    let url = url::Url::parse(&webhook.url).map_err(|e| ApiError::invalid("url", e.to_string()))?;
    let settings = &portal.settings;
    let client = WebhookClient::restricted(
        settings.timeout,
        settings.response_body_limit,
        portal.api.destinations.clone(),
    )
    .map_err(|e| {
        tracing::warn!(error = %e, "portal: cannot build the test event's client");
        ApiError::Unavailable
    })?;
    let attempt = client.post(&url, &signed).await;
    let body = attempt.response.as_ref().map(|r| {
        let shown = &r.body[..r.body.len().min(SHOWN_BODY_BYTES)];
        String::from_utf8_lossy(shown).into_owned()
    });
    tracing::info!(webhook = %id, team = %team, result = attempt.outcome.kind(), "portal: sent a test event");
    Ok(Json(json!({
        "eventId": event.id(),
        "eventType": event_type,
        "delivered": attempt.outcome.is_delivered(),
        "status": attempt.outcome.status(),
        "durationMs": attempt.elapsed.as_millis() as u64,
        "errorClass": attempt.outcome.error_class().map(|c| c.as_str()),
        "result": attempt.outcome.describe(),
        "body": body,
    })))
}

#[derive(Deserialize)]
pub(super) struct UrlToCheck {
    url: String,
}

/// Whether the API would take `url` for a webhook, and why not.
pub(super) async fn check_url(
    State(portal): State<Portal>,
    Team(_): Team,
    Json(request): Json<UrlToCheck>,
) -> Result<Json<Value>, ApiError> {
    let url =
        url::Url::parse(request.url.trim()).map_err(|e| ApiError::invalid("url", e.to_string()))?;
    portal
        .api
        .destinations
        .check_url(&url)
        .await
        .map_err(|e| ApiError::invalid("url", e.to_string()))?;
    Ok(Json(json!({"url": url.as_str()})))
}
