//! A webhook destination: where to POST, in which format, signed with which secrets, for which
//! events. `config` builds these from the operator's settings; the Events API from registrations.

use crate::deliver::format::{EndpointIdentity, WireFormat};
use crate::deliver::sign::{SecretSet, SignatureEncoding};
use crate::deliver::trust::TrustedCa;
use crate::event::EventFilter;
use crate::outbox::Route;
use std::time::Duration;
use url::Url;
use uuid::Uuid;

/// One webhook destination: the settings its dispatcher is built from.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Stable name: part of the delivery id and the outbox keys; `default` for WEBHOOK_URL.
    pub id: String,
    /// Where to POST.
    pub url: Url,
    /// Body shape and signature.
    pub format: WireFormat,
    /// Active secrets (the first signs).
    pub secrets: SecretSet,
    /// Which events it receives (kinds, and teams when scoped).
    pub events: EventFilter,
    /// Attempt timeout.
    pub timeout: Duration,
    /// Bytes of a response body read at most.
    pub response_body_limit: usize,
    /// `e2b-webhook-id` (e2b-cloud).
    pub webhook_id: Uuid,
    /// How `e2b-signature` is written (e2b-cloud).
    pub signature_encoding: SignatureEncoding,
    /// A private CA trusted for this endpoint besides the public roots (`ca_file`).
    pub trusted_ca: Option<TrustedCa>,
}

impl EndpointConfig {
    /// How this endpoint identifies itself on the wire.
    pub fn identity(&self) -> EndpointIdentity {
        EndpointIdentity {
            id: self.id.clone(),
            webhook_id: self.webhook_id,
            signature_encoding: self.signature_encoding,
        }
    }
}

impl From<&EndpointConfig> for Route {
    fn from(e: &EndpointConfig) -> Self {
        Self {
            endpoint: e.id.clone(),
            filter: e.events.clone(),
        }
    }
}
