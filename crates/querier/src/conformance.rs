//! Runner for Loki's `.logqltest` files (the executable specification of
//! LogQL metric query semantics).
//!
//! A file is a sequence of commands: `clear`, `load` with indented entry
//! lines, and `eval instant at <t> <query>` / `eval range from <t0> to <t1>
//! step <s> <query>` with indented expectations. Every `eval` is one case;
//! a case the runner cannot run counts as failed, never as skipped.

use std::path::Path;
use std::time::Duration;

use lucia_common::chunk::Entry;
use lucia_common::labels::{Labels, unquote};
use lucia_logql::ast;

use crate::engine::{Engine, Limits, QueryResult, RangeParams, ResultData};
use crate::memory_source::MemorySource;
use crate::source::Direction;

const TENANT: &str = "conformance";

/// The outcome of one file.
#[derive(Debug, Clone, Default)]
pub struct FileReport {
    pub name: String,
    pub passed: usize,
    pub failed: usize,
    /// One message per failed case: `file:line: query: reason`.
    pub failures: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// Parses a query for the runner. Returns `Err(None)` when this build has
/// no LogQL parser (the case cannot run), `Err(Some(msg))` for a parse error.
fn parse_query(query: &str) -> Result<ast::Expr, Option<String>> {
    lucia_logql::parse(query).map_err(|e| Some(e.to_string()))
}

/// Runs one `.logqltest` file.
pub async fn run_file(path: &Path) -> Result<FileReport, ConformanceError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConformanceError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    Ok(run_text(&name, &text).await)
}

/// Runs the text of a `.logqltest` file.
pub async fn run_text(name: &str, text: &str) -> FileReport {
    let mut report = FileReport {
        name: name.to_string(),
        ..Default::default()
    };
    let source = MemorySource::new();
    let engine = Engine::new(
        source.clone(),
        Limits {
            max_query_length: Duration::ZERO,
            ..Limits::default()
        },
    );
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let lineno = i + 1;
        let line = strip_comment(lines[i]).trim();
        i += 1;
        if line.is_empty() {
            continue;
        }
        // The indented block that follows a command.
        let block_start = i;
        while i < lines.len() && is_indented_or_blank(lines[i]) {
            i += 1;
        }
        let block: Vec<(usize, &str)> = (block_start..i)
            .map(|j| (j + 1, lines[j]))
            .filter(|(_, l)| !strip_comment(l).trim().is_empty())
            .collect();
        if line == "clear" {
            source.clear();
        } else if line == "load" || line.starts_with("load ") {
            for (n, raw) in &block {
                if let Err(err) = load_line(&source, raw) {
                    report.failed += 1;
                    report
                        .failures
                        .push(format!("{name}:{n}: cannot load {:?}: {err}", raw.trim()));
                }
            }
        } else if let Some(rest) = line.strip_prefix("eval ") {
            match run_eval(&engine, rest, &block).await {
                Ok(()) => report.passed += 1,
                Err(reason) => {
                    report.failed += 1;
                    report
                        .failures
                        .push(format!("{name}:{lineno}: {line}: {reason}"));
                }
            }
        } else {
            report.failed += 1;
            report
                .failures
                .push(format!("{name}:{lineno}: unknown command {line:?}"));
        }
    }
    report
}

fn is_indented_or_blank(line: &str) -> bool {
    line.starts_with([' ', '\t']) || line.trim().is_empty()
}

/// Removes a `#` comment that is outside double quotes and backticks.
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '`' => quote = Some(c),
                '#' => return &line[..i],
                _ => {}
            },
        }
    }
    line
}

/// The byte after the `}` that closes the `{` at the start of `text`.
fn label_set_end(text: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '`' => quote = Some(c),
                '}' => return Some(i + 1),
                _ => {}
            },
        }
    }
    None
}

/// A time from t=0 as a Go duration (`90s`, `1m30s`, `500ms`, `0`).
fn parse_time(text: &str) -> Result<i64, String> {
    let d = lucia_common::duration::parse_go_duration(text.trim())
        .map_err(|e| format!("bad time {text:?}: {e}"))?;
    i64::try_from(d.as_nanos()).map_err(|_| format!("time {text:?} is out of range"))
}

