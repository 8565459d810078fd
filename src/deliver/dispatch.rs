//! The dispatcher of one endpoint: per-sandbox FIFO, bounded concurrency, retries, dead letters.
//!
//! Only a window of pending deliveries (sequence numbers and small state, never bodies) is held in
//! memory; the rest of a backlog stays on disk. For each sandbox only the oldest pending event is
//! eligible, so events of one sandbox arrive in order while other sandboxes proceed.

mod attempt;
mod build;
mod commits;
mod on_demand;

pub use build::{Oversight, SharedDelivery};
pub use commits::CommitQueue;
pub use on_demand::OnDemand;

use crate::deliver::endpoint::EndpointConfig;
use crate::deliver::http::WebhookClient;
use crate::deliver::journal::DeliveryJournal;
use crate::deliver::retry::RetryPolicy;
use crate::deliver::schedule::Schedule;
use crate::deliver::shares::{AttemptPermits, TeamShare};
use crate::leadership::Leadership;
use crate::outbox::DeliveryState;
use crate::outbox::{Completion, Outbox, OutboxError};
use crate::util::time::now_ms;
use attempt::{Finished, attempt};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Delivery results are committed in batches: at this many, or after `COMMIT_DELAY`. A crash
/// before the commit only means those events are delivered again (at least once).
const COMMIT_BATCH: usize = 256;
const COMMIT_DELAY: Duration = Duration::from_millis(25);
/// How long to wait before reading or committing again after the outbox failed.
const STORAGE_RETRY: Duration = Duration::from_secs(1);
/// After the drain deadline, how long canceled attempts get to report (they return at once).
const ABANDON_GRACE: Duration = Duration::from_secs(1);

/// A batch of delivery results being committed while deliveries go on; it hands the batch back
/// with the result, so a failed commit can be tried again.
type Commit = Pin<Box<dyn Future<Output = (Arc<[Completion]>, Result<(), OutboxError>)> + Send>>;
/// Waiting in line for a team's permits.
type Acquiring = Pin<Box<dyn Future<Output = AttemptPermits> + Send>>;

/// Delivers one endpoint's events from the outbox.
pub struct Dispatcher {
    endpoint: Arc<EndpointConfig>,
    outbox: Outbox,
    client: WebhookClient,
    policy: Arc<RetryPolicy>,
    max_in_flight: usize,
    journal: Arc<DeliveryJournal>,
    /// An operator's pause: no new attempt starts while it is true.
    paused: watch::Receiver<bool>,
    /// Only the active instance delivers (see [`Leadership`]).
    leadership: Leadership,
    /// Pending deliveries held in memory.
    window: usize,
    /// For a registered webhook: its team's share, taken before each attempt.
    share: Option<TeamShare>,
    /// For a registered webhook: results committed with other webhooks'.
    commits: Option<CommitQueue>,
    /// Woken when the outbox has new deliveries for the endpoint.
    appended: Arc<Notify>,
}

/// Why [`Dispatcher::deliver`] returned.
enum Ended {
    /// Asked to stop: in-flight attempts finished or the drain deadline passed.
    Stopped,
    /// Started on demand and nothing is left to deliver (nothing loaded, in flight, to commit
    /// or on disk): the task may end until the next append. `loaded`: it had deliveries.
    Idle { loaded: bool },
    /// Started on demand, its next attempt due and nothing else in flight or to commit, but no
    /// permit free: it waits in its team's line without its loop's state and loaded deliveries
    /// (read again once it has the permit), so thousands of webhooks waiting hold little.
    NeedsPermit,
}

impl Dispatcher {
    /// Delivers until `shutdown`; then lets in-flight attempts finish for up to `drain`.
    pub async fn run(
        &self,
        shutdown: CancellationToken,
        drain: Duration,
    ) -> Result<(), OutboxError> {
        self.deliver(shutdown, drain, false, None).await.map(|_| ())
    }

