//! The log's bytes on disk.
//!
//! A record is a frame, `[length u32 LE][CRC32C of the payload u32 LE][payload]` (the format
//! measured in `benches/outbox_shapes/src/segment.rs`). A commit is one frame holding its header
//! (`'C'`, its number, the length and CRC32C of its body), then its body — the frames of its
//! records — then zeros up to the writer's unit: the disk's 512-byte sector when commits are
//! written straight to the disk, a 4 KiB page when they go through the page cache (`writer.rs`).
//! Either way the next commit starts on a block of its own, and a commit never rewrites a block
//! of the one before (BENCHMARKS.md, issue 30).
//!
//! Commit numbers go up by one from commit to commit across segments, so what is read at a
//! position tells what it is: the next number with a body whose checksum matches is the next
//! commit; a lower number is left over from the file's previous use (segments are recycled);
//! anything else ends the log there. The next commit is looked for at the first sector after a
//! commit and at the first page after it, so one reader reads what either kind of writer wrote.

/// Commits start on sector boundaries: the smallest block a disk writes.
pub(super) const SECTOR: usize = 512;
/// A page of the page cache: what a commit written through it is padded to.
pub(super) const PAGE: usize = 4096;
/// Length and checksum before every payload.
pub(super) const FRAME_HEADER: usize = 8;
/// The first byte of a commit header's payload.
const COMMIT_MARK: u8 = b'C';
/// Mark, number, body length, body checksum.
const COMMIT_HEADER: usize = 1 + 8 + 4 + 4;

/// Appends one frame holding `payload` to `buf`.
pub(super) fn frame(buf: &mut Vec<u8>, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("a log record is smaller than 4 GiB");
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

/// The payload of the frame at `at`, when it is whole and its checksum matches.
pub(super) fn read_frame(bytes: &[u8], at: usize) -> Option<&[u8]> {
    let header = bytes.get(at..at.checked_add(FRAME_HEADER)?)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let start = at + FRAME_HEADER;
    let payload = bytes.get(start..start.checked_add(len)?)?;
    (crc32c::crc32c(payload) == crc).then_some(payload)
}

/// `at` rounded up to a multiple of `unit`.
pub(super) fn round_up(at: usize, unit: usize) -> usize {
    at.div_ceil(unit) * unit
}

/// Where the commit after one that ends at `end` may start: the next sector, or the next page.
pub(super) fn next_starts(end: usize) -> impl Iterator<Item = usize> {
    let sector = round_up(end, SECTOR);
    let page = round_up(end, PAGE);
    std::iter::once(sector).chain((page != sector).then_some(page))
}

/// One commit, encoded: its bytes (not padded; the writer pads them to its unit) and where each
/// record's frame starts in them.
pub(super) struct EncodedCommit {
    pub(super) bytes: Vec<u8>,
    pub(super) record_offsets: Vec<usize>,
}

/// Encodes commit `number` holding `records`, in order.
pub(super) fn encode_commit<'a, I>(number: u64, records: I) -> EncodedCommit
where
    I: IntoIterator<Item = &'a [u8]>,
    I::IntoIter: Clone,
{
    let records = records.into_iter();
    let body_start = FRAME_HEADER + COMMIT_HEADER;
    // Sized once: grown by doubling, a large commit (a compaction's snapshot, megabytes) would
    // hold up to three times its size while it is copied.
    let framed: usize = records.clone().map(|r| FRAME_HEADER + r.len()).sum();
    let mut bytes = Vec::with_capacity(round_up(body_start + framed, PAGE));
    bytes.resize(body_start, 0);
    let mut record_offsets = Vec::with_capacity(records.clone().count());
    for record in records {
        record_offsets.push(bytes.len());
        frame(&mut bytes, record);
    }
    let body = &bytes[body_start..];
    let mut header = Vec::with_capacity(COMMIT_HEADER);
    header.push(COMMIT_MARK);
    header.extend_from_slice(&number.to_le_bytes());
    let body_len = u32::try_from(body.len()).expect("a commit is smaller than 4 GiB");
    header.extend_from_slice(&body_len.to_le_bytes());
    header.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    let mut framed = Vec::with_capacity(body_start);
    frame(&mut framed, &header);
    bytes[..body_start].copy_from_slice(&framed);
    EncodedCommit {
        bytes,
        record_offsets,
    }
}

/// A commit header read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CommitHeader {
    pub(super) number: u64,
    body_len: usize,
    body_crc: u32,
}

