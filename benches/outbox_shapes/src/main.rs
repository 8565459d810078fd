//! Issue 30's evaluation: the outbox's per-event writes, paced at a rate, on four storage
//! shapes. Prints bytes written (/proc/self/io write_bytes) and CPU (getrusage) per event.
mod segment;
use std::io::Write;
use std::sync::mpsc;
use std::time::{Duration, Instant};

enum Op {
    Append { seq: u64, id: String, body: Vec<u8> },
    Delivered { seq: u64, entry: String },
}

fn event_json(seq: u64) -> Vec<u8> {
    format!(r#"{{"appended_at_ms":1764000000000,"source":"redis","entry":{{"id":"1764000000000-{seq}","generation":"7f0c2d9e-3c1b-4a55-9d0e-2f8b6c4a1e90"}},"event":{{"id":"2b1f6a7c-0d3e-4f5a-8b9c-{seq:012}","version":"v2","type":"sandbox.lifecycle.created","timestamp":"2026-12-06T12:00:00.000000Z","event_category":"lifecycle","event_label":"create","sandbox_id":"i{seq:019}","sandbox_execution_id":"0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d","sandbox_template_id":"base-template-id","sandbox_build_id":"c0ffee00-1111-4222-8333-444455556666","sandbox_team_id":"00000000-0000-4000-8000-000000000001","event_data":{{"sandbox_metadata":{{"user":"bench"}},"execution":{{"started_at":"2026-12-06T12:00:00Z","vcpu_count":2,"memory_mb":512}}}}}}}}"#).into_bytes()
}

trait Shape: Send {
    /// Durably applies a group of operations (one sync).
    fn commit(&mut self, ops: &[Op]);
}

// --- hand-written segment log: [len u32][crc32c u32][payload] ---
struct Log {
    file: std::fs::File,
    buf: Vec<u8>,
    written: usize,
}
impl Log {
    fn open(dir: &std::path::Path) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("00000001.seg"))
            .unwrap();
        Self {
            file,
            buf: Vec::with_capacity(64 << 10),
            written: 0,
        }
    }
    fn frame(&mut self, payload: &[u8]) {
        segment::frame(&mut self.buf, payload);
    }
}
impl Shape for Log {
    fn commit(&mut self, ops: &[Op]) {
        self.buf.clear();
        for op in ops {
            match op {
                Op::Append { seq, id, body } => {
                    let mut p = Vec::with_capacity(body.len() + 64);
                    p.push(1);
                    p.extend_from_slice(&seq.to_le_bytes());
                    p.extend_from_slice(id.as_bytes());
                    p.push(0);
                    p.extend_from_slice(b"default\0");
                    p.extend_from_slice(body);
                    self.frame(&p);
                }
                Op::Delivered { seq, .. } => {
                    let mut p = vec![2];
                    p.extend_from_slice(&seq.to_le_bytes());
                    p.extend_from_slice(b"default");
                    self.frame(&p);
                }
            }
        }
        if std::env::var_os("PAD").is_some() {
            // PAD: each commit starts on a fresh 4 KiB page, so a commit of one event dirties
            // one page, not the tail page of the previous commit again as well.
            segment::pad(&mut self.buf, self.written);
        }
        self.written += self.buf.len();
        self.file.write_all(&self.buf).unwrap();
        self.file.sync_data().unwrap();
    }
}

