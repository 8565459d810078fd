//! The events API settings: E2B's Postgres, the key sealing webhooks' secrets, where the API
//! listens, which private ranges a registered webhook may reach, how many webhooks a team may
//! register, and which issuers' bearer tokens it accepts.

use super::ConfigError;
use super::auth_provider::{self, parse_auth_provider_config};
use super::database_args::{DatabaseArgs, SecretsKeyArgs};
use crate::postgres::DatabaseSettings;
use crate::postgres::secret_keys::SecretKeys;
use crate::user_auth::IssuerSettings;
use ipnet::IpNet;
use std::net::SocketAddr;
use std::time::Duration;

/// Flags of the events API (all optional: without a database the API is off).
#[derive(Debug, Clone, clap::Args, Default)]
pub struct EventsApiArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub secrets_key: SecretsKeyArgs,
    /// Webhooks a team may register at most (E2B publishes no limit; 10 is a common one).
    #[arg(
        long,
        env = "WEBHOOKS_PER_TEAM",
        default_value_t = DEFAULT_WEBHOOKS_PER_TEAM,
        value_name = "N"
    )]
    pub webhooks_per_team: u32,
    /// Serve the events API here instead of on LISTEN_ADDR (to expose it apart from /metrics).
    #[arg(long, env = "API_LISTEN_ADDR", value_name = "HOST:PORT")]
    pub api_listen_addr: Option<String>,
    /// Private ranges registered webhooks may reach anyway (CIDRs, comma-separated).
    #[arg(
        long,
        env = "API_ALLOW_PRIVATE_CIDRS",
        default_value = "",
        value_name = "CIDRS"
    )]
    pub api_allow_private_cidrs: String,
    /// Proxies in front of the API whose X-Forwarded-For names the client (CIDRs, comma-separated),
    /// e.g. E2B's Traefik: per-client limits then count clients, not the proxy.
    #[arg(
        long,
        env = "API_TRUSTED_PROXIES",
        default_value = "",
        value_name = "CIDRS"
    )]
    pub api_trusted_proxies: String,
    /// Days the lifecycle history (GET /events/sandboxes) keeps an event.
    #[arg(
        long,
        env = "EVENTS_TTL_DAYS",
        default_value_t = 7,
        value_name = "DAYS"
    )]
    pub events_ttl_days: u32,
    /// Events the lifecycle history holds in memory while Postgres cannot take them; past this,
    /// events are left out of it (counted and logged; delivery goes on).
    #[arg(
        long,
        env = "EVENTS_HISTORY_BUFFER",
        default_value_t = crate::postgres::event_history::DEFAULT_BUFFER,
        value_name = "EVENTS"
    )]
    pub events_history_buffer: usize,
    /// Issuers of users' bearer tokens (`Authorization: Bearer` + `X-Team-ID`), the JSON E2B's API
    /// reads: {"jwt":[{"issuer":{"url","discoveryURL","audiences","audienceMatchPolicy"},"cacheDuration":"5m"}]}.
    /// Unset or {"jwt":[]}: bearer tokens are refused, API keys work.
    #[arg(long, env = "AUTH_PROVIDER_CONFIG", value_name = "JSON")]
    pub auth_provider_config: Option<String>,
    /// A team's share of delivery concurrency: attempts in flight at once to all of one team's
    /// registered webhooks. A hanging or failing receiver holds at most this many.
    #[arg(
        long,
        env = "TEAM_DELIVERY_CONCURRENCY",
        default_value_t = 8,
        value_name = "ATTEMPTS"
    )]
    pub team_delivery_concurrency: usize,
    /// Attempts in flight at once to all registered webhooks together (shared by the teams
    /// first come, first served; each team within its share).
    #[arg(
        long,
        env = "REGISTERED_DELIVERY_CONCURRENCY",
        default_value_t = 512,
        value_name = "ATTEMPTS"
    )]
    pub registered_delivery_concurrency: usize,
}

