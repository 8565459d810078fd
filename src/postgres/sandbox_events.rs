//! The lifecycle history in `webhook_emitter.sandbox_events`: every received event, per team,
//! written in batches and read back a page at a time, newest or oldest first.

use super::{Database, StoreError};
use crate::event::SandboxEvent;
use serde_json::Value;
use uuid::Uuid;

/// Event types to return (`sandbox.lifecycle.killed`, …); empty: every type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeFilter(pub Vec<String>);

/// A page of events, as E2B's API takes it (`offset`, `limit`, `orderAsc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Events skipped.
    pub offset: i64,
    /// Events returned at most.
    pub limit: i64,
    /// Oldest first (else newest first).
    pub ascending: bool,
}

impl Database {
    /// Stores `events` (those of a team, by UUID; the rest are skipped); an event already stored
    /// (the other instance's copy, a re-read entry) is kept once. Returns how many were new.
    pub async fn store_events(&self, events: &[SandboxEvent]) -> Result<u64, StoreError> {
        let mut teams = Vec::new();
        let (mut ids, mut sandboxes, mut types, mut times, mut payloads) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let now = jiff::Timestamp::now();
        for event in events {
            let Ok(team) = Uuid::parse_str(event.team_id()) else {
                continue;
            };
            teams.push(team);
            ids.push(event.id().to_owned());
            sandboxes.push(event.sandbox_id().to_owned());
            types.push(event.lifecycle.event_type());
            times.push(event.timestamp().unwrap_or(now).to_string());
            payloads.push(String::from_utf8_lossy(&event.to_json()).into_owned());
        }
        if teams.is_empty() {
            return Ok(0);
        }
        let done = sqlx::query(
            "INSERT INTO webhook_emitter.sandbox_events
                    (team_id, event_id, sandbox_id, event_type, occurred_at, payload)
             SELECT team, id, sandbox, kind, at::timestamptz, payload::jsonb
               FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
                 AS e(team, id, sandbox, kind, at, payload)
             ON CONFLICT (team_id, event_id) DO NOTHING",
        )
        .bind(teams)
        .bind(ids)
        .bind(sandboxes)
        .bind(types)
        .bind(times)
        .bind(payloads)
        .execute(self.ready()?)
        .await?;
        Ok(done.rows_affected())
    }

    /// A page of `team`'s events (of one sandbox when given, of `types` when not empty), as
    /// stored.
    pub async fn team_events(
        &self,
        team: Uuid,
        sandbox: Option<&str>,
        types: &TypeFilter,
        page: Page,
    ) -> Result<Vec<Value>, StoreError> {
        let order = if page.ascending { "ASC" } else { "DESC" };
        let rows: Vec<(sqlx::types::Json<Value>,)> = sqlx::query_as(&format!(
            "SELECT payload FROM webhook_emitter.sandbox_events
              WHERE team_id = $1 AND ($2::text IS NULL OR sandbox_id = $2)
                AND (cardinality($5::text[]) = 0 OR event_type = ANY($5))
              ORDER BY occurred_at {order}, seq {order}
              LIMIT $3 OFFSET $4"
        ))
        .bind(team)
        .bind(sandbox)
        .bind(page.limit)
        .bind(page.offset)
        .bind(&types.0)
        .fetch_all(self.ready()?)
        .await?;
        Ok(rows.into_iter().map(|(payload,)| payload.0).collect())
    }

    /// Deletes events that happened before `cutoff`; returns how many.
    pub async fn prune_events(&self, cutoff: jiff::Timestamp) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM webhook_emitter.sandbox_events WHERE occurred_at < $1::timestamptz",
        )
        .bind(cutoff.to_string())
        .execute(self.ready()?)
        .await?;
        Ok(done.rows_affected())
    }
}
