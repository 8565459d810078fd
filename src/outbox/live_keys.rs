//! What the live set keeps per event, small: a pending event is about a hundred bytes in memory,
//! not a handful of strings on the heap, so a receiver down for an hour does not run the job out
//! of memory (issue 30: a backlog of 100 000 events took 101 MiB with strings, BENCHMARKS.md).

use super::StreamEntryRef;
use super::log::Location;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use uuid::Uuid;

/// A stream entry id. Redis gives `<ms>-<seq>` (two numbers, no heap); anything else is kept as
/// it came.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum EntryId {
    Stream { ms: u64, seq: u64 },
    Other(Box<str>),
}

impl EntryId {
    pub(super) fn of(id: &str) -> Self {
        let parsed = id
            .split_once('-')
            .and_then(|(ms, seq)| Some((canonical_number(ms)?, canonical_number(seq)?)));
        match parsed {
            Some((ms, seq)) => Self::Stream { ms, seq },
            None => Self::Other(id.into()),
        }
    }
}

/// `text` as a number when it is the number's only spelling (digits, no leading zero, no sign),
/// so that the id reads back exactly as it came; checked without formatting it again, as this
/// runs for every entry read.
fn canonical_number(text: &str) -> Option<u64> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    (digits && !leading_zero)
        .then(|| text.parse().ok())
        .flatten()
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stream { ms, seq } => write!(f, "{ms}-{seq}"),
            Self::Other(id) => f.write_str(id),
        }
    }
}

/// An id kept small: E2B's event and execution ids are UUIDs, 16 bytes here instead of a
/// 36-character string on the heap; anything else is kept as it came.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum SmallId {
    Uuid(Uuid),
    Other(Box<str>),
}

impl SmallId {
    pub(super) fn of(id: &str) -> Self {
        // Only the canonical spelling, so that the id reads back exactly as it came; compared
        // on the stack, as this runs for every event appended or checked.
        let mut canonical = Uuid::encode_buffer();
        match Uuid::try_parse(id) {
            Ok(uuid) if uuid.hyphenated().encode_lower(&mut canonical) == id => Self::Uuid(uuid),
            _ => Self::Other(id.into()),
        }
    }
}

impl fmt::Display for SmallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uuid(uuid) => uuid.hyphenated().fmt(f),
            Self::Other(id) => f.write_str(id),
        }
    }
}

/// A stream entry as the live set keeps it: its generation is shared by every entry read from
/// the same Redis data set.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct LiveEntry {
    pub(super) id: EntryId,
    pub(super) generation: Arc<str>,
}

impl LiveEntry {
    pub(super) fn to_ref(&self) -> StreamEntryRef {
        StreamEntryRef {
            id: self.id.to_string(),
            generation: self.generation.to_string(),
        }
    }
}

/// An event not yet finished everywhere.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct LiveEvent {
    /// Its `Appended` record.
    pub(super) location: Location,
    /// The commit that holds that record: its segment is kept until the event is finished.
    pub(super) commit: u64,
    pub(super) entry: Option<LiveEntry>,
    pub(super) appended_at_ms: i64,
    /// Its sandbox: an endpoint gets the events of a sandbox in order.
    pub(super) sandbox: Arc<str>,
}

/// The `Appended` records of one segment, and how many of their events are still live: what
/// copying its live events forward would cost against the space it gives back.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(super) struct SegmentEvents {
    pub(super) appended: u64,
    pub(super) live: u64,
}

/// Strings many live records repeat (a sandbox's id, a Redis generation), each kept once for as
/// long as a record holds it.
#[derive(Debug, Default, PartialEq)]
pub(super) struct SharedStrings(HashSet<Arc<str>>);

impl SharedStrings {
    pub(super) fn get(&mut self, text: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(text) {
            return shared.clone();
        }
        let shared: Arc<str> = text.into();
        self.0.insert(shared.clone());
        shared
    }

    /// Gives back a record's copy: the string goes once only this set holds it.
    pub(super) fn release(&mut self, shared: Arc<str>) {
        if Arc::strong_count(&shared) == 2 {
            self.0.remove(&*shared);
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_read_back_exactly_as_they_came() {
        for id in ["1733526000000-0", "0-1", "18446744073709551615-7"] {
            assert!(matches!(EntryId::of(id), EntryId::Stream { .. }), "{id}");
            assert_eq!(EntryId::of(id).to_string(), id);
        }
        for id in ["e1", "01-0", "1-", "-1", "1-2-3", "1-+2", ""] {
            assert_eq!(EntryId::of(id), EntryId::Other(id.into()), "{id}");
            assert_eq!(EntryId::of(id).to_string(), id);
        }
        assert!(EntryId::of("2-0") < EntryId::of("10-0"));
    }

    #[test]
    fn a_shared_string_goes_with_its_last_holder() {
        let mut strings = SharedStrings::default();
        let a = strings.get("sb1");
        let b = strings.get("sb1");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(strings.len(), 1);
        strings.release(a);
        assert_eq!(strings.len(), 1);
        strings.release(b);
        assert_eq!(strings.len(), 0);
    }
}
