//! Configuration of `run`: flags and environment variables, an optional TOML file, validation.

mod events_api;
mod redis;
pub use events_api::{EventsApiArgs, EventsApiConfig};
pub use redis::redis_config;
mod teams;

use crate::admin::auth::AdminToken;
use crate::deliver::format::{EndpointIdentity, WireFormat, default_webhook_id};
use crate::deliver::retry::{RetryPolicy, RetryToml, parse_duration};
use crate::deliver::sign::{SecretSet, SignatureEncoding};
use crate::event::EventFilter;
use crate::util::redact::redact_url_text;
use crate::util::secret::Secret;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
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

/// Flags of `run`; every one also reads the environment variable in brackets.
#[derive(Debug, Clone, clap::Args, Default)]
pub struct RunArgs {
    /// TOML file with several endpoints, the retry policy and dispatch limits.
    #[arg(long = "config", env = "CONFIG_FILE", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub webhook: WebhookArgs,
    /// Delivery attempt timeout.
    #[arg(
        long,
        env = "WEBHOOK_TIMEOUT",
        default_value = "10s",
        value_name = "DURATION"
    )]
    pub webhook_timeout: String,
    /// Bytes of a receiver's response body read at most (the rest is never read); the first
    /// 256 show in logs and dead letters.
    #[arg(
        long,
        env = "RESPONSE_BODY_LIMIT",
        default_value_t = crate::deliver::http::DEFAULT_RESPONSE_BODY_LIMIT,
        value_name = "BYTES"
    )]
    pub response_body_limit: usize,
    /// Events to deliver, comma-separated: labels (create,kill,pause,resume,update,checkpoint), E2B's types (sandbox.lifecycle.killed, …) or *.
    #[arg(
        long,
        env = "WEBHOOK_EVENTS",
        default_value = "create,kill,pause,resume"
    )]
    pub webhook_events: String,
    /// Redis holding the orchestrator's event stream: host:port as the orchestrator reads it, or redis[s]://[:password@]host:port.
    #[arg(long, env = "REDIS_URL", hide_env_values = true, value_name = "ADDR")]
    pub redis_url: Option<String>,
    /// Redis Cluster node, host:port or URL (as the orchestrator reads it); wins over REDIS_URL.
    #[arg(
        long,
        env = "REDIS_CLUSTER_URL",
        hide_env_values = true,
        value_name = "ADDR"
    )]
    pub redis_cluster_url: Option<String>,
    /// Connect to Redis over TLS (true/false, as the orchestrator reads it).
    #[arg(long, env = "REDIS_TLS_ENABLED", value_name = "BOOL")]
    pub redis_tls_enabled: Option<String>,
    /// Redis AUTH password (sent only over TLS, as the orchestrator does).
    #[arg(long, env = "REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<String>,
    /// The orchestrator's event stream key.
    #[arg(long, env = "REDIS_STREAM", default_value = "sandbox.events.stream")]
    pub redis_stream: String,
    /// Consumer group shared by every emitter instance.
    #[arg(long, env = "REDIS_GROUP", default_value = "e2b-webhook-emitter")]
    pub redis_group: String,
    /// This instance's consumer name (default: the Nomad allocation id or the host name).
    #[arg(long, env = "REDIS_CONSUMER")]
    pub redis_consumer: Option<String>,
    /// Claim stream entries another consumer has left unacknowledged for this long.
    #[arg(
        long,
        env = "REDIS_CLAIM_IDLE",
        default_value = "60s",
        value_name = "DURATION"
    )]
    pub redis_claim_idle: String,
    /// Time to live of the leader lease: a lost active instance is replaced about this long
    /// plus a third after its last renewal.
    #[arg(
        long,
        env = "LEADER_LEASE_TTL",
        default_value = "8s",
        value_name = "DURATION"
    )]
    pub leader_lease_ttl: String,
    /// Trim the stream up to what the consumer group has acknowledged (false keeps every entry).
    #[arg(long, env = "REDIS_TRIM", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub redis_trim: bool,
    /// CA certificate (PEM, base64-encoded) that signed Redis's TLS certificate, as the orchestrator reads it.
    #[arg(long, env = "REDIS_TLS_CA_BASE64", value_name = "BASE64")]
    pub redis_tls_ca_base64: Option<String>,
    /// The teams served (UUIDs, comma-separated): their wh:<team> keys are kept alive, other teams' events and sandboxes are skipped.
    #[arg(long, env = "E2B_TEAM_IDS", value_name = "UUIDS", default_value = "")]
    pub team_ids: String,
    /// Nomad API address, to discover orchestrators (http(s)://, or unix:///…/api.sock).
    #[arg(long, env = "NOMAD_ADDR", hide_env_values = true, value_name = "URL")]
    pub nomad_addr: Option<String>,
    /// Nomad token: the task's workload identity suffices for service discovery.
    #[arg(long, env = "NOMAD_TOKEN", hide_env_values = true)]
    pub nomad_token: Option<String>,
    /// How orchestrators are found: `services` (registrations, any token that can read them) or
    /// `allocations` (event stream, needs read-job; falls back to services when refused).
    #[arg(long, env = "NOMAD_DISCOVERY", default_value = "services")]
    pub nomad_discovery: String,
    /// Name of the Nomad service the orchestrators register.
    #[arg(long, env = "ORCHESTRATOR_SERVICE", default_value = "orchestrator")]
    pub orchestrator_service: String,
    /// Nomad namespace of the orchestrator job.
    #[arg(long, env = "NOMAD_NAMESPACE", default_value = "default")]
    pub nomad_namespace: String,
    /// CA certificate (PEM) for an https NOMAD_ADDR.
    #[arg(long, env = "NOMAD_CACERT", value_name = "FILE")]
    pub nomad_cacert: Option<PathBuf>,
    /// Client certificate (PEM) for Nomad mTLS.
    #[arg(long, env = "NOMAD_CLIENT_CERT", value_name = "FILE")]
    pub nomad_client_cert: Option<PathBuf>,
    /// Client key (PEM) for Nomad mTLS.
    #[arg(long, env = "NOMAD_CLIENT_KEY", value_name = "FILE")]
    pub nomad_client_key: Option<PathBuf>,
    /// Task group of the orchestrator job.
    #[arg(
        long,
        env = "ORCHESTRATOR_TASK_GROUP",
        default_value = "client-orchestrator"
    )]
    pub orchestrator_task_group: String,
    /// Start of the orchestrator job id (E2B deploys `orchestrator-<hash>`).
    #[arg(long, env = "ORCHESTRATOR_JOB_PREFIX", default_value = "orchestrator")]
    pub orchestrator_job_prefix: String,
    /// Label of the orchestrator's gRPC port.
    #[arg(long, env = "ORCHESTRATOR_PORT_LABEL", default_value = "orchestrator")]
    pub orchestrator_port_label: String,
    /// gRPC port used when the allocation labels none.
    #[arg(long, env = "ORCHESTRATOR_PORT", default_value_t = 5008)]
    pub orchestrator_port: u16,
    /// Timeout of one orchestrator `List` call.
    #[arg(
        long,
        env = "ORCHESTRATOR_TIMEOUT",
        default_value = "10s",
        value_name = "DURATION"
    )]
    pub orchestrator_timeout: String,
    /// Time between reconciliation runs.
    #[arg(
        long,
        env = "RECONCILE_INTERVAL",
        default_value = "30s",
        value_name = "DURATION"
    )]
    pub reconcile_interval: String,
    /// A difference must persist this long (over two runs) before an event is synthesized.
    #[arg(
        long,
        env = "RECONCILE_GRACE",
        default_value = "60s",
        value_name = "DURATION"
    )]
    pub reconcile_grace: String,
    /// NDJSON file of orchestrator events to feed in (the file source).
    #[arg(long, env = "EVENTS_FILE", value_name = "FILE")]
    pub events_file: Option<PathBuf>,
    /// Directory of the durable outbox.
    #[arg(long, env = "DATA_DIR", default_value = "data", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Address of /metrics, /healthz, /readyz and /status.
    #[arg(long = "listen", env = "LISTEN_ADDR", default_value = "127.0.0.1:9464")]
    pub listen: String,
    /// Also push the metrics over OTLP/gRPC to this collector (E2B's: http://localhost:4317).
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub otel_exporter_otlp_endpoint: Option<String>,
    /// Sandboxes delivered concurrently per endpoint.
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = 64)]
    pub max_in_flight: usize,
    /// Bearer token of the admin API (/admin/v1/), the console (/), /status and /readyz details
    /// on LISTEN_ADDR; unset, they are off.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    #[command(flatten)]
    pub events_api: EventsApiArgs,
}

