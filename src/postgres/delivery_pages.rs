//! Pages of one endpoint's delivery log grouped by event, as E2B's events API lists them: a page
//! holds `limit` events, each with every attempt that matches the filters.
//!
//! An event's place in the list is its first matching attempt (start time, then `seq`): that
//! never changes once written — a retry arriving later adds to the group without moving it — so
//! a keyset cursor on it neither repeats nor skips an event while attempts are written. Finding a
//! page walks the `(endpoint, started_at, seq)` index from the cursor and keeps the attempts
//! that have no earlier matching attempt of their event (an index probe each), so a deep page
//! costs what the first does.

use super::{Database, StoreError};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

/// Which attempts to list; every set field must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryFilter {
    /// Started at or after.
    pub start: Option<jiff::Timestamp>,
    /// Started before.
    pub end: Option<jiff::Timestamp>,
    /// `Some(true)`: delivered attempts only; `Some(false)`: failed ones only.
    pub delivered: Option<bool>,
    /// Full event types (`sandbox.lifecycle.killed`); any of them.
    pub event_types: Option<Vec<String>>,
}

/// A page request.
#[derive(Debug, Clone, PartialEq)]
pub struct PageRequest {
    /// What to list.
    pub filter: DeliveryFilter,
    /// Oldest first (else newest first).
    pub ascending: bool,
    /// Events on the page at most.
    pub limit: i64,
    /// Continue after this position (from the previous page).
    pub after: Option<Cursor>,
}

/// Where a page ended: the first attempt of its last event. Opaque to clients (URL-safe
/// base64), versioned so its shape can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The attempt's start, in microseconds since the epoch (Postgres's precision).
    pub started_us: i64,
    /// The attempt's row number.
    pub seq: i64,
}

const CURSOR_VERSION: &str = "v1";

impl Cursor {
    /// The text handed to clients as `nextCursor`.
    pub fn encode(self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{CURSOR_VERSION}:{}:{}", self.started_us, self.seq))
    }

    /// Reads a cursor this service handed out.
    pub fn decode(text: &str) -> Result<Self, String> {
        let invalid = || "is not a cursor from a previous page's nextCursor".to_owned();
        let bytes = URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let mut parts = text.split(':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(CURSOR_VERSION), Some(started), Some(seq), None) => Ok(Self {
                started_us: started.parse().map_err(|_| invalid())?,
                seq: seq.parse().map_err(|_| invalid())?,
            }),
            _ => Err(invalid()),
        }
    }
}

/// One logged attempt with everything E2B's delivery log shows of it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedDelivery {
    /// The attempt's id.
    pub id: Uuid,
    /// When it started.
    pub started_at: jiff::Timestamp,
    /// The event.
    pub event_id: String,
    /// Its sandbox.
    pub sandbox_id: String,
    /// Its full type.
    pub event_type: String,
    /// `delivered`, `retry` or `dead`.
    pub outcome: String,
    /// The HTTP status, when an answer came.
    pub status: Option<i32>,
    /// E2B's error class, when it failed.
    pub failure_class: Option<String>,
    /// What failed, briefly.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: i64,
    /// The URL, redacted (none for attempts logged before the details were).
    pub request_url: Option<String>,
    /// The request headers as a JSON object, redacted.
    pub request_headers: Option<String>,
    /// The request body.
    pub request_body: Option<String>,
    /// The response headers as a JSON object.
    pub response_headers: Option<String>,
    /// The first bytes of the response body.
    pub response_body: Option<String>,
}

/// One page: the events in order, each with its attempts in the same order.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryPage {
    /// Each event's matching attempts (never empty).
    pub events: Vec<Vec<LoggedDelivery>>,
    /// Where the next page starts; none when this is the last.
    pub next: Option<Cursor>,
}

