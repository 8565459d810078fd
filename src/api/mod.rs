//! E2B Cloud's events API for a self-hosted cluster, on E2B's own Postgres and API keys:
//! `/events/webhooks` (register, list, get, update, delete), `/events/sandboxes` (the lifecycle
//! history) and, our extension, `/events/webhooks/{id}/deliveries` (the delivery log). Every route needs a team's `X-API-Key`; a team sees only its own.

mod auth;
mod error;
mod sandbox_events;
mod webhook_body;
mod webhook_deliveries;
mod webhooks;

use crate::postgres::Database;
use crate::util::destination::DestinationPolicy;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use std::sync::Arc;

/// Request bodies are a few small JSON fields.
const BODY_LIMIT: usize = 16 * 1024;
/// Refused API keys an address may present per minute before it is answered 429.
const KEY_FAILURES_PER_MINUTE: u32 = 20;

/// What the API reads and writes.
#[derive(Clone)]
pub struct EventsApi {
    /// E2B's Postgres with our schema.
    pub database: Database,
    /// Where registered webhooks may point.
    pub destinations: DestinationPolicy,
    failures: Arc<crate::util::failure_throttle::FailureThrottle>,
}

impl EventsApi {
    /// The API over `database`, refusing webhook URLs that `destinations` refuses.
    pub fn new(database: Database, destinations: DestinationPolicy) -> Self {
        Self {
            database,
            destinations,
            failures: Arc::new(crate::util::failure_throttle::FailureThrottle::new(
                KEY_FAILURES_PER_MINUTE,
            )),
        }
    }
}

/// The routes, ready to merge into a server.
pub fn router(api: EventsApi) -> axum::Router {
    axum::Router::new()
        // E2B's document has it (no body, no auth); the job's Nomad check and Traefik use it.
        .route("/health", get(|| async { axum::http::StatusCode::OK }))
        .route(
            "/events/webhooks",
            get(webhooks::list).post(webhooks::register),
        )
        .route(
            "/events/webhooks/{id}",
            get(webhooks::read)
                .patch(webhooks::update)
                .delete(webhooks::remove),
        )
        .route(
            "/events/webhooks/{id}/deliveries",
            get(webhook_deliveries::list),
        )
        .route(
            "/events/webhooks/{id}/stats",
            get(webhook_deliveries::stats),
        )
        .route("/events/sandboxes", get(sandbox_events::all))
        .route("/events/sandboxes/{id}", get(sandbox_events::of_sandbox))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(api)
}
