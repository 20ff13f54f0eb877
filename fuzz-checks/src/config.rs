//! Configuration syntax: durations, quotas and policies, and the example
//! API's settings file.

use hasivu_ratelimit::{__fuzz as ratelimit, Policies, Quota, Tiers, shield::Limits};

use crate::{Budget, text};

/// Each of the three parsers copies the text twice into an error message,
/// escaped (a control character becomes `\u{13}`, six bytes), in a string
/// grown by doubling (every size on the way is counted): 256 bytes per
/// input byte plus 1 KiB.
const DURATION: Budget = Budget::new(256, 1024);

/// The duration syntax of the three crates that read durations from
/// configuration (`duration.rs` of hasivu-ratelimit, hasivu-cache and
/// hasivu-pool), on the input as text.
///
/// Checks: the three parsers agree (they are copies of one syntax); a
/// parsed duration is not negative; allocation linear.
pub fn duration(data: &[u8]) {
    let input = text(data);
    let (limiter, cache, pool) = DURATION.run("durations", data.len(), || {
        (
            ratelimit::parse_duration(&input),
            hasivu_cache::__fuzz::parse_duration(&input),
            hasivu_pool::__fuzz::parse_duration(&input),
        )
    });
    assert_eq!(limiter, cache, "hasivu-ratelimit and hasivu-cache disagree");
    assert_eq!(limiter, pool, "hasivu-ratelimit and hasivu-pool disagree");
}

/// serde_json builds a value per token; 128 bytes per input byte covers
/// maps, strings and the error message.
const QUOTA: Budget = Budget::new(128, 16 * 1024);

/// `Quota`, `Policies`, `Tiers` and the shield's `Limits` read from JSON
/// (their serde forms, durations included).
///
/// Checks: a quota's emission interval is at least one nanosecond, and
/// `u64::MAX` exactly for a limit of 0; scaling never turns a non-zero
/// limit into 0; resolved policies and tier multipliers exist for any
/// request; allocation linear.
pub fn quota(data: &[u8]) {
    let (quota, policies, tiers, limits) = QUOTA.run("configuration", data.len(), || {
        (
            serde_json::from_slice::<Quota>(data),
            serde_json::from_slice::<Policies>(data),
            serde_json::from_slice::<Tiers>(data),
            serde_json::from_slice::<Limits>(data),
        )
    });
    if let Ok(quota) = quota {
        let emission = ratelimit::emission_nanos(&quota);
        assert!(emission >= 1);
        assert_eq!(quota.limit() == 0, emission == u64::MAX);
        for factor in [0.0, 0.001, 0.5, 3.0, 1e12, f64::NAN, f64::INFINITY] {
            let scaled = quota.scaled(factor);
            assert_eq!(
                scaled.limit() == 0,
                quota.limit() == 0,
                "scaled by {factor}"
            );
            assert_eq!(scaled.window(), quota.window());
        }
    }
    if let Ok(policies) = policies {
        for (method, path) in [("GET", "/"), ("POST", "/auth/login"), ("", "")] {
            let policy = policies.resolve(method, path);
            assert!(
                policy
                    .name()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            );
        }
    }
    if let Ok(tiers) = tiers {
        for tier in [None, Some("free"), Some("premium"), Some("")] {
            tiers.multiplier(tier);
        }
    }
    let _ = limits;
}

/// The example API's settings file: a TOML file of `NAME = value` pairs
/// (`Config::read_file`), then the settings applied
/// (`Config::from_lookup`). The file is written to a temporary path per
/// thread, as the function reads a file.
///
/// Checks: no panic; every name read is a setting; allocation linear
/// (TOML parsing keeps a table of the file; 512 bytes per input byte).
#[cfg(feature = "api")]
pub fn api_config(data: &[u8]) {
    use std::{cell::RefCell, path::PathBuf};

    use hasivu_examples::api::{Config, config::SETTINGS};

    const TOML: Budget = Budget::new(512, 64 * 1024);

    thread_local! {
        static FILE: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
    }
    let path = FILE.with_borrow_mut(|file| {
        file.get_or_insert_with(|| {
            let name = format!(
                "hasivu-fuzz-api-config-{}-{:?}.toml",
                std::process::id(),
                std::thread::current().id()
            );
            std::env::temp_dir().join(name.replace(['(', ')'], ""))
        })
        .clone()
    });
    std::fs::write(&path, data).expect("the settings file is written");
    let path = path.to_str().expect("a UTF-8 temporary path");
    let settings = TOML.run("Config::read_file", data.len(), || Config::read_file(path));
    let Ok(settings) = settings else {
        return;
    };
    for name in settings.keys() {
        assert!(
            SETTINGS.contains(&name.as_str()),
            "{name:?} is not a setting"
        );
    }
    let _ = TOML.run("Config::from_lookup", data.len(), || {
        Config::from_lookup(|name| settings.get(name).cloned())
    });
}
