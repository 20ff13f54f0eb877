//! Rapid requests: a burst rate per client, counted with GCRA.

use std::{net::IpAddr, sync::Arc};

use super::{Detector, Finding, Inspection};
use crate::{
    Quota, gcra,
    shield::state::{Clock, Table, client_bits},
};

/// Scores clients that send faster than a quota allows: by default more
/// than 100 requests at once, or more than 10 per second sustained
/// (`Quota::per_second(10).burst(100)`, GCRA as in the local store).
/// Reason `rapid_requests`, default weight 3: never enough alone at the
/// default threshold, but with a 404 rate or a probe it blocks. Rate
/// limiting proper is the [`Limiter`](crate::Limiter)'s job; this is one
/// sign among others.
///
/// Counted per client IP (IPv6 by /64), at most `max_clients` of them
/// (default 100 000, about 40 bytes each). When the table is full, clients
/// that have rested are forgotten first, then the one furthest from its
/// quota: a client sending fast is the last to go, so new addresses cannot
/// push its count out.
///
/// ```
/// use std::net::IpAddr;
/// use hasivu_ratelimit::{Quota, shield::{Detector, Inspection, RapidRequests}};
///
/// let rapid = RapidRequests::new().quota(Quota::per_second(1).burst(2));
/// let ip: IpAddr = "203.0.113.9".parse().unwrap();
/// let request = Inspection::new("GET", "/menu").with_ip(ip);
/// assert!(rapid.inspect(&request).is_none());
/// assert!(rapid.inspect(&request).is_none());
/// assert_eq!(rapid.inspect(&request).unwrap().reason, "rapid_requests");
/// ```
#[derive(Clone, Debug)]
pub struct RapidRequests {
    quota: Quota,
    weight: u32,
    max_clients: usize,
    tokio_time: bool,
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    table: Table<u64>,
    clock: Clock,
}

impl Default for RapidRequests {
    fn default() -> Self {
        Self {
            quota: Quota::per_second(10).burst(100),
            weight: 3,
            max_clients: 100_000,
            tokio_time: false,
            state: Arc::new(State::new(100_000, false)),
        }
    }
}

impl State {
    fn new(max: usize, tokio_time: bool) -> Self {
        Self {
            table: Table::new("rapid_requests", max),
            clock: Clock::new(tokio_time),
        }
    }
}

impl RapidRequests {
    /// The detector with the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    fn rebuild(mut self) -> Self {
        self.state = Arc::new(State::new(self.max_clients, self.tokio_time));
        self
    }

    /// The rate above which requests score (default 10 per second with a
    /// burst of 100).
    #[must_use]
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quota = quota;
        self
    }

    /// The score of a finding (default 3).
    #[must_use]
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// The most clients tracked (default 100 000).
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

    /// Counts one request of `ip`; whether it went over the quota.
    pub fn hit(&self, ip: IpAddr) -> bool {
        let now = self.state.clock.now();
        let quota = self.quota;
        self.state.table.with(
            client_bits(ip),
            || 0,
            // The later the theoretical arrival time, the more the client
            // has sent lately: the one furthest from over goes first.
            |tat| (*tat > now).then_some(*tat),
            |tat| {
                let step = gcra::check(&quota, *tat, now, 1);
                if let Some(new_tat) = step.new_tat {
                    *tat = new_tat;
                }
                !step.verdict.allowed
            },
        )
    }
}

impl Detector for RapidRequests {
    fn inspect(&self, input: &Inspection<'_>) -> Option<Finding> {
        let ip = input.ip()?;
        self.hit(ip)
            .then_some(Finding::new("rapid_requests", self.weight))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_score_and_rest_forgives() {
        let rapid = RapidRequests::new()
            .quota(Quota::per_second(5).burst(10))
            .tokio_time(true);
        let ip: IpAddr = "198.51.100.20".parse().unwrap();
        let over = (0..30).filter(|_| rapid.hit(ip)).count();
        assert_eq!(over, 20, "the burst of 10 passes, the rest scores");
        // Another client is unaffected.
        assert!(!rapid.hit("198.51.100.21".parse().unwrap()));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!rapid.hit(ip), "rested");
        // A steady 4 per second never scores.
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..40 {
            assert!(!rapid.hit(ip));
            tokio::time::advance(Duration::from_millis(250)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_new_clients_never_evicts_an_active_count() {
        let rapid = RapidRequests::new()
            .quota(Quota::per_second(1).burst(5))
            .max_clients(64)
            .tokio_time(true);
        let client: IpAddr = "198.51.100.20".parse().unwrap();
        for _ in 0..5 {
            assert!(!rapid.hit(client));
        }
        assert!(rapid.hit(client));
        // Addresses enough to fill the table many times over, each with
        // one request: the client that keeps sending stays counted.
        for i in 0..10_000u32 {
            rapid.hit(IpAddr::from((0x0a00_0000 + i).to_be_bytes()));
            assert!(rapid.hit(client), "forgotten after {i} new clients");
        }
    }
}
