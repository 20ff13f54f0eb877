//! Scanner and bot user agents.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use super::{Detector, Finding, Inspection, decode::truncate};

/// Attack tools that announce themselves.
const SCANNERS: &[&str] = &[
    "sqlmap",
    "nikto",
    "nmap",
    "masscan",
    "zgrab",
    "nuclei",
    "acunetix",
    "netsparker",
    "wpscan",
    "dirbuster",
    "dirb/",
    "gobuster",
    "feroxbuster",
    "fuzz faster u fool",
    "ffuf",
    "wfuzz",
    "w3af",
    "havij",
    "openvas",
    "nessus",
    "whatweb",
    "jorgee",
    "zmeu",
    "arachni",
    "skipfish",
    "appscan",
    "commix",
    "xsstrike",
    "dotdotpwn",
    "fimap",
    "paros",
    "webinspect",
    "struts-pwn",
    "morfeus",
    "l9explore",
    "hydra",
    "brutus",
    "joomscan",
    "droopescan",
    "xsser",
    "nosqlmap",
    "jaeles",
];

/// Generic HTTP libraries and crawlers: automation, not necessarily hostile.
const BOTS: &[&str] = &[
    "python-requests",
    "python-urllib",
    "python-httpx",
    "aiohttp",
    "curl/",
    "wget/",
    "libwww-perl",
    "lwp-trivial",
    "go-http-client",
    "scrapy",
    "java/",
    "apache-httpclient",
    "mechanize",
    "httrack",
    "winhttp",
    "bot",
    "crawler",
    "spider",
    "scraper",
];

/// Crawlers that are welcome: they never score as bots (the user agent can
/// be forged, so other detectors still see these requests).
const GOOD_BOTS: &[&str] = &[
    "googlebot",
    "google-inspectiontool",
    "adsbot-google",
    "bingbot",
    "duckduckbot",
    "applebot",
    "yandexbot",
    "baiduspider",
    "slurp",
    "facebookexternalhit",
    "twitterbot",
    "linkedinbot",
    "slackbot",
    "discordbot",
    "whatsapp",
    "telegrambot",
];

/// The slots of the verdict cache (a power of two).
const CACHE_SLOTS: usize = 4096;

/// Scores the `User-Agent`: attack tools (`sqlmap`, `Nikto`, `Nmap`,
/// `masscan`…) as `scanner_agent` (weight 2), HTTP libraries and crawlers
/// (`python-requests`, `curl`, `Go-http-client`, `…bot`) and a missing
/// user agent as `bot_agent` (weight 1). Welcome crawlers (`Googlebot`,
/// `bingbot`…) are allow-listed and score nothing.
///
/// Both weights stay below the default threshold of 5 on purpose: a user
/// agent is the client's own claim, cheap to forge and shared by harmless
/// scripts, so it only adds to other signs (a scanner agent probing
/// `/.env` scores 2 + 3 = 5 and is blocked; the agent alone never is).
///
/// Patterns match anywhere in the user agent, ignoring ASCII case; the
/// generic `bot`, `crawler`, `spider` and `scraper` only at the end of a
/// word (so a phone named `CUBOT_X19` is no bot). Verdicts are cached per
/// user agent (4096 slots, lock-free), so the common browsers cost one hash.
///
/// ```
/// use hasivu_ratelimit::shield::UserAgents;
///
/// let agents = UserAgents::new();
/// assert_eq!(agents.classify(Some("sqlmap/1.7.2#stable (https://sqlmap.org)")).unwrap().reason, "scanner_agent");
/// assert_eq!(agents.classify(Some("python-requests/2.31.0")).unwrap().score, 1);
/// assert!(agents.classify(Some("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)")).is_none());
/// assert!(agents.classify(Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0")).is_none());
///
/// // Your own lists and weights:
/// let strict = UserAgents::new().scanner("evil-scanner").good_bot("uptime-monitor").bot_weight(0);
/// assert!(strict.classify(Some("curl/8.5.0")).is_none());
/// ```
#[derive(Clone, Debug)]
pub struct UserAgents {
    lists: Arc<Lists>,
    cache: Arc<[AtomicU64]>,
}

