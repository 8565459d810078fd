//! An appending, checksummed, group-committed log of segments (issue 30): the outbox's records go
//! here instead of a commit of B-trees each.
//!
//! Records are appended by one writer thread in commits, each synced once (`fdatasync`) for
//! everything queued while the previous one was written; a commit is written straight to the
//! disk and padded to a 512-byte sector where the filesystem allows it, else padded to a 4 KiB
//! page of the page cache.
//! Segments are files of a fixed size (zeros until written), named after their first commit, and
//! deleted (or recycled) once the caller says every commit in them is finished. At start every
//! record is read back in order; a commit torn by a crash is cut, a damaged one that had been
//! committed is refused with its segment's name (see `scan.rs`). The format, and why it is this
//! one, is in BENCHMARKS.md (issue 30) and `frame.rs`.

mod frame;
mod scan;
mod segments;
mod writer;

pub(crate) use scan::{Record, ScanMode, scan_dir};
use segments::Writes;

use std::collections::VecDeque;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use writer::{Append, Request, Writer};

/// How a log fails.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum LogError {
    /// Reading or writing a file failed (a full disk, permissions, an I/O error).
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: Arc<std::io::Error>,
    },
    /// A segment holds commits that cannot be read back.
    #[error("the outbox log segment {} is damaged: {reason}", path.display())]
    Damaged { path: PathBuf, reason: String },
    /// The writer thread is gone (it panicked, or the log is being closed).
    #[error("the outbox log's writer has stopped")]
    Stopped,
}

impl LogError {
    pub(super) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_owned(),
            source: Arc::new(source),
        }
    }

    /// Whether the disk is full (ENOSPC).
    pub(crate) fn disk_full(&self) -> bool {
        matches!(self, Self::Io { source, .. }
            if source.raw_os_error() == Some(libc::ENOSPC)
                || source.kind() == std::io::ErrorKind::StorageFull)
    }
}

/// Where a record is, to read it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Location {
    /// The segment's first commit (its name).
    pub(crate) segment: u64,
    /// Where the record's frame starts in it.
    pub(crate) offset: u64,
}

/// A commit that is on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Committed {
    /// Its number: commits are numbered 1, 2, … in the order they are written.
    pub(crate) number: u64,
    /// Where each record of the request is.
    pub(crate) locations: Vec<Location>,
}

/// When records must be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Urgency {
    /// As soon as possible: the caller waits for the commit.
    Now,
    /// With the next urgent commit, or after the linger time when none comes.
    WithNext,
}

/// Sizes and times of a log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogOptions {
    /// Size of a segment file. A bigger commit gets a segment of its own size.
    pub(crate) segment_size: u64,
    /// How long records that are not urgent wait for an urgent commit to ride on.
    pub(crate) linger: Duration,
    /// Write straight to the disk where the filesystem allows it (else through the page cache).
    pub(crate) direct: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            segment_size: 64 << 20,
            linger: Duration::from_millis(100),
            direct: true,
        }
    }
}

/// A commit being written: awaited by a task (an append waits for it without a thread of the
/// blocking pool in between), or waited for on a thread.
pub(crate) struct PendingCommit(oneshot::Receiver<Result<Committed, LogError>>);

impl PendingCommit {
    /// Waits without blocking a thread.
    pub(crate) async fn wait(self) -> Result<Committed, LogError> {
        self.0.await.unwrap_or(Err(LogError::Stopped))
    }

    /// Waits on this thread (the log's tests).
    #[cfg(test)]
    pub(crate) fn wait_blocking(self) -> Result<Committed, LogError> {
        futures_executor::block_on(self.wait())
    }
}

