//! `AUTH_PROVIDER_CONFIG`: the issuers of users' bearer tokens, in the JSON E2B's API reads
//! (e2b-dev/infra `packages/auth/pkg/auth/internal/token/provider_config_parse.go`,
//! `provider.go`, `jwks/config.go`, `jwks/audience.go`, `jwks/verifier.go`):
//!
//! ```json
//! {"jwt": [{"issuer": {"url": "https://auth.example.com", "discoveryURL": "…",
//!                      "audiences": ["e2b"], "audienceMatchPolicy": "MatchAny"},
//!           "cacheDuration": "5m"}]}
//! ```
//!
//! As E2B reads it: empty, `null` or `{"jwt": []}` means no issuer (bearer tokens refused);
//! keys match case-insensitively and unknown keys are ignored (Go's `encoding/json`); `url` and
//! `discoveryURL` are trimmed; `url` is required, `https` (or `http` on a loopback host) without
//! user info, query or fragment; `discoveryURL` (optional, the document's full URL, otherwise
//! `url` + `/.well-known/openid-configuration`) follows the same rule and differs from `url`;
//! `audiences` has at least one entry and `audienceMatchPolicy` is empty or `MatchAny` (the only
//! policy: a token's `aud` names at least one of them); `cacheDuration` is a Go duration, and
//! none, zero or negative means 5m.

use super::ConfigError;
use crate::user_auth::{DEFAULT_CACHE_DURATION, DISCOVERY_PATH, IssuerSettings, check_issuer_url};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// The setting as the operator names it.
pub const SETTING: &str = "AUTH_PROVIDER_CONFIG (--auth-provider-config)";

/// E2B's one audience policy.
const MATCH_ANY: &str = "MatchAny";

// Field names lower-cased: keys are matched case-insensitively, as Go does.
#[derive(Deserialize, Default)]
struct ProviderConfig {
    #[serde(default)]
    jwt: Option<Vec<Entry>>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    issuer: Option<Issuer>,
    #[serde(default, rename = "cacheduration")]
    cache_duration: Option<String>,
}

#[derive(Deserialize, Default)]
struct Issuer {
    #[serde(default)]
    url: Option<String>,
    #[serde(default, rename = "discoveryurl")]
    discovery_url: Option<String>,
    #[serde(default)]
    audiences: Option<Vec<String>>,
    #[serde(default, rename = "audiencematchpolicy")]
    audience_match_policy: Option<String>,
}

/// The issuers of `raw` (none when it is unset, empty or `null`).
pub fn parse_auth_provider_config(raw: Option<&str>) -> Result<Vec<IssuerSettings>, ConfigError> {
    let trimmed = raw.map(str::trim).unwrap_or_default();
    if trimmed.is_empty() || trimmed == "null" {
        return Ok(Vec::new());
    }
    let value: Value = serde_json::from_str(trimmed)
        .map_err(|e| ConfigError::new(SETTING, format!("not JSON: {e}")))?;
    let config: Option<ProviderConfig> =
        serde_json::from_value(lowercase_keys(value)).map_err(|e| {
            ConfigError::new(
                SETTING,
                format!(
                    "not {{\"jwt\": [{{\"issuer\": {{\"url\", \"discoveryURL\", \"audiences\", \
                     \"audienceMatchPolicy\"}}, \"cacheDuration\"}}]}}: {e}"
                ),
            )
        })?;
    config
        .unwrap_or_default()
        .jwt
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            issuer_settings(entry).map_err(|e| ConfigError::new(SETTING, format!("jwt[{i}]: {e}")))
        })
        .collect()
}

