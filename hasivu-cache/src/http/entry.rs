//! What the HTTP layer stores, and its binary format in L2.
//!
//! Pure logic: no I/O; times are given by the caller.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use crate::{CodecError, cache::Encoding};

/// The first byte of every stored entry: entries of another version are
/// misses, so a format change during a rolling deploy reloads.
const VERSION: u8 = 1;
const KIND_RESPONSE: u8 = 0;
const KIND_VARY: u8 = 1;

/// What is stored under a key. Cheap to clone.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Entry {
    /// A response.
    Response(Arc<StoredResponse>),
    /// Under the primary key of a response with `Vary`: the (lower-case)
    /// header names whose request values pick the variant's key.
    Vary(Arc<[String]>),
}

/// A stored response: status, headers (with its strong `ETag`), the body
/// exactly as it went out (already encoded when a compression layer runs
/// inside the cache), and when it was stored.
#[derive(Debug, PartialEq)]
pub(crate) struct StoredResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// Wall-clock milliseconds since the Unix epoch, so that every instance
    /// reading the entry from L2 computes the same age.
    pub(crate) stored_at_ms: u64,
    pub(crate) fresh_ms: u64,
    pub(crate) stale_ms: u64,
}

/// How an entry's age compares with its lifetimes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Freshness {
    Fresh,
    /// Past its TTL, within stale-while-revalidate.
    Stale,
    Expired,
}

impl StoredResponse {
    /// Milliseconds since it was stored (0 when the writer's clock was
    /// ahead).
    pub(crate) fn age_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.stored_at_ms)
    }

    pub(crate) fn freshness(&self, now_ms: u64) -> Freshness {
        let age = self.age_ms(now_ms);
        if age < self.fresh_ms {
            Freshness::Fresh
        } else if age < self.fresh_ms.saturating_add(self.stale_ms) {
            Freshness::Stale
        } else {
            Freshness::Expired
        }
    }

    pub(crate) fn etag(&self) -> Option<&HeaderValue> {
        self.headers.get(header::ETAG)
    }
}

/// The HTTP layer's own compact format: the cache's codec (JSON by
/// default) is for application values, and a body is bytes.
///
/// ```text
/// u8 version (1), u8 kind
/// kind 0 (response): u64 stored_at_ms, u64 fresh_ms, u64 stale_ms,
///   u16 status, u16 header count, per header (u16 name length, name,
///   u32 value length, value), u32 body length, body
/// kind 1 (vary): u8 name count, per name (u8 length, name)
/// ```
///
/// Integers are big-endian. Anything else (another version, a truncated or
/// over-long entry, an invalid header) fails to decode, which the cache
/// treats as a miss.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HttpEncoding;

impl<C> Encoding<C, Entry> for HttpEncoding {
    fn encode(self, _codec: &C, value: &Entry) -> Result<Vec<u8>, CodecError> {
        encode(value)
    }

    fn decode(self, _codec: &C, bytes: &[u8]) -> Result<Entry, CodecError> {
        decode(bytes)
    }
}

fn too_long(what: &str) -> CodecError {
    CodecError::new(format!("http entry: {what} too long"))
}

pub(crate) fn encode(entry: &Entry) -> Result<Vec<u8>, CodecError> {
    match entry {
        Entry::Response(response) => {
            let headers_len: usize = response
                .headers
                .iter()
                .map(|(n, v)| 6 + n.as_str().len() + v.len())
                .sum();
            let mut out = Vec::with_capacity(2 + 24 + 4 + headers_len + 4 + response.body.len());
            out.extend_from_slice(&[VERSION, KIND_RESPONSE]);
            out.extend_from_slice(&response.stored_at_ms.to_be_bytes());
            out.extend_from_slice(&response.fresh_ms.to_be_bytes());
            out.extend_from_slice(&response.stale_ms.to_be_bytes());
            out.extend_from_slice(&response.status.as_u16().to_be_bytes());
            let count = u16::try_from(response.headers.len()).map_err(|_| too_long("headers"))?;
            out.extend_from_slice(&count.to_be_bytes());
            for (name, value) in &response.headers {
                let name = name.as_str().as_bytes();
                let name_len = u16::try_from(name.len()).map_err(|_| too_long("header name"))?;
                let value_len = u32::try_from(value.len()).map_err(|_| too_long("header value"))?;
                out.extend_from_slice(&name_len.to_be_bytes());
                out.extend_from_slice(name);
                out.extend_from_slice(&value_len.to_be_bytes());
                out.extend_from_slice(value.as_bytes());
            }
            let body_len = u32::try_from(response.body.len()).map_err(|_| too_long("body"))?;
            out.extend_from_slice(&body_len.to_be_bytes());
            out.extend_from_slice(&response.body);
            Ok(out)
        }
        Entry::Vary(names) => {
            let mut out = vec![VERSION, KIND_VARY];
            out.push(u8::try_from(names.len()).map_err(|_| too_long("vary list"))?);
            for name in names.iter() {
                out.push(u8::try_from(name.len()).map_err(|_| too_long("vary name"))?);
                out.extend_from_slice(name.as_bytes());
            }
            Ok(out)
        }
    }
}

