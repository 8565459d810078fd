//! The sender: batches of queued lines POSTed to the collector from a thread of its own, so
//! nothing it waits for (a slow collector, a refused connection, a timeout) touches delivery.

use super::Queue;
use crate::util::backoff::Backoff;
use crate::util::error::error_chain;
use crate::util::redact::{redact_url, redact_urls_in};
use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::Receiver;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use url::Url;

pub(super) const THREAD_NAME: &str = "log-shipper";
/// Lines per request at most.
const BATCH_MAX_LINES: usize = 1000;
/// Bytes per request at most (a line alone may be up to `MAX_LINE_BYTES`).
const BATCH_MAX_BYTES: usize = 1 << 20;
/// After the first line of a batch, how long more lines are waited for.
const LINGER: Duration = Duration::from_millis(500);
/// One request (E2B's exporter: `http.Client{Timeout: 10 * time.Second}`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long queued lines may still be sent once the process stops.
const STOP_FLUSH: Duration = Duration::from_secs(2);

thread_local! {
    static ON_SENDER: Cell<bool> = const { Cell::new(false) };
}

/// Whether the caller runs on the sender's thread.
pub(super) fn on_sender_thread() -> bool {
    ON_SENDER.with(Cell::get)
}

/// Why a batch was not taken.
enum Refused {
    /// Worth sending again: no connection, a timeout, 408, 429 or 5xx.
    Transient(String),
    /// Would be refused again (another status): the batch is dropped.
    Permanent(String),
}

pub(super) struct Sender {
    address: Url,
    rx: Receiver<Vec<u8>>,
    queue: Arc<Queue>,
    stop: CancellationToken,
}

struct Batch {
    lines: Vec<Vec<u8>>,
    bytes: usize,
}

impl Batch {
    fn new() -> Self {
        Self {
            lines: Vec::new(),
            bytes: 0,
        }
    }

    fn full(&self) -> bool {
        self.lines.len() >= BATCH_MAX_LINES || self.bytes >= BATCH_MAX_BYTES
    }

    fn body(&self) -> Vec<u8> {
        self.lines.concat()
    }
}

impl Sender {
    pub(super) fn new(
        address: Url,
        rx: Receiver<Vec<u8>>,
        queue: Arc<Queue>,
        stop: CancellationToken,
    ) -> Self {
        Self {
            address,
            rx,
            queue,
            stop,
        }
    }

    /// Runs until stopped, on a current-thread runtime of its own.
    pub(super) fn run_on_this_thread(self) {
        ON_SENDER.with(|on| on.set(true));
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            // Its blocking threads (the HTTP client's DNS lookups) are the sender's too.
            .on_thread_start(|| ON_SENDER.with(|on| on.set(true)))
            .build()
        {
            Ok(runtime) => runtime.block_on(self.run()),
            Err(e) => eprintln!("log shipping is off: cannot start its runtime: {e}"),
        }
    }

    fn take(&mut self, batch: &mut Batch, line: Vec<u8>) {
        batch.bytes += line.len();
        batch.lines.push(line);
    }

    async fn run(mut self) {
        let client = match reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "log shipping is off: cannot build its HTTP client");
                return;
            }
        };
        let shown = redact_url(&self.address);
        tracing::info!(address = %shown, "shipping log lines to the logs collector");
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
        let mut failing = false;
        let mut batch = Batch::new();
        loop {
            if batch.lines.is_empty() && !self.fill(&mut batch).await {
                break;
            }
            match post(&client, &self.address, batch.body()).await {
                Ok(()) => {
                    if failing {
                        tracing::info!(address = %shown, "the logs collector takes log lines again");
                        failing = false;
                    }
                    backoff.reset();
                    self.queue.release(batch.lines.len(), batch.bytes);
                    batch = Batch::new();
                }
                Err(Refused::Permanent(why)) => {
                    tracing::warn!(address = %shown, lines = batch.lines.len(), error = %why, "the logs collector refused a batch of log lines; dropped");
                    self.queue.dropped.inc_by(batch.lines.len() as u64);
                    self.queue.release(batch.lines.len(), batch.bytes);
                    batch = Batch::new();
                }
                Err(Refused::Transient(why)) => {
                    if !failing {
                        tracing::warn!(address = %shown, error = %why, "cannot ship log lines to the logs collector; retrying, and dropping (counted) what does not fit the queue meanwhile");
                        failing = true;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                        () = self.stop.cancelled() => break,
                    }
                }
            }
        }
        self.flush_on_stop(&client, batch).await;
    }

    /// Waits for a first line, then up to [`LINGER`] for more. False once stopped.
    async fn fill(&mut self, batch: &mut Batch) -> bool {
        tokio::select! {
            line = self.rx.recv() => match line {
                Some(line) => self.take(batch, line),
                None => return false,
            },
            () = self.stop.cancelled() => return false,
        }
        let until = Instant::now() + LINGER;
        while !batch.full() {
            tokio::select! {
                line = self.rx.recv() => match line {
                    Some(line) => self.take(batch, line),
                    None => break,
                },
                () = tokio::time::sleep_until(until) => break,
                () = self.stop.cancelled() => break,
            }
        }
        true
    }

    /// Sends what is left within [`STOP_FLUSH`]; the rest is counted as dropped.
    async fn flush_on_stop(mut self, client: &reqwest::Client, mut batch: Batch) {
        let until = Instant::now() + STOP_FLUSH;
        loop {
            while !batch.full() {
                match self.rx.try_recv() {
                    Ok(line) => self.take(&mut batch, line),
                    Err(_) => break,
                }
            }
            if batch.lines.is_empty() {
                return;
            }
            let sent = tokio::time::timeout_at(until, post(client, &self.address, batch.body()))
                .await
                .is_ok_and(|r| r.is_ok());
            self.queue.release(batch.lines.len(), batch.bytes);
            if !sent {
                let mut left = batch.lines.len() as u64;
                while let Ok(line) = self.rx.try_recv() {
                    self.queue.release(1, line.len());
                    left += 1;
                }
                self.queue.dropped.inc_by(left);
                return;
            }
            batch = Batch::new();
        }
    }
}

/// One POST of newline-delimited JSON lines, as Vector's `ndjson` `http_server` reads them.
async fn post(client: &reqwest::Client, address: &Url, body: Vec<u8>) -> Result<(), Refused> {
    let response = client
        .post(address.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| {
            // reqwest's message quotes the URL; its query may hold a token.
            Refused::Transient(redact_urls_in(&error_chain(&e)))
        })?;
    let status = response.status();
    // Drained so the connection can be reused; never shown (it may echo the lines).
    let _ = response.bytes().await;
    if status.is_success() {
        Ok(())
    } else if status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
    {
        Err(Refused::Transient(format!("HTTP {status}")))
    } else {
        Err(Refused::Permanent(format!("HTTP {status}")))
    }
}
