//! Registered webhooks' signing secrets at rest: sealed in `webhooks.sealed_secret` under
//! `WEBHOOK_SECRETS_KEY` (see `secret_keys.rs`). Rows a release before sealing wrote keep their
//! secret in `signature_secret` in plain text until the service seals them (at start, and when
//! one appears during a rolling upgrade); `webhook-secrets reseal` moves every row to the
//! current key after a rotation.

use super::secret_keys::{self, KeyId, OpenError, SecretKeys};
use super::{Database, StoreError};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use uuid::Uuid;

/// The keys, and the webhooks already reported as not opening (so a poll every few seconds
/// logs each once).
pub(crate) struct Sealing {
    pub(crate) keys: SecretKeys,
    reported: Mutex<HashSet<Uuid>>,
}

impl Sealing {
    pub(crate) fn new(keys: SecretKeys) -> Self {
        Self {
            keys,
            reported: Mutex::new(HashSet::new()),
        }
    }

    /// The secret of `webhook` from its row: in plain text when an older release wrote it (this
    /// one never does, so it is the newest: an older release's update leaves the envelope
    /// behind), else sealed. Logs once per webhook when it does not open.
    pub(crate) fn secret_of(
        &self,
        webhook: Uuid,
        plain: Option<String>,
        sealed: Option<&[u8]>,
    ) -> Option<String> {
        let opened = match (plain, sealed) {
            (Some(plain), _) => Ok(plain),
            (None, Some(sealed)) => self.keys.open(sealed, webhook),
            (None, None) => Err(OpenError::Malformed),
        };
        match opened {
            Ok(secret) => {
                // Opening again: a later failure is reported again.
                self.reported.lock().expect("not poisoned").remove(&webhook);
                Some(secret)
            }
            Err(e) => {
                if self.reported.lock().expect("not poisoned").insert(webhook) {
                    tracing::error!(webhook = %webhook, error = %e, "not delivering to a webhook whose signing secret does not open (its deliveries wait on disk): give WEBHOOK_SECRETS_KEY the key that sealed it");
                }
                None
            }
        }
    }
}

/// `WEBHOOK_SECRETS_KEY` does not open secrets already stored: the service cannot deliver to
/// those webhooks and refuses to start.
#[derive(Debug, thiserror::Error)]
#[error(
    "does not open the signing secrets of {rows} registered webhook(s) (first: {first}: {cause}); give the key that sealed them (a rotation lists the new key first, then the old ones), or restore it"
)]
pub struct KeyMismatch {
    /// How many rows do not open.
    pub rows: usize,
    /// One of them.
    pub first: Uuid,
    /// Why it does not open.
    pub cause: OpenError,
}

/// Why sealing could not be done.
#[derive(Debug, thiserror::Error)]
pub enum SealingError {
    /// Postgres cannot answer.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The key does not open what is stored.
    #[error(transparent)]
    Mismatch(#[from] KeyMismatch),
}

/// What `reseal` did: every row now sealed under `current`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// The key every secret is now sealed under.
    pub current: Option<KeyId>,
    /// Rows sealed before under each key.
    pub from_keys: BTreeMap<String, usize>,
    /// Rows that were in plain text.
    pub from_plain_text: usize,
}

impl ResealReport {
    /// Rows resealed.
    pub fn total(&self) -> usize {
        self.from_keys.values().sum::<usize>() + self.from_plain_text
    }
}

type SecretRow = (Uuid, Option<String>, Option<Vec<u8>>);

impl Database {
    /// `secret` of `webhook` sealed under the current key, as base64 text: for copies kept
    /// outside Postgres (the registered webhooks' snapshot in `DATA_DIR`).
    pub(crate) fn seal_as_text(&self, secret: &str, webhook: Uuid) -> Result<String, StoreError> {
        Ok(BASE64.encode(self.sealing()?.keys.seal(secret, webhook)))
    }

    /// What `seal_as_text` sealed; `None` when it does not open (another key).
    pub(crate) fn open_text(&self, sealed: &str, webhook: Uuid) -> Option<String> {
        let sealed = BASE64.decode(sealed).ok()?;
        self.sealing().ok()?.keys.open(&sealed, webhook).ok()
    }

