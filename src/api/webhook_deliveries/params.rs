//! The query parameters of the deliveries and stats calls, as E2B's document defines them; a bad
//! one is a 400 naming it. Array parameters are comma-separated (`eventType=a,b`, as the document
//! and E2B's dashboard write them); repeating the name (`eventType=a&eventType=b`) works too.

use crate::api::error::ApiError;
use crate::event::Lifecycle;
use crate::postgres::delivery_pages::{Cursor, DeliveryFilter, PageRequest};
use std::time::Duration;

const DEFAULT_LIMIT: i64 = 25;
const MAX_LIMIT: i64 = 100;
/// The stats' range when none is given: the last 24 hours.
const DEFAULT_STATS_RANGE: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);
/// The longest stats range: the delivery log keeps a week.
const MAX_STATS_RANGE: jiff::SignedDuration = jiff::SignedDuration::from_hours(7 * 24);
/// A chart of the range gets at most this many points.
const MAX_BUCKETS: u64 = 50;
/// Bucket widths, in seconds, from the finest: 1 s … 30 s, 1 … 30 min, 1 … 12 h, 1 day.
const BUCKET_WIDTHS: [u64; 18] = [
    1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1_800, 3_600, 7_200, 10_800, 14_400, 21_600, 43_200,
    86_400,
];

/// The query string's pairs, in order.
pub(super) struct Params(pub Vec<(String, String)>);

impl Params {
    fn one(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim())
    }

    /// Every value of an array parameter: comma-separated, repeated, or both; empty ones left
    /// out.
    fn list(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            // An empty item is refused by its parser: E2B's document gives every item an
            // enum or a name, and `deliveryStatus=` filtering on nothing would be a guess.
            .collect()
    }

    fn time(&self, field: &'static str) -> Result<Option<jiff::Timestamp>, ApiError> {
        let Some(text) = self.one(field) else {
            return Ok(None);
        };
        // An unencoded `+` in an offset arrives as a space.
        let parsed = text
            .parse::<jiff::Timestamp>()
            .or_else(|e| text.replace(' ', "+").parse().map_err(|_| e));
        parsed.map(Some).map_err(|_| {
            ApiError::invalid(
                field,
                "must be an RFC 3339 date-time, e.g. 2026-12-01T10:00:00Z",
            )
        })
    }
}

