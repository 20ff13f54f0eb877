//! `Accept-Encoding` negotiation (RFC 9110 §12.5.3), as a pure function.

use http::HeaderValue;

use crate::Coding;

/// Weights in thousandths, indexed by [`slot`].
#[derive(Default)]
struct Weights {
    named: [Option<u16>; 5],
    star: Option<u16>,
}

const fn slot(coding: Coding) -> usize {
    match coding {
        Coding::Identity => 0,
        Coding::Zstd => 1,
        Coding::Br => 2,
        Coding::Gzip => 3,
        Coding::Deflate => 4,
    }
}

fn lower(current: &mut Option<u16>, q: u16) {
    *current = Some(current.map_or(q, |old| old.min(q)));
}

/// Chooses the content coding for a response from the request's
/// `Accept-Encoding` field lines and the server's `preference` (the codings
/// it can produce, most preferred first; `Identity` in it is ignored).
///
/// Pass every field line (`headers.get_all(ACCEPT_ENCODING)`): an absent
/// field and an empty one mean different things.
///
/// The rules, in the order they are applied:
///
/// - Tokens are case-insensitive and surrounded by optional whitespace;
///   `x-gzip` means gzip; `*` matches every coding not listed by name.
/// - A weight is `q=` followed by a qvalue (`0` to `1` with at most three
///   decimals); a missing weight is 1. An entry with a malformed weight, an
///   unknown token or nothing at all is ignored, never an error.
/// - A coding listed more than once takes its **lowest** weight, so a `q=0`
///   anywhere always forbids it.
/// - The coding with the highest weight wins; ties go to the first coding in
///   the server's preference list.
/// - Identity is chosen when no offered coding has a weight above zero, when
///   `identity` is listed with a higher weight than the best coding, or when
///   the request has no `Accept-Encoding` at all. When even identity is
///   forbidden (`identity;q=0`, `*;q=0`), identity is still the answer:
///   sending the representation unencoded is better than a 406 after the
///   handler has done its work (RFC 9110 no longer requires the 406).
///
/// ```
/// use hasivu_compress::{Coding, negotiate};
/// use http::HeaderValue;
///
/// let prefs = [Coding::Zstd, Coding::Br, Coding::Gzip];
/// let header = HeaderValue::from_static("gzip, deflate, br;q=0.9, zstd;q=0");
/// assert_eq!(negotiate([&header], &prefs), Coding::Gzip);
///
/// let header = HeaderValue::from_static("gzip, deflate, br, zstd");
/// assert_eq!(negotiate([&header], &prefs), Coding::Zstd); // tie: server preference
/// ```
pub fn negotiate<'a, I>(accept_encoding: I, preference: &[Coding]) -> Coding
where
    I: IntoIterator<Item = &'a HeaderValue>,
{
    let mut weights = Weights::default();
    let mut present = false;
    for line in accept_encoding {
        present = true;
        for element in line.as_bytes().split(|b| *b == b',') {
            let Some((token, q)) = parse_element(element) else {
                continue;
            };
            if token == b"*" {
                lower(&mut weights.star, q);
            } else if let Some(coding) = Coding::from_token(token) {
                lower(&mut weights.named[slot(coding)], q);
            }
        }
    }
    if !present {
        return Coding::Identity;
    }
    let weight = |coding: Coding| weights.named[slot(coding)].or(weights.star).unwrap_or(0);
    let mut best = (Coding::Identity, 0);
    for &coding in preference {
        let q = weight(coding);
        if coding != Coding::Identity && q > best.1 {
            best = (coding, q);
        }
    }
    match weights.named[slot(Coding::Identity)] {
        Some(identity) if identity > best.1 => Coding::Identity,
        _ => best.0,
    }
}

/// Like [`negotiate`], reading `Accept-Encoding` from a header map.
pub fn negotiate_headers(headers: &http::HeaderMap, preference: &[Coding]) -> Coding {
    negotiate(headers.get_all(http::header::ACCEPT_ENCODING), preference)
}

