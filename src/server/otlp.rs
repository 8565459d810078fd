//! OpenTelemetry push of the metrics `/metrics` serves, for clusters where nothing scrapes
//! Prometheus: E2B's services push OTLP to the node's collector (`localhost:4317`,
//! e2b-dev/infra's `OTEL_COLLECTOR_GRPC_ENDPOINT`). Set `OTEL_EXPORTER_OTLP_ENDPOINT` and the
//! same families are exported over OTLP/gRPC every `OTEL_METRIC_EXPORT_INTERVAL` (ms, SDK
//! default 60 s) by the official `opentelemetry` SDK.
//!
//! One observable instrument per Prometheus family reads the registry's text rendering at each
//! collection, so both outputs always agree: counters stay monotonic counters, gauges gauges,
//! and a histogram is sent as its `_bucket` (with `le`), `_sum` and `_count` series.

use crate::metrics::Metrics;
use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_otlp::{MetricExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why the OTLP exporter could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the OTLP metrics exporter: {0}")]
pub struct OtlpError(String);

/// A running OTLP push; [`OtlpPush::shutdown`] sends the last values.
pub struct OtlpPush {
    provider: SdkMeterProvider,
    /// Registers the instruments of families that appear later.
    registrar: tokio::task::JoinHandle<()>,
}

impl OtlpPush {
    /// Starts pushing `metrics` to `endpoint` (`http://host:4317`). Must be called inside the
    /// tokio runtime: the tonic exporter uses it.
    pub fn start(endpoint: &str, metrics: Arc<Metrics>) -> Result<Self, OtlpError> {
        let exporter = MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| OtlpError(e.to_string()))?;
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter).build())
            .with_resource(
                Resource::builder()
                    .with_service_name("e2b-webhook-emitter")
                    .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                    .build(),
            )
            .build();
        // prometheus-client renders a labelled family only once it has a sample, so families
        // are looked for again until every one the registry holds has its instrument.
        let meter = provider.meter("e2b-webhook-emitter");
        let mut registered = Registered::new(metrics);
        registered.register_new(&meter);
        let registrar = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(250));
            loop {
                ticks.tick().await;
                registered.register_new(&meter);
            }
        });
        Ok(Self {
            provider,
            registrar,
        })
    }

    /// Exports once more and stops. Blocking, so it runs off the async workers.
    pub async fn shutdown(self) {
        self.registrar.abort();
        let provider = self.provider;
        let result = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = result {
            tracing::warn!(error = %e, "the last OTLP metrics export failed");
        }
    }
}

/// The families that have an instrument.
struct Registered {
    metrics: Arc<Metrics>,
    snapshot: Arc<Snapshot>,
    names: std::collections::BTreeSet<String>,
}

impl Registered {
    fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            snapshot: Arc::new(Snapshot::new(metrics.clone())),
            metrics,
            names: std::collections::BTreeSet::new(),
        }
    }

    /// One observable instrument for each family rendered for the first time.
    fn register_new(&mut self, meter: &opentelemetry::metrics::Meter) {
        for family in families(&self.metrics.render()) {
            if self.names.insert(family.name.clone()) {
                register(meter, &family, &self.snapshot);
            }
        }
    }
}

/// The instruments of one Prometheus family: counters stay monotonic counters, gauges gauges,
/// and a histogram is its `_bucket`, `_sum` and `_count` series.
fn register(meter: &opentelemetry::metrics::Meter, family: &Family, snapshot: &Arc<Snapshot>) {
    let series = match family.kind.as_str() {
        "histogram" => vec![
            (format!("{}_bucket", family.name), true),
            (format!("{}_sum", family.name), true),
            (format!("{}_count", family.name), true),
        ],
        "counter" => vec![(family.name.clone(), true)],
        _ => vec![(family.name.clone(), false)],
    };
    for (name, monotonic) in series {
        // The Prometheus sample of a counter family carries `_total`.
        let sample_name = if family.kind == "counter" {
            format!("{name}_total")
        } else {
            name.clone()
        };
        let snapshot = snapshot.clone();
        let help = family.help.clone();
        if monotonic {
            meter
                .f64_observable_counter(name)
                .with_description(help)
                .with_callback(move |observer| {
                    for (attributes, value) in snapshot.samples(&sample_name) {
                        observer.observe(value, &attributes);
                    }
                })
                .build();
        } else {
            meter
                .f64_observable_gauge(name)
                .with_description(help)
                .with_callback(move |observer| {
                    for (attributes, value) in snapshot.samples(&sample_name) {
                        observer.observe(value, &attributes);
                    }
                })
                .build();
        }
    }
}

