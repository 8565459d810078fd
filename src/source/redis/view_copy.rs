//! This instance's copy of the shared view of sandboxes, in its outbox: what the shared view
//! is rebuilt from when Redis loses its data ([`RedisStreamSource::build_view`]). A copy of
//! this instance's own reads only would be stale — other instances read what it did not, while
//! it stood by — and a view rebuilt from it would make false `create`s (sandboxes another
//! instance read) and false `kill`s (sandboxes killed meanwhile). So every instance copies the
//! whole shared view when it takes over and every `VIEW_COPY_EVERY` after; the holder's reads
//! go to both views alike in between.

use super::client::RedisConnection;
use super::{RedisSourceError, RedisStreamSource, VIEW_COPY_EVERY, view};
use tokio::time::Instant;

impl RedisStreamSource {
    /// Copies the shared view into this instance's outbox every `VIEW_COPY_EVERY`, active or
    /// standing by (see [`Self::copy_view_now`]).
    pub(super) async fn copy_view_when_due(
        &mut self,
        conn: &mut RedisConnection,
    ) -> Result<(), RedisSourceError> {
        if self
            .last_view_copy
            .is_some_and(|at| at.elapsed() < VIEW_COPY_EVERY)
        {
            return Ok(());
        }
        self.copy_view_now(conn).await
    }

    /// Copies the shared view into this instance's outbox, when the view exists: the outbox's
    /// view is what the shared one is rebuilt from if Redis loses its data, so it must hold
    /// what every instance read, not only this one's reads. Not while changes this instance
    /// read wait to be applied to the shared view: the copy would lack them.
    pub(super) async fn copy_view_now(
        &mut self,
        conn: &mut RedisConnection,
    ) -> Result<(), RedisSourceError> {
        if !self
            .unapplied_view
            .lock()
            .expect("unapplied view changes")
            .is_empty()
        {
            return Ok(());
        }
        self.last_view_copy = Some(Instant::now());
        let Some(records) = view::read_records(conn, &self.keys)
            .await
            .map_err(|e| self.redis_error(e))?
        else {
            return Ok(());
        };
        let count = records.len();
        if self.outbox.replace_sandboxes(records).await? {
            tracing::debug!(
                sandboxes = count,
                "copied the shared view of sandboxes into the local outbox"
            );
        }
        Ok(())
    }
}
