//! What the Redis source is built from (`config` produces it from flags and environment).

use super::RedisConnectionSettings;
use std::time::Duration;

/// What the Redis source needs: where Redis is, the stream and group, and this instance's part
/// in them (`config` builds it from flags and environment).
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Where Redis is and how to connect (the password is never logged).
    pub connection: RedisConnectionSettings,
    /// Stream key.
    pub stream: String,
    /// Consumer group.
    pub group: String,
    /// This consumer's name.
    pub consumer: String,
    /// How long an entry stays pending for another consumer before this one claims it.
    pub claim_idle: Duration,
    /// Whether to trim acknowledged entries from the stream.
    pub trim: bool,
    /// Time to live of the leader lease.
    pub lease_ttl: Duration,
}
