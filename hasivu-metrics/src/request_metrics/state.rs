//! What every service of one layer shares: the route registry with its
//! pre-resolved metric handles, the in-flight gauges, the cold-start flag.

use std::sync::{
    Arc, Mutex, OnceLock, PoisonError,
    atomic::{AtomicBool, Ordering},
};

use arc_swap::ArcSwap;
use http::Method;
use metrics::{Gauge, Histogram, Label, SharedString, Unit};

use crate::{
    Clock, PerformanceAnalytics, RouteHandle,
    cardinality::{Methods, OVERFLOW, Registry, UNMATCHED},
};

/// `http.server.request.duration`: seconds from the call to the end of the
/// response body.
pub(crate) const DURATION: &str = "http.server.request.duration";
/// `http.server.active_requests`: requests between the call and the end of
/// their response.
pub(crate) const ACTIVE: &str = "http.server.active_requests";
/// Seconds from the call to the response headers (opt-in).
pub(crate) const TIME_TO_HEADERS: &str = "hasivu.http.server.time_to_headers";
/// Bytes allocated while serving a request (feature `alloc-tracking`).
pub(crate) const ALLOCATED: &str = "hasivu.http.server.request.allocated";
/// Requests that were the first after the layer was built.
pub(crate) const COLD_STARTS: &str = "hasivu.http.server.cold_starts";

/// The layer's settings.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) max_routes: usize,
    pub(crate) methods: Vec<Method>,
    pub(crate) response_time_header: bool,
    pub(crate) time_to_headers: bool,
    pub(crate) memory_header: bool,
    pub(crate) analytics: Option<PerformanceAnalytics>,
    pub(crate) clock: Option<Clock>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_routes: 1000,
            methods: Vec::new(),
            response_time_header: false,
            time_to_headers: false,
            memory_header: false,
            analytics: None,
            clock: None,
        }
    }
}

/// How a request ended, as the layer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    Completed,
    Aborted,
    ServiceError,
    BodyError,
}

impl End {
    fn error_type(self, status: Option<u16>) -> Option<SharedString> {
        match self {
            End::Completed => match status {
                Some(s @ 500..) => Some(SharedString::from(s.to_string())),
                _ => None,
            },
            End::Aborted => Some(SharedString::const_str("aborted")),
            End::ServiceError => Some(SharedString::const_str("service_error")),
            End::BodyError => Some(SharedString::const_str("body_error")),
        }
    }

    fn code(self) -> u32 {
        match self {
            End::Completed => 0,
            End::Aborted => 1,
            End::ServiceError => 2,
            End::BodyError => 3,
        }
    }

    pub(crate) fn outcome(self) -> crate::Outcome {
        match self {
            End::Completed => crate::Outcome::Completed,
            End::Aborted => crate::Outcome::Aborted,
            End::ServiceError | End::BodyError => crate::Outcome::Failed,
        }
    }
}

pub(crate) struct State {
    pub(crate) clock: Clock,
    pub(crate) methods: Methods,
    pub(crate) routes: Registry<RouteEntry>,
    pub(crate) unmatched: u32,
    active: Box<[OnceLock<Gauge>]>,
    warm: AtomicBool,
    pub(crate) analytics: Option<PerformanceAnalytics>,
    pub(crate) response_time_header: bool,
    pub(crate) time_to_headers: bool,
    pub(crate) memory_header: bool,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("routes", &self.routes)
            .field("analytics", &self.analytics.is_some())
            .finish_non_exhaustive()
    }
}

impl State {
    pub(crate) fn new(config: &Config) -> Self {
        let methods = Methods::new(&config.methods);
        // One slot more than asked: `unmatched` is registered up front.
        let routes = Registry::new(config.max_routes.saturating_add(1), OVERFLOW);
        let unmatched = routes.resolve(UNMATCHED, |name| RouteEntry::new(name, &methods));
        // Samples are placed in the analytics' slices by the time the layer
        // reads, so with analytics the layer must read the analytics clock.
        let clock = match (&config.analytics, &config.clock) {
            (Some(analytics), _) => analytics.clock().clone(),
            (None, Some(clock)) => clock.clone(),
            (None, None) => Clock::new(),
        };
        Self {
            clock,
            active: (0..methods.len()).map(|_| OnceLock::new()).collect(),
            methods,
            routes,
            unmatched,
            warm: AtomicBool::new(false),
            analytics: config.analytics.clone(),
            response_time_header: config.response_time_header,
            time_to_headers: config.time_to_headers,
            memory_header: config.memory_header,
        }
    }

    /// The route id of a template, registering it when new.
    #[inline]
    pub(crate) fn route(&self, template: &str) -> u32 {
        self.routes
            .resolve(template, |name| RouteEntry::new(name, &self.methods))
    }

    /// Counts a request in; `true` for the first one.
    #[inline]
    pub(crate) fn start(&self, method: usize) -> bool {
        self.active(method).increment(1.0);
        if self.warm.load(Ordering::Relaxed) {
            return false;
        }
        if self.warm.swap(true, Ordering::Relaxed) {
            return false;
        }
        describe();
        metrics::counter!(COLD_STARTS).increment(1);
        true
    }

    fn active(&self, method: usize) -> &Gauge {
        self.active[method].get_or_init(|| {
            let label = SharedString::from(self.methods.label(method).to_owned());
            metrics::gauge!(ACTIVE, "http.request.method" => label)
        })
    }

