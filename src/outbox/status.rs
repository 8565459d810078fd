//! The outbox's backlog for `status` and metrics: depth and oldest event per endpoint.

use super::OutboxError;
use super::records::{DEAD, ENDPOINTS, STATE, decode};
use super::store::Store;
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
        let (mut endpoints, events, sandboxes) = {
            let live = self.live();
            let endpoints: Vec<EndpointBacklog> = live
                .backlogs()
                .into_iter()
                .map(|(endpoint, depth, oldest, state)| EndpointBacklog {
                    endpoint,
                    depth,
                    oldest_appended_at_ms: live.event(oldest).map(|e| e.appended_at_ms),
                    oldest_last_error: state.last_error,
                })
                .collect();
            (endpoints, live.event_count(), live.sandboxes().len() as u64)
        };
        let txn = self.begin_read()?;
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
            events,
            dead_letters: txn.open_table(DEAD)?.len()?,
            sandboxes,
        })
    }
}
