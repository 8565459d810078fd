//! Operator switches per endpoint: a paused endpoint's dispatcher starts no new attempt (in-flight
//! ones finish); its events wait in the outbox, nothing is dropped.

use std::collections::BTreeMap;
use tokio::sync::watch;

/// Outbox state key of the paused endpoints, so that a pause outlives a restart or a deploy.
pub const STATE_KEY: &str = "admin.paused";

/// The endpoint id is not configured.
#[derive(Debug, thiserror::Error)]
#[error("no endpoint {0:?} is configured")]
pub struct UnknownEndpoint(pub String);

/// Pause switches of every configured endpoint.
pub struct EndpointControls {
    paused: BTreeMap<String, watch::Sender<bool>>,
}

impl EndpointControls {
    /// Every endpoint running.
    pub fn new<'a>(endpoints: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            paused: endpoints
                .into_iter()
                .map(|id| (id.to_owned(), watch::channel(false).0))
                .collect(),
        }
    }

    /// What the dispatcher of `endpoint` watches.
    pub fn watch(&self, endpoint: &str) -> Result<watch::Receiver<bool>, UnknownEndpoint> {
        self.paused
            .get(endpoint)
            .map(watch::Sender::subscribe)
            .ok_or_else(|| UnknownEndpoint(endpoint.to_owned()))
    }

    /// Pauses or resumes `endpoint`; returns whether that changed anything.
    pub fn set_paused(&self, endpoint: &str, paused: bool) -> Result<bool, UnknownEndpoint> {
        let switch = self
            .paused
            .get(endpoint)
            .ok_or_else(|| UnknownEndpoint(endpoint.to_owned()))?;
        Ok(switch.send_if_modified(|now| std::mem::replace(now, paused) != paused))
    }

    /// The paused endpoints, to be saved under [`STATE_KEY`].
    pub fn paused(&self) -> Vec<String> {
        self.paused
            .iter()
            .filter(|(_, s)| *s.borrow())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Whether `endpoint` is paused (false for an unknown one).
    pub fn is_paused(&self, endpoint: &str) -> bool {
        self.paused.get(endpoint).is_some_and(|s| *s.borrow())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pausing_reports_changes_and_wakes_watchers() {
        let controls = EndpointControls::new(["a", "b"]);
        let mut watcher = controls.watch("a").unwrap();
        assert!(controls.set_paused("a", true).unwrap());
        assert!(watcher.has_changed().unwrap());
        assert!(*watcher.borrow_and_update());
        assert!(!controls.set_paused("a", true).unwrap(), "already paused");
        assert!(controls.is_paused("a") && !controls.is_paused("b"));
        assert_eq!(controls.paused(), ["a"]);
        assert!(controls.set_paused("zzz", true).is_err());
    }
}
