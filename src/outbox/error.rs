//! How an outbox operation fails, and what an operator does next.

use std::path::{Path, PathBuf};

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
    let mut dir = path.parent().unwrap_or(Path::new("."));
    // A segment of the log names its directory's parent, DATA_DIR.
    if dir.file_name().is_some_and(|name| name == "outbox-log") {
        dir = dir.parent().unwrap_or(dir);
    }
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

impl From<super::log::LogError> for OutboxError {
    fn from(e: super::log::LogError) -> Self {
        use super::log::LogError;
        let disk_full = e.disk_full();
        match e {
            LogError::Io { .. } => Self::Unwritable {
                reason: e.to_string(),
                disk_full,
            },
            LogError::Damaged { path, reason } => Self::Damaged { path, reason },
            LogError::Stopped => Self::Storage(e.to_string()),
        }
    }
}
