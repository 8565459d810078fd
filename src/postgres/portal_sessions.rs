//! Sessions of the team portal, shared by every instance: a row per sign-in, keyed by a SHA-256
//! of the session id (the id itself only ever travels in the browser's cookie). A session is live
//! while it has not expired, the API key it was opened with still exists and the key's team is
//! neither blocked nor banned — as `api_keys` decides for the key itself.

use super::{Database, StoreError};
use jiff::Timestamp;
use uuid::Uuid;

impl Database {
    /// Records a session of `team`, opened with the key whose E2B hash is `api_key_hash`, until
    /// `expires_at`; drops expired sessions on the way (sign-ins are rare, so this is cheap).
    pub async fn open_portal_session(
        &self,
        id_hash: &[u8],
        team: Uuid,
        api_key_hash: &str,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        let pool = self.ready()?;
        sqlx::query("DELETE FROM webhook_emitter.portal_sessions WHERE expires_at < now()")
            .execute(pool)
            .await?;
        sqlx::query(
            "INSERT INTO webhook_emitter.portal_sessions (id_hash, team_id, api_key_hash, expires_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(id_hash)
        .bind(team)
        .bind(api_key_hash)
        .bind(jiff_sqlx::Timestamp::from(expires_at))
        .execute(pool)
        .await?;
        Ok(())
    }

    /// The team and expiry of the live session whose id hashes to `id_hash`.
    pub async fn portal_session(
        &self,
        id_hash: &[u8],
    ) -> Result<Option<(Uuid, Timestamp)>, StoreError> {
        let row: Option<(Uuid, jiff_sqlx::Timestamp)> = sqlx::query_as(
            "SELECT s.team_id, s.expires_at
               FROM webhook_emitter.portal_sessions s
               JOIN public.team_api_keys tak ON tak.api_key_hash = s.api_key_hash
                                            AND tak.team_id = s.team_id
               JOIN public.teams t ON t.id = s.team_id
              WHERE s.id_hash = $1 AND s.expires_at > now()
                AND NOT t.is_blocked AND NOT t.is_banned",
        )
        .bind(id_hash)
        .fetch_optional(self.ready()?)
        .await?;
        Ok(row.map(|(team, expires)| (team, expires.to_jiff())))
    }

    /// Ends the session whose id hashes to `id_hash` (nothing when there is none).
    pub async fn close_portal_session(&self, id_hash: &[u8]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM webhook_emitter.portal_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(self.ready()?)
            .await?;
        Ok(())
    }
}
