//! `webhook-secrets reseal`: after a rotation of `WEBHOOK_SECRETS_KEY` ("NEW,OLD"), seals every
//! registered webhook's signing secret anew under the current key, so the old key can be dropped.

use crate::config::{ConfigError, DatabaseArgs, SecretsKeyArgs};
use crate::postgres::Database;
use crate::postgres::secret_keys;
use crate::postgres::webhook_secrets::SealingError;
use std::process::ExitCode;

/// What to do with the sealed signing secrets.
#[derive(Debug, clap::Subcommand)]
pub(super) enum WebhookSecretsCommand {
    /// Seal every webhook's signing secret under the current (first) key of WEBHOOK_SECRETS_KEY
    /// and report how many were under each key; all rows or none.
    Reseal {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        secrets_key: SecretsKeyArgs,
    },
}

pub(super) fn webhook_secrets(command: WebhookSecretsCommand) -> anyhow::Result<ExitCode> {
    let WebhookSecretsCommand::Reseal {
        database,
        secrets_key,
    } = command;
    let settings = database.settings()?.ok_or_else(|| {
        ConfigError::new(
            "POSTGRES_CONNECTION_STRING (--postgres-connection-string)",
            "is not set; the webhooks' secrets live in E2B's Postgres",
        )
    })?;
    let keys = secrets_key.keys()?;
    let report = super::runtime()?.block_on(async {
        // The pool needs the runtime. Migrating first: a database the previous release left
        // gets the sealed column here, and its plain-text secrets are sealed too.
        let database = Database::new(&settings)
            .map_err(crate::postgres::StoreError::Unavailable)?
            .with_secret_keys(keys);
        database.migrate().await?;
        database.reseal_secrets().await
    });
    let report = match report {
        Ok(report) => report,
        Err(SealingError::Mismatch(e)) => {
            return Err(ConfigError::new(secret_keys::SETTING, e.to_string()).into());
        }
        Err(SealingError::Store(e)) => return Err(e.into()),
    };
    let current = report.current.map(|k| k.to_string()).unwrap_or_default();
    // The current key first, then the older ones.
    let mut by_key: Vec<(&String, &usize)> = report.from_keys.iter().collect();
    by_key.sort_by_key(|(key, _)| **key != current);
    let mut was: Vec<String> = by_key
        .into_iter()
        .map(|(key, rows)| {
            let role = if *key == current { "current" } else { "older" };
            format!("{rows} under key {key} ({role})")
        })
        .collect();
    was.push(format!("{} in plain text", report.from_plain_text));
    println!(
        "resealed {} webhook signing secret(s) under key {current}; before: {}",
        report.total(),
        was.join(", ")
    );
    println!(
        "every secret now opens with the current key alone: WEBHOOK_SECRETS_KEY may drop the older keys"
    );
    Ok(ExitCode::SUCCESS)
}
