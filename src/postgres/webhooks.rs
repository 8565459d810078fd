//! Registered webhooks in `webhook_emitter.webhooks`, always scoped to the owning team. Signing
//! secrets are written sealed (`webhook_secrets.rs`) and opened only for delivery.

use super::{Database, StoreError};
use uuid::Uuid;

/// Endpoint ids of registered webhooks start with this (configured ids cannot contain `:`).
pub const ENDPOINT_PREFIX: &str = "webhook:";

/// The outbox and delivery-log endpoint id of webhook `id`.
pub fn endpoint_id(id: Uuid) -> String {
    format!("{ENDPOINT_PREFIX}{id}")
}

/// A webhook as its team reads it back (the secret is not part of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Its id (`e2b-webhook-id` on deliveries).
    pub id: Uuid,
    /// The team that registered it.
    pub team_id: Uuid,
    /// A human-readable name.
    pub name: String,
    /// Where events are POSTed.
    pub url: String,
    /// Whether events are delivered.
    pub enabled: bool,
    /// Full event types (`sandbox.lifecycle.killed`).
    pub events: Vec<String>,
    /// When it was registered.
    pub created_at: jiff::Timestamp,
}

/// A webhook to register. No `Debug`: it holds the secret.
pub struct NewWebhook {
    /// The registering team.
    pub team_id: Uuid,
    /// A human-readable name.
    pub name: String,
    /// Where events are POSTed.
    pub url: String,
    /// Whether events are delivered.
    pub enabled: bool,
    /// Full event types.
    pub events: Vec<String>,
    /// Signs deliveries; never read back through the API.
    pub signature_secret: String,
}

/// Why a webhook was not registered.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The team has `limit` webhooks already.
    #[error("the team has {limit} webhooks, the most it may register")]
    LimitReached {
        /// Webhooks per team at most.
        limit: u32,
    },
    /// The database cannot answer.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Two ints for `pg_advisory_xact_lock(int, int)`: this constant, and the team (its first four
/// bytes), so creates of one team queue while other teams' go on.
const TEAM_LOCK_CLASS: i32 = 0x7768_6b73; // "whks"

/// Fields to replace; `None` keeps the current value. No `Debug`: it may hold the secret.
#[derive(Default)]
pub struct WebhookChanges {
    /// A new name.
    pub name: Option<String>,
    /// A new URL.
    pub url: Option<String>,
    /// Switch delivery on or off.
    pub enabled: Option<bool>,
    /// New event types.
    pub events: Option<Vec<String>>,
    /// A new signing secret.
    pub signature_secret: Option<String>,
}

/// An enabled webhook with its secret, for delivery. No `Debug`: it holds the secret.
pub struct Registration {
    /// The webhook.
    pub webhook: Webhook,
    /// Signs its deliveries.
    pub signature_secret: String,
}

/// The enabled webhooks: those delivered to, and those whose secret does not open (a row sealed
/// under a key this instance lacks, or altered). The latter still exist: what is queued for them
/// waits, it is not dropped as for a deleted webhook.
#[derive(Default)]
pub struct EnabledWebhooks {
    /// Delivered to, their secrets opened.
    pub registrations: Vec<Registration>,
    /// Enabled, but their secrets do not open here.
    pub unopened: std::collections::HashSet<Uuid>,
}

type Row = (
    Uuid,
    Uuid,
    String,
    String,
    bool,
    Vec<String>,
    jiff_sqlx::Timestamp,
);

const COLUMNS: &str = "id, team_id, name, url, enabled, events, created_at";

/// A [`Row`] followed by the secret as an earlier release stored it (plain) and as this one
/// does (sealed).
type WithSecret = (
    Uuid,
    Uuid,
    String,
    String,
    bool,
    Vec<String>,
    jiff_sqlx::Timestamp,
    Option<String>,
    Option<Vec<u8>>,
);

fn from_row((id, team_id, name, url, enabled, events, created_at): Row) -> Webhook {
    Webhook {
        id,
        team_id,
        name,
        url,
        enabled,
        events,
        created_at: created_at.to_jiff(),
    }
}

