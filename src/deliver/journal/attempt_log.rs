//! The journal's copy on disk: every delivery attempt appended as one JSON line to
//! `deliveries.jsonl` in `DATA_DIR`, so the recent history outlives a restart and `deliveries`
//! can read it while the service is down.
//!
//! It is for people, not for delivery: lines are written by a thread of their own in batches and
//! never fsynced, a full queue or a full disk drops lines (logged, never waited for), and the
//! outbox stays the record of what is owed. Disk use is bounded: at `ROTATE_BYTES` the file
//! becomes `deliveries.1.jsonl` (replacing the previous one) and a new file starts.

use super::DeliveryRecord;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

/// The file being written.
const CURRENT: &str = "deliveries.jsonl";
/// The previous file, once `CURRENT` grew past `ROTATE_BYTES`.
const PREVIOUS: &str = "deliveries.1.jsonl";
/// Size at which the current file is rotated; two files at most are kept.
const ROTATE_BYTES: u64 = 8 << 20;
/// Attempts waiting for the writer thread; beyond that they are dropped, never waited for.
const QUEUE: usize = 8192;
/// After each batch the writer lets attempts gather this long before it waits for the next one:
/// a writer that waits on the queue at once is woken (a system call) for every attempt.
const GATHER: std::time::Duration = std::time::Duration::from_millis(20);

/// The attempt log of one data directory.
#[derive(Debug, Clone)]
pub struct AttemptLog {
    dir: PathBuf,
}

/// The sending side: hands records to the writer thread without blocking.
pub(super) struct LogSender {
    queue: SyncSender<DeliveryRecord>,
    dir: PathBuf,
    /// Set while records are being dropped, so a burst is logged once, not per attempt.
    dropping: AtomicBool,
}

impl AttemptLog {
    /// The log kept in `dir` (nothing is opened yet).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// Every readable record on disk, oldest first. A torn or foreign line (an unclean exit, a
    /// full disk) is skipped; missing files are an empty history.
    pub fn read(&self) -> std::io::Result<Vec<DeliveryRecord>> {
        let mut records = Vec::new();
        for name in [PREVIOUS, CURRENT] {
            let file = match File::open(self.dir.join(name)) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for line in BufReader::new(file).split(b'\n') {
                if let Ok(record) = serde_json::from_slice::<DeliveryRecord>(&line?) {
                    records.push(record);
                }
            }
        }
        Ok(records)
    }

    /// Starts the writer thread; it ends when the returned sender is dropped.
    pub(super) fn start_writer(&self) -> std::io::Result<LogSender> {
        let (queue, records) = std::sync::mpsc::sync_channel(QUEUE);
        let writer = LogWriter::open(&self.dir)?;
        std::thread::Builder::new()
            .name("attempt-log".into())
            .spawn(move || writer.run(records))?;
        Ok(LogSender {
            queue,
            dir: self.dir.clone(),
            dropping: AtomicBool::new(false),
        })
    }
}

impl LogSender {
    /// Queues `record`; when the writer is behind, the record is dropped and that is logged once
    /// per burst of drops.
    pub(super) fn send(&self, record: DeliveryRecord) {
        match self.queue.try_send(record) {
            Ok(()) => self.dropping.store(false, Ordering::Relaxed),
            Err(TrySendError::Full(_)) => {
                if !self.dropping.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        dir = %self.dir.display(),
                        "the delivery attempt log is behind; attempts are missing from it until it catches up (deliveries are not affected)"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

struct LogWriter {
    dir: PathBuf,
    out: BufWriter<File>,
    written: u64,
    /// Set while writing fails, so a full disk is logged once, not per attempt.
    failing: bool,
}

impl LogWriter {
    fn open(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join(CURRENT);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)?;
        let mut written = file.metadata()?.len();
        // An unclean exit can leave half a line; end it so the next record starts a line of its own.
        if written > 0 && !ends_with_newline(&mut file)? {
            file.write_all(b"\n")?;
            written += 1;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            out: BufWriter::new(file),
            written,
            failing: false,
        })
    }

    fn run(mut self, records: Receiver<DeliveryRecord>) {
        while let Ok(first) = records.recv() {
            let mut outcome = self.write(&first);
            // Write what is queued, then flush once: one syscall per batch, not per attempt.
            while let Ok(next) = records.try_recv() {
                outcome = outcome.and(self.write(&next));
            }
            outcome = outcome.and(self.out.flush());
            if self.written >= ROTATE_BYTES {
                outcome = outcome.and(self.rotate());
            }
            self.observe(outcome);
            std::thread::sleep(GATHER);
        }
    }

    fn write(&mut self, record: &DeliveryRecord) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).expect("a record serializes");
        line.push(b'\n');
        self.out.write_all(&line)?;
        self.written += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        std::fs::rename(self.dir.join(CURRENT), self.dir.join(PREVIOUS))?;
        *self = Self {
            failing: self.failing,
            ..Self::open(&self.dir)?
        };
        Ok(())
    }

