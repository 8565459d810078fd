//! Which addresses a user-supplied webhook URL may reach: nothing inside the cluster (loopback,
//! private, link-local, unique-local, cloud metadata, unspecified, and the like) unless the
//! operator allows a range. Operator-configured endpoints do not go through this.

use ipnet::IpNet;
use std::net::IpAddr;
use url::{Host, Url};

/// Ranges a user's webhook may not reach, with what they are (for the refusal message).
const INTERNAL: &[(&str, &str)] = &[
    ("0.0.0.0/8", "an unspecified (this-network) address"),
    ("127.0.0.0/8", "a loopback address"),
    ("10.0.0.0/8", "a private address"),
    ("172.16.0.0/12", "a private address"),
    ("192.168.0.0/16", "a private address"),
    ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
    ("169.254.0.0/16", "a link-local or cloud metadata address"),
    ("192.0.0.0/24", "an IETF protocol address"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("224.0.0.0/4", "a multicast address"),
    ("240.0.0.0/4", "a reserved or broadcast address"),
    // Azure's wire server (metadata and DNS) is a public address.
    ("168.63.129.16/32", "a cloud metadata address"),
    ("::/128", "an unspecified address"),
    ("::1/128", "a loopback address"),
    ("fc00::/7", "a unique-local address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address"),
    ("ff00::/8", "a multicast address"),
];

/// Why a destination is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    /// The URL names no host.
    #[error("has no host")]
    NoHost,
    /// The host is, or resolves to, an address inside the cluster.
    #[error("{host} is {what} ({addr}); webhooks may not reach inside the cluster")]
    Internal {
        /// The host as written.
        host: String,
        /// The refused address.
        addr: IpAddr,
        /// What kind of address it is.
        what: &'static str,
    },
}

/// The internal ranges, less what the operator allows (`API_ALLOW_PRIVATE_CIDRS`).
#[derive(Debug, Clone)]
pub struct DestinationPolicy {
    internal: Vec<(IpNet, &'static str)>,
    allowed: Vec<IpNet>,
}

impl DestinationPolicy {
    /// Refuses the internal ranges except `allowed`.
    pub fn new(allowed: Vec<IpNet>) -> Self {
        let internal = INTERNAL
            .iter()
            .map(|(net, what)| (net.parse().expect("the built-in ranges parse"), *what))
            .collect();
        Self { internal, allowed }
    }

    /// `None` when `addr` may be reached, else what kind of internal address it is.
    pub fn refusal(&self, addr: IpAddr) -> Option<&'static str> {
        // An IPv4 address written as IPv6 (::ffff:a.b.c.d) is judged as the IPv4 address.
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        if self.allowed.iter().any(|net| net.contains(&addr)) {
            return None;
        }
        self.internal
            .iter()
            .find(|(net, _)| net.contains(&addr))
            .map(|(_, what)| *what)
    }

    /// Checks `addr`, the address `host` resolved to.
    pub fn check(&self, host: &str, addr: IpAddr) -> Result<(), DestinationError> {
        match self.refusal(addr) {
            None => Ok(()),
            Some(what) => Err(DestinationError::Internal {
                host: host.to_owned(),
                addr,
                what,
            }),
        }
    }

    /// Checks the URL's host: a literal address as it is, a name by every address it resolves
    /// to now. A name that does not resolve passes (it may later); the connect-time check
    /// judges what it resolves to then.
    pub async fn check_url(&self, url: &Url) -> Result<(), DestinationError> {
        let port = url.port_or_known_default().unwrap_or(443);
        match url.host().ok_or(DestinationError::NoHost)? {
            Host::Ipv4(v4) => self.check(&v4.to_string(), IpAddr::V4(v4)),
            Host::Ipv6(v6) => self.check(&v6.to_string(), IpAddr::V6(v6)),
            Host::Domain(name) => {
                let Ok(addrs) = tokio::net::lookup_host((name, port)).await else {
                    return Ok(());
                };
                for addr in addrs {
                    self.check(name, addr.ip())?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(policy: &DestinationPolicy, addr: &str) -> bool {
        policy.refusal(addr.parse().unwrap()).is_some()
    }

    #[test]
    fn internal_addresses_are_refused_and_public_ones_pass() {
        let policy = DestinationPolicy::new(vec![]);
        for addr in [
            "127.0.0.1",
            "127.8.9.10",
            "10.0.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.100.100.200",
            "168.63.129.16",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
        ] {
            assert!(refused(&policy, addr), "{addr} should be refused");
        }
        for addr in ["1.1.1.1", "172.32.0.1", "8.8.8.8", "2606:4700:4700::1111"] {
            assert!(!refused(&policy, addr), "{addr} should pass");
        }
    }

    #[test]
    fn the_operator_may_allow_a_range() {
        let policy = DestinationPolicy::new(vec!["10.20.0.0/16".parse().unwrap()]);
        assert!(!refused(&policy, "10.20.3.4"));
        assert!(refused(&policy, "10.21.3.4"));
        assert!(refused(&policy, "127.0.0.1"));
    }

    #[tokio::test]
    async fn urls_are_judged_by_literal_address_or_resolved_name() {
        let policy = DestinationPolicy::new(vec![]);
        let check = |u: &str| {
            let url = Url::parse(u).unwrap();
            let policy = policy.clone();
            async move { policy.check_url(&url).await }
        };
        assert!(matches!(
            check("http://127.0.0.1:8080/hook").await,
            Err(DestinationError::Internal {
                what: "a loopback address",
                ..
            })
        ));
        assert!(check("http://[::1]/").await.is_err());
        assert!(check("http://10.0.0.1/").await.is_err());
        // `localhost` resolves (from /etc/hosts) to loopback.
        assert!(check("http://localhost:9/").await.is_err());
        assert!(check("https://203.0.113.7/").await.is_ok());
    }
}