#[derive(Clone, Debug)]
struct Lists {
    scanners: Vec<String>,
    bots: Vec<String>,
    good: Vec<String>,
    scanner_weight: u32,
    bot_weight: u32,
    missing_weight: u32,
    hasher: foldhash::fast::FixedState,
}

impl Default for UserAgents {
    fn default() -> Self {
        Self::with_lists(Lists {
            scanners: SCANNERS.iter().map(|s| (*s).to_owned()).collect(),
            bots: BOTS.iter().map(|s| (*s).to_owned()).collect(),
            good: GOOD_BOTS.iter().map(|s| (*s).to_owned()).collect(),
            scanner_weight: 2,
            bot_weight: 1,
            missing_weight: 1,
            hasher: foldhash::fast::FixedState::with_seed(fastish_seed()),
        })
    }
}

/// A per-process seed, so clients cannot aim user agents at one slot.
fn fastish_seed() -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::RandomState::default().hash_one(0x5eed_u64)
}

/// What a cached slot says (low 2 bits): 1 clean, 2 bot, 3 scanner.
const CLEAN: u64 = 1;
const BOT: u64 = 2;
const SCANNER: u64 = 3;

impl UserAgents {
    /// The default lists and weights.
    pub fn new() -> Self {
        Self::default()
    }

    /// No patterns at all; add your own.
    pub fn empty() -> Self {
        let mut lists = (*Self::default().lists).clone();
        lists.scanners.clear();
        lists.bots.clear();
        lists.good.clear();
        Self::with_lists(lists)
    }

