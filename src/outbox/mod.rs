//! The durable outbox: events are committed to an appending log of segments (`log/`, one
//! `fdatasync` per group commit) before their source is acknowledged, and stay on disk, not in
//! memory, until every endpoint has them or they are dead-lettered; the live set in memory says
//! where each is. Dead letters and source positions, written rarely, are kept in redb.

mod after_append;
mod append;
mod commit;
mod compaction;
mod dead_letters;
mod delivery;
mod entry_index;
mod error;
mod intake;
mod journal;
mod known_sandboxes;
mod live;
mod live_keys;
mod log;
mod migrate;
mod offline;
mod open;
mod pending_deliveries;
mod raw_input;
mod recent;
mod recent_ids;
mod records;
mod recovery;
mod route_table;
mod seq_map;
mod status;
mod store;
mod stream_acks;
mod writability;

pub use intake::{EventIntake, IntakeError, SandboxView};
pub use offline::{OutboxReader, move_aside, replay_dead_letters};
pub use open::{FileSharing, MovedAside};
pub use raw_input::RawInput;

pub use append::AppendReport;
pub use dead_letters::ReplayReport;
pub use delivery::Completion;
pub use error::OutboxError;
pub use records::{
    DeadLetter, DeliveryState, FromStream, MalformedInput, PendingDelivery, ReplayTarget,
    SandboxRecord, SandboxState, StoredEvent, StreamEntryRef,
};
pub use status::{EndpointBacklog, OutboxStatus};
pub use stream_acks::StreamSync;

use crate::event::{EventFilter, SandboxEvent};
use crate::metrics::Metrics;
use dead_letters::select_dead_letters;
use recent::{RECENT_EVENTS, RecentEvents};
use std::path::Path;
use std::sync::Arc;
use store::Store;
use tokio::sync::{Notify, watch};
use writability::Writability;

/// One endpoint as the outbox sees it: an id and the labels it wants.
#[derive(Debug, Clone)]
pub struct Route {
    /// Endpoint id.
    pub endpoint: String,
    /// Which events it receives.
    pub filter: EventFilter,
}

/// Handle to the outbox; cheap to clone, every clone shares one database.
#[derive(Clone)]
pub struct Outbox {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    appended: Arc<watch::Sender<u64>>,
    writability: Arc<Writability>,
    /// Woken when entries are finished and dead letters made, for the Redis side to sync.
    finished: Arc<Notify>,
    /// Where every newly received event is also sent (the lifecycle history), if anywhere.
    received: Arc<std::sync::OnceLock<tokio::sync::mpsc::Sender<SandboxEvent>>>,
    /// The newest appended events, so dispatchers need not read them back from disk.
    recent: Arc<RecentEvents>,
    /// Per endpoint, woken when it gets deliveries to make: an append wakes the dispatchers of
    /// the endpoints it routed to, not one per registered webhook.
    wakers: Arc<std::sync::Mutex<std::collections::HashMap<String, Arc<dyn EndpointWaker>>>>,
}

/// What an append of deliveries for an endpoint wakes: its running dispatcher (a `Notify`, its
/// permit kept until the dispatcher next waits), or what starts one when none runs.
pub trait EndpointWaker: Send + Sync {
    /// The endpoint has new deliveries to make. Called with the outbox's wakers locked: quick.
    fn wake(self: Arc<Self>);
}

