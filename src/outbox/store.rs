//! The handle on the outbox's redb database: opening it (or reopening it after an I/O error),
//! its transactions, the routes, and the small state records. The transactions on events live
//! next door: `append.rs`, `delivery.rs`, `status.rs`, `dead_letters.rs`, `stream_acks.rs`.
//!
//! Every commit is durable (fsync). By default the database is opened in redb's single-writer
//! mode, so that `status` and `dead-letters list` can read it while the service runs; that mode
//! commits in two phases. With `OUTBOX_EXCLUSIVE` it is the service's alone and commits in one
//! (see [`FileSharing`]). Callers batch writes to keep the number of fsyncs low.

use super::open::FileSharing;
use super::records::{
    ACKS, DEAD, DEAD_EXPORT, ENDPOINTS, EVENT_IDS, EVENTS, NEXT_SEQ, PENDING, SANDBOXES, STATE,
    STORE_ID, STREAM_ENTRIES, WRITE_PROBE, encode, read_counter,
};
use super::route_table::RouteTable;
use super::{Completion, OutboxError, Route, open};
use crate::util::time::now_ms;
use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use std::path::{Path, PathBuf};
use uuid::Uuid;

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
    /// Replaced whole on a change, so a transaction holds one cheap snapshot.
    routes: std::sync::RwLock<std::sync::Arc<RouteTable>>,
    /// Dead letters are copied to Redis (the shared store) and removed here once copied.
    pub(super) export_dead_letters: bool,
    /// Kept for reopening the file after an I/O error.
    sharing: FileSharing,
}

fn closed() -> OutboxError {
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
            routes: std::sync::RwLock::new(std::sync::Arc::new(RouteTable::new(routes))),
            export_dead_letters,
            sharing,
        })
    }

    pub(super) fn open_read_only(dir: &Path) -> Result<Self, OutboxError> {
        Ok(Self {
            db: std::sync::RwLock::new(Handle::Read(open::readable(dir)?)),
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
        *handle = Handle::Write(open::writable(&self.dir, self.sharing)?);
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

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