/// `GET …/deliveries`: which page, of what.
pub(super) fn page_request(params: &Params) -> Result<PageRequest, ApiError> {
    let after = params
        .one("cursor")
        .filter(|c| !c.is_empty())
        .map(|c| Cursor::decode(c).map_err(|e| ApiError::invalid("cursor", e)))
        .transpose()?;
    let limit = match params.one("limit") {
        None => DEFAULT_LIMIT,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::invalid(
                    "limit",
                    format!("must be an integer from 1 to {MAX_LIMIT}"),
                ));
            }
        },
    };
    let ascending = match params.one("orderAsc") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::invalid("orderAsc", "must be true or false")),
    };
    let (start, end) = (params.time("start")?, params.time("end")?);
    if let (Some(start), Some(end)) = (start, end)
        && start > end
    {
        return Err(ApiError::invalid("start", "must not be after end"));
    }
    let mut success = false;
    let mut failed = false;
    for status in params.list("deliveryStatus") {
        match status {
            "success" => success = true,
            "failed" => failed = true,
            _ => {
                return Err(ApiError::invalid(
                    "deliveryStatus",
                    format!("{status:?} is neither success nor failed"),
                ));
            }
        }
    }
    let event_types = params
        .list("eventType")
        .into_iter()
        .map(|name| {
            Lifecycle::from_name(name)
                .map(|l| l.event_type())
                .map_err(|e| ApiError::invalid("eventType", e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PageRequest {
        filter: DeliveryFilter {
            start,
            end,
            delivered: (success != failed).then_some(success),
            event_types: (!event_types.is_empty()).then_some(event_types),
        },
        ascending,
        limit,
        after,
    })
}

/// `GET …/stats`: the range and its buckets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct StatsRange {
    /// Inclusive.
    pub start: jiff::Timestamp,
    /// Exclusive.
    pub end: jiff::Timestamp,
    /// Every bucket's width (the last one may be cut short by `end`).
    pub width: Duration,
}

/// The range asked for: `end` defaults to `now`, `start` to 24 hours before `end`; `start` must
/// come before `end`, at most 7 days before.
pub(super) fn stats_range(params: &Params, now: jiff::Timestamp) -> Result<StatsRange, ApiError> {
    let end = params.time("end")?.unwrap_or(now);
    let start = match params.time("start")? {
        Some(start) => start,
        None => end
            .checked_sub(DEFAULT_STATS_RANGE)
            .map_err(|_| ApiError::invalid("end", "is too early"))?,
    };
    let range = end.duration_since(start);
    if range <= jiff::SignedDuration::ZERO {
        return Err(ApiError::invalid("start", "must be before end"));
    }
    if range > MAX_STATS_RANGE {
        return Err(ApiError::invalid(
            "start",
            "must be at most 7 days before end (the delivery log keeps a week)",
        ));
    }
    Ok(StatsRange {
        start,
        end,
        width: bucket_width(range.unsigned_abs()),
    })
}

/// The width of a range's buckets, so that a chart of it has tens of points: the finest of
/// [`BUCKET_WIDTHS`] that cuts it into at most [`MAX_BUCKETS`] (4 h → 5 min, 12 h → 15 min,
/// 24 h → 30 min, 7 days → 4 h).
pub(super) fn bucket_width(range: Duration) -> Duration {
    let micros = range.as_micros().max(1);
    let width = BUCKET_WIDTHS
        .iter()
        .copied()
        .find(|w| micros.div_ceil(u128::from(*w) * 1_000_000) <= u128::from(MAX_BUCKETS))
        .unwrap_or(BUCKET_WIDTHS[BUCKET_WIDTHS.len() - 1]);
    Duration::from_secs(width)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn refusal(result: Result<impl std::fmt::Debug, ApiError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn buckets_give_a_chart_tens_of_points() {
        let hours = |h: u64| Duration::from_secs(h * 3600);
        let minutes = |m: u64| Duration::from_secs(m * 60);
        for (range, width) in [
            (hours(4), minutes(5)),
            (hours(12), minutes(15)),
            (hours(24), minutes(30)),
            (hours(7 * 24), hours(4)),
            (hours(1), minutes(2)),
            (hours(6), minutes(10)),
            (hours(72), hours(2)),
            (minutes(10), Duration::from_secs(15)),
            (Duration::from_secs(3), Duration::from_secs(1)),
            (Duration::ZERO, Duration::from_secs(1)),
        ] {
            assert_eq!(bucket_width(range), width, "{range:?}");
        }
        // Every range up to a week: 1 to 50 buckets, and tens of them from a minute on.
        for seconds in (1..=7 * 24 * 3600).step_by(997) {
            let range = Duration::from_secs(seconds);
            let buckets = seconds.div_ceil(bucket_width(range).as_secs());
            assert!(
                (1..=MAX_BUCKETS).contains(&buckets),
                "{seconds} s → {buckets}"
            );
            if seconds >= 60 {
                assert!(buckets >= 10, "{seconds} s → {buckets}");
            }
        }
    }

    #[test]
    fn the_stats_range_defaults_to_the_last_day_and_is_at_most_a_week() {
        let now: jiff::Timestamp = "2026-12-08T12:00:00Z".parse().unwrap();
        let default = stats_range(&params(&[]), now).unwrap();
        assert_eq!(default.start.to_string(), "2026-12-07T12:00:00Z");
        assert_eq!(default.end, now);
        assert_eq!(default.width, Duration::from_secs(1800));
        let week = stats_range(
            &params(&[
                ("start", "2026-12-01T12:00:00Z"),
                ("end", "2026-12-08T12:00:00Z"),
            ]),
            now,
        )
        .unwrap();
        assert_eq!(week.width, Duration::from_secs(4 * 3600));
        let offset = stats_range(
            &params(&[
                ("start", "2026-12-08T13:00:00 01:00"),
                ("end", "2026-12-08T12:30:00Z"),
            ]),
            now,
        )
        .unwrap();
        assert_eq!(offset.start.to_string(), "2026-12-08T12:00:00Z");
        assert!(
            refusal(stats_range(
                &params(&[
                    ("start", "2026-12-01T11:59:59Z"),
                    ("end", "2026-12-08T12:00:00Z")
                ]),
                now
            ))
            .starts_with("start: must be at most 7 days")
        );
        assert!(
            refusal(stats_range(
                &params(&[("start", "2026-12-08T12:00:01Z")]),
                now
            ))
            .starts_with("start: must be before end")
        );
        assert!(refusal(stats_range(&params(&[("end", "yesterday")]), now)).starts_with("end:"));
    }

    #[test]
    fn the_page_parameters_and_their_refusals() {
        let page = page_request(&params(&[])).unwrap();
        assert_eq!((page.limit, page.ascending, page.after), (25, false, None));
        assert_eq!(page.filter, DeliveryFilter::default());
        let cursor = Cursor {
            started_us: 5,
            seq: 6,
        };
        let page = page_request(&params(&[
            ("limit", "100"),
            ("orderAsc", "true"),
            ("cursor", &cursor.encode()),
            ("start", "2026-12-01T00:00:00Z"),
            ("end", "2026-12-02T00:00:00Z"),
            ("deliveryStatus", "failed"),
            ("eventType", "sandbox.lifecycle.killed,create"),
            ("eventType", "sandbox.lifecycle.paused"),
        ]))
        .unwrap();
        assert_eq!(
            (page.limit, page.ascending, page.after),
            (100, true, Some(cursor))
        );
        assert_eq!(page.filter.delivered, Some(false));
        assert_eq!(
            page.filter.event_types.unwrap(),
            [
                "sandbox.lifecycle.killed",
                "sandbox.lifecycle.created",
                "sandbox.lifecycle.paused"
            ]
        );
        let both = page_request(&params(&[("deliveryStatus", "success,failed")])).unwrap();
        assert_eq!(both.filter.delivered, None);
        let success = page_request(&params(&[("deliveryStatus", "success")])).unwrap();
        assert_eq!(success.filter.delivered, Some(true));
        for (field, value) in [
            ("limit", "0"),
            ("limit", "101"),
            ("limit", "ten"),
            ("orderAsc", "yes"),
            ("cursor", "bm90LWEtY3Vyc29y"),
            ("start", "yesterday"),
            ("end", "2026-13-01T00:00:00Z"),
            ("deliveryStatus", "delivered"),
            ("deliveryStatus", ""),
            ("deliveryStatus", "success,"),
            ("eventType", "exploded"),
            ("eventType", ""),
        ] {
            let message = refusal(page_request(&params(&[(field, value)])));
            assert!(message.starts_with(&format!("{field}:")), "{message}");
        }
        let reversed = refusal(page_request(&params(&[
            ("start", "2026-12-02T00:00:00Z"),
            ("end", "2026-12-01T00:00:00Z"),
        ])));
        assert!(reversed.starts_with("start:"), "{reversed}");
    }
}
