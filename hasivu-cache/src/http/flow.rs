//! What happens to a request on a cached route: lookup, serving a hit or
//! a 304, the miss (forward, read, decide, store), and the background
//! refresh of a stale entry.

use std::{pin::Pin, sync::Arc};

use bytes::{Buf, Bytes, BytesMut};
use http::{
    HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header, request, response,
    uri::PathAndQuery,
};
use http_body::Body;
use tower_service::Service;

use super::{
    CacheBody, CacheStatus,
    coalesce::Join,
    entry::{Entry, Freshness, HttpEncoding, StoredResponse},
    future::{X_CACHE, mark},
    headers::{
        CacheControl, Vary, if_none_match, is_stored, is_strong_etag, kept_in_not_modified,
        strong_etag,
    },
    key::{MAX_KEY_BYTES, variant_key},
    layer::{Route, Shared},
};
use crate::{
    Cache, Codec, EntryOptions,
    cache::{Found, LoadToken},
    message::now_ms,
};

/// What `call` decided for a request on a cached route.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// The index of the matched route.
    pub(crate) route: usize,
    pub(crate) primary: String,
    /// The normalised path and query, sent to the service on a miss so
    /// that the stored answer is the answer to the key.
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    /// Keyed by a user id: sent `private`, without tags.
    pub(crate) per_user: bool,
    /// A HEAD request: served from the GET entry, without a body.
    pub(crate) head: bool,
}

pub(crate) async fn handle<S, C, ReqBody, B>(
    shared: Arc<Shared<C>>,
    plan: Plan,
    service: S,
    mut req: Request<ReqBody>,
) -> Result<Response<CacheBody<B>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<B>> + Send + 'static,
    S::Future: Send,
    C: Codec,
    ReqBody: Default + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Send,
{
    let mut service = Some(service);
    if let Some(response) = hit(&shared, &plan, &mut service, &mut req).await {
        return Ok(response);
    }
    let service = service.expect("only a hit takes the service");
    // The miss path lives in a future of its own, boxed only when taken,
    // so a hit moves and allocates a small future.
    Box::pin(coalesced_miss(shared, plan, service, req)).await
}

/// Serves the request from the cache when a fresh or stale entry is there;
/// a stale one is refreshed in the background with the service, taken out
/// of `service` (by reference, so that a hit moves nothing big; `&mut`
/// for the request keeps the future `Send` without `ReqBody: Sync`).
async fn hit<S, C, ReqBody, B>(
    shared: &Arc<Shared<C>>,
    plan: &Plan,
    service: &mut Option<S>,
    req: &mut Request<ReqBody>,
) -> Option<Response<CacheBody<B>>>
where
    S: Service<Request<ReqBody>, Response = Response<B>> + Send + 'static,
    S::Future: Send,
    C: Codec,
    ReqBody: Default + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Send,
{
    let route = &shared.routes[plan.route];
    let hit = lookup(shared, &plan.primary, &route.options, req.headers()).await?;
    let now = now_ms();
    let status = match hit.response.freshness(now) {
        Freshness::Fresh => hit.level,
        Freshness::Stale => CacheStatus::Stale,
        Freshness::Expired => return None,
    };
    let not_modified = if_none_match(
        req.headers()
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .map(HeaderValue::as_bytes),
        hit.response.etag().map_or(&b""[..], HeaderValue::as_bytes),
    );
    let response = serve(
        shared,
        route,
        plan,
        &hit.response,
        status,
        now,
        not_modified,
    );
    if status == CacheStatus::Stale
        && let Some(service) = service.take()
    {
        let key = hit.key.unwrap_or_else(|| plan.primary.clone());
        refresh_in_background(shared, plan, &key, service, req);
    }
    Some(response)
}

