//! How dispatchers are made: a configured endpoint's, with its own HTTP client, and a
//! registered webhook's, sharing the client, commits, retry schedule and concurrency with every
//! other registered webhook.

use super::{CommitQueue, Dispatcher};
use crate::deliver::endpoint::EndpointConfig;
use crate::deliver::http::WebhookClient;
use crate::deliver::journal::DeliveryJournal;
use crate::deliver::retry::RetryPolicy;
use crate::deliver::shares::DeliveryShares;
use crate::leadership::Leadership;
use crate::outbox::Outbox;
use std::sync::Arc;
use tokio::sync::watch;

/// Pending deliveries held in memory per endpoint; the rest waits on disk.
const WINDOW: usize = 10_000;
/// The same for a registered webhook: thousands of them may have a backlog at once, and a few
/// dozen pending deliveries keep its share of attempts busy (at most one per sandbox at a time).
const REGISTERED_WINDOW: usize = 64;

/// What the dispatchers of registered webhooks share instead of holding one each: the HTTP
/// client and its connection pool, the commits of their results, and the delivery concurrency.
#[derive(Clone)]
pub struct SharedDelivery {
    /// One client for every registered webhook (their URLs are guarded alike).
    pub client: WebhookClient,
    /// Results of every registered webhook committed together.
    pub commits: CommitQueue,
    /// The retry schedule (the operator's).
    pub retry: Arc<RetryPolicy>,
    /// Each team's share of the attempts in flight.
    pub shares: DeliveryShares,
}

/// What an operator watches and switches for one dispatcher.
pub struct Oversight {
    /// Where attempts are recorded.
    pub journal: Arc<DeliveryJournal>,
    /// The endpoint's pause switch.
    pub paused: watch::Receiver<bool>,
}

impl Dispatcher {
    /// A dispatcher for `endpoint` with its own pooled HTTP client.
    pub fn new(
        endpoint: EndpointConfig,
        outbox: Outbox,
        policy: RetryPolicy,
        max_in_flight: usize,
        oversight: Oversight,
        leadership: Leadership,
    ) -> Result<Self, crate::deliver::http::ClientError> {
        Ok(Self {
            client: WebhookClient::for_endpoint(&endpoint)?,
            appended: outbox.subscribe_endpoint(&endpoint.id),
            endpoint: Arc::new(endpoint),
            outbox,
            policy: Arc::new(policy),
            max_in_flight: max_in_flight.max(1),
            journal: oversight.journal,
            paused: oversight.paused,
            leadership,
            window: WINDOW,
            share: None,
            commits: None,
        })
    }

    /// A dispatcher for a webhook `team` registered: it delivers through `shared`'s client,
    /// commits with the other webhooks and takes a permit of its team's share for each attempt.
    pub fn registered(
        endpoint: EndpointConfig,
        outbox: Outbox,
        oversight: Oversight,
        leadership: Leadership,
        shared: &SharedDelivery,
        team: uuid::Uuid,
    ) -> Self {
        let share = shared.shares.of_team(team);
        Self {
            client: shared.client.clone(),
            endpoint: Arc::new(endpoint),
            outbox,
            policy: shared.retry.clone(),
            // The team's share bounds it; this only keeps the loop's own arithmetic finite.
            max_in_flight: REGISTERED_WINDOW,
            journal: oversight.journal,
            paused: oversight.paused,
            leadership,
            window: REGISTERED_WINDOW,
            share: Some(share),
            commits: Some(shared.commits.clone()),
            // Woken through its [`OnDemand`], which the outbox wakes.
            appended: Arc::default(),
        }
    }
}
