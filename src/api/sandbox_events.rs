//! `GET /events/sandboxes` and `GET /events/sandboxes/{sandboxID}`: a team's lifecycle history,
//! with E2B's parameters `offset` (≥ 0, default 0), `limit` (1–100, default 10), `orderAsc`
//! (default false: newest first) and `types`. Each event is E2B's `SandboxEvent` (camelCase,
//! `shared/specs/openapi.argus.yaml`), made from the v2 payload the emitter received.

use super::EventsApi;
use super::auth::Team;
use super::error::ApiError;
use crate::event::Lifecycle;
use crate::postgres::sandbox_events::{Page, TypeFilter};
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use serde_json::{Map, Value};
use std::collections::HashMap;

const DEFAULT_LIMIT: i64 = 10;
const MAX_LIMIT: i64 = 100;

/// `GET /events/sandboxes`: the team's events, every sandbox.
pub async fn all(
    State(api): State<EventsApi>,
    Team(team): Team,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<Value>>, ApiError> {
    events(&api, team, None, query.as_deref()).await
}

/// `GET /events/sandboxes/{sandboxID}`: one sandbox's events (empty for another team's).
pub async fn of_sandbox(
    State(api): State<EventsApi>,
    Team(team): Team,
    Path(sandbox): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<Value>>, ApiError> {
    events(&api, team, Some(&sandbox), query.as_deref()).await
}

async fn events(
    api: &EventsApi,
    team: uuid::Uuid,
    sandbox: Option<&str>,
    query: Option<&str>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let (single, types) = parse_query(query);
    let page = page(&single)?;
    let types = type_filter(&types)?;
    let stored = api
        .database
        .team_events(team, sandbox, &types, page)
        .await?;
    Ok(Json(stored.into_iter().map(sandbox_event).collect()))
}

/// The query's single-valued parameters, and every value of `types`: the document says
/// `types=a&types=b` (`explode: true`), E2B's dashboard sends `types=a,b` (its `openapi-fetch`
/// client serializes arrays comma-separated); both are read.
fn parse_query(query: Option<&str>) -> (HashMap<String, String>, Vec<String>) {
    let mut single = HashMap::new();
    let mut types = Vec::new();
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if key == "types" {
            types.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned),
            );
        } else {
            single.insert(key.into_owned(), value.into_owned());
        }
    }
    (single, types)
}

