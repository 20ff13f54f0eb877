//! The system monitor: process and host figures plus registered providers,
//! sampled on a background task.
//!
//! [`SystemMonitor`] reads, on Linux, the process's resident memory
//! (`/proc/self/status`), CPU time and threads (`/proc/self/stat`), open
//! file descriptors (`/proc/self/fd`), the load average (`/proc/loadavg`)
//! and the host's memory (`/proc/meminfo`), then asks every registered
//! provider (a pool's size and waiters, a cache's hit counts, Redis's
//! memory) for its readings. [`spawn`](SystemMonitor::spawn) does that
//! every [`interval`](SystemMonitor::interval) on a tokio task, off the
//! request path, publishes a [`SystemStatus`] snapshot and sets gauges.
//!
//! ```
//! use std::time::Duration;
//! use hasivu_metrics::SystemMonitor;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mut monitor = SystemMonitor::new()
//!     .interval(Duration::from_secs(10))
//!     .provider("db_pool", || vec![("db.client.connection.count".to_owned(), 8.0)])
//!     .spawn();
//! let status = monitor.next().await; // the first sample; later `monitor.status()`
//! assert!(status.uptime_secs >= 0.0);
//! assert_eq!(status.providers["db_pool"]["db.client.connection.count"], 8.0);
//! # }
//! ```
//!
//! # Gauges
//!
//! Each sample sets, through the `metrics` facade (names from the
//! OpenTelemetry process and system conventions where they exist):
//!
//! | gauge | value |
//! | --- | --- |
//! | `process.memory.usage` | resident set size, bytes |
//! | `process.cpu.time` | user + system CPU time so far, seconds |
//! | `process.cpu.utilization` | CPU time over wall time since the previous sample (1 = one core busy) |
//! | `process.uptime` | seconds since the process started |
//! | `process.thread.count` | threads |
//! | `process.unix.file_descriptor.count` | open file descriptors |
//! | `system.cpu.load_average.1m`, `.5m`, `.15m` | load averages |
//! | `system.memory.usage`, `system.linux.memory.available` | host memory in use and available, bytes |
//! | each provider reading | its value, named as the reading, with the attribute `provider` |
//!
//! Off Linux the process and host figures are `None` and only uptime
//! (since the monitor was created) and providers are reported.

mod procfs;

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use tokio::{sync::watch, task::JoinHandle};

/// Named readings from one provider.
pub type Readings = Vec<(String, f64)>;

type BoxFuture = Pin<Box<dyn Future<Output = Readings> + Send>>;

#[derive(Clone)]
enum Provider {
    Sync(Arc<dyn Fn() -> Readings + Send + Sync>),
    Async(Arc<dyn Fn() -> BoxFuture + Send + Sync>),
}

/// A snapshot of the process, the host and the providers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemStatus {
    /// When the sample was taken, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Seconds since the process started (since the monitor was created
    /// where the start time is unknown).
    pub uptime_secs: f64,
    /// Resident set size, in bytes.
    pub rss_bytes: Option<u64>,
    /// User and system CPU time used so far, in seconds.
    pub cpu_seconds: Option<f64>,
    /// CPU time over wall time since the previous sample (since the start
    /// for the first): 1.0 is one core fully busy.
    pub cpu_utilization: Option<f64>,
    /// Threads of the process.
    pub threads: Option<u64>,
    /// Open file descriptors of the process.
    pub open_fds: Option<u64>,
    /// The 1, 5 and 15 minute load averages of the host.
    pub load_average: Option<[f64; 3]>,
    /// The host's memory, in bytes.
    pub memory_total_bytes: Option<u64>,
    /// The host's memory available to new work, in bytes.
    pub memory_available_bytes: Option<u64>,
    /// CPUs this process may use.
    pub cpus: usize,
    /// Each provider's readings, by provider name.
    pub providers: BTreeMap<String, BTreeMap<String, f64>>,
}

/// Samples the process, the host and registered providers; see the
/// [module docs](self).
#[must_use]
pub struct SystemMonitor {
    interval: Duration,
    providers: Vec<(String, Provider)>,
    gauges: bool,
    created: Instant,
    // CPU seconds and wall time of the previous sample.
    previous: Mutex<Option<(f64, Instant)>>,
}

impl std::fmt::Debug for SystemMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemMonitor")
            .field("interval", &self.interval)
            .field(
                "providers",
                &self.providers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("gauges", &self.gauges)
            .finish_non_exhaustive()
    }
}

impl Default for SystemMonitor {
    fn default() -> Self {
        Self::new()
    }
}

impl SystemMonitor {
    /// A monitor sampling every 10 seconds, setting gauges, with no
    /// providers.
    pub fn new() -> Self {
        Self {
            interval: Duration::from_secs(10),
            providers: Vec::new(),
            gauges: true,
            created: Instant::now(),
            previous: Mutex::new(None),
        }
    }

    /// Time between samples of the background task (default 10 s, at
    /// least 10 ms).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Whether each sample sets the gauges (default on).
    pub fn gauges(mut self, enabled: bool) -> Self {
        self.gauges = enabled;
        self
    }

    /// Adds a provider whose readings are taken with each sample, such as
    /// a pool's status. It runs on the monitor's task: keep it quick and
    /// non-blocking.
    pub fn provider<F>(mut self, name: impl Into<String>, readings: F) -> Self
    where
        F: Fn() -> Readings + Send + Sync + 'static,
    {
        self.providers
            .push((name.into(), Provider::Sync(Arc::new(readings))));
        self
    }

