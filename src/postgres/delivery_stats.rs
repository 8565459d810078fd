//! Aggregate stats of one endpoint's delivery log over a range, in buckets of a fixed width, as
//! E2B's events API serves them: attempts, failed attempts and the duration's minimum, average
//! and maximum per bucket and over the whole range.
//!
//! One query: `generate_series` lists every bucket of the range, each bucket aggregates its part
//! of the range (so a bucket without attempts is there with zeros), and the whole range's row is
//! aggregated from the buckets' (the average from their sums, so it is exact). The range is read
//! from the `(endpoint, started_at, seq) INCLUDE (outcome, duration_ms)` index alone.

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
/// the width). Each bucket aggregates its own index range (a `LATERAL` subquery per bucket):
/// one pass over the range's index entries, no sort or hash of a million rows, and a bucket
/// without attempts comes out with zeros.
pub const STATS_SQL: &str = "
WITH buckets AS (
    SELECT s.bucket, a.total, a.failed, a.minimum, a.maximum, a.sum_ms
      FROM generate_series($2::timestamptz, $3::timestamptz - interval '1 microsecond',
                           $4::bigint * interval '1 second') AS s(bucket)
     CROSS JOIN LATERAL (
         SELECT count(*) AS total, count(*) FILTER (WHERE outcome <> 'delivered') AS failed,
                min(duration_ms) AS minimum, max(duration_ms) AS maximum,
                sum(duration_ms) AS sum_ms
           FROM webhook_emitter.delivery_attempts
          WHERE endpoint = $1 AND started_at >= s.bucket
            AND started_at < least(s.bucket + $4::bigint * interval '1 second', $3::timestamptz)
     ) AS a
)
SELECT false AS overall, bucket, total, failed, coalesce(minimum, 0)::float8,
       coalesce(sum_ms::float8 / nullif(total, 0), 0), coalesce(maximum, 0)::float8
  FROM buckets
UNION ALL
SELECT true, NULL, coalesce(sum(total), 0)::bigint, coalesce(sum(failed), 0)::bigint,
       coalesce(min(minimum), 0)::float8,
       coalesce(sum(sum_ms)::float8 / nullif(sum(total), 0), 0), coalesce(max(maximum), 0)::float8
  FROM buckets
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
