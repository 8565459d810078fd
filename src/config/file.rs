//! The config file (`--config`): several endpoints, the retry policy and dispatch limits.

use super::{
    ConfigError, EndpointConfig, parse_http_url, trusted_ca, webhook_args::parse_webhook_id,
};
use crate::deliver::format::{WireFormat, default_webhook_id};
use crate::deliver::retry::RetryToml;
use crate::deliver::sign::{SecretSet, SignatureEncoding};
use crate::event::EventFilter;
use crate::util::duration::parse_duration;
use crate::util::secret::Secret;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The config file (`--config`).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(default)]
    pub(super) endpoints: Vec<EndpointToml>,
    #[serde(default)]
    pub(super) retry: RetryToml,
    pub(super) max_in_flight: Option<usize>,
}

/// One `[[endpoints]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EndpointToml {
    id: String,
    url: String,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    secrets: Vec<String>,
    /// Name of an environment variable holding the secrets, to keep them out of the file.
    #[serde(default)]
    secrets_env: Option<String>,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    timeout: Option<String>,
    /// e2b-cloud: the `e2b-webhook-id` UUID.
    #[serde(default)]
    webhook_id: Option<String>,
    /// e2b-cloud: url-safe, standard or standard-padded.
    #[serde(default)]
    signature_encoding: Option<String>,
    /// Only these teams' events (as E2B Cloud's per-team webhooks); default: every team served.
    #[serde(default)]
    pub(super) teams: Option<Vec<String>>,
    #[serde(default)]
    response_body_limit: Option<usize>,
    /// PEM file of a private CA trusted for this endpoint besides the public roots.
    #[serde(default)]
    ca_file: Option<PathBuf>,
}

impl FileConfig {
    /// Reads and parses the file at `path`; no file is an empty config.
    pub(super) fn read(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                "CONFIG_FILE (--config)",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let mut config: Self = toml::from_str(&text).map_err(|e| {
            ConfigError::new(
                "CONFIG_FILE (--config)",
                format!("{}: {}", path.display(), e.to_string().replace('\n', " ")),
            )
        })?;
        // A relative ca_file names a file beside the config file, wherever the process started
        // (a Nomad task's working directory is not the folder its config was rendered to).
        let folder = path.parent().unwrap_or(Path::new(""));
        for ca_file in config
            .endpoints
            .iter_mut()
            .filter_map(|ep| ep.ca_file.as_mut())
        {
            if ca_file.is_relative() {
                *ca_file = folder.join(&*ca_file);
            }
        }
        Ok(config)
    }
}

/// The endpoint of the `i`th table, with the flags' timeout and body limit as defaults.
pub(super) fn endpoint_from_toml(
    i: usize,
    ep: EndpointToml,
    default_timeout: Duration,
    default_response_body_limit: usize,
) -> Result<EndpointConfig, ConfigError> {
    let key = |field: &str| format!("endpoints[{i}].{field}");
    if ep.id.is_empty()
        || !ep
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ConfigError::new(
            key("id"),
            format!("{:?} must be non-empty letters, digits, - or _", ep.id),
        ));
    }
    let url = parse_http_url(&ep.url).map_err(|e| ConfigError::new(key("url"), e))?;
    let format = match ep.format {
        Some(f) => f
            .parse()
            .map_err(|e: String| ConfigError::new(key("format"), e))?,
        None => WireFormat::default(),
    };
    let mut secrets: Vec<Secret> = ep.secrets.into_iter().map(Secret::new).collect();
    if let Some(var) = ep.secrets_env {
        let value = std::env::var(&var).map_err(|_| {
            ConfigError::new(
                key("secrets_env"),
                format!("environment variable {var} is not set"),
            )
        })?;
        secrets.extend(value.split_whitespace().map(Secret::new));
    }
    let secrets =
        SecretSet::from_secrets(secrets).map_err(|e| ConfigError::new(key("secrets"), e))?;
    let events = match ep.events {
        Some(list) => {
            EventFilter::parse(&list.join(",")).map_err(|e| ConfigError::new(key("events"), e))?
        }
        None => EventFilter::default_labels(),
    };
    let timeout = match ep.timeout {
        Some(t) => parse_duration(&t).map_err(|e| ConfigError::new(key("timeout"), e))?,
        None => default_timeout,
    };
    let webhook_id = match ep.webhook_id {
        Some(raw) => parse_webhook_id(&raw).map_err(|e| ConfigError::new(key("webhook_id"), e))?,
        None => default_webhook_id(&ep.id),
    };
    let signature_encoding = match ep.signature_encoding {
        Some(raw) => raw
            .parse()
            .map_err(|e: String| ConfigError::new(key("signature_encoding"), e))?,
        None => SignatureEncoding::default(),
    };
    Ok(EndpointConfig {
        id: ep.id,
        url,
        format,
        secrets,
        events,
        timeout,
        webhook_id,
        signature_encoding,
        response_body_limit: ep
            .response_body_limit
            .unwrap_or(default_response_body_limit),
        trusted_ca: trusted_ca(ep.ca_file.as_deref(), &key("ca_file"))?,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::RunConfig;
    use crate::config::tests::args;
    use std::time::Duration;

    #[test]
    fn a_relative_ca_file_is_read_beside_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("conf");
        std::fs::create_dir(&folder).unwrap();
        let config = folder.join("c.toml");
        std::fs::write(
            &config,
            "[[endpoints]]\nid = \"a\"\nurl = \"https://127.0.0.1:1/x\"\nsecrets = [\"s\"]\nca_file = \"certs/ca.pem\"\n",
        )
        .unwrap();
        let mut a = args();
        a.config = Some(config);
        // Not there: the error names the path resolved against the config file's folder.
        let missing = RunConfig::from_args(&a).unwrap_err();
        assert_eq!(missing.setting, "endpoints[0].ca_file");
        let expected = folder.join("certs/ca.pem");
        assert!(
            missing
                .to_string()
                .contains(&expected.display().to_string()),
            "{missing}"
        );
        // There, and the process started elsewhere: it is read.
        std::fs::create_dir(folder.join("certs")).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        std::fs::write(&expected, params.self_signed(&key).unwrap().pem()).unwrap();
        let c = RunConfig::from_args(&a).unwrap();
        assert!(c.endpoints[1].trusted_ca.is_some());
    }

    #[test]
    fn config_file_adds_endpoints() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "max_in_flight = 3\n[[endpoints]]\nid = \"audit\"\nurl = \"http://127.0.0.1:1/x\"\nformat = \"standard-webhooks\"\nsecrets = [\"new\", \"old\"]\nevents = [\"kill\"]\n[retry]\nmax_age = \"1h\"\n",
        )
        .unwrap();
        let mut a = args();
        a.config = Some(path.clone());
        let c = RunConfig::from_args(&a).unwrap();
        assert_eq!(c.endpoints.len(), 2);
        assert_eq!(c.endpoints[1].secrets.all().len(), 2);
        assert_eq!(c.max_in_flight, 3);
        assert_eq!(c.retry.max_age, Duration::from_secs(3600));
        std::fs::write(
            &path,
            "[[endpoints]]\nid = \"a\"\nurl = \"nope\"\nsecrets = [\"s\"]\n",
        )
        .unwrap();
        assert_eq!(
            RunConfig::from_args(&a).unwrap_err().setting,
            "endpoints[0].url"
        );
    }
}
