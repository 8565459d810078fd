//! Team scope: which teams the emitter serves, and which endpoint gets which team.
//!
//! E2B Cloud registers webhooks per team; the orchestrator publishes a team's events only while
//! `wh:<team>` exists, and anyone may create such a key. So the served teams are explicit —
//! `E2B_TEAM_IDS`, or else every team an endpoint names — and, once any are known, events of
//! other teams are not delivered to any endpoint.

use super::{ConfigError, EndpointConfig};
use uuid::Uuid;

/// Parses `E2B_TEAM_IDS`: UUIDs separated by commas or spaces.
pub fn parse_team_ids(list: &str) -> Result<Vec<Uuid>, ConfigError> {
    list.split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            Uuid::parse_str(s).map_err(|_| {
                ConfigError::new(
                    "E2B_TEAM_IDS (--team-ids)",
                    format!("{s:?} is not a team UUID"),
                )
            })
        })
        .collect()
}

/// Parses an endpoint's `teams`; with `E2B_TEAM_IDS` set, each must be one of them.
pub(super) fn parse_list(
    list: &[String],
    setting: &str,
    team_ids: &[Uuid],
) -> Result<Vec<Uuid>, ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::new(
            setting,
            "is empty; list team UUIDs, or leave `teams` out to receive every team served",
        ));
    }
    list.iter()
        .map(|raw| {
            let team = Uuid::parse_str(raw.trim())
                .map_err(|_| ConfigError::new(setting, format!("{raw:?} is not a team UUID")))?;
            if !team_ids.is_empty() && !team_ids.contains(&team) {
                return Err(ConfigError::new(
                    setting,
                    format!(
                        "{team} is not in E2B_TEAM_IDS; add it there (the emitter serves only those teams) or remove it here"
                    ),
                ));
            }
            Ok(team)
        })
        .collect()
}

