//! HTTP: a concurrency limit per host for outgoing calls.
//!
//! HTTP clients already keep their own keep-alive sockets per host, so this
//! adapter does not pool sockets. A [`Pool`](crate::Pool) of
//! [`HttpManager`] "connections" is a pool of [`HttpHandle`]s: permits that
//! each carry a handle to one shared `hyper-util` [`Client`], which reuses
//! its sockets as it always does. What the pool adds:
//!
//! - `max_size` bounds the requests in flight to the host (one per
//!   checked-out handle), and callers beyond it wait first in, first out,
//!   up to the acquire timeout;
//! - creating a handle, and validating one that has been idle (see
//!   [`PoolConfig::validate_after`](crate::PoolConfig)), first opens and
//!   closes a TCP connection to the host, so while the host is down
//!   acquires fail at once with the real error (`Connection refused`) and
//!   the circuit breaker opens, instead of every caller sending a request
//!   into the void;
//! - a handle whose request fails with a transport error reports itself
//!   broken, so the pool retires it and the next acquire probes the host
//!   again.
//!
//! Keep the handle until the response body is read: the limit counts
//! checked-out handles, not sockets. [`HttpHandle::request_bytes`] and
//! [`HttpHandle::get`] read the whole body before returning.
//!
//! One manager serves one host (scheme and authority); make one pool per
//! host. [`HttpManager::new`] speaks plain HTTP/1.1; for HTTPS build a
//! [`Client`] with a TLS connector (for example `hyper-rustls`) and pass it
//! to [`HttpManager::with_client`].
//!
//! ```
//! use hasivu_pool::{HttpManager, Pool, PoolConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let base = format!("http://{}", listener.local_addr()?);
//! # let app = axum::Router::new().route("/health", axum::routing::get(|| async { "ok" }));
//! # tokio::spawn(async move { axum::serve(listener, app).await });
//! // base: "http://127.0.0.1:8080"
//! let pool = Pool::builder(HttpManager::new(&base)?)
//!     .name("payments-api")
//!     .config(PoolConfig::default().max_size(8).min_idle(0))
//!     .build();
//! let mut api = pool.get().await?;
//! let response = api.get("/health").await?;
//! assert!(response.status().is_success());
//! assert_eq!(response.body(), "ok");
//! # Ok(())
//! # }
//! ```
//!
//! With a request of your own and without the TCP probe:
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hasivu_pool::{HttpManager, Pool};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = HttpManager::new("http://127.0.0.1:8080")?.probe(false);
//! let pool = Pool::builder(manager).build();
//! let request = http::Request::post("/orders")
//!     .header("content-type", "application/json")
//!     .body(Full::new(Bytes::from_static(br#"{"item":42}"#)))?;
//! let mut api = pool.get().await?;
//! let response = api.request_bytes(request).await?;
//! println!("{}: {:?}", response.status(), response.body());
//! # Ok(())
//! # }
//! ```

use bytes::Bytes;
use http::{
    Request, Response, Uri,
    uri::{Authority, Scheme},
};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{
        Client,
        connect::{Connect, HttpConnector},
    },
    rt::TokioExecutor,
};

use crate::Manager;

/// Makes [`HttpHandle`]s to one host; see the [module documentation](self).
#[derive(Clone, Debug)]
pub struct HttpManager<C = HttpConnector, B = Full<Bytes>> {
    client: Client<C, B>,
    scheme: Scheme,
    authority: Authority,
    probe: bool,
}

impl HttpManager {
    /// A manager for the host of `base` (`http://host:port`; a path is
    /// ignored) with its own plain-HTTP/1.1 client sending
    /// [`Full<Bytes>`](Full) bodies. For other bodies or connectors, build
    /// the client and use [`with_client`](Self::with_client).
    ///
    /// # Errors
    ///
    /// [`HttpError::InvalidBase`] when `base` is not an absolute URI with
    /// a scheme and a host.
    pub fn new(base: &str) -> Result<Self, HttpError> {
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self::with_client(base, client)
    }
}

impl<C, B> HttpManager<C, B> {
    /// A manager for the host of `base` sending through `client` (one with
    /// a TLS connector, proxies or your own socket settings). The client's
    /// socket pool is shared by every handle.
    ///
    /// # Errors
    ///
    /// [`HttpError::InvalidBase`] when `base` is not an absolute URI with
    /// a scheme and a host.
    pub fn with_client(base: &str, client: Client<C, B>) -> Result<Self, HttpError> {
        let invalid = || HttpError::InvalidBase(base.to_owned());
        let uri: Uri = base.parse().map_err(|_| invalid())?;
        let parts = uri.into_parts();
        let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
            return Err(invalid());
        };
        Ok(Self {
            client,
            scheme,
            authority,
            probe: true,
        })
    }

    /// Whether creating a handle, and validating an idle one, first checks
    /// that the host accepts TCP connections (default `true`). Without the
    /// probe creation never fails, so the breaker never opens and a dead
    /// host shows only in request errors.
    #[must_use]
    pub fn probe(mut self, probe: bool) -> Self {
        self.probe = probe;
        self
    }

    /// The host's authority (`host:port`).
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Opens and closes one TCP connection to the host.
    async fn probe_host(&self) -> Result<(), HttpError> {
        let host = self.authority.host();
        // `[::1]` in a URI, `::1` for the resolver.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = self
            .authority
            .port_u16()
            .unwrap_or(if self.scheme == Scheme::HTTPS {
                443
            } else {
                80
            });
        match tokio::net::TcpStream::connect((host, port)).await {
            Ok(_stream) => Ok(()),
            Err(source) => Err(HttpError::Connect {
                authority: self.authority.to_string(),
                source,
            }),
        }
    }
}