/// Where and how to send: shared by `run`, `sign`, `verify`, `send-test` and `receive`.
#[derive(Debug, Clone, clap::Args, Default)]
pub struct WebhookArgs {
    /// Endpoint receiving the webhooks (http:// or https://).
    #[arg(
        long,
        visible_alias = "url",
        env = "WEBHOOK_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub webhook_url: Option<String>,
    /// Shared signing secret; several, space-separated, during rotation (the first signs).
    #[arg(
        long,
        visible_alias = "secret",
        env = "WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub webhook_secret: Option<String>,
    /// Wire format: x-e2b-signature, e2b-cloud or standard-webhooks.
    #[arg(
        long,
        visible_alias = "format",
        env = "WEBHOOK_FORMAT",
        default_value = "x-e2b-signature"
    )]
    pub webhook_format: String,
    /// e2b-cloud: the `e2b-webhook-id` header, a UUID (default: derived from the endpoint id).
    #[arg(long, env = "WEBHOOK_ID", value_name = "UUID")]
    pub webhook_id: Option<String>,
    /// e2b-cloud: how `e2b-signature` is written: url-safe (as E2B documents), standard or standard-padded (as E2B Cloud was seen sending). Verification accepts all three.
    #[arg(
        long,
        env = "WEBHOOK_SIGNATURE_ENCODING",
        default_value = "url-safe",
        value_name = "ENCODING"
    )]
    pub webhook_signature_encoding: String,
}

