//! Which team a user's token may act for, from E2B's tables, as E2B's API decides it
//! (e2b-dev/infra): the identity `(iss, sub)` is a user through `public.user_identities`
//! (`packages/db/pkg/auth/queries/get_user_identity.sql.go`; table from migration
//! `20260515120000_create_user_identities_table.sql`), and that user may act for the team of
//! `X-Team-ID` only if `public.users_teams` links them (`GetTeamWithTierByTeamAndUser`,
//! `packages/db/pkg/auth/sql_queries/teams/get_team.sql`). A banned team is refused at that
//! point (`internal/team/state.go` `CheckTeamBanned`), a blocked one right after
//! (`internal/team/middleware.go` `EnforceBlockedTeam`): both with 403, since the caller did
//! prove membership.

use super::{Database, StoreError};
use uuid::Uuid;

/// What the identity may do with the team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserTeam {
    /// Act for it.
    Member(Uuid),
    /// Nothing: no such identity, no such team, or no membership (one answer for all).
    NotMember,
    /// The team is banned (`teams.is_banned`).
    Banned,
    /// The team is blocked (`teams.is_blocked`), with `teams.blocked_reason` when set.
    Blocked(Option<String>),
}

impl Database {
    /// What the user `(issuer, subject)` may do with `team`.
    pub async fn user_team(
        &self,
        issuer: &str,
        subject: &str,
        team: Uuid,
    ) -> Result<UserTeam, StoreError> {
        let row: Option<(Uuid, bool, bool, Option<String>)> = sqlx::query_as(
            "SELECT t.id, t.is_banned, t.is_blocked, t.blocked_reason
               FROM public.user_identities ui
               JOIN public.users_teams ut ON ut.user_id = ui.user_id
               JOIN public.teams t ON t.id = ut.team_id
              WHERE ui.oidc_iss = $1 AND ui.oidc_sub = $2 AND t.id = $3",
        )
        .bind(issuer)
        .bind(subject)
        .bind(team)
        .fetch_optional(self.pool())
        .await?;
        Ok(match row {
            None => UserTeam::NotMember,
            Some((_, true, _, _)) => UserTeam::Banned,
            Some((_, _, true, reason)) => UserTeam::Blocked(reason.filter(|r| !r.is_empty())),
            Some((id, false, false, _)) => UserTeam::Member(id),
        })
    }
}
