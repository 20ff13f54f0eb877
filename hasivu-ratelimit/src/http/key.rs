//! Who a request counts against: the client IP, an authenticated user, an
//! API key, or a closure.

use std::{
    hash::Hasher,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use http::{HeaderName, request::Parts};

use crate::client_ip::{TrustedProxies, ip_key, parse_forwarded, parse_x_forwarded_for};

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

/// The client IP: the socket peer, or the address forwarded by trusted
/// proxies (`Forwarded`, else `X-Forwarded-For`, read right to left and
/// only past trusted hops). IPv6 clients are keyed by their /64.
///
/// The peer comes from the request's extensions: [`PeerAddr`], a bare
/// [`SocketAddr`], or (feature `axum`) axum's `ConnectInfo<SocketAddr>`.
/// Without any, the key is `unknown`, one shared bucket, and a warning is
/// logged once.
#[derive(Clone, Debug, Default)]
pub struct ClientIpKey {
    proxies: Arc<TrustedProxies>,
}

impl ClientIpKey {
    /// Keys on the socket peer; forwarding headers are ignored.
    pub fn new() -> Self {
        Self::default()
    }

    /// Believes forwarding headers from these proxies.
    pub fn trusted_proxies(proxies: TrustedProxies) -> Self {
        Self {
            proxies: Arc::new(proxies),
        }
    }

    /// The client's address, if the peer is known.
    pub fn client_ip(&self, parts: &Parts) -> Option<IpAddr> {
        let peer = peer(parts)?;
        if !self.proxies.contains(peer) {
            return Some(peer);
        }
        let forwarded: Vec<&str> = parts
            .headers
            .get_all(http::header::FORWARDED)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let chain = if forwarded.is_empty() {
            parse_x_forwarded_for(
                parts
                    .headers
                    .get_all("x-forwarded-for")
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            )
        } else {
            parse_forwarded(forwarded.into_iter())
        };
        // Only the hops right of the last unreadable entry can be walked.
        let usable: Vec<IpAddr> = chain
            .iter()
            .rev()
            .map_while(|hop| *hop)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        Some(self.proxies.client(peer, &usable))
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
        assert_eq!(trusting.key(&standard).unwrap(), "203.0.113.77");
        let garbage = parts("10.0.0.2", &[("x-forwarded-for", "203.0.113.5, junk")]);
        assert_eq!(trusting.key(&garbage).unwrap(), "10.0.0.2");
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
