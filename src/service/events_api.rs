//! Starts E2B's events API when a database is configured: the pool, the migrations (retried in
//! the background while Postgres is down), and the routes on their own listener or merged into
//! the ops server.

use crate::api::{self, EventsApi};
use crate::config::{ConfigError, EventsApiConfig};
use crate::postgres::Database;
use crate::server::listen::{self, ConnectionLimits};
use crate::util::destination::DestinationPolicy;

use super::Pipeline;

/// The API's routes when they share LISTEN_ADDR; `None` when they have their own listener (or
/// no database is configured).
pub async fn start(
    config: Option<&EventsApiConfig>,
    pipeline: &mut Pipeline,
) -> anyhow::Result<Option<axum::Router>> {
    let Some(config) = config else {
        return Ok(None);
    };
    let setting = "POSTGRES_CONNECTION_STRING (or DATABASE_URL)";
    let database = Database::new(&config.database).map_err(|e| ConfigError::new(setting, e))?;
    pipeline.spawn_source({
        let (database, token) = (database.clone(), pipeline.shutdown_token());
        async move {
            database.migrate_until_done(token).await;
            Ok(())
        }
    });
    let routes = api::router(EventsApi::new(
        database,
        DestinationPolicy::new(config.allow_private.clone()),
    ));
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
