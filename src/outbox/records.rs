//! The redb tables behind the outbox and the records they hold, with their encoding (JSON
//! values, big-endian counters).

use crate::event::SandboxEvent;
use crate::outbox::{OutboxError, RawInput};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::Value;

// The tables below up to `DEAD_EXPORT`, but `DEAD`, are those of an outbox written before the
// segment log (issue 30): read once, by `migrate.rs`, then dropped.

/// In their place, under the name of `events`, a note an older emitter cannot open.
pub(super) const MOVED: TableDefinition<&str, &str> = TableDefinition::new("events");
/// seq → stored event (JSON).
pub(super) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// event id → time it was appended (ms); the de-duplication window.
pub(super) const EVENT_IDS: TableDefinition<&str, i64> = TableDefinition::new("event_ids");
/// (endpoint, seq) → delivery state (JSON); one row per event an endpoint still has to get.
pub(super) const PENDING: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("pending");
/// dead-letter id → dead letter (JSON).
pub(super) const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
/// sandbox id → what the event stream says about it (JSON).
pub(super) const SANDBOXES: TableDefinition<&str, &[u8]> = TableDefinition::new("sandboxes");
/// Counters and source positions.
pub(super) const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
/// Stream entry id → the event it carries that is still pending here (JSON [`LiveEntry`]).
pub(super) const STREAM_ENTRIES: TableDefinition<&str, &[u8]> =
    TableDefinition::new("stream_entries");
/// Stream entry id → its Redis generation: finished here, to be acknowledged (`XACK`).
pub(super) const ACKS: TableDefinition<&str, &str> = TableDefinition::new("stream_acks");
/// Dead letters not yet copied to the shared store in Redis.
pub(super) const DEAD_EXPORT: TableDefinition<u64, ()> = TableDefinition::new("dead_export");

pub(super) const NEXT_SEQ: &str = "outbox.next_seq";
pub(super) const NEXT_DEAD: &str = "outbox.next_dead_letter";
/// The endpoint ids of the last `run`, so read-only `status` can list idle endpoints too.
pub(super) const ENDPOINTS: &str = "outbox.endpoints";

/// Set once the outbox keeps its events in the segment log (`outbox-log/`): from then on a
/// missing log is a lost one, not a new one.
pub(super) const LOG_CREATED: &str = "outbox.log";

/// A small record rewritten to learn whether the file can be written again after an I/O error.
pub(super) const WRITE_PROBE: &str = "outbox.write_probe";
/// The id of the store, also in the marker file next to the database (see `open.rs`).
pub(super) const STORE_ID: &str = "outbox.store_id";

/// An input that is not a valid event, kept for an operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MalformedInput {
    /// `redis`, `file`, …
    pub source: String,
    /// Where it was: a stream id, a line number.
    pub position: String,
    /// The input as received, byte for byte.
    #[serde(flatten)]
    pub input: RawInput,
    /// Why it was set aside.
    pub reason: String,
}

/// An event as stored, with when and from where it entered the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// The event.
    pub event: SandboxEvent,
    /// When it was appended (ms since the epoch).
    pub appended_at_ms: i64,
    /// Which source produced it.
    pub source: String,
}

/// A row of [`EVENTS`]: the event with when and from where it entered the outbox.
#[derive(Serialize, Deserialize)]
pub(super) struct EventRecord {
    pub(super) appended_at_ms: i64,
    pub(super) source: String,
    pub(super) event: Value,
    /// The stream entry the event came from, acknowledged once the event is finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) entry: Option<StreamEntryRef>,
}

/// A Redis stream entry, with the generation of the Redis data set it belongs to (a Redis that
/// restarted without its data has a new generation, and its old entry ids mean nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEntryRef {
    /// Entry id, `<ms>-<seq>`.
    pub id: String,
    /// The generation it was read in.
    pub generation: String,
}

/// Where an event read from a stream came from, and whether it is a replayed dead letter.
#[derive(Debug, Clone, PartialEq)]
pub struct FromStream {
    /// Its entry, acknowledged once the event is finished.
    pub entry: StreamEntryRef,
    /// A dead letter put back on the stream for this endpoint only (`dead-letters replay`):
    /// delivered again although its id was seen before.
    pub replay_to: Option<String>,
}

/// Delivery state of one event for one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DeliveryState {
    /// The sandbox (its deliveries are ordered).
    pub sandbox_id: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// Not before this time (ms since the epoch).
    pub next_attempt_at_ms: i64,
    /// The last failure, for status and dead letters.
    pub last_error: Option<String>,
    /// The last HTTP status, if any.
    pub last_status: Option<u16>,
}

