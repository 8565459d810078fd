//! `/deliveries`: recent delivery attempts, filtered, a page at a time.

use super::ApiError;
use crate::admin::Admin;
use crate::deliver::journal::DeliveryQuery;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;

/// Most deliveries one page returns.
const MAX_PAGE: usize = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeliveriesParams {
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

pub(super) async fn query(
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
