//! What the delivery log in Postgres keeps of an attempt besides its outcome: when it started,
//! the request as sent, the answer, and the failure class. It rides on the journal's live feed
//! only — never in the in-memory ring, `deliveries.jsonl` or the admin API — and nothing in it is
//! copied on the delivery path: the rendered request and the answer's headers are moved in. The
//! feed is bounded, so at most its buffer of these is held (each a few KiB: the body kept of an
//! answer is at most `KEPT_RESPONSE_BYTES`).

use crate::deliver::error_class::ErrorClass;
use crate::deliver::format::SignedRequest;
use crate::deliver::http::CapturedResponse;

/// One attempt's request and answer.
#[derive(Clone, PartialEq)]
pub struct Exchange {
    /// When the request was started.
    pub started_at: jiff::Timestamp,
    /// The event's full type (`sandbox.lifecycle.killed`).
    pub event_type: String,
    /// Where it was sent, as configured: it may hold credentials (redact before showing).
    pub url: url::Url,
    /// The request as rendered: its headers hold the signature (redact before showing).
    pub request: SignedRequest,
    /// The answer, when one came.
    pub response: Option<CapturedResponse>,
    /// Why it failed, when it did.
    pub error_class: Option<ErrorClass>,
}

/// Leaves out the URL, the headers and the bodies: a debug print must not show a signature or a
/// credential.
impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("started_at", &self.started_at)
            .field("event_type", &self.event_type)
            .field("error_class", &self.error_class)
            .field("answered", &self.response.is_some())
            .finish_non_exhaustive()
    }
}
