//! `demo`: the whole pipeline on one machine with nothing installed. Bundled sample events go
//! through the real outbox and dispatcher to an in-process receiver that verifies every signature,
//! fails some requests on purpose (to show retries) and refuses one sandbox (to show dead letters).

use crate::config::EndpointConfig;
use crate::deliver::format::WireFormat;
use crate::deliver::retry::RetryPolicy;
use crate::deliver::sign::SecretSet;
use crate::event::{EventFilter, SandboxEvent};
use crate::metrics::Metrics;
use crate::receiver::{Verdict, Verifier};
use crate::service::Pipeline;
use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The bundled sample: four sandboxes created, paused, resumed and killed, one malformed line,
/// and one sandbox the demo receiver refuses.
const SAMPLE: &str = include_str!("../demo/sample-events.ndjson");
/// The sandbox whose deliveries the demo receiver always refuses.
const REFUSED_SANDBOX: &str = "irefused00";
/// The demo receiver answers 503 to the first attempt of every third request.
const FAIL_EVERY: usize = 3;

#[derive(Default)]
struct ReceiverLog {
    requests: usize,
    /// Event ids in arrival order, per sandbox.
    arrivals: HashMap<String, Vec<String>>,
    latencies_ms: Vec<f64>,
    duplicates: usize,
}

#[derive(Clone)]
struct DemoReceiver {
    verifier: Arc<Verifier>,
    log: Arc<Mutex<ReceiverLog>>,
}

