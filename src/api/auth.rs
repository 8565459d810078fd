//! `X-API-Key`: the team a request acts for. Missing, malformed, unknown, and blocked or banned
//! teams all get the same 401; failures are rate-limited per client address.

use super::EventsApi;
use super::error::ApiError;
use crate::postgres::api_keys::{KeyOwner, api_key_hash};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;
use uuid::Uuid;

/// The header E2B's API reads the key from.
const HEADER: &str = "x-api-key";

/// The authenticated team.
#[derive(Debug, Clone, Copy)]
pub struct Team(pub Uuid);

impl FromRequestParts<EventsApi> for Team {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &EventsApi) -> Result<Self, ApiError> {
        let client = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        if api.failures.blocked_for(client, Instant::now()).is_some() {
            return Err(ApiError::TooManyFailures);
        }
        let hash = parts
            .headers
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|key| api_key_hash(key.trim()));
        let owner = match hash {
            Some(hash) => api.database.key_owner(&hash).await?,
            None => KeyOwner::Unknown,
        };
        match owner {
            KeyOwner::Team(team) => Ok(Self(team)),
            KeyOwner::Unknown | KeyOwner::Refused => {
                api.failures.failed(client, Instant::now());
                Err(ApiError::Unauthorized)
            }
        }
    }
}
