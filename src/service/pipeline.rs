//! The pipeline: the outbox with a dispatcher per endpoint, the sources and tasks attached to
//! it, and its housekeeping. Every source starts here, and only once sources may read.

use super::{DRAIN_DEADLINE, shutdown_signal};
use crate::deliver::control::EndpointControls;
use crate::deliver::dispatch::{Dispatcher, Oversight};
use crate::deliver::endpoint::EndpointConfig;
use crate::deliver::journal::{AttemptLog, DeliveryJournal};
use crate::deliver::retry::RetryPolicy;
use crate::leadership::Leadership;
use crate::metrics::Metrics;
use crate::outbox::{FileSharing, Outbox, OutboxStatus, Route};
use crate::source::Source;
use crate::util::redact::redact_url;
use anyhow::Context;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

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
    /// Cancelled once every dispatcher has stopped (after the drain).
    deliveries_done: CancellationToken,
    /// Tasks that outlive the deliveries (the delivery log's writer).
    followers: JoinSet<anyhow::Result<()>>,
    /// Resolves once sources may read (at once, unless [`Self::hold_sources_until`] says).
    sources_may_read: Shared<BoxFuture<'static, ()>>,
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
            FileSharing::WithReaders,
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
        sharing: FileSharing,
    ) -> anyhow::Result<Self> {
        let routes = endpoints.iter().map(Route::from).collect();
        let shared = !leadership.view().me.is_empty();
        let outbox = Outbox::open(data_dir, routes, metrics.clone(), shared, sharing)?;
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
            deliveries_done: CancellationToken::new(),
            followers: JoinSet::new(),
            sources_may_read: futures_util::future::ready(()).boxed().shared(),
        })
    }

    /// A token cancelled when the pipeline stops; sources watch it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Sources added from now on start reading only once `gate` resolves (the registered
    /// webhooks are known); until then their events wait where they are.
    pub fn hold_sources_until(&mut self, gate: impl Future<Output = ()> + Send + 'static) {
        self.sources_may_read = gate.boxed().shared();
    }

    /// Starts `source` once sources may read, with its metrics' series exported from now on;
    /// it stops when the pipeline does.
    pub fn add_source(&mut self, source: Box<dyn Source>) {
        self.outbox.metrics().prepare_source(source.name());
        let (may_read, token) = (self.sources_may_read.clone(), self.shutdown.clone());
        self.sources.spawn(async move {
            tokio::select! {
                () = may_read => {}
                () = token.cancelled() => return Ok(()),
            }
            source.run(token).await.map_err(anyhow::Error::from_boxed)
        });
    }

    /// Runs a task (a server, a watcher) until the pipeline stops.
    pub fn spawn_source(
        &mut self,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        self.sources.spawn(task);
    }

    /// Runs a task that follows the deliveries: at a stop it is given the token cancelled once
    /// every dispatcher has stopped (after the drain), and awaited after them.
    pub fn spawn_after_deliveries<F>(&mut self, task: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.followers.spawn(task(self.deliveries_done.clone()));
    }

    /// Waits for the first task failure, if any comes before `until` resolves.
    pub async fn run_until(&mut self, until: impl Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(until);
        loop {
            tokio::select! {
                _ = &mut until => return Ok(()),
                Some(done) = self.sources.join_next() => flatten(done).context("a source stopped")?,
                Some(done) = self.followers.join_next() => flatten(done).context("a task stopped")?,
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
        self.deliveries_done.cancel();
        while let Some(done) = self.followers.join_next().await {
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
    let mut last_reported: HashSet<String> = HashSet::new();
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
        let mut reported = HashSet::with_capacity(status.endpoints.len());
        for backlog in &status.endpoints {
            let age = backlog
                .oldest_appended_at_ms
                .map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
            outbox
                .metrics()
                .set_outbox(&backlog.endpoint, backlog.depth, age);
            reported.insert(backlog.endpoint.clone());
        }
        // The status lists a registered webhook only while it holds something: one that caught
        // up (or was deleted) loses its backlog series, not left at its last depth for an alert
        // to keep firing, nor kept at 0 for each of thousands of webhooks. A configured endpoint
        // keeps its series (at 0), as on the first scrape.
        for endpoint in last_reported.difference(&reported) {
            if endpoint.starts_with(crate::postgres::webhooks::ENDPOINT_PREFIX) {
                outbox.metrics().clear_outbox(endpoint);
            } else {
                outbox.metrics().set_outbox(endpoint, 0, 0.0);
            }
        }
        last_reported = reported;
        if last_prune.elapsed() > Duration::from_secs(600) {
            last_prune = tokio::time::Instant::now();
            match outbox.prune_event_ids(DEDUP_WINDOW).await {
                Ok(removed) => tracing::debug!(removed, "forgot old event ids"),
                Err(e) => tracing::warn!(error = %e, "cannot forget old event ids; trying later"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceError;
    use tokio::sync::{oneshot, watch};

    /// A source that only says it started.
    struct Starts(watch::Sender<bool>);

    #[async_trait::async_trait]
    impl Source for Starts {
        fn name(&self) -> &'static str {
            "file"
        }

        async fn run(self: Box<Self>, _shutdown: CancellationToken) -> Result<(), SourceError> {
            self.0.send_replace(true);
            Ok(())
        }
    }

    fn pipeline(dir: &Path) -> Pipeline {
        let metrics = Arc::new(Metrics::new());
        Pipeline::start(dir, &[], &RetryPolicy::default(), 1, metrics).unwrap()
    }

    #[tokio::test]
    async fn a_source_starts_only_once_sources_may_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut pipeline = pipeline(dir.path());
        let (open, gate) = oneshot::channel::<()>();
        pipeline.hold_sources_until(async {
            let _ = gate.await;
        });
        let (started, mut seen) = watch::channel(false);
        pipeline.add_source(Box::new(Starts(started)));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !*seen.borrow(),
            "the source started before sources may read"
        );
        open.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), seen.wait_for(|s| *s))
            .await
            .expect("the source starts once the gate opens")
            .unwrap();
        pipeline.stop().await.unwrap();
    }

    #[tokio::test]
    async fn a_source_still_waiting_stops_with_the_pipeline_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        let mut pipeline = pipeline(dir.path());
        pipeline.hold_sources_until(std::future::pending());
        let (started, seen) = watch::channel(false);
        pipeline.add_source(Box::new(Starts(started)));
        tokio::time::timeout(Duration::from_secs(10), pipeline.stop())
            .await
            .expect("the pipeline stops although the gate never opened")
            .unwrap();
        assert!(!*seen.borrow());
    }

    #[tokio::test]
    async fn without_a_gate_a_source_starts_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut pipeline = pipeline(dir.path());
        let (started, mut seen) = watch::channel(false);
        pipeline.add_source(Box::new(Starts(started)));
        tokio::time::timeout(Duration::from_secs(5), seen.wait_for(|s| *s))
            .await
            .expect("the source starts")
            .unwrap();
        pipeline.stop().await.unwrap();
    }
}