    /// The per-method part of a route.
    fn method_entry(&self, route: u32, method: usize) -> &MethodEntry {
        let entry = &self.routes.get(route);
        entry.value.methods[method].get_or_init(|| {
            let label = self.methods.label(method);
            MethodEntry {
                analytics: self
                    .analytics
                    .as_ref()
                    .map(|a| a.route(&format!("{label} {}", entry.name))),
                series: ArcSwap::from_pointee(Vec::new()),
                write: Mutex::new(()),
            }
        })
    }

    /// Runs `f` with the metric handles of one series, creating them the
    /// first time.
    #[inline]
    fn with_series(
        &self,
        route: u32,
        method: usize,
        status: Option<u16>,
        end: End,
        f: impl FnOnce(&Series),
    ) {
        let key = u32::from(status.unwrap_or(0)) | end.code() << 16;
        let entry = self.method_entry(route, method);
        if let Some((_, series)) = entry.series.load().iter().find(|(k, _)| *k == key) {
            return f(series);
        }
        let _guard = entry.write.lock().unwrap_or_else(PoisonError::into_inner);
        let current = entry.series.load_full();
        let series = match current.iter().find(|(k, _)| *k == key) {
            Some((_, series)) => series.clone(),
            None => {
                let series = self.new_series(route, method, status, end);
                let mut next = Vec::clone(&current);
                next.push((key, series.clone()));
                entry.series.store(Arc::new(next));
                series
            }
        };
        f(&series);
    }

    fn new_series(&self, route: u32, method: usize, status: Option<u16>, end: End) -> Series {
        let mut labels = vec![
            Label::new(
                "http.request.method",
                SharedString::from(self.methods.label(method).to_owned()),
            ),
            Label::new("http.route", self.routes.get(route).value.label.clone()),
        ];
        if let Some(status) = status {
            labels.push(Label::new(
                "http.response.status_code",
                SharedString::from(status.to_string()),
            ));
        }
        if let Some(error) = end.error_type(status) {
            labels.push(Label::new("error.type", error));
        }
        Series {
            duration: metrics::histogram!(DURATION, labels.clone()),
            headers: self
                .time_to_headers
                .then(|| metrics::histogram!(TIME_TO_HEADERS, labels.clone())),
            allocated: (cfg!(feature = "alloc-tracking") && self.memory_header)
                .then(|| metrics::histogram!(ALLOCATED, labels)),
        }
    }

    /// Records the time to headers (when enabled).
    #[inline]
    pub(crate) fn headers_sent(&self, route: u32, method: usize, status: u16, nanos: u64) {
        if self.time_to_headers {
            self.with_series(route, method, Some(status), End::Completed, |s| {
                if let Some(h) = &s.headers {
                    h.record(nanos as f64 / 1e9);
                }
            });
        }
    }

    /// Records the end of a request.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn finish(
        &self,
        now: u64,
        route: u32,
        method: usize,
        nanos: u64,
        status: Option<u16>,
        end: End,
        cache_hit: Option<bool>,
        allocated: u64,
    ) {
        self.active(method).decrement(1.0);
        self.with_series(route, method, status, end, |s| {
            s.duration.record(nanos as f64 / 1e9);
            if let Some(h) = &s.allocated {
                h.record(allocated as f64);
            }
        });
        if let Some(handle) = &self.method_entry(route, method).analytics {
            let flags = crate::analytics::flags(status, end.outcome(), cache_hit);
            handle.record_raw(now, nanos, flags);
        }
    }
}

/// A registered route.
pub(crate) struct RouteEntry {
    label: SharedString,
    methods: Box<[OnceLock<MethodEntry>]>,
}

impl std::fmt::Debug for RouteEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteEntry")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl RouteEntry {
    fn new(name: &Arc<str>, methods: &Methods) -> Self {
        Self {
            label: SharedString::from(Arc::clone(name)),
            methods: (0..methods.len()).map(|_| OnceLock::new()).collect(),
        }
    }
}

/// One method of a route: its analytics handle and its metric series.
struct MethodEntry {
    analytics: Option<RouteHandle>,
    // Small (one entry per status and outcome seen), read without a lock.
    series: ArcSwap<Vec<(u32, Series)>>,
    write: Mutex<()>,
}

/// The handles of one label set.
#[derive(Clone)]
struct Series {
    duration: Histogram,
    headers: Option<Histogram>,
    allocated: Option<Histogram>,
}

/// Describes the metrics to the installed recorder, once per layer (at
/// the first request, when the recorder is surely installed).
fn describe() {
    metrics::describe_histogram!(
        DURATION,
        Unit::Seconds,
        "Duration of HTTP server requests, to the end of the response body."
    );
    metrics::describe_gauge!(
        ACTIVE,
        Unit::Count,
        "Number of active HTTP server requests."
    );
    metrics::describe_histogram!(
        TIME_TO_HEADERS,
        Unit::Seconds,
        "Time from the request to its response headers."
    );
    metrics::describe_histogram!(
        ALLOCATED,
        Unit::Bytes,
        "Bytes allocated while serving a request."
    );
    metrics::describe_counter!(
        COLD_STARTS,
        Unit::Count,
        "Requests that were the first served after start."
    );
}
