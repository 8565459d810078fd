//! One journal record as the delivery log stores it: the CLI's columns, and what E2B's delivery
//! log shows — the URL without credentials or query, the request headers without signatures,
//! the answer's headers without cookies or credentials, the kept body as text. Done here, off the
//! delivery path, so nothing secret reaches the table.

use crate::deliver::http::KEPT_RESPONSE_BYTES;
use crate::deliver::journal::{DeliveryRecord, Exchange};
use crate::event::Lifecycle;
use crate::postgres::delivery_log::{AttemptRow, LoggedAttempt};
use crate::util::redact::{HIDDEN, is_secret_header, redact_url};
use serde_json::{Map, Value};

/// The row of `record`.
pub(super) fn logged(record: DeliveryRecord) -> LoggedAttempt {
    let finished =
        jiff::Timestamp::from_millisecond(record.at_ms).unwrap_or_else(|_| jiff::Timestamp::now());
    let exchange = record.exchange.clone();
    let coarse_class = match (&record.error, record.status) {
        (None, _) => None,
        (Some(_), Some(_)) => Some("http"),
        (Some(e), None) if e.starts_with("timed out") => Some("timeout"),
        (Some(_), None) => Some("network"),
    };
    let attempt = AttemptRow {
        attempted_at: finished,
        endpoint: text(&record.endpoint),
        event_id: text(&record.event_id),
        sandbox_id: text(&record.sandbox_id),
        event_type: text(&record.label),
        attempt: record.attempt,
        outcome: record.outcome,
        status: record.status,
        error_class: coarse_class.map(str::to_owned),
        error: record.error.as_deref().map(text),
        duration_ms: record.latency_ms,
    };
    let Some(exchange) = exchange else {
        // Not from a dispatcher (nothing records that today): what the journal knows.
        let started = finished
            .checked_sub(jiff::SignedDuration::from_millis(
                i64::try_from(record.latency_ms).unwrap_or(0),
            ))
            .unwrap_or(finished);
        return LoggedAttempt {
            started_at: started,
            event_type: Lifecycle::from_label(&attempt.event_type).event_type(),
            failure_class: None,
            request_url: None,
            request_headers: None,
            request_body: None,
            response_headers: None,
            response_body: None,
            attempt,
        };
    };
    let Exchange {
        started_at,
        event_type,
        url,
        request,
        response,
        error_class,
    } = &*exchange;
    LoggedAttempt {
        started_at: *started_at,
        event_type: text(event_type),
        failure_class: error_class.map(|c| c.as_str().to_owned()),
        request_url: Some(redact_url(url)),
        request_headers: Some(headers_json(
            request.headers.iter().map(|(n, v)| (*n, v.as_bytes())),
        )),
        request_body: Some(body_text(&request.body)),
        response_headers: response
            .as_ref()
            .map(|r| headers_json(r.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())))),
        response_body: response
            .as_ref()
            .map(|r| body_text(&r.body[..r.body.len().min(KEPT_RESPONSE_BYTES)])),
        attempt,
    }
}

/// Headers as a JSON object (name → value, repeated names joined with `, `), secret values
/// replaced by `***`.
fn headers_json<'a>(headers: impl Iterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut object = Map::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        let value = if is_secret_header(&name) {
            HIDDEN.to_owned()
        } else {
            text(&String::from_utf8_lossy(value))
        };
        match object.get_mut(&name) {
            Some(Value::String(joined)) if value != HIDDEN => {
                joined.push_str(", ");
                joined.push_str(&value);
            }
            Some(_) => {}
            None => {
                object.insert(name, Value::String(value));
            }
        }
    }
    Value::Object(object).to_string()
}

/// Bytes as text: a character cut in half at the end of a truncated body is left out, other
/// invalid bytes become U+FFFD.
fn body_text(bytes: &[u8]) -> String {
    let whole = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return text(&String::from_utf8_lossy(bytes)),
    };
    text(whole)
}

