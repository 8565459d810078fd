//! The redb tables behind the outbox, and every transaction on them.
//!
//! Every commit is durable (fsync): the database is opened in redb's single-writer mode so that
//! `status` and `dead-letters list` can read it while the service runs, and that mode has no
//! non-durable commits. Callers batch writes to keep the number of fsyncs low.

use super::{Route, open};
use crate::event::{Lifecycle, SandboxEvent};
use crate::util::time::now_ms;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use uuid::Uuid;

/// seq → stored event (JSON).
pub(super) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// event id → time it was appended (ms); the de-duplication window.
pub(super) const EVENT_IDS: TableDefinition<&str, i64> = TableDefinition::new("event_ids");
/// (endpoint, seq) → delivery state (JSON); one row per event an endpoint still has to get.
pub(super) const PENDING: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("pending");
/// dead-letter id → dead letter (JSON).
pub(super) const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
/// sandbox id → what the event stream says about it (JSON).
const SANDBOXES: TableDefinition<&str, &[u8]> = TableDefinition::new("sandboxes");
/// Counters and source positions.
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
/// Stream entry id → the event it carries that is still pending here (JSON [`LiveEntry`]).
pub(super) const STREAM_ENTRIES: TableDefinition<&str, &[u8]> =
    TableDefinition::new("stream_entries");
/// Stream entry id → its Redis generation: finished here, to be acknowledged (`XACK`).
pub(super) const ACKS: TableDefinition<&str, &str> = TableDefinition::new("stream_acks");
/// Dead letters not yet copied to the shared store in Redis.
pub(super) const DEAD_EXPORT: TableDefinition<u64, ()> = TableDefinition::new("dead_export");

const NEXT_SEQ: &str = "outbox.next_seq";
const NEXT_DEAD: &str = "outbox.next_dead_letter";
/// The endpoint ids of the last `run`, so read-only `status` can list idle endpoints too.
const ENDPOINTS: &str = "outbox.endpoints";

/// A small record rewritten to learn whether the file can be written again after an I/O error.
const WRITE_PROBE: &str = "outbox.write_probe";
/// The id of the store, also in the marker file next to the database (see `open.rs`).
const STORE_ID: &str = "outbox.store_id";

/// An outbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The database file could not be opened.
    #[error(
        "cannot open the outbox at {path}: {source}; check DATA_DIR and that no other emitter uses it"
    )]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: redb::DatabaseError,
    },
    /// The database file is damaged: redb refuses it, or failed reading it.
    #[error(
        "the outbox {} is damaged ({reason}); no event was written to it. Next: {}",
        path.display(),
        start_over(path)
    )]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        reason: String,
    },
    /// The database file is empty, missing or replaced where a store lived.
    #[error(
        "the outbox {} {what}: its events would be lost without a word, so none was written. Next: {}",
        path.display(),
        start_over(path)
    )]
    Lost {
        /// The database file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// The file cannot be written (or read) right now: a full disk, an I/O error. The outbox
    /// reopens it and goes on by itself once writing works again.
    #[error("cannot write the outbox: {reason}; check free disk space and permissions of DATA_DIR")]
    Unwritable {
        /// What failed.
        reason: String,
        /// Whether the disk is full (ENOSPC).
        disk_full: bool,
    },
    /// A read or write failed.
    #[error("outbox storage error: {0}; check free disk space and permissions of DATA_DIR")]
    Storage(String),
    /// A stored record could not be decoded.
    #[error("corrupt outbox record {0}")]
    Corrupt(String),
    /// The blocking task running the operation panicked or was cancelled.
    #[error("outbox task failed: {0}")]
    Task(String),
}

/// The next step for a store that cannot be used as it is.
fn start_over(path: &Path) -> String {
    let dir = path.parent().unwrap_or(Path::new("."));
    format!(
        "restore the file from a backup, or stop the service and run \
         `e2b-webhook-emitter outbox move-aside --data-dir {}` to start over \
         (the file is kept for inspection, and it says what is lost).",
        dir.display()
    )
}

impl OutboxError {
    pub(super) fn task(e: tokio::task::JoinError) -> Self {
        Self::Task(e.to_string())
    }
}

impl From<redb::StorageError> for OutboxError {
    fn from(e: redb::StorageError) -> Self {
        match e {
            redb::StorageError::Io(io) => Self::Unwritable {
                disk_full: io.raw_os_error() == Some(libc::ENOSPC)
                    || io.kind() == std::io::ErrorKind::StorageFull,
                reason: io.to_string(),
            },
            // redb refuses every write after one failed; the outbox reopens the file.
            redb::StorageError::PreviousIo | redb::StorageError::DatabaseClosed => {
                Self::Unwritable {
                    disk_full: false,
                    reason: e.to_string(),
                }
            }
            e => Self::Storage(e.to_string()),
        }
    }
}

