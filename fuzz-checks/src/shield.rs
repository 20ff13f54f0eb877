//! hasivu-ratelimit: the shield's detectors and decoders, client IPs and
//! CIDRs.

use std::{
    net::{IpAddr, SocketAddr},
    sync::OnceLock,
};

use hasivu_ratelimit::{
    __fuzz, Cidr, TrustedProxies,
    http::ForwardedHeader,
    http::{ClientIpKey, PeerAddr},
    shield::{
        BodyKind, Detector, DistinctPaths, Inspection, Limits, NotFoundRate, PathTraversal,
        ProbePaths, RapidRequests, SqlInjection, UserAgents, Xss,
    },
};

use crate::{Budget, text};

/// A detector reads its text a bounded number of times and keeps at most a
/// few copies and a token list: 64 bytes per input byte (the input as text
/// is up to three times as long, for invalid UTF-8) plus 4 KiB. Work that
/// repeats per nesting level (decoding a reference inside a reference
/// inside…) is quadratic and passes this after a few hundred levels.
const DETECTOR: Budget = Budget::new(64, 4096);

/// The XSS detector keeps more copies of a `style` attribute (its
/// references decoded, then its CSS escapes and comments undone, each
/// lowercased): invalid UTF-8 there (three text bytes per input byte)
/// holding a nested reference took 104 bytes per input byte (35 per text
/// byte), the same at 215 and at 11 114 bytes. 128 bytes per input byte
/// plus 4 KiB.
const XSS: Budget = Budget::new(128, 4096);

/// The SQL lexer keeps a token per input byte at worst (`;;;;`), in a
/// vector grown by doubling: 128 bytes per input byte plus 4 KiB.
const SQLI: Budget = Budget::new(128, 4096);

/// `SqlInjection::is_injection` (the SQL lexer and its rules) on the
/// input as text. Checks: no panic, allocation linear.
pub fn shield_sqli(data: &[u8]) {
    let input = text(data);
    SQLI.run("SqlInjection::is_injection", data.len(), || {
        SqlInjection::is_injection(&input)
    });
}

/// `Xss::is_xss` (the HTML tag reader, attribute, URL and CSS rules, and
/// character references) on the input as text. Checks: no panic, no
/// unbounded recursion, allocation linear.
pub fn shield_xss(data: &[u8]) {
    let input = text(data);
    XSS.run("Xss::is_xss", data.len(), || Xss::is_xss(&input));
}

/// The path traversal checks on the input as a decoded path, a decoded
/// value, and a raw value with its shield decoding. Checks: no panic,
/// allocation linear; a value that traverses once decoded is still caught
/// when its raw form is given too.
pub fn shield_traversal(data: &[u8]) {
    let input = text(data);
    DETECTOR.run("PathTraversal", data.len(), || {
        PathTraversal::in_path(&input);
        let decoded = __fuzz::percent(&input, true);
        let plain = PathTraversal::in_value(&decoded);
        let raw = PathTraversal::in_value_raw(&input, &decoded);
        assert!(
            !plain || raw,
            "in_value finds a traversal that in_value_raw misses"
        );
    });
}

/// Decoding copies the text (up to three times the input, for invalid
/// UTF-8) a bounded number of times.
const DECODE: Budget = Budget::new(64, 4096);

/// The shield's decoders (`shield/detect/decode.rs`): percent-decoding
/// (with and without `+`), HTML character references, JSON string
/// literals, `name=value` pairs and truncation, on the input as text; the
/// first byte (when any) is the truncation length.
///
/// Checks: decoding never makes text longer (each escape is at least as
/// long as what it stands for); JSON strings are slices of the input and
/// unescape to at most their raw length; pairs are at most one per `&`
/// plus one; truncation is a prefix on a character boundary within the
/// length; allocation linear.
pub fn shield_decode(data: &[u8]) {
    let input = text(data);
    let input = &*input;
    DECODE.run("shield decoders", data.len(), || {
        for plus in [false, true] {
            let decoded = __fuzz::percent(input, plus);
            assert!(
                decoded.len() <= input.len(),
                "percent-decoding grew {} bytes into {}",
                input.len(),
                decoded.len()
            );
        }
        let entities = __fuzz::html_entities(input);
        assert!(
            entities.len() <= input.len(),
            "entity decoding grew {} bytes into {}",
            input.len(),
            entities.len()
        );
        __fuzz::has_evasive_encoding(input);

        let range = input.as_bytes().as_ptr_range();
        let mut strings = 0;
        __fuzz::json_strings(input, |raw, unescaped| {
            strings += 1;
            let raw_range = raw.as_bytes().as_ptr_range();
            assert!(
                range.start <= raw_range.start && raw_range.end <= range.end,
                "a JSON string is not a slice of the input"
            );
            assert!(
                unescaped.len() <= raw.len(),
                "unescaping grew {raw:?} into {unescaped:?}"
            );
        });
        assert!(strings <= input.len() / 2 + 1);

        let ampersands = input.bytes().filter(|b| *b == b'&').count();
        assert!(__fuzz::pairs(input).count() <= ampersands + 1);

        let max = data.first().map_or(0, |b| usize::from(*b));
        let cut = __fuzz::truncate(input, max);
        assert!(cut.len() <= max && input.starts_with(cut));
        assert!(input.len() <= max || cut.len() + 4 > max, "cut too short");
    });
}