/// The registry's samples, rendered at most once per collection.
struct Snapshot {
    metrics: Arc<Metrics>,
    cached: Mutex<(Option<Instant>, Vec<Sample>)>,
}

impl Snapshot {
    fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            cached: Mutex::new((None, Vec::new())),
        }
    }

    fn samples(&self, name: &str) -> Vec<(Vec<KeyValue>, f64)> {
        let mut cached = self.cached.lock().expect("never poisoned: no panic inside");
        if cached
            .0
            .is_none_or(|at| at.elapsed() > Duration::from_millis(100))
        {
            *cached = (Some(Instant::now()), samples(&self.metrics.render()));
        }
        cached
            .1
            .iter()
            .filter(|s| s.name == name)
            .map(|s| {
                let attributes = s
                    .labels
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                    .collect();
                (attributes, s.value)
            })
            .collect()
    }
}

#[derive(Debug, PartialEq)]
struct Family {
    name: String,
    kind: String,
    help: String,
}

#[derive(Debug, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// The `# TYPE` and `# HELP` lines of an OpenMetrics rendering.
fn families(text: &str) -> Vec<Family> {
    let mut families: Vec<Family> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, kind)) = rest.split_once(' ')
        {
            families.push(Family {
                name: name.to_owned(),
                kind: kind.to_owned(),
                help: String::new(),
            });
        }
    }
    // HELP comes before TYPE in OpenMetrics: attach it on a second pass.
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ")
            && let Some((name, help)) = rest.split_once(' ')
            && let Some(family) = families.iter_mut().find(|f| f.name == name)
        {
            family.help = help.to_owned();
        }
    }
    families
}

/// The sample lines of an OpenMetrics rendering: `name{k="v",…} value`.
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(parse_sample)
        .collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        None => (series, Vec::new()),
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `k="v",k2="v\"2"` with OpenMetrics escapes (`\\`, `\"`, `\n`).
fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return Some(labels);
        }
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.push((key.trim_start_matches(',').to_owned(), value));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prometheus_rendering_is_read_back_family_by_family() {
        let metrics = Metrics::new();
        metrics.event_received("redis", "kill");
        metrics.event_received("redis", "kill");
        metrics.orchestrators_known.set(3);
        // A labelled family is rendered only once it has a sample.
        assert!(
            !families(&metrics.render())
                .iter()
                .any(|f| f.name == "e2b_webhook_delivery_latency_seconds")
        );
        metrics.delivery_latency("default", 0.25);
        let text = metrics.render();
        let families = families(&text);
        let kind = |name: &str| {
            families
                .iter()
                .find(|f| f.name == name)
                .map(|f| f.kind.as_str())
        };
        assert_eq!(kind("e2b_webhook_events_received"), Some("counter"));
        assert_eq!(kind("e2b_webhook_orchestrators_known"), Some("gauge"));
        assert_eq!(
            kind("e2b_webhook_delivery_latency_seconds"),
            Some("histogram")
        );
        assert!(families.iter().all(|f| !f.help.is_empty()), "{families:?}");
        let samples = samples(&text);
        assert!(samples.contains(&Sample {
            name: "e2b_webhook_events_received_total".into(),
            labels: vec![
                ("source".into(), "redis".into()),
                ("type".into(), "kill".into())
            ],
            value: 2.0,
        }));
        assert!(samples.contains(&Sample {
            name: "e2b_webhook_orchestrators_known".into(),
            labels: vec![],
            value: 3.0,
        }));
    }

    #[test]
    fn label_values_keep_their_escapes() {
        let sample =
            parse_sample(r#"x_total{a="q\"uo,te",b="back\\slash",c="new\nline"} 1.5"#).unwrap();
        assert_eq!(
            sample.labels,
            [
                ("a".to_owned(), "q\"uo,te".to_owned()),
                ("b".to_owned(), "back\\slash".to_owned()),
                ("c".to_owned(), "new\nline".to_owned())
            ]
        );
        assert_eq!(sample.value, 1.5);
        assert!(parse_sample("# EOF").is_none() || samples("# EOF").is_empty());
    }
}
