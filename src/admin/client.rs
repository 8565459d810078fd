//! The admin API from the command line's side: `status`, `dead-letters` and `deliveries` ask the
//! running service first, and fall back to the data directory only when nothing answers.

use serde_json::Value;
use std::time::Duration;

/// How long the CLI waits for the service before it falls back.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call to the admin API did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    /// Nothing answered at the URL (the service is not running there): fall back.
    #[error("no service answers at {url}: {reason}")]
    Unreachable {
        /// The base URL (no credentials).
        url: String,
        /// The connection error.
        reason: String,
    },
    /// The service answered 401.
    #[error("the service at {0} refused the admin token (ADMIN_TOKEN)")]
    Unauthorized(String),
    /// The service answered 404 for the admin API.
    #[error("the service at {0} has no admin API: start it with ADMIN_TOKEN set")]
    Disabled(String),
    /// Any other answer that is not 2xx.
    #[error("the service answered {status}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its error message.
        message: String,
    },
    /// The URL or token cannot be used.
    #[error("{0}")]
    Invalid(String),
}

/// A client of one service's admin API.
pub struct AdminClient {
    base: url::Url,
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client for the service at `base` (e.g. `http://127.0.0.1:9464`).
    pub fn new(base: &str, token: &str) -> Result<Self, AdminClientError> {
        let base: url::Url = base.parse().map_err(|e| {
            let shown = crate::util::redact::redact_url_text(base);
            AdminClientError::Invalid(format!("ADMIN_URL {shown:?}: {e}"))
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(AdminClientError::Invalid(
                "ADMIN_URL must be http:// or https://".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| AdminClientError::Invalid(e.to_string()))?;
        Ok(Self {
            base,
            token: token.to_owned(),
            http,
        })
    }

    fn shown(&self) -> String {
        crate::util::redact::redact_url(&self.base)
    }

    /// GETs `path` (under `/admin/v1`) with `query`.
    pub async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Value, AdminClientError> {
        let request = self.http.get(self.url(path)?).query(query);
        self.send(request).await
    }

    /// POSTs `body` to `path` (under `/admin/v1`).
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, AdminClientError> {
        let request = self
            .http
            .post(self.url(path)?)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        self.send(request).await
    }

    fn url(&self, path: &str) -> Result<url::Url, AdminClientError> {
        self.base
            .join(&format!("/admin/v1{path}"))
            .map_err(|e| AdminClientError::Invalid(e.to_string()))
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, AdminClientError> {
        let response = request.bearer_auth(&self.token).send().await.map_err(|e| {
            AdminClientError::Unreachable {
                url: self.shown(),
                reason: e.without_url().to_string(),
            }
        })?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        match status {
            200..=299 => Ok(body),
            401 => Err(AdminClientError::Unauthorized(self.shown())),
            404 if body["error"].is_null() => Err(AdminClientError::Disabled(self.shown())),
            _ => Err(AdminClientError::Refused {
                status,
                message: body["error"].as_str().unwrap_or("no message").to_owned(),
            }),
        }
    }
}