    /// Adds a provider that has to wait for its readings, such as Redis's
    /// `INFO memory`. A provider that fails should return no readings.
    ///
    /// ```
    /// use hasivu_metrics::SystemMonitor;
    ///
    /// let monitor = SystemMonitor::new().async_provider("redis", || async {
    ///     // let info = redis::cmd("INFO").arg("memory").query_async(&mut conn).await?;
    ///     vec![("redis.memory.used".to_owned(), 1_048_576.0)]
    /// });
    /// # let _ = monitor;
    /// ```
    pub fn async_provider<F, Fut>(mut self, name: impl Into<String>, readings: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Readings> + Send + 'static,
    {
        let readings = Arc::new(move || -> BoxFuture { Box::pin(readings()) });
        self.providers
            .push((name.into(), Provider::Async(readings)));
        self
    }

    /// Takes one sample now (and sets the gauges when enabled).
    pub async fn sample(&self) -> SystemStatus {
        let reading = procfs::read();
        let now = Instant::now();
        let cpu_utilization = reading.cpu_seconds.and_then(|cpu| {
            let mut previous = self.previous.lock().unwrap_or_else(PoisonError::into_inner);
            let (was, wall) = match previous.replace((cpu, now)) {
                Some((was, then)) => (was, now.duration_since(then).as_secs_f64()),
                // The first sample: the average since the process started.
                None => (
                    0.0,
                    reading
                        .process_uptime
                        .unwrap_or_else(|| self.created.elapsed().as_secs_f64()),
                ),
            };
            (wall > 0.0).then(|| ((cpu - was) / wall).max(0.0))
        });
        let mut providers = BTreeMap::new();
        for (name, provider) in &self.providers {
            let readings = match provider {
                Provider::Sync(f) => f(),
                Provider::Async(f) => f().await,
            };
            providers
                .entry(name.clone())
                .or_insert_with(BTreeMap::new)
                .extend(readings);
        }
        let status = SystemStatus {
            timestamp_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            uptime_secs: reading
                .process_uptime
                .unwrap_or_else(|| self.created.elapsed().as_secs_f64()),
            rss_bytes: reading.rss_bytes,
            cpu_seconds: reading.cpu_seconds,
            cpu_utilization,
            threads: reading.threads,
            open_fds: reading.open_fds,
            load_average: reading.load_average,
            memory_total_bytes: reading.memory_total_bytes,
            memory_available_bytes: reading.memory_available_bytes,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            providers,
        };
        if self.gauges {
            set_gauges(&status);
        }
        status
    }

    /// Samples now and then every interval on a tokio task; the handle
    /// reads the latest snapshot. Dropping the handle stops the task.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn spawn(self) -> MonitorHandle {
        let (sender, receiver) = watch::channel(Arc::new(SystemStatus::default()));
        let monitor = Arc::new(self);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(monitor.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let status = monitor.sample().await;
                if sender.send(Arc::new(status)).is_err() {
                    return;
                }
            }
        });
        MonitorHandle { receiver, task }
    }
}

/// The running monitor of [`SystemMonitor::spawn`]; dropping it stops the
/// task.
#[derive(Debug)]
pub struct MonitorHandle {
    receiver: watch::Receiver<Arc<SystemStatus>>,
    task: JoinHandle<()>,
}

impl MonitorHandle {
    /// The latest snapshot (the empty default until the first sample,
    /// taken as soon as the task runs, is in).
    pub fn status(&self) -> SystemStatus {
        SystemStatus::clone(&self.receiver.borrow())
    }

    /// A receiver of the snapshots, for handlers that want the latest one
    /// or to wait for the next.
    pub fn subscribe(&self) -> watch::Receiver<Arc<SystemStatus>> {
        self.receiver.clone()
    }

    /// Waits for the next sample and returns it.
    pub async fn next(&mut self) -> SystemStatus {
        let _ = self.receiver.changed().await;
        SystemStatus::clone(&self.receiver.borrow_and_update())
    }

    /// Stops the task.
    pub fn stop(self) {}
}

impl Drop for MonitorHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn set_gauges(status: &SystemStatus) {
    let set = |name: &'static str, value: Option<f64>| {
        if let Some(value) = value {
            metrics::gauge!(name).set(value);
        }
    };
    set("process.memory.usage", status.rss_bytes.map(|b| b as f64));
    set("process.cpu.time", status.cpu_seconds);
    set("process.cpu.utilization", status.cpu_utilization);
    set("process.uptime", Some(status.uptime_secs));
    set("process.thread.count", status.threads.map(|n| n as f64));
    set(
        "process.unix.file_descriptor.count",
        status.open_fds.map(|n| n as f64),
    );
    if let Some([one, five, fifteen]) = status.load_average {
        set("system.cpu.load_average.1m", Some(one));
        set("system.cpu.load_average.5m", Some(five));
        set("system.cpu.load_average.15m", Some(fifteen));
    }
    set(
        "system.memory.usage",
        status
            .memory_total_bytes
            .zip(status.memory_available_bytes)
            .map(|(t, a)| t.saturating_sub(a) as f64),
    );
    set(
        "system.linux.memory.available",
        status.memory_available_bytes.map(|b| b as f64),
    );
    for (provider, readings) in &status.providers {
        for (name, &value) in readings {
            metrics::gauge!(name.clone(), "provider" => provider.clone()).set(value);
        }
    }
}

#[cfg(test)]
mod tests;
