//! The log's writer thread: group commit, rotation and deletion of segments.
//!
//! Everything queued while a commit is written and synced goes into the next commit, with one
//! `fdatasync` for all of it. Records that need not be durable before their caller goes on
//! ([`Urgency::WithNext`]) wait for the next urgent commit, or at most the linger time.
//!
//! A commit is written straight to the disk where the filesystem allows it, padded to a sector
//! (see `segments.rs`); an event alone in its commit then costs the disk about 1 KiB instead of
//! the 4 KiB page the page cache writes back (BENCHMARKS.md, issue 30's seventh round).

use super::frame::{PAGE, encode_commit, round_up};
use super::segments::{self, Segment, Writes};
use super::{Committed, Location, LogError, Urgency};
use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// Work for the writer.
pub(super) enum Request {
    /// Records to append, in order, in one commit.
    Append(Append),
    /// Delete the segments whose commits are all numbered below this.
    Release { before: u64 },
}

pub(super) struct Append {
    pub(super) records: Vec<Vec<u8>>,
    pub(super) urgency: Urgency,
    pub(super) done: oneshot::Sender<Result<Committed, LogError>>,
}

/// The writer's state; it lives on its thread.
pub(super) struct Writer {
    pub(super) dir: PathBuf,
    /// Size of a new segment.
    pub(super) segment_size: u64,
    /// Oldest first; the last is written.
    pub(super) segments: VecDeque<Segment>,
    pub(super) file: File,
    /// Size of the segment written.
    pub(super) capacity: u64,
    /// Where the next commit goes.
    pub(super) position: u64,
    pub(super) next_commit: u64,
    /// A write or sync at `position` failed: what it left may be on disk, so the next commit
    /// written must be the same number at the same place (never a newer one elsewhere).
    pub(super) poisoned: bool,
    /// The number of the last durable commit.
    pub(super) committed: watch::Sender<u64>,
    /// How many segments there are, for the owner to decide when to give old ones back.
    pub(super) segment_count: Arc<AtomicUsize>,
    /// The first commit of the segment written, for the owner to pace its rounds by segments.
    pub(super) newest_segment: Arc<AtomicU64>,
    pub(super) linger: Duration,
    pub(super) writes: Writes,
    /// Where a commit is copied for a direct write, which needs its memory aligned.
    pub(super) scratch: Vec<u8>,
}

