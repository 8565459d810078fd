//! Aggregate stats of one endpoint's delivery log over a range, in buckets of a fixed width, as
//! E2B's events API serves them: attempts, failed attempts and the duration's minimum, average
//! and maximum per bucket and over the whole range.
//!
//! One query: `date_bin` puts each attempt in its bucket, `GROUPING SETS` adds the whole range's
//! row, and `generate_series` supplies every bucket of the range, so a bucket without attempts is
//! there with zeros. The range is read from the `(endpoint, started_at, seq) INCLUDE (outcome,
//! duration_ms)` index alone.

use super::{Database, StoreError};
use std::time::Duration;

/// Figures of one bucket, or of the whole range.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Figures {
    /// Attempts.
    pub total: i64,
    /// Attempts that failed (not delivered).
    pub failed: i64,
    /// The shortest attempt, in milliseconds (0 without attempts).
    pub min_ms: f64,
    /// The mean duration (0 without attempts).
    pub avg_ms: f64,
    /// The longest attempt (0 without attempts).
    pub max_ms: f64,
}

/// The stats of a range: every bucket in time order, and the whole range.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryStats {
    /// (start of the bucket, its figures).
    pub buckets: Vec<(jiff::Timestamp, Figures)>,
    /// Over every attempt of the range.
    pub overall: Figures,
}

/// The query; `$1` endpoint, `$2` start, `$3` end (exclusive), `$4` the bucket width in seconds.
/// Buckets start at `$2`; the last one ends at `$3` (shorter when the range is not a multiple of
/// the width).
pub const STATS_SQL: &str = "
WITH attempts AS (
    SELECT date_bin($4::bigint * interval '1 second', started_at, $2::timestamptz) AS bucket,
           outcome, duration_ms
      FROM webhook_emitter.delivery_attempts
     WHERE endpoint = $1 AND started_at >= $2::timestamptz AND started_at < $3::timestamptz
), sums AS (
    SELECT bucket, GROUPING(bucket) = 1 AS overall, count(*) AS total,
           count(*) FILTER (WHERE outcome <> 'delivered') AS failed,
           min(duration_ms)::float8 AS minimum, avg(duration_ms)::float8 AS average,
           max(duration_ms)::float8 AS maximum
      FROM attempts
     GROUP BY GROUPING SETS ((bucket), ())
)
SELECT false AS overall, s.bucket, coalesce(t.total, 0), coalesce(t.failed, 0),
       coalesce(t.minimum, 0), coalesce(t.average, 0), coalesce(t.maximum, 0)
  FROM generate_series($2::timestamptz, $3::timestamptz - interval '1 microsecond',
                       $4::bigint * interval '1 second') AS s(bucket)
  LEFT JOIN sums t ON NOT t.overall AND t.bucket = s.bucket
UNION ALL
SELECT true, NULL, total, failed, coalesce(minimum, 0), coalesce(average, 0),
       coalesce(maximum, 0)
  FROM sums WHERE overall
ORDER BY 1, 2";

type Row = (bool, Option<jiff_sqlx::Timestamp>, i64, i64, f64, f64, f64);

impl Database {
    /// The stats of `endpoint`'s attempts started in [`start`, `end`), in buckets of `width`
    /// (whole seconds).
    pub async fn delivery_stats(
        &self,
        endpoint: &str,
        start: jiff::Timestamp,
        end: jiff::Timestamp,
        width: Duration,
    ) -> Result<DeliveryStats, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(STATS_SQL)
            .bind(endpoint)
            .bind(start.to_string())
            .bind(end.to_string())
            .bind(i64::try_from(width.as_secs().max(1)).unwrap_or(i64::MAX))
            .fetch_all(self.ready()?)
            .await?;
        let mut stats = DeliveryStats {
            buckets: Vec::with_capacity(rows.len()),
            overall: Figures::default(),
        };
        for (overall, bucket, total, failed, min_ms, avg_ms, max_ms) in rows {
            let figures = Figures {
                total,
                failed,
                min_ms,
                avg_ms,
                max_ms,
            };
            match (overall, bucket) {
                (true, _) => stats.overall = figures,
                (false, Some(bucket)) => stats.buckets.push((bucket.to_jiff(), figures)),
                (false, None) => {}
            }
        }
        Ok(stats)
    }
}
