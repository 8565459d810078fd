//! The two requests to an issuer: its OIDC discovery document, then the JWKS it names
//! (e2b-dev/infra `packages/auth/pkg/auth/internal/token/jwks/verifier.go`: `NewVerifier`,
//! `fetchDiscoveryDocument`). As E2B: the document's `issuer` must equal the configured issuer
//! URL exactly, and its `jwks_uri` must be `https` (or `http` on a loopback host); 10 s per
//! request. Beyond E2B: redirects are not followed — the issuer is reached only where the
//! operator's configuration and the issuer's own document point — and a body is read up to
//! 512 KiB. TLS is rustls with the public (webpki) roots.

use super::key_set::KeySet;
use super::settings::{IssuerSettings, check_issuer_url};
use crate::util::error::error_chain;
use std::time::Duration;
use url::Url;

/// Each request, from connecting to the last byte (E2B's `httpTimeout`).
const TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of a discovery document or JWKS read at most.
const MAX_BODY: usize = 512 * 1024;

/// Fetches issuers' documents.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
}

impl Fetcher {
    /// A client for issuers.
    pub fn new() -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("e2b-webhook-emitter/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client for token issuers: {e}"))?;
        Ok(Self { client })
    }

    /// The `jwks_uri` of the issuer's discovery document.
    pub async fn discover(&self, issuer: &IssuerSettings) -> Result<Url, String> {
        #[derive(serde::Deserialize)]
        struct Discovery {
            #[serde(default)]
            issuer: String,
            #[serde(default)]
            jwks_uri: String,
        }
        let body = self.get(&issuer.discovery).await?;
        let document: Discovery = serde_json::from_slice(&body).map_err(|e| {
            format!(
                "the discovery document at {} is not JSON: {e}",
                issuer.discovery
            )
        })?;
        if document.issuer.is_empty() || document.jwks_uri.is_empty() {
            return Err(format!(
                "the discovery document at {} lacks issuer or jwks_uri",
                issuer.discovery
            ));
        }
        if document.issuer != issuer.issuer {
            return Err(format!(
                "the discovery document's issuer {:?} does not match the configured issuer {:?}",
                document.issuer, issuer.issuer
            ));
        }
        check_issuer_url(&document.jwks_uri, "discovery jwks_uri")
    }

    /// The usable keys at `jwks_uri`, with how many were skipped.
    pub async fn keys(&self, jwks_uri: &Url) -> Result<(KeySet, usize), String> {
        let body = self.get(jwks_uri).await?;
        KeySet::parse(&body).map_err(|e| format!("{jwks_uri}: {e}"))
    }

    async fn get(&self, url: &Url) -> Result<Vec<u8>, String> {
        let mut response = self
            .client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BODY as u64)
        {
            return Err(format!("GET {url}: the body is over {MAX_BODY} bytes"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?
        {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(format!("GET {url}: the body is over {MAX_BODY} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}
