//! Flags every command that reads E2B's Postgres shares (`run`, `delivery-log`,
//! `webhook-secrets`): where the database is, and the key that seals webhooks' signing secrets.

use super::ConfigError;
use crate::postgres::secret_keys::{self, SecretKeys};
use crate::postgres::{Database, DatabaseSettings};

/// The setting as refusals name it.
pub const DATABASE_SETTING: &str = "POSTGRES_CONNECTION_STRING (or DATABASE_URL)";

/// Where E2B's Postgres is.
#[derive(Debug, Clone, clap::Args, Default)]
pub struct DatabaseArgs {
    /// E2B's Postgres (the variable E2B's api job reads): turns on /events/webhooks with E2B API keys.
    #[arg(
        long,
        env = "POSTGRES_CONNECTION_STRING",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub postgres_connection_string: Option<String>,
    /// Accepted instead of POSTGRES_CONNECTION_STRING.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_name = "URL")]
    pub database_url: Option<String>,
}

impl DatabaseArgs {
    /// The database, checked; `None` when neither variable is set.
    pub fn settings(&self) -> Result<Option<DatabaseSettings>, ConfigError> {
        let given = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let Some(connection_string) =
            given(&self.postgres_connection_string).or_else(|| given(&self.database_url))
        else {
            return Ok(None);
        };
        let settings = DatabaseSettings { connection_string };
        Database::check_settings(&settings).map_err(|e| ConfigError::new(DATABASE_SETTING, e))?;
        Ok(Some(settings))
    }
}

/// The key that seals registered webhooks' signing secrets in Postgres.
#[derive(Debug, Clone, clap::Args, Default)]
pub struct SecretsKeyArgs {
    /// Seals registered webhooks' signing secrets in Postgres (AES-256-GCM): base64 of 32 random
    /// bytes (`openssl rand -base64 32`). To rotate: "NEW,OLD" (the first seals, all open), then
    /// `webhook-secrets reseal`, then NEW alone. Required with the events API.
    #[arg(
        long,
        env = "WEBHOOK_SECRETS_KEY",
        hide_env_values = true,
        value_name = "KEYS"
    )]
    pub webhook_secrets_key: Option<String>,
}

impl SecretsKeyArgs {
    /// The keys, required: the message says how to make one and never quotes the value.
    pub fn keys(&self) -> Result<SecretKeys, ConfigError> {
        let setting = format!("{} (--webhook-secrets-key)", secret_keys::SETTING);
        let Some(raw) = self.webhook_secrets_key.as_deref() else {
            return Err(ConfigError::new(
                setting,
                format!(
                    "is not set; the events API seals webhooks' signing secrets with it: generate one with `{}` and keep it with the service's other secrets",
                    secret_keys::GENERATE
                ),
            ));
        };
        SecretKeys::parse(raw).map_err(|e| ConfigError::new(setting, e))
    }
}
