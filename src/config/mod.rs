//! Configuration of `run`: flags and environment variables, an optional TOML file, validation.
//! What comes out is one settings type per part (`RunConfig`'s fields); `service::run` hands
//! each part its own.

mod auth_provider;
mod database_args;
mod events_api;
mod file;
mod logs_collector;
mod nomad;
mod redis;
mod run_args;
mod shared_args;
mod teams;
mod webhook_args;

pub use database_args::{DatabaseArgs, SecretsKeyArgs};
pub use events_api::{EventsApiArgs, EventsApiConfig};
pub use logs_collector::{LogsCollectorArgs, log_shipping};
pub use nomad::{ReconcileConfig, parse_nomad_addr};
pub use redis::{redis_config, shared_redis_config};
pub use run_args::RunArgs;
pub use shared_args::{DEFAULT_WEBHOOK_TIMEOUT, DataDirArgs, RedisArgs};
pub use teams::parse_team_ids;
pub use webhook_args::WebhookArgs;

use crate::deliver::retry::RetryPolicy;
use crate::deliver::trust::TrustedCa;
use crate::event::EventFilter;
use crate::outbox::FileSharing;
use crate::util::admin_token::AdminToken;
use crate::util::duration::parse_duration;
use crate::util::redact::redact_url_text;
use file::{FileConfig, endpoint_from_toml};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use url::Url;
use uuid::Uuid;

/// A setting that is missing or malformed; the binary prints it on one line and exits 2.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{setting}: {message}")]
pub struct ConfigError {
    /// The setting, as the user names it (`WEBHOOK_URL (--webhook-url)`, `endpoints[1].url`).
    pub setting: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl ConfigError {
    /// A new error about `setting`.
    pub fn new(setting: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            setting: setting.into(),
            message: message.into(),
        }
    }
}

// The settings types `config` produces are defined by the part they configure, beside the code
// that builds the running part from them, and named once: here they are only re-exported.
pub use crate::deliver::endpoint::EndpointConfig;
pub use crate::source::nomad::NomadConfig;
pub use crate::source::redis::RedisSettings;

/// Everything `run` needs, validated.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Webhook destinations (at least one, unless the events API is on).
    pub endpoints: Vec<EndpointConfig>,
    /// When to retry and when to give up.
    pub retry: RetryPolicy,
    /// Sandboxes delivered concurrently per endpoint.
    pub max_in_flight: usize,
    /// Threads of the async runtime.
    pub worker_threads: usize,
    /// The Redis source, if configured.
    pub redis: Option<RedisSettings>,
    /// The teams served: `E2B_TEAM_IDS`, or else every team an endpoint names. Their `wh:<team>`
    /// gate keys are kept alive; when any are set, nothing of another team is delivered.
    pub team_ids: Vec<Uuid>,
    /// The Nomad watcher, if configured.
    pub nomad: Option<NomadConfig>,
    /// Orchestrator discovery and reconciliation timing (used with `nomad`).
    pub reconcile: ReconcileConfig,
    /// The file source, if configured.
    pub events_file: Option<PathBuf>,
    /// Outbox directory.
    pub data_dir: PathBuf,
    /// Whether anything else may open the outbox file while the service runs
    /// (`OUTBOX_EXCLUSIVE`).
    pub outbox_sharing: FileSharing,
    /// Health and metrics address.
    pub listen: SocketAddr,
    /// The admin API and console token; none turns them off.
    pub admin_token: Option<AdminToken>,
    /// OTLP collector to push the metrics to, if any.
    pub otlp_endpoint: Option<Url>,
    /// E2B's events API on its Postgres, when configured.
    pub events_api: Option<EventsApiConfig>,
}

