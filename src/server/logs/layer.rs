//! The tracing layer: one E2B-shaped JSON line per event, put in the queue or dropped — never
//! waited on.

use super::{MAX_LINE_BYTES, Queue};
use serde_json::{Map, Value};
use std::fmt::Debug;
use std::sync::Arc;
use tokio::sync::mpsc::Sender;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;

/// The service name on every line (zap's `service` field; a `service` label in Loki).
pub const SERVICE: &str = "e2b-webhook-emitter";

/// Enqueues every event that passed the subscriber's filter (the same lines stderr gets).
pub struct ShipLayer {
    tx: Sender<Vec<u8>>,
    queue: Arc<Queue>,
    pid: u32,
}

impl ShipLayer {
    pub(super) fn new(tx: Sender<Vec<u8>>, queue: Arc<Queue>) -> Self {
        Self {
            tx,
            queue,
            pid: std::process::id(),
        }
    }

    fn enqueue(&self, line: Vec<u8>) {
        let len = line.len();
        if len > MAX_LINE_BYTES || !self.queue.admit(len) {
            self.queue.dropped.inc();
            return;
        }
        // Never full: `admit` keeps the lines waiting within the channel's capacity.
        if self.tx.try_send(line).is_err() {
            self.queue.release(1, len);
            self.queue.dropped.inc();
        }
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for ShipLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        // The sender's own lines (and its HTTP client's) stay on stderr: shipping them would
        // make a failing collector produce the lines that fill its queue.
        if super::sender::on_sender_thread() {
            return;
        }
        let line = format_line(event, self.pid, jiff::Timestamp::now());
        self.enqueue(line);
    }
}

/// zap's level names (`zapcore.LowercaseLevelEncoder`); zap has no `trace`.
fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG | Level::TRACE => "debug",
    }
}

/// One line as E2B's services write it: `timestamp`, `level`, `logger`, `message`, `service`,
/// `internal`, `pid`, then the event's fields.
fn format_line(event: &Event<'_>, pid: u32, now: jiff::Timestamp) -> Vec<u8> {
    let meta = event.metadata();
    let mut fields = Fields::default();
    event.record(&mut fields);
    let mut line = Map::new();
    line.insert("timestamp".into(), Value::String(now.to_string()));
    line.insert("level".into(), level_name(meta.level()).into());
    line.insert("logger".into(), meta.target().into());
    line.insert(
        "message".into(),
        fields.message.take().unwrap_or_default().into(),
    );
    line.insert("service".into(), SERVICE.into());
    line.insert("internal".into(), true.into());
    line.insert("pid".into(), pid.into());
    for (key, value) in fields.rest {
        // The fixed keys above win over an event field of the same name.
        line.entry(key).or_insert(value);
    }
    let mut bytes = serde_json::to_vec(&Value::Object(line)).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

#[derive(Default)]
struct Fields {
    message: Option<String>,
    rest: Vec<(String, Value)>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            self.rest.push((field.name().to_owned(), value));
        }
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(
            field,
            serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number),
        );
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use std::sync::atomic::AtomicUsize;
    use tracing_subscriber::layer::SubscriberExt;

    fn layer(capacity: usize) -> (ShipLayer, tokio::sync::mpsc::Receiver<Vec<u8>>, Counter) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        let dropped = Counter::default();
        let queue = Arc::new(Queue {
            capacity,
            lines: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            dropped: dropped.clone(),
        });
        (ShipLayer::new(tx, queue), rx, dropped)
    }

    #[test]
    fn a_line_is_what_e2b_services_write_and_a_full_queue_drops_and_counts() {
        let (layer, mut rx, dropped) = layer(2);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(endpoint = "billing", attempt = 3_u64, ok = false, error = %"boom", "retrying");
            tracing::info!(message = "second");
            tracing::error!("third, dropped: the queue holds two");
        });
        assert_eq!(dropped.get(), 1);
        let first: Value = serde_json::from_slice(&rx.try_recv().unwrap()).unwrap();
        assert_eq!(first["level"], "warn");
        assert_eq!(first["message"], "retrying");
        assert_eq!(first["service"], SERVICE);
        assert_eq!(first["internal"], true);
        assert_eq!(first["pid"], std::process::id());
        assert_eq!(first["endpoint"], "billing");
        assert_eq!(first["attempt"], 3);
        assert_eq!(first["ok"], false);
        assert_eq!(first["error"], "boom");
        assert!(
            first["logger"]
                .as_str()
                .unwrap()
                .starts_with("e2b_webhook_emitter")
        );
        let at = first["timestamp"].as_str().unwrap();
        assert!(at.parse::<jiff::Timestamp>().is_ok(), "{at}");
        let second: Value = serde_json::from_slice(&rx.try_recv().unwrap()).unwrap();
        assert_eq!(second["message"], "second");
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn an_overlong_line_is_dropped_not_truncated() {
        let (layer, mut rx, dropped) = layer(8);
        let subscriber = tracing_subscriber::registry().with(layer);
        let long = "x".repeat(MAX_LINE_BYTES);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(body = %long, "too long");
        });
        assert_eq!(dropped.get(), 1);
        assert!(rx.try_recv().is_err());
    }
}
