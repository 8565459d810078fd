//! The handle on the outbox: the segment log (`log/`) that events and their delivery state are
//! appended to, the live set rebuilt from it (`live.rs`), and the redb database that keeps what
//! is written rarely (dead letters, source state, the store id). Opening both (or reopening them
//! after an I/O error), the routes, and the small state records live here; the operations on
//! events next door: `append.rs`, `delivery.rs`, `status.rs`, `dead_letters.rs`,
//! `stream_acks.rs`.
//!
//! Every log commit and redb commit is durable (fsync). By default the database is opened in
//! redb's single-writer mode, so that `status` and `dead-letters list` can read it while the
//! service runs; with `OUTBOX_EXCLUSIVE` it is the service's alone (see [`FileSharing`]).

use super::journal::JournalRecord;
use super::live::Live;
use super::log::{Log, LogOptions, Record, ScanMode};
use super::open::{FileSharing, LOG_DIR};
use super::records::{
    DEAD, DEAD_EXPORT, ENDPOINTS, LOG_CREATED, STATE, STORE_ID, WRITE_PROBE, encode,
};
use super::route_table::RouteTable;
use super::{Completion, OutboxError, Route, open};
use crate::util::time::now_ms;
use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock};
use uuid::Uuid;

enum Handle {
    Write(Database),
    Read(open::Readable),
    /// Closed after an I/O error, until [`Store::reopen`] succeeds.
    Closed,
}

pub(super) struct Store {
    db: std::sync::RwLock<Handle>,
    /// The segment log; none while closed after an I/O error, and in a read-only store.
    pub(super) log: RwLock<Option<Log>>,
    /// What the log says is live.
    pub(super) live: RwLock<Live>,
    /// Held by every operation that appends to the log, from deciding what to append until it
    /// is applied to the live set: they happen one at a time, in log order. An async lock: an
    /// append holds it while its task awaits the commit.
    pub(super) write_lock: tokio::sync::Mutex<()>,
    /// The last commit when old segments were last given back (see `compaction.rs`).
    pub(super) compacted_at: std::sync::atomic::AtomicU64,
    /// Set when a commit failed on a full disk (why), until the next segment fits again.
    pub(super) out_of_room: Mutex<Option<String>>,
    /// Size of the log's segments.
    segment_size: u64,
    pub(super) dir: PathBuf,
    /// The endpoints events are routed to; registered webhooks come and go while running.
    /// Replaced whole on a change, so a transaction holds one cheap snapshot.
    routes: std::sync::RwLock<std::sync::Arc<RouteTable>>,
    /// Dead letters are copied to Redis (the shared store) and removed here once copied.
    pub(super) export_dead_letters: bool,
    /// Kept for reopening the file after an I/O error.
    sharing: FileSharing,
}

pub(super) fn closed() -> OutboxError {
    OutboxError::Unwritable {
        reason: "the outbox is closed after an I/O error, and reopened when writing works again"
            .into(),
        disk_full: false,
    }
}

impl Store {
    pub(super) fn open(
        dir: &Path,
        routes: Vec<Route>,
        export_dead_letters: bool,
        sharing: FileSharing,
    ) -> Result<Self, OutboxError> {
        Self::open_sized(dir, routes, export_dead_letters, sharing, segment_size)
    }

