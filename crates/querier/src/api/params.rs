//! Request parameters: the query string and, for POST, a form body; times,
//! durations, limits and directions parsed as Loki parses them.

use std::time::Duration;

use axum::http::{HeaderMap, header};
use lucia_common::duration::parse_duration;
use lucia_common::matchers::{Matcher, parse_selector};
use lucia_common::time::{now_nanos, parse_time_nanos};

use crate::QueryError;
use crate::source::Direction;

const SECOND: i64 = 1_000_000_000;
/// Loki's default range: the last hour.
const DEFAULT_RANGE: i64 = 3600 * SECOND;
/// Most points per series of a range query, as Loki.
const MAX_POINTS: i64 = 11_000;

/// The parameters of a request, in order.
#[derive(Debug, Default, Clone)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parameters from the query string and a form-encoded body.
    pub fn new(raw_query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Self {
        let mut pairs: Vec<(String, String)> = raw_query
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if is_form || (!body.is_empty() && !headers.contains_key(header::CONTENT_TYPE)) {
            pairs.extend(form_urlencoded::parse(body).into_owned());
        }
        Self(pairs)
    }

    #[cfg(test)]
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Self(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
        )
    }

    /// The last non-empty value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn query(&self) -> Result<&str, QueryError> {
        self.get("query").ok_or_else(|| {
            QueryError::BadRequest(
                "query parameter is missing: send a LogQL query in `query`".into(),
            )
        })
    }

    pub fn time(&self, name: &str) -> Result<Option<i64>, QueryError> {
        self.get(name)
            .map(|v| {
                parse_time_nanos(v)
                    .map_err(|err| QueryError::BadRequest(format!("invalid {name}: {err}")))
            })
            .transpose()
    }

    pub fn duration(&self, name: &str) -> Result<Option<Duration>, QueryError> {
        self.get(name).map(|v| parse_step_like(name, v)).transpose()
    }

    pub fn usize(&self, name: &str, default: usize) -> Result<usize, QueryError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => {
                let n: i64 = v.trim().parse().map_err(|_| {
                    QueryError::BadRequest(format!("invalid {name} {v:?}: use a positive integer"))
                })?;
                if n <= 0 {
                    return Err(QueryError::BadRequest(format!(
                        "{name} must be a positive value"
                    )));
                }
                Ok(n as usize)
            }
        }
    }

    pub fn direction(&self) -> Result<Direction, QueryError> {
        match self
            .get("direction")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("backward") => Ok(Direction::Backward),
            Some("forward") => Ok(Direction::Forward),
            Some(other) => Err(QueryError::BadRequest(format!(
                "invalid direction {other:?}: use forward or backward"
            ))),
        }
    }

    /// `start` and `end` (or `since`) of a range request: end defaults to
    /// now, start to `end - since`, `since` to one hour.
    pub fn range(&self) -> Result<(i64, i64), QueryError> {
        let end = self.time("end")?.unwrap_or_else(now_nanos);
        let since = self
            .duration("since")?
            .map_or(DEFAULT_RANGE, |d| d.as_nanos().min(i64::MAX as u128) as i64);
        let start = self.time("start")?.unwrap_or(end.saturating_sub(since));
        if end < start {
            return Err(QueryError::BadRequest(
                "end timestamp must not be before or equal to start time".into(),
            ));
        }
        Ok((start, end))
    }

    /// The `step` of a range query in nanoseconds: a duration or float
    /// seconds; by default (end-start)/250 in whole seconds, at least 1s.
    pub fn step(&self, start: i64, end: i64) -> Result<i64, QueryError> {
        let step = match self.duration("step")? {
            Some(d) => d.as_nanos().min(i64::MAX as u128) as i64,
            None => ((end - start) / SECOND / 250).max(1) * SECOND,
        };
        if step <= 0 {
            return Err(QueryError::BadRequest(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if (end - start) / step > MAX_POINTS {
            return Err(QueryError::BadRequest(
                "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)".into(),
            ));
        }
        Ok(step)
    }
}

/// A step or interval: float seconds or a duration such as `30s`.
fn parse_step_like(name: &str, value: &str) -> Result<Duration, QueryError> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        if !secs.is_finite() || secs < 0.0 {
            return Err(QueryError::BadRequest(format!(
                "invalid {name} {value:?}: use a positive number of seconds or a duration such as 30s"
            )));
        }
        return Ok(Duration::from_secs_f64(secs));
    }
    parse_duration(value).map_err(|err| {
        QueryError::BadRequest(format!(
            "invalid {name} {value:?}: {err}; use seconds or a duration such as 30s"
        ))
    })
}

