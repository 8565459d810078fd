//! The store's keys and encoding, pinned: pending rows per endpoint in sequence order, event ids
//! remembered, events kept while any endpoint still has them, sequence numbers never reused.

use super::*;
use crate::event::{EventFilter, SandboxEvent};
use crate::outbox::{AppendReport, DeliveryState, FileSharing, Route, StreamEntryRef, records};

const TEAM: &str = "0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d";

fn event(id: &str, sandbox: &str, kind: &str) -> SandboxEvent {
    // Key order and an unknown field, as the orchestrator may send them: both must survive.
    let json = format!(
        r#"{{"version":"v2","zeta":{{"b":1,"a":2}},"id":"{id}","type":"sandbox.lifecycle.{kind}","sandbox_id":"{sandbox}","sandbox_team_id":"{TEAM}","timestamp":"2026-11-26T00:00:00Z"}}"#
    );
    SandboxEvent::parse(json.as_bytes()).unwrap()
}

/// A store in `dir` routing to `routes`, as one instance without Redis opens it.
fn open(dir: &std::path::Path, routes: Vec<Route>) -> Store {
    Store::open(dir, routes, false, FileSharing::WithReaders).unwrap()
}

/// `Store::append` of events from no stream, waited for on this thread.
fn append(
    store: &Store,
    source: &str,
    events: &[SandboxEvent],
) -> Result<AppendReport, OutboxError> {
    futures_executor::block_on(store.append(source, events, None))
}

/// Records `completions` as the outbox does: the results, then a round of giving segments back
/// when one is due.
fn complete(store: &Store, completions: &[Completion]) -> Vec<u64> {
    let removed = futures_executor::block_on(store.complete(completions)).unwrap();
    store.give_back_segments();
    removed
}

fn route(endpoint: &str, labels: &str) -> Route {
    Route {
        endpoint: endpoint.into(),
        filter: EventFilter::parse(labels).unwrap(),
    }
}

fn seqs(store: &Store, endpoint: &str, after: u64, limit: usize) -> Vec<u64> {
    store
        .pending_after(endpoint, after, limit)
        .unwrap()
        .iter()
        .map(|p| p.seq)
        .collect()
}

fn delivered(endpoint: &str, seq: u64) -> Completion {
    Completion::Delivered {
        endpoint: endpoint.into(),
        seq,
    }
}

#[test]
fn pending_rows_are_per_endpoint_in_sequence_order_even_when_one_id_prefixes_another() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        dir.path(),
        vec![route("a", "create,kill"), route("ab", "kill")],
    );
    let events: Vec<SandboxEvent> = (0..12)
        .map(|i| {
            let kind = if i % 3 == 0 { "killed" } else { "created" };
            event(&format!("ev-{i:02}"), &format!("s{}", i % 4), kind)
        })
        .collect();
    let report = append(&store, "test", &events).unwrap();
    assert_eq!((report.appended, report.last_seq), (12, Some(12)));
    assert_eq!(seqs(&store, "a", 0, 100), (1..=12).collect::<Vec<_>>());
    assert_eq!(seqs(&store, "ab", 0, 100), [1, 4, 7, 10]);
    assert_eq!(
        seqs(&store, "a", 4, 3),
        [5, 6, 7],
        "after a cursor, limited"
    );
    assert!(seqs(&store, "b", 0, 100).is_empty());
    let first = &store.pending_after("a", 0, 1).unwrap()[0];
    assert_eq!(
        (first.state.sandbox_id.as_str(), first.state.attempts),
        ("s0", 0)
    );
}

#[test]
fn an_event_id_is_taken_once_across_batches_and_within_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), vec![route("a", "*")]);
    let first = append(&store, "test", &[event("x", "s", "created")]).unwrap();
    assert_eq!(first.is_new, [true]);
    let again = append(
        &store,
        "test",
        &[
            event("x", "s", "created"),
            event("y", "s", "killed"),
            event("y", "s", "killed"),
        ],
    )
    .unwrap();
    assert_eq!(again.is_new, [false, true, false]);
    assert_eq!((again.appended, again.duplicates), (1, 2));
    assert_eq!(seqs(&store, "a", 0, 10), [1, 2]);
}

#[test]
fn an_event_is_stored_as_received_and_kept_until_every_endpoint_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), vec![route("a", "*"), route("b", "*")]);
    let sent = event("x", "s", "created");
    append(&store, "file", std::slice::from_ref(&sent)).unwrap();
    let stored = store.events(&[1]).unwrap().remove(0).unwrap();
    assert_eq!(stored.event, sent);
    assert_eq!(stored.source, "file");
    let keys: Vec<&String> = stored.event.raw().keys().collect();
    assert_eq!(
        keys,
        [
            "version",
            "zeta",
            "id",
            "type",
            "sandbox_id",
            "sandbox_team_id",
            "timestamp"
        ]
    );

    complete(&store, &[delivered("a", 1)]);
    assert!(store.events(&[1]).unwrap()[0].is_some(), "b still has it");
    assert!(seqs(&store, "a", 0, 10).is_empty());
    complete(&store, &[delivered("b", 1)]);
    assert_eq!(store.events(&[1]).unwrap(), [None]);
}

#[test]
fn an_event_no_endpoint_wants_takes_no_sequence_number_and_numbers_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path(), vec![route("a", "kill")]);
        let report = append(&store, "test", &[event("c", "s", "created")]).unwrap();
        assert_eq!((report.appended, report.last_seq), (1, None));
        append(&store, "test", &[event("k", "s", "killed")]).unwrap();
        complete(&store, &[delivered("a", 1)]);
        assert_eq!(store.last_seq().unwrap(), 1);
    }
    let store = open(dir.path(), vec![route("a", "kill")]);
    let report = append(&store, "test", &[event("k2", "s", "killed")]).unwrap();
    assert_eq!(
        report.last_seq,
        Some(2),
        "after a reopen, on from the last number"
    );
}