impl EndpointWaker for Notify {
    fn wake(self: Arc<Self>) {
        self.notify_one();
    }
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir` for writing; fails if another process holds it.
    ///
    /// With `shared_dead_letters`, dead letters are handed to the Redis side ([`Self::stream_sync`])
    /// and kept here only until they are copied. `sharing` says whether other processes may read
    /// the file meanwhile.
    pub fn open(
        dir: &Path,
        routes: Vec<Route>,
        metrics: Arc<Metrics>,
        shared_dead_letters: bool,
        sharing: FileSharing,
    ) -> Result<Self, OutboxError> {
        let store = Store::open(dir, routes, shared_dead_letters, sharing)?;
        let last = store.last_seq()?;
        let writability = Writability::new(metrics.clone(), open::database_path(dir));
        writability.recovered();
        Ok(Self {
            store: Arc::new(store),
            metrics,
            appended: Arc::new(watch::channel(last).0),
            writability: Arc::new(writability),
            finished: Arc::new(Notify::new()),
            received: Arc::default(),
            recent: Arc::new(RecentEvents::new(RECENT_EVENTS)),
            wakers: Arc::default(),
        })
    }

    /// Durably appends events (one fsync for the batch); ids already in the outbox are skipped.
    /// While the outbox cannot be written, waits (see `write_waiting`).
    ///
    /// Await it to the end: it is not cancel-safe. A future dropped while its commit is being
    /// written leaves the records on disk but not in the live set, and an append after that would
    /// reuse their sequence numbers. Every caller awaits it outside any `select!` or timeout (a
    /// source's loop stops between batches); the same holds for [`Self::append_from_stream`] and
    /// [`Self::complete`].
    pub async fn append(
        &self,
        source: &'static str,
        events: Vec<SandboxEvent>,
    ) -> Result<AppendReport, OutboxError> {
        let labels: Vec<String> = events
            .iter()
            .map(|e| e.lifecycle.label().to_owned())
            .collect();
        let copies = self.copies_for_history(events.iter());
        let report = self.append_waiting(source, &events, None).await?;
        let events = Arc::new(events);
        self.keep_recent(source, events, &report);
        self.after_append(source, &labels, &report);
        self.send_to_history(copies, &report);
        Ok(report)
    }

    /// Like [`Self::append`], for events read from a stream: each event remembers its entry,
    /// which is acknowledged only once the event is delivered or dead-lettered everywhere.
    pub async fn append_from_stream(
        &self,
        source: &'static str,
        events: Vec<(SandboxEvent, FromStream)>,
    ) -> Result<AppendReport, OutboxError> {
        let labels: Vec<String> = events
            .iter()
            .map(|(e, _)| e.lifecycle.label().to_owned())
            .collect();
        let (events, from): (Vec<_>, Vec<_>) = events.into_iter().unzip();
        let copies = self.copies_for_history(events.iter());
        let report = self.append_waiting(source, &events, Some(&from)).await?;
        let events = Arc::new(events);
        self.keep_recent(source, events, &report);
        self.after_append(source, &labels, &report);
        self.send_to_history(copies, &report);
        // Duplicates and events no endpoint wants are acknowledged at once.
        self.finished.notify_one();
        Ok(report)
    }

    /// Durably keeps malformed inputs in the dead-letter store, for an operator to inspect;
    /// `entries`, the stream entries they were read from, are then acknowledged. While the
    /// outbox cannot be written, waits.
    pub async fn set_aside(
        &self,
        inputs: Vec<MalformedInput>,
        entries: Vec<StreamEntryRef>,
    ) -> Result<(), OutboxError> {
        for input in &inputs {
            self.metrics.malformed_input(&input.source);
        }
        self.write_waiting(move |store| store.set_aside(&inputs, &entries))
            .await?;
        self.finished.notify_one();
        Ok(())
    }

    /// Queues stream entries that carry nothing to deliver for acknowledgement.
    pub async fn acknowledge(&self, entries: Vec<StreamEntryRef>) -> Result<(), OutboxError> {
        self.set_aside(Vec::new(), entries).await
    }

    /// Dead letters to copy to the shared store and entries to acknowledge, up to `limit` each.
    pub async fn stream_sync(&self, limit: usize) -> Result<StreamSync, OutboxError> {
        self.read(move |store| store.stream_sync(limit)).await
    }

    /// Records that the Redis side has done `done`.
    pub async fn stream_synced(&self, done: StreamSync) -> Result<(), OutboxError> {
        self.write(move |store| store.stream_synced(&done)).await
    }

    /// Resolves when entries may have been finished since the last call.
    pub async fn entries_finished(&self) {
        self.finished.notified().await;
    }

    /// For each `(event id, entry id)` about to be appended from a stream: whether it is news
    /// (a new event, or its own entry read again while still pending here).
    pub async fn stream_news(&self, read: Vec<(String, String)>) -> Result<Vec<bool>, OutboxError> {
        self.read_small(read.len(), move |store| store.stream_news(&read))
            .await
    }

    /// Stream entries whose events are still pending here.
    pub async fn live_entries(&self) -> Result<Vec<StreamEntryRef>, OutboxError> {
        self.read(|store| store.live_entries()).await
    }

    /// Drops the events of these entries without delivering them (another instance finished
    /// them); returns how many were here.
    pub async fn forget_entries(&self, entries: Vec<String>) -> Result<usize, OutboxError> {
        self.write(move |store| store.forget_entries(&entries))
            .await
    }

    /// Reads a source's saved state (stream positions, reconciler memory).
    pub async fn load_state(&self, key: &str) -> Result<Option<Vec<u8>>, OutboxError> {
        let key = key.to_owned();
        self.read(move |store| store.load_state(&key)).await
    }

    /// Reads a saved state without the async runtime (at startup, before anything runs).
    pub fn load_state_now(&self, key: &str) -> Result<Option<Vec<u8>>, OutboxError> {
        self.store.load_state(key)
    }

    /// Durably saves a source's state. While the outbox cannot be written, waits.
    pub async fn save_state(&self, key: &str, value: Vec<u8>) -> Result<(), OutboxError> {
        let key = key.to_owned();
        self.write_waiting(move |store| store.save_state(&key, &value))
            .await
    }

    /// The sandboxes the event stream says are running or paused.
    pub async fn sandboxes(&self) -> Result<Vec<SandboxRecord>, OutboxError> {
        self.read(|store| store.sandboxes()).await
    }

    /// Copies a page of the view every instance shares into this outbox's view of sandboxes,
    /// so that a view rebuilt from this outbox after Redis lost its data knows what other
    /// instances read: sets those of `records` it does not hold as they are; how many.
    pub async fn copy_sandboxes(&self, records: Vec<SandboxRecord>) -> Result<usize, OutboxError> {
        self.write_waiting(move |store| store.copy_sandboxes(&records))
            .await
    }

    /// Ends a copy of the shared view ([`Self::copy_sandboxes`]): removes the sandboxes whose
    /// ids it did not have; how many.
    pub async fn keep_only_sandboxes(
        &self,
        ids: std::collections::HashSet<String>,
    ) -> Result<usize, OutboxError> {
        self.write_waiting(move |store| store.keep_only_sandboxes(&ids))
            .await
    }

    /// Pending deliveries of `endpoint` with a sequence number above `after`, oldest first.
    pub async fn pending_after(
        &self,
        endpoint: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<PendingDelivery>, OutboxError> {
        // No row is numbered above the last appended one: a dispatcher that has read up to the
        // newest append reads the few rows after it on its own thread.
        let newer = usize::try_from(self.appended.borrow().saturating_sub(after)).unwrap_or(limit);
        let endpoint = endpoint.to_owned();
        self.read_small(newer.min(limit), move |store| {
            store.pending_after(&endpoint, after, limit)
        })
        .await
    }

    /// The stored events with these sequence numbers, read in one transaction.
    pub async fn events(&self, seqs: Vec<u64>) -> Result<Vec<Option<StoredEvent>>, OutboxError> {
        self.read(move |store| store.events(&seqs)).await
    }

    /// The events to deliver for these sequence numbers: from memory when they were appended
    /// lately, the others read from disk in one transaction.
    pub async fn events_to_deliver(
        &self,
        seqs: Vec<u64>,
    ) -> Result<Vec<Option<Arc<StoredEvent>>>, OutboxError> {
        let mut found = self.recent.get(&seqs);
        let missing: Vec<u64> = seqs
            .iter()
            .zip(&found)
            .filter(|(_, event)| event.is_none())
            .map(|(seq, _)| *seq)
            .collect();
        if missing.is_empty() {
            return Ok(found);
        }
        // A few events (one round of a dispatcher) are read on its own thread: thousands of
        // registered webhooks missing the recent events at once would otherwise each take a
        // thread of the blocking pool (and its memory) for a moment.
        let mut read = self
            .read_small(missing.len(), move |store| store.events(&missing))
            .await?
            .into_iter();
        for slot in found.iter_mut().filter(|event| event.is_none()) {
            *slot = read.next().flatten().map(Arc::new);
        }
        Ok(found)
    }

    /// Records delivery results in one transaction. Does not wait: the dispatcher keeps them and
    /// tries again, so deliveries go on while sources wait for the disk. Not cancel-safe (see
    /// [`Self::append`]): the dispatcher awaits each commit before it stops or lets its batch go.
    pub async fn complete(&self, completions: Arc<[Completion]>) -> Result<(), OutboxError> {
        let removed = if completions.iter().any(Completion::makes_dead_letter) {
            self.write(move |store| futures_executor::block_on(store.complete(&completions)))
                .await?
        } else {
            // On this task: the blocking pool's hand-off there and back would cost more than
            // the work (issue 30).
            let result = self.store.complete(&completions).await;
            self.note_write(result)?
        };
        self.recent.forget(&removed);
        self.finished.notify_one();
        self.give_back_segments_when_due().await;
        Ok(())
    }

    /// Forgets event ids older than `age` (the de-duplication window).
    pub async fn prune_event_ids(&self, age: std::time::Duration) -> Result<usize, OutboxError> {
        self.write(move |store| store.prune_event_ids(age)).await
    }

    /// Depth, oldest event and dead letters, per endpoint.
    pub async fn status(&self) -> Result<OutboxStatus, OutboxError> {
        self.read(|store| store.status()).await
    }

    /// Every dead letter, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, OutboxError> {
        self.read(|store| store.dead_letters()).await
    }

    /// Puts dead letters back into the outbox while the service runs: `ids` (or all), only
    /// those of `endpoint` when given. Dispatchers pick them up at once.
    pub async fn replay_dead_letters(
        &self,
        ids: Option<Vec<u64>>,
        endpoint: Option<String>,
    ) -> Result<ReplayReport, OutboxError> {
        let (report, last) = self
            .write(move |store| {
                let wanted = select_dead_letters(store, ids.as_deref(), endpoint.as_deref())?;
                let report = store.replay(wanted.as_deref())?;
                Ok((report, store.last_seq()?))
            })
            .await?;
        if !report.replayed.is_empty() {
            self.appended.send_replace(last);
            let wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
            for waker in wakers.values() {
                waker.clone().wake();
            }
        }
        Ok(report)
    }

    /// Routes events appended from now on to `route` too (or changes its filter).
    pub fn set_route(&self, route: Route) {
        self.store.set_route(route);
    }

    /// Stops routing to `endpoint`; what it had pending is finished undelivered (the webhook
    /// is gone). Returns how many deliveries were dropped.
    pub async fn remove_route(&self, endpoint: &str) -> Result<usize, OutboxError> {
        let endpoint = endpoint.to_owned();
        self.wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&endpoint);
        let dropped = self
            .write(move |store| store.remove_route(&endpoint))
            .await?;
        self.finished.notify_one();
        Ok(dropped)
    }

    /// Notified when deliveries for `endpoint` are appended (or dead letters replayed).
    pub fn subscribe_endpoint(&self, endpoint: &str) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        self.wake_on_append(endpoint, notify.clone());
        notify
    }

    /// Wakes `waker` when deliveries for `endpoint` are appended (or dead letters replayed),
    /// instead of what was woken before.
    pub fn wake_on_append(&self, endpoint: &str, waker: Arc<dyn EndpointWaker>) {
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        wakers.insert(endpoint.to_owned(), waker);
    }

    /// The metrics this outbox reports to.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}