impl DeliveryState {
    /// Whether the delivery was tried: a state worth carrying forward (one not tried is the
    /// default for its sandbox).
    pub(crate) fn was_tried(&self) -> bool {
        self.attempts > 0 || self.last_error.is_some()
    }
}

/// A pending delivery: sequence number and state.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingDelivery {
    /// Global append order.
    pub seq: u64,
    /// Where the delivery stands.
    pub state: DeliveryState,
}

/// An event that could not be delivered, or an input that was not an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Dead-letter id (for `replay`).
    pub id: u64,
    /// The endpoint that did not take it; none for malformed input.
    pub endpoint: Option<String>,
    /// The source it came from.
    pub source: String,
    /// Event id, when it was an event.
    pub event_id: Option<String>,
    /// Sandbox id, when it was an event.
    pub sandbox_id: Option<String>,
    /// Lifecycle label, when it was an event.
    pub label: Option<String>,
    /// The event (JSON) when it was one.
    pub event: Option<Value>,
    /// The input, byte for byte, when it was malformed (`raw`, or `raw_base64` when it is not
    /// UTF-8).
    #[serde(flatten)]
    pub input: RawInput,
    /// Where a malformed input was found.
    pub position: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// Last HTTP status.
    pub last_status: Option<u16>,
    /// Why it is here.
    pub reason: String,
    /// When it entered the outbox (ms).
    pub appended_at_ms: i64,
    /// When it was set aside (ms).
    pub dead_at_ms: i64,
}

impl DeadLetter {
    /// The endpoint and event a replay delivers, or why it cannot be replayed.
    pub fn replayable(&self) -> Result<(&str, &Value), &'static str> {
        match (&self.endpoint, &self.event) {
            (Some(endpoint), Some(event)) => Ok((endpoint, event)),
            _ => Err("malformed input: there is no event to deliver"),
        }
    }

    /// The letters of `wanted`, in its order, that a replay delivers — each with its endpoint
    /// and event — and the ids it skips, with why: no such letter, or nothing to deliver.
    pub fn replay_targets<'a>(
        letters: &'a [DeadLetter],
        wanted: &[u64],
    ) -> (Vec<ReplayTarget<'a>>, Vec<(u64, String)>) {
        let mut targets = Vec::new();
        let mut skipped = Vec::new();
        for &id in wanted {
            let Some(letter) = letters.iter().find(|d| d.id == id) else {
                skipped.push((id, "no such dead letter".into()));
                continue;
            };
            match letter.replayable() {
                Ok((endpoint, event)) => targets.push(ReplayTarget {
                    letter,
                    endpoint,
                    event,
                }),
                Err(why) => skipped.push((id, why.into())),
            }
        }
        (targets, skipped)
    }
}

/// A dead letter a replay delivers again, to the endpoint it failed for.
pub struct ReplayTarget<'a> {
    pub letter: &'a DeadLetter,
    pub endpoint: &'a str,
    pub event: &'a Value,
}

/// Whether a sandbox runs or sleeps, according to the event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    /// Created or resumed.
    Running,
    /// Paused (it leaves the orchestrator's list but is not gone).
    Paused,
}

/// One sandbox the event stream says exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// Sandbox id.
    pub sandbox_id: String,
    /// Running or paused.
    pub state: SandboxState,
    /// Team UUID.
    pub team_id: String,
    /// Template id, when known.
    pub template_id: Option<String>,
    /// Current execution id, when known.
    pub execution_id: Option<String>,
    /// Time of the last event about it (ms).
    pub updated_at_ms: i64,
}

impl SandboxRecord {
    /// The record `event` leaves for its sandbox in `state`; `now_ms` stands in for a missing
    /// event timestamp.
    pub fn of(event: &SandboxEvent, state: SandboxState, now_ms: i64) -> Self {
        Self {
            sandbox_id: event.sandbox_id().to_owned(),
            state,
            team_id: event.team_id().to_owned(),
            template_id: event.str_field("sandbox_template_id").map(str::to_owned),
            execution_id: event.str_field("sandbox_execution_id").map(str::to_owned),
            updated_at_ms: event.timestamp().map_or(now_ms, |t| t.as_millisecond()),
        }
    }
}

pub(super) fn decode<T: for<'de> Deserialize<'de>>(
    what: &str,
    bytes: &[u8],
) -> Result<T, OutboxError> {
    serde_json::from_slice(bytes).map_err(|e| OutboxError::Corrupt(format!("{what}: {e}")))
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("outbox records always serialize")
}

pub(super) fn read_counter(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<u64, OutboxError> {
    match table.get(key)? {
        None => Ok(0),
        Some(v) => {
            let bytes: [u8; 8] = v
                .value()
                .try_into()
                .map_err(|_| OutboxError::Corrupt(key.into()))?;
            Ok(u64::from_be_bytes(bytes))
        }
    }
}