// --- redb, as the outbox uses it today: a transaction per append, one per completion batch ---
mod r {
    use redb::TableDefinition;
    pub const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
    pub const IDS: TableDefinition<&str, i64> = TableDefinition::new("event_ids");
    pub const PENDING: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("pending");
    pub const SANDBOXES: TableDefinition<&str, &[u8]> = TableDefinition::new("sandboxes");
    pub const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
    pub const LIVE: TableDefinition<&str, &[u8]> = TableDefinition::new("stream_entries");
    pub const ACKS: TableDefinition<&str, &str> = TableDefinition::new("stream_acks");
}
struct Redb(redb::Database);
impl Shape for Redb {
    fn commit(&mut self, ops: &[Op]) {
        for op in ops {
            let mut txn = self.0.begin_write().unwrap();
            txn.set_durability(redb::Durability::Immediate).unwrap();
            {
                let mut events = txn.open_table(r::EVENTS).unwrap();
                let mut pending = txn.open_table(r::PENDING).unwrap();
                let mut live = txn.open_table(r::LIVE).unwrap();
                let mut acks = txn.open_table(r::ACKS).unwrap();
                match op {
                    Op::Append { seq, id, body } => {
                        events.insert(*seq, body.as_slice()).unwrap();
                        txn.open_table(r::IDS)
                            .unwrap()
                            .insert(id.as_str(), 1)
                            .unwrap();
                        pending.insert(("default", *seq), br#"{"sandbox_id":"i0000000000000000001","attempts":0,"next_attempt_at_ms":0,"last_error":null,"last_status":null}"#.as_slice()).unwrap();
                        txn.open_table(r::SANDBOXES)
                            .unwrap()
                            .insert(id.as_str(), &body[..200])
                            .unwrap();
                        live.insert(
                            format!("1764000000000-{seq}").as_str(),
                            br#"{"seq":1,"generation":"7f0c2d9e"}"#.as_slice(),
                        )
                        .unwrap();
                        txn.open_table(r::STATE)
                            .unwrap()
                            .insert("outbox.next_seq", (seq + 1).to_be_bytes().as_slice())
                            .unwrap();
                    }
                    Op::Delivered { seq, entry } => {
                        pending.remove(("default", *seq)).unwrap();
                        events.remove(*seq).unwrap();
                        live.remove(entry.as_str()).unwrap();
                        acks.insert(entry.as_str(), "7f0c2d9e").unwrap();
                    }
                }
            }
            txn.commit().unwrap();
            if let Op::Delivered { entry, .. } = op {
                // stream_synced: the XACK done, forgotten.
                let mut txn = self.0.begin_write().unwrap();
                txn.set_durability(redb::Durability::Immediate).unwrap();
                txn.open_table(r::ACKS)
                    .unwrap()
                    .remove(entry.as_str())
                    .unwrap();
                txn.commit().unwrap();
            }
        }
    }
}

// --- fjall: keyspaces for events, pending, ids; one batch per group, SyncData ---
struct Fjall {
    db: fjall::Database,
    events: fjall::Keyspace,
    pending: fjall::Keyspace,
    ids: fjall::Keyspace,
}
impl Shape for Fjall {
    fn commit(&mut self, ops: &[Op]) {
        let mut batch = self
            .db
            .batch()
            .durability(Some(fjall::PersistMode::SyncData));
        for op in ops {
            match op {
                Op::Append { seq, id, body } => {
                    batch.insert(&self.events, seq.to_be_bytes(), body.as_slice());
                    batch.insert(&self.ids, id.as_bytes(), 1i64.to_be_bytes());
                    batch.insert(
                        &self.pending,
                        [b"default:".as_slice(), &seq.to_be_bytes()].concat(),
                        br#"{"attempts":0}"#.as_slice(),
                    );
                }
                Op::Delivered { seq, .. } => {
                    batch.remove(
                        &self.pending,
                        [b"default:".as_slice(), &seq.to_be_bytes()].concat(),
                    );
                    batch.remove(&self.events, seq.to_be_bytes());
                }
            }
        }
        batch.commit().unwrap();
    }
}

// --- okaywal: one entry per group, a chunk per record ---
#[derive(Debug)]
struct Nothing;
impl okaywal::LogManager for Nothing {
    fn recover(&mut self, _entry: &mut okaywal::Entry<'_>) -> std::io::Result<()> {
        Ok(())
    }
    fn checkpoint_to(
        &mut self,
        _last: okaywal::EntryId,
        _r: &mut okaywal::SegmentReader,
        _wal: &okaywal::WriteAheadLog,
    ) -> std::io::Result<()> {
        Ok(())
    }
}
struct OkayWal(okaywal::WriteAheadLog);
impl Shape for OkayWal {
    fn commit(&mut self, ops: &[Op]) {
        let mut entry = self.0.begin_entry().unwrap();
        for op in ops {
            match op {
                Op::Append { body, .. } => {
                    entry.write_chunk(body).unwrap();
                }
                Op::Delivered { seq, .. } => {
                    entry.write_chunk(&seq.to_le_bytes()).unwrap();
                }
            }
        }
        entry.commit().unwrap();
    }
}

fn write_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}
fn cpu_us() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 * 1e6 + tv.tv_usec as f64;
    t(u.ru_utime) + t(u.ru_stime)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let shape_name = args[1].clone();
    let rate: u64 = args[2].parse().unwrap();
    let secs: u64 = args[3].parse().unwrap();
    let dir = std::path::PathBuf::from(&args[4]);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut shape: Box<dyn Shape> = match shape_name.as_str() {
        "log" => Box::new(Log::open(&dir)),
        "redb" => {
            let mut b = redb::Builder::new();
            b.set_cache_size(8 << 20)
                .set_concurrency_mode(redb::ConcurrencyMode::SingleWriter);
            Box::new(Redb(b.create(dir.join("outbox.redb")).unwrap()))
        }
        "fjall" => {
            let db = fjall::Database::builder(&dir).open().unwrap();
            let ks = |n: &str| {
                db.keyspace(n, fjall::KeyspaceCreateOptions::default)
                    .unwrap()
            };
            let (events, pending, ids) = (ks("events"), ks("pending"), ks("ids"));
            Box::new(Fjall {
                db,
                events,
                pending,
                ids,
            })
        }
        "okaywal" => Box::new(OkayWal(
            okaywal::WriteAheadLog::recover(&dir, Nothing).unwrap(),
        )),
        other => panic!("{other}"),
    };
    // The writer thread: group commit of everything queued while the previous sync ran.
    let (tx, rx) = mpsc::channel::<(Op, Option<mpsc::SyncSender<()>>)>();
    let lazy = std::env::var_os("LAZY").is_some();
    let writer = std::thread::spawn(move || {
        let mut syncs = 0u64;
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            while let Ok(more) = rx.try_recv() {
                group.push(more);
            }
            // LAZY: delivery records wait (up to 100 ms) for the next append's commit; the XACK of
            // their entries waits for that commit too.
            if lazy && group.iter().all(|(_, w)| w.is_none()) {
                let deadline = Instant::now() + Duration::from_millis(100);
                while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                    match rx.recv_timeout(left) {
                        Ok(more) => {
                            let waits = more.1.is_some();
                            group.push(more);
                            if waits {
                                break;
                            }
                        }
                        Err(_) => break,
                    }
                }
            }
            let (ops, waiters): (Vec<Op>, Vec<_>) = group.into_iter().unzip();
            shape.commit(&ops);
            syncs += 1;
            for w in waiters.into_iter().flatten() {
                let _ = w.send(());
            }
        }
        syncs
    });
    // A second of warm-up is not needed for files this small; measure from here.
    let (b0, c0, t0) = (write_bytes(), cpu_us(), Instant::now());
    let n = rate * secs;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    for seq in 1..=n {
        let due = t0 + interval * (seq as u32 - 1);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        tx.send((
            Op::Append {
                seq,
                id: format!("2b1f6a7c-{seq:012}"),
                body: event_json(seq),
            },
            Some(done_tx),
        ))
        .unwrap();
        done_rx.recv().unwrap(); // durable before delivered
        // delivered (the receiver's 2xx) → a small record, not waited for
        tx.send((
            Op::Delivered {
                seq,
                entry: format!("1764000000000-{seq}"),
            },
            None,
        ))
        .unwrap();
    }
    drop(tx);
    let syncs = writer.join().unwrap();
    let (b1, c1) = (write_bytes(), cpu_us());
    println!(
        "{shape_name}{} {rate}/s: {n} events, {:.1} KiB written/event, {:.0} µs CPU/event, {:.2} commits/event, {:.1} s",
        if lazy {
            " (delivery records ride on the next commit)"
        } else {
            ""
        },
        (b1 - b0) as f64 / n as f64 / 1024.0,
        (c1 - c0) / n as f64,
        syncs as f64 / n as f64,
        t0.elapsed().as_secs_f64()
    );
    if shape_name == "log" {
        // The log reads back whole: an event record and a delivery record per event.
        let bytes = std::fs::read(dir.join("00000001.seg")).unwrap();
        let (records, end) = segment::scan(&bytes);
        assert_eq!((records.len(), end), (2 * n as usize, bytes.len()));
    }
}
