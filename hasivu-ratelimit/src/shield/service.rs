//! [`Shield`]: the service.

use std::{
    borrow::Cow,
    collections::VecDeque,
    net::IpAddr,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::{Request, Response, header, request::Parts};
use http_body::Body;
use http_body_util::BodyExt;
use tower_service::Service;

use super::{
    Action, Blocklist, BodyKind, Finding, InspectedBody, Inspection, LocalBlocklist, Lookup,
    ResponseFuture, ShieldBody, ShieldVerdict,
    coding::Coding,
    future::{Next, Observer, Refusal},
    layer::Config,
};

/// Inspects each request before the inner service sees it; built by
/// [`ShieldLayer`](super::ShieldLayer). See the
/// [module docs](crate::shield).
///
/// The inner service receives the request with an [`InspectedBody`]: the
/// original body, or the bytes the shield read followed by the rest.
#[derive(Clone, Debug)]
pub struct Shield<S, Bl = LocalBlocklist> {
    pub(crate) inner: S,
    pub(crate) config: Arc<Config<Bl>>,
}

impl<S, Bl> Shield<S, Bl> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// What the score decided.
enum Outcome {
    Pass(Option<ShieldVerdict>),
    Reject,
    Block(IpAddr, std::time::Duration, String),
}

impl<S, Bl, ReqBody, ResBody> Service<Request<ReqBody>> for Shield<S, Bl>
where
    S: Service<Request<InspectedBody<ReqBody>>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Send,
    Bl: Blocklist,
{
    type Response = Response<ShieldBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (parts, body) = request.into_parts();
        let config = &self.config;
        let ip = config.client_ip.client_ip(&parts);
        if let Some(ip) = ip {
            // The allow-list wins over everything, the blocklist included.
            if config.allowed(ip) {
                count("pass", "allowlisted");
                let fut = self
                    .inner
                    .call(Request::from_parts(parts, InspectedBody::new(body)));
                return ResponseFuture::calling(fut, None);
            }
            // A blocked client is refused before anything is parsed.
            match config.blocklist.lookup_now(ip) {
                // Credentials vouch for a request from a blocked address
                // (shared, perhaps): it is inspected like any other.
                Lookup::Blocked(left) if !config.authenticated(&parts) => {
                    return refuse_blocked(config, ip, left);
                }
                Lookup::Blocked(_) | Lookup::Clear => {}
                Lookup::Unknown => return self.slow(parts, body, Some(ip), true),
            }
        }
        if config.inspect_bodies && body_kind(&parts, &body, config.limits.body_bytes).is_some() {
            return self.slow(parts, body, ip, false);
        }
        match judge(config, ip, &parts, None, false) {
            Outcome::Pass(verdict) => {
                let observer = ip.map(|ip| Observer {
                    ip,
                    detectors: Arc::clone(&config.detectors),
                });
                let mut request = Request::from_parts(parts, InspectedBody::new(body));
                if let Some(verdict) = verdict {
                    request.extensions_mut().insert(verdict);
                }
                ResponseFuture::calling(self.inner.call(request), observer)
            }
            Outcome::Reject => ResponseFuture::refused(Refusal::Violation(None)),
            Outcome::Block(ip, ttl, reasons) => {
                let blocklist = config.blocklist.clone();
                ResponseFuture::pending(
                    async move { Next::Refuse(block(&blocklist, ip, ttl, &reasons).await) }.boxed(),
                )
            }
        }
    }
}

