//! Who may operate: one shared admin token (`ADMIN_TOKEN`), presented as `Authorization: Bearer`
//! or, for the console in a browser, in an `HttpOnly`, `SameSite=Strict` cookie set by the login
//! form. Compared in constant time; a refusal never says whether the token was missing or wrong.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::fmt;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The cookie the console's login form sets.
pub const COOKIE: &str = "e2b_admin";
/// Shorter tokens are refused at startup: the token is the only thing between the network and
/// replaying or pausing deliveries.
pub const MIN_LENGTH: usize = 16;

/// The admin token; never printed.
#[derive(Clone)]
pub struct AdminToken(Arc<str>);

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

impl AdminToken {
    /// Checks and wraps a configured token.
    pub fn new(token: &str) -> Result<Self, TokenError> {
        if token.len() < MIN_LENGTH {
            return Err(TokenError::TooShort);
        }
        if !token.bytes().all(|b| b.is_ascii_graphic() && b != b';') {
            return Err(TokenError::NotPrintable);
        }
        Ok(Self(token.into()))
    }

    /// Whether `presented` is the token, in time independent of where they differ and of how
    /// long the guess is (both sides are hashed first).
    pub fn matches(&self, presented: &str) -> bool {
        use sha2::{Digest, Sha256};
        Sha256::digest(self.0.as_bytes())
            .ct_eq(&Sha256::digest(presented.as_bytes()))
            .into()
    }

    /// Whether the request carries the token, as a bearer header or the console's cookie.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(token) = bearer {
            return self.matches(token.trim());
        }
        cookie(headers, COOKIE).is_some_and(|token| self.matches(token))
    }

    /// The `Set-Cookie` value that keeps the token for the console.
    pub fn login_cookie(&self) -> String {
        format!(
            "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age=43200",
            self.0
        )
    }
}

/// The `Set-Cookie` value that forgets the token.
pub fn logout_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
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

/// Middleware: 401 with the same body whether the token was missing or wrong.
pub async fn require(State(token): State<AdminToken>, request: Request, next: Next) -> Response {
    if token.admits(request.headers()) {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(serde_json::json!({"error": "unauthorized"})),
        )
            .into_response()
    }
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
        assert!(token.admits(&headers(&[(
            header::COOKIE,
            "theme=dark; e2b_admin=0123456789abcdef-token"
        )])));
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
        assert!(!token.admits(&headers(&[
            (header::AUTHORIZATION, "Bearer wrong-wrong-wrong-wrong"),
            (header::COOKIE, "e2b_admin=0123456789abcdef-token"),
        ])));
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
        assert!(token.login_cookie().contains("HttpOnly; SameSite=Strict"));
    }
}
