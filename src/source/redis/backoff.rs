//! Delays between reconnection attempts to Redis.

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use std::time::Duration;

/// The first delay before reconnecting; later ones grow exponentially, with jitter.
const RETRY_MIN_DELAY: Duration = Duration::from_millis(200);
/// The longest delay between reconnection attempts.
const RETRY_MAX_DELAY: Duration = Duration::from_secs(30);

/// Delays between reconnection attempts; reset once a connection is working again.
pub(super) struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
}

impl Backoff {
    pub(super) fn new() -> Self {
        let builder = ExponentialBuilder::new()
            .with_min_delay(RETRY_MIN_DELAY)
            .with_max_delay(RETRY_MAX_DELAY)
            .with_jitter()
            .without_max_times();
        Self {
            delays: builder.build(),
            builder,
        }
    }

    pub(super) fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(RETRY_MAX_DELAY)
    }

    pub(super) fn reset(&mut self) {
        self.delays = self.builder.build();
    }
}