impl<S, Bl> Shield<S, Bl> {
    /// The path that waits: a shared blocklist lookup, reading a body,
    /// writing a block. Boxed; clean requests with an in-process answer
    /// never take it.
    fn slow<ReqBody>(
        &mut self,
        parts: Parts,
        body: ReqBody,
        ip: Option<IpAddr>,
        lookup: bool,
    ) -> ResponseFuture<S::Future>
    where
        S: Service<Request<InspectedBody<ReqBody>>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        ReqBody: Body<Data = Bytes> + Send + 'static,
        ReqBody::Error: Send,
        Bl: Blocklist,
    {
        // The service that was polled ready serves this request; the clone
        // waits for the next `poll_ready`.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = Arc::clone(&self.config);
        ResponseFuture::pending(
            async move {
                if lookup
                    && let Some(ip) = ip
                    && let Some(left) = config.blocklist.lookup(ip).await
                    && !config.authenticated(&parts)
                {
                    log_refused(&config, ip);
                    return Next::Refuse(Refusal::Blocked(left));
                }
                let kind = if config.inspect_bodies {
                    body_kind(&parts, &body, config.limits.body_bytes)
                } else {
                    None
                };
                let limit = config.limits.body_bytes;
                let (body, outcome) = match kind {
                    Some(kind) => match content_coding(&parts) {
                        // Nothing to read in it: it streams through unread,
                        // and scores.
                        Coding::Undecoded => {
                            uninspected_body();
                            let outcome = judge(&config, ip, &parts, None, true);
                            (InspectedBody::new(body), outcome)
                        }
                        Coding::Identity => {
                            let (body, bytes, cut) = read(body, limit).await;
                            if cut {
                                uninspected_body();
                            }
                            let text = String::from_utf8_lossy(&bytes);
                            let read = BodyText {
                                kind,
                                text: &text,
                                as_sent: None,
                                truncated: cut,
                            };
                            (body, judge(&config, ip, &parts, Some(read), false))
                        }
                        #[cfg(feature = "gzip")]
                        coding @ (Coding::Gzip | Coding::Deflate) => {
                            let (body, bytes, cut) = read(body, limit).await;
                            let decoded = super::coding::decode(coding, &bytes, cut, limit);
                            if decoded.truncated || decoded.invalid {
                                uninspected_body();
                            }
                            let text = String::from_utf8_lossy(&decoded.bytes);
                            // A body that does not decode as it claims is
                            // read as sent too: a lenient decoder further in
                            // might take it as it is.
                            let as_sent = decoded.invalid.then(|| String::from_utf8_lossy(&bytes));
                            let read = BodyText {
                                kind,
                                text: &text,
                                as_sent: as_sent.as_deref(),
                                truncated: decoded.truncated,
                            };
                            let outcome = judge(&config, ip, &parts, Some(read), decoded.invalid);
                            (body, outcome)
                        }
                    },
                    None => (
                        InspectedBody::new(body),
                        judge(&config, ip, &parts, None, false),
                    ),
                };
                match outcome {
                    Outcome::Pass(verdict) => {
                        let observer = ip.map(|ip| Observer {
                            ip,
                            detectors: Arc::clone(&config.detectors),
                        });
                        let mut request = Request::from_parts(parts, body);
                        if let Some(verdict) = verdict {
                            request.extensions_mut().insert(verdict);
                        }
                        Next::Call(inner.call(request), observer)
                    }
                    Outcome::Reject => Next::Refuse(Refusal::Violation(None)),
                    Outcome::Block(ip, ttl, reasons) => {
                        Next::Refuse(block(&config.blocklist, ip, ttl, &reasons).await)
                    }
                }
            }
            .boxed(),
        )
    }
}

fn refuse_blocked<F, Bl>(
    config: &Config<Bl>,
    ip: IpAddr,
    left: std::time::Duration,
) -> ResponseFuture<F> {
    log_refused(config, ip);
    ResponseFuture::refused(Refusal::Blocked(left))
}

/// Counts the refusal of a blocked client, and logs it at `DEBUG` at most
/// once per client per interval: a blocked client that keeps sending would
/// otherwise write a line per request. The throttle is only asked when the
/// event would be written, so refusing stays cheap.
fn log_refused<Bl>(config: &Config<Bl>, ip: IpAddr) {
    count("refuse", "blocklisted");
    if tracing::enabled!(target: "hasivu_ratelimit::shield", tracing::Level::DEBUG) {
        match config.log_throttle.admit(Some(ip)) {
            Some(suppressed) => tracing::debug!(
                target: "hasivu_ratelimit::shield",
                %ip,
                suppressed,
                "blocked client refused"
            ),
            None => metrics::counter!("hasivu_shield_log_suppressed_total").increment(1),
        }
    }
}

/// Blocks `ip`; a store failure is logged by the store and changes nothing
/// for this answer.
async fn block<Bl: Blocklist>(
    blocklist: &Bl,
    ip: IpAddr,
    ttl: std::time::Duration,
    reasons: &str,
) -> Refusal {
    if let Err(error) = blocklist.block(ip, ttl, reasons).await {
        tracing::warn!(target: "hasivu_ratelimit::shield", %ip, %error, "could not record the block in the shared blocklist");
    }
    Refusal::Violation(Some(ttl))
}

fn count(action: &'static str, reason: &'static str) {
    metrics::counter!("hasivu_shield_decisions_total", "action" => action, "reason" => reason)
        .increment(1);
}

/// The kind of body worth reading: JSON or a form, not declared larger
/// than the limit, not empty. A larger declared body streams through
/// uninspected (and is counted).
fn body_kind<B: Body>(parts: &Parts, body: &B, limit: usize) -> Option<BodyKind> {
    let hint = body.size_hint();
    if hint.upper() == Some(0) {
        return None;
    }
    let content_type = parts.headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = content_type.split(';').next()?.trim();
    let kind = if essence.eq_ignore_ascii_case("application/json")
        || (essence.len() > 5
            && essence[..12.min(essence.len())].eq_ignore_ascii_case("application/")
            && essence[essence.len() - 5..].eq_ignore_ascii_case("+json"))
    {
        BodyKind::Json
    } else if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        BodyKind::Form
    } else {
        return None;
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or(Some(hint.lower()).filter(|_| hint.upper() == Some(hint.lower())));
    if declared.is_some_and(|len| len > limit as u64) {
        metrics::counter!("hasivu_shield_uninspected_total", "part" => "body").increment(1);
        return None;
    }
    Some(kind)
}