/// Restricts each endpoint to its `teams`, or to the served teams when it names none, and
/// returns the served teams: `team_ids` (`E2B_TEAM_IDS`) when set, else the union of the
/// endpoints' teams. With no team anywhere nothing is restricted.
///
/// `endpoint_teams[i]` belongs to `endpoints[i]`.
pub(super) fn scope_endpoints(
    team_ids: Vec<Uuid>,
    endpoints: &mut [EndpointConfig],
    endpoint_teams: Vec<Option<Vec<Uuid>>>,
) -> Vec<Uuid> {
    let mut served = team_ids;
    for team in endpoint_teams.iter().flatten().flatten() {
        if !served.contains(team) {
            served.push(*team);
        }
    }
    if served.is_empty() {
        return served;
    }
    for (endpoint, teams) in endpoints.iter_mut().zip(endpoint_teams) {
        let teams = teams.unwrap_or_else(|| served.clone());
        endpoint.events = endpoint.events.clone().for_teams(teams);
    }
    served
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, RunArgs, RunConfig};
    use crate::event::{Lifecycle, SandboxEvent};
    use uuid::Uuid;

    const A: &str = "0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d";
    const B: &str = "9d3c1f0e-2a4b-4c6d-8e0f-1a2b3c4d5e6f";
    const C: &str = "5a0e1f2d-3c4b-4a69-8877-665544332211";

    fn killed(team: &str) -> SandboxEvent {
        let mut fields = serde_json::Map::new();
        fields.insert("id".into(), "e1".into());
        fields.insert("sandbox_id".into(), "s1".into());
        fields.insert("sandbox_team_id".into(), team.into());
        SandboxEvent::new(Lifecycle::Killed, fields).unwrap()
    }

    fn config(team_ids: &str, toml: &str) -> Result<RunConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml).unwrap();
        let mut args: RunArgs = crate::config::tests::args();
        args.team_ids = team_ids.into();
        args.config = Some(path);
        RunConfig::from_args(&args)
    }

    const TWO_ENDPOINTS: &str = "[[endpoints]]\nid = \"a\"\nurl = \"http://127.0.0.1:1/a\"\nsecrets = [\"s\"]\nteams = [\"0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d\"]\n[[endpoints]]\nid = \"all\"\nurl = \"http://127.0.0.1:1/all\"\nsecrets = [\"s\"]\n";

    #[test]
    fn endpoints_get_their_teams_and_the_rest_get_every_served_team() {
        let c = config(&format!("{A},{B}"), TWO_ENDPOINTS).unwrap();
        let ids: Vec<Uuid> = [A, B].iter().map(|t| t.parse().unwrap()).collect();
        assert_eq!(c.team_ids, ids);
        let by_id = |id: &str| c.endpoints.iter().find(|e| e.id == id).unwrap();
        // The WEBHOOK_URL endpoint and `all` name no teams: they get A and B, never C.
        for id in ["default", "all"] {
            assert!(by_id(id).events.accepts(&killed(A)), "{id}");
            assert!(by_id(id).events.accepts(&killed(B)), "{id}");
            assert!(!by_id(id).events.accepts(&killed(C)), "{id}");
        }
        assert!(by_id("a").events.accepts(&killed(A)));
        assert!(!by_id("a").events.accepts(&killed(B)));
    }

    #[test]
    fn without_e2b_team_ids_the_endpoints_teams_are_served() {
        let c = config("", TWO_ENDPOINTS).unwrap();
        assert_eq!(c.team_ids, vec![A.parse::<Uuid>().unwrap()]);
        assert!(!c.endpoints[0].events.accepts(&killed(B)));
        let unscoped = config("", "").unwrap();
        assert!(unscoped.team_ids.is_empty());
        assert!(unscoped.endpoints[0].events.accepts(&killed(C)));
    }

    #[test]
    fn an_endpoint_team_outside_e2b_team_ids_or_malformed_is_refused() {
        let err = config(B, TWO_ENDPOINTS).unwrap_err();
        assert_eq!(err.setting, "endpoints[0].teams");
        assert!(err.message.contains("E2B_TEAM_IDS"), "{err}");
        let bad = TWO_ENDPOINTS.replace(A, "team-a");
        assert_eq!(config("", &bad).unwrap_err().setting, "endpoints[0].teams");
        let empty = TWO_ENDPOINTS.replace(&format!("\"{A}\""), "");
        assert_eq!(
            config("", &empty).unwrap_err().setting,
            "endpoints[0].teams"
        );
    }

    #[test]
    fn webhook_ids_and_signature_encodings_are_per_endpoint() {
        let toml = TWO_ENDPOINTS.replace(
            "id = \"all\"\n",
            "id = \"all\"\nwebhook_id = \"5a0e1f2d-3c4b-4a69-8877-665544332211\"\nsignature_encoding = \"standard-padded\"\n",
        );
        let c = config("", &toml).unwrap();
        let all = c.endpoints.iter().find(|e| e.id == "all").unwrap();
        assert_eq!(all.webhook_id.to_string(), C);
        assert_eq!(
            all.signature_encoding,
            crate::deliver::sign::SignatureEncoding::StandardPadded
        );
        let a = c.endpoints.iter().find(|e| e.id == "a").unwrap();
        assert_eq!(
            a.webhook_id,
            crate::deliver::format::default_webhook_id("a")
        );
        let bad = toml.replace(C, "hook-1");
        assert_eq!(
            config("", &bad).unwrap_err().setting,
            "endpoints[1].webhook_id"
        );
        let bad = toml.replace("standard-padded", "hex");
        assert_eq!(
            config("", &bad).unwrap_err().setting,
            "endpoints[1].signature_encoding"
        );
        let mut args: RunArgs = crate::config::tests::args();
        args.webhook.webhook_id = Some("nope".into());
        assert!(
            RunConfig::from_args(&args)
                .unwrap_err()
                .setting
                .starts_with("WEBHOOK_ID")
        );
    }
}
