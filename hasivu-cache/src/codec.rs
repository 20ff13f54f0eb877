//! How values are turned into bytes for L2.

use serde::{Serialize, de::DeserializeOwned};

use crate::CodecError;

/// Encodes values for L2 (and weighs them for L1).
///
/// The default, [`JsonCodec`], writes plain JSON, the same bytes
/// `JSON.stringify` produces, so a Node.js service sharing the Redis keys
/// reads and writes the same entries.
pub trait Codec: Send + Sync + 'static {
    /// Encodes a value.
    ///
    /// # Errors
    ///
    /// When the value cannot be represented.
    fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, CodecError>;

    /// Decodes a value.
    ///
    /// # Errors
    ///
    /// When the bytes are not a valid encoding of `T`; the cache treats that
    /// as a miss, so a changed type during a rolling deploy reloads instead
    /// of failing.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError>;
}

/// Plain JSON through `serde_json`.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonCodec;

impl Codec for JsonCodec {
    fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        serde_json::to_vec(value).map_err(|e| CodecError::new(e.to_string()))
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        serde_json::from_slice(bytes).map_err(|e| CodecError::new(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Menu {
        date: String,
        items: Vec<String>,
    }

    #[test]
    fn json_is_what_node_writes() {
        let menu = Menu {
            date: "2026-11-27".into(),
            items: vec!["dal".into(), "rice".into()],
        };
        let bytes = JsonCodec.encode(&menu).unwrap();
        // JSON.stringify({date: "2026-11-27", items: ["dal", "rice"]})
        assert_eq!(bytes, br#"{"date":"2026-11-27","items":["dal","rice"]}"#);
        let back: Menu = JsonCodec
            .decode(br#"{ "items": ["dal", "rice"], "date": "2026-11-27" }"#)
            .unwrap();
        assert_eq!(back, menu);
        assert!(JsonCodec.decode::<Menu>(b"{\"date\":1}").is_err());
    }
}