/// `{labels} "line" @ <t> [repeat every <step> for <count>] [metadata k="v" ...]`
fn load_line(source: &MemorySource, raw: &str) -> Result<(), String> {
    let text = strip_comment(raw).trim();
    let end = label_set_end(text).ok_or("expected a label set {...}")?;
    let parsed = Labels::parse(&text[..end]).map_err(|e| e.to_string())?;
    // Loki's write path drops empty-valued stream labels.
    let labels = Labels::from_pairs(
        parsed
            .iter()
            .filter(|l| !l.value.is_empty())
            .map(|l| (l.name.clone(), l.value.clone())),
    );
    let rest = text[end..].trim_start();
    let (line, after) = unquote(rest, 0).map_err(|(_, reason)| reason.to_string())?;
    let mut rest = rest[after..].trim_start();
    rest = rest
        .strip_prefix('@')
        .ok_or("expected '@ <time>' after the line")?
        .trim_start();
    let time_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let ts = parse_time(&rest[..time_end])?;
    rest = rest[time_end..].trim_start();
    let mut step = 0i64;
    let mut count = 1i64;
    let mut metadata = Vec::new();
    while let Some(inner) = rest.strip_prefix('[') {
        let close = inner.find(']').ok_or("unclosed '['")?;
        let body = inner[..close].trim();
        rest = inner[close + 1..].trim_start();
        if let Some(repeat) = body.strip_prefix("repeat every ") {
            let (every, times) = repeat
                .split_once(" for ")
                .ok_or("expected [repeat every <step> for <count>]")?;
            step = parse_time(every)?;
            count = times
                .trim()
                .parse()
                .map_err(|_| format!("bad repeat count {times:?}"))?;
        } else if let Some(pairs) = body.strip_prefix("metadata") {
            let mut pairs = pairs.trim();
            while !pairs.is_empty() {
                let eq = pairs
                    .find('=')
                    .ok_or("expected name=\"value\" in metadata")?;
                let name = pairs[..eq].trim().to_string();
                let (value, next) =
                    unquote(pairs, eq + 1).map_err(|(_, reason)| reason.to_string())?;
                metadata.push((name, value));
                pairs = pairs[next..].trim_start();
            }
        } else {
            return Err(format!("unknown modifier [{body}]"));
        }
    }
    if !rest.is_empty() {
        return Err(format!("unexpected text {rest:?}"));
    }
    let entries = (0..count).map(|i| Entry {
        ts: ts + i * step,
        line: line.replace("{{.i}}", &i.to_string()),
        metadata: metadata.clone(),
    });
    source.push(TENANT, labels, entries);
    Ok(())
}

enum Expectation {
    Fail {
        msg: Option<String>,
        regex: Option<String>,
    },
    Series {
        ordered: bool,
        series: Vec<(Labels, Vec<Option<f64>>)>,
        scalar: Option<f64>,
    },
}

fn parse_value(token: &str) -> Result<f64, String> {
    match token {
        "NaN" | "nan" => Ok(f64::NAN),
        "Inf" | "+Inf" | "inf" | "+inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        _ => token
            .parse::<f64>()
            .map_err(|_| format!("bad value {token:?}")),
    }
}

/// Expands one value token: `_`, `_xN`, a number, `axN`, `a+bxN`, `a-bxN`.
fn expand_token(token: &str, out: &mut Vec<Option<f64>>) -> Result<(), String> {
    if token == "_" {
        out.push(None);
        return Ok(());
    }
    let Some((base, times)) = token.rsplit_once('x') else {
        out.push(Some(parse_value(token)?));
        return Ok(());
    };
    let times: usize = times
        .parse()
        .map_err(|_| format!("bad repeat count in {token:?}"))?;
    if base == "_" {
        out.extend(std::iter::repeat_n(None, times));
        return Ok(());
    }
    // Split `a+b` / `a-b` at the sign that is not the leading one nor an exponent's.
    let bytes = base.as_bytes();
    let split = (1..bytes.len())
        .find(|&i| matches!(bytes[i], b'+' | b'-') && !matches!(bytes[i - 1], b'e' | b'E'));
    let (start, delta) = match split {
        Some(i) => {
            let delta = parse_value(&base[i + 1..])?;
            let start = parse_value(&base[..i])?;
            (start, if bytes[i] == b'-' { -delta } else { delta })
        }
        None => (parse_value(base)?, 0.0),
    };
    for k in 0..=times {
        out.push(Some(start + delta * k as f64));
    }
    Ok(())
}

