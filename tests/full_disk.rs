//! Issue 14, finding 2: a full disk is a state, not an exit. On a small tmpfs the outbox fills:
//! the service stays up, `/readyz` answers 503 naming the cause, the Redis source stops reading
//! (entries wait in Redis), deliveries go on, and once space returns writing resumes by itself —
//! every event delivered, no restart.
//!
//! Needs `mount -t tmpfs` (root or CAP_SYS_ADMIN); skips with a message where that is impossible.

mod common;
mod support;

use common::{
    ADMIN_TOKEN, RunningEmitter, TestReceiver, eventually, free_port, http_get_as, wait_for_port,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use support::redis::RedisServer;

const SECRET: &str = "full-disk-secret-0a9b8c7d";
const TEAM: &str = "0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d";
const STREAM: &str = "sandbox.events.stream";

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes zeros to `path` until the file system is full; returns how much it took.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    let mut written = 0;
    loop {
        match file.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    // Then byte-sized writes take what is left of the last page.
    while let Ok(1) = file.write(&[0]) {
        written += 1;
    }
    let _ = file.sync_all();
    written
}

fn xadd_events(redis: &RedisServer, from: usize, count: usize) -> Vec<String> {
    let mut conn = redis.connection();
    let mut ids = Vec::new();
    for i in from..from + count {
        let id = format!("00000000-0000-4000-8000-{i:012}");
        let event = serde_json::json!({
            "id": id, "version": "v2", "type": "sandbox.lifecycle.created",
            "timestamp": jiff::Timestamp::now().to_string(),
            "event_data": {"sandbox_metadata": {"padding": "x".repeat(400)}},
            "sandbox_id": format!("sb{:04}", i % 50), "sandbox_execution_id": "e",
            "sandbox_template_id": "base", "sandbox_build_id": "b", "sandbox_team_id": TEAM
        });
        let _: String = redis::cmd("XADD")
            .arg(STREAM)
            .arg("*")
            .arg("payload")
            .arg(event.to_string())
            .query(&mut conn)
            .unwrap();
        ids.push(id);
    }
    ids
}

/// An emitter whose disk filled while it read, its receiver answering again: what it held is
/// delivered, and results cannot be recorded while the disk stays full.
struct FullDisk {
    // Dropped last: the emitter, Redis and the receiver stop before the tmpfs goes.
    running: RunningEmitter,
    receiver: TestReceiver,
    _redis: RedisServer,
    port: u16,
    filler: PathBuf,
    filled: u64,
    in_outbox: u64,
    expected: Vec<String>,
    /// The emitter's arguments, to start it again.
    args: Vec<String>,
    /// Its configuration file and logs.
    log_dir: tempfile::TempDir,
    _tmpfs: Tmpfs,
}

/// Runs the emitter on a small tmpfs until its disk is full and it delivered what its outbox
/// holds; `None` where no tmpfs can be mounted (the test then skips).
fn fill_while_reading() -> Option<FullDisk> {
    // Room enough that what the emitter writes after the space returns (the events read then,
    // their results, the attempt log's lines for every retry while the receiver failed) fits:
    // on 3 MiB it sometimes filled the disk again, and the test waited on a second full disk.
    let tmpfs = match Tmpfs::mount("8m") {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs for the full-disk test (needs root or CAP_SYS_ADMIN): {e}"
            );
            return None;
        }
    };
    let redis = RedisServer::start();
    let receiver_up = Arc::new(AtomicBool::new(false));
    let up = receiver_up.clone();
    let receiver = TestReceiver::start(
        0,
        SECRET,
        Arc::new(
            move |_: &str, _: &str, _: u32| {
                if up.load(Ordering::SeqCst) { 200 } else { 503 }
            },
        ),
    );
    let data: PathBuf = tmpfs.path().join("data");
    let log_dir = tempfile::tempdir().unwrap();
    let config = log_dir.path().join("c.toml");
    std::fs::write(&config, "[retry]\nschedule = [\"200ms\"]\n").unwrap();
    let port = free_port();
    let args: Vec<String> = [
        "--webhook-url",
        &format!("http://127.0.0.1:{}/hook", receiver.port),
        "--webhook-secret",
        SECRET,
        "--config",
        config.to_str().unwrap(),
        "--redis-url",
        &redis.url(),
        "--team-ids",
        TEAM,
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]
    .map(str::to_owned)
    .into();
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut running = RunningEmitter::start(&arg_refs, log_dir.path().join("log"));
    wait_for_port(port, Duration::from_secs(10));
    assert!(
        eventually(Duration::from_secs(20), || http_get_as(
            port, "/readyz", None
        )
        .0 == 200),
        "{}",
        running.log_text()
    );

    // A healthy standby is ready too (issue 13): wait until this instance holds the lease and
    // reads, so the events below reach the outbox before the disk fills.
    assert!(
        eventually(Duration::from_secs(30), || http_get_as(
            port, "/metrics", None
        )
        .1
        .contains("e2b_webhook_leader 1")),
        "the instance becomes active\n{}",
        running.log_text()
    );

    // The receiver refuses, so nothing leaves the outbox; the disk is then filled to the brim.
    let stored = |port| -> u64 {
        serde_json::from_str::<serde_json::Value>(
            &http_get_as(port, "/status", Some(ADMIN_TOKEN)).1,
        )
        .ok()
        .and_then(|s| s["events"].as_u64())
        .unwrap_or(0)
    };
    let mut expected = xadd_events(&redis, 0, 200);
    // The active instance reads in rounds (a blocking wait, then a read that checks the lease):
    // wait until the first batch is stored, so the disk fills with reading under way.
    assert!(
        eventually(Duration::from_secs(30), || stored(port) > 0),
        "the first events reach the outbox\n{}",
        running.log_text()
    );
    let filler = tmpfs.path().join("filler");
    let filled = fill(&filler);
    expected.extend(xadd_events(&redis, 200, 1800));
    assert!(
        eventually(Duration::from_secs(30), || {
            let (code, body) = http_get_as(port, "/readyz", None);
            code == 503 && body.contains("outbox: disk full")
        }),
        "/readyz turns 503 naming the cause: {:?}\n{}",
        http_get_as(port, "/readyz", None),
        running.log_text()
    );
    // It stays up and says so for as long as the disk is full.
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            running.child.try_wait().unwrap().is_none(),
            "{}",
            running.log_text()
        );
        let (code, body) = http_get_as(port, "/readyz", Some(ADMIN_TOKEN));
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("No space left on device"), "{body}");
    }
    let in_outbox = stored(port);
    assert!(
        in_outbox > 0 && (in_outbox as usize) < expected.len(),
        "the source stopped reading: {in_outbox} of {} in the outbox",
        expected.len()
    );

    // Deliveries go on while the disk is still full: everything the outbox holds arrives (redb
    // cannot record it without space, so it is sent again after a restart, never lost).
    receiver_up.store(true, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(30), || receiver.deliveries().len()
            as u64
            >= in_outbox),
        "deliveries went on: {} delivered of {in_outbox} in the outbox\n{}",
        receiver.deliveries().len(),
        running.log_text()
    );
    assert!(filler.exists());
    Some(FullDisk {
        running,
        receiver,
        _redis: redis,
        port,
        filler,
        filled,
        in_outbox,
        expected,
        args,
        log_dir,
        _tmpfs: tmpfs,
    })
}

