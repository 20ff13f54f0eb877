//! What one request costs the shield in memory, counted by a global
//! allocator. Alone in its test binary, so no other test's allocations are
//! counted.

use std::{convert::Infallible, net::IpAddr};

use bytes::Bytes;
use hasivu_ratelimit::{
    http::PeerAddr,
    shield::{InspectedBody, ShieldLayer},
};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Layer, ServiceExt, service_fn};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

fn json(peer: IpAddr, body: String) -> Request<Full<Bytes>> {
    let mut r = Request::post("/orders")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
        )
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    r.extensions_mut().insert(PeerAddr((peer, 40_000).into()));
    r
}

/// The bytes allocated while the shield answers `body` (the inner service
/// drops the body unread).
fn allocated_for(body: String, peer: &str) -> (StatusCode, usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let service =
        ShieldLayer::new().layer(service_fn(|_: Request<InspectedBody<Full<Bytes>>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        }));
    let request = json(peer.parse().unwrap(), body);
    let region = Region::new(GLOBAL);
    let answer = runtime.block_on(service.oneshot(request)).unwrap();
    // Growth by `realloc` counts too.
    let allocated = region.change().bytes_allocated;
    (answer.status(), allocated)
}

#[test]
fn nested_entities_cost_no_memory_beyond_a_small_multiple_of_the_body() {
    // Warm up lazily initialised state (thread locals, the clock).
    let _ = allocated_for("{\"a\":\"b\"}".to_owned(), "192.0.2.1");

    // A body of plain text, for scale.
    let plain = format!("{{\"a\":\"{}\"}}", "x".repeat(16_000));
    let (status, baseline) = allocated_for(plain, "192.0.2.2");
    assert_eq!(status, StatusCode::OK);

    // `&amp;amp;…` of 16 KB and 32 KB (the report's body): each level used
    // to cost a round of decoding and a copy of what was left (30 MB at
    // 16 KB, a stack overflow at 32 KB). Now it is two rounds of entity
    // decoding and the SQL tokeniser's tokens (12 bytes each).
    for (peer, repetitions) in [("192.0.2.3", 4_000), ("192.0.2.4", 8_000)] {
        let nested = format!("{{\"a\":\"&{}\"}}", "amp;".repeat(repetitions));
        let len = nested.len();
        let (status, allocated) = allocated_for(nested, peer);
        println!(
            "plain body of 16 KB: {baseline} bytes allocated; nested entities ({len} bytes): {allocated}"
        );
        assert_eq!(status, StatusCode::OK);
        assert!(
            allocated <= 16 * len,
            "a {len}-byte body of nested entities allocated {allocated} bytes"
        );
    }
}
