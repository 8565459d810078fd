//! Dead letters: listing them, and replaying them into the outbox for their endpoint.

use super::records::{
    DEAD, EVENTS, EventRecord, NEXT_SEQ, PENDING, STATE, decode, encode, read_counter,
};
use super::store::Store;
use super::{DeadLetter, DeliveryState, OutboxError};
use crate::util::time::now_ms;
use redb::ReadableTable;

/// What `replay` did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReplayReport {
    /// Dead letters put back in the outbox.
    pub replayed: Vec<u64>,
    /// Ids that are malformed inputs (nothing to deliver) or unknown.
    pub skipped: Vec<(u64, String)>,
}

impl Store {
    pub(super) fn dead_letters(&self) -> Result<Vec<DeadLetter>, OutboxError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(DEAD)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, v) = row?;
            out.push(decode("dead letter", v.value())?);
        }
        Ok(out)
    }

    pub(super) fn replay(&self, ids: Option<&[u64]>) -> Result<ReplayReport, OutboxError> {
        let mut report = ReplayReport::default();
        let wanted: Vec<u64> = match ids {
            Some(ids) => ids.to_vec(),
            None => self.dead_letters()?.iter().map(|d| d.id).collect(),
        };
        let now = now_ms();
        let txn = self.begin_durable()?;
        {
            let mut dead = txn.open_table(DEAD)?;
            let mut events = txn.open_table(EVENTS)?;
            let mut pending = txn.open_table(PENDING)?;
            let mut state = txn.open_table(STATE)?;
            let mut next_seq = read_counter(&state, NEXT_SEQ)?.max(1);
            for id in wanted {
                let letter: DeadLetter = match dead.get(id)? {
                    Some(bytes) => decode("dead letter", bytes.value())?,
                    None => {
                        report.skipped.push((id, "no such dead letter".into()));
                        continue;
                    }
                };
                let (endpoint, event) = match letter.replayable() {
                    Ok(target) => target,
                    Err(why) => {
                        report.skipped.push((id, why.into()));
                        continue;
                    }
                };
                let seq = next_seq;
                next_seq += 1;
                // A fresh entry time: the replayed event gets the whole retry policy again.
                let record = EventRecord {
                    appended_at_ms: now,
                    source: letter.source.clone(),
                    event: event.clone(),
                    entry: None,
                };
                events.insert(seq, encode(&record).as_slice())?;
                let delivery = DeliveryState {
                    sandbox_id: letter.sandbox_id.clone().unwrap_or_default(),
                    ..DeliveryState::default()
                };
                pending.insert((endpoint, seq), encode(&delivery).as_slice())?;
                dead.remove(id)?;
                report.replayed.push(id);
            }
            state.insert(NEXT_SEQ, next_seq.to_be_bytes().as_slice())?;
        }
        self.commit_durable(txn)?;
        Ok(report)
    }
}

/// The ids to replay: `ids` (or every letter), narrowed to `endpoint`'s when given.
pub(super) fn select_dead_letters(
    store: &Store,
    ids: Option<&[u64]>,
    endpoint: Option<&str>,
) -> Result<Option<Vec<u64>>, OutboxError> {
    let Some(endpoint) = endpoint else {
        return Ok(ids.map(<[u64]>::to_vec));
    };
    Ok(Some(
        store
            .dead_letters()?
            .into_iter()
            .filter(|d| d.endpoint.as_deref() == Some(endpoint))
            .filter(|d| ids.is_none_or(|ids| ids.contains(&d.id)))
            .map(|d| d.id)
            .collect(),
    ))
}