impl From<redb::TransactionError> for OutboxError {
    fn from(e: redb::TransactionError) -> Self {
        match e {
            redb::TransactionError::Storage(e) => e.into(),
            e => Self::Storage(e.to_string()),
        }
    }
}

impl From<redb::TableError> for OutboxError {
    fn from(e: redb::TableError) -> Self {
        match e {
            redb::TableError::Storage(e) => e.into(),
            e => Self::Storage(e.to_string()),
        }
    }
}

impl From<redb::CommitError> for OutboxError {
    fn from(e: redb::CommitError) -> Self {
        match e {
            redb::CommitError::Storage(e) => e.into(),
            e => Self::Storage(e.to_string()),
        }
    }
}

impl From<redb::SetDurabilityError> for OutboxError {
    fn from(e: redb::SetDurabilityError) -> Self {
        Self::Storage(e.to_string())
    }
}

/// What `append` did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppendReport {
    /// Events new to the outbox.
    pub appended: usize,
    /// Events whose id was already there (skipped).
    pub duplicates: usize,
    /// For each input event, whether it was new.
    pub is_new: Vec<bool>,
    /// The highest sequence number assigned, if any.
    pub last_seq: Option<u64>,
    /// For each input event, its sequence number when it was stored for delivery.
    pub seqs: Vec<Option<u64>>,
    /// When the batch was appended (ms since the epoch).
    pub appended_at_ms: i64,
}

/// An input that is not a valid event, kept for an operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MalformedInput {
    /// `redis`, `file`, …
    pub source: String,
    /// Where it was: a stream id, a line number.
    pub position: String,
    /// The input as received, byte for byte.
    #[serde(flatten)]
    pub input: super::RawInput,
    /// Why it was set aside.
    pub reason: String,
}

/// An event as stored, with when and from where it entered the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// The event.
    pub event: SandboxEvent,
    /// When it was appended (ms since the epoch).
    pub appended_at_ms: i64,
    /// Which source produced it.
    pub source: String,
}

#[derive(Serialize, Deserialize)]
struct EventRecord {
    appended_at_ms: i64,
    source: String,
    event: Value,
    /// The stream entry the event came from, acknowledged once the event is finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    entry: Option<StreamEntryRef>,
}

/// An [`EventRecord`] as it is written: the same fields, borrowed, so appending does not copy
/// the event.
#[derive(Serialize)]
struct EventRecordRef<'a> {
    appended_at_ms: i64,
    source: &'a str,
    event: &'a serde_json::Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entry: Option<&'a StreamEntryRef>,
}

/// Only the entry of an [`EventRecord`]: the event is skipped over, not decoded.
#[derive(Deserialize)]
struct RecordEntry {
    #[serde(default)]
    entry: Option<StreamEntryRef>,
}

/// A Redis stream entry, with the generation of the Redis data set it belongs to (a Redis that
/// restarted without its data has a new generation, and its old entry ids mean nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEntryRef {
    /// Entry id, `<ms>-<seq>`.
    pub id: String,
    /// The generation it was read in.
    pub generation: String,
}

/// Where an event read from a stream came from, and whether it is a replayed dead letter.
#[derive(Debug, Clone, PartialEq)]
pub struct FromStream {
    /// Its entry, acknowledged once the event is finished.
    pub entry: StreamEntryRef,
    /// A dead letter put back on the stream for this endpoint only (`dead-letters replay`):
    /// delivered again although its id was seen before.
    pub replay_to: Option<String>,
}

/// A stream entry whose event is still pending in this outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct LiveEntry {
    pub(super) seq: u64,
    pub(super) generation: String,
}

/// Delivery state of one event for one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DeliveryState {
    /// The sandbox (its deliveries are ordered).
    pub sandbox_id: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// Not before this time (ms since the epoch).
    pub next_attempt_at_ms: i64,
    /// The last failure, for status and dead letters.
    pub last_error: Option<String>,
    /// The last HTTP status, if any.
    pub last_status: Option<u16>,
}

/// A pending delivery: sequence number and state.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingDelivery {
    /// Global append order.
    pub seq: u64,
    /// Where the delivery stands.
    pub state: DeliveryState,
}

/// The result of one delivery, to be recorded.
#[derive(Debug, Clone)]
pub enum Completion {
    /// 2xx: forget it for this endpoint.
    Delivered {
        /// Endpoint id.
        endpoint: String,
        /// Sequence number.
        seq: u64,
    },
    /// Failed; try again later.
    Retry {
        /// Endpoint id.
        endpoint: String,
        /// Sequence number.
        seq: u64,
        /// New state (attempts, next time, error).
        state: DeliveryState,
    },
    /// The retry policy is exhausted.
    Dead {
        /// Endpoint id.
        endpoint: String,
        /// Sequence number.
        seq: u64,
        /// Final state.
        state: DeliveryState,
    },
}

