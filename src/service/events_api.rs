//! Starts E2B's events API from its settings: the pool, the migrations (retried in the
//! background while Postgres is down), delivery to registered webhooks, and the routes on their
//! own listener or merged into the ops server. Sources read only once the registered webhooks
//! are known.

use crate::api::{self, EventsApi};
use crate::config::{ConfigError, EventsApiConfig, RedisSettings};
use crate::deliver::retry::RetryPolicy;
use crate::postgres::Database;
use crate::postgres::event_history::HistoryWriter;
use crate::server::listen::{self, ConnectionLimits};
use crate::util::client_address::TrustedProxies;
use crate::util::destination::DestinationPolicy;

use super::Pipeline;
use super::registered_webhooks::{DeliverySettings, WebhookRegistry};
use crate::team_scope::TeamScope;
use crate::user_auth::UserTokens;
use tokio::sync::watch;

/// Resolves once sources may read: the registered webhooks are known (from the outbox's
/// snapshot or from Postgres), so none of their events passes before their route exists.
/// Until then events wait where they are (the Redis stream, the file).
async fn until_sources_may_read(mut known: watch::Receiver<bool>) {
    if !*known.borrow() {
        tracing::info!(
            "reading events once the registered webhooks are known (from Postgres, or as kept before a restart)"
        );
    }
    let _ = known.wait_for(|known| *known).await;
}

/// Starts the API and the delivery to registered webhooks (retried by `retry`); the portal
/// re-sends dead letters from `shared_dead_letters` with Redis. Returns the API's routes when
/// they share LISTEN_ADDR.
pub async fn start(
    config: &EventsApiConfig,
    retry: &RetryPolicy,
    shared_dead_letters: Option<RedisSettings>,
    teams: TeamScope,
    pipeline: &mut Pipeline,
) -> anyhow::Result<Option<axum::Router>> {
    let setting = "POSTGRES_CONNECTION_STRING (or DATABASE_URL)";
    let database = Database::new(&config.database)
        .map_err(|e| ConfigError::new(setting, e))?
        .with_secret_keys(config.secret_keys.clone());
    pipeline.spawn_source({
        let (database, token) = (database.clone(), pipeline.shutdown_token());
        async move {
            // A key that does not open the stored secrets ends the service (exit 2) once
            // Postgres answers: it could deliver to none of those webhooks.
            database.migrate_until_done(token).await.map_err(|e| {
                ConfigError::new(crate::postgres::secret_keys::SETTING, e.to_string())
            })?;
            Ok(())
        }
    });
    // Every event received also goes to the lifecycle history, never slowing delivery.
    let (history, received) = HistoryWriter::new(
        database.clone(),
        config.events_retention,
        config.history_buffer,
        pipeline.outbox.metrics().event_history_dropped.clone(),
    );
    pipeline.outbox.send_received_to(received);
    pipeline.spawn_source({
        let token = pipeline.shutdown_token();
        async move {
            history.run(token).await;
            Ok(())
        }
    });
    // Every delivery attempt goes to the delivery log, from the journal's live feed, until the
    // deliveries have stopped (those finished or canceled during the drain included).
    let (journal, log_database) = (pipeline.journal.clone(), database.clone());
    let retention = config.events_retention;
    pipeline.spawn_after_deliveries(move |deliveries_done| async move {
        super::delivery_log::run(&journal, log_database, retention, deliveries_done).await;
        Ok(())
    });
    let destinations = DestinationPolicy::new(config.allow_private.clone());
    let mut registry = WebhookRegistry::new(
        database.clone(),
        pipeline.outbox.clone(),
        teams,
        (pipeline.journal.clone(), pipeline.leadership.clone()),
        DeliverySettings {
            retry: retry.clone(),
            team_concurrency: config.delivery_concurrency.per_team,
            total_concurrency: config.delivery_concurrency.total,
            timeout: config.delivery_timeout,
            response_body_limit: config.response_body_limit,
            destinations: destinations.clone(),
        },
    )?;
    registry.restore().await;
    pipeline.hold_sources_until(until_sources_may_read(registry.known()));
    let token = pipeline.shutdown_token();
    pipeline.spawn_source(async move {
        registry.run(token).await;
        Ok(())
    });
    let users = UserTokens::new(config.token_issuers.clone())
        .map_err(|e| ConfigError::new("AUTH_PROVIDER_CONFIG (--auth-provider-config)", e))?;
    if !config.token_issuers.is_empty() {
        tracing::info!(
            issuers = ?config.token_issuers.iter().map(|i| i.issuer.as_str()).collect::<Vec<_>>(),
            "events API: users' bearer tokens accepted (with X-Team-ID)"
        );
    }
    let proxies = TrustedProxies::new(config.trusted_proxies.clone());
    let api = EventsApi::new(
        database,
        destinations,
        config.webhooks_per_team,
        users,
        proxies,
    );
    // The team portal (/portal/) lives wherever the API does, and only when it is on.
    let portal = crate::portal::router(
        api.clone(),
        crate::portal::PortalSettings {
            outbox: pipeline.outbox.clone(),
            shared_dead_letters,
            timeout: config.delivery_timeout,
            response_body_limit: config.response_body_limit,
        },
    );
    let routes = api::router(api).merge(portal);
    let Some(addr) = config.listen else {
        tracing::info!("events API (/events/webhooks) on LISTEN_ADDR");
        return Ok(Some(routes));
    };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        ConfigError::new(
            "API_LISTEN_ADDR (--api-listen-addr)",
            format!("cannot listen on {addr}: {e}"),
        )
    })?;
    tracing::info!(addr = %listener.local_addr()?, "events API (/events/webhooks)");
    let token = pipeline.shutdown_token();
    // On its own port every path is the API's: an unknown one gets E2B's error body too.
    let routes = routes.fallback(api::not_found);
    pipeline.spawn_source(async move {
        Ok(listen::serve(
            listener,
            routes,
            ConnectionLimits::default(),
            token.cancelled_owned(),
        )
        .await?)
    });
    Ok(None)
}
