//! A secret value (a signing secret, a password, a token) that never shows itself: its `Debug` is
//! `Secret(<redacted>)` and it has no `Display`, so it cannot reach a log or an error by accident.

use std::fmt;

/// A secret value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret's text, for the few places that must hand it on (a Redis password to its client).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret's bytes, as HMAC keys take them.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Whether `text` contains the secret (used to keep it out of logs in tests and checks).
    pub fn appears_in(&self, text: &str) -> bool {
        !self.0.is_empty() && text.contains(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}
