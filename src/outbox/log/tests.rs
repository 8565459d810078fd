use super::frame::PAGE;
use super::*;
use std::time::Instant;

/// A record read back: its commit, where it is, its bytes.
pub(super) type Read = (u64, Location, Vec<u8>);

/// A log written through the page cache: a commit takes a page.
pub(super) fn options(segment_pages: u64, linger: Duration) -> LogOptions {
    LogOptions {
        segment_size: segment_pages * PAGE as u64,
        linger,
        direct: false,
    }
}

/// The unit a log in `dir` writes in when it may write straight to the disk; `None`, said on
/// stderr, where the filesystem takes no direct writes.
pub(super) fn direct_unit(dir: &Path) -> Option<usize> {
    let probe = dir.join("probe");
    std::fs::write(&probe, b"").unwrap();
    let writes = Writes::allowed_for(&probe);
    std::fs::remove_file(&probe).unwrap();
    match writes {
        Writes::Direct { unit } => Some(unit),
        Writes::Buffered => {
            eprintln!(
                "skipped direct writes: the filesystem of {} takes none",
                dir.display()
            );
            None
        }
    }
}

pub(super) fn open(dir: &Path, options: LogOptions) -> Result<(Log, Vec<Read>), LogError> {
    let mut read = Vec::new();
    let log = Log::open(dir, options, |r: Record<'_>| {
        read.push((r.commit, r.location, r.payload.to_vec()));
        Ok::<_, LogError>(())
    })?;
    Ok((log, read))
}

/// What recovery would read from `dir`, without opening it for writing.
pub(super) fn recover(dir: &Path) -> Result<Vec<Vec<u8>>, LogError> {
    let mut read = Vec::new();
    scan_dir(dir, ScanMode::Recovery, |r: Record<'_>| {
        read.push(r.payload.to_vec());
        Ok::<_, LogError>(())
    })?;
    Ok(read)
}

pub(super) fn append_now(log: &Log, records: &[&[u8]]) -> Committed {
    let records = records.iter().map(|r| r.to_vec()).collect();
    log.append(records, Urgency::Now).wait_blocking().unwrap()
}

pub(super) fn payloads(read: &[Read]) -> Vec<Vec<u8>> {
    read.iter().map(|r| r.2.clone()).collect()
}

#[test]
fn records_read_back_in_order_with_their_commits_and_locations() {
    let dir = tempfile::tempdir().unwrap();
    let (log, read) = open(dir.path(), LogOptions::default()).unwrap();
    assert!(read.is_empty());
    let first = append_now(&log, &[b"a", b"bb"]);
    let second = append_now(&log, &[b"", b"ccc"]);
    assert_eq!((first.number, second.number), (1, 2));
    assert_eq!(log.committed(), 2);
    assert_eq!(log.read(second.locations[1]).unwrap(), b"ccc");
    drop(log);

    let (log, read) = open(dir.path(), LogOptions::default()).unwrap();
    let commits: Vec<u64> = read.iter().map(|r| r.0).collect();
    assert_eq!(commits, [1, 1, 2, 2]);
    assert_eq!(payloads(&read), [&b"a"[..], b"bb", b"", b"ccc"]);
    let locations: Vec<Location> = read.iter().map(|r| r.1).collect();
    let written: Vec<Location> = first
        .locations
        .into_iter()
        .chain(second.locations)
        .collect();
    assert_eq!(locations, written);
    // Numbering goes on after a reopen.
    assert_eq!(append_now(&log, &[b"d"]).number, 3);
}

#[test]
fn urgent_records_share_one_commit_with_everything_queued_before_them() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), options(16, Duration::from_secs(60))).unwrap();
    let waiting: Vec<PendingCommit> = (0..5u8)
        .map(|i| log.append(vec![vec![i]], Urgency::WithNext))
        .collect();
    let urgent = append_now(&log, &[b"now"]);
    for pending in waiting {
        assert_eq!(pending.wait_blocking().unwrap().number, urgent.number);
    }
    assert_eq!(urgent.number, 1, "one commit for all six");
    assert_eq!(log.committed(), 1);
}

#[test]
fn records_that_can_wait_are_committed_after_the_linger_time_without_an_urgent_one() {
    let dir = tempfile::tempdir().unwrap();
    let linger = Duration::from_millis(50);
    let (log, _) = open(dir.path(), options(16, linger)).unwrap();
    let started = Instant::now();
    let committed = log
        .append(vec![b"later".to_vec()], Urgency::WithNext)
        .wait_blocking()
        .unwrap();
    assert!(started.elapsed() >= linger);
    assert_eq!(committed.number, 1);
    drop(log);
    assert_eq!(recover(dir.path()).unwrap(), [b"later".to_vec()]);
}

#[test]
fn dropping_the_log_commits_what_was_queued() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), options(16, Duration::from_secs(60))).unwrap();
    let pending = log.append(vec![b"queued".to_vec()], Urgency::WithNext);
    drop(log);
    assert_eq!(pending.wait_blocking().unwrap().number, 1);
    assert_eq!(recover(dir.path()).unwrap(), [b"queued".to_vec()]);
}

