//! Parsers for the Linux `/proc` files the monitor reads (pure), and the
//! reads themselves.

/// The fields of `/proc/self/stat` the monitor uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    /// User and system CPU time, in clock ticks.
    pub(crate) cpu_ticks: u64,
    pub(crate) threads: u64,
    /// Start time, in clock ticks since boot.
    pub(crate) start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses
/// and may itself hold spaces and parentheses, so fields are counted from
/// the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // rest[0] is field 3 (state).
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(Stat {
        cpu_ticks: field(14)?.checked_add(field(15)?)?,
        threads: field(20)?,
        start_ticks: field(22)?,
    })
}

/// `VmRSS` from `/proc/self/status`, in bytes.
pub(crate) fn parse_status_rss(text: &str) -> Option<u64> {
    kib_field(text, "VmRSS:")
}

/// `MemTotal` and `MemAvailable` from `/proc/meminfo`, in bytes.
pub(crate) fn parse_meminfo(text: &str) -> (Option<u64>, Option<u64>) {
    (
        kib_field(text, "MemTotal:"),
        kib_field(text, "MemAvailable:"),
    )
}

fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let mut words = line[name.len()..].split_ascii_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => value.checked_mul(1024),
        Some(_) => None,
    }
}

/// The 1, 5 and 15 minute load averages from `/proc/loadavg`.
pub(crate) fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut words = text.split_ascii_whitespace();
    let mut next = || words.next()?.parse::<f64>().ok();
    Some([next()?, next()?, next()?])
}

/// Seconds since boot, from `/proc/uptime`.
pub(crate) fn parse_uptime(text: &str) -> Option<f64> {
    text.split_ascii_whitespace().next()?.parse().ok()
}

/// What one reading of `/proc` gives.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Reading {
    pub(crate) rss_bytes: Option<u64>,
    pub(crate) cpu_seconds: Option<f64>,
    pub(crate) threads: Option<u64>,
    pub(crate) process_uptime: Option<f64>,
    pub(crate) open_fds: Option<u64>,
    pub(crate) load_average: Option<[f64; 3]>,
    pub(crate) memory_total_bytes: Option<u64>,
    pub(crate) memory_available_bytes: Option<u64>,
}

/// Reads the process and system figures (Linux; empty elsewhere).
#[cfg(target_os = "linux")]
pub(crate) fn read() -> Reading {
    use std::fs::read_to_string;

    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let stat = read_to_string("/proc/self/stat")
        .ok()
        .and_then(|t| parse_stat(&t));
    let boot_uptime = read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| parse_uptime(&t));
    let (memory_total_bytes, memory_available_bytes) = read_to_string("/proc/meminfo")
        .map(|t| parse_meminfo(&t))
        .unwrap_or_default();
    Reading {
        rss_bytes: read_to_string("/proc/self/status")
            .ok()
            .and_then(|t| parse_status_rss(&t)),
        cpu_seconds: stat.map(|s| s.cpu_ticks as f64 / ticks),
        threads: stat.map(|s| s.threads),
        process_uptime: stat
            .zip(boot_uptime)
            .map(|(s, up)| (up - s.start_ticks as f64 / ticks).max(0.0)),
        // The directory handle used to list it shows up in the listing.
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| (dir.count() as u64).saturating_sub(1)),
        load_average: read_to_string("/proc/loadavg")
            .ok()
            .and_then(|t| parse_loadavg(&t)),
        memory_total_bytes,
        memory_available_bytes,
    }
}

/// Reads the process and system figures (Linux; empty elsewhere).
#[cfg(not(target_os = "linux"))]
pub(crate) fn read() -> Reading {
    Reading::default()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const STAT: &str = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 2160 0 0 0 \
                        731 269 0 0 20 0 17 0 12345 1234567 890 18446744073709551615";

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        assert_eq!(
            parse_stat(STAT),
            Some(Stat {
                cpu_ticks: 1000,
                threads: 17,
                start_ticks: 12345,
            })
        );
        assert_eq!(parse_stat("1 (x) S 1"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn status_and_meminfo_are_in_kib() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\nThreads:\t3\n";
        assert_eq!(parse_status_rss(status), Some(2048 * 1024));
        assert_eq!(parse_status_rss("Name: x\n"), None);
        let meminfo = "MemTotal:  16000 kB\nMemFree: 1000 kB\nMemAvailable:  8000 kB\n";
        assert_eq!(
            parse_meminfo(meminfo),
            (Some(16000 * 1024), Some(8000 * 1024))
        );
    }

    #[test]
    fn loadavg_and_uptime() {
        assert_eq!(
            parse_loadavg("0.52 0.58 0.59 2/1024 12345\n"),
            Some([0.52, 0.58, 0.59])
        );
        assert_eq!(parse_loadavg("0.52"), None);
        assert_eq!(parse_uptime("350735.47 234388.90\n"), Some(350735.47));
    }

    proptest! {
        #[test]
        fn any_command_name_parses(name in "[ -~]{0,16}", utime in 0u64..1 << 40, threads in 1u64..10_000) {
            let text = format!(
                "1 ({name}) R 0 1 1 0 -1 0 0 0 0 0 {utime} 5 0 0 20 0 {threads} 0 99 0 0"
            );
            let stat = parse_stat(&text).unwrap();
            prop_assert_eq!(stat.cpu_ticks, utime + 5);
            prop_assert_eq!(stat.threads, threads);
            prop_assert_eq!(stat.start_ticks, 99);
        }

        #[test]
        fn parsers_never_panic(text in ".{0,200}") {
            let _ = parse_stat(&text);
            let _ = parse_status_rss(&text);
            let _ = parse_meminfo(&text);
            let _ = parse_loadavg(&text);
            let _ = parse_uptime(&text);
        }
    }
}
