//! Wiring: `run` starts the delivery pipeline (`pipeline.rs`), the sources, reconciliation and the
//! HTTP servers, and stops them on SIGTERM.

mod delivery_log;
mod events_api;
mod pipeline;
mod registered_webhooks;
pub use registered_webhooks::shown_state;

pub use pipeline::Pipeline;

use crate::admin::{self, Admin, AdminEndpoint};
use crate::config::RunConfig;
use crate::leadership::Leadership;
use crate::metrics::Metrics;
use crate::server;
use crate::util::redact::redact_url;
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;

/// How long in-flight deliveries may finish after SIGTERM (Nomad's kill_timeout must be longer).
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(20);

/// Runs the service until SIGTERM or SIGINT; a second signal exits at once. `log_lines_dropped`
/// is the log shipper's counter (started with logging, before the service), exported here.
pub async fn run(
    config: RunConfig,
    log_lines_dropped: prometheus_client::metrics::counter::Counter,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::with_log_lines_dropped(log_lines_dropped));
    // Series for every configured source exist before the first scrape (endpoints: `Pipeline`).
    if config.events_file.is_some() {
        metrics.prepare_source("file");
    }
    if config.redis.is_some() {
        metrics.prepare_source("redis");
    }
    if config.nomad.is_some() {
        metrics.prepare_source(crate::reconcile::SOURCE);
        metrics.prepare_reconcile();
    }
    let otlp = match &config.otlp_endpoint {
        None => None,
        Some(endpoint) => {
            let push = crate::server::otlp::OtlpPush::start(endpoint.as_str(), metrics.clone())
                .map_err(|e| {
                    crate::config::ConfigError::new(
                        "OTEL_EXPORTER_OTLP_ENDPOINT (--otel-exporter-otlp-endpoint)",
                        e.to_string(),
                    )
                })?;
            tracing::info!(endpoint = %crate::util::redact::redact_url(endpoint), "pushing metrics over OTLP");
            Some(push)
        }
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| {
            crate::config::ConfigError::new(
                "LISTEN_ADDR (--listen)",
                format!("cannot listen on {}: {e}", config.listen),
            )
        })?;
    // With Redis, instances share the consumer group and only the lease holder delivers.
    let leadership = match &config.redis {
        Some(redis) => Leadership::standby(redis.consumer.clone()),
        None => {
            // Alone, without a shared lease, this instance is the one delivering.
            metrics.leader.set(1);
            Leadership::always_active()
        }
    };
    let mut pipeline = Pipeline::start_with(
        &config.data_dir,
        &config.endpoints,
        &config.retry,
        config.max_in_flight,
        metrics.clone(),
        leadership.clone(),
        if config.outbox_exclusive {
            crate::outbox::FileSharing::Exclusive
        } else {
            crate::outbox::FileSharing::WithReaders
        },
    )?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz and /status");
    // The configured teams, and at run time every team with an enabled registered webhook.
    let teams =
        crate::team_scope::TeamScope::new(config.team_ids.clone(), config.events_api.is_some());
    let mut events_api = events_api::start(&config, teams.clone(), &mut pipeline).await?;
    if let Some(path) = &config.events_file {
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("cannot open EVENTS_FILE {}", path.display()))?;
        let outbox = pipeline.outbox.clone();
        let name = path.display().to_string();
        metrics.set_component("file", true, format!("reading {name}"));
        let may_read = events_api.until_sources_may_read();
        let token = pipeline.shutdown_token();
        pipeline.spawn_source(async move {
            tokio::select! {
                () = may_read => {}
                () = token.cancelled() => return Ok(()),
            }
            let report =
                crate::source::file::read_ndjson(tokio::io::BufReader::new(file), "file", &outbox)
                    .await?;
            tracing::info!(
                file = name,
                lines = report.lines,
                appended = report.appended,
                duplicates = report.duplicates,
                malformed = report.malformed,
                "events file read"
            );
            Ok(())
        });
    }
    // sources:
    let mut redis_background = None;
    let mut shared_intake = None;
    let mut stream_progress = None;
    if let Some(redis) = config.redis.clone() {
        let timing = crate::source::redis::LeaseTiming {
            ttl: redis.lease_ttl,
        };
        let source = crate::source::redis::RedisStreamSource::new(
            redis,
            teams.clone(),
            pipeline.outbox.clone(),
            metrics.clone(),
            leadership.clone(),
        )
        .map_err(|e| match e {
            crate::source::redis::RedisSourceError::InvalidSetting { setting, reason } => {
                anyhow::Error::new(crate::config::ConfigError::new(setting, reason))
            }
            other => anyhow::Error::new(other),
        })?;
        redis_background = Some(source.start_background(timing));
        stream_progress = Some(source.progress());
        shared_intake = Some((
            Arc::new(source.stream_intake()),
            Arc::new(source.shared_view()),
        ));
        let token = pipeline.shutdown_token();
        let may_read = events_api.until_sources_may_read();
        pipeline.spawn_source(async move {
            tokio::select! {
                () = may_read => Ok(source.run(token).await?),
                () = token.cancelled() => Ok(()),
            }
        });
    }
    let mut reconciliation = None;
    if let Some(nomad) = &config.nomad {
        let discovery = crate::source::nomad::OrchestratorDiscovery::new(
            nomad,
            crate::source::nomad::DiscoverySettings {
                mode: config.reconcile.discovery,
                selector: crate::source::nomad::OrchestratorSelector {
                    service_name: config.reconcile.service_name.clone(),
                    task_group: config.reconcile.task_group.clone(),
                    job_prefix: config.reconcile.job_prefix.clone(),
                    port_label: config.reconcile.port_label.clone(),
                    default_port: config.reconcile.default_port,
                },
                ..crate::source::nomad::DiscoverySettings::default()
            },
            metrics.clone(),
            pipeline.outbox.clone(),
        )
        .map_err(|e| crate::config::ConfigError::new("NOMAD_* settings", e.to_string()))?;
        let mut reconciler = crate::reconcile::Reconciler::new(
            pipeline.outbox.clone(),
            metrics.clone(),
            discovery.orchestrators(),
            crate::reconcile::ReconcileSettings {
                interval: config.reconcile.interval,
                grace: config.reconcile.grace,
                rpc_timeout: config.reconcile.rpc_timeout,
                stream: stream_progress,
                teams: config.team_ids.clone(),
                leadership: leadership.clone(),
            },
        );
        if let Some((intake, view)) = shared_intake.take() {
            // With Redis, synthesized events go through the stream like every other event, and
            // the sandboxes are compared with the view every instance shares.
            reconciler = reconciler.with_shared(intake, view);
        }
        let token = pipeline.shutdown_token();
        pipeline.spawn_source(async move {
            discovery.run(token).await;
            Ok(())
        });
        reconciliation = Some(reconciler.report());
        let token = pipeline.shutdown_token();
        pipeline.spawn_source(async move {
            reconciler.run(token).await;
            Ok(())
        });
    }
    let admin = config.admin_token.clone().map(|token| {
        admin::router(Admin {
            token,
            outbox: pipeline.outbox.clone(),
            journal: pipeline.journal.clone(),
            controls: pipeline.controls.clone(),
            endpoints: Arc::new(
                config
                    .endpoints
                    .iter()
                    .map(|e| AdminEndpoint {
                        config: e.clone(),
                        url_shown: redact_url(&e.url),
                    })
                    .collect(),
            ),
            reconciliation,
            shutdown: pipeline.shutdown_token(),
            leadership: leadership.clone(),
            shared_dead_letters: config.redis.clone(),
        })
    });
    if admin.is_some() {
        tracing::info!("admin API on /admin/v1/ and console on /, behind ADMIN_TOKEN");
    }
    let extra = match (admin, events_api.routes.take()) {
        (Some(admin), Some(api)) => Some(admin.merge(api)),
        (admin, api) => admin.or(api),
    };
    pipeline.spawn_source({
        let outbox = pipeline.outbox.clone();
        let token = pipeline.shutdown_token();
        let token_for_status = config.admin_token.clone();
        let leadership = leadership.clone();
        async move {
            Ok(server::serve(listener, outbox, leadership, extra, token_for_status, token).await?)
        }
    });
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
    if let Some(background) = redis_background {
        background.finish().await;
    }
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