/// Reads up to `limit` bytes of `body` (a little more when a frame crosses
/// the limit) and hands back a body that replays them, then streams the
/// rest. Whether the body went past the limit.
async fn read<B>(body: B, limit: usize) -> (InspectedBody<B>, Bytes, bool)
where
    B: Body<Data = Bytes> + Send + 'static,
{
    let mut body = Box::pin(body);
    let mut frames = VecDeque::new();
    let mut data: Vec<Bytes> = Vec::new();
    let mut read = 0usize;
    let mut error = None;
    let mut ended = false;
    while read <= limit {
        match body.frame().await {
            None => {
                ended = true;
                break;
            }
            Some(Ok(frame)) => {
                if let Some(chunk) = frame.data_ref() {
                    read += chunk.len();
                    data.push(chunk.clone());
                }
                frames.push_back(frame);
            }
            Some(Err(e)) => {
                error = Some(e);
                ended = true;
                break;
            }
        }
    }
    let truncated = !ended;
    let bytes = match data.len() {
        0 => Bytes::new(),
        1 => data.pop().unwrap_or_default(),
        _ => {
            let mut all = BytesMut::with_capacity(read.min(limit + 1));
            for chunk in &data {
                let room = (limit + 1).saturating_sub(all.len());
                all.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            all.freeze()
        }
    };
    let rest = if ended { None } else { Some(body) };
    (InspectedBody::replay(frames, error, rest), bytes, truncated)
}

fn uninspected_body() {
    metrics::counter!("hasivu_shield_uninspected_total", "part" => "body").increment(1);
}

/// The coding the body declares in `Content-Encoding`.
fn content_coding(parts: &Parts) -> Coding {
    Coding::of(
        parts
            .headers
            .get_all(header::CONTENT_ENCODING)
            .iter()
            .map(http::HeaderValue::as_bytes),
    )
}

/// What the shield read of a body.
struct BodyText<'a> {
    kind: BodyKind,
    /// The text to inspect: the body, decoded when it was encoded.
    text: &'a str,
    /// The bytes as sent, also inspected, when they did not decode.
    as_sent: Option<&'a str>,
    /// Whether the body went on past what was inspected.
    truncated: bool,
}

