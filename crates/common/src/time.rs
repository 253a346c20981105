//! API time parameters: RFC3339, float Unix seconds, or integer Unix
//! nanoseconds (Loki's rule: an integer of more than 10 digits is nanoseconds,
//! otherwise seconds).

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse {0:?} to a valid timestamp: use RFC3339, Unix seconds or Unix nanoseconds")]
pub struct TimeError(pub String);

/// Parses an API time parameter into Unix nanoseconds.
pub fn parse_time_nanos(value: &str) -> Result<i64, TimeError> {
    let value = value.trim();
    let fail = || TimeError(value.to_string());
    if let Ok(int) = value.parse::<i64>() {
        let digits = value.trim_start_matches('-').len();
        return if digits <= 10 {
            int.checked_mul(1_000_000_000).ok_or_else(fail)
        } else {
            Ok(int)
        };
    }
    if let Ok(secs) = value.parse::<f64>() {
        if !secs.is_finite() {
            return Err(fail());
        }
        let nanos = (secs * 1e9).round();
        if nanos.abs() >= i64::MAX as f64 {
            return Err(fail());
        }
        return Ok(nanos as i64);
    }
    chrono::DateTime::parse_from_rfc3339(value)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(fail)
}

/// Parses a Prometheus API time: RFC3339 or float Unix seconds, into
/// milliseconds.
pub fn parse_time_millis(value: &str) -> Result<i64, TimeError> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>()
        && secs.is_finite()
    {
        return Ok((secs * 1000.0).round() as i64);
    }
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|_| TimeError(value.to_string()))
}

/// The current time in Unix nanoseconds.
pub fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// Formats Unix nanoseconds as RFC3339 with nanoseconds (UTC).
pub fn format_rfc3339_nanos(nanos: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos)
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(
            parse_time_nanos("1700000000").unwrap(),
            1_700_000_000_000_000_000
        );
        assert_eq!(
            parse_time_nanos("1700000000000000000").unwrap(),
            1_700_000_000_000_000_000
        );
        assert_eq!(
            parse_time_nanos("1700000000.5").unwrap(),
            1_700_000_000_500_000_000
        );
        assert_eq!(
            parse_time_nanos("2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000_000_000
        );
        assert_eq!(
            parse_time_nanos("2023-11-14T23:13:20.25+01:00").unwrap(),
            1_700_000_000_250_000_000
        );
        assert!(parse_time_nanos("yesterday").is_err());
        assert!(parse_time_nanos("NaN").is_err());
        assert_eq!(
            parse_time_millis("1700000000.123").unwrap(),
            1_700_000_000_123
        );
        assert_eq!(
            format_rfc3339_nanos(1_700_000_000_500_000_000),
            "2023-11-14T22:13:20.500Z"
        );
    }
}
