//! Issue 32: the emitter's metrics reach E2B's Grafana only through E2B's node collector, whose
//! `filter/otlp` processor keeps only the metric names it lists (e2b-dev/infra
//! `iac/modules/job-otel-collector/configs/otel-collector.yaml`). Nothing there lets
//! `e2b_webhook_*` through to Grafana (only `orchestrator.*` happens to match
//! `e2b_webhook_orchestrators_known`: the filter's regexps are not anchored, Go's
//! `regexp.MatchString` in collector-contrib's `internal/filter/filterset/regexp`), while
//! `filter/external_metrics` (`e2b.*`) sends every one of them to ClickHouse with the sandbox
//! metrics. `deploy/e2b/otel-collector/allowlist.patch` changes both; this applies it with
//! `git apply` to the config's shape (`tests/fixtures/e2b-otel-collector/`) — and to E2B's own
//! file when a clone is at hand (`E2B_INFRA_REPO`, or the mirror this was written against) — and
//! checks that every E2B entry stays, and that every name the binary pushes over OTLP passes
//! `filter/otlp` and no longer `filter/external_metrics`.

mod common;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use yaml_rust2::{Yaml, YamlLoader};

const CONFIG: &str = "iac/modules/job-otel-collector/configs/otel-collector.yaml";
const SECRET: &str = "allowlist-test-secret";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn patch() -> PathBuf {
    root().join("deploy/e2b/otel-collector/allowlist.patch")
}

/// `original` with the patch applied by `git apply`, as an operator does in E2B's tree.
fn apply_patch(original: &str) -> String {
    let tree = tempfile::tempdir().unwrap();
    let file = tree.path().join(CONFIG);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, original).unwrap();
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(tree.path())
        .args(["apply", "--verbose"])
        .arg(patch())
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git apply failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&file).unwrap()
}

/// The YAML of a config as Terraform's `templatefile` renders it for `provider` (`gcp`, `aws`),
/// with every optional feature off (`enable_* = false`, empty strings): a `%{ if … }` block is
/// kept when each `&&` term holds.
fn parse(config: &str, provider: &str) -> Yaml {
    let holds = |condition: &str| {
        condition.split("&&").all(|term| {
            let term = term.trim();
            match term.split_once("==") {
                Some((left, right)) if left.trim() == "provider_name" => {
                    right.trim().trim_matches('"') == provider
                }
                _ => false,
            }
        })
    };
    let mut kept = vec![true];
    let mut rendered = String::new();
    for line in config.lines() {
        let directive = line.trim();
        if let Some(inner) = directive
            .strip_prefix("%{")
            .and_then(|d| d.strip_suffix('}'))
        {
            let inner = inner.trim();
            if let Some(condition) = inner.strip_prefix("if ") {
                let outer = *kept.last().unwrap();
                kept.push(outer && holds(condition));
            } else if inner == "else" {
                let this = kept.pop().unwrap();
                let outer = *kept.last().unwrap();
                kept.push(outer && !this);
            } else if inner == "endif" {
                kept.pop();
            } else {
                panic!("a template directive this test does not know: {line}");
            }
            continue;
        }
        if *kept.last().unwrap() {
            rendered.push_str(line);
            rendered.push('\n');
        }
    }
    assert_eq!(kept.len(), 1, "unbalanced %{{ if }}");
    YamlLoader::load_from_str(&rendered)
        .expect("valid YAML")
        .remove(0)
}