/// An event that could not be delivered, or an input that was not an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Dead-letter id (for `replay`).
    pub id: u64,
    /// The endpoint that did not take it; none for malformed input.
    pub endpoint: Option<String>,
    /// The source it came from.
    pub source: String,
    /// Event id, when it was an event.
    pub event_id: Option<String>,
    /// Sandbox id, when it was an event.
    pub sandbox_id: Option<String>,
    /// Lifecycle label, when it was an event.
    pub label: Option<String>,
    /// The event (JSON) when it was one.
    pub event: Option<Value>,
    /// The input, byte for byte, when it was malformed (`raw`, or `raw_base64` when it is not
    /// UTF-8).
    #[serde(flatten)]
    pub input: super::RawInput,
    /// Where a malformed input was found.
    pub position: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// Last HTTP status.
    pub last_status: Option<u16>,
    /// Why it is here.
    pub reason: String,
    /// When it entered the outbox (ms).
    pub appended_at_ms: i64,
    /// When it was set aside (ms).
    pub dead_at_ms: i64,
}

/// Whether a sandbox runs or sleeps, according to the event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    /// Created or resumed.
    Running,
    /// Paused (it leaves the orchestrator's list but is not gone).
    Paused,
}

/// One sandbox the event stream says exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// Sandbox id.
    pub sandbox_id: String,
    /// Running or paused.
    pub state: SandboxState,
    /// Team UUID.
    pub team_id: String,
    /// Template id, when known.
    pub template_id: Option<String>,
    /// Current execution id, when known.
    pub execution_id: Option<String>,
    /// Time of the last event about it (ms).
    pub updated_at_ms: i64,
}

/// Backlog of one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointBacklog {
    /// Endpoint id.
    pub endpoint: String,
    /// Events waiting.
    pub depth: u64,
    /// When the oldest waiting event entered the outbox (ms).
    pub oldest_appended_at_ms: Option<i64>,
    /// Its last error, if it has failed before.
    pub oldest_last_error: Option<String>,
}

/// A summary for `status` and metrics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxStatus {
    /// Per-endpoint backlog.
    pub endpoints: Vec<EndpointBacklog>,
    /// Events stored (not yet delivered everywhere).
    pub events: u64,
    /// Dead letters.
    pub dead_letters: u64,
    /// Sandboxes tracked as running or paused.
    pub sandboxes: u64,
}

impl OutboxStatus {
    /// Events waiting, summed over endpoints.
    pub fn pending(&self) -> u64 {
        self.endpoints.iter().map(|e| e.depth).sum()
    }
}

/// What `replay` did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReplayReport {
    /// Dead letters put back in the outbox.
    pub replayed: Vec<u64>,
    /// Ids that are malformed inputs (nothing to deliver) or unknown.
    pub skipped: Vec<(u64, String)>,
}

enum Handle {
    Write(Database),
    Read(open::Readable),
    /// Closed after an I/O error, until [`Store::reopen`] succeeds.
    Closed,
}

pub(super) struct Store {
    db: std::sync::RwLock<Handle>,
    dir: PathBuf,
    /// The endpoints events are routed to; registered webhooks come and go while running.
    routes: std::sync::RwLock<Vec<Route>>,
    /// Dead letters are copied to Redis (the shared store) and removed here once copied.
    export_dead_letters: bool,
}

fn closed() -> OutboxError {
    OutboxError::Unwritable {
        reason: "the outbox is closed after an I/O error, and reopened when writing works again"
            .into(),
        disk_full: false,
    }
}

pub(super) fn decode<T: for<'de> Deserialize<'de>>(
    what: &str,
    bytes: &[u8],
) -> Result<T, OutboxError> {
    serde_json::from_slice(bytes).map_err(|e| OutboxError::Corrupt(format!("{what}: {e}")))
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("outbox records always serialize")
}

