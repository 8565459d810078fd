//! The admin API's door: its middleware and the answer to a refused request. The token itself
//! (`ADMIN_TOKEN`: bearer header or console session cookie, throttling) is
//! [`crate::util::admin_token`], where `config` and the ops server find it too.

pub use crate::util::admin_token::{AdminToken, Admission, logout_cookie, peer};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The answer to a request that was not admitted: 401 with the same body whether the token was
/// missing or wrong, or 429 while its address is throttled.
pub fn refusal(admission: Admission, message: &str) -> Response {
    match admission {
        Admission::Throttled(wait) => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, wait.as_secs().max(1).to_string())],
            axum::Json(serde_json::json!({
                "error": "too many refused attempts from this address; try again later"
            })),
        )
            .into_response(),
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(serde_json::json!({ "error": message })),
        )
            .into_response(),
    }
}

/// Middleware of the admin API.
pub async fn require(State(token): State<AdminToken>, request: Request, next: Next) -> Response {
    match token.admit(request.headers(), peer(&request)) {
        Admission::Admitted => next.run(request).await,
        refused => refusal(refused, "unauthorized"),
    }
}