type KeyRow = (String, jiff_sqlx::Timestamp, i64);
type DeliveryRow = (
    Uuid,
    jiff_sqlx::Timestamp,
    String,
    String,
    String,
    String,
    Option<i32>,
    Option<String>,
    Option<String>,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// SQL conditions on the attempts of `table` (an alias) for `filter`, with its parameters
/// numbered from `next`: (SQL, the parameters in order).
fn conditions(table: &str, filter: &DeliveryFilter, next: &mut usize) -> (String, Vec<Param>) {
    let mut sql = String::new();
    let mut params = Vec::new();
    let mut bind = |sql: &mut String, condition: String, param: Param| {
        sql.push_str(&condition.replace('#', &format!("${next}")));
        params.push(param);
        *next += 1;
    };
    if let Some(start) = filter.start {
        bind(
            &mut sql,
            format!(" AND {table}.started_at >= #::timestamptz"),
            Param::Text(start.to_string()),
        );
    }
    if let Some(end) = filter.end {
        bind(
            &mut sql,
            format!(" AND {table}.started_at < #::timestamptz"),
            Param::Text(end.to_string()),
        );
    }
    match filter.delivered {
        Some(true) => sql.push_str(&format!(" AND {table}.outcome = 'delivered'")),
        Some(false) => sql.push_str(&format!(" AND {table}.outcome <> 'delivered'")),
        None => {}
    }
    if let Some(types) = &filter.event_types {
        bind(
            &mut sql,
            format!(" AND {table}.full_event_type = ANY(#::text[])"),
            Param::Texts(types.clone()),
        );
    }
    (sql, params)
}

/// A bound parameter of a page's query.
#[derive(Debug, Clone, PartialEq)]
enum Param {
    Text(String),
    Texts(Vec<String>),
    Int(i64),
}

/// The query finding a page's events: each row is the first matching attempt of an event,
/// (event id, started at, seq), in the page's order, `limit + 1` at most (the extra one tells
/// whether another page follows). `$1` is the endpoint, `$2` the row limit.
fn keys_query(request: &PageRequest) -> (String, Vec<Param>) {
    let mut next = 3;
    let (own, mut params) = conditions("a", &request.filter, &mut next);
    let (earlier, earlier_params) = conditions("b", &request.filter, &mut next);
    params.extend(earlier_params);
    let (direction, beyond) = if request.ascending {
        ("ASC", ">")
    } else {
        ("DESC", "<")
    };
    let mut cursor = String::new();
    if let Some(after) = request.after {
        cursor = format!(
            " AND (a.started_at, a.seq) {beyond} (${next}::timestamptz, ${})",
            next + 1
        );
        // As text: exact to the microsecond, as Postgres keeps it.
        let started =
            jiff::Timestamp::from_microsecond(after.started_us).unwrap_or(jiff::Timestamp::MIN);
        params.push(Param::Text(started.to_string()));
        params.push(Param::Int(after.seq));
    }
    let sql = format!(
        "SELECT a.event_id, a.started_at, a.seq
           FROM webhook_emitter.delivery_attempts a
          WHERE a.endpoint = $1{own}{cursor}
            AND NOT EXISTS (
                SELECT 1 FROM webhook_emitter.delivery_attempts b
                 WHERE b.endpoint = $1 AND b.event_id = a.event_id{earlier}
                   AND (b.started_at, b.seq) < (a.started_at, a.seq))
          ORDER BY a.started_at {direction}, a.seq {direction}
          LIMIT $2"
    );
    (sql, params)
}

/// The query reading every matching attempt of a page's events (`$2`, an array) in the page's
/// order.
fn attempts_query(request: &PageRequest) -> (String, Vec<Param>) {
    let mut next = 3;
    let (own, params) = conditions("d", &request.filter, &mut next);
    let direction = if request.ascending { "ASC" } else { "DESC" };
    let sql = format!(
        "SELECT d.id, d.started_at, d.event_id, d.sandbox_id, d.full_event_type, d.outcome,
                d.status, d.failure_class, d.error, d.duration_ms,
                d.request_url, d.request_headers, d.request_body, d.response_headers,
                d.response_body
           FROM webhook_emitter.delivery_attempts d
          WHERE d.endpoint = $1 AND d.event_id = ANY($2::text[]){own}
          ORDER BY d.started_at {direction}, d.seq {direction}"
    );
    (sql, params)
}

/// The SQL of a page's two queries with their parameters written out, for `EXPLAIN` by hand
/// (the benchmark prints it).
pub fn page_queries_for_explain(request: &PageRequest) -> [(String, Vec<String>); 2] {
    let shown = |(sql, params): (String, Vec<Param>)| {
        let params = params
            .into_iter()
            .map(|p| match p {
                Param::Text(t) => format!("'{t}'"),
                Param::Texts(t) => format!(
                    "ARRAY[{}]",
                    t.iter()
                        .map(|t| format!("'{t}'"))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                Param::Int(i) => i.to_string(),
            })
            .collect();
        (sql, params)
    };
    [shown(keys_query(request)), shown(attempts_query(request))]
}

type Query<'q, O> = sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>;

fn bind_all<O>(mut query: Query<'_, O>, params: Vec<Param>) -> Query<'_, O> {
    for param in params {
        query = match param {
            Param::Text(t) => query.bind(t),
            Param::Texts(t) => query.bind(t),
            Param::Int(i) => query.bind(i),
        };
    }
    query
}

impl Database {
    /// A page of `endpoint`'s delivery log, grouped by event.
    pub async fn delivery_page(
        &self,
        endpoint: &str,
        request: &PageRequest,
    ) -> Result<DeliveryPage, StoreError> {
        let pool = self.ready()?;
        let (sql, params) = keys_query(request);
        let mut keys: Vec<KeyRow> = bind_all(
            sqlx::query_as(&sql).bind(endpoint).bind(request.limit + 1),
            params,
        )
        .fetch_all(pool)
        .await?;
        let more = keys.len() as i64 > request.limit;
        keys.truncate(usize::try_from(request.limit).unwrap_or(0));
        let next = more
            .then(|| keys.last())
            .flatten()
            .map(|(_, started, seq)| Cursor {
                started_us: started.to_jiff().as_microsecond(),
                seq: *seq,
            });
        if keys.is_empty() {
            return Ok(DeliveryPage {
                events: Vec::new(),
                next,
            });
        }
        let ids: Vec<String> = keys.iter().map(|(id, _, _)| id.clone()).collect();
        let (sql, params) = attempts_query(request);
        let rows: Vec<DeliveryRow> =
            bind_all(sqlx::query_as(&sql).bind(endpoint).bind(&ids), params)
                .fetch_all(pool)
                .await?;
        let mut events: Vec<Vec<LoggedDelivery>> = vec![Vec::new(); ids.len()];
        let place: std::collections::HashMap<&str, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        for row in rows {
            if let Some(&i) = place.get(row.2.as_str()) {
                events[i].push(delivery(row));
            }
        }
        events.retain(|attempts| !attempts.is_empty());
        Ok(DeliveryPage { events, next })
    }
}

fn delivery(r: DeliveryRow) -> LoggedDelivery {
    LoggedDelivery {
        id: r.0,
        started_at: r.1.to_jiff(),
        event_id: r.2,
        sandbox_id: r.3,
        event_type: r.4,
        outcome: r.5,
        status: r.6,
        failure_class: r.7,
        error: r.8,
        duration_ms: r.9,
        request_url: r.10,
        request_headers: r.11,
        request_body: r.12,
        response_headers: r.13,
        response_body: r.14,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_anything_else_is_refused() {
        let cursor = Cursor {
            started_us: 1_764_000_000_123_456,
            seq: 42,
        };
        let text = cursor.encode();
        assert!(
            text.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{text}"
        );
        assert_eq!(Cursor::decode(&text), Ok(cursor));
        let negative = Cursor {
            started_us: -5,
            seq: 1,
        };
        assert_eq!(Cursor::decode(&negative.encode()), Ok(negative));
        for bad in [
            "",
            "not base64!",
            &URL_SAFE_NO_PAD.encode("v2:1:2"),
            &URL_SAFE_NO_PAD.encode("v1:1"),
            &URL_SAFE_NO_PAD.encode("v1:1:2:3"),
            &URL_SAFE_NO_PAD.encode("v1:x:2"),
            &URL_SAFE_NO_PAD.encode([0xff, 0xfe]),
        ] {
            assert!(Cursor::decode(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn filters_become_numbered_parameters_on_both_sides_of_the_first_attempt_test() {
        let request = PageRequest {
            filter: DeliveryFilter {
                start: Some("2026-12-01T00:00:00Z".parse().unwrap()),
                end: None,
                delivered: Some(false),
                event_types: Some(vec!["sandbox.lifecycle.killed".into()]),
            },
            ascending: false,
            limit: 25,
            after: Some(Cursor {
                started_us: 7,
                seq: 9,
            }),
        };
        let (sql, params) = keys_query(&request);
        assert!(sql.contains("a.started_at >= $3::timestamptz"), "{sql}");
        assert!(sql.contains("a.full_event_type = ANY($4::text[])"), "{sql}");
        assert!(sql.contains("b.started_at >= $5::timestamptz"), "{sql}");
        assert!(sql.contains("b.full_event_type = ANY($6::text[])"), "{sql}");
        assert!(
            sql.contains("a.outcome <> 'delivered'") && sql.contains("b.outcome <> 'delivered'")
        );
        assert!(
            sql.contains("(a.started_at, a.seq) < ($7::timestamptz, $8)"),
            "{sql}"
        );
        assert!(
            sql.contains("ORDER BY a.started_at DESC, a.seq DESC"),
            "{sql}"
        );
        assert_eq!(params.len(), 6);
        assert_eq!(params[4], Param::Text("1970-01-01T00:00:00.000007Z".into()));
        let ascending = PageRequest {
            ascending: true,
            filter: DeliveryFilter::default(),
            ..request
        };
        let (sql, params) = keys_query(&ascending);
        assert!(
            sql.contains("(a.started_at, a.seq) > ($3::timestamptz, $4)"),
            "{sql}"
        );
        assert!(
            sql.contains("ORDER BY a.started_at ASC, a.seq ASC"),
            "{sql}"
        );
        assert_eq!(
            params,
            [
                Param::Text("1970-01-01T00:00:00.000007Z".into()),
                Param::Int(9)
            ]
        );
    }
}
