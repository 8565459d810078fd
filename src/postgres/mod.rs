//! E2B's own Postgres: read-only on its `public.team_api_keys` and `public.teams` (who a key
//! belongs to) and `public.user_identities` and `public.users_teams` (which teams a user's token
//! may act for), read-write on our schema `webhook_emitter` (registered webhooks, the lifecycle
//! history, the delivery log), created and migrated at startup.
//!
//! The pool connects lazily: with Postgres down the service starts, delivery to configured
//! endpoints goes on, and whatever needs the database answers "unavailable" until it is back.

pub mod api_keys;
pub mod delivery_log;
pub mod delivery_pages;
pub mod delivery_stats;
pub mod event_history;
pub mod portal_sessions;
pub mod sandbox_events;
pub mod secret_keys;
pub mod user_teams;
pub mod webhook_secrets;
pub mod webhooks;

use secret_keys::SecretKeys;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Our schema; E2B's tables stay in `public`.
pub const SCHEMA: &str = "webhook_emitter";
/// A request waits at most this long for a connection before it is answered "unavailable".
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// Between attempts to migrate while Postgres is unreachable.
const MIGRATE_RETRY: Duration = Duration::from_secs(2);

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Postgres is unreachable, refused the query, or our schema is not migrated yet.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// Where the database is: a libpq connection string or URL (it may hold a password: never
/// logged).
#[derive(Clone)]
pub struct DatabaseSettings {
    /// `postgresql://user:password@host:5432/db?sslmode=require` or `host=… user=…`.
    pub connection_string: String,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseSettings(<redacted>)")
    }
}

/// A pool of connections to E2B's Postgres, and whether our schema is migrated.
#[derive(Clone)]
pub struct Database {
    pool: PgPool,
    migrated: watch::Receiver<bool>,
    migrated_tx: Arc<watch::Sender<bool>>,
    /// Seals and opens webhooks' signing secrets (`WEBHOOK_SECRETS_KEY`); `None` for tools that
    /// never touch them.
    sealing: Option<Arc<webhook_secrets::Sealing>>,
}

impl Database {
    /// Whether the connection string can be read (the message never holds its password).
    pub fn check_settings(settings: &DatabaseSettings) -> Result<(), String> {
        Self::options(settings).map(drop)
    }

    fn options(settings: &DatabaseSettings) -> Result<PgConnectOptions, String> {
        let raw = settings.connection_string.as_str();
        if let Some((scheme, _)) = raw.split_once("://")
            && !matches!(scheme, "postgres" | "postgresql")
        {
            return Err(format!(
                "a {scheme}:// URL is no Postgres connection string (postgresql://user:password@host:5432/db)"
            ));
        }
        PgConnectOptions::from_str(raw)
            // Our tables and sqlx's bookkeeping table live in our schema; queries of E2B's
            // tables name `public` explicitly. No JIT: our queries are short or read an index
            // range (the delivery stats), where compiling costs more than it saves (a week's
            // stats spent 170 of 490 ms compiling; BENCHMARKS.md, issue 27).
            .map(|o| {
                o.application_name("e2b-webhook-emitter")
                    .options([("search_path", SCHEMA), ("jit", "off")])
            })
            .map_err(|e| {
                let shown = crate::util::redact::redact_urls_in(&e.to_string());
                format!("is not a Postgres connection string (postgresql://user:password@host:5432/db): {shown}")
            })
    }

    /// Checks the connection string and prepares a pool (no connection is made yet).
    pub fn new(settings: &DatabaseSettings) -> Result<Self, String> {
        let options = Self::options(settings)?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        let (tx, rx) = watch::channel(false);
        Ok(Self {
            pool,
            migrated: rx,
            migrated_tx: Arc::new(tx),
            sealing: None,
        })
    }

    /// Seals webhooks' signing secrets under `keys` (required to register or deliver to them).
    pub fn with_secret_keys(mut self, keys: SecretKeys) -> Self {
        self.sealing = Some(Arc::new(webhook_secrets::Sealing::new(keys)));
        self
    }

    /// The pool, for the query modules.
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Fails unless our schema is in place (migrations run once Postgres answers).
    pub(crate) fn ready(&self) -> Result<&PgPool, StoreError> {
        if *self.migrated.borrow() {
            Ok(&self.pool)
        } else {
            Err(StoreError::Unavailable(
                "the webhook_emitter schema is not migrated yet".into(),
            ))
        }
    }

    /// Whether our schema is migrated.
    pub fn is_ready(&self) -> bool {
        *self.migrated.borrow()
    }

    /// Creates our schema, applies pending migrations and seals the signing secrets still in
    /// plain text, retrying while Postgres is unreachable. Both instances of an HA pair may run
    /// it: sqlx serializes migrators with an advisory lock. Fails only when `WEBHOOK_SECRETS_KEY`
    /// does not open the secrets already stored.
    pub async fn migrate_until_done(
        &self,
        shutdown: CancellationToken,
    ) -> Result<(), webhook_secrets::KeyMismatch> {
        let mut logged = false;
        loop {
            let migrated = match self.migrate().await {
                Ok(()) => self.seal_and_check_secrets().await,
                Err(e) => Err(webhook_secrets::SealingError::Store(e)),
            };
            match migrated {
                Ok(()) => {
                    tracing::info!(schema = SCHEMA, "database schema ready");
                    self.migrated_tx.send_replace(true);
                    return Ok(());
                }
                Err(webhook_secrets::SealingError::Mismatch(e)) => return Err(e),
                Err(webhook_secrets::SealingError::Store(e)) => {
                    if !logged {
                        tracing::warn!(error = %e, "cannot migrate the webhook_emitter schema yet; the events API answers 503 until it can");
                        logged = true;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(MIGRATE_RETRY) => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }

    /// For tools beside the service: uses the schema the service migrated, failing when it is
    /// not there.
    pub async fn use_existing_schema(&self) -> Result<(), StoreError> {
        let present: bool = sqlx::query_scalar(
            "SELECT to_regclass('webhook_emitter.delivery_attempts') IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        if !present {
            return Err(StoreError::Unavailable(
                "the webhook_emitter schema is not there yet: start the service with POSTGRES_CONNECTION_STRING once".into(),
            ));
        }
        self.migrated_tx.send_replace(true);
        Ok(())
    }

    /// Creates our schema and applies pending migrations (once Postgres answers).
    pub(crate) async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        // An operator may create the schema for us and grant no CREATE on the database.
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(SCHEMA)
                .fetch_one(&mut *conn)
                .await?;
        if !exists {
            sqlx::query(&format!("CREATE SCHEMA {SCHEMA}"))
                .execute(&mut *conn)
                .await?;
        }
        drop(conn);
        sqlx::migrate!("src/postgres/migrations")
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }
}
