//! [`ResponseFuture`]: waits for the check, then for the inner service,
//! and adds the rate-limit fields.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderValue, Response, StatusCode, header};
use pin_project_lite::pin_project;

use super::{RateLimitBody, headers, layer::Config};
use crate::{Decision, InFlightGuard};

/// What the check decided, with the inner service's future when admitted.
pub(crate) enum Checked<F> {
    Call(F, Decision),
    Reject(Decision),
}

pin_project! {
    /// The response future of [`RateLimit`](super::RateLimit).
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
        guard: Option<InFlightGuard>,
        config: Arc<Config>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Checking { check: BoxFuture<'static, Checked<F>> },
        Calling { #[pin] fut: F, decision: Option<Decision> },
        Rejected { decision: Option<Decision> },
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn unlimited(fut: F, config: Arc<Config>) -> Self {
        Self {
            state: State::Calling {
                fut,
                decision: None,
            },
            guard: None,
            config,
        }
    }

    pub(crate) fn calling(
        fut: F,
        decision: Decision,
        guard: Option<InFlightGuard>,
        config: Arc<Config>,
    ) -> Self {
        Self {
            state: State::Calling {
                fut,
                decision: Some(decision),
            },
            guard,
            config,
        }
    }

    pub(crate) fn rejected(decision: Decision, config: Arc<Config>) -> Self {
        Self {
            state: State::Rejected {
                decision: Some(decision),
            },
            guard: None,
            config,
        }
    }

    pub(crate) fn checking(
        check: BoxFuture<'static, Checked<F>>,
        guard: Option<InFlightGuard>,
        config: Arc<Config>,
    ) -> Self {
        Self {
            state: State::Checking { check },
            guard,
            config,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<RateLimitBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Checking { check } => {
                    let next = match ready!(check.as_mut().poll(cx)) {
                        Checked::Call(fut, decision) => State::Calling {
                            fut,
                            decision: Some(decision),
                        },
                        Checked::Reject(decision) => State::Rejected {
                            decision: Some(decision),
                        },
                    };
                    this.state.set(next);
                }
                StateProj::Calling { fut, decision } => {
                    let result = ready!(fut.poll(cx));
                    drop(this.guard.take());
                    if let Some(errors) = &this.config.errors {
                        errors.record(result.as_ref().is_ok_and(|r| !r.status().is_server_error()));
                    }
                    let mut response = result?.map(RateLimitBody::inner);
                    if let Some(decision) = decision.take()
                        && this.config.on_success
                    {
                        add_fields(&mut response, &decision, this.config);
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Rejected { decision } => {
                    drop(this.guard.take());
                    let decision = decision.take().expect("polled after completion");
                    return Poll::Ready(Ok(reject(&decision, this.config)));
                }
            }
        }
    }
}

/// The 429 (or, while limits are reduced for load, 503) answer.
fn reject<B>(decision: &Decision, config: &Config) -> Response<RateLimitBody<B>> {
    let status = if decision.reduced {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::TOO_MANY_REQUESTS
    };
    let body = headers::problem_body(decision, status.as_u16());
    let mut response = Response::new(RateLimitBody::full(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if let Some(retry) = decision.verdict.retry_after {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(headers::ceil_secs(retry)),
        );
    }
    add_fields(&mut response, decision, config);
    response
}

fn add_fields<B>(response: &mut Response<B>, decision: &Decision, config: &Config) {
    let fields = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&headers::policy_field(decision)) {
        fields.insert("ratelimit-policy", value);
    }
    if let Ok(value) = HeaderValue::from_str(&headers::limit_field(decision)) {
        fields.insert("ratelimit", value);
    }
    if config.legacy {
        fields.insert(
            "x-ratelimit-limit",
            HeaderValue::from(decision.verdict.limit),
        );
        fields.insert(
            "x-ratelimit-remaining",
            HeaderValue::from(decision.verdict.remaining),
        );
        fields.insert(
            "x-ratelimit-reset",
            HeaderValue::from(headers::reset_secs(decision)),
        );
    }
}
