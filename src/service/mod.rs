//! Wiring: `run` starts the parts, each from its own settings — the delivery pipeline
//! (`pipeline.rs`), the events API (`events_api.rs`), the sources (`sources.rs`),
//! reconciliation (`reconciliation.rs`), the ops server (`ops.rs`) — and stops them on SIGTERM.

mod delivery_log;
mod events_api;
mod ops;
mod pipeline;
mod reconciliation;
mod registered_webhooks;
mod sources;
pub use registered_webhooks::shown_state;

pub use pipeline::Pipeline;

use crate::config::RunConfig;
use crate::metrics::Metrics;
use crate::team_scope::TeamScope;
use ops::{AdminSettings, OpsServer};
use sources::Sources;
use std::sync::Arc;
use std::time::Duration;

/// How long in-flight deliveries may finish after SIGTERM (Nomad's kill_timeout must be longer).
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(20);

/// Runs the service until SIGTERM or SIGINT; a second signal exits at once. `log_lines_dropped`
/// is the log shipper's counter (started with logging, before the service), exported here.
/// Each part is built from its own settings; the pipeline starts the sources once they may read.
pub async fn run(
    config: RunConfig,
    log_lines_dropped: prometheus_client::metrics::counter::Counter,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::with_log_lines_dropped(log_lines_dropped));
    let otlp = ops::start_otlp(config.otlp_endpoint.as_ref(), metrics.clone())?;
    let ops_server = OpsServer::bind(config.listen).await?;
    let leadership = sources::leadership(config.redis.as_ref(), &metrics);
    let mut pipeline = Pipeline::start_with(
        &config.data_dir,
        &config.endpoints,
        &config.retry,
        config.max_in_flight,
        metrics,
        leadership,
        config.outbox_sharing,
    )?;
    // The configured teams, and at run time every team with an enabled registered webhook.
    let teams = TeamScope::new(config.team_ids.clone(), config.events_api.is_some());
    let api_routes = match &config.events_api {
        Some(api) => {
            let redis = config.redis.clone();
            events_api::start(api, &config.retry, redis, teams.clone(), &mut pipeline).await?
        }
        None => None,
    };
    let events_file = config.events_file.as_deref();
    let mut sources =
        Sources::start(events_file, config.redis.clone(), teams, &mut pipeline).await?;
    let reconciliation = match &config.nomad {
        Some(nomad) => Some(reconciliation::start(
            nomad,
            &config.reconcile,
            config.team_ids.clone(),
            sources.stream.take(),
            &mut pipeline,
        )?),
        None => None,
    };
    let admin = AdminSettings {
        token: config.admin_token,
        endpoints: &config.endpoints,
        shared_dead_letters: config.redis,
    };
    ops_server.start(&mut pipeline, admin, reconciliation, api_routes)?;
    pipeline.run_until(shutdown_signal()).await?;
    tracing::info!(
        deadline_s = DRAIN_DEADLINE.as_secs(),
        "stopping: finishing in-flight deliveries; a second signal exits at once"
    );
    tokio::spawn(async {
        shutdown_signal().await;
        eprintln!("second signal: exiting now; undelivered events stay in the outbox");
        std::process::exit(130);
    });
    let stopped = pipeline.stop().await;
    sources.stop().await;
    if let Some(otlp) = otlp {
        otlp.shutdown().await;
    }
    stopped?;
    tracing::info!("stopped; everything not delivered is kept in the outbox");
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on Unix");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
