//! Who may operate: one shared admin token (`ADMIN_TOKEN`), presented as `Authorization: Bearer`,
//! or, for the console in a browser, a session cookie (`HttpOnly`, `SameSite=Strict`) that the
//! login form sets. Compared in constant time; a refusal never says whether the token was missing
//! or wrong; an address that keeps guessing is throttled ([`FailureThrottle`]).
//!
//! The cookie never holds the token: it holds an expiry and an HMAC of it keyed with the token, so
//! it proves a login without revealing what to type next time, expires on its own, works on every
//! instance that shares the token, and stops working when the token is rotated.

use super::failure_throttle::FailureThrottle;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, header};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The cookie the console's login form sets.
pub const COOKIE: &str = "e2b_admin";
/// Shorter tokens are refused at startup: the token is the only thing between the network and
/// replaying or pausing deliveries.
pub const MIN_LENGTH: usize = 16;
/// How long a console login lasts.
const SESSION: Duration = Duration::from_secs(12 * 3600);
/// Refused tokens an address may present per minute.
const GUESSES_PER_MINUTE: u32 = 10;
/// Binds a session MAC to its purpose, so it cannot be mistaken for any other HMAC of the token.
const SESSION_CONTEXT: &[u8] = b"e2b-webhook-emitter console session v1\0";

/// The admin token; never printed.
#[derive(Clone)]
pub struct AdminToken {
    secret: Arc<str>,
    throttle: Arc<FailureThrottle>,
}

/// Why a configured token is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Too short to resist guessing.
    #[error("must be at least {MIN_LENGTH} characters (e.g. `openssl rand -hex 32`)")]
    TooShort,
    /// It could not travel in a header or cookie.
    #[error("must be printable ASCII without spaces or ';'")]
    NotPrintable,
}

/// What a request's credentials got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The token, or a live console session.
    Admitted,
    /// Missing or wrong; no hint which.
    Refused,
    /// Its address failed too often; try again after this long.
    Throttled(Duration),
}

impl AdminToken {
    /// Checks and wraps a configured token.
    pub fn new(token: &str) -> Result<Self, TokenError> {
        if token.len() < MIN_LENGTH {
            return Err(TokenError::TooShort);
        }
        if !token.bytes().all(|b| b.is_ascii_graphic() && b != b';') {
            return Err(TokenError::NotPrintable);
        }
        Ok(Self {
            secret: token.into(),
            throttle: Arc::new(FailureThrottle::new(GUESSES_PER_MINUTE)),
        })
    }

    /// Whether `presented` is the token, in time independent of where they differ and of how
    /// long the guess is (both sides are hashed first).
    pub fn matches(&self, presented: &str) -> bool {
        use sha2::Digest;
        Sha256::digest(self.secret.as_bytes())
            .ct_eq(&Sha256::digest(presented.as_bytes()))
            .into()
    }