impl<C, B> Manager for HttpManager<C, B>
where
    C: Connect + Clone + Send + Sync + 'static,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Connection = HttpHandle<C, B>;
    type Error = HttpError;

    async fn create(&self) -> Result<HttpHandle<C, B>, HttpError> {
        if self.probe {
            self.probe_host().await?;
        }
        Ok(HttpHandle {
            client: self.client.clone(),
            scheme: self.scheme.clone(),
            authority: self.authority.clone(),
            broken: false,
        })
    }

    async fn validate(&self, _handle: &mut HttpHandle<C, B>) -> Result<(), HttpError> {
        // The client checks its own sockets; what can have changed while
        // the handle sat idle is whether the host is up.
        if self.probe {
            self.probe_host().await?;
        }
        Ok(())
    }

    fn is_broken(&self, handle: &HttpHandle<C, B>) -> bool {
        handle.broken
    }
}

/// A permit to send one request at a time to the manager's host, with a
/// handle to the shared client.
#[derive(Debug)]
pub struct HttpHandle<C = HttpConnector, B = Full<Bytes>> {
    client: Client<C, B>,
    scheme: Scheme,
    authority: Authority,
    broken: bool,
}

impl<C, B> HttpHandle<C, B>
where
    C: Connect + Clone + Send + Sync + 'static,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Sends `request` to the host. A URI without a host (`/path?query`)
    /// is completed with the manager's scheme and host.
    ///
    /// Keep the handle until the body is read, so the request still counts
    /// against the limit.
    ///
    /// # Errors
    ///
    /// [`HttpError::OtherHost`] for a URI naming another host;
    /// [`HttpError::Client`] when sending fails (the handle then reports
    /// itself broken and the pool retires it). A response with an error
    /// status is a response, not an error.
    pub async fn request(
        &mut self,
        mut request: Request<B>,
    ) -> Result<Response<Incoming>, HttpError> {
        *request.uri_mut() = self.absolute(request.uri())?;
        match self.client.request(request).await {
            Ok(response) => Ok(response),
            Err(error) => {
                self.broken = true;
                Err(HttpError::Client(error))
            }
        }
    }

    /// Like [`request`](Self::request), and reads the whole body.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request), and [`HttpError::Body`] when reading
    /// the body fails.
    pub async fn request_bytes(
        &mut self,
        request: Request<B>,
    ) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = self.request(request).await?.into_parts();
        match body.collect().await {
            Ok(body) => Ok(Response::from_parts(parts, body.to_bytes())),
            Err(error) => {
                self.broken = true;
                Err(HttpError::Body(error))
            }
        }
    }

    /// `GET path_and_query` with an empty body; reads the whole response.
    ///
    /// # Errors
    ///
    /// As [`request_bytes`](Self::request_bytes), and
    /// [`HttpError::InvalidUri`] when `path_and_query` is not a valid URI.
    pub async fn get(&mut self, path_and_query: &str) -> Result<Response<Bytes>, HttpError>
    where
        B: Default,
    {
        let uri: Uri = path_and_query
            .parse()
            .map_err(|_| HttpError::InvalidUri(path_and_query.to_owned()))?;
        let mut request = Request::new(B::default());
        *request.uri_mut() = uri;
        self.request_bytes(request).await
    }

    /// The shared client (its socket pool serves every handle).
    pub fn client(&self) -> &Client<C, B> {
        &self.client
    }

    /// `uri` with the manager's scheme and host filled in.
    fn absolute(&self, uri: &Uri) -> Result<Uri, HttpError> {
        let mut parts = uri.clone().into_parts();
        match &parts.authority {
            None => {
                parts.scheme = Some(self.scheme.clone());
                parts.authority = Some(self.authority.clone());
                if parts.path_and_query.is_none() {
                    parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
                }
            }
            Some(authority) if *authority == self.authority => {}
            Some(authority) => {
                return Err(HttpError::OtherHost {
                    expected: self.authority.to_string(),
                    got: authority.to_string(),
                });
            }
        }
        Uri::from_parts(parts).map_err(|_| HttpError::InvalidUri(uri.to_string()))
    }
}

impl<C, B> HttpHandle<C, B> {
    /// Whether a request through this handle failed in transport; the pool
    /// retires a broken handle when it comes back.
    pub fn is_broken(&self) -> bool {
        self.broken
    }
}

/// Why an HTTP handle could not be made or a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The host did not accept a TCP connection (the probe on create).
    #[error("http: connecting to {authority}: {source}")]
    Connect {
        /// The host.
        authority: String,
        /// The socket error (`Connection refused`, …).
        #[source]
        source: std::io::Error,
    },
    /// Sending the request failed, causes included in the message.
    #[error("http: {}", super::with_causes(.0))]
    Client(#[source] hyper_util::client::legacy::Error),
    /// Reading the response body failed.
    #[error("http: reading the response body: {}", super::with_causes(.0))]
    Body(#[source] hyper::Error),
    /// The base given to the manager is not an absolute URI with a host.
    #[error("http: not an absolute URI with a host: {0:?}")]
    InvalidBase(String),
    /// A request URI is not valid.
    #[error("http: invalid URI {0:?}")]
    InvalidUri(String),
    /// A request named another host than the manager's.
    #[error("http: request for {got}, but this pool serves {expected}")]
    OtherHost {
        /// The manager's host.
        expected: String,
        /// The request's host.
        got: String,
    },
}
