//! The flags of `run`; every one also reads the environment variable in brackets.

use super::shared_args::{
    DEFAULT_LEADER_LEASE_TTL, DEFAULT_REDIS_CLAIM_IDLE, DEFAULT_WEBHOOK_TIMEOUT, DataDirArgs,
    RedisArgs,
};
use super::{EventsApiArgs, LogsCollectorArgs, WebhookArgs};
use std::path::PathBuf;

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
        default_value = DEFAULT_WEBHOOK_TIMEOUT,
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
    /// PEM file of a private CA that signed WEBHOOK_URL's certificate; trusted besides the public roots.
    #[arg(long, env = "WEBHOOK_CA_FILE", value_name = "FILE")]
    pub webhook_ca_file: Option<PathBuf>,
    /// Events to deliver, comma-separated: labels (create,kill,pause,resume,update,checkpoint), E2B's types (sandbox.lifecycle.killed, …) or *.
    #[arg(
        long,
        env = "WEBHOOK_EVENTS",
        default_value = "create,kill,pause,resume"
    )]
    pub webhook_events: String,
    #[command(flatten)]
    pub redis: RedisArgs,
    /// This instance's consumer name (default: the Nomad allocation id or the host name).
    #[arg(long, env = "REDIS_CONSUMER")]
    pub redis_consumer: Option<String>,
    /// Claim stream entries another consumer has left unacknowledged for this long.
    #[arg(
        long,
        env = "REDIS_CLAIM_IDLE",
        default_value = DEFAULT_REDIS_CLAIM_IDLE,
        value_name = "DURATION"
    )]
    pub redis_claim_idle: String,
    /// Time to live of the leader lease: a lost active instance is replaced about this long
    /// plus a third after its last renewal.
    #[arg(
        long,
        env = "LEADER_LEASE_TTL",
        default_value = DEFAULT_LEADER_LEASE_TTL,
        value_name = "DURATION"
    )]
    pub leader_lease_ttl: String,
    /// Trim the stream up to what the consumer group has acknowledged (false keeps every entry).
    #[arg(long, env = "REDIS_TRIM", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub redis_trim: bool,
    /// The teams served (UUIDs, comma-separated): their wh:TEAM keys are kept alive, other teams' events and sandboxes are skipped.
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
    #[command(flatten)]
    pub storage: DataDirArgs,
    /// Keep the outbox file to this process while it runs: one fsync per commit instead of two,
    /// and no file-range locks. `status` and `dead-letters` must then ask the service through its
    /// admin API (ADMIN_URL, ADMIN_TOKEN) instead of reading DATA_DIR while it runs. The Nomad
    /// job turns it on together with the admin API.
    #[arg(long, env = "OUTBOX_EXCLUSIVE", default_value_t = false, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub outbox_exclusive: bool,
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
    /// Threads running the service's tasks. One is cheapest per event at a cluster's rates
    /// (BENCHMARKS.md, issue 30); more add throughput for draining large backlogs.
    #[arg(long, env = "WORKER_THREADS", value_name = "N", default_value_t = 1)]
    pub worker_threads: usize,
    /// Bearer token of the admin API (/admin/v1/), the console (/), /status and /readyz details
    /// on LISTEN_ADDR; unset, they are off.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    #[command(flatten)]
    pub events_api: EventsApiArgs,
    #[command(flatten)]
    pub logs_collector: LogsCollectorArgs,
}
