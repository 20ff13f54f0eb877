//! The webhook sink: a JSON POST per batch, with a timeout and retries.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde::Serialize;

use super::{AlertSink, Notification, SinkFuture, Status};
use crate::error::Error;

/// POSTs each batch as JSON to a URL, in the shape of Alertmanager's
/// webhook (`{"version": "1", "status": "firing", "alerts": [...]}`),
/// with a timeout per attempt and retries with exponential backoff on
/// connection failures, timeouts, 429 and 5xx answers (other 4xx answers
/// are not retried).
///
/// Plain `http://` only: put a local relay or proxy in front of TLS
/// endpoints (the crate carries no TLS stack).
///
/// ```
/// use std::time::Duration;
/// use hasivu_metrics::alerts::WebhookSink;
///
/// let sink = WebhookSink::new("http://127.0.0.1:9093/hooks/alerts")
///     .unwrap()
///     .timeout(Duration::from_secs(2))
///     .retries(3)
///     .backoff(Duration::from_millis(200))
///     .header("authorization", "Bearer secret");
/// # let _ = sink;
/// ```
#[derive(Clone)]
#[must_use]
pub struct WebhookSink {
    uri: http::Uri,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
    headers: http::HeaderMap,
}

impl std::fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSink")
            .field("uri", &self.uri)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .field("headers", &self.headers.len())
            .finish()
    }
}

#[derive(Serialize)]
struct Payload<'a> {
    version: &'static str,
    status: Status,
    alerts: &'a [Notification],
}

impl WebhookSink {
    /// A sink posting to `url` (5 s timeout, 2 retries, 250 ms backoff).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`] when `url` does not parse or is not `http`.
    pub fn new(url: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: http::Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(invalid("only absolute http:// URLs are supported"));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        Ok(Self {
            uri,
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout: Duration::from_secs(5),
            retries: 2,
            backoff: Duration::from_millis(250),
            headers: http::HeaderMap::new(),
        })
    }

    /// The limit on each attempt, connection and answer included.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Attempts after the first (0 for none).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The wait before the first retry, doubled for each later one.
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// A header sent with every request.
    ///
    /// # Panics
    ///
    /// When `name` or `value` is not a valid header name or value.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let name = http::HeaderName::try_from(name).expect("valid header name");
        let value = http::HeaderValue::try_from(value).expect("valid header value");
        self.headers.insert(name, value);
        self
    }

    fn error(&self, reason: String) -> Error {
        Error::Sink {
            sink: format!("webhook {}", self.uri),
            reason,
        }
    }

    /// One attempt; `Err((retryable, reason))` on failure.
    async fn attempt(&self, body: &Bytes) -> Result<(), (bool, String)> {
        let mut request = http::Request::post(self.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))
            .map_err(|e| (false, e.to_string()))?;
        request.headers_mut().extend(self.headers.clone());
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Err(_) => Err((true, format!("no answer within {:?}", self.timeout))),
            Ok(Err(e)) => Err((true, e.to_string())),
            Ok(Ok(response)) => {
                let status = response.status();
                if status.is_success() {
                    Ok(())
                } else {
                    let retry = status.is_server_error() || status.as_u16() == 429;
                    Err((retry, format!("answered {status}")))
                }
            }
        }
    }
}

impl AlertSink for WebhookSink {
    fn name(&self) -> &str {
        "webhook"
    }

    fn send<'a>(&'a self, batch: &'a [Notification]) -> SinkFuture<'a> {
        Box::pin(async move {
            let status = if batch.iter().any(|n| n.status == Status::Firing) {
                Status::Firing
            } else {
                Status::Resolved
            };
            let body = serde_json::to_vec(&Payload {
                version: "1",
                status,
                alerts: batch,
            })
            .map_err(|e| self.error(e.to_string()))?;
            let body = Bytes::from(body);
            let mut wait = self.backoff;
            let mut attempt = 0;
            loop {
                match self.attempt(&body).await {
                    Ok(()) => return Ok(()),
                    Err((retryable, reason)) => {
                        if !retryable || attempt >= self.retries {
                            return Err(self.error(format!(
                                "{reason} (after {} attempt{})",
                                attempt + 1,
                                if attempt == 0 { "" } else { "s" }
                            )));
                        }
                        tracing::debug!(uri = %self.uri, %reason, attempt, "webhook retry");
                    }
                }
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
                attempt += 1;
            }
        })
    }
}
