//! The log's crash tests: its last commits cut at every byte and damaged at every byte, and a
//! damaged earlier segment, for commits written straight to the disk and through the page cache.

use super::frame::PAGE;
use super::tests::{append_now, direct_unit, open, options, payloads, recover};
use super::*;

/// A log of a full first segment (commits 1–8, one page each) and a last segment (from commit
/// 9) of four commits: one record, two records of which one crosses pages, three records, one.
/// Returns the directory, the last segment's path and bytes, and per commit of the last segment
/// its records and where its header and body lie (`start..end`).
struct Damageable {
    dir: tempfile::TempDir,
    /// What a commit is padded to: a page through the page cache, a sector written directly.
    unit: usize,
    last: PathBuf,
    bytes: Vec<u8>,
    earlier: Vec<Vec<u8>>,
    commits: Vec<(std::ops::Range<usize>, Vec<Vec<u8>>)>,
}

/// Every way the log writes that this filesystem allows: through the page cache, and directly.
fn damageables() -> Vec<Damageable> {
    let mut all = vec![damageable(false).unwrap()];
    all.extend(damageable(true));
    all
}

fn damageable(direct: bool) -> Option<Damageable> {
    let dir = tempfile::tempdir().unwrap();
    let unit = if direct {
        direct_unit(dir.path())?
    } else {
        PAGE
    };
    let opts = LogOptions {
        direct,
        ..options(8, Duration::from_millis(10))
    };
    let (log, _) = open(dir.path(), opts).unwrap();
    // Records that fill a page each with their commit's header and frame (25 + 8 bytes).
    let earlier: Vec<Vec<u8>> = (0..8u8)
        .map(|i| {
            let mut record = vec![i; PAGE - 33];
            record[0] = b'e';
            record
        })
        .collect();
    for record in &earlier {
        append_now(&log, &[record]);
    }
    let last_commits: Vec<Vec<Vec<u8>>> = vec![
        vec![b"appended 1".to_vec()],
        vec![vec![b'x'; 5000], b"appended 2".to_vec()],
        vec![
            b"retry".to_vec(),
            b"finished".to_vec(),
            b"acknowledged".to_vec(),
        ],
        vec![b"appended 3".to_vec()],
    ];
    let mut commits = Vec::new();
    for records in &last_commits {
        let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        let committed = append_now(&log, &refs);
        assert_eq!(committed.locations[0].segment, 9);
        // The header (8 + 17 bytes) comes right before the first record.
        let start = committed.locations[0].offset as usize - 25;
        let end =
            committed.locations.last().unwrap().offset as usize + 8 + records.last().unwrap().len();
        commits.push((start..end, records.clone()));
    }
    drop(log);
    let last = segments::path(dir.path(), 9);
    let bytes = std::fs::read(&last).unwrap();
    Some(Damageable {
        dir,
        unit,
        last,
        bytes,
        earlier,
        commits,
    })
}

impl Damageable {
    /// Every record of the commits of the last segment that pass `keep`, after the earlier ones.
    fn expected(&self, keep: impl Fn(&std::ops::Range<usize>) -> bool) -> Vec<Vec<u8>> {
        let mut out = self.earlier.clone();
        for (range, records) in &self.commits {
            if keep(range) {
                out.extend(records.iter().cloned());
            }
        }
        out
    }

    /// From the first byte of the last three commits to just past the last one's unit.
    fn offsets(&self) -> std::ops::Range<usize> {
        let last_end = self.commits.last().unwrap().0.end;
        self.commits[1].0.start..(last_end.div_ceil(self.unit) * self.unit + 16)
    }
}

#[test]
fn a_last_segment_cut_at_every_byte_of_its_last_commits_keeps_every_whole_commit() {
    for log in damageables() {
        cut_at_every_byte(&log);
    }
}

fn cut_at_every_byte(log: &Damageable) {
    for offset in log.offsets().clone().take_while(|o| *o <= log.bytes.len()) {
        std::fs::write(&log.last, &log.bytes[..offset]).unwrap();
        let expected = log.expected(|commit| commit.end <= offset);
        assert_eq!(
            recover(log.dir.path()).unwrap(),
            expected,
            "cut at {offset}"
        );
        if offset % 97 == 0 {
            // The log goes on after the cut, and what follows reads back after it.
            let opts = LogOptions {
                direct: log.unit != PAGE,
                ..options(8, Duration::ZERO)
            };
            let (reopened, read) = open(log.dir.path(), opts).unwrap();
            assert_eq!(payloads(&read), expected, "cut at {offset}");
            append_now(&reopened, &[b"after the cut"]);
            drop(reopened);
            let mut with_next = expected;
            with_next.push(b"after the cut".to_vec());
            assert_eq!(
                recover(log.dir.path()).unwrap(),
                with_next,
                "cut at {offset}"
            );
        }
    }
}

#[test]
fn a_byte_damaged_anywhere_in_the_last_commits_is_cut_when_last_and_refused_when_committed_after() {
    for log in damageables() {
        damage_every_byte(&log);
    }
}

fn damage_every_byte(log: &Damageable) {
    let last_commit = log.commits.last().unwrap().0.clone();
    for offset in log.offsets() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut damaged = log.bytes.clone();
            damaged[offset] ^= flip;
            std::fs::write(&log.last, &damaged).unwrap();
            let hit = log
                .commits
                .iter()
                .find(|(range, _)| range.contains(&offset));
            let result = recover(log.dir.path());
            match hit {
                // Padding is never read.
                None => assert_eq!(result.unwrap(), log.expected(|_| true), "byte {offset}"),
                // The last commit, damaged, is what a torn one looks like: cut.
                Some((range, _)) if *range == last_commit => assert_eq!(
                    result.unwrap(),
                    log.expected(|commit| *commit != last_commit),
                    "byte {offset}"
                ),
                // A commit followed by another was committed: refused, naming the segment.
                Some(_) => match result {
                    Err(LogError::Damaged { path, .. }) => {
                        assert_eq!(path, log.last, "byte {offset}")
                    }
                    other => panic!("byte {offset} ^ {flip:#x}: {other:?}"),
                },
            }
        }
    }
}

#[test]
fn a_damaged_segment_other_than_the_last_is_refused_with_its_name() {
    for log in damageables() {
        refuse_damaged_first_segment(&log);
    }
}

fn refuse_damaged_first_segment(log: &Damageable) {
    let first = segments::path(log.dir.path(), 1);
    let intact = std::fs::read(&first).unwrap();
    let refused = |what: &str| match open(log.dir.path(), LogOptions::default()) {
        Err(LogError::Damaged { path, reason }) => {
            assert_eq!(path, first, "{what}: {reason}");
            let shown = LogError::Damaged { path, reason }.to_string();
            assert!(shown.contains("00000000000000000001.seg"), "{shown}");
        }
        Err(other) => panic!("{what}: {other}"),
        Ok(_) => panic!("{what}: opened"),
    };
    // A byte of commit 4, in the middle of the first segment.
    let mut damaged = intact.clone();
    damaged[3 * PAGE + 30] ^= 0x10;
    std::fs::write(&first, &damaged).unwrap();
    refused("a damaged byte");
    // Its last commit cut off: the last segment starts at a commit it no longer has.
    std::fs::write(&first, &intact[..7 * PAGE + 20]).unwrap();
    refused("cut short");
    std::fs::write(&first, &intact).unwrap();
    assert_eq!(recover(log.dir.path()).unwrap(), log.expected(|_| true));
}
