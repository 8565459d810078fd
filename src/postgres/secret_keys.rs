//! Sealing of registered webhooks' signing secrets at rest: AES-256-GCM (RustCrypto `aes-gcm`)
//! under the operator's `WEBHOOK_SECRETS_KEY`, a comma-separated list of base64 keys of 32 bytes,
//! the first one current (new writes), the others only opening what they sealed before a
//! rotation.
//!
//! A sealed secret is one envelope: version (1 byte) · key id (4 bytes) · nonce (12 random bytes,
//! new on every write) · ciphertext and tag. The key id is derived from the key, so operators
//! never name keys and an envelope says which key opens it. The webhook's id is the associated
//! data: an envelope copied onto another webhook's row does not open.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The setting, as operators name it in every refusal.
pub const SETTING: &str = "WEBHOOK_SECRETS_KEY";
/// How to make a key, for messages and docs.
pub const GENERATE: &str = "openssl rand -base64 32";

const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;
/// Binds an envelope to its use, besides the webhook id.
const CONTEXT: &[u8] = b"e2b-webhook-emitter/webhooks.signature_secret/";

/// A key's id: what an envelope names (shown as 8 hex digits; it reveals nothing of the key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

#[derive(Clone)]
struct Key {
    id: KeyId,
    cipher: Aes256Gcm,
}

/// The keys of `WEBHOOK_SECRETS_KEY`: the current one first. No key material is ever printed.
#[derive(Clone)]
pub struct SecretKeys {
    keys: Vec<Key>,
}

impl std::fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self.keys.iter().map(|k| k.id.to_string()).collect();
        write!(f, "SecretKeys(ids {ids:?})")
    }
}

/// Why a sealed secret does not open.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    /// Not an envelope this version writes.
    #[error("not a sealed secret (unknown envelope)")]
    Malformed,
    /// Sealed under a key that is not in `WEBHOOK_SECRETS_KEY`.
    #[error("sealed under key {0}, which WEBHOOK_SECRETS_KEY does not hold")]
    UnknownKey(KeyId),
    /// The key is there but the envelope does not open: altered, or moved from another row.
    #[error("does not open under key {0} (altered, or copied from another webhook)")]
    Rejected(KeyId),
}

impl SecretKeys {
    /// Reads `WEBHOOK_SECRETS_KEY`; the message never quotes the value.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut keys: Vec<Key> = Vec::new();
        let listed: Vec<&str> = raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if listed.is_empty() {
            return Err(format!(
                "is empty; give a key of 32 random bytes in base64 ({GENERATE})"
            ));
        }
        for (n, text) in listed.iter().enumerate() {
            let which = if listed.len() == 1 {
                "the key".to_owned()
            } else {
                format!("key {} of {}", n + 1, listed.len())
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| format!("{which} is not base64 (make one with {GENERATE})"))?;
            if bytes.len() != 32 {
                return Err(format!(
                    "{which} is {} bytes; it must be 32 random bytes in base64 ({GENERATE})",
                    bytes.len()
                ));
            }
            let id = key_id(&bytes);
            if keys.iter().any(|k| k.id == id) {
                return Err(format!("{which} is listed twice"));
            }
            let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| "bad key length")?;
            keys.push(Key { id, cipher });
        }
        Ok(Self { keys })
    }

    /// The key new writes use.
    pub fn current(&self) -> KeyId {
        self.keys[0].id
    }

    /// `secret` sealed under the current key for webhook `webhook`, with a fresh random nonce.
    pub fn seal(&self, secret: &str, webhook: Uuid) -> Vec<u8> {
        let key = &self.keys[0];
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = associated_data(webhook);
        let sealed = key
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: secret.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("AES-GCM seals any secret shorter than 64 GiB");
        let mut envelope = Vec::with_capacity(HEADER_LEN + sealed.len());
        envelope.push(VERSION);
        envelope.extend_from_slice(&key.id.0);
        envelope.extend_from_slice(&nonce);
        envelope.extend_from_slice(&sealed);
        envelope
    }

    /// The secret in `envelope`, sealed for webhook `webhook` under any of the keys.
    pub fn open(&self, envelope: &[u8], webhook: Uuid) -> Result<String, OpenError> {
        let id = sealed_with(envelope)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or(OpenError::UnknownKey(id))?;
        let nonce = Nonce::from_slice(&envelope[1 + KEY_ID_LEN..HEADER_LEN]);
        let aad = associated_data(webhook);
        let plain = key
            .cipher
            .decrypt(
                nonce,
                Payload {
                    msg: &envelope[HEADER_LEN..],
                    aad: &aad,
                },
            )
            .map_err(|_| OpenError::Rejected(id))?;
        String::from_utf8(plain).map_err(|_| OpenError::Rejected(id))
    }
}

