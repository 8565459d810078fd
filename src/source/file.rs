//! The file source: NDJSON orchestrator events (a ClickHouse `sandbox_events` export, the demo's
//! sample file) read into an intake — the outbox, or with Redis the stream (`backfill`).
//! Malformed lines are set aside with their line number.

use super::{Source, SourceError};
use crate::event::SandboxEvent;
use crate::health::Readiness;
use crate::outbox::{EventIntake, IntakeError, MalformedInput, Outbox, RawInput};
use std::path::Path;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio_util::sync::CancellationToken;

/// The source's name in the outbox, the metrics and the readiness report.
const SOURCE: &str = "file";

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

/// The file source of `run` (`EVENTS_FILE`): the whole file read once into the outbox.
pub struct FileSource {
    file: tokio::fs::File,
    /// The path, as logged and reported.
    name: String,
    outbox: Outbox,
}

impl FileSource {
    /// Opens `path` (reported ready at once: a file has nothing to connect to).
    pub async fn open(path: &Path, outbox: Outbox, readiness: &Readiness) -> std::io::Result<Self> {
        let file = tokio::fs::File::open(path).await?;
        let name = path.display().to_string();
        readiness.set(SOURCE, true, format!("reading {name}"));
        Ok(Self { file, name, outbox })
    }
}

#[async_trait::async_trait]
impl Source for FileSource {
    fn name(&self) -> &'static str {
        SOURCE
    }

    async fn run(self: Box<Self>, _shutdown: CancellationToken) -> Result<(), SourceError> {
        let input = tokio::io::BufReader::new(self.file);
        let report = read_ndjson(input, SOURCE, &self.outbox).await?;
        tracing::info!(
            file = self.name,
            lines = report.lines,
            appended = report.appended,
            duplicates = report.duplicates,
            malformed = report.malformed,
            "events file read"
        );
        Ok(())
    }
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
