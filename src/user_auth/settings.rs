//! One issuer of users' tokens as the operator configured it, and the rule every issuer URL
//! follows — the configured `issuer.url` and `discoveryURL` as much as the `jwks_uri` a discovery
//! document names.
//!
//! The rule is E2B's (e2b-dev/infra `packages/auth/pkg/auth/internal/token/jwks/verifier.go`,
//! `validateURL` and `isLoopbackHost`, after Kubernetes' issuer URL validation): `https`, or
//! `http` for a literal loopback host (`localhost`, 127.0.0.0/8, `[::1]`, never resolved); no
//! user info, no query, no fragment.

use std::net::IpAddr;
use std::time::Duration;
use url::Url;

/// The JWKS is refetched at least this often when the operator sets no `cacheDuration` (E2B's
/// `defaultCacheDuration`, `jwks/config.go`).
pub const DEFAULT_CACHE_DURATION: Duration = Duration::from_secs(5 * 60);

/// Appended to the issuer URL when no `discoveryURL` is configured (E2B's
/// `defaultDiscoveryPath`).
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// One issuer of `AUTH_PROVIDER_CONFIG`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerSettings {
    /// The issuer as its tokens' `iss` and its discovery document's `issuer` must spell it,
    /// exactly.
    pub issuer: String,
    /// The discovery document itself (`discoveryURL`, or the issuer URL +
    /// `/.well-known/openid-configuration`).
    pub discovery: Url,
    /// A token's `aud` must name at least one of these (E2B's only policy, `MatchAny`); never
    /// empty.
    pub audiences: Vec<String>,
    /// How long fetched keys are used before they are fetched again.
    pub cache_duration: Duration,
}

/// `raw` as a URL an issuer may be reached at; the error names `field`.
pub fn check_issuer_url(raw: &str, field: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("invalid {field} {raw:?}: {e}"))?;
    let loopback = url.host().is_some_and(|host| match host {
        url::Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => IpAddr::V4(ip).is_loopback(),
        url::Host::Ipv6(ip) => IpAddr::V6(ip).is_loopback(),
    });
    if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
        return Err(format!(
            "invalid {field} scheme {:?} (must be https, or http for loopback hosts)",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "invalid {field}: must not contain a username or password"
        ));
    }
    if url.query().is_some() {
        return Err(format!("invalid {field}: must not contain a query"));
    }
    if url.fragment().is_some() {
        return Err(format!("invalid {field}: must not contain a fragment"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_and_http_only_on_a_literal_loopback_host() {
        for ok in [
            "https://auth.example.com",
            "https://auth.example.com/realms/e2b/",
            "http://localhost:8080",
            "http://LOCALHOST",
            "http://127.0.0.1:9000/issuer",
            "http://127.8.9.10",
            "http://[::1]:80",
        ] {
            assert!(check_issuer_url(ok, "issuer.url").is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("http://auth.example.com", "scheme"),
            ("http://10.0.0.1", "scheme"),
            ("http://localhost.example.com", "scheme"),
            ("ftp://localhost", "scheme"),
            ("https://user:pw@auth.example.com", "username or password"),
            ("https://auth.example.com?tenant=1", "query"),
            ("https://auth.example.com#x", "fragment"),
            ("auth.example.com", "invalid issuer.url"),
        ] {
            let error = check_issuer_url(bad, "issuer.url").unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
            assert!(error.contains("issuer.url"), "{error}");
        }
    }
}