/// Runs the detectors, applies the threshold, logs and counts. `undecoded`
/// adds the finding of a body the shield could not decode.
fn judge<Bl>(
    config: &Config<Bl>,
    ip: Option<IpAddr>,
    parts: &Parts,
    body: Option<BodyText<'_>>,
    undecoded: bool,
) -> Outcome {
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |pq| pq.as_str());
    let mut inspection = Inspection::with_limits(config.limits, parts.method.as_str(), target);
    if let Some(ip) = ip {
        inspection = inspection.with_ip(ip);
    }
    if let Some(agent) = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        inspection = inspection.with_user_agent(agent);
    }
    if let Some(body) = body {
        inspection = inspection
            .with_body(body.kind, body.text)
            .with_body_truncated(body.truncated);
        if let Some(as_sent) = body.as_sent {
            inspection = inspection.with_body(body.kind, as_sent);
        }
    }
    let cut = inspection.truncated();
    for (part, was_cut) in [
        ("path", cut.path),
        ("query", cut.query),
        ("header", cut.header),
    ] {
        if was_cut {
            metrics::counter!("hasivu_shield_uninspected_total", "part" => part).increment(1);
        }
    }
    let mut findings: Vec<Finding> = Vec::new();
    for detector in config.detectors.iter() {
        if let Some(finding) = detector.inspect(&inspection)
            && finding.score > 0
        {
            findings.push(finding);
        }
    }
    if undecoded && config.undecoded_body_weight > 0 {
        findings.push(Finding::new("undecoded_body", config.undecoded_body_weight));
    }
    if findings.is_empty() {
        count("pass", "none");
        return Outcome::Pass(None);
    }
    let score: u32 = findings.iter().map(|f| f.score).sum();
    let over = config.threshold > 0 && score >= config.threshold;
    let decision = match (over, config.action, ip) {
        (false, ..) | (true, Action::LogOnly, _) => Decision::Log,
        (true, Action::Reject, _) | (true, Action::Block { .. }, None) => Decision::Reject,
        // Credentials vouch for the request: refused, but its address
        // (shared, perhaps, by a whole school) is not held against it.
        (true, Action::Block { .. }, Some(_)) if config.authenticated(parts) => {
            Decision::Authenticated
        }
        (true, Action::Block { ttl }, Some(ip)) => {
            let strikes = config.strike_table.strike(ip);
            if strikes >= config.strike_table.count() {
                Decision::Block(ip, ttl, strikes)
            } else {
                Decision::Strike(strikes)
            }
        }
    };
    let primary = findings
        .iter()
        .max_by_key(|f| f.score)
        .map_or("none", |f| f.reason);
    let reasons = findings
        .iter()
        .map(|f| f.reason)
        .collect::<Vec<_>>()
        .join(",");
    count(decision.label(), primary);
    for finding in &findings {
        metrics::counter!("hasivu_shield_findings_total", "reason" => finding.reason).increment(1);
    }
    let path: Cow<'_, str> = if config.log_paths {
        Cow::Borrowed(super::detect::decode::truncate(parts.uri.path(), 256))
    } else {
        Cow::Borrowed("-")
    };
    let ip_text = ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    // Repeats from one client within the interval are counted, not logged;
    // blocks always are.
    let logged = match decision {
        Decision::Block(..) => Some(0),
        _ => {
            let admitted = config.log_throttle.admit(ip);
            if admitted.is_none() {
                metrics::counter!("hasivu_shield_log_suppressed_total").increment(1);
            }
            admitted
        }
    };
    let action = decision.label();
    let threshold = config.threshold;
    let method = &parts.method;
    match decision {
        Decision::Log => {
            // A lone weak sign (curl's user agent, one 404 too many) is
            // every script's daily life: DEBUG below half the threshold,
            // INFO from there (and for a shadow-mode hit at the threshold).
            macro_rules! suspicious {
                ($level:expr, $suppressed:expr) => {
                    tracing::event!(
                        target: "hasivu_ratelimit::shield",
                        $level,
                        ip = %ip_text,
                        score,
                        threshold,
                        reasons = %reasons,
                        method = %method,
                        path = %path,
                        action,
                        suppressed = $suppressed,
                        "suspicious request"
                    )
                };
            }
            if let Some(suppressed) = logged {
                if score.saturating_mul(2) >= threshold {
                    suspicious!(tracing::Level::INFO, suppressed);
                } else {
                    suspicious!(tracing::Level::DEBUG, suppressed);
                }
            }
            Outcome::Pass(Some(ShieldVerdict { score, findings }))
        }
        Decision::Reject | Decision::Authenticated => {
            if let Some(suppressed) = logged {
                tracing::warn!(
                    target: "hasivu_ratelimit::shield",
                    ip = %ip_text,
                    score,
                    threshold,
                    reasons = %reasons,
                    method = %method,
                    path = %path,
                    action,
                    authenticated = matches!(decision, Decision::Authenticated),
                    suppressed,
                    "request refused by the abuse shield"
                );
            }
            Outcome::Reject
        }
        Decision::Strike(strikes) => {
            if let Some(suppressed) = logged {
                tracing::warn!(
                    target: "hasivu_ratelimit::shield",
                    ip = %ip_text,
                    score,
                    threshold,
                    reasons = %reasons,
                    method = %method,
                    path = %path,
                    action,
                    strikes,
                    strikes_to_block = config.strike_table.count(),
                    suppressed,
                    "request refused by the abuse shield"
                );
            }
            Outcome::Reject
        }
        Decision::Block(ip, ttl, strikes) => {
            tracing::warn!(
                target: "hasivu_ratelimit::shield",
                ip = %ip_text,
                score,
                threshold,
                reasons = %reasons,
                method = %method,
                path = %path,
                action,
                strikes,
                ttl_seconds = ttl.as_secs(),
                "request refused and client blocked by the abuse shield"
            );
            Outcome::Block(ip, ttl, reasons)
        }
    }
}

/// What the score decided, with what the logs and metrics need.
#[derive(Clone, Copy)]
enum Decision {
    /// Below the threshold, or shadow mode: let through and logged.
    Log,
    /// Refused ([`Action::Reject`], or no address to block).
    Reject,
    /// Refused; the hook recognised credentials, so no strike and no block.
    Authenticated,
    /// Refused, and a strike (this many in the window) against the client.
    Strike(u32),
    /// Refused, and the client blocked after this many strikes.
    Block(IpAddr, std::time::Duration, u32),
}

impl Decision {
    fn label(self) -> &'static str {
        match self {
            Decision::Log => "log",
            Decision::Reject | Decision::Authenticated => "reject",
            Decision::Strike(_) => "strike",
            Decision::Block(..) => "block",
        }
    }
}