/// A miss, coalesced with the same key's miss in flight (see
/// [`CacheLayer::coalesce`](super::CacheLayer::coalesce)).
async fn coalesced_miss<S, C, ReqBody, B>(
    shared: Arc<Shared<C>>,
    plan: Plan,
    service: S,
    mut req: Request<ReqBody>,
) -> Result<Response<CacheBody<B>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<B>> + Send + 'static,
    S::Future: Send,
    C: Codec,
    ReqBody: Default + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Send,
{
    let Some(wait) = shared.coalesce else {
        return miss(shared, plan, service, req).await;
    };
    match shared.loading.join(&plan.primary) {
        Join::Leader(claim) => {
            let response = miss(shared, plan, service, req).await;
            // Stored (or not) by now: the followers look again.
            drop(claim);
            response
        }
        Join::Follower(mut done) => {
            // Returns when the leader ends (the channel closes); a leader
            // that takes longer than `wait` is not waited for.
            let _ = tokio::time::timeout(wait, done.changed()).await;
            let mut service = Some(service);
            if let Some(response) = hit(&shared, &plan, &mut service, &mut req).await {
                shared.metrics.coalesced.increment(1);
                return Ok(response);
            }
            let service = service.expect("only a hit takes the service");
            miss(shared, plan, service, req).await
        }
        Join::Alone => miss(shared, plan, service, req).await,
    }
}

/// A miss: the service answers a plain GET for the normalised URI.
async fn miss<S, C, ReqBody, B>(
    shared: Arc<Shared<C>>,
    plan: Plan,
    mut service: S,
    req: Request<ReqBody>,
) -> Result<Response<CacheBody<B>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<B>> + Send + 'static,
    S::Future: Send,
    C: Codec,
    ReqBody: Default + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Send,
{
    let route = &shared.routes[plan.route];
    let token = shared.cache.load_token();
    let if_none_match_lines: Vec<HeaderValue> = req
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .cloned()
        .collect();
    let (mut parts, body) = req.into_parts();
    forward(&mut parts, &plan);
    let request_headers = parts.headers.clone();
    let response = service.call(Request::from_parts(parts, body)).await?;
    match fetch(&shared, route, &plan, &request_headers, response, token).await {
        Fetched::Stored(stored) => {
            let not_modified = if_none_match(
                if_none_match_lines.iter().map(HeaderValue::as_bytes),
                stored.etag().map_or(&b""[..], HeaderValue::as_bytes),
            );
            Ok(serve(
                &shared,
                route,
                &plan,
                &stored,
                CacheStatus::Miss,
                stored.stored_at_ms,
                not_modified,
            ))
        }
        Fetched::Uncached(mut response) => {
            if plan.head {
                *response.body_mut() = CacheBody::empty();
            }
            mark(&mut response, CacheStatus::Miss);
            shared.metrics.response(CacheStatus::Miss);
            Ok(response)
        }
    }
}

/// A response found in the cache.
struct Hit {
    response: Arc<StoredResponse>,
    /// The variant's key, when the primary key held a `Vary` marker.
    key: Option<String>,
    level: CacheStatus,
}

async fn lookup<C: Codec>(
    shared: &Shared<C>,
    primary: &str,
    options: &EntryOptions,
    request_headers: &HeaderMap,
) -> Option<Hit> {
    let (entry, level) = find(&shared.cache, primary, options).await?;
    match entry {
        Entry::Response(response) => Some(Hit {
            response,
            key: None,
            level,
        }),
        Entry::Vary(names) => {
            let key = variant(shared, primary, &names, request_headers)?;
            match find(&shared.cache, &key, options).await? {
                (Entry::Response(response), variant_level) => Some(Hit {
                    response,
                    key: Some(key),
                    // An L2 round trip for either read makes it an L2 hit.
                    level: if level == CacheStatus::HitL2 {
                        level
                    } else {
                        variant_level
                    },
                }),
                (Entry::Vary(_), _) => None,
            }
        }
    }
}

/// One key's entry, and where it was. Errors (Redis in strict mode) are
/// misses: the service can still answer.
async fn find<C: Codec>(
    cache: &Cache<C>,
    key: &str,
    options: &EntryOptions,
) -> Option<(Entry, CacheStatus)> {
    match cache.lookup_with(key, options, HttpEncoding).await {
        Ok(Found::L1(entry) | Found::Stale(entry)) => Some((entry, CacheStatus::HitL1)),
        Ok(Found::L2(entry)) => Some((entry, CacheStatus::HitL2)),
        Ok(Found::Miss) | Err(_) => None,
    }
}

