//! Reading the log back: every commit of every segment, in order, and where the next commit goes.
//!
//! What may be cut and what is refused:
//! - The last segment ends at its last whole commit. A commit torn by a crash or a power loss (its
//!   `fdatasync` never returned, so nothing in it was acknowledged) is cut, never read.
//! - A commit numbered past that end, found further on in the same segment, proves the cut one
//!   had been committed: the segment is damaged and refused with its name, as is a segment other
//!   than the last whose commits stop before the number the next segment starts at. Nothing is
//!   silently lost: the operator restores the file or moves the outbox aside on purpose.
//! - A corrupted last commit of the last segment looks exactly like a torn one and is cut.

use super::frame::{SECTOR, commit_header, next_starts, read_commit};
use super::segments::{self, Segment};
use super::{Location, LogError};
use std::path::Path;

/// One record read back.
pub(crate) struct Record<'a> {
    /// The commit that holds it.
    pub(crate) commit: u64,
    /// Where it is, for reading it again later.
    pub(crate) location: Location,
    /// Its bytes.
    pub(crate) payload: &'a [u8],
}

/// Who is reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScanMode {
    /// The writer, at start: damage is refused.
    Recovery,
    /// Another process, while the writer may be appending: the last segment's tail may be a
    /// commit being written, which looks like damage, and is only cut.
    Reading,
}

/// One segment read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SegmentEnd {
    /// The number the next commit takes.
    pub(super) next_commit: u64,
    /// Where the next commit goes (a sector boundary).
    pub(super) end: usize,
    /// A commit numbered at or past `next_commit` found beyond `end` (damage).
    pub(super) later_commit: Option<u64>,
}

/// Reads the commits of a segment whose first commit is `first`, calling `visit` for each record.
pub(super) fn scan_segment<E>(
    bytes: &[u8],
    segment: u64,
    first: u64,
    visit: &mut impl FnMut(Record<'_>) -> Result<(), E>,
) -> Result<SegmentEnd, E> {
    let mut at = 0;
    let mut next_commit = first;
    // Where the next commit may start: the first sector, then the first page, after the last one.
    let mut starts = vec![0];
    while let Some((header, commit)) = starts.iter().find_map(|&start| {
        let header = commit_header(bytes, start).filter(|h| h.number == next_commit)?;
        Some((header, read_commit(bytes, start, header)?))
    }) {
        for (offset, payload) in commit.records {
            visit(Record {
                commit: header.number,
                location: Location {
                    segment,
                    offset: offset as u64,
                },
                payload,
            })?;
        }
        next_commit += 1;
        starts = next_starts(commit.end).collect();
        at = starts[0];
    }
    // Only the cut commit itself is where the next one may start: a header numbered
    // `next_commit` elsewhere, or a higher one anywhere, was written after it.
    let later_commit = (at..bytes.len())
        .step_by(SECTOR)
        .filter_map(|sector| Some((sector, commit_header(bytes, sector)?.number)))
        .find(|&(sector, number)| {
            number > next_commit || (number == next_commit && !starts.contains(&sector))
        })
        .map(|(_, number)| number);
    Ok(SegmentEnd {
        next_commit,
        end: at,
        later_commit,
    })
}

/// The log in a directory, read back.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// The segments, oldest first (none in an empty directory).
    pub(super) segments: Vec<Segment>,
    /// How the last segment ends.
    pub(super) last: Option<SegmentEnd>,
}

/// Reads every segment in `dir`, oldest first, calling `visit` for each record.
pub(crate) fn scan_dir<E: From<LogError>>(
    dir: &Path,
    mode: ScanMode,
    mut visit: impl FnMut(Record<'_>) -> Result<(), E>,
) -> Result<Recovered, E> {
    let segments = segments::list(dir)?;
    let mut last = None;
    for (i, segment) in segments.iter().enumerate() {
        let bytes = match std::fs::read(&segment.path) {
            Ok(bytes) => bytes,
            // A reader raced the writer deleting a finished segment.
            Err(e) if mode == ScanMode::Reading && e.kind() == std::io::ErrorKind::NotFound => {
                continue;
            }
            Err(e) => return Err(LogError::io("read", &segment.path, e).into()),
        };
        let end = scan_segment(&bytes, segment.first, segment.first, &mut visit)?;
        let damaged = |reason: String| LogError::Damaged {
            path: segment.path.clone(),
            reason,
        };
        match segments.get(i + 1) {
            Some(next) if end.next_commit != next.first => {
                return Err(damaged(format!(
                    "its commits end before commit {}, but the next segment starts at commit {}",
                    end.next_commit, next.first
                ))
                .into());
            }
            _ => {}
        }
        let is_last = i + 1 == segments.len();
        if let Some(later) = end.later_commit
            && (mode == ScanMode::Recovery || !is_last)
        {
            return Err(damaged(format!(
                "commit {} at byte {} cannot be read, but commit {later} after it can",
                end.next_commit, end.end
            ))
            .into());
        }
        last = Some(end);
    }
    Ok(Recovered { segments, last })
}
