//! One bearer token checked against one issuer's keys, as E2B's API checks it (e2b-dev/infra
//! `packages/auth/pkg/auth/internal/token/jwks/verifier.go` `Verify`, `jwks/audience.go`,
//! `oidc/oidc.go` `VerifyIdentity`):
//!
//! - the signature, by the key the header's `kid` names, with exactly the algorithm that key
//!   declares (so `alg: none`, HMAC and a swapped algorithm are refused);
//! - `exp` required and in the future, `nbf` (when present) in the past — no leeway, as E2B's
//!   OIDC verifier sets none;
//! - `iss` a string equal to the configured issuer URL, byte for byte;
//! - `aud` present (a string or an array of strings) and naming at least one configured
//!   audience (`MatchAny`, E2B's only policy);
//! - `sub` a non-empty string (with `iss`, the identity looked up in `public.user_identities`).

use super::key_set::{KeyLookup, KeySet};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Validation, decode, decode_header};

/// Who a valid token says its bearer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `iss`: the issuer URL as configured.
    pub issuer: String,
    /// `sub`: the user at that issuer.
    pub subject: String,
}

/// Why a token was refused (for the log: it never holds the token or its claims' values).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts with a JSON header naming a supported algorithm (`none`
    /// included).
    #[error("not a JWT with a supported algorithm")]
    Malformed,
    /// The header names no `kid`.
    #[error("the token's header names no kid")]
    NoKid,
    /// No key of the issuer has this `kid`.
    #[error("no key of the issuer has the token's kid")]
    UnknownKid,
    /// The key is declared for another algorithm than the token's header names.
    #[error("the token's alg is not the one its key declares")]
    WrongAlgorithm,
    /// The signature does not verify.
    #[error("bad signature")]
    Signature,
    /// Past `exp`.
    #[error("expired")]
    Expired,
    /// Before `nbf`.
    #[error("not valid yet (nbf)")]
    NotYetValid,
    /// `iss` missing, not a string, or another issuer.
    #[error("wrong issuer")]
    Issuer,
    /// `aud` missing or naming none of the configured audiences.
    #[error("wrong audience")]
    Audience,
    /// A required claim (`exp`, `sub`) is missing or malformed.
    #[error("claims missing or malformed")]
    Claims,
}

/// The claims read after verification (their types are checked below, so that a wrong type is
/// refused as that claim, not as an unreadable payload).
#[derive(serde::Deserialize)]
struct Claims {
    iss: Option<serde_json::Value>,
    sub: Option<serde_json::Value>,
}

/// Verifies `token` with `keys` for the issuer `issuer` and its `audiences`.
pub fn verify(
    token: &str,
    keys: &KeySet,
    issuer: &str,
    audiences: &[String],
) -> Result<Identity, TokenError> {
    let header = decode_header(token).map_err(|_| TokenError::Malformed)?;
    let kid = header.kid.as_deref().ok_or(TokenError::NoKid)?;
    let key = match keys.find(kid, header.alg) {
        KeyLookup::Found(key) => key,
        KeyLookup::UnknownKid => return Err(TokenError::UnknownKid),
        KeyLookup::WrongAlgorithm => return Err(TokenError::WrongAlgorithm),
    };
    let mut validation = Validation::new(header.alg);
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    validation.leeway = 0;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = true;
    validation.set_issuer(&[issuer]);
    validation.set_audience(audiences);
    let data = decode::<Claims>(token, key, &validation).map_err(|e| match e.kind() {
        ErrorKind::InvalidSignature => TokenError::Signature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::Issuer,
        ErrorKind::InvalidAudience => TokenError::Audience,
        ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim) => {
            match claim.as_str() {
                "iss" => TokenError::Issuer,
                "aud" => TokenError::Audience,
                _ => TokenError::Claims,
            }
        }
        ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
            TokenError::Malformed
        }
        // A claim of the wrong type (`iss` or `sub` not a string), and anything else.
        _ => TokenError::Claims,
    })?;
    // The crate also accepts an `iss` array naming the issuer; E2B (golang-jwt's
    // `WithIssuer`) takes a string only.
    match data.claims.iss {
        Some(serde_json::Value::String(iss)) if iss == issuer => {}
        _ => return Err(TokenError::Issuer),
    }
    match data.claims.sub {
        Some(serde_json::Value::String(sub)) if !sub.is_empty() => Ok(Identity {
            issuer: issuer.to_owned(),
            subject: sub,
        }),
        _ => Err(TokenError::Claims),
    }
}

/// The `iss` a token claims, read without verifying anything: only to pick which configured
/// issuer verifies it (each then checks `iss` itself).
pub fn claimed_issuer(token: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Peek {
        iss: Option<serde_json::Value>,
    }
    let peek: Peek = jsonwebtoken::dangerous::insecure_decode_claims(token).ok()?;
    match peek.iss? {
        serde_json::Value::String(iss) => Some(iss),
        _ => None,
    }
}

#[cfg(test)]
#[path = "token_tests.rs"]
mod tests;
