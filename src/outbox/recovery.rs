//! Running the store's work on the blocking pool, and recovering from I/O errors: a failed
//! write makes the outbox unwritable; the file is reopened and sources wait until writing works
//! again.

use super::store::Store;
use super::{Outbox, OutboxError};
use std::sync::Arc;

impl Outbox {
    /// Runs a write for a source: waits while the outbox cannot be written, and tries again
    /// after it recovered, so the source does not read on meanwhile. Fails only when stopping.
    pub(super) async fn write_waiting<T: Send + 'static>(
        &self,
        write: impl Fn(&Store) -> Result<T, OutboxError> + Send + Sync + 'static,
    ) -> Result<T, OutboxError> {
        let write = Arc::new(write);
        loop {
            self.writability.until_writable().await?;
            let write = write.clone();
            let result = self.on_blocking_pool(move |store| write(store)).await?;
            match self.writability.note_write(result) {
                Err(OutboxError::Unwritable { .. }) => continue,
                other => return other,
            }
        }
    }

    /// Runs a read on the blocking pool; an I/O error turns the outbox unwritable.
    pub(super) async fn read<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Store) -> Result<T, OutboxError> + Send + 'static,
    ) -> Result<T, OutboxError> {
        let result = self.on_blocking_pool(op).await?;
        self.writability.note_read(result)
    }

    /// Runs a write without waiting; its success makes a failing outbox writable again.
    pub(super) async fn write<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Store) -> Result<T, OutboxError> + Send + 'static,
    ) -> Result<T, OutboxError> {
        let result = self.on_blocking_pool(op).await?;
        self.writability.note_write(result)
    }

    /// Runs `op` on the blocking pool. The outer error is the task's (it panicked), the inner
    /// one the store's, which the callers show to [`super::writability::Writability`].
    async fn on_blocking_pool<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Store) -> Result<T, OutboxError> + Send + 'static,
    ) -> Result<Result<T, OutboxError>, OutboxError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || op(&store))
            .await
            .map_err(OutboxError::task)
    }

    /// After an I/O error: reopens the file, so reads and deliveries work again, and lets
    /// waiting sources try again; the first write that succeeds makes the outbox writable.
    /// Does nothing while the outbox is writable.
    async fn recover(&self) {
        if !self.writability.failed() {
            return;
        }
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.reopen()).await {
            Ok(Ok(())) => {
                // With no source waiting, a tiny write of our own tells when the disk works.
                if self.writability.reopened() {
                    let _ = self.write(|store| store.probe_write()).await;
                }
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "the outbox still cannot be written"),
            Err(e) => tracing::warn!(error = %e, "reopening the outbox failed"),
        }
    }

    /// Reopens the file soon after every I/O error (and once a second while failing) until
    /// `shutdown`; the pipeline runs this next to the dispatchers.
    pub async fn keep_recovering(&self, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = self.writability.reopen_wanted() => {}
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                _ = shutdown.cancelled() => return,
            }
            self.recover().await;
            // Errors from operations that raced the reopen need no second one at once.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Sources waiting for the disk give up: the service is stopping.
    pub fn stop_waiting(&self) {
        self.writability.stop_waiting();
    }
}
