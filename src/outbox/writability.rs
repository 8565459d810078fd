//! Whether the outbox can be written: a state, not an exit.
//!
//! On a full disk or another I/O error the outbox stays up: sources wait before their next write
//! (so they stop reading, and nothing more is acknowledged), deliveries go on (so the backlog can
//! shrink), `/readyz` answers 503 naming the cause, and the file is reopened until a write
//! succeeds again — then sources resume by themselves.

use super::OutboxError;
use crate::metrics::Metrics;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The readiness component this reports to.
const COMPONENT: &str = "outbox";

/// Waiting writers try again at most this often while the outbox is failing, so that between
/// their tries the dispatcher can record deliveries (which may free pages in the file).
const WRITER_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq)]
enum State {
    Writable,
    Failed {
        reason: String,
        disk_full: bool,
        since: Instant,
        /// Bumped when waiting writers may try once more (the file was reopened).
        retry: u64,
        last_retry: Instant,
    },
}

/// Shared by every clone of one outbox.
pub(super) struct Writability {
    state: watch::Sender<State>,
    /// Woken by every I/O error: the file should be reopened soon.
    reopen_wanted: tokio::sync::Notify,
    stopping: CancellationToken,
    metrics: Arc<Metrics>,
    path: PathBuf,
}

impl Writability {
    pub(super) fn new(metrics: Arc<Metrics>, path: PathBuf) -> Self {
        Self {
            state: watch::channel(State::Writable).0,
            reopen_wanted: tokio::sync::Notify::new(),
            stopping: CancellationToken::new(),
            metrics,
            path,
        }
    }

    /// Whether writes currently fail.
    pub(super) fn failed(&self) -> bool {
        matches!(*self.state.borrow(), State::Failed { .. })
    }

    /// Passes a read's `result` through; an `Unwritable` error turns the outbox unwritable.
    pub(super) fn note_read<T>(&self, result: Result<T, OutboxError>) -> Result<T, OutboxError> {
        if let Err(OutboxError::Unwritable { reason, disk_full }) = &result {
            self.fail(reason, *disk_full);
            self.reopen_wanted.notify_one();
        }
        result
    }

    /// Resolves after the next I/O error (or at once if one happened since the last call).
    pub(super) async fn reopen_wanted(&self) {
        self.reopen_wanted.notified().await;
    }

    /// Like [`Self::note_read`]; a durable write that worked also proves the outbox writable.
    pub(super) fn note_write<T>(&self, result: Result<T, OutboxError>) -> Result<T, OutboxError> {
        if result.is_ok() && self.failed() {
            self.recovered();
        }
        self.note_read(result)
    }

    /// The file was reopened: waiting writers may try again (not more often than every few
    /// seconds; returns whether this is such a round). Their first success makes the outbox
    /// writable.
    pub(super) fn reopened(&self) -> bool {
        self.state.send_if_modified(|state| match state {
            State::Failed {
                retry, last_retry, ..
            } if last_retry.elapsed() >= WRITER_RETRY => {
                *retry += 1;
                *last_retry = Instant::now();
                true
            }
            _ => false,
        })
    }

    fn fail(&self, reason: &str, disk_full: bool) {
        let changed = self.state.send_if_modified(|state| match state {
            State::Writable => {
                *state = State::Failed {
                    reason: reason.to_owned(),
                    disk_full,
                    since: Instant::now(),
                    retry: 0,
                    last_retry: Instant::now(),
                };
                true
            }
            // The first error seen may be a read that found the file closed ("previous I/O
            // error") while the write that failed reports the cause; the cause wins.
            State::Failed {
                reason: known,
                disk_full: known_full @ false,
                ..
            } if disk_full => {
                *known = reason.to_owned();
                *known_full = true;
                true
            }
            State::Failed { .. } => false,
        });
        if changed {
            let summary = if disk_full {
                "disk full"
            } else {
                "cannot write"
            };
            tracing::error!(
                path = %self.path.display(),
                error = reason,
                "the outbox cannot be written: sources pause (nothing more is read or acknowledged), deliveries go on; retrying until it can"
            );
            self.metrics.set_component_with_summary(
                COMPONENT,
                false,
                summary,
                format!("{summary}: {reason} ({})", self.path.display()),
            );
        }
    }

    /// The file works again.
    pub(super) fn recovered(&self) {
        let previous = self.state.send_replace(State::Writable);
        if let State::Failed { since, .. } = previous {
            tracing::info!(
                path = %self.path.display(),
                after_s = since.elapsed().as_secs(),
                "the outbox can be written again; sources resume"
            );
        }
        self.metrics.set_component(
            COMPONENT,
            true,
            format!("writable at {}", self.path.display()),
        );
    }

    /// Waits until the outbox is writable, or may be tried again after a reopen; fails once
    /// [`Self::stop_waiting`] was called.
    pub(super) async fn until_writable(&self) -> Result<(), OutboxError> {
        let mut state = self.state.subscribe();
        let mut seen_retry = None;
        loop {
            match &*state.borrow_and_update() {
                State::Writable => return Ok(()),
                State::Failed {
                    reason, disk_full, ..
                } if self.stopping.is_cancelled() => {
                    return Err(OutboxError::Unwritable {
                        reason: format!("stopped while unwritable: {reason}"),
                        disk_full: *disk_full,
                    });
                }
                State::Failed { retry, .. } => match seen_retry {
                    Some(seen) if seen != *retry => return Ok(()),
                    _ => seen_retry = Some(*retry),
                },
            }
            tokio::select! {
                _ = state.changed() => {}
                _ = self.stopping.cancelled() => {}
            }
        }
    }

    /// Writers waiting for the disk give up (the service is stopping).
    pub(super) fn stop_waiting(&self) {
        self.stopping.cancel();
    }
}
