//! JSON field selection: `GET /users/7?fields=id,email,school.name` answers
//! only the fields the client asked for.
//!
//! [`FieldSelectionLayer`] reads the selection from a query parameter
//! (`fields` by default), lets the inner service answer as usual, and prunes
//! its JSON response. Put it inside a compression layer so that the pruned
//! document is what gets compressed. [`Selection`] is the parser and pruner
//! on their own, for use without the middleware.
//!
//! # Grammar
//!
//! Google's partial-response syntax, plus dotted paths:
//!
//! ```text
//! list = item *( "," item )
//! item = path [ "(" list ")" ]
//! path = name *( ( "." / "/" ) name )
//! name = 1*( ALPHA / DIGIT / "_" / "-" / "$" / "@" ) / "*"
//! ```
//!
//! Whitespace around tokens is ignored. `school.name`, `school/name` and
//! `school(name)` are the same selection; `items(id,tags(name))` selects
//! `id` and the `name` of each tag of each item. In a query string the
//! value is percent-decoded first (`+` is a space), so
//! `fields=id%2Cschool.name` works.
//!
//! # Semantics
//!
//! - Objects keep only the selected members, in their original order.
//!   Selected keys that are missing are simply absent.
//! - Arrays pass the selection to each of their elements, at any depth: an
//!   array of arrays of objects prunes the objects. A top-level array is
//!   handled the same way.
//! - A sub-selection (`a.b`, `a(b)`) on a string, number or boolean removes
//!   it, from its object or from its array. `null` stays `null`, as in
//!   GraphQL, so a missing object still reads as missing.
//! - Duplicates and overlaps merge: `a,a.b` is all of `a`; `a.b,a.c` is `a`
//!   with `b` and `c`.
//! - `*` keeps every member at its level whole, except the members that are
//!   also named at that level, which follow their own selection: `*,school.name`
//!   keeps everything, but only the `name` of `school`. `*(id)` (or `*.id`)
//!   applies `id` to every member not named otherwise.
//! - Selections are bounded ([`SelectionLimits`]): 2048 bytes, 16 levels and
//!   256 names by default. Anything else is a [`SelectionError`] naming the
//!   byte position, such as `expected a field name at position 9`.
//!
//! # The middleware
//!
//! - A request without the parameter passes through untouched: its
//!   response body is not buffered.
//! - A malformed selection is answered with `400 Bad Request`, an
//!   `application/problem+json` body with code `invalid-field-selection`
//!   and the error message as `detail`; the inner service is not called.
//! - A response is pruned when it is a `2xx` other than `206`, its
//!   `Content-Type` is `application/json` or `application/*+json` (with any
//!   parameters), it has no `Content-Encoding` other than `identity`, and its
//!   length is known (an exact body size hint or `Content-Length`) and at
//!   most [`max_body`](FieldSelectionLayer::max_body) (4 MiB by default).
//!   Every other response passes through unchanged and unbuffered, so the
//!   client gets all of it.
//! - A pruned response is written compactly, with strings and numbers
//!   exactly as the service wrote them, a new `Content-Length`, and without
//!   `ETag` (and `Content-Digest`/`Repr-Digest`), which described the whole
//!   representation. Trailers, if the body had any, are dropped.
//! - A body that turns out not to be JSON is answered with its original
//!   bytes and headers.
//! - A body that fails while it is collected, or that is longer than its
//!   declared length, is answered with `500 Internal Server Error` and a
//!   problem body with code `upstream-body-error`: the body's error cannot
//!   be carried by a body of collected bytes, and nothing has been sent yet.
//!   The service's own errors pass through unchanged.
//!
//! # Examples
//!
//! The defaults:
//!
//! ```
//! use bytes::Bytes;
//! use hasivu_compress::fields::FieldSelectionLayer;
//! use http::{Request, Response, header};
//! use http_body_util::{BodyExt, Full};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let handler = service_fn(|_request: Request<()>| async {
//!     let user = r#"{"id":1,"email":"a@b","school":{"id":3,"name":"Green Valley"}}"#;
//!     let response = Response::builder()
//!         .header(header::CONTENT_TYPE, "application/json")
//!         .body(Full::new(Bytes::from(user)))
//!         .unwrap();
//!     Ok::<_, std::convert::Infallible>(response)
//! });
//! let service = FieldSelectionLayer::new().layer(handler);
//!
//! let request = Request::get("/users/1?fields=id,school.name").body(()).unwrap();
//! let response = service.oneshot(request).await.unwrap();
//! assert_eq!(response.headers()[header::CONTENT_LENGTH], "41");
//! let body = response.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(body, r#"{"id":1,"school":{"name":"Green Valley"}}"#);
//! # }
//! ```
//!
//! A different parameter name, smaller bounds, and a refused selection:
//!
//! ```
//! use bytes::Bytes;
//! use hasivu_compress::fields::FieldSelectionLayer;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = FieldSelectionLayer::new()
//!     .param("select")
//!     .max_body(64 * 1024)
//!     .max_depth(4)
//!     .max_names(32);
//! let handler = service_fn(|_request: Request<()>| async {
//!     Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("{}"))))
//! });
//! let service = layer.layer(handler);
//!
//! let request = Request::get("/users/1?select=a.b.c.d.e").body(()).unwrap();
//! let response = service.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::BAD_REQUEST);
//! let body = response.into_body().collect().await.unwrap().to_bytes();
//! let body = std::str::from_utf8(&body).unwrap();
//! assert!(body.contains(r#""detail":"selection nested deeper than 4 levels at position 8""#));
//! # }
//! ```

