//! hasivu-compress: `Accept-Encoding` negotiation, the `?fields=` parser
//! and pruner, and request decompression.

use hasivu_compress::{
    __fuzz::{self, Decoder},
    Coding, Selection, negotiate, negotiate_headers,
};
use http::{HeaderMap, HeaderValue, header::ACCEPT_ENCODING};

use crate::{Budget, split_once, text};

const CODINGS: [Coding; 5] = [
    Coding::Identity,
    Coding::Zstd,
    Coding::Br,
    Coding::Gzip,
    Coding::Deflate,
];

/// Negotiation allocates nothing.
const NEGOTIATE: Budget = Budget::new(0, 0);

/// `Accept-Encoding` negotiation. Input: one byte choosing the server's
/// preference (a bit per coding, the top bits rotate the order), then
/// field lines separated by `\n`.
///
/// Checks: the answer is identity or a coding of the preference; the order
/// of the field lines does not matter; `negotiate_headers` agrees; adding
/// `<answer>;q=0` forbids the answer; nothing is allocated.
pub fn compress_negotiate(data: &[u8]) {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let mut preference: Vec<Coding> = CODINGS
        .iter()
        .enumerate()
        .filter(|(i, _)| choice & (1 << i) != 0)
        .map(|(_, c)| *c)
        .collect();
    if !preference.is_empty() {
        let turn = usize::from(choice >> 5) % preference.len();
        preference.rotate_left(turn);
    }
    let lines: Vec<HeaderValue> = rest
        .split(|b| *b == b'\n')
        .filter_map(|line| HeaderValue::from_bytes(line).ok())
        .collect();

    let chosen = NEGOTIATE.run("negotiate", data.len(), || negotiate(&lines, &preference));
    assert!(
        chosen == Coding::Identity || preference.contains(&chosen),
        "{chosen:?} is not in the preference {preference:?}"
    );
    let reversed = NEGOTIATE.run("negotiate", data.len(), || {
        negotiate(lines.iter().rev(), &preference)
    });
    assert_eq!(
        chosen, reversed,
        "the order of the field lines changed the answer"
    );

    let mut headers = HeaderMap::new();
    for line in &lines {
        headers.append(ACCEPT_ENCODING, line.clone());
    }
    assert_eq!(negotiate_headers(&headers, &preference), chosen);

    if chosen != Coding::Identity {
        let forbid = HeaderValue::try_from(format!("{};q=0", chosen.as_str())).unwrap();
        let again = negotiate(lines.iter().chain([&forbid]), &preference);
        assert_ne!(again, chosen, "`{};q=0` did not forbid it", chosen.as_str());
    }
}

/// Parsing a selection: at most 64 bytes per input byte plus 16 KiB (a
/// node per name, each a small map).
const FIELDS: Budget = Budget::new(64, 16 * 1024);

/// The `?fields=` parser. Input: a selection, also read as a whole query
/// string.
///
/// Checks: a parsed selection's canonical form (`Display`) parses back to
/// the same selection and prints the same (normalisation is idempotent);
/// an error points inside the input; allocation linear.
pub fn compress_fields(data: &[u8]) {
    let input = text(data);
    let parsed = FIELDS.run("Selection::parse", data.len(), || Selection::parse(&input));
    match parsed {
        Ok(selection) => {
            let canonical = selection.to_string();
            let again = Selection::parse(&canonical)
                .unwrap_or_else(|e| panic!("canonical form {canonical:?} does not parse: {e}"));
            assert_eq!(
                again, selection,
                "canonical form {canonical:?} changed the selection"
            );
            assert_eq!(again.to_string(), canonical, "canonical form is not stable");
        }
        Err(error) => assert!(
            error.position() <= input.len(),
            "error position {} past the input ({} bytes)",
            error.position(),
            input.len()
        ),
    }
    let from_query = FIELDS.run("Selection::from_query", data.len(), || {
        Selection::from_query(&input, "fields")
    });
    if let Ok(Some(selection)) = from_query {
        let canonical = selection.to_string();
        assert_eq!(Selection::parse(&canonical).as_ref(), Ok(&selection));
    }
}

/// Pruning copies at most the input, plus unescaped keys.
const PRUNE: Budget = Budget::new(8, 1024);

