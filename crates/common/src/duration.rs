//! Duration grammars: Prometheus' (`1y2w3d4h5m6s7ms`, units in that order,
//! integers only) and Go's (`1.5h`, `300ms`, `2h45m`, `-1m`, units `ns us µs
//! ms s m h`). Config fields accept either.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

fn err(input: &str, reason: &'static str) -> DurationError {
    DurationError {
        input: input.to_string(),
        reason,
    }
}

const PROM_UNITS: [(&str, u64); 7] = [
    ("y", 365 * 24 * 3600 * 1000),
    ("w", 7 * 24 * 3600 * 1000),
    ("d", 24 * 3600 * 1000),
    ("h", 3600 * 1000),
    ("m", 60 * 1000),
    ("s", 1000),
    ("ms", 1),
];

/// Parses a Prometheus duration such as `1h30m` or `5m` (`0` is allowed).
pub fn parse_prometheus_duration(input: &str) -> Result<Duration, DurationError> {
    if input == "0" {
        return Ok(Duration::ZERO);
    }
    if input.is_empty() {
        return Err(err(input, "empty duration string"));
    }
    let bytes = input.as_bytes();
    let mut pos = 0;
    let mut next_unit = 0;
    let mut total_ms: u64 = 0;
    while pos < bytes.len() {
        let digits_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        if pos == digits_start {
            return Err(err(input, "expected a number, e.g. 5m or 1h30m"));
        }
        let number: u64 = input[digits_start..pos]
            .parse()
            .map_err(|_| err(input, "number too large"))?;
        let unit_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_alphabetic() {
            pos += 1;
        }
        let unit = &input[unit_start..pos];
        let index = PROM_UNITS[next_unit..]
            .iter()
            .position(|(name, _)| *name == unit)
            .map(|i| i + next_unit)
            .ok_or_else(|| {
                if PROM_UNITS.iter().any(|(name, _)| *name == unit) {
                    err(input, "units must go from largest to smallest, each once")
                } else {
                    err(input, "unknown unit: use ms, s, m, h, d, w or y")
                }
            })?;
        next_unit = index + 1;
        total_ms = number
            .checked_mul(PROM_UNITS[index].1)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| err(input, "duration out of range"))?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Parses a Go duration such as `1.5h`, `300ms` or `2h45m`. Negative values
/// are rejected (no config field takes one).
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    let mut rest = input.strip_prefix('+').unwrap_or(input);
    if let Some(negative) = rest.strip_prefix('-') {
        if !negative.is_empty() && negative.chars().all(|c| c == '0') {
            return Ok(Duration::ZERO);
        }
        return Err(err(input, "negative durations are not allowed"));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(err(input, "empty duration string"));
    }
    let mut total_ns: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." {
            return Err(err(input, "expected a number, e.g. 1.5h or 300ms"));
        }
        let value: f64 = number.parse().map_err(|_| err(input, "invalid number"))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(err(input, "missing unit: use ns, us, ms, s, m or h")),
            _ => return Err(err(input, "unknown unit: use ns, us, ms, s, m or h")),
        };
        rest = &rest[unit_len..];
        total_ns += value * scale;
    }
    if total_ns > u64::MAX as f64 {
        return Err(err(input, "duration out of range"));
    }
    Ok(Duration::from_nanos(total_ns.round() as u64))
}

/// Parses either grammar (Prometheus' first, which is stricter).
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let input = input.trim();
    parse_prometheus_duration(input)
        .or_else(|prom_err| parse_go_duration(input).map_err(|_| prom_err))
}

/// Formats a duration the way Prometheus prints one (`1h30m`, `5m`, `0s`).
pub fn format_prometheus_duration(duration: Duration) -> String {
    let mut ms = duration.as_millis() as u64;
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in PROM_UNITS {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// A duration in a config file: Prometheus or Go syntax, or a bare number of
/// seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }
    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }
}

impl From<ConfigDuration> for Duration {
    fn from(value: ConfigDuration) -> Self {
        value.0
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_prometheus_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Seconds(u64),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Text(text) => parse_duration(&text)
                .map(ConfigDuration)
                .map_err(serde::de::Error::custom),
            Raw::Seconds(secs) => Ok(ConfigDuration(Duration::from_secs(secs))),
        }
    }
}

impl serde::Serialize for ConfigDuration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_prometheus_duration(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_grammar() {
        assert_eq!(
            parse_prometheus_duration("5m").unwrap(),
            Duration::from_secs(300)
        );
        assert_eq!(
            parse_prometheus_duration("1h30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_prometheus_duration("1d").unwrap(),
            Duration::from_secs(86400)
        );
        assert_eq!(
            parse_prometheus_duration("2w").unwrap(),
            Duration::from_secs(14 * 86400)
        );
        assert_eq!(
            parse_prometheus_duration("1y").unwrap(),
            Duration::from_secs(365 * 86400)
        );
        assert_eq!(
            parse_prometheus_duration("1s500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_prometheus_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_prometheus_duration("30m1h").is_err());
        assert!(parse_prometheus_duration("1.5h").is_err());
        assert!(parse_prometheus_duration("5x").is_err());
        assert!(parse_prometheus_duration("").is_err());
        assert!(parse_prometheus_duration("h").is_err());
    }

    #[test]
    fn go_grammar() {
        assert_eq!(
            parse_go_duration("1.5h").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_go_duration("300ms").unwrap(),
            Duration::from_millis(300)
        );
        assert_eq!(
            parse_go_duration("2h45m").unwrap(),
            Duration::from_secs(9900)
        );
        assert_eq!(parse_go_duration("1µs").unwrap(), Duration::from_micros(1));
        assert_eq!(parse_go_duration("10ns").unwrap(), Duration::from_nanos(10));
        assert_eq!(
            parse_go_duration(".5s").unwrap(),
            Duration::from_millis(500)
        );
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("-1s").is_err());
        assert!(parse_go_duration("1d").is_err());
    }

    #[test]
    fn either_grammar_and_format() {
        assert_eq!(
            parse_duration("1w").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(parse_duration("0.5s").unwrap(), Duration::from_millis(500));
        assert_eq!(
            format_prometheus_duration(Duration::from_secs(5400)),
            "1h30m"
        );
        assert_eq!(format_prometheus_duration(Duration::ZERO), "0s");
        assert_eq!(
            format_prometheus_duration(Duration::from_millis(1500)),
            "1s500ms"
        );
    }
}
