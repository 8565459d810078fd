//! The reference receiver: verifies a delivery the way a user's endpoint should.

use crate::deliver::format::WireFormat;
use crate::deliver::sign::SecretSet;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::mpsc;

/// How far a Standard Webhooks timestamp may be from now (the spec's suggested tolerance).
const TIMESTAMP_TOLERANCE_SECS: i64 = 300;

/// The receiver's decision about one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Signature valid and body a JSON object.
    Accepted(Value),
    /// Missing or wrong signature (HTTP 401).
    Unauthorized(String),
    /// Signed correctly but not a JSON object (HTTP 400).
    BadRequest(String),
}

/// Verifies requests for one format and set of secrets.
#[derive(Debug, Clone)]
pub struct Verifier {
    format: WireFormat,
    secrets: SecretSet,
}

impl Verifier {
    /// A verifier accepting any of `secrets`.
    pub fn new(format: WireFormat, secrets: SecretSet) -> Self {
        Self { format, secrets }
    }

    /// Checks headers and body.
    pub fn check(&self, headers: &HeaderMap, body: &[u8]) -> Verdict {
        if let Err(reason) = self.check_signature(headers, body) {
            return Verdict::Unauthorized(reason);
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(v @ Value::Object(_)) => Verdict::Accepted(v),
            Ok(_) => Verdict::BadRequest("body is JSON but not an object".into()),
            Err(e) => Verdict::BadRequest(format!("body is not JSON: {e}")),
        }
    }

    fn check_signature(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
        let header = |name: &str| -> Result<&str, String> {
            headers
                .get(name)
                .ok_or_else(|| format!("missing {name} header"))?
                .to_str()
                .map_err(|_| format!("{name} header is not ASCII"))
        };
        let format = self.format.definition();
        let id_and_timestamp = if format.signs_id_and_timestamp() {
            let id = header("webhook-id")?;
            let ts: i64 = header("webhook-timestamp")?
                .parse()
                .map_err(|_| "webhook-timestamp is not a number".to_owned())?;
            let now = jiff::Timestamp::now().as_second();
            if (now - ts).abs() > TIMESTAMP_TOLERANCE_SECS {
                return Err(format!(
                    "webhook-timestamp {ts} is more than {TIMESTAMP_TOLERANCE_SECS}s from now"
                ));
            }
            Some((id, ts))
        } else {
            None
        };
        let signature = header(format.signature_header())?;
        let valid = format.verify(&self.secrets, body, signature, id_and_timestamp);
        if valid {
            Ok(())
        } else {
            Err("signature does not match the body (wrong secret, or the body was changed)".into())
        }
    }
}

/// One accepted delivery, with the headers a test or the demo may inspect.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The parsed body.
    pub body: Value,
    /// `e2b-delivery-id`, if sent.
    pub delivery_id: Option<String>,
    /// `e2b-delivery-attempt`, if sent.
    pub attempt: Option<u32>,
}

#[derive(Clone)]
struct ReceiverState {
    verifier: Arc<Verifier>,
    accepted: mpsc::UnboundedSender<Accepted>,
}

/// An axum router answering every POST: `{"success":true}`, 401 or 400.
pub fn router(verifier: Verifier, accepted: mpsc::UnboundedSender<Accepted>) -> axum::Router {
    let state = ReceiverState {
        verifier: Arc::new(verifier),
        accepted,
    };
    axum::Router::new()
        .fallback(axum::routing::post(handle))
        .with_state(state)
}

async fn handle(State(state): State<ReceiverState>, headers: HeaderMap, body: Bytes) -> Response {
    match state.verifier.check(&headers, &body) {
        Verdict::Accepted(body) => {
            let text = |n: &str| {
                headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let _ = state.accepted.send(Accepted {
                body,
                delivery_id: text("e2b-delivery-id"),
                attempt: text("e2b-delivery-attempt").and_then(|a| a.parse().ok()),
            });
            // A trailing newline keeps a terminal prompt (after curl) on its own line.
            let ok = [(axum::http::header::CONTENT_TYPE, "application/json")];
            (StatusCode::OK, ok, "{\"success\":true}\n").into_response()
        }
        Verdict::Unauthorized(reason) => {
            tracing::warn!(%reason, "rejected delivery: 401");
            (
                StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({"success": false, "error": reason})),
            )
                .into_response()
        }
        Verdict::BadRequest(reason) => {
            tracing::warn!(%reason, "rejected delivery: 400");
            (
                StatusCode::BAD_REQUEST,
                axum::Json(serde_json::json!({"success": false, "error": reason})),
            )
                .into_response()
        }
    }
}