/// The byte pruner of `FieldSelectionLayer`. Input: a selection, `\n`,
/// then a JSON document (any bytes). An unparsable selection is replaced
/// by `id,name,*`.
///
/// Checks: the result is never larger than the input; pruning the result
/// again changes nothing; when `serde_json` reads the input, it reads the
/// result too and it equals `Selection::apply` on the input's value;
/// allocation linear.
pub fn compress_prune(data: &[u8]) {
    let (selection, json) = split_once(data, b'\n');
    let selection = Selection::parse(&text(selection))
        .unwrap_or_else(|_| Selection::parse("id,name,*").expect("a valid selection"));
    let pruned = PRUNE.run("prune_slice", json.len(), || {
        __fuzz::prune_slice(&selection, json)
    });
    let value = serde_json::from_slice::<serde_json::Value>(json).ok();
    let Some(pruned) = pruned else {
        assert!(
            value.is_none(),
            "serde_json reads the input, the pruner refused it"
        );
        return;
    };
    assert!(
        pruned.len() <= json.len(),
        "pruned {} bytes into {} bytes",
        json.len(),
        pruned.len()
    );
    let twice = __fuzz::prune_slice(&selection, &pruned);
    assert_eq!(
        twice.as_deref(),
        Some(&pruned[..]),
        "pruning the pruned document changed it"
    );
    if let Some(mut value) = value {
        let read: serde_json::Value = serde_json::from_slice(&pruned)
            .unwrap_or_else(|e| panic!("the pruned document is not JSON: {e}"));
        selection.apply(&mut value);
        assert_eq!(read, value, "the byte pruner and Selection::apply disagree");
    }
}

/// The decoded-size cap of the decode check (per stage).
pub(crate) const DECODE_LIMIT: usize = 64 * 1024;

/// Decoding: the output (at most the cap per stage, grown by doubling: up
/// to twice the cap allocated in all), the codecs' state and windows
/// (brotli's ring buffer up to 16 MiB, flate2's 32 KiB window and buffers),
/// and the chunks copied through the stages: 16 bytes per input byte plus
/// 20 MiB. libzstd allocates with its own `malloc`, outside this count.
const DECODE: Budget = Budget::new(16, 20 * 1024 * 1024);

/// Request decompression (`decompression/decode.rs`). Input: a byte
/// choosing one or two stacked codings (bits 0–1 the first of gzip,
/// deflate, br, zstd; bit 2 stacks a second, bits 3–4), a byte choosing the
/// chunk size (0: the whole body at once), then the encoded body.
///
/// Checks: the decoded bytes never pass the cap; a body accepted in chunks
/// is accepted whole with the same bytes, and the other way round (a body
/// refused both ways may be refused for different reasons: one both too
/// large and corrupt is either); allocation within the budget.
pub fn compress_decode(data: &[u8]) {
    let [choice, chunk, body @ ..] = data else {
        return;
    };
    let coding =
        |bits: u8| [Coding::Gzip, Coding::Deflate, Coding::Br, Coding::Zstd][usize::from(bits & 3)];
    let mut codings = vec![coding(*choice)];
    if choice & 4 != 0 {
        codings.push(coding(choice >> 3));
    }
    let decode = |size: usize| {
        DECODE.run("decode", body.len(), || {
            let mut decoder = Decoder::new(&codings, DECODE_LIMIT)?;
            for piece in body.chunks(size.max(1)) {
                decoder.write(piece)?;
            }
            decoder.finish()
        })
    };
    let whole = decode(body.len());
    if let Ok(decoded) = &whole {
        assert!(
            decoded.len() <= DECODE_LIMIT,
            "decoded {} bytes past the cap of {DECODE_LIMIT}",
            decoded.len()
        );
    }
    if *chunk != 0 && usize::from(*chunk) < body.len() {
        let chunked = decode(usize::from(*chunk));
        // A body that is both too large and corrupt may be refused for
        // either, depending on where the codec's buffers meet the chunks:
        // both are refusals. An accepted body must be accepted whole.
        if chunked.is_ok() || whole.is_ok() {
            assert_eq!(
                chunked, whole,
                "{codings:?}: chunks of {chunk} bytes decode differently from the whole body"
            );
        }
    }
}