/// Webhooks per team unless the operator says otherwise.
pub const DEFAULT_WEBHOOKS_PER_TEAM: u32 = 10;

/// The events API, validated.
#[derive(Debug, Clone)]
pub struct EventsApiConfig {
    /// E2B's Postgres.
    pub database: DatabaseSettings,
    /// Seal and open webhooks' signing secrets.
    pub secret_keys: SecretKeys,
    /// Webhooks a team may register at most.
    pub webhooks_per_team: u32,
    /// Its own address, or `None` to share LISTEN_ADDR.
    pub listen: Option<SocketAddr>,
    /// Private ranges registered webhooks may reach.
    pub allow_private: Vec<IpNet>,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<IpNet>,
    /// Attempt timeout of registered webhooks (`WEBHOOK_TIMEOUT`).
    pub delivery_timeout: Duration,
    /// Bytes of a registered webhook's response read at most (`RESPONSE_BODY_LIMIT`).
    pub response_body_limit: usize,
    /// How long the lifecycle history keeps an event.
    pub events_retention: Duration,
    /// Events the history holds while Postgres is away.
    pub history_buffer: usize,
    /// Issuers whose bearer tokens are accepted (none: only API keys).
    pub token_issuers: Vec<IssuerSettings>,
    /// Attempts in flight per team, and for all registered webhooks together.
    pub delivery_concurrency: DeliveryConcurrency,
}

/// How many delivery attempts to registered webhooks may be in flight at once.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryConcurrency {
    /// Per team, all its webhooks together (`TEAM_DELIVERY_CONCURRENCY`).
    pub per_team: usize,
    /// All teams together (`REGISTERED_DELIVERY_CONCURRENCY`).
    pub total: usize,
}

/// `None` when no database is configured.
pub(super) fn events_api_config(
    args: &EventsApiArgs,
    delivery_timeout: Duration,
    response_body_limit: usize,
) -> Result<Option<EventsApiConfig>, ConfigError> {
    let given = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let token_issuers = parse_auth_provider_config(args.auth_provider_config.as_deref())?;
    let database = match args.database.settings()? {
        Some(database) => database,
        None => {
            for (set, setting) in [
                (
                    args.api_listen_addr.is_some(),
                    "API_LISTEN_ADDR (--api-listen-addr)",
                ),
                (
                    !args.api_allow_private_cidrs.trim().is_empty(),
                    "API_ALLOW_PRIVATE_CIDRS (--api-allow-private-cidrs)",
                ),
                (
                    !args.api_trusted_proxies.trim().is_empty(),
                    "API_TRUSTED_PROXIES (--api-trusted-proxies)",
                ),
                (!token_issuers.is_empty(), auth_provider::SETTING),
            ] {
                if set {
                    return Err(ConfigError::new(
                        setting,
                        "needs POSTGRES_CONNECTION_STRING (the events API is off without a database)",
                    ));
                }
            }
            return Ok(None);
        }
    };
    let secret_keys = args.secrets_key.keys()?;
    if args.events_history_buffer == 0 {
        return Err(ConfigError::new(
            "EVENTS_HISTORY_BUFFER (--events-history-buffer)",
            "must be at least 1",
        ));
    }
    if args.webhooks_per_team == 0 {
        return Err(ConfigError::new(
            "WEBHOOKS_PER_TEAM (--webhooks-per-team)",
            "must be at least 1",
        ));
    }
    let listen = match given(&args.api_listen_addr) {
        None => None,
        Some(raw) => Some(raw.parse().map_err(|e| {
            ConfigError::new(
                "API_LISTEN_ADDR (--api-listen-addr)",
                format!("{raw:?} is not HOST:PORT ({e})"),
            )
        })?),
    };
    let allow_private = cidrs(
        &args.api_allow_private_cidrs,
        "API_ALLOW_PRIVATE_CIDRS (--api-allow-private-cidrs)",
    )?;
    let trusted_proxies = cidrs(
        &args.api_trusted_proxies,
        "API_TRUSTED_PROXIES (--api-trusted-proxies)",
    )?;
    for (value, setting) in [
        (
            args.team_delivery_concurrency,
            "TEAM_DELIVERY_CONCURRENCY (--team-delivery-concurrency)",
        ),
        (
            args.registered_delivery_concurrency,
            "REGISTERED_DELIVERY_CONCURRENCY (--registered-delivery-concurrency)",
        ),
    ] {
        if value == 0 {
            return Err(ConfigError::new(setting, "must be at least 1"));
        }
    }
    if args.events_ttl_days == 0 {
        return Err(ConfigError::new(
            "EVENTS_TTL_DAYS (--events-ttl-days)",
            "must be at least 1",
        ));
    }
    Ok(Some(EventsApiConfig {
        events_retention: Duration::from_secs(u64::from(args.events_ttl_days) * 86_400),
        database,
        secret_keys,
        webhooks_per_team: args.webhooks_per_team,
        history_buffer: args.events_history_buffer,
        listen,
        allow_private,
        trusted_proxies,
        delivery_timeout,
        response_body_limit,
        token_issuers,
        delivery_concurrency: DeliveryConcurrency {
            per_team: args.team_delivery_concurrency,
            total: args.registered_delivery_concurrency,
        },
    }))
}

