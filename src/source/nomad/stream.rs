//! Reads NDJSON frames off Nomad's event stream body: heartbeats, frames split across chunks,
//! and the plain-text line Nomad appends when it cuts a slow reader off.

use super::error::NomadError;
use super::wire::EventFrame;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use std::time::Duration;

/// Reads frames off the event stream body, with an idle watchdog.
pub(super) struct FrameReader {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    buffer: Vec<u8>,
    idle: Duration,
    addr: String,
}

impl FrameReader {
    pub fn new(
        body: BoxStream<'static, reqwest::Result<Bytes>>,
        idle: Duration,
        addr: String,
    ) -> Self {
        Self {
            body,
            buffer: Vec::new(),
            idle,
            addr,
        }
    }

    /// The next frame, heartbeats included.
    pub async fn next(&mut self) -> Result<EventFrame, NomadError> {
        loop {
            if let Some(frame) = self.take_frame()? {
                return Ok(frame);
            }
            match tokio::time::timeout(self.idle, self.body.next()).await {
                Err(_) => return Err(NomadError::StreamSilent(self.idle)),
                Ok(Some(Ok(chunk))) => self.buffer.extend_from_slice(&chunk),
                Ok(Some(Err(e))) => return Err(NomadError::transport(&self.addr, e)),
                Ok(None) => {
                    let rest = String::from_utf8_lossy(&self.buffer).trim().to_owned();
                    return Err(NomadError::StreamClosed(if rest.is_empty() {
                        "Nomad ended the response".into()
                    } else {
                        rest
                    }));
                }
            }
        }
    }

    /// Decodes one complete frame from the buffer, if there is one.
    fn take_frame(&mut self) -> Result<Option<EventFrame>, NomadError> {
        let start = self.buffer.iter().position(|b| !b.is_ascii_whitespace());
        let Some(start) = start else {
            self.buffer.clear();
            return Ok(None);
        };
        self.buffer.drain(..start);
        if self.buffer[0] != b'{' {
            // Not JSON: after the stream has started Nomad can only report an error as plain
            // text appended to the body (e.g. "event dropped from buffer"), then it closes.
            return match self.buffer.iter().position(|b| *b == b'\n') {
                Some(end) => Err(NomadError::StreamClosed(
                    String::from_utf8_lossy(&self.buffer[..end])
                        .trim()
                        .to_owned(),
                )),
                None => Ok(None),
            };
        }
        let mut frames =
            serde_json::Deserializer::from_slice(&self.buffer).into_iter::<EventFrame>();
        match frames.next() {
            Some(Ok(frame)) => {
                let used = frames.byte_offset();
                self.buffer.drain(..used);
                Ok(Some(frame))
            }
            Some(Err(e)) if e.is_eof() => Ok(None),
            Some(Err(e)) => Err(NomadError::Malformed {
                what: "event stream frame",
                reason: e.to_string(),
            }),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(chunks: Vec<&'static str>) -> FrameReader {
        let stream = futures_util::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c))));
        FrameReader {
            body: stream.boxed(),
            buffer: Vec::new(),
            idle: Duration::from_secs(5),
            addr: "http://nomad:4646".into(),
        }
    }

    #[tokio::test]
    async fn frames_split_across_chunks_heartbeats_and_the_closing_error_text() {
        let mut r = reader(vec![
            "{}\n{\"Index\":5,\"Eve",
            "nts\":[{\"Topic\":\"Allocation\",\"Payload\":{\"Allocation\":{\"ID\":\"a\"}}},{\"Topic\":\"Allocation\",\"Payload\":{\"Allocation\":{\"ID\":\"b\"}}}]}\n",
            "event dropped from buffer\n",
        ]);
        let heartbeat = r.next().await.unwrap();
        assert_eq!((heartbeat.index, heartbeat.events.is_none()), (0, true));
        let frame = r.next().await.unwrap();
        assert_eq!(frame.index, 5);
        assert_eq!(frame.events.unwrap().len(), 2);
        let err = r.next().await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "the Nomad event stream closed: event dropped from buffer"
        );
    }

    #[tokio::test]
    async fn an_error_text_without_newline_is_reported_at_the_end() {
        let mut r = reader(vec!["{}", "Permission denied"]);
        r.next().await.unwrap();
        assert!(
            matches!(r.next().await, Err(NomadError::StreamClosed(t)) if t == "Permission denied")
        );
    }
}
