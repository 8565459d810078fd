//! Reading new entries under the lease: `XREADGROUP` runs inside the lease script, so an
//! instance that lost the lease reads nothing and steps down; between reads, waiting for the
//! stream to grow.

use super::entry::StreamEntry;
use super::reply::parse_read_reply;
use super::{BATCH, BLOCK, RedisConnection, RedisSourceError, RedisStreamSource, lease};
use redis::Value;

impl RedisStreamSource {
    /// Waits up to `BLOCK` for the stream to grow past `last_seen`; the newest id, if it did.
    /// A plain `XREAD` changes nothing in the group, so it needs no fence.
    pub(super) async fn wait_for_growth(
        &self,
        conn: &mut RedisConnection,
        last_seen: &str,
    ) -> Result<Option<String>, RedisSourceError> {
        let mut wait = redis::cmd("XREAD");
        wait.arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(&self.config.stream)
            .arg(last_seen);
        let reply: Value = wait
            .query_async(conn)
            .await
            .map_err(|e| self.redis_error(e))?;
        let grown =
            parse_read_reply(reply).map_err(|detail| RedisSourceError::UnexpectedReply {
                command: "XREAD",
                detail,
            })?;
        Ok(grown.last().map(|last| last.id.clone()))
    }

    /// Fenced `XREADGROUP … >`: new entries, or `None` when the lease is no longer ours.
    pub(super) async fn read_new(
        &self,
        conn: &mut RedisConnection,
    ) -> Result<Option<Vec<StreamEntry>>, RedisSourceError> {
        let command = [
            "XREADGROUP",
            "GROUP",
            &self.config.group,
            &self.config.consumer,
            "COUNT",
            &BATCH.to_string(),
            "STREAMS",
            &self.config.stream,
            ">",
        ]
        .map(str::to_owned);
        let Some(reply) = self.fenced(conn, &command).await? else {
            return Ok(None);
        };
        parse_read_reply(reply)
            .map(Some)
            .map_err(|detail| RedisSourceError::UnexpectedReply {
                command: "XREADGROUP",
                detail,
            })
    }

    /// Runs `command` under the lease; `None` (and this instance steps down) when the lease
    /// is no longer ours.
    pub(super) async fn fenced(
        &self,
        conn: &mut RedisConnection,
        command: &[String],
    ) -> Result<Option<Value>, RedisSourceError> {
        let Some(token) = self.leadership.token() else {
            return Ok(None);
        };
        match lease::fenced(conn, &self.keys, &token, command).await {
            Ok(reply) => Ok(Some(reply)),
            Err(e) if e.code() == Some(lease::FENCED_CODE) => {
                tracing::warn!(
                    consumer = %self.config.consumer,
                    "the leader lease is no longer ours (another instance took it): stopped reading and delivering"
                );
                self.leadership.step_down();
                Ok(None)
            }
            Err(e) => Err(self.redis_error(e)),
        }
    }
}