fn issuer_settings(entry: Entry) -> Result<IssuerSettings, String> {
    let issuer = entry.issuer.unwrap_or_default();
    let url = issuer.url.as_deref().map(str::trim).unwrap_or_default();
    if url.is_empty() {
        return Err("issuer.url is required".into());
    }
    check_issuer_url(url, "issuer.url")?;
    let discovery_url = issuer
        .discovery_url
        .as_deref()
        .map(str::trim)
        .unwrap_or_default();
    let discovery = if discovery_url.is_empty() {
        check_issuer_url(
            &format!("{}{DISCOVERY_PATH}", url.trim_end_matches('/')),
            "issuer.url",
        )?
    } else {
        if discovery_url.trim_end_matches('/') == url.trim_end_matches('/') {
            return Err("issuer.discoveryURL must be different from issuer.url".into());
        }
        check_issuer_url(discovery_url, "issuer.discoveryURL")?
    };
    let audiences = issuer.audiences.unwrap_or_default();
    let policy = issuer.audience_match_policy.unwrap_or_default();
    if audiences.is_empty() {
        return Err("issuer: audiences must contain at least one entry".into());
    }
    if policy != MATCH_ANY {
        if audiences.len() > 1 {
            return Err(format!(
                "issuer: audienceMatchPolicy must be {MATCH_ANY:?} for multiple audiences"
            ));
        }
        if !policy.is_empty() {
            return Err(format!(
                "issuer: audienceMatchPolicy must be empty or {MATCH_ANY:?} for a single audience"
            ));
        }
    }
    let cache_duration = match entry.cache_duration.as_deref().map(str::trim) {
        None | Some("") => DEFAULT_CACHE_DURATION,
        Some(raw) => go_duration(raw)
            .map_err(|e| format!("parse cacheDuration: {e}"))?
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_CACHE_DURATION),
    };
    Ok(IssuerSettings {
        issuer: url.to_owned(),
        discovery,
        audiences,
        cache_duration,
    })
}

/// A Go duration (`5m`, `1h30m`, `300ms`, `1.5h`, `0`); `None` when negative.
fn go_duration(raw: &str) -> Result<Option<Duration>, String> {
    if matches!(raw, "0" | "+0" | "-0") {
        return Ok(Some(Duration::ZERO));
    }
    // jiff reads Go's unit-suffixed form (and more); Go requires a unit after every number.
    if raw.ends_with(|c: char| c.is_ascii_digit() || c == '.') {
        return Err(format!("time: missing unit in duration {raw:?}"));
    }
    let signed: jiff::SignedDuration = raw
        .parse()
        .map_err(|e| format!("time: invalid duration {raw:?} ({e})"))?;
    Ok(Duration::try_from(signed).ok())
}

