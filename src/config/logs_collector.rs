//! `LOGS_COLLECTOR_ADDRESS`: also ship the service's log lines to E2B's logs collector, as E2B's
//! own services read that variable (e2b-dev/infra `packages/shared/pkg/env/env.go`; the iac sets
//! `http://localhost:30006` for every service, e.g. `iac/provider-gcp/dashboard-api.tf`).

use super::{ConfigError, parse_http_url};
use crate::server::logs::{DEFAULT_QUEUE_LINES, LogShipping};

const ADDRESS: &str = "LOGS_COLLECTOR_ADDRESS (--logs-collector-address)";
const QUEUE: &str = "LOGS_COLLECTOR_QUEUE (--logs-collector-queue)";

/// Flags of log shipping; every one also reads the environment variable in brackets.
#[derive(Debug, Clone, clap::Args, Default)]
pub struct LogsCollectorArgs {
    /// Also POST the log lines, as JSON, to E2B's logs collector (Vector; E2B's: http://localhost:30006).
    #[arg(
        long,
        env = "LOGS_COLLECTOR_ADDRESS",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub logs_collector_address: Option<String>,
    /// Log lines kept while the collector is slow or down; past that they are dropped and counted.
    #[arg(long, env = "LOGS_COLLECTOR_QUEUE", value_name = "LINES")]
    pub logs_collector_queue: Option<String>,
}

/// The log shipping settings, when `LOGS_COLLECTOR_ADDRESS` is set.
pub fn log_shipping(args: &LogsCollectorArgs) -> Result<Option<LogShipping>, ConfigError> {
    let queue_lines = match args.logs_collector_queue.as_deref().map(str::trim) {
        None | Some("") => DEFAULT_QUEUE_LINES,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=1_000_000).contains(&n) => n,
            _ => {
                return Err(ConfigError::new(
                    QUEUE,
                    format!("{raw:?} is not a number of lines from 1 to 1000000"),
                ));
            }
        },
    };
    match args.logs_collector_address.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(raw) => Ok(Some(LogShipping {
            address: parse_http_url(raw).map_err(|e| ConfigError::new(ADDRESS, e))?,
            queue_lines,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(address: Option<&str>, queue: Option<&str>) -> LogsCollectorArgs {
        LogsCollectorArgs {
            logs_collector_address: address.map(Into::into),
            logs_collector_queue: queue.map(Into::into),
        }
    }

    #[test]
    fn unset_is_off_and_set_is_the_url_as_given() {
        assert_eq!(log_shipping(&args(None, None)), Ok(None));
        assert_eq!(log_shipping(&args(Some(" "), None)), Ok(None));
        let on = log_shipping(&args(Some("http://localhost:30006"), None))
            .unwrap()
            .unwrap();
        assert_eq!(on.address.as_str(), "http://localhost:30006/");
        assert_eq!(on.queue_lines, DEFAULT_QUEUE_LINES);
        let on = log_shipping(&args(Some("http://localhost:30006"), Some("16")))
            .unwrap()
            .unwrap();
        assert_eq!(on.queue_lines, 16);
    }

    #[test]
    fn a_bad_value_names_the_setting() {
        for bad in ["localhost:30006", "udp://localhost:30006", "http://"] {
            let e = log_shipping(&args(Some(bad), None)).unwrap_err();
            assert_eq!(e.setting, ADDRESS, "{bad}");
        }
        for bad in ["0", "-1", "many"] {
            let e = log_shipping(&args(Some("http://localhost:30006"), Some(bad))).unwrap_err();
            assert_eq!(e.setting, QUEUE, "{bad}");
        }
    }
}