    fn observe(&mut self, outcome: std::io::Result<()>) {
        match outcome {
            Err(error) if !self.failing => {
                self.failing = true;
                tracing::warn!(file = %self.dir.join(CURRENT).display(), %error, "cannot write the delivery attempt log; attempts are missing from it until it can (deliveries are not affected)");
            }
            Ok(()) if self.failing => {
                self.failing = false;
                tracing::info!(file = %self.dir.join(CURRENT).display(), "the delivery attempt log is written again");
            }
            _ => {}
        }
    }
}

fn ends_with_newline(file: &mut File) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64) -> DeliveryRecord {
        DeliveryRecord {
            seq,
            at_ms: 1_000 + seq as i64,
            endpoint: "default".into(),
            event_id: format!("ev-{seq}"),
            sandbox_id: "sbx".into(),
            label: "create".into(),
            outcome: "delivered".into(),
            status: Some(200),
            attempt: 1,
            latency_ms: 2,
            error: None,
            test: false,
            exchange: None,
        }
    }

    fn wait_for(log: &AttemptLog, count: usize) -> Vec<DeliveryRecord> {
        for _ in 0..500 {
            let records = log.read().unwrap();
            if records.len() >= count {
                return records;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the writer did not write {count} records");
    }

    #[test]
    fn records_come_back_in_order_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let log = AttemptLog::new(dir.path());
        let sender = log.start_writer().unwrap();
        for seq in 1..=3 {
            sender.send(record(seq));
        }
        wait_for(&log, 3);
        drop(sender);
        // An unclean exit can leave half a line; the next start appends after it.
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join(CURRENT))
            .unwrap();
        file.write_all(b"{\"seq\":4,\"at_").unwrap();
        let sender = log.start_writer().unwrap();
        sender.send(record(5));
        let seqs: Vec<u64> = wait_for(&log, 4).iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 5]);
    }

    #[test]
    fn the_log_rotates_and_keeps_two_files_at_most() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(dir.path()).unwrap();
        let (mut seq, mut rotated_at) = (0, None);
        while rotated_at.is_none_or(|at| seq < at + 1_000) {
            seq += 1;
            writer.write(&record(seq)).unwrap();
            if writer.written >= ROTATE_BYTES {
                writer.rotate().unwrap();
                rotated_at = Some(seq);
            }
        }
        writer.out.flush().unwrap();
        let current = dir.path().join(CURRENT).metadata().unwrap().len();
        let previous = dir.path().join(PREVIOUS).metadata().unwrap().len();
        assert!(current < ROTATE_BYTES && previous >= ROTATE_BYTES);
        // A second rotation replaces the previous file: two files at most.
        writer.rotate().unwrap();
        writer.write(&record(seq + 1)).unwrap();
        writer.out.flush().unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        seq += 1;
        let records = AttemptLog::new(dir.path()).read().unwrap();
        assert_eq!(records.last().unwrap().seq, seq);
        assert!(records.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
        assert_eq!(records.len(), 1_001, "the oldest records were dropped");
    }
}