    /// As [`Self::open`], with the log's segments `segment_size(dir)` bytes long.
    pub(super) fn open_sized(
        dir: &Path,
        routes: Vec<Route>,
        export_dead_letters: bool,
        sharing: FileSharing,
        segment_size: fn(&Path) -> u64,
    ) -> Result<Self, OutboxError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| OutboxError::Storage(format!("cannot create {}: {e}", dir.display())))?;
        open::refuse_lost(dir)?;
        let marker = open::marker(dir)?;
        let db = open::writable(dir, sharing)?;
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
            txn.open_table(DEAD)?;
            txn.open_table(DEAD_EXPORT)?;
            let mut state = txn.open_table(STATE)?;
            let log_dir = dir.join(LOG_DIR);
            if state.get(LOG_CREATED)?.is_some() && !log_dir.exists() {
                return Err(OutboxError::Lost {
                    path: log_dir,
                    what: format!(
                        "is missing, but {} says the outbox's log lived there",
                        open::database_path(dir).display()
                    ),
                });
            }
            state.insert(LOG_CREATED, b"1".as_slice())?;
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
        let segment_size = segment_size(dir);
        let (log, live) = open_log(dir, segment_size)?;
        let store = Self {
            db: std::sync::RwLock::new(Handle::Write(db)),
            log: RwLock::new(Some(log)),
            live: RwLock::new(live),
            write_lock: tokio::sync::Mutex::default(),
            compacted_at: Default::default(),
            out_of_room: Mutex::default(),
            segment_size,
            dir: dir.to_owned(),
            routes: std::sync::RwLock::new(std::sync::Arc::new(RouteTable::new(routes))),
            export_dead_letters,
            sharing,
        };
        store.migrate_hot_tables()?;
        Ok(store)
    }

    pub(super) fn open_read_only(dir: &Path) -> Result<Self, OutboxError> {
        let db = open::readable(dir)?;
        Ok(Self {
            db: std::sync::RwLock::new(Handle::Read(db)),
            log: RwLock::new(None),
            live: RwLock::new(read_live(dir)?),
            write_lock: tokio::sync::Mutex::default(),
            compacted_at: Default::default(),
            out_of_room: Mutex::default(),
            segment_size: 0,
            dir: dir.to_owned(),
            routes: std::sync::RwLock::default(),
            export_dead_letters: false,
            sharing: FileSharing::WithReaders,
        })
    }

    /// The current routes.
    pub(super) fn routes(&self) -> std::sync::Arc<RouteTable> {
        self.routes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Applies `change` to the routes (in place unless a transaction holds the current ones).
    fn change_routes(&self, change: impl FnOnce(&mut RouteTable)) {
        let mut routes = self
            .routes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(std::sync::Arc::make_mut(&mut routes));
    }

    /// Routes new events to `route` too (replacing the route of the same endpoint).
    pub(super) fn set_route(&self, route: Route) {
        self.change_routes(|routes| routes.set(route));
    }

    /// Stops routing to `endpoint` and finishes what it still had pending, without delivering
    /// it (its events are kept while another endpoint has them); returns how many were pending.
    pub(super) fn remove_route(&self, endpoint: &str) -> Result<usize, OutboxError> {
        self.change_routes(|routes| routes.remove(endpoint));
        let seqs: Vec<u64> = self
            .live()
            .pending_after(endpoint, 0, usize::MAX)
            .iter()
            .map(|p| p.seq)
            .collect();
        let finished: Vec<Completion> = seqs
            .iter()
            .map(|&seq| Completion::Delivered {
                endpoint: endpoint.to_owned(),
                seq,
            })
            .collect();
        futures_executor::block_on(self.complete(&finished))?;
        self.give_back_segments();
        Ok(seqs.len())
    }

    /// Rewrites one small record, durably, and commits nothing to the log: whether the files
    /// can be written again. After a full disk, also whether the log's next segment fits.
    pub(super) fn probe_write(&self) -> Result<(), OutboxError> {
        if let Some(reason) = self.out_of_room() {
            let spare = {
                let _writing = self.lock_writes();
                if let Err(e) = self.compact_now() {
                    tracing::debug!(error = %e, "could not give old outbox log segments back yet");
                }
                self.with_log(|log| Ok(log.spare_bytes()))?
            };
            let free = free_bytes(&self.dir.join(LOG_DIR))
                .unwrap_or(u64::MAX)
                .saturating_add(spare);
            if free < self.segment_size {
                return Err(OutboxError::Unwritable {
                    reason,
                    disk_full: true,
                });
            }
            *self
                .out_of_room
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = None;
        }
        self.write_records(Vec::new())?;
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
        *handle = Handle::Write(open::writable(&self.dir, self.sharing)?);
        // The log needs no reopening: its writer rewrites a failed commit in place, and the live
        // set only ever took in what was committed.
        Ok(())
    }

    /// Refuses new events while the log has no room for its next segment: the segment written
    /// would take a few more and fail again. What frees room (recording deliveries, which lets
    /// old segments go) still writes meanwhile, without making the outbox writable again: that
    /// waits for the next segment to fit (`probe_write`).
    pub(super) fn refuse_if_out_of_room(&self) -> Result<(), OutboxError> {
        match self.out_of_room() {
            Some(reason) => Err(OutboxError::Unwritable {
                reason,
                disk_full: true,
            }),
            None => Ok(()),
        }
    }

    /// Why the log has no room for its next segment, since a commit failed on a full disk.
    pub(super) fn out_of_room(&self) -> Option<String> {
        self.out_of_room
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The outbox's directory (`DATA_DIR`).
    pub(super) fn dir(&self) -> &Path {
        &self.dir
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
        Ok(self.live().next_seq() - 1)
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
}

/// Opens the log in `dir`, rebuilding the live set from it.
fn open_log(dir: &Path, segment_size: u64) -> Result<(Log, Live), OutboxError> {
    let log_dir = dir.join(LOG_DIR);
    let mut live = Live::default();
    let options = LogOptions {
        segment_size,
        ..LogOptions::default()
    };
    let log = Log::open(&log_dir, options, |record: Record<'_>| {
        live.apply(
            JournalRecord::decode(record.payload)?,
            record.commit,
            record.location,
        )
    })?;
    Ok((log, live))
}

/// The live set of the log in `dir`, read while the service may be appending to it: a scan
/// that raced the writer (a segment deleted or recycled under it) is tried again.
fn read_live(dir: &Path) -> Result<Live, OutboxError> {
    let mut attempt = 0;
    loop {
        let mut live = Live::default();
        let read = super::log::scan_dir(&dir.join(LOG_DIR), ScanMode::Reading, |r| {
            live.apply(JournalRecord::decode(r.payload)?, r.commit, r.location)
        });
        match read {
            Ok(_) => return Ok(live),
            Err(OutboxError::Unwritable { .. }) if !dir.join(LOG_DIR).exists() => {
                return Ok(Live::default());
            }
            Err(_) if attempt < 3 => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Segments of 64 MiB, or an eighth of the free space (at least 256 KiB) on a small disk, so
/// that a disk that fills shows up while events arrive, not only after a segment's worth.
fn segment_size(dir: &Path) -> u64 {
    let full = LogOptions::default().segment_size;
    free_bytes(dir).map_or(full, |free| (free / 8 / 4096 * 4096).clamp(256 << 10, full))
}

/// Free space for an unprivileged writer on the file system of `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs only fills the struct it is given; the path is a valid C string.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
