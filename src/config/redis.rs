//! The Redis settings, read as the orchestrator reads them (e2b-dev/infra
//! `packages/orchestrator/pkg/cfg/model.go`, `packages/shared/pkg/factories/redis.go`), so that its
//! environment can be copied unchanged:
//!
//! - `REDIS_URL` is a bare `host:port` (E2B sets `redis.service.consul:6379`); `REDIS_CLUSTER_URL`,
//!   also `host:port`, wins when set. A `redis://` or `rediss://` URL is accepted too.
//! - TLS is on only when `REDIS_TLS_ENABLED` is true (or the URL says `rediss://`);
//!   `REDIS_TLS_CA_BASE64` needs it.
//! - `REDIS_PASSWORD` is read separately and, as upstream, never sent without TLS.
//!
//! Settings that contradict each other stop startup with the one to change.

use super::shared_args::{DEFAULT_LEADER_LEASE_TTL, DEFAULT_REDIS_CLAIM_IDLE, RedisArgs};
use super::{ConfigError, RedisSettings, RunArgs};
use crate::source::redis::{RedisConnectionSettings, RedisTls};
use crate::util::duration::parse_duration;
use crate::util::secret::Secret;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::time::Duration;
use url::Url;

const URL: &str = "REDIS_URL (--redis-url)";
const CLUSTER_URL: &str = "REDIS_CLUSTER_URL (--redis-cluster-url)";
const TLS_ENABLED: &str = "REDIS_TLS_ENABLED (--redis-tls-enabled)";
const TLS_CA: &str = "REDIS_TLS_CA_BASE64 (--redis-tls-ca-base64)";
const PASSWORD: &str = "REDIS_PASSWORD (--redis-password)";
const LEASE_TTL: &str = "LEADER_LEASE_TTL (--leader-lease-ttl)";

/// The Redis settings of `args`, if Redis is configured (also for `dead-letters`).
pub fn redis_config(args: &RunArgs) -> Result<Option<RedisSettings>, ConfigError> {
    let Some(connection) = connection_settings(&args.redis)? else {
        return Ok(None);
    };
    let consumer = args
        .redis_consumer
        .clone()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(default_consumer);
    let claim_idle = parse_duration(&args.redis_claim_idle)
        .map_err(|e| ConfigError::new("REDIS_CLAIM_IDLE (--redis-claim-idle)", e))?;
    let lease_ttl =
        parse_duration(&args.leader_lease_ttl).map_err(|e| ConfigError::new(LEASE_TTL, e))?;
    if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&lease_ttl) {
        return Err(ConfigError::new(
            LEASE_TTL,
            "must be between 1s and 5m (the default 8s replaces a lost instance within about 12 s)",
        ));
    }
    Ok(Some(RedisSettings {
        connection,
        stream: args.redis.redis_stream.clone(),
        group: args.redis.redis_group.clone(),
        consumer,
        claim_idle,
        trim: args.redis_trim,
        lease_ttl,
    }))
}

/// The Redis settings of a tool reading the service's shared state (`dead-letters`): the
/// service's Redis flags, its other Redis settings at their defaults.
pub fn shared_redis_config(redis: &RedisArgs) -> Result<Option<RedisSettings>, ConfigError> {
    redis_config(&RunArgs {
        redis: redis.clone(),
        redis_claim_idle: DEFAULT_REDIS_CLAIM_IDLE.into(),
        leader_lease_ttl: DEFAULT_LEADER_LEASE_TTL.into(),
        ..RunArgs::default()
    })
}