#[test]
fn segments_rotate_and_finished_ones_are_deleted_then_recycled_without_their_old_records() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(2, Duration::from_millis(10));
    let (log, _) = open(dir.path(), opts).unwrap();
    // One page per commit, two per segment.
    let numbers: Vec<u64> = (0..10u8)
        .map(|i| append_now(&log, &[&[i; 100]]).number)
        .collect();
    assert_eq!(numbers, (1..=10).collect::<Vec<_>>());
    let names = |dir: &Path| -> Vec<u64> {
        segments::list(dir)
            .unwrap()
            .iter()
            .map(|s| s.first)
            .collect()
    };
    assert_eq!(names(dir.path()), [1, 3, 5, 7, 9]);
    // Commits 1–6 finished: segments 1, 3 and 5 go (the first of them is kept as the spare).
    log.release_before(7);
    let eleven = append_now(&log, &[&[10; 100]]);
    assert_eq!(eleven.number, 11);
    assert_eq!(names(dir.path()), [7, 9, 11]);
    assert!(
        log.read(Location {
            segment: 1,
            offset: 25
        })
        .is_err()
    );
    drop(log);

    let (log, read) = open(dir.path(), opts).unwrap();
    let expected: Vec<Vec<u8>> = (6..=10u8).map(|i| vec![i; 100]).collect();
    assert_eq!(payloads(&read), expected);
    // Segment 11 is segment 1 recycled: what it held (commit 2) is not read after commit 11.
    for i in 11..=16u8 {
        append_now(&log, &[&[i; 100]]);
    }
    assert_eq!(names(dir.path()), [7, 9, 11, 13, 15, 17]);
    drop(log);
    let expected: Vec<Vec<u8>> = (6..=16u8).map(|i| vec![i; 100]).collect();
    assert_eq!(recover(dir.path()).unwrap(), expected);
}

#[test]
fn a_commit_larger_than_a_segment_gets_a_segment_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(1, Duration::from_millis(10));
    let (log, _) = open(dir.path(), opts).unwrap();
    let big = vec![7u8; 3 * PAGE];
    let committed = append_now(&log, &[&big]);
    assert_eq!(log.read(committed.locations[0]).unwrap(), big);
    append_now(&log, &[b"after"]);
    drop(log);
    assert_eq!(recover(dir.path()).unwrap(), [big, b"after".to_vec()]);
}

/// A tmpfs of `size`, unmounted on drop; none where mounting is not allowed.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .is_ok_and(|out| out.status.success());
        mounted.then_some(Self(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

#[test]
fn a_full_disk_fails_commits_until_space_returns_and_loses_nothing_committed() {
    let Some(disk) = Tmpfs::mount("256k") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)");
        return;
    };
    let dir = disk.0.path().join("log");
    // tmpfs does not say it takes direct writes (`statx`): the log writes through the page
    // cache, a page a commit, as the count below shows.
    let opts = LogOptions {
        direct: true,
        ..options(8, Duration::from_millis(10))
    };
    let (log, _) = open(&dir, opts).unwrap();
    // Everything else the disk has goes to a file of its own.
    let filler = disk.0.path().join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let page = vec![1u8; PAGE];
    while std::io::Write::write_all(&mut file, &page).is_ok() {}
    drop(file);
    let mut committed = Vec::new();
    let failure = loop {
        let record = format!("event {}", committed.len()).into_bytes();
        match log
            .append(vec![record.clone()], Urgency::Now)
            .wait_blocking()
        {
            Ok(_) => committed.push(record),
            Err(e) => break e,
        }
    };
    // The segment in use (8 pages) was written whole when made: the disk fills at the next one.
    assert_eq!(committed.len(), 8);
    assert!(failure.disk_full(), "{failure}");
    assert!(
        log.append(vec![b"still full".to_vec()], Urgency::Now)
            .wait_blocking()
            .is_err()
    );
    std::fs::remove_file(&filler).unwrap();
    append_now(&log, &[b"space again"]);
    committed.push(b"space again".to_vec());
    drop(log);
    assert_eq!(recover(&dir).unwrap(), committed);
}

#[test]
fn written_directly_a_small_commit_takes_a_sector_and_through_the_cache_a_page() {
    let dir = tempfile::tempdir().unwrap();
    let Some(unit) = direct_unit(dir.path()) else {
        return;
    };
    let direct = LogOptions {
        direct: true,
        ..options(16, Duration::ZERO)
    };
    let starts = |log: &Log| -> Vec<u64> {
        (0..3)
            .map(|_| append_now(log, &[&[5; 300]]).locations[0].offset - 25)
            .collect()
    };
    let (log, _) = open(dir.path(), direct).unwrap();
    assert_eq!(starts(&log), [0, unit as u64, 2 * unit as u64]);
    drop(log);
    // Through the page cache the log goes on at the next page, a page a commit.
    let (log, _) = open(dir.path(), options(16, Duration::ZERO)).unwrap();
    let page = PAGE as u64;
    let next = (3 * unit as u64).div_ceil(page) * page;
    assert_eq!(starts(&log), [next, next + page, next + 2 * page]);
    drop(log);
    // And directly again, from the unit after the last commit (25 + 8 + 300 bytes): one reader
    // reads both kinds of commit.
    let (log, read) = open(dir.path(), direct).unwrap();
    assert_eq!(read.len(), 6);
    let unit = unit as u64;
    assert_eq!(
        starts(&log)[0],
        (next + 2 * page + 333).div_ceil(unit) * unit
    );
    drop(log);
    assert_eq!(recover(dir.path()).unwrap(), vec![vec![5; 300]; 9]);
}
