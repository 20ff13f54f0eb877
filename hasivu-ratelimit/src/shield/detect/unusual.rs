//! Unusual patterns: probes for well-known files and admin pages, a high
//! rate of 404 answers, and many distinct paths from one client.

use std::{collections::HashSet, hash::BuildHasher, net::IpAddr, sync::Arc, time::Duration};

use super::{Detector, Finding, Inspection};
use crate::shield::state::{Clock, Table, client_bits};

/// Path segments scanners ask for and an API never serves.
const PROBE_SEGMENTS: &[&str] = &[
    ".env",
    ".git",
    ".svn",
    ".hg",
    ".ds_store",
    ".htaccess",
    ".htpasswd",
    ".aws",
    ".ssh",
    ".docker",
    ".npmrc",
    ".bash_history",
    ".vscode",
    ".idea",
    "wp-admin",
    "wp-login.php",
    "wp-content",
    "wp-includes",
    "wp-config.php",
    "xmlrpc.php",
    "phpmyadmin",
    "pma",
    "myadmin",
    "adminer.php",
    "phpinfo.php",
    "server-status",
    "server-info",
    "cgi-bin",
    "phpunit",
    "eval-stdin.php",
    "actuator",
    "jmx-console",
    "web-console",
    "invoker",
    "boaform",
    "hnap1",
    "_ignition",
    "telescope",
    "web.config",
    "id_rsa",
    "backup.sql",
    "dump.sql",
    "database.sql",
    "db.sql",
    "shell.php",
    "cmd.php",
    "config.php",
    "setup.php",
    "install.php",
    "owa",
    "autodiscover",
];

/// File extensions of other stacks: a Rust service serves none of them.
const PROBE_EXTENSIONS: &[&str] = &[
    ".php", ".asp", ".aspx", ".jsp", ".cgi", ".pl", ".bak", ".old", ".sql", ".swp", ".cfm", ".env",
];

/// Scores requests for paths scanners look for: `/.env`, `/.git/config`,
/// `/wp-admin/`, `/wp-login.php`, `/phpmyadmin/`, `/cgi-bin/`,
/// `/actuator/env`, `/server-status`, and any `.php`, `.asp`, `.jsp`,
/// `.bak` or `.sql` file. Matched on the decoded path, segment by segment,
/// ignoring ASCII case. Reason `probe_path`, default weight 3: a lone
/// probe is logged; with a scanner agent (2) or a 404 rate (2) it blocks.
///
/// If your service does serve one of these (a PHP backend behind the same
/// gateway), start from [`ProbePaths::empty`] and add your own.
///
/// ```
/// use hasivu_ratelimit::shield::ProbePaths;
///
/// let probes = ProbePaths::new();
/// assert!(probes.is_probe("/.env"));
/// assert!(probes.is_probe("/blog/wp-login.php"));
/// assert!(probes.is_probe("/api/.git/config"));
/// assert!(!probes.is_probe("/api/v1/menu/today"));
/// assert!(!probes.is_probe("/environment/settings"));
///
/// let custom = ProbePaths::empty().segment("internal-admin");
/// assert!(custom.is_probe("/internal-admin/users"));
/// assert!(!custom.is_probe("/.env"));
/// ```
#[derive(Clone, Debug)]
pub struct ProbePaths {
    segments: Arc<HashSet<String, foldhash::fast::RandomState>>,
    extensions: Arc<Vec<String>>,
    weight: u32,
}

impl Default for ProbePaths {
    fn default() -> Self {
        Self {
            segments: Arc::new(PROBE_SEGMENTS.iter().map(|s| (*s).to_owned()).collect()),
            extensions: Arc::new(PROBE_EXTENSIONS.iter().map(|s| (*s).to_owned()).collect()),
            weight: 3,
        }
    }
}

impl ProbePaths {
    /// The default probes.
    pub fn new() -> Self {
        Self::default()
    }

    /// No probes; add your own.
    pub fn empty() -> Self {
        Self {
            segments: Arc::default(),
            extensions: Arc::default(),
            weight: 3,
        }
    }

