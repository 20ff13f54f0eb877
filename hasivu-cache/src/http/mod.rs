//! An HTTP response cache for tower services.
//!
//! [`CacheLayer`] keeps the answers to GET and HEAD requests in a
//! [`Cache`](crate::Cache) (L1 in memory, L2 in Redis when configured), per
//! route: a [`RoutePolicy`] says for how long, which statuses, under which
//! key namespace, up to which body size, and whether requests with
//! credentials get entries of their own. Hits are answered without calling
//! the service, with a strong `ETag`, `Cache-Control`, `Age` and an
//! `X-Cache` header; `If-None-Match` is answered with 304 from the cache.
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, body::Body, routing::get};
//! use hasivu_cache::{Cache, CacheLayer, RoutePolicy};
//! use http::Request;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = Cache::builder().build()?; // add .redis(url) to share entries
//! let app = Router::new()
//!     .route("/menu/daily", get(|| async { "ragi mudde, sambar, curd rice" }))
//!     .layer(CacheLayer::new(cache).route(
//!         "/menu/daily",
//!         RoutePolicy::new(Duration::from_secs(60)).namespace("menu:daily:"),
//!     ));
//!
//! let first = app.clone().oneshot(Request::get("/menu/daily").body(Body::empty())?).await?;
//! assert_eq!(first.headers()["x-cache"], "MISS");
//! assert_eq!(first.headers()["cache-control"], "public, max-age=60");
//! let etag = first.headers()["etag"].clone();
//!
//! let second = app.clone().oneshot(Request::get("/menu/daily").body(Body::empty())?).await?;
//! assert_eq!(second.headers()["x-cache"], "HIT-L1");
//!
//! // A client that has the body already gets a 304, from the cache.
//! let request = Request::get("/menu/daily").header("if-none-match", etag).body(Body::empty())?;
//! assert_eq!(app.oneshot(request).await?.status(), 304);
//! # Ok(())
//! # }
//! ```
//!
//! A customised setup: several routes with their own policies, the menu
//! served stale for 30 s while it refreshes, a per-user route, one entry per
//! negotiated coding (a compression layer inside the cache stores
//! compressed bytes: compress once, serve many), CDN tags, and a handler
//! that invalidates the menu on every instance:
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, body::Body, extract::State, routing::{get, post}};
//! use hasivu_cache::{Cache, CacheLayer, RoutePolicy};
//! use http::{HeaderMap, Request};
//! use tower::ServiceExt;
//!
//! /// The coding the compression layer will pick; with hasivu-compress:
//! /// `hasivu_compress::negotiate_headers(headers, &preference).as_str().to_owned()`.
//! fn negotiated(headers: &HeaderMap) -> String {
//!     let accept = headers.get("accept-encoding").and_then(|v| v.to_str().ok()).unwrap_or("");
//!     if accept.contains("br") { "br" } else if accept.contains("gzip") { "gzip" } else { "identity" }
//!         .to_owned()
//! }
//!
//! async fn create_order(State(cache): State<Cache>) -> &'static str {
//!     // After the order is committed: every instance misses the menu.
//!     let _ = cache.invalidate("menu:*").await;
//!     "created"
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = Cache::builder().name("api").build()?;
//! let layer = CacheLayer::new(cache.clone())
//!     .route(
//!         "/menu/*",
//!         RoutePolicy::new(Duration::from_secs(60))
//!             .stale_while_revalidate(Duration::from_secs(30))
//!             .s_maxage(Duration::from_secs(300))
//!             .namespace("menu:daily:"),
//!     )
//!     .route(
//!         "/users/*",
//!         RoutePolicy::new(Duration::from_secs(30))
//!             .namespace("user:profile:")
//!             // The verified subject of the token; here simply the header.
//!             .per_user(|parts| {
//!                 let token = parts.headers.get("authorization")?.to_str().ok()?;
//!                 Some(token.strip_prefix("Bearer ")?.to_owned())
//!             }),
//!     )
//!     .accept_encoding(negotiated)
//!     .tag_headers(true);
//! let app = Router::new()
//!     .route("/menu/daily", get(|| async { "ragi mudde" }))
//!     .route("/users/{id}", get(|| async { "{\"name\":\"Asha\"}" }))
//!     .route("/orders/create", post(create_order))
//!     .with_state(cache)
//!     .layer(layer);
//!
//! let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
//! let menu = app.clone().oneshot(get("/menu/daily")).await?;
//! assert_eq!(menu.headers()["surrogate-key"], "menu:* menu:daily:*");
//! assert_eq!(app.clone().oneshot(get("/menu/daily")).await?.headers()["x-cache"], "HIT-L1");
//!
//! let order = Request::post("/orders/create").body(Body::empty())?;
//! app.clone().oneshot(order).await?;
//! assert_eq!(app.clone().oneshot(get("/menu/daily")).await?.headers()["x-cache"], "MISS");
//!
//! let mine = Request::get("/users/7").header("authorization", "Bearer u7").body(Body::empty())?;
//! let response = app.oneshot(mine).await?;
//! assert_eq!(response.headers()["cache-control"], "private, max-age=30");
//! # Ok(())
//! # }
//! ```
//!
//! # Routes
//!
//! [`CacheLayer::route`] adds a pattern and its policy: an exact path
//! (`/menu/daily`) or a prefix ending in `*` (`/schools/*`), compared with
//! the normalised path; the first match wins. Requests no route matches,
//! and methods other than GET and HEAD, pass through untouched (no
//! `X-Cache`). [`CacheLayer::with_policy`] applies one policy to every
//! path, for a layer put on a single route.
//!
//! # Keys
//!
//! An entry's key is
//!
//! ```text
//! {namespace}GET {path}[?{query}][ user={id}]
//! ```
//!
//! - `namespace` is the route's ([`RoutePolicy::namespace`], default
//!   `http:`), so that `cache.invalidate("menu:*")` reaches every entry of a
//!   route under `menu:daily:`;
//! - `path` is normalised as RFC 3986 section 6.2.2 says: escapes of
//!   unreserved characters decoded (`%7E` → `~`), other escapes in upper
//!   case (`%2f` → `%2F`), characters not allowed in a path encoded; case,
//!   slashes and dot-segments are kept, and a segment that would decode to
//!   `.` or `..` keeps its dots encoded;
//! - `query` is each parameter normalised the same way, empty ones dropped,
//!   stably sorted by name: `?b=2&a=1` and `?a=1&b=2` share an entry,
//!   `?a=1&a=2` and `?a=2&a=1` do not. An empty query is none;
//! - `user=` appears on per-user routes, with the id from
//!   [`RoutePolicy::per_user`] (spaces, `%` and non-ASCII escaped).
//!
//! The host is not part of the key: a service that answers several hosts
//! differently puts them in different namespaces (a layer per host) or
//! sends `Vary: Host`.
//!
//! HEAD requests use the GET key. On a miss the service receives the
//! request with the normalised path and query, so what is stored is always
//! the answer to the key, whatever spelling of the URI came first.
//!
//! A response with `Vary` is stored under a variant key, and the primary
//! key holds the list of `Vary` names:
//!
//! ```text
//! {primary} vary {name}={value} {name}={value}…
//! ```
//!
//! with names in lower case and each value the request's header lines
//! trimmed and joined with `, ` (escaped as above). The value for
//! `accept-encoding` comes from [`CacheLayer::accept_encoding`] when set:
//! with a hook that returns the negotiated coding, `gzip, br` and
//! `br;q=1, gzip` share the `br` entry. Keys over 4 KiB are not cached.
//!
//! # What is never cached, and why
//!
//! - Requests with `Authorization` or `Cookie`, unless the route has a
//!   per-user key: their answers may belong to one user. They are not even
//!   looked up (`X-Cache: BYPASS`). Per-user answers are sent with
//!   `Cache-Control: private`, never `public`, and without tags. Credentials
//!   in other headers (an API key) are not recognised: a route that reads
//!   them must send `Vary` on that header or `Cache-Control: private`.
//! - Responses with `Set-Cookie`: they start or change a session.
//! - Responses with `Cache-Control: private`, `no-store` or `no-cache` (also
//!   with field lists): the handler said so.
//! - Responses with `Vary: *`, or varying on more than 8 headers.
//! - Statuses the policy does not list (default 200, 203, 204, 300, 301,
//!   308, 404, 410): a 500 is never stored.
//! - Bodies over [`RoutePolicy::max_body_bytes`] (default 1 MiB): read up
//!   to the cap, then sent on as they stream, complete. Bodies with
//!   trailers.
//!
//! Such responses pass through with `X-Cache: MISS`. A request's own
//! `Cache-Control` (`no-cache` from a browser's reload) does not bypass
//! the cache: a shared server-side cache that obeyed it would let any
//! client send every request to the service.
//!
//! # Headers, validators and 304
//!
//! Stored responses keep their headers except hop-by-hop ones,
//! `Content-Length` (recomputed) and, when the policy emits its own
//! ([`RoutePolicy::cache_control`], on by default), `Cache-Control`. They
//! are sent with:
//!
//! - `Cache-Control: public, max-age=<ttl>[, s-maxage=…][,
//!   stale-while-revalidate=…]` (per-user: `private, max-age=<ttl>`);
//! - a strong `ETag`: the response's own if it has a strong one, else one
//!   computed from the stored bytes (a weak tag from an inner compression
//!   layer is replaced: the stored bytes are exact);
//! - `Age` on hits, from the time stored in the entry;
//! - `X-Cache: HIT-L1 | HIT-L2 | STALE | MISS | BYPASS`, and the same as a
//!   [`CacheStatus`] response extension for a metrics layer;
//! - `Surrogate-Key` and `Cache-Tag` with [`CacheLayer::tag_headers`].
//!
//! A request whose `If-None-Match` matches the entry's tag (weak
//! comparison, `*` included) gets a 304 with `ETag`, `Cache-Control`,
//! `Vary`, `Date`, `Age` and `X-Cache` and no body, from the cache, without
//! calling the service; only for 2xx entries. On a miss, `If-None-Match`
//! and `If-Modified-Since` are removed before the service is called, so
//! that it sends a full body to store; the client still gets a 304 if its
//! tag matches the new one.
//!
//! # HEAD
//!
//! A HEAD request is answered from the GET entry: same status and headers,
//! including the body's `Content-Length`, no body, no service call. On a
//! miss the service receives a GET (its answer is stored for both).
//!
//! # Freshness and stale-while-revalidate
//!
//! The layer decides freshness from the times stored in the entry (wall
//! clock, so every instance agrees), and keeps entries in L1 and L2 for
//! the TTL plus the stale window. Within the TTL, a hit is `HIT-L1` or
//! `HIT-L2`. Within the stale window, the entry is served at once as
//! `STALE` and one background request per key (a GET rebuilt from the
//! request, without validators, with an empty body) refreshes it; at most
//! 1024 refreshes run at a time per layer. Later, it is a miss.
//!
//! # Miss coalescing
//!
//! Concurrent misses of one key cost the service one call: the first goes
//! through, the others wait for it (up to 5 s by default,
//! [`CacheLayer::coalesce`]) and are then served the stored answer as
//! `HIT-L1`; when it was not stored or the wait ran out, each calls the
//! service itself. A cancelled first request releases the others at once.
//! Coalescing is per instance; instances sharing a Redis each make their own
//! first call.
//!
//! # Invalidation
//!
//! Entries are stored through the engine, with the invalidation token taken
//! before the service is called: [`Cache::invalidate`](crate::Cache::invalidate)
//! of a prefix covering a route's namespace makes its entries miss on every
//! instance sharing the Redis, also an answer that was being produced while
//! the invalidation came in. Handlers hold a clone of the same [`Cache`](crate::Cache).
//!
//! # Requirements
//!
//! The service must be `Clone + Send + 'static` with a `Send` future (a
//! clone is called on misses and for refreshes), and the request body
//! `Default + Send` (refreshes send an empty one): axum's `Router` and
//! `Body` qualify. The service's error type and its body's error type are
//! kept.
//!
//! # Metrics
//!
//! `hasivu_cache_http_responses_total{cache, status}` with `status` one of
//! `hit_l1`, `hit_l2`, `stale`, `miss`, `bypass`;
//! `hasivu_cache_http_not_modified_total{cache}`;
//! `hasivu_cache_http_refreshes_total{cache}`;
//! `hasivu_cache_http_coalesced_total{cache}` (misses served the answer of
//! the same key's miss in flight). Handles are resolved when the
//! layer is built.
//!
//! # Differences from the report
//!
//! The report's cache has three layers: in-process memory, Redis, and
//! "L3: CDN caching", which it describes but does not build. This layer is
//! L1 + L2 for HTTP answers; for the CDN it emits what a CDN needs to do
//! its part (`Cache-Control` with `s-maxage` and `stale-while-revalidate`,
//! strong `ETag`s, and `Surrogate-Key` / `Cache-Tag` matching the
//! invalidation patterns so a purge can follow an invalidation), without
//! calling any CDN's API.

mod body;
mod coalesce;
mod entry;
mod flow;
mod future;
pub(crate) mod headers;
pub(crate) mod key;
mod layer;
mod policy;
mod service;
mod status;
#[cfg(test)]
mod tests;

pub use body::CacheBody;
pub use future::ResponseFuture;
pub use layer::CacheLayer;
pub use policy::RoutePolicy;
pub use service::CacheService;
pub use status::CacheStatus;