fn connection_settings(args: &RedisArgs) -> Result<Option<RedisConnectionSettings>, ConfigError> {
    let set = |value: &Option<String>| {
        value
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    // The orchestrator's order: a cluster URL wins over REDIS_URL.
    let (raw, cluster, setting) = match (set(&args.redis_cluster_url), set(&args.redis_url)) {
        (Some(cluster), _) => (cluster, true, CLUSTER_URL),
        (None, Some(single)) => (single, false, URL),
        (None, None) => return Ok(None),
    };
    let address = parse_address(&raw).map_err(|e| ConfigError::new(setting, e))?;
    let tls_enabled = set(&args.redis_tls_enabled)
        .map(|v| {
            parse_go_bool(&v)
                .ok_or_else(|| ConfigError::new(TLS_ENABLED, format!("{v:?} is not true or false")))
        })
        .transpose()?;
    let tls = match (address.scheme_tls, tls_enabled) {
        (Some(false), Some(true)) => {
            return Err(ConfigError::new(
                setting,
                "is a redis:// (plaintext) URL, but REDIS_TLS_ENABLED is true; write the bare host:port as the orchestrator does (or rediss://…), or set REDIS_TLS_ENABLED=false",
            ));
        }
        (Some(true), Some(false)) => {
            return Err(ConfigError::new(
                TLS_ENABLED,
                format!(
                    "is false, but {} is a rediss:// (TLS) URL; set REDIS_TLS_ENABLED=true, or write the bare host:port",
                    env_name(setting)
                ),
            ));
        }
        (scheme, flag) => scheme.or(flag).unwrap_or(false),
    };
    let ca_pem = set(&args.redis_tls_ca_base64)
        .map(|encoded| decode_ca(&encoded))
        .transpose()?;
    if ca_pem.is_some() && !tls {
        return Err(ConfigError::new(
            TLS_CA,
            "is set, but TLS to Redis is off; set REDIS_TLS_ENABLED=true, or remove the CA",
        ));
    }
    let password = match (set(&args.redis_password), address.password) {
        (Some(separate), Some(in_url)) if separate != in_url => {
            return Err(ConfigError::new(
                PASSWORD,
                format!(
                    "differs from the password in {}; set only one of them",
                    env_name(setting)
                ),
            ));
        }
        (Some(_), _) if !tls => {
            return Err(ConfigError::new(
                PASSWORD,
                "is set, but TLS to Redis is off: like the orchestrator, the emitter does not send the password in cleartext; set REDIS_TLS_ENABLED=true, or unset REDIS_PASSWORD",
            ));
        }
        (separate, in_url) => separate.or(in_url),
    };
    Ok(Some(RedisConnectionSettings {
        host: address.host,
        port: address.port,
        cluster,
        tls: tls.then_some(RedisTls { ca_pem }),
        username: address.username,
        password: password.map(Secret::new),
        db: address.db,
    }))
}

/// `REDIS_URL` for `REDIS_URL (--redis-url)`.
fn env_name(setting: &str) -> &str {
    setting.split(' ').next().unwrap_or(setting)
}

/// A Redis address as written in `REDIS_URL` / `REDIS_CLUSTER_URL`.
#[derive(Debug, PartialEq)]
struct Address {
    host: String,
    port: u16,
    /// `Some(true)` for `rediss://`, `Some(false)` for `redis://`, `None` for a bare `host:port`.
    scheme_tls: Option<bool>,
    username: Option<String>,
    password: Option<String>,
    db: i64,
}

/// Parses `host:port`, `[v6]:port`, `host` (port 6379), or `redis[s]://[user][:password@]host[:port][/db]`.
fn parse_address(raw: &str) -> Result<Address, String> {
    let (url, scheme_tls) = match raw.split_once("://") {
        Some((scheme, _)) => {
            let tls = match scheme {
                "redis" => false,
                "rediss" => true,
                other => {
                    return Err(format!(
                        "scheme {other:?} is not redis or rediss; write host:port as the orchestrator does"
                    ));
                }
            };
            (raw.to_owned(), Some(tls))
        }
        None => {
            if raw.contains(['/', '@', '?', '#']) {
                return Err("is neither host:port nor a redis:// or rediss:// URL".to_owned());
            }
            (format!("redis://{raw}"), None)
        }
    };
    // Only the parser's reason: the text may hold a password.
    let url = Url::parse(&url).map_err(|e| {
        format!("cannot be parsed ({e}); expected host:port, or redis[s]://[:password@]host:port")
    })?;
    let host = match url.host() {
        Some(url::Host::Domain(name)) => name.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err("names no host; expected host:port".to_owned()),
    };
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8()
            .map(|decoded| decoded.into_owned())
            .map_err(|_| "holds a user or password that is not UTF-8".to_owned())
    };
    let username = Some(url.username())
        .filter(|u| !u.is_empty())
        .map(decode)
        .transpose()?;
    let password = url.password().map(decode).transpose()?;
    let db = match url.path().trim_matches('/') {
        "" => 0,
        db => db
            .parse()
            .map_err(|_| format!("database {db:?} is not a number"))?,
    };
    Ok(Address {
        host,
        port: url.port().unwrap_or(6379),
        scheme_tls,
        username,
        password,
        db,
    })
}

