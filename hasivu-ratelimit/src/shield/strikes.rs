//! Strikes: how many requests of a client reached the threshold lately.
//! A client is blocked only once it has enough of them within a window, so
//! one request (a link on a page every visitor loads, a form a user filled
//! in oddly) refuses that request alone.

use std::{net::IpAddr, time::Duration};

use super::state::{Clock, Table, client_bits};

/// When a client is blocked: after `count` requests at or over the
/// threshold within `window` (default 5 within 10 minutes), counted for at
/// most `max_clients` clients. Applies to [`Action::Block`](super::Action);
/// `count` 1 blocks at the first request, as the report does.
///
/// The window opens with a client's first strike; a client that has not
/// reached `count` when it closes starts again from nothing. Requests the
/// [`ShieldLayer::authenticated`](super::ShieldLayer::authenticated) hook
/// recognises never count. Strikes are counted in process: behind a load
/// balancer with several instances a client may get up to `count - 1`
/// strikes on each before one blocks it; the block itself, in a shared
/// blocklist, then holds on every instance.
///
/// From configuration, with durations as `"30m"`, `"1h"` or seconds:
///
/// ```
/// use std::time::Duration;
/// use hasivu_ratelimit::shield::Strikes;
///
/// let strikes: Strikes = serde_json::from_str(r#"{ "count": 3, "window": "5m" }"#).unwrap();
/// assert_eq!(strikes.count, 3);
/// assert_eq!(strikes.window, Duration::from_secs(300));
/// assert_eq!(strikes.max_clients, 100_000);
/// assert_eq!(Strikes::default().count, 5);
/// assert_eq!(Strikes::default().window, Duration::from_secs(600));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Strikes {
    /// Requests at or over the threshold that block the client (default
    /// 5; 0 and 1 both block at the first).
    pub count: u32,
    /// Within how long (default 10 minutes).
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub window: Duration,
    /// The most clients whose strikes are counted (default 100 000, about
    /// 60 bytes each). When full, clients whose window has passed are
    /// forgotten first, then the one with the fewest strikes, the quietest
    /// first.
    pub max_clients: usize,
}

impl Default for Strikes {
    fn default() -> Self {
        Self {
            count: 5,
            window: Duration::from_secs(600),
            max_clients: 100_000,
        }
    }
}

impl Strikes {
    /// Block at the first request at or over the threshold.
    pub const fn first() -> Self {
        Self {
            count: 1,
            window: Duration::from_secs(600),
            max_clients: 100_000,
        }
    }
}

/// A client's strikes in its current window.
#[derive(Debug)]
struct Entry {
    /// When the window opened (clock nanoseconds).
    opened: u64,
    /// The last strike.
    last: u64,
    strikes: u32,
}

/// The strikes of each client, bounded.
#[derive(Debug)]
pub(crate) struct StrikeTable {
    table: Table<Entry>,
    clock: Clock,
    count: u32,
    window_ns: u64,
}

impl StrikeTable {
    pub(crate) fn new(strikes: Strikes, clock: Clock) -> Self {
        Self {
            table: Table::new("strikes", strikes.max_clients.max(1)),
            clock,
            count: strikes.count.max(1),
            window_ns: u64::try_from(strikes.window.as_nanos())
                .unwrap_or(u64::MAX)
                .max(1),
        }
    }

    /// The strikes that block.
    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    /// Counts a strike against `ip`: its strikes in the window, this one
    /// included. Reaching the count clears them (the block takes over).
    pub(crate) fn strike(&self, ip: IpAddr) -> u32 {
        if self.count <= 1 {
            return 1;
        }
        let now = self.clock.now();
        let window = self.window_ns;
        let key = client_bits(ip);
        let strikes = self.table.with(
            key,
            || Entry {
                opened: now,
                last: now,
                strikes: 0,
            },
            |e| (now.saturating_sub(e.opened) < window).then_some((e.strikes, e.last)),
            |e| {
                if now.saturating_sub(e.opened) >= window {
                    *e = Entry {
                        opened: now,
                        last: now,
                        strikes: 0,
                    };
                }
                e.strikes = e.strikes.saturating_add(1);
                e.last = now;
                e.strikes
            },
        );
        if strikes >= self.count {
            self.table.remove(key);
        }
        strikes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn strikes_count_within_their_window() {
        let table = StrikeTable::new(
            Strikes {
                count: 3,
                window: Duration::from_secs(60),
                max_clients: 64,
            },
            Clock::new(true),
        );
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(table.strike(ip), 1);
        assert_eq!(table.strike(ip), 2);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(table.strike(ip), 1, "a new window");
        assert_eq!(table.strike(ip), 2);
        assert_eq!(table.strike(ip), 3);
        assert_eq!(table.strike(ip), 1, "the block took over");
        // A flood of addresses with one strike each keeps the client
        // with more.
        assert_eq!(table.strike(ip), 2);
        for i in 0..10_000u32 {
            table.strike(IpAddr::from((0x0a00_0000 + i).to_be_bytes()));
        }
        assert_eq!(table.strike(ip), 3);
        assert!(table.table.len() <= 64);
    }
}
