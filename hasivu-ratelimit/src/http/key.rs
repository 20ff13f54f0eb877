//! Who a request counts against: the client IP, an authenticated user, an
//! API key, or a closure.

use std::{
    hash::Hasher,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use http::{HeaderName, HeaderValue, request::Parts};

use crate::client_ip::{
    TrustedProxies, canonical, forwarded_hops, ip_key, single_hop, x_forwarded_for_hops,
};

/// Picks the key a request counts against; `None` means the request is
/// not limited by this layer.
///
/// Closures `Fn(&http::request::Parts) -> Option<String>` are extractors.
pub trait KeyExtractor: Clone + Send + Sync + 'static {
    /// The key of the request.
    fn key(&self, parts: &Parts) -> Option<String>;
}

impl<F> KeyExtractor for F
where
    F: Fn(&Parts) -> Option<String> + Clone + Send + Sync + 'static,
{
    fn key(&self, parts: &Parts) -> Option<String> {
        self(parts)
    }
}

/// Who an authentication layer says the client is. Insert it into the
/// request's extensions before the rate-limit layer runs: [`UserOrIp`]
/// keys on the user, and the tier scales the quota.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateLimitIdentity {
    /// The user id.
    pub user: Option<String>,
    /// The user's tier (`free`, `premium`, `admin`…).
    pub tier: Option<String>,
}

/// The socket peer's address, for servers that do not insert axum's
/// `ConnectInfo`: insert it into the request's extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The client IP: the socket peer, or the address a trusted proxy
/// forwarded in the one header it sets ([`ForwardedHeader`], by default
/// `X-Forwarded-For`), read right to left and only past trusted hops, for
/// at most [`TrustedProxies::MAX_HOPS`] hops. IPv6 clients are keyed by
/// their /64.
///
/// The peer comes from the request's extensions: [`PeerAddr`], a bare
/// [`SocketAddr`], or (feature `axum`) axum's `ConnectInfo<SocketAddr>`.
/// Without any, the key is `unknown`, one shared bucket, and a warning is
/// logged once.
///
/// # Behind a proxy
///
/// Trust the proxy's addresses as the socket peer sees them, and name the
/// header it writes; any other forwarding header is the client's own and
/// is ignored. A header the proxy only appends to carries, left of the
/// proxy's entry, whatever the client sent: that is why the chain is read
/// from the right and only past trusted hops.
///
/// | in front of the service | trust | header |
/// | --- | --- | --- |
/// | nginx (`proxy_add_x_forwarded_for`) | nginx's address | [`XForwardedFor`](ForwardedHeader::XForwardedFor) (the default) |
/// | nginx (`proxy_set_header X-Real-IP $remote_addr`) | nginx's address | `Single(x-real-ip)` |
/// | AWS ALB (append mode, the default) | the balancer's subnets | [`XForwardedFor`](ForwardedHeader::XForwardedFor) |
/// | HAProxy (`option forwardfor`), Traefik | their addresses | [`XForwardedFor`](ForwardedHeader::XForwardedFor) |
/// | Envoy (`use_remote_address`) | Envoy's addresses | [`XForwardedFor`](ForwardedHeader::XForwardedFor) |
/// | Cloudflare | Cloudflare's published ranges | [`XForwardedFor`](ForwardedHeader::XForwardedFor), or `Single(cf-connecting-ip)` |
/// | a proxy or CDN made to write RFC 7239 `Forwarded` (an HAProxy `http-request set-header Forwarded for=%[src]`, an Envoy or CDN header rule) | its addresses | [`Forwarded`](ForwardedHeader::Forwarded) |
///
/// Choosing `Forwarded` behind a proxy that only appends
/// `X-Forwarded-For` lets every client pick its own address with a
/// `Forwarded` header of its own, and the reverse. To check a setup, send
/// one request carrying both headers with made-up addresses: the key must
/// follow only the address the proxy adds.
///
/// ```
/// use hasivu_ratelimit::{TrustedProxies, http::{ClientIpKey, ForwardedHeader}};
///
/// // Behind nginx or an ALB in 10.0.0.0/8: X-Forwarded-For, the default.
/// let proxies = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
/// let key = ClientIpKey::trusted_proxies(proxies.clone());
///
/// // Behind a proxy that writes `Forwarded`.
/// let key = ClientIpKey::trusted_proxies(proxies.clone())
///     .forwarded_header(ForwardedHeader::Forwarded);
///
/// // From configuration.
/// let header: ForwardedHeader = serde_json::from_str(r#""cf-connecting-ip""#).unwrap();
/// let key = ClientIpKey::trusted_proxies(proxies).forwarded_header(header);
/// # let _ = key;
/// ```
#[derive(Clone, Debug, Default)]
pub struct ClientIpKey {
    proxies: Arc<TrustedProxies>,
    header: ForwardedHeader,
}

