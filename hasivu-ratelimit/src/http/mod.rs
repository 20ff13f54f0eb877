//! The tower layer: [`RateLimitLayer`] checks every request with a
//! [`Limiter`](crate::Limiter) before the inner service sees it.
//!
//! - **Admitted** requests reach the service; their answers carry
//!   `RateLimit-Policy: "general";q=1000;w=900` and
//!   `RateLimit: "general";r=999;t=1` (draft-ietf-httpapi-ratelimit-headers-10;
//!   turn off with [`headers_on_success`](RateLimitLayer::headers_on_success)).
//! - **Rejected** requests get `429 Too Many Requests` with an
//!   `application/problem+json` body of type `quota-exceeded`, the same
//!   fields, and `Retry-After` in whole seconds rounded up, never earlier
//!   than the quota allows; `t` then equals `Retry-After`. While limits are
//!   reduced for load the answer is `503 Service Unavailable` of type
//!   `temporary-reduced-capacity`, as the draft registers it.
//! - **Legacy** `X-RateLimit-Limit/Remaining/Reset` on request
//!   ([`legacy_headers`](RateLimitLayer::legacy_headers)).
//! - **Shadow mode** ([`LimiterBuilder::shadow`](crate::LimiterBuilder::shadow))
//!   counts and reports but lets everything through.
//! - The service's errors and body errors pass through unchanged, so axum's
//!   `Infallible` survives.
//!
//! Who a request counts against is a [`KeyExtractor`]: [`ClientIpKey`] (the
//! default: the socket peer, or what trusted proxies forwarded in the one
//! header they set, [`ForwardedHeader`]), [`UserOrIp`]
//! (the user an authentication layer put in [`RateLimitIdentity`]),
//! [`ApiKeyHeader`], or a closure. The identity's tier scales the quota.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use hasivu_ratelimit::{Limiter, Quota, http::{PeerAddr, RateLimitLayer}};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let limiter = Limiter::builder().quota(Quota::per_minute(1)).build();
//! let service = ServiceBuilder::new()
//!     .layer(RateLimitLayer::new(limiter))
//!     .service(service_fn(|_req: Request<String>| async {
//!         Ok::<_, Infallible>(Response::new("menu".to_owned()))
//!     }));
//!
//! let request = || {
//!     let mut request = Request::new(String::new());
//!     request.extensions_mut().insert(PeerAddr("203.0.113.7:5000".parse().unwrap()));
//!     request
//! };
//! let first = service.clone().oneshot(request()).await.unwrap();
//! assert_eq!(first.status(), StatusCode::OK);
//! assert_eq!(first.headers()["ratelimit"], r#""default";r=0;t=60"#);
//! let second = service.oneshot(request()).await.unwrap();
//! assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(second.headers()["retry-after"], "60");
//! # }
//! ```
//!
//! Behind a load balancer, trust it for the header it sets, key
//! authenticated users by id, and feed the load signal:
//!
//! ```
//! use hasivu_ratelimit::{
//!     CompositeLoad, InFlight, Limiter, LoadControl, Policies, Tiers, TrustedProxies,
//!     http::{ClientIpKey, ForwardedHeader, RateLimitLayer, UserOrIp},
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let in_flight = InFlight::new(512);
//! let control = LoadControl::new(CompositeLoad::new().part(1.0, in_flight.clone()));
//! control.spawn();
//! let limiter = Limiter::builder()
//!     .policies(Policies::report_defaults())
//!     .tiers(Tiers::report_defaults())
//!     .load(control)
//!     .build();
//! // An ALB in 10.0.0.0/8 appends X-Forwarded-For (the default header).
//! let proxies = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
//! let client_ip = ClientIpKey::trusted_proxies(proxies)
//!     .forwarded_header(ForwardedHeader::XForwardedFor);
//! let layer = RateLimitLayer::new(limiter)
//!     .key(UserOrIp::new(client_ip))
//!     .in_flight(in_flight)
//!     .legacy_headers(true);
//! # let _ = layer;
//! # }
//! ```

