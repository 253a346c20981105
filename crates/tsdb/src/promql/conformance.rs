//! Runner for Prometheus' `promqltest` files (the executable specification
//! of PromQL semantics).
//!
//! A file is a sequence of commands: `load <interval>` (and
//! `load_with_nhcb`, whose classic series are loaded; the native histograms
//! it would add are not), `clear`, and `eval instant at <t> <query>` /
//! `eval range from <t0> to <t1> step <s> <query>` (also the older
//! `eval_fail`/`eval_ordered`/`eval_warn`/`eval_info` forms) with indented
//! expectations. Every `eval` is one case; a case the runner cannot run
//! (native histogram values, unsupported syntax) counts as failed.
//! Annotation expectations (`expect warn`, `expect info`, ...) are not
//! checked: the engine produces no annotations yet.

use std::collections::HashMap;
use std::path::Path;

use regex::Regex;

use super::engine::{Engine, Value};
use super::memory::MemorySource;
use super::{DisplayLabels, Labels, METRIC_NAME, stale_nan};

/// Relative tolerance of value comparisons.
const EPSILON: f64 = 1e-6;

/// The outcome of one file.
#[derive(Debug, Clone, Default)]
pub struct FileReport {
    pub name: String,
    pub passed: usize,
    pub failed: usize,
    /// One message per failed case: `file:line: command: reason`.
    pub failures: Vec<String>,
    /// Series lines of `load` commands that could not be loaded (native
    /// histogram values); the cases that need them fail.
    pub load_errors: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// Runs one `.test` file.
pub fn run_file(path: &Path) -> Result<FileReport, ConformanceError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConformanceError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    Ok(run_text(&name, &text))
}

fn is_indented_or_blank(line: &str) -> bool {
    line.trim().is_empty() || line.starts_with(' ') || line.starts_with('\t')
}

fn is_comment_or_blank(line: &str) -> bool {
    let l = line.trim();
    l.is_empty() || l.starts_with('#')
}

/// Runs the text of a `.test` file.
pub fn run_text(name: &str, text: &str) -> FileReport {
    let mut report = FileReport {
        name: name.to_string(),
        ..Default::default()
    };
    let source = MemorySource::new();
    let engine = Engine::default();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let lineno = i + 1;
        let raw = lines[i];
        i += 1;
        if is_comment_or_blank(raw) {
            continue;
        }
        let line = raw.trim();
        let block_start = i;
        while i < lines.len() && is_indented_or_blank(lines[i]) && !lines[i].trim().is_empty() {
            i += 1;
        }
        let block: Vec<(usize, &str)> = (block_start..i)
            .map(|j| (j + 1, lines[j].trim()))
            .filter(|(_, l)| !l.starts_with('#'))
            .collect();
        let mut fail = |reason: String| {
            report.failed += 1;
            report
                .failures
                .push(format!("{name}:{lineno}: {line}: {reason}"));
        };
        if line == "clear" {
            source.clear();
        } else if let Some(rest) = line
            .strip_prefix("load_with_nhcb ")
            .or_else(|| line.strip_prefix("load "))
        {
            match parse_duration(rest.trim()) {
                Ok(interval) => {
                    for (n, l) in &block {
                        if let Err(err) = load_line(&source, l, interval) {
                            report.load_errors.push(format!("{name}:{n}: {err}"));
                        }
                    }
                }
                Err(err) => fail(err),
            }
        } else if line.starts_with("eval") {
            match run_eval(&engine, &source, line, &block) {
                Ok(()) => report.passed += 1,
                Err(reason) => fail(reason),
            }
        } else {
            fail("unknown command".into());
        }
    }
    report
}

/// Parses a Prometheus duration (`1h30m`, `10s53ms`, `0`); a bare number
/// is seconds. Returns milliseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    if let Ok(secs) = s.parse::<f64>() {
        return Ok((secs * 1000.0).round() as i64);
    }
    let mut total: i64 = 0;
    let mut rest = s;
    let neg = if let Some(r) = rest.strip_prefix('-') {
        rest = r;
        true
    } else {
        false
    };
    if rest.is_empty() {
        return Err(format!("invalid duration {s:?}"));
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("invalid duration {s:?}"));
        }
        let n: i64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let mult: i64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return Err(format!("invalid duration {s:?}")),
        };
        rest = &rest[unit_len..];
        total = total
            .checked_add(n.checked_mul(mult).ok_or("duration overflows")?)
            .ok_or("duration overflows")?;
    }
    Ok(if neg { -total } else { total })
}

