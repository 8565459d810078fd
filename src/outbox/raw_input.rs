//! An input set aside as malformed keeps its original bytes: as text when they are UTF-8, else in
//! base64, so nothing is lost to lossy decoding once the stream entry or file is gone.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// The bytes of one input, exactly as received.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RawInput {
    /// The input, when it is UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    /// The input in base64 (standard alphabet, padded), when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_base64: Option<String>,
}

impl RawInput {
    /// Keeps `bytes` as text when they are UTF-8, else as base64.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => Self {
                raw: Some(text.to_owned()),
                raw_base64: None,
            },
            Err(_) => Self {
                raw: None,
                raw_base64: Some(STANDARD.encode(bytes)),
            },
        }
    }

    /// The original bytes, when any were kept.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        match (&self.raw, &self.raw_base64) {
            (Some(text), _) => Some(text.as_bytes().to_vec()),
            (None, Some(b64)) => STANDARD.decode(b64).ok(),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_stays_text_and_other_bytes_round_trip_through_base64() {
        let text = RawInput::from_bytes("{oops ünïcode".as_bytes());
        assert_eq!(text.raw.as_deref(), Some("{oops ünïcode"));
        assert_eq!(text.raw_base64, None);
        let binary = [0xff, 0xfe, b'{', 0x00, 0x80];
        let kept = RawInput::from_bytes(&binary);
        assert_eq!(kept.raw, None);
        assert_eq!(kept.bytes().unwrap(), binary);
        let json = serde_json::to_string(&kept).unwrap();
        assert_eq!(json, r#"{"raw_base64":"//57AIA="}"#);
        let back: RawInput = serde_json::from_str(&json).unwrap();
        assert_eq!(back, kept);
    }
}