/// The default user-agent lists, shared by every run like a layer shares
/// them (with their cache of verdicts).
fn shared_agents() -> &'static UserAgents {
    static AGENTS: OnceLock<UserAgents> = OnceLock::new();
    AGENTS.get_or_init(UserAgents::new)
}

/// `UserAgents::classify` on the input as text. Checks: no panic; the
/// shared, cached detector agrees with a fresh one; allocation linear.
pub fn shield_agents(data: &[u8]) {
    let input = text(data);
    let agents = shared_agents();
    let cached = DETECTOR.run("UserAgents::classify", data.len(), || {
        agents.classify(Some(&input))
    });
    assert_eq!(cached, UserAgents::new().classify(Some(&input)));
}

/// The detectors that keep state per client, shared by every run as a
/// layer shares them.
fn stateful() -> &'static [Box<dyn Detector>] {
    static DETECTORS: OnceLock<Vec<Box<dyn Detector>>> = OnceLock::new();
    DETECTORS.get_or_init(|| {
        vec![
            Box::new(RapidRequests::new().max_clients(64)),
            Box::new(NotFoundRate::new().max_clients(64)),
            Box::new(DistinctPaths::new().max_clients(64)),
        ]
    })
}

/// Building an inspection copies each part at most a few times (decoded
/// fields), then the detectors run.
const INSPECTION: Budget = Budget::new(96, 64 * 1024);

/// A whole `Inspection` (method, path and query, user agent, JSON or form
/// body, within fuzzer-chosen `Limits`) through every built-in detector.
/// Input: a flags byte (bit 0: JSON body, else form; bit 1: a user agent;
/// bit 2: a body; bit 3: limits follow as three little-endian `u16`s, the
/// URI, body and header bytes; bit 4: the answer is a 404; the byte is
/// also the last octet of the client's address), then `\n`-separated
/// method, target, user agent (when flagged) and body (the rest).
///
/// Checks: no part passes its limit and the truncation flags say so; every
/// field's raw text is a slice of the request; stateless detectors
/// allocate linearly; the stateful ones (per-client tables) take any
/// sequence of requests.
pub fn shield_inspection(data: &[u8]) {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let mut limits = Limits::default();
    if flags & 8 != 0 {
        let Some((numbers, after)) = rest.split_first_chunk::<6>() else {
            return;
        };
        let number = |i: usize| usize::from(u16::from_le_bytes([numbers[i], numbers[i + 1]]));
        limits = Limits {
            uri_bytes: number(0),
            body_bytes: number(2),
            header_bytes: number(4),
        };
        rest = after;
    }
    let request = text(rest);
    let mut parts = request.splitn(if flags & 2 != 0 { 4 } else { 3 }, '\n');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let user_agent = if flags & 2 != 0 { parts.next() } else { None };
    let body = parts.next().filter(|_| flags & 4 != 0);
    let kind = if flags & 1 != 0 {
        BodyKind::Json
    } else {
        BodyKind::Form
    };
    let ip = IpAddr::from([10, 0, 0, flags]);
    let agents = shared_agents();

    let inspection = INSPECTION.run("Inspection", data.len(), || {
        let mut inspection = Inspection::with_limits(limits, method, target).with_ip(ip);
        if let Some(user_agent) = user_agent {
            inspection = inspection.with_user_agent(user_agent);
        }
        if let Some(body) = body {
            inspection = inspection.with_body(kind, body);
        }
        let stateless: [&dyn Detector; 5] = [
            &SqlInjection::new(),
            &Xss::new(),
            &PathTraversal::new(),
            agents,
            &ProbePaths::new(),
        ];
        for detector in stateless {
            detector.inspect(&inspection);
        }
        inspection
    });
    let status = if flags & 16 != 0 { 404 } else { 200 };
    for detector in stateful() {
        detector.inspect(&inspection);
        detector.observe(ip, status);
    }

    let truncated = inspection.truncated();
    let path = target.split('?').next().unwrap_or_default();
    assert!(inspection.path().len() <= limits.uri_bytes);
    assert_eq!(truncated.path, inspection.path().len() < path.len());
    if let Some(seen) = inspection.user_agent() {
        assert!(seen.len() <= limits.header_bytes);
        assert_eq!(
            truncated.header,
            seen.len() < user_agent.unwrap_or_default().len()
        );
    }
    let within = |part: &str, whole: &str| {
        let (part, whole) = (
            part.as_bytes().as_ptr_range(),
            whole.as_bytes().as_ptr_range(),
        );
        whole.start <= part.start && part.end <= whole.end
    };
    // An empty field (`name=` with no value) may point anywhere.
    for field in inspection.fields().iter().filter(|f| !f.raw.is_empty()) {
        assert!(
            within(field.raw, target) || body.is_some_and(|body| within(field.raw, body)),
            "field {:?} is not a slice of the request",
            field.raw
        );
    }
}