impl WebhookArgs {
    /// How the endpoint `id` configured by these flags identifies itself.
    pub fn identity(&self, id: &str) -> Result<EndpointIdentity, ConfigError> {
        Ok(EndpointIdentity {
            id: id.to_owned(),
            webhook_id: match self.webhook_id.as_deref().filter(|w| !w.trim().is_empty()) {
                Some(raw) => parse_webhook_id(raw)
                    .map_err(|e| ConfigError::new("WEBHOOK_ID (--webhook-id)", e))?,
                None => default_webhook_id(id),
            },
            signature_encoding: self
                .webhook_signature_encoding
                .parse()
                .map_err(|e: String| {
                    ConfigError::new(
                        "WEBHOOK_SIGNATURE_ENCODING (--webhook-signature-encoding)",
                        e,
                    )
                })?,
        })
    }

    /// The validated format.
    pub fn format(&self) -> Result<WireFormat, ConfigError> {
        self.webhook_format
            .parse()
            .map_err(|e: String| ConfigError::new("WEBHOOK_FORMAT (--webhook-format)", e))
    }

    /// The validated secrets.
    pub fn secrets(&self) -> Result<SecretSet, ConfigError> {
        let setting = "WEBHOOK_SECRET (--webhook-secret)";
        let raw = self.webhook_secret.as_deref().ok_or_else(|| {
            ConfigError::new(
                setting,
                "is not set; pass --webhook-secret or set WEBHOOK_SECRET",
            )
        })?;
        SecretSet::parse(raw).map_err(|e| ConfigError::new(setting, e))
    }

    /// The validated URL.
    pub fn url(&self) -> Result<Url, ConfigError> {
        let setting = "WEBHOOK_URL (--webhook-url)";
        let raw = self.webhook_url.as_deref().ok_or_else(|| {
            ConfigError::new(setting, "is not set; pass --webhook-url or set WEBHOOK_URL")
        })?;
        parse_http_url(raw).map_err(|e| ConfigError::new(setting, e))
    }
}

/// A webhook destination (defined next to the dispatcher that delivers to it).
pub use crate::deliver::endpoint::Endpoint as EndpointConfig;

/// The Redis source settings (defined next to the source that uses them).
pub use crate::source::redis::RedisSettings as RedisConfig;

/// The Nomad API settings (defined next to the client that uses them).
pub use crate::source::nomad::NomadConfig;

/// Which Nomad allocations are orchestrators, and how often to reconcile with them.
#[derive(Debug, Clone)]
pub struct ReconcileConfig {
    /// Services or allocations.
    pub discovery: crate::source::nomad::DiscoveryMode,
    /// Name of the orchestrators' Nomad service.
    pub service_name: String,
    /// Task group of the orchestrator job.
    pub task_group: String,
    /// Start of the orchestrator job id.
    pub job_prefix: String,
    /// Label of the gRPC port.
    pub port_label: String,
    /// Port when none is labelled.
    pub default_port: u16,
    /// `List` timeout.
    pub rpc_timeout: Duration,
    /// Time between runs.
    pub interval: Duration,
    /// How long a difference must persist.
    pub grace: Duration,
}

