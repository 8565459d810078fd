//! Issue 14, findings 3 and 7: a damaged, zeroed or replaced outbox is refused with a message
//! naming the file and the next step (never a panic, nothing written); `outbox move-aside`
//! starts over on purpose; read-only commands work after an unclean exit and end quietly when
//! their output pipe closes.

mod common;

use common::{emitter, lifecycle_ndjson, output};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "damaged-store-secret-1a2b3c";

fn run_command(data: &Path, events: Option<&Path>) -> std::process::Command {
    let mut cmd = emitter();
    cmd.args(["run", "--webhook-url", "http://127.0.0.1:9/hook"])
        .args(["--webhook-secret", SECRET, "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data);
    if let Some(events) = events {
        cmd.arg("--events-file").arg(events);
    }
    cmd
}

/// A data directory holding 40 undelivered events (the endpoint refuses connections).
fn store_with_events(root: &Path, name: &str, unclean: bool) -> PathBuf {
    let data = root.join(name);
    let events = root.join(format!("{name}.ndjson"));
    std::fs::write(&events, lifecycle_ndjson(20, 2).0).unwrap();
    let mut child = run_command(&data, Some(&events))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, out, _) = output(
            emitter()
                .args(["status", "--json", "--data-dir"])
                .arg(&data),
        );
        if code == 0 && out.contains("\"events\":40") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the events never reached the outbox: {out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    if unclean {
        child.kill().unwrap();
    } else {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
    }
    child.wait().unwrap();
    data
}

/// Starts `run` and returns (exit code, stderr) if it exits within 5 s, else stops it.
fn start(data: &Path) -> Option<(i32, String)> {
    let mut child: Child = run_command(data, None)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            return Some((
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    None
}

fn assert_refusal(what: &str, code: i32, stderr: &str, file: &Path) {
    assert_eq!(code, 1, "{what}: {stderr}");
    assert!(
        !stderr.contains("RUST_BACKTRACE") && !stderr.contains("panicked at"),
        "{what} panicked: {stderr}"
    );
    let named = file.display().to_string();
    assert!(
        stderr.contains(&named) && stderr.contains("outbox move-aside --data-dir"),
        "{what}: the message names {named} and the next step: {stderr}"
    );
}

#[test]
fn a_zeroed_store_is_refused_before_anything_is_written_and_move_aside_starts_over() {
    let root = tempfile::tempdir().unwrap();
    let data = store_with_events(root.path(), "zeroed", false);
    let file = data.join("outbox.redb");
    std::fs::File::create(&file).unwrap(); // truncated to 0 bytes

    let (code, stderr) = start(&data).expect("run refuses a zeroed outbox");
    assert_refusal("run on a zeroed outbox", code, &stderr, &file);
    assert!(stderr.contains("empty (0 bytes)"), "{stderr}");
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        0,
        "run wrote to it"
    );
    let (code, _, stderr) = output(emitter().args(["status", "--data-dir"]).arg(&data));
    assert_refusal("status on a zeroed outbox", code, &stderr, &file);

    // A deleted database where the marker says a store lived is refused the same way.
    std::fs::remove_file(&file).unwrap();
    let (code, stderr) = start(&data).expect("run refuses a missing outbox");
    assert_refusal("run on a missing outbox", code, &stderr, &file);
    assert!(!file.exists(), "run created a new outbox in its place");
    std::fs::File::create(&file).unwrap();

    let (code, out, stderr) = output(
        emitter()
            .args(["outbox", "move-aside", "--data-dir"])
            .arg(&data),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(out.contains("outbox.redb.aside-"), "{out}");
    assert!(!file.exists());
    // On purpose, the next start begins with an empty outbox.
    assert_eq!(start(&data), None, "run starts over after move-aside");
    let (code, out, stderr) = output(emitter().args(["status", "--data-dir"]).arg(&data));
    assert_eq!(code, 0, "{stderr}");
    assert!(out.contains("0 events stored"), "{out}");
}

#[test]
fn a_store_replaced_by_another_one_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let first = store_with_events(root.path(), "first", false);
    let second = store_with_events(root.path(), "second", false);
    let file = first.join("outbox.redb");
    std::fs::copy(second.join("outbox.redb"), &file).unwrap();
    let (code, stderr) = start(&first).expect("run refuses a replaced outbox");
    assert_refusal("run on a replaced outbox", code, &stderr, &file);
    assert!(stderr.contains("replaced or emptied"), "{stderr}");
}

#[test]
fn a_damaged_store_is_refused_with_the_file_named_never_a_panic() {
    let root = tempfile::tempdir().unwrap();
    let clean = store_with_events(root.path(), "clean", false);
    let size = std::fs::metadata(clean.join("outbox.redb")).unwrap().len();
    let mut refused = 0;
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for offset in (4096..size).step_by(16 * 1024) {
        let data = root.path().join(format!("damaged-{offset}"));
        std::fs::create_dir_all(&data).unwrap();
        for name in ["outbox.redb", "outbox.id"] {
            std::fs::copy(clean.join(name), data.join(name)).unwrap();
        }
        // 4 KiB of pseudo-random bytes (xorshift) over one page.
        let garbage: Vec<u8> = (0..4096)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let file = data.join("outbox.redb");
        let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.seek(SeekFrom::Start(offset)).unwrap();
        f.write_all(&garbage).unwrap();
        drop(f);

        let (code, out, stderr) = output(emitter().args(["status", "--data-dir"]).arg(&data));
        if code != 0 {
            assert_refusal(&format!("status, page at {offset}"), code, &stderr, &file);
        } else {
            assert!(out.contains("events stored"), "{out}");
        }
        // A page nobody uses may be damaged harmlessly; then the service simply runs.
        if let Some((code, stderr)) = start(&data) {
            assert_refusal(&format!("run, page at {offset}"), code, &stderr, &file);
            refused += 1;
        }
    }
    assert!(refused > 0, "no damage was detected in {size} bytes");
    eprintln!(
        "damaged pages refused by run: {refused} of {}",
        (size - 4096).div_ceil(16 * 1024)
    );
}

#[test]
fn read_only_commands_work_after_an_unclean_exit_and_end_quietly_on_a_closed_pipe() {
    let root = tempfile::tempdir().unwrap();
    let data = store_with_events(root.path(), "killed", true);
    let before = std::fs::read(data.join("outbox.redb")).unwrap();
    let (code, out, stderr) = output(emitter().args(["status", "--data-dir"]).arg(&data));
    assert_eq!(code, 0, "{stderr}");
    assert!(out.contains("40 events stored"), "{out}");
    let (code, out, stderr) = output(
        emitter()
            .args(["dead-letters", "list", "--data-dir"])
            .arg(&data),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(out.contains("no dead letters"), "{out}");
    assert_eq!(
        std::fs::read(data.join("outbox.redb")).unwrap(),
        before,
        "a read-only command changed the file"
    );

    // `status | head -1`: the reader goes away after one line.
    let mut child = emitter()
        .args(["status", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("Broken pipe") && !stderr.contains("panicked"),
        "{stderr}"
    );
}
