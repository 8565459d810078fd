//! Answers of the events API that are not a success, in E2B's error shape `{code, message}`.

use crate::postgres::StoreError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// What went wrong with a request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field is missing or invalid; the message names it.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field as the client writes it (`url`, `signatureSecret`, `limit`).
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The body is not a JSON object.
    #[error("the body must be a JSON object: {0}")]
    Body(String),
    /// Missing, malformed or unknown key, or a blocked team: one answer for all.
    #[error("invalid API key")]
    Unauthorized,
    /// A bearer token that is not valid: bad signature, expired, another issuer or audience,
    /// an identity that is no user, or no issuer configured.
    #[error("invalid bearer token")]
    InvalidToken,
    /// A valid bearer token, but `X-Team-ID` is missing, no UUID, or a team the user is not a
    /// member of (one answer for "no such team" and "not yours"); the message says which.
    #[error("X-Team-ID: {0}")]
    TeamNotAllowed(&'static str),
    /// The user is a member, but the team is banned or blocked (E2B answers 403).
    #[error("{0}")]
    Forbidden(String),
    /// The portal session expired, was signed out, or its key or team is no longer allowed.
    #[error("the portal session has ended; sign in again")]
    SessionEnded,
    /// Too many refused credentials from this client lately.
    #[error("too many requests with invalid credentials; retry later")]
    TooManyFailures,
    /// The team has as many webhooks as it may register (`WEBHOOKS_PER_TEAM`).
    #[error(
        "this team already has {0} webhooks, the most it may register: delete one it no longer needs (DELETE /events/webhooks/{{id}}), or ask the operator to raise WEBHOOKS_PER_TEAM"
    )]
    WebhookLimit(u32),
    /// No such webhook for this team.
    #[error("webhook not found")]
    NotFound,
    /// No such path under `/events/`.
    #[error("no such path in the events API")]
    NoSuchPath,
    /// The database cannot answer.
    #[error("the events store is unavailable; retry later")]
    Unavailable,
    /// The bearer token's issuer never answered, so the token cannot be judged.
    #[error("the token issuer's keys are unavailable; retry later")]
    IssuerUnavailable,
}

impl ApiError {
    /// An invalid `field`.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            // 400, as E2B's API answers a request over a team's limit (`sandbox_fork.go`), and
            // the one client error `POST /events/webhooks` documents (openapi.argus.yaml).
            Self::Invalid { .. } | Self::Body(_) | Self::WebhookLimit(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized
            | Self::InvalidToken
            | Self::TeamNotAllowed(_)
            | Self::SessionEnded => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::TooManyFailures => StatusCode::TOO_MANY_REQUESTS,
            Self::NotFound | Self::NoSuchPath => StatusCode::NOT_FOUND,
            Self::Unavailable | Self::IssuerUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        // The cause stays in the log: it may name hosts or roles of the operator's database.
        tracing::warn!(error = %e, "events API: database error");
        Self::Unavailable
    }
}

/// Every answer of the events API that is not a success carries E2B's `Error` body: what axum
/// answers by itself (an unknown path under `/events/`, a method a route does not take, a body
/// over the limit) gets one here, with the status's reason as its message.
pub async fn error_bodies(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let message = match status {
        StatusCode::NOT_FOUND => "no such path in the events API".to_owned(),
        StatusCode::METHOD_NOT_ALLOWED => "this path does not take that method".to_owned(),
        StatusCode::PAYLOAD_TOO_LARGE => "the body is too large".to_owned(),
        other => other
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase(),
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let body = axum::Json(serde_json::json!({"code": status.as_u16(), "message": message}));
    let mut fresh = body.into_response();
    // Keep what axum said besides the body (`Allow` on a 405).
    for (name, value) in parts.headers.iter() {
        if name != axum::http::header::CONTENT_TYPE {
            fresh.headers_mut().insert(name.clone(), value.clone());
        }
    }
    *fresh.status_mut() = status;
    fresh
}

/// An unknown path under `/events/`.
pub async fn not_found() -> ApiError {
    ApiError::NoSuchPath
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = axum::Json(serde_json::json!({
            "code": status.as_u16(),
            "message": self.to_string(),
        }));
        if matches!(
            self,
            Self::TooManyFailures | Self::Unavailable | Self::IssuerUnavailable
        ) {
            return (status, [(axum::http::header::RETRY_AFTER, "5")], body).into_response();
        }
        (status, body).into_response()
    }
}
