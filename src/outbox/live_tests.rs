use super::*;
use crate::outbox::compaction;
use crate::outbox::log::{Log, LogOptions, Record, Urgency};
use std::path::Path;
use std::time::Duration;

const TEAM: &str = "00000000-0000-4000-8000-000000000001";

fn appended(seq: u64, kind: &str, sandbox: &str, endpoints: &[&str]) -> JournalRecord {
    JournalRecord::Appended {
        seq,
        appended_at_ms: 1_000 + seq as i64,
        source: "redis".into(),
        event: serde_json::json!({
            "id": format!("event-{seq}"), "version": "v2",
            "type": format!("sandbox.lifecycle.{kind}"),
            "sandbox_id": sandbox, "sandbox_team_id": TEAM,
        }),
        entry: Some(StreamEntryRef {
            id: format!("{seq}-0"),
            generation: "g1".into(),
        }),
        endpoints: endpoints.iter().map(|e| (*e).to_owned()).collect(),
        tracks_sandbox: true,
    }
}

/// A log whose segments hold two one-page commits each (through the page cache: written
/// straight to the disk, a commit would take a sector).
fn options() -> LogOptions {
    LogOptions {
        segment_size: 2 * 4096,
        linger: Duration::from_millis(5),
        direct: false,
    }
}

/// Opens the log in `dir`, rebuilding the live set from it.
fn rebuild(dir: &Path) -> (Log, Live) {
    let mut live = Live::default();
    let log = Log::open(dir, options(), |r: Record<'_>| {
        live.apply(JournalRecord::decode(r.payload)?, r.commit, r.location)
    })
    .map_err(|e: OutboxError| e.to_string())
    .unwrap();
    (log, live)
}

/// Appends `record` in a commit of its own and applies it, as the outbox does while running.
fn write(log: &Log, live: &mut Live, record: JournalRecord) {
    let committed = log
        .append(vec![record.encode()], Urgency::Now)
        .wait_blocking()
        .unwrap();
    live.apply(record, committed.number, committed.locations[0])
        .unwrap();
}

/// Writes what a snapshot leaves to pages, as a round of compaction does.
fn write_pages(log: &Log, live: &mut Live) {
    write_paged(log, live, compaction::acks_page);
    write_paged(log, live, compaction::retries_page);
    write_paged(log, live, compaction::view_page);
}

fn write_paged<C>(log: &Log, live: &mut Live, page: fn(&Live, Option<&C>) -> compaction::Page<C>) {
    let mut after = None;
    while let Some((records, last)) = page(live, after.as_ref()) {
        for record in records {
            write(log, live, record);
        }
        after = Some(last);
    }
}

fn failed(attempts: u32) -> DeliveryState {
    DeliveryState {
        sandbox_id: "sb1".into(),
        attempts,
        next_attempt_at_ms: 5_000,
        last_error: Some("HTTP 503".into()),
        last_status: Some(503),
    }
}

#[test]
fn the_live_set_rebuilt_from_the_log_is_the_one_kept_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut live) = rebuild(dir.path());
    write(&log, &mut live, appended(1, "created", "sb1", &["a", "b"]));
    write(&log, &mut live, appended(2, "paused", "sb1", &["a"]));
    write(&log, &mut live, appended(0, "created", "sb2", &[]));
    write(&log, &mut live, appended(3, "killed", "sb2", &["b"]));
    let retry = JournalRecord::Retry {
        endpoint: "a".into(),
        seq: 1,
        state: failed(1),
    };
    write(&log, &mut live, retry);
    let finished = |endpoint: &str, seq| JournalRecord::Finished {
        endpoint: endpoint.into(),
        seq,
    };
    write(&log, &mut live, finished("b", 1));
    write(&log, &mut live, finished("b", 3));
    let forgotten = JournalRecord::Forgotten {
        entries: vec!["2-0".into()],
    };
    write(&log, &mut live, forgotten);
    let acknowledged = JournalRecord::Acknowledged {
        entries: vec!["0-0".into()],
    };
    write(&log, &mut live, acknowledged);

    // Event 1 waits for `a` after one failure; 2 was forgotten; the one no endpoint wanted took
    // no number and its entry was acknowledged; 3 is finished and its entry waits for its XACK.
    let pending = live.pending_after("a", 0, 10);
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].seq, pending[0].state.attempts), (1, 1));
    assert!(live.pending_after("b", 0, 10).is_empty());
    let acks: Vec<String> = live
        .acks_after(None, 10)
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(acks, ["3-0"]);
    assert_eq!(live.entry_seq("1-0"), Some(1));
    assert_eq!(live.entry_seq("2-0"), None);
    assert!(live.knows_event("event-0"));
    assert_eq!(live.next_seq(), 4);
    let sandboxes: Vec<SandboxState> = live.sandboxes.records().iter().map(|s| s.state).collect();
    assert_eq!(sandboxes, [SandboxState::Paused]);
    let location = live.event(1).unwrap().location;
    assert_eq!(
        JournalRecord::decode(&log.read(location).unwrap()).unwrap(),
        appended(1, "created", "sb1", &["a", "b"])
    );
    drop(log);

    let (_log, rebuilt) = rebuild(dir.path());
    assert_eq!(rebuilt, live);
}