#[test]
fn an_event_record_as_released_versions_wrote_it_is_read_for_the_migration() {
    // Outboxes written before the log hold `EventRecord` JSON, byte for byte as below (the
    // borrowed form they were written with); `migrate.rs` reads them with this type.
    let written = br#"{"appended_at_ms":7,"source":"redis","event":{"id":"e1","z":1,"a":2},"entry":{"id":"1-0","generation":"g"}}"#;
    let read: records::EventRecord = records::decode("event", written).unwrap();
    assert_eq!(read.appended_at_ms, 7);
    assert_eq!(read.source, "redis");
    assert_eq!(
        serde_json::to_string(&read.event).unwrap(),
        r#"{"id":"e1","z":1,"a":2}"#
    );
    assert_eq!(
        read.entry,
        Some(StreamEntryRef {
            id: "1-0".into(),
            generation: "g".into(),
        })
    );
    let without: records::EventRecord = records::decode(
        "event",
        br#"{"appended_at_ms":7,"source":"file","event":{"id":"e2"}}"#,
    )
    .unwrap();
    assert_eq!(without.entry, None);
}

/// Segments of 16 KiB: a few hundred one-event commits (a sector or a page each) fill dozens.
fn open_small(dir: &std::path::Path) -> Store {
    Store::open_sized(
        dir,
        vec![route("a", "*")],
        false,
        FileSharing::WithReaders,
        |_| 16 << 10,
    )
    .unwrap()
}

fn failed(seq: u64) -> Completion {
    Completion::Retry {
        endpoint: "a".into(),
        seq,
        state: DeliveryState {
            sandbox_id: format!("s{seq}"),
            attempts: 1,
            next_attempt_at_ms: 1,
            last_error: Some("connection refused".into()),
            last_status: None,
        },
    }
}

fn segments(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join(crate::outbox::open::LOG_DIR))
        .unwrap()
        .count()
}

#[test]
fn a_backlog_is_written_once_and_copied_forward_only_once_most_of_it_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_small(dir.path());
    // The receiver is down: every event stays, and every attempt fails (each failure is a round
    // of compaction that could start).
    for seq in 1..=300 {
        let id = format!("ev-{seq}");
        append(&store, "test", &[event(&id, &format!("s{seq}"), "created")]).unwrap();
        complete(&store, &[failed(seq)]);
    }
    let first = store.live().event(1).unwrap().location;
    let written = store.live().events_in_segments_before(u64::MAX);
    assert!(
        segments(dir.path()) > 10,
        "{} segments",
        segments(dir.path())
    );
    assert_eq!(
        (written.appended, written.live, first.segment),
        (300, 300, 1),
        "no live event of a backlog is copied"
    );

    // The receiver is back for all but the first two: the segments they hold go, once they are
    // copied forward.
    let delivered: Vec<Completion> = (3..=300).map(|seq| delivered("a", seq)).collect();
    complete(&store, &delivered);
    complete(&store, &[failed(1)]);
    assert!(
        segments(dir.path()) <= 3,
        "{} segments",
        segments(dir.path())
    );
    let copied = store.live().event(1).unwrap().location;
    assert!(copied.segment > first.segment, "{copied:?}");
    assert_eq!(seqs(&store, "a", 0, 10), [1, 2]);
    drop(store);

    let store = open_small(dir.path());
    assert_eq!(seqs(&store, "a", 0, 10), [1, 2]);
    let pending = store.pending_after("a", 0, 10).unwrap();
    assert_eq!(
        (
            pending[0].state.attempts,
            pending[1].state.sandbox_id.as_str()
        ),
        (1, "s2")
    );
}

#[test]
fn a_copied_view_writes_only_what_differs_and_reads_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), vec![route("a", "*")]);
    let record = |n: usize| records::SandboxRecord {
        sandbox_id: format!("sb{n:05}"),
        state: records::SandboxState::Running,
        team_id: TEAM.into(),
        template_id: Some("base".into()),
        execution_id: Some(format!("00000000-0000-4000-8000-{n:012}")),
        updated_at_ms: n as i64,
    };
    let ids = |view: &[records::SandboxRecord]| view.iter().map(|r| r.sandbox_id.clone()).collect();
    // More than a page of the view, so the copy takes several commits.
    let view: Vec<_> = (0..2_500).map(record).collect();
    assert_eq!(store.copy_sandboxes(&view).unwrap(), 2_500);
    let committed = || store.with_log(|log| Ok(log.committed())).unwrap();
    let after_copy = committed();
    assert_eq!(store.copy_sandboxes(&view).unwrap(), 0, "nothing differs");
    assert_eq!(store.keep_only_sandboxes(&ids(&view)).unwrap(), 0);
    assert_eq!(committed(), after_copy, "and nothing is written");
    let mut changed = view[1..].to_vec();
    changed[0].state = records::SandboxState::Paused;
    changed.push(record(9_999));
    assert_eq!(
        store.copy_sandboxes(&changed).unwrap(),
        2,
        "one changed, one new"
    );
    assert_eq!(store.keep_only_sandboxes(&ids(&changed)).unwrap(), 1);
    assert_eq!(committed(), after_copy + 2, "a page of changes each");
    drop(store);

    let store = open(dir.path(), vec![route("a", "*")]);
    assert_eq!(store.sandboxes().unwrap(), changed);
}
