//! The client's address when the server runs behind proxies (`server.trusted_proxies`).
//!
//! Rate limits and login throttling key on the client address. Behind a load balancer that
//! speaks HTTP, the TCP peer is the balancer: every client would share one limit, and one
//! client could use up signup and login for everyone. A peer listed as trusted may say who
//! the client is in `X-Forwarded-For`; the entries are read from the right (the nearest hop
//! first), skipping trusted proxies, and the first address that is not one is the client.
//! Anything a client wrote further left is ignored, so it cannot choose its own key. A peer
//! that is not trusted is the client, whatever it sends.

use axum::http::HeaderMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// An address range: `10.0.0.0/8`, `fd00::/8`, or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or range"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix must be 0 to {max}"))?,
            None => max,
        };
        // `::ffff:10.0.0.0/104` is `10.0.0.0/8`: addresses are compared in that form.
        if let IpAddr::V6(v6) = network
            && let Some(v4) = v6.to_ipv4_mapped()
            && prefix >= 96
        {
            return Ok(Self {
                network: IpAddr::V4(v4),
                prefix: prefix - 96,
            });
        }
        Ok(Self { network, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                net.to_bits() & mask == ip.to_bits() & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                net.to_bits() & mask == ip.to_bits() & mask
            }
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address (a dual-stack listener's view of an IPv4 peer) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Parses `server.trusted_proxies`; an entry that is not an address or range is an error.
pub fn parse_all(entries: &[String]) -> Result<Vec<Cidr>, String> {
    entries.iter().map(|e| e.parse()).collect()
}

/// The client behind `peer`: `peer` itself unless it is a trusted proxy, else the nearest
/// address in `X-Forwarded-For` that is not a trusted proxy (keeping the peer's port). An
/// entry that is not an address ends the walk at the last trusted hop: it cannot be trusted
/// to say more.
pub fn client_addr(peer: SocketAddr, headers: &HeaderMap, trusted: &[Cidr]) -> SocketAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if trusted.is_empty() || !is_trusted(peer.ip()) {
        return peer;
    }
    // Several headers count as one list, in order.
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer.ip();
    for entry in entries.iter().rev() {
        // Some balancers write the client's port too (`1.2.3.4:5678`, `[2001:db8::1]:443`).
        let parsed = entry
            .parse::<IpAddr>()
            .or_else(|_| entry.parse::<SocketAddr>().map(|a| a.ip()));
        let Ok(ip) = parsed else {
            break;
        };
        client = canonical(ip);
        if !is_trusted(client) {
            break;
        }
    }
    SocketAddr::new(client, peer.port())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append("x-forwarded-for", v.parse().unwrap());
        }
        map
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 4321)
    }

    #[test]
    fn ranges_parse_and_match() {
        let lan: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(lan.contains("10.200.3.4".parse().unwrap()));
        assert!(lan.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!lan.contains("11.0.0.1".parse().unwrap()));
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        for bad in ["10.0.0.0/33", "example.com", "10.0.0.0/x", "::/129", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_a_trusted_peer_may_name_the_client_and_only_from_the_right() {
        let trusted = parse_all(&["10.0.0.0/8".into()]).unwrap();
        // Not a proxy: the peer is the client, whatever it claims.
        let direct = client_addr(peer("203.0.113.5"), &headers(&["198.51.100.1"]), &trusted);
        assert_eq!(direct, peer("203.0.113.5"));
        // Behind two of our proxies; the client's own claim (leftmost) is ignored.
        let forwarded = client_addr(
            peer("10.0.0.2"),
            &headers(&["6.6.6.6, 198.51.100.1", "10.0.0.9"]),
            &trusted,
        );
        assert_eq!(
            forwarded,
            SocketAddr::new("198.51.100.1".parse().unwrap(), 4321)
        );
        // Entries with a port count by their address.
        for with_port in ["198.51.100.1:5678", "[2001:db8::1]:443"] {
            let ip: IpAddr = with_port.parse::<SocketAddr>().unwrap().ip();
            assert_eq!(
                client_addr(peer("10.0.0.2"), &headers(&[with_port]), &trusted).ip(),
                ip
            );
        }
        let mapped: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
        assert!(mapped.contains("10.9.8.7".parse().unwrap()));
        // Garbage ends the walk at the last trusted hop.
        let garbage = client_addr(peer("10.0.0.2"), &headers(&["1.2.3.4, junk"]), &trusted);
        assert_eq!(garbage, peer("10.0.0.2"));
        // No header: the proxy itself.
        assert_eq!(
            client_addr(peer("10.0.0.2"), &HeaderMap::new(), &trusted),
            peer("10.0.0.2")
        );
        // Nothing trusted (the default): the header means nothing.
        assert_eq!(
            client_addr(peer("10.0.0.2"), &headers(&["198.51.100.1"]), &[]),
            peer("10.0.0.2")
        );
    }
}
