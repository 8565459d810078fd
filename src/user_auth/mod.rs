//! Users' bearer tokens (`Authorization: Bearer <JWT>`), verified as E2B's API verifies them
//! against the issuers of `AUTH_PROVIDER_CONFIG` (e2b-dev/infra
//! `packages/auth/pkg/auth/internal/token/`: `provider.go`, `jwks/`, `oidc/oidc.go`): OIDC
//! discovery, the issuer's JWKS, then the token's signature and claims. What it yields is the
//! identity (`iss`, `sub`); who that is among E2B's users, and in which teams, is E2B's
//! Postgres' answer (`postgres::user_teams`).
//!
//! `settings` (what the operator configured), `fetch` (the HTTP requests), `key_set` (the
//! usable keys of a JWKS), `refresh` (when to fetch again), `token` (one token against one
//! issuer's keys), `issuer` (one issuer's keys at run time).

mod fetch;
mod issuer;
mod key_set;
mod refresh;
mod settings;
mod token;

pub use issuer::IssuerError;
pub use settings::{DEFAULT_CACHE_DURATION, DISCOVERY_PATH, IssuerSettings, check_issuer_url};
pub use token::{Identity, TokenError};

use issuer::Issuer;

/// A token longer than this is refused unread.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The configured issuers.
pub struct UserTokens {
    issuers: Vec<Issuer>,
}

/// Why a bearer token was not accepted (never holding the token or its claims).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// `AUTH_PROVIDER_CONFIG` declares no issuer: every token is refused (as E2B's API does).
    #[error("no token issuer is configured (AUTH_PROVIDER_CONFIG)")]
    NotConfigured,
    /// The token's `iss` is none of the configured issuers.
    #[error("the token's iss is no configured issuer")]
    UnknownIssuer,
    /// The issuer's keys were never fetched: the token cannot be judged.
    #[error("the issuer's keys could not be fetched yet")]
    IssuerUnavailable,
    /// The issuer refused the token.
    #[error("{0}")]
    Token(TokenError),
}

impl UserTokens {
    /// The issuers of `settings` (none: every token is refused); nothing is fetched yet.
    pub fn new(settings: Vec<IssuerSettings>) -> Result<Self, String> {
        let fetcher = fetch::Fetcher::new()?;
        Ok(Self {
            issuers: settings
                .into_iter()
                .map(|s| Issuer::new(s, fetcher.clone()))
                .collect(),
        })
    }

    /// Who `token` names.
    ///
    /// The issuers tried are those whose URL the token's (unverified) `iss` equals — the only
    /// ones whose verification could pass, as each requires exactly that `iss` — so that a token
    /// never makes another issuer fetch its keys. Several entries may share a URL (with other
    /// audiences); the first to accept the token wins, as in E2B's `LinkedOIDCVerifier.Verify`.
    pub async fn verify(&self, token: &str) -> Result<Identity, Refusal> {
        if self.issuers.is_empty() {
            return Err(Refusal::NotConfigured);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(Refusal::Token(TokenError::Malformed));
        }
        let claimed = token::claimed_issuer(token).ok_or(Refusal::UnknownIssuer)?;
        let mut refusal = Refusal::UnknownIssuer;
        for issuer in self.issuers.iter().filter(|i| i.url() == claimed) {
            match issuer.verify(token).await {
                Ok(identity) => return Ok(identity),
                Err(IssuerError::Token(e)) => refusal = Refusal::Token(e),
                Err(IssuerError::NoKeys) => {
                    if matches!(refusal, Refusal::UnknownIssuer) {
                        refusal = Refusal::IssuerUnavailable;
                    }
                }
            }
        }
        Err(refusal)
    }
}
