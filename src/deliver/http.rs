//! The HTTP client: one POST, one typed outcome. Retries belong to the dispatcher.

use crate::deliver::endpoint::EndpointConfig;
use crate::deliver::error_class::{ErrorClass, NetworkFailure, classify};
use crate::deliver::format::SignedRequest;
use crate::deliver::trust::TrustedCa;
use crate::util::error::error_chain;
use std::time::{Duration, Instant, SystemTime};

/// How many bytes of a response body a log line, `/status` and a dead letter show.
const DESCRIBED_BODY_BYTES: usize = 256;
/// The default of how many bytes of a response body are read at all (`RESPONSE_BODY_LIMIT`).
pub const DEFAULT_RESPONSE_BODY_LIMIT: usize = 64 * 1024;
/// Idle connections the registered webhooks' shared client keeps to one host.
const IDLE_CONNECTIONS_PER_HOST: usize = 16;
/// How many bytes of a response body an attempt keeps for the delivery log.
pub const KEPT_RESPONSE_BYTES: usize = 4 * 1024;

/// What one POST achieved.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The endpoint answered 2xx.
    Delivered {
        /// The status code.
        status: u16,
    },
    /// The endpoint answered something else (redirects included: they are not followed).
    Rejected {
        /// The status code.
        status: u16,
        /// The first bytes of the response body (up to the client's limit), lossily decoded.
        body_prefix: String,
    },
    /// No complete answer within the timeout.
    TimedOut,
    /// Connecting or talking to the endpoint failed, or the request was not sent.
    Network {
        /// Which part failed.
        failure: NetworkFailure,
        /// What failed (no URL credentials).
        message: String,
    },
}

impl Outcome {
    /// Whether the event is delivered.
    pub fn is_delivered(&self) -> bool {
        matches!(self, Self::Delivered { .. })
    }

    /// The HTTP status, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Delivered { status } | Self::Rejected { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A short label for metrics and logs: `delivered`, `rejected`, `timeout`, `network`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Delivered { .. } => "delivered",
            Self::Rejected { .. } => "rejected",
            Self::TimedOut => "timeout",
            Self::Network { .. } => "network",
        }
    }

    /// Why it failed, in the classes of E2B's delivery log; none when delivered.
    pub fn error_class(&self) -> Option<ErrorClass> {
        match self {
            Self::Delivered { .. } => None,
            Self::Rejected { .. } => Some(ErrorClass::Http),
            Self::TimedOut => Some(ErrorClass::Timeout),
            Self::Network { failure, .. } => Some((*failure).into()),
        }
    }

    /// A one-line description for logs and dead letters.
    pub fn describe(&self) -> String {
        match self {
            Self::Delivered { status } => format!("HTTP {status}"),
            Self::Rejected {
                status,
                body_prefix,
            } if body_prefix.is_empty() => format!("HTTP {status}"),
            Self::Rejected {
                status,
                body_prefix,
            } => {
                let mut cut = body_prefix.len().min(DESCRIBED_BODY_BYTES);
                while !body_prefix.is_char_boundary(cut) {
                    cut -= 1;
                }
                format!("HTTP {status}: {}", &body_prefix[..cut])
            }
            Self::TimedOut => "timed out".to_owned(),
            Self::Network { message, .. } => format!("network error: {message}"),
        }
    }
}

/// The result of one POST: outcome, `Retry-After` when given, how long it took, and what came
/// back.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryAttempt {
    /// What happened.
    pub outcome: Outcome,
    /// The parsed `Retry-After` header, if the endpoint sent one.
    pub retry_after: Option<Duration>,
    /// Time from sending to the end of the response.
    pub elapsed: Duration,
    /// The answer, when one came (for the delivery log).
    pub response: Option<CapturedResponse>,
}

