//! Reconciliation, built from its settings: orchestrator discovery through Nomad and the
//! reconciler comparing the orchestrators with what the events said, both on the pipeline.

use super::Pipeline;
use super::sources::SharedStream;
use crate::config::{ConfigError, NomadConfig, ReconcileConfig};
use crate::reconcile::{ReconcileReport, Reconciler};
use crate::source::nomad::OrchestratorDiscovery;
use tokio::sync::watch;
use uuid::Uuid;

/// Starts discovery and the reconciler for the sandboxes of `teams`; with Redis (`stream`),
/// only while the stream is read and caught up, through the stream and its shared view.
/// Returns what reconciliation last did.
pub fn start(
    nomad: &NomadConfig,
    config: &ReconcileConfig,
    teams: Vec<Uuid>,
    stream: Option<SharedStream>,
    pipeline: &mut Pipeline,
) -> anyhow::Result<watch::Receiver<ReconcileReport>> {
    let (outbox, metrics) = (pipeline.outbox.clone(), pipeline.outbox.metrics().clone());
    metrics.prepare_source(crate::reconcile::SOURCE);
    metrics.prepare_reconcile();
    let discovery = OrchestratorDiscovery::new(
        nomad,
        config.discovery_settings(),
        metrics.clone(),
        outbox.clone(),
    )
    .map_err(|e| ConfigError::new("NOMAD_* settings", e.to_string()))?;
    let mut settings = config.reconcile_settings(teams);
    settings.leadership = pipeline.leadership.clone();
    settings.stream = stream.as_ref().map(|s| s.progress.clone());
    let mut reconciler = Reconciler::new(outbox, metrics, discovery.orchestrators(), settings);
    if let Some(stream) = stream {
        reconciler = reconciler.with_shared(stream.intake, stream.view);
    }
    let report = reconciler.report();
    let token = pipeline.shutdown_token();
    pipeline.spawn_source(async move {
        discovery.run(token).await;
        Ok(())
    });
    let token = pipeline.shutdown_token();
    pipeline.spawn_source(async move {
        reconciler.run(token).await;
        Ok(())
    });
    Ok(report)
}
