//! The file source: NDJSON orchestrator events (a ClickHouse `sandbox_events` export, the demo's
//! sample file) read into an intake — the outbox, or with Redis the stream (`backfill`).
//! Malformed lines are set aside with their line number.

use crate::event::SandboxEvent;
use crate::outbox::{EventIntake, IntakeError, MalformedInput, RawInput};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Events appended per outbox transaction.
const BATCH: usize = 500;

/// What reading a file did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileReport {
    /// Lines read (blank lines included).
    pub lines: usize,
    /// Events new to the outbox (with Redis: appended to the stream).
    pub appended: usize,
    /// Events already in the outbox.
    pub duplicates: usize,
    /// Lines set aside as malformed.
    pub malformed: usize,
}

/// Why the file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileSourceError {
    /// Reading failed.
    #[error("cannot read the events file: {0}")]
    Io(#[from] std::io::Error),
    /// The intake refused the events.
    #[error(transparent)]
    Intake(#[from] IntakeError),
}

/// Reads NDJSON events from `input` into `intake`, `source` naming them in metrics.
pub async fn read_ndjson(
    input: impl AsyncBufRead + Unpin,
    source: &'static str,
    intake: &dyn EventIntake,
) -> Result<FileReport, FileSourceError> {
    let mut report = FileReport::default();
    // Lines as bytes: a line that is not UTF-8 is set aside like any malformed line, byte for
    // byte, instead of ending the read.
    let mut lines = input.split(b'\n');
    let mut batch = Vec::with_capacity(BATCH);
    let mut malformed = Vec::new();
    while let Some(line) = lines.next_segment().await? {
        report.lines += 1;
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        match SandboxEvent::parse(text) {
            Ok(event) => batch.push(event),
            Err(e) => {
                tracing::warn!(line = report.lines, reason = %e, "malformed event line set aside");
                malformed.push(MalformedInput {
                    source: source.to_owned(),
                    position: format!("line {}", report.lines),
                    input: RawInput::from_bytes(text),
                    reason: e.to_string(),
                });
            }
        }
        if batch.len() >= BATCH {
            flush(intake, source, &mut batch, &mut malformed, &mut report).await?;
        }
    }
    flush(intake, source, &mut batch, &mut malformed, &mut report).await?;
    Ok(report)
}

async fn flush(
    intake: &dyn EventIntake,
    source: &'static str,
    batch: &mut Vec<SandboxEvent>,
    malformed: &mut Vec<MalformedInput>,
    report: &mut FileReport,
) -> Result<(), IntakeError> {
    if !malformed.is_empty() {
        report.malformed += malformed.len();
        intake.set_aside(std::mem::take(malformed)).await?;
    }
    if !batch.is_empty() {
        let new = intake.submit(source, std::mem::take(batch)).await?;
        let appended = new.iter().filter(|new| **new).count();
        report.appended += appended;
        report.duplicates += new.len() - appended;
    }
    Ok(())
}
