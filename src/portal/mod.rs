//! The team portal at `/portal/`: the webhook pages E2B's dashboard had (e2b-dev/dashboard
//! removed them in #518), served beside the events API on its listener, for the team whose API
//! key signs in. The pages are static assets (`assets`); what they show comes from the events
//! API itself, mounted again under `/portal` (`/portal/events/...`, where the session cookie is
//! sent) and called with the portal session (`api::session`), so the portal speaks E2B's
//! contract and the API's team scope guards every call. This module adds only what
//! the API lacks: signing in and out (`sign_in`), a test event (`test_event`), checking a URL
//! against the guard before saving it, and re-sending the team's dead letters (`dead_letters`).

mod assets;
mod dead_letters;
mod sign_in;
mod test_event;

use crate::api::{ApiError, EventsApi};
use crate::outbox::Outbox;
use crate::source::redis::RedisSettings;
use axum::extract::FromRef;
use axum::routing::{get, post};
use std::time::Duration;

/// What the portal needs besides the events API.
#[derive(Clone)]
pub struct PortalSettings {
    /// This instance's outbox: its dead letters when the service runs without Redis.
    pub outbox: Outbox,
    /// With Redis, dead letters live there, shared by every instance.
    pub shared_dead_letters: Option<RedisSettings>,
    /// How long a test event may take (`WEBHOOK_TIMEOUT`).
    pub timeout: Duration,
    /// How much of a test event's answer is read (`RESPONSE_BODY_LIMIT`).
    pub response_body_limit: usize,
}

impl PortalSettings {
    /// The dead letters, wherever this service keeps them.
    fn dead_letters(&self) -> Box<dyn crate::dead_letters::DeadLetterStore> {
        crate::dead_letters::running(&self.outbox, self.shared_dead_letters.as_ref())
    }
}

#[derive(Clone)]
struct Portal {
    api: EventsApi,
    settings: PortalSettings,
}

impl FromRef<Portal> for EventsApi {
    fn from_ref(portal: &Portal) -> Self {
        portal.api.clone()
    }
}

/// The portal's pages and its few routes of its own, ready to merge beside the events API.
pub fn router(api: EventsApi, settings: PortalSettings) -> axum::Router {
    let own = axum::Router::new()
        .route(
            "/portal/api/session",
            get(sign_in::current)
                .post(sign_in::sign_in)
                .delete(sign_in::sign_out),
        )
        .route("/portal/api/check-url", post(test_event::check_url))
        .route("/portal/api/webhooks/{id}/test", post(test_event::send))
        .route(
            "/portal/api/webhooks/{id}/dead-letters",
            get(dead_letters::list),
        )
        .route(
            "/portal/api/webhooks/{id}/dead-letters/replay",
            post(dead_letters::replay),
        )
        .route("/portal/api/{*rest}", axum::routing::any(no_such_path))
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024))
        .layer(axum::middleware::map_response(crate::api::error_bodies));
    let events_api = axum::Router::new().nest("/portal", crate::api::router(api.clone()));
    own.merge(assets::router())
        .with_state(Portal { api, settings })
        .merge(events_api)
}

async fn no_such_path() -> ApiError {
    ApiError::NoSuchPath
}
