//! Why the Nomad client cannot be built, or why talking to Nomad failed.

use crate::util::error::error_chain;
use reqwest::StatusCode;
use std::path::PathBuf;
use std::time::Duration;

/// Why the client cannot be built, or why talking to Nomad failed.
#[derive(Debug, thiserror::Error)]
pub enum NomadError {
    /// A TLS file could not be read.
    #[error("cannot read {setting} {}: {source}", path.display())]
    ReadFile {
        /// The setting naming the file.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A TLS file is not usable PEM.
    #[error("{setting} {} is not a PEM certificate/key reqwest accepts: {reason}", path.display())]
    Pem {
        /// The setting naming the file.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Only one half of the client certificate pair is configured.
    #[error(
        "NOMAD_CLIENT_CERT and NOMAD_CLIENT_KEY must be set together for mTLS; set both or neither"
    )]
    HalfIdentity,
    /// The token cannot be sent as a header.
    #[error(
        "NOMAD_TOKEN contains characters not allowed in an HTTP header; check for a stray newline"
    )]
    BadToken,
    /// The HTTP client could not be built.
    #[error("cannot build the Nomad HTTP client: {0}")]
    Client(String),
    /// Nomad did not answer.
    #[error(
        "cannot reach Nomad at {addr}: {reason}; check NOMAD_ADDR and that the Nomad agent is up"
    )]
    Unreachable {
        /// NOMAD_ADDR.
        addr: String,
        /// The transport error.
        reason: String,
    },
    /// The token may not read allocations or their events.
    #[error(
        "Nomad answered 403 ({body}) to {path}: NOMAD_TOKEN lacks `read-job` on namespace {namespace:?}; \
         attach a policy with namespace \"{namespace}\" {{ capabilities = [\"read-job\"] }} to the token, \
         or use NOMAD_DISCOVERY=services, which needs none"
    )]
    Forbidden {
        /// The API path.
        path: &'static str,
        /// NOMAD_NAMESPACE.
        namespace: String,
        /// What Nomad said ("Permission denied", "ACL token not found").
        body: String,
    },
    /// The token may not read service registrations.
    #[error(
        "Nomad answered 403 ({body}) to {path}: NOMAD_TOKEN cannot read service registrations in namespace \
         {namespace:?}; run the emitter in that namespace with its workload identity, or give the token `read-job` there"
    )]
    ServicesForbidden {
        /// The API path.
        path: String,
        /// NOMAD_NAMESPACE.
        namespace: String,
        /// What Nomad said.
        body: String,
    },
    /// The endpoint only knows ACL tokens and cannot resolve a workload identity's JWT: the event
    /// stream before Nomad 1.9 (hashicorp/nomad#18186, fixed by #24849), and a few other APIs
    /// (hashicorp/nomad#24663) answer 500 "acl token lookup failed … UUID must be 36 characters".
    #[error(
        "Nomad cannot resolve NOMAD_TOKEN on {path} ({body}); this endpoint does not accept a workload identity on this Nomad version"
    )]
    TokenNotResolvable {
        /// The API path.
        path: &'static str,
        /// What Nomad said.
        body: String,
    },
    /// Any other unexpected HTTP status.
    #[error("Nomad answered {status} to {path}: {body}")]
    Status {
        /// The API path.
        path: String,
        /// The status.
        status: StatusCode,
        /// The start of the body.
        body: String,
    },
    /// A response could not be decoded.
    #[error("Nomad sent a malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// The decoding error.
        reason: String,
    },
    /// The event stream ended; Nomad writes the reason as plain text
    /// ("event dropped from buffer" when this reader was too slow).
    #[error("the Nomad event stream closed: {0}")]
    StreamClosed(String),
    /// No heartbeat arrived in time.
    #[error("the Nomad event stream sent nothing, not even a heartbeat, for {0:?}")]
    StreamSilent(Duration),
}

impl NomadError {
    pub(super) fn transport(addr: &str, e: reqwest::Error) -> Self {
        Self::Unreachable {
            addr: addr.to_owned(),
            reason: error_chain(&e.without_url()),
        }
    }

    /// Nomad refused this token on the allocation API: retrying will not help, service
    /// registrations may.
    pub fn is_allocation_refusal(&self) -> bool {
        matches!(
            self,
            Self::Forbidden { .. } | Self::TokenNotResolvable { .. }
        )
    }
}
