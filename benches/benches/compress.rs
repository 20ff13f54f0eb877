//! hasivu-compress vs tower-http's `CompressionLayer`, same inner service,
//! same bodies, same run.
//!
//! Groups:
//! - `level/{body}/{coding}`: one coding offered, both at the same level
//!   (zstd 3, br 4, gzip 6, deflate 6).
//! - `defaults/{body}/{header}`: both with their default settings, under the
//!   Accept-Encoding of current browsers.
//! - `threshold`: a 500-byte JSON body, below hasivu's 1 KiB threshold,
//!   through the layer vs the bare service: the cost of deciding not to
//!   compress.
//!
//! Run with `cargo bench -p hasivu-benches --bench compress`; the ratio table
//! is printed at the end.

use std::convert::Infallible;

use bytes::Bytes;
use criterion::Criterion;
use hasivu_benches::{Row, block_on, corpus, criterion, criterion_dir, print_report};
use hasivu_compress::{Coding, CompressionLayer, Levels};
use http::{HeaderValue, Request, Response, header};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_http::{CompressionLevel, compression::CompressionLayer as TowerCompressionLayer};

type Answer = std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>;

/// The handler: a body of exact size with its media type, like axum's `Json`.
fn inner(
    body: Bytes,
    content_type: &'static str,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = Answer,
> + Clone {
    service_fn(move |_req: Request<Full<Bytes>>| {
        let mut response = Response::new(Full::new(body.clone()));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        std::future::ready(Ok(response))
    })
}

fn request(accept: &'static str) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::default());
    request
        .headers_mut()
        .insert(header::ACCEPT_ENCODING, HeaderValue::from_static(accept));
    request
}

/// One request through `service`, body read to the end; returns the body
/// length so the work cannot be optimised away.
fn run<S, B>(service: &S, accept: &'static str) -> (usize, Option<HeaderValue>)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: Body,
    B::Error: std::fmt::Debug,
{
    block_on(async {
        let response = service.clone().oneshot(request(accept)).await.unwrap();
        let coding = response.headers().get(header::CONTENT_ENCODING).cloned();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (body.len(), coding)
    })
}

struct Corpus {
    name: &'static str,
    body: Bytes,
    content_type: &'static str,
}

fn corpus() -> Vec<Corpus> {
    vec![
        Corpus {
            name: "json-1KB",
            body: corpus::menu_json(1024),
            content_type: "application/json",
        },
        Corpus {
            name: "json-25KB",
            body: corpus::menu_json(25 * 1024),
            content_type: "application/json",
        },
        Corpus {
            name: "json-200KB",
            body: corpus::menu_json(200 * 1024),
            content_type: "application/json",
        },
        Corpus {
            name: "json-1MB",
            body: corpus::menu_json(1024 * 1024),
            content_type: "application/json",
        },
        Corpus {
            name: "html-50KB",
            body: corpus::html_page(50 * 1024),
            content_type: "text/html; charset=utf-8",
        },
    ]
}

/// tower-http with only `coding` on, at hasivu's default level for it, so
/// the `level-*` groups compare equal levels whatever the defaults become.
fn tower_only(coding: Coding) -> TowerCompressionLayer {
    let all = TowerCompressionLayer::new();
    let layer = match coding {
        Coding::Zstd => all.no_br().no_gzip().no_deflate(),
        Coding::Br => all.no_zstd().no_gzip().no_deflate(),
        Coding::Gzip => all.no_zstd().no_br().no_deflate(),
        _ => all.no_zstd().no_br().no_gzip(),
    };
    let levels = Levels::default();
    let level = match coding {
        Coding::Zstd => levels.zstd,
        Coding::Br => levels.br as i32,
        Coding::Gzip => levels.gzip as i32,
        _ => levels.deflate as i32,
    };
    layer.quality(CompressionLevel::Precise(level))
}

fn level_benches(c: &mut Criterion, rows: &mut Vec<Row>) {
    for item in corpus() {
        for coding in [Coding::Zstd, Coding::Br, Coding::Gzip, Coding::Deflate] {
            let group_name = format!("level-{}-{}", item.name, coding.as_str());
            let ours = CompressionLayer::new()
                .prefer(&[coding])
                .layer(inner(item.body.clone(), item.content_type));
            let theirs = tower_only(coding).layer(inner(item.body.clone(), item.content_type));
            let accept = coding.as_str();
            let (our_len, our_coding) = run(&ours, accept);
            let (their_len, their_coding) = run(&theirs, accept);
            assert_eq!(
                our_coding.as_ref().map(|v| v.as_bytes()),
                Some(accept.as_bytes())
            );
            assert_eq!(
                their_coding.as_ref().map(|v| v.as_bytes()),
                Some(accept.as_bytes())
            );
            let mut group = c.benchmark_group(&group_name);
            group.throughput(criterion::Throughput::Bytes(item.body.len() as u64));
            group.bench_function("hasivu", |b| b.iter(|| run(&ours, accept)));
            group.bench_function("tower-http", |b| b.iter(|| run(&theirs, accept)));
            group.finish();
            rows.push(Row {
                group: group_name,
                ours: "hasivu".into(),
                theirs: "tower-http".into(),
                note: format!(
                    "{} B in; out {} B vs {} B ({:+.1}%)",
                    item.body.len(),
                    our_len,
                    their_len,
                    (our_len as f64 / their_len as f64 - 1.0) * 100.0
                ),
            });
        }
    }
}

fn default_benches(c: &mut Criterion, rows: &mut Vec<Row>) {
    for item in corpus() {
        for (label, accept) in [
            ("all", "gzip, deflate, br, zstd"),
            ("no-zstd", "gzip, deflate, br"),
        ] {
            let group_name = format!("defaults-{}-{}", item.name, label);
            let ours = CompressionLayer::new().layer(inner(item.body.clone(), item.content_type));
            let theirs =
                TowerCompressionLayer::new().layer(inner(item.body.clone(), item.content_type));
            let (our_len, our_coding) = run(&ours, accept);
            let (their_len, their_coding) = run(&theirs, accept);
            let mut group = c.benchmark_group(&group_name);
            group.throughput(criterion::Throughput::Bytes(item.body.len() as u64));
            group.bench_function("hasivu", |b| b.iter(|| run(&ours, accept)));
            group.bench_function("tower-http", |b| b.iter(|| run(&theirs, accept)));
            group.finish();
            let name = |v: Option<HeaderValue>| {
                v.map_or("identity".to_owned(), |v| {
                    v.to_str().unwrap_or("?").to_owned()
                })
            };
            rows.push(Row {
                group: group_name,
                ours: "hasivu".into(),
                theirs: "tower-http".into(),
                note: format!(
                    "`{accept}`: {} {} B vs {} {} B ({:+.1}%)",
                    name(our_coding),
                    our_len,
                    name(their_coding),
                    their_len,
                    (our_len as f64 / their_len as f64 - 1.0) * 100.0
                ),
            });
        }
    }
}

fn threshold_benches(c: &mut Criterion, rows: &mut Vec<Row>) {
    let body = corpus::menu_json(500);
    let bare = inner(body.clone(), "application/json");
    let ours = CompressionLayer::new().layer(inner(body.clone(), "application/json"));
    let accept = "gzip, deflate, br, zstd";
    let mut group = c.benchmark_group("threshold-json-500B");
    group.bench_function("bare", |b| b.iter(|| run(&bare, accept)));
    group.bench_function("hasivu", |b| b.iter(|| run(&ours, accept)));
    group.finish();
    rows.push(Row {
        group: "threshold-json-500B".into(),
        ours: "hasivu".into(),
        theirs: "bare".into(),
        note: "below the 1 KiB threshold; anchor = the bare service (ratio < 1 is the overhead)"
            .into(),
    });
}

fn main() {
    let mut c = criterion(env!("CARGO_TARGET_TMPDIR"));
    let mut rows = Vec::new();
    threshold_benches(&mut c, &mut rows);
    default_benches(&mut c, &mut rows);
    level_benches(&mut c, &mut rows);
    c.final_summary();
    print_report(
        "hasivu-compress vs tower-http 0.7 CompressionLayer (speed ratio = tower-http time / hasivu time)",
        &criterion_dir(env!("CARGO_TARGET_TMPDIR")),
        &rows,
    );
}
