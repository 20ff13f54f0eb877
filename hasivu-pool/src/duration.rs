//! Durations in configuration files: `"250ms"`, `"30s"`, `"5m"`, `"1h"`, or
//! a bare number of seconds.

use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

/// Parses `250ms`, `30s`, `5m`, `1h`, `2d` (a number and a unit, optional
/// space) or a bare number of seconds.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected a number and a unit"))?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        "d" => number * 86_400.0,
        other => {
            return Err(format!(
                "invalid duration unit {other:?} in {text:?}: use ms, s, m, h or d"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Seconds(f64),
    Text(String),
}

fn from_raw(raw: Raw) -> Result<Duration, String> {
    match raw {
        Raw::Seconds(seconds) => Duration::try_from_secs_f64(seconds)
            .map_err(|e| format!("invalid duration {seconds}: {e}")),
        Raw::Text(text) => parse(&text),
    }
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    from_raw(Raw::deserialize(d)?).map_err(de::Error::custom)
}

pub(crate) fn deserialize_option<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    Option::<Raw>::deserialize(d)?
        .map(from_raw)
        .transpose()
        .map_err(de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1.5 h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse("5 parsecs").is_err());
        assert!(parse("").is_err());
        assert!(parse("-1s").is_err());
    }
}
