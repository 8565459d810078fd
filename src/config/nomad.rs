//! Nomad: the API address and credentials, and which allocations are orchestrators and how often
//! to reconcile with them — made into discovery's and the reconciler's settings here.

use super::{ConfigError, NomadConfig, RunArgs, parse_http_url};
use crate::reconcile::ReconcileSettings;
use crate::source::nomad::{DiscoveryMode, DiscoverySettings, OrchestratorSelector};
use crate::util::duration::parse_duration;
use crate::util::redact::redact_url_text;
use crate::util::secret::Secret;
use std::time::Duration;
use url::Url;
use uuid::Uuid;

/// Which Nomad allocations are orchestrators, and how often to reconcile with them.
#[derive(Debug, Clone)]
pub struct ReconcileConfig {
    /// Services or allocations.
    pub discovery: DiscoveryMode,
    /// Name of the orchestrators' Nomad service.
    pub service_name: String,
    /// Task group of the orchestrator job.
    pub task_group: String,
    /// Start of the orchestrator job id.
    pub job_prefix: String,
    /// Label of the gRPC port.
    pub port_label: String,
    /// Port when none is labelled.
    pub default_port: u16,
    /// `List` timeout.
    pub rpc_timeout: Duration,
    /// Time between runs.
    pub interval: Duration,
    /// How long a difference must persist.
    pub grace: Duration,
}

impl ReconcileConfig {
    /// What discovery is built from: how it finds the orchestrators (its timing stays at the
    /// defaults, made for a real Nomad).
    pub fn discovery_settings(&self) -> DiscoverySettings {
        DiscoverySettings {
            mode: self.discovery,
            selector: OrchestratorSelector {
                service_name: self.service_name.clone(),
                task_group: self.task_group.clone(),
                job_prefix: self.job_prefix.clone(),
                port_label: self.port_label.clone(),
                default_port: self.default_port,
            },
            ..DiscoverySettings::default()
        }
    }

    /// What the reconciler is built from, for the sandboxes of `teams` (every team when empty);
    /// `service` adds the lease and, with the Redis source, the stream's progress.
    pub fn reconcile_settings(&self, teams: Vec<Uuid>) -> ReconcileSettings {
        ReconcileSettings {
            interval: self.interval,
            grace: self.grace,
            rpc_timeout: self.rpc_timeout,
            teams,
            ..ReconcileSettings::default()
        }
    }
}

/// The Nomad API settings of `args`, if `NOMAD_ADDR` is set.
pub(super) fn nomad_config(args: &RunArgs) -> Result<Option<NomadConfig>, ConfigError> {
    let Some(addr) = &args.nomad_addr else {
        return Ok(None);
    };
    Ok(Some(NomadConfig {
        addr: parse_nomad_addr(addr)
            .map_err(|e| ConfigError::new("NOMAD_ADDR (--nomad-addr)", e))?,
        token: args
            .nomad_token
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(Secret::new),
        namespace: args.nomad_namespace.clone(),
        cacert: args.nomad_cacert.clone(),
        client_cert: args.nomad_client_cert.clone(),
        client_key: args.nomad_client_key.clone(),
    }))
}

pub(super) fn reconcile_config(args: &RunArgs) -> Result<ReconcileConfig, ConfigError> {
    let duration =
        |setting: &str, text: &str| parse_duration(text).map_err(|e| ConfigError::new(setting, e));
    let interval = duration(
        "RECONCILE_INTERVAL (--reconcile-interval)",
        &args.reconcile_interval,
    )?;
    if interval.is_zero() {
        return Err(ConfigError::new(
            "RECONCILE_INTERVAL (--reconcile-interval)",
            "must be more than 0s",
        ));
    }
    let service_name = args.orchestrator_service.trim();
    if !valid_service_name(service_name) {
        return Err(ConfigError::new(
            "ORCHESTRATOR_SERVICE (--orchestrator-service)",
            format!(
                "{service_name:?} is not a Nomad service name (1-63 letters, digits or dashes, no leading or trailing dash)"
            ),
        ));
    }
    Ok(ReconcileConfig {
        discovery: args
            .nomad_discovery
            .trim()
            .parse()
            .map_err(|e| ConfigError::new("NOMAD_DISCOVERY (--nomad-discovery)", e))?,
        service_name: service_name.to_owned(),
        task_group: args.orchestrator_task_group.clone(),
        job_prefix: args.orchestrator_job_prefix.clone(),
        port_label: args.orchestrator_port_label.clone(),
        default_port: args.orchestrator_port,
        rpc_timeout: duration(
            "ORCHESTRATOR_TIMEOUT (--orchestrator-timeout)",
            &args.orchestrator_timeout,
        )?,
        interval,
        grace: duration("RECONCILE_GRACE (--reconcile-grace)", &args.reconcile_grace)?,
    })
}

/// Nomad's rule for service names (RFC 1123 labels, ≤ 63 characters, no leading or trailing
/// dash), checked here so a typo fails at startup rather than as an empty catalog.
fn valid_service_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Parses `NOMAD_ADDR`: `http(s)://host[:port]`, or `unix:///absolute/path/api.sock` (the
/// Task API socket inside a Nomad task, `$NOMAD_SECRETS_DIR/api.sock`).
pub fn parse_nomad_addr(raw: &str) -> Result<Url, String> {
    if !raw.trim().starts_with("unix:") {
        return parse_http_url(raw);
    }
    match Url::parse(raw.trim()) {
        Ok(url) if url.host_str().unwrap_or("").is_empty() && url.path().len() > 1 => Ok(url),
        _ => Err(format!(
            "{:?} is not a socket path; expected unix:///absolute/path/api.sock",
            redact_url_text(raw)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunConfig;
    use crate::config::tests::args;

    #[test]
    fn nomad_addr_is_http_or_the_task_api_socket() {
        let socket = parse_nomad_addr("unix:///alloc/secrets/api.sock").unwrap();
        assert_eq!(
            (socket.scheme(), socket.path()),
            ("unix", "/alloc/secrets/api.sock")
        );
        assert!(parse_nomad_addr("https://nomad.service.consul:4646").is_ok());
        assert!(parse_nomad_addr("unix://relative.sock").is_err());
        assert!(parse_nomad_addr("unix:").is_err());
        assert!(parse_nomad_addr("ftp://nomad").is_err());
    }

    #[test]
    fn discovery_mode_and_service_name_are_checked() {
        let c = RunConfig::from_args(&args()).unwrap();
        assert_eq!(
            c.reconcile.discovery,
            crate::source::nomad::DiscoveryMode::Services
        );
        assert_eq!(c.reconcile.service_name, "orchestrator");
        let mut a = args();
        a.nomad_discovery = "events".into();
        let err = RunConfig::from_args(&a).unwrap_err();
        assert!(err.setting.starts_with("NOMAD_DISCOVERY"), "{err:?}");
        for bad in [
            "-orchestrator",
            "orchestrator-",
            "orch_estrator",
            "",
            &"a".repeat(64),
        ] {
            let mut a = args();
            a.orchestrator_service = bad.into();
            let err = RunConfig::from_args(&a).unwrap_err();
            assert!(err.setting.starts_with("ORCHESTRATOR_SERVICE"), "{bad:?}");
        }
    }
}
