//! Which events an endpoint receives: lifecycle kinds (labels or E2B's full types), and
//! optionally only some teams.

use super::{Lifecycle, SandboxEvent, team_in_scope};
use std::fmt;
use uuid::Uuid;

/// Which events an endpoint receives: lifecycle kinds, and optionally only some teams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter {
    /// `None`: every kind, unknown types included.
    kinds: Option<Vec<Lifecycle>>,
    /// `None`: every team.
    teams: Option<Vec<Uuid>>,
}

impl EventFilter {
    /// The default: `create,kill,pause,resume`, every team.
    pub fn default_labels() -> Self {
        Self {
            kinds: Some(vec![
                Lifecycle::Created,
                Lifecycle::Killed,
                Lifecycle::Paused,
                Lifecycle::Resumed,
            ]),
            teams: None,
        }
    }

    /// Parses a comma-separated list of labels (`kill`) or E2B's full types
    /// (`sandbox.lifecycle.killed`, as E2B's webhook registration takes them); `*` means every
    /// event, unknown types included. A full type this version does not know is accepted, so a
    /// new kind can be opted into before the emitter learns its label.
    pub fn parse(list: &str) -> Result<Self, String> {
        let items: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if items.is_empty() {
            return Err("expected a comma-separated list such as create,kill,pause,resume".into());
        }
        if items.contains(&"*") {
            return Ok(Self {
                kinds: None,
                teams: None,
            });
        }
        let mut kinds = Vec::new();
        for item in items {
            let kind = Lifecycle::from_name(item).map_err(|e| format!("{e}, or *"))?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        Ok(Self {
            kinds: Some(kinds),
            teams: None,
        })
    }

    /// The teams it is restricted to (`None`: every team).
    pub fn teams(&self) -> Option<&[Uuid]> {
        self.teams.as_deref()
    }

    /// The same filter, restricted to `teams`.
    pub fn for_teams(self, teams: Vec<Uuid>) -> Self {
        Self {
            teams: Some(teams),
            ..self
        }
    }

    /// Whether `event` passes the filter.
    pub fn accepts(&self, event: &SandboxEvent) -> bool {
        self.accepts_kind(&event.lifecycle)
            && self
                .teams
                .as_ref()
                .is_none_or(|teams| !teams.is_empty() && team_in_scope(teams, event.team_id()))
    }

    fn accepts_kind(&self, lifecycle: &Lifecycle) -> bool {
        self.kinds
            .as_ref()
            .is_none_or(|kinds| kinds.contains(lifecycle))
    }
}

impl fmt::Display for EventFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kinds {
            None => f.write_str("*")?,
            Some(kinds) => {
                let names: Vec<String> = kinds
                    .iter()
                    .map(|k| match k {
                        Lifecycle::Unknown(t) => t.clone(),
                        known => known.label().to_owned(),
                    })
                    .collect();
                f.write_str(&names.join(","))?;
            }
        }
        if let Some(teams) = &self.teams {
            let teams: Vec<String> = teams.iter().map(Uuid::to_string).collect();
            write!(f, " of teams {}", teams.join(","))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    const TEAM: &str = "0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d";

    fn event_of(lifecycle: Lifecycle, team: &str) -> SandboxEvent {
        let mut fields = Map::new();
        fields.insert("id".into(), "e1".into());
        fields.insert("sandbox_id".into(), "s1".into());
        fields.insert("sandbox_team_id".into(), team.into());
        SandboxEvent::new(lifecycle, fields).unwrap()
    }

    #[test]
    fn filter_parsing() {
        let f = EventFilter::parse("kill, pause").unwrap();
        assert!(f.accepts(&event_of(Lifecycle::Killed, TEAM)));
        assert!(!f.accepts(&event_of(Lifecycle::Created, TEAM)));
        assert!(EventFilter::parse("kill,explode").is_err());
        assert!(EventFilter::parse(" , ").is_err());
        assert!(EventFilter::parse("sandbox.lifecycle.").is_err());
        assert!(EventFilter::parse("sandbox.lifecycle.Killed!").is_err());
        let d = EventFilter::default_labels();
        assert!(d.accepts(&event_of(Lifecycle::Resumed, TEAM)));
        assert!(!d.accepts(&event_of(Lifecycle::Updated, TEAM)));
        assert!(!d.accepts(&event_of(Lifecycle::Checkpointed, TEAM)));
        assert_eq!(d.to_string(), "create,kill,pause,resume");
    }

    #[test]
    fn filters_take_e2bs_full_type_names_and_labels_alike() {
        let by_type = EventFilter::parse(
            "sandbox.lifecycle.created, sandbox.lifecycle.killed,sandbox.lifecycle.checkpointed",
        )
        .unwrap();
        let by_label = EventFilter::parse("create,kill,checkpoint").unwrap();
        assert_eq!(by_type, by_label);
        assert!(by_type.accepts(&event_of(Lifecycle::Checkpointed, TEAM)));
        assert!(!by_type.accepts(&event_of(Lifecycle::Paused, TEAM)));
        assert_eq!(
            EventFilter::parse("kill,sandbox.lifecycle.killed").unwrap(),
            EventFilter::parse("kill").unwrap()
        );
    }

    #[test]
    fn a_team_filter_passes_only_its_teams() {
        let other = "9d3c1f0e-2a4b-4c6d-8e0f-1a2b3c4d5e6f";
        let f = EventFilter::parse("*")
            .unwrap()
            .for_teams(vec![Uuid::parse_str(TEAM).unwrap()]);
        assert!(f.accepts(&event_of(Lifecycle::Killed, TEAM)));
        assert!(f.accepts(&event_of(Lifecycle::Killed, &TEAM.to_uppercase())));
        assert!(!f.accepts(&event_of(Lifecycle::Killed, other)));
        assert_eq!(f.to_string(), format!("* of teams {TEAM}"));
    }
}