/// Everything `run` needs, validated.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Webhook destinations (at least one, unless the events API is on).
    pub endpoints: Vec<EndpointConfig>,
    /// When to retry and when to give up.
    pub retry: RetryPolicy,
    /// Sandboxes delivered concurrently per endpoint.
    pub max_in_flight: usize,
    /// The Redis source, if configured.
    pub redis: Option<RedisConfig>,
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
    /// Health and metrics address.
    pub listen: SocketAddr,
    /// The admin API and console token; none turns them off.
    pub admin_token: Option<AdminToken>,
    /// OTLP collector to push the metrics to, if any.
    pub otlp_endpoint: Option<Url>,
    /// E2B's events API on its Postgres, when configured.
    pub events_api: Option<EventsApiConfig>,
}

/// The config file (`--config`).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    endpoints: Vec<EndpointToml>,
    #[serde(default)]
    retry: RetryToml,
    max_in_flight: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointToml {
    id: String,
    url: String,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    secrets: Vec<String>,
    /// Name of an environment variable holding the secrets, to keep them out of the file.
    #[serde(default)]
    secrets_env: Option<String>,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    timeout: Option<String>,
    /// e2b-cloud: the `e2b-webhook-id` UUID.
    #[serde(default)]
    webhook_id: Option<String>,
    /// e2b-cloud: url-safe, standard or standard-padded.
    #[serde(default)]
    signature_encoding: Option<String>,
    /// Only these teams' events (as E2B Cloud's per-team webhooks); default: every team served.
    #[serde(default)]
    teams: Option<Vec<String>>,
    #[serde(default)]
    response_body_limit: Option<usize>,
}

impl RunConfig {
    /// Validates flags, environment and the optional config file.
    pub fn from_args(args: &RunArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new(
                        "CONFIG_FILE (--config)",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| {
                    ConfigError::new(
                        "CONFIG_FILE (--config)",
                        format!("{}: {}", path.display(), e.to_string().replace('\n', " ")),
                    )
                })?
            }
            None => FileConfig::default(),
        };
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
        let redis = redis_config(args)?;
        let team_ids = teams::scope_endpoints(team_ids, &mut endpoints, endpoint_teams);
        let nomad = match &args.nomad_addr {
            None => None,
            Some(addr) => Some(NomadConfig {
                addr: parse_nomad_addr(addr)
                    .map_err(|e| ConfigError::new("NOMAD_ADDR (--nomad-addr)", e))?,
                token: args
                    .nomad_token
                    .as_deref()
                    .filter(|t| !t.is_empty())
                    .map(Secret::new),
                namespace: args.nomad_namespace.clone(),
                cacert: args.nomad_cacert.clone(),
                client_cert: args.nomad_client_cert.clone(),
                client_key: args.nomad_client_key.clone(),
            }),
        };
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
            redis,
            team_ids,
            nomad,
            reconcile: reconcile_config(args)?,
            events_file: args.events_file.clone(),
            data_dir: args.data_dir.clone(),
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

fn endpoint_from_toml(
    i: usize,
    ep: EndpointToml,
    default_timeout: Duration,
    default_response_body_limit: usize,
) -> Result<EndpointConfig, ConfigError> {
    let key = |field: &str| format!("endpoints[{i}].{field}");
    if ep.id.is_empty()
        || !ep
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ConfigError::new(
            key("id"),
            format!("{:?} must be non-empty letters, digits, - or _", ep.id),
        ));
    }
    let url = parse_http_url(&ep.url).map_err(|e| ConfigError::new(key("url"), e))?;
    let format = match ep.format {
        Some(f) => f
            .parse()
            .map_err(|e: String| ConfigError::new(key("format"), e))?,
        None => WireFormat::default(),
    };
    let mut secrets: Vec<Secret> = ep.secrets.into_iter().map(Secret::new).collect();
    if let Some(var) = ep.secrets_env {
        let value = std::env::var(&var).map_err(|_| {
            ConfigError::new(
                key("secrets_env"),
                format!("environment variable {var} is not set"),
            )
        })?;
        secrets.extend(value.split_whitespace().map(Secret::new));
    }
    let secrets =
        SecretSet::from_secrets(secrets).map_err(|e| ConfigError::new(key("secrets"), e))?;
    let events = match ep.events {
        Some(list) => {
            EventFilter::parse(&list.join(",")).map_err(|e| ConfigError::new(key("events"), e))?
        }
        None => EventFilter::default_labels(),
    };
    let timeout = match ep.timeout {
        Some(t) => parse_duration(&t).map_err(|e| ConfigError::new(key("timeout"), e))?,
        None => default_timeout,
    };
    let webhook_id = match ep.webhook_id {
        Some(raw) => parse_webhook_id(&raw).map_err(|e| ConfigError::new(key("webhook_id"), e))?,
        None => default_webhook_id(&ep.id),
    };
    let signature_encoding = match ep.signature_encoding {
        Some(raw) => raw
            .parse()
            .map_err(|e: String| ConfigError::new(key("signature_encoding"), e))?,
        None => SignatureEncoding::default(),
    };
    Ok(EndpointConfig {
        id: ep.id,
        url,
        format,
        secrets,
        events,
        timeout,
        webhook_id,
        signature_encoding,
        response_body_limit: ep
            .response_body_limit
            .unwrap_or(default_response_body_limit),
    })
}

