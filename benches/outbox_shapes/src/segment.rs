//! The record format of the hand-written log measured here, and the scan that reads a segment
//! back after a crash: `[length u32 LE][CRC32C of the payload u32 LE][payload]`, commits padded
//! with zeros to the next 4 KiB page. A zero length is padding: the scan goes on at the next page.
//! The first record that does not fit in the file or whose checksum does not match ends the
//! segment: it and everything after it is the torn tail of the last commit, cut, never read.

pub const PAGE: usize = 4096;
const HEADER: usize = 8;

/// Appends one record to `buf`.
pub fn frame(buf: &mut Vec<u8>, payload: &[u8]) {
    assert!(!payload.is_empty() && payload.len() < u32::MAX as usize);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Pads a commit to the next page, so that the next commit starts on a fresh page.
pub fn pad(buf: &mut Vec<u8>, written_before: usize) {
    let end = written_before + buf.len();
    buf.resize(buf.len() + (PAGE - end % PAGE) % PAGE, 0);
}

/// The records of a segment, and where its valid part ends (the file is cut there).
pub fn scan(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while at + HEADER <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap());
        if len == 0 {
            // Padding: zeros up to the next page, or the tail is torn here.
            let next = (at / PAGE + 1) * PAGE;
            if crc != 0 || bytes[at..next.min(bytes.len())].iter().any(|b| *b != 0) {
                break;
            }
            at = next;
            continue;
        }
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        if crc32c::crc32c(payload) != crc {
            break;
        }
        records.push(payload);
        at += HEADER + len;
    }
    (records, at.min(bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment of `commits` commits of a few records each; returns it and each record's
    /// (start, end, payload).
    fn segment(commits: usize) -> (Vec<u8>, Vec<(usize, usize, Vec<u8>)>) {
        let mut file = Vec::new();
        let mut records = Vec::new();
        for c in 0..commits {
            let mut buf = Vec::new();
            for r in 0..=(c % 3) {
                let payload = format!(
                    "{{\"commit\":{c},\"record\":{r},\"pad\":\"{}\"}}",
                    "x".repeat(40 * r + c)
                )
                .into_bytes();
                let start = file.len() + buf.len();
                frame(&mut buf, &payload);
                records.push((start, file.len() + buf.len(), payload));
            }
            pad(&mut buf, file.len());
            file.extend_from_slice(&buf);
        }
        (file, records)
    }

    /// What a recovery must return when the file is damaged at `offset`: every record that ends
    /// at or before it, and nothing else.
    fn expect(records: &[(usize, usize, Vec<u8>)], offset: usize) -> Vec<&[u8]> {
        records
            .iter()
            .filter(|(_, end, _)| *end <= offset)
            .map(|(_, _, p)| p.as_slice())
            .collect()
    }

    #[test]
    fn an_intact_segment_reads_back_whole() {
        let (file, records) = segment(9);
        let (read, end) = scan(&file);
        assert_eq!(read, expect(&records, file.len()));
        assert_eq!(end, file.len());
    }

    #[test]
    fn truncated_at_every_offset_of_the_last_commits_keeps_every_whole_record() {
        let (file, records) = segment(9);
        let from = records[records.len() - 6].0;
        for offset in from..=file.len() {
            let (read, end) = scan(&file[..offset]);
            assert_eq!(read, expect(&records, offset), "cut at {offset}");
            assert!(end <= offset);
        }
    }

    #[test]
    fn a_byte_corrupted_at_every_offset_of_the_last_commits_is_cut_never_read() {
        let (file, records) = segment(9);
        let from = records[records.len() - 6].0;
        for offset in from..file.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut damaged = file.clone();
                damaged[offset] ^= flip;
                let (read, _) = scan(&damaged);
                // Everything before the damaged record is kept; nothing after it is read.
                let before: Vec<&[u8]> = records
                    .iter()
                    .filter(|(_, end, _)| *end <= offset)
                    .map(|(_, _, p)| p.as_slice())
                    .collect();
                assert_eq!(read, before, "byte {offset} ^ {flip:#x}");
            }
        }
    }
}