    /// Like [`Self::run`]; `on_demand`, it also returns once it has nothing left to deliver,
    /// and when this instance does not deliver
    /// and the endpoint has nothing on disk, and when it would wait for a permit with nothing
    /// else to do ([`Ended::NeedsPermit`]); `permits`, waited for then, go to its first attempt.
    ///
    /// The outbox calls are boxed: this future is what a dispatcher holds in memory while it
    /// waits, so it should not carry their space.
    async fn deliver(
        &self,
        shutdown: CancellationToken,
        drain: Duration,
        on_demand: bool,
        permits: Option<AttemptPermits>,
    ) -> Result<Ended, OutboxError> {
        let appended = &self.appended;
        let mut pause = self.paused.clone();
        let mut schedule = Schedule::default();
        let mut on_disk = true;
        let mut in_flight: JoinSet<Finished> = JoinSet::new();
        let mut completions: Vec<Completion> = Vec::new();
        // At most one commit at a time, so results are committed in the order they came.
        let mut committing: Option<Commit> = None;
        let mut stopping = false;
        let mut first_uncommitted: Option<tokio::time::Instant> = None;
        // While the outbox cannot be read or written (a full disk), reads and commits are tried
        // again after this pause; deliveries of what is loaded go on meanwhile.
        let mut reads_paused_until: Option<tokio::time::Instant> = None;
        let mut commits_paused_until: Option<tokio::time::Instant> = None;
        let drain_deadline = tokio::time::sleep(Duration::MAX);
        tokio::pin!(drain_deadline);
        let mut term = None;
        // Permits of the team's share: waited for in line when none was free, then kept for the
        // next attempt.
        let mut acquiring: Option<Acquiring> = None;
        let mut spare: Option<AttemptPermits> = permits;
        // Cancelled at the drain deadline: attempts still waiting for an answer end, canceled.
        let abandon = CancellationToken::new();
        // On demand: whether it has loaded anything.
        let mut loaded_any = false;
        loop {
            let current = self.leadership.delivery_term();
            if !stopping && (current.is_none() || current != term) {
                // The lease changed hands (or was won again): finish what is in flight, record
                // it, and forget the in-memory window — the takeover may have changed the outbox.
                while let Some(joined) = in_flight.join_next().await {
                    self.finish(joined, &mut schedule, &mut completions);
                }
                Box::pin(self.commit_all(committing.take(), std::mem::take(&mut completions)))
                    .await?;
                first_uncommitted = None;
                schedule = Schedule::default();
                on_disk = true;
                term = current;
                if term.is_none() {
                    // Waiting for the lease costs a task per webhook: on demand, only those
                    // with deliveries on disk wait (an append or the lease's return wakes them).
                    if on_demand && !stopping && !Box::pin(self.has_pending()).await {
                        return Ok(Ended::Idle { loaded: false });
                    }
                    tokio::select! {
                        () = Box::pin(self.leadership.until_delivering()) => {}
                        () = shutdown.cancelled() => stopping = true,
                    }
                    continue;
                }
            }
            let now = tokio::time::Instant::now();
            if on_disk
                && !stopping
                && schedule.loaded < self.window
                && reads_paused_until.is_none_or(|t| t <= now)
            {
                let want = self.window - schedule.loaded;
                match Box::pin(
                    self.outbox
                        .pending_after(&self.endpoint.id, schedule.cursor, want),
                )
                .await
                {
                    Ok(rows) => {
                        reads_paused_until = None;
                        on_disk = rows.len() == want;
                        loaded_any |= !rows.is_empty();
                        for row in rows {
                            schedule.push(row);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(endpoint = %self.endpoint.id, error = %e, "cannot read pending deliveries; retrying in 1 s");
                        reads_paused_until = Some(now + STORAGE_RETRY);
                    }
                }
            }
            let mut due = Vec::new();
            let mut needs_permit = false;
            let paused = *pause.borrow_and_update();
            while !stopping
                && !paused
                && acquiring.is_none()
                && in_flight.len() + due.len() < self.max_in_flight
            {
                if schedule.next_due().is_none_or(|at| at > now_ms()) {
                    break;
                }
                let permits = match (&self.share, spare.take()) {
                    (None, _) => None,
                    (Some(_), Some(kept)) => Some(kept),
                    (Some(share), None) => match share.try_acquire() {
                        Some(permits) => Some(permits),
                        None if on_demand && in_flight.is_empty() && due.is_empty() => {
                            needs_permit = true;
                            break;
                        }
                        None => {
                            acquiring = Some(Box::pin(share.clone().acquire()));
                            break;
                        }
                    },
                };
                let Some(next) = schedule.pop_due(now_ms()) else {
                    spare = permits;
                    break;
                };
                due.push((next, permits));
            }
            if needs_permit {
                // Its results recorded first: what is read again after the wait is current.
                Box::pin(self.commit_all(committing.take(), std::mem::take(&mut completions)))
                    .await?;
                return Ok(Ended::NeedsPermit);
            }
            // Permits are held only for an attempt about to start.
            if stopping || paused || schedule.next_due().is_none_or(|at| at > now_ms()) {
                spare = None;
                acquiring = None;
            }
            if !due.is_empty() {
                // From memory when fresh, else one read transaction for every attempt of this round.
                let seqs = due.iter().map(|((_, head), _)| head.seq).collect();
                match Box::pin(self.outbox.events_to_deliver(seqs)).await {
                    Ok(events) => {
                        for (((sandbox, head), permits), stored) in due.into_iter().zip(events) {
                            let attempt = attempt(
                                self.client.clone(),
                                self.endpoint.clone(),
                                sandbox,
                                head,
                                stored,
                                (self.leadership.clone(), term, abandon.clone()),
                            );
                            in_flight.spawn(async move {
                                // Held until the attempt ends.
                                let _permits = permits;
                                attempt.await
                            });
                        }
                    }
                    Err(e) => {
                        tracing::error!(endpoint = %self.endpoint.id, error = %e, "cannot read events from the outbox; retrying in 1 s");
                        for ((sandbox, head), _) in due {
                            let state = DeliveryState {
                                next_attempt_at_ms: now_ms() + 1000,
                                ..head.state
                            };
                            schedule.reschedule(&sandbox, state);
                        }
                    }
                }
            }
            let commit_due = completions.len() >= COMMIT_BATCH
                || stopping
                || first_uncommitted
                    .is_some_and(|t: tokio::time::Instant| t.elapsed() >= COMMIT_DELAY);
            let commits_paused = !stopping && commits_paused_until.is_some_and(|t| t > now);
            if !completions.is_empty() && commit_due && !commits_paused && committing.is_none() {
                let batch: Arc<[Completion]> = std::mem::take(&mut completions).into();
                let outbox = self.outbox.clone();
                let shared = self.commits.clone();
                committing = Some(Box::pin(async move {
                    let result = match shared {
                        Some(queue) => queue.complete(batch.clone()).await,
                        None => outbox.complete(batch.clone()).await,
                    };
                    (batch, result)
                }));
                first_uncommitted = None;
            }
            if stopping && in_flight.is_empty() && committing.is_none() {
                break;
            }
            let idle = on_demand
                && !stopping
                && !on_disk
                && schedule.loaded == 0
                && in_flight.is_empty()
                && completions.is_empty()
                && committing.is_none();
            if idle {
                return Ok(Ended::Idle { loaded: loaded_any });
            }
            let wake_at = schedule.next_due().filter(|_| {
                !stopping && !paused && acquiring.is_none() && in_flight.len() < self.max_in_flight
            });
            let commit_at = first_uncommitted
                .filter(|_| committing.is_none())
                .map(|t| t + COMMIT_DELAY)
                .map(|at| commits_paused_until.map_or(at, |paused| at.max(paused)));
            let timer = async {
                let due = wake_at.map(|at| {
                    let wait = u64::try_from(at - now_ms()).unwrap_or(0);
                    tokio::time::Instant::now() + Duration::from_millis(wait)
                });
                let reload_at = reads_paused_until.filter(|_| on_disk && !stopping);
                let times = due.into_iter().chain(commit_at).chain(reload_at);
                match times.min() {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                    self.finish(joined, &mut schedule, &mut completions);
                    while let Some(joined) = in_flight.try_join_next() {
                        self.finish(joined, &mut schedule, &mut completions);
                    }
                    first_uncommitted.get_or_insert_with(tokio::time::Instant::now);
                }
                (batch, result) = async { committing.as_mut().expect("guarded").await }, if committing.is_some() => {
                    committing = None;
                    match result {
                        Ok(()) => commits_paused_until = None,
                        // Kept, and committed once the outbox can be written again. Until then a
                        // restart would deliver these once more, as at-least-once allows.
                        Err(e) if !stopping => {
                            tracing::warn!(endpoint = %self.endpoint.id, error = %e, pending = batch.len(), "cannot record delivery results; retrying in 1 s");
                            completions.splice(0..0, batch.iter().cloned());
                            first_uncommitted = Some(tokio::time::Instant::now());
                            commits_paused_until = Some(tokio::time::Instant::now() + STORAGE_RETRY);
                        }
                        Err(e) => self.unrecorded_at_stop(batch.len(), &e),
                    }
                }
                permits = async { acquiring.as_mut().expect("guarded").await }, if acquiring.is_some() => {
                    acquiring = None;
                    spare = Some(permits);
                }
                () = appended.notified(), if !stopping => {
                    on_disk = true;
                }
                // Paused or resumed: the loop re-reads the switch.
                Ok(()) = pause.changed(), if !stopping => {}
                _ = timer => {}
                _ = shutdown.cancelled(), if !stopping => {
                    stopping = true;
                    drain_deadline.as_mut().reset(tokio::time::Instant::now() + drain);
                    if !in_flight.is_empty() {
                        tracing::info!(endpoint = %self.endpoint.id, in_flight = in_flight.len(), "draining in-flight deliveries");
                    }
                }
                _ = &mut drain_deadline, if stopping => {
                    tracing::warn!(endpoint = %self.endpoint.id, abandoned = in_flight.len(), "drain deadline reached; unfinished deliveries stay in the outbox");
                    // Each unanswered attempt ends and is journaled as canceled; nothing of it is
                    // committed, so the outbox delivers it again after the restart.
                    abandon.cancel();
                    let grace = tokio::time::Instant::now() + ABANDON_GRACE;
                    while let Ok(Some(joined)) =
                        tokio::time::timeout_at(grace, in_flight.join_next()).await
                    {
                        self.finish(joined, &mut schedule, &mut completions);
                    }
                    in_flight.abort_all();
                    break;
                }
            }
        }
        let left = completions.len();
        if let Err(e) = Box::pin(self.commit_all(committing.take(), completions)).await {
            self.unrecorded_at_stop(left, &e);
        }
        Ok(Ended::Stopped)
    }

    /// Stopping with results the outbox cannot take (a full disk): not a failure of the stop.
    /// Their events are still owed in the outbox, so they are delivered again after the restart.
    fn unrecorded_at_stop(&self, results: usize, error: &OutboxError) {
        tracing::warn!(endpoint = %self.endpoint.id, results, %error, "could not record delivery results before stopping; their events are delivered again after the restart");
    }

    /// Whether the endpoint has deliveries on disk (or they cannot be read: assumed so).
    async fn has_pending(&self) -> bool {
        let pending = self.outbox.pending_after(&self.endpoint.id, 0, 1).await;
        !matches!(pending, Ok(rows) if rows.is_empty())
    }

    /// Waits for the commit in flight, then commits `completions`: every result recorded, in the
    /// order it came.
    async fn commit_all(
        &self,
        committing: Option<Commit>,
        completions: Vec<Completion>,
    ) -> Result<(), OutboxError> {
        if let Some(commit) = committing {
            commit.await.1?;
        }
        // Nothing to record (a dispatcher starting, or taking over, has none): no trip to the
        // outbox's thread pool, which thousands of webhooks starting at once would crowd.
        if completions.is_empty() {
            return Ok(());
        }
        match &self.commits {
            Some(queue) => queue.complete(completions.into()).await,
            None => self.outbox.complete(completions.into()).await,
        }
    }
}
