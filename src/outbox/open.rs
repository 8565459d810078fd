//! Opening the outbox file without trusting it.
//!
//! A file can be damaged (a bad disk, a stray write), emptied (truncated to 0 bytes by a full disk
//! or a careless copy) or left by an unclean exit. None of these may panic, and none may be
//! silently replaced by an empty outbox: pending events would be gone without a word. So:
//! - `outbox.id` next to the database names the store; the database holds the same id. A missing,
//!   empty or different database where the marker says a store lived is refused before anything
//!   is written.
//! - A writable open checks every page (redb's integrity check); a panic inside redb on a damaged
//!   file becomes an error naming the file and the next step.
//! - A read-only open of a file left by an unclean exit reads a repaired copy, so `status` works
//!   before the service has started again.
//! - [`move_aside`] renames a damaged store out of the way on purpose, keeping it for inspection.

use super::OutboxError;
use crate::util::panic::catch_quietly;
use redb::{Builder, ConcurrencyMode, Database, DatabaseError, ReadOnlyDatabase, StorageError};
use std::io::Write;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// The log's directory in `DATA_DIR`.
pub(super) const LOG_DIR: &str = "outbox-log";

/// The database file in `DATA_DIR`.
pub(super) const DATABASE_FILE: &str = "outbox.redb";
/// The marker file: the id of the store that lives in `DATA_DIR`.
const MARKER_FILE: &str = "outbox.id";
/// Page cache size: the backlog lives on disk, so a small cache keeps memory flat.
const CACHE_BYTES: usize = 8 << 20;

/// The database file of `dir`.
pub(super) fn database_path(dir: &Path) -> PathBuf {
    dir.join(DATABASE_FILE)
}

/// Who else may open the database file while the service writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileSharing {
    /// `status` and `dead-letters list` may read the file while the service runs. redb then
    /// commits in two phases, with two `fdatasync`, and takes byte-range locks (`fcntl`) in every
    /// transaction (redb 4.6: `commit_inner_helper` in `transactions.rs`, `lock_header` and
    /// `lock_mp_transaction` in `page_manager.rs`).
    WithReaders,
    /// Nothing else opens the file while the service runs (`OUTBOX_EXCLUSIVE`): one-phase commits
    /// with checksums and no range locks, which cost an event at 1 000 events/s about 8 % less CPU
    /// and a tenth less median latency (BENCHMARKS.md, issue 17's third round). The command line
    /// then asks the service through its admin API instead of reading the file.
    Exclusive,
}

fn builder(sharing: FileSharing) -> Builder {
    let mode = match sharing {
        FileSharing::WithReaders => ConcurrencyMode::SingleWriter,
        FileSharing::Exclusive => ConcurrencyMode::ExclusiveWriter,
    };
    let mut builder = Builder::new();
    builder
        .set_cache_size(CACHE_BYTES)
        .set_concurrency_mode(mode);
    builder
}

