//! One configured issuer at run time: its `jwks_uri` once discovered, the keys last fetched, and
//! when to fetch them again ([`RefreshClock`]). Discovery happens on the first token, not at
//! startup (E2B's API discovers at startup and refuses to start without the issuer; the emitter
//! delivers webhooks whether or not an identity provider answers). Fetches are serialized per
//! issuer, so concurrent tokens wait for one fetch instead of making their own.

use super::fetch::Fetcher;
use super::key_set::KeySet;
use super::refresh::RefreshClock;
use super::settings::IssuerSettings;
use super::token::{self, Identity, TokenError};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Mutex;
use url::Url;

/// Why an issuer could not judge a token.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    /// The token is refused.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// No keys of the issuer were ever fetched (it is down or misconfigured).
    #[error("the issuer's keys could not be fetched yet")]
    NoKeys,
}

/// An issuer and its keys.
pub struct Issuer {
    settings: IssuerSettings,
    fetcher: Fetcher,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    jwks_uri: Option<Url>,
    keys: Option<Arc<KeySet>>,
    clock: RefreshClock,
}

impl Issuer {
    /// The issuer of `settings`; nothing is fetched yet.
    pub fn new(settings: IssuerSettings, fetcher: Fetcher) -> Self {
        Self {
            settings,
            fetcher,
            state: Mutex::default(),
        }
    }

    /// The issuer URL its tokens' `iss` must equal.
    pub fn url(&self) -> &str {
        &self.settings.issuer
    }

    /// Who `token` names, if this issuer signed it and it is valid now.
    pub async fn verify(&self, token: &str) -> Result<Identity, IssuerError> {
        let keys = self.keys(false).await.ok_or(IssuerError::NoKeys)?;
        let audiences = &self.settings.audiences;
        match token::verify(token, &keys, &self.settings.issuer, audiences) {
            Err(TokenError::UnknownKid) => {
                // Perhaps a key published since: fetch again, unless that was done just now.
                let keys = self.keys(true).await.ok_or(IssuerError::NoKeys)?;
                Ok(token::verify(
                    token,
                    &keys,
                    &self.settings.issuer,
                    audiences,
                )?)
            }
            verdict => Ok(verdict?),
        }
    }

    /// The keys to verify with, fetched first when due.
    async fn keys(&self, unknown_kid: bool) -> Option<Arc<KeySet>> {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        if state
            .clock
            .should_fetch(now, self.settings.cache_duration, unknown_kid)
        {
            let fetched = self.fetch(&mut state.jwks_uri).await;
            state.clock.fetched(now, fetched.is_ok());
            match fetched {
                Ok(keys) => state.keys = Some(Arc::new(keys)),
                Err(e) => {
                    // Discover again next time: the issuer may have moved its keys.
                    state.jwks_uri = None;
                    tracing::warn!(
                        issuer = %self.settings.issuer,
                        error = %e,
                        kept = state.keys.as_ref().map_or(0, |k| k.len()),
                        "cannot fetch the token issuer's keys; keeping the keys held"
                    );
                }
            }
        }
        state.keys.clone()
    }

    async fn fetch(&self, jwks_uri: &mut Option<Url>) -> Result<KeySet, String> {
        let uri = match jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let uri = self.fetcher.discover(&self.settings).await?;
                *jwks_uri = Some(uri.clone());
                uri
            }
        };
        let (keys, skipped) = self.fetcher.keys(&uri).await?;
        tracing::info!(
            issuer = %self.settings.issuer,
            jwks_uri = %uri,
            keys = keys.len(),
            skipped,
            "fetched the token issuer's keys"
        );
        Ok(keys)
    }
}