async fn receive(
    State(rx): State<DemoReceiver>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let body = match rx.verifier.check(&headers, &body) {
        Verdict::Accepted(body) => body,
        Verdict::Unauthorized(_) => return (StatusCode::UNAUTHORIZED, "bad signature"),
        Verdict::BadRequest(_) => return (StatusCode::BAD_REQUEST, "bad body"),
    };
    let sandbox = body["sandboxId"].as_str().unwrap_or_default().to_owned();
    if sandbox == REFUSED_SANDBOX {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            "this receiver does not know that sandbox",
        );
    }
    let first_attempt = headers
        .get("e2b-delivery-attempt")
        .and_then(|v| v.to_str().ok())
        == Some("1");
    let mut log = rx.log.lock().expect("demo log lock");
    log.requests += 1;
    if first_attempt && log.requests % FAIL_EVERY == 0 {
        return (StatusCode::SERVICE_UNAVAILABLE, "try again");
    }
    let id = body["id"].as_str().unwrap_or_default().to_owned();
    if let Some(ts) = body["timestamp"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    {
        let ms = (jiff::Timestamp::now() - ts).get_milliseconds() as f64;
        log.latencies_ms.push(ms);
    }
    let seen = log.arrivals.entry(sandbox).or_default();
    let duplicate = seen.contains(&id);
    seen.push(id);
    log.duplicates += usize::from(duplicate);
    (StatusCode::OK, "{\"success\":true}")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Runs the demo; returns an error if any event was lost, reordered or badly signed.
pub async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let secret =
        SecretSet::parse("demo-secret-0123456789abcdef0123456789abcdef").expect("non-empty");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot listen on loopback")?;
    let url: url::Url = format!("http://{}/api/webhooks/e2b", listener.local_addr()?).parse()?;
    let log = Arc::new(Mutex::new(ReceiverLog::default()));
    let receiver = DemoReceiver {
        verifier: Arc::new(Verifier::new(WireFormat::XE2bSignature, secret.clone())),
        log: log.clone(),
    };
    let app = axum::Router::new()
        .fallback(axum::routing::post(receive))
        .with_state(receiver);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // Fresh timestamps, so latency means "event happened → receiver has it".
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    let mut input = String::new();
    for line in SAMPLE.lines() {
        match SandboxEvent::parse(line.as_bytes()) {
            Ok(event) => {
                let mut raw = event.raw().clone();
                raw.insert(
                    "timestamp".into(),
                    jiff::Timestamp::now().to_string().into(),
                );
                if event.sandbox_id() != REFUSED_SANDBOX {
                    expected
                        .entry(event.sandbox_id().to_owned())
                        .or_default()
                        .push(event.id().to_owned());
                }
                input.push_str(&serde_json::to_string(&raw)?);
            }
            Err(_) => input.push_str(line),
        }
        input.push('\n');
    }
    let endpoint = EndpointConfig {
        id: "demo".into(),
        url: url.clone(),
        format: WireFormat::XE2bSignature,
        secrets: secret,
        events: EventFilter::default_labels(),
        timeout: Duration::from_secs(5),
        webhook_id: crate::deliver::format::default_webhook_id("demo"),
        signature_encoding: Default::default(),
        response_body_limit: 64 * 1024,
        trusted_ca: None,
    };
    // A compressed schedule so the demo finishes in seconds; `run` defaults to hours.
    let retry = RetryPolicy {
        schedule: vec![
            Duration::from_millis(200),
            Duration::from_millis(500),
            Duration::from_secs(1),
        ],
        jitter: 0.2,
        max_age: Duration::from_secs(3),
        max_retry_after: Duration::from_secs(1),
    };
    let metrics = Arc::new(Metrics::new());
    let mut pipeline = Pipeline::start(dir.path(), &[endpoint], &retry, 8, metrics.clone())?;
    println!(
        "demo: {} sample events → outbox in {} → signed POSTs to {url}",
        SAMPLE.lines().count(),
        dir.path().display()
    );
    let report =
        crate::source::file::read_ndjson(input.as_bytes(), "file", &pipeline.outbox).await?;
    let events = report.appended;
    // Every figure comes from the same counters, so the progress line and the summary agree.
    let counter = |name: &str, labels: &str| -> u64 {
        metrics
            .render()
            .lines()
            .filter(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let delivered_count = || counter("e2b_webhook_deliveries_total", "outcome=\"delivered\"");
    let dead_count = || counter("e2b_webhook_dead_letters_total", "");
    let mut shown = String::new();
    pipeline
        .until_idle(|_| {
            let (delivered, dead) = (delivered_count(), dead_count());
            let line = format!(
                "  delivering: {delivered} delivered · {} pending · {dead} dead-lettered (of {events} events) ",
                (events as u64).saturating_sub(delivered + dead),
            );
            if line != shown {
                eprint!("\r{line}");
                let _ = std::io::stderr().flush();
                shown = line;
            }
        })
        .await?;
    eprintln!();
    let letters = pipeline.outbox.dead_letters().await?;
    pipeline.stop().await?;
    server.abort();

    let log = log.lock().expect("demo log lock");
    let delivered = delivered_count();
    let dead = dead_count();
    let mut latencies = log.latencies_ms.clone();
    latencies.sort_by(f64::total_cmp);
    let received: usize = log.arrivals.values().map(Vec::len).sum();
    let in_order = expected.iter().all(|(sandbox, ids)| {
        let mut got = log.arrivals.get(sandbox).cloned().unwrap_or_default();
        got.dedup();
        &got == ids
    });
    println!("summary:");
    println!(
        "  lines read         {}: {events} events, {} malformed line set aside (not an event)",
        SAMPLE.lines().count(),
        report.malformed
    );
    println!(
        "  delivered          {delivered} (signature verified by the receiver, {} duplicates)",
        log.duplicates
    );
    println!(
        "  retried            {} failed attempts, tried again",
        counter("e2b_webhook_retries_total", "")
    );
    println!("  dead-lettered      {dead} (the receiver refuses sandbox {REFUSED_SANDBOX})");
    for letter in letters.iter().filter(|l| l.endpoint.is_some()) {
        println!(
            "    #{} {} {} after {} attempts: {}",
            letter.id,
            letter.label.as_deref().unwrap_or("?"),
            letter.sandbox_id.as_deref().unwrap_or("?"),
            letter.attempts,
            letter.reason
        );
    }
    println!(
        "  accounted for      {delivered} delivered + {dead} dead-lettered = {} of {events} events",
        delivered + dead
    );
    println!(
        "  order per sandbox  {}",
        if in_order { "kept" } else { "BROKEN" }
    );
    println!(
        "  latency (event → 2xx)  p50 {:.1} ms · p99 {:.1} ms · max {:.1} ms",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(0.0)
    );
    let expected_count: usize = expected.values().map(Vec::len).sum();
    anyhow::ensure!(
        in_order
            && received - log.duplicates == expected_count
            && delivered as usize == expected_count
            && (delivered + dead) as usize == events,
        "the demo lost or reordered events"
    );
    Ok(())
}