fn reconcile_config(args: &RunArgs) -> Result<ReconcileConfig, ConfigError> {
    let duration =
        |setting: &str, text: &str| parse_duration(text).map_err(|e| ConfigError::new(setting, e));
    let interval = duration(
        "RECONCILE_INTERVAL (--reconcile-interval)",
        &args.reconcile_interval,
    )?;
    if interval.is_zero() {
        return Err(ConfigError::new(
            "RECONCILE_INTERVAL (--reconcile-interval)",
            "must be more than 0s",
        ));
    }
    let service_name = args.orchestrator_service.trim();
    if !valid_service_name(service_name) {
        return Err(ConfigError::new(
            "ORCHESTRATOR_SERVICE (--orchestrator-service)",
            format!(
                "{service_name:?} is not a Nomad service name (1-63 letters, digits or dashes, no leading or trailing dash)"
            ),
        ));
    }
    Ok(ReconcileConfig {
        discovery: args
            .nomad_discovery
            .trim()
            .parse()
            .map_err(|e| ConfigError::new("NOMAD_DISCOVERY (--nomad-discovery)", e))?,
        service_name: service_name.to_owned(),
        task_group: args.orchestrator_task_group.clone(),
        job_prefix: args.orchestrator_job_prefix.clone(),
        port_label: args.orchestrator_port_label.clone(),
        default_port: args.orchestrator_port,
        rpc_timeout: duration(
            "ORCHESTRATOR_TIMEOUT (--orchestrator-timeout)",
            &args.orchestrator_timeout,
        )?,
        interval,
        grace: duration("RECONCILE_GRACE (--reconcile-grace)", &args.reconcile_grace)?,
    })
}

/// Parses `E2B_TEAM_IDS`: UUIDs separated by commas or spaces.
pub fn parse_team_ids(list: &str) -> Result<Vec<Uuid>, ConfigError> {
    list.split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            Uuid::parse_str(s).map_err(|_| {
                ConfigError::new(
                    "E2B_TEAM_IDS (--team-ids)",
                    format!("{s:?} is not a team UUID"),
                )
            })
        })
        .collect()
}

/// An `e2b-webhook-id`: a UUID, as E2B's webhook ids are.
fn parse_webhook_id(raw: &str) -> Result<Uuid, String> {
    Uuid::parse_str(raw.trim()).map_err(|_| {
        format!("{raw:?} is not a UUID (E2B's webhook ids are UUIDs; `uuidgen` makes one)")
    })
}

