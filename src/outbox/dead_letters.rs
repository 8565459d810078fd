//! Dead letters: keeping them (in redb, written rarely), listing them, and replaying them into
//! the outbox for their endpoint.

use super::journal::JournalRecord;
use super::records::{DEAD, DEAD_EXPORT, NEXT_DEAD, STATE, decode, encode, read_counter};
use super::store::Store;
use super::{DeadLetter, OutboxError};
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

    /// Durably keeps `letters`, numbering them.
    pub(super) fn add_dead_letters(&self, letters: Vec<DeadLetter>) -> Result<(), OutboxError> {
        if letters.is_empty() {
            return Ok(());
        }
        let txn = self.begin_durable()?;
        {
            let mut state = txn.open_table(STATE)?;
            let mut dead = txn.open_table(DEAD)?;
            let mut export = txn.open_table(DEAD_EXPORT)?;
            let mut next = read_counter(&state, NEXT_DEAD)?.max(1);
            for mut letter in letters {
                letter.id = next;
                dead.insert(next, encode(&letter).as_slice())?;
                if self.export_dead_letters {
                    export.insert(next, ())?;
                }
                next += 1;
            }
            state.insert(NEXT_DEAD, next.to_be_bytes().as_slice())?;
        }
        self.commit_durable(txn)
    }

    pub(super) fn replay(&self, ids: Option<&[u64]>) -> Result<ReplayReport, OutboxError> {
        let mut report = ReplayReport::default();
        let letters = self.dead_letters()?;
        let wanted: Vec<u64> = match ids {
            Some(ids) => ids.to_vec(),
            None => letters.iter().map(|d| d.id).collect(),
        };
        let now = now_ms();
        let _writing = self.lock_writes();
        let next_seq = self.live().next_seq();
        let (targets, skipped) = DeadLetter::replay_targets(&letters, &wanted);
        report.skipped = skipped;
        let mut records = Vec::new();
        for (seq, target) in (next_seq..).zip(targets) {
            // A fresh entry time: the replayed event gets the whole retry policy again.
            records.push(JournalRecord::Appended {
                seq,
                appended_at_ms: now,
                source: target.letter.source.clone(),
                event: target.event.clone(),
                entry: None,
                endpoints: vec![target.endpoint.to_owned()],
                tracks_sandbox: false,
            });
            report.replayed.push(target.letter.id);
        }
        if records.is_empty() {
            return Ok(report);
        }
        // In the log first: a crash in between replays a letter twice, never loses one.
        self.write_records(records)?;
        let txn = self.begin_durable()?;
        {
            let mut dead = txn.open_table(DEAD)?;
            for id in &report.replayed {
                dead.remove(*id)?;
            }
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