mod body;
mod future;
mod headers;
mod key;
mod layer;
mod service;

pub use body::RateLimitBody;
pub use future::ResponseFuture;
pub use key::{
    ApiKeyHeader, ClientIpKey, ForwardedHeader, KeyExtractor, PeerAddr, RateLimitIdentity, UserOrIp,
};
pub use layer::RateLimitLayer;
pub use service::RateLimit;

#[cfg(test)]
mod tests {
    use std::{convert::Infallible, time::Duration};

    use http::{Request, Response, StatusCode};
    use http_body_util::BodyExt;
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    use super::*;
    use crate::{Hysteresis, Limiter, LoadControl, Policies, Policy, Quota, TrustedProxies};

    fn request(peer: &str, path: &str) -> Request<String> {
        let mut request = Request::post(path).body(String::new()).unwrap();
        request
            .extensions_mut()
            .insert(PeerAddr(format!("{peer}:1234").parse().unwrap()));
        request
    }

    async fn ok(_req: Request<String>) -> Result<Response<String>, Infallible> {
        Ok(Response::new("ok".to_owned()))
    }

    #[tokio::test]
    async fn rejections_are_problems_with_standard_fields() {
        let limiter = Limiter::builder().build();
        let service = ServiceBuilder::new()
            .layer(RateLimitLayer::new(limiter).legacy_headers(true))
            .service(service_fn(ok));
        // The login policy: burst 5.
        for _ in 0..5 {
            let answer = service
                .clone()
                .oneshot(request("192.0.2.1", "/auth/login"))
                .await
                .unwrap();
            assert_eq!(answer.status(), StatusCode::OK);
        }
        let answer = service
            .clone()
            .oneshot(request("192.0.2.1", "/auth/login"))
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(answer.headers()["content-type"], "application/problem+json");
        assert_eq!(
            answer.headers()["ratelimit-policy"],
            r#""login";q=10;w=900"#
        );
        let retry: u64 = answer.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(retry, 90, "one login per 90 s comes back");
        assert_eq!(answer.headers()["ratelimit"], r#""login";r=0;t=90"#);
        assert_eq!(answer.headers()["x-ratelimit-remaining"], "0");
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            problem["type"],
            "https://iana.org/assignments/http-problem-types#quota-exceeded"
        );
        assert_eq!(problem["policy"], "login");
        // Another client, and another route of the same client, go on.
        let other = service
            .clone()
            .oneshot(request("192.0.2.2", "/auth/login"))
            .await
            .unwrap();
        assert_eq!(other.status(), StatusCode::OK);
        let menu = service
            .oneshot(request("192.0.2.1", "/menu/daily"))
            .await
            .unwrap();
        assert_eq!(menu.status(), StatusCode::OK);
        assert_eq!(
            menu.headers()["ratelimit-policy"],
            r#""general";q=1000;w=900"#
        );
    }