impl Store {
    pub(super) fn open(
        dir: &Path,
        routes: Vec<Route>,
        export_dead_letters: bool,
    ) -> Result<Self, OutboxError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| OutboxError::Storage(format!("cannot create {}: {e}", dir.display())))?;
        open::refuse_lost(dir)?;
        let marker = open::marker(dir)?;
        let db = open::writable(dir)?;
        let stored_id = {
            let txn = db.begin_read()?;
            match txn.open_table(STATE) {
                Ok(state) => state
                    .get(STORE_ID)?
                    .and_then(|v| std::str::from_utf8(v.value()).ok()?.parse::<Uuid>().ok()),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(e.into()),
            }
        };
        let id = match (marker, stored_id) {
            (Some(marked), Some(stored)) if marked == stored => None,
            (Some(marked), stored) => {
                let holds = stored.map_or("no store id".to_owned(), |s| format!("store {s}"));
                return Err(OutboxError::Lost {
                    path: open::database_path(dir),
                    what: format!(
                        "holds {holds}, but outbox.id says store {marked} lived here (replaced or emptied)"
                    ),
                });
            }
            (None, Some(stored)) => {
                open::write_marker(dir, stored)?;
                None
            }
            (None, None) => Some(Uuid::new_v4()),
        };
        let txn = db.begin_write()?;
        {
            // Create every table so read-only opens find them.
            txn.open_table(EVENTS)?;
            txn.open_table(EVENT_IDS)?;
            txn.open_table(PENDING)?;
            txn.open_table(DEAD)?;
            txn.open_table(SANDBOXES)?;
            txn.open_table(STREAM_ENTRIES)?;
            txn.open_table(ACKS)?;
            txn.open_table(DEAD_EXPORT)?;
            let mut state = txn.open_table(STATE)?;
            if !routes.is_empty() {
                let ids: Vec<&str> = routes.iter().map(|r| r.endpoint.as_str()).collect();
                state.insert(ENDPOINTS, encode(&ids).as_slice())?;
            }
            if let Some(id) = id {
                state.insert(STORE_ID, id.to_string().as_bytes())?;
            }
        }
        txn.commit()?;
        if let Some(id) = id {
            open::write_marker(dir, id)?;
        }
        Ok(Self {
            db: std::sync::RwLock::new(Handle::Write(db)),
            dir: dir.to_owned(),
            routes: std::sync::RwLock::new(routes),
            export_dead_letters,
        })
    }

    pub(super) fn open_read_only(dir: &Path) -> Result<Self, OutboxError> {
        Ok(Self {
            db: std::sync::RwLock::new(Handle::Read(open::readable(dir)?)),
            dir: dir.to_owned(),
            routes: std::sync::RwLock::default(),
            export_dead_letters: false,
        })
    }

    /// The current routes.
    pub(super) fn routes(&self) -> Vec<Route> {
        self.routes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Routes new events to `route` too (replacing the route of the same endpoint).
    pub(super) fn set_route(&self, route: Route) {
        let mut routes = self
            .routes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        routes.retain(|r| r.endpoint != route.endpoint);
        routes.push(route);
    }

    /// Stops routing to `endpoint` and finishes what it still had pending, without delivering
    /// it (its events are kept while another endpoint has them); returns how many were pending.
    pub(super) fn remove_route(&self, endpoint: &str) -> Result<usize, OutboxError> {
        self.routes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|r| r.endpoint != endpoint);
        let seqs: Vec<u64> = {
            let txn = self.begin_read()?;
            let pending = txn.open_table(PENDING)?;
            pending
                .range((endpoint, 0)..=(endpoint, u64::MAX))?
                .map(|row| row.map(|(k, _)| k.value().1))
                .collect::<Result<_, _>>()?
        };
        let finished: Vec<Completion> = seqs
            .iter()
            .map(|&seq| Completion::Delivered {
                endpoint: endpoint.to_owned(),
                seq,
            })
            .collect();
        self.complete(&finished)?;
        Ok(seqs.len())
    }

    /// Rewrites one small record, durably: whether the file can be written again.
    pub(super) fn probe_write(&self) -> Result<(), OutboxError> {
        let txn = self.begin_durable()?;
        txn.open_table(STATE)?
            .insert(WRITE_PROBE, now_ms().to_be_bytes().as_slice())?;
        self.commit_durable(txn)
    }

    /// Closes the database and opens it again: redb refuses every operation after one I/O
    /// error. Until it succeeds, every operation fails `Unwritable`.
    pub(super) fn reopen(&self) -> Result<(), OutboxError> {
        let mut handle = self.db.write().expect("outbox handle lock poisoned");
        // Drop the old handle first: it holds the file's lock.
        *handle = Handle::Closed;
        *handle = Handle::Write(open::writable(&self.dir)?);
        Ok(())
    }

    pub(super) fn begin_read(&self) -> Result<redb::ReadTransaction, OutboxError> {
        let handle = self.db.read().expect("outbox handle lock poisoned");
        Ok(match &*handle {
            Handle::Write(db) | Handle::Read(open::Readable::RepairedCopy { db, .. }) => {
                db.begin_read()?
            }
            Handle::Read(open::Readable::File(db)) => db.begin_read()?,
            Handle::Closed => return Err(closed()),
        })
    }

    pub(super) fn begin_durable(&self) -> Result<redb::WriteTransaction, OutboxError> {
        let handle = self.db.read().expect("outbox handle lock poisoned");
        let mut txn = match &*handle {
            Handle::Write(db) => db.begin_write()?,
            Handle::Read(_) => {
                return Err(OutboxError::Storage("the outbox is open read-only".into()));
            }
            Handle::Closed => return Err(closed()),
        };
        txn.set_durability(Durability::Immediate)?;
        Ok(txn)
    }

    pub(super) fn commit_durable(&self, txn: redb::WriteTransaction) -> Result<(), OutboxError> {
        Ok(txn.commit()?)
    }

    pub(super) fn last_seq(&self) -> Result<u64, OutboxError> {
        let txn = self.begin_read()?;
        let state = txn.open_table(STATE)?;
        Ok(read_counter(&state, NEXT_SEQ)?.saturating_sub(1))
    }

    /// Appends `events`; with `from` (one per event), each event remembers its stream entry,
    /// and entries with nothing (new) to deliver are queued for acknowledgement at once.
    pub(super) fn append(
        &self,
        source: &str,
        events: &[SandboxEvent],
        from: Option<&[FromStream]>,
    ) -> Result<AppendReport, OutboxError> {
        let now = now_ms();
        let mut report = AppendReport {
            appended_at_ms: now,
            ..AppendReport::default()
        };
        let all_routes = self.routes();
        let txn = self.begin_durable()?;
        {
            let mut state = txn.open_table(STATE)?;
            let mut next_seq = read_counter(&state, NEXT_SEQ)?.max(1);
            let mut table = txn.open_table(EVENTS)?;
            let mut ids = txn.open_table(EVENT_IDS)?;
            let mut pending = txn.open_table(PENDING)?;
            let mut sandboxes = txn.open_table(SANDBOXES)?;
            let mut live = txn.open_table(STREAM_ENTRIES)?;
            let mut acks = txn.open_table(ACKS)?;
            let mut seen_in_batch = HashSet::new();
            for (i, event) in events.iter().enumerate() {
                let from = from.and_then(|f| f.get(i));
                let entry = from.map(|f| &f.entry);
                let replay_to = from.and_then(|f| f.replay_to.as_deref());
                let new = match (replay_to, entry) {
                    // A replay is new unless this very entry was read before.
                    (Some(_), Some(entry)) => live.get(entry.id.as_str())?.is_none(),
                    _ => seen_in_batch.insert(event.id()) && ids.get(event.id())?.is_none(),
                };
                report.is_new.push(new);
                report.seqs.push(None);
                if !new {
                    report.duplicates += 1;
                    // The same entry read again is still carried by its event; another entry
                    // with an event we already have holds no work of its own.
                    if let Some(entry) = entry
                        && live.get(entry.id.as_str())?.is_none()
                    {
                        acks.insert(entry.id.as_str(), entry.generation.as_str())?;
                    }
                    continue;
                }
                report.appended += 1;
                ids.insert(event.id(), now)?;
                let routes: Vec<&Route> = match replay_to {
                    Some(endpoint) => all_routes
                        .iter()
                        .filter(|r| r.endpoint == endpoint)
                        .collect(),
                    None => {
                        track_sandbox(&mut sandboxes, event, now)?;
                        all_routes
                            .iter()
                            .filter(|r| r.filter.accepts(event))
                            .collect()
                    }
                };
                if routes.is_empty() {
                    if let Some(endpoint) = replay_to {
                        // Never dropped: back to the dead letters, with the reason.
                        let mut dead = txn.open_table(DEAD)?;
                        let mut export = txn.open_table(DEAD_EXPORT)?;
                        let id = read_counter(&state, NEXT_DEAD)?.max(1);
                        let letter = DeadLetter {
                            id,
                            endpoint: Some(endpoint.to_owned()),
                            source: source.to_owned(),
                            event_id: Some(event.id().to_owned()),
                            sandbox_id: Some(event.sandbox_id().to_owned()),
                            label: Some(event.lifecycle.label().to_owned()),
                            event: Some(Value::Object(event.raw().clone())),
                            input: super::RawInput::default(),
                            position: entry.map(|e| e.id.clone()),
                            attempts: 0,
                            last_status: None,
                            reason: format!(
                                "replayed for endpoint {endpoint:?}, which this instance does not deliver to; check the endpoints of the active instance"
                            ),
                            appended_at_ms: now,
                            dead_at_ms: now,
                        };
                        dead.insert(id, encode(&letter).as_slice())?;
                        if self.export_dead_letters {
                            export.insert(id, ())?;
                        }
                        state.insert(NEXT_DEAD, (id + 1).to_be_bytes().as_slice())?;
                    }
                    if let Some(entry) = entry {
                        acks.insert(entry.id.as_str(), entry.generation.as_str())?;
                    }
                    continue;
                }
                let seq = next_seq;
                next_seq += 1;
                if let Some(entry) = entry {
                    let row = LiveEntry {
                        seq,
                        generation: entry.generation.clone(),
                    };
                    live.insert(entry.id.as_str(), encode(&row).as_slice())?;
                }
                let record = EventRecordRef {
                    appended_at_ms: now,
                    source,
                    event: event.raw(),
                    entry,
                };
                table.insert(seq, encode(&record).as_slice())?;
                let delivery = encode(&DeliveryState {
                    sandbox_id: event.sandbox_id().to_owned(),
                    ..DeliveryState::default()
                });
                for route in routes {
                    pending.insert((route.endpoint.as_str(), seq), delivery.as_slice())?;
                }
                report.last_seq = Some(seq);
                report.seqs[i] = Some(seq);
            }
            state.insert(NEXT_SEQ, next_seq.to_be_bytes().as_slice())?;
        }
        self.commit_durable(txn)?;
        Ok(report)
    }

    /// Keeps malformed inputs as dead letters; `entries` (the stream entries they were) are
    /// queued for acknowledgement in the same commit.
    pub(super) fn set_aside(
        &self,
        inputs: &[MalformedInput],
        entries: &[StreamEntryRef],
    ) -> Result<(), OutboxError> {
        let now = now_ms();
        let txn = self.begin_durable()?;
        {
            let mut state = txn.open_table(STATE)?;
            let mut dead = txn.open_table(DEAD)?;
            let mut export = txn.open_table(DEAD_EXPORT)?;
            let mut acks = txn.open_table(ACKS)?;
            for entry in entries {
                acks.insert(entry.id.as_str(), entry.generation.as_str())?;
            }
            let mut next = read_counter(&state, NEXT_DEAD)?.max(1);
            for input in inputs {
                let letter = DeadLetter {
                    id: next,
                    endpoint: None,
                    source: input.source.clone(),
                    event_id: None,
                    sandbox_id: None,
                    label: None,
                    event: None,
                    input: input.input.clone(),
                    position: Some(input.position.clone()),
                    attempts: 0,
                    last_status: None,
                    reason: input.reason.clone(),
                    appended_at_ms: now,
                    dead_at_ms: now,
                };
                dead.insert(next, encode(&letter).as_slice())?;
                if self.export_dead_letters {
                    export.insert(next, ())?;
                }
                next += 1;
            }
            state.insert(NEXT_DEAD, next.to_be_bytes().as_slice())?;
        }
        self.commit_durable(txn)
    }

    pub(super) fn load_state(&self, key: &str) -> Result<Option<Vec<u8>>, OutboxError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(STATE)?;
        Ok(table.get(key)?.map(|v| v.value().to_vec()))
    }

    pub(super) fn save_state(&self, key: &str, value: &[u8]) -> Result<(), OutboxError> {
        let txn = self.begin_durable()?;
        txn.open_table(STATE)?.insert(key, value)?;
        self.commit_durable(txn)
    }

    pub(super) fn states(&self) -> Result<Vec<(String, Vec<u8>)>, OutboxError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(STATE)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            if !k.value().starts_with("outbox.") {
                out.push((k.value().to_owned(), v.value().to_vec()));
            }
        }
        Ok(out)
    }

    pub(super) fn sandboxes(&self) -> Result<Vec<SandboxRecord>, OutboxError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(SANDBOXES)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, v) = row?;
            out.push(decode("sandbox", v.value())?);
        }
        Ok(out)
    }

    pub(super) fn pending_after(
        &self,
        endpoint: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<PendingDelivery>, OutboxError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(PENDING)?;
        let mut out = Vec::new();
        for row in table.range((endpoint, after.saturating_add(1))..=(endpoint, u64::MAX))? {
            let (k, v) = row?;
            out.push(PendingDelivery {
                seq: k.value().1,
                state: decode("pending", v.value())?,
            });
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    pub(super) fn events(&self, seqs: &[u64]) -> Result<Vec<Option<StoredEvent>>, OutboxError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(EVENTS)?;
        seqs.iter()
            .map(|seq| match table.get(*seq)? {
                Some(bytes) => stored_event(bytes.value()).map(Some),
                None => Ok(None),
            })
            .collect()
    }

    /// Records delivery results; returns the events no endpoint has pending any more (removed).
    pub(super) fn complete(&self, completions: &[Completion]) -> Result<Vec<u64>, OutboxError> {
        let mut removed_events = Vec::new();
        if completions.is_empty() {
            return Ok(removed_events);
        }
        let txn = self.begin_durable()?;
        {
            let mut events = txn.open_table(EVENTS)?;
            let mut pending = txn.open_table(PENDING)?;
            let mut dead = txn.open_table(DEAD)?;
            let mut state = txn.open_table(STATE)?;
            let mut export = txn.open_table(DEAD_EXPORT)?;
            let mut live = txn.open_table(STREAM_ENTRIES)?;
            let mut acks = txn.open_table(ACKS)?;
            let mut next_dead = read_counter(&state, NEXT_DEAD)?.max(1);
            let mut finished = Vec::new();
            for completion in completions {
                match completion {
                    Completion::Delivered { endpoint, seq } => {
                        pending.remove((endpoint.as_str(), *seq))?;
                        finished.push(*seq);
                    }
                    Completion::Retry {
                        endpoint,
                        seq,
                        state,
                    } => {
                        pending.insert((endpoint.as_str(), *seq), encode(state).as_slice())?;
                    }
                    Completion::Dead {
                        endpoint,
                        seq,
                        state,
                    } => {
                        pending.remove((endpoint.as_str(), *seq))?;
                        let stored = match events.get(*seq)? {
                            Some(bytes) => Some(stored_event(bytes.value())?),
                            None => None,
                        };
                        let letter = DeadLetter {
                            id: next_dead,
                            endpoint: Some(endpoint.clone()),
                            source: stored
                                .as_ref()
                                .map(|s| s.source.clone())
                                .unwrap_or_default(),
                            event_id: stored.as_ref().map(|s| s.event.id().to_owned()),
                            sandbox_id: Some(state.sandbox_id.clone()),
                            label: stored
                                .as_ref()
                                .map(|s| s.event.lifecycle.label().to_owned()),
                            event: stored
                                .as_ref()
                                .map(|s| Value::Object(s.event.raw().clone())),
                            input: super::RawInput::default(),
                            position: None,
                            attempts: state.attempts,
                            last_status: state.last_status,
                            reason: state
                                .last_error
                                .clone()
                                .unwrap_or_else(|| "retry policy exhausted".into()),
                            appended_at_ms: stored
                                .as_ref()
                                .map(|s| s.appended_at_ms)
                                .unwrap_or_default(),
                            dead_at_ms: now_ms(),
                        };
                        dead.insert(next_dead, encode(&letter).as_slice())?;
                        if self.export_dead_letters {
                            export.insert(next_dead, ())?;
                        }
                        next_dead += 1;
                        finished.push(*seq);
                    }
                }
            }
            state.insert(NEXT_DEAD, next_dead.to_be_bytes().as_slice())?;
            // An event is kept until no endpoint has it pending.
            let routes = self.routes();
            for seq in finished {
                let still_pending = routes
                    .iter()
                    .map(|r| pending.get((r.endpoint.as_str(), seq)).map(|v| v.is_some()))
                    .collect::<Result<Vec<bool>, _>>()?
                    .into_iter()
                    .any(|p| p);
                if !still_pending && let Some(removed) = events.remove(seq)? {
                    removed_events.push(seq);
                    let record: RecordEntry = decode("event", removed.value())?;
                    if let Some(entry) = record.entry {
                        live.remove(entry.id.as_str())?;
                        acks.insert(entry.id.as_str(), entry.generation.as_str())?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(removed_events)
    }

    pub(super) fn prune_event_ids(&self, age: Duration) -> Result<usize, OutboxError> {
        let cutoff = now_ms() - i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        let txn = self.begin_durable()?;
        let mut removed = 0;
        {
            let mut ids = txn.open_table(EVENT_IDS)?;
            ids.retain(|_, at| {
                let keep = at >= cutoff;
                removed += usize::from(!keep);
                keep
            })?;
        }
        txn.commit()?;
        Ok(removed)
    }

    pub(super) fn status(&self) -> Result<OutboxStatus, OutboxError> {
        let txn = self.begin_read()?;
        let pending = txn.open_table(PENDING)?;
        let events = txn.open_table(EVENTS)?;
        let mut endpoints: Vec<EndpointBacklog> = Vec::new();
        // Walk endpoint by endpoint: the first row of each is its oldest event.
        let mut next_start: Option<String> = Some(String::new());
        while let Some(start) = next_start.take() {
            let mut iter = pending.range((start.as_str(), 0)..)?;
            let Some(first) = iter.next() else { break };
            let (k, v) = first?;
            let endpoint = k.value().0.to_owned();
            let state: DeliveryState = decode("pending", v.value())?;
            let oldest = events
                .get(k.value().1)?
                .map(|b| stored_event(b.value()))
                .transpose()?;
            let mut depth = 1;
            for row in pending
                .range((endpoint.as_str(), k.value().1 + 1)..=(endpoint.as_str(), u64::MAX))?
            {
                row?;
                depth += 1;
            }
            endpoints.push(EndpointBacklog {
                endpoint: endpoint.clone(),
                depth,
                oldest_appended_at_ms: oldest.map(|o| o.appended_at_ms),
                oldest_last_error: state.last_error,
            });
            next_start = Some(format!("{endpoint}\u{0}"));
        }
        let configured: Vec<String> = match txn.open_table(STATE)?.get(ENDPOINTS)? {
            Some(v) => decode("endpoints", v.value())?,
            None => Vec::new(),
        };
        for endpoint in configured {
            if !endpoints.iter().any(|e| e.endpoint == endpoint) {
                endpoints.push(EndpointBacklog {
                    endpoint,
                    depth: 0,
                    oldest_appended_at_ms: None,
                    oldest_last_error: None,
                });
            }
        }
        Ok(OutboxStatus {
            endpoints,
            events: events.len()?,
            dead_letters: txn.open_table(DEAD)?.len()?,
            sandboxes: txn.open_table(SANDBOXES)?.len()?,
        })
    }

    pub(super) fn dead_letters(&self) -> Result<Vec<DeadLetter>, OutboxError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(DEAD)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, v) = row?;
            out.push(decode("dead letter", v.value())?);
        }
        Ok(out)
    }

    pub(super) fn replay(&self, ids: Option<&[u64]>) -> Result<ReplayReport, OutboxError> {
        let mut report = ReplayReport::default();
        let wanted: Vec<u64> = match ids {
            Some(ids) => ids.to_vec(),
            None => self.dead_letters()?.iter().map(|d| d.id).collect(),
        };
        let now = now_ms();
        let txn = self.begin_durable()?;
        {
            let mut dead = txn.open_table(DEAD)?;
            let mut events = txn.open_table(EVENTS)?;
            let mut pending = txn.open_table(PENDING)?;
            let mut state = txn.open_table(STATE)?;
            let mut next_seq = read_counter(&state, NEXT_SEQ)?.max(1);
            for id in wanted {
                let letter: DeadLetter = match dead.get(id)? {
                    Some(bytes) => decode("dead letter", bytes.value())?,
                    None => {
                        report.skipped.push((id, "no such dead letter".into()));
                        continue;
                    }
                };
                let (Some(endpoint), Some(event)) = (&letter.endpoint, &letter.event) else {
                    report
                        .skipped
                        .push((id, "malformed input: there is no event to deliver".into()));
                    continue;
                };
                let seq = next_seq;
                next_seq += 1;
                // A fresh entry time: the replayed event gets the whole retry policy again.
                let record = EventRecord {
                    appended_at_ms: now,
                    source: letter.source.clone(),
                    event: event.clone(),
                    entry: None,
                };
                events.insert(seq, encode(&record).as_slice())?;
                let delivery = DeliveryState {
                    sandbox_id: letter.sandbox_id.clone().unwrap_or_default(),
                    ..DeliveryState::default()
                };
                pending.insert((endpoint.as_str(), seq), encode(&delivery).as_slice())?;
                dead.remove(id)?;
                report.replayed.push(id);
            }
            state.insert(NEXT_SEQ, next_seq.to_be_bytes().as_slice())?;
        }
        self.commit_durable(txn)?;
        Ok(report)
    }
}

fn stored_event(bytes: &[u8]) -> Result<StoredEvent, OutboxError> {
    let record: EventRecord = decode("event", bytes)?;
    let event = SandboxEvent::from_value(record.event)
        .map_err(|e| OutboxError::Corrupt(format!("event: {e}")))?;
    Ok(StoredEvent {
        event,
        appended_at_ms: record.appended_at_ms,
        source: record.source,
    })
}

fn read_counter(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<u64, OutboxError> {
    match table.get(key)? {
        None => Ok(0),
        Some(v) => {
            let bytes: [u8; 8] = v
                .value()
                .try_into()
                .map_err(|_| OutboxError::Corrupt(key.into()))?;
            Ok(u64::from_be_bytes(bytes))
        }
    }
}

/// Keeps the running/paused view of sandboxes that reconciliation compares with the orchestrators.
fn track_sandbox(
    table: &mut redb::Table<&str, &[u8]>,
    event: &SandboxEvent,
    now: i64,
) -> Result<(), OutboxError> {
    let state = match event.lifecycle {
        Lifecycle::Created | Lifecycle::Resumed => SandboxState::Running,
        Lifecycle::Paused => SandboxState::Paused,
        Lifecycle::Killed => {
            table.remove(event.sandbox_id())?;
            return Ok(());
        }
        Lifecycle::Updated | Lifecycle::Checkpointed => {
            if table.get(event.sandbox_id())?.is_some() {
                return Ok(());
            }
            SandboxState::Running
        }
        Lifecycle::Unknown(_) => return Ok(()),
    };
    let record = SandboxRecord {
        sandbox_id: event.sandbox_id().to_owned(),
        state,
        team_id: event.team_id().to_owned(),
        template_id: event.str_field("sandbox_template_id").map(str::to_owned),
        execution_id: event.str_field("sandbox_execution_id").map(str::to_owned),
        updated_at_ms: event.timestamp().map(|t| t.as_millisecond()).unwrap_or(now),
    };
    table.insert(event.sandbox_id(), encode(&record).as_slice())?;
    Ok(())
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
