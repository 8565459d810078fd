//! The view of sandboxes every instance shares: which sandboxes the events read so far say are
//! running or paused, kept in Redis by whichever instance reads the stream. The reconciler of
//! the active instance compares the orchestrators with it, so an instance that takes over does
//! not act on what it saw (or did not see) while it stood by: a sandbox created or killed
//! meanwhile produces no false `create` or `kill`.
//!
//! A hash `sandbox id → "<entry id>|<record JSON>"`; a killed sandbox keeps `"<entry id>|"`
//! (a tombstone) until no older entry can be read again. Each change carries the stream entry it
//! comes from and is applied only over an older one, so entries claimed again after a takeover —
//! already applied by the instance that first read them — never turn the view back.

use super::client::{RedisClient, RedisConnection};
use super::keys::Keys;
use super::{RedisSourceError, RedisStreamSource, lease};
use crate::event::{Lifecycle, SandboxEvent};
use crate::outbox::{FromStream, IntakeError, SandboxRecord, SandboxState, SandboxView};
use crate::util::time::now_ms;
use futures_util::future::BoxFuture;
use redis::{AsyncCommands, RedisError, Script};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

/// The field that says the view exists (it is missing in a new Redis, or one that lost its
/// data); it never collides with a sandbox id.
const BUILT_FIELD: &str = ":view";

/// The error code of a change refused because the view does not exist.
const UNBUILT_CODE: &str = "UNBUILT";

/// Fields asked for per `HSCAN` page: the view is read in pages of about this many, so what a
/// read holds in memory does not grow with the number of sandboxes the view knows.
const SCAN_PAGE: usize = 1000;

/// Applies changes `(sandbox, entry, op, record)`, each only over an older entry. `set` puts the
/// record, `gone` a tombstone, `touch` (an update or checkpoint) the record only when the sandbox
/// is unknown or gone.
const APPLY: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return redis.error_reply('UNBUILT the shared view of sandboxes does not exist')
end
local function id(s)
  local ms, seq = string.match(s, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
for i = 2, #ARGV, 4 do
  local sandbox, entry, op, record = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local current = redis.call('HGET', KEYS[1], sandbox)
  local newer, known = true, false
  if current then
    local at, body = string.match(current, '^([^|]*)|(.*)$')
    local ams, aseq = id(entry)
    local cms, cseq = id(at)
    newer = ams > cms or (ams == cms and aseq > cseq)
    known = body ~= ''
  end
  if newer then
    if op == 'set' or (op == 'touch' and not known) then
      redis.call('HSET', KEYS[1], sandbox, entry .. '|' .. record)
    elseif op == 'gone' then
      redis.call('HSET', KEYS[1], sandbox, entry .. '|')
    end
  end
end
return 1
";

/// Builds the view from a list of records (at entry `0-0`, below any real entry) unless it
/// exists, and only while the lease (KEYS[2]) holds ARGV[1] — only the holder of the lease
/// rebuilds the view or sweeps it; returns 1 when it built it.
const BUILD: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return redis.error_reply('FENCED this instance no longer holds the leader lease')
end
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then return 0 end
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], '0-0|' .. ARGV[i + 1])
end
redis.call('HSET', KEYS[1], ARGV[2], '1')
return 1
";

/// One change to the view, from the event of one stream entry.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ViewChange {
    sandbox: String,
    entry: String,
    op: &'static str,
    record: String,
}

impl ViewChange {
    /// What `event`, read from `entry`, changes (the same rule as the outbox's own view);
    /// `None` for events that change nothing.
    pub(super) fn of(event: &SandboxEvent, entry: &str) -> Option<Self> {
        let (op, state) = match event.lifecycle {
            Lifecycle::Created | Lifecycle::Resumed => ("set", SandboxState::Running),
            Lifecycle::Paused => ("set", SandboxState::Paused),
            Lifecycle::Updated | Lifecycle::Checkpointed => ("touch", SandboxState::Running),
            Lifecycle::Killed => ("gone", SandboxState::Running),
            Lifecycle::Unknown(_) => return None,
        };
        let record = SandboxRecord::of(event, state, now_ms());
        Some(Self {
            sandbox: record.sandbox_id.clone(),
            entry: entry.to_owned(),
            op,
            record: serde_json::to_string(&record).expect("a record always serializes"),
        })
    }
}

/// Applies `changes` in order; `Ok(false)` when the view does not exist (build it first).
pub(super) async fn apply(
    conn: &mut RedisConnection,
    keys: &Keys,
    changes: &[ViewChange],
) -> Result<bool, RedisError> {
    if changes.is_empty() {
        return Ok(true);
    }
    // Hashed once: applied for every event read.
    static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(APPLY));
    let mut invocation = SCRIPT.key(keys.sandboxes());
    invocation.arg(BUILT_FIELD);
    for change in changes {
        invocation
            .arg(&change.sandbox)
            .arg(&change.entry)
            .arg(change.op)
            .arg(&change.record);
    }
    match invocation.invoke_async::<i64>(conn).await {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some(UNBUILT_CODE) => Ok(false),
        Err(e) => Err(e),
    }
}

