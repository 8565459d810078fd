//! Dead letters behind one trait: listed and replayed the same way whether they live in this
//! instance's outbox (the service runs, or its data directory while it is stopped) or in Redis,
//! shared by every instance. The backend is chosen in one place ([`running`], [`stopped`]);
//! the admin API, the team portal and the `dead-letters` command only call the trait.

mod data_dir;
mod outbox;
mod shared;

use crate::outbox::{DeadLetter, Outbox, OutboxError};
use crate::source::redis::{RedisSettings, RedisSourceError};
use std::path::PathBuf;

/// Where dead letters are kept, and how they are put back for delivery.
#[async_trait::async_trait]
pub trait DeadLetterStore: Send + Sync {
    /// Every dead letter, oldest first.
    async fn list(&self) -> Result<Vec<DeadLetter>, DeadLetterError>;
    /// Puts dead letters back for delivery: `ids` (or all), only those of `endpoint` when given.
    async fn replay(
        &self,
        ids: Option<&[u64]>,
        endpoint: Option<&str>,
    ) -> Result<Replayed, DeadLetterError>;
    /// Where replayed dead letters go ("into the outbox"), for logs.
    fn replayed_to(&self) -> &'static str;
    /// When replayed dead letters are delivered, for the operator.
    fn delivered(&self) -> &'static str;
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Dead-letter ids put back.
    pub replayed: Vec<u64>,
    /// Ids not replayed, and why.
    pub skipped: Vec<(u64, String)>,
    /// Where each replayed one went, when the backend says ("back on the stream as entry …").
    pub placed: Vec<(u64, String)>,
}

/// Why dead letters could not be read or replayed.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The outbox (this instance's, or the data directory's).
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// Redis, where the shared dead letters are.
    #[error(transparent)]
    Shared(#[from] RedisSourceError),
}

/// The dead letters of a running service: in Redis when it shares them there, else in its outbox.
pub fn running(outbox: &Outbox, shared: Option<&RedisSettings>) -> Box<dyn DeadLetterStore> {
    match shared {
        Some(settings) => Box::new(shared::SharedStore::new(settings.clone())),
        None => Box::new(outbox::OutboxStore::new(outbox.clone())),
    }
}

/// The dead letters as a tool sees them while the service may be stopped: in Redis when the
/// service shares them there, else in its data directory.
pub fn stopped(data_dir: PathBuf, shared: Option<RedisSettings>) -> Box<dyn DeadLetterStore> {
    match shared {
        Some(settings) => Box::new(shared::SharedStore::new(settings)),
        None => Box::new(data_dir::DataDirStore::new(data_dir)),
    }
}
