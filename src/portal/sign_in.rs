//! `/portal/api/session`: signing in trades the team's API key (sent once, as `X-API-Key`, and
//! checked — and throttled on failure — exactly as every events API call checks it) for a
//! session cookie and the session's CSRF token; `GET` tells a reloaded page who it is signed in
//! as (and its token again); `DELETE` signs out. The key is neither stored nor logged.

use super::Portal;
use crate::api::session::{self, over_https, same_origin};
use crate::api::{ApiError, EventsApi, Team};
use crate::postgres::api_keys::api_key_hash;
use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::net::SocketAddr;

/// `POST`: a new session for the key's team.
pub(super) async fn sign_in(
    State(portal): State<Portal>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Team(team): Team,
) -> Result<Response, ApiError> {
    // A page of another site cannot sign a browser in to a team of its choosing.
    if !same_origin(&headers) {
        return Err(ApiError::Forbidden(
            "Origin: sign in from the portal's own page".into(),
        ));
    }
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .and_then(api_key_hash)
        .ok_or(ApiError::Unauthorized)?;
    let id = session::new_id();
    let expires = jiff::Timestamp::now() + session::LIFETIME;
    portal
        .api
        .database
        .open_portal_session(&session::id_hash(&id), team, &key, expires)
        .await?;
    tracing::info!(team = %team, "portal: signed in");
    let secure = over_https(&portal.api, &headers, peer.ip());
    let body = json!({
        "teamId": team,
        "csrfToken": session::csrf_token(&id),
        "expiresAt": expires,
    });
    Ok((
        StatusCode::CREATED,
        [(header::SET_COOKIE, session::set_cookie(&id, secure))],
        Json(body),
    )
        .into_response())
}

/// `GET`: the session's team, CSRF token and expiry; 401 without a live session.
pub(super) async fn current(
    State(api): State<EventsApi>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = session::cookie_value(&headers).ok_or(ApiError::SessionEnded)?;
    let (team, expires) = api
        .database
        .portal_session(&session::id_hash(id))
        .await?
        .ok_or(ApiError::SessionEnded)?;
    Ok(Json(json!({
        "teamId": team,
        "csrfToken": session::csrf_token(id),
        "expiresAt": expires,
    })))
}

/// `DELETE`: ends the session (its CSRF token required, as for every change).
pub(super) async fn sign_out(
    State(portal): State<Portal>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Team(team): Team,
) -> Result<Response, ApiError> {
    if let Some(id) = session::cookie_value(&headers) {
        portal
            .api
            .database
            .close_portal_session(&session::id_hash(id))
            .await?;
    }
    tracing::info!(team = %team, "portal: signed out");
    let secure = over_https(&portal.api, &headers, peer.ip());
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, session::clear_cookie(secure))],
    )
        .into_response())
}
