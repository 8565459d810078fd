//! Readiness that other parts decide on: each component's state ([`Readiness`], read by
//! `/readyz`) and the stream's progress (a typed value on a `watch` channel). Metrics only
//! observe them; nothing reads a metric to decide.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Whether one component (a source, the outbox) is working, and why not.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ComponentState {
    /// Ready to do its job.
    pub ready: bool,
    /// A short human explanation (may name addresses: shown with the admin token only).
    pub detail: String,
    /// A fixed reason that names no address or identifier, shown to anyone.
    #[serde(skip)]
    pub summary: &'static str,
}

/// Told of every report, as `(component, ready)`: how metrics follow readiness.
type Observer = Arc<dyn Fn(&'static str, bool) + Send + Sync>;

/// The readiness of every component, as the components report it. Cloning shares it.
#[derive(Clone)]
pub struct Readiness {
    components: Arc<Mutex<BTreeMap<&'static str, ComponentState>>>,
    observer: Option<Observer>,
}

impl Readiness {
    /// Readiness whose every report `observer` is also told of (the metrics' gauges).
    pub fn observed_by(observer: impl Fn(&'static str, bool) + Send + Sync + 'static) -> Self {
        Self {
            components: Arc::default(),
            observer: Some(Arc::new(observer)),
        }
    }

    /// Records whether `name` is ready, with a fixed reason anyone may read (`"disk full"`)
    /// and a `detail` for the operator.
    pub fn report(
        &self,
        name: &'static str,
        ready: bool,
        summary: &'static str,
        detail: impl Into<String>,
    ) {
        let state = ComponentState {
            ready,
            detail: detail.into(),
            summary,
        };
        self.components
            .lock()
            .expect("readiness lock poisoned")
            .insert(name, state);
        if let Some(observer) = &self.observer {
            observer(name, ready);
        }
    }

    /// Like [`Self::report`], with the summary `ready` or `not ready`.
    pub fn set(&self, name: &'static str, ready: bool, detail: impl Into<String>) {
        let summary = if ready { "ready" } else { "not ready" };
        self.report(name, ready, summary, detail);
    }

    /// Every component's state.
    pub fn components(&self) -> BTreeMap<&'static str, ComponentState> {
        self.components
            .lock()
            .expect("readiness lock poisoned")
            .clone()
    }
}

/// Where the Redis source is with the stream. The reconciler synthesizes nothing unless the
/// source reads and has caught up: an event still in the stream could contradict what it sees.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StreamProgress {
    /// The source has not started.
    #[default]
    Starting,
    /// It cannot read now, and why.
    NotReady(String),
    /// It reads; `lag` is what the group has not been handed yet (unknown before Redis 7).
    Reading {
        /// Entries behind, when Redis reports it.
        lag: Option<u64>,
    },
}

impl StreamProgress {
    /// Why the stream may still hold news, if it may.
    pub fn behind(&self) -> Option<String> {
        match self {
            Self::Starting => Some("waiting for the Redis source to start".into()),
            Self::NotReady(detail) => Some(format!("the Redis source is not ready: {detail}")),
            Self::Reading { lag: Some(lag) } if *lag > 0 => {
                Some("the Redis source is catching up (lag above 0)".into())
            }
            Self::Reading { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_report_is_kept_and_observed() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let readiness = Readiness::observed_by({
            let seen = seen.clone();
            move |name, ready| seen.lock().unwrap().push((name, ready))
        });
        readiness.set("redis", true, "consuming");
        assert!(readiness.components()["redis"].ready);
        readiness.report("outbox", false, "disk full", "no space left in /data");
        let outbox = &readiness.components()["outbox"];
        assert_eq!(
            (outbox.summary, outbox.detail.as_str()),
            ("disk full", "no space left in /data")
        );
        assert_eq!(*seen.lock().unwrap(), [("redis", true), ("outbox", false)]);
    }

    #[test]
    fn only_a_source_that_reads_without_lag_is_caught_up() {
        assert!(StreamProgress::Starting.behind().is_some());
        let down = StreamProgress::NotReady("connection refused".into()).behind();
        assert!(down.unwrap().contains("connection refused"));
        assert!(StreamProgress::Reading { lag: Some(7) }.behind().is_some());
        assert_eq!(StreamProgress::Reading { lag: Some(0) }.behind(), None);
        assert_eq!(StreamProgress::Reading { lag: None }.behind(), None);
    }
}