impl RunConfig {
    /// Validates flags, environment and the optional config file.
    pub fn from_args(args: &RunArgs) -> Result<Self, ConfigError> {
        let file = FileConfig::read(args.config.as_deref())?;
        let timeout = parse_duration(&args.webhook_timeout)
            .map_err(|e| ConfigError::new("WEBHOOK_TIMEOUT (--webhook-timeout)", e))?;
        if timeout.is_zero() {
            return Err(ConfigError::new(
                "WEBHOOK_TIMEOUT (--webhook-timeout)",
                "must be more than 0s",
            ));
        }
        let mut endpoints = Vec::new();
        let team_ids = parse_team_ids(&args.team_ids)?;
        let mut endpoint_teams = Vec::new();
        let events_api =
            events_api::events_api_config(&args.events_api, timeout, args.response_body_limit)?;
        // With the events API, an emitter may serve registered webhooks only.
        let serves_registered_only = events_api.is_some() && args.webhook.webhook_url.is_none();
        if args.webhook.webhook_url.is_some()
            || (file.endpoints.is_empty() && !serves_registered_only)
        {
            let identity = args.webhook.identity("default")?;
            endpoints.push(EndpointConfig {
                id: identity.id,
                url: args.webhook.url()?,
                format: args.webhook.format()?,
                secrets: args.webhook.secrets()?,
                events: EventFilter::parse(&args.webhook_events)
                    .map_err(|e| ConfigError::new("WEBHOOK_EVENTS (--webhook-events)", e))?,
                timeout,
                webhook_id: identity.webhook_id,
                signature_encoding: identity.signature_encoding,
                response_body_limit: args.response_body_limit,
                trusted_ca: trusted_ca(
                    args.webhook_ca_file.as_deref(),
                    "WEBHOOK_CA_FILE (--webhook-ca-file)",
                )?,
            });
            endpoint_teams.push(None);
        }
        for (i, ep) in file.endpoints.into_iter().enumerate() {
            let teams = ep
                .teams
                .as_deref()
                .map(|list| teams::parse_list(list, &format!("endpoints[{i}].teams"), &team_ids))
                .transpose()?;
            endpoints.push(endpoint_from_toml(
                i,
                ep,
                timeout,
                args.response_body_limit,
            )?);
            endpoint_teams.push(teams);
        }
        let mut ids: Vec<&str> = endpoints.iter().map(|e| e.id.as_str()).collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError::new(
                "endpoints.id",
                format!("{:?} is used twice; ids must be unique", w[0]),
            ));
        }
        let retry = file
            .retry
            .into_policy()
            .map_err(|(key, msg)| ConfigError::new(key, msg))?;
        let max_in_flight = file.max_in_flight.unwrap_or(args.max_in_flight);
        if max_in_flight == 0 {
            return Err(ConfigError::new(
                "MAX_IN_FLIGHT (--max-in-flight)",
                "must be at least 1",
            ));
        }
        if args.worker_threads == 0 {
            return Err(ConfigError::new(
                "WORKER_THREADS (--worker-threads)",
                "must be at least 1",
            ));
        }
        let redis = redis_config(args)?;
        let team_ids = teams::scope_endpoints(team_ids, &mut endpoints, endpoint_teams);
        let nomad = nomad::nomad_config(args)?;
        let listen = args.listen.parse().map_err(|e| {
            ConfigError::new(
                "LISTEN_ADDR (--listen)",
                format!("{:?} is not HOST:PORT ({e})", args.listen),
            )
        })?;
        Ok(Self {
            events_api,
            endpoints,
            retry,
            max_in_flight,
            worker_threads: args.worker_threads,
            redis,
            team_ids,
            nomad,
            reconcile: nomad::reconcile_config(args)?,
            events_file: args.events_file.clone(),
            data_dir: args.storage.data_dir.clone(),
            outbox_sharing: if args.outbox_exclusive {
                FileSharing::Exclusive
            } else {
                FileSharing::WithReaders
            },
            listen,
            admin_token: match args.admin_token.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(token) => {
                    Some(AdminToken::new(token).map_err(|e| {
                        ConfigError::new("ADMIN_TOKEN (--admin-token)", e.to_string())
                    })?)
                }
            },
            otlp_endpoint: match args.otel_exporter_otlp_endpoint.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(raw) => Some(parse_http_url(raw).map_err(|e| {
                    ConfigError::new(
                        "OTEL_EXPORTER_OTLP_ENDPOINT (--otel-exporter-otlp-endpoint)",
                        e,
                    )
                })?),
            },
        })
    }
}

