//! A registered webhook's dispatcher runs only while its endpoint has deliveries to make: the
//! outbox's append for the endpoint starts it, and it ends once it has had nothing left to do
//! for a moment. Of thousands of idle webhooks only their endpoints and routes stay in memory,
//! not a task each (BENCHMARKS.md, "Many teams").

use super::{Dispatcher, Ended};
use crate::outbox::{EndpointWaker, Outbox};
use futures_util::FutureExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a dispatcher started on demand stays after its last delivery with nothing left to
/// do, so a webhook receiving an event every few seconds is not started for each one. It waits
/// here, outside its delivery loop, so thousands of webhooks done with a burst hold little.
const LINGER: Duration = Duration::from_secs(5);

/// A dispatcher started when its endpoint has deliveries, and stopped for good with [`Self::stop`].
pub struct OnDemand {
    slot: Arc<Slot>,
}

struct Slot {
    dispatcher: Dispatcher,
    stop: CancellationToken,
    /// How long in-flight attempts get to finish once stopped.
    drain: Duration,
    /// The task delivering now, if any: set by a wake-up, cleared by the task as it ends, both
    /// under this lock, so a wake-up either reaches the running task or starts a new one.
    task: Mutex<Option<JoinHandle<()>>>,
}

impl OnDemand {
    /// Wakes `dispatcher` on every append for its endpoint, and now: what was left on disk
    /// before a restart (or while the webhook's secret did not open) is delivered too.
    pub fn start(dispatcher: Dispatcher, outbox: &Outbox, drain: Duration) -> Self {
        let slot = Arc::new(Slot {
            dispatcher,
            stop: CancellationToken::new(),
            drain,
            task: Mutex::new(None),
        });
        outbox.wake_on_append(&slot.dispatcher.endpoint.id, slot.clone());
        slot.clone().wake();
        Self { slot }
    }

    /// Stops it: no new start, and the running task (if any) finishes its in-flight attempts.
    pub async fn stop(self) {
        self.slot.stop.cancel();
        let running = self.slot.lock().take();
        if let Some(task) = running {
            let _ = task.await;
        }
    }
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<JoinHandle<()>>> {
        self.task.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Delivers until stopped or idle (then lingers); then ends, unless a wake-up came
    /// meanwhile. While it waits for a permit or lingers it holds only this future: its loop's
    /// state is boxed and dropped.
    async fn serve(self: Arc<Self>) {
        let mut permits = None;
        loop {
            let ended = Box::pin(self.dispatcher.deliver(
                self.stop.clone(),
                self.drain,
                true,
                permits.take(),
            ))
            .await;
            if let (Ok(Ended::NeedsPermit), Some(share)) = (&ended, &self.dispatcher.share) {
                // In its team's line (first come, first served), as the loop would have waited.
                tokio::select! {
                    got = share.clone().acquire() => {
                        permits = Some(got);
                        continue;
                    }
                    () = self.stop.cancelled() => {}
                }
            }
            if let Ok(Ended::Idle { loaded: true }) = ended {
                tokio::select! {
                    () = self.dispatcher.appended.notified() => continue,
                    () = tokio::time::sleep(LINGER) => {}
                    () = self.stop.cancelled() => {}
                }
            }
            let mut task = self.lock();
            match ended {
                // A wake-up that came since its last wait is its permit, still stored: deliver
                // again rather than leave those deliveries waiting for the next append.
                Ok(Ended::Idle { .. })
                    if !self.stop.is_cancelled()
                        && self.dispatcher.appended.notified().now_or_never().is_some() =>
                {
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(endpoint = %self.dispatcher.endpoint.id, error = %e, "a registered webhook's dispatcher stopped; the next event for it starts it again");
                }
            }
            *task = None;
            self.dispatcher.outbox.metrics().registered_delivering.dec();
            return;
        }
    }
}

impl EndpointWaker for Slot {
    fn wake(self: Arc<Self>) {
        let mut task = self.lock();
        if task.is_some() {
            self.dispatcher.appended.notify_one();
        } else if !self.stop.is_cancelled() {
            self.dispatcher.outbox.metrics().registered_delivering.inc();
            *task = Some(tokio::spawn(self.clone().serve()));
        }
    }
}
