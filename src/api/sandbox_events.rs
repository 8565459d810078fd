//! `GET /events/sandboxes` and `GET /events/sandboxes/{sandboxID}`: a team's lifecycle history,
//! with E2B's parameters `offset` (≥ 0, default 0), `limit` (1–100, default 10) and `orderAsc`
//! (default false: newest first). Each event is the v2 payload as the emitter received it.

use super::EventsApi;
use super::auth::Team;
use super::error::ApiError;
use crate::postgres::sandbox_events::Page;
use axum::Json;
use axum::extract::{Path, Query, State};
use serde_json::Value;
use std::collections::HashMap;

const DEFAULT_LIMIT: i64 = 10;
const MAX_LIMIT: i64 = 100;

/// `GET /events/sandboxes`: the team's events, every sandbox.
pub async fn all(
    State(api): State<EventsApi>,
    Team(team): Team,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let page = page(&query)?;
    Ok(Json(api.database.team_events(team, None, page).await?))
}

/// `GET /events/sandboxes/{sandboxID}`: one sandbox's events (empty for another team's).
pub async fn of_sandbox(
    State(api): State<EventsApi>,
    Team(team): Team,
    Path(sandbox): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let page = page(&query)?;
    Ok(Json(
        api.database.team_events(team, Some(&sandbox), page).await?,
    ))
}

/// Reads the paging parameters; a bad one is named in the 400.
pub(super) fn page(query: &HashMap<String, String>) -> Result<Page, ApiError> {
    let number = |field: &'static str, default: i64, min: i64, max: i64| {
        let Some(raw) = query.get(field) else {
            return Ok(default);
        };
        match raw.trim().parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ if max == i64::MAX => Err(ApiError::invalid(
                field,
                format!("must be an integer of at least {min}"),
            )),
            _ => Err(ApiError::invalid(
                field,
                format!("must be an integer from {min} to {max}"),
            )),
        }
    };
    let ascending = match query.get("orderAsc").map(|v| v.trim()) {
        None => false,
        Some("true") => true,
        Some("false") => false,
        Some(_) => return Err(ApiError::invalid("orderAsc", "must be true or false")),
    };
    Ok(Page {
        offset: number("offset", 0, 0, i64::MAX)?,
        limit: number("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)?,
        ascending,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn e2bs_defaults_and_ranges() {
        assert_eq!(
            page(&query(&[])).unwrap(),
            Page {
                offset: 0,
                limit: 10,
                ascending: false
            }
        );
        let given = page(&query(&[
            ("offset", "5"),
            ("limit", "100"),
            ("orderAsc", "true"),
        ]));
        assert_eq!(
            given.unwrap(),
            Page {
                offset: 5,
                limit: 100,
                ascending: true
            }
        );
        for (field, value) in [
            ("limit", "0"),
            ("limit", "101"),
            ("limit", "ten"),
            ("offset", "-1"),
            ("orderAsc", "yes"),
        ] {
            let refusal = page(&query(&[(field, value)])).unwrap_err().to_string();
            assert!(refusal.starts_with(&format!("{field}:")), "{refusal}");
        }
    }
}