/// Nomad's rule for service names (RFC 1123 labels, ≤ 63 characters, no leading or trailing
/// dash), checked here so a typo fails at startup rather than as an empty catalog.
fn valid_service_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Parses `NOMAD_ADDR`: `http(s)://host[:port]`, or `unix:///absolute/path/api.sock` (the
/// Task API socket inside a Nomad task, `$NOMAD_SECRETS_DIR/api.sock`).
pub fn parse_nomad_addr(raw: &str) -> Result<Url, String> {
    if !raw.trim().starts_with("unix:") {
        return parse_http_url(raw);
    }
    match Url::parse(raw.trim()) {
        Ok(url) if url.host_str().unwrap_or("").is_empty() && url.path().len() > 1 => Ok(url),
        _ => Err(format!(
            "{:?} is not a socket path; expected unix:///absolute/path/api.sock",
            redact_url_text(raw)
        )),
    }
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
            redis_stream: "sandbox.events.stream".into(),
            redis_group: "g".into(),
            leader_lease_ttl: "8s".into(),
            nomad_namespace: "default".into(),
            data_dir: "data".into(),
            listen: "127.0.0.1:0".into(),
            max_in_flight: 8,
            orchestrator_timeout: "10s".into(),
            reconcile_interval: "30s".into(),
            reconcile_grace: "60s".into(),
            nomad_discovery: "services".into(),
            orchestrator_service: "orchestrator".into(),
            ..RunArgs::default()
        }
    }

    #[test]
    fn the_leader_lease_ttl_is_bounded() {
        let mut a = args();
        a.redis_url = Some("redis:6379".into());
        a.redis_claim_idle = "60s".into();
        let redis = RunConfig::from_args(&a).unwrap().redis.unwrap();
        assert_eq!(redis.lease_ttl, Duration::from_secs(8));
        for bad in ["500ms", "10m", "soon"] {
            a.leader_lease_ttl = bad.into();
            let err = RunConfig::from_args(&a).unwrap_err();
            assert!(err.setting.starts_with("LEADER_LEASE_TTL"), "{bad}: {err}");
        }
    }

    #[test]
    fn nomad_addr_is_http_or_the_task_api_socket() {
        let socket = parse_nomad_addr("unix:///alloc/secrets/api.sock").unwrap();
        assert_eq!(
            (socket.scheme(), socket.path()),
            ("unix", "/alloc/secrets/api.sock")
        );
        assert!(parse_nomad_addr("https://nomad.service.consul:4646").is_ok());
        assert!(parse_nomad_addr("unix://relative.sock").is_err());
        assert!(parse_nomad_addr("unix:").is_err());
        assert!(parse_nomad_addr("ftp://nomad").is_err());
    }

    #[test]
    fn discovery_mode_and_service_name_are_checked() {
        let c = RunConfig::from_args(&args()).unwrap();
        assert_eq!(
            c.reconcile.discovery,
            crate::source::nomad::DiscoveryMode::Services
        );
        assert_eq!(c.reconcile.service_name, "orchestrator");
        let mut a = args();
        a.nomad_discovery = "events".into();
        let err = RunConfig::from_args(&a).unwrap_err();
        assert!(err.setting.starts_with("NOMAD_DISCOVERY"), "{err:?}");
        for bad in [
            "-orchestrator",
            "orchestrator-",
            "orch_estrator",
            "",
            &"a".repeat(64),
        ] {
            let mut a = args();
            a.orchestrator_service = bad.into();
            let err = RunConfig::from_args(&a).unwrap_err();
            assert!(err.setting.starts_with("ORCHESTRATOR_SERVICE"), "{bad:?}");
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
        a.team_ids = "not-a-uuid".into();
        assert!(
            RunConfig::from_args(&a)
                .unwrap_err()
                .setting
                .starts_with("E2B_TEAM_IDS")
        );
        let mut a = args();
        a.redis_url = Some("http://localhost".into());
        assert!(
            RunConfig::from_args(&a)
                .unwrap_err()
                .setting
                .starts_with("REDIS_URL")
        );
    }

    #[test]
    fn config_file_adds_endpoints() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "max_in_flight = 3\n[[endpoints]]\nid = \"audit\"\nurl = \"http://127.0.0.1:1/x\"\nformat = \"standard-webhooks\"\nsecrets = [\"new\", \"old\"]\nevents = [\"kill\"]\n[retry]\nmax_age = \"1h\"\n",
        )
        .unwrap();
        let mut a = args();
        a.config = Some(path.clone());
        let c = RunConfig::from_args(&a).unwrap();
        assert_eq!(c.endpoints.len(), 2);
        assert_eq!(c.endpoints[1].secrets.all().len(), 2);
        assert_eq!(c.max_in_flight, 3);
        assert_eq!(c.retry.max_age, Duration::from_secs(3600));
        std::fs::write(
            &path,
            "[[endpoints]]\nid = \"a\"\nurl = \"nope\"\nsecrets = [\"s\"]\n",
        )
        .unwrap();
        assert_eq!(
            RunConfig::from_args(&a).unwrap_err().setting,
            "endpoints[0].url"
        );
    }
}
