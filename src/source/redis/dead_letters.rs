//! Dead letters in Redis, where every instance sees them: a hash `id → JSON`, numbered by a
//! counter. The active instance copies each dead letter here before it acknowledges the stream
//! entry it came from; `dead-letters list` reads them and `dead-letters replay` puts an event back
//! on the stream (with the endpoint it is for), from any instance.

use super::keys::Keys;
use super::{RedisClient, RedisConnection, RedisSourceError};
use crate::outbox::{DeadLetter, ReplayTarget};
use redis::{AsyncCommands, RedisError, Script};
use std::collections::HashMap;

/// Stores a dead letter under the next number; returns it.
const STORE: &str = r"
local id = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], id, ARGV[1])
return id
";

/// Puts an event back on the stream for one endpoint and removes its dead letter, atomically;
/// nil when the dead letter is gone (replayed meanwhile).
const REPLAY: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return false end
local entry = redis.call('XADD', KEYS[2], '*', 'payload', ARGV[2], 'replay', ARGV[3])
redis.call('HDEL', KEYS[1], ARGV[1])
return entry
";

/// The stream field naming the endpoint a replayed event is for.
pub(crate) const REPLAY_FIELD: &[u8] = b"replay";

/// Copies dead letters to Redis (each gets a new, shared number).
pub(crate) async fn store(
    conn: &mut RedisConnection,
    keys: &Keys,
    letters: &[DeadLetter],
) -> Result<(), RedisError> {
    for letter in letters {
        let json = serde_json::to_string(letter).expect("dead letters always serialize");
        let _id: u64 = Script::new(STORE)
            .key(keys.dead_letters())
            .key(keys.dead_letter_counter())
            .arg(json)
            .invoke_async(conn)
            .await?;
    }
    Ok(())
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct SharedReplay {
    /// Dead-letter ids put back on the stream, with their new entry ids.
    pub replayed: Vec<(u64, String)>,
    /// Ids not replayed, and why.
    pub skipped: Vec<(u64, String)>,
}

/// The dead letters in Redis, for `dead-letters list|replay` on any instance.
pub struct SharedDeadLetters {
    conn: RedisConnection,
    keys: Keys,
    addr: String,
}

impl SharedDeadLetters {
    /// Connects with the service's Redis settings.
    pub async fn connect(config: &super::RedisSettings) -> Result<Self, RedisSourceError> {
        let addr = config.connection.addr();
        let client =
            RedisClient::open(&config.connection).map_err(|error| RedisSourceError::Redis {
                addr: addr.clone(),
                error,
            })?;
        let conn = client
            .connect()
            .await
            .map_err(|error| RedisSourceError::Redis {
                addr: addr.clone(),
                error,
            })?;
        Ok(Self {
            conn,
            keys: Keys::new(&config.stream, &config.group),
            addr,
        })
    }

    fn error(&self, error: RedisError) -> RedisSourceError {
        RedisSourceError::Redis {
            addr: self.addr.clone(),
            error,
        }
    }

    /// Every dead letter, oldest first.
    pub async fn list(&mut self) -> Result<Vec<DeadLetter>, RedisSourceError> {
        let all: HashMap<u64, String> = self
            .conn
            .hgetall(self.keys.dead_letters())
            .await
            .map_err(|e| self.error(e))?;
        let mut letters: Vec<DeadLetter> = all
            .into_iter()
            .filter_map(|(id, json)| {
                let mut letter: DeadLetter = serde_json::from_str(&json).ok()?;
                letter.id = id;
                Some(letter)
            })
            .collect();
        letters.sort_by_key(|l| l.id);
        Ok(letters)
    }

    /// Puts these dead letters (all with `None`; only `endpoint`'s when given) back on the
    /// stream; the active instance delivers each to the endpoint it failed for.
    pub async fn replay(
        &mut self,
        ids: Option<&[u64]>,
        endpoint: Option<&str>,
    ) -> Result<SharedReplay, RedisSourceError> {
        let letters = self.list().await?;
        // Ids asked for that name no letter at all come first, as skipped; a letter of another
        // endpoint is left out without a word.
        let missing = ids
            .unwrap_or_default()
            .iter()
            .filter(|id| !letters.iter().any(|l| l.id == **id))
            .copied();
        let chosen = letters
            .iter()
            .filter(|l| endpoint.is_none_or(|e| l.endpoint.as_deref() == Some(e)))
            .filter(|l| ids.is_none_or(|ids| ids.contains(&l.id)))
            .map(|l| l.id);
        let wanted: Vec<u64> = missing.chain(chosen).collect();
        let (targets, skipped) = DeadLetter::replay_targets(&letters, &wanted);
        let mut report = SharedReplay {
            skipped,
            ..SharedReplay::default()
        };
        for ReplayTarget {
            letter,
            endpoint,
            event,
        } in targets
        {
            let id = letter.id;
            let entry: Option<String> = Script::new(REPLAY)
                .key(self.keys.dead_letters())
                .key(&self.keys.stream)
                .arg(id)
                .arg(event.to_string())
                .arg(endpoint)
                .invoke_async(&mut self.conn)
                .await
                .map_err(|e| self.error(e))?;
            match entry {
                Some(entry) => report.replayed.push((id, entry)),
                None => report
                    .skipped
                    .push((id, "replayed by someone else meanwhile".into())),
            }
        }
        Ok(report)
    }
}
