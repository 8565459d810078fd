//! Wiring: the delivery pipeline (outbox + one dispatcher per endpoint) and the `run` service.

mod delivery_log;
mod events_api;
mod registered_webhooks;

use crate::admin::{self, Admin, AdminEndpoint};
use crate::config::{EndpointConfig, RunConfig};
use crate::deliver::control::EndpointControls;
use crate::deliver::dispatch::{Dispatcher, Oversight};
use crate::deliver::journal::{AttemptLog, DeliveryJournal};
use crate::deliver::retry::RetryPolicy;
use crate::leadership::Leadership;
use crate::metrics::Metrics;
use crate::outbox::{Outbox, OutboxStatus, Route};
use crate::server;
use crate::util::redact::redact_url;
use anyhow::Context;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long in-flight deliveries may finish after SIGTERM (Nomad's kill_timeout must be longer).
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(20);
/// How often the outbox gauges are refreshed.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(2);
/// How long delivered event ids are remembered, so a source re-sending them is harmless.
const DEDUP_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The outbox with a dispatcher per endpoint, plus any tasks (sources) attached to it.
pub struct Pipeline {
    /// The shared outbox.
    pub outbox: Outbox,
    /// Recent delivery attempts and their live feed.
    pub journal: Arc<DeliveryJournal>,
    /// Pause switches per endpoint.
    pub controls: Arc<EndpointControls>,
    /// Whether this instance delivers (always, without a lease).
    pub leadership: Leadership,
    shutdown: CancellationToken,
    dispatchers: JoinSet<anyhow::Result<()>>,
    sources: JoinSet<anyhow::Result<()>>,
}

impl Pipeline {
    /// Opens the outbox in `data_dir` and starts delivering to `endpoints`, alone (no lease).
    pub fn start(
        data_dir: &Path,
        endpoints: &[EndpointConfig],
        retry: &RetryPolicy,
        max_in_flight: usize,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        Self::start_with(
            data_dir,
            endpoints,
            retry,
            max_in_flight,
            metrics,
            Leadership::always_active(),
        )
    }

    /// Like [`Self::start`], delivering only while `leadership` allows; with a lease, dead
    /// letters go to the shared store in Redis.
    pub fn start_with(
        data_dir: &Path,
        endpoints: &[EndpointConfig],
        retry: &RetryPolicy,
        max_in_flight: usize,
        metrics: Arc<Metrics>,
        leadership: Leadership,
    ) -> anyhow::Result<Self> {
        let routes = endpoints.iter().map(Route::from).collect();
        let shared = !leadership.view().me.is_empty();
        let outbox = Outbox::open(data_dir, routes, metrics.clone(), shared)?;
        let shutdown = CancellationToken::new();
        let journal = Arc::new(
            DeliveryJournal::persisted(&AttemptLog::new(data_dir)).unwrap_or_else(|error| {
                tracing::warn!(dir = %data_dir.display(), %error, "cannot keep the delivery attempt log in the data directory; recent deliveries are kept in memory only");
                DeliveryJournal::new()
            }),
        );
        let controls = Arc::new(EndpointControls::new(
            endpoints.iter().map(|e| e.id.as_str()),
        ));
        restore_pauses(&outbox, &controls)?;
        let mut dispatchers = JoinSet::new();
        for endpoint in endpoints {
            metrics.prepare_endpoint(&endpoint.id);
            tracing::info!(endpoint = %endpoint.id, url = %redact_url(&endpoint.url), format = %endpoint.format, events = %endpoint.events, "delivering");
            let dispatcher = Dispatcher::new(
                endpoint.clone(),
                outbox.clone(),
                retry.clone(),
                max_in_flight,
                Oversight {
                    journal: journal.clone(),
                    paused: controls.watch(&endpoint.id)?,
                },
                leadership.clone(),
            )?;
            let token = shutdown.clone();
            dispatchers.spawn(async move { Ok(dispatcher.run(token, DRAIN_DEADLINE).await?) });
        }
        let mut sources = JoinSet::new();
        sources.spawn(housekeeping(outbox.clone(), shutdown.clone()));
        sources.spawn({
            let (outbox, shutdown) = (outbox.clone(), shutdown.clone());
            async move {
                outbox.keep_recovering(shutdown).await;
                Ok(())
            }
        });
        Ok(Self {
            outbox,
            journal,
            controls,
            leadership,
            shutdown,
            dispatchers,
            sources,
        })
    }

    /// A token cancelled when the pipeline stops; sources watch it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs a source (or any task) until the pipeline stops.
    pub fn spawn_source(
        &mut self,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        self.sources.spawn(task);
    }

    /// Waits for the first task failure, if any comes before `until` resolves.
    pub async fn run_until(&mut self, until: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(until);
        loop {
            tokio::select! {
                _ = &mut until => return Ok(()),
                Some(done) = self.sources.join_next() => flatten(done).context("a source stopped")?,
                Some(done) = self.dispatchers.join_next() => {
                    flatten(done).context("a dispatcher stopped")?;
                    anyhow::bail!("a dispatcher stopped unexpectedly");
                }
            }
        }
    }

    /// Waits until nothing is pending for any endpoint.
    pub async fn until_idle(&mut self, progress: impl FnMut(&OutboxStatus)) -> anyhow::Result<()> {
        let idle = wait_idle(self.outbox.clone(), progress);
        self.run_until(idle).await
    }

    /// Like [`Self::until_idle`], but also returns (with `true`) on SIGTERM or SIGINT.
    pub async fn run_until_idle_or_signal(
        &mut self,
        progress: impl FnMut(&OutboxStatus),
    ) -> anyhow::Result<bool> {
        let outbox = self.outbox.clone();
        let idle = wait_idle(outbox, progress);
        let stopped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stopped.clone();
        let either = async move {
            tokio::select! {
                _ = idle => {}
                _ = shutdown_signal() => flag.store(true, std::sync::atomic::Ordering::Relaxed),
            }
        };
        self.run_until(either).await?;
        Ok(stopped.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Stops sources, drains deliveries up to the deadline, and makes everything durable.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.outbox.stop_waiting();
        let mut first_error = None;
        while let Some(done) = self.sources.join_next().await {
            if let Err(e) = flatten(done) {
                first_error.get_or_insert(e);
            }
        }
        while let Some(done) = self.dispatchers.join_next().await {
            if let Err(e) = flatten(done) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Endpoints an operator paused stay paused across restarts, until resumed.
fn restore_pauses(outbox: &Outbox, controls: &EndpointControls) -> anyhow::Result<()> {
    let Some(saved) = outbox.load_state_now(crate::deliver::control::STATE_KEY)? else {
        return Ok(());
    };
    let paused: Vec<String> = serde_json::from_slice(&saved).unwrap_or_default();
    for endpoint in paused {
        if controls.set_paused(&endpoint, true).is_ok() {
            tracing::warn!(
                endpoint,
                "endpoint paused by an operator: its events wait in the outbox until it is resumed (admin API or console)"
            );
        }
    }
    Ok(())
}

async fn wait_idle(outbox: Outbox, mut progress: impl FnMut(&OutboxStatus)) {
    loop {
        match outbox.status().await {
            Ok(status) => {
                progress(&status);
                if status.pending() == 0 {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read outbox status"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn flatten(done: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    done.map_err(|e| anyhow::anyhow!("task failed: {e}"))?
}

/// Refreshes backlog gauges and forgets old event ids. A failing outbox is a state reported on
/// `/readyz` (and recovered by `Outbox::keep_recovering`), never a reason to stop.
async fn housekeeping(outbox: Outbox, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(HOUSEKEEPING_EVERY);
    let mut last_prune = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
        let status = match outbox.status().await {
            Ok(status) => status,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the outbox's backlog");
                continue;
            }
        };
        let now = jiff::Timestamp::now().as_millisecond();
        for backlog in &status.endpoints {
            let age = backlog
                .oldest_appended_at_ms
                .map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
            outbox
                .metrics()
                .set_outbox(&backlog.endpoint, backlog.depth, age);
        }
        if last_prune.elapsed() > Duration::from_secs(600) {
            last_prune = tokio::time::Instant::now();
            match outbox.prune_event_ids(DEDUP_WINDOW).await {
                Ok(removed) => tracing::debug!(removed, "forgot old event ids"),
                Err(e) => tracing::warn!(error = %e, "cannot forget old event ids; trying later"),
            }
        }
    }
}

/// Runs the service until SIGTERM or SIGINT; a second signal exits at once.
pub async fn run(config: RunConfig) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
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
        None => Leadership::always_active(),
    };
    let mut pipeline = Pipeline::start_with(
        &config.data_dir,
        &config.endpoints,
        &config.retry,
        config.max_in_flight,
        metrics.clone(),
        leadership.clone(),
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
