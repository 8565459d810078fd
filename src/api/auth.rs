//! The team a request acts for, from the credential it carries — as E2B's API decides it
//! (e2b-dev/infra `spec/openapi.yml`: `ApiKeyAuth`, or `AuthProviderBearerAuth` with
//! `AuthProviderTeamAuth`; `packages/auth/pkg/auth/internal/middleware/middleware.go`,
//! `security.go`, `internal/service/service.go`):
//!
//! - `X-API-Key: e2b_…` — the key's team (`postgres::api_keys`); a missing, malformed or unknown
//!   key and a blocked or banned team all get the same 401.
//! - `Authorization: Bearer <JWT>` + `X-Team-ID: <team uuid>` — the token verified against the
//!   `AUTH_PROVIDER_CONFIG` issuers (`user_auth`), its `(iss, sub)` a user who must be a member
//!   of that team (`postgres::user_teams`). A bad token, a missing or non-UUID `X-Team-ID` and a
//!   team the user is not in get 401; a member's banned or blocked team 403, as E2B answers.
//!
//! With both, the API key is tried first and, when valid, the request acts for its team;
//! otherwise the bearer token decides — E2B lists the alternatives in that order and the first
//! that passes wins. When neither passes, a banned or blocked team's 403 wins (E2B's
//! `ProcessSecurityErrors`), else the first credential's 401.
//!
//! Every credential refused counts against the client's address in the failure throttle — also
//! when the other credential passes, or a valid token would let keys be guessed without limit.
//! A banned or blocked member's 403 does not count. Tokens are never logged or echoed.
//!
//! With neither header, the team portal's session cookie (`session`) is the credential.

use super::EventsApi;
use super::error::ApiError;
use crate::postgres::api_keys::{KeyOwner, api_key_hash};
use crate::postgres::user_teams::UserTeam;
use crate::user_auth::Refusal;
use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;
use uuid::Uuid;

/// The header E2B's API reads the key from.
const API_KEY: &str = "x-api-key";
/// The header carrying a bearer token.
const AUTHORIZATION: &str = "authorization";
/// The header naming the team a bearer token acts for (E2B's `HeaderTeamID`).
const TEAM_ID: &str = "x-team-id";

/// The authenticated team.
#[derive(Debug, Clone, Copy)]
pub struct Team(pub Uuid);

impl<S> FromRequestParts<S> for Team
where
    S: Send + Sync,
    EventsApi: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let api = &EventsApi::from_ref(state);
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        let forwarded_for = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok());
        let client = api.proxies.client(peer, forwarded_for);
        if api.failures.blocked_for(client, Instant::now()).is_some() {
            return Err(ApiError::TooManyFailures);
        }
        let header = |name| {
            parts
                .headers
                .get(name)
                .map(|v| v.to_str().unwrap_or_default().trim())
                .filter(|v| !v.is_empty())
        };
        let (key, bearer) = (header(API_KEY), header(AUTHORIZATION));
        let refused = |error: ApiError| {
            if !matches!(error, ApiError::Forbidden(_)) {
                api.failures.failed(client, Instant::now());
            }
            error
        };
        if key.is_none()
            && bearer.is_none()
            && let Some(session) = super::session::cookie_value(&parts.headers)
        {
            return super::session::team(api, parts, session).await.map(Team);
        }
        let mut first_refusal = None;
        if key.is_some() || bearer.is_none() {
            match by_api_key(api, key.unwrap_or_default()).await {
                Ok(team) => return Ok(team),
                Err(ApiError::Unavailable) => return Err(ApiError::Unavailable),
                Err(refusal) => first_refusal = Some(refused(refusal)),
            }
        }
        if let Some(authorization) = bearer {
            let team = header(TEAM_ID);
            match by_bearer(api, authorization, team).await {
                Ok(team) => return Ok(team),
                Err(e @ (ApiError::Unavailable | ApiError::IssuerUnavailable)) => return Err(e),
                Err(refusal) => {
                    let refusal = refused(refusal);
                    if matches!(refusal, ApiError::Forbidden(_)) || first_refusal.is_none() {
                        first_refusal = Some(refusal);
                    }
                }
            }
        }
        Err(first_refusal.unwrap_or(ApiError::Unauthorized))
    }
}

/// The team of an `X-API-Key` (empty when none was sent).
async fn by_api_key(api: &EventsApi, key: &str) -> Result<Team, ApiError> {
    let owner = match api_key_hash(key) {
        Some(hash) => api.database.key_owner(&hash).await?,
        None => KeyOwner::Unknown,
    };
    match owner {
        KeyOwner::Team(team) => Ok(Team(team)),
        KeyOwner::Unknown | KeyOwner::Refused => Err(ApiError::Unauthorized),
    }
}

/// The team of a bearer token and `X-Team-ID`: the token first, then the team (E2B checks the
/// schemes in that order).
async fn by_bearer(
    api: &EventsApi,
    authorization: &str,
    team: Option<&str>,
) -> Result<Team, ApiError> {
    // E2B strips "Bearer " and reads what follows; the scheme's case does not matter (RFC 9110).
    let token = match authorization.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => authorization,
    };
    let identity = api.users.verify(token).await.map_err(|refusal| {
        tracing::debug!(reason = %refusal, "events API: bearer token refused");
        match refusal {
            Refusal::IssuerUnavailable => ApiError::IssuerUnavailable,
            Refusal::NotConfigured | Refusal::UnknownIssuer | Refusal::Token(_) => {
                ApiError::InvalidToken
            }
        }
    })?;
    let team = team.ok_or(ApiError::TeamNotAllowed(
        "missing: a bearer token acts for the team this header names",
    ))?;
    let team =
        Uuid::parse_str(team).map_err(|_| ApiError::TeamNotAllowed("not a team id (a UUID)"))?;
    match api
        .database
        .user_team(&identity.issuer, &identity.subject, team)
        .await?
    {
        UserTeam::Member(team) => Ok(Team(team)),
        UserTeam::NotMember => Err(ApiError::TeamNotAllowed("not a team of this token's user")),
        UserTeam::Banned => Err(ApiError::Forbidden("team is banned".into())),
        UserTeam::Blocked(None) => Err(ApiError::Forbidden("team is blocked".into())),
        UserTeam::Blocked(Some(reason)) => {
            Err(ApiError::Forbidden(format!("team is blocked: {reason}")))
        }
    }
}
