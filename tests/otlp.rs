//! OTLP metrics push through the real binary, received by a real OTLP/gRPC collector stand-in:
//! a tonic server implementing `opentelemetry.proto.collector.metrics.v1.MetricsService` from
//! the official `opentelemetry-proto` definitions, decoding what the emitter sends.

mod common;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as NumberValue;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::{Request, Response, Status};

const SECRET: &str = "otlp-test-webhook-secret";

#[derive(Clone, Default)]
struct Collector {
    requests: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.requests.lock().unwrap().push(request.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

/// One exported number: metric name, attributes, value, and whether it is a monotonic sum.
#[derive(Debug, Clone)]
struct Point {
    metric: String,
    attributes: Vec<(String, String)>,
    value: f64,
    monotonic: bool,
}

fn points(request: &ExportMetricsServiceRequest) -> Vec<Point> {
    let mut out = Vec::new();
    for resource in &request.resource_metrics {
        for scope in &resource.scope_metrics {
            for metric in &scope.metrics {
                let (data_points, monotonic) = match &metric.data {
                    Some(Data::Sum(sum)) => (&sum.data_points, sum.is_monotonic),
                    Some(Data::Gauge(gauge)) => (&gauge.data_points, false),
                    _ => continue,
                };
                for point in data_points {
                    let value = match point.value {
                        Some(NumberValue::AsDouble(v)) => v,
                        Some(NumberValue::AsInt(v)) => v as f64,
                        None => continue,
                    };
                    let attributes = point
                        .attributes
                        .iter()
                        .map(|kv| {
                            let value = match kv.value.as_ref().and_then(|v| v.value.clone()) {
                                Some(AnyValue::StringValue(s)) => s,
                                other => format!("{other:?}"),
                            };
                            (kv.key.clone(), value)
                        })
                        .collect();
                    out.push(Point {
                        metric: metric.name.clone(),
                        attributes,
                        value,
                        monotonic,
                    });
                }
            }
        }
    }
    out
}

fn service_name(request: &ExportMetricsServiceRequest) -> Option<String> {
    request.resource_metrics.iter().find_map(|r| {
        r.resource.as_ref()?.attributes.iter().find_map(|kv| {
            (kv.key == "service.name").then(|| match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(s) => Some(s.clone()),
                _ => None,
            })?
        })
    })
}

#[test]
fn the_binary_pushes_the_prometheus_metrics_over_otlp() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let collector = Collector::default();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tonic::transport::Server::builder()
        .add_service(MetricsServiceServer::new(collector.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    runtime.spawn(server);

    let receiver = common::TestReceiver::start(0, SECRET, Arc::new(|_, _, _| 200));
    let dir = tempfile::tempdir().unwrap();
    let (events, _) = common::lifecycle_ndjson(3, 2);
    let events_file = dir.path().join("events.ndjson");
    std::fs::write(&events_file, events).unwrap();
    let listen = format!("127.0.0.1:{}", common::free_port());
    let endpoint = format!("http://127.0.0.1:{port}");
    let command_env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        // The SDK's export interval, in ms (default 60 s).
        ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
    ];
    let emitter = common::RunningEmitter::start_with_env(
        &[
            "--webhook-url",
            &format!("http://127.0.0.1:{}/hook", receiver.port),
            "--webhook-secret",
            SECRET,
            "--events-file",
            events_file.to_str().unwrap(),
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--listen",
            &listen,
        ],
        &command_env,
        dir.path().join("emitter.log"),
    );
    assert!(
        common::eventually(Duration::from_secs(15), || receiver.deliveries().len() == 6),
        "delivered; log:\n{}",
        emitter.log_text()
    );

    // The pushed counter matches /metrics, label for label.
    let received = |source: &str, kind: &str| -> Option<f64> {
        let requests = collector.requests.lock().unwrap();
        let last = requests.last()?;
        points(last)
            .into_iter()
            .find(|p| {
                p.metric == "e2b_webhook_events_received"
                    && p.monotonic
                    && p.attributes.contains(&("source".into(), source.into()))
                    && p.attributes.contains(&("type".into(), kind.into()))
            })
            .map(|p| p.value)
    };
    let arrived = common::eventually(Duration::from_secs(15), || {
        received("file", "create") == Some(3.0)
    });
    if !arrived {
        let requests = collector.requests.lock().unwrap();
        panic!(
            "the OTLP collector receives the counters; got {} requests, the last: {:?}; /metrics: {}",
            requests.len(),
            requests
                .iter()
                .flat_map(points)
                .map(|p| (p.metric, p.attributes))
                .collect::<std::collections::BTreeSet<_>>(),
            common::http_get_body(&listen, "/metrics")
        );
    }
    let prometheus = common::http_get_body(&listen, "/metrics");
    assert!(
        prometheus.contains(r#"e2b_webhook_events_received_total{source="file",type="create"} 3"#),
        "{prometheus}"
    );
    assert_eq!(received("file", "kill"), Some(3.0));
    let requests = collector.requests.lock().unwrap().clone();
    let last = requests.last().unwrap();
    assert_eq!(service_name(last).as_deref(), Some("e2b-webhook-emitter"));
    let all = points(last);
    let gauge = all
        .iter()
        .find(|p| p.metric == "e2b_webhook_outbox_depth")
        .expect("gauges are pushed too");
    assert!(!gauge.monotonic);
    assert!(
        all.iter()
            .any(|p| p.metric == "e2b_webhook_delivery_latency_seconds_count" && p.value == 6.0),
        "the histogram's count: {all:?}"
    );
    let everything = format!("{requests:?}");
    assert!(
        !everything.contains(SECRET),
        "the secret reached the collector"
    );

    // SIGTERM: one last export, then a clean exit.
    let before = requests.len();
    drop(requests);
    emitter.signal(nix::sys::signal::Signal::SIGTERM);
    let mut emitter = emitter;
    assert!(common::eventually(Duration::from_secs(15), || {
        emitter.child.try_wait().unwrap().is_some()
    }));
    assert!(emitter.child.wait().unwrap().success());
    assert!(collector.requests.lock().unwrap().len() > before);
}

#[test]
fn a_malformed_otlp_endpoint_is_a_configuration_error() {
    let (code, _, stderr) = common::output(
        common::emitter()
            .args(["run", "--webhook-url", "http://127.0.0.1:9/hook"])
            .args(["--webhook-secret", SECRET])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost 4317"),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
