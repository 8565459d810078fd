//! Issue 32: the alert rules (`deploy/prometheus/`), their runbook (`docs/runbook.md`) and the
//! Grafana dashboard (`deploy/grafana/`) hold together: promtool accepts the rules and their unit
//! tests pass, every alert says what to check first and links a section that exists, and every
//! metric a rule or a panel reads is one the binary exports — read from `/metrics` of the real
//! binary after deliveries, a dead letter, a malformed input and a webhook registered through
//! the events API (Postgres and Redis as in production).

mod common;
mod support;

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;
use yaml_rust2::{Yaml, YamlLoader};

const SECRET: &str = "observability-test-secret";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rules() -> Yaml {
    let text =
        std::fs::read_to_string(root().join("deploy/prometheus/e2b-webhook-emitter.rules.yml"))
            .unwrap();
    YamlLoader::load_from_str(&text).unwrap().remove(0)
}

/// (alert name, expression, annotations) of every rule.
fn alerts() -> Vec<(String, String, Yaml)> {
    let mut out = Vec::new();
    for group in rules()["groups"].as_vec().unwrap() {
        for rule in group["rules"].as_vec().unwrap() {
            out.push((
                rule["alert"]
                    .as_str()
                    .expect("alerting rules only")
                    .to_owned(),
                rule["expr"].as_str().unwrap().to_owned(),
                rule["annotations"].clone(),
            ));
        }
    }
    out
}

fn dashboard() -> Value {
    let text =
        std::fs::read_to_string(root().join("deploy/grafana/e2b-webhook-emitter.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every PromQL expression of the dashboard: panel targets, and the metric of each
/// `label_values(metric, label)` variable.
fn dashboard_exprs() -> Vec<String> {
    fn walk(panels: &[Value], out: &mut Vec<String>) {
        for panel in panels {
            for target in panel["targets"].as_array().into_iter().flatten() {
                out.push(target["expr"].as_str().expect("a PromQL target").to_owned());
            }
            walk(panel["panels"].as_array().map_or(&[], Vec::as_slice), out);
        }
    }
    let d = dashboard();
    let mut out = Vec::new();
    walk(d["panels"].as_array().unwrap(), &mut out);
    for var in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["definition"].as_str() {
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .unwrap_or_else(|| panic!("a variable query this test does not read: {q}"));
            out.push(inner.split(',').next().unwrap().trim().to_owned());
        }
    }
    out
}

/// The metric names a PromQL expression reads: what is left once strings, label matchers,
/// ranges, grouping clauses, dashboard variables, functions and keywords are taken out.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let strip = |text: &str, pattern: &str| {
        regex::Regex::new(pattern)
            .unwrap()
            .replace_all(text, " ")
            .into_owned()
    };
    let mut e = strip(expr, r#""(?:[^"\\]|\\.)*""#);
    e = strip(&e, r"\{[^}]*\}");
    e = strip(&e, r"\[[^\]]*\]");
    e = strip(&e, r"\$\{?\w+\}?");
    e = strip(
        &e,
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)",
    );
    let keywords = [
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
        "Inf",
        "NaN",
    ];
    let ident = regex::Regex::new(r"[A-Za-z_:][A-Za-z0-9_:]*").unwrap();
    ident
        .find_iter(&e)
        .filter(|m| {
            let before = e[..m.start()].chars().next_back();
            let after = e[m.end()..].trim_start().chars().next();
            after != Some('(')
                && !before.is_some_and(|c| c.is_ascii_digit() || c == '.')
                && !keywords.contains(&m.as_str())
        })
        .map(|m| m.as_str().to_owned())
        .collect()
}

#[test]
fn the_metric_name_reader_finds_metrics_and_nothing_else() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"sum by (endpoint, le) (rate(a_total{outcome!="x",b=~"$v"}[$__rate_interval])) / on (endpoint) group_left (team) b_info > 0.5 unless absent(c)"#
        ),
        ["a_total", "b_info", "c"]
    );
    assert_eq!(
        names("histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m])))"),
        ["x_bucket"]
    );
    assert_eq!(names("count(up == 0) or vector(0)"), ["up"]);
    assert_eq!(
        names("max(e2b_webhook_leader) < 1e3"),
        ["e2b_webhook_leader"]
    );
}

