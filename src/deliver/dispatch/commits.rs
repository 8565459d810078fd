//! Group commit for many dispatchers: the results each dispatcher has gathered are queued, and
//! one task records every queued batch in a single outbox transaction (one fsync), instead of
//! one transaction (and one blocking thread waiting for the writer) per registered webhook.

use crate::outbox::{Completion, Outbox, OutboxError};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Results recorded together at most, per transaction.
const GROUP_LIMIT: usize = 8192;

type Queued = (Arc<[Completion]>, oneshot::Sender<Result<(), String>>);

/// Where dispatchers hand their results to be committed together.
#[derive(Clone)]
pub struct CommitQueue {
    queue: mpsc::UnboundedSender<Queued>,
}

impl CommitQueue {
    /// Starts the task committing to `outbox`; it ends when every handle is dropped.
    pub fn start(outbox: Outbox) -> Self {
        let (queue, mut queued) = mpsc::unbounded_channel::<Queued>();
        tokio::spawn(async move {
            while let Some(first) = queued.recv().await {
                let mut size = first.0.len();
                let mut group = vec![first];
                while size < GROUP_LIMIT {
                    match queued.try_recv() {
                        Ok(more) => {
                            size += more.0.len();
                            group.push(more);
                        }
                        Err(_) => break,
                    }
                }
                let all: Arc<[Completion]> = group
                    .iter()
                    .flat_map(|(batch, _)| batch.iter().cloned())
                    .collect();
                let result = outbox.complete(all).await.map_err(|e| e.to_string());
                for (_, reply) in group {
                    let _ = reply.send(result.clone());
                }
            }
        });
        Self { queue }
    }

    /// Records `batch` with whatever other dispatchers queued meanwhile.
    pub async fn complete(&self, batch: Arc<[Completion]>) -> Result<(), OutboxError> {
        let (reply, answer) = oneshot::channel();
        let gone = || OutboxError::Storage("the commit task stopped".into());
        self.queue.send((batch, reply)).map_err(|_| gone())?;
        answer
            .await
            .map_err(|_| gone())?
            .map_err(OutboxError::Storage)
    }
}