    pub(crate) fn sealing(&self) -> Result<&Sealing, StoreError> {
        self.sealing.as_deref().ok_or_else(|| {
            StoreError::Unavailable(format!(
                "{} is not set: signing secrets cannot be sealed or opened",
                secret_keys::SETTING
            ))
        })
    }

    /// Seals the secrets still in plain text, then checks that the keys open one secret sealed
    /// under each key id in use (a wrong key is known at start, not at the first delivery).
    pub(crate) async fn seal_and_check_secrets(&self) -> Result<(), SealingError> {
        let Some(sealing) = self.sealing.as_deref() else {
            return Ok(());
        };
        let sealed = self.reseal(sealing, true).await?;
        if sealed.from_plain_text > 0 {
            tracing::info!(
                webhooks = sealed.from_plain_text,
                key = %sealing.keys.current(),
                "sealed signing secrets stored in plain text by an earlier release"
            );
        }
        // One row per key id: the newest sealed under it.
        let samples: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(
            "SELECT DISTINCT ON (substring(sealed_secret FROM 1 FOR 5)) id, sealed_secret
               FROM webhook_emitter.webhooks WHERE sealed_secret IS NOT NULL
              ORDER BY substring(sealed_secret FROM 1 FOR 5), updated_at DESC",
        )
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::from)?;
        for (id, sealed) in samples {
            if let Err(cause) = sealing.keys.open(&sealed, id) {
                let rows = self.rows_sealed_like(&sealed).await?;
                return Err(KeyMismatch {
                    rows,
                    first: id,
                    cause,
                }
                .into());
            }
        }
        Ok(())
    }

    async fn rows_sealed_like(&self, sealed: &[u8]) -> Result<usize, StoreError> {
        let header = sealed.get(..5).unwrap_or_default();
        let rows: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM webhook_emitter.webhooks
              WHERE substring(sealed_secret FROM 1 FOR 5) = $1",
        )
        .bind(header)
        .fetch_one(self.pool())
        .await?;
        Ok(usize::try_from(rows).unwrap_or(usize::MAX))
    }

    /// Seals every webhook's secret anew under the current key (`webhook-secrets reseal`), in one
    /// transaction: all rows move, or none when one does not open.
    pub async fn reseal_secrets(&self) -> Result<ResealReport, SealingError> {
        self.reseal(self.sealing()?, false).await
    }

    /// Reseals the rows with a secret in plain text (`plain_only`) or every row, under the
    /// current key.
    async fn reseal(
        &self,
        sealing: &Sealing,
        plain_only: bool,
    ) -> Result<ResealReport, SealingError> {
        let mut tx = self.pool().begin().await.map_err(StoreError::from)?;
        // Locked, so an update through the API waits instead of being overwritten.
        let rows: Vec<SecretRow> = sqlx::query_as(
            "SELECT id, signature_secret, sealed_secret FROM webhook_emitter.webhooks
              WHERE $1 = false OR signature_secret IS NOT NULL
              ORDER BY id FOR UPDATE",
        )
        .bind(plain_only)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        let mut report = ResealReport {
            current: Some(sealing.keys.current()),
            ..ResealReport::default()
        };
        let mut refused: Vec<(Uuid, OpenError)> = Vec::new();
        for (id, plain, sealed) in rows {
            // Plain text, when there, is the newest (see `Sealing::secret_of`).
            let secret = match (plain, &sealed) {
                (Some(plain), _) => {
                    report.from_plain_text += 1;
                    plain
                }
                (None, Some(sealed)) => match sealing.keys.open(sealed, id) {
                    Ok(secret) => {
                        let key = secret_keys::sealed_with(sealed).map(|k| k.to_string());
                        *report.from_keys.entry(key.unwrap_or_default()).or_default() += 1;
                        secret
                    }
                    Err(e) => {
                        refused.push((id, e));
                        continue;
                    }
                },
                (None, None) => continue,
            };
            sqlx::query(
                "UPDATE webhook_emitter.webhooks
                    SET sealed_secret = $2, signature_secret = NULL WHERE id = $1",
            )
            .bind(id)
            .bind(sealing.keys.seal(&secret, id))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
        }
        if let Some((first, cause)) = refused.first().cloned() {
            return Err(KeyMismatch {
                rows: refused.len(),
                first,
                cause,
            }
            .into());
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(report)
    }
}
