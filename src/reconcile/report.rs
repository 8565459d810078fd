//! What reconciliation last did, published for operators (the admin API's reconciliation panel)
//! through a read-only watch handle.

use serde::Serialize;

/// One event reconciliation synthesized.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SynthesizedView {
    /// The sandbox.
    pub sandbox_id: String,
    /// `create`, `resume` or `kill`.
    pub label: String,
    /// `missed_create`, `missed_resume`, `orchestrator_lost` or `vanished`.
    pub reason: String,
}

/// The reconciler's state after its last run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReconcileReport {
    /// Always true: a report exists only where reconciliation is configured.
    pub enabled: bool,
    /// Running orchestrators, as `allocation (address)`.
    pub orchestrators: Vec<String>,
    /// Orchestrators that did not answer `List` last time, with the error.
    pub silent: Vec<String>,
    /// When the last run finished (ms since the epoch).
    pub last_run_at_ms: Option<i64>,
    /// `ok`, `skipped` or `error`.
    pub last_outcome: Option<&'static str>,
    /// Why runs are skipped right now, if they are.
    pub skip_reason: Option<String>,
    /// What the last run that found differences synthesized.
    pub last_findings: Vec<SynthesizedView>,
    /// When those were found (ms).
    pub last_findings_at_ms: Option<i64>,
}

impl Default for ReconcileReport {
    fn default() -> Self {
        Self {
            enabled: true,
            orchestrators: Vec::new(),
            silent: Vec::new(),
            last_run_at_ms: None,
            last_outcome: None,
            skip_reason: None,
            last_findings: Vec::new(),
            last_findings_at_ms: None,
        }
    }
}
