//! Address blocks written in the config (`10.0.0.0/8`, `192.168.1.7`, `fd00::/8`, `::1`),
//! used to decide which peers are trusted proxies.
//!
//! This module owns parsing a block and testing an address against it. It must
//! never decide what trust means (that is `proxy::headers`).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One address or CIDR block; a bare address is a block of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cidr(IpNet);

impl Cidr {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Self(net));
        }
        s.parse::<IpAddr>()
            .map(|ip| Self(IpNet::from(ip)))
            .map_err(|_| format!("`{s}` is neither an IP address nor a CIDR block like 10.0.0.0/8"))
    }

    /// Whether `ip` lies in the block. IPv4 peers seen on an IPv6 socket
    /// (`::ffff:10.0.0.1`) match IPv4 blocks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }

    /// The block with its host bits cleared, when they were not already:
    /// `10.0.0.1/8` is almost always a typo for `10.0.0.0/8` or `10.0.0.1/32`.
    pub(crate) fn canonical_if_different(&self) -> Option<IpNet> {
        (self.0.addr() != self.0.network()).then(|| self.0.trunc())
    }
}

impl std::fmt::Display for Cidr {
    /// A block of one address prints as the address, as it is usually written.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            self.0.addr().fmt(f)
        } else {
            self.0.fmt(f)
        }
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Cidr::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn blocks_and_single_addresses() {
        let net = Cidr::parse("10.0.0.0/8").expect("net");
        assert!(net.contains(ip("10.200.1.1")));
        assert!(!net.contains(ip("11.0.0.1")));
        let one = Cidr::parse("192.168.1.7").expect("one");
        assert_eq!(one.to_string(), "192.168.1.7");
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert!(one.contains(ip("192.168.1.7")));
        assert!(!one.contains(ip("192.168.1.8")));
        let v6 = Cidr::parse("fd00::/8").expect("v6");
        assert!(v6.contains(ip("fd12::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
    }

    #[test]
    fn mapped_ipv4_peers_match_ipv4_blocks() {
        let net = Cidr::parse("127.0.0.0/8").expect("net");
        assert!(net.contains(ip("::ffff:127.0.0.1")));
    }

    #[test]
    fn garbage_and_host_bits_are_reported() {
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("proxy.local").is_err());
        let sloppy = Cidr::parse("10.1.2.3/8").expect("parses");
        assert_eq!(
            sloppy.canonical_if_different().map(|n| n.to_string()),
            Some("10.0.0.0/8".into())
        );
        assert_eq!(
            Cidr::parse("10.0.0.0/8")
                .expect("ok")
                .canonical_if_different(),
            None
        );
    }
}
