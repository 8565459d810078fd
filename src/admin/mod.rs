//! The operator's controls while the service runs: the admin API under `/admin/v1/`, its live
//! feed of delivery outcomes, and the console page at `/`. Mounted on `LISTEN_ADDR` only when
//! `ADMIN_TOKEN` is set; without it every path here answers 404.

pub mod auth;
pub mod client;
mod console;
mod feed;
mod routes;

use crate::deliver::control::EndpointControls;
use crate::deliver::endpoint::EndpointConfig;
use crate::deliver::journal::DeliveryJournal;
use crate::outbox::Outbox;
use auth::AdminToken;
use axum::extract::DefaultBodyLimit;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Admin request bodies are small JSON or a login form; anything larger is refused (413).
const BODY_LIMIT: usize = 16 * 1024;

/// Everything the admin API reads and switches.
#[derive(Clone)]
pub struct Admin {
    /// Who may operate.
    pub token: AdminToken,
    /// The outbox (backlog, dead letters, replay).
    pub outbox: Outbox,
    /// Recent attempts and their live feed.
    pub journal: Arc<DeliveryJournal>,
    /// Pause switches.
    pub controls: Arc<EndpointControls>,
    /// The configured endpoints (for listing and test events).
    pub endpoints: Arc<Vec<AdminEndpoint>>,
    /// What reconciliation last did, when it is configured.
    pub reconciliation: Option<tokio::sync::watch::Receiver<crate::reconcile::ReconcileReport>>,
    /// Ends live feeds when the service stops, so shutdown does not wait for browsers.
    pub shutdown: CancellationToken,
    /// Every component's readiness (shown in the status).
    pub readiness: crate::health::Readiness,
    /// Who holds the leader lease (always this instance without Redis).
    pub leadership: crate::leadership::Leadership,
    /// With Redis, dead letters live there, shared by every instance: listed and replayed there.
    pub shared_dead_letters: Option<crate::source::redis::RedisSettings>,
}

impl Admin {
    /// The dead letters, wherever this service keeps them.
    pub fn dead_letters(&self) -> Box<dyn crate::dead_letters::DeadLetterStore> {
        crate::dead_letters::running(&self.outbox, self.shared_dead_letters.as_ref())
    }
}

/// An endpoint as the admin API knows it.
#[derive(Clone)]
pub struct AdminEndpoint {
    /// Its configuration (test events are signed with its secrets).
    pub config: EndpointConfig,
    /// Its URL as it may be shown (no credentials, no query).
    pub url_shown: String,
}

/// The admin API, its live feed and the console, ready to merge into the ops server.
pub fn router(admin: Admin) -> axum::Router {
    let api =
        routes::router()
            .merge(feed::router())
            .route_layer(axum::middleware::from_fn_with_state(
                admin.token.clone(),
                auth::require,
            ));
    axum::Router::new()
        .nest("/admin/v1", api)
        .merge(console::router())
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(admin)
}
