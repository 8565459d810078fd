//! The Nomad HTTP API client: connecting as [`NomadConfig`] says (TLS, the Task API socket, the
//! token), the three reads discovery makes, and what their failures mean for the operator.

use super::NomadConfig;
use super::error::NomadError;
use super::stream::FrameReader;
use super::wire::{NomadAllocation, ServiceRegistration};
use crate::util::error::error_chain;
use crate::util::secret::Secret;
use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{HeaderName, HeaderValue};
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

const TOKEN_HEADER: HeaderName = HeaderName::from_static("x-nomad-token");
const INDEX_HEADER: &str = "x-nomad-index";

/// A Nomad HTTP API client.
pub(super) struct NomadClient {
    http: reqwest::Client,
    /// NOMAD_ADDR without credentials or query, for messages.
    pub addr: String,
    /// Where requests go: NOMAD_ADDR, or a placeholder host when a Unix socket carries them.
    base: Url,
    token: Option<HeaderValue>,
    namespace: String,
    request_timeout: Duration,
}

impl NomadClient {
    pub fn new(config: &NomadConfig, request_timeout: Duration) -> Result<Self, NomadError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(request_timeout)
            .tcp_keepalive(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("e2b-webhook-emitter/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.cacert {
            let pem = read_pem("NOMAD_CACERT", path)?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| NomadError::Pem {
                setting: "NOMAD_CACERT",
                path: path.clone(),
                reason: error_chain(&e),
            })?;
            builder = builder.add_root_certificate(cert);
        }
        match (&config.client_cert, &config.client_key) {
            (Some(cert), Some(key)) => {
                let mut pem = read_pem("NOMAD_CLIENT_CERT", cert)?;
                pem.push(b'\n');
                pem.extend(read_pem("NOMAD_CLIENT_KEY", key)?);
                let identity = reqwest::Identity::from_pem(&pem).map_err(|e| NomadError::Pem {
                    setting: "NOMAD_CLIENT_CERT/NOMAD_CLIENT_KEY",
                    path: cert.clone(),
                    reason: error_chain(&e),
                })?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            _ => return Err(NomadError::HalfIdentity),
        }
        // Nomad's Task API socket speaks plain HTTP; the host in the URL is then only a placeholder.
        let base = if config.addr.scheme() == "unix" {
            builder = builder.unix_socket(PathBuf::from(config.addr.path()));
            Url::parse("http://localhost/").expect("a constant, valid URL")
        } else {
            config.addr.clone()
        };
        let token = config.token.as_ref().map(token_header).transpose()?;
        Ok(Self {
            http: builder
                .build()
                .map_err(|e| NomadError::Client(error_chain(&e)))?,
            addr: crate::util::redact::redact_url(&config.addr),
            base,
            token,
            namespace: config.namespace.clone(),
            request_timeout,
        })
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn get(&self, url: Url) -> reqwest::RequestBuilder {
        let request = self.http.get(url);
        match &self.token {
            Some(token) => request.header(TOKEN_HEADER, token.clone()),
            None => request,
        }
    }

    /// Every allocation passing `filter`, and the index the answer reflects.
    pub async fn list_allocations(
        &self,
        filter: &str,
    ) -> Result<(Vec<NomadAllocation>, u64), NomadError> {
        let mut url = self.url(&["v1", "allocations"]);
        url.query_pairs_mut()
            .append_pair("resources", "true")
            .append_pair("namespace", &self.namespace)
            .append_pair("filter", filter);
        let response = self
            .get(url)
            .timeout(self.request_timeout)
            .send()
            .await
            .map_err(|e| NomadError::transport(&self.addr, e))?;
        let response = self.check(response, "/v1/allocations").await?;
        self.decode(response, "allocation list").await
    }

    /// The registrations of service `name`: a blocking query that answers once Nomad's index
    /// passes `index` or `wait` has elapsed (`index` 0 answers at once).
    pub async fn service(
        &self,
        name: &str,
        index: u64,
        wait: Duration,
    ) -> Result<(Vec<ServiceRegistration>, u64), NomadError> {
        let mut url = self.url(&["v1", "service", name]);
        url.query_pairs_mut()
            .append_pair("namespace", &self.namespace)
            .append_pair("index", &index.to_string())
            .append_pair("wait", &format!("{}ms", wait.as_millis()));
        // Nomad adds up to wait/16 of jitter to a blocking query.
        let timeout = wait + wait / 16 + self.request_timeout;
        let response = self
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| NomadError::transport(&self.addr, e))?;
        let status = response.status();
        if status == StatusCode::FORBIDDEN {
            return Err(NomadError::ServicesForbidden {
                path: format!("/v1/service/{name}"),
                namespace: self.namespace.clone(),
                body: body_start(response).await,
            });
        }
        if !status.is_success() {
            return Err(NomadError::Status {
                path: format!("/v1/service/{name}"),
                status,
                body: body_start(response).await,
            });
        }
        self.decode(response, "service registration list").await
    }