/// A comma-separated list of CIDRs; `setting` names it in a refusal.
fn cidrs(list: &str, setting: &str) -> Result<Vec<IpNet>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|raw| {
            raw.parse::<IpNet>().map_err(|_| {
                ConfigError::new(
                    setting,
                    format!("{raw:?} is not a CIDR such as 10.20.0.0/16"),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(args: &EventsApiArgs) -> Result<Option<EventsApiConfig>, ConfigError> {
        events_api_config(args, Duration::from_secs(10), 65536)
    }

    /// Base64 of 32 bytes 0x2a.
    const KEY: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";

    fn args(url: Option<&str>) -> EventsApiArgs {
        EventsApiArgs {
            database: DatabaseArgs {
                postgres_connection_string: url.map(str::to_owned),
                database_url: None,
            },
            secrets_key: SecretsKeyArgs {
                webhook_secrets_key: Some(KEY.into()),
            },
            webhooks_per_team: DEFAULT_WEBHOOKS_PER_TEAM,
            events_history_buffer: 100,
            events_ttl_days: 7,
            team_delivery_concurrency: 8,
            registered_delivery_concurrency: 512,
            ..EventsApiArgs::default()
        }
    }

    #[test]
    fn off_without_a_database_and_checked_with_one() {
        assert!(on(&args(None)).unwrap().is_none());
        let enabled = on(&EventsApiArgs {
            api_allow_private_cidrs: "10.20.0.0/16, 127.0.0.1/32".into(),
            api_listen_addr: Some("0.0.0.0:8080".into()),
            ..args(Some("postgresql://emitter:pw@db:5432/postgres"))
        })
        .unwrap()
        .unwrap();
        assert_eq!(enabled.allow_private.len(), 2);
        assert!(enabled.trusted_proxies.is_empty());
        assert_eq!(enabled.listen, Some("0.0.0.0:8080".parse().unwrap()));
        let mut fallback = args(None);
        fallback.database.database_url = Some("postgres://db/e2b".into());
        assert!(on(&fallback).unwrap().is_some());
    }

    #[test]
    fn bad_settings_name_themselves_and_hide_the_password() {
        let bad_cidr = EventsApiArgs {
            api_allow_private_cidrs: "10.0.0.0/33".into(),
            ..args(Some("postgresql://db/postgres"))
        };
        assert!(
            on(&bad_cidr)
                .unwrap_err()
                .setting
                .starts_with("API_ALLOW_PRIVATE_CIDRS")
        );
        let bad_proxy = EventsApiArgs {
            api_trusted_proxies: "traefik".into(),
            ..args(Some("postgresql://db/postgres"))
        };
        assert!(
            on(&bad_proxy)
                .unwrap_err()
                .setting
                .starts_with("API_TRUSTED_PROXIES")
        );
        let no_share = EventsApiArgs {
            team_delivery_concurrency: 0,
            ..args(Some("postgresql://db/postgres"))
        };
        assert!(
            on(&no_share)
                .unwrap_err()
                .setting
                .starts_with("TEAM_DELIVERY_CONCURRENCY")
        );
        let orphan = EventsApiArgs {
            api_listen_addr: Some("0.0.0.0:1".into()),
            ..args(None)
        };
        assert!(
            on(&orphan)
                .unwrap_err()
                .setting
                .starts_with("API_LISTEN_ADDR")
        );
        let bad_url = on(&args(Some("mysql://u:hunter2pw@db/x"))).unwrap_err();
        assert!(bad_url.setting.starts_with("POSTGRES_CONNECTION_STRING"));
        assert!(
            !bad_url.message.contains("hunter2pw"),
            "{}",
            bad_url.message
        );
    }

    #[test]
    fn the_secrets_key_is_required_and_checked_and_the_limit_read() {
        let on_db = |key: Option<&str>, per_team: u32| {
            let mut a = args(Some("postgresql://db/postgres"));
            a.secrets_key.webhook_secrets_key = key.map(str::to_owned);
            a.webhooks_per_team = per_team;
            on(&a)
        };
        assert_eq!(on_db(Some(KEY), 3).unwrap().unwrap().webhooks_per_team, 3);
        for key in [None, Some(""), Some("not-a-key"), Some("c2hvcnQ=")] {
            let e = on_db(key, 10).unwrap_err();
            assert!(e.setting.starts_with("WEBHOOK_SECRETS_KEY"), "{e}");
            assert!(e.message.contains("openssl rand -base64 32"), "{e}");
        }
        let e = on_db(Some(KEY), 0).unwrap_err();
        assert!(e.setting.starts_with("WEBHOOKS_PER_TEAM"), "{e}");
        // Without a database the key is not needed.
        let mut off = args(None);
        off.secrets_key.webhook_secrets_key = None;
        assert!(on(&off).unwrap().is_none());
    }

    #[test]
    fn token_issuers_are_read_checked_and_need_the_database() {
        let issuer =
            r#"{"jwt":[{"issuer":{"url":"https://auth.example.com","audiences":["e2b"]}}]}"#;
        let with_db = EventsApiArgs {
            auth_provider_config: Some(issuer.into()),
            ..args(Some("postgresql://db/postgres"))
        };
        let config = on(&with_db).unwrap().unwrap();
        assert_eq!(config.token_issuers.len(), 1);
        assert_eq!(config.token_issuers[0].issuer, "https://auth.example.com");
        // None configured: API keys only.
        assert!(
            on(&args(Some("postgresql://db/postgres")))
                .unwrap()
                .unwrap()
                .token_issuers
                .is_empty()
        );
        let empty = EventsApiArgs {
            auth_provider_config: Some(r#"{"jwt":[]}"#.into()),
            ..args(None)
        };
        assert!(on(&empty).unwrap().is_none());
        let orphan = EventsApiArgs {
            auth_provider_config: Some(issuer.into()),
            ..args(None)
        };
        let e = on(&orphan).unwrap_err();
        assert!(e.setting.starts_with("AUTH_PROVIDER_CONFIG"), "{e}");
        assert!(e.message.contains("POSTGRES_CONNECTION_STRING"), "{e}");
        let bad = EventsApiArgs {
            auth_provider_config: Some(
                r#"{"jwt":[{"issuer":{"url":"https://a.example"}}]}"#.into(),
            ),
            ..args(Some("postgresql://db/postgres"))
        };
        let e = on(&bad).unwrap_err();
        assert_eq!(e.setting, "AUTH_PROVIDER_CONFIG (--auth-provider-config)");
        assert!(e.message.contains("audiences"), "{e}");
    }
}