/// What an attempt keeps of an answer: its headers (moved out of the response, not copied) and
/// the first [`KEPT_RESPONSE_BYTES`] of its body.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CapturedResponse {
    /// The response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The first bytes of the body, at most [`KEPT_RESPONSE_BYTES`].
    pub body: Vec<u8>,
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct ClientError(#[from] reqwest::Error);

/// A pooled HTTP client for webhook deliveries (rustls, no redirects).
///
/// A receiver is untrusted: of its answer only the first `response_body_limit` bytes are read;
/// the rest is never read (the connection is dropped instead), and reading stops at the attempt's
/// deadline, so an endless or huge body costs neither memory nor more time than the timeout.
#[derive(Clone, Debug)]
pub struct WebhookClient {
    client: reqwest::Client,
    /// For user-registered webhooks: addresses they may not reach (checked when connecting).
    /// Shared by the clones (one per registered webhook's dispatcher), not copied into each.
    destinations: Option<std::sync::Arc<crate::util::destination::DestinationPolicy>>,
    timeout: Duration,
    response_body_limit: usize,
}

impl WebhookClient {
    /// Builds a client whose attempts end after `timeout`, reading at most
    /// `response_body_limit` bytes of each response body, and trusting `trusted_ca` besides the
    /// public roots.
    pub fn new(
        timeout: Duration,
        response_body_limit: usize,
        trusted_ca: Option<&TrustedCa>,
    ) -> Result<Self, ClientError> {
        Self::build(timeout, response_body_limit, None, trusted_ca)
    }

    /// The client for a configured endpoint: its timeout, body limit and private CA, if any.
    pub fn for_endpoint(endpoint: &EndpointConfig) -> Result<Self, ClientError> {
        Self::new(
            endpoint.timeout,
            endpoint.response_body_limit,
            endpoint.trusted_ca.as_ref(),
        )
    }

    /// Like [`Self::new`], for a URL a user supplied: a host that is, or now resolves to, an
    /// address `destinations` refuses is not connected to (a network error, retried as one).
    pub fn restricted(
        timeout: Duration,
        response_body_limit: usize,
        destinations: crate::util::destination::DestinationPolicy,
    ) -> Result<Self, ClientError> {
        Self::build(timeout, response_body_limit, Some(destinations), None)
    }

    fn build(
        timeout: Duration,
        response_body_limit: usize,
        destinations: Option<crate::util::destination::DestinationPolicy>,
        trusted_ca: Option<&TrustedCa>,
    ) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder();
        // Added to the built-in public roots, which stay trusted (`tls_built_in_root_certs`
        // is on by default in reqwest).
        for certificate in trusted_ca.map(TrustedCa::certificates).unwrap_or_default() {
            builder = builder.add_root_certificate(reqwest::Certificate::from_der(certificate)?);
        }
        if let Some(policy) = &destinations {
            // The one client of every registered webhook: idle connections kept per host are
            // bounded, as the attempts in flight are by the teams' shares.
            builder = builder
                .dns_resolver(std::sync::Arc::new(
                    crate::deliver::guarded_dns::GuardedResolver::new(policy.clone()),
                ))
                .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_HOST);
        }
        let client = builder
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            client,
            destinations: destinations.map(std::sync::Arc::new),
            timeout,
            response_body_limit,
        })
    }

    /// Sends one signed request to `url` and classifies the answer.
    pub async fn post(&self, url: &url::Url, request: &SignedRequest) -> DeliveryAttempt {
        let started = Instant::now();
        if let Some(refused) = self.refused_literal(url) {
            return DeliveryAttempt {
                outcome: Outcome::Network {
                    failure: NetworkFailure::Request,
                    message: refused,
                },
                retry_after: None,
                elapsed: started.elapsed(),
                response: None,
            };
        }
        let deadline = tokio::time::Instant::from_std(started + self.timeout);
        let mut builder = self.client.post(url.clone());
        for (name, value) in &request.headers {
            builder = builder.header(*name, value);
        }
        let result = builder.body(request.body.clone()).send().await;
        let (outcome, retry_after, captured) = match result {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
                let success = response.status().is_success();
                let headers = std::mem::take(response.headers_mut());
                // A 2xx is a delivery whatever its body does; the body is read (capped) so that a
                // well-behaved receiver's connection goes back to the pool.
                let mut body = read_capped(response, self.response_body_limit, deadline).await;
                let outcome = if success {
                    Outcome::Delivered { status }
                } else {
                    let body_prefix = String::from_utf8_lossy(&body).trim().to_owned();
                    Outcome::Rejected {
                        status,
                        body_prefix,
                    }
                };
                // What the delivery log keeps: a few KiB, not the whole read buffer.
                body.truncate(KEPT_RESPONSE_BYTES);
                body.shrink_to_fit();
                (
                    outcome,
                    retry_after,
                    Some(CapturedResponse { headers, body }),
                )
            }
            Err(e) if e.is_timeout() => (Outcome::TimedOut, None, None),
            Err(e) => (
                Outcome::Network {
                    failure: classify(&e),
                    message: error_chain(&e.without_url()),
                },
                None,
                None,
            ),
        };
        DeliveryAttempt {
            outcome,
            retry_after,
            elapsed: started.elapsed(),
            response: captured,
        }
    }
}