/// The store id the marker file names, if there is one.
pub(super) fn marker(dir: &Path) -> Result<Option<Uuid>, OutboxError> {
    let path = dir.join(MARKER_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Uuid::parse_str(text.trim()).map(Some).map_err(|_| {
            OutboxError::Storage(format!(
                "{} does not hold a store id; restore it or remove it if {} is the right outbox",
                path.display(),
                database_path(dir).display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(OutboxError::Storage(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// Durably records `id` as the store living in `dir` (write, fsync, rename, fsync the directory).
pub(super) fn write_marker(dir: &Path, id: Uuid) -> Result<(), OutboxError> {
    let io = |e: std::io::Error| {
        OutboxError::Storage(format!(
            "cannot write {}: {e}",
            dir.join(MARKER_FILE).display()
        ))
    };
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    writeln!(file, "{id}").map_err(io)?;
    file.as_file().sync_all().map_err(io)?;
    file.persist(dir.join(MARKER_FILE))
        .map_err(|e| io(e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

/// Refuses a zero-length database file, and a missing one where the marker says a store lived.
pub(super) fn refuse_lost(dir: &Path) -> Result<(), OutboxError> {
    let path = database_path(dir);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.len() == 0 => Err(OutboxError::Lost {
            path,
            what: "is empty (0 bytes)".into(),
        }),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match marker(dir)? {
            Some(id) => Err(OutboxError::Lost {
                path,
                what: format!("is missing, but {MARKER_FILE} says store {id} lives here"),
            }),
            None => Ok(()),
        },
        Err(e) => Err(OutboxError::Storage(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

fn damaged(path: &Path, reason: impl Into<String>) -> OutboxError {
    OutboxError::Damaged {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// A redb error on opening: damage, or something the operator fixes elsewhere (a lock, a path).
fn open_error(path: &Path, source: DatabaseError) -> OutboxError {
    match source {
        DatabaseError::Storage(StorageError::Corrupted(reason)) => damaged(path, reason),
        DatabaseError::UpgradeRequired(_) | DatabaseError::RepairAborted => {
            damaged(path, source.to_string())
        }
        source => OutboxError::Open {
            path: path.to_owned(),
            source,
        },
    }
}

/// Opens (or creates) the database for writing and checks every page before it is used.
pub(super) fn writable(dir: &Path, sharing: FileSharing) -> Result<Database, OutboxError> {
    let path = database_path(dir);
    let opened = catch_quietly(|| -> Result<Database, OutboxError> {
        let mut db = builder(sharing)
            .create(&path)
            .map_err(|e| open_error(&path, e))?;
        match db.check_integrity() {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                path = %path.display(),
                "the outbox failed redb's integrity check and was repaired; nothing of it was lost that had been committed"
            ),
            Err(e) => return Err(open_error(&path, e)),
        }
        Ok(db)
    });
    opened.unwrap_or_else(|panic| Err(damaged(&path, format!("redb: {panic}"))))
}

/// What a reader reads: the file itself, or a repaired copy of a file left by an unclean exit.
pub(super) enum Readable {
    /// The database, shared with a running service.
    File(ReadOnlyDatabase),
    /// A repaired copy in a temporary directory that lives as long as the reader.
    RepairedCopy {
        /// The copy.
        db: Database,
        /// Removed when the reader is dropped.
        _dir: tempfile::TempDir,
    },
}

/// Opens the database for reading without writing to it.
pub(super) fn readable(dir: &Path) -> Result<Readable, OutboxError> {
    let path = database_path(dir);
    if !path.exists() {
        return Err(OutboxError::Storage(format!(
            "no outbox at {}; pass the DATA_DIR the service uses (--data-dir)",
            path.display()
        )));
    }
    refuse_lost(dir)?;
    let opened = catch_quietly(|| builder(FileSharing::WithReaders).open_read_only(&path))
        .map_err(|panic| damaged(&path, format!("redb: {panic}")))?;
    match opened {
        Ok(db) => Ok(Readable::File(db)),
        // The service was killed: redb repairs on the next writable open. Repair a copy instead,
        // so reading changes nothing and does not wait for the service.
        Err(DatabaseError::RepairAborted) => {
            let copy_dir = tempfile::tempdir().map_err(|e| {
                OutboxError::Storage(format!("cannot make a temporary directory: {e}"))
            })?;
            let copy = copy_dir.path().join(DATABASE_FILE);
            std::fs::copy(&path, &copy).map_err(|e| {
                OutboxError::Storage(format!("cannot copy {}: {e}", path.display()))
            })?;
            tracing::info!(
                path = %path.display(),
                "the outbox was not closed cleanly (the service was killed); reading a repaired copy — the file itself is repaired when the service starts"
            );
            let db = catch_quietly(|| builder(FileSharing::WithReaders).create(&copy))
                .map_err(|panic| damaged(&path, format!("redb: {panic}")))?
                .map_err(|e| open_error(&path, e))?;
            Ok(Readable::RepairedCopy { db, _dir: copy_dir })
        }
        Err(DatabaseError::DatabaseAlreadyOpen) => Err(OutboxError::Storage(format!(
            "{} is held by a running emitter that keeps it to itself (OUTBOX_EXCLUSIVE); ask the service through its admin API instead (--admin-url and --admin-token, or ADMIN_URL and ADMIN_TOKEN), or stop it first",
            path.display()
        ))),
        Err(e) => Err(open_error(&path, e)),
    }
}

/// Where `move_aside` put a store.
#[derive(Debug)]
pub struct MovedAside {
    /// The database file's new name.
    pub database: PathBuf,
    /// Events stored in it (not yet delivered everywhere), when it could still be read.
    pub events: Option<u64>,
    /// Dead letters in it, when it could still be read.
    pub dead_letters: Option<u64>,
}

/// Renames the store in `dir` (database and marker) to `*.aside-<time>`, so the next start
/// begins with an empty outbox. Refused while a service has it open.
pub(super) fn move_aside(
    dir: &Path,
    counts: impl FnOnce(&Path) -> Option<(u64, u64)>,
) -> Result<MovedAside, OutboxError> {
    let path = database_path(dir);
    let marker_path = dir.join(MARKER_FILE);
    if !path.exists() && !marker_path.exists() {
        return Err(OutboxError::Storage(format!(
            "no outbox at {}; nothing to move aside",
            path.display()
        )));
    }
    // A running service holds redb's writer lock; opening for writing fails then. On a file too
    // damaged to open, no service can be using it either. A zero-length file is not opened at all
    // (redb would make it a new database).
    let in_use = path.metadata().is_ok_and(|m| m.len() > 0)
        && matches!(
            catch_quietly(|| builder(FileSharing::WithReaders).create(&path)),
            Ok(Err(DatabaseError::DatabaseAlreadyOpen))
        );
    if in_use {
        return Err(OutboxError::Storage(format!(
            "{} is in use by a running emitter; stop it first",
            path.display()
        )));
    }
    let counted = path.exists().then(|| counts(&path)).flatten();
    let stamp = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    let aside = |from: &Path| -> Result<PathBuf, OutboxError> {
        let to = PathBuf::from(format!("{}.aside-{stamp}", from.display()));
        std::fs::rename(from, &to)
            .map_err(|e| OutboxError::Storage(format!("cannot rename {}: {e}", from.display())))?;
        Ok(to)
    };
    let database = if path.exists() {
        aside(&path)?
    } else {
        PathBuf::new()
    };
    let log = dir.join(LOG_DIR);
    if log.exists() {
        aside(&log)?;
    }
    if marker_path.exists() {
        aside(&marker_path)?;
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| OutboxError::Storage(format!("cannot sync {}: {e}", dir.display())))?;
    Ok(MovedAside {
        database,
        events: counted.map(|c| c.0),
        dead_letters: counted.map(|c| c.1),
    })
}