/// Parses a float as promqltest writes them.
fn parse_float(s: &str) -> Result<f64, String> {
    match s.to_ascii_lowercase().as_str() {
        "inf" | "+inf" => return Ok(f64::INFINITY),
        "-inf" => return Ok(f64::NEG_INFINITY),
        "nan" => return Ok(f64::NAN),
        "stale" => return Ok(stale_nan()),
        _ => {}
    }
    if let Ok(f) = s.parse::<f64>() {
        return Ok(f);
    }
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X"))
        && let Ok(n) = u64::from_str_radix(hex, 16)
    {
        let f = n as f64;
        return Ok(if neg { -f } else { f });
    }
    Err(format!("invalid number {s:?}"))
}

/// Splits values at whitespace outside `{{ … }}`.
fn tokens(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start: Option<usize> = None;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_whitespace() && depth == 0 {
            if let Some(st) = start.take() {
                out.push(&s[st..i]);
            }
        } else {
            if start.is_none() {
                start = Some(i);
            }
            if bytes[i..].starts_with(b"{{") {
                depth += 1;
                i += 1;
            } else if bytes[i..].starts_with(b"}}") {
                depth = depth.saturating_sub(1);
                i += 1;
            }
        }
        i += 1;
    }
    if let Some(st) = start {
        out.push(&s[st..]);
    }
    out
}

/// The number of samples a native histogram token (`{{…}}`, `{{…}}x3`,
/// `{{…}}+{{…}}x3`) stands for.
fn histogram_slots(token: &str) -> Result<usize, String> {
    let tail = match token.rfind("}}") {
        Some(i) => &token[i + 2..],
        None => return Err(format!("invalid histogram {token:?}")),
    };
    match tail.strip_prefix('x') {
        Some(n) => n
            .parse::<usize>()
            .map(|n| n + 1)
            .map_err(|_| format!("invalid repetition in {token:?}")),
        None if tail.is_empty() => Ok(1),
        None => Err(format!("invalid histogram {token:?}")),
    }
}

/// Expands one value token (`1`, `_`, `stale`, `1+2x3`, `5x2`, `_x3`).
fn expand_token(token: &str, out: &mut Vec<Option<f64>>) -> Result<(), String> {
    if token.starts_with("{{") {
        return Err("native histogram values are not supported".into());
    }
    if token == "_" {
        out.push(None);
        return Ok(());
    }
    let Some(xpos) = token.rfind('x') else {
        out.push(Some(parse_float(token)?));
        return Ok(());
    };
    let head = &token[..xpos];
    let times: usize = token[xpos + 1..]
        .parse()
        .map_err(|_| format!("invalid repetition in {token:?}"))?;
    if head == "_" {
        out.extend(std::iter::repeat_n(None, times));
        return Ok(());
    }
    let bytes = head.as_bytes();
    let op = (1..bytes.len())
        .find(|&i| (bytes[i] == b'+' || bytes[i] == b'-') && !matches!(bytes[i - 1], b'e' | b'E'));
    let (start, delta) = match op {
        Some(i) => (parse_float(&head[..i])?, parse_float(&head[i..])?),
        None => (parse_float(head)?, 0.0),
    };
    let mut v = start;
    for _ in 0..=times {
        out.push(Some(v));
        v += delta;
    }
    Ok(())
}

fn expand_values(values: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for tok in tokens(values) {
        expand_token(tok, &mut out)?;
    }
    Ok(out)
}