/// What a change that only the lease holder may make did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fenced<T> {
    /// Made, with this result.
    Done(T),
    /// Refused: the lease no longer has the value this instance holds.
    LeaseLost,
}

pub(super) fn fenced<T>(result: Result<T, RedisError>) -> Result<Fenced<T>, RedisError> {
    match result {
        Ok(value) => Ok(Fenced::Done(value)),
        Err(e) if e.code() == Some(lease::FENCED_CODE) => Ok(Fenced::LeaseLost),
        Err(e) => Err(e),
    }
}

/// Builds the view from `records` (this instance's own) unless it exists, while the lease has
/// the value `token`; `Done(true)` when built.
pub(super) async fn build(
    conn: &mut RedisConnection,
    keys: &Keys,
    token: &str,
    records: &[SandboxRecord],
) -> Result<Fenced<bool>, RedisError> {
    let script = Script::new(BUILD);
    let mut invocation = script.key(keys.sandboxes());
    invocation.key(keys.lease()).arg(token).arg(BUILT_FIELD);
    for record in records {
        invocation
            .arg(&record.sandbox_id)
            .arg(serde_json::to_string(record).expect("a record always serializes"));
    }
    fenced(invocation.invoke_async::<i64>(conn).await).map(|built| match built {
        Fenced::Done(built) => Fenced::Done(built == 1),
        Fenced::LeaseLost => Fenced::LeaseLost,
    })
}

/// Whether the view exists.
pub(super) async fn exists(conn: &mut RedisConnection, keys: &Keys) -> Result<bool, RedisError> {
    conn.hexists(keys.sandboxes(), BUILT_FIELD).await
}

/// One `HSCAN` page of the view from `cursor`: the next cursor (0 when done) and the fields
/// with their values. A field may come in more than one page, and one changed or added during
/// the scan may or may not come (Redis's `SCAN` guarantees); one present throughout comes.
pub(super) async fn scan_page(
    conn: &mut RedisConnection,
    keys: &Keys,
    cursor: u64,
) -> Result<(u64, Vec<(String, String)>), RedisError> {
    redis::cmd("HSCAN")
        .arg(keys.sandboxes())
        .arg(cursor)
        .arg("COUNT")
        .arg(SCAN_PAGE)
        .query_async(conn)
        .await
}

/// The view read a page at a time: each field with its record, `None` for a tombstone or
/// garbage. A field may come in more than one page: the last value read is the one.
#[derive(Default)]
pub(super) struct ViewScan {
    cursor: u64,
    done: bool,
    built: bool,
}

impl ViewScan {
    /// The next page; `None` once the scan is over.
    pub(super) async fn next(
        &mut self,
        conn: &mut RedisConnection,
        keys: &Keys,
    ) -> Result<Option<Vec<(String, Option<SandboxRecord>)>>, RedisError> {
        if self.done {
            return Ok(None);
        }
        let (next, page) = scan_page(conn, keys, self.cursor).await?;
        (self.cursor, self.done) = (next, next == 0);
        let mut records = Vec::with_capacity(page.len());
        for (field, value) in page {
            if field == BUILT_FIELD {
                self.built = true;
            } else {
                records.push((field, record(&value)));
            }
        }
        Ok(Some(records))
    }

    /// Whether the view's marker came in a page read so far.
    pub(super) fn built(&self) -> bool {
        self.built
    }
}

/// The records of a view read in pages: `None` when the view is not built (no marker), else
/// its records, tombstones and garbage left out, each sandbox once (the last value read).
pub(super) async fn read_records(
    conn: &mut RedisConnection,
    keys: &Keys,
) -> Result<Option<Vec<SandboxRecord>>, RedisError> {
    let mut records: HashMap<String, SandboxRecord> = HashMap::new();
    let mut scan = ViewScan::default();
    while let Some(page) = scan.next(conn, keys).await? {
        for (field, record) in page {
            match record {
                Some(record) => records.insert(field, record),
                None => records.remove(&field),
            };
        }
    }
    Ok(scan.built().then(|| records.into_values().collect()))
}

/// The record in a value of the view; `None` for a tombstone or garbage.
fn record(value: &str) -> Option<SandboxRecord> {
    let (_, record) = value.split_once('|')?;
    serde_json::from_str(record).ok()
}

/// The shared view, for the reconciler.
pub struct SharedSandboxView {
    client: Arc<RedisClient>,
    keys: Keys,
    addr: String,
}

