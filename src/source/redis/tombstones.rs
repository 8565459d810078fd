//! The tombstone sweep: a killed sandbox stays in the shared view as a tombstone
//! (`"<entry id>|"`) so that an older entry read again after a takeover cannot turn it back;
//! once every entry below the tombstone's is acknowledged none can be, and the holder of the
//! lease forgets it. Only the holder sweeps: each batch runs in a script that checks the lease.

use super::EntryId;
use super::client::RedisConnection;
use super::keys::Keys;
use super::view::{Fenced, fenced, scan_page};
use crate::leadership::Leadership;
use redis::{RedisError, Script};

/// Removes the given fields if they still hold the given values, only while the lease holds
/// ARGV[1].
const FORGET: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return redis.error_reply('FENCED this instance no longer holds the leader lease')
end
local removed = 0
for i = 2, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    removed = removed + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return removed
";

/// Drops tombstones of entries below `below`: every entry under it has been acknowledged, so
/// none can be read again and turn a killed sandbox back. Only while the lease has the value
/// `token`: an instance that lost the lease stops sweeping at its next page, or its next batch
/// (the new holder sweeps at its first housekeeping). Returns how many went.
pub(super) async fn forget(
    conn: &mut RedisConnection,
    keys: &Keys,
    leadership: &Leadership,
    token: &str,
    below: EntryId,
) -> Result<Fenced<usize>, RedisError> {
    let mut removed = 0;
    let mut cursor = 0;
    loop {
        if leadership.token().as_deref() != Some(token) {
            return Ok(Fenced::LeaseLost);
        }
        let (next, page) = scan_page(conn, keys, cursor).await?;
        let old: Vec<&(String, String)> = page
            .iter()
            .filter(|(_, value)| {
                value
                    .strip_suffix('|')
                    .is_some_and(|entry| entry.parse::<EntryId>().is_ok_and(|entry| entry < below))
            })
            .collect();
        // FORGET removes a field only if it still holds the value seen, so a tombstone seen
        // twice, or replaced meanwhile, is handled right.
        for chunk in old.chunks(500) {
            let script = Script::new(FORGET);
            let mut invocation = script.key(keys.sandboxes());
            invocation.key(keys.lease()).arg(token);
            for (field, value) in chunk {
                invocation.arg(field.as_str()).arg(value.as_str());
            }
            match fenced(invocation.invoke_async::<usize>(conn).await)? {
                Fenced::Done(n) => removed += n,
                Fenced::LeaseLost => return Ok(Fenced::LeaseLost),
            }
        }
        if next == 0 {
            return Ok(Fenced::Done(removed));
        }
        cursor = next;
    }
}
