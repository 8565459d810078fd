//! Where lifecycle events come from. Every source is a [`Source`]: the pipeline starts each one
//! the same way, once sources may read, and stops it at shutdown.

pub mod file;
pub mod nomad;
pub mod redis;

use tokio_util::sync::CancellationToken;

/// Why a source stopped for good (a source retries what it can recover from by itself).
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// A source of lifecycle events: it reads them into the outbox (or the stream) and reports its
/// own readiness as it goes. When it may start reading, and its stopping, are the pipeline's.
#[async_trait::async_trait]
pub trait Source: Send {
    /// Its name in the outbox and the metrics (`redis`, `file`).
    fn name(&self) -> &'static str;

    /// Reads until `shutdown` is cancelled or its input ends.
    async fn run(self: Box<Self>, shutdown: CancellationToken) -> Result<(), SourceError>;
}