    /// Whether the request carries the token as a bearer header, or a live console session.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        self.admits_at(headers, jiff::Timestamp::now().as_second())
    }

    fn admits_at(&self, headers: &HeaderMap, now_s: i64) -> bool {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(token) = bearer {
            return self.matches(token.trim());
        }
        cookie(headers, COOKIE).is_some_and(|session| self.session_is_live(session, now_s))
    }

    /// [`Self::admits`], throttled per client address: an address that failed too often is
    /// refused without its credentials being looked at.
    pub fn admit(&self, headers: &HeaderMap, peer: IpAddr) -> Admission {
        if let Some(wait) = self.throttle.blocked_for(peer, Instant::now()) {
            return Admission::Throttled(wait);
        }
        if self.admits(headers) {
            return Admission::Admitted;
        }
        // Only a credential that was presented and wrong is a guess; a page without a session
        // asking before its login is not.
        if headers.contains_key(header::AUTHORIZATION) || cookie(headers, COOKIE).is_some() {
            self.failed(peer);
        }
        Admission::Refused
    }

    /// Whether `peer` must wait before trying again (the login form asks before checking).
    pub fn throttled(&self, peer: IpAddr) -> Option<Duration> {
        self.throttle.blocked_for(peer, Instant::now())
    }

    /// Counts a refused attempt of `peer`.
    pub fn failed(&self, peer: IpAddr) {
        if self.throttle.failed(peer, Instant::now()) {
            tracing::warn!(target: "admin", %peer, "admin: too many refused admin token attempts from one address; refusing it for a minute");
        }
    }

    /// The `Set-Cookie` value of a new console session.
    pub fn login_cookie(&self) -> String {
        let expires = jiff::Timestamp::now().as_second() + SESSION.as_secs() as i64;
        format!(
            "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
            self.session(expires),
            SESSION.as_secs()
        )
    }

    /// `v1.<expiry, Unix seconds>.<hex HMAC-SHA256 of the context and expiry, keyed by the token>`.
    fn session(&self, expires_s: i64) -> String {
        format!(
            "v1.{expires_s}.{}",
            hex::encode(self.session_mac(expires_s))
        )
    }

    fn session_mac(&self, expires_s: i64) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(SESSION_CONTEXT);
        mac.update(expires_s.to_string().as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    fn session_is_live(&self, session: &str, now_s: i64) -> bool {
        let mut parts = session.splitn(3, '.');
        let (Some("v1"), Some(expires), Some(mac)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let (Ok(expires_s), Ok(mac)) = (expires.parse::<i64>(), hex::decode(mac)) else {
            return false;
        };
        expires_s > now_s && bool::from(self.session_mac(expires_s).ct_eq(&mac))
    }
}

/// The `Set-Cookie` value that ends the session in this browser.
pub fn logout_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// The client's address, as the listener saw it (one shared bucket when it is unknown).
pub fn peer(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn bearer_or_cookie_admit_and_nothing_else_does() {
        let token = AdminToken::new("0123456789abcdef-token").unwrap();
        let good = "Bearer 0123456789abcdef-token";
        assert!(token.admits(&headers(&[(header::AUTHORIZATION, good)])));
        let session = token.session(2_000);
        assert!(token.admits_at(
            &headers(&[(header::COOKIE, &format!("theme=dark; e2b_admin={session}"))]),
            1_999
        ));
        // The token itself is not a session, an expired session is not one, nor is a session
        // of another token (a rotated one).
        assert!(!token.admits(&headers(&[(
            header::COOKIE,
            "e2b_admin=0123456789abcdef-token"
        )])));
        assert!(!token.admits_at(
            &headers(&[(header::COOKIE, &format!("e2b_admin={session}"))]),
            2_000
        ));
        let rotated = AdminToken::new("fedcba9876543210-token").unwrap();
        assert!(!rotated.admits_at(
            &headers(&[(header::COOKIE, &format!("e2b_admin={session}"))]),
            1_999
        ));
        let forged = session.replace("v1.2000.", "v1.9999.");
        assert!(!token.admits_at(
            &headers(&[(header::COOKIE, &format!("e2b_admin={forged}"))]),
            1_999
        ));
        assert!(!token.admits(&headers(&[])));
        assert!(!token.admits(&headers(&[(
            header::AUTHORIZATION,
            "Bearer 0123456789abcdef-tokeN"
        )])));
        assert!(!token.admits(&headers(&[(
            header::AUTHORIZATION,
            "Basic 0123456789abcdef-token"
        )])));
        assert!(!token.admits(&headers(&[(header::COOKIE, "e2b_admin=0123456789abcdef")])));
        // A wrong bearer is not rescued by a right cookie: one credential, one answer.
        assert!(!token.admits_at(
            &headers(&[
                (header::AUTHORIZATION, "Bearer wrong-wrong-wrong-wrong"),
                (header::COOKIE, &format!("e2b_admin={session}")),
            ]),
            1_999
        ));
    }

    #[test]
    fn an_address_that_keeps_guessing_is_throttled_even_with_the_right_token_later() {
        let token = AdminToken::new("0123456789abcdef-token").unwrap();
        let (guesser, operator): (IpAddr, IpAddr) =
            ("192.0.2.7".parse().unwrap(), "192.0.2.8".parse().unwrap());
        let wrong = headers(&[(header::AUTHORIZATION, "Bearer wrong-wrong-wrong-wrong")]);
        let right = headers(&[(header::AUTHORIZATION, "Bearer 0123456789abcdef-token")]);
        let answers: Vec<Admission> = (0..11).map(|_| token.admit(&wrong, guesser)).collect();
        assert!(answers[..10].iter().all(|a| *a == Admission::Refused));
        assert!(matches!(answers[10], Admission::Throttled(_)));
        assert!(matches!(
            token.admit(&right, guesser),
            Admission::Throttled(_)
        ));
        assert_eq!(token.admit(&right, operator), Admission::Admitted);
    }

    #[test]
    fn weak_or_unsendable_tokens_are_refused_and_none_is_printed() {
        assert!(matches!(
            AdminToken::new("short"),
            Err(TokenError::TooShort)
        ));
        assert!(matches!(
            AdminToken::new("has a space in it, long enough"),
            Err(TokenError::NotPrintable)
        ));
        let token = AdminToken::new("0123456789abcdef-token").unwrap();
        assert!(!format!("{token:?}").contains("0123"));
        let cookie = token.login_cookie();
        assert!(cookie.contains("HttpOnly; SameSite=Strict"), "{cookie}");
        assert!(!cookie.contains("0123456789abcdef"), "{cookie}");
    }
}