/// `value` with every object key lower-cased (Go's `encoding/json` matches field names without
/// regard to case).
fn lowercase_keys(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k.to_lowercase(), lowercase_keys(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(lowercase_keys).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Vec<IssuerSettings>, ConfigError> {
        parse_auth_provider_config(Some(raw))
    }

    fn error(raw: &str) -> String {
        let e = parse(raw).unwrap_err();
        assert_eq!(e.setting, SETTING);
        e.message
    }

    #[test]
    fn nothing_configured_means_no_issuers() {
        assert_eq!(parse_auth_provider_config(None).unwrap(), []);
        for raw in [
            "",
            "  ",
            "null",
            " null\n",
            "{}",
            r#"{"jwt":[]}"#,
            r#"{"jwt":null}"#,
        ] {
            assert_eq!(parse(raw).unwrap(), [], "{raw:?}");
        }
    }

    #[test]
    fn e2bs_example_reads_with_its_defaults() {
        let issuers = parse(
            r#"{"jwt":[{"issuer":{"url":" https://auth.example.com/realms/e2b ","audiences":["e2b"]}},
                        {"issuer":{"url":"http://127.0.0.1:8080","discoveryURL":"http://127.0.0.1:8080/custom/oidc",
                                   "audiences":["a","b"],"audienceMatchPolicy":"MatchAny"},
                         "cacheDuration":"1h30m","futureField":true}]}"#,
        )
        .unwrap();
        assert_eq!(issuers.len(), 2);
        assert_eq!(issuers[0].issuer, "https://auth.example.com/realms/e2b");
        assert_eq!(
            issuers[0].discovery.as_str(),
            "https://auth.example.com/realms/e2b/.well-known/openid-configuration"
        );
        assert_eq!(issuers[0].audiences, ["e2b"]);
        assert_eq!(issuers[0].cache_duration, Duration::from_secs(300));
        assert_eq!(
            issuers[1].discovery.as_str(),
            "http://127.0.0.1:8080/custom/oidc"
        );
        assert_eq!(issuers[1].cache_duration, Duration::from_secs(5400));
        // A trailing slash on the issuer is kept for `iss`, not doubled in the discovery URL.
        let slash = parse(r#"{"jwt":[{"issuer":{"url":"https://a.example/","audiences":["x"]}}]}"#)
            .unwrap();
        assert_eq!(slash[0].issuer, "https://a.example/");
        assert_eq!(
            slash[0].discovery.as_str(),
            "https://a.example/.well-known/openid-configuration"
        );
    }

    #[test]
    fn keys_match_without_regard_to_case_as_in_go() {
        let issuers = parse(
            r#"{"JWT":[{"Issuer":{"URL":"https://a.example","DiscoveryUrl":"https://b.example/d","AUDIENCES":["x"]},"CacheDuration":"10s"}]}"#,
        )
        .unwrap();
        assert_eq!(issuers[0].discovery.as_str(), "https://b.example/d");
        assert_eq!(issuers[0].cache_duration, Duration::from_secs(10));
    }

    #[test]
    fn cache_duration_is_a_go_duration_and_nonpositive_means_the_default() {
        let with = |d: &str| {
            parse(&format!(
                r#"{{"jwt":[{{"issuer":{{"url":"https://a.example","audiences":["x"]}},"cacheDuration":"{d}"}}]}}"#
            ))
        };
        assert_eq!(
            with("300ms").unwrap()[0].cache_duration,
            Duration::from_millis(300)
        );
        assert_eq!(
            with("1.5h").unwrap()[0].cache_duration,
            Duration::from_secs(5400)
        );
        for default in ["0", "-1m", "0s"] {
            assert_eq!(
                with(default).unwrap()[0].cache_duration,
                DEFAULT_CACHE_DURATION
            );
        }
        for bad in ["5", "soon", "5 parsecs"] {
            let e = with(bad).unwrap_err();
            assert!(
                e.message.contains("jwt[0]: parse cacheDuration"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn each_mistake_is_named() {
        let cases = [
            ("{", "not JSON"),
            (r#"{"jwt":{}}"#, "not {\"jwt\""),
            (
                r#"{"jwt":[{"issuer":{"audiences":["x"]}}]}"#,
                "jwt[0]: issuer.url is required",
            ),
            (
                r#"{"jwt":[{"issuer":{"url":"  ","audiences":["x"]}}]}"#,
                "issuer.url is required",
            ),
            (
                r#"{"jwt":[{"issuer":{"url":"http://auth.example.com","audiences":["x"]}}]}"#,
                "invalid issuer.url scheme",
            ),
            (
                r#"{"jwt":[{"issuer":{"url":"https://a.example?x=1","audiences":["x"]}}]}"#,
                "query",
            ),
            (
                r#"{"jwt":[{"issuer":{"url":"https://a.example","discoveryURL":"https://a.example/","audiences":["x"]}}]}"#,
                "must be different from issuer.url",
            ),
            (
                r#"{"jwt":[{"issuer":{"url":"https://a.example","discoveryURL":"http://b.example/d","audiences":["x"]}}]}"#,
                "invalid issuer.discoveryURL scheme",
            ),
            (
                r#"{"jwt":[{"issuer":{"url":"https://a.example"}}]}"#,
                "audiences must contain at least one entry",
            ),
            (
                r#"{"jwt":[{"issuer":{"url":"https://a.example","audiences":[]}}]}"#,
                "audiences must contain at least one entry",
            ),
            (
                r#"{"jwt":[{"issuer":{"url":"https://a.example","audiences":["a","b"]}}]}"#,
                "must be \"MatchAny\" for multiple audiences",
            ),
            (
                r#"{"jwt":[{"issuer":{"url":"https://a.example","audiences":["a"],"audienceMatchPolicy":"MatchAll"}}]}"#,
                "must be empty or \"MatchAny\"",
            ),
            (
                r#"{"jwt":[{"issuer":{"url":"https://a.example","audiences":["a"]}},{"issuer":{"url":"x"}}]}"#,
                "jwt[1]:",
            ),
        ];
        for (raw, expected) in cases {
            let message = error(raw);
            assert!(message.contains(expected), "{raw}: {message}");
        }
        // Once per line: the binary prints the error on one line.
        assert!(
            !error(r#"{"jwt":[{"issuer":{"url":"https://a.example","audiences":"x"}}]}"#)
                .contains('\n')
        );
    }
}