/// Reads the format from a byte slice, refusing anything malformed.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.bytes.len() < n {
            return Err(CodecError::new("http entry: truncated"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        Ok(self.take(N)?.try_into().expect("N bytes taken"))
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn len32(&mut self) -> Result<usize, CodecError> {
        usize::try_from(self.u32()?).map_err(|_| too_long("field"))
    }
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Entry, CodecError> {
    let mut r = Reader { bytes };
    if r.u8()? != VERSION {
        return Err(CodecError::new("http entry: unknown version"));
    }
    let entry = match r.u8()? {
        KIND_RESPONSE => {
            let stored_at_ms = r.u64()?;
            let fresh_ms = r.u64()?;
            let stale_ms = r.u64()?;
            let status = StatusCode::from_u16(r.u16()?)
                .map_err(|_| CodecError::new("http entry: invalid status"))?;
            let count = r.u16()?;
            let mut headers = HeaderMap::with_capacity(usize::from(count));
            for _ in 0..count {
                let name_len = usize::from(r.u16()?);
                let name = HeaderName::from_bytes(r.take(name_len)?)
                    .map_err(|_| CodecError::new("http entry: invalid header name"))?;
                let value_len = r.len32()?;
                let value = HeaderValue::from_bytes(r.take(value_len)?)
                    .map_err(|_| CodecError::new("http entry: invalid header value"))?;
                headers.append(name, value);
            }
            let body_len = r.len32()?;
            let body = Bytes::copy_from_slice(r.take(body_len)?);
            Entry::Response(Arc::new(StoredResponse {
                status,
                headers,
                body,
                stored_at_ms,
                fresh_ms,
                stale_ms,
            }))
        }
        KIND_VARY => {
            let count = r.u8()?;
            let mut names = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                let len = usize::from(r.u8()?);
                let name = HeaderName::from_bytes(r.take(len)?)
                    .map_err(|_| CodecError::new("http entry: invalid vary name"))?;
                names.push(name.as_str().to_owned());
            }
            Entry::Vary(names.into())
        }
        _ => return Err(CodecError::new("http entry: unknown kind")),
    };
    if !r.bytes.is_empty() {
        return Err(CodecError::new("http entry: trailing bytes"));
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn response(body: &'static [u8]) -> StoredResponse {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::ETAG, HeaderValue::from_static("\"5-abc\""));
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
        headers.append(header::VARY, HeaderValue::from_static("accept-language"));
        StoredResponse {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(body),
            stored_at_ms: 1_800_000_000_000,
            fresh_ms: 60_000,
            stale_ms: 30_000,
        }
    }

    #[test]
    fn entries_round_trip() {
        let entry = Entry::Response(Arc::new(response(b"{\"menu\":[]}")));
        assert_eq!(decode(&encode(&entry).unwrap()).unwrap(), entry);
        let vary = Entry::Vary(vec!["accept-encoding".to_owned(), "origin".to_owned()].into());
        assert_eq!(decode(&encode(&vary).unwrap()).unwrap(), vary);
    }

    #[test]
    fn malformed_entries_are_refused() {
        let bytes = encode(&Entry::Response(Arc::new(response(b"body")))).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        let mut other_version = bytes.clone();
        other_version[0] = 2;
        assert!(decode(&other_version).is_err());
        // JSON written by something else under the same key.
        assert!(decode(br#"{"menu":[]}"#).is_err());
    }

    #[test]
    fn freshness_follows_the_stored_times() {
        let stored = response(b"");
        let at = stored.stored_at_ms;
        assert_eq!(stored.freshness(at), Freshness::Fresh);
        assert_eq!(stored.freshness(at + 59_999), Freshness::Fresh);
        assert_eq!(stored.freshness(at + 60_000), Freshness::Stale);
        assert_eq!(stored.freshness(at + 89_999), Freshness::Stale);
        assert_eq!(stored.freshness(at + 90_000), Freshness::Expired);
        assert_eq!(stored.freshness(at - 5_000), Freshness::Fresh, "clock skew");
        assert_eq!(stored.age_ms(at - 5_000), 0);
    }

    proptest! {
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn any_response_round_trips(
            status in 100u16..1000,
            headers in proptest::collection::vec(("[a-z][a-z0-9-]{0,12}", "[ -~]{0,40}"), 0..8),
            body in proptest::collection::vec(any::<u8>(), 0..256),
            times in any::<(u64, u64, u64)>(),
        ) {
            let mut map = HeaderMap::new();
            for (name, value) in headers {
                map.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(&value).unwrap(),
                );
            }
            let entry = Entry::Response(Arc::new(StoredResponse {
                status: StatusCode::from_u16(status).unwrap(),
                headers: map,
                body: Bytes::from(body),
                stored_at_ms: times.0,
                fresh_ms: times.1,
                stale_ms: times.2,
            }));
            prop_assert_eq!(decode(&encode(&entry).unwrap()).unwrap(), entry);
        }
    }
}