/// GitHub's anchor of a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// What the alerts must cover (issue 32), as (alert, metric it reads).
const REQUIRED: &[(&str, &str)] = &[
    (
        "E2BWebhookBacklogAgeGrowing",
        "e2b_webhook_outbox_oldest_age_seconds",
    ),
    ("E2BWebhookDeadLetters", "e2b_webhook_dead_letters_total"),
    ("E2BWebhookNoLeader", "e2b_webhook_leader"),
    (
        "E2BWebhookSourceDisconnected",
        "e2b_webhook_source_connected",
    ),
    ("E2BWebhookOutboxNotWritable", "e2b_webhook_outbox_writable"),
    ("E2BWebhookEndpointFailing", "e2b_webhook_deliveries_total"),
    (
        "E2BWebhookReconcilerFailing",
        "e2b_webhook_reconcile_runs_total",
    ),
    (
        "E2BWebhookHistoryWritesDropped",
        "e2b_webhook_event_history_dropped_total",
    ),
    (
        "E2BWebhookLogLinesDropped",
        "e2b_webhook_log_lines_dropped_total",
    ),
];

#[test]
fn every_alert_says_what_to_check_first_and_links_its_runbook_section() {
    let runbook = std::fs::read_to_string(root().join("docs/runbook.md")).unwrap();
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(anchor)
        .collect();
    let alerts = alerts();
    for (name, metric) in REQUIRED {
        let (_, expr, _) = alerts
            .iter()
            .find(|(a, _, _)| a == name)
            .unwrap_or_else(|| panic!("no alert {name}"));
        assert!(
            metric_names(expr).contains(*metric),
            "{name} does not read {metric}"
        );
    }
    let mut linked = BTreeSet::new();
    for (name, _, annotations) in &alerts {
        for key in ["summary", "description", "runbook_url"] {
            assert!(
                annotations[key]
                    .as_str()
                    .is_some_and(|v| !v.trim().is_empty()),
                "{name} has no {key}"
            );
        }
        assert!(
            annotations["description"]
                .as_str()
                .unwrap()
                .contains("First check"),
            "{name}: the description names the first thing to check"
        );
        let url = annotations["runbook_url"].as_str().unwrap();
        let target = url
            .strip_prefix("docs/runbook.md#")
            .unwrap_or_else(|| panic!("{name}: {url} is not an anchor of docs/runbook.md"));
        assert!(
            anchors.contains(target),
            "{name}: docs/runbook.md has no section #{target}"
        );
        assert!(
            linked.insert(target.to_owned()),
            "{name}: #{target} is another alert's section"
        );
        // Its section names the alert.
        let section = runbook
            .split("\n## ")
            .find(|s| anchor(s.lines().next().unwrap()) == target)
            .unwrap();
        assert!(
            section.contains(name.as_str()),
            "#{target} does not name {name}"
        );
    }
    // And every section is an alert's.
    assert_eq!(
        linked, anchors,
        "docs/runbook.md has sections no alert links"
    );
}