/// The key of the variant the request selects; `None` when too long.
fn variant<C>(
    shared: &Shared<C>,
    primary: &str,
    names: &[String],
    request_headers: &HeaderMap,
) -> Option<String> {
    let values: Vec<Vec<u8>> = names
        .iter()
        .map(|name| match (&shared.accept_encoding, name.as_str()) {
            (Some(hook), "accept-encoding") => hook(request_headers).trim().as_bytes().to_vec(),
            _ => header_value(request_headers, name),
        })
        .collect();
    let key = variant_key(
        primary,
        names
            .iter()
            .map(String::as_str)
            .zip(values.iter().map(Vec::as_slice)),
    );
    (key.len() <= MAX_KEY_BYTES).then_some(key)
}

/// Every line of a request header, each trimmed, joined with `, `.
fn header_value(headers: &HeaderMap, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, value) in headers.get_all(name).iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(value.as_bytes().trim_ascii());
    }
    out
}

/// Turns a request into what the service sees on a miss or a refresh: a
/// GET (HEAD is answered from the GET entry) for the normalised URI,
/// without the validators the cache answers itself, so that the service
/// sends a full body.
fn forward(parts: &mut request::Parts, plan: &Plan) {
    parts.method = Method::GET;
    parts.headers.remove(header::IF_NONE_MATCH);
    parts.headers.remove(header::IF_MODIFIED_SINCE);
    let normal = parts.uri.path() == plan.path && parts.uri.query() == plan.query.as_deref();
    if !normal {
        let path_and_query = match &plan.query {
            Some(query) => format!("{}?{query}", plan.path),
            None => plan.path.clone(),
        };
        parts.uri = rewritten(&parts.uri, &path_and_query);
    }
}

fn rewritten(uri: &Uri, path_and_query: &str) -> Uri {
    let Ok(path_and_query) = PathAndQuery::try_from(path_and_query) else {
        return uri.clone();
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

/// What became of the service's response.
enum Fetched<B: Body> {
    /// Cacheable and read whole (stored unless its key is too long).
    Stored(Arc<StoredResponse>),
    /// Sent on as it is.
    Uncached(Response<CacheBody<B>>),
}

/// Decides whether the response can be stored, reads its body up to the
/// cap, and stores it.
async fn fetch<C, B>(
    shared: &Shared<C>,
    route: &Route,
    plan: &Plan,
    request_headers: &HeaderMap,
    response: Response<B>,
    token: LoadToken,
) -> Fetched<B>
where
    C: Codec,
    B: Body,
{
    let (parts, body) = response.into_parts();
    let names = match storable(route, &parts) {
        Some(names) => names,
        None => return Fetched::Uncached(Response::from_parts(parts, CacheBody::inner(body))),
    };
    let cap = route.policy.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > cap as u64) || body.size_hint().lower() > cap as u64 {
        return Fetched::Uncached(Response::from_parts(parts, CacheBody::inner(body)));
    }
    let data = match collect(body, cap).await {
        Collected::Whole {
            data,
            trailers: None,
        } => data,
        // Trailers are rare and per response: such a body is not stored.
        Collected::Whole {
            data,
            trailers: Some(trailers),
        } => {
            return Fetched::Uncached(Response::from_parts(
                parts,
                CacheBody::full(data, Some(trailers)),
            ));
        }
        Collected::TooLong { prefix, rest } => {
            return Fetched::Uncached(Response::from_parts(
                parts,
                CacheBody::prefixed(prefix, rest),
            ));
        }
        Collected::Failed { prefix, error } => {
            return Fetched::Uncached(Response::from_parts(
                parts,
                CacheBody::failed(prefix, error),
            ));
        }
    };
    let keep_cache_control = !route.policy.cache_control;
    let mut headers = HeaderMap::with_capacity(parts.headers.len() + 1);
    for (name, value) in &parts.headers {
        if is_stored(name, keep_cache_control) {
            headers.append(name.clone(), value.clone());
        }
    }
    // The bytes are exactly what is served, encoded or not: a strong tag
    // fits them, and a weak one from an inner layer is replaced.
    // Stored once, instead of formatted on every hit.
    if parts.status != StatusCode::NO_CONTENT && !parts.status.is_informational() {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(data.len()));
    }
    if !parts
        .headers
        .get(header::ETAG)
        .is_some_and(|tag| is_strong_etag(tag.as_bytes()))
    {
        headers.insert(header::ETAG, strong_etag(&data));
    }
    let stored = Arc::new(StoredResponse {
        status: parts.status,
        headers,
        body: data,
        stored_at_ms: now_ms(),
        fresh_ms: route.fresh_ms,
        stale_ms: route.stale_ms,
    });
    if route.stores() {
        let cache = &shared.cache;
        let entry = Entry::Response(Arc::clone(&stored));
        if names.is_empty() {
            // Errors (Redis in strict mode) do not change the answer.
            let _ = cache
                .store_with(&plan.primary, entry, &route.options, HttpEncoding, token)
                .await;
        } else if let Some(key) = variant(shared, &plan.primary, &names, request_headers) {
            // The variant first, so a reader who finds the marker finds it.
            let stored_variant = cache
                .store_with(&key, entry, &route.options, HttpEncoding, token)
                .await;
            if stored_variant.is_ok() {
                let _ = cache
                    .store_with(
                        &plan.primary,
                        Entry::Vary(names.into()),
                        &route.options,
                        HttpEncoding,
                        token,
                    )
                    .await;
            }
        }
    }
    Fetched::Stored(stored)
}

