//! What one request costs the shield in memory, counted by a global
//! allocator. Alone in its test binary, with a single test, so no other
//! test's allocations are counted.

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

fn json(peer: IpAddr, body: Vec<u8>, coding: Option<&str>) -> Request<Full<Bytes>> {
    let mut r = Request::post("/orders")
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
        )
        .header("content-type", "application/json")
        .header("content-length", body.len());
    if let Some(coding) = coding {
        r = r.header("content-encoding", coding);
    }
    let mut r = r.body(Full::new(Bytes::from(body))).unwrap();
    r.extensions_mut().insert(PeerAddr((peer, 40_000).into()));
    r
}

/// The bytes allocated while the shield answers `body` (the inner service
/// drops the body unread).
fn allocated_for(body: Vec<u8>, coding: Option<&str>, peer: &str) -> (StatusCode, usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let service =
        ShieldLayer::new().layer(service_fn(|_: Request<InspectedBody<Full<Bytes>>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        }));
    let request = json(peer.parse().unwrap(), body, coding);
    let region = Region::new(GLOBAL);
    let answer = runtime.block_on(service.oneshot(request)).unwrap();
    // Growth by `realloc` counts too.
    let allocated = region.change().bytes_allocated;
    (answer.status(), allocated)
}

/// One test: the counts are of the whole process.
#[test]
fn hostile_bodies_cost_memory_bounded_by_their_size_and_the_limit() {
    // Warm up lazily initialised state (thread locals, the clock).
    let _ = allocated_for(b"{\"a\":\"b\"}".to_vec(), None, "192.0.2.1");

    // A body of plain text, for scale.
    let plain = format!("{{\"a\":\"{}\"}}", "x".repeat(16_000));
    let (status, baseline) = allocated_for(plain.into(), None, "192.0.2.2");
    assert_eq!(status, StatusCode::OK);
    println!("plain body of 16 KB: {baseline} bytes allocated");

    // `&amp;amp;…` of 16 KB and 32 KB (the report's body): each level used
    // to cost a round of decoding and a copy of what was left (30 MB at
    // 16 KB, a stack overflow at 32 KB). Now it is two rounds of entity
    // decoding and the SQL tokeniser's tokens (12 bytes each).
    for (peer, repetitions) in [("192.0.2.3", 4_000), ("192.0.2.4", 8_000)] {
        let nested = format!("{{\"a\":\"&{}\"}}", "amp;".repeat(repetitions));
        let len = nested.len();
        let (status, allocated) = allocated_for(nested.into(), None, peer);
        println!("nested entities ({len} bytes): {allocated} bytes allocated");
        assert_eq!(status, StatusCode::OK);
        assert!(
            allocated <= 16 * len,
            "a {len}-byte body of nested entities allocated {allocated} bytes"
        );
    }

    // A gzip bomb: 10 MB of zeros in about 10 KB (ten members of 1 MB).
    // Decoding stops at the body limit (64 KiB): the output buffer, the
    // decoder's state and window, nothing in proportion to the 10 MB.
    #[cfg(feature = "gzip")]
    {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&vec![b'0'; 1 << 20]).unwrap();
        let bomb = encoder.finish().unwrap().repeat(10);
        let len = bomb.len();
        let (status, allocated) = allocated_for(bomb, Some("gzip"), "192.0.2.5");
        println!("gzip bomb ({len} bytes, 10 MB decoded): {allocated} bytes allocated");
        assert_eq!(status, StatusCode::OK);
        assert!(
            allocated <= 4 * 64 * 1024,
            "a {len}-byte gzip bomb allocated {allocated} bytes"
        );
    }
}