/// Parsing forwarding headers keeps at most one address per list element.
const FORWARDING: Budget = Budget::new(48, 4096);

/// Client IPs (`client_ip.rs`): `Forwarded` and `X-Forwarded-For` parsing,
/// and `ClientIpKey` walking them through trusted proxies. Input: text
/// lines: the peer address (`127.0.0.1` when it does not parse), the
/// trusted CIDRs separated by commas (those that do not parse are
/// dropped), then header lines, `f:` and a `Forwarded` value, or anything
/// else as an `X-Forwarded-For` value (a line that cannot be a header
/// value is dropped).
///
/// Checks: each parser gives at most one hop per list element; the client
/// is the peer when the peer is not trusted, else the peer or a forwarded
/// address; allocation linear.
pub fn client_ip(data: &[u8]) {
    let input = text(data);
    let mut lines = input.split('\n');
    let peer: IpAddr = lines
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let cidrs: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .filter(|c| Cidr::parse(c).is_ok())
        .collect();
    let proxies = TrustedProxies::new(&cidrs).expect("CIDRs that parse");
    let (mut forwarded, mut x_forwarded_for) = (Vec::new(), Vec::new());
    // Only lines that can be header values: the chains below must be the
    // ones the request carries (a dropped line would shift the hop bound).
    for line in lines.filter(|line| http::HeaderValue::from_str(line).is_ok()) {
        match line.strip_prefix("f:") {
            Some(value) => forwarded.push(value),
            None => x_forwarded_for.push(line),
        }
    }

    let elements = |values: &[&str]| values.iter().map(|v| v.split(',').count()).sum::<usize>();
    let xff = FORWARDING.run("parse_x_forwarded_for", data.len(), || {
        __fuzz::x_forwarded_for_hops(x_forwarded_for.iter().copied())
    });
    assert!(xff.len() <= elements(&x_forwarded_for).min(TrustedProxies::MAX_HOPS));
    let hops = FORWARDING.run("parse_forwarded", data.len(), || {
        __fuzz::forwarded_hops(forwarded.iter().copied())
    });
    assert!(hops.len() <= elements(&forwarded).min(TrustedProxies::MAX_HOPS));

    let mut request = http::Request::new(());
    for value in &forwarded {
        let value = http::HeaderValue::from_str(value).expect("kept above");
        request.headers_mut().append(http::header::FORWARDED, value);
    }
    for value in &x_forwarded_for {
        let value = http::HeaderValue::from_str(value).expect("kept above");
        request.headers_mut().append("x-forwarded-for", value);
    }
    request
        .extensions_mut()
        .insert(PeerAddr(SocketAddr::new(peer, 4000)));
    let (parts, ()) = request.into_parts();
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    // Only the header the proxies are said to set counts: the client is
    // the peer or an address of that header, never of the other one.
    for (header, chain) in [
        (ForwardedHeader::XForwardedFor, &xff),
        (ForwardedHeader::Forwarded, &hops),
    ] {
        let key = ClientIpKey::trusted_proxies(proxies.clone()).forwarded_header(header);
        let client = FORWARDING.run("ClientIpKey::client_ip", data.len(), || {
            key.client_ip(&parts)
        });
        let client = client.expect("the peer is known");
        if !proxies.contains(peer) {
            assert_eq!(client, canonical(peer), "an untrusted peer is the client");
            continue;
        }
        let seen: Vec<IpAddr> = chain.iter().flatten().map(|ip| canonical(*ip)).collect();
        assert!(
            client == canonical(peer) || seen.contains(&client),
            "client {client} is neither the peer {peer} nor an address of the chosen header"
        );
    }
}

/// `Cidr::parse` and `TrustedProxies::new` on the input as text (a CIDR;
/// a comma-separated list).
///
/// Checks: a parsed CIDR contains the address it was written with, and
/// reads the same through serde; allocation linear.
pub fn cidr(data: &[u8]) {
    let input = text(data);
    let parsed = DETECTOR.run("Cidr::parse", data.len(), || Cidr::parse(&input));
    if let Ok(cidr) = parsed {
        let written = input.trim().split('/').next().unwrap_or_default();
        let address: IpAddr = written.parse().expect("Cidr::parse read this address");
        assert!(
            cidr.contains(address),
            "{input:?} does not contain its own address {address}"
        );
        let json = serde_json::to_string(&*input).expect("a string serialises");
        let through_serde: Cidr = serde_json::from_str(&json).expect("a CIDR that parses");
        assert_eq!(through_serde, cidr);
    }
    let _ = DETECTOR.run("TrustedProxies::new", data.len(), || {
        TrustedProxies::new(input.split(','))
    });
}
