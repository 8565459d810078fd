//! The durable outbox on redb: events are committed (fsync) before their source is acknowledged,
//! and stay on disk, not in memory, until every endpoint has them or they are dead-lettered.

mod open;
mod store;

pub use open::MovedAside;

pub use store::{
    AppendReport, Completion, DeadLetter, DeliveryState, EndpointBacklog, MalformedInput,
    OutboxError, OutboxStatus, PendingDelivery, ReplayReport, SandboxRecord, SandboxState,
    StoredEvent,
};

use crate::config::EndpointConfig;
use crate::event::{EventFilter, SandboxEvent};
use crate::server::metrics::Metrics;
use std::path::Path;
use std::sync::Arc;
use store::Store;
use tokio::sync::watch;

/// One endpoint as the outbox sees it: an id and the labels it wants.
#[derive(Debug, Clone)]
pub struct Route {
    /// Endpoint id.
    pub endpoint: String,
    /// Which events it receives.
    pub filter: EventFilter,
}

impl From<&EndpointConfig> for Route {
    fn from(e: &EndpointConfig) -> Self {
        Self {
            endpoint: e.id.clone(),
            filter: e.events.clone(),
        }
    }
}

/// Handle to the outbox; cheap to clone, every clone shares one database.
#[derive(Clone)]
pub struct Outbox {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    appended: Arc<watch::Sender<u64>>,
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir` for writing; fails if another process holds it.
    pub fn open(
        dir: &Path,
        routes: Vec<Route>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, OutboxError> {
        let store = Store::open(dir, routes)?;
        let last = store.last_seq()?;
        Ok(Self {
            store: Arc::new(store),
            metrics,
            appended: Arc::new(watch::channel(last).0),
        })
    }

    /// Durably appends events (one fsync for the batch); ids already in the outbox are skipped.
    pub async fn append(
        &self,
        source: &'static str,
        events: Vec<SandboxEvent>,
    ) -> Result<AppendReport, OutboxError> {
        let store = self.store.clone();
        let labels: Vec<String> = events
            .iter()
            .map(|e| e.lifecycle.label().to_owned())
            .collect();
        let report = tokio::task::spawn_blocking(move || store.append(source, &events))
            .await
            .map_err(OutboxError::task)??;
        for (label, new) in labels.iter().zip(&report.is_new) {
            if *new {
                self.metrics.event_received(source, label);
            }
        }
        if let Some(last) = report.last_seq {
            self.appended.send_replace(last);
        }
        Ok(report)
    }

    /// Durably keeps malformed inputs in the dead-letter store, for an operator to inspect.
    pub async fn set_aside(&self, inputs: Vec<MalformedInput>) -> Result<(), OutboxError> {
        for input in &inputs {
            self.metrics.malformed_input(&input.source);
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.set_aside(&inputs))
            .await
            .map_err(OutboxError::task)?
    }

    /// Reads a source's saved state (stream positions, reconciler memory).
    pub async fn load_state(&self, key: &str) -> Result<Option<Vec<u8>>, OutboxError> {
        let store = self.store.clone();
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || store.load_state(&key))
            .await
            .map_err(OutboxError::task)?
    }

    /// Reads a saved state without the async runtime (at startup, before anything runs).
    pub fn load_state_now(&self, key: &str) -> Result<Option<Vec<u8>>, OutboxError> {
        self.store.load_state(key)
    }

    /// Durably saves a source's state.
    pub async fn save_state(&self, key: &str, value: Vec<u8>) -> Result<(), OutboxError> {
        let store = self.store.clone();
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || store.save_state(&key, &value))
            .await
            .map_err(OutboxError::task)?
    }

    /// The sandboxes the event stream says are running or paused.
    pub async fn sandboxes(&self) -> Result<Vec<SandboxRecord>, OutboxError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.sandboxes())
            .await
            .map_err(OutboxError::task)?
    }

    /// Pending deliveries of `endpoint` with a sequence number above `after`, oldest first.
    pub async fn pending_after(
        &self,
        endpoint: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<PendingDelivery>, OutboxError> {
        let store = self.store.clone();
        let endpoint = endpoint.to_owned();
        tokio::task::spawn_blocking(move || store.pending_after(&endpoint, after, limit))
            .await
            .map_err(OutboxError::task)?
    }

    /// The stored events with these sequence numbers, read in one transaction.
    pub async fn events(&self, seqs: Vec<u64>) -> Result<Vec<Option<StoredEvent>>, OutboxError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.events(&seqs))
            .await
            .map_err(OutboxError::task)?
    }

    /// Records delivery results in one transaction.
    pub async fn complete(&self, completions: Vec<Completion>) -> Result<(), OutboxError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.complete(&completions))
            .await
            .map_err(OutboxError::task)?
    }

    /// Forgets event ids older than `age` (the de-duplication window).
    pub async fn prune_event_ids(&self, age: std::time::Duration) -> Result<usize, OutboxError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.prune_event_ids(age))
            .await
            .map_err(OutboxError::task)?
    }

    /// Depth, oldest event and dead letters, per endpoint.
    pub async fn status(&self) -> Result<OutboxStatus, OutboxError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.status())
            .await
            .map_err(OutboxError::task)?
    }

    /// Every dead letter, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, OutboxError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.dead_letters())
            .await
            .map_err(OutboxError::task)?
    }

    /// Puts dead letters back into the outbox while the service runs: `ids` (or all), only
    /// those of `endpoint` when given. Dispatchers pick them up at once.
    pub async fn replay_dead_letters(
        &self,
        ids: Option<Vec<u64>>,
        endpoint: Option<String>,
    ) -> Result<ReplayReport, OutboxError> {
        let store = self.store.clone();
        let (report, last) = tokio::task::spawn_blocking(move || {
            let wanted = select_dead_letters(&store, ids.as_deref(), endpoint.as_deref())?;
            let report = store.replay(wanted.as_deref())?;
            Ok::<_, OutboxError>((report, store.last_seq()?))
        })
        .await
        .map_err(OutboxError::task)??;
        if !report.replayed.is_empty() {
            self.appended.send_replace(last);
        }
        Ok(report)
    }

    /// Wakes when events are appended; the value is the last sequence number.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// The metrics this outbox reports to.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

/// Read-only access for `status` and `dead-letters list` while the service runs.
pub struct OutboxReader {
    store: Store,
    path: std::path::PathBuf,
}

impl OutboxReader {
    /// Opens the outbox in `dir` without writing to it (a file left by an unclean exit is read
    /// through a repaired copy).
    pub fn open(dir: &Path) -> Result<Self, OutboxError> {
        Ok(Self {
            store: Store::open_read_only(dir)?,
            path: open::database_path(dir),
        })
    }

    /// Depth, oldest event and dead letters, per endpoint.
    pub fn status(&self) -> Result<OutboxStatus, OutboxError> {
        self.guarded(|store| store.status())
    }

    /// Every dead letter, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, OutboxError> {
        self.guarded(|store| store.dead_letters())
    }

    /// Every saved source state.
    pub fn states(&self) -> Result<Vec<(String, Vec<u8>)>, OutboxError> {
        self.guarded(|store| store.states())
    }

    /// A read-only open checks nothing up front (the service may be writing), so a page that
    /// is damaged shows up while reading: redb may panic on it.
    fn guarded<T>(
        &self,
        read: impl FnOnce(&Store) -> Result<T, OutboxError>,
    ) -> Result<T, OutboxError> {
        crate::util::panic::catch_quietly(|| read(&self.store)).unwrap_or_else(|panic| {
            Err(OutboxError::Damaged {
                path: self.path.clone(),
                reason: format!("redb: {panic}"),
            })
        })
    }
}

/// Moves a damaged or unwanted outbox aside (renamed, kept for inspection) so the next start
/// begins empty; refused while the service runs.
pub fn move_aside(dir: &Path) -> Result<MovedAside, OutboxError> {
    open::move_aside(dir, |_| {
        let reader = OutboxReader::open(dir).ok()?;
        let status = reader.status().ok()?;
        Some((status.events, status.dead_letters))
    })
}

/// Puts dead letters back into the outbox in `dir` (those of `endpoint` when given); needs the
/// service stopped (it holds the database) — while it runs, replay through its admin API.
pub fn replay_dead_letters(
    dir: &Path,
    ids: Option<&[u64]>,
    endpoint: Option<&str>,
) -> Result<ReplayReport, OutboxError> {
    let store = Store::open(dir, Vec::new())?;
    let wanted = select_dead_letters(&store, ids, endpoint)?;
    store.replay(wanted.as_deref())
}

/// The ids to replay: `ids` (or every letter), narrowed to `endpoint`'s when given.
fn select_dead_letters(
    store: &Store,
    ids: Option<&[u64]>,
    endpoint: Option<&str>,
) -> Result<Option<Vec<u64>>, OutboxError> {
    let Some(endpoint) = endpoint else {
        return Ok(ids.map(<[u64]>::to_vec));
    };
    Ok(Some(
        store
            .dead_letters()?
            .into_iter()
            .filter(|d| d.endpoint.as_deref() == Some(endpoint))
            .filter(|d| ids.is_none_or(|ids| ids.contains(&d.id)))
            .map(|d| d.id)
            .collect(),
    ))
}
