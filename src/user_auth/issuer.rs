//! One configured issuer at run time: its `jwks_uri` once discovered, the keys last fetched, and
//! when to fetch them again ([`RefreshClock`]). Discovery happens on the first token, not at
//! startup (E2B's API discovers at startup and refuses to start without the issuer; the emitter
//! delivers webhooks whether or not an identity provider answers). One fetch at a time per
//! issuer: callers holding keys go on with them meanwhile, callers without keys wait for it.

use super::fetch::Fetcher;
use super::key_set::KeySet;
use super::refresh::RefreshClock;
use super::settings::IssuerSettings;
use super::token::{self, Identity, TokenError};
use std::sync::{Arc, Mutex};
use std::time::Instant;
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
    /// Never held across an await.
    state: Mutex<State>,
    /// Held by the one fetch in progress.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    jwks_uri: Option<Url>,
    keys: Option<Arc<KeySet>>,
    clock: RefreshClock,
    /// A fetch is in progress: whoever has keys uses them rather than wait for it.
    in_progress: bool,
}

impl Issuer {
    /// The issuer of `settings`; nothing is fetched yet.
    pub fn new(settings: IssuerSettings, fetcher: Fetcher) -> Self {
        Self {
            settings,
            fetcher,
            state: Mutex::default(),
            fetching: tokio::sync::Mutex::const_new(()),
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

    /// The keys to verify with, fetched first when due. Only a caller without keys waits for a
    /// fetch another caller started; the others go on with the keys held.
    async fn keys(&self, unknown_kid: bool) -> Option<Arc<KeySet>> {
        let due = |state: &State| {
            state
                .clock
                .should_fetch(Instant::now(), self.settings.cache_duration, unknown_kid)
        };
        {
            let state = self.lock();
            if !due(&state) || (state.in_progress && state.keys.is_some()) {
                return state.keys.clone();
            }
        }
        let _one_fetch = self.fetching.lock().await;
        let jwks_uri = {
            let mut state = self.lock();
            // Another caller's fetch may have just ended.
            if !due(&state) {
                return state.keys.clone();
            }
            state.in_progress = true;
            state.jwks_uri.clone()
        };
        let fetched = self.fetch(jwks_uri).await;
        let mut state = self.lock();
        state.in_progress = false;
        state.clock.fetched(Instant::now(), fetched.is_ok());
        match fetched {
            Ok((keys, jwks_uri)) => {
                state.keys = Some(Arc::new(keys));
                state.jwks_uri = Some(jwks_uri);
            }
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
        state.keys.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The keys, from `jwks_uri` or else the one discovery finds; with the URI used.
    async fn fetch(&self, jwks_uri: Option<Url>) -> Result<(KeySet, Url), String> {
        let uri = match jwks_uri {
            Some(uri) => uri,
            None => self.fetcher.discover(&self.settings).await?,
        };
        let (keys, skipped) = self.fetcher.keys(&uri).await?;
        tracing::info!(
            issuer = %self.settings.issuer,
            jwks_uri = %uri,
            keys = keys.len(),
            skipped,
            "fetched the token issuer's keys"
        );
        Ok((keys, uri))
    }
}
