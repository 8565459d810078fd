//! This instance's copy of the shared view of sandboxes, in its outbox: what the shared view
//! is rebuilt from when Redis loses its data ([`RedisStreamSource::build_view`]). A copy of
//! this instance's own reads only would be stale — other instances read what it did not, while
//! it stood by — and a view rebuilt from it would make false `create`s (sandboxes another
//! instance read) and false `kill`s (sandboxes killed meanwhile). So every instance copies the
//! whole shared view when it takes over and every `VIEW_COPY_EVERY` after; the holder's reads
//! go to both views alike in between.

use super::client::RedisConnection;
use super::view::{self, ViewScan};
use super::{RedisSourceError, RedisStreamSource, VIEW_COPY_EVERY};
use std::collections::HashSet;
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
        if !view::exists(conn, &self.keys)
            .await
            .map_err(|e| self.redis_error(e))?
        {
            return Ok(());
        }
        // A page at a time: a view of a hundred thousand sandboxes read whole took some 20 MB
        // every `VIEW_COPY_EVERY` (BENCHMARKS.md, issue 30's eighth round). Only the ids stay.
        let (mut scan, mut ids, mut changed) = (ViewScan::default(), HashSet::new(), 0);
        while let Some(page) = scan
            .next(conn, &self.keys)
            .await
            .map_err(|e| self.redis_error(e))?
        {
            let mut records = Vec::with_capacity(page.len());
            for (field, record) in page {
                match record {
                    Some(record) => {
                        records.push(record);
                        ids.insert(field);
                    }
                    None => {
                        ids.remove(&field);
                    }
                }
            }
            changed += self.outbox.copy_sandboxes(records).await?;
        }
        // Only with the view's marker read in the scan and there still: a view Redis lost
        // meanwhile would make every sandbox it no longer has look gone.
        let kept = scan.built()
            && view::exists(conn, &self.keys)
                .await
                .map_err(|e| self.redis_error(e))?;
        if kept {
            changed += self.outbox.keep_only_sandboxes(ids).await?;
        }
        if changed > 0 {
            tracing::debug!(
                sandboxes = changed,
                "copied the changes of the shared view of sandboxes into the local outbox"
            );
        }
        Ok(())
    }
}
