//! The team portal's session, the third credential the events API takes (after `X-API-Key` and
//! a bearer token): the portal's sign-in trades a team's API key for a random session id, kept
//! by the browser in an `HttpOnly`, `SameSite=Strict` cookie scoped to `/portal` — the portal
//! serves this API under `/portal/events/...` too, so the page speaks E2B's contract while the
//! cookie never travels to other services on the same host (E2B's own API on `api.<domain>`).
//!
//! A session acts for the team of the key it was opened with, while the key exists and the team
//! is in good standing (`postgres::portal_sessions`). A request that changes anything must also
//! carry the session's CSRF token in `X-CSRF-Token` (derived from the id, handed to the page at
//! sign-in, kept only in its memory) and, when the browser says where it comes from, come from
//! this same host: a form or script of another site cannot forge one.

use super::EventsApi;
use super::error::ApiError;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use rand::RngExt;
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// The cookie holding the session id.
pub const COOKIE: &str = "e2b_portal";
/// The header a changing request carries the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a sign-in lasts (a working day; signing in again takes the key once more).
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Keeps the CSRF token apart from the stored hash of the same id.
const CSRF_CONTEXT: &[u8] = b"e2b-webhook-emitter portal csrf v1\0";

/// A fresh session id: 32 random bytes, hex.
pub fn new_id() -> String {
    hex::encode(rand::rng().random::<[u8; 32]>())
}

/// What the store keys a session by (never the id itself).
pub fn id_hash(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// The CSRF token of session `id`: knowing it does not reveal the id, nor does the stored hash
/// reveal it.
pub fn csrf_token(id: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(CSRF_CONTEXT);
    digest.update(id.as_bytes());
    hex::encode(digest.finalize())
}

/// The `Set-Cookie` value of session `id`; `Secure` when the page was reached over https.
pub fn set_cookie(id: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/portal; Max-Age={}{secure}",
        LIFETIME.as_secs()
    )
}

/// The `Set-Cookie` value that forgets the session in this browser.
pub fn clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/portal; Max-Age=0{secure}")
}

/// The session id the request's cookie carries.
pub fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(k, v)| (k == COOKIE && !v.is_empty()).then_some(v))
}

/// Whether the browser reached us over https: a proxy the operator trusts (E2B's Traefik
/// terminating TLS) said so in `X-Forwarded-Proto`. A direct peer's word proves nothing.
pub fn over_https(api: &EventsApi, headers: &HeaderMap, peer: IpAddr) -> bool {
    api.proxies.trusts(peer)
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// Whether a browser request comes from a page of this host: its `Origin`, when sent, names
/// the host it was sent to, and `Sec-Fetch-Site`, when sent, does not say another site.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if text("sec-fetch-site").is_some_and(|site| site == "cross-site" || site == "same-site") {
        return false;
    }
    match text("origin") {
        None => true,
        Some(origin) => {
            let host = text("host").unwrap_or_default();
            url::Url::parse(origin).is_ok_and(|o| {
                let port = o.port().map(|p| format!(":{p}")).unwrap_or_default();
                o.host_str()
                    .is_some_and(|h| format!("{h}{port}").eq_ignore_ascii_case(host))
            })
        }
    }
}

/// The team of the session `id`: refused when it ended, and — for a request that changes
/// anything — without the session's CSRF token or from another site.
pub(super) async fn team(api: &EventsApi, parts: &Parts, id: &str) -> Result<uuid::Uuid, ApiError> {
    let Some((team, _expires)) = api.database.portal_session(&id_hash(id)).await? else {
        return Err(ApiError::SessionEnded);
    };
    if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        let presented = parts
            .headers
            .get(CSRF_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        let valid: bool = csrf_token(id).as_bytes().ct_eq(presented).into();
        if !valid {
            return Err(ApiError::Forbidden(
                "X-CSRF-Token: missing or wrong for this portal session; reload the page".into(),
            ));
        }
        if !same_origin(&parts.headers) {
            return Err(ApiError::Forbidden(
                "Origin: a portal session changes nothing for another site".into(),
            ));
        }
    }
    Ok(team)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn ids_are_random_and_neither_hash_nor_token_reveals_another() {
        let (a, b) = (new_id(), new_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_ne!(hex::encode(id_hash(&a)), csrf_token(&a));
        assert_ne!(csrf_token(&a), csrf_token(&b));
        let cookie = set_cookie(&a, true);
        assert!(cookie.contains("HttpOnly; SameSite=Strict") && cookie.ends_with("; Secure"));
        assert!(!set_cookie(&a, false).contains("Secure"));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "theme=dark; e2b_portal=abc; x=1")]);
        assert_eq!(cookie_value(&h), Some("abc"));
        assert_eq!(cookie_value(&headers(&[("cookie", "e2b_portal=")])), None);
    }

    #[test]
    fn only_this_host_is_the_same_origin() {
        let host = ("host", "portal.example:8080");
        assert!(same_origin(&headers(&[host])));
        assert!(same_origin(&headers(&[
            host,
            ("origin", "https://portal.example:8080")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "https://evil.example")
        ])));
        assert!(!same_origin(&headers(&[host, ("origin", "null")])));
        assert!(!same_origin(&headers(&[
            host,
            ("sec-fetch-site", "cross-site")
        ])));
    }
}