    #[tokio::test]
    async fn a_forwarded_for_from_an_untrusted_peer_does_not_change_the_key() {
        let limiter = Limiter::builder().quota(Quota::per_minute(1)).build();
        let trusting = ClientIpKey::trusted_proxies(TrustedProxies::new(["10.0.0.0/8"]).unwrap());
        let service = ServiceBuilder::new()
            .layer(RateLimitLayer::new(limiter).key(trusting))
            .service(service_fn(ok));
        let spoof = |xff: &str| {
            let mut r = request("198.51.100.3", "/");
            r.headers_mut()
                .insert("x-forwarded-for", xff.parse().unwrap());
            r
        };
        assert_eq!(
            service
                .clone()
                .oneshot(spoof("1.1.1.1"))
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
        // Rotating the header does not buy a new quota.
        assert_eq!(
            service
                .clone()
                .oneshot(spoof("2.2.2.2"))
                .await
                .unwrap()
                .status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        // Through the trusted proxy, each forwarded client has its own.
        for client in ["1.1.1.1", "2.2.2.2"] {
            let mut r = request("10.0.0.1", "/");
            r.headers_mut()
                .insert("x-forwarded-for", client.parse().unwrap());
            assert_eq!(
                service.clone().oneshot(r).await.unwrap().status(),
                StatusCode::OK
            );
        }
    }

    #[tokio::test]
    async fn a_client_own_forwarded_header_buys_no_new_logins() {
        // Behind a proxy that appends only X-Forwarded-For, a client adds
        // its own `Forwarded: for=` and rotates it.
        let limiter = Limiter::builder()
            .policies(Policies::report_defaults())
            .build();
        let key = ClientIpKey::trusted_proxies(TrustedProxies::new(["127.0.0.1/32"]).unwrap());
        let service = ServiceBuilder::new()
            .layer(RateLimitLayer::new(limiter).key(key))
            .service(service_fn(ok));
        let mut statuses = Vec::new();
        for i in 0..30 {
            let mut r = request("127.0.0.1", "/auth/login");
            r.headers_mut()
                .insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
            r.headers_mut()
                .insert("forwarded", format!("for=198.51.100.{i}").parse().unwrap());
            statuses.push(service.clone().oneshot(r).await.unwrap().status());
        }
        let admitted = statuses.iter().filter(|s| **s == StatusCode::OK).count();
        assert_eq!(admitted, 5, "the login burst, once: {statuses:?}");
        assert!(
            statuses[5..]
                .iter()
                .all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
            "{statuses:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reduced_capacity_answers_503_with_its_own_type() {
        let control = LoadControl::with(|| 0.99, Hysteresis::default(), Duration::from_secs(1));
        control.update();
        let limiter = Limiter::builder()
            .policies(Policies::new(Policy::new("general", Quota::per_minute(2))))
            .load(control)
            .build();
        let service = ServiceBuilder::new()
            .layer(RateLimitLayer::new(limiter).headers_on_success(false))
            .service(service_fn(ok));
        let first = service
            .clone()
            .oneshot(request("192.0.2.5", "/"))
            .await
            .unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        assert!(first.headers().get("ratelimit").is_none());
        let second = service.oneshot(request("192.0.2.5", "/")).await.unwrap();
        assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            second.headers()["ratelimit-policy"],
            r#""general";q=1;w=60"#
        );
        let body = second.into_body().collect().await.unwrap().to_bytes();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            problem["type"],
            "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity"
        );
    }

    #[tokio::test]
    async fn requests_without_a_key_pass_unlimited() {
        let limiter = Limiter::builder().quota(Quota::per_minute(1)).build();
        let service = ServiceBuilder::new()
            .layer(RateLimitLayer::new(limiter).key(|_: &http::request::Parts| None))
            .service(service_fn(ok));
        for _ in 0..3 {
            let answer = service
                .clone()
                .oneshot(request("192.0.2.9", "/"))
                .await
                .unwrap();
            assert_eq!(answer.status(), StatusCode::OK);
            assert!(answer.headers().get("ratelimit").is_none());
        }
    }

    #[tokio::test]
    async fn tiers_from_the_identity_scale_the_quota() {
        let limiter = Limiter::builder().quota(Quota::per_minute(1)).build();
        let service = ServiceBuilder::new()
            .layer(RateLimitLayer::new(limiter).key(UserOrIp::default()))
            .service(service_fn(ok));
        let mut admitted = 0;
        loop {
            let mut r = request("192.0.2.10", "/");
            r.extensions_mut().insert(RateLimitIdentity {
                user: Some("7".into()),
                tier: Some("admin".into()),
            });
            if service.clone().oneshot(r).await.unwrap().status() != StatusCode::OK {
                break;
            }
            admitted += 1;
        }
        assert_eq!(admitted, 10);
    }
}
