//! Signing and verification for the three wire formats, over the exact body bytes.

use crate::util::secret::Secret;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The Standard Webhooks key of `secret`: `whsec_<base64>` decoded, anything else as raw bytes.
fn standard_webhooks_key(secret: &Secret) -> Vec<u8> {
    let text = secret.expose();
    text.strip_prefix("whsec_")
        .and_then(|b64| STANDARD.decode(b64).ok())
        .unwrap_or_else(|| text.as_bytes().to_vec())
}

/// The active secrets of an endpoint: the first signs, all are accepted (rotation).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SecretSet(Vec<Secret>);

impl SecretSet {
    /// Splits a whitespace-separated list; at least one secret is required.
    pub fn parse(list: &str) -> Result<Self, String> {
        let secrets: Vec<Secret> = list.split_whitespace().map(Secret::new).collect();
        Self::from_secrets(secrets)
    }

    /// Builds a set from individual secrets; at least one, none empty.
    pub fn from_secrets(secrets: Vec<Secret>) -> Result<Self, String> {
        if secrets.is_empty() || secrets.iter().any(|s| s.expose().is_empty()) {
            return Err("is empty; set it to the shared secret (for example the output of `openssl rand -hex 32`)".into());
        }
        Ok(Self(secrets))
    }

    /// The secret that signs single-signature formats (the newest one, listed first).
    pub fn primary(&self) -> &Secret {
        &self.0[0]
    }

    /// Every active secret.
    pub fn all(&self) -> &[Secret] {
        &self.0
    }
}

/// `X-E2B-Signature`: lowercase hex HMAC-SHA256 of the body (same as `openssl dgst -sha256 -hmac`).
pub fn x_e2b_signature(secret: &Secret, body: &[u8]) -> String {
    hex::encode(hmac_sha256(secret.as_bytes(), body))
}

/// How the `e2b-signature` digest is written. E2B's documentation verifies URL-safe base64
/// without padding; live E2B Cloud was seen sending the standard alphabet (`+`, `/`; e2b-dev/E2B
/// issue #1103), so an endpoint can ask for what its verifier expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureEncoding {
    /// `-` and `_`, no `=` (E2B's documented verifier).
    #[default]
    UrlSafe,
    /// `+` and `/`, no `=`.
    Standard,
    /// `+` and `/`, `=`-padded (Go's `base64.StdEncoding`).
    StandardPadded,
}

impl SignatureEncoding {
    /// Every encoding, by name.
    pub const ALL: [(&'static str, SignatureEncoding); 3] = [
        ("url-safe", SignatureEncoding::UrlSafe),
        ("standard", SignatureEncoding::Standard),
        ("standard-padded", SignatureEncoding::StandardPadded),
    ];

    /// The configuration name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, e)| *e == self)
            .map(|(n, _)| *n)
            .expect("every encoding is listed")
    }

    fn encode(self, digest: &[u8]) -> String {
        match self {
            Self::UrlSafe => URL_SAFE_NO_PAD.encode(digest),
            Self::Standard => STANDARD_NO_PAD.encode(digest),
            Self::StandardPadded => STANDARD.encode(digest),
        }
    }
}

impl FromStr for SignatureEncoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s.trim()))
            .map(|(_, e)| *e)
            .ok_or_else(|| {
                format!(
                    "unknown signature encoding {s:?}; use url-safe, standard or standard-padded"
                )
            })
    }
}

impl fmt::Display for SignatureEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `e2b-signature`: SHA-256 of secret bytes then body bytes, base64 in `encoding`.
pub fn e2b_cloud_signature(secret: &Secret, body: &[u8], encoding: SignatureEncoding) -> String {
    encoding.encode(&e2b_cloud_digest(secret, body))
}

fn e2b_cloud_digest(secret: &Secret, body: &[u8]) -> [u8; 32] {
    let mut digest = Sha256::new();
    digest.update(secret.as_bytes());
    digest.update(body);
    digest.finalize().into()
}