fn parse_expectations(block: &[(usize, &str)]) -> Result<Expectation, String> {
    let mut ordered = false;
    let mut series = Vec::new();
    let mut scalar = None;
    for (_, raw) in block {
        let line = raw.trim();
        if let Some(rest) = line.strip_prefix("expect ") {
            let rest = rest.trim();
            if rest == "ordered" {
                ordered = true;
            } else if rest == "empty" {
                // No series expected: the default.
            } else if let Some(fail) = rest.strip_prefix("fail") {
                let fail = fail.trim();
                let (msg, regex) = if let Some(m) = fail.strip_prefix("msg:") {
                    (Some(m.trim().to_string()), None)
                } else if let Some(r) = fail.strip_prefix("regex:") {
                    (None, Some(r.trim().to_string()))
                } else {
                    (None, None)
                };
                return Ok(Expectation::Fail { msg, regex });
            } else {
                return Err(format!("unknown expectation {line:?}"));
            }
            continue;
        }
        if line.starts_with("skip ") {
            continue;
        }
        let line = strip_comment(line).trim();
        if line.starts_with('{') {
            let end = label_set_end(line).ok_or("unclosed label set")?;
            let labels = Labels::parse(&line[..end]).map_err(|e| e.to_string())?;
            let mut values = Vec::new();
            for token in line[end..].split_whitespace() {
                expand_token(token, &mut values)?;
            }
            series.push((labels, values));
        } else {
            scalar = Some(parse_value(line)?);
        }
    }
    Ok(Expectation::Series {
        ordered,
        series,
        scalar,
    })
}

fn same(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a == b {
        return true;
    }
    let diff = (a - b).abs();
    diff <= 1e-6 * a.abs().max(b.abs()) || diff < 1e-12
}

fn same_points(a: &[Option<f64>], b: &[Option<f64>]) -> bool {
    let n = a.len().max(b.len());
    (0..n).all(
        |i| match (a.get(i).copied().flatten(), b.get(i).copied().flatten()) {
            (None, None) => true,
            (Some(x), Some(y)) => same(x, y),
            _ => false,
        },
    )
}

