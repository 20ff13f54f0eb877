//! Who the client is: the socket peer, or the address a trusted proxy
//! forwarded. Pure parsing: CIDRs, `Forwarded`, `X-Forwarded-For` and
//! single-address headers, read right to left, lazily and for at most
//! [`TrustedProxies::MAX_HOPS`] hops.

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
        // `::ffff:10.0.0.0/104` is `10.0.0.0/8`: kept in IPv4 form, as
        // addresses are compared.
        if let IpAddr::V6(v6) = addr
            && let Some(v4) = v6.to_ipv4_mapped()
            && prefix >= 96
        {
            return Ok(Self {
                addr: IpAddr::V4(v4),
                prefix: prefix - 96,
            });
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
            (IpAddr::V6(net), ip) => {
                // An IPv4 address lies in an IPv6 network as its mapped
                // form (`::/0` holds it, `2001:db8::/32` does not).
                let ip = match ip {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                    IpAddr::V6(v6) => v6,
                };
                masked(u128::from(net), 128, self.prefix)
                    == masked(u128::from(ip), 128, self.prefix)
            }
            (IpAddr::V4(_), IpAddr::V6(_)) => false,
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
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
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
    /// The most forwarded hops read, right to left, from one request.
    ///
    /// A chain of more trusted proxies than this ends at the 32nd hop from
    /// the right: that address (a trusted proxy's) is the client, never one
    /// further left. Real deployments have one to four proxies; the bound
    /// keeps the work and memory per request constant whatever a client
    /// sends.
    pub const MAX_HOPS: usize = 32;

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
    /// `forwarded_for` (the forwarded chain, oldest first). At most
    /// [`MAX_HOPS`](Self::MAX_HOPS) hops are read.
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
        self.walk(peer, forwarded_for.iter().rev().map(|hop| Some(*hop)))
    }

    /// [`client`](Self::client) over hops given right to left, `None` for
    /// an unreadable one (the walk ends at the last good hop). Hops are
    /// pulled only while the current one is trusted, at most `MAX_HOPS`.
    pub(crate) fn walk(
        &self,
        peer: IpAddr,
        right_to_left: impl Iterator<Item = Option<IpAddr>>,
    ) -> IpAddr {
        let mut client = canonical(peer);
        let mut hops = right_to_left.take(Self::MAX_HOPS);
        while self.contains(client) {
            match hops.next() {
                Some(Some(hop)) => client = canonical(hop),
                _ => break,
            }
        }
        client
    }
}

/// The hops of `X-Forwarded-For`, right to left, from its header values
/// given last first; `None` for an entry that is not an address (the chain
/// cannot be trusted past it). Lazy: a caller that stops early reads only
/// the bytes it needs.
pub(crate) fn x_forwarded_for_hops<'a>(
    last_first: impl Iterator<Item = &'a [u8]>,
) -> impl Iterator<Item = Option<IpAddr>> {
    last_first
        .flat_map(|value| value.rsplit(|b| *b == b','))
        .map(parse_node)
        .take(TrustedProxies::MAX_HOPS)
}

/// The `for=` addresses of `Forwarded` elements (RFC 7239), right to left,
/// from its header values given last first; `None` for an obfuscated or
/// unknown node, or an element without `for=` (a proxy that names no
/// client vouches for none to its left).
pub(crate) fn forwarded_hops<'a>(
    last_first: impl Iterator<Item = &'a [u8]>,
) -> impl Iterator<Item = Option<IpAddr>> {
    last_first
        .flat_map(|value| value.rsplit(|b| *b == b','))
        .map(|element| {
            element.split(|b| *b == b';').find_map(|pair| {
                let eq = pair.iter().position(|b| *b == b'=')?;
                let (name, value) = (pair[..eq].trim_ascii(), &pair[eq + 1..]);
                name.eq_ignore_ascii_case(b"for").then(|| {
                    let value = value.trim_ascii();
                    let unquoted = value
                        .strip_prefix(b"\"")
                        .and_then(|v| v.strip_suffix(b"\""))
                        .unwrap_or(value);
                    parse_node(unquoted)
                })
            })?
        })
        .take(TrustedProxies::MAX_HOPS)
}

/// The one hop of a header holding a single address (`X-Real-IP`,
/// `CF-Connecting-IP`): `None` unless there is exactly one value holding
/// one address, since a proxy that sets such a header replaces it.
pub(crate) fn single_hop<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Option<IpAddr> {
    match (values.next(), values.next()) {
        (Some(value), None) => parse_node(value),
        _ => None,
    }
}