/// The forwarding header trusted proxies set: the only one
/// [`ClientIpKey`] reads (see its docs for which to choose). Parses and
/// deserializes from a header name, case-insensitive: `"x-forwarded-for"`,
/// `"forwarded"`, or any other name for a single-address header (so a
/// misspelt name is a header that never arrives, and every client is keyed
/// as the proxy).
///
/// ```
/// use hasivu_ratelimit::http::ForwardedHeader;
///
/// assert_eq!(ForwardedHeader::default(), ForwardedHeader::XForwardedFor);
/// let header: ForwardedHeader = "Forwarded".parse().unwrap();
/// assert_eq!(header, ForwardedHeader::Forwarded);
/// let header: ForwardedHeader = "X-Real-IP".parse().unwrap();
/// assert_eq!(header.as_str(), "x-real-ip");
/// assert!("not a header".parse::<ForwardedHeader>().is_err());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`: each proxy appends the
    /// address it received the request from. Set by nginx, AWS ALB,
    /// Envoy, HAProxy, Traefik, Cloudflare and most others.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1`, the `for=` of each
    /// element; an element without `for=` ends the walk.
    Forwarded,
    /// A header holding the one address the proxy saw (`X-Real-IP`,
    /// `CF-Connecting-IP`, `True-Client-IP`), which the proxy replaces
    /// rather than appends to. A request with the header twice, or with a
    /// list in it, is keyed on the peer.
    Single(HeaderName),
}

impl ForwardedHeader {
    /// The header's name, lower-case.
    pub fn as_str(&self) -> &str {
        match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::Forwarded => "forwarded",
            Self::Single(name) => name.as_str(),
        }
    }
}

impl std::fmt::Display for ForwardedHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ForwardedHeader {
    type Err = http::header::InvalidHeaderName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = HeaderName::from_bytes(s.trim().as_bytes())?;
        Ok(if name == X_FORWARDED_FOR {
            Self::XForwardedFor
        } else if name == http::header::FORWARDED {
            Self::Forwarded
        } else {
            Self::Single(name)
        })
    }
}

impl<'de> serde::Deserialize<'de> for ForwardedHeader {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|_| {
            serde::de::Error::custom(format_args!(
                "invalid forwarding header {text:?}: expected x-forwarded-for, forwarded or a header name such as x-real-ip"
            ))
        })
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

impl ClientIpKey {
    /// Keys on the socket peer; forwarding headers are ignored.
    pub fn new() -> Self {
        Self::default()
    }

    /// Believes the forwarding header (`X-Forwarded-For` unless
    /// [`forwarded_header`](Self::forwarded_header) says otherwise) from
    /// these proxies.
    pub fn trusted_proxies(proxies: TrustedProxies) -> Self {
        Self {
            proxies: Arc::new(proxies),
            header: ForwardedHeader::default(),
        }
    }

    /// Which header the trusted proxies set (default
    /// [`ForwardedHeader::XForwardedFor`]); every other forwarding header
    /// is ignored.
    pub fn forwarded_header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// The client's address, if the peer is known.
    pub fn client_ip(&self, parts: &Parts) -> Option<IpAddr> {
        let peer = peer(parts)?;
        if !self.proxies.contains(peer) {
            // `::ffff:a.b.c.d` is the IPv4 client, as on the trusted path.
            return Some(canonical(peer));
        }
        // Last value first: the right end is what the nearest proxy wrote.
        let values = |name: &HeaderName| {
            parts
                .headers
                .get_all(name)
                .iter()
                .rev()
                .map(HeaderValue::as_bytes)
        };
        Some(match &self.header {
            ForwardedHeader::XForwardedFor => self
                .proxies
                .walk(peer, x_forwarded_for_hops(values(&X_FORWARDED_FOR))),
            ForwardedHeader::Forwarded => self
                .proxies
                .walk(peer, forwarded_hops(values(&http::header::FORWARDED))),
            ForwardedHeader::Single(name) => self
                .proxies
                .walk(peer, std::iter::once(single_hop(values(name)))),
        })
    }
}

impl KeyExtractor for ClientIpKey {
    fn key(&self, parts: &Parts) -> Option<String> {
        Some(match self.client_ip(parts) {
            Some(ip) => ip_key(ip),
            None => {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    tracing::warn!(
                        "rate limit: no peer address in the request extensions; all clients share the `unknown` key"
                    );
                });
                "unknown".to_owned()
            }
        })
    }
}

fn peer(parts: &Parts) -> Option<IpAddr> {
    if let Some(PeerAddr(addr)) = parts.extensions.get::<PeerAddr>() {
        return Some(addr.ip());
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(addr)) = parts
        .extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(addr.ip());
    }
    parts.extensions.get::<SocketAddr>().map(SocketAddr::ip)
}