impl Database {
    /// Registers `webhook` under a new id, unless its team has `limit` webhooks already. The
    /// count and the insert hold a per-team lock (both instances of an HA pair share it), so
    /// concurrent creates cannot pass the limit together.
    pub async fn create_webhook(
        &self,
        webhook: NewWebhook,
        limit: u32,
    ) -> Result<Webhook, CreateError> {
        let id = Uuid::new_v4();
        let sealed = self.sealing()?.keys.seal(&webhook.signature_secret, id);
        let mut tx = self.ready()?.begin().await.map_err(StoreError::from)?;
        let team = webhook.team_id.as_bytes();
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(TEAM_LOCK_CLASS)
            .bind(i32::from_be_bytes([team[0], team[1], team[2], team[3]]))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
        let held: i64 =
            sqlx::query_scalar("SELECT count(*) FROM webhook_emitter.webhooks WHERE team_id = $1")
                .bind(webhook.team_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::from)?;
        if held >= i64::from(limit) {
            return Err(CreateError::LimitReached { limit });
        }
        let row: Row = sqlx::query_as(&format!(
            "INSERT INTO webhook_emitter.webhooks
                    (id, team_id, name, url, enabled, events, sealed_secret)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
          RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(webhook.team_id)
        .bind(webhook.name)
        .bind(webhook.url)
        .bind(webhook.enabled)
        .bind(webhook.events)
        .bind(sealed)
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(from_row(row))
    }

    /// The team's webhooks, oldest first.
    pub async fn team_webhooks(&self, team: Uuid) -> Result<Vec<Webhook>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM webhook_emitter.webhooks
              WHERE team_id = $1 ORDER BY created_at, id"
        ))
        .bind(team)
        .fetch_all(self.ready()?)
        .await?;
        Ok(rows.into_iter().map(from_row).collect())
    }

    /// The team's webhook `id`; `None` when it does not exist or belongs to another team.
    pub async fn team_webhook(&self, team: Uuid, id: Uuid) -> Result<Option<Webhook>, StoreError> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM webhook_emitter.webhooks WHERE team_id = $1 AND id = $2"
        ))
        .bind(team)
        .bind(id)
        .fetch_optional(self.ready()?)
        .await?;
        Ok(row.map(from_row))
    }

    /// Replaces the given fields of the team's webhook `id`; `None` when it is not the team's.
    pub async fn update_webhook(
        &self,
        team: Uuid,
        id: Uuid,
        changes: WebhookChanges,
    ) -> Result<Option<Webhook>, StoreError> {
        let sealed = match &changes.signature_secret {
            Some(secret) => Some(self.sealing()?.keys.seal(secret, id)),
            None => None,
        };
        let row: Option<Row> = sqlx::query_as(&format!(
            "UPDATE webhook_emitter.webhooks
                SET name = COALESCE($3, name),
                    url = COALESCE($4, url),
                    enabled = COALESCE($5, enabled),
                    events = COALESCE($6, events),
                    sealed_secret = COALESCE($7, sealed_secret),
                    signature_secret = CASE WHEN $7 IS NULL THEN signature_secret END,
                    updated_at = now()
              WHERE team_id = $1 AND id = $2
          RETURNING {COLUMNS}"
        ))
        .bind(team)
        .bind(id)
        .bind(changes.name)
        .bind(changes.url)
        .bind(changes.enabled)
        .bind(changes.events)
        .bind(sealed)
        .fetch_optional(self.ready()?)
        .await?;
        Ok(row.map(from_row))
    }

    /// Every enabled webhook of every team, with its secret opened (what the dispatchers deliver
    /// to). A webhook whose secret does not open is left out (and logged once). A secret still in
    /// plain text (an earlier release wrote it during a rolling upgrade) is sealed here.
    pub async fn enabled_webhooks(&self) -> Result<EnabledWebhooks, StoreError> {
        let rows: Vec<WithSecret> = sqlx::query_as(&format!(
            "SELECT {COLUMNS}, signature_secret, sealed_secret FROM webhook_emitter.webhooks
                  WHERE enabled ORDER BY created_at, id"
        ))
        .fetch_all(self.ready()?)
        .await?;
        self.opened(rows).await
    }

    /// What every enabled webhook's row holds (all its columns, secrets included), as one hash
    /// Postgres computes: [`Self::enabled_webhooks`] needs reading again only when it changes.
    pub async fn enabled_webhooks_version(&self) -> Result<String, StoreError> {
        let (version,): (String,) = sqlx::query_as(
            "SELECT count(*)::text || ':' || coalesce(md5(string_agg(w::text, ',' ORDER BY w.id)), '')
               FROM webhook_emitter.webhooks w WHERE w.enabled",
        )
        .fetch_one(self.ready()?)
        .await?;
        Ok(version)
    }

    /// The team's enabled webhook `id` with its secret opened, as [`Self::enabled_webhooks`]
    /// gives it; `None` when it is disabled, not the team's, or its secret does not open.
    pub async fn team_registration(
        &self,
        team: Uuid,
        id: Uuid,
    ) -> Result<Option<Registration>, StoreError> {
        let rows: Vec<WithSecret> = sqlx::query_as(&format!(
            "SELECT {COLUMNS}, signature_secret, sealed_secret FROM webhook_emitter.webhooks
                  WHERE enabled AND team_id = $1 AND id = $2"
        ))
        .bind(team)
        .bind(id)
        .fetch_all(self.ready()?)
        .await?;
        Ok(self.opened(rows).await?.registrations.pop())
    }

    /// The rows with their secrets opened; seals any an earlier release left in plain text.
    async fn opened(&self, rows: Vec<WithSecret>) -> Result<EnabledWebhooks, StoreError> {
        let sealing = self.sealing()?;
        let mut plain_seen = false;
        let mut enabled = EnabledWebhooks::default();
        for (id, team, name, url, is_enabled, events, created_at, plain, sealed) in rows {
            plain_seen |= plain.is_some();
            match sealing.secret_of(id, plain, sealed.as_deref()) {
                Some(secret) => enabled.registrations.push(Registration {
                    webhook: from_row((id, team, name, url, is_enabled, events, created_at)),
                    signature_secret: secret,
                }),
                None => {
                    enabled.unopened.insert(id);
                }
            }
        }
        if plain_seen && let Err(e) = self.seal_and_check_secrets().await {
            tracing::warn!(error = %e, "cannot seal the signing secrets an earlier release stored");
        }
        Ok(enabled)
    }

    /// Deletes the team's webhook `id`; false when it is not the team's.
    pub async fn delete_webhook(&self, team: Uuid, id: Uuid) -> Result<bool, StoreError> {
        let done =
            sqlx::query("DELETE FROM webhook_emitter.webhooks WHERE team_id = $1 AND id = $2")
                .bind(team)
                .bind(id)
                .execute(self.ready()?)
                .await?;
        Ok(done.rows_affected() > 0)
    }
}
