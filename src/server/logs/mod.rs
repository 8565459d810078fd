//! Ships the service's own log lines to E2B's logs collector (`LOGS_COLLECTOR_ADDRESS`), besides
//! stderr.
//!
//! What E2B does, and what is kept here (e2b-dev/infra):
//! - Its services POST JSON log lines to `LOGS_COLLECTOR_ADDRESS` (`http://localhost:30006`,
//!   `iac/provider-gcp/main.tf`, `dashboard-api.tf`) with `Content-Type: application/json`, to the
//!   address as given — no path is added (`packages/shared/pkg/logger/exporter.go`,
//!   `sendLogLine`); a request times out after 10 s.
//! - The receiver is Vector's `http_server` source with `encoding = "ndjson"`
//!   (`iac/modules/job-logs-collector/configs/vector.toml`): one body may hold several
//!   newline-delimited JSON objects, so lines are sent in batches (E2B's exporter sends one line
//!   per request; envd buffers lines and drains them in a loop, `envd/internal/logs/exporter`).
//! - A line is zap's JSON (`sbxlogger.GetSandboxEncoderConfig`, `logger.NewLogger`):
//!   `timestamp` (RFC 3339, nanoseconds), `level` (lowercase), `message`, `logger`, and the fields
//!   `service`, `internal`, `pid`, then the event's own fields, flat. Vector routes
//!   `internal == true` to E2B's Grafana Loki (`sinks.grafana`, where E2B's own service logs
//!   go) and the rest to the cluster's Loki that serves *customers'* sandbox logs, labelled by
//!   `sandboxID`/`teamID` taken from `sandbox_id`/`team_id` fields: so every line here says
//!   `"internal": true`, and an operator's line never lands among a customer's sandbox logs.
//! - Lines over 192 KiB are dropped (envd's `maxLogLineBytes`, under Loki's 256 KiB
//!   `max_line_size`); at most 8 MiB wait (envd's `maxBufferedBytes`).
//!
//! Never in the way of delivery: the tracing layer (`layer.rs`) only formats the line and
//! `try_send`s it into a fixed-size queue; when the queue is full (the collector is slow or
//! down) the line is dropped and counted (`e2b_webhook_log_lines_dropped_total`). The sender
//! (`sender.rs`) runs on a thread of its own with its own runtime; what it logs itself goes to
//! stderr only, so a failing collector cannot feed itself.

mod layer;
mod sender;

pub use layer::ShipLayer;

use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use url::Url;

/// Lines kept while the collector is slow or down, unless `LOGS_COLLECTOR_QUEUE` says otherwise.
pub const DEFAULT_QUEUE_LINES: usize = 4096;
/// A longer line is dropped (envd's `maxLogLineBytes`: under Loki's 256 KiB `max_line_size`).
pub const MAX_LINE_BYTES: usize = 192 << 10;
/// Bytes of queued lines at most (envd's `maxBufferedBytes`).
pub const MAX_QUEUED_BYTES: usize = 8 << 20;

/// Where and how much to ship (made by `config` from `LOGS_COLLECTOR_ADDRESS`).
#[derive(Debug, Clone, PartialEq)]
pub struct LogShipping {
    /// The collector's address, POSTed to as given.
    pub address: Url,
    /// Lines waiting at most; the next one is dropped and counted.
    pub queue_lines: usize,
}

/// The running shipper: [`LogShipper::layer`] goes into the subscriber, [`LogShipper::stop`]
/// sends what is queued (within a deadline) when the process ends.
pub struct LogShipper {
    layer: Option<ShipLayer>,
    dropped: Counter,
    stop: CancellationToken,
    done: std::sync::mpsc::Receiver<()>,
}

/// What the layer and the sender share. A line counts from the moment it is queued until it
/// was sent or dropped, so the batch the sender holds while the collector is down counts too.
struct Queue {
    /// Lines waiting at most.
    capacity: usize,
    /// Lines waiting (in the channel or in the sender's batch).
    lines: AtomicUsize,
    /// Bytes of the lines waiting.
    bytes: AtomicUsize,
    /// Lines dropped: queue full, line too long, or refused by the collector.
    dropped: Counter,
}

impl Queue {
    /// Takes a line of `len` bytes in, or says it does not fit.
    fn admit(&self, len: usize) -> bool {
        if self.lines.fetch_add(1, Ordering::Relaxed) >= self.capacity {
            self.lines.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        if self.bytes.fetch_add(len, Ordering::Relaxed) + len > MAX_QUEUED_BYTES {
            self.release(1, len);
            return false;
        }
        true
    }

    /// Lines that were sent or dropped no longer wait.
    fn release(&self, lines: usize, bytes: usize) {
        self.lines.fetch_sub(lines, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl LogShipper {
    /// Starts the sender thread. `dropped` is the counter `/metrics` exports.
    pub fn start(settings: LogShipping, dropped: Counter) -> std::io::Result<Self> {
        let (tx, rx) = tokio::sync::mpsc::channel(settings.queue_lines.max(1));
        let queue = Arc::new(Queue {
            capacity: settings.queue_lines.max(1),
            lines: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            dropped: dropped.clone(),
        });
        let stop = CancellationToken::new();
        let (done_tx, done) = std::sync::mpsc::channel();
        let sender = sender::Sender::new(settings.address, rx, queue.clone(), stop.clone());
        std::thread::Builder::new()
            .name(sender::THREAD_NAME.into())
            .spawn(move || {
                sender.run_on_this_thread();
                let _ = done_tx.send(());
            })?;
        Ok(Self {
            layer: Some(ShipLayer::new(tx, queue)),
            dropped,
            stop,
            done,
        })
    }

    /// The tracing layer that enqueues every line (once).
    pub fn layer(&mut self) -> Option<ShipLayer> {
        self.layer.take()
    }

    /// The dropped-lines counter.
    pub fn dropped(&self) -> Counter {
        self.dropped.clone()
    }

    /// Sends what is queued, waiting `deadline` at most; what is left is dropped.
    pub fn stop(self, deadline: Duration) {
        self.stop.cancel();
        let _ = self.done.recv_timeout(deadline);
    }
}
