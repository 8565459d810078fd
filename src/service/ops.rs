//! The operator's side of `run`: the ops server on LISTEN_ADDR (`/metrics`, `/healthz`,
//! `/readyz`, `/status`; the admin API and console when ADMIN_TOKEN is set; the events API when
//! it shares the port), and the metrics pushed over OTLP.

use super::Pipeline;
use crate::admin::{self, Admin, AdminEndpoint};
use crate::config::{ConfigError, EndpointConfig, RedisSettings};
use crate::metrics::Metrics;
use crate::reconcile::ReconcileReport;
use crate::server::otlp::OtlpPush;
use crate::server::{self, OpsView};
use crate::util::admin_token::AdminToken;
use crate::util::redact::redact_url;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use url::Url;

/// Starts pushing the metrics to `endpoint`, if one is set.
pub fn start_otlp(
    endpoint: Option<&Url>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Option<OtlpPush>> {
    let Some(endpoint) = endpoint else {
        return Ok(None);
    };
    let push = OtlpPush::start(endpoint.as_str(), metrics).map_err(|e| {
        ConfigError::new(
            "OTEL_EXPORTER_OTLP_ENDPOINT (--otel-exporter-otlp-endpoint)",
            e.to_string(),
        )
    })?;
    tracing::info!(endpoint = %redact_url(endpoint), "pushing metrics over OTLP");
    Ok(Some(push))
}

/// What the admin API shows and operates besides the pipeline.
pub struct AdminSettings<'a> {
    /// Who may operate; none turns the admin API and console off.
    pub token: Option<AdminToken>,
    /// The configured endpoints.
    pub endpoints: &'a [EndpointConfig],
    /// With Redis, where the shared dead letters are.
    pub shared_dead_letters: Option<RedisSettings>,
}

/// The ops server's listener, bound before anything starts so a taken port fails at once.
pub struct OpsServer {
    listener: tokio::net::TcpListener,
}

impl OpsServer {
    /// Binds `listen` (LISTEN_ADDR).
    pub async fn bind(listen: SocketAddr) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
            ConfigError::new(
                "LISTEN_ADDR (--listen)",
                format!("cannot listen on {listen}: {e}"),
            )
        })?;
        Ok(Self { listener })
    }

    /// Serves on the pipeline until it stops, with the admin API when `admin` has a token and
    /// `api` (the events API's routes) when they share the port.
    pub fn start(
        self,
        pipeline: &mut Pipeline,
        admin: AdminSettings<'_>,
        reconciliation: Option<watch::Receiver<ReconcileReport>>,
        api: Option<axum::Router>,
    ) -> anyhow::Result<()> {
        tracing::info!(addr = %self.listener.local_addr()?, "serving /metrics, /healthz, /readyz and /status");
        let readiness = pipeline.outbox.metrics().readiness();
        let admin_token = admin.token.clone();
        let admin = admin.token.map(|token| {
            tracing::info!("admin API on /admin/v1/ and console on /, behind ADMIN_TOKEN");
            admin::router(Admin {
                token,
                outbox: pipeline.outbox.clone(),
                journal: pipeline.journal.clone(),
                controls: pipeline.controls.clone(),
                endpoints: Arc::new(
                    admin
                        .endpoints
                        .iter()
                        .map(|e| AdminEndpoint {
                            config: e.clone(),
                            url_shown: redact_url(&e.url),
                        })
                        .collect(),
                ),
                reconciliation,
                shutdown: pipeline.shutdown_token(),
                readiness: readiness.clone(),
                leadership: pipeline.leadership.clone(),
                shared_dead_letters: admin.shared_dead_letters,
            })
        });
        let extra = match (admin, api) {
            (Some(admin), Some(api)) => Some(admin.merge(api)),
            (admin, api) => admin.or(api),
        };
        let view = OpsView {
            outbox: pipeline.outbox.clone(),
            readiness,
            leadership: pipeline.leadership.clone(),
            admin: admin_token,
        };
        let (listener, token) = (self.listener, pipeline.shutdown_token());
        pipeline
            .spawn_source(async move { Ok(server::serve(listener, view, extra, token).await?) });
        Ok(())
    }
}
