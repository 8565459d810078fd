//! The entrances for events that do not come from the orchestrator's stream: the reconciler's
//! synthesized events and `backfill`, and the view of sandboxes the reconciler compares with
//! the orchestrators.
//!
//! Alone (the file source, `demo`) both are this outbox. With Redis they are in Redis
//! (`source::redis::StreamIntake`, `source::redis::SharedSandboxView`): events are appended to
//! the stream, so they reach the shared record of undelivered work — the consumer group's
//! pending list — that survives the loss of a node, and the view is the one every instance sees,
//! so an instance that takes over compares the orchestrators with what all instances read.

use super::{MalformedInput, Outbox, OutboxError, SandboxRecord};
use crate::event::SandboxEvent;
use futures_util::future::BoxFuture;

/// Why events could not be taken in, or the view not read.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The local outbox failed.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// Redis failed or refused.
    #[error("{0}")]
    Shared(String),
}

/// A durable entrance for events.
pub trait EventIntake: Send + Sync {
    /// Durably takes `events` in, `source` naming where they came from; returns, per event,
    /// whether it was new (true where only the reader of the stream will know).
    fn submit(
        &self,
        source: &'static str,
        events: Vec<SandboxEvent>,
    ) -> BoxFuture<'_, Result<Vec<bool>, IntakeError>>;

    /// As [`Self::submit`], for a caller that decided what to submit while it held the leader
    /// lease with value `lease`: refused unless the lease still has that value when the events
    /// are written (checked atomically with the write), so a decision made before a takeover
    /// is never written after it. An intake without a lease (this outbox) takes them as
    /// `submit` does.
    fn submit_under_lease(
        &self,
        source: &'static str,
        events: Vec<SandboxEvent>,
        lease: Option<String>,
    ) -> BoxFuture<'_, Result<Vec<bool>, IntakeError>> {
        let _ = lease;
        self.submit(source, events)
    }

    /// Durably keeps inputs that are not events, for an operator.
    fn set_aside(&self, inputs: Vec<MalformedInput>) -> BoxFuture<'_, Result<(), IntakeError>>;
}

/// The sandboxes the events say are running or paused.
pub trait SandboxView: Send + Sync {
    /// Every sandbox believed running or paused.
    fn sandboxes(&self) -> BoxFuture<'_, Result<Vec<SandboxRecord>, IntakeError>>;
}

impl EventIntake for Outbox {
    fn submit(
        &self,
        source: &'static str,
        events: Vec<SandboxEvent>,
    ) -> BoxFuture<'_, Result<Vec<bool>, IntakeError>> {
        Box::pin(async move { Ok(self.append(source, events).await?.is_new) })
    }

    fn set_aside(&self, inputs: Vec<MalformedInput>) -> BoxFuture<'_, Result<(), IntakeError>> {
        Box::pin(async move { Ok(Outbox::set_aside(self, inputs, Vec::new()).await?) })
    }
}

impl SandboxView for Outbox {
    fn sandboxes(&self) -> BoxFuture<'_, Result<Vec<SandboxRecord>, IntakeError>> {
        Box::pin(async move { Ok(Outbox::sandboxes(self).await?) })
    }
}