/// The authenticated user from [`RateLimitIdentity`] (`user:<id>`), else
/// the client IP (`ip:<address>`).
#[derive(Clone, Debug, Default)]
pub struct UserOrIp {
    ip: ClientIpKey,
}

impl UserOrIp {
    /// Falls back to `ip` for anonymous requests.
    pub fn new(ip: ClientIpKey) -> Self {
        Self { ip }
    }
}

impl KeyExtractor for UserOrIp {
    fn key(&self, parts: &Parts) -> Option<String> {
        match parts
            .extensions
            .get::<RateLimitIdentity>()
            .and_then(|id| id.user.as_deref())
        {
            Some(user) => Some(format!("user:{user}")),
            None => self.ip.key(parts).map(|ip| format!("ip:{ip}")),
        }
    }
}

/// The value of an API-key header (`apikey:` and a 64-bit fingerprint, so
/// secrets never become Redis key names), else the client IP.
#[derive(Clone, Debug)]
pub struct ApiKeyHeader {
    name: HeaderName,
    ip: ClientIpKey,
}

impl ApiKeyHeader {
    /// Keys on the header `name`; requests without it fall back to `ip`.
    pub fn new(name: HeaderName, ip: ClientIpKey) -> Self {
        Self { name, ip }
    }
}

impl KeyExtractor for ApiKeyHeader {
    fn key(&self, parts: &Parts) -> Option<String> {
        match parts.headers.get(&self.name) {
            Some(value) => Some(format!("apikey:{:016x}", fingerprint(value.as_bytes()))),
            None => self.ip.key(parts).map(|ip| format!("ip:{ip}")),
        }
    }
}

