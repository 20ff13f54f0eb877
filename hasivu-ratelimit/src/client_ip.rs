//! Who the client is: the socket peer, or the address a trusted proxy
//! forwarded. Pure parsing: CIDRs, `Forwarded` and `X-Forwarded-For`.

// The header parsers serve the tower layer's key extraction.
#![cfg_attr(not(feature = "tower"), allow(dead_code))]

use std::net::{IpAddr, Ipv6Addr};

/// An IP network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`, or a
/// single address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// A CIDR that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {0:?}: expected an address with an optional /prefix")]
pub struct CidrError(String);

impl Cidr {
    /// Parses `addr/prefix` or a bare address.
    ///
    /// # Errors
    ///
    /// [`CidrError`] for anything else, or a prefix longer than the address.
    pub fn parse(text: &str) -> Result<Self, CidrError> {
        let error = || CidrError(text.to_owned());
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| error())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| error())?,
            None => max,
        };
        if prefix > max {
            return Err(error());
        }
        Ok(Self { addr, prefix })
    }

    /// Whether `ip` lies in the network (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u128::from(u32::from(net)), 32, self.prefix)
                    == masked(u128::from(u32::from(ip)), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), 128, self.prefix)
                    == masked(u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

fn masked(bits: u128, width: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let shift = u32::from(width - prefix);
    (bits >> shift) << shift
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The proxies whose forwarding headers are believed. Empty by default:
/// the client is the socket peer.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// No trusted proxy.
    pub fn none() -> Self {
        Self::default()
    }

    /// Trusts these networks.
    ///
    /// # Errors
    ///
    /// [`CidrError`] for the first entry that does not parse.
    pub fn new<I, S>(cidrs: I) -> Result<Self, CidrError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        cidrs
            .into_iter()
            .map(|c| Cidr::parse(c.as_ref()))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client address: starting from the socket peer, and only while
    /// the hop at hand is a trusted proxy, the next address to the left in
    /// `forwarded_for` (the `X-Forwarded-For` or `Forwarded` chain, oldest
    /// first). An unparsable entry ends the walk at the last good hop.
    ///
    /// ```
    /// use hasivu_ratelimit::TrustedProxies;
    ///
    /// let proxies = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
    /// let peer = "10.0.0.2".parse().unwrap();
    /// // "client, attacker-chosen, proxy": read right to left, stop at the
    /// // first address that is not a trusted proxy.
    /// let chain = ["198.51.100.1", "203.0.113.9", "10.0.0.1"].map(|a| a.parse().unwrap());
    /// assert_eq!(proxies.client(peer, &chain).to_string(), "203.0.113.9");
    /// // From an untrusted peer, the header changes nothing.
    /// assert_eq!(proxies.client("192.0.2.4".parse().unwrap(), &chain).to_string(), "192.0.2.4");
    /// ```
    pub fn client(&self, peer: IpAddr, forwarded_for: &[IpAddr]) -> IpAddr {
        let mut client = canonical(peer);
        for hop in forwarded_for.iter().rev() {
            if !self.contains(client) {
                break;
            }
            client = canonical(*hop);
        }
        client
    }
}

/// The addresses in `X-Forwarded-For` header values, oldest first; `None`
/// when an entry is not an address (the chain cannot be trusted past it).
pub(crate) fn parse_x_forwarded_for<'a>(
    values: impl Iterator<Item = &'a str>,
) -> Vec<Option<IpAddr>> {
    values
        .flat_map(|v| v.split(','))
        .map(|entry| parse_node(entry.trim()))
        .collect()
}

/// The `for=` addresses in `Forwarded` header values (RFC 7239), oldest
/// first; `None` for obfuscated or unknown nodes.
pub(crate) fn parse_forwarded<'a>(values: impl Iterator<Item = &'a str>) -> Vec<Option<IpAddr>> {
    values
        .flat_map(|v| v.split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (name, value) = pair.trim().split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| parse_node(value.trim().trim_matches('"')))
            })
        })
        .collect()
}

/// An address, with an optional port (`1.2.3.4:80`, `[2001:db8::1]:443`).
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (host, port) = node.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// The rate-limit key of an address: IPv4 as it is, IPv6 by its /64 (one
/// subscriber usually holds a whole /64).
pub fn ip_key(ip: IpAddr) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{}/64", Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs() {
        let net = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(
            Cidr::parse("2001:db8::/32")
                .unwrap()
                .contains(ip("2001:db8:1::5"))
        );
        assert!(
            !Cidr::parse("2001:db8::/32")
                .unwrap()
                .contains(ip("10.0.0.1"))
        );
        assert!(Cidr::parse("192.0.2.7").unwrap().contains(ip("192.0.2.7")));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", "::/129", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn header_parsing() {
        assert_eq!(
            parse_x_forwarded_for(["203.0.113.9, 10.0.0.1", "[2001:db8::1]:443"].into_iter()),
            vec![
                Some(ip("203.0.113.9")),
                Some(ip("10.0.0.1")),
                Some(ip("2001:db8::1"))
            ]
        );
        assert_eq!(
            parse_x_forwarded_for(["1.2.3.4:8080, unknown"].into_iter()),
            vec![Some(ip("1.2.3.4")), None]
        );
        assert_eq!(
            parse_forwarded(
                [r#"for=192.0.2.60;proto=http;by=203.0.113.43, for="[2001:db8:cafe::17]:4711""#]
                    .into_iter()
            ),
            vec![Some(ip("192.0.2.60")), Some(ip("2001:db8:cafe::17"))]
        );
        assert_eq!(parse_forwarded(["for=_hidden"].into_iter()), vec![None]);
    }

    #[test]
    fn walking_stops_at_the_first_untrusted_hop() {
        let proxies = TrustedProxies::new(["10.0.0.0/8", "192.168.0.0/16"]).unwrap();
        let chain = [ip("1.1.1.1"), ip("192.168.1.1"), ip("10.0.0.1")];
        assert_eq!(proxies.client(ip("10.9.9.9"), &chain), ip("1.1.1.1"));
        assert_eq!(
            TrustedProxies::none().client(ip("10.9.9.9"), &chain),
            ip("10.9.9.9")
        );
        // Every hop trusted: the leftmost.
        let all = [ip("10.0.0.5"), ip("10.0.0.1")];
        assert_eq!(proxies.client(ip("10.9.9.9"), &all), ip("10.0.0.5"));
    }

    #[test]
    fn ipv6_is_grouped_by_64() {
        assert_eq!(ip_key(ip("2001:db8:1:2:aaaa::1")), "2001:db8:1:2::/64");
        assert_eq!(
            ip_key(ip("2001:db8:1:2:aaaa::1")),
            ip_key(ip("2001:db8:1:2:ffff::9"))
        );
        assert_eq!(ip_key(ip("::ffff:192.0.2.1")), "192.0.2.1");
    }

    proptest::proptest! {
        #[test]
        fn an_untrusted_peer_is_always_the_client(
            a in proptest::prelude::any::<[u8; 4]>(),
            chain in proptest::collection::vec(proptest::prelude::any::<[u8; 4]>(), 0..5),
        ) {
            let proxies = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
            let peer = IpAddr::from([11, a[1], a[2], a[3]]);
            let chain: Vec<IpAddr> = chain.into_iter().map(IpAddr::from).collect();
            proptest::prop_assert_eq!(proxies.client(peer, &chain), peer);
        }
    }
}