/// The log in one directory, open for appending. Dropping it commits what is queued and stops
/// the writer.
pub(crate) struct Log {
    dir: PathBuf,
    requests: Option<mpsc::Sender<Request>>,
    committed: watch::Receiver<u64>,
    segment_count: Arc<AtomicUsize>,
    newest_segment: Arc<AtomicU64>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Log {
    /// Opens (or creates) the log in `dir`, calling `visit` for every record in it, in order.
    pub(crate) fn open<E: From<LogError>>(
        dir: &Path,
        options: LogOptions,
        visit: impl FnMut(Record<'_>) -> Result<(), E>,
    ) -> Result<Self, E> {
        std::fs::create_dir_all(dir).map_err(|e| LogError::io("create", dir, e))?;
        let recovered = scan_dir(dir, ScanMode::Recovery, visit)?;
        let mut segments = VecDeque::from(recovered.segments);
        let (next_commit, end) = recovered
            .last
            .map_or((1, 0), |end| (end.next_commit, end.end));
        if segments.is_empty() {
            segments.push_back(segments::create(dir, 1, options.segment_size)?);
        }
        let last = &segments.back().expect("the log has a segment").path;
        let (file, writes) = segments::open_for_writing(last, Self::writes(last, options))?;
        let capacity = file
            .metadata()
            .map_err(|e| LogError::io("read", last, e))?
            .len()
            .max(options.segment_size);
        // A commit starts on a block of the writer's own.
        let position = frame::round_up(end, writes.unit()) as u64;
        let (committed, watching) = watch::channel(next_commit - 1);
        let segment_count = Arc::new(AtomicUsize::new(segments.len()));
        let newest_segment = Arc::new(AtomicU64::new(segments.back().map_or(1, |s| s.first)));
        let writer = Writer {
            dir: dir.to_owned(),
            segment_size: options.segment_size,
            segments,
            file,
            capacity,
            position,
            next_commit,
            poisoned: false,
            committed,
            segment_count: segment_count.clone(),
            newest_segment: newest_segment.clone(),
            linger: options.linger,
            writes,
            scratch: Vec::new(),
        };
        let (requests, received) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("outbox-log".into())
            .spawn(move || writer.run(received))
            .map_err(|e| LogError::io("start a writer thread for", dir, e))?;
        Ok(Self {
            dir: dir.to_owned(),
            requests: Some(requests),
            committed: watching,
            segment_count,
            newest_segment,
            writer: Some(writer),
        })
    }

    /// How the segment at `path` is written.
    fn writes(path: &Path, options: LogOptions) -> Writes {
        if options.direct {
            Writes::allowed_for(path)
        } else {
            Writes::Buffered
        }
    }

    fn send(&self, request: Request) {
        if let Some(requests) = &self.requests {
            // A writer that is gone drops the request, and its caller sees `Stopped`.
            let _ = requests.send(request);
        }
    }

    /// Appends `records`, in order, in one commit.
    pub(crate) fn append(&self, records: Vec<Vec<u8>>, urgency: Urgency) -> PendingCommit {
        let (done, pending) = oneshot::channel();
        self.send(Request::Append(Append {
            records,
            urgency,
            done,
        }));
        PendingCommit(pending)
    }

    /// The number of the last commit on disk.
    pub(crate) fn committed(&self) -> u64 {
        *self.committed.borrow()
    }

    /// How many segment files the log has.
    pub(crate) fn segment_count(&self) -> usize {
        self.segment_count.load(Ordering::Relaxed)
    }

    /// The size of the spare segment kept for the next one (0 without one).
    pub(crate) fn spare_bytes(&self) -> u64 {
        segments::spare_len(&self.dir)
    }

    /// The number of the first commit in the segment being written.
    pub(crate) fn newest_segment_start(&self) -> u64 {
        self.newest_segment.load(Ordering::Relaxed)
    }

    /// Deletes the segments whose commits are all numbered below `before` (never the one being
    /// written), in the writer's own time.
    pub(crate) fn release_before(&self, before: u64) {
        self.send(Request::Release { before });
    }

    /// Reads the record at `location` again, checking its checksum.
    pub(crate) fn read(&self, location: Location) -> Result<Vec<u8>, LogError> {
        read_at(&self.dir, location)
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        // Closing the queue lets the writer commit what is left and return.
        self.requests.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Reads the record at `location` of the log in `dir`, checking its checksum (also without the
/// writer: the read-only reader).
pub(crate) fn read_at(dir: &Path, location: Location) -> Result<Vec<u8>, LogError> {
    let path = segments::path(dir, location.segment);
    let file = std::fs::File::open(&path).map_err(|e| LogError::io("open", &path, e))?;
    let mut header = [0; frame::FRAME_HEADER];
    file.read_exact_at(&mut header, location.offset)
        .map_err(|e| LogError::io("read", &path, e))?;
    let len = u64::from(u32::from_le_bytes([
        header[0], header[1], header[2], header[3],
    ]));
    let size = file
        .metadata()
        .map_err(|e| LogError::io("read", &path, e))?
        .len();
    let damaged = |path: PathBuf| LogError::Damaged {
        path,
        reason: format!(
            "the record at byte {} does not match its checksum",
            location.offset
        ),
    };
    if location.offset + frame::FRAME_HEADER as u64 + len > size {
        return Err(damaged(path));
    }
    let len = len as usize;
    let mut bytes = vec![0; frame::FRAME_HEADER + len];
    file.read_exact_at(&mut bytes, location.offset)
        .map_err(|e| LogError::io("read", &path, e))?;
    frame::read_frame(&bytes, 0)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| damaged(path))
}

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod tests;
