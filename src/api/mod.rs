//! E2B Cloud's events API for a self-hosted cluster, on E2B's own Postgres and API keys:
//! `/events/webhooks` (register, list, get, update, delete), `/events/sandboxes` (the lifecycle
//! history) and, our extension, `/events/webhooks/{id}/deliveries` (the delivery log). Every route
//! needs a team's `X-API-Key`, or a user's bearer token and the `X-Team-ID` of one of the user's
//! teams (`auth`), or the team portal's session (`session`); a team sees only its own.

mod auth;
mod error;
mod sandbox_events;
pub mod session;
mod webhook_body;
mod webhook_deliveries;
mod webhooks;

pub use auth::Team;
pub use error::{ApiError, error_bodies, not_found};

use crate::postgres::Database;
use crate::user_auth::UserTokens;
use crate::util::client_address::TrustedProxies;
use crate::util::destination::DestinationPolicy;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get};
use std::sync::Arc;

/// Request bodies are a few small JSON fields.
const BODY_LIMIT: usize = 16 * 1024;
/// Refused credentials (API keys, bearer tokens) an address may present per minute before it is
/// answered 429.
const KEY_FAILURES_PER_MINUTE: u32 = 20;

/// What the API reads and writes.
#[derive(Clone)]
pub struct EventsApi {
    /// E2B's Postgres with our schema.
    pub database: Database,
    /// Where registered webhooks may point.
    pub destinations: DestinationPolicy,
    /// Webhooks a team may register at most.
    pub webhooks_per_team: u32,
    /// The issuers whose users' bearer tokens are accepted.
    users: Arc<UserTokens>,
    /// Proxies whose `X-Forwarded-For` names the client the failure throttle counts.
    pub proxies: TrustedProxies,
    failures: Arc<crate::util::failure_throttle::FailureThrottle>,
}

impl EventsApi {
    /// The API over `database`, refusing webhook URLs that `destinations` refuses and a team's
    /// webhook beyond `webhooks_per_team`, accepting the bearer tokens `users` accepts, counting
    /// refusals per client behind `proxies`.
    pub fn new(
        database: Database,
        destinations: DestinationPolicy,
        webhooks_per_team: u32,
        users: UserTokens,
        proxies: TrustedProxies,
    ) -> Self {
        Self {
            database,
            destinations,
            webhooks_per_team,
            users: Arc::new(users),
            proxies,
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
        .route("/events", any(error::not_found))
        .route("/events/{*rest}", any(error::not_found))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::map_response(error::error_bodies))
        .with_state(api)
}