/// Unquotes a `"…"`, `'…'` or `` `…` `` string at the start of `s`;
/// returns it and the rest.
fn take_quoted(s: &str) -> Result<(String, &str), String> {
    let mut chars = s.char_indices();
    let Some((_, q)) = chars.next() else {
        return Err("expected a quoted string".into());
    };
    if !matches!(q, '"' | '\'' | '`') {
        return Err(format!("expected a quoted string at {s:?}"));
    }
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        if c == q {
            return Ok((out, &s[i + 1..]));
        }
        if c == '\\' && q != '`' {
            let Some((_, e)) = chars.next() else { break };
            match e {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                '\'' => out.push('\''),
                'x' => {
                    let hex: String = chars.by_ref().take(2).map(|x| x.1).collect();
                    let b = u8::from_str_radix(&hex, 16).map_err(|_| "invalid \\x escape")?;
                    out.push(char::from(b));
                }
                'u' => {
                    let hex: String = chars.by_ref().take(4).map(|x| x.1).collect();
                    let n = u32::from_str_radix(&hex, 16).map_err(|_| "invalid \\u escape")?;
                    out.push(char::from_u32(n).ok_or("invalid \\u escape")?);
                }
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
        } else {
            out.push(c);
        }
    }
    Err(format!("unterminated string in {s:?}"))
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Parses `name{a="b", ...} rest` or `{...} rest`; returns labels and rest.
fn parse_series(s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Labels::new();
    let name_end = s.find(|c: char| !is_name_char(c)).unwrap_or(s.len());
    if name_end > 0 {
        labels.insert(METRIC_NAME.to_string(), s[..name_end].to_string());
    }
    let mut rest = &s[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        rest = r.trim_start();
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let (lname, r) = if rest.starts_with('"') || rest.starts_with('\'') {
                let (n, r) = take_quoted(rest)?;
                (n, r)
            } else {
                let end = rest.find(|c: char| !is_name_char(c)).unwrap_or(rest.len());
                if end == 0 {
                    return Err(format!("invalid label set at {rest:?}"));
                }
                (rest[..end].to_string(), &rest[end..])
            };
            let r = r.trim_start();
            if let Some(r) = r.strip_prefix('=') {
                let (value, r) = take_quoted(r.trim_start())?;
                labels.insert(lname, value);
                rest = r.trim_start();
            } else {
                // A quoted metric name alone.
                labels.insert(METRIC_NAME.to_string(), lname);
                rest = r;
            }
            rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
        }
    }
    Ok((labels, rest))
}

/// Loads the float samples of a series line. Native histogram samples
/// cannot be stored: they are left out (the line is reported) and the
/// cases that depend on them fail.
fn load_line(source: &MemorySource, line: &str, interval: i64) -> Result<(), String> {
    let (labels, rest) = parse_series(line)?;
    let mut values = Vec::new();
    let mut histograms = 0;
    for tok in tokens(rest) {
        if tok.starts_with("{{") {
            let n = histogram_slots(tok)?;
            histograms += n;
            values.extend(std::iter::repeat_n(None, n));
        } else {
            expand_token(tok, &mut values)?;
        }
    }
    for (i, v) in values.into_iter().enumerate() {
        if let Some(f) = v {
            source.append(&labels, i as i64 * interval, f);
        }
    }
    if histograms > 0 {
        return Err(format!(
            "{histograms} native histogram samples left out (not supported)"
        ));
    }
    Ok(())
}

enum Expect {
    Fail {
        msg: Option<String>,
        regex: Option<Regex>,
    },
    String(String),
    Scalar(f64),
    /// Expected series, in file order.
    Series(Vec<(Labels, Vec<Option<f64>>)>),
}

struct EvalCmd<'a> {
    range: Option<(i64, i64, i64)>,
    at: i64,
    query: &'a str,
    ordered: bool,
    /// `expect range vector from .. to .. step ..` for an instant query.
    matrix_times: Option<(i64, i64, i64)>,
    expect: Expect,
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

fn parse_range_spec(s: &str) -> Result<((i64, i64, i64), &str), String> {
    let (kw, rest) = split_word(s);
    if kw != "from" {
        return Err(format!("expected 'from' in {s:?}"));
    }
    let (from, rest) = split_word(rest);
    let (kw, rest) = split_word(rest);
    if kw != "to" {
        return Err(format!("expected 'to' in {s:?}"));
    }
    let (to, rest) = split_word(rest);
    let (kw, rest) = split_word(rest);
    if kw != "step" {
        return Err(format!("expected 'step' in {s:?}"));
    }
    let (step, rest) = split_word(rest);
    Ok((
        (
            parse_duration(from)?,
            parse_duration(to)?,
            parse_duration(step)?,
        ),
        rest,
    ))
}