/// The stream selector at the start of a LogQL query (what follows it, a
/// pipeline or a range, is ignored here).
pub fn selector_of(query: &str) -> Result<Vec<Matcher>, QueryError> {
    let query = query.trim();
    let Some(open) = query.find('{') else {
        return Err(QueryError::BadRequest(format!(
            "parse error: {query:?} has no stream selector: use {{label=\"value\"}}"
        )));
    };
    let bytes = query.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = open;
    let mut close = None;
    while i < bytes.len() {
        let c = bytes[i];
        match quote {
            Some(q) if c == b'\\' && q != b'`' => i += 1,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == b'"' || c == b'`' => quote = Some(c),
            None if c == b'}' => {
                close = Some(i);
                break;
            }
            None => {}
        }
        i += 1;
    }
    let Some(close) = close else {
        return Err(QueryError::BadRequest(
            "parse error: unclosed stream selector: add }".into(),
        ));
    };
    parse_selector(&query[open..=close])
        .map_err(|err| QueryError::BadRequest(format!("parse error: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_defaults_like_loki() {
        let p = Params::from_pairs(&[("end", "1700000000"), ("since", "30m")]);
        let (start, end) = p.range().unwrap();
        assert_eq!(end, 1_700_000_000 * SECOND);
        assert_eq!(end - start, 1800 * SECOND);
        let p = Params::from_pairs(&[("end", "1700000000")]);
        let (start, end) = p.range().unwrap();
        assert_eq!(end - start, 3600 * SECOND);
        // 1h / 250 = 14.4s -> 14s.
        assert_eq!(p.step(start, end).unwrap(), 14 * SECOND);
        let p = Params::from_pairs(&[("step", "0.5")]);
        assert_eq!(p.step(0, SECOND).unwrap(), SECOND / 2);
        let p = Params::from_pairs(&[("step", "1m")]);
        assert_eq!(p.step(0, SECOND).unwrap(), 60 * SECOND);
        let p = Params::from_pairs(&[("step", "0")]);
        assert!(p.step(0, SECOND).is_err());
        let p = Params::from_pairs(&[("step", "1ms")]);
        assert!(p.step(0, 3600 * SECOND).is_err());
        let p = Params::from_pairs(&[("start", "10"), ("end", "5")]);
        assert!(p.range().is_err());
        let p = Params::from_pairs(&[("start", "yesterday")]);
        assert!(p.range().is_err());
    }

    #[test]
    fn selector_before_pipeline() {
        let m = selector_of(r#"{app="a}b", env=~"x"} |= "}" | json"#).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].value, "a}b");
        assert!(selector_of(r#"sum(rate({app="a"}[5m]))"#).is_ok());
        assert!(selector_of("vector(1)").is_err());
        assert!(selector_of(r#"{app="a""#).is_err());
    }

    #[test]
    fn params_from_query_and_form() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        let p = Params::new(
            Some("match[]=%7Ba%3D%22b%22%7D&limit=5"),
            &headers,
            b"match[]=%7Bc%3D%22d%22%7D&direction=FORWARD",
        );
        assert_eq!(p.all("match[]"), vec![r#"{a="b"}"#, r#"{c="d"}"#]);
        assert_eq!(p.usize("limit", 100).unwrap(), 5);
        assert_eq!(p.direction().unwrap(), Direction::Forward);
        assert!(
            Params::from_pairs(&[("limit", "-1")])
                .usize("limit", 1)
                .is_err()
        );
        assert!(
            Params::from_pairs(&[("direction", "up")])
                .direction()
                .is_err()
        );
    }
}