#[test]
fn old_segments_go_once_a_snapshot_carries_their_state_and_live_events_are_copied_forward() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut live) = rebuild(dir.path());
    // Event 1 stays pending (its endpoint is down) while 2–20 come and go.
    write(
        &log,
        &mut live,
        appended(1, "created", "sb1", &["down", "up"]),
    );
    let retry = JournalRecord::Retry {
        endpoint: "down".into(),
        seq: 1,
        state: failed(3),
    };
    write(&log, &mut live, retry);
    for seq in 2..=20 {
        write(
            &log,
            &mut live,
            appended(seq, "created", &format!("sb{seq}"), &["up"]),
        );
        let finished = JournalRecord::Finished {
            endpoint: "up".into(),
            seq,
        };
        write(&log, &mut live, finished);
    }
    let finished = JournalRecord::Finished {
        endpoint: "up".into(),
        seq: 1,
    };
    write(&log, &mut live, finished);
    let segments = || std::fs::read_dir(dir.path()).unwrap().count();
    let before = segments();

    // Event 1 holds its segment back until it is copied forward, for the endpoint that still has it.
    let snapshot_commit = log.committed() + 1;
    assert_eq!(live.release_point(snapshot_commit), 1);
    let older = live.events_in_segments_before(log.newest_segment_start());
    assert_eq!((older.appended, older.live), (20, 1));
    let copies = live
        .copies_forward(&log, log.newest_segment_start(), 10)
        .unwrap();
    assert_eq!(copies.len(), 1);
    let JournalRecord::Appended { seq, endpoints, .. } = &copies[0] else {
        panic!("not an appended record: {:?}", copies[0]);
    };
    assert_eq!((*seq, endpoints.as_slice()), (1, &["down".to_owned()][..]));
    for copy in copies {
        write(&log, &mut live, copy);
    }
    let snapshot = JournalRecord::Snapshot(live.snapshot());
    write(&log, &mut live, snapshot);
    let snapshot_commit = log.committed();
    write_pages(&log, &mut live);
    let point = live.release_point(snapshot_commit);
    assert!(point > 40, "{point}");
    log.release_before(point);
    live.forget_segments_before(point);
    write(
        &log,
        &mut live,
        JournalRecord::AckQueued { entries: vec![] },
    );
    assert!(
        segments() < before / 4,
        "{} of {before} segments left",
        segments()
    );
    drop(log);

    let (_log, rebuilt) = rebuild(dir.path());
    assert_eq!(rebuilt, live);
    let pending = rebuilt.pending_after("down", 0, 10);
    assert_eq!((pending[0].seq, pending[0].state.attempts), (1, 3));
    assert!(
        rebuilt.knows_event("event-2"),
        "the id window is carried forward"
    );
    assert_eq!(
        rebuilt.acks_after(None, 100).len(),
        19,
        "acknowledgements still to do"
    );
    assert_eq!(rebuilt.sandboxes().len(), 20, "the view is carried forward");
}

#[test]
fn a_view_written_only_in_part_before_a_crash_loses_no_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut live) = rebuild(dir.path());
    for seq in 1..=6 {
        write(
            &log,
            &mut live,
            appended(seq, "created", &format!("sb{seq}"), &[]),
        );
    }
    write(&log, &mut live, appended(7, "killed", "sb2", &[]));
    let view = live.sandboxes().records();
    assert_eq!(view.len(), 5);
    let snapshot = JournalRecord::Snapshot(live.snapshot());
    write(&log, &mut live, snapshot);
    // The process dies after the first page of the view: the segments before are still there.
    let first_page = ViewChanges {
        set: view[..2].to_vec(),
        removed: Vec::new(),
    };
    write(&log, &mut live, first_page.into());
    drop(log);

    let (_log, rebuilt) = rebuild(dir.path());
    assert_eq!(rebuilt.sandboxes().records(), view);
}

#[test]
fn retry_states_and_entries_to_acknowledge_are_read_in_pages_that_follow_one_another() {
    let dir = tempfile::tempdir().unwrap();
    let (log, mut live) = rebuild(dir.path());
    for seq in 1..=3 {
        let sandbox = format!("sb{seq}");
        write(
            &log,
            &mut live,
            appended(seq, "created", &sandbox, &["a", "b"]),
        );
    }
    for (endpoint, seq) in [("b", 2), ("a", 3), ("a", 1)] {
        let state = failed(seq as u32);
        let endpoint = endpoint.to_owned();
        write(
            &log,
            &mut live,
            JournalRecord::Retry {
                endpoint,
                seq,
                state,
            },
        );
    }
    let first = live.retries_after(None, 2);
    let rest = live.retries_after(Some(("a", 3)), 2);
    let keys: Vec<_> = [first, rest]
        .concat()
        .into_iter()
        .map(|(endpoint, seq, state)| (endpoint, seq, state.attempts))
        .collect();
    assert_eq!(
        keys,
        [("a".into(), 1, 1), ("a".into(), 3, 3), ("b".into(), 2, 2)]
    );

    let entries = ["10-0", "5-0", "7-0"].map(|id| StreamEntryRef {
        id: id.into(),
        generation: "g1".into(),
    });
    let queued = JournalRecord::AckQueued {
        entries: entries.to_vec(),
    };
    write(&log, &mut live, queued);
    let first = live.acks_after(None, 2);
    let rest = live.acks_after(Some(&first[1].id), 2);
    let ids: Vec<_> = [first, rest].concat().into_iter().map(|e| e.id).collect();
    assert_eq!(ids, ["5-0", "7-0", "10-0"], "in stream order");
}