/// The private CA in the PEM file `file`, if one is set (`setting` names it in errors).
pub fn trusted_ca(file: Option<&Path>, setting: &str) -> Result<Option<TrustedCa>, ConfigError> {
    file.map(|file| {
        TrustedCa::from_pem_file(file).map_err(|e| ConfigError::new(setting, e.to_string()))
    })
    .transpose()
}

/// Accepts only absolute http(s) URLs with a host.
/// Errors show the URL redacted: it may carry a password or a token.
pub fn parse_http_url(raw: &str) -> Result<Url, String> {
    let shown = redact_url_text(raw);
    let url = Url::parse(raw.trim())
        .map_err(|e| format!("{shown:?} is not a URL ({e}); expected http(s)://host/path"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "{shown:?} must be an http:// or https:// URL with a host"
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    pub(super) fn args() -> RunArgs {
        RunArgs {
            webhook: WebhookArgs {
                webhook_url: Some("https://example.com/hook".into()),
                webhook_secret: Some("s3cret".into()),
                webhook_format: "x-e2b-signature".into(),
                webhook_id: None,
                webhook_signature_encoding: "url-safe".into(),
            },
            webhook_timeout: "10s".into(),
            response_body_limit: 65536,
            webhook_events: "create,kill,pause,resume".into(),
            redis: RedisArgs {
                redis_stream: "sandbox.events.stream".into(),
                redis_group: "g".into(),
                ..RedisArgs::default()
            },
            leader_lease_ttl: "8s".into(),
            nomad_namespace: "default".into(),
            storage: DataDirArgs {
                data_dir: "data".into(),
            },
            outbox_exclusive: false,
            listen: "127.0.0.1:0".into(),
            max_in_flight: 8,
            worker_threads: 1,
            orchestrator_timeout: "10s".into(),
            reconcile_interval: "30s".into(),
            reconcile_grace: "60s".into(),
            nomad_discovery: "services".into(),
            orchestrator_service: "orchestrator".into(),
            ..RunArgs::default()
        }
    }

    #[test]
    fn minimal_env_config_is_one_default_endpoint() {
        let c = RunConfig::from_args(&args()).unwrap();
        assert_eq!(c.endpoints.len(), 1);
        assert_eq!(c.endpoints[0].id, "default");
        assert_eq!(c.endpoints[0].timeout, Duration::from_secs(10));
        assert!(c.redis.is_none() && c.nomad.is_none());
    }

    #[test]
    fn errors_name_the_setting() {
        let mut a = args();
        a.webhook.webhook_url = Some("ftp://x".into());
        assert!(
            RunConfig::from_args(&a)
                .unwrap_err()
                .setting
                .starts_with("WEBHOOK_URL")
        );
        let mut a = args();
        a.webhook.webhook_secret = Some(" ".into());
        assert!(
            RunConfig::from_args(&a)
                .unwrap_err()
                .setting
                .starts_with("WEBHOOK_SECRET")
        );
        let mut a = args();
        a.webhook.webhook_format = "xml".into();
        assert!(
            RunConfig::from_args(&a)
                .unwrap_err()
                .setting
                .starts_with("WEBHOOK_FORMAT")
        );
        let mut a = args();
        a.worker_threads = 0;
        assert!(
            RunConfig::from_args(&a)
                .unwrap_err()
                .setting
                .starts_with("WORKER_THREADS")
        );
        a.worker_threads = 3;
        assert_eq!(RunConfig::from_args(&a).unwrap().worker_threads, 3);
        let mut a = args();
        a.team_ids = "not-a-uuid".into();
        assert!(
            RunConfig::from_args(&a)
                .unwrap_err()
                .setting
                .starts_with("E2B_TEAM_IDS")
        );
        let mut a = args();
        a.redis.redis_url = Some("http://localhost".into());
        assert!(
            RunConfig::from_args(&a)
                .unwrap_err()
                .setting
                .starts_with("REDIS_URL")
        );
    }
}