fn show(points: &[Option<f64>]) -> String {
    points
        .iter()
        .map(|p| p.map_or("_".to_string(), |v| v.to_string()))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn run_eval(
    engine: &Engine<MemorySource>,
    command: &str,
    block: &[(usize, &str)],
) -> Result<(), String> {
    let expectation = parse_expectations(block)?;
    // `instant at <t> <query>` or `range from <t0> to <t1> step <s> <query>`.
    let words: Vec<&str> = command.splitn(3, ' ').collect();
    let (steps, query, outcome): (Vec<i64>, &str, Result<QueryResult, String>);
    match words.as_slice() {
        ["instant", "at", rest] => {
            let (t, q) = rest.split_once(' ').ok_or("missing query")?;
            let t = parse_time(t)?;
            query = q.trim();
            steps = vec![t];
            outcome = match parse_query(query) {
                Err(None) => return Err("no LogQL parser in this build".to_string()),
                Err(Some(e)) => Err(e),
                Ok(expr) => engine
                    .query_instant(TENANT, &expr, t, Direction::Backward, 100)
                    .await
                    .map_err(|e| e.to_string()),
            };
        }
        ["range", "from", rest] => {
            let parts: Vec<&str> = rest.splitn(6, ' ').collect();
            let [t0, "to", t1, "step", step, q] = parts.as_slice() else {
                return Err("expected range from <t0> to <t1> step <step> <query>".to_string());
            };
            let (t0, t1, step) = (parse_time(t0)?, parse_time(t1)?, parse_time(step)?);
            if step <= 0 {
                return Err("the step must be positive".to_string());
            }
            query = q.trim();
            steps = (0..=(t1 - t0) / step).map(|i| t0 + i * step).collect();
            outcome = match parse_query(query) {
                Err(None) => return Err("no LogQL parser in this build".to_string()),
                Err(Some(e)) => Err(e),
                Ok(expr) => engine
                    .query_range(
                        TENANT,
                        &expr,
                        RangeParams {
                            start: t0,
                            end: t1,
                            step: Duration::from_nanos(step as u64),
                            interval: None,
                            direction: Direction::Backward,
                            limit: 100,
                        },
                    )
                    .await
                    .map_err(|e| e.to_string()),
            };
        }
        _ => return Err("expected eval instant at ... or eval range from ...".to_string()),
    }
    let _ = query;
    match expectation {
        Expectation::Fail { msg, regex } => {
            let err = match outcome {
                Ok(_) => return Err("expected the query to fail, it succeeded".to_string()),
                Err(err) => err,
            };
            if let Some(msg) = msg
                && !err.contains(&msg)
            {
                return Err(format!("expected an error containing {msg:?}, got {err:?}"));
            }
            if let Some(re) = regex {
                let re = regex::Regex::new(&re).map_err(|e| format!("bad regex: {e}"))?;
                if !re.is_match(&err) {
                    return Err(format!("expected an error matching {re}, got {err:?}"));
                }
            }
            Ok(())
        }
        Expectation::Series {
            ordered,
            series,
            scalar,
        } => {
            let result = outcome.map_err(|e| format!("unexpected error: {e}"))?;
            compare(&steps, result.data, ordered, series, scalar)
        }
    }
}

fn compare(
    steps: &[i64],
    data: ResultData,
    ordered: bool,
    expected: Vec<(Labels, Vec<Option<f64>>)>,
    scalar: Option<f64>,
) -> Result<(), String> {
    let actual: Vec<(Labels, Vec<Option<f64>>)> = match data {
        ResultData::Scalar { value, .. } => {
            return match scalar {
                Some(want) if same(want, value) => Ok(()),
                Some(want) => Err(format!("expected scalar {want}, got {value}")),
                None => Err(format!("expected series, got scalar {value}")),
            };
        }
        ResultData::Streams(_) => return Err("expected a metric result, got streams".to_string()),
        ResultData::Vector(v) => v
            .into_iter()
            .map(|s| (s.labels, vec![Some(s.value)]))
            .collect(),
        ResultData::Matrix(m) => m
            .into_iter()
            .map(|s| {
                let mut points = vec![None; steps.len()];
                for (ts, v) in s.points {
                    if let Some(i) = steps.iter().position(|t| *t == ts) {
                        points[i] = Some(v);
                    }
                }
                (s.labels, points)
            })
            .collect(),
    };
    if let Some(want) = scalar {
        return Err(format!(
            "expected scalar {want}, got {} series",
            actual.len()
        ));
    }
    let describe = |set: &[(Labels, Vec<Option<f64>>)]| {
        set.iter()
            .map(|(l, p)| format!("{l} {}", show(p)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    if actual.len() != expected.len() {
        return Err(format!(
            "expected {} series [{}], got {} [{}]",
            expected.len(),
            describe(&expected),
            actual.len(),
            describe(&actual)
        ));
    }
    for (i, (labels, points)) in expected.iter().enumerate() {
        let found = if ordered {
            actual.get(i).filter(|(l, _)| l == labels)
        } else {
            actual.iter().find(|(l, _)| l == labels)
        };
        match found {
            None => {
                return Err(format!(
                    "missing series {labels}{}; got [{}]",
                    if ordered { " at this position" } else { "" },
                    describe(&actual)
                ));
            }
            Some((_, got)) if !same_points(points, got) => {
                return Err(format!(
                    "series {labels}: expected {}, got {}",
                    show(points),
                    show(got)
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_values() {
        let mut out = Vec::new();
        for t in ["1", "_", "2+3x2", "5-1x1", "_x2", "7x1", "-Inf", "1e-3"] {
            expand_token(t, &mut out).unwrap();
        }
        let want = [
            Some(1.0),
            None,
            Some(2.0),
            Some(5.0),
            Some(8.0),
            Some(5.0),
            Some(4.0),
            None,
            None,
            Some(7.0),
            Some(7.0),
            Some(f64::NEG_INFINITY),
            Some(0.001),
        ];
        assert!(same_points(&out, &want), "{out:?}");
        assert!(expand_token("abc", &mut out).is_err());
    }

    #[test]
    fn strips_comments_outside_quotes() {
        assert_eq!(
            strip_comment(r##"{a="#"} "x#y" @ 1s # c"##),
            r##"{a="#"} "x#y" @ 1s "##
        );
        assert_eq!(strip_comment("`#` # x"), "`#` ");
    }

    #[tokio::test]
    async fn loads_repeats_and_metadata() {
        let source = MemorySource::new();
        load_line(
            &source,
            r#"  {app="a"} `n={{.i}}` @ 1m30s [repeat every 10s for 3] [metadata k="v" j="w"] # c"#,
        )
        .unwrap();
        assert_eq!(source.len(TENANT), 3);
        let streams = crate::source::LogSource::select(
            &source,
            crate::source::SelectRequest {
                tenant: TENANT.to_string(),
                matchers: lucia_common::matchers::parse_selector(r#"{app="a"}"#).unwrap(),
                start: 0,
                end: i64::MAX,
                direction: Direction::Forward,
                limit: 0,
                line_filter: None,
            },
        )
        .await
        .unwrap();
        let e = &streams[0].entries;
        assert_eq!(e[2].line, "n=2");
        assert_eq!(e[2].ts, 110_000_000_000);
        assert_eq!(
            e[0].metadata,
            vec![("k".into(), "v".into()), ("j".into(), "w".into())]
        );
        assert!(load_line(&source, r#"{app="a"} "x" 5s"#).is_err());
    }

    #[tokio::test]
    async fn unrunnable_cases_fail() {
        let report = run_text(
            "t",
            "load\n  {a=\"b\"} \"x\" @ 0s\n\neval instant at 1s count_over_time({a=\"b\"}[1s])\n  expect fail\n",
        )
        .await;
        assert_eq!(report.passed + report.failed, 1);
        if parse_query("vector(1)").is_err() {
            assert_eq!(report.failed, 1, "{:?}", report.failures);
        }
    }
}