/// `s` as Postgres stores text: it refuses NUL, which becomes U+FFFD (one such byte in a
/// receiver's answer would otherwise fail the whole batch).
fn text(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::error_class::ErrorClass;
    use crate::deliver::format::SignedRequest;
    use crate::deliver::http::CapturedResponse;
    use std::sync::Arc;

    fn record(exchange: Option<Exchange>) -> DeliveryRecord {
        DeliveryRecord {
            seq: 7,
            at_ms: 1_764_000_000_500,
            endpoint: "webhook:7f9c".into(),
            event_id: "ev-1".into(),
            sandbox_id: "sbx\0-1".into(),
            label: "kill".into(),
            outcome: "retry".into(),
            status: Some(500),
            attempt: 2,
            latency_ms: 120,
            error: Some("HTTP 500: oops".into()),
            test: false,
            exchange: exchange.map(Arc::new),
        }
    }

    fn exchange() -> Exchange {
        let mut response_headers = reqwest::header::HeaderMap::new();
        response_headers.insert("content-type", "text/plain".parse().unwrap());
        response_headers.append("set-cookie", "session=abc".parse().unwrap());
        response_headers.append("x-multi", "a".parse().unwrap());
        response_headers.append("x-multi", "b".parse().unwrap());
        Exchange {
            started_at: "2026-12-01T10:00:00.123456Z".parse().unwrap(),
            event_type: "sandbox.lifecycle.killed".into(),
            url: "https://user:pw@hooks.example.com/e2b?token=t0k"
                .parse()
                .unwrap(),
            request: SignedRequest {
                body: br#"{"id":"ev-1"}"#.to_vec(),
                headers: vec![
                    ("content-type", "application/json".into()),
                    ("e2b-signature-version", "v1".into()),
                    ("e2b-signature", "c2lnbmF0dXJl".into()),
                ],
            },
            response: Some(CapturedResponse {
                headers: response_headers,
                body: b"oops \0 \xe2\x82".to_vec(),
            }),
            error_class: Some(ErrorClass::Http),
        }
    }

    #[test]
    fn the_row_holds_the_exchange_redacted() {
        let row = logged(record(Some(exchange())));
        assert_eq!(row.started_at.to_string(), "2026-12-01T10:00:00.123456Z");
        assert_eq!(row.event_type, "sandbox.lifecycle.killed");
        assert_eq!(row.failure_class.as_deref(), Some("http_error"));
        assert_eq!(
            row.request_url.as_deref(),
            Some("https://***@hooks.example.com/e2b?***")
        );
        assert_eq!(
            row.request_headers.as_deref(),
            Some(
                r#"{"content-type":"application/json","e2b-signature-version":"v1","e2b-signature":"***"}"#
            )
        );
        assert_eq!(row.request_body.as_deref(), Some(r#"{"id":"ev-1"}"#));
        assert_eq!(
            row.response_headers.as_deref(),
            Some(r#"{"content-type":"text/plain","set-cookie":"***","x-multi":"a, b"}"#)
        );
        // NUL becomes U+FFFD; the character cut in half at the end is left out.
        assert_eq!(row.response_body.as_deref(), Some("oops \u{FFFD} "));
        assert_eq!(row.attempt.sandbox_id, "sbx\u{FFFD}-1");
        // The CLI's columns as before.
        assert_eq!(row.attempt.error_class.as_deref(), Some("http"));
        assert_eq!(row.attempt.event_type, "kill");
        assert_eq!(row.attempt.attempt, 2);
        assert_eq!(row.attempt.duration_ms, 120);
        for secret in ["pw", "t0k", "c2lnbmF0dXJl", "abc"] {
            assert!(!format!("{row:?}").contains(secret), "{secret} kept");
        }
    }

    #[test]
    fn a_record_without_an_exchange_keeps_what_the_journal_knows() {
        let row = logged(record(None));
        assert_eq!(row.started_at.as_millisecond(), 1_764_000_000_380);
        assert_eq!(row.event_type, "sandbox.lifecycle.killed");
        assert_eq!(row.request_url, None);
        assert_eq!(row.response_body, None);
    }

    #[test]
    fn invalid_bytes_inside_a_body_become_replacement_characters() {
        assert_eq!(body_text(b"a\xffb"), "a\u{FFFD}b");
        assert_eq!(body_text("é".as_bytes()), "é");
        assert_eq!(body_text(&"é".as_bytes()[..1]), "");
    }
}