/// FNV-1a: stable across processes and builds, so every instance computes
/// the same key.
fn fingerprint(bytes: &[u8]) -> u64 {
    struct Fnv(u64);
    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    h.write(bytes);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(peer: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::builder().uri("/menu/daily");
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let (mut parts, ()) = builder.body(()).unwrap().into_parts();
        parts
            .extensions
            .insert(PeerAddr(format!("{peer}:4000").parse().unwrap()));
        parts
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let trusting = ClientIpKey::trusted_proxies(TrustedProxies::new(["10.0.0.0/8"]).unwrap());
        let spoofed = parts("198.51.100.7", &[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(trusting.key(&spoofed).unwrap(), "198.51.100.7");
        let proxied = parts("10.0.0.2", &[("x-forwarded-for", "6.6.6.6, 203.0.113.5")]);
        assert_eq!(trusting.key(&proxied).unwrap(), "203.0.113.5");
        assert_eq!(ClientIpKey::new().key(&proxied).unwrap(), "10.0.0.2");
        let standard = parts("10.0.0.2", &[("forwarded", "for=203.0.113.77")]);
        let reading_forwarded = trusting
            .clone()
            .forwarded_header(ForwardedHeader::Forwarded);
        assert_eq!(reading_forwarded.key(&standard).unwrap(), "203.0.113.77");
        let garbage = parts("10.0.0.2", &[("x-forwarded-for", "203.0.113.5, junk")]);
        assert_eq!(trusting.key(&garbage).unwrap(), "10.0.0.2");
    }

    #[test]
    fn only_the_configured_forwarding_header_counts() {
        let proxies = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
        let both = parts(
            "10.0.0.2",
            &[
                ("x-forwarded-for", "203.0.113.5"),
                ("forwarded", "for=198.51.100.99"),
            ],
        );
        let xff = ClientIpKey::trusted_proxies(proxies.clone());
        assert_eq!(
            xff.key(&both).unwrap(),
            "203.0.113.5",
            "X-Forwarded-For is the default; a client's own Forwarded is ignored"
        );
        let forwarded = ClientIpKey::trusted_proxies(proxies.clone())
            .forwarded_header(ForwardedHeader::Forwarded);
        assert_eq!(forwarded.key(&both).unwrap(), "198.51.100.99");

        // The other header alone changes nothing: the client is the proxy.
        let only_forwarded = parts("10.0.0.2", &[("forwarded", "for=198.51.100.99")]);
        assert_eq!(xff.key(&only_forwarded).unwrap(), "10.0.0.2");
        let only_xff = parts("10.0.0.2", &[("x-forwarded-for", "203.0.113.5")]);
        assert_eq!(forwarded.key(&only_xff).unwrap(), "10.0.0.2");

        // A single-address header such as X-Real-IP.
        let real_ip = ClientIpKey::trusted_proxies(proxies).forwarded_header(
            ForwardedHeader::Single(HeaderName::from_static("x-real-ip")),
        );
        let with_real_ip = parts(
            "10.0.0.2",
            &[
                ("x-real-ip", "192.0.2.77"),
                ("x-forwarded-for", "203.0.113.5"),
            ],
        );
        assert_eq!(real_ip.key(&with_real_ip).unwrap(), "192.0.2.77");
        assert_eq!(real_ip.key(&both).unwrap(), "10.0.0.2");
        // Two values or a list: not what a proxy that sets it writes.
        let twice = parts(
            "10.0.0.2",
            &[("x-real-ip", "192.0.2.77"), ("x-real-ip", "192.0.2.78")],
        );
        assert_eq!(real_ip.key(&twice).unwrap(), "10.0.0.2");
        let list = parts("10.0.0.2", &[("x-real-ip", "192.0.2.77, 192.0.2.78")]);
        assert_eq!(real_ip.key(&list).unwrap(), "10.0.0.2");
        // From an untrusted peer, no header counts.
        let direct = parts("198.51.100.7", &[("x-real-ip", "192.0.2.77")]);
        assert_eq!(real_ip.key(&direct).unwrap(), "198.51.100.7");
    }

    #[test]
    fn a_forwarded_element_without_for_ends_the_walk() {
        let forwarded = ClientIpKey::trusted_proxies(TrustedProxies::new(["10.0.0.0/8"]).unwrap())
            .forwarded_header(ForwardedHeader::Forwarded);
        // The proxy's own element names no client: the client's claim to
        // its left is not believed.
        let p = parts(
            "10.0.0.2",
            &[("forwarded", "for=203.0.113.66, proto=https;by=10.0.0.2")],
        );
        assert_eq!(forwarded.key(&p).unwrap(), "10.0.0.2");
    }

    #[test]
    fn forwarding_headers_are_read_for_at_most_max_hops() {
        let key = ClientIpKey::trusted_proxies(TrustedProxies::new(["10.0.0.0/8"]).unwrap());
        // A client, then 40 trusted proxies: only 32 hops are read, so the
        // client is the 32nd hop from the right, never further left.
        let hops: Vec<String> = std::iter::once("198.51.100.1".to_owned())
            .chain((1..=40).map(|i| format!("10.0.0.{i}")))
            .collect();
        let long = parts("10.0.0.200", &[("x-forwarded-for", &hops.join(", "))]);
        assert_eq!(TrustedProxies::MAX_HOPS, 32);
        assert_eq!(key.key(&long).unwrap(), "10.0.0.9");
        // The same chain as one header line per hop.
        let lines: Vec<(&str, &str)> = hops
            .iter()
            .map(|h| ("x-forwarded-for", h.as_str()))
            .collect();
        assert_eq!(key.key(&parts("10.0.0.200", &lines)).unwrap(), "10.0.0.9");
        // Within the bound (the client is the 32nd hop), the walk reaches it.
        let within = format!("198.51.100.1, {}", hops[hops.len() - 31..].join(","));
        let within = parts("10.0.0.200", &[("x-forwarded-for", &within)]);
        assert_eq!(key.key(&within).unwrap(), "198.51.100.1");

        // Hostile shapes end at the peer: 100 KB of commas, 10 000 empty
        // lines, 10 000 lines of a trusted address.
        let commas = ",".repeat(100_000);
        for header in ["x-forwarded-for", "forwarded"] {
            let p = parts("10.0.0.200", &[(header, &commas)]);
            assert_eq!(key.key(&p).unwrap(), "10.0.0.200");
        }
        let empty = vec![("x-forwarded-for", ""); 10_000];
        assert_eq!(key.key(&parts("10.0.0.200", &empty)).unwrap(), "10.0.0.200");
        let mut trusted = vec![("x-forwarded-for", "10.0.0.7"); 10_000];
        trusted.insert(0, ("x-forwarded-for", "198.51.100.1"));
        assert_eq!(key.key(&parts("10.0.0.200", &trusted)).unwrap(), "10.0.0.7");
    }

    #[test]
    fn users_api_keys_and_fallbacks() {
        let mut p = parts("192.0.2.1", &[("x-api-key", "secret-1")]);
        assert_eq!(UserOrIp::default().key(&p).unwrap(), "ip:192.0.2.1");
        p.extensions.insert(RateLimitIdentity {
            user: Some("42".into()),
            tier: Some("premium".into()),
        });
        assert_eq!(UserOrIp::default().key(&p).unwrap(), "user:42");
        let api = ApiKeyHeader::new(HeaderName::from_static("x-api-key"), ClientIpKey::new());
        let key = api.key(&p).unwrap();
        assert!(key.starts_with("apikey:") && !key.contains("secret"));
        assert_eq!(api.key(&parts("192.0.2.9", &[])).unwrap(), "ip:192.0.2.9");
        let none = http::Request::new(()).into_parts().0;
        assert_eq!(ClientIpKey::new().key(&none).unwrap(), "unknown");
    }
}
