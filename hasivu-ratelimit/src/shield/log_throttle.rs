//! At most one log event per client per interval for its suspicious or
//! refused requests: a client that loops without pause would otherwise
//! write one line per request. The ones in between are counted, and the
//! next event says how many there were.

use std::{net::IpAddr, time::Duration};

use super::state::{Clock, Table, client_bits};

/// Clients remembered at most; past it, those quiet for an interval go
/// first.
const MAX_CLIENTS: usize = 100_000;

#[derive(Debug)]
pub(crate) struct LogThrottle {
    /// Per client: when it was last logged (clock nanoseconds, 0 = never)
    /// and the events suppressed since.
    table: Table<(u64, u32)>,
    clock: Clock,
    every_ns: u64,
}

impl LogThrottle {
    pub(crate) fn new(every: Duration) -> Self {
        Self::with_clock(every, Clock::new(false))
    }

    pub(crate) fn with_clock(every: Duration, clock: Clock) -> Self {
        Self {
            table: Table::new("log_throttle", MAX_CLIENTS),
            clock,
            every_ns: u64::try_from(every.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// `Some(events suppressed since the last one)` when this client's
    /// event is to be logged, `None` when it is suppressed. Events without
    /// a client address, and every event with a zero interval, are logged.
    pub(crate) fn admit(&self, ip: Option<IpAddr>) -> Option<u32> {
        let Some(ip) = ip.filter(|_| self.every_ns > 0) else {
            return Some(0);
        };
        let now = self.clock.now();
        let every = self.every_ns;
        self.table.with(
            client_bits(ip),
            || (0, 0),
            // A client whose events are being suppressed is kept longest.
            |&(last, suppressed)| (now.saturating_sub(last) < every).then_some((suppressed, last)),
            |(last, suppressed)| {
                if *last == 0 || now.saturating_sub(*last) >= every {
                    let before = *suppressed;
                    *last = now;
                    *suppressed = 0;
                    Some(before)
                } else {
                    *suppressed = suppressed.saturating_add(1);
                    None
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_event_per_client_per_interval_with_the_count_between() {
        let throttle = LogThrottle::with_clock(Duration::from_secs(10), Clock::new(true));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(throttle.admit(Some(a)), Some(0), "the first is logged");
        for _ in 0..5 {
            assert_eq!(throttle.admit(Some(a)), None);
        }
        assert_eq!(
            throttle.admit(Some(b)),
            Some(0),
            "another client is its own"
        );
        assert_eq!(throttle.admit(None), Some(0), "no address: always logged");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(throttle.admit(Some(a)), Some(5), "then with the count");
        assert_eq!(throttle.admit(Some(a)), None);

        let every = LogThrottle::with_clock(Duration::ZERO, Clock::new(true));
        assert_eq!(every.admit(Some(a)), Some(0));
        assert_eq!(every.admit(Some(a)), Some(0), "zero: every event");
    }
}
