//! `status`: the running service's, through its admin API, else the data directory's.

use super::operate;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub(super) struct StatusArgs {
    #[command(flatten)]
    remote: operate::RemoteArgs,
    #[command(flatten)]
    storage: crate::config::DataDirArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub(super) fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    if let Some(code) = operate::status(&args.remote, args.json)? {
        return Ok(code);
    }
    let reader = crate::outbox::OutboxReader::open(&args.storage.data_dir)?;
    let status = reader.status()?;
    let states: Vec<(String, Vec<u8>)> = reader
        .states()?
        .into_iter()
        .map(|(key, value)| {
            let shown = crate::service::shown_state(&key, &value).into_owned();
            (key, shown)
        })
        .collect();
    if args.json {
        let positions: serde_json::Map<String, serde_json::Value> = states
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    serde_json::from_slice(v)
                        .unwrap_or_else(|_| String::from_utf8_lossy(v).into_owned().into()),
                )
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"outbox": status, "sources": positions})
        );
        return Ok(ExitCode::SUCCESS);
    }
    let now = jiff::Timestamp::now().as_millisecond();
    println!(
        "outbox: {} events stored, {} dead letters, {} sandboxes tracked",
        status.events, status.dead_letters, status.sandboxes
    );
    for e in &status.endpoints {
        let oldest = e
            .oldest_appended_at_ms
            .map(|t| format!("oldest {}s old", (now - t) / 1000))
            .unwrap_or_else(|| "nothing pending".into());
        let error = e
            .oldest_last_error
            .as_deref()
            .map(|err| format!(", last error: {err}"))
            .unwrap_or_default();
        println!(
            "  endpoint {}: {} pending, {oldest}{error}",
            e.endpoint, e.depth
        );
    }
    for (key, value) in &states {
        let text = String::from_utf8_lossy(value);
        let shown: String = text.chars().take(120).collect();
        println!("  {key}: {shown}");
    }
    Ok(ExitCode::SUCCESS)
}