mod future;
mod layer;
mod parse;
pub(crate) mod prune;
mod service;

pub use future::ResponseFuture;
pub use layer::FieldSelectionLayer;
pub use parse::{Selection, SelectionError, SelectionErrorKind, SelectionLimits};
pub use service::FieldSelection;

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        convert::Infallible,
        pin::Pin,
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        task::{Context, Poll},
    };

    use bytes::Bytes;
    use http::{HeaderMap, Request, Response, StatusCode, header};
    use http_body::{Body, Frame, SizeHint};
    use http_body_util::{BodyExt, Empty, Full};
    use tower::{Layer, ServiceExt, service_fn};
    use tower_service::Service as _;

    use super::*;

    const USER: &str = r#"{"id":1,"email":"a@b","name":"A","school":{"id":3,"name":"Green Valley","city":"X"},"orders":[{"id":1,"total":5},{"id":2,"total":7}]}"#;

    /// Runs one request through the layer over a handler that answers
    /// `response()`; returns the status, headers, body and handler calls.
    async fn run<B>(
        layer: FieldSelectionLayer,
        uri: &str,
        response: impl Fn() -> Response<B> + Send + Sync + 'static,
    ) -> (StatusCode, HeaderMap, Bytes, usize)
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: std::fmt::Debug,
    {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let response = Arc::new(response);
        let handler = service_fn(move |_request: Request<()>| {
            counter.fetch_add(1, Ordering::SeqCst);
            let response = response.clone();
            async move { Ok::<_, Infallible>(response()) }
        });
        let request = Request::get(uri).body(()).unwrap();
        let response = layer.layer(handler).oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            body,
            calls.load(Ordering::SeqCst),
        )
    }

    fn json(body: &'static str) -> Response<Full<Bytes>> {
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
            .header(header::CONTENT_LENGTH, body.len())
            .header(header::ETAG, "\"v1\"")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    }

    /// A body of several frames whose size is unknown.
    #[derive(Debug)]
    struct Chunks(VecDeque<&'static str>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            let chunk = self.get_mut().0.pop_front();
            Poll::Ready(chunk.map(|chunk| Ok(Frame::data(Bytes::from_static(chunk.as_bytes())))))
        }
    }

    fn streamed(chunks: &[&'static str]) -> Chunks {
        Chunks(chunks.iter().copied().collect())
    }

    #[tokio::test]
    async fn prunes_json_and_fixes_headers() {
        let (status, headers, body, calls) = run(
            FieldSelectionLayer::new(),
            "/users/1?fields=id,email,school.name,orders(id)",
            || json(USER),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(calls, 1);
        let expected = r#"{"id":1,"email":"a@b","school":{"name":"Green Valley"},"orders":[{"id":1},{"id":2}]}"#;
        assert_eq!(body, expected);
        assert_eq!(
            headers[header::CONTENT_LENGTH],
            expected.len().to_string().as_str()
        );
        assert!(headers.get(header::ETAG).is_none());
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "application/json; charset=utf-8"
        );
    }

    #[tokio::test]
    async fn malformed_selection_is_refused_without_calling_the_service() {
        let (status, headers, body, calls) = run(
            FieldSelectionLayer::new(),
            "/users/1?fields=id,,email",
            || json(USER),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(calls, 0);
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(
            body,
            r#"{"type":"urn:hasivu:problem:invalid-field-selection","code":"invalid-field-selection","title":"Invalid field selection","status":400,"detail":"expected a field name at position 3"}"#
        );
        let (status, _, body, calls) = run(
            FieldSelectionLayer::new().max_names(2),
            "/?fields=a,b,c",
            || json(USER),
        )
        .await;
        assert_eq!((status, calls), (StatusCode::BAD_REQUEST, 0));
        assert!(
            std::str::from_utf8(&body)
                .unwrap()
                .contains("more than 2 field names at position 4")
        );
    }

    #[tokio::test]
    async fn without_the_parameter_the_response_is_untouched() {
        for uri in ["/users/1", "/users/1?page=2&fieldsx=id"] {
            let (status, headers, body, calls) =
                run(FieldSelectionLayer::new(), uri, || json(USER)).await;
            assert_eq!((status, calls), (StatusCode::OK, 1));
            assert_eq!(body, USER);
            assert_eq!(headers[header::ETAG], "\"v1\"");
        }
        // Another parameter name leaves `fields` alone.
        let layer = FieldSelectionLayer::new().param("select");
        let (_, _, body, _) = run(layer.clone(), "/?fields=(((", || json(USER)).await;
        assert_eq!(body, USER);
        let (_, _, body, _) = run(layer, "/?select=id", || json(USER)).await;
        assert_eq!(body, r#"{"id":1}"#);
    }

    #[tokio::test]
    async fn responses_that_cannot_be_pruned_pass_through() {
        let uri = "/?fields=id";
        type Change = fn(&mut Response<Full<Bytes>>);
        let cases: [(&str, Change); 5] = [
            ("not json", |response| {
                let text = http::HeaderValue::from_static("text/plain");
                response.headers_mut().insert(header::CONTENT_TYPE, text);
            }),
            ("no content type", |response| {
                response.headers_mut().remove(header::CONTENT_TYPE);
            }),
            ("not 2xx", |response| {
                *response.status_mut() = StatusCode::NOT_FOUND;
            }),
            ("partial content", |response| {
                *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            }),
            ("encoded", |response| {
                let gzip = http::HeaderValue::from_static("gzip");
                response
                    .headers_mut()
                    .insert(header::CONTENT_ENCODING, gzip);
            }),
        ];
        for (name, change) in cases {
            let response = move || {
                let mut response = json(USER);
                change(&mut response);
                response
            };
            let (_, headers, body, calls) = run(FieldSelectionLayer::new(), uri, response).await;
            assert_eq!(calls, 1, "{name}");
            assert_eq!(body, USER, "{name}");
            assert_eq!(headers[header::ETAG], "\"v1\"", "{name}");
        }
        // Over `max_body`.
        let layer = FieldSelectionLayer::new().max_body(USER.len() - 1);
        let (_, headers, body, _) = run(layer, uri, || json(USER)).await;
        assert_eq!(body, USER);
        assert_eq!(headers[header::ETAG], "\"v1\"");
        let layer = FieldSelectionLayer::new().max_body(USER.len());
        let (_, _, body, _) = run(layer, uri, || json(USER)).await;
        assert_eq!(body, r#"{"id":1}"#);
    }

    #[tokio::test]
    async fn length_comes_from_the_size_hint_or_content_length() {
        let uri = "/?fields=id";
        // Unknown size and no Content-Length: passed through.
        let (_, _, body, _) = run(FieldSelectionLayer::new(), uri, || {
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(streamed(&[r#"{"id":1,"#, r#""x":2}"#]))
                .unwrap()
        })
        .await;
        assert_eq!(body, r#"{"id":1,"x":2}"#);
        // Unknown size with Content-Length: collected across frames.
        let (_, headers, body, _) = run(FieldSelectionLayer::new(), uri, || {
            Response::builder()
                .header(header::CONTENT_TYPE, "application/vnd.api+json")
                .header(header::CONTENT_LENGTH, "14")
                .body(streamed(&[r#"{"id":1,"#, r#""x":2}"#]))
                .unwrap()
        })
        .await;
        assert_eq!(body, r#"{"id":1}"#);
        assert_eq!(headers[header::CONTENT_LENGTH], "8");
        // A body longer than its Content-Length is an upstream failure.
        let (status, _, body, _) = run(FieldSelectionLayer::new(), uri, || {
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, "8")
                .body(streamed(&[r#"{"id":1,"#, r#""x":2}"#]))
                .unwrap()
        })
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            std::str::from_utf8(&body)
                .unwrap()
                .contains("upstream-body-error")
        );
    }

    #[tokio::test]
    async fn invalid_json_is_passed_through_unchanged() {
        let (status, headers, body, _) = run(FieldSelectionLayer::new(), "/?fields=id", || {
            json(r#"{"id":1,"#)
        })
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, r#"{"id":1,"#);
        assert_eq!(headers[header::CONTENT_LENGTH], "8");
        assert_eq!(headers[header::ETAG], "\"v1\"");
    }

    /// A body that fails after its first frame.
    #[derive(Debug)]
    struct Failing(u8);

    impl Body for Failing {
        type Data = Bytes;
        type Error = &'static str;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0 += 1;
            Poll::Ready(Some(match self.0 {
                1 => Ok(Frame::data(Bytes::from_static(b"{\"id\""))),
                _ => Err("connection reset"),
            }))
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(10)
        }
    }

    #[tokio::test]
    async fn body_errors_become_a_500_problem() {
        let handler = service_fn(|_request: Request<()>| async {
            let response = Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Failing(0))
                .unwrap();
            Ok::<_, Infallible>(response)
        });
        let request = Request::get("/?fields=id").body(()).unwrap();
        let response = FieldSelectionLayer::new()
            .layer(handler)
            .oneshot(request)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(
            std::str::from_utf8(&body)
                .unwrap()
                .contains(r#""code":"upstream-body-error""#)
        );

        // Without a selection the body, and its error, pass through.
        let handler = service_fn(|_request: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Failing(0)))
        });
        let request = Request::get("/").body(()).unwrap();
        let response = FieldSelectionLayer::new()
            .layer(handler)
            .oneshot(request)
            .await
            .unwrap();
        assert_eq!(
            response.into_body().collect().await.unwrap_err(),
            "connection reset"
        );
    }

    #[tokio::test]
    async fn service_errors_pass_through() {
        let handler =
            service_fn(|_request: Request<()>| async { Err::<Response<Full<Bytes>>, _>("down") });
        let request = Request::get("/?fields=id").body(()).unwrap();
        let error = FieldSelection::new(handler)
            .oneshot(request)
            .await
            .unwrap_err();
        assert_eq!(error, "down");
    }

    #[tokio::test]
    async fn service_accessors_and_debug() {
        let handler = service_fn(|_request: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        });
        let mut service = FieldSelection::<()>::layer().layer(handler);
        let _ = service.get_ref();
        let _ = service.get_mut();
        let mut service = FieldSelection::new(service.into_inner());
        let layer = FieldSelectionLayer::new()
            .param(String::from("f"))
            .max_selection_len(10);
        assert!(format!("{layer:?}").contains("max_len: 10"));
        assert!(format!("{service:?}").starts_with("FieldSelection"));
        let future = service.call(Request::get("/?fields=)").body(()).unwrap());
        assert_eq!(
            format!("{future:?}"),
            r#"ResponseFuture { state: "refused", .. }"#
        );
        let response = future.await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
}
