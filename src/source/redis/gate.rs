//! The gate keys: the orchestrator publishes a team's events only while `wh:<team>` exists
//! (e2b-dev/infra `packages/shared/pkg/events`, `EXISTS`), so the active instance keeps one per
//! served team.

use super::{RedisConnection, RedisSourceError, RedisStreamSource};
use redis::AsyncCommands;
use std::time::Duration;
use uuid::Uuid;

/// The orchestrator only checks that `wh:<team>` exists (`EXISTS`); the value tells an operator
/// reading the key who keeps it.
const GATE_KEY_VALUE: &str = "e2b-webhook-emitter";
/// Gate keys expire this long after the last refresh: the orchestrator keeps publishing through
/// emitter restarts and short Redis outages, and stops within minutes once the emitter is gone.
const GATE_KEY_TTL: Duration = Duration::from_secs(600);
/// How often the gate keys are refreshed (a tenth of their lifetime).
pub(super) const GATE_KEY_REFRESH: Duration = Duration::from_secs(60);

impl RedisStreamSource {
    /// Sets every served team's `wh:<team>` key with a fresh expiry. The operator's teams' keys
    /// are never deleted: when the emitter stops they expire by themselves, after the
    /// orchestrator has kept publishing through a restart. A registered team's key goes as soon
    /// as its last enabled webhook does (that is the key's meaning upstream).
    pub(super) async fn refresh_gate_keys(
        &self,
        conn: &mut RedisConnection,
    ) -> Result<(), RedisSourceError> {
        // One command per key: in a cluster the keys live in different slots.
        for team in self.teams.take_removed() {
            let _: i64 = conn
                .del(gate_key(&team))
                .await
                .map_err(|e| self.redis_error(e))?;
        }
        let teams = self.teams.gate_teams();
        for team in &teams {
            let () = conn
                .set_ex(gate_key(team), GATE_KEY_VALUE, GATE_KEY_TTL.as_secs())
                .await
                .map_err(|e| self.redis_error(e))?;
        }
        Ok(())
    }
}

/// The key whose existence makes the orchestrator publish `team`'s events.
fn gate_key(team: &Uuid) -> String {
    // Lowercase hyphenated, as the orchestrator formats it (Go's uuid.UUID.String()).
    format!("wh:{}", team.hyphenated())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_keys_use_the_orchestrators_format() {
        let team = Uuid::parse_str("0B8B8A4E-6F4E-4C4A-9A57-3A2F5D3B1C2D").unwrap();
        assert_eq!(gate_key(&team), "wh:0b8b8a4e-6f4e-4c4a-9a57-3a2f5d3b1c2d");
    }
}
