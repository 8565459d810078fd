//! The address a request comes from, for per-client limits: the peer, or — when the peer is a
//! proxy the operator trusts (E2B's Traefik in front of the events API) — the client that proxy
//! names in `X-Forwarded-For`. Behind a proxy every peer address is the proxy's, so without this
//! one client's refused keys would throttle every team.

use ipnet::IpNet;
use std::net::IpAddr;

/// Proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Proxies in `ranges`; none: the peer is always the client.
    pub fn new(ranges: Vec<IpNet>) -> Self {
        Self(ranges)
    }

    /// Whether `address` is one of these proxies.
    pub fn trusts(&self, address: IpAddr) -> bool {
        self.0.iter().any(|range| range.contains(&address))
    }

    /// The client of a request from `peer` with these `X-Forwarded-For` values: walking the
    /// list from the right (the entry the nearest proxy appended), the first address that is
    /// not a trusted proxy. A peer that is not trusted is the client, whatever it sends; an
    /// entry that is not an address ends the walk at the last trusted hop, as it cannot be
    /// told apart from a forgery.
    pub fn client<'a>(&self, peer: IpAddr, forwarded_for: impl Iterator<Item = &'a str>) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let hops: Vec<&str> = forwarded_for.flat_map(|value| value.split(',')).collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop.trim().parse::<IpAddr>() {
                Ok(address) => {
                    client = address;
                    if !self.trusts(address) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(ranges: &[&str]) -> TrustedProxies {
        TrustedProxies::new(ranges.iter().map(|r| r.parse().unwrap()).collect())
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn only_a_trusted_peer_names_the_client() {
        let traefik = proxies(&["10.0.0.0/8"]);
        // Through the proxy: the client it appended.
        assert_eq!(
            traefik.client(ip("10.1.2.3"), ["203.0.113.7"].into_iter()),
            ip("203.0.113.7")
        );
        // Whatever a client writes itself stands left of what the proxy appended.
        assert_eq!(
            traefik.client(ip("10.1.2.3"), ["198.51.100.1, 203.0.113.7"].into_iter()),
            ip("203.0.113.7")
        );
        // Through two trusted hops, split over two headers.
        assert_eq!(
            traefik.client(ip("10.1.2.3"), ["203.0.113.7", "10.9.9.9"].into_iter()),
            ip("203.0.113.7")
        );
        // Straight to the port: a header proves nothing.
        assert_eq!(
            traefik.client(ip("203.0.113.9"), ["198.51.100.1"].into_iter()),
            ip("203.0.113.9")
        );
        // No header, or garbage: the last trusted hop.
        assert_eq!(
            traefik.client(ip("10.1.2.3"), std::iter::empty()),
            ip("10.1.2.3")
        );
        assert_eq!(
            traefik.client(ip("10.1.2.3"), ["unknown, 10.4.4.4"].into_iter()),
            ip("10.4.4.4")
        );
        // Trusting nothing: always the peer.
        assert_eq!(
            TrustedProxies::default().client(ip("10.1.2.3"), ["203.0.113.7"].into_iter()),
            ip("10.1.2.3")
        );
    }
}
