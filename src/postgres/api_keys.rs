//! E2B API keys, checked the way E2B's API checks them (e2b-dev/infra
//! `packages/shared/pkg/keys`: `VerifyKey` and `Sha256Hashing.Hash`; the lookup as
//! `packages/db/pkg/auth/sql_queries/teams/get_team.sql`): a key is `e2b_` + hex, and
//! `public.team_api_keys.api_key_hash` holds `"$sha256$" + base64 (standard alphabet, no
//! padding) of sha256(hex-decoded bytes)`.

use super::{Database, StoreError};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The prefix of every E2B API key (`keys.ApiKeyPrefix`).
pub const API_KEY_PREFIX: &str = "e2b_";

/// The stored hash of `key`, or `None` when it is not an E2B API key at all.
pub fn api_key_hash(key: &str) -> Option<String> {
    let hex_part = key.strip_prefix(API_KEY_PREFIX)?;
    let bytes = hex::decode(hex_part).ok()?;
    if bytes.is_empty() {
        return None;
    }
    Some(format!(
        "$sha256${}",
        STANDARD_NO_PAD.encode(Sha256::digest(&bytes))
    ))
}

/// Who a key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOwner {
    /// A team in good standing.
    Team(Uuid),
    /// No key has this hash.
    Unknown,
    /// The team is blocked or banned (`teams.is_blocked`, `teams.is_banned`).
    Refused,
}

impl Database {
    /// The team owning the key whose hash is `hash`.
    pub async fn key_owner(&self, hash: &str) -> Result<KeyOwner, StoreError> {
        let row: Option<(Uuid, bool, bool)> = sqlx::query_as(
            "SELECT t.id, t.is_blocked, t.is_banned
               FROM public.team_api_keys tak
               JOIN public.teams t ON t.id = tak.team_id
              WHERE tak.api_key_hash = $1",
        )
        .bind(hash)
        .fetch_optional(self.pool())
        .await?;
        Ok(match row {
            None => KeyOwner::Unknown,
            Some((_, blocked, banned)) if blocked || banned => KeyOwner::Refused,
            Some((team, _, _)) => KeyOwner::Team(team),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_e2bs_sha256_of_the_hex_decoded_key() {
        // Computed apart from this code:
        // printf 000102…13 | xxd -r -p | openssl dgst -sha256 -binary | base64 | tr -d =
        let key = "e2b_000102030405060708090a0b0c0d0e0f10111213";
        let hash = api_key_hash(key).unwrap();
        assert_eq!(hash, "$sha256$566/V39gQS8DEtRCxwofphSMCQv1urQEyuwpSCrneeg");
        // Upper-case hex decodes to the same bytes, as Go's hex.DecodeString does.
        assert_eq!(
            api_key_hash(&key.to_uppercase().replace("E2B_", "e2b_")),
            Some(hash)
        );
    }

    #[test]
    fn anything_but_prefix_and_hex_is_no_key() {
        assert_eq!(api_key_hash("000102"), None);
        assert_eq!(api_key_hash("e2b_"), None);
        assert_eq!(api_key_hash("e2b_xyz"), None);
        assert_eq!(api_key_hash("e2b_abc"), None, "odd length");
        assert_eq!(
            api_key_hash("sk_e2b_0001"),
            None,
            "an access token is no API key"
        );
    }
}