    /// Adds a segment name (`wp-admin`), matched ignoring ASCII case.
    #[must_use]
    pub fn segment(mut self, name: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.segments).insert(name.into().to_ascii_lowercase());
        self
    }

    /// Adds a file extension (`.php`).
    #[must_use]
    pub fn extension(mut self, ext: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.extensions).push(ext.into().to_ascii_lowercase());
        self
    }

    /// The score of a finding (default 3).
    #[must_use]
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Whether a decoded path asks for a probed file or page.
    pub fn is_probe(&self, path: &str) -> bool {
        let mut buf = [0u8; 64];
        path.split(['/', '\\'])
            .filter(|s| !s.is_empty())
            .any(|segment| {
                if segment.len() > buf.len() {
                    return false;
                }
                let lower = &mut buf[..segment.len()];
                lower.copy_from_slice(segment.as_bytes());
                lower.make_ascii_lowercase();
                let Ok(lower) = std::str::from_utf8(lower) else {
                    return false;
                };
                self.segments.contains(lower)
                    || lower.rfind('.').is_some_and(|dot| {
                        dot > 0 && self.extensions.iter().any(|ext| *ext == lower[dot..])
                    })
            })
    }
}

impl Detector for ProbePaths {
    fn inspect(&self, input: &Inspection<'_>) -> Option<Finding> {
        self.is_probe(input.decoded_path())
            .then_some(Finding::new("probe_path", self.weight))
    }
}

/// Per-client counts in a sliding window (the previous window weighted by
/// its overlap, as a sliding-window counter does).
#[derive(Debug, Clone, Copy)]
struct Counts {
    start: u64,
    previous: u32,
    current: u32,
}

impl Counts {
    fn roll(&mut self, now: u64, window: u64) {
        let elapsed = now.saturating_sub(self.start);
        if elapsed >= 2 * window {
            *self = Counts {
                start: now,
                previous: 0,
                current: 0,
            };
        } else if elapsed >= window {
            *self = Counts {
                start: self.start + window,
                previous: self.current,
                current: 0,
            };
        }
    }

    fn estimate(&self, now: u64, window: u64) -> f64 {
        let into = now.saturating_sub(self.start).min(window) as f64 / window as f64;
        f64::from(self.previous) * (1.0 - into) + f64::from(self.current)
    }
}

/// Scores clients whose requests keep ending in `404 Not Found`: by
/// default 30 or more in a sliding minute. The count comes from the inner
/// service's answers and affects the client's later requests. Reason
/// `not_found_rate`, default weight 2.
///
/// ```
/// use std::net::IpAddr;
/// use hasivu_ratelimit::shield::{Detector, Inspection, NotFoundRate};
///
/// let rate = NotFoundRate::new().threshold(3);
/// let ip: IpAddr = "203.0.113.9".parse().unwrap();
/// for _ in 0..3 {
///     rate.observe(ip, 404);
/// }
/// rate.observe(ip, 200);
/// let next = Inspection::new("GET", "/anything").with_ip(ip);
/// assert_eq!(rate.inspect(&next).unwrap().reason, "not_found_rate");
/// ```
#[derive(Clone, Debug)]
pub struct NotFoundRate {
    threshold: u32,
    window: Duration,
    weight: u32,
    max_clients: usize,
    tokio_time: bool,
    state: Arc<CountState<Counts>>,
}

#[derive(Debug)]
struct CountState<T> {
    table: Table<T>,
    clock: Clock,
}

impl<T> CountState<T> {
    fn new(name: &'static str, max: usize, tokio_time: bool) -> Self {
        Self {
            table: Table::new(name, max),
            clock: Clock::new(tokio_time),
        }
    }
}