/// One list element: `token *( OWS ";" OWS param )`. `None` when the element
/// is empty or its weight is malformed.
fn parse_element(element: &[u8]) -> Option<(&[u8], u16)> {
    let mut parts = element.split(|b| *b == b';');
    let token = parts.next()?.trim_ascii();
    if token.is_empty() {
        return None;
    }
    let mut q = 1000;
    for param in parts {
        let param = param.trim_ascii();
        if param.is_empty() {
            continue;
        }
        let Some(eq) = param.iter().position(|b| *b == b'=') else {
            // A bare parameter name is not a weight; a malformed element.
            return None;
        };
        let (name, value) = (param[..eq].trim_ascii(), param[eq + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"q") {
            q = parse_qvalue(value)?;
        }
    }
    Some((token, q))
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in
/// thousandths.
fn parse_qvalue(value: &[u8]) -> Option<u16> {
    let (int, frac) = match value {
        [int] => (*int, &[][..]),
        [int, b'.', frac @ ..] if frac.len() <= 3 => (*int, frac),
        _ => return None,
    };
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    match int {
        b'1' if frac.iter().all(|d| *d == b'0') => Some(1000),
        b'0' => {
            let mut thousandths = 0u16;
            for i in 0..3 {
                thousandths = thousandths * 10 + frac.get(i).map_or(0, |d| u16::from(d - b'0'));
            }
            Some(thousandths)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: &[Coding] = &[Coding::Zstd, Coding::Br, Coding::Gzip, Coding::Deflate];

    fn pick(header: &str) -> Coding {
        negotiate([&HeaderValue::from_str(header).unwrap()], ALL)
    }

    #[test]
    fn table() {
        let cases = [
            // Browsers.
            ("gzip, deflate, br, zstd", Coding::Zstd),
            ("gzip, deflate, br", Coding::Br),
            ("gzip, deflate", Coding::Gzip),
            // Weights.
            ("gzip;q=1.0, br;q=0.5", Coding::Gzip),
            ("br;q=0.001, gzip;q=0.002", Coding::Gzip),
            ("zstd;q=0, br", Coding::Br),
            ("zstd;q=0.0, br;q=0.000", Coding::Identity),
            // Identity.
            ("", Coding::Identity),
            ("identity", Coding::Identity),
            ("identity;q=0", Coding::Identity),
            ("gzip;q=0.5, identity", Coding::Identity),
            ("gzip, identity;q=0.5", Coding::Gzip),
            ("gzip;q=0.5, identity;q=0.5", Coding::Gzip),
            ("compress, identity;q=0", Coding::Identity),
            // Star.
            ("*", Coding::Zstd),
            ("*;q=0", Coding::Identity),
            ("*, zstd;q=0", Coding::Br),
            ("*;q=0.5, gzip", Coding::Gzip),
            ("*;q=0, gzip;q=0.1", Coding::Gzip),
            // Case, whitespace, aliases.
            ("GZIP", Coding::Gzip),
            ("  Br ;  Q = 0.8 ,gzip;q=0.7", Coding::Br),
            ("x-gzip", Coding::Gzip),
            ("\tgzip\t", Coding::Gzip),
            // Repeats take the lowest weight.
            ("br, br;q=0", Coding::Identity),
            ("br;q=0.2, gzip;q=0.5, br", Coding::Gzip),
            // Malformed entries are ignored, the rest still counts.
            ("gzip;q=2, br", Coding::Br),
            ("gzip;q=abc", Coding::Identity),
            ("gzip;q=0.1234, br;q=0.5", Coding::Br),
            (",,, ,gzip,,", Coding::Gzip),
            ("gzip;;q=0.5", Coding::Gzip),
            ("gzip;level, br;q=0.1", Coding::Br),
            ("gzip;q=1.5", Coding::Identity),
            ("gzip;q=1.000", Coding::Gzip),
            ("gzip;q=1.001", Coding::Identity),
            ("unknown, other;q=1", Coding::Identity),
            ("gzip;foo=bar", Coding::Gzip),
        ];
        for (header, expected) in cases {
            assert_eq!(pick(header), expected, "Accept-Encoding: {header:?}");
        }
    }

    #[test]
    fn no_header_means_identity() {
        assert_eq!(negotiate([], ALL), Coding::Identity);
    }

    #[test]
    fn several_field_lines_combine() {
        let a = HeaderValue::from_static("gzip;q=0.5");
        let b = HeaderValue::from_static("br");
        assert_eq!(negotiate([&a, &b], ALL), Coding::Br);
        let c = HeaderValue::from_static("br;q=0");
        assert_eq!(negotiate([&a, &b, &c], ALL), Coding::Gzip);
    }

    #[test]
    fn preference_breaks_ties() {
        let header = HeaderValue::from_static("gzip, br, zstd");
        assert_eq!(
            negotiate([&header], &[Coding::Gzip, Coding::Br]),
            Coding::Gzip
        );
        assert_eq!(
            negotiate([&header], &[Coding::Br, Coding::Gzip]),
            Coding::Br
        );
        assert_eq!(negotiate([&header], &[]), Coding::Identity);
    }

    #[test]
    fn qvalues() {
        assert_eq!(parse_qvalue(b"0"), Some(0));
        assert_eq!(parse_qvalue(b"0."), Some(0));
        assert_eq!(parse_qvalue(b"0.5"), Some(500));
        assert_eq!(parse_qvalue(b"0.05"), Some(50));
        assert_eq!(parse_qvalue(b"0.999"), Some(999));
        assert_eq!(parse_qvalue(b"1"), Some(1000));
        assert_eq!(parse_qvalue(b"1.00"), Some(1000));
        for bad in [
            &b""[..],
            b".5",
            b"0.5x",
            b"-0",
            b"1.1",
            b"2",
            b"0.0000",
            b"00.1",
        ] {
            assert_eq!(
                parse_qvalue(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("gzip".to_owned()),
            Just("GZip".to_owned()),
            Just("x-gzip".to_owned()),
            Just("br".to_owned()),
            Just("zstd".to_owned()),
            Just("deflate".to_owned()),
            Just("identity".to_owned()),
            Just("*".to_owned()),
            "[a-z]{1,6}",
        ]
    }

    fn weight() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            Just(Some("0".to_owned())),
            Just(Some("0.000".to_owned())),
            Just(Some("1".to_owned())),
            (0u16..=1000).prop_map(|q| Some(format!("{}.{:03}", q / 1000, q % 1000))),
            "[0-9.a-z]{0,5}".prop_map(Some),
        ]
    }

    /// Effective weight of `coding` in a list of `(token, weight)` entries
    /// by the rules written out independently of the parser: lowest explicit
    /// weight of the coding, else lowest weight of `*`, else absent.
    fn model_weight(entries: &[(String, Option<u16>)], coding: Coding) -> Option<u16> {
        let named = entries
            .iter()
            .filter(|(t, _)| Coding::from_token(t.as_bytes()) == Some(coding))
            .filter_map(|(_, q)| *q)
            .min();
        named.or_else(|| {
            entries
                .iter()
                .filter(|(t, _)| t == "*")
                .filter_map(|(_, q)| *q)
                .min()
        })
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                let _ = negotiate([&value], ALL);
            }
        }

        #[test]
        fn weights_are_respected(
            entries in proptest::collection::vec((token(), weight()), 0..8),
        ) {
            let header: Vec<String> = entries
                .iter()
                .map(|(t, q)| match q {
                    Some(q) => format!("{t};q={q}"),
                    None => t.clone(),
                })
                .collect();
            let header = HeaderValue::from_str(&header.join(", ")).unwrap();
            let chosen = negotiate([&header], ALL);
            // The model's view: malformed weights drop the entry.
            let parsed: Vec<(String, Option<u16>)> = entries
                .iter()
                .map(|(t, q)| (t.clone(), match q {
                    None => Some(1000),
                    Some(q) => parse_qvalue(q.trim().as_bytes()),
                }))
                .collect();
            let best = ALL
                .iter()
                .map(|c| model_weight(&parsed, *c).unwrap_or(0))
                .max()
                .unwrap();
            if chosen == Coding::Identity {
                let identity = parsed
                    .iter()
                    .filter(|(t, _)| t == "identity")
                    .filter_map(|(_, q)| *q)
                    .min();
                prop_assert!(best == 0 || identity.is_some_and(|q| q > best));
            } else {
                let q = model_weight(&parsed, chosen).unwrap_or(0);
                prop_assert!(q > 0, "chose {chosen} with weight 0 from {header:?}");
                prop_assert_eq!(q, best, "chose {} but a heavier coding exists in {:?}", chosen, header);
            }
        }
    }
}