/// An address, with an optional port (`1.2.3.4:80`, `[2001:db8::1]:443`),
/// surrounding spaces allowed.
fn parse_node(node: &[u8]) -> Option<IpAddr> {
    // The longest node is a bracketed IPv6 address with a port.
    const LONGEST: usize = "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535".len();
    let node = node.trim_ascii();
    if node.len() > LONGEST {
        return None;
    }
    let node = std::str::from_utf8(node).ok()?;
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = node.strip_prefix('[') {
        let (addr, port) = rest.split_once(']')?;
        if !(port.is_empty() || port.strip_prefix(':')?.parse::<u16>().is_ok()) {
            return None;
        }
        return addr.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
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
    fn ipv4_mapped_networks_contain_their_addresses_in_both_forms() {
        for (net, inside, outside) in [
            ("::ffff:10.0.0.0/104", "10.1.2.3", "11.0.0.1"),
            ("::ffff:10.0.0.1", "10.0.0.1", "10.0.0.2"),
            ("10.0.0.0/8", "::ffff:10.1.2.3", "::ffff:11.0.0.1"),
        ] {
            let cidr = Cidr::parse(net).unwrap();
            for form in [ip(inside), mapped(ip(inside))] {
                assert!(cidr.contains(form), "{net} contains {form}");
            }
            for form in [ip(outside), mapped(ip(outside))] {
                assert!(!cidr.contains(form), "{net} does not contain {form}");
            }
        }
        // A network wider than the mapped range still holds mapped
        // addresses, and IPv6 ones too.
        let wide = Cidr::parse("::/0").unwrap();
        assert!(wide.contains(ip("192.0.2.1")) && wide.contains(ip("2001:db8::1")));
        assert!(
            !Cidr::parse("2001:db8::/32")
                .unwrap()
                .contains(ip("192.0.2.1"))
        );
    }

    fn mapped(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
            v6 => v6,
        }
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

    /// Hops of header values given in arrival order, right to left.
    fn xff(values: &[&str]) -> Vec<Option<IpAddr>> {
        x_forwarded_for_hops(values.iter().rev().map(|v| v.as_bytes())).collect()
    }

    fn fwd(values: &[&str]) -> Vec<Option<IpAddr>> {
        forwarded_hops(values.iter().rev().map(|v| v.as_bytes())).collect()
    }

    #[test]
    fn header_parsing() {
        assert_eq!(
            xff(&["203.0.113.9, 10.0.0.1", "[2001:db8::1]:443"]),
            vec![
                Some(ip("2001:db8::1")),
                Some(ip("10.0.0.1")),
                Some(ip("203.0.113.9")),
            ]
        );
        assert_eq!(
            xff(&["1.2.3.4:8080, unknown"]),
            vec![None, Some(ip("1.2.3.4"))]
        );
        assert_eq!(
            xff(&["[2001:db8::1]junk, 1.2.3.4"])[1],
            None,
            "only a port may follow a bracketed address"
        );
        assert_eq!(
            fwd(&[r#"for=192.0.2.60;proto=http;by=203.0.113.43, for="[2001:db8:cafe::17]:4711""#]),
            vec![Some(ip("2001:db8:cafe::17")), Some(ip("192.0.2.60"))]
        );
        assert_eq!(
            fwd(&["For = 192.0.2.61 ", "proto=https"]),
            vec![None, Some(ip("192.0.2.61"))],
            "an element without for= is unreadable"
        );
        assert_eq!(fwd(&["for=_hidden"]), vec![None]);
        assert_eq!(
            single_hop(["192.0.2.1 ".as_bytes()].into_iter()),
            Some(ip("192.0.2.1"))
        );
        assert_eq!(single_hop(std::iter::empty()), None);
        assert_eq!(
            single_hop(["192.0.2.1", "192.0.2.2"].map(str::as_bytes).into_iter()),
            None
        );
        assert_eq!(
            single_hop(["192.0.2.1, 192.0.2.2".as_bytes()].into_iter()),
            None
        );
    }

    #[test]
    fn hop_lists_never_exceed_max_hops() {
        let max = TrustedProxies::MAX_HOPS;
        assert_eq!(max, 32);
        let commas = ",".repeat(100_000);
        assert_eq!(xff(&[&commas]).len(), max);
        assert_eq!(fwd(&[&commas]).len(), max);
        let trusted = vec!["10.0.0.1"; 10_000];
        assert_eq!(xff(&trusted).len(), max);
        let elements = vec!["for=10.0.0.1;proto=https"; 10_000];
        assert_eq!(fwd(&elements).len(), max);
        let one_line = vec!["10.0.0.1"; 10_000].join(",");
        assert_eq!(xff(&[&one_line]).len(), max);
        // The walk over all of them: the 32nd hop from the right.
        let proxies = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
        let chain: Vec<IpAddr> = std::iter::once(ip("198.51.100.1"))
            .chain((1..=40).map(|i| IpAddr::from([10, 0, 0, i])))
            .collect();
        assert_eq!(proxies.client(ip("10.0.0.200"), &chain), ip("10.0.0.9"));
        assert_eq!(
            proxies.client(ip("10.0.0.200"), &chain[chain.len() - 32..]),
            ip("10.0.0.9")
        );
        assert_eq!(
            proxies.client(ip("10.0.0.200"), &chain[chain.len() - 31..]),
            ip("10.0.0.10")
        );
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
        /// Whatever the bytes, reading them ends, within the bound.
        #[test]
        fn hostile_header_values_read_at_most_max_hops(
            values in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::sample::select(b"0123456789abcdef.:[]=;,\" forFOR_".to_vec()),
                    0..200,
                ),
                0..20,
            ),
        ) {
            let last_first = || values.iter().rev().map(Vec::as_slice);
            proptest::prop_assert!(x_forwarded_for_hops(last_first()).count() <= TrustedProxies::MAX_HOPS);
            proptest::prop_assert!(forwarded_hops(last_first()).count() <= TrustedProxies::MAX_HOPS);
            let _ = single_hop(last_first());
        }

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