impl Writer {
    /// Runs until every handle is dropped, then commits what is left.
    pub(super) fn run(mut self, requests: Receiver<Request>) {
        let mut batch = Vec::new();
        let mut lingering_since: Option<Instant> = None;
        loop {
            let received = match lingering_since {
                None => requests.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(since) => requests.recv_timeout(self.linger.saturating_sub(since.elapsed())),
            };
            match received {
                Ok(request) => self.take(request, &mut batch),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    if !batch.is_empty() {
                        self.commit(batch);
                    }
                    return;
                }
            }
            // Everything that arrived meanwhile shares the commit.
            while let Ok(request) = requests.try_recv() {
                self.take(request, &mut batch);
            }
            if batch.is_empty() {
                lingering_since = None;
                continue;
            }
            let since = *lingering_since.get_or_insert_with(Instant::now);
            let urgent = batch.iter().any(|a| a.urgency == Urgency::Now);
            if urgent || since.elapsed() >= self.linger {
                self.commit(std::mem::take(&mut batch));
                lingering_since = None;
            }
        }
    }

    fn take(&mut self, request: Request, batch: &mut Vec<Append>) {
        match request {
            Request::Append(append) => batch.push(append),
            Request::Release { before } => {
                if let Err(e) = self.release(before) {
                    // Tried again at the next release; the segment only takes disk meanwhile.
                    tracing::warn!(error = %e, "could not delete a finished outbox log segment");
                }
            }
        }
    }

    fn commit(&mut self, batch: Vec<Append>) {
        match self.write(&batch) {
            Ok((number, segment, offsets)) => {
                // Before any caller goes on: what it does next may ask what is committed.
                self.committed.send_replace(number);
                let mut offsets = offsets.into_iter();
                for append in batch {
                    let locations = append
                        .records
                        .iter()
                        .zip(offsets.by_ref())
                        .map(|(_, offset)| Location { segment, offset })
                        .collect();
                    // A caller that stopped waiting needs no answer.
                    let _ = append.done.send(Ok(Committed { number, locations }));
                }
            }
            Err(e) => {
                for append in batch {
                    let _ = append.done.send(Err(e.clone()));
                }
            }
        }
    }

    /// Writes and syncs one commit of `batch`; returns its number, its segment and where each
    /// record is in it.
    fn write(&mut self, batch: &[Append]) -> Result<(u64, u64, Vec<u64>), LogError> {
        let records = || {
            batch
                .iter()
                .flat_map(|a| a.records.iter().map(Vec::as_slice))
        };
        let mut commit = encode_commit(self.next_commit, records());
        if self.position + self.padded_len(commit.bytes.len()) > self.capacity {
            if self.poisoned {
                // What the failed commit left is overwritten here before moving on.
                self.write_at(encode_commit(self.next_commit, []).bytes)?;
            }
            self.rotate(commit.bytes.len() as u64)?;
            commit = encode_commit(self.next_commit, records());
        }
        let start = self.position;
        self.write_at(commit.bytes)?;
        let segment = self.segments.back().map_or(0, |s| s.first);
        let offsets = commit
            .record_offsets
            .iter()
            .map(|offset| start + *offset as u64)
            .collect();
        Ok((self.next_commit - 1, segment, offsets))
    }

    /// How many bytes a commit of `len` takes at the current position: up to the next unit.
    fn padded_len(&self, len: usize) -> u64 {
        let position = self.position as usize;
        (round_up(position + len, self.writes.unit()) - position) as u64
    }

    /// Writes one encoded commit at the current position, padded, and syncs it.
    fn write_at(&mut self, mut bytes: Vec<u8>) -> Result<(), LogError> {
        bytes.resize(self.padded_len(bytes.len()) as usize, 0);
        self.poisoned = true;
        let path = self
            .segments
            .back()
            .map(|s| s.path.clone())
            .unwrap_or_default();
        let mut written = self.write_synced(&bytes);
        if matches!(self.writes, Writes::Direct { .. })
            && written
                .as_ref()
                .is_err_and(|e| e.raw_os_error() == Some(libc::EINVAL))
        {
            // The filesystem said it takes direct writes, then refused one: the page cache it is.
            tracing::warn!(path = %path.display(), "the outbox log's filesystem refused a direct write; writing through the page cache from now on");
            (self.file, self.writes) = segments::open_for_writing(&path, Writes::Buffered)?;
            written = self.write_synced(&bytes);
        }
        written.map_err(|e| LogError::io("write", &path, e))?;
        self.poisoned = false;
        self.position += bytes.len() as u64;
        self.next_commit += 1;
        if self.scratch.capacity() > SCRATCH_KEPT {
            // A snapshot's megabytes are not kept for the next commit of a kilobyte.
            self.scratch = Vec::new();
        }
        Ok(())
    }

    fn write_synced(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let bytes = match self.writes {
            Writes::Direct { .. } => aligned(&mut self.scratch, bytes),
            Writes::Buffered => bytes,
        };
        self.file
            .write_all_at(bytes, self.position)
            .and_then(|()| self.file.sync_data())
    }

    /// Starts a new segment big enough for a commit of `len` bytes.
    fn rotate(&mut self, len: u64) -> Result<(), LogError> {
        let size = self
            .segment_size
            .max(len.div_ceil(PAGE as u64) * PAGE as u64);
        let segment = segments::create(&self.dir, self.next_commit, size)?;
        let (file, writes) = segments::open_for_writing(&segment.path, self.writes)?;
        self.writes = writes;
        if self.position == 0 {
            // The segment written was still empty, and is the one just replaced under its name.
            self.segments.pop_back();
        }
        self.newest_segment.store(segment.first, Ordering::Relaxed);
        self.segments.push_back(segment);
        self.segment_count
            .store(self.segments.len(), Ordering::Relaxed);
        self.file = file;
        self.capacity = size;
        self.position = 0;
        Ok(())
    }

    /// Deletes the oldest segments while every commit in them is numbered below `before`; never
    /// the one being written.
    fn release(&mut self, before: u64) -> Result<(), LogError> {
        while self.segments.len() > 1 && self.segments[1].first <= before {
            segments::delete(&self.dir, &self.segments[0], self.segment_size)?;
            self.segments.pop_front();
            self.segment_count
                .store(self.segments.len(), Ordering::Relaxed);
        }
        Ok(())
    }
}

/// The scratch buffer's capacity kept from one commit to the next.
const SCRATCH_KEPT: usize = 256 << 10;

/// `bytes` copied to where a direct write can take them from: memory aligned to a page (more
/// than any filesystem asks, see `Writes::allowed_for`).
fn aligned<'a>(scratch: &'a mut Vec<u8>, bytes: &[u8]) -> &'a [u8] {
    scratch.clear();
    scratch.reserve(bytes.len() + PAGE);
    // Only the bytes before the aligned start are filled with zeros, not the whole buffer.
    let start = scratch.as_ptr().align_offset(PAGE);
    scratch.resize(start, 0);
    scratch.extend_from_slice(bytes);
    &scratch[start..]
}