fn parse_eval<'a>(line: &'a str, block: &[(usize, &str)]) -> Result<EvalCmd<'a>, String> {
    let (cmd, rest) = split_word(line);
    let mut fail = false;
    let mut ordered = false;
    match cmd {
        "eval" | "eval_warn" | "eval_info" => {}
        "eval_fail" => fail = true,
        "eval_ordered" => ordered = true,
        other => return Err(format!("unknown command {other:?}")),
    }
    let (kind, rest) = split_word(rest);
    let (range, at, query) = match kind {
        "instant" => {
            let (kw, rest) = split_word(rest);
            if kw != "at" {
                return Err("expected 'at'".into());
            }
            let (t, q) = split_word(rest);
            (None, parse_duration(t)?, q)
        }
        "range" => {
            let (spec, q) = parse_range_spec(rest)?;
            (Some(spec), 0, q)
        }
        other => return Err(format!("unknown eval kind {other:?}")),
    };
    let mut msg = None;
    let mut regex = None;
    let mut string = None;
    let mut matrix_times = None;
    let mut series = Vec::new();
    let mut scalar = None;
    for (n, l) in block {
        if let Some(e) = l.strip_prefix("expect ") {
            let e = e.trim();
            if e == "fail" {
                fail = true;
            } else if let Some(m) = e.strip_prefix("fail msg:") {
                fail = true;
                msg = Some(m.trim().to_string());
            } else if let Some(r) = e.strip_prefix("fail regex:") {
                fail = true;
                regex = Some(Regex::new(r.trim()).map_err(|e| format!("line {n}: {e}"))?);
            } else if e == "ordered" {
                ordered = true;
            } else if let Some(s) = e.strip_prefix("string") {
                string = Some(take_quoted(s.trim())?.0);
            } else if let Some(r) = e.strip_prefix("range vector") {
                matrix_times = Some(parse_range_spec(r)?.0);
            } else if e.starts_with("warn")
                || e.starts_with("no_warn")
                || e.starts_with("info")
                || e.starts_with("no_info")
            {
                // Annotations are not checked.
            } else {
                return Err(format!("line {n}: unknown expectation {l:?}"));
            }
        } else if let Some(m) = l.strip_prefix("expected_fail_message") {
            msg = Some(m.trim().to_string());
        } else if let Some(r) = l.strip_prefix("expected_fail_regexp") {
            regex = Some(Regex::new(r.trim()).map_err(|e| format!("line {n}: {e}"))?);
        } else if let Ok(f) = parse_float(l) {
            scalar = Some(f);
        } else {
            let (labels, rest) = parse_series(l).map_err(|e| format!("line {n}: {e}"))?;
            let values = expand_values(rest).map_err(|e| format!("line {n}: {e}"))?;
            series.push((labels, values));
        }
    }
    let expect = if fail {
        Expect::Fail { msg, regex }
    } else if let Some(s) = string {
        Expect::String(s)
    } else if let Some(f) = scalar {
        Expect::Scalar(f)
    } else {
        Expect::Series(series)
    };
    Ok(EvalCmd {
        range,
        at,
        query,
        ordered,
        matrix_times,
        expect,
    })
}

/// Prometheus' `almost.Equal`.
fn almost_equal(a: f64, b: f64) -> bool {
    use super::is_stale_nan;
    if is_stale_nan(a) || is_stale_nan(b) {
        return is_stale_nan(a) && is_stale_nan(b);
    }
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < f64::MIN_POSITIVE {
        return diff < EPSILON * f64::MIN_POSITIVE;
    }
    diff / abs_sum.min(f64::MAX) < EPSILON
}