/// The `Vary` names of a response that may be stored; `None` when it may
/// not: a status the route does not cache, `Set-Cookie`, `Cache-Control:
/// private`, `no-store` or `no-cache`, or `Vary: *`.
fn storable(route: &Route, parts: &response::Parts) -> Option<Vec<String>> {
    if !route.policy.statuses.contains(&parts.status.as_u16())
        || parts.headers.contains_key(header::SET_COOKIE)
    {
        return None;
    }
    let cache_control = CacheControl::parse(
        parts
            .headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .map(HeaderValue::as_bytes),
    );
    if cache_control.forbids_storing() {
        return None;
    }
    match Vary::parse(
        parts
            .headers
            .get_all(header::VARY)
            .iter()
            .map(HeaderValue::as_bytes),
    ) {
        Vary::Names(names) => Some(names),
        Vary::Uncacheable => None,
    }
}

/// A body read up to a cap.
enum Collected<B: Body> {
    Whole {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    /// Over the cap: what was read, and the rest still to come.
    TooLong { prefix: Bytes, rest: Pin<Box<B>> },
    /// The body failed after `prefix`.
    Failed { prefix: Bytes, error: B::Error },
}

async fn collect<B: Body>(body: B, cap: usize) -> Collected<B> {
    let mut body = Box::pin(body);
    let mut chunks = Chunks::default();
    let mut trailers: Option<HeaderMap> = None;
    loop {
        match std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            None => {
                return Collected::Whole {
                    data: chunks.into_bytes(),
                    trailers,
                };
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => {
                    chunks.push(data.copy_to_bytes(data.remaining()));
                    if chunks.len > cap {
                        return Collected::TooLong {
                            prefix: chunks.into_bytes(),
                            rest: body,
                        };
                    }
                }
                Err(frame) => {
                    if let Ok(more) = frame.into_trailers() {
                        trailers.get_or_insert_with(HeaderMap::new).extend(more);
                    }
                }
            },
            Some(Err(error)) => {
                return Collected::Failed {
                    prefix: chunks.into_bytes(),
                    error,
                };
            }
        }
    }
}

/// Body chunks: one stays as it came (no copy), more are joined once.
#[derive(Default)]
struct Chunks {
    parts: Vec<Bytes>,
    len: usize,
}

impl Chunks {
    fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.len += bytes.len();
            self.parts.push(bytes);
        }
    }

    fn into_bytes(mut self) -> Bytes {
        match self.parts.len() {
            0 => Bytes::new(),
            1 => self.parts.pop().expect("one part"),
            _ => {
                let mut joined = BytesMut::with_capacity(self.len);
                for part in self.parts {
                    joined.extend_from_slice(&part);
                }
                joined.freeze()
            }
        }
    }
}

