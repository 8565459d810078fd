//! The configured sources, built from their settings and handed to the pipeline, which starts
//! each one once sources may read: the events file and the orchestrator's Redis stream.

use super::Pipeline;
use crate::config::ConfigError;
use crate::health::StreamProgress;
use crate::leadership::Leadership;
use crate::metrics::Metrics;
use crate::outbox::{EventIntake, SandboxView};
use crate::source::Source;
use crate::source::file::FileSource;
use crate::source::redis::{
    LeaseTiming, RedisBackground, RedisSettings, RedisSourceError, RedisStreamSource,
};
use crate::team_scope::TeamScope;
use anyhow::Context;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch;

/// Who delivers: with Redis, instances share the consumer group and only the lease holder
/// does; alone, without a shared lease, this instance.
pub fn leadership(redis: Option<&RedisSettings>, metrics: &Metrics) -> Leadership {
    match redis {
        Some(redis) => Leadership::standby(redis.consumer.clone()),
        None => {
            metrics.leader.set(1);
            Leadership::always_active()
        }
    }
}

/// The Redis stream as the reconciler uses it: how far reading it is, the entrance for the
/// events it synthesizes, and the view of sandboxes every instance shares.
pub struct SharedStream {
    /// Where reading the stream stands.
    pub progress: watch::Receiver<StreamProgress>,
    /// Synthesized events go through the stream like every other event.
    pub intake: Arc<dyn EventIntake>,
    /// The sandboxes as every instance sees them.
    pub view: Arc<dyn SandboxView>,
}

/// The sources running on the pipeline.
pub struct Sources {
    /// With Redis, the stream the reconciler shares (taken by it).
    pub stream: Option<SharedStream>,
    /// Redis's lease keeper and acknowledger: they outlive the pipeline's drain.
    background: Option<RedisBackground>,
}

impl Sources {
    /// Builds the sources `events_file` and `redis` configure and adds them to `pipeline`.
    pub async fn start(
        events_file: Option<&Path>,
        redis: Option<RedisSettings>,
        teams: TeamScope,
        pipeline: &mut Pipeline,
    ) -> anyhow::Result<Self> {
        let mut sources: Vec<Box<dyn Source>> = Vec::new();
        if let Some(path) = events_file {
            let readiness = pipeline.outbox.metrics().readiness();
            let file = FileSource::open(path, pipeline.outbox.clone(), &readiness)
                .await
                .with_context(|| format!("cannot open EVENTS_FILE {}", path.display()))?;
            sources.push(Box::new(file));
        }
        let (mut stream, mut background) = (None, None);
        if let Some(redis) = redis {
            let timing = LeaseTiming {
                ttl: redis.lease_ttl,
            };
            let source = RedisStreamSource::new(
                redis,
                teams,
                pipeline.outbox.clone(),
                pipeline.outbox.metrics().clone(),
                pipeline.leadership.clone(),
            )
            .map_err(|e| match e {
                RedisSourceError::InvalidSetting { setting, reason } => {
                    anyhow::Error::new(ConfigError::new(setting, reason))
                }
                other => anyhow::Error::new(other),
            })?;
            background = Some(source.start_background(timing));
            stream = Some(SharedStream {
                progress: source.progress(),
                intake: Arc::new(source.stream_intake()),
                view: Arc::new(source.shared_view()),
            });
            sources.push(Box::new(source));
        }
        for source in sources {
            pipeline.add_source(source);
        }
        Ok(Self { stream, background })
    }

    /// Acknowledges what was delivered and gives the lease up (after the pipeline stopped).
    pub async fn stop(self) {
        if let Some(background) = self.background {
            background.finish().await;
        }
    }
}