impl Default for NotFoundRate {
    fn default() -> Self {
        Self {
            threshold: 30,
            window: Duration::from_secs(60),
            weight: 2,
            max_clients: 100_000,
            tokio_time: false,
            state: Arc::new(CountState::new("not_found_rate", 100_000, false)),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

impl NotFoundRate {
    /// The detector with the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    fn rebuild(mut self) -> Self {
        self.state = Arc::new(CountState::new(
            "not_found_rate",
            self.max_clients,
            self.tokio_time,
        ));
        self
    }

    /// How many 404s in a window score (default 30).
    #[must_use]
    pub fn threshold(mut self, count: u32) -> Self {
        self.threshold = count.max(1);
        self
    }

    /// The window (default one minute).
    #[must_use]
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The score of a finding (default 2).
    #[must_use]
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// The most clients tracked (default 100 000). When full, clients
    /// whose window has passed are forgotten first, then the one with the
    /// fewest 404s.
    #[must_use]
    pub fn max_clients(mut self, max: usize) -> Self {
        self.max_clients = max.max(1);
        self.rebuild()
    }

    /// Reads tokio's clock, so tests can pause and advance time.
    #[must_use]
    pub fn tokio_time(mut self, enabled: bool) -> Self {
        self.tokio_time = enabled;
        self.rebuild()
    }
}

impl Detector for NotFoundRate {
    fn inspect(&self, input: &Inspection<'_>) -> Option<Finding> {
        let ip = input.ip()?;
        let now = self.state.clock.now();
        let window = nanos(self.window);
        // Clients without 404s have no entry and cost one lookup.
        let estimate = self.state.table.get(client_bits(ip), |c| {
            c.roll(now, window);
            c.estimate(now, window)
        })?;
        (estimate >= f64::from(self.threshold))
            .then_some(Finding::new("not_found_rate", self.weight))
    }

    fn observe(&self, ip: IpAddr, status: u16) {
        if status != 404 {
            return;
        }
        let now = self.state.clock.now();
        let window = nanos(self.window);
        self.state.table.with(
            client_bits(ip),
            || Counts {
                start: now,
                previous: 0,
                current: 0,
            },
            // The client with the fewest 404s goes first.
            |c| {
                (now.saturating_sub(c.start) < 2 * window)
                    .then_some((c.previous.saturating_add(c.current), c.start))
            },
            |c| {
                c.roll(now, window);
                c.current = c.current.saturating_add(1);
            },
        );
    }
}

/// The distinct paths of a client in the current window, estimated by
/// linear counting over 512 bits (64 bytes per client, within a few
/// percent up to several hundred paths).
#[derive(Debug, Clone, Copy)]
struct Paths {
    start: u64,
    bits: [u64; 8],
}

impl Paths {
    /// The bits set: how many distinct paths, roughly.
    fn seen(&self) -> u32 {
        self.bits.iter().map(|w| w.count_ones()).sum()
    }

    fn estimate(&self) -> f64 {
        let m: f64 = 512.0;
        let zeros = f64::from(self.bits.iter().map(|w| w.count_zeros()).sum::<u32>());
        if zeros == 0.0 {
            return m * m.ln();
        }
        -m * (zeros / m).ln()
    }
}

/// Scores clients that ask for many distinct paths, as crawlers and
/// directory brute-forcers do: by default 150 or more in a minute
/// (estimated in 64 bytes per client). Reason `distinct_paths`, default
/// weight 2.
///
/// ```
/// use std::net::IpAddr;
/// use hasivu_ratelimit::shield::{Detector, DistinctPaths, Inspection};
///
/// let paths = DistinctPaths::new().threshold(20);
/// let ip: IpAddr = "203.0.113.9".parse().unwrap();
/// let scored = (0..40)
///     .map(|i| format!("/admin{i}"))
///     .filter(|p| paths.inspect(&Inspection::new("GET", p).with_ip(ip)).is_some())
///     .count();
/// assert!(scored > 10);
/// ```
#[derive(Clone, Debug)]
pub struct DistinctPaths {
    threshold: u32,
    window: Duration,
    weight: u32,
    max_clients: usize,
    tokio_time: bool,
    state: Arc<CountState<Paths>>,
    hasher: foldhash::fast::RandomState,
}

impl Default for DistinctPaths {
    fn default() -> Self {
        Self {
            threshold: 150,
            window: Duration::from_secs(60),
            weight: 2,
            max_clients: 100_000,
            tokio_time: false,
            state: Arc::new(CountState::new("distinct_paths", 100_000, false)),
            hasher: foldhash::fast::RandomState::default(),
        }
    }
}

impl DistinctPaths {
    /// The detector with the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    fn rebuild(mut self) -> Self {
        self.state = Arc::new(CountState::new(
            "distinct_paths",
            self.max_clients,
            self.tokio_time,
        ));
        self
    }

    /// How many distinct paths in a window score (default 150).
    #[must_use]
    pub fn threshold(mut self, count: u32) -> Self {
        self.threshold = count.max(1);
        self
    }

    /// The window (default one minute).
    #[must_use]
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The score of a finding (default 2).
    #[must_use]
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// The most clients tracked (default 100 000). When full, clients
    /// whose window has passed are forgotten first, then the one with the
    /// fewest paths.
    #[must_use]
    pub fn max_clients(mut self, max: usize) -> Self {
        self.max_clients = max.max(1);
        self.rebuild()
    }

    /// Reads tokio's clock, so tests can pause and advance time.
    #[must_use]
    pub fn tokio_time(mut self, enabled: bool) -> Self {
        self.tokio_time = enabled;
        self.rebuild()
    }
}

impl Detector for DistinctPaths {
    fn inspect(&self, input: &Inspection<'_>) -> Option<Finding> {
        let ip = input.ip()?;
        let now = self.state.clock.now();
        let window = nanos(self.window);
        let bit = self.hasher.hash_one(input.decoded_path()) % 512;
        let estimate = self.state.table.with(
            client_bits(ip),
            || Paths {
                start: now,
                bits: [0; 8],
            },
            // The client with the fewest paths goes first.
            |p| (now.saturating_sub(p.start) < window).then(|| (p.seen(), p.start)),
            |p| {
                if now.saturating_sub(p.start) >= window {
                    *p = Paths {
                        start: now,
                        bits: [0; 8],
                    };
                }
                p.bits[(bit / 64) as usize] |= 1 << (bit % 64);
                p.estimate()
            },
        );
        (estimate >= f64::from(self.threshold))
            .then_some(Finding::new("distinct_paths", self.weight))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn not_found_counts_slide() {
        let rate = NotFoundRate::new()
            .threshold(10)
            .window(Duration::from_secs(60))
            .tokio_time(true);
        let ip: IpAddr = "192.0.2.50".parse().unwrap();
        let req = Inspection::new("GET", "/x").with_ip(ip);
        assert!(rate.inspect(&req).is_none());
        for _ in 0..9 {
            rate.observe(ip, 404);
        }
        assert!(rate.inspect(&req).is_none());
        rate.observe(ip, 404);
        assert!(rate.inspect(&req).is_some());
        // Half a window later the previous window weighs half.
        tokio::time::advance(Duration::from_secs(90)).await;
        assert!(rate.inspect(&req).is_none());
        for _ in 0..5 {
            rate.observe(ip, 404);
        }
        assert!(rate.inspect(&req).is_some(), "5 + 10 × 0.5");
        tokio::time::advance(Duration::from_secs(180)).await;
        assert!(rate.inspect(&req).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn distinct_paths_estimate() {
        let paths = DistinctPaths::new().threshold(150).tokio_time(true);
        let ip: IpAddr = "192.0.2.51".parse().unwrap();
        // The same few paths, many times: never.
        for i in 0..1000 {
            let p = format!("/menu/{}", i % 20);
            assert!(
                paths
                    .inspect(&Inspection::new("GET", &p).with_ip(ip))
                    .is_none()
            );
        }
        let first = (0..400)
            .position(|i| {
                let p = format!("/guess/{i}");
                paths
                    .inspect(&Inspection::new("GET", &p).with_ip(ip))
                    .is_some()
            })
            .expect("scored");
        // 20 known paths plus the new ones; linear counting is close.
        assert!((100..=170).contains(&first), "{first}");
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(
            paths
                .inspect(&Inspection::new("GET", "/menu/1").with_ip(ip))
                .is_none()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_new_clients_never_evicts_an_active_count() {
        let rate = NotFoundRate::new()
            .threshold(10)
            .max_clients(64)
            .tokio_time(true);
        let paths = DistinctPaths::new()
            .threshold(20)
            .max_clients(64)
            .tokio_time(true);
        let client: IpAddr = "192.0.2.52".parse().unwrap();
        let seen = |path: &str| paths.inspect(&Inspection::new("GET", path).with_ip(client));
        for i in 0..40 {
            rate.observe(client, 404);
            seen(&format!("/guess/{i}"));
        }
        let next = Inspection::new("GET", "/menu").with_ip(client);
        assert!(rate.inspect(&next).is_some());
        assert!(seen("/menu").is_some());
        // Addresses enough to fill the tables many times over, each with
        // one 404 and one path: the client's counts stay.
        for i in 0..10_000u32 {
            let other = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            rate.observe(other, 404);
            paths.inspect(&Inspection::new("GET", "/a").with_ip(other));
            assert!(rate.inspect(&next).is_some(), "404s forgotten after {i}");
            assert!(seen("/menu").is_some(), "paths forgotten after {i}");
        }
    }

    #[test]
    fn linear_counting_is_close() {
        // A fixed seed: the estimate's spread (about ±17 at 200 items in
        // 512 bits) must not make the test fail at random.
        let hasher = foldhash::fast::FixedState::with_seed(0x5eed);
        let mut p = Paths {
            start: 0,
            bits: [0; 8],
        };
        for i in 0..200 {
            let bit = hasher.hash_one(i) % 512;
            p.bits[(bit / 64) as usize] |= 1 << (bit % 64);
        }
        let e = p.estimate();
        assert!((150.0..=250.0).contains(&e), "{e}");
    }
}