fn run_eval(
    engine: &Engine,
    source: &MemorySource,
    line: &str,
    block: &[(usize, &str)],
) -> Result<(), String> {
    let cmd = parse_eval(line, block)?;
    let result = match cmd.range {
        Some((start, end, step)) => engine
            .range_query(source, cmd.query, start, end, step)
            .map(Value::Matrix),
        None => engine.instant_query(source, cmd.query, cmd.at),
    };
    let value = match (result, &cmd.expect) {
        (Err(err), Expect::Fail { msg, regex }) => {
            let text = err.to_string();
            if let Some(m) = msg
                && *m != text
            {
                return Err(format!("expected error {m:?}, got {text:?}"));
            }
            if let Some(r) = regex
                && !r.is_match(&text)
            {
                return Err(format!("expected error matching {r}, got {text:?}"));
            }
            return Ok(());
        }
        (Err(err), _) => return Err(format!("unexpected error: {err}")),
        (Ok(_), Expect::Fail { .. }) => return Err("expected an error, got a result".into()),
        (Ok(v), _) => v,
    };
    match (value, &cmd.expect) {
        (Value::String(got), Expect::String(want)) => {
            if got == *want {
                Ok(())
            } else {
                Err(format!("expected string {want:?}, got {got:?}"))
            }
        }
        (Value::Scalar(got), Expect::Scalar(want)) => {
            if almost_equal(got, *want) {
                Ok(())
            } else {
                Err(format!("expected scalar {want}, got {got}"))
            }
        }
        (Value::Vector(got), Expect::Series(want)) => {
            let expected: HashMap<&Labels, (usize, &Vec<Option<f64>>)> = want
                .iter()
                .enumerate()
                .map(|(i, (l, v))| (l, (i, v)))
                .collect();
            for (pos, s) in got.iter().enumerate() {
                let Some((epos, vals)) = expected.get(&s.labels) else {
                    return Err(format!(
                        "unexpected metric {} in result, has value {}",
                        DisplayLabels(&s.labels),
                        s.f
                    ));
                };
                if cmd.ordered && *epos != pos {
                    return Err(format!(
                        "expected metric {} at position {} but was at {}",
                        DisplayLabels(&s.labels),
                        epos + 1,
                        pos + 1
                    ));
                }
                let want = match vals.as_slice() {
                    [Some(f)] => *f,
                    _ => {
                        return Err(format!(
                            "invalid expected value for {}",
                            DisplayLabels(&s.labels)
                        ));
                    }
                };
                if !almost_equal(want, s.f) {
                    return Err(format!(
                        "expected {want} for {} but got {}",
                        DisplayLabels(&s.labels),
                        s.f
                    ));
                }
            }
            if got.len() != want.len() {
                return Err(format!(
                    "expected {} series, got {}: {}",
                    want.len(),
                    got.len(),
                    got.iter()
                        .map(|s| format!("{} {}", DisplayLabels(&s.labels), s.f))
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
            Ok(())
        }
        (Value::Matrix(got), Expect::Series(want)) => {
            let (start, _end, step) = match (cmd.range, cmd.matrix_times) {
                (Some(r), _) => r,
                (None, Some(r)) => r,
                (None, None) => return Err("got a range vector, expected no range".into()),
            };
            let expected: HashMap<&Labels, &Vec<Option<f64>>> =
                want.iter().map(|(l, v)| (l, v)).collect();
            for s in &got {
                let Some(vals) = expected.get(&s.labels) else {
                    return Err(format!(
                        "unexpected metric {} in result, has points {:?}",
                        DisplayLabels(&s.labels),
                        s.points
                    ));
                };
                let want_points: Vec<(i64, f64)> = vals
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| v.map(|f| (start + i as i64 * step, f)))
                    .collect();
                let ok = want_points.len() == s.points.len()
                    && want_points
                        .iter()
                        .zip(&s.points)
                        .all(|(w, g)| w.0 == g.0 && almost_equal(w.1, g.1));
                if !ok {
                    return Err(format!(
                        "for {} expected {:?}, got {:?}",
                        DisplayLabels(&s.labels),
                        want_points,
                        s.points
                    ));
                }
            }
            if got.len() != want.len() {
                let missing: Vec<String> = want
                    .iter()
                    .filter(|(l, _)| !got.iter().any(|s| s.labels == *l))
                    .map(|(l, _)| DisplayLabels(l).to_string())
                    .collect();
                return Err(format!(
                    "expected metrics not found: {}",
                    missing.join(", ")
                ));
            }
            Ok(())
        }
        (got, _) => Err(format!("result of another type than expected: {got:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_values() {
        let v = expand_values("1+2x2 _ 5x1 -1-1x1 stale _x2 1e-3").expect("expand");
        assert_eq!(v.len(), 12);
        assert_eq!(&v[..3], &[Some(1.0), Some(3.0), Some(5.0)]);
        assert_eq!(v[3], None);
        assert_eq!(&v[4..8], &[Some(5.0), Some(5.0), Some(-1.0), Some(-2.0)]);
        assert!(v[8].is_some_and(crate::promql::is_stale_nan));
        assert_eq!(&v[9..], &[None, None, Some(0.001)]);
        assert!(expand_values("{{schema:1}}").is_err());
    }

    #[test]
    fn parses_durations_and_series() {
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("10s53ms"), Ok(10_053));
        assert_eq!(parse_duration("0"), Ok(0));
        assert!(parse_duration("5x").is_err());
        let (l, rest) = parse_series(r#"foo{a="b\"c", d='e'} 1 2"#).expect("series");
        assert_eq!(l.get("__name__").map(String::as_str), Some("foo"));
        assert_eq!(l.get("a").map(String::as_str), Some("b\"c"));
        assert_eq!(l.get("d").map(String::as_str), Some("e"));
        assert_eq!(rest.trim(), "1 2");
    }

    #[test]
    fn runs_a_small_file_and_counts_failures() {
        let text = "load 1m\n  up{job=\"a\"} 0+1x10\n\neval instant at 5m up\n  up{job=\"a\"} 5\n\neval instant at 5m up\n  up{job=\"a\"} 6\n\neval instant at 0m histogram_count(up)\n  {} {{count:1}}\n\neval range from 0 to 2m step 1m up * 2\n  {job=\"a\"} 0 2 4\n\neval instant at 0m foo(\n  expect fail\n";
        let r = run_text("t", text);
        assert_eq!((r.passed, r.failed), (3, 2), "{:?}", r.failures);
    }
}