/// `types` as stored (`sandbox.lifecycle.killed`); a label (`kill`) is read as its type.
fn type_filter(types: &[String]) -> Result<TypeFilter, ApiError> {
    types
        .iter()
        .map(|name| {
            Lifecycle::from_name(name)
                .map(|lifecycle| lifecycle.event_type())
                .map_err(|reason| ApiError::invalid("types", reason))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(TypeFilter)
}

/// E2B's `SandboxEvent` from the stored v2 payload: camelCase keys; the deprecated
/// `eventCategory`/`eventLabel` back-filled from the type as E2B Cloud does for v2 events
/// (`lifecycle`, and `create`·`kill`·`pause`·`resume`·`update`, none for a checkpoint);
/// `eventData` as received, or null.
fn sandbox_event(payload: Value) -> Value {
    let Value::Object(mut raw) = payload else {
        return payload;
    };
    let mut take = |key: &str| raw.remove(key).unwrap_or(Value::Null);
    let event_type = take("type");
    let lifecycle = event_type.as_str().map(Lifecycle::from_type);
    let given = |v: Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    let category = given(take("event_category")).unwrap_or_else(|| "lifecycle".to_owned());
    let label = given(take("event_label")).unwrap_or_else(|| match &lifecycle {
        Some(Lifecycle::Checkpointed | Lifecycle::Unknown(_)) | None => String::new(),
        Some(known) => known.label().to_owned(),
    });
    let mut event = Map::new();
    event.insert("id".into(), take("id"));
    event.insert("version".into(), take("version"));
    event.insert("type".into(), event_type);
    event.insert("eventCategory".into(), category.into());
    event.insert("eventLabel".into(), label.into());
    let data = take("event_data");
    event.insert(
        "eventData".into(),
        if data.is_object() { data } else { Value::Null },
    );
    event.insert("timestamp".into(), take("timestamp"));
    for (from, to) in [
        ("sandbox_id", "sandboxId"),
        ("sandbox_execution_id", "sandboxExecutionId"),
        ("sandbox_template_id", "sandboxTemplateId"),
        ("sandbox_build_id", "sandboxBuildId"),
        ("sandbox_team_id", "sandboxTeamId"),
    ] {
        // Required strings in the document: an event that lacked one says so with "".
        let value = take(from);
        event.insert(to.into(), if value.is_string() { value } else { "".into() });
    }
    Value::Object(event)
}

/// Reads the paging parameters; a bad one is named in the 400.
pub(super) fn page(query: &HashMap<String, String>) -> Result<Page, ApiError> {
    let number = |field: &'static str, default: i64, min: i64, max: i64| {
        let Some(raw) = query.get(field) else {
            return Ok(default);
        };
        match raw.trim().parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
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
        // `format: int32` in E2B's document.
        offset: number("offset", 0, 0, i64::from(i32::MAX))?,
        limit: number("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)?,
        ascending,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_event_becomes_e2bs_sandbox_event() {
        let stored = serde_json::json!({
            "id": "0b6f5c1e-3c2a-4d5e-9f10-1a2b3c4d5e6f", "version": "v2",
            "type": "sandbox.lifecycle.killed", "timestamp": "2026-12-06T10:00:00.123456789Z",
            "event_category": "", "event_label": "",
            "event_data": {"kill_reason": "timeout", "sandbox_metadata": {"k": "v"}},
            "sandbox_id": "isb1", "sandbox_execution_id": "ex1", "sandbox_template_id": "tpl",
            "sandbox_build_id": "b1", "sandbox_team_id": "3f2b1c4e-8a9d-4e6f-b1a2-c3d4e5f60718",
            "events_ttl_days": 7
        });
        let event = sandbox_event(stored);
        assert_eq!(
            event,
            serde_json::json!({
                "id": "0b6f5c1e-3c2a-4d5e-9f10-1a2b3c4d5e6f", "version": "v2",
                "type": "sandbox.lifecycle.killed", "eventCategory": "lifecycle",
                "eventLabel": "kill",
                "eventData": {"kill_reason": "timeout", "sandbox_metadata": {"k": "v"}},
                "timestamp": "2026-12-06T10:00:00.123456789Z",
                "sandboxId": "isb1", "sandboxExecutionId": "ex1", "sandboxTemplateId": "tpl",
                "sandboxBuildId": "b1", "sandboxTeamId": "3f2b1c4e-8a9d-4e6f-b1a2-c3d4e5f60718"
            })
        );
        // A checkpoint has no label; missing data is null; a v1 label is kept.
        let checkpoint = sandbox_event(serde_json::json!({
            "id": "e", "version": "v2", "type": "sandbox.lifecycle.checkpointed",
            "sandbox_id": "s"
        }));
        assert_eq!(checkpoint["eventLabel"], "");
        assert_eq!(checkpoint["eventData"], Value::Null);
        assert_eq!(checkpoint["sandboxBuildId"], "");
        let v1 = sandbox_event(serde_json::json!({
            "id": "e", "version": "v1", "type": "sandbox.lifecycle.created",
            "event_category": "lifecycle", "event_label": "create"
        }));
        assert_eq!(v1["eventLabel"], "create");
    }

    #[test]
    fn types_are_read_repeated_and_comma_separated() {
        let (single, types) = parse_query(Some(
            "limit=5&types=sandbox.lifecycle.killed&types=kill,sandbox.lifecycle.paused",
        ));
        assert_eq!(single.get("limit").map(String::as_str), Some("5"));
        assert_eq!(
            type_filter(&types).unwrap().0,
            [
                "sandbox.lifecycle.killed",
                "sandbox.lifecycle.killed",
                "sandbox.lifecycle.paused"
            ]
        );
        let refusal = type_filter(&["exploded".to_owned()]).unwrap_err();
        assert!(refusal.to_string().starts_with("types:"), "{refusal}");
    }

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
            ("offset", "2147483648"),
            ("orderAsc", "yes"),
        ] {
            let refusal = page(&query(&[(field, value)])).unwrap_err().to_string();
            assert!(refusal.starts_with(&format!("{field}:")), "{refusal}");
        }
    }
}
