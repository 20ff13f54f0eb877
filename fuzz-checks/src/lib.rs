//! The invariants the hasivu fuzz targets check.
//!
//! Every parser, decoder and detector of the hasivu crates that sees request
//! bytes has one check here: `pub fn <target>(data: &[u8])`. A check decodes
//! its input (raw bytes, or a small text format documented on the check), runs the
//! code under test and panics when an invariant breaks:
//!
//! - it does not panic, and every call returns (libFuzzer's `-timeout`
//!   catches a hang, its `-rss_limit_mb` a blow-up);
//! - its allocation is linear in the input: bytes allocated (the sum of
//!   every allocation and reallocation, frees not subtracted) stay within
//!   the check's [`Budget`], `per_byte × input length + fixed`;
//! - a normalisation is idempotent, a canonical form parses back to itself,
//!   and a decoded size stays within its cap;
//! - and whatever else the code promises (listed on each check).
//!
//! The same functions run in two places: the cargo-fuzz targets in `fuzz/`
//! (nightly, one-liners made with [`fuzz_target!`]) and the stable replay
//! test (`tests/replay.rs`), which runs every file of `fuzz/corpus/<t>/` and
//! `fuzz/regressions/<t>/` through them as an ordinary test. Allocation is
//! measured by [`Allocator`], hasivu-metrics' per-thread counting allocator
//! (no `unsafe` here); without it installed as the global allocator the
//! allocation bounds are not checked. Allocations the C codecs make with
//! their own `malloc` (libzstd) are not seen; libFuzzer's RSS limit bounds
//! those.

use std::borrow::Cow;

pub use hasivu_metrics::TrackingAllocator as Allocator;

mod cache;
mod compress;
mod config;
mod metrics;
mod shield;

#[cfg(feature = "api")]
pub use config::api_config;
pub use {
    cache::{cache_headers, cache_key, cache_pattern},
    compress::{compress_decode, compress_fields, compress_negotiate, compress_prune},
    config::{duration, quota},
    metrics::metrics_labels,
    shield::{
        cidr, client_ip, shield_agents, shield_decode, shield_inspection, shield_sqli,
        shield_traversal, shield_xss,
    },
};

/// A check: takes the fuzzer's bytes, panics when an invariant breaks.
pub type Check = fn(&[u8]);

/// Every target's name, whatever the features of this build: the replay
/// test refuses a corpus directory that names none of them.
pub const TARGET_NAMES: &[&str] = &[
    "compress_negotiate",
    "compress_fields",
    "compress_prune",
    "compress_decode",
    "shield_sqli",
    "shield_xss",
    "shield_traversal",
    "shield_decode",
    "shield_agents",
    "shield_inspection",
    "client_ip",
    "cidr",
    "quota",
    "duration",
    "cache_pattern",
    "cache_key",
    "cache_headers",
    "metrics_labels",
    "api_config",
];

/// The targets built in: name and check, in [`TARGET_NAMES`] order.
pub fn targets() -> Vec<(&'static str, Check)> {
    #[cfg_attr(not(feature = "api"), allow(unused_mut))]
    let mut targets: Vec<(&'static str, Check)> = vec![
        ("compress_negotiate", compress_negotiate),
        ("compress_fields", compress_fields),
        ("compress_prune", compress_prune),
        ("compress_decode", compress_decode),
        ("shield_sqli", shield_sqli),
        ("shield_xss", shield_xss),
        ("shield_traversal", shield_traversal),
        ("shield_decode", shield_decode),
        ("shield_agents", shield_agents),
        ("shield_inspection", shield_inspection),
        ("client_ip", client_ip),
        ("cidr", cidr),
        ("quota", quota),
        ("duration", duration),
        ("cache_pattern", cache_pattern),
        ("cache_key", cache_key),
        ("cache_headers", cache_headers),
        ("metrics_labels", metrics_labels),
    ];
    #[cfg(feature = "api")]
    targets.push(("api_config", api_config));
    targets
}

/// Declares a libFuzzer target that installs [`Allocator`] and runs one
/// check: `hasivu_fuzz_checks::fuzz_target!(shield_xss);`. For the
/// `fuzz/` crate, which depends on `libfuzzer-sys`.
#[macro_export]
macro_rules! fuzz_target {
    ($check:ident) => {
        #[global_allocator]
        static ALLOCATOR: $crate::Allocator = $crate::Allocator::system();

        libfuzzer_sys::fuzz_target!(|data: &[u8]| $crate::$check(data));
    };
}

/// How many bytes a piece of work may allocate for an input of `len`
/// bytes: `per_byte × len + fixed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Bytes per input byte.
    pub per_byte: u64,
    /// Bytes whatever the input.
    pub fixed: u64,
}

impl Budget {
    /// `per_byte × len + fixed`.
    pub const fn new(per_byte: u64, fixed: u64) -> Self {
        Self { per_byte, fixed }
    }

    /// The bytes allowed for an input of `len` bytes.
    pub fn allows(self, len: usize) -> u64 {
        self.per_byte
            .saturating_mul(len as u64)
            .saturating_add(self.fixed)
    }

    /// Runs `work` and, when [`Allocator`] is the global allocator, panics
    /// if it allocated more than the budget allows for `len` input bytes.
    #[track_caller]
    pub fn run<R>(self, what: &str, len: usize, work: impl FnOnce() -> R) -> R {
        let before = Allocator::allocated_by_this_thread();
        let result = work();
        let used = Allocator::allocated_by_this_thread().wrapping_sub(before);
        if Allocator::is_installed() {
            let allowed = self.allows(len);
            assert!(
                used <= allowed,
                "{what}: allocated {used} bytes for {len} input bytes; the budget is \
                 {} per byte + {} = {allowed}",
                self.per_byte,
                self.fixed,
            );
        }
        result
    }
}

/// The input as text: invalid UTF-8 replaced (each bad byte becomes at most
/// three bytes, so budgets stay linear in the raw length).
pub(crate) fn text(data: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// Splits `data` at the first `byte`: the part before and the rest.
pub(crate) fn split_once(data: &[u8], byte: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == byte) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}
