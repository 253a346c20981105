//! Request parameters and their parsing, as Prometheus' `r.FormValue`,
//! `parseTime` and `parseDuration` do it.

use axum::http::{HeaderMap, header};
use lucia_common::duration::parse_prometheus_duration;

use super::error::ApiError;
use crate::promql::{LabelMatcher, MatchOp};

/// The earliest time the API accepts, in ms: Prometheus' `minTime`
/// (`time.Unix(math.MinInt64/1000+62135596801, 0)`), the default `start`
/// of the metadata endpoints.
pub const MIN_TIME_MS: i64 = -9_223_309_901_257_974_000;
/// The latest time, in ms: Prometheus' `maxTime`
/// (`time.Unix(math.MaxInt64/1000-62135596801, 999999999)`).
pub const MAX_TIME_MS: i64 = 9_223_309_901_257_974_999;
/// `minTime` and `maxTime` formatted as RFC3339 (years beyond 9999, which
/// RFC3339 parsers reject): Prometheus accepts these two strings as such.
const MIN_TIME_FORMATTED: &str = "-292273086-05-16T16:47:06Z";
const MAX_TIME_FORMATTED: &str = "292277025-08-18T07:12:54.999999999Z";

/// A request's parameters: a form-encoded POST body first, then the URL
/// query (Go's `r.Form` order).
#[derive(Debug, Default, Clone)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn new(raw_query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Self {
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/x-www-form-urlencoded")
            });
        let mut pairs: Vec<(String, String)> = if is_form {
            form_urlencoded::parse(body).into_owned().collect()
        } else {
            Vec::new()
        };
        if let Some(q) = raw_query {
            pairs.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        Self(pairs)
    }

    /// Go's `r.FormValue`: the first value, `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Every value of `name` (`r.Form[name]`).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A time parameter with a default (`parseTimeParam`).
    pub fn time_or(&self, name: &str, default: i64) -> Result<i64, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => parse_time(v).map_err(|e| {
                ApiError::invalid_param(name, format!("Invalid time value for '{name}': {e}"))
            }),
        }
    }

    /// A required time parameter (`parseTime(r.FormValue(name))`).
    pub fn time(&self, name: &str) -> Result<i64, ApiError> {
        parse_time(self.get(name).unwrap_or("")).map_err(|e| ApiError::invalid_param(name, e))
    }

    /// An optional duration parameter, in nanoseconds.
    pub fn duration_nanos(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|v| parse_duration_nanos(v).map_err(|e| ApiError::invalid_param(name, e)))
            .transpose()
    }

    /// `limit` as Prometheus' `parseLimitParam`: 0 (no limit) when absent.
    pub fn limit(&self) -> Result<usize, ApiError> {
        let Some(v) = self.get("limit") else {
            return Ok(0);
        };
        let n: i64 = v.parse().map_err(|_| {
            ApiError::invalid_param(
                "limit",
                format!("strconv.Atoi: parsing {v:?}: invalid syntax"),
            )
        })?;
        if n < 0 {
            return Err(ApiError::invalid_param(
                "limit",
                "limit must be non-negative",
            ));
        }
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// `match[]` selectors (`parseMatchersParam`); each needs a matcher
    /// that does not match the empty string.
    pub fn matcher_sets(&self) -> Result<Vec<Vec<LabelMatcher>>, String> {
        const EMPTY: &str = "match[] must contain at least one non-empty matcher";
        let mut sets = Vec::new();
        for s in self.all("match[]") {
            // promql-parser checks this itself, with its own message.
            sets.push(parse_selector(s).map_err(|e| {
                if e.contains("at least one non-empty matcher") {
                    EMPTY.to_string()
                } else {
                    e
                }
            })?);
        }
        for set in &sets {
            if !set.iter().any(|m| !m.matches_value("")) {
                return Err(EMPTY.into());
            }
        }
        Ok(sets)
    }
}

/// Prometheus' `parseTime`: float Unix seconds (rounded to milliseconds),
/// RFC3339 with optional fraction, or the formatted min/max times; in ms.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let fail = || format!("cannot parse {s:?} to a valid timestamp");
    if let Some(t) = parse_go_float(s) {
        if !t.is_finite() {
            return Err(fail());
        }
        let secs = t.trunc();
        let frac_ms = ((t - secs) * 1000.0).round();
        let ms = secs * 1000.0 + frac_ms;
        // Beyond the i64 range Go's conversion is undefined; clamp.
        return Ok(if ms >= i64::MAX as f64 {
            i64::MAX
        } else if ms <= i64::MIN as f64 {
            i64::MIN
        } else {
            ms as i64
        });
    }
    if s.contains('T')
        && let Ok(t) = chrono::DateTime::parse_from_rfc3339(s)
    {
        return Ok(t.timestamp_millis());
    }
    match s {
        MIN_TIME_FORMATTED => Ok(MIN_TIME_MS),
        MAX_TIME_FORMATTED => Ok(MAX_TIME_MS),
        _ => Err(fail()),
    }
}