    fn with_lists(lists: Lists) -> Self {
        Self {
            lists: Arc::new(lists),
            cache: (0..CACHE_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn edit(self, f: impl FnOnce(&mut Lists)) -> Self {
        let mut lists = (*self.lists).clone();
        f(&mut lists);
        // A new configuration starts with an empty cache.
        Self::with_lists(lists)
    }

    /// Adds a scanner pattern (matched anywhere, ignoring ASCII case).
    #[must_use]
    pub fn scanner(self, pattern: impl Into<String>) -> Self {
        let p = pattern.into().to_ascii_lowercase();
        self.edit(|l| l.scanners.push(p))
    }

    /// Adds a bot pattern.
    #[must_use]
    pub fn bot(self, pattern: impl Into<String>) -> Self {
        let p = pattern.into().to_ascii_lowercase();
        self.edit(|l| l.bots.push(p))
    }

    /// Adds a welcome crawler: user agents matching it never score.
    #[must_use]
    pub fn good_bot(self, pattern: impl Into<String>) -> Self {
        let p = pattern.into().to_ascii_lowercase();
        self.edit(|l| l.good.push(p))
    }

    /// The weight of a scanner agent (default 2).
    #[must_use]
    pub fn scanner_weight(self, weight: u32) -> Self {
        self.edit(|l| l.scanner_weight = weight)
    }

    /// The weight of a bot agent (default 1).
    #[must_use]
    pub fn bot_weight(self, weight: u32) -> Self {
        self.edit(|l| l.bot_weight = weight)
    }

    /// The weight of a request without a `User-Agent` (default 1).
    #[must_use]
    pub fn missing_weight(self, weight: u32) -> Self {
        self.edit(|l| l.missing_weight = weight)
    }

    /// The finding for a user agent, if any.
    pub fn classify(&self, user_agent: Option<&str>) -> Option<Finding> {
        let lists = &*self.lists;
        let ua = match user_agent.map(str::trim) {
            None | Some("") => {
                return (lists.missing_weight > 0)
                    .then_some(Finding::new("bot_agent", lists.missing_weight));
            }
            Some(ua) => truncate(ua, 512),
        };
        let class = self.cached(ua);
        let finding = match class {
            SCANNER => Finding::new("scanner_agent", lists.scanner_weight),
            BOT => Finding::new("bot_agent", lists.bot_weight),
            _ => return None,
        };
        (finding.score > 0).then_some(finding)
    }

    fn cached(&self, ua: &str) -> u64 {
        use std::hash::BuildHasher;
        let hash = self.lists.hasher.hash_one(ua);
        let slot = &self.cache[(hash as usize) & (CACHE_SLOTS - 1)];
        let tag = hash & !0b11;
        let seen = slot.load(Ordering::Relaxed);
        if seen & !0b11 == tag && seen & 0b11 != 0 {
            return seen & 0b11;
        }
        let class = self.lists.scan(ua);
        slot.store(tag | class, Ordering::Relaxed);
        class
    }
}

impl Lists {
    fn scan(&self, ua: &str) -> u64 {
        let lower = ua.to_ascii_lowercase();
        if self.good.iter().any(|g| lower.contains(g.as_str())) {
            return CLEAN;
        }
        if self.scanners.iter().any(|s| lower.contains(s.as_str())) {
            return SCANNER;
        }
        if self.bots.iter().any(|b| matches_bot(&lower, b)) {
            return BOT;
        }
        CLEAN
    }
}

/// Generic words (`bot`, `crawler`, `spider`, `scraper`) only at the end
/// of a word; other patterns anywhere.
fn matches_bot(lower: &str, pattern: &str) -> bool {
    if !matches!(pattern, "bot" | "crawler" | "spider" | "scraper") {
        return lower.contains(pattern);
    }
    lower.match_indices(pattern).any(|(at, _)| {
        lower[at + pattern.len()..]
            .bytes()
            .next()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == b'_'))
    })
}

impl Detector for UserAgents {
    fn inspect(&self, input: &Inspection<'_>) -> Option<Finding> {
        self.classify(input.user_agent())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let a = UserAgents::new();
        let reason = |ua: &str| a.classify(Some(ua)).map(|f| f.reason);
        assert_eq!(
            reason("Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:000003)"),
            Some("scanner_agent")
        );
        assert_eq!(
            reason(
                "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)"
            ),
            Some("scanner_agent")
        );
        assert_eq!(reason("Fuzz Faster U Fool v2.1.0"), Some("scanner_agent"));
        assert_eq!(reason("curl/8.5.0"), Some("bot_agent"));
        assert_eq!(
            reason("Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)"),
            Some("bot_agent")
        );
        assert_eq!(
            reason("Dalvik/2.1.0 (Linux; U; Android 9; CUBOT_X19 Build/PPR1)"),
            None
        );
        assert_eq!(
            reason(
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
            ),
            None
        );
        assert_eq!(reason("Mozilla/5.0 (compatible; bingbot/2.0)"), None);
        assert_eq!(a.classify(None).unwrap().reason, "bot_agent");
        assert_eq!(a.classify(Some("  ")).unwrap().reason, "bot_agent");
        // The cache answers the same the second time.
        assert_eq!(reason("curl/8.5.0"), Some("bot_agent"));
        assert_eq!(reason("sqlmap/1.8"), Some("scanner_agent"));
        assert_eq!(reason("sqlmap/1.8"), Some("scanner_agent"));
    }

    #[test]
    fn configuration() {
        let a = UserAgents::empty().scanner("EvilScan").scanner_weight(4);
        assert_eq!(a.classify(Some("evilscan/1")).unwrap().score, 4);
        assert!(a.classify(Some("sqlmap/1")).is_none());
        let quiet = UserAgents::new().missing_weight(0).bot_weight(0);
        assert!(quiet.classify(None).is_none());
        assert!(quiet.classify(Some("curl/8")).is_none());
        let welcome = UserAgents::new().good_bot("python-requests");
        assert!(welcome.classify(Some("python-requests/2")).is_none());
    }
}
