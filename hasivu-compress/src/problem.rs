//! `application/problem+json` answers (RFC 9457) for requests this crate
//! refuses itself.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::LayerBody;

/// The media type of problem answers.
pub(crate) const PROBLEM_JSON: HeaderValue = HeaderValue::from_static("application/problem+json");

/// A problem answer. `code` is a short machine-readable name (such as
/// `payload-too-large`): it becomes the `type` URI `urn:hasivu:problem:{code}`
/// and the `code` member; `detail` says what to change.
pub(crate) fn problem<B>(
    status: StatusCode,
    code: &str,
    title: &str,
    detail: &str,
) -> Response<LayerBody<B>> {
    let body = format!(
        r#"{{"type":"urn:hasivu:problem:{code}","code":"{code}","title":"{title}","status":{status},"detail":"{detail}"}}"#,
        code = escape(code),
        title = escape(title),
        status = status.as_u16(),
        detail = escape(detail),
    );
    let mut response = Response::new(LayerBody::full(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, PROBLEM_JSON);
    response
}

/// Escapes a string for a JSON string literal.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn problem_bodies_are_json_with_escaped_text() {
        let response = problem::<http_body_util::Empty<Bytes>>(
            StatusCode::BAD_REQUEST,
            "invalid-fields",
            "Invalid field selection",
            "unexpected \"(\" at\tposition 3\u{1}",
        );
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let text = std::str::from_utf8(&body).unwrap();
        assert_eq!(
            text,
            r#"{"type":"urn:hasivu:problem:invalid-fields","code":"invalid-fields","title":"Invalid field selection","status":400,"detail":"unexpected \"(\" at\tposition 3\u0001"}"#
        );
    }
}