/// A filter's `metric_names` under `include` or `exclude` (empty when absent).
fn names(config: &Yaml, filter: &str, which: &str) -> Vec<String> {
    match &config["processors"][filter]["metrics"][which]["metric_names"] {
        Yaml::Array(items) => items
            .iter()
            .map(|i| i.as_str().expect("a string").to_owned())
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether the filter processor lets `name` through: it matches an `include` regexp and no
/// `exclude` one — unanchored, as Go's `regexp.MatchString` (RE2 and Rust's `regex` agree on
/// these patterns).
fn passes(config: &Yaml, filter: &str, name: &str) -> bool {
    let any = |which: &str| {
        names(config, filter, which)
            .iter()
            .any(|p| regex::Regex::new(p).expect("an RE2 pattern").is_match(name))
    };
    any("include") && !any("exclude")
}

/// The config with the two filters' lists taken out, to compare everything else.
fn without_filters(mut config: Yaml) -> Yaml {
    if let Yaml::Hash(processors) = &mut config["processors"] {
        for filter in ["filter/otlp", "filter/external_metrics"] {
            processors.remove(&Yaml::String(filter.into()));
        }
    }
    config
}

/// E2B's metric names of the kinds each filter is for (from e2b-dev/infra's packages).
const E2B_GRAFANA_METRICS: &[&str] = &[
    "orchestrator.sandbox.count",
    "api.env.build.duration",
    "client_proxy.connections",
    "rpc.client.call.duration",
    "go.goroutine.count",
];
const E2B_CLICKHOUSE_METRICS: &[&str] = &[
    "e2b.sandbox.cpu.used",
    "e2b.sandbox.ram.used",
    "e2b.team.sandbox.created",
];

fn check(original: &str, otlp_names: &BTreeSet<String>, what: &str) {
    let patched = apply_patch(original);
    for provider in ["gcp", "aws"] {
        check_rendered(
            parse(original, provider),
            parse(&patched, provider),
            otlp_names,
            &format!("{what} ({provider})"),
        );
    }
}

fn check_rendered(before: Yaml, after: Yaml, otlp_names: &BTreeSet<String>, what: &str) {
    // Every E2B entry stays, in its place; only ours are added.
    for filter in ["filter/otlp", "filter/external_metrics"] {
        for which in ["include", "exclude"] {
            let (old, new) = (names(&before, filter, which), names(&after, filter, which));
            assert_eq!(
                new[..old.len()],
                old[..],
                "{what}: {filter}.{which} lost or moved an E2B entry"
            );
            assert!(
                new[old.len()..].iter().all(|n| n.contains("e2b_webhook_")),
                "{what}: {filter}.{which} gained more than the emitter's names: {:?}",
                &new[old.len()..]
            );
        }
    }
    assert_eq!(
        without_filters(before.clone()),
        without_filters(after.clone()),
        "{what}: the patch changes more than the two filters"
    );
    for name in E2B_GRAFANA_METRICS {
        assert_eq!(
            passes(&before, "filter/otlp", name),
            passes(&after, "filter/otlp", name)
        );
    }
    for name in E2B_CLICKHOUSE_METRICS {
        assert!(
            passes(&after, "filter/external_metrics", name),
            "{what}: {name}"
        );
    }
    // Before: the emitter's metrics do not reach Grafana, and they do reach ClickHouse.
    assert!(
        otlp_names
            .iter()
            .any(|n| !passes(&before, "filter/otlp", n)),
        "{what}: E2B's filter already lets every emitter metric through; the patch is not needed"
    );
    assert!(
        otlp_names
            .iter()
            .all(|n| passes(&before, "filter/external_metrics", n))
    );
    // After: every one reaches Grafana, none ClickHouse.
    for name in otlp_names {
        assert!(
            passes(&after, "filter/otlp", name),
            "{what}: {name} is dropped by filter/otlp"
        );
        assert!(
            !passes(&after, "filter/external_metrics", name),
            "{what}: {name} still goes to ClickHouse"
        );
    }
}

#[derive(Clone, Default)]
struct Collector {
    names: Arc<Mutex<BTreeSet<String>>>,
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut names = self.names.lock().unwrap();
        for resource in &request.get_ref().resource_metrics {
            for scope in &resource.scope_metrics {
                for metric in &scope.metrics {
                    names.insert(metric.name.clone());
                }
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

/// The family names `/metrics` lists (`# TYPE` lines).
fn prometheus_families(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Every metric name the binary pushes over OTLP, after deliveries that succeed and fail, a
/// malformed input and a dead letter, received by an OTLP/gRPC collector on a real socket.
fn names_pushed_over_otlp() -> BTreeSet<String> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let collector = Collector::default();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_service(MetricsServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let dir = tempfile::tempdir().unwrap();
    let common::Activity {
        receiver,
        events_file,
        config,
    } = common::Activity::prepare(dir.path(), SECRET);
    let listen = common::free_port();
    let _emitter = common::RunningEmitter::start_with_env(
        &[
            "--webhook-url",
            &format!("http://127.0.0.1:{}/hook", receiver.port),
            "--webhook-secret",
            SECRET,
            "--config",
            config.to_str().unwrap(),
            "--events-file",
            events_file.to_str().unwrap(),
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{listen}"),
        ],
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                &format!("http://127.0.0.1:{port}"),
            ),
            ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
        ],
        dir.path().join("emitter.log"),
    );
    common::wait_until("a dead letter", || {
        let (_, page) = common::http_get(listen, "/metrics");
        page.lines()
            .any(|l| l.starts_with("e2b_webhook_dead_letters_total{") && !l.ends_with(" 0"))
            .then_some(())
    });
    let (_, page) = common::http_get(listen, "/metrics");
    let families = prometheus_families(&page);
    // Every family of /metrics arrives over OTLP (a histogram as _bucket, _sum and _count).
    let expected: BTreeSet<String> = families
        .iter()
        .flat_map(|f| {
            if page.contains(&format!("# TYPE {f} histogram")) {
                vec![
                    format!("{f}_bucket"),
                    format!("{f}_sum"),
                    format!("{f}_count"),
                ]
            } else {
                vec![f.clone()]
            }
        })
        .collect();
    common::wait_until("every family over OTLP", || {
        let got = collector.names.lock().unwrap().clone();
        expected.is_subset(&got).then_some(got)
    });
    std::thread::sleep(Duration::from_millis(400));
    let names = collector.names.lock().unwrap().clone();
    assert!(names.len() >= 15, "{names:?}");
    names
}

#[test]
fn the_allowlist_patch_lets_every_emitter_metric_into_grafana_and_keeps_every_e2b_one() {
    let names = names_pushed_over_otlp();
    let fixture = std::fs::read_to_string(
        root().join("tests/fixtures/e2b-otel-collector/otel-collector.yaml"),
    )
    .unwrap();
    check(&fixture, &names, "the fixture");

    // E2B's own file, when a clone of e2b-dev/infra is at hand.
    let repo = std::env::var_os("E2B_INFRA_REPO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/.mirror/e2b-dev+infra/repo"));
    let real = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(if repo.join(".git").exists() {
            repo.join(".git")
        } else {
            repo.clone()
        })
        .args(["show", &format!("HEAD:{CONFIG}")])
        .output();
    match real {
        Ok(out) if out.status.success() && Path::new(&repo).exists() => {
            let text = String::from_utf8(out.stdout).unwrap();
            check(&text, &names, "e2b-dev/infra at HEAD");
            // The fixture's filters are E2B's, entry for entry.
            let (fixture, real) = (parse(&fixture, "gcp"), parse(&text, "gcp"));
            for filter in ["filter/otlp", "filter/external_metrics"] {
                assert_eq!(
                    fixture["processors"][filter], real["processors"][filter],
                    "tests/fixtures/e2b-otel-collector differs from E2B's {filter}: refresh it"
                );
            }
        }
        _ => eprintln!(
            "skipped the check against E2B's own file: no clone of e2b-dev/infra at {} (set E2B_INFRA_REPO)",
            repo.display()
        ),
    }
}