/// The answer from a stored response: the full response (headers only for
/// HEAD), or a 304 when the request's `If-None-Match` matches and the
/// stored status is 2xx.
fn serve<C, B: Body>(
    shared: &Shared<C>,
    route: &Route,
    plan: &Plan,
    stored: &StoredResponse,
    status: CacheStatus,
    now: u64,
    not_modified: bool,
) -> Response<CacheBody<B>> {
    // Room for what is added below, so no insert regrows the map.
    let mut headers = HeaderMap::with_capacity(stored.headers.len() + 7);
    for (name, value) in &stored.headers {
        headers.append(name.clone(), value.clone());
    }
    // A per-user answer is marked private whatever the route emits, so no
    // shared cache downstream keeps one user's answer for another.
    if plan.per_user {
        headers.insert(header::CACHE_CONTROL, route.private.clone());
    } else if route.policy.cache_control {
        headers.insert(header::CACHE_CONTROL, route.public.clone());
    }
    if shared.tag_headers && !plan.per_user {
        if let Some(keys) = &route.surrogate_key {
            headers.insert("surrogate-key", keys.clone());
        }
        if let Some(tags) = &route.cache_tag {
            headers.insert("cache-tag", tags.clone());
        }
    }
    headers.insert(X_CACHE, status.header_value());
    if status != CacheStatus::Miss {
        headers.insert(header::AGE, age_value(stored.age_ms(now) / 1000));
    }
    let not_modified = not_modified && stored.status.is_success();
    let mut response = if not_modified {
        let mut kept = HeaderMap::with_capacity(8);
        for (name, value) in &headers {
            if kept_in_not_modified(name) || name == X_CACHE || name == header::AGE {
                kept.append(name.clone(), value.clone());
            }
        }
        let mut response = Response::new(CacheBody::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        *response.headers_mut() = kept;
        shared.metrics.not_modified.increment(1);
        response
    } else {
        if stored.status != StatusCode::NO_CONTENT
            && !stored.status.is_informational()
            && !headers.contains_key(header::CONTENT_LENGTH)
        {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(stored.body.len()));
        }
        let body = if plan.head {
            CacheBody::empty()
        } else {
            CacheBody::full(stored.body.clone(), None)
        };
        let mut response = Response::new(body);
        *response.status_mut() = stored.status;
        *response.headers_mut() = headers;
        response
    };
    response.extensions_mut().insert(status);
    shared.metrics.response(status);
    response
}

/// The `Age` value: formatted once per second of age up to an hour, then
/// shared by every hit.
fn age_value(seconds: u64) -> HeaderValue {
    static AGES: std::sync::OnceLock<Box<[HeaderValue]>> = std::sync::OnceLock::new();
    let ages = AGES.get_or_init(|| (0..=3600_u64).map(HeaderValue::from).collect());
    usize::try_from(seconds)
        .ok()
        .and_then(|s| ages.get(s))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(seconds))
}

/// Refreshes a stale entry in a task of its own: one refresh per key at a
/// time, a bounded number in all, and none outside a Tokio runtime.
fn refresh_in_background<S, C, ReqBody, B>(
    shared: &Arc<Shared<C>>,
    plan: &Plan,
    key: &str,
    mut service: S,
    req: &Request<ReqBody>,
) where
    S: Service<Request<ReqBody>, Response = Response<B>> + Send + 'static,
    S::Future: Send,
    C: Codec,
    ReqBody: Default + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Send,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let Some(claim) = shared.refreshing.claim(key) else {
        return;
    };
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.uri = req.uri().clone();
    parts.version = req.version();
    parts.headers = req.headers().clone();
    parts.extensions = req.extensions().clone();
    forward(&mut parts, plan);
    let request_headers = parts.headers.clone();
    let request = Request::from_parts(parts, ReqBody::default());
    let shared = Arc::clone(shared);
    let plan = plan.clone();
    shared.metrics.refreshes.increment(1);
    runtime.spawn(async move {
        let _claim = claim;
        let token = shared.cache.load_token();
        let Ok(response) = service.call(request).await else {
            return;
        };
        let route = &shared.routes[plan.route];
        let _ = fetch(&shared, route, &plan, &request_headers, response, token).await;
    });
}
