//! Flags shared by several commands, each declared once: `run` and the operator tools
//! (`status`, `dead-letters`, `deliveries`, `outbox`) read the same settings the same way.

use std::path::PathBuf;

/// `REDIS_CLAIM_IDLE`'s default.
pub const DEFAULT_REDIS_CLAIM_IDLE: &str = "60s";
/// `LEADER_LEASE_TTL`'s default.
pub const DEFAULT_LEADER_LEASE_TTL: &str = "8s";
/// `WEBHOOK_TIMEOUT`'s default.
pub const DEFAULT_WEBHOOK_TIMEOUT: &str = "10s";

/// Where the orchestrator's event stream is, and the emitter's consumer group there (`run`, and
/// `dead-letters` for the shared dead letters).
#[derive(Debug, Clone, clap::Args, Default)]
pub struct RedisArgs {
    /// Redis holding the orchestrator's event stream: host:port as the orchestrator reads it, or a redis:// or rediss:// URL (a password as user-info).
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
    /// CA certificate (PEM, base64-encoded) that signed Redis's TLS certificate, as the orchestrator reads it.
    #[arg(long, env = "REDIS_TLS_CA_BASE64", value_name = "BASE64")]
    pub redis_tls_ca_base64: Option<String>,
    /// The orchestrator's event stream key.
    #[arg(long, env = "REDIS_STREAM", default_value = "sandbox.events.stream")]
    pub redis_stream: String,
    /// Consumer group shared by every emitter instance.
    #[arg(long, env = "REDIS_GROUP", default_value = "e2b-webhook-emitter")]
    pub redis_group: String,
}

/// Where the durable outbox is (`run`, and the tools that read it while the service is stopped).
#[derive(Debug, Clone, clap::Args, Default)]
pub struct DataDirArgs {
    /// Directory of the durable outbox.
    #[arg(long, env = "DATA_DIR", default_value = "data", value_name = "DIR")]
    pub data_dir: PathBuf,
}
