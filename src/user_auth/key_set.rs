//! An issuer's published keys (its JWKS), reduced to the ones a token may be verified with.
//!
//! As E2B's verifier (e2b-dev/infra `packages/auth/pkg/auth/internal/token/jwks/verifier.go`,
//! `validMethodsFromStorage`): a key must declare its `alg`, and only asymmetric signature
//! algorithms count — RSA (RS*/PS*), ECDSA, EdDSA; never HMAC, never `none`. Unlike E2B, a key
//! that does not qualify is skipped rather than failing the whole set (an issuer may publish
//! encryption keys next to its signing keys). A key must also have a `kid` (keyfunc, which E2B
//! uses, finds keys only by a token's `kid`), its type must fit its `alg` (an EC key of the
//! curve the algorithm names, an Ed25519 key for EdDSA), and a `use` other than `sig` excludes
//! it. ES512 is not supported by the `jsonwebtoken` crate, so such keys are skipped too.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use std::fmt;

/// One usable key.
struct Key {
    kid: String,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// The keys a token may name.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| (&k.kid, k.algorithm)))
            .finish()
    }
}

/// What a `kid` and `alg` find.
pub enum KeyLookup<'a> {
    /// The key with this `kid`, declared for this algorithm.
    Found(&'a DecodingKey),
    /// No key has this `kid` (maybe a key the issuer published since the set was fetched).
    UnknownKid,
    /// The key exists but is declared for another algorithm.
    WrongAlgorithm,
}

impl KeySet {
    /// The usable keys of a JWKS document (`{"keys": [...]}`), with how many were skipped.
    pub fn parse(document: &[u8]) -> Result<(Self, usize), String> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document = serde_json::from_slice(document)
            .map_err(|e| format!("the JWKS is not {{\"keys\": [...]}}: {e}"))?;
        let total = document.keys.len();
        let keys: Vec<Key> = document.keys.into_iter().filter_map(usable).collect();
        let skipped = total - keys.len();
        if keys.is_empty() {
            return Err(format!(
                "the JWKS has no usable signing key ({total} keys; each needs a kid and an \
                 asymmetric alg: RS256/384/512, PS256/384/512, ES256, ES384 or EdDSA)"
            ));
        }
        Ok((Self { keys }, skipped))
    }

    /// The key a token's header names.
    pub fn find(&self, kid: &str, algorithm: Algorithm) -> KeyLookup<'_> {
        let mut known = false;
        for key in self.keys.iter().filter(|k| k.kid == kid) {
            if key.algorithm == algorithm {
                return KeyLookup::Found(&key.key);
            }
            known = true;
        }
        if known {
            KeyLookup::WrongAlgorithm
        } else {
            KeyLookup::UnknownKid
        }
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

/// The key, if a token may be verified with it.
fn usable(value: serde_json::Value) -> Option<Key> {
    let jwk: Jwk = serde_json::from_value(value).ok()?;
    let kid = jwk.common.key_id.clone().filter(|kid| !kid.is_empty())?;
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    let algorithm = Algorithm::try_from(jwk.common.key_algorithm?).ok()?;
    let fits = match (algorithm.family(), &jwk.algorithm) {
        (AlgorithmFamily::Rsa, AlgorithmParameters::RSA(_)) => true,
        (AlgorithmFamily::Ec, AlgorithmParameters::EllipticCurve(ec)) => matches!(
            (algorithm, &ec.curve),
            (Algorithm::ES256, EllipticCurve::P256) | (Algorithm::ES384, EllipticCurve::P384)
        ),
        (AlgorithmFamily::Ed, AlgorithmParameters::OctetKeyPair(okp)) => {
            okp.curve == EllipticCurve::Ed25519
        }
        // HMAC keys (`oct`), and any type that does not fit its algorithm.
        _ => false,
    };
    if !fits {
        return None;
    }
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(Key {
        kid,
        algorithm,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // A P-256 point (the generator) and a small RSA modulus: the parser never checks the math.
    const X: &str = "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY";
    const Y: &str = "T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU";

    fn ec(kid: &str, alg: &str) -> serde_json::Value {
        json!({"kty": "EC", "crv": "P-256", "x": X, "y": Y, "kid": kid, "alg": alg, "use": "sig"})
    }

    fn rsa(kid: &str, alg: &str) -> serde_json::Value {
        json!({"kty": "RSA", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXbw", "e": "AQAB", "kid": kid, "alg": alg})
    }

    fn parse(keys: Vec<serde_json::Value>) -> Result<(KeySet, usize), String> {
        KeySet::parse(json!({ "keys": keys }).to_string().as_bytes())
    }

    #[test]
    fn asymmetric_keys_with_kid_and_alg_are_kept_and_found_by_both() {
        let (set, skipped) = parse(vec![ec("e1", "ES256"), rsa("r1", "RS256")]).unwrap();
        assert_eq!((set.len(), skipped), (2, 0));
        assert!(matches!(
            set.find("e1", Algorithm::ES256),
            KeyLookup::Found(_)
        ));
        assert!(matches!(
            set.find("r1", Algorithm::RS256),
            KeyLookup::Found(_)
        ));
        // The token must use the algorithm the key declares: not another of its family, and
        // never HMAC with the key's bytes.
        assert!(matches!(
            set.find("r1", Algorithm::PS256),
            KeyLookup::WrongAlgorithm
        ));
        assert!(matches!(
            set.find("e1", Algorithm::HS256),
            KeyLookup::WrongAlgorithm
        ));
        assert!(matches!(
            set.find("nope", Algorithm::ES256),
            KeyLookup::UnknownKid
        ));
    }

    #[test]
    fn keys_a_token_may_not_use_are_skipped() {
        let no_kid = json!({"kty": "EC", "crv": "P-256", "x": X, "y": Y, "alg": "ES256"});
        let no_alg = json!({"kty": "EC", "crv": "P-256", "x": X, "y": Y, "kid": "a"});
        let hmac = json!({"kty": "oct", "k": "c2VjcmV0LXNlY3JldA", "kid": "h", "alg": "HS256"});
        let encryption = json!({"kty": "EC", "crv": "P-256", "x": X, "y": Y, "kid": "enc", "alg": "ES256", "use": "enc"});
        let wrong_curve = ec("c", "ES384");
        let wrong_type = rsa("t", "ES256");
        let unsupported = rsa("u", "RSA-OAEP");
        let garbage = json!("not a key");
        let (set, skipped) = parse(vec![
            no_kid,
            no_alg,
            hmac,
            encryption,
            wrong_curve,
            wrong_type,
            unsupported,
            garbage,
            ec("good", "ES256"),
        ])
        .unwrap();
        assert_eq!((set.len(), skipped), (1, 8), "{set:?}");
        assert!(matches!(
            set.find("h", Algorithm::HS256),
            KeyLookup::UnknownKid
        ));
    }

    #[test]
    fn a_set_without_a_usable_key_or_shape_is_an_error() {
        let hmac = json!({"kty": "oct", "k": "c2VjcmV0", "kid": "h", "alg": "HS256"});
        assert!(
            parse(vec![hmac])
                .unwrap_err()
                .contains("no usable signing key")
        );
        assert!(parse(vec![]).is_err());
        assert!(KeySet::parse(b"[]").unwrap_err().contains("keys"));
        assert!(KeySet::parse(b"not json").is_err());
    }
}