/// Prometheus' `parseDuration`: float seconds or a Prometheus duration
/// (`5m`, `1h30m`); in nanoseconds.
pub fn parse_duration_nanos(s: &str) -> Result<i64, String> {
    if let Some(d) = parse_go_float(s) {
        let ns = d * 1e9;
        if ns.is_nan() {
            return Ok(0);
        }
        if ns > i64::MAX as f64 || ns < i64::MIN as f64 {
            return Err(format!(
                "cannot parse {s:?} to a valid duration. It overflows int64"
            ));
        }
        return Ok(ns as i64);
    }
    match parse_prometheus_duration(s) {
        Ok(d) => i64::try_from(d.as_nanos())
            .map_err(|_| format!("cannot parse {s:?} to a valid duration")),
        Err(_) => Err(format!("cannot parse {s:?} to a valid duration")),
    }
}

/// Go's `strconv.ParseFloat(s, 64)` for what API clients send: decimal
/// and exponent forms, `Inf`, `NaN`; no surrounding spaces.
fn parse_go_float(s: &str) -> Option<f64> {
    if s.is_empty() || s.trim() != s || s.contains('_') {
        return None;
    }
    let lower = s.to_ascii_lowercase();
    let unsigned = lower.trim_start_matches(['+', '-']);
    if matches!(unsigned, "inf" | "infinity" | "nan") {
        return s.parse::<f64>().ok();
    }
    if !unsigned
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | '+' | '-'))
    {
        return None;
    }
    s.parse::<f64>().ok()
}

/// Parses a series selector (`up{job="a"}`, `{__name__=~"x.*"}`) into
/// matchers, as Prometheus' `ParseMetricSelector`.
pub fn parse_selector(s: &str) -> Result<Vec<LabelMatcher>, String> {
    use promql_parser::label::MatchOp as P;
    use promql_parser::parser::Expr;
    let expr = promql_parser::parser::parse(s)?;
    let Expr::VectorSelector(vs) = expr else {
        return Err(format!(
            "1:1: parse error: unexpected expression in series selector {s:?}: only a metric selector is allowed"
        ));
    };
    if vs.offset.is_some() || vs.at.is_some() {
        return Err(format!(
            "1:1: parse error: unexpected modifier in series selector {s:?}"
        ));
    }
    if !vs.matchers.or_matchers.is_empty() {
        return Err("'or' in series selectors is not supported".into());
    }
    let mut out = Vec::new();
    if let Some(name) = &vs.name {
        out.push(
            LabelMatcher::new(crate::promql::METRIC_NAME, MatchOp::Equal, name)
                .map_err(|e| e.to_string())?,
        );
    }
    for m in &vs.matchers.matchers {
        let op = match m.op {
            P::Equal => MatchOp::Equal,
            P::NotEqual => MatchOp::NotEqual,
            P::Re(_) => MatchOp::Regex,
            P::NotRe(_) => MatchOp::NotRegex,
        };
        out.push(LabelMatcher::new(&m.name, op, &m.value).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1700000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("1700000000.1234"), Ok(1_700_000_000_123));
        assert_eq!(parse_time("1.5"), Ok(1500));
        assert_eq!(parse_time("-1.5"), Ok(-1500));
        assert_eq!(parse_time("1e3"), Ok(1_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert_eq!(
            parse_time("2023-11-14T23:13:20.25+01:00"),
            Ok(1_700_000_000_250)
        );
        assert_eq!(parse_time(MIN_TIME_FORMATTED), Ok(MIN_TIME_MS));
        assert_eq!(parse_time(MAX_TIME_FORMATTED), Ok(MAX_TIME_MS));
        assert_eq!(
            parse_time("yesterday"),
            Err("cannot parse \"yesterday\" to a valid timestamp".into())
        );
        assert!(parse_time("").is_err());
        assert!(parse_time("NaN").is_err());
        assert!(parse_time(" 1").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_nanos("15"), Ok(15_000_000_000));
        assert_eq!(parse_duration_nanos("0.5"), Ok(500_000_000));
        assert_eq!(parse_duration_nanos("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_duration_nanos("0"), Ok(0));
        assert_eq!(parse_duration_nanos("-1"), Ok(-1_000_000_000));
        assert!(parse_duration_nanos("1e30").is_err());
        assert_eq!(
            parse_duration_nanos("x"),
            Err("cannot parse \"x\" to a valid duration".into())
        );
    }

    #[test]
    fn form_body_before_query_string() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().expect("header"),
        );
        let p = Params::new(
            Some("query=a&match[]=x"),
            &headers,
            b"query=b&match%5B%5D=y",
        );
        assert_eq!(p.get("query"), Some("b"));
        assert_eq!(p.all("match[]"), vec!["y", "x"]);
        let p = Params::new(Some("query=a"), &HeaderMap::new(), b"query=b");
        assert_eq!(p.get("query"), Some("a"));
        let p = Params::new(Some("query="), &HeaderMap::new(), b"");
        assert_eq!(p.get("query"), None);
    }

    #[test]
    fn selectors() {
        let m = parse_selector("up{job=~\"a|b\"}").expect("selector");
        assert_eq!(m.len(), 2);
        assert!(parse_selector("sum(up)").is_err());
        assert!(parse_selector("up{").is_err());
        let p = Params(vec![("match[]".into(), "{job=~\".*\"}".into())]);
        assert_eq!(
            p.matcher_sets().expect_err("empty matcher"),
            "match[] must contain at least one non-empty matcher"
        );
    }
}