/// The first `limit` bytes of the body, or fewer when it ends, fails or `deadline` passes first.
/// Dropping `response` unread closes its connection, so the rest is never received.
impl WebhookClient {
    /// Why a restricted client may not connect to `url`'s literal address (names are checked
    /// by the resolver).
    fn refused_literal(&self, url: &url::Url) -> Option<String> {
        let policy = self.destinations.as_ref()?;
        let addr: std::net::IpAddr = match url.host()? {
            url::Host::Ipv4(v4) => v4.into(),
            url::Host::Ipv6(v6) => v6.into(),
            url::Host::Domain(_) => return None,
        };
        policy
            .check(&addr.to_string(), addr)
            .err()
            .map(|e| e.to_string())
    }
}

async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
    deadline: tokio::time::Instant,
) -> Vec<u8> {
    let mut kept = Vec::new();
    while kept.len() < limit {
        match tokio::time::timeout_at(deadline, response.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                let room = limit - kept.len();
                kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => break,
        }
    }
    kept
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        // 1445412480 is Wed, 21 Oct 2015 07:28:00 GMT.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:29:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    async fn serve(app: axum::Router) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    fn request() -> SignedRequest {
        SignedRequest {
            body: b"{}".to_vec(),
            headers: vec![("content-type", "application/json".to_owned())],
        }
    }

    #[tokio::test]
    async fn each_outcome_has_its_error_class_and_the_answer_is_kept_up_to_4_kib() {
        use axum::routing::post;
        let app = axum::Router::new()
            .route("/ok", post(|| async { ([("x-seen", "yes")], "fine") }))
            .route(
                "/fail",
                post(|| async {
                    (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        "x".repeat(10 * 1024),
                    )
                }),
            )
            .route(
                "/silent",
                post(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            );
        let addr = serve(app).await;
        let client = WebhookClient::new(Duration::from_millis(500), 64 * 1024, None).unwrap();
        let url = |path: &str| url::Url::parse(&format!("http://{addr}{path}")).unwrap();

        let ok = client.post(&url("/ok"), &request()).await;
        assert_eq!(ok.outcome, Outcome::Delivered { status: 200 });
        assert_eq!(ok.outcome.error_class(), None);
        let answer = ok.response.unwrap();
        assert_eq!(
            (answer.body.as_slice(), answer.headers["x-seen"].as_bytes()),
            (&b"fine"[..], &b"yes"[..])
        );

        let failed = client.post(&url("/fail"), &request()).await;
        assert_eq!(failed.outcome.status(), Some(500));
        assert_eq!(failed.outcome.error_class(), Some(ErrorClass::Http));
        let answer = failed.response.unwrap();
        assert_eq!(answer.body, vec![b'x'; KEPT_RESPONSE_BYTES]);
        assert!(answer.body.capacity() < 2 * KEPT_RESPONSE_BYTES);

        let silent = client.post(&url("/silent"), &request()).await;
        assert_eq!(silent.outcome, Outcome::TimedOut);
        assert_eq!(silent.outcome.error_class(), Some(ErrorClass::Timeout));
        assert_eq!(silent.response, None);

        // Nothing listens on a port just released.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let refused = client
            .post(
                &url::Url::parse(&format!("http://{closed}/")).unwrap(),
                &request(),
            )
            .await;
        assert_eq!(refused.outcome.error_class(), Some(ErrorClass::Transport));

        // A user's URL to a private address is refused before anything is sent.
        let guarded = WebhookClient::restricted(
            Duration::from_millis(500),
            64 * 1024,
            crate::util::destination::DestinationPolicy::new(vec![]),
        )
        .unwrap();
        let refused = guarded.post(&url("/ok"), &request()).await;
        assert_eq!(refused.outcome.error_class(), Some(ErrorClass::Request));
        assert!(
            refused
                .outcome
                .describe()
                .contains("may not reach inside the cluster")
        );
    }
}
