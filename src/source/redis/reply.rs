//! Redis's replies to the stream commands, parsed: `XREADGROUP`/`XREAD` and `XAUTOCLAIM`, in
//! RESP2 or RESP3.

use super::entry::StreamEntry;
use redis::Value;

/// Parses an `XREADGROUP` reply (RESP2 array or RESP3 map; nil when the wait timed out).
pub(super) fn parse_read_reply(reply: Value) -> Result<Vec<StreamEntry>, String> {
    let streams = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .map(|stream| match stream {
                Value::Array(mut pair) if pair.len() == 2 => Ok(pair.swap_remove(1)),
                other => Err(format!("expected [stream, entries], got {other:?}")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Value::Map(streams) => streams.into_iter().map(|(_, entries)| entries).collect(),
        other => return Err(format!("expected an array of streams, got {other:?}")),
    };
    let mut entries = Vec::new();
    for stream_entries in streams {
        entries.extend(parse_entries(stream_entries)?);
    }
    Ok(entries)
}

/// What one `XAUTOCLAIM` call returned.
#[derive(Debug, PartialEq)]
pub(super) struct Claim {
    /// The cursor for the next call; `0-0` when the scan is complete.
    pub(super) next: String,
    /// Claimed entries, and the pending ids whose entries no longer exist (Redis has already
    /// dropped those from the pending list; they are recorded as deleted).
    pub(super) entries: Vec<StreamEntry>,
}

/// Parses an `XAUTOCLAIM` reply: `[next, entries, deleted-ids]` (Redis 7).
pub(super) fn parse_autoclaim_reply(reply: Value) -> Result<Claim, String> {
    let Value::Array(parts) = reply else {
        return Err(format!("expected an array, got {reply:?}"));
    };
    let mut parts = parts.into_iter();
    let (Some(next), Some(claimed), Some(deleted)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err("expected [next-id, entries, deleted-ids]".to_owned());
    };
    let mut entries = parse_entries(claimed)?;
    let Value::Array(deleted) = deleted else {
        return Err(format!("expected an array of deleted ids, got {deleted:?}"));
    };
    for id in deleted {
        entries.push(StreamEntry {
            id: text(id)?,
            fields: None,
        });
    }
    Ok(Claim {
        next: text(next)?,
        entries,
    })
}

/// Parses `[[id, [field, value, …] | nil], …]`.
fn parse_entries(value: Value) -> Result<Vec<StreamEntry>, String> {
    let Value::Array(entries) = value else {
        return Err(format!("expected an array of entries, got {value:?}"));
    };
    entries
        .into_iter()
        .map(|entry| {
            let Value::Array(parts) = entry else {
                return Err(format!("expected [id, fields], got {entry:?}"));
            };
            let mut parts = parts.into_iter();
            let id = text(parts.next().unwrap_or(Value::Nil))?;
            let fields = match parts.next().unwrap_or(Value::Nil) {
                Value::Nil => None,
                Value::Array(flat) => {
                    if flat.len() % 2 != 0 {
                        return Err(format!("entry {id} has an odd number of field values"));
                    }
                    let mut pairs = Vec::with_capacity(flat.len() / 2);
                    let mut flat = flat.into_iter();
                    while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
                        pairs.push((bytes(name)?, bytes(value)?));
                    }
                    Some(pairs)
                }
                Value::Map(map) => Some(
                    map.into_iter()
                        .map(|(name, value)| Ok((bytes(name)?, bytes(value)?)))
                        .collect::<Result<_, String>>()?,
                ),
                other => return Err(format!("entry {id}: expected fields, got {other:?}")),
            };
            Ok(StreamEntry { id, fields })
        })
        .collect()
}

fn bytes(value: Value) -> Result<Vec<u8>, String> {
    match value {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::VerbatimString { text, .. } => Ok(text.into_bytes()),
        other => Err(format!("expected a string, got {other:?}")),
    }
}

fn text(value: Value) -> Result<String, String> {
    String::from_utf8(bytes(value)?).map_err(|e| format!("not UTF-8: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    const EVENT: &str = r#"{"id":"e1","version":"v2","type":"sandbox.lifecycle.killed","timestamp":"2025-10-15T12:00:00Z","sandbox_id":"s1","sandbox_team_id":"0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d"}"#;

    #[test]
    fn read_reply_parses_resp2_entries_and_deleted_ones() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("sandbox.events.stream"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("payload"), bulk(EVENT)]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let entries = parse_read_reply(reply).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].id, "1-0");
        assert_eq!(
            entries[0].fields,
            Some(vec![(b"payload".to_vec(), EVENT.as_bytes().to_vec())])
        );
        assert_eq!(entries[1].fields, None);
        assert_eq!(parse_read_reply(Value::Nil).unwrap(), Vec::new());
    }

    #[test]
    fn read_reply_parses_resp3_maps() {
        let reply = Value::Map(vec![(
            bulk("s"),
            Value::Array(vec![Value::Array(vec![
                bulk("3-1"),
                Value::Array(vec![bulk("payload"), bulk("{}")]),
            ])]),
        )]);
        assert_eq!(parse_read_reply(reply).unwrap()[0].id, "3-1");
    }

    #[test]
    fn autoclaim_reply_reports_claimed_and_deleted_entries() {
        let reply = Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![Value::Array(vec![
                bulk("5-0"),
                Value::Array(vec![bulk("payload"), bulk(EVENT)]),
            ])]),
            Value::Array(vec![bulk("4-0")]),
        ]);
        let claim = parse_autoclaim_reply(reply).unwrap();
        assert_eq!(claim.next, "0-0");
        let ids: Vec<_> = claim.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["5-0", "4-0"]);
        assert_eq!(claim.entries[1].fields, None);
        assert!(parse_autoclaim_reply(Value::Array(vec![bulk("0-0")])).is_err());
    }
}
