//! Connect-time protection for user-registered webhooks: the client's DNS resolver refuses a
//! name that resolves to an address inside the cluster (DNS may have changed since the URL was
//! registered), and literal addresses are checked before the request.

use crate::util::destination::DestinationPolicy;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::SocketAddr;

/// Resolves with the system resolver, then refuses the name if any address is internal.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: DestinationPolicy,
}

impl GuardedResolver {
    /// A resolver enforcing `policy`.
    pub fn new(policy: DestinationPolicy) -> Self {
        Self { policy }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for addr in &addrs {
                policy.check(&host, addr.ip())?;
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    async fn resolve(resolver: &GuardedResolver, name: &str) -> Result<Vec<SocketAddr>, String> {
        resolver
            .resolve(Name::from_str(name).unwrap())
            .await
            .map(|addrs| addrs.collect())
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn a_name_resolving_inside_the_cluster_is_refused_unless_allowed() {
        let strict = GuardedResolver::new(DestinationPolicy::new(vec![]));
        let refused = resolve(&strict, "localhost").await.unwrap_err();
        assert!(
            refused.contains("may not reach inside the cluster"),
            "{refused}"
        );
        let allowing = GuardedResolver::new(DestinationPolicy::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]));
        let addrs = resolve(&allowing, "localhost").await.unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
