//! The abuse shield: scores each request with detectors, refuses the ones
//! that score too high, and keeps abusive clients on a blocklist.
//!
//! [`ShieldLayer`] runs every [`Detector`] on each request and adds up
//! their scores, as the OWASP Core Rule Set's anomaly scoring does. At the
//! threshold (default 5) the [`Action`] applies: by default the request is
//! answered `429 Too Many Requests` with a `SECURITY_VIOLATION` problem,
//! and a client IP that does this 5 times within 10 minutes ([`Strikes`])
//! is blocklisted for an hour. Blocked clients are refused before their
//! request is parsed; allow-listed networks are never inspected, scored or
//! refused.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use hasivu_ratelimit::{http::PeerAddr, shield::{InspectedBody, ShieldLayer}};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let service = ServiceBuilder::new()
//!     .layer(ShieldLayer::new())
//!     .service(service_fn(|_req: Request<InspectedBody<String>>| async {
//!         Ok::<_, Infallible>(Response::new("menu".to_owned()))
//!     }));
//!
//! let request = |uri: &str| {
//!     let mut request = Request::get(uri).body(String::new()).unwrap();
//!     request.extensions_mut().insert(PeerAddr("203.0.113.7:5000".parse().unwrap()));
//!     request
//! };
//! // Harmless text that naive checks flag passes.
//! let plan = service.clone().oneshot(request("/plans?q=Select+your+plan")).await.unwrap();
//! assert_eq!(plan.status(), StatusCode::OK);
//! // An injection is refused…
//! let injection = "/menu?id=1%27%20OR%20%271%27%3D%271";
//! let attack = service.clone().oneshot(request(injection)).await.unwrap();
//! assert_eq!(attack.status(), StatusCode::TOO_MANY_REQUESTS);
//! // …but one request blocks no one: others behind that address pass.
//! let next = service.clone().oneshot(request("/plans")).await.unwrap();
//! assert_eq!(next.status(), StatusCode::OK);
//! // Five within ten minutes block the client for an hour.
//! for _ in 0..4 {
//!     service.clone().oneshot(request(injection)).await.unwrap();
//! }
//! let after = service.oneshot(request("/plans")).await.unwrap();
//! assert_eq!(after.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(after.headers()["retry-after"], "3600");
//! # }
//! ```
//!
//! A customised shield: behind a load balancer, with a partner network on
//! the allow-list, a lower threshold, blocks after 3 violations within 5
//! minutes for half an hour, one detector of your own, and a shared
//! blocklist with the `redis` feature (`RedisBlocklist::builder(url).build()?`
//! in place of the local one):
//!
//! ```
//! use std::time::Duration;
//! use hasivu_ratelimit::{
//!     Cidr, TrustedProxies,
//!     http::ClientIpKey,
//!     shield::{Action, Finding, Inspection, Limits, LocalBlocklist, ShieldLayer, Strikes},
//! };
//!
//! let blocklist = LocalBlocklist::new();
//! let layer = ShieldLayer::new()
//!     .client_ip(ClientIpKey::trusted_proxies(TrustedProxies::new(["10.0.0.0/8"]).unwrap()))
//!     .allow(Cidr::parse("198.51.100.0/24").unwrap())
//!     .threshold(4)
//!     .action(Action::Block { ttl: Duration::from_secs(1800) })
//!     .strikes(Strikes { count: 3, window: Duration::from_secs(300), ..Strikes::default() })
//!     .detector(|request: &Inspection<'_>| {
//!         (request.method() == "TRACE").then_some(Finding::new("trace_method", 5))
//!     })
//!     .limits(Limits { body_bytes: 16 * 1024, ..Limits::default() })
//!     .blocklist(blocklist.clone());
//! // Keep `blocklist` to list or unblock clients from an admin endpoint.
//! # let _ = layer;
//! ```
//!
//! # Detectors, weights and what they ignore
//!
//! | Detector | Reason | Weight | Catches | Ignores |
//! |---|---|---|---|---|
//! | [`SqlInjection`] | `sqli` | 5 | `1' OR '1'='1`, `1 OR 1=1`, `admin'--`, `UNION [ALL] SELECT …`, `; DROP TABLE`, `SLEEP(5)`, `BENCHMARK(`, `WAITFOR DELAY '…'`, `' AND 1=CONVERT(`, `EXTRACTVALUE(`, `ORDER BY 3--`, `INTO OUTFILE` | "Select your plan", "Union von Europa", "O'Brien", "2104 GRANT AVE #A", "Yahoo! (Y!)", `updated_at`, "drop-off point", "Delete my account please" |
//! | [`Xss`] | `xss` | 5 | `<script`, event handlers (`<img src=x onerror=…>`, `<svg/onload=…>`), `javascript:`/`vbscript:`/`data:text/html` URLs (also with entities, tabs, mixed case), `srcdoc`, CSS `expression(`, attribute and JavaScript-string breakouts (`" onmouseover="…`, `';alert(1)//`) | `<b>bold</b>`, `<a href="https://…">terms</a>`, `<img src="https://…">`, a YouTube `<iframe>`, "I <3 biryani", "JavaScript: the good parts" |
//! | [`PathTraversal`] | `traversal` | 5 | `..` segments in the path (also `%2e%2e%2f`, `%252e`, `%c0%ae`, backslashes) and NUL bytes; in values, `..` with intent (three levels, `etc/passwd`, `win.ini`, an evasive encoding, a NUL), absolute sensitive paths, `file://`, `php://filter` | `../images/a.png` in a Markdown body, "Wait...", `1..5` |
//! | [`UserAgents`] | `scanner_agent` / `bot_agent` | 2 / 1 | `sqlmap`, `Nikto`, `Nmap`, `masscan`, `nuclei`…; `curl`, `python-requests`, `…bot`, no user agent | browsers, allow-listed crawlers (`Googlebot`, `bingbot`…) |
//! | [`RapidRequests`] | `rapid_requests` | 3 | more than 100 at once or 10 per second sustained | ordinary browsing |
//! | [`ProbePaths`] | `probe_path` | 3 | `/.env`, `/.git/`, `/wp-admin`, `/wp-login.php`, `/phpmyadmin`, `/actuator`, `*.php`, `*.bak`… | `/environment`, your routes |
//! | [`NotFoundRate`] | `not_found_rate` | 2 | 30 or more 404 answers in a sliding minute | a few broken links |
//! | [`DistinctPaths`] | `distinct_paths` | 2 | 150 or more distinct paths in a minute | browsing an app |
//! | the layer itself | `undecoded_body` | 2 ([`undecoded_body_weight`](ShieldLayer::undecoded_body_weight)) | a JSON or form body in a coding the shield does not decode (`br`, `zstd`, `gzip, gzip`, unknown), or that does not decode as it claims | `gzip` and `deflate` bodies, decoded and inspected (feature `gzip`, default) |
//!
//! SQL injection and XSS look at every decoded path segment, query name and
//! value, and string of a JSON or form body; they tokenise (a SQL lexer
//! with quote styles, comments and MySQL's `/*!…*/`; a start-tag reader)
//! and match the shape of an injection, never a keyword alone. Each value
//! is read as it is and as the rest of a single- or double-quoted string,
//! so `x' OR 'a'='a` and `1 OR 1=1` are both seen in the context where
//! they would run. A cheap prefilter skips values without the characters
//! or keywords an injection needs, so clean requests cost little.
//!
//! **Why a user agent can never block alone.** The user agent is the
//! client's own claim: forged by attackers, and shared by harmless scripts
//! and monitors. Its weights (2 for known attack tools, 1 for automation)
//! stay below the threshold, so it only tips the balance together with a
//! real sign: `sqlmap` probing `/.env` scores 2 + 3 = 5 and is blocked;
//! `curl` fetching the menu scores 1 and is only logged. The same goes for
//! rapid requests (3), probes (3), a 404 rate (2) and many distinct paths
//! (2): each alone is logged, two together block.
//!
//! # Threshold and actions
//!
//! The score is the sum of the findings of one request (stateful detectors
//! bring in the client's recent history). A score of 1 or more is logged
//! (`suspicious request`: at `DEBUG` below half the threshold, so that a
//! lone weak sign such as curl's user agent does not fill the logs, at
//! `INFO` from half the threshold; one event per client per 10 s, see
//! [`ShieldLayer::log_every`]) and the inner service can read the
//! [`ShieldVerdict`] from the request's extensions. At the threshold:
//!
//! - [`Action::LogOnly`]: logged and let through (shadow mode);
//! - [`Action::Reject`]: `429` with an `application/problem+json` body
//!   `{"type":"urn:hasivu:problem:security-violation","code":"SECURITY_VIOLATION",…}`
//!   that echoes nothing of the request;
//! - [`Action::Block`] (default, one hour): the same, and the request is a
//!   strike against the client IP (IPv6 by /64). At [`Strikes::count`]
//!   strikes within [`Strikes::window`] (default 5 within 10 minutes;
//!   [`Strikes::first`] blocks at once) the client goes on the
//!   [`Blocklist`]. Until the block expires the client's requests are
//!   refused with the same problem and a `Retry-After` of the remaining
//!   time, before anything is parsed.
//!
//! One request never blocks an address: a page that embeds
//! `<img src="https://api.example/menu?q=1'+OR+'1'='1">` makes every
//! visitor's browser send an injection, and a school behind one NAT
//! address would lose the API. Strikes are counted for at most
//! [`Strikes::max_clients`] addresses, clients with the most strikes kept
//! longest.
//!
//! **Authenticated requests.** The shield runs before authentication, so
//! it knows a request only by its address. Give it
//! [`ShieldLayer::authenticated`], a hook that verifies the request's
//! credentials as your authentication does (signature and expiry, not
//! mere presence), and requests it recognises are refused at the threshold
//! like any other but never count a strike or block their address, and
//! are served (and inspected) even while their address is blocked:
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode, header, request::Parts};
//! use hasivu_ratelimit::{http::PeerAddr, shield::{Blocklist, InspectedBody, ShieldLayer}};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! // Your authentication's own check of a bearer token.
//! fn verify(token: &str) -> bool {
//!     token == "signed-and-unexpired"
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = ShieldLayer::new().authenticated(|parts: &Parts| {
//!     parts
//!         .headers
//!         .get(header::AUTHORIZATION)
//!         .and_then(|v| v.to_str().ok())
//!         .and_then(|v| v.strip_prefix("Bearer "))
//!         .is_some_and(verify)
//! });
//! let blocklist = layer.get_blocklist().clone();
//! let service = layer.layer(service_fn(|_req: Request<InspectedBody<String>>| async {
//!     Ok::<_, Infallible>(Response::new(String::new()))
//! }));
//! let signed_in = |uri: &str| {
//!     let mut request = Request::get(uri)
//!         .header(header::AUTHORIZATION, "Bearer signed-and-unexpired")
//!         .body(String::new())
//!         .unwrap();
//!     request.extensions_mut().insert(PeerAddr("203.0.113.7:5000".parse().unwrap()));
//!     request
//! };
//! // A signed-in user's injection is refused, however often…
//! for _ in 0..10 {
//!     let answer = service.clone().oneshot(signed_in("/menu?id=1%27%20OR%201%3D1--")).await.unwrap();
//!     assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
//! }
//! // …and its address, shared perhaps by a whole school, is not blocked.
//! assert!(blocklist.entries().await.unwrap().is_empty());
//! # }
//! ```
//!
//! The client IP comes from [`ClientIpKey`](crate::http::ClientIpKey):
//! the socket peer, or what trusted proxies forwarded. A spoofed
//! `X-Forwarded-For` from an untrusted peer changes nothing, so a client
//! cannot get another address blocked. A request without a known peer is
//! scored and can be rejected, but never blocked.
//!
//! # Blocklists
//!
//! [`LocalBlocklist`] keeps blocks in process (bounded, expiring).
//! `RedisBlocklist` (feature `redis`) shares them between instances through
//! keys `{prefix}block:<ip>` with a TTL, caches answers for a second to
//! keep the hot path off Redis, bounds every call (50 ms), and fails soft:
//! when Redis is down, lookups answer from what the instance knows, and the
//! error is logged and counted; traffic is never refused and no 5xx is
//! produced because of Redis. Both offer `unblock` and `entries`.
//!
//! # Bounds
//!
//! Inspection is bounded by [`Limits`]: 8 KiB of path, 8 KiB of query,
//! 64 KiB of body, 512 bytes of user agent. Input beyond is not inspected
//! and is counted in `hasivu_shield_uninspected_total{part}`. Only JSON
//! (`application/json`, `application/*+json`) and form bodies are read;
//! a body that declares a larger `Content-Length` is not buffered at all
//! and streams through; a body of unknown length is read up to the limit,
//! inspected that far, and the rest streams. The inner service always gets
//! every byte, trailer and error of the body, in order ([`InspectedBody`]).
//!
//! **Encoded bodies.** The shield runs before request decompression, so
//! with the `gzip` feature (default) it decodes a `gzip` (or `x-gzip`) or
//! `deflate` body itself to inspect it: at most the body limit of encoded
//! bytes, into at most the body limit of decoded ones. A bomb (10 MB of
//! zeros in 10 KB) stops there and is counted as uninspected; the inner
//! service (and the decompression layer further in) still gets the bytes
//! as sent. A body in a coding the shield does not decode (`br`, `zstd`,
//! stacked codings such as `gzip, gzip`, unknown ones) is not read at all:
//! it scores `undecoded_body` (weight 2, below the threshold: logged, and
//! with one more sign refused) and is counted in
//! `hasivu_shield_uninspected_total{part="body"}`. So is a body that does
//! not decode as it claims, which is inspected as sent too.
//!
//! **Work.** Every detector and decoder is linear in its input and bounded
//! in rounds: percent-decoding at most twice (`%252e`), HTML character
//! references at most twice after the text as sent (`&amp;lt;`), JSON
//! escapes once; no recursion. A huge or deeply nested request costs
//! bounded time, and memory a small multiple of what is inspected: at
//! most a SQL token (12 bytes) per byte of punctuation-dense text, and a
//! copy per round of decoding.
//!
//! **Per-client state.** Rapid requests, 404s, distinct paths, strikes,
//! the log throttle and the local blocklist each keep at most a set number
//! of clients (100 000 by default). When full, clients that have rested go
//! first, then the one worth least (the quietest, with the fewest counts;
//! for the blocklist the block closest to its end), never an arbitrary
//! one: an attacker with many addresses cannot push out its own count or
//! another client's block. Evictions are counted in
//! `hasivu_shield_state_evictions_total{table}`.
//!
//! # Logs and metrics
//!
//! - `hasivu_shield_decisions_total{action, reason}` for every request:
//!   `action` is `pass`, `log`, `reject`, `strike` (refused, and a strike
//!   against the client), `block` or `refuse` (a blocked client), `reason`
//!   the highest-scoring finding (`none`, `allowlisted` and `blocklisted`
//!   otherwise).
//! - `hasivu_shield_findings_total{reason}` for every finding.
//! - `hasivu_shield_uninspected_total{part}`, `hasivu_shield_blocklist_errors_total{op}`,
//!   `hasivu_shield_state_evictions_total{table}`.
//! - A `tracing` event (target `hasivu_ratelimit::shield`) for every
//!   request with a finding, with `ip`, `score`, `threshold`, `reasons`,
//!   `method`, `path` and `action` (and `strikes` for strikes and blocks,
//!   `authenticated` for refusals), at most one per client per 10 s
//!   ([`ShieldLayer::log_every`]) except blocks, which are always logged.
//!   Query strings, bodies and headers are never logged (turn the path off
//!   with [`log_paths`](ShieldLayer::log_paths)).
//!
//! # Differences from the report
//!
//! - The report blocks at a score of 3 with checks that each add 1 or
//!   more; here weights follow CRS (critical signs 5, supporting signs 1–3)
//!   with a threshold of 5, so only an injection, or two supporting signs
//!   together, refuse a request.
//! - The report blocks an address at its first such request, for an hour;
//!   here one request is refused alone, an address is blocked after
//!   repeated ones, and requests with valid credentials never block it.
//! - Its `/(SELECT|UNION…)/i` regex flags "Select your plan" and "Union von
//!   Europa" and misses `1' OR '1'='1`; here SQL and HTML are tokenised and
//!   matched by shape, in pure Rust (libinjection does not build offline,
//!   and libinjectionrs reproduces libinjection's false positives).
//! - Its bot check adds to the score for any bot-looking user agent; here a
//!   user agent can never block alone, and welcome crawlers are
//!   allow-listed.
//! - Its blocklist lives in one process; here it can be shared through
//!   Redis, has an allow-list that always wins and an unblock API.
//! - It logs suspicious requests with their payloads; here logs carry the
//!   path and the reasons, never query values, bodies or secrets.

mod blocklist;
pub(crate) mod detect;
#[cfg(feature = "tower")]
mod log_throttle;
mod state;

#[cfg(feature = "tower")]
mod body;
#[cfg(feature = "tower")]
mod coding;
#[cfg(feature = "tower")]
mod future;
#[cfg(feature = "tower")]
mod layer;
#[cfg(feature = "tower")]
mod service;
#[cfg(feature = "tower")]
mod strikes;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use blocklist::{AnyBlocklist, RedisBlocklist, RedisBlocklistBuilder};
pub use blocklist::{BlockEntry, Blocklist, BlocklistError, LocalBlocklist, Lookup};
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use body::{InspectedBody, ShieldBody};
pub use detect::{
    BodyKind, Detector, DistinctPaths, Field, Finding, Inspection, Limits, Location, NotFoundRate,
    PathTraversal, ProbePaths, RapidRequests, SqlInjection, Truncated, UserAgents, Xss,
};
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use future::ResponseFuture;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use layer::{Action, Authenticated, ShieldLayer};
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use service::Shield;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use strikes::Strikes;

/// The shield's findings on a request it let through (below the threshold,
/// or [`Action::LogOnly`]), in the request's extensions for the inner
/// service. Clean requests carry none.
///
/// ```
/// use http::Request;
/// use hasivu_ratelimit::shield::ShieldVerdict;
///
/// fn suspicious<B>(request: &Request<B>) -> bool {
///     request.extensions().get::<ShieldVerdict>().is_some_and(|v| v.score >= 3)
/// }
/// # assert!(!suspicious(&Request::new(())));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShieldVerdict {
    /// The sum of the findings' scores.
    pub score: u32,
    /// What the detectors found.
    pub findings: Vec<Finding>,
}

#[cfg(all(test, feature = "tower"))]
mod tests;