/// One Standard Webhooks signature entry: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
pub fn standard_webhooks_signature(
    secret: &Secret,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    let mut mac = HmacSha256::new_from_slice(&standard_webhooks_key(secret))
        .expect("HMAC accepts keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header value: one entry per active secret, space-separated.
pub fn standard_webhooks_header(
    secrets: &SecretSet,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .all()
        .iter()
        .map(|s| standard_webhooks_signature(s, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks an `X-E2B-Signature` value against every active secret, in constant time.
pub fn verify_x_e2b(secrets: &SecretSet, body: &[u8], signature: &str) -> bool {
    let Ok(given) = hex::decode(signature.trim()) else {
        return false;
    };
    secrets.all().iter().any(|s| {
        let mut mac = HmacSha256::new_from_slice(s.as_bytes()).expect("any key length");
        mac.update(body);
        mac.verify_slice(&given).is_ok()
    })
}

/// Checks an `e2b-signature` value in any [`SignatureEncoding`] against every active secret, in
/// constant time.
pub fn verify_e2b_cloud(secrets: &SecretSet, body: &[u8], signature: &str) -> bool {
    // One alphabet and no padding: every encoding E2B is known to use reads the same way.
    let normalized: String = signature
        .trim()
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    let Ok(given) = STANDARD_NO_PAD.decode(normalized) else {
        return false;
    };
    secrets
        .all()
        .iter()
        .any(|s| bool::from(e2b_cloud_digest(s, body).as_slice().ct_eq(&given)))
}

/// Checks a `webhook-signature` header (any entry, any active secret), in constant time.
pub fn verify_standard_webhooks(
    secrets: &SecretSet,
    id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
) -> bool {
    let expected: Vec<String> = secrets
        .all()
        .iter()
        .map(|s| standard_webhooks_signature(s, id, timestamp, body))
        .collect();
    header.split_whitespace().any(|given| {
        expected
            .iter()
            .any(|e| bool::from(e.as_bytes().ct_eq(given.as_bytes())))
    })
}

fn hmac_sha256(key: &[u8], body: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_e2b_matches_rfc4231_test_case_2() {
        // RFC 4231 §4.3: key "Jefe", data "what do ya want for nothing?".
        let sig = x_e2b_signature(&Secret::new("Jefe"), b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let set = SecretSet::parse("Jefe").unwrap();
        assert!(verify_x_e2b(&set, b"what do ya want for nothing?", &sig));
        assert!(!verify_x_e2b(&set, b"what do ya want for nothing!", &sig));
        assert!(!verify_x_e2b(&set, b"x", "not-hex"));
    }

    #[test]
    fn rotation_accepts_any_active_secret_and_signs_with_all() {
        let set = SecretSet::parse("new-secret old-secret").unwrap();
        assert_eq!(set.primary(), &Secret::new("new-secret"));
        let old_only = x_e2b_signature(&Secret::new("old-secret"), b"{}");
        assert!(verify_x_e2b(&set, b"{}", &old_only));
        let header = standard_webhooks_header(&set, "msg", 1, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        let old_set = SecretSet::parse("old-secret").unwrap();
        assert!(verify_standard_webhooks(&old_set, "msg", 1, b"{}", &header));
        assert!(!verify_standard_webhooks(
            &old_set, "msg", 2, b"{}", &header
        ));
    }

    #[test]
    fn e2b_cloud_signatures_in_every_encoding_verify() {
        // sha256("s3cret-16" + "{}"), base64-encoded by Python (hashlib, base64).
        let secret = Secret::new("s3cret-16");
        let set = SecretSet::parse("s3cret-16").unwrap();
        let expected = [
            "duJINRyzVkg-zuhkN0ME7g0Z3UZkndH5u_b_i41I_Qo",
            "duJINRyzVkg+zuhkN0ME7g0Z3UZkndH5u/b/i41I/Qo",
            "duJINRyzVkg+zuhkN0ME7g0Z3UZkndH5u/b/i41I/Qo=",
        ];
        for ((_, encoding), want) in SignatureEncoding::ALL.iter().zip(expected) {
            assert_eq!(e2b_cloud_signature(&secret, b"{}", *encoding), want);
            assert!(verify_e2b_cloud(&set, b"{}", want), "{want}");
            assert!(!verify_e2b_cloud(&set, b"{ }", want), "{want}");
        }
        let other = SecretSet::parse("s3cret-17").unwrap();
        assert!(!verify_e2b_cloud(&other, b"{}", expected[0]));
        assert!(!verify_e2b_cloud(&set, b"{}", "not base64 at all!"));
        assert!(!verify_e2b_cloud(&set, b"{}", ""));
        assert_eq!(
            "STANDARD-padded".parse(),
            Ok(SignatureEncoding::StandardPadded)
        );
        assert!("hex".parse::<SignatureEncoding>().is_err());
    }

    #[test]
    fn whsec_secrets_are_base64_decoded() {
        let s = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        assert_eq!(standard_webhooks_key(&s).len(), 24);
        assert_eq!(standard_webhooks_key(&Secret::new("plain")), b"plain");
    }

    #[test]
    fn secrets_never_print() {
        let set = SecretSet::parse("hunter2hunter2").unwrap();
        assert!(!format!("{set:?}").contains("hunter2"));
        assert!(SecretSet::parse("   ").is_err());
    }
}