/// The commit header at `at`, when a whole one with a matching checksum is there.
pub(super) fn commit_header(bytes: &[u8], at: usize) -> Option<CommitHeader> {
    // Looked for at every sector of a segment: what is not a header's length is not checksummed.
    let len = bytes.get(at..at.checked_add(4)?)?;
    if len != (COMMIT_HEADER as u32).to_le_bytes() {
        return None;
    }
    let payload = read_frame(bytes, at)?;
    if payload[0] != COMMIT_MARK {
        return None;
    }
    Some(CommitHeader {
        number: u64::from_le_bytes(payload[1..9].try_into().ok()?),
        body_len: u32::from_le_bytes(payload[9..13].try_into().ok()?) as usize,
        body_crc: u32::from_le_bytes(payload[13..17].try_into().ok()?),
    })
}

/// A commit read back whole: its records (offset of each frame in `bytes`, and payload), and
/// where its bytes end.
pub(super) struct ReadCommit<'a> {
    pub(super) records: Vec<(usize, &'a [u8])>,
    pub(super) end: usize,
}

/// The commit `header` (read at `at`), when its body is whole and matches its checksum.
pub(super) fn read_commit(bytes: &[u8], at: usize, header: CommitHeader) -> Option<ReadCommit<'_>> {
    let body_start = at + FRAME_HEADER + COMMIT_HEADER;
    let body_end = body_start.checked_add(header.body_len)?;
    let body = bytes.get(body_start..body_end)?;
    if crc32c::crc32c(body) != header.body_crc {
        return None;
    }
    let mut records = Vec::new();
    let mut offset = body_start;
    while offset < body_end {
        // The body's checksum matched, so a frame that does not is a writer's bug, not damage.
        let payload = read_frame(&bytes[..body_end], offset)?;
        records.push((offset, payload));
        offset += FRAME_HEADER + payload.len();
    }
    Some(ReadCommit {
        records,
        end: body_end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_commit_is_allocated_once_with_room_for_its_padding() {
        let snapshot = vec![7u8; 3 << 20];
        let records: [&[u8]; 2] = [b"small", &snapshot];
        let commit = encode_commit(1, records);
        assert_eq!(commit.bytes.capacity(), round_up(commit.bytes.len(), PAGE));
    }

    #[test]
    fn a_commit_reads_back_with_its_records_and_where_it_ends() {
        let records: [&[u8]; 3] = [b"one", b"", b"three"];
        let mut commit = encode_commit(7, records);
        // Header, then three frames.
        assert_eq!(commit.bytes.len(), 25 + 8 * 3 + 8);
        let end = commit.bytes.len();
        commit.bytes.resize(PAGE, 0);
        let header = commit_header(&commit.bytes, 0).unwrap();
        assert_eq!(header.number, 7);
        let read = read_commit(&commit.bytes, 0, header).unwrap();
        let offsets: Vec<usize> = read.records.iter().map(|r| r.0).collect();
        assert_eq!(offsets, commit.record_offsets);
        let payloads: Vec<&[u8]> = read.records.iter().map(|r| r.1).collect();
        assert_eq!(payloads, records);
        assert_eq!(read.end, end);
    }

    #[test]
    fn the_next_commit_is_looked_for_at_the_next_sector_then_the_next_page() {
        assert_eq!(next_starts(0).collect::<Vec<_>>(), [0]);
        assert_eq!(next_starts(58).collect::<Vec<_>>(), [512, PAGE]);
        assert_eq!(next_starts(600).collect::<Vec<_>>(), [1024, PAGE]);
        assert_eq!(next_starts(3600).collect::<Vec<_>>(), [PAGE]);
        assert_eq!(
            next_starts(PAGE + 1).collect::<Vec<_>>(),
            [PAGE + 512, 2 * PAGE]
        );
    }

    #[test]
    fn a_record_is_not_a_commit_header() {
        let mut bytes = Vec::new();
        frame(&mut bytes, b"C not a header");
        assert!(read_frame(&bytes, 0).is_some());
        assert_eq!(commit_header(&bytes, 0), None);
        assert_eq!(commit_header(&[0; PAGE], 0), None);
    }
}