#[test]
fn every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not() {
    let text = std::fs::read_to_string(
        root().join("deploy/prometheus/e2b-webhook-emitter.rules.test.yml"),
    )
    .unwrap();
    let doc = YamlLoader::load_from_str(&text).unwrap().remove(0);
    let mut fires = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for test in doc["tests"].as_vec().unwrap() {
        for case in test["alert_rule_test"].as_vec().unwrap() {
            let name = case["alertname"].as_str().unwrap().to_owned();
            if case["exp_alerts"].as_vec().is_some_and(|v| !v.is_empty()) {
                fires.insert(name);
            } else {
                silent.insert(name);
            }
        }
    }
    for (name, _, _) in alerts() {
        assert!(fires.contains(&name), "no promtool test fires {name}");
        assert!(
            silent.contains(&name),
            "no promtool test keeps {name} silent"
        );
    }
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let dir = root().join("deploy/prometheus");
    let run = |args: &[&str]| {
        std::process::Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
    };
    match run(&["--version"]) {
        Err(e) => {
            eprintln!(
                "skipped: promtool is not installed ({e}); scripts/test installs Debian's prometheus package"
            );
            return;
        }
        Ok(out) => assert!(out.status.success()),
    }
    for args in [
        &["check", "rules", "e2b-webhook-emitter.rules.yml"][..],
        &["test", "rules", "e2b-webhook-emitter.rules.test.yml"][..],
    ] {
        let out = run(args).unwrap();
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every sample and family name on `/metrics` of the binary, after it delivered, retried,
/// dead-lettered, set a malformed input aside, and delivered for a registered webhook.
fn exported_names() -> BTreeSet<String> {
    let pg = support::postgres::PostgresServer::start();
    let redis = support::redis::RedisServer::start();
    let (team, key) = pg.add_team("observability");
    let dir = tempfile::tempdir().unwrap();
    let common::Activity {
        receiver,
        events_file,
        config,
    } = common::Activity::prepare(dir.path(), SECRET);
    let port = common::free_port();
    let listen = format!("127.0.0.1:{port}");
    let emitter = common::RunningEmitter::start_with_env(
        &[],
        &[
            (
                "WEBHOOK_URL",
                &format!("http://127.0.0.1:{}/hook", receiver.port),
            ),
            ("WEBHOOK_SECRET", SECRET),
            ("CONFIG_FILE", config.to_str().unwrap()),
            ("EVENTS_FILE", events_file.to_str().unwrap()),
            ("POSTGRES_CONNECTION_STRING", &pg.url()),
            ("REDIS_URL", &redis.host_port()),
            // The team of `lifecycle_ndjson`'s events; another team's event is skipped.
            ("E2B_TEAM_IDS", "0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d"),
            // Nothing answers there: reconciliation is configured (its series exist) and fails.
            ("NOMAD_ADDR", "http://127.0.0.1:9"),
            ("LISTEN_ADDR", &listen),
            ("DATA_DIR", dir.path().join("data").to_str().unwrap()),
            ("API_ALLOW_PRIVATE_CIDRS", "127.0.0.1/32"),
        ],
        dir.path().join("emitter.log"),
    );
    common::events_api::wait_for_api(port, &key);
    let body = json!({
        "name": "team hook", "url": format!("http://127.0.0.1:{}/team", receiver.port),
        "enabled": true, "events": ["sandbox.lifecycle.killed"], "signatureSecret": SECRET,
    });
    let (status, created) =
        common::events_api::api_call(port, "POST", "/events/webhooks", Some(&key), Some(&body));
    assert_eq!(status, 201, "{created}");
    let other_team = json!({
        "id": uuid::Uuid::new_v4().to_string(), "version": "v2", "type": "sandbox.lifecycle.created",
        "timestamp": jiff::Timestamp::now().to_string(), "event_category": "lifecycle",
        "event_label": "create", "sandbox_id": "isb-other", "sandbox_execution_id": "e",
        "sandbox_template_id": "base", "sandbox_build_id": "b",
        "sandbox_team_id": "9d3c1f0e-2a4b-4c6d-8e0f-1a2b3c4d5e6f",
    });
    // The group reads from where it was created (`$`): wait for it before writing.
    let mut conn = redis.connection();
    common::wait_until("the consumer group", || {
        redis::cmd("XINFO")
            .arg("GROUPS")
            .arg("sandbox.events.stream")
            .query::<Vec<redis::Value>>(&mut conn)
            .ok()
            .filter(|groups| !groups.is_empty())
    });
    let _: String = redis::cmd("XADD")
        .arg("sandbox.events.stream")
        .arg("*")
        .arg("payload")
        .arg(other_team.to_string())
        .query(&mut conn)
        .unwrap();
    let ready = |page: &str| {
        page.contains(&format!("team=\"{team}\""))
            && page.contains("e2b_webhook_other_team_events_total{")
            && page
                .lines()
                .any(|l| l.starts_with("e2b_webhook_dead_letters_total{") && !l.ends_with(" 0"))
    };
    let mut page = String::new();
    let seen = common::eventually(std::time::Duration::from_secs(30), || {
        page = common::http_get(port, "/metrics").1;
        ready(&page)
    });
    assert!(
        seen,
        "no dead letter, other team's event or registered webhook on /metrics:\n{page}\nlog:\n{}",
        emitter.log_text()
    );
    let mut names = BTreeSet::new();
    for line in page.lines() {
        if let Some(family) = line.strip_prefix("# TYPE ") {
            names.insert(family.split_whitespace().next().unwrap().to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            names.insert(line.split(['{', ' ']).next().unwrap().to_owned());
        }
    }
    names
}

#[test]
fn every_metric_the_rules_and_the_dashboard_read_is_exported_by_the_binary() {
    let exported = exported_names();
    let mut missing = Vec::new();
    let mut read = BTreeSet::new();
    for (name, expr, _) in alerts() {
        for metric in metric_names(&expr) {
            if !exported.contains(&metric) {
                missing.push(format!("alert {name}: {metric}"));
            }
            read.insert(metric);
        }
    }
    for expr in dashboard_exprs() {
        for metric in metric_names(&expr) {
            if !exported.contains(&metric) {
                missing.push(format!("dashboard: {metric} in {expr}"));
            }
            read.insert(metric);
        }
    }
    assert!(
        missing.is_empty(),
        "not exported by the binary: {missing:#?}\nexported: {exported:#?}"
    );
    // The dashboard shows every family the binary exports.
    let families: BTreeSet<&String> = exported
        .iter()
        .filter(|n| {
            !n.ends_with("_total")
                && !n.ends_with("_bucket")
                && !n.ends_with("_sum")
                && !n.ends_with("_count")
        })
        .collect();
    for family in families {
        let shown = read
            .iter()
            .any(|m| m == family || m.starts_with(&format!("{family}_")));
        assert!(
            shown,
            "{family} is exported but neither alerted on nor shown"
        );
    }
}
