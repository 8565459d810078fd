//! Why the Redis source stopped or is retrying, in words an operator can act on.

use crate::outbox::OutboxError;
use redis::RedisError;

/// Why the Redis source stopped or is retrying.
#[derive(Debug, thiserror::Error)]
pub enum RedisSourceError {
    /// A connection setting cannot be used; the source does not start.
    #[error("{setting}: {reason}")]
    InvalidSetting {
        /// `REDIS_URL`, `REDIS_CLUSTER_URL` or `REDIS_TLS_CA_BASE64`.
        setting: &'static str,
        /// What is wrong and what is expected (never the URL itself: it may hold a password).
        reason: String,
    },
    /// Connecting to Redis or a command failed; retried after a delay.
    #[error(
        "Redis at {addr}: {error}; check that Redis is reachable and that the host, port, password and TLS settings (REDIS_TLS_ENABLED, REDIS_TLS_CA_BASE64) are right"
    )]
    Redis {
        /// `host:port` of the configured node.
        addr: String,
        /// What Redis or the connection reported (in the message, not chained, so it shows once).
        error: RedisError,
    },
    /// Redis answered in a shape this source does not understand; retried after a delay.
    #[error(
        "unexpected reply from Redis to {command}: {detail}; Redis 7 or newer is required (XAUTOCLAIM, XINFO lag)"
    )]
    UnexpectedReply {
        /// The command.
        command: &'static str,
        /// What was wrong with the reply.
        detail: String,
    },
    /// Our consumer group vanished (deleted, or Redis lost its data); it is created again.
    #[error(
        "the consumer group {group} is gone from {stream} (deleted, or Redis restarted without its data); creating it again at the stream's end"
    )]
    GroupMissing {
        /// The stream.
        stream: String,
        /// The group.
        group: String,
    },
    /// A command that needs the service's consumer group found none: no instance ran yet.
    #[error(
        "there is no consumer group {group} on {stream}: no e2b-webhook-emitter instance has run against this Redis with these REDIS_STREAM/REDIS_GROUP settings"
    )]
    NoGroup {
        /// The stream.
        stream: String,
        /// The group.
        group: String,
    },
    /// The outbox could not commit a batch; the entries stay pending and are read again.
    #[error("the outbox did not commit a batch from the stream: {0}")]
    Outbox(OutboxError),
}

impl From<OutboxError> for RedisSourceError {
    fn from(error: OutboxError) -> Self {
        Self::Outbox(error)
    }
}
