//! The answers of the deliveries and stats calls, field for field as E2B's document has them
//! (`WebhookDeliveriesListPayload`, `WebhookDeliveryGroup`, `WebhookDelivery`,
//! `WebhookDeliveryStats`): camelCase, every required field present, nullable ones `null`.

use crate::postgres::delivery_pages::{DeliveryPage, LoggedDelivery};
use crate::postgres::delivery_stats::{DeliveryStats, Figures};
use crate::postgres::webhooks::Webhook;
use crate::util::redact::redact_url_text;
use serde::Serialize;
use uuid::Uuid;

/// `WebhookDeliveriesListPayload`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveriesPayload {
    data: Vec<DeliveryGroup>,
    next_cursor: Option<String>,
}

/// `WebhookDeliveryGroup`: one event and its attempts.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryGroup {
    event_id: String,
    event_type: String,
    sandbox_id: String,
    attempts: Vec<WebhookDelivery>,
}

/// `WebhookDelivery`: one attempt.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookDelivery {
    id: Uuid,
    team_id: Uuid,
    webhook_id: Uuid,
    event_id: String,
    sandbox_id: String,
    event_type: String,
    status: &'static str,
    duration_ms: i32,
    request_body: String,
    request_headers: String,
    request_url: String,
    response_body: Option<String>,
    response_headers: Option<String>,
    response_http_status_code: Option<i32>,
    error_class: Option<String>,
    error_message: Option<String>,
    timestamp: jiff::Timestamp,
}

impl DeliveriesPayload {
    /// The page of `webhook`'s log.
    pub(super) fn new(webhook: &Webhook, page: DeliveryPage) -> Self {
        // Attempts logged before requests were: the webhook's URL as it is now.
        let current_url = redact_url_text(&webhook.url);
        let data = page
            .events
            .into_iter()
            .filter_map(|attempts| {
                let first = attempts.first()?;
                Some(DeliveryGroup {
                    event_id: first.event_id.clone(),
                    event_type: first.event_type.clone(),
                    sandbox_id: first.sandbox_id.clone(),
                    attempts: attempts
                        .into_iter()
                        .map(|a| WebhookDelivery::new(webhook, &current_url, a))
                        .collect(),
                })
            })
            .collect();
        Self {
            data,
            next_cursor: page.next.map(|c| c.encode()),
        }
    }
}

impl WebhookDelivery {
    fn new(webhook: &Webhook, current_url: &str, a: LoggedDelivery) -> Self {
        let delivered = a.outcome == "delivered";
        let answered_with_a_body = a.response_body.as_deref().is_some_and(|b| !b.is_empty());
        Self {
            id: a.id,
            team_id: webhook.team_id,
            webhook_id: webhook.id,
            event_id: a.event_id,
            sandbox_id: a.sandbox_id,
            event_type: a.event_type,
            status: if delivered { "success" } else { "failed" },
            duration_ms: i32::try_from(a.duration_ms).unwrap_or(i32::MAX),
            request_body: a.request_body.unwrap_or_default(),
            request_headers: a.request_headers.unwrap_or_else(|| "{}".to_owned()),
            request_url: a.request_url.unwrap_or_else(|| current_url.to_owned()),
            response_body: a.response_body,
            response_headers: a.response_headers,
            response_http_status_code: a.status,
            error_class: a.failure_class.filter(|_| !delivered),
            // The document: "for failures without a useful response body".
            error_message: a.error.filter(|_| !delivered && !answered_with_a_body),
            timestamp: a.started_at,
        }
    }
}

/// `WebhookDeliveryStats`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsPayload {
    buckets: Vec<StatsBucket>,
    total: i64,
    failed: i64,
    duration_ms: DurationStats,
}

/// `WebhookDeliveryStatsBucket`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StatsBucket {
    timestamp: jiff::Timestamp,
    total: i64,
    failed: i64,
    duration_ms: DurationStats,
}

/// `WebhookDeliveryDurationStats` (milliseconds; 0 without attempts).
#[derive(Debug, Serialize)]
struct DurationStats {
    minimum: f64,
    average: f64,
    maximum: f64,
}

impl From<&Figures> for DurationStats {
    fn from(f: &Figures) -> Self {
        Self {
            minimum: f.min_ms,
            average: f.avg_ms,
            maximum: f.max_ms,
        }
    }
}

impl From<DeliveryStats> for StatsPayload {
    fn from(stats: DeliveryStats) -> Self {
        Self {
            buckets: stats
                .buckets
                .iter()
                .map(|(timestamp, f)| StatsBucket {
                    timestamp: *timestamp,
                    total: f.total,
                    failed: f.failed,
                    duration_ms: f.into(),
                })
                .collect(),
            total: stats.overall.total,
            failed: stats.overall.failed,
            duration_ms: (&stats.overall).into(),
        }
    }
}