/// A boolean as Go's `strconv.ParseBool` (the orchestrator's env parser) reads it.
fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Decodes `REDIS_TLS_CA_BASE64` and checks that it holds at least one PEM certificate, as the
/// orchestrator's `AppendCertsFromPEM` does.
fn decode_ca(encoded: &str) -> Result<Vec<u8>, ConfigError> {
    use base64::Engine;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| {
            ConfigError::new(
                TLS_CA,
                format!("is not base64 ({e}); encode the PEM file with `base64 -w0 ca.pem`"),
            )
        })?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::new(TLS_CA, format!("is not a PEM certificate ({e})")))?;
    if certificates.is_empty() {
        return Err(ConfigError::new(
            TLS_CA,
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----); encode the CA's PEM file with `base64 -w0 ca.pem`",
        ));
    }
    Ok(pem)
}

fn default_consumer() -> String {
    std::env::var("NOMAD_ALLOC_ID")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("emitter-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunConfig;

    /// A PEM block: only its framing and base64 are checked here (real CAs are used against a real
    /// redis-server in tests/redis_source.rs).
    const CA_PEM: &str =
        "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n";

    fn ca_base64() -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(CA_PEM)
    }

    fn args() -> RunArgs {
        let mut args = crate::config::tests::args();
        args.redis_claim_idle = "60s".into();
        args
    }

    fn connection(args: &RunArgs) -> Result<RedisConnectionSettings, ConfigError> {
        RunConfig::from_args(args).map(|c| c.redis.expect("Redis configured").connection)
    }

    #[test]
    fn bare_host_port_as_the_orchestrator_writes_it_is_plaintext_database_0() {
        let mut a = args();
        a.redis.redis_url = Some("redis.service.consul:6379".into());
        a.redis.redis_tls_enabled = Some("false".into());
        let c = connection(&a).unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.cluster, c.tls.is_none(), c.db),
            ("redis.service.consul", 6379, false, true, 0)
        );
        assert!(c.password.is_none());
        a.redis.redis_url = Some("10.0.0.7".into());
        assert_eq!(connection(&a).unwrap().port, 6379);
        a.redis.redis_url = Some("[fd00::1]:6380".into());
        assert_eq!(connection(&a).unwrap().addr(), "[fd00::1]:6380");
    }

    #[test]
    fn the_gcp_shape_cluster_tls_and_a_private_ca_is_accepted() {
        let mut a = args();
        a.redis.redis_url = Some(String::new());
        a.redis.redis_cluster_url = Some("10.128.0.3:6379".into());
        a.redis.redis_tls_enabled = Some("true".into());
        a.redis.redis_tls_ca_base64 = Some(ca_base64());
        let c = connection(&a).unwrap();
        assert!(c.cluster);
        assert_eq!(c.addr(), "10.128.0.3:6379");
        assert_eq!(
            c.tls.and_then(|t| t.ca_pem).as_deref(),
            Some(CA_PEM.as_bytes())
        );
    }

    #[test]
    fn the_cluster_url_wins_over_redis_url() {
        let mut a = args();
        a.redis.redis_url = Some("single:6379".into());
        a.redis.redis_cluster_url = Some("cluster:7000".into());
        let c = connection(&a).unwrap();
        assert_eq!((c.host.as_str(), c.cluster), ("cluster", true));
    }

    #[test]
    fn redis_password_is_used_over_tls_and_refused_in_cleartext() {
        let mut a = args();
        a.redis.redis_url = Some("redis.internal:6380".into());
        a.redis.redis_tls_enabled = Some("1".into());
        a.redis.redis_password = Some("access-key-1".into());
        let c = connection(&a).unwrap();
        assert_eq!(c.password.unwrap().expose(), "access-key-1");
        assert!(c.tls.unwrap().ca_pem.is_none(), "system roots without a CA");

        a.redis.redis_tls_enabled = None;
        let err = connection(&a).unwrap_err();
        assert_eq!(err.setting, PASSWORD);
        assert!(!err.to_string().contains("access-key-1"), "{err}");

        a.redis.redis_tls_enabled = Some("true".into());
        a.redis.redis_url = Some("rediss://:other@redis.internal:6380".into());
        assert_eq!(connection(&a).unwrap_err().setting, PASSWORD);
        a.redis.redis_url = Some("rediss://:access-key-1@redis.internal:6380".into());
        assert!(
            connection(&a).is_ok(),
            "the same password twice is no conflict"
        );
    }

    #[test]
    fn urls_keep_working_with_their_user_password_and_database() {
        let mut a = args();
        a.redis.redis_url = Some("rediss://app:p%40ss@redis:6380/2".into());
        let c = connection(&a).unwrap();
        assert_eq!(c.username.as_deref(), Some("app"));
        assert_eq!(c.password.unwrap().expose(), "p@ss");
        assert_eq!(c.db, 2);
        assert!(
            c.tls.is_some(),
            "rediss:// is TLS without REDIS_TLS_ENABLED"
        );
        a.redis.redis_url = Some("redis://:pw@redis:6379".into());
        assert!(connection(&a).unwrap().tls.is_none());
    }

    #[test]
    fn contradictions_name_the_setting_to_change() {
        let mut a = args();
        a.redis.redis_url = Some("redis://redis:6379".into());
        a.redis.redis_tls_enabled = Some("true".into());
        let err = connection(&a).unwrap_err();
        assert_eq!(err.setting, URL, "{err}");
        assert!(err.message.contains("REDIS_TLS_ENABLED"), "{err}");

        a.redis.redis_url = Some("rediss://redis:6379".into());
        a.redis.redis_tls_enabled = Some("false".into());
        assert_eq!(connection(&a).unwrap_err().setting, TLS_ENABLED);

        a.redis.redis_url = Some("redis:6379".into());
        a.redis.redis_tls_enabled = None;
        a.redis.redis_tls_ca_base64 = Some(ca_base64());
        let err = connection(&a).unwrap_err();
        assert_eq!(err.setting, TLS_CA, "{err}");
        assert!(err.message.contains("REDIS_TLS_ENABLED=true"), "{err}");

        a.redis.redis_tls_enabled = Some("yes".into());
        assert_eq!(connection(&a).unwrap_err().setting, TLS_ENABLED);
    }

    #[test]
    fn bad_addresses_and_cas_are_refused() {
        let mut a = args();
        for bad in ["http://redis:6379", "redis:port", "redis/0", "redis://"] {
            a.redis.redis_url = Some(bad.into());
            assert_eq!(connection(&a).unwrap_err().setting, URL, "{bad}");
        }
        a.redis.redis_url = Some("redis:6379".into());
        a.redis.redis_tls_enabled = Some("true".into());
        a.redis.redis_tls_ca_base64 = Some("not base64!".into());
        assert_eq!(connection(&a).unwrap_err().setting, TLS_CA);
        use base64::Engine;
        a.redis.redis_tls_ca_base64 =
            Some(base64::engine::general_purpose::STANDARD.encode("no certificate here"));
        assert_eq!(connection(&a).unwrap_err().setting, TLS_CA);
    }

    #[test]
    fn empty_values_count_as_unset_as_terraform_writes_them() {
        let mut a = args();
        a.redis.redis_url = Some(String::new());
        a.redis.redis_cluster_url = Some(" ".into());
        a.redis.redis_tls_ca_base64 = Some(String::new());
        a.redis.redis_tls_enabled = Some("false".into());
        assert!(RunConfig::from_args(&a).unwrap().redis.is_none());
    }

    #[test]
    fn the_leader_lease_ttl_is_bounded() {
        let mut a = args();
        a.redis.redis_url = Some("redis:6379".into());
        a.redis_claim_idle = "60s".into();
        let redis = RunConfig::from_args(&a).unwrap().redis.unwrap();
        assert_eq!(redis.lease_ttl, Duration::from_secs(8));
        for bad in ["500ms", "10m", "soon"] {
            a.leader_lease_ttl = bad.into();
            let err = RunConfig::from_args(&a).unwrap_err();
            assert!(err.setting.starts_with("LEADER_LEASE_TTL"), "{bad}: {err}");
        }
    }
}
