//! The delivery log in `webhook_emitter.delivery_attempts`: every attempt, written in batches,
//! read back per endpoint newest first (the CLI's view; the events API's pages and stats are in
//! `delivery_pages.rs` and `delivery_stats.rs`).

use super::sandbox_events::Page;
use super::{Database, StoreError};
use serde::Serialize;

/// One attempt.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRow {
    /// When the attempt finished.
    pub attempted_at: jiff::Timestamp,
    /// The endpoint (`webhook:<id>` for a registered webhook).
    pub endpoint: String,
    /// The event delivered.
    pub event_id: String,
    /// Its sandbox.
    pub sandbox_id: String,
    /// Its lifecycle label (`kill`).
    pub event_type: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// `delivered`, `retry` or `dead`.
    pub outcome: String,
    /// The HTTP status, when there was an answer.
    pub status: Option<u16>,
    /// `http`, `timeout` or `network` when it failed.
    pub error_class: Option<String>,
    /// What failed, briefly (no URL credentials).
    pub error: Option<String>,
    /// How long the attempt took.
    pub duration_ms: u64,
}

/// One attempt as it is written: the CLI's view of it, and what E2B's delivery log adds —
/// already redacted (the writer redacts; nothing secret reaches the table).
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedAttempt {
    /// What the CLI shows.
    pub attempt: AttemptRow,
    /// When the request started.
    pub started_at: jiff::Timestamp,
    /// The event's full type (`sandbox.lifecycle.killed`).
    pub event_type: String,
    /// E2B's error class (`http_error`, `timeout`, …), none when delivered.
    pub failure_class: Option<String>,
    /// The URL, credentials and query hidden (none when the request is not known).
    pub request_url: Option<String>,
    /// The request headers as a JSON object, signatures hidden.
    pub request_headers: Option<String>,
    /// The request body.
    pub request_body: Option<String>,
    /// The response headers as a JSON object, when an answer came.
    pub response_headers: Option<String>,
    /// The first bytes of the response body, when an answer came.
    pub response_body: Option<String>,
}

type Row = (
    jiff_sqlx::Timestamp,
    String,
    String,
    String,
    String,
    i32,
    String,
    Option<i32>,
    Option<String>,
    Option<String>,
    i64,
);

impl Database {
    /// Stores `attempts` in one statement.
    pub async fn store_attempts(&self, logged: &[LoggedAttempt]) -> Result<(), StoreError> {
        if logged.is_empty() {
            return Ok(());
        }
        let attempts: Vec<&AttemptRow> = logged.iter().map(|l| &l.attempt).collect();
        let column =
            |f: fn(&AttemptRow) -> String| attempts.iter().map(|a| f(a)).collect::<Vec<_>>();
        let detail =
            |f: fn(&LoggedAttempt) -> Option<String>| logged.iter().map(f).collect::<Vec<_>>();
        sqlx::query(
            "INSERT INTO webhook_emitter.delivery_attempts
                    (attempted_at, endpoint, event_id, sandbox_id, event_type, attempt, outcome,
                     status, error_class, error, duration_ms, started_at, full_event_type,
                     failure_class, request_url, request_headers, request_body, response_headers,
                     response_body)
             SELECT at::timestamptz, endpoint, event, sandbox, kind, attempt, outcome, status,
                    class, error, duration, started::timestamptz, full_type, failure, url,
                    req_headers, req_body, resp_headers, resp_body
               FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                           $6::int[], $7::text[], $8::int[], $9::text[], $10::text[], $11::bigint[],
                           $12::text[], $13::text[], $14::text[], $15::text[], $16::text[],
                           $17::text[], $18::text[], $19::text[])
                 AS a(at, endpoint, event, sandbox, kind, attempt, outcome, status, class, error,
                      duration, started, full_type, failure, url, req_headers, req_body,
                      resp_headers, resp_body)",
        )
        .bind(column(|a| a.attempted_at.to_string()))
        .bind(column(|a| a.endpoint.clone()))
        .bind(column(|a| a.event_id.clone()))
        .bind(column(|a| a.sandbox_id.clone()))
        .bind(column(|a| a.event_type.clone()))
        .bind(
            attempts
                .iter()
                .map(|a| i32::try_from(a.attempt).unwrap_or(i32::MAX))
                .collect::<Vec<_>>(),
        )
        .bind(column(|a| a.outcome.clone()))
        .bind(
            attempts
                .iter()
                .map(|a| a.status.map(i32::from))
                .collect::<Vec<_>>(),
        )
        .bind(
            attempts
                .iter()
                .map(|a| a.error_class.clone())
                .collect::<Vec<_>>(),
        )
        .bind(attempts.iter().map(|a| a.error.clone()).collect::<Vec<_>>())
        .bind(
            attempts
                .iter()
                .map(|a| i64::try_from(a.duration_ms).unwrap_or(i64::MAX))
                .collect::<Vec<_>>(),
        )
        .bind(detail(|l| Some(l.started_at.to_string())))
        .bind(detail(|l| Some(l.event_type.clone())))
        .bind(detail(|l| l.failure_class.clone()))
        .bind(detail(|l| l.request_url.clone()))
        .bind(detail(|l| l.request_headers.clone()))
        .bind(detail(|l| l.request_body.clone()))
        .bind(detail(|l| l.response_headers.clone()))
        .bind(detail(|l| l.response_body.clone()))
        .execute(self.ready()?)
        .await?;
        Ok(())
    }

    /// A page of `endpoint`'s attempts, by when they started.
    pub async fn endpoint_attempts(
        &self,
        endpoint: &str,
        page: Page,
    ) -> Result<Vec<AttemptRow>, StoreError> {
        let order = if page.ascending { "ASC" } else { "DESC" };
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT attempted_at, endpoint, event_id, sandbox_id, event_type, attempt, outcome,
                    status, error_class, error, duration_ms
               FROM webhook_emitter.delivery_attempts
              WHERE endpoint = $1
              ORDER BY started_at {order}, seq {order}
              LIMIT $2 OFFSET $3"
        ))
        .bind(endpoint)
        .bind(page.limit)
        .bind(page.offset)
        .fetch_all(self.ready()?)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| AttemptRow {
                attempted_at: r.0.to_jiff(),
                endpoint: r.1,
                event_id: r.2,
                sandbox_id: r.3,
                event_type: r.4,
                attempt: u32::try_from(r.5).unwrap_or(0),
                outcome: r.6,
                status: r.7.and_then(|s| u16::try_from(s).ok()),
                error_class: r.8,
                error: r.9,
                duration_ms: u64::try_from(r.10).unwrap_or(0),
            })
            .collect())
    }

    /// Deletes attempts made before `cutoff`; returns how many.
    pub async fn prune_attempts(&self, cutoff: jiff::Timestamp) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM webhook_emitter.delivery_attempts WHERE attempted_at < $1::timestamptz",
        )
        .bind(cutoff.to_string())
        .execute(self.ready()?)
        .await?;
        Ok(done.rows_affected())
    }
}
