//! [`ResponseFuture`]: the inner service's answer (seen by the detectors
//! that watch answers), or the shield's own 429.

use std::{
    future::Future,
    net::IpAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderValue, Response, StatusCode, header};
use pin_project_lite::pin_project;

use super::{Detector, ShieldBody};

/// The problem type of every refusal.
pub(crate) const PROBLEM_TYPE: &str = "urn:hasivu:problem:security-violation";

/// The shield's own answer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refusal {
    /// The request scored at or above the threshold; `Some` when the
    /// client is now blocked for that long.
    Violation(Option<Duration>),
    /// The client is on the blocklist for this much longer.
    Blocked(Duration),
}

/// Hands answers to the detectors that watch them.
pub(crate) struct Observer {
    pub(crate) ip: IpAddr,
    pub(crate) detectors: Arc<[Arc<dyn Detector>]>,
}

/// What the slow path (a shared blocklist lookup, reading a body, writing
/// a block) decided.
pub(crate) enum Next<F> {
    Call(F, Option<Observer>),
    Refuse(Refusal),
}

pin_project! {
    /// The response future of [`Shield`](super::Shield).
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
        observer: Option<Observer>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Calling { #[pin] fut: F },
        Refused { refusal: Option<Refusal> },
        Pending { fut: BoxFuture<'static, Next<F>> },
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn calling(fut: F, observer: Option<Observer>) -> Self {
        Self {
            state: State::Calling { fut },
            observer,
        }
    }

    pub(crate) fn refused(refusal: Refusal) -> Self {
        Self {
            state: State::Refused {
                refusal: Some(refusal),
            },
            observer: None,
        }
    }

    pub(crate) fn pending(fut: BoxFuture<'static, Next<F>>) -> Self {
        Self {
            state: State::Pending { fut },
            observer: None,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ShieldBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Pending { fut } => {
                    let next = match ready!(fut.as_mut().poll(cx)) {
                        Next::Call(fut, observer) => {
                            *this.observer = observer;
                            State::Calling { fut }
                        }
                        Next::Refuse(refusal) => State::Refused {
                            refusal: Some(refusal),
                        },
                    };
                    this.state.set(next);
                }
                StateProj::Calling { fut } => {
                    let response = ready!(fut.poll(cx))?;
                    if let Some(observer) = this.observer.take() {
                        let status = response.status().as_u16();
                        for detector in observer.detectors.iter() {
                            detector.observe(observer.ip, status);
                        }
                    }
                    return Poll::Ready(Ok(response.map(ShieldBody::inner)));
                }
                StateProj::Refused { refusal } => {
                    let refusal = refusal.take().expect("polled after completion");
                    return Poll::Ready(Ok(refuse(refusal)));
                }
            }
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The 429 problem answer. It names no reason and echoes nothing of the
/// request: a prober learns only that it was refused.
pub(crate) fn refuse<B>(refusal: Refusal) -> Response<ShieldBody<B>> {
    let (detail, retry) = match refusal {
        Refusal::Violation(None) => (
            "the request was refused by the abuse shield".to_owned(),
            None,
        ),
        Refusal::Violation(Some(ttl)) => (
            format!(
                "the request was refused by the abuse shield and this client is blocked for {} s",
                ceil_secs(ttl)
            ),
            Some(ceil_secs(ttl)),
        ),
        Refusal::Blocked(left) => (
            format!(
                "this client is blocked by the abuse shield; retry in {} s",
                ceil_secs(left)
            ),
            Some(ceil_secs(left)),
        ),
    };
    // The detail holds no quote or backslash, so the JSON is written
    // directly: refusing a blocked client stays cheap.
    let retry_json = retry.map_or_else(|| "null".to_owned(), |r| r.to_string());
    let body = format!(
        r#"{{"type":"{PROBLEM_TYPE}","title":"Security violation","status":429,"code":"SECURITY_VIOLATION","detail":"{detail}","retry_after_seconds":{retry_json}}}"#
    );
    let mut response = Response::new(ShieldBody::full(Bytes::from(body)));
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if let Some(retry) = retry {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry));
    }
    response
}
