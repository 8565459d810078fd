//! The outbox's backlog for `status` and metrics: depth and oldest event per endpoint.

use super::records::{DEAD, ENDPOINTS, EVENTS, PENDING, SANDBOXES, STATE, decode, stored_event};
use super::store::Store;
use super::{DeliveryState, OutboxError};
use redb::ReadableTableMetadata;
use serde::Serialize;

/// Backlog of one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointBacklog {
    /// Endpoint id.
    pub endpoint: String,
    /// Events waiting.
    pub depth: u64,
    /// When the oldest waiting event entered the outbox (ms).
    pub oldest_appended_at_ms: Option<i64>,
    /// Its last error, if it has failed before.
    pub oldest_last_error: Option<String>,
}

/// A summary for `status` and metrics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxStatus {
    /// Per-endpoint backlog.
    pub endpoints: Vec<EndpointBacklog>,
    /// Events stored (not yet delivered everywhere).
    pub events: u64,
    /// Dead letters.
    pub dead_letters: u64,
    /// Sandboxes tracked as running or paused.
    pub sandboxes: u64,
}

impl OutboxStatus {
    /// Events waiting, summed over endpoints.
    pub fn pending(&self) -> u64 {
        self.endpoints.iter().map(|e| e.depth).sum()
    }
}

impl Store {
    pub(super) fn status(&self) -> Result<OutboxStatus, OutboxError> {
        let txn = self.begin_read()?;
        let pending = txn.open_table(PENDING)?;
        let events = txn.open_table(EVENTS)?;
        let mut endpoints: Vec<EndpointBacklog> = Vec::new();
        // Walk endpoint by endpoint: the first row of each is its oldest event.
        let mut next_start: Option<String> = Some(String::new());
        while let Some(start) = next_start.take() {
            let mut iter = pending.range((start.as_str(), 0)..)?;
            let Some(first) = iter.next() else { break };
            let (k, v) = first?;
            let endpoint = k.value().0.to_owned();
            let state: DeliveryState = decode("pending", v.value())?;
            let oldest = events
                .get(k.value().1)?
                .map(|b| stored_event(b.value()))
                .transpose()?;
            let mut depth = 1;
            for row in pending
                .range((endpoint.as_str(), k.value().1 + 1)..=(endpoint.as_str(), u64::MAX))?
            {
                row?;
                depth += 1;
            }
            endpoints.push(EndpointBacklog {
                endpoint: endpoint.clone(),
                depth,
                oldest_appended_at_ms: oldest.map(|o| o.appended_at_ms),
                oldest_last_error: state.last_error,
            });
            next_start = Some(format!("{endpoint}\u{0}"));
        }
        let configured: Vec<String> = match txn.open_table(STATE)?.get(ENDPOINTS)? {
            Some(v) => decode("endpoints", v.value())?,
            None => Vec::new(),
        };
        for endpoint in configured {
            if !endpoints.iter().any(|e| e.endpoint == endpoint) {
                endpoints.push(EndpointBacklog {
                    endpoint,
                    depth: 0,
                    oldest_appended_at_ms: None,
                    oldest_last_error: None,
                });
            }
        }
        Ok(OutboxStatus {
            endpoints,
            events: events.len()?,
            dead_letters: txn.open_table(DEAD)?.len()?,
            sandboxes: txn.open_table(SANDBOXES)?.len()?,
        })
    }
}