    /// Opens the allocation event stream at `index` (Nomad re-sends the frame at that index).
    pub async fn event_stream(
        &self,
        index: u64,
        idle: Duration,
    ) -> Result<FrameReader, NomadError> {
        let mut url = self.url(&["v1", "event", "stream"]);
        url.query_pairs_mut()
            .append_pair("topic", "Allocation")
            .append_pair("namespace", &self.namespace)
            .append_pair("index", &index.to_string());
        // Nomad sends the response head with the first frame, which may be the first
        // heartbeat: waiting for it is bounded by the idle timeout, like every later read.
        let response = tokio::time::timeout(idle, self.get(url).send())
            .await
            .map_err(|_| NomadError::StreamSilent(idle))?
            .map_err(|e| NomadError::transport(&self.addr, e))?;
        let response = self.check(response, "/v1/event/stream").await?;
        Ok(FrameReader::new(
            response.bytes_stream().boxed(),
            idle,
            self.addr.clone(),
        ))
    }

    async fn decode<T: serde::de::DeserializeOwned>(
        &self,
        response: reqwest::Response,
        what: &'static str,
    ) -> Result<(T, u64), NomadError> {
        let index = response
            .headers()
            .get(INDEX_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| NomadError::Malformed {
                what,
                reason: "no X-Nomad-Index header".into(),
            })?;
        let body = response
            .bytes()
            .await
            .map_err(|e| NomadError::transport(&self.addr, e))?;
        let value = serde_json::from_slice(&body).map_err(|e| NomadError::Malformed {
            what,
            reason: e.to_string(),
        })?;
        Ok((value, index))
    }

    /// Maps a refusal of the allocation API to what the operator can do about it.
    async fn check(
        &self,
        response: reqwest::Response,
        path: &'static str,
    ) -> Result<reqwest::Response, NomadError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = body_start(response).await;
        if status == StatusCode::FORBIDDEN {
            Err(NomadError::Forbidden {
                path,
                namespace: self.namespace.clone(),
                body,
            })
        } else if is_token_lookup_failure(status, &body) {
            Err(NomadError::TokenNotResolvable { path, body })
        } else {
            Err(NomadError::Status {
                path: path.to_owned(),
                status,
                body,
            })
        }
    }
}

/// Nomad < 1.9 looks a JWT up as an ACL token's secret id on some endpoints and fails with 500
/// "acl token lookup failed: index error: UUID must be 36 characters" (hashicorp/nomad#24663).
fn is_token_lookup_failure(status: StatusCode, body: &str) -> bool {
    status == StatusCode::INTERNAL_SERVER_ERROR
        && (body.contains("acl token lookup failed") || body.contains("ACL token not found"))
}

async fn body_start(response: reqwest::Response) -> String {
    let body = response.text().await.unwrap_or_default();
    body.trim().chars().take(200).collect()
}

fn read_pem(setting: &'static str, path: &Path) -> Result<Vec<u8>, NomadError> {
    std::fs::read(path).map_err(|source| NomadError::ReadFile {
        setting,
        path: path.to_owned(),
        source,
    })
}

fn token_header(token: &Secret) -> Result<HeaderValue, NomadError> {
    let mut value = HeaderValue::from_bytes(token.as_bytes()).map_err(|_| NomadError::BadToken)?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_tls_settings_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let config =
            |cacert: Option<PathBuf>, cert: Option<PathBuf>, key: Option<PathBuf>| NomadConfig {
                addr: Url::parse("https://nomad:4646").unwrap(),
                token: Some(Secret::new("tok")),
                namespace: "default".into(),
                cacert,
                client_cert: cert,
                client_key: key,
            };
        let timeout = Duration::from_secs(1);
        let missing = dir.path().join("missing.pem");
        let err = NomadClient::new(&config(Some(missing), None, None), timeout)
            .err()
            .unwrap();
        assert!(
            err.to_string().starts_with("cannot read NOMAD_CACERT"),
            "{err}"
        );
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let half = config(None, Some(garbage.clone()), None);
        assert!(matches!(
            NomadClient::new(&half, timeout),
            Err(NomadError::HalfIdentity)
        ));
        let bad_identity = config(None, Some(garbage.clone()), Some(garbage));
        let err = NomadClient::new(&bad_identity, timeout).err().unwrap();
        assert!(matches!(err, NomadError::Pem { .. }), "{err}");
        let mut bad_token = config(None, None, None);
        bad_token.token = Some(Secret::new("line\nbreak"));
        assert!(matches!(
            NomadClient::new(&bad_token, timeout),
            Err(NomadError::BadToken)
        ));
    }

    #[test]
    fn a_jwt_the_endpoint_cannot_resolve_is_told_apart_from_other_server_errors() {
        let lookup = "rpc error: acl token lookup failed: index error: UUID must be 36 characters";
        assert!(is_token_lookup_failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            lookup
        ));
        assert!(!is_token_lookup_failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "rpc error: No cluster leader"
        ));
        assert!(!is_token_lookup_failure(StatusCode::BAD_REQUEST, lookup));
    }
}
