//! Durations as people write them in settings (`500ms`, `5s`, `2m`, `1h 30m`): one parser for
//! every flag, environment variable and TOML key.

use std::time::Duration;

/// Parses a human duration such as `500ms`, `5s`, `2m`, `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let signed: jiff::SignedDuration = text
        .trim()
        .parse()
        .map_err(|e| format!("{text:?} is not a duration like 5s, 2m or 1h ({e})"))?;
    Duration::try_from(signed).map_err(|_| format!("{text:?} must not be negative"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_units_and_refuses_words_and_negatives() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(
            parse_duration(" 1h 30m ").unwrap(),
            Duration::from_secs(5400)
        );
        assert!(parse_duration("forever").is_err());
        assert!(parse_duration("-5s").is_err());
    }
}