/// Whether every event of `expected` reached `receiver`.
fn all_delivered(receiver: &TestReceiver, expected: &[String]) -> bool {
    let delivered: std::collections::HashSet<String> = receiver
        .deliveries()
        .into_iter()
        .map(|d| d.event_id)
        .collect();
    expected.iter().all(|id| delivered.contains(id))
}

#[test]
fn a_full_disk_pauses_reading_and_recovers_by_itself_with_nothing_lost() {
    let Some(mut disk) = fill_while_reading() else {
        return;
    };
    let port = disk.port;
    // Space returns: writing resumes by itself and every event arrives, with no restart.
    std::fs::remove_file(&disk.filler).unwrap();
    let all = eventually(Duration::from_secs(90), || {
        all_delivered(&disk.receiver, &disk.expected)
    });
    let delivered = disk.receiver.deliveries().len();
    assert!(
        all,
        "{delivered} of {} delivered; readyz {:?}\n{}",
        disk.expected.len(),
        http_get_as(port, "/readyz", Some(ADMIN_TOKEN)),
        disk.running.log_text()
    );
    assert!(
        eventually(Duration::from_secs(10), || http_get_as(
            port, "/readyz", None
        )
        .0 == 200),
        "{:?}",
        http_get_as(port, "/readyz", Some(ADMIN_TOKEN))
    );
    assert!(
        disk.running.child.try_wait().unwrap().is_none(),
        "the service stayed up"
    );
    let log = disk.running.log_text();
    assert!(log.contains("the outbox can be written again"), "{log}");
    eprintln!(
        "full disk: {} KiB filler; {} events in the outbox while full; {delivered} deliveries for {} events",
        disk.filled / 1024,
        disk.in_outbox,
        disk.expected.len()
    );
    disk.running.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        disk.running.child.wait().unwrap().success(),
        "{}",
        disk.running.log_text()
    );
}

/// Stopped while the disk is still full, with delivery results it may not be able to record
/// (when recording them needs a new segment): the stop is clean (exit 0, not an error), and a
/// restart once there is space delivers every event, none lost.
#[test]
fn a_stop_while_the_disk_is_full_is_clean_and_nothing_is_lost() {
    let Some(mut disk) = fill_while_reading() else {
        return;
    };
    disk.running.signal(nix::sys::signal::Signal::SIGTERM);
    let status = disk.running.child.wait().unwrap();
    assert!(
        status.success(),
        "exit {status}\n{}",
        disk.running.log_text()
    );

    std::fs::remove_file(&disk.filler).unwrap();
    let args: Vec<&str> = disk.args.iter().map(String::as_str).collect();
    let restarted = RunningEmitter::start(&args, disk.log_dir.path().join("log-after-restart"));
    wait_for_port(disk.port, Duration::from_secs(10));
    assert!(
        eventually(Duration::from_secs(90), || all_delivered(
            &disk.receiver,
            &disk.expected
        )),
        "{} deliveries for {} events\n{}",
        disk.receiver.deliveries().len(),
        disk.expected.len(),
        restarted.log_text()
    );
}