/// The key an envelope was sealed under.
pub fn sealed_with(envelope: &[u8]) -> Result<KeyId, OpenError> {
    // Header plus the 16-byte tag at least.
    if envelope.len() < HEADER_LEN + 16 || envelope[0] != VERSION {
        return Err(OpenError::Malformed);
    }
    let mut id = [0; KEY_ID_LEN];
    id.copy_from_slice(&envelope[1..1 + KEY_ID_LEN]);
    Ok(KeyId(id))
}

fn key_id(key: &[u8]) -> KeyId {
    let digest = Sha256::new()
        .chain_update(b"e2b-webhook-emitter secrets key id\0")
        .chain_update(key)
        .finalize();
    let mut id = [0; KEY_ID_LEN];
    id.copy_from_slice(&digest[..KEY_ID_LEN]);
    KeyId(id)
}

fn associated_data(webhook: Uuid) -> Vec<u8> {
    [CONTEXT, webhook.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> String {
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    }

    #[test]
    fn seals_opens_and_binds_to_the_webhook() {
        let keys = SecretKeys::parse(&key(1)).unwrap();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let sealed = keys.seal("whsec_top-secret-value", a);
        assert!(!String::from_utf8_lossy(&sealed).contains("top-secret"));
        assert_eq!(keys.open(&sealed, a).unwrap(), "whsec_top-secret-value");
        assert_eq!(
            keys.open(&sealed, b),
            Err(OpenError::Rejected(keys.current()))
        );
        // A fresh nonce every time: the same secret never seals to the same bytes.
        assert_ne!(sealed, keys.seal("whsec_top-secret-value", a));
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(keys.open(&altered, a).is_err());
        assert_eq!(keys.open(b"plain", a), Err(OpenError::Malformed));
    }

    #[test]
    fn a_rotated_ring_opens_the_old_key_and_seals_with_the_new() {
        let old = SecretKeys::parse(&key(1)).unwrap();
        let webhook = Uuid::new_v4();
        let before = old.seal("s1", webhook);
        let ring = SecretKeys::parse(&format!("{}, {}", key(2), key(1))).unwrap();
        assert_eq!(ring.open(&before, webhook).unwrap(), "s1");
        let after = ring.seal("s2", webhook);
        assert_eq!(sealed_with(&after).unwrap(), ring.current());
        assert_ne!(ring.current(), old.current());
        // The new key alone no longer opens what the old one sealed.
        let new_only = SecretKeys::parse(&key(2)).unwrap();
        assert_eq!(
            new_only.open(&before, webhook),
            Err(OpenError::UnknownKey(old.current()))
        );
    }

    #[test]
    fn malformed_keys_are_refused_without_quoting_them() {
        for empty in ["", " , "] {
            assert!(SecretKeys::parse(empty).unwrap_err().contains(GENERATE));
        }
        let twice = format!("{},{}", key(3), key(3));
        for bad in ["not base64!!", "c2hvcnQ=", twice.as_str()] {
            let e = SecretKeys::parse(bad).unwrap_err();
            assert!(!e.contains(bad) && !e.contains(&key(3)), "{e}");
        }
        assert!(SecretKeys::parse("c2hvcnQ=").unwrap_err().contains("32"));
        let debug = format!("{:?}", SecretKeys::parse(&key(4)).unwrap());
        assert!(!debug.contains(&key(4)), "{debug}");
    }
}
