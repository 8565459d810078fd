//! Running the store's work on the blocking pool (or, for a read of a few rows, on the caller's
//! thread), and recovering from I/O errors: a failed write makes the outbox unwritable; the file
//! is reopened and sources wait until writing works again.

use super::store::Store;
use super::{AppendReport, FromStream, Outbox, OutboxError};
use crate::event::SandboxEvent;
use crate::util::panic::catch_quietly;
use std::future::Future;
use std::sync::Arc;

/// A read that can return at most this many rows runs on the caller's thread (see
/// [`Outbox::read_small`]): the live set in memory, and at most that many records read from
/// the log's segments through the page cache.
pub(super) const READ_HERE_ROWS: usize = 64;

impl Outbox {
    /// Runs a write for a source on the blocking pool: see [`Self::until_written`].
    pub(super) async fn write_waiting<T: Send + 'static>(
        &self,
        write: impl Fn(&Store) -> Result<T, OutboxError> + Send + Sync + 'static,
    ) -> Result<T, OutboxError> {
        let write = Arc::new(write);
        self.until_written(|| {
            let write = write.clone();
            async move { self.on_blocking_pool(move |store| write(store)).await? }
        })
        .await
    }

    /// Appends for a source on its own task, awaiting the commit (see [`Store::append`]); see
    /// [`Self::until_written`].
    pub(super) async fn append_waiting(
        &self,
        source: &str,
        events: &[SandboxEvent],
        from: Option<&[FromStream]>,
    ) -> Result<AppendReport, OutboxError> {
        self.until_written(|| self.store.append(source, events, from))
            .await
    }

    /// Runs `attempt` for a source: waits while the outbox cannot be written, and tries again
    /// after it recovered, so the source does not read on meanwhile. Fails only when stopping.
    async fn until_written<T, F: Future<Output = Result<T, OutboxError>>>(
        &self,
        mut attempt: impl FnMut() -> F,
    ) -> Result<T, OutboxError> {
        loop {
            self.writability.until_writable().await?;
            match self.writability.note_write(attempt().await) {
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

    /// Runs a read that returns at most `rows` rows. While the outbox is healthy and `rows` is at
    /// most [`READ_HERE_ROWS`], it runs on the caller's thread: a lookup in the live set and a
    /// few records read through the page cache cost less than the blocking pool's hand-off and
    /// wake-up there and back, which the dispatcher and the stream intake otherwise pay for every
    /// append (BENCHMARKS.md, issue 17, fourth round). Larger reads, and every read while the outbox is failing (when the
    /// file may be being reopened, which a read would wait for), go to the blocking pool.
    pub(super) async fn read_small<T: Send + 'static>(
        &self,
        rows: usize,
        op: impl FnOnce(&Store) -> Result<T, OutboxError> + Send + 'static,
    ) -> Result<T, OutboxError> {
        if rows > READ_HERE_ROWS || self.writability.failed() {
            return self.read(op).await;
        }
        let result = catch_quietly(|| op(&self.store)).map_err(OutboxError::Task)?;
        self.writability.note_read(result)
    }

    /// Runs a write without waiting; its success makes a failing outbox writable again, unless
    /// the log is out of room for new events (see [`Store::refuse_if_out_of_room`]).
    pub(super) async fn write<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Store) -> Result<T, OutboxError> + Send + 'static,
    ) -> Result<T, OutboxError> {
        let result = self.on_blocking_pool(op).await?;
        self.note_write(result)
    }

    /// Shows a write's result to [`super::writability::Writability`] (see [`Self::write`]).
    pub(super) fn note_write<T>(&self, result: Result<T, OutboxError>) -> Result<T, OutboxError> {
        if self.store.out_of_room().is_some() {
            return self.writability.note_read(result);
        }
        self.writability.note_write(result)
    }

    /// Gives old log segments back when a round is due, on the blocking pool (a round copies
    /// events forward and writes a snapshot).
    pub(super) async fn give_back_segments_when_due(&self) {
        if self.store.compaction_due() {
            let store = self.store.clone();
            // A panic in the round is the task's; the next round tries again.
            let _ = tokio::task::spawn_blocking(move || store.give_back_segments()).await;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventFilter, SandboxEvent};
    use crate::metrics::Metrics;
    use crate::outbox::{FileSharing, Route};
    use std::thread::{self, ThreadId};

    fn outbox(dir: &std::path::Path) -> Outbox {
        let routes = vec![Route {
            endpoint: "default".into(),
            filter: EventFilter::parse("*").unwrap(),
        }];
        Outbox::open(
            dir,
            routes,
            Arc::new(Metrics::new()),
            false,
            FileSharing::WithReaders,
        )
        .unwrap()
    }

    fn events(n: usize) -> Vec<SandboxEvent> {
        (0..n)
            .map(|i| {
                let json = format!(
                    r#"{{"id":"e{i}","version":"v2","type":"sandbox.lifecycle.created","sandbox_id":"s{i}","sandbox_team_id":"00000000-0000-4000-8000-000000000001"}}"#
                );
                SandboxEvent::parse(json.as_bytes()).unwrap()
            })
            .collect()
    }

    async fn thread_of_read(outbox: &Outbox, rows: usize) -> ThreadId {
        outbox
            .read_small(rows, |_| Ok(thread::current().id()))
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn only_small_reads_of_a_healthy_outbox_run_on_the_callers_thread() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = outbox(dir.path());
        let here = thread::current().id();
        assert_eq!(thread_of_read(&outbox, READ_HERE_ROWS).await, here);
        assert_ne!(thread_of_read(&outbox, READ_HERE_ROWS + 1).await, here);
        // Failing: the file may be reopened under the read, so it waits on the pool.
        let failure = Err::<(), _>(OutboxError::Unwritable {
            reason: "test".into(),
            disk_full: false,
        });
        assert!(outbox.writability.note_read(failure).is_err());
        assert_ne!(thread_of_read(&outbox, 1).await, here);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panic_in_a_read_on_the_callers_thread_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = outbox(dir.path());
        let failed = outbox
            .read_small(1, |_| -> Result<(), OutboxError> { panic!("damaged page") })
            .await
            .unwrap_err();
        assert!(failed.to_string().contains("damaged page"), "{failed}");
        assert_eq!(
            outbox.pending_after("default", 0, 10).await.unwrap(),
            vec![]
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn pending_rows_read_here_or_on_the_pool_are_the_same_rows() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = outbox(dir.path());
        outbox.append("test", events(100)).await.unwrap();
        let seqs = |rows: Vec<crate::outbox::PendingDelivery>| -> Vec<u64> {
            rows.iter().map(|r| r.seq).collect()
        };
        // 100 rows may follow 0 (the pool), 10 follow 90 (this thread).
        let all = seqs(outbox.pending_after("default", 0, 1000).await.unwrap());
        assert_eq!(all, (1..=100).collect::<Vec<u64>>());
        let tail = seqs(outbox.pending_after("default", 90, 1000).await.unwrap());
        assert_eq!(tail, (91..=100).collect::<Vec<u64>>());
        let limited = seqs(outbox.pending_after("default", 90, 3).await.unwrap());
        assert_eq!(limited, vec![91, 92, 93]);
    }
}
