//! Tokens signed here with keys generated here (ECDSA P-256 by rcgen/ring), checked by
//! `verify`: each refusal is one claim or header changed from a token that passes.

use super::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

const ISSUER: &str = "https://auth.example.com/realms/e2b";
const AUDIENCE: &str = "e2b-dashboard";

struct Signer {
    kid: String,
    key: EncodingKey,
    jwk: Value,
}

fn signer(kid: &str) -> Signer {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = pair.public_key_raw(); // 0x04 || x || y
    Signer {
        kid: kid.to_owned(),
        key: EncodingKey::from_ec_der(&pair.serialize_der()),
        jwk: json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]),
        }),
    }
}

fn keys(signers: &[&Signer]) -> KeySet {
    let jwks = json!({ "keys": signers.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>() });
    KeySet::parse(jwks.to_string().as_bytes()).unwrap().0
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn claims() -> Value {
    json!({"iss": ISSUER, "sub": "user-1", "aud": AUDIENCE, "exp": now() + 300, "iat": now()})
}

fn sign(signer: &Signer, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(signer.kid.clone());
    encode(&header, claims, &signer.key).unwrap()
}

fn check(token: &str, keys: &KeySet) -> Result<Identity, TokenError> {
    verify(
        token,
        keys,
        ISSUER,
        &[AUDIENCE.to_owned(), "cli".to_owned()],
    )
}

/// `claims()` with `changes` applied (a null removes the claim).
fn with(changes: Value) -> Value {
    let mut c = claims();
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

/// A token with this header and payload JSON, keeping `base`'s signature.
fn reassemble(header: &Value, payload: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        B64.encode(header.to_string()),
        B64.encode(payload.to_string())
    )
}

#[test]
fn a_valid_token_names_its_issuer_and_subject() {
    let s = signer("k1");
    let identity = check(&sign(&s, &claims()), &keys(&[&s])).unwrap();
    assert_eq!(
        identity,
        Identity {
            issuer: ISSUER.into(),
            subject: "user-1".into()
        }
    );
    // `aud` as an array naming one configured audience among others also passes (MatchAny).
    let many = with(json!({"aud": ["other", "cli"]}));
    assert!(check(&sign(&s, &many), &keys(&[&s])).is_ok());
    assert_eq!(
        claimed_issuer(&sign(&s, &claims())).as_deref(),
        Some(ISSUER)
    );
}

#[test]
fn time_claims_are_enforced_without_leeway() {
    let s = signer("k1");
    let ks = keys(&[&s]);
    let expired = with(json!({"exp": now() - 5}));
    assert_eq!(check(&sign(&s, &expired), &ks), Err(TokenError::Expired));
    let no_exp = with(json!({"exp": null}));
    assert_eq!(check(&sign(&s, &no_exp), &ks), Err(TokenError::Claims));
    let string_exp = with(json!({"exp": "9999999999"}));
    assert_eq!(check(&sign(&s, &string_exp), &ks), Err(TokenError::Claims));
    let early = with(json!({"nbf": now() + 60}));
    assert_eq!(check(&sign(&s, &early), &ks), Err(TokenError::NotYetValid));
    let started = with(json!({"nbf": now() - 60}));
    assert!(check(&sign(&s, &started), &ks).is_ok());
}

#[test]
fn issuer_and_audience_must_match_exactly() {
    let s = signer("k1");
    let ks = keys(&[&s]);
    for iss in [
        json!(format!("{ISSUER}/")),
        json!("https://auth.example.com/realms/E2B"),
        json!("https://evil.example.com"),
        json!([ISSUER]),
        Value::Null,
    ] {
        let token = sign(&s, &with(json!({ "iss": iss })));
        assert_eq!(check(&token, &ks), Err(TokenError::Issuer), "iss {iss}");
    }
    for aud in [json!("other"), json!(["a", "b"]), json!([]), Value::Null] {
        let token = sign(&s, &with(json!({ "aud": aud })));
        assert_eq!(check(&token, &ks), Err(TokenError::Audience), "aud {aud}");
    }
    for sub in [Value::Null, json!(""), json!(42)] {
        let token = sign(&s, &with(json!({ "sub": sub })));
        assert_eq!(check(&token, &ks), Err(TokenError::Claims), "sub {sub}");
    }
}

#[test]
fn the_signature_and_the_keys_algorithm_are_enforced() {
    let (s, other) = (signer("k1"), signer("k2"));
    let ks = keys(&[&s]);
    let good = sign(&s, &claims());
    let [header, _, signature]: [&str; 3] = good.split('.').collect::<Vec<_>>().try_into().unwrap();
    let header: Value = serde_json::from_slice(&B64.decode(header).unwrap()).unwrap();

    // A payload changed after signing.
    let tampered = reassemble(&header, &with(json!({"sub": "admin"})), signature);
    assert_eq!(check(&tampered, &ks), Err(TokenError::Signature));
    // Signed by a key the set does not have, under a kid it has.
    let mut forged = sign(&other, &claims());
    forged = forged.replacen(
        forged.split('.').next().unwrap(),
        &B64.encode(json!({"alg": "ES256", "kid": "k1", "typ": "JWT"}).to_string()),
        1,
    );
    assert_eq!(check(&forged, &ks), Err(TokenError::Signature));
    // A kid the set does not have.
    assert_eq!(
        check(&sign(&other, &claims()), &ks),
        Err(TokenError::UnknownKid)
    );
    // No kid.
    let no_kid = encode(&Header::new(Algorithm::ES256), &claims(), &s.key).unwrap();
    assert_eq!(check(&no_kid, &ks), Err(TokenError::NoKid));
    // `alg: none`, unsigned.
    let none = reassemble(&json!({"alg": "none", "kid": "k1"}), &claims(), "");
    assert_eq!(check(&none, &ks), Err(TokenError::Malformed));
    // HS256 keyed with the public key's bytes (the classic confusion attack).
    let public_bytes = serde_json::to_vec(&s.jwk).unwrap();
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("k1".into());
    let hmac = encode(
        &hs,
        &claims(),
        &EncodingKey::from_secret(&public_bytes).unwrap(),
    )
    .unwrap();
    assert_eq!(check(&hmac, &ks), Err(TokenError::WrongAlgorithm));
    // Garbage.
    for junk in ["", "a.b", "a.b.c", "e2b_0011", "....."] {
        assert_eq!(check(junk, &ks), Err(TokenError::Malformed), "{junk}");
        assert_eq!(claimed_issuer(junk), None);
    }
}