impl SharedSandboxView {
    pub(super) fn new(client: Arc<RedisClient>, keys: Keys, addr: String) -> Self {
        Self { client, keys, addr }
    }

    fn error(&self, e: RedisError) -> IntakeError {
        IntakeError::Shared(format!("Redis at {}: {e}", self.addr))
    }
}

impl SandboxView for SharedSandboxView {
    fn sandboxes(&self) -> BoxFuture<'_, Result<Vec<SandboxRecord>, IntakeError>> {
        Box::pin(async move {
            let mut conn = self.client.connect().await.map_err(|e| self.error(e))?;
            read_records(&mut conn, &self.keys)
                .await
                .map_err(|e| self.error(e))?
                .ok_or_else(|| IntakeError::Shared(
                    "the shared view of sandboxes is not built yet (the active instance builds it when it takes over, or after Redis lost its data)".into(),
                ))
        })
    }
}

impl RedisStreamSource {
    /// Builds the shared view of sandboxes from this instance's own when it does not exist (a
    /// new Redis, or one that lost its data; an upgrade from a version without it). Only the
    /// holder of the lease builds it, in the same script that checks the lease: an instance that
    /// lost the lease while frozen never puts its older view in place of the holder's. What it
    /// builds from is current: every instance copies the shared view into its outbox
    /// ([`super::view_copy`]), and the holder applies each read to both.
    pub(super) async fn build_view(
        &self,
        conn: &mut RedisConnection,
    ) -> Result<(), RedisSourceError> {
        if exists(conn, &self.keys)
            .await
            .map_err(|e| self.redis_error(e))?
        {
            return Ok(());
        }
        let Some(token) = self.leadership.token() else {
            return Ok(());
        };
        let records = self.outbox.sandboxes().await?;
        let built = build(conn, &self.keys, &token, &records)
            .await
            .map_err(|e| self.redis_error(e))?;
        if built == Fenced::Done(true) {
            tracing::info!(
                sandboxes = records.len(),
                "built the shared view of sandboxes in Redis from this instance's copy of it (Redis lost its data, or is new)"
            );
        }
        Ok(())
    }

    /// What the events of a batch change in the shared view of sandboxes: only news — what the
    /// outbox does not have from another entry already — as for the outbox's own view.
    pub(super) async fn view_changes(
        &self,
        events: &[(SandboxEvent, FromStream, &'static str)],
    ) -> Result<Vec<ViewChange>, RedisSourceError> {
        let tracked: Vec<&(SandboxEvent, FromStream, &'static str)> = events
            .iter()
            .filter(|(_, from, _)| from.replay_to.is_none())
            .collect();
        if tracked.is_empty() {
            return Ok(Vec::new());
        }
        let news = self
            .outbox
            .stream_news(
                tracked
                    .iter()
                    .map(|(event, from, _)| (event.id().to_owned(), from.entry.id.clone()))
                    .collect(),
            )
            .await?;
        Ok(tracked
            .iter()
            .zip(news)
            .filter(|(_, news)| *news)
            .filter_map(|((event, from, _), _)| ViewChange::of(event, &from.entry.id))
            .collect())
    }

    /// Applies changes to the shared view (built first when Redis lost it).
    pub(super) async fn apply_view(
        &self,
        conn: &mut RedisConnection,
        changes: &[ViewChange],
    ) -> Result<(), RedisSourceError> {
        let applied = apply(conn, &self.keys, changes)
            .await
            .map_err(|e| self.redis_error(e))?;
        if !applied {
            self.build_view(conn).await?;
            apply(conn, &self.keys, changes)
                .await
                .map_err(|e| self.redis_error(e))?;
        }
        Ok(())
    }

    /// Applies the changes a Redis failure held back, once Redis answers again.
    pub(super) async fn apply_held_back_view(
        &self,
        conn: &mut RedisConnection,
    ) -> Result<(), RedisSourceError> {
        let changes =
            std::mem::take(&mut *self.unapplied_view.lock().expect("unapplied view changes"));
        if changes.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.apply_view(conn, &changes).await {
            self.unapplied_view
                .lock()
                .expect("unapplied view changes")
                .splice(0..0, changes);
            return Err(error);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_holds_a_record_unless_it_is_a_tombstone_or_garbage() {
        let stored = SandboxRecord {
            sandbox_id: "s1".into(),
            state: SandboxState::Paused,
            team_id: "t".into(),
            template_id: None,
            execution_id: Some("e".into()),
            updated_at_ms: 5,
        };
        let value = format!("7-0|{}", serde_json::to_string(&stored).unwrap());
        assert_eq!(record(&value), Some(stored));
        assert_eq!(record("9-1|"), None);
        assert_eq!(record("nonsense"), None);
        assert_eq!(record("1"), None, "the marker's value");
    }
}
